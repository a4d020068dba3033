"""Shared pieces of the svc-messaging integration tests (messaging_*_test.py).

Backing servers come from tools/stack-lib.sh (the same functions the dev stack uses), each
test module in its own temp dir on free ports: Redis, Kafka in KRaft mode (1 or 3 brokers).
svc-messaging instances are started here directly (so a test can kill -9 them). Python stubs
are generated from proto/ at test time. Chats are created by producing ChatEvent{chat_created}
to the log with kcat (svc-messaging learns membership from the log; svc-chats is not needed),
and records are read back from the topic with kcat to check what was written.
"""

import base64
import hashlib
import hmac
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
SVC = os.path.join(BUILD_DIR, "svc-messaging", "svc-messaging")
STACK_LIB = os.path.join(SOURCE_DIR, "tools", "stack-lib.sh")
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
SECRET = "messaging-test-secret-0123456789abcdef0123"
TOPIC = "chat.events"

pb = None  # messaging_pb2
pbg = None  # messaging_pb2_grpc
epb = None  # events_pb2
cpb = None  # chats_pb2


def gen_stubs(tmp):
    global pb, pbg, epb, cpb
    gen = os.path.join(tmp, "gen")
    os.makedirs(gen, exist_ok=True)
    rc = protoc.main(["protoc", "-I" + os.path.join(SOURCE_DIR, "proto"), "--python_out=" + gen,
                      "--grpc_python_out=" + gen, "chat/v1/messaging.proto", "chat/v1/events.proto",
                      "chat/v1/chats.proto", "chat/v1/presence.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, gen)
    # pylint: disable=import-outside-toplevel
    from chat.v1 import chats_pb2, events_pb2, messaging_pb2, messaging_pb2_grpc
    pb, pbg, epb, cpb = messaging_pb2, messaging_pb2_grpc, events_pb2, chats_pb2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, ttl_s=3600, secret=SECRET, alg="HS256"):
    now = int(time.time())
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "iat": now, "exp": now + ttl_s}).encode())
    sig = b64(hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest())
    return head + "." + body + "." + sig


def md(user, **kw):
    return (("authorization", "Bearer " + token(user, **kw)),)


class Stack:
    """Redis + Kafka from tools/stack-lib.sh in a temp dir; stack_cleanup on close."""

    def __init__(self, prefix, brokers=1, partitions=4):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.brokers = brokers
        env = dict(os.environ, KAFKA_PARTITIONS=str(partitions))
        script = ('source "%s"; set -e; start_redis "$D" "$(free_port)" >&2; '
                  'start_kafka "$D" "$(free_port %d)" %d >&2; '
                  'echo "REDIS_URL=$REDIS_URL"; echo "KAFKA_BROKERS=$KAFKA_BROKERS"'
                  % (STACK_LIB, 2 * brokers, brokers))
        env["D"] = self.dir
        out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            self.close()
            raise RuntimeError("stack did not start:\n" + out.stderr[-4000:])
        vals = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.redis_url = vals["REDIS_URL"]
        self.kafka = vals["KAFKA_BROKERS"]

    def lib(self, cmd, check=True, timeout=300):
        """Runs a stack-lib.sh command line in this stack's dir; returns stdout."""
        env = dict(os.environ, D=self.dir, KAFKA_BROKERS=self.kafka)
        out = subprocess.run(["bash", "-c", 'source "%s"; %s' % (STACK_LIB, cmd)], env=env,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError("%s failed: %s" % (cmd, out.stderr[-2000:]))
        return out.stdout

    def redis_cli(self, *args):
        port = self.redis_url.rsplit(":", 1)[1]
        return subprocess.run(["redis-cli", "-p", port] + list(args), capture_output=True,
                              text=True, check=True).stdout.strip()

    def produce(self, chat_id, event):
        """Produces one ChatEvent keyed by chat_id (murmur2_random, like the services)."""
        path = os.path.join(self.dir, "ev-%d.bin" % random.getrandbits(48))
        with open(path, "wb") as f:
            f.write(event.SerializeToString())
        subprocess.run([KCAT, "-P", "-b", self.kafka, "-t", TOPIC, "-k", str(chat_id),
                        "-X", "partitioner=murmur2_random", path], check=True, timeout=60)
        os.unlink(path)

    def create_chat(self, chat_id, members, creator=None):
        ev = epb.ChatEvent(event_id=random.getrandbits(62) | 1, chat_id=chat_id,
                           produced_at_ms=int(time.time() * 1000), origin_site="a",
                           producer="messaging-test", actor_id=creator or members[0])
        ev.chat_created.chat_id = chat_id
        ev.chat_created.kind = cpb.CHAT_KIND_GROUP
        ev.chat_created.creator_id = creator or members[0]
        ev.chat_created.created_at_ms = ev.produced_at_ms
        ev.chat_created.member_count = len(members)
        ev.chat_created.member_ids.extend(sorted(members))
        self.produce(chat_id, ev)

    def records(self, timeout=60):
        """Every record of the topic, decoded: list of (partition, offset, ChatEvent)."""
        out = subprocess.run([KCAT, "-C", "-b", self.kafka, "-t", TOPIC, "-o", "beginning", "-e",
                              "-q", "-f", "%p %o %S:%s"], capture_output=True, timeout=timeout,
                             check=True).stdout
        recs, i = [], 0
        while i < len(out):
            sp1 = out.index(b" ", i)
            sp2 = out.index(b" ", sp1 + 1)
            colon = out.index(b":", sp2 + 1)
            part, off, size = int(out[i:sp1]), int(out[sp1 + 1:sp2]), int(out[sp2 + 1:colon])
            payload = out[colon + 1:colon + 1 + size]
            i = colon + 1 + size
            ev = epb.ChatEvent()
            ev.ParseFromString(payload)
            recs.append((part, off, ev))
        return recs

    def posted(self, timeout=60):
        """message_posted records: list of Message (with duplicates, in topic order)."""
        return [ev.message_posted for _, _, ev in self.records(timeout)
                if ev.WhichOneof("event") == "message_posted"]

    def close(self):
        subprocess.run(["bash", "-c", 'source "%s"; stack_cleanup "$D"' % STACK_LIB],
                       env=dict(os.environ, D=self.dir), capture_output=True, timeout=300)


class Messaging:
    """One svc-messaging instance."""

    def __init__(self, stack, name, *args, workers=2):
        self.stack = stack
        self.name = name
        self.port = free_port()
        self.mport = free_port()
        self.args = list(args)
        self.workers = workers
        self.log_path = os.path.join(stack.dir, "logs", name + ".log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.proc = None
        self.start()

    def start(self):
        env = dict(os.environ, JWT_SECRET=SECRET, REDIS_URL=self.stack.redis_url,
                   KAFKA_BROKERS=self.stack.kafka, LOG_LEVEL="info")
        env.pop("CHATS_ADDR", None)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [SVC, "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port",
             str(self.mport), "--metrics-host", "127.0.0.1", "--workers", str(self.workers)]
            + self.args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if not wait_port(self.port):
            raise RuntimeError(self.name + " did not start: " + self.read_log())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = pbg.MessagingServiceStub(self.channel)
        end = time.time() + 60
        while time.time() < end:
            if self.metric("messaging_snowflake_instance") >= 0 and "assigned" in self.read_log():
                return
            time.sleep(0.1)
        raise RuntimeError(self.name + " not ready: " + self.read_log()[-3000:])

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=5) as r:
            return r.read().decode()

    def metric(self, name, labels=""):
        want = name + ("{" + labels + "}" if labels else "")
        for line in self.metrics().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def kill(self, sig=signal.SIGKILL):
        self.channel.close()
        self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        self.log.close()
        return rc

    def stop(self):
        if self.proc and self.proc.poll() is None:
            return self.kill(signal.SIGTERM)
        return self.proc.returncode if self.proc else 0


def wait_consuming(stack, instances, timeout=60):
    """Produces probe chats until every instance has consumed one (its consumer is positioned:
    it starts at the latest offsets, so anything produced before that would be missed)."""
    base = {m.name: m.metric("messaging_events_consumed_total") for m in instances}
    end = time.time() + timeout
    while time.time() < end:
        stack.create_chat(random.getrandbits(60) | 1, ["probe"])
        time.sleep(0.5)
        if all(m.metric("messaging_events_consumed_total") > base[m.name] for m in instances):
            return
    raise RuntimeError("instances did not start consuming")


class Device:
    """A Connect stream read by a thread: frames go to a queue; the final status too."""

    def __init__(self, stub, user, device, hello=True, **kw):
        self.user = user
        self.out = queue.Queue()
        self.inq = queue.Queue()
        self.frames = []
        self.call = stub.Connect(self._requests(), metadata=md(user, **kw))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.welcome = None
        if hello:
            self.send(pb.ConnectRequest(hello=pb.Hello(device_id=device)))
            f = self.next()
            assert f.WhichOneof("frame") == "welcome", f
            self.welcome = f.welcome

    def _requests(self):
        while True:
            r = self.out.get()
            if r is None:
                return
            yield r

    def _run(self):
        try:
            for resp in self.call:
                self.inq.put(resp)
            self.inq.put(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            self.inq.put(e.code())

    def send(self, req):
        self.out.put(req)

    def send_msg(self, cmid, chat_id, body):
        self.send(pb.ConnectRequest(send=pb.SendFrame(client_message_id=cmid, chat_id=chat_id,
                                                       body=body)))

    def ack(self, seq):
        self.send(pb.ConnectRequest(ack=pb.AckFrame(session_seq=seq)))

    def ping(self, nonce):
        self.send(pb.ConnectRequest(ping=pb.PingFrame(nonce=nonce)))

    def next(self, timeout=10.0):
        try:
            f = self.inq.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no frame within %.1f s" % timeout) from None
        if not isinstance(f, grpc.StatusCode):
            self.frames.append(f)
        return f

    def until(self, pred, timeout=10.0):
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError("condition not met within %.1f s" % timeout)
            f = self.next(left)
            if isinstance(f, grpc.StatusCode):
                raise AssertionError("stream ended with %s" % f)
            if pred(f):
                return f

    def status(self, timeout=10.0):
        """Skips frames until the stream ends; returns the StatusCode."""
        end = time.time() + timeout
        while True:
            f = self.next(max(0.01, end - time.time()))
            if isinstance(f, grpc.StatusCode):
                return f

    def close(self):
        self.out.put(None)

    def cancel(self):
        self.call.cancel()
