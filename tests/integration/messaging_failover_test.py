#!/usr/bin/env python3
"""svc-messaging on a three-broker Kafka (RF 3, min.insync.replicas 2): kill -9 the leader of
the chat's partition while senders are busy. Senders behave like clients: FAILED/UNAVAILABLE
(or a deadline) is retried with the same client_message_id. Afterwards every acknowledged
message (OK or DUPLICATE) is on the topic, each client_message_id maps to exactly one
message_id there (records are deduplicated by message_id when reading, as every consumer
does), and it is the id the sender was given.

    BUILD_DIR=build python3 tests/integration/messaging_failover_test.py [-v]
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
import threading
import time
import unittest

import grpc

sys.path.insert(0, HERE)
import messaging_harness as h  # noqa: E402

STACK = None
A = None


def setUpModule():
    global STACK, A
    if not os.access(h.SVC, os.X_OK):
        raise unittest.SkipTest("svc-messaging not built: " + h.SVC)
    if h.KCAT is None:
        raise unittest.SkipTest("kcat not installed (tools/install-deps.sh)")
    STACK = h.Stack("chat-messaging-failover-", brokers=3, partitions=3)
    h.gen_stubs(STACK.dir)
    A = h.Messaging(STACK, "messaging-a", "--send-timeout-ms", "15000")
    h.wait_consuming(STACK, [A])


def tearDownModule():
    if A:
        A.stop()
    if STACK and not os.environ.get("KEEP_TMP"):
        STACK.close()


class LeaderCrash(unittest.TestCase):
    def test_kill_partition_leader_while_sending(self):
        chat = random.getrandbits(62) | 1
        STACK.create_chat(chat, ["sam", "tess"])
        part = [p for p, _, ev in STACK.records() if ev.chat_id == chat][0]
        leader = int(STACK.lib('kafka_leader "$D" chat.events %d' % part).strip())
        self.assertGreaterEqual(leader, 1)
        end_at = [time.time() + 1e9]
        acked = {}  # cmid -> message_id
        attempts = {"failed": 0, "ok": 0}
        lock = threading.Lock()

        def sender(idx):
            n = 0
            while time.time() < end_at[0]:
                cm = "fo-%d-%d-%d" % (idx, n, random.getrandbits(32))
                n += 1
                deadline = time.time() + 60
                while time.time() < deadline:
                    try:
                        r = A.stub.Send(h.pb.SendRequest(client_message_id=cm, chat_id=chat,
                                                         body="failover %s" % cm),
                                        metadata=h.md("sam"), timeout=20)
                        with lock:
                            acked[cm] = r.message_id
                            attempts["ok"] += 1
                        break
                    except grpc.RpcError as e:
                        if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                            grpc.StatusCode.DEADLINE_EXCEEDED,
                                            grpc.StatusCode.NOT_FOUND):
                            raise
                        with lock:
                            attempts["failed"] += 1
                        time.sleep(0.1)

        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        before = len(acked)
        STACK.lib('kill_kafka_broker "$D" %d KILL' % leader)
        killed_at = time.time()
        time.sleep(12)
        end_at[0] = time.time()
        for t in threads:
            t.join(90)
        new_leader = int(STACK.lib('kafka_leader "$D" chat.events %d' % part).strip())
        print("leader %d killed; new leader %d; acked %d before, %d total; %d failed attempts "
              "retried" % (leader, new_leader, before, len(acked), attempts["failed"]),
              file=sys.stderr)
        self.assertNotEqual(new_leader, leader)
        self.assertGreater(len(acked), before, "sends continued after the leader died")
        self.assertGreater(time.time() - killed_at, 10)
        by_cmid = {}
        copies = {}
        for m in STACK.posted(timeout=120):
            if m.chat_id == chat:
                by_cmid.setdefault(m.client_message_id, set()).add(m.message_id)
                copies[m.message_id] = copies.get(m.message_id, 0) + 1
        for cm, mid in acked.items():
            self.assertEqual(by_cmid.get(cm), {mid}, cm)
        dup_records = sum(c - 1 for c in copies.values())
        print("topic: %d messages for %d acked client ids; %d extra records with a repeated "
              "message_id (re-produced unconfirmed attempts)" % (len(copies), len(acked),
                                                                   dup_records), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
