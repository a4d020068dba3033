#!/usr/bin/env python3
"""svc-messaging against real Redis and Kafka (tools/stack-lib.sh), through Python grpcio.

Two messaging instances (A, B) on one Redis and one Kafka broker, chats created on the log:

  - a group of 4 users (5 devices, on both instances) sends through Connect: every send gets
    OK with an id; every online device gets every message exactly once, in one chat order
    (the same on every device), session_seq 1, 2, 3, ...; the topic holds each message once;
  - resend with the same client_message_id (unary Send and Connect): DUPLICATE with the
    original id, one record on the topic; a "pending" first attempt (the key says pending,
    nothing on the topic: it never reached Kafka) is produced again with its id;
  - kill -9 of an instance while sends are in flight, then resending every client_message_id
    to the other instance: each gets OK/DUPLICATE and on the topic each client_message_id has
    exactly one message_id, the one answered;
  - forced overflow (queue-size 4, no acks): 4 frames, then the numbers of dropped frames are
    skipped (session_seq gap after the ack), and PongFrame.last_session_seq reveals a tail
    drop; resend after ack timeout with the same session_seq, then RESOURCE_EXHAUSTED;
  - bad input: non-member (PERMISSION_DENIED / REJECTED 7), unknown chat (NOT_FOUND), bad and
    expired tokens (UNAUTHENTICATED on Send and Connect), oversized body, invalid UTF-8, empty
    body, bad client_message_id (INVALID_ARGUMENT / REJECTED 3), session protocol errors;
    nothing of it on the topic;
  - ABORTED when the same device connects again; SIGTERM ends streams UNAVAILABLE, exit 0.

    BUILD_DIR=build python3 tests/integration/messaging_test.py [-v]
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
REEXEC = "CHAT_MESSAGING_TEST_REEXEC"


def _has_grpc(python):
    return subprocess.run([python, "-c", "import grpc, grpc_tools.protoc"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _bootstrap():
    if _has_grpc(sys.executable) or os.environ.get(REEXEC):
        return
    tools = os.environ.get("CHAT_TOOLS_DIR") or os.path.expanduser("~/.cache/chat-backend/tools")
    py = os.path.join(tools, "venv", "bin", "python3")
    if not (os.access(py, os.X_OK) and _has_grpc(py)):
        subprocess.run([os.path.join(SOURCE_DIR, "tools", "install-tools.sh")], check=True,
                       stdout=sys.stderr)
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], dict(os.environ, **{REEXEC: "1"}))


if __name__ == "__main__":
    _bootstrap()

# pylint: disable=wrong-import-position
import random
import signal
import threading
import time
import unittest

import grpc

sys.path.insert(0, HERE)
import messaging_harness as h  # noqa: E402

STACK = None
A = None
B = None


def setUpModule():
    global STACK, A, B
    if not os.access(h.SVC, os.X_OK):
        raise unittest.SkipTest("svc-messaging not built: " + h.SVC)
    if h.KCAT is None:
        raise unittest.SkipTest("kcat not installed (tools/install-deps.sh)")
    STACK = h.Stack("chat-messaging-test-")
    h.gen_stubs(STACK.dir)
    A = h.Messaging(STACK, "messaging-a")
    B = h.Messaging(STACK, "messaging-b")
    h.wait_consuming(STACK, [A, B])


def tearDownModule():
    for inst in (A, B):
        if inst:
            inst.stop()
    if STACK and not os.environ.get("KEEP_TMP"):
        STACK.close()


def new_chat(members):
    chat = random.getrandbits(62) | 1
    STACK.create_chat(chat, members)
    return chat


def wait_member(inst, user, chat, timeout=20):
    """Waits until |inst| knows |chat|: a Send by a non-member is PERMISSION_DENIED rather than
    NOT_FOUND (and writes nothing). |user| is unused, kept for readability at call sites."""
    del user
    end = time.time() + timeout
    while time.time() < end:
        try:
            inst.stub.Send(h.pb.SendRequest(client_message_id="probe", chat_id=chat, body="probe"),
                           metadata=h.md("nobody-probe"), timeout=10)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                return
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(0.2)
    raise AssertionError("chat %d not known to %s" % (chat, inst.name))


def deliveries(dev, count, timeout=20):
    """Reads until |count| message_posted deliveries arrived; returns (seq, Message) list."""
    got = []
    end = time.time() + timeout
    while len(got) < count:
        f = dev.until(lambda f: f.WhichOneof("frame") == "delivery", max(0.1, end - time.time()))
        if f.delivery.WhichOneof("event") == "message_posted":
            got.append((f.delivery.session_seq, f.delivery.message_posted))
        dev.ack(f.delivery.session_seq)
    return got


def unique_cmid(prefix):
    return "%s-%d" % (prefix, random.getrandbits(48))


class GroupDelivery(unittest.TestCase):
    def test_group_two_instances_exactly_once_in_order(self):
        users = ["alice", "bob", "carol", "dave"]
        chat = new_chat(users)
        wait_member(A, "alice", chat)
        wait_member(B, "alice", chat)
        devs = {
            "alice@A": h.Device(A.stub, "alice", "phone"),
            "bob@B": h.Device(B.stub, "bob", "phone"),
            "carol@A": h.Device(A.stub, "carol", "phone"),
            "carol@B": h.Device(B.stub, "carol", "laptop"),
            "dave@B": h.Device(B.stub, "dave", "tablet"),
        }
        senders = ["alice@A", "bob@B", "carol@B", "dave@B"]
        per_sender = 10
        sent = {}
        for i in range(per_sender):
            for s in senders:
                cmid = unique_cmid(s)
                sent[cmid] = s
                devs[s].send_msg(cmid, chat, "msg %d from %s" % (i, s))
        total = len(sent)
        results = {}
        seqs = {}
        got = {name: [] for name in devs}
        end = time.time() + 30
        # Every device reads results (its own sends) and deliveries until it has all.
        for name, dev in devs.items():
            mine = sum(1 for s in sent.values() if s == name)
            n_results = 0
            while len(got[name]) < total or n_results < mine:
                f = dev.next(max(0.1, end - time.time()))
                self.assertNotIsInstance(f, grpc.StatusCode, name)
                kind = f.WhichOneof("frame")
                if kind == "send_result":
                    n_results += 1
                    results[f.send_result.client_message_id] = f.send_result
                elif kind == "delivery":
                    d = f.delivery
                    seqs.setdefault(name, []).append(d.session_seq)
                    if d.WhichOneof("event") == "message_posted":
                        got[name].append(d.message_posted)
                    dev.ack(d.session_seq)
        self.assertEqual(len(results), total)
        for cmid, r in results.items():
            self.assertEqual(r.status, h.pb.SEND_STATUS_OK, r)
            self.assertEqual(r.code, 0)
            self.assertNotEqual(r.message_id, 0)
            self.assertEqual(r.chat_id, chat)
        ids = {r.message_id for r in results.values()}
        self.assertEqual(len(ids), total, "distinct message ids")
        order = None
        for name, msgs in got.items():
            mids = [m.message_id for m in msgs]
            self.assertEqual(len(mids), total, name)
            self.assertEqual(len(set(mids)), total, name + ": a message delivered twice")
            self.assertEqual(set(mids), ids, name)
            if order is None:
                order = mids
            self.assertEqual(mids, order, name + ": chat order differs between devices")
            self.assertEqual(seqs[name], list(range(1, len(seqs[name]) + 1)), name)
        # Nothing more arrives (exactly once), and the sender's own message echoes carry the
        # client_message_id.
        for name, dev in devs.items():
            dev.ping(7)
            f = dev.until(lambda f: f.WhichOneof("frame") in ("pong", "delivery"))
            self.assertEqual(f.WhichOneof("frame"), "pong", name)
            self.assertEqual(f.pong.last_session_seq, seqs[name][-1])
        for m in got["alice@A"]:
            self.assertIn(m.client_message_id, sent)
            self.assertEqual(sent[m.client_message_id].split("@")[0], m.sender_id)
        # The topic has each message once.
        on_topic = [m for m in STACK.posted() if m.chat_id == chat and m.message_id in ids]
        self.assertEqual(sorted(m.message_id for m in on_topic), sorted(ids))
        for dev in devs.values():
            dev.close()
            self.assertEqual(dev.status(), grpc.StatusCode.OK)


class Resend(unittest.TestCase):
    def test_unary_and_connect_resend_is_duplicate(self):
        chat = new_chat(["erin", "frank"])
        wait_member(A, "erin", chat)
        cmid = unique_cmid("resend")
        r1 = A.stub.Send(h.pb.SendRequest(client_message_id=cmid, chat_id=chat, body="hi"),
                         metadata=h.md("erin"), timeout=10)
        self.assertEqual(r1.status, h.pb.SEND_STATUS_OK)
        r2 = B.stub.Send(h.pb.SendRequest(client_message_id=cmid, chat_id=chat, body="hi"),
                         metadata=h.md("erin"), timeout=10)
        self.assertEqual(r2.status, h.pb.SEND_STATUS_DUPLICATE)
        self.assertEqual(r2.message_id, r1.message_id)
        self.assertEqual(r2.created_at_ms, r1.created_at_ms)
        dev = h.Device(B.stub, "erin", "phone")
        dev.send_msg(cmid, chat, "hi")
        f = dev.until(lambda f: f.WhichOneof("frame") == "send_result")
        self.assertEqual(f.send_result.status, h.pb.SEND_STATUS_DUPLICATE)
        self.assertEqual(f.send_result.message_id, r1.message_id)
        dev.close()
        # Another user may use the same client_message_id: dedupe is per sender.
        r3 = A.stub.Send(h.pb.SendRequest(client_message_id=cmid, chat_id=chat, body="hi"),
                         metadata=h.md("frank"), timeout=10)
        self.assertEqual(r3.status, h.pb.SEND_STATUS_OK)
        self.assertNotEqual(r3.message_id, r1.message_id)
        recs = [m for m in STACK.posted() if m.client_message_id == cmid]
        self.assertEqual(sorted(m.message_id for m in recs), sorted([r1.message_id, r3.message_id]))

    def test_pending_first_attempt_is_produced_again_with_its_id(self):
        chat = new_chat(["gina"])
        wait_member(A, "gina", chat)
        cmid = unique_cmid("pending")
        # A first attempt that recorded its id and then died before reaching Kafka.
        first_id = (int(time.time() * 1000) - 1704067200000) << 22 | 0x3FF << 12 | 7
        created = (first_id >> 22) + 1704067200000
        key = "dedupe:%d:%s:%s" % (len("gina"), "gina", cmid)
        STACK.redis_cli("HSET", key, "state", "pending", "id", str(first_id), "created",
                        str(created), "chat", str(chat))
        STACK.redis_cli("PEXPIRE", key, "86400000")
        r = A.stub.Send(h.pb.SendRequest(client_message_id=cmid, chat_id=chat, body="again"),
                        metadata=h.md("gina"), timeout=10)
        self.assertEqual(r.status, h.pb.SEND_STATUS_OK)
        self.assertEqual(r.message_id, first_id)
        self.assertEqual(r.created_at_ms, created)
        # The mark is queued on the worker's Redis connection before the answer is written.
        deadline = time.time() + 5
        while STACK.redis_cli("HGET", key, "state") != "acked" and time.time() < deadline:
            time.sleep(0.01)
        self.assertEqual(STACK.redis_cli("HGET", key, "state"), "acked")
        r = A.stub.Send(h.pb.SendRequest(client_message_id=cmid, chat_id=chat, body="again"),
                        metadata=h.md("gina"), timeout=10)
        self.assertEqual(r.status, h.pb.SEND_STATUS_DUPLICATE)
        recs = [m for m in STACK.posted() if m.client_message_id == cmid]
        self.assertEqual([m.message_id for m in recs], [first_id])

    def test_kill9_mid_send_then_resend_gives_one_message_each(self):
        c = h.Messaging(STACK, "messaging-c")
        try:
            h.wait_consuming(STACK, [c])
            chat = new_chat(["hank"])
            wait_member(A, "hank", chat)
            wait_member(c, "hank", chat)
            wait_member(c, "hank", chat)
            # 4 devices x 60 sends (under max_inflight_sends each).
            devs = [h.Device(c.stub, "hank", "dev%d" % i) for i in range(4)]
            cmids = [unique_cmid("k9") for _ in range(240)]
            answered = {}
            for i, cm in enumerate(cmids):
                devs[i % 4].send_msg(cm, chat, "crash test " + cm)
            # Kill as soon as the first result comes back: the rest are in flight.
            f = devs[0].until(lambda f: f.WhichOneof("frame") == "send_result")
            self.assertEqual(f.send_result.status, h.pb.SEND_STATUS_OK, f)
            answered[f.send_result.client_message_id] = f.send_result.message_id
            c.kill(signal.SIGKILL)
            for dev in devs:
                while True:
                    f = dev.next()
                    if isinstance(f, grpc.StatusCode):
                        break
                    if f.WhichOneof("frame") == "send_result":
                        self.assertEqual(f.send_result.status, h.pb.SEND_STATUS_OK, f)
                        answered[f.send_result.client_message_id] = f.send_result.message_id
        finally:
            c.stop()
        final = {}
        for cm in cmids:
            r = A.stub.Send(h.pb.SendRequest(client_message_id=cm, chat_id=chat,
                                             body="crash test " + cm),
                            metadata=h.md("hank"), timeout=20)
            self.assertIn(r.status, (h.pb.SEND_STATUS_OK, h.pb.SEND_STATUS_DUPLICATE))
            final[cm] = r.message_id
            if cm in answered:
                self.assertEqual(r.status, h.pb.SEND_STATUS_DUPLICATE)
                self.assertEqual(r.message_id, answered[cm])
        by_cmid = {}
        for m in STACK.posted():
            if m.chat_id == chat:
                by_cmid.setdefault(m.client_message_id, set()).add(m.message_id)
        for cm in cmids:
            self.assertEqual(by_cmid.get(cm), {final[cm]}, cm)
        self.assertGreater(len(answered), 0)
        print("kill -9: %d of %d answered before the crash" % (len(answered), len(cmids)),
              file=sys.stderr)


class Overflow(unittest.TestCase):
    def test_queue_overflow_gap_and_tail_drop(self):
        d = h.Messaging(STACK, "messaging-small", "--queue-size", "4", "--ack-timeout-ms", "60000")
        try:
            h.wait_consuming(STACK, [d])
            chat = new_chat(["ivy", "jack"])
            wait_member(d, "ivy", chat)
            dev = h.Device(d.stub, "ivy", "phone")
            self.assertEqual(dev.welcome.queue_capacity, 4)
            ids = []
            for i in range(10):
                r = A.stub.Send(h.pb.SendRequest(client_message_id=unique_cmid("ov"), chat_id=chat,
                                                 body="n%d" % i), metadata=h.md("jack"), timeout=10)
                ids.append(r.message_id)
            first = [dev.until(lambda f: f.WhichOneof("frame") == "delivery") for _ in range(4)]
            self.assertEqual([f.delivery.session_seq for f in first], [1, 2, 3, 4])
            self.assertEqual([f.delivery.message_posted.message_id for f in first], ids[:4])
            # The other 6 were dropped; a pong says every number up to 10 is written or dropped.
            deadline = time.time() + 10
            while True:
                dev.ping(1)
                f = dev.until(lambda f: f.WhichOneof("frame") == "pong")
                if f.pong.last_session_seq == 10 or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(f.pong.last_session_seq, 10)
            dev.ack(4)
            r = A.stub.Send(h.pb.SendRequest(client_message_id=unique_cmid("ov"), chat_id=chat,
                                             body="after"), metadata=h.md("jack"), timeout=10)
            f = dev.until(lambda f: f.WhichOneof("frame") == "delivery")
            self.assertEqual(f.delivery.session_seq, 11)  # 5..10 skipped: the gap
            self.assertEqual(f.delivery.message_posted.message_id, r.message_id)
            self.assertGreaterEqual(d.metric("messaging_delivery_drops_total"), 6)
            # The dropped messages are on the log (a device recovers them from svc-chats).
            on_topic = {m.message_id for m in STACK.posted() if m.chat_id == chat}
            self.assertTrue(set(ids[4:]) <= on_topic)
            dev.cancel()
        finally:
            d.stop()

    def test_resend_after_ack_timeout_then_stuck(self):
        d = h.Messaging(STACK, "messaging-stuck", "--ack-timeout-ms", "300", "--max-resends", "2")
        try:
            h.wait_consuming(STACK, [d])
            chat = new_chat(["kim", "lee"])
            wait_member(d, "kim", chat)
            dev = h.Device(d.stub, "kim", "phone")
            r = A.stub.Send(h.pb.SendRequest(client_message_id=unique_cmid("st"), chat_id=chat,
                                             body="x"), metadata=h.md("lee"), timeout=10)
            seen = []
            while True:
                f = dev.next(10)
                if isinstance(f, grpc.StatusCode):
                    status = f
                    break
                if f.WhichOneof("frame") == "delivery":
                    seen.append((f.delivery.session_seq, f.delivery.message_posted.message_id))
            self.assertEqual(status, grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(seen, [(1, r.message_id)] * 3)  # first write + 2 resends
            self.assertGreaterEqual(d.metric("messaging_sessions_stuck_total"), 1)
        finally:
            d.stop()


class BadInput(unittest.TestCase):
    def send(self, user, cmid, chat, body, inst=None, **kw):
        return (inst or A).stub.Send(h.pb.SendRequest(client_message_id=cmid, chat_id=chat,
                                                      body=body), metadata=h.md(user, **kw),
                                     timeout=10)

    def code(self, fn):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        return cm.exception.code()

    def test_statuses_and_nothing_produced(self):
        chat = new_chat(["mia", "ned"])
        wait_member(A, "mia", chat)
        tag = unique_cmid("bad")
        C = grpc.StatusCode
        self.assertEqual(self.code(lambda: self.send("oscar", tag + "1", chat, "x")),
                         C.PERMISSION_DENIED)
        self.assertEqual(self.code(lambda: self.send("mia", tag + "2", 12345, "x")), C.NOT_FOUND)
        self.assertEqual(self.code(lambda: self.send("mia", tag + "3", chat, "x" * 4097)),
                         C.INVALID_ARGUMENT)
        self.assertEqual(self.code(lambda: self.send("mia", tag + "4", chat, "")),
                         C.INVALID_ARGUMENT)
        self.assertEqual(self.code(lambda: self.send("mia", "", chat, "x")), C.INVALID_ARGUMENT)
        self.assertEqual(self.code(lambda: self.send("mia", "has space", chat, "x")),
                         C.INVALID_ARGUMENT)
        self.assertEqual(self.code(lambda: self.send("mia", "x" * 65, chat, "x")),
                         C.INVALID_ARGUMENT)
        self.assertEqual(self.code(lambda: self.send("mia", tag + "5", 0, "x")), C.INVALID_ARGUMENT)
        self.assertEqual(self.code(lambda: self.send("mia", tag + "6", chat, "x", ttl_s=-120)),
                         C.UNAUTHENTICATED)
        self.assertEqual(self.code(lambda: self.send("mia", tag + "7", chat, "x",
                                                     secret="another-secret-0123456789abcdefxyz")),
                         C.UNAUTHENTICATED)
        self.assertEqual(self.code(lambda: A.stub.Send(h.pb.SendRequest(client_message_id="a",
                                                                        chat_id=chat, body="x"),
                                                       timeout=10)), C.UNAUTHENTICATED)
        # Invalid UTF-8 needs raw bytes: SendRequest{1: cmid, 2: chat, 3: body}.
        raw = A.channel.unary_unary("/chat.v1.MessagingService/Send",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)

        def enc(field, data):
            out = bytes([field << 3 | 2])
            n = len(data)
            while n >= 0x80:
                out += bytes([n & 0x7F | 0x80])
                n >>= 7
            return out + bytes([n]) + data

        def varint(field, v):
            out = bytes([field << 3])
            while v >= 0x80:
                out += bytes([v & 0x7F | 0x80])
                v >>= 7
            return out + bytes([v])

        for bad in (b"\xff", b"ok\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"):
            body = enc(1, (tag + "u").encode()) + varint(2, chat) + enc(3, bad)
            self.assertEqual(self.code(lambda body=body: raw(body, metadata=h.md("mia"),
                                                             timeout=10)), C.INVALID_ARGUMENT)
        # The same through Connect: REJECTED with the code, the stream goes on.
        dev = h.Device(A.stub, "oscar", "phone")
        dev.send_msg(tag + "c1", chat, "x")
        f = dev.until(lambda f: f.WhichOneof("frame") == "send_result")
        self.assertEqual(f.send_result.status, h.pb.SEND_STATUS_REJECTED)
        self.assertEqual(f.send_result.code, 7)
        self.assertEqual(f.send_result.message_id, 0)
        dev.send_msg(tag + "c2", chat, "")
        f = dev.until(lambda f: f.WhichOneof("frame") == "send_result")
        self.assertEqual((f.send_result.status, f.send_result.code),
                         (h.pb.SEND_STATUS_REJECTED, 3))
        dev.send_msg(tag + "c3", 999, "x")
        f = dev.until(lambda f: f.WhichOneof("frame") == "send_result")
        self.assertEqual((f.send_result.status, f.send_result.code),
                         (h.pb.SEND_STATUS_REJECTED, 5))
        dev.close()
        self.assertEqual(dev.status(), C.OK)
        # Nothing with these ids reached the log.
        time.sleep(0.5)
        self.assertEqual([m for m in STACK.posted() if m.client_message_id.startswith(tag)], [])

    def test_connect_protocol_errors(self):
        C = grpc.StatusCode
        dev = h.Device(A.stub, "pat", "d", secret="another-secret-0123456789abcdefxyz", hello=False)
        self.assertEqual(dev.status(), C.UNAUTHENTICATED)
        dev = h.Device(A.stub, "pat", "d", hello=False)
        dev.ping(1)
        self.assertEqual(dev.status(), C.FAILED_PRECONDITION)
        dev = h.Device(A.stub, "pat", "d", hello=False)
        dev.send(h.pb.ConnectRequest(hello=h.pb.Hello(device_id="bad id!")))
        self.assertEqual(dev.status(), C.INVALID_ARGUMENT)
        dev = h.Device(A.stub, "pat", "d")
        dev.send(h.pb.ConnectRequest(hello=h.pb.Hello(device_id="d")))
        self.assertEqual(dev.status(), C.FAILED_PRECONDITION)
        dev = h.Device(A.stub, "pat", "d")
        dev.ack(1)
        self.assertEqual(dev.status(), C.INVALID_ARGUMENT)
        dev = h.Device(A.stub, "pat", "d")
        dev.send(h.pb.ConnectRequest())
        self.assertEqual(dev.status(), C.INVALID_ARGUMENT)
        dev = h.Device(A.stub, "pat", "d")
        dev.ping(42)
        f = dev.until(lambda f: f.WhichOneof("frame") == "pong")
        self.assertEqual((f.pong.nonce, f.pong.last_session_seq), (42, 0))
        self.assertEqual(dev.welcome.user_id, "pat")
        self.assertEqual(dev.welcome.max_body_bytes, 4096)
        # Same device again on the same instance: the older stream ends ABORTED.
        dev2 = h.Device(A.stub, "pat", "d")
        self.assertEqual(dev.status(), C.ABORTED)
        dev2.close()
        self.assertEqual(dev2.status(), C.OK)

    def test_sigterm_ends_streams_unavailable(self):
        e = h.Messaging(STACK, "messaging-term")
        dev = h.Device(e.stub, "quinn", "phone")
        t0 = time.time()
        e.proc.send_signal(signal.SIGTERM)
        self.assertEqual(dev.status(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(e.proc.wait(30), 0)
        self.assertLess(time.time() - t0, 8)
        e.log.close()


if __name__ == "__main__":
    unittest.main()
