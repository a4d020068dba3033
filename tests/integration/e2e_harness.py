"""Shared pieces of the end-to-end tests (tests/integration/e2e_*_test.py).

Everything real and wired together: PostgreSQL, Redis and one Kafka broker from
tools/stack-lib.sh (through chats_common.Stack), one svc-chats and several svc-messaging
instances that find svc-chats through --chats-addr, all with one JWT secret. Chats are made
with ChatsService.CreateChat (never kcat): what svc-messaging produces is what svc-chats
materializes. Python stubs are generated from proto/ at test time.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chats_common as cc  # noqa: E402  pylint: disable=wrong-import-position

SOURCE_DIR = cc.SOURCE_DIR
BUILD_DIR = cc.BUILD_DIR
MESSAGING_BIN = os.path.join(BUILD_DIR, "svc-messaging", "svc-messaging")
CHATS_BIN = os.path.join(BUILD_DIR, "svc-chats", "svc-chats")
SECRET = cc.SECRET

grpc = None  # imported by gen_stubs (after chats_common.bootstrap)
cpb = cpbg = epb = mpb = mpbg = None


def gen_stubs(out):
    """Generates chats/events/messaging stubs into |out| and imports them (module globals)."""
    global grpc, cpb, cpbg, epb, mpb, mpbg
    # pylint: disable=import-outside-toplevel
    import grpc as grpc_mod
    from grpc_tools import protoc
    import grpc_tools
    inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", "-I" + os.path.join(SOURCE_DIR, "proto"), "-I" + inc,
                      "--python_out=" + out, "--grpc_python_out=" + out,
                      "chat/v1/chats.proto", "chat/v1/events.proto", "chat/v1/messaging.proto",
                      "chat/v1/presence.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out)
    from chat.v1 import chats_pb2, chats_pb2_grpc, events_pb2, messaging_pb2, messaging_pb2_grpc
    grpc = grpc_mod
    cpb, cpbg, epb, mpb, mpbg = (chats_pb2, chats_pb2_grpc, events_pb2, messaging_pb2,
                                 messaging_pb2_grpc)


def md(user):
    return cc.md(user)


def scrape(port, name, labels=""):
    """One sample of a Prometheus metric (0.0 when absent)."""
    want = name + ("{" + labels + "}" if labels else "")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
    return 0.0


class Messaging:
    """One svc-messaging process wired to svc-chats (CHATS_ADDR) on the shared stack."""

    def __init__(self, stack, chats_addr, name, *args):
        self.stack = stack
        self.chats_addr = chats_addr
        self.name = name
        self.args = list(args)
        self.port = cc.free_port()
        self.mport = cc.free_port()
        self.log_path = os.path.join(stack.dir, name + ".log")
        self.proc = None
        self.start()

    def start(self):
        env = dict(os.environ, JWT_SECRET=SECRET, REDIS_URL=self.stack.env["REDIS_URL"],
                   KAFKA_BROKERS=self.stack.env["KAFKA_BROKERS"], CHATS_ADDR=self.chats_addr,
                   LOG_LEVEL="info")
        self.log = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [MESSAGING_BIN, "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port",
             str(self.mport), "--metrics-host", "127.0.0.1", "--workers", "2"] + self.args,
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = mpbg.MessagingServiceStub(self.channel)
        end = time.time() + 60
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            try:
                if (self.metric("messaging_snowflake_instance") >= 0
                        and "delivery: assigned" in self.read_log()):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(self.name + " not ready:\n" + self.read_log()[-3000:])

    def metric(self, name, labels=""):
        return scrape(self.mport, name, labels)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def send(self, user, cmid, chat_id, body, timeout=15):
        """Unary Send: (status, message_id) or raises grpc.RpcError."""
        r = self.stub.Send(mpb.SendRequest(client_message_id=cmid, chat_id=chat_id, body=body),
                           metadata=md(user), timeout=timeout)
        return r

    def kill(self, sig=signal.SIGKILL):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        self.log.close()
        return rc

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            return self.kill(signal.SIGTERM)
        return self.proc.returncode if self.proc else 0


class Device:
    """One Connect stream (Hello sent, Welcome awaited) read by a thread. Frames are kept in
    order; with auto_ack every delivery is acknowledged as soon as it is read."""

    def __init__(self, inst, user, device_id, auto_ack=True):
        self.user = user
        self.device_id = device_id
        self.inst = inst
        self.auto_ack = auto_ack
        self.out = queue.Queue()
        self.cv = threading.Condition()
        self.frames = []
        self.code = None  # final status once the stream ended
        self.call = inst.stub.Connect(self._requests(), metadata=md(user))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.out.put(mpb.ConnectRequest(hello=mpb.Hello(device_id=device_id)))
        self.welcome = self.wait(
            lambda fs: next((f.welcome for f in fs if f.WhichOneof("frame") == "welcome"), None),
            what=user + "/" + device_id + " welcome")

    def _requests(self):
        while True:
            r = self.out.get()
            if r is None:
                return
            yield r

    def _run(self):
        code = grpc.StatusCode.OK
        try:
            for resp in self.call:
                if self.auto_ack and resp.WhichOneof("frame") == "delivery":
                    self.out.put(mpb.ConnectRequest(ack=mpb.AckFrame(
                        session_seq=resp.delivery.session_seq)))
                with self.cv:
                    self.frames.append(resp)
                    self.cv.notify_all()
        except grpc.RpcError as e:
            code = e.code()
        with self.cv:
            self.code = code
            self.cv.notify_all()

    def wait(self, pred, timeout=20.0, what="condition"):
        """Waits until pred(frames) is truthy; returns it."""
        end = time.time() + timeout
        with self.cv:
            while True:
                v = pred(self.frames)
                if v:
                    return v
                left = end - time.time()
                if left <= 0 or self.code is not None:
                    raise AssertionError("%s/%s: %s not met (stream status %s, %d frames)" % (
                        self.user, self.device_id, what, self.code, len(self.frames)))
                self.cv.wait(left)

    def send_msg(self, cmid, chat_id, body):
        self.out.put(mpb.ConnectRequest(send=mpb.SendFrame(client_message_id=cmid,
                                                           chat_id=chat_id, body=body)))

    def ack(self, seq):
        self.out.put(mpb.ConnectRequest(ack=mpb.AckFrame(session_seq=seq)))

    def ping(self, nonce):
        self.out.put(mpb.ConnectRequest(ping=mpb.PingFrame(nonce=nonce)))

    def result(self, cmid, timeout=20.0):
        """The SendResultFrame for |cmid| (the latest one)."""
        def find(fs):
            for f in reversed(fs):
                if f.WhichOneof("frame") == "send_result" and f.send_result.client_message_id == cmid:
                    return f.send_result
            return None
        return self.wait(find, timeout, "send result for " + cmid)

    def deliveries(self, kind=None, chat_id=None):
        """DeliveryFrames so far (optionally of one event kind and chat)."""
        with self.cv:
            out = []
            for f in self.frames:
                if f.WhichOneof("frame") != "delivery":
                    continue
                d = f.delivery
                k = d.WhichOneof("event")
                if kind is not None and k != kind:
                    continue
                if chat_id is not None and getattr(d, k).chat_id != chat_id:
                    continue
                out.append(d)
            return out

    def posted(self, chat_id=None):
        """message_posted Messages so far, in arrival order."""
        return [d.message_posted for d in self.deliveries("message_posted", chat_id)]

    def wait_posted(self, chat_id, ids, timeout=20.0):
        """Waits until every id in |ids| was delivered in |chat_id|; returns posted(chat_id)."""
        want = set(ids)

        def done(_fs):
            got = {m.message_id for m in self.posted(chat_id)}
            return want <= got
        self.wait(done, timeout, "delivery of %d messages in chat %d" % (len(want), chat_id))
        return self.posted(chat_id)

    def close(self):
        self.out.put(None)

    def cancel(self):
        self.call.cancel()


class World:
    """The stack + svc-chats; messaging instances are added by the test."""

    def __init__(self):
        self.stack = cc.Stack()
        try:
            gen_stubs(self.stack.dir)
            self.chats = cc.Chats(self.stack)
            self.chats_stub = cpbg.ChatsServiceStub(self.chats.channel)
            self.chats_addr = "127.0.0.1:%d" % self.chats.port
            self.instances = []
        except Exception:
            self.stack.close()
            raise

    def messaging(self, name, *args):
        m = Messaging(self.stack, self.chats_addr, name, *args)
        self.instances.append(m)
        return m

    def wait_consuming(self, instances, timeout=60):
        """Creates probe chats until every instance has consumed one: each starts from the
        latest offsets once assigned, so only then is nothing produced for it missed."""
        base = {id(m): m.metric("messaging_events_consumed_total") for m in instances}
        end = time.time() + timeout
        while time.time() < end:
            self.create_chat("probe", [], kind=cpb.CHAT_KIND_GROUP)
            time.sleep(0.3)
            if all(m.metric("messaging_events_consumed_total") > base[id(m)] for m in instances):
                return
        raise RuntimeError("messaging instances did not start consuming")

    def create_chat(self, creator, others, kind=None, title="e2e"):
        kind = cpb.CHAT_KIND_GROUP if kind is None else kind
        r = self.chats_stub.CreateChat(
            cpb.CreateChatRequest(kind=kind, member_ids=others,
                                  title=title if kind == cpb.CHAT_KIND_GROUP else ""),
            metadata=md(creator), timeout=20)
        return r.chat

    def history(self, user, chat_id, page_size=200):
        """The whole chat, ascending, paged FORWARD."""
        out, anchor = [], 0
        while True:
            r = self.chats_stub.GetHistory(cpb.GetHistoryRequest(
                chat_id=chat_id, anchor_message_id=anchor,
                direction=cpb.HISTORY_DIRECTION_FORWARD, page_size=page_size),
                metadata=md(user), timeout=10)
            out.extend(r.messages)
            if not r.has_more or not r.messages:
                return out
            anchor = r.messages[-1].message_id

    def wait_history(self, user, chat_id, pred, timeout=30.0, what="history"):
        """Polls history(user, chat_id) until pred(messages); returns the messages."""
        end = time.time() + timeout
        msgs = []
        while time.time() < end:
            msgs = self.history(user, chat_id)
            if pred(msgs):
                return msgs
            time.sleep(0.2)
        raise AssertionError("%s: not reached; history has %d messages" % (what, len(msgs)))

    def logs(self):
        parts = []
        for m in self.instances:
            parts.append("--- %s\n%s" % (m.name, m.read_log()[-2500:]))
        parts.append("--- chats\n%s" % self.chats.read_log()[-2500:])
        return "\n".join(parts)

    def close(self):
        for m in self.instances:
            try:
                m.stop()
            except Exception:  # pylint: disable=broad-except
                pass
        try:
            self.chats.stop()
        except Exception:  # pylint: disable=broad-except
            pass
        self.stack.close()
