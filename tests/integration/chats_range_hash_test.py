#!/usr/bin/env python3
"""GetRangeHash over the block aggregates (svc-chats/migrations/002_hash_blocks.sql) against
real PostgreSQL, Redis and Kafka.

One chat gets Snowflake-shaped ids spread over 40 days, clustered in hours and in
millisecond bursts (several ids per ms, seq bits used), plus ids on and next to block
boundaries of every level and the extremes 1 and INT64_MAX. Rounds in random order then
change it through every writer the triggers must cover: posts, edits, tombstones and stale
states through Kafka (the materializer's INSERT ... ON CONFLICT DO UPDATE: its INSERT and
UPDATE triggers), and INSERT, UPDATE (version/deleted, and a moved message_id) and DELETE
straight in psql. After every round, many random ranges (block boundaries +-1, 0, 2^64-1,
message ids +-1) with random bucket counts (0..256) must give the same count and hash from
GetRangeHash, from the client-side computation of docs/API.md over the expected state, and
from a raw `count(*), bit_xor(h)` over messages in psql. Finally each trigger is disabled in
turn to show that its writes then make GetRangeHash differ (so a missing trigger fails this
test), and message_hash_blocks_rebuild() repairs it.

    BUILD_DIR=build python3 tests/integration/chats_range_hash_test.py [-v]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chats_common as cc  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == "__main__":
    cc.bootstrap(__file__)

# pylint: disable=wrong-import-position
import bisect
import random
import subprocess
import tempfile
import time
import unittest

pb = pbg = ev_pb = None
STACK = None
SVC = None
STUB = None
EPOCH_MS = 1704067200000
BITS = (42, 47, 52)  # message_hash_block_bits() / hashblocks_bits[]
INT64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
SEED = int(os.environ.get("RANGE_HASH_SEED", "20261201"))
RNG = random.Random(SEED)


def snowflake(ms, instance, seq):
    return (ms << 22) | (instance << 12) | seq


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


class Model:
    """The expected stored state: message_id -> (updated_at_ms, version, deleted, body), with
    the materializer's LWW order (updated_at_ms, version, deleted, body bytes)."""

    def __init__(self):
        self.rows = {}
        self.ids, self.prefix = [], [0]

    def apply_event(self, mid, state):
        cur = self.rows.get(mid)
        if cur is None or state > cur:
            self.rows[mid] = state

    def freeze(self):
        """Sorted ids and prefix XORs of h (docs/API.md's definition) for range_hash()."""
        self.ids = sorted(self.rows)
        self.prefix = [0]
        for mid in self.ids:
            _, version, deleted, _ = self.rows[mid]
            self.prefix.append(self.prefix[-1] ^ cc.h(mid, version, deleted))

    def range_hash(self, lo, hi):
        """(count, hash) of the ids lo <= id < hi as of the last freeze()."""
        a, b = bisect.bisect_left(self.ids, lo), bisect.bisect_left(self.ids, hi)
        return b - a, self.prefix[a] ^ self.prefix[b]


def bucket_bounds(lo, hi, n):
    d = hi - lo
    return [(lo + i * d // n, lo + (i + 1) * d // n) for i in range(n)]


def setUpModule():  # pylint: disable=invalid-name
    global pb, pbg, ev_pb, STACK, SVC, STUB  # pylint: disable=global-statement
    pb, pbg, ev_pb = cc.gen_stubs(tempfile.mkdtemp(prefix="chats-stubs."))
    STACK = cc.Stack()
    try:
        SVC = cc.Chats(STACK)
    except Exception:
        STACK.close()
        raise
    STUB = pbg.ChatsServiceStub(SVC.channel)


def tearDownModule():  # pylint: disable=invalid-name
    if SVC is not None:
        rc = SVC.stop()
        assert rc == 0, "svc-chats exit code %d" % rc
    if STACK is not None:
        STACK.close()


class RangeHashBlocks(unittest.TestCase):
    def setUp(self):
        self.chat = STUB.CreateChat(pb.CreateChatRequest(kind=pb.CHAT_KIND_GROUP,
                                                         member_ids=["rita"], title="blocks"),
                                    metadata=cc.md("quinn"), timeout=20).chat.chat_id
        self.model = Model()
        self.event_seq = 0
        self.checked = 0
        self.taken = set()  # every id ever used in this chat (moves must not land on one)
        self.deleted = []   # ids deleted through psql

    # --- writers -------------------------------------------------------------------------

    def event(self, kind, mid, state):
        updated, version, deleted, body = state
        self.event_seq += 1
        m = pb.Message(message_id=mid, chat_id=self.chat, sender_id="quinn",
                       client_message_id="c%d" % mid, body=body, created_at_ms=updated,
                       updated_at_ms=updated, version=version, deleted=deleted)
        e = ev_pb.ChatEvent(event_id=snowflake(int(time.time() * 1000) - EPOCH_MS, 1000,
                                               self.event_seq % 4096),
                            chat_id=self.chat, produced_at_ms=int(time.time() * 1000),
                            origin_site="t", producer="test", source=ev_pb.EVENT_SOURCE_API)
        getattr(e, kind).CopyFrom(m)
        return e

    def produce(self, items):
        """Produces (kind, mid, state) in order, then a marker post, and waits for the marker:
        one chat is one partition, so everything before it has been applied."""
        marker = snowflake(int(time.time() * 1000) - EPOCH_MS, 1001, self.event_seq % 4096)
        self.taken.add(marker)
        items = list(items) + [("message_posted", marker, (1, 1, False, "marker"))]
        STACK.produce([self.event(k, mid, st) for k, mid, st in items])
        for _, mid, st in items:
            self.model.apply_event(mid, st)
        cc.wait_for(lambda: STACK.psql("SELECT count(*) FROM messages WHERE chat_id = %d AND "
                                       "message_id = %d" % (self.chat, marker)) == "1",
                    60, what="the marker of a produced round")

    def psql_insert(self, mids):
        rows = []
        for mid in mids:
            st = (5, 1, False, "psql %d" % mid)
            self.model.rows[mid] = st
            rows.append("(%d, %d, 'quinn', 'p%d', '%s', 5, 5, 1, false, %d)"
                        % (self.chat, mid, mid, st[3], signed(cc.h(mid, 1, False))))
        STACK.psql("INSERT INTO messages (chat_id, message_id, sender_id, client_message_id, "
                   "body, created_at_ms, updated_at_ms, version, deleted, h) VALUES "
                   + ", ".join(rows))

    def psql_update(self, mids):
        """One UPDATE statement: new version (and sometimes deleted) with its h."""
        vals = []
        for mid in mids:
            upd, version, deleted, body = self.model.rows[mid]
            version += RNG.randint(1, 3)
            deleted = deleted or RNG.random() < 0.3
            body = "" if deleted else body + "+"
            self.model.rows[mid] = (upd + 1, version, deleted, body)
            vals.append("(%d, %d, %s, '%s', %d, %d)" % (mid, version, "true" if deleted else
                                                        "false", body, upd + 1,
                                                        signed(cc.h(mid, version, deleted))))
        STACK.psql("UPDATE messages m SET version = v.version, deleted = v.deleted, body = v.body, "
                   "updated_at_ms = v.upd, h = v.h FROM (VALUES %s) v(id, version, deleted, body, "
                   "upd, h) WHERE m.chat_id = %d AND m.message_id = v.id"
                   % (", ".join(vals), self.chat))

    def psql_move(self, mid, new_mid):
        """An UPDATE that changes the key (no service does this; the triggers still must)."""
        _, version, deleted, _ = self.model.rows[mid]
        self.model.rows[new_mid] = self.model.rows.pop(mid)
        self.taken.add(new_mid)
        STACK.psql("UPDATE messages SET message_id = %d, h = %d WHERE chat_id = %d AND "
                   "message_id = %d" % (new_mid, signed(cc.h(new_mid, version, deleted)),
                                        self.chat, mid))

    def psql_delete(self, mids):
        for mid in mids:
            self.model.rows.pop(mid, None)
        self.deleted.extend(mids)
        STACK.psql("DELETE FROM messages WHERE chat_id = %d AND message_id IN (%s)"
                   % (self.chat, ", ".join(str(m) for m in mids)))

    # --- checks ----------------------------------------------------------------------------

    def random_bound(self):
        r = RNG.random()
        ids = list(self.model.rows) or [1]
        if r < 0.08:
            return 0
        if r < 0.14:
            return U64_MAX
        if r < 0.45:
            return max(0, RNG.choice(ids) + RNG.choice((-1, 0, 0, 1)))
        if r < 0.8:  # a block boundary of some level near a message, +-1
            b = RNG.choice(BITS)
            mid = RNG.choice(ids)
            edge = ((mid >> b) + RNG.choice((0, 1))) << b
            return min(U64_MAX, max(0, edge + RNG.choice((-1, 0, 0, 1))))
        lo, hi = min(ids), max(ids)
        return RNG.randint(max(0, lo - (1 << 40)), min(U64_MAX, hi + (1 << 40)))

    def random_ranges(self, n):
        out = []
        while len(out) < n:
            a, b = self.random_bound(), self.random_bound()
            if a == b:
                continue
            lo, hi = min(a, b), max(a, b)
            buckets = RNG.choice((0, 0, 1, 2, 3, 16, 16, 64, 256, RNG.randint(1, 256)))
            out.append((lo, hi, min(buckets, hi - lo)))
        return out

    def raw_sql(self, ranges):
        """count(*), bit_xor(h) straight from messages for every range and bucket, one psql."""
        vals = []
        for r, (lo, hi, n) in enumerate(ranges):
            for b, (blo, bhi) in enumerate(bucket_bounds(lo, hi, n) if n else [(lo, hi)]):
                first, last = blo, min(bhi, 1 << 63) - 1  # ids above INT64_MAX cannot exist
                if first <= last:
                    vals.append("(%d, %d, %d, %d)" % (r, b, first, last))
        out = {}
        if not vals:
            return out
        res = psql_stdin("SELECT v.r, v.b, count(m.message_id), coalesce(bit_xor(m.h), 0) FROM "
                         "(VALUES %s) v(r, b, lo, hi) LEFT JOIN messages m ON m.chat_id = %d AND "
                         "m.message_id BETWEEN v.lo AND v.hi GROUP BY v.r, v.b"
                         % (", ".join(vals), self.chat))
        for line in res.splitlines():
            r, b, cnt, x = (int(v) for v in line.split("|"))
            out[(r, b)] = (cnt, x & U64_MAX)
        return out

    def check(self, what, n=40, expect_equal=True):
        self.model.freeze()
        ranges = self.random_ranges(n)
        # always the whole chat and the whole id space too
        ids = sorted(self.model.rows)
        ranges += [(0, U64_MAX, 256), (0, U64_MAX, 0), (ids[0], ids[-1] + 1, 16)]
        raw = self.raw_sql(ranges)
        mismatches = []
        for r, (lo, hi, n) in enumerate(ranges):
            resp = STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=self.chat, from_message_id=lo,
                                                            to_message_id=hi, bucket_count=n),
                                     metadata=cc.md("rita"), timeout=20)
            got = [(resp.total.count, resp.total.hash)]
            want = [self.model.range_hash(lo, hi)]
            sql = [(sum(raw.get((r, b), (0, 0))[0] for b in range(max(n, 1))),
                    _xor(raw.get((r, b), (0, 0))[1] for b in range(max(n, 1))))]
            self.assertEqual(len(resp.buckets), n)
            for b, (blo, bhi) in enumerate(bucket_bounds(lo, hi, n) if n else []):
                bk = resp.buckets[b]
                self.assertEqual((bk.from_message_id, bk.to_message_id), (blo, bhi))
                got.append((bk.count, bk.hash))
                want.append(self.model.range_hash(blo, bhi))
                sql.append(raw.get((r, b), (0, 0)))
            if expect_equal:
                msg = "%s: range [%d, %d) with %d buckets (seed %d)" % (what, lo, hi, n, SEED)
                self.assertEqual(want, sql, "client-side model vs psql: " + msg)
                self.assertEqual(got, want, "GetRangeHash vs client-side: " + msg)
            elif got != sql:
                mismatches.append((lo, hi, n))
        self.checked += len(ranges)
        return mismatches

    # --- the test --------------------------------------------------------------------------

    def initial_ids(self):
        now = int(time.time() * 1000) - EPOCH_MS
        ids = set()
        for _ in range(150):  # spread over 40 days
            ids.add(snowflake(now - RNG.randint(0, 40 * 86400000), RNG.randint(0, 1023),
                              RNG.randint(0, 4095)))
        for _ in range(5):  # hours: 60 messages within 3 h
            start = now - RNG.randint(3 * 3600000, 40 * 86400000)
            for _ in range(60):
                ids.add(snowflake(start + RNG.randint(0, 3 * 3600000), RNG.randint(0, 1023),
                                  RNG.randint(0, 4095)))
        for _ in range(10):  # ms bursts: 30 messages within 4 ms, consecutive seq
            ms = now - RNG.randint(0, 40 * 86400000)
            inst = RNG.randint(0, 1023)
            for i in range(30):
                ids.add(snowflake(ms + i // 8, inst, i % 8))
        for b in BITS:  # on and next to block boundaries of every level
            for _ in range(3):
                edge = (snowflake(now - RNG.randint(0, 40 * 86400000), 0, 0) >> b) << b
                ids.update((edge - 1, edge, edge + 1))
        ids.update((1, 2, INT64_MAX, INT64_MAX - 1, (1 << 63) - (1 << BITS[0])))
        return sorted(i for i in ids if 0 < i <= INT64_MAX)

    def test_blocks_follow_every_writer(self):
        ids = self.initial_ids()
        self.taken.update(ids)
        RNG.shuffle(ids)
        # a third arrive through Kafka, a few straight through psql, the rest in later rounds
        first = ids[:len(ids) // 3]
        self.produce(("message_posted", m, (1000, 1, False, "b%d" % m)) for m in first)
        self.psql_insert(ids[len(ids) // 3:len(ids) // 3 + 20])
        pending = ids[len(ids) // 3 + 20:]
        self.check("initial posts")

        ops = ["kafka"] * 6 + ["psql_insert", "psql_update", "psql_update", "psql_delete",
                               "psql_delete", "psql_move", "kafka_mixed"]
        RNG.shuffle(ops)
        for i, op in enumerate(ops):
            present = sorted(self.model.rows)
            if op == "kafka" and pending:
                take, pending = pending[:80], pending[80:]
                items = [("message_posted", m, (1000, 1, False, "b%d" % m)) for m in take]
                for m in RNG.sample(present, min(30, len(present))):  # edits and tombstones
                    upd, version, deleted, body = self.model.rows[m]
                    if RNG.random() < 0.3:
                        items.append(("message_deleted", m, (upd + 10, version + 1, True, "")))
                    elif not deleted:
                        items.append(("message_edited", m, (upd + 10, version + 1, False,
                                                            body + "e")))
                for m in RNG.sample(present, min(10, len(present))):  # stale: must not win
                    items.append(("message_edited", m, (1, 1, False, "stale")))
                RNG.shuffle(items)
                self.produce(items)
            elif op == "kafka_mixed":
                # re-post deleted-by-psql ids and edit others in one batch (insert + update)
                gone = [m for m in self.deleted if m not in self.model.rows][:20]
                items = [("message_posted", m, (2000, 1, False, "again")) for m in gone]
                items += [("message_edited", m, (9000, 50, False, "late"))
                          for m in RNG.sample(present, min(20, len(present)))]
                RNG.shuffle(items)
                self.produce(items)
            elif op == "psql_insert":
                take, pending = pending[:25], pending[25:]
                if take:
                    self.psql_insert(take)
            elif op == "psql_update":
                self.psql_update(RNG.sample(present, min(40, len(present))))
            elif op == "psql_delete":
                self.psql_delete(RNG.sample(present, min(25, len(present))))
            elif op == "psql_move":
                for m in RNG.sample(present, 5):
                    new = m ^ (1 << RNG.choice(BITS))
                    if 0 < new <= INT64_MAX and new not in self.taken:
                        self.psql_move(m, new)
            self.check("round %d (%s)" % (i, op))
        if pending:
            self.produce(("message_posted", m, (1000, 1, False, "b%d" % m)) for m in pending)
        self.check("final", n=150)
        self.assertGreater(len(self.model.rows), 500)
        print("\n%d messages, %d ranges checked, seed %d" % (len(self.model.rows), self.checked,
                                                             SEED), file=sys.stderr)

        # Without a trigger its writes leave the blocks stale and GetRangeHash wrong; the
        # rebuild function repairs them.
        ids = sorted(self.model.rows)
        fresh = next(m for m in range(ids[0] + 1, ids[0] + 100) if m not in self.taken)
        for trig, change in (
                ("message_hash_blocks_insert", lambda: self.psql_insert([fresh])),
                ("message_hash_blocks_update", lambda: self.psql_update(ids[5:9])),
                ("message_hash_blocks_delete", lambda: self.psql_delete(ids[10:14]))):
            STACK.psql("ALTER TABLE messages DISABLE TRIGGER " + trig)
            try:
                change()
            finally:
                STACK.psql("ALTER TABLE messages ENABLE TRIGGER " + trig)
            bad = self.check("without " + trig, n=30, expect_equal=False)
            self.assertTrue(bad, "GetRangeHash still right without " + trig)
            STACK.psql("SELECT message_hash_blocks_rebuild()")
            self.check("after rebuild", n=10)


def psql_stdin(sql):
    """STACK.psql for statements too long for a command line."""
    out = subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                          "-p", STACK.env["PG_PORT"], "-U", "chat", "-d", "chat"],
                         input=sql, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _xor(values):
    acc = 0
    for v in values:
        acc ^= v
    return acc


if __name__ == "__main__":
    unittest.main()
