#!/usr/bin/env python3
"""svc-chats materializer crash safety on real PostgreSQL, Redis and Kafka.

Produces 24,000 message_posted records to chat.events (8 chats) with kcat, starts svc-chats
with small batches, SIGKILLs it while it is materializing, and checks:
  - at the kill, the stored offsets account for exactly the stored rows (rows and offsets
    commit in one transaction: sum(next_offset) == row count, one record per message);
  - after a restart (resuming from the stored offsets) every message is stored exactly once
    (count == distinct == produced), and the server's range hash equals the one computed
    here from what was produced.

    BUILD_DIR=build python3 tests/integration/chats_crash_test.py [-v]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chats_common as cc  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == "__main__":
    cc.bootstrap(__file__)

# pylint: disable=wrong-import-position
import tempfile
import time
import unittest

CHATS = 8
PER_CHAT = 3000
EPOCH_MS = 1704067200000


class Crash(unittest.TestCase):
    def test_kill9_mid_batch(self):
        pb, pbg, ev_pb = cc.gen_stubs(tempfile.mkdtemp(prefix="chats-stubs."))
        stack = cc.Stack()
        svc = None
        try:
            base = (int(time.time() * 1000) - EPOCH_MS) << 22
            events, msgs = [], {}
            now = int(time.time() * 1000)
            for c in range(CHATS):
                chat_id = base + (1 << 21) + c
                created = pb.Chat(chat_id=chat_id, kind=pb.CHAT_KIND_GROUP, creator_id="owner",
                                  created_at_ms=now, member_count=1, member_ids=["owner"])
                events.append(ev_pb.ChatEvent(event_id=chat_id, chat_id=chat_id,
                                              produced_at_ms=now, chat_created=created))
                msgs[chat_id] = []
                for i in range(PER_CHAT):
                    mid = base + (c << 14) + i + 1
                    m = pb.Message(message_id=mid, chat_id=chat_id, sender_id="owner",
                                   body="message %d" % i, created_at_ms=now, updated_at_ms=now,
                                   version=1)
                    msgs[chat_id].append(m)
                    events.append(ev_pb.ChatEvent(event_id=mid, chat_id=chat_id,
                                                  produced_at_ms=now, message_posted=m))
            stack.produce(events)
            total = CHATS * PER_CHAT + CHATS
            svc = cc.Chats(stack, extra=["--batch-max", "300"])

            def rows():
                return int(stack.psql("SELECT count(*) FROM messages"))
            cc.wait_for(lambda: rows() > 2000, 60, 0.02, "materializing to start")
            svc.kill()
            at_kill = rows()
            offsets = int(stack.psql("SELECT coalesce(sum(next_offset), 0) FROM kafka_offsets"))
            chats = int(stack.psql("SELECT count(*) FROM chats"))
            print("\nkilled with %d of %d messages stored" % (at_kill, CHATS * PER_CHAT),
                  file=sys.stderr)
            self.assertLess(at_kill, CHATS * PER_CHAT, "the kill came too late to test anything")
            self.assertEqual(offsets, at_kill + chats)

            svc = cc.Chats(stack, name="chats-2")
            cc.wait_for(lambda: rows() >= CHATS * PER_CHAT, 120, 0.2, "catching up")
            time.sleep(1)
            self.assertEqual(stack.psql("SELECT count(*), count(DISTINCT message_id) FROM messages"),
                             "%d|%d" % (CHATS * PER_CHAT, CHATS * PER_CHAT))
            self.assertEqual(int(stack.psql("SELECT sum(next_offset) FROM kafka_offsets")), total)
            self.assertIn("from stored offset", svc.read_log())
            stub = pbg.ChatsServiceStub(svc.channel)
            for chat_id, ms in msgs.items():
                r = stub.GetRangeHash(pb.GetRangeHashRequest(chat_id=chat_id,
                                                             to_message_id=2**64 - 1),
                                      metadata=cc.md("owner"))
                self.assertEqual((r.total.count, r.total.hash), cc.range_hash(ms, 0, 2**64 - 1))
            self.assertEqual(svc.stop(), 0)
            svc = None
        finally:
            if svc is not None:
                svc.kill()
            stack.close()


if __name__ == "__main__":
    unittest.main()
