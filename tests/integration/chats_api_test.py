#!/usr/bin/env python3
"""svc-chats against real PostgreSQL, Redis and Kafka, through Python grpcio.

Checks CreateChat (direct/group, 500 limit, request_id retry), AddMembers/RemoveMembers (and
the chat:<id>:members set svc-presence reads), GetChat for members / non-members / service
tokens, GetHistory paging both ways (and the Redis cache: warm and cold pages identical),
ListChats, PullMessages across chats and pages with acknowledgement, range hashes computed in
Python equal the server's (a missing message changes them, buckets pinpoint it), EditMessage /
DeleteMessage through the log, LWW convergence of out-of-order edits/deletes produced straight
to Kafka, EXPLAIN of the read queries (index scans), and bad input with exact statuses.

    BUILD_DIR=build python3 tests/integration/chats_api_test.py [-v]
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

import grpc

pb = pbg = ev_pb = None
STACK = None
SVC = None
STUB = None
EPOCH_MS = 1704067200000
_seq = [0]


def new_id():
    """A Snowflake-shaped id (site 7, instance 127: never issued by the service itself)."""
    _seq[0] += 1
    ms = int(time.time() * 1000) - EPOCH_MS
    return (ms << 22) | (7 << 19) | (127 << 12) | (_seq[0] % 4096)


def message(chat_id, mid, sender, body, version=1, updated=None, deleted=False):
    now = int(time.time() * 1000)
    return pb.Message(message_id=mid, chat_id=chat_id, sender_id=sender,
                      client_message_id="c%d" % mid, body="" if deleted else body,
                      created_at_ms=now, updated_at_ms=updated or now, version=version,
                      deleted=deleted)


def event(chat_id, kind, msg):
    e = ev_pb.ChatEvent(event_id=new_id(), chat_id=chat_id, produced_at_ms=int(time.time() * 1000),
                        origin_site="t", producer="test", source=ev_pb.EVENT_SOURCE_API)
    getattr(e, kind).CopyFrom(msg)
    return e


def post(chat_id, sender, n, body="m"):
    msgs = []
    for i in range(n):
        msgs.append(message(chat_id, new_id(), sender, "%s %d" % (body, i)))
    STACK.produce([event(chat_id, "message_posted", m) for m in msgs])
    return msgs


def stored_count(chat_id):
    return int(STACK.psql("SELECT count(*) FROM messages WHERE chat_id = %d" % chat_id))


def wait_count(chat_id, n):
    cc.wait_for(lambda: stored_count(chat_id) >= n, 60, what="%d messages in chat" % n)


def create(user, others, kind=None, **kw):
    kind = pb.CHAT_KIND_GROUP if kind is None else kind
    return STUB.CreateChat(pb.CreateChatRequest(kind=kind, member_ids=others, **kw),
                           metadata=cc.md(user), timeout=20)


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def all_history(chat_id, user, page=7):
    out, anchor = [], 0
    while True:
        r = STUB.GetHistory(pb.GetHistoryRequest(chat_id=chat_id, anchor_message_id=anchor,
                                                 direction=pb.HISTORY_DIRECTION_FORWARD,
                                                 page_size=page), metadata=cc.md(user))
        out.extend(r.messages)
        if not r.has_more:
            return out
        anchor = r.messages[-1].message_id


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


class CreateAndMembers(unittest.TestCase):
    def test_group_create_add_remove(self):
        r = create("alice", ["bob", "carol", "bob"], title="team")
        self.assertTrue(r.created)
        c = r.chat
        self.assertEqual(list(c.member_ids), ["alice", "bob", "carol"])
        self.assertEqual((c.kind, c.title, c.creator_id, c.member_count),
                         (pb.CHAT_KIND_GROUP, "team", "alice", 3))
        # read-your-writes: GetChat right after sees it, and so does Redis
        g = STUB.GetChat(pb.GetChatRequest(chat_id=c.chat_id), metadata=cc.md("bob"))
        self.assertEqual(list(g.chat.member_ids), ["alice", "bob", "carol"])
        self.assertEqual(sorted(STACK.redis("SMEMBERS", "chat:%d:members" % c.chat_id).split()),
                         ["alice", "bob", "carol"])
        a = STUB.AddMembers(pb.AddMembersRequest(chat_id=c.chat_id, user_ids=["dave", "bob"]),
                            metadata=cc.md("carol"), timeout=20)
        self.assertEqual((list(a.added_user_ids), a.member_count), (["dave"], 4))
        # only the creator removes others; anyone may leave
        self.assertEqual(code_of(lambda: STUB.RemoveMembers(
            pb.RemoveMembersRequest(chat_id=c.chat_id, user_ids=["dave"]),
            metadata=cc.md("bob"))), grpc.StatusCode.PERMISSION_DENIED)
        rm = STUB.RemoveMembers(pb.RemoveMembersRequest(chat_id=c.chat_id, user_ids=["bob"]),
                                metadata=cc.md("bob"), timeout=20)
        self.assertEqual((list(rm.removed_user_ids), rm.member_count), (["bob"], 3))
        rm = STUB.RemoveMembers(pb.RemoveMembersRequest(chat_id=c.chat_id,
                                                        user_ids=["dave", "zed"]),
                                metadata=cc.md("alice"), timeout=20)
        self.assertEqual((list(rm.removed_user_ids), rm.member_count), (["dave"], 2))
        self.assertEqual(sorted(STACK.redis("SMEMBERS", "chat:%d:members" % c.chat_id).split()),
                         ["alice", "carol"])
        self.assertEqual(code_of(lambda: STUB.GetChat(pb.GetChatRequest(chat_id=c.chat_id),
                                                      metadata=cc.md("bob"))),
                         grpc.StatusCode.PERMISSION_DENIED)
        # a service token reads any chat (svc-messaging's membership lookups)
        g = STUB.GetChat(pb.GetChatRequest(chat_id=c.chat_id), metadata=cc.md("service:messaging"))
        self.assertEqual(list(g.chat.member_ids), ["alice", "carol"])

    def test_group_limits(self):
        ok = create("owner", ["u%03d" % i for i in range(499)])
        self.assertEqual(ok.chat.member_count, 500)
        n = STACK.psql("SELECT count(*) FROM chats")
        self.assertEqual(code_of(lambda: create("owner", ["u%03d" % i for i in range(500)])),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code_of(lambda: STUB.AddMembers(
            pb.AddMembersRequest(chat_id=ok.chat.chat_id, user_ids=["extra"]),
            metadata=cc.md("owner"))), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(STACK.psql("SELECT count(*) FROM chats"), n)  # nothing stored

    def test_direct_and_request_id(self):
        d = create("erin", ["frank"], kind=pb.CHAT_KIND_DIRECT)
        self.assertTrue(d.created)
        again = create("frank", ["erin"], kind=pb.CHAT_KIND_DIRECT)
        self.assertEqual((again.created, again.chat.chat_id), (False, d.chat.chat_id))
        self.assertEqual(code_of(lambda: create("erin", ["frank", "gina"],
                                                kind=pb.CHAT_KIND_DIRECT)),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code_of(lambda: STUB.AddMembers(
            pb.AddMembersRequest(chat_id=d.chat.chat_id, user_ids=["gina"]),
            metadata=cc.md("erin"))), grpc.StatusCode.FAILED_PRECONDITION)
        a = create("erin", ["x1"], request_id="req-1")
        b = create("erin", ["x1"], request_id="req-1")
        self.assertTrue(a.created)
        self.assertEqual((b.created, b.chat.chat_id), (False, a.chat.chat_id))


class Reads(unittest.TestCase):
    def test_history_paging_and_cache(self):
        c = create("hana", ["ivan"]).chat
        msgs = post(c.chat_id, "hana", 23)
        wait_count(c.chat_id, 23)
        ids = [m.message_id for m in msgs]
        self.assertEqual([m.message_id for m in all_history(c.chat_id, "ivan")], ids)
        # backward from the newest, pages ascending inside
        got, anchor = [], 0
        while True:
            r = STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id, anchor_message_id=anchor,
                                                     page_size=5), metadata=cc.md("ivan"))
            ids_page = [m.message_id for m in r.messages]
            self.assertEqual(ids_page, sorted(ids_page))
            got = ids_page + got
            if not r.has_more:
                break
            anchor = r.messages[0].message_id
        self.assertEqual(got, ids)
        # the newest page: cold (PostgreSQL, fills the cache) then warm (Redis), identical
        STACK.redis("DEL", "chat:%d:recent:floor" % c.chat_id)
        before = SVC.metrics()
        cold = STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id, page_size=10),
                               metadata=cc.md("ivan"))
        self.assertEqual(STACK.redis("EXISTS", "chat:%d:recent:floor" % c.chat_id), "1")
        warm = STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id, page_size=10),
                               metadata=cc.md("ivan"))
        self.assertEqual(cold, warm)
        self.assertEqual([m.message_id for m in warm.messages], ids[-10:])
        self.assertTrue(warm.has_more)
        after = SVC.metrics()
        self.assertGreater(metric(after, 'chats_history_cache_total{result="hit"}'),
                           metric(before, 'chats_history_cache_total{result="hit"}'))
        # a new message reaches the warm cache through the materializer
        more = post(c.chat_id, "ivan", 1, body="late")
        wait_count(c.chat_id, 24)
        cc.wait_for(lambda: STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id, page_size=10),
                                            metadata=cc.md("ivan")).messages[-1].message_id ==
                    more[0].message_id, 10, what="cache update")
        warm2 = STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id, page_size=10),
                                metadata=cc.md("ivan"))
        STACK.redis("DEL", "chat:%d:recent:floor" % c.chat_id)
        cold2 = STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id, page_size=10),
                                metadata=cc.md("ivan"))
        self.assertEqual(warm2, cold2)
        # non-members are refused even when the cache is warm
        self.assertEqual(code_of(lambda: STUB.GetHistory(pb.GetHistoryRequest(chat_id=c.chat_id),
                                                         metadata=cc.md("mallory"))),
                         grpc.StatusCode.PERMISSION_DENIED)

    def test_list_chats(self):
        chats = [create("lena", ["x%d" % i]).chat.chat_id for i in range(5)]
        m = post(chats[2], "lena", 3)
        wait_count(chats[2], 3)
        seen, after = [], 0
        while True:
            r = STUB.ListChats(pb.ListChatsRequest(after_chat_id=after, page_size=2),
                               metadata=cc.md("lena"))
            seen.extend((s.chat.chat_id, s.newest_message_id) for s in r.chats)
            if not r.has_more:
                break
            after = r.next_after_chat_id
        self.assertEqual([c for c, _ in seen], sorted(chats))
        self.assertEqual(dict(seen)[chats[2]], m[-1].message_id)
        self.assertEqual(dict(seen)[chats[0]], 0)

    def test_pull_across_chats_and_pages(self):
        chats = [create("olga", ["peter"]).chat.chat_id for _ in range(3)]
        other = create("quinn", ["rob"]).chat.chat_id  # olga is not in it
        posted = []
        for c in chats:
            posted += post(c, "peter", 9)
        post(other, "quinn", 4)
        for c in chats:
            wait_count(c, 9)
        wait_count(other, 4)
        want = sorted(m.message_id for m in posted)
        start = min(want) - 1
        got, tok = [], ""
        first = STUB.PullMessages(pb.PullMessagesRequest(device_id="phone", page_size=10,
                                                         start_after_message_id=start),
                                  metadata=cc.md("olga"))
        # a crash before the next call repeats the page (nothing acknowledged yet)
        again = STUB.PullMessages(pb.PullMessagesRequest(device_id="phone", page_size=10,
                                                         start_after_message_id=start),
                                  metadata=cc.md("olga"))
        self.assertEqual(first, again)
        r = first
        while True:
            ids = [m.message_id for m in r.messages]
            self.assertEqual(ids, sorted(ids))
            got += ids
            tok = r.next_page_token
            if not r.has_more:
                break
            r = STUB.PullMessages(pb.PullMessagesRequest(device_id="phone", page_token=tok,
                                                         page_size=10), metadata=cc.md("olga"))
        self.assertEqual(got, want)
        # acknowledge the last page; an empty token resumes after it
        last = STUB.PullMessages(pb.PullMessagesRequest(device_id="phone", page_token=tok),
                                 metadata=cc.md("olga"))
        self.assertEqual(len(last.messages), 0)
        new = post(chats[1], "peter", 2)
        wait_count(chats[1], 11)
        resumed = STUB.PullMessages(pb.PullMessagesRequest(device_id="phone"),
                                    metadata=cc.md("olga"))
        self.assertEqual([m.message_id for m in resumed.messages], [m.message_id for m in new])
        # tokens are bound to user and device
        self.assertEqual(code_of(lambda: STUB.PullMessages(
            pb.PullMessagesRequest(device_id="tablet", page_token=tok), metadata=cc.md("olga"))),
            grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code_of(lambda: STUB.PullMessages(
            pb.PullMessagesRequest(device_id="phone", page_token=tok), metadata=cc.md("peter"))),
            grpc.StatusCode.INVALID_ARGUMENT)

    def test_range_hash(self):
        c = create("sam", ["tina"]).chat.chat_id
        msgs = post(c, "sam", 40)
        wait_count(c, 40)
        full = STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, to_message_id=2**64 - 1,
                                                        bucket_count=8), metadata=cc.md("tina"))
        self.assertEqual((full.total.count, full.total.hash), cc.range_hash(msgs, 0, 2**64 - 1))
        xor, cnt = 0, 0
        for b in full.buckets:
            self.assertEqual((b.count, b.hash), cc.range_hash(msgs, b.from_message_id,
                                                              b.to_message_id))
            xor ^= b.hash
            cnt += b.count
        self.assertEqual((cnt, xor), (full.total.count, full.total.hash))
        lo, hi = msgs[5].message_id, msgs[30].message_id
        r = STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, from_message_id=lo,
                                                     to_message_id=hi, bucket_count=16),
                              metadata=cc.md("tina"))
        self.assertEqual((r.total.count, r.total.hash), cc.range_hash(msgs, lo, hi))
        # a client missing one message: its hash differs, and exactly one bucket shows where
        missing = msgs[17]
        held = [m for m in msgs if m.message_id != missing.message_id]
        self.assertNotEqual(cc.range_hash(held, lo, hi), (r.total.count, r.total.hash))
        bad = [b for b in r.buckets
               if (b.count, b.hash) != cc.range_hash(held, b.from_message_id, b.to_message_id)]
        self.assertEqual(len(bad), 1)
        self.assertTrue(bad[0].from_message_id <= missing.message_id < bad[0].to_message_id)
        # the documented worked example: bucket bounds as in docs/API.md
        f, t = 7139847602483200000, 7139847606677504001
        r = STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, from_message_id=f,
                                                     to_message_id=t, bucket_count=4),
                              metadata=cc.md("tina"))
        d = t - f
        self.assertEqual([(b.from_message_id, b.to_message_id) for b in r.buckets],
                         [(f + i * d // 4, f + (i + 1) * d // 4) for i in range(4)])
        self.assertEqual(cc.h(7139847602483200001, 1, False), 0xF4DB7B01DE677747)

    def test_explain_index_scans(self):
        c = create("uma", ["vic"]).chat.chat_id
        post(c, "uma", 3)
        wait_count(c, 3)
        STACK.psql("ANALYZE")
        plans = {
            "history": "SELECT * FROM messages WHERE chat_id = %d AND message_id < 9000000000000000000 "
                       "ORDER BY message_id DESC LIMIT 51" % c,
            "range": "SELECT count(*), bit_xor(h) FROM messages WHERE chat_id = %d AND "
                     "message_id >= 0 AND message_id <= 9223372036854775807" % c,
            "range blocks": "SELECT sum(n), bit_xor(x) FROM message_hash_blocks WHERE "
                            "chat_id = %d AND bits = 42 AND blk >= 0 AND blk <= 2097151" % c,
            "list": "SELECT chat_id FROM chat_members WHERE user_id = 'uma' AND is_member AND "
                    "chat_id > 0 ORDER BY chat_id LIMIT 51",
        }
        for name, q in plans.items():
            plan = STACK.psql("SET enable_seqscan = off; EXPLAIN " + q)
            print("\nEXPLAIN %s:\n%s" % (name, plan), file=sys.stderr)
            self.assertIn("Index", plan, name)
            self.assertNotIn("Seq Scan", plan, name)


class Writes(unittest.TestCase):
    def test_edit_delete_via_rpc(self):
        c = create("walt", ["xena"]).chat.chat_id
        m = post(c, "walt", 1)[0]
        wait_count(c, 1)
        e = STUB.EditMessage(pb.EditMessageRequest(chat_id=c, message_id=m.message_id,
                                                   body="edited"), metadata=cc.md("walt"),
                             timeout=20)
        self.assertEqual((e.message.body, e.message.version), ("edited", 2))
        self.assertEqual(code_of(lambda: STUB.EditMessage(
            pb.EditMessageRequest(chat_id=c, message_id=m.message_id, body="x"),
            metadata=cc.md("xena"))), grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(code_of(lambda: STUB.EditMessage(
            pb.EditMessageRequest(chat_id=c, message_id=m.message_id, body="x",
                                  expected_version=1), metadata=cc.md("walt"))),
            grpc.StatusCode.ABORTED)
        d = STUB.DeleteMessage(pb.DeleteMessageRequest(chat_id=c, message_id=m.message_id),
                               metadata=cc.md("walt"), timeout=20)
        self.assertEqual((d.message.deleted, d.message.body, d.message.version), (True, "", 3))
        d2 = STUB.DeleteMessage(pb.DeleteMessageRequest(chat_id=c, message_id=m.message_id),
                                metadata=cc.md("walt"), timeout=20)
        self.assertEqual(d2.message, d.message)
        self.assertEqual(code_of(lambda: STUB.EditMessage(
            pb.EditMessageRequest(chat_id=c, message_id=m.message_id, body="x"),
            metadata=cc.md("walt"))), grpc.StatusCode.FAILED_PRECONDITION)
        r = STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, to_message_id=2**64 - 1),
                              metadata=cc.md("xena"))
        self.assertEqual((r.total.count, r.total.hash), (1, cc.h(m.message_id, 3, True)))

    def test_lww_out_of_order(self):
        c = create("yuri", ["zoe"]).chat.chat_id
        mid = new_id()
        t = int(time.time() * 1000)
        v1 = message(c, mid, "yuri", "one", 1, t)
        v2 = message(c, mid, "yuri", "two", 2, t + 5)
        v3 = message(c, mid, "yuri", "", 3, t + 9, deleted=True)
        tie_a = message(c, mid + 1, "yuri", "aaa", 2, t + 5)
        tie_b = message(c, mid + 1, "yuri", "bbb", 2, t + 5)
        base = message(c, mid + 1, "yuri", "base", 1, t)
        # newest first, then older states, in separate produce calls (separate batches)
        STACK.produce([event(c, "message_deleted", v3)])
        STACK.produce([event(c, "message_edited", tie_b)])
        wait_count(c, 2)
        STACK.produce([event(c, "message_edited", v2), event(c, "message_posted", v1),
                       event(c, "message_posted", base), event(c, "message_edited", tie_a)])
        marker = post(c, "zoe", 1)[0]
        wait_count(c, 3)
        got = {m.message_id: m for m in all_history(c, "zoe")}
        self.assertEqual((got[mid].deleted, got[mid].version, got[mid].body), (True, 3, ""))
        self.assertEqual((got[mid + 1].body, got[mid + 1].version), ("bbb", 2))
        self.assertIn(marker.message_id, got)
        self.assertEqual(STACK.psql("SELECT h FROM messages WHERE message_id = %d" % mid),
                         str(signed(cc.h(mid, 3, True))))

    def test_lww_warm_cache(self):
        """Edits, deletes and stale states of a warm chat in one produce call: the
        materializer's one cache script call per chat and batch keeps what PostgreSQL keeps."""
        c = create("uma", ["vic"]).chat.chat_id
        old = post(c, "uma", 4)
        wait_count(c, 4)
        STACK.redis("DEL", "chat:%d:recent:floor" % c)
        STUB.GetHistory(pb.GetHistoryRequest(chat_id=c, page_size=10), metadata=cc.md("vic"))
        self.assertEqual(STACK.redis("EXISTS", "chat:%d:recent:floor" % c), "1")
        t = int(time.time() * 1000) + 1000
        a, b, d = old[1].message_id, old[2].message_id, old[3].message_id
        fresh = new_id()
        STACK.produce([
            event(c, "message_edited", message(c, a, "uma", "a2", 2, t)),
            event(c, "message_edited", message(c, a, "uma", "stale", 1, t - 5000)),
            event(c, "message_deleted", message(c, b, "uma", "", 3, t + 1, deleted=True)),
            event(c, "message_edited", message(c, b, "uma", "b2", 2, t)),
            event(c, "message_edited", message(c, d, "uma", "zzz", 2, t)),
            event(c, "message_edited", message(c, d, "uma", "aaa", 2, t)),
            event(c, "message_posted", message(c, fresh, "vic", "new")),
        ])
        marker = post(c, "vic", 1)[0]

        def newest():
            return STUB.GetHistory(pb.GetHistoryRequest(chat_id=c, page_size=10),
                                   metadata=cc.md("vic"))
        cc.wait_for(lambda: newest().messages[-1].message_id == marker.message_id, 10,
                    what="cache update")
        before = SVC.metrics()
        warm = newest()
        self.assertGreater(metric(SVC.metrics(), 'chats_history_cache_total{result="hit"}'),
                           metric(before, 'chats_history_cache_total{result="hit"}'))
        got = {m.message_id: m for m in warm.messages}
        self.assertEqual((got[a].body, got[a].version), ("a2", 2))
        self.assertEqual((got[b].deleted, got[b].version), (True, 3))
        self.assertEqual(got[d].body, "zzz")
        self.assertIn(fresh, got)
        STACK.redis("DEL", "chat:%d:recent:floor" % c)
        self.assertEqual(warm, newest())


class BadInput(unittest.TestCase):
    def test_statuses(self):
        c = create("ann", ["ben"]).chat.chat_id
        n_chats = STACK.psql("SELECT count(*) FROM chats")
        n_members = STACK.psql("SELECT count(*) FROM chat_members")
        cases = [
            (lambda: STUB.GetChat(pb.GetChatRequest(chat_id=c),
                                  metadata=(("authorization", "Bearer nope"),)),
             grpc.StatusCode.UNAUTHENTICATED),
            (lambda: STUB.GetChat(pb.GetChatRequest(chat_id=c)), grpc.StatusCode.UNAUTHENTICATED),
            (lambda: STUB.GetChat(pb.GetChatRequest(chat_id=c), metadata=(
                ("authorization", "Bearer " + cc.token("ann", secret="x" * 40)),)),
             grpc.StatusCode.UNAUTHENTICATED),
            (lambda: STUB.GetChat(pb.GetChatRequest(chat_id=c), metadata=cc.md("ann", ttl_s=-100)),
             grpc.StatusCode.UNAUTHENTICATED),
            (lambda: STUB.GetChat(pb.GetChatRequest(chat_id=12345), metadata=cc.md("ann")),
             grpc.StatusCode.NOT_FOUND),
            (lambda: STUB.GetHistory(pb.GetHistoryRequest(chat_id=c), metadata=cc.md("eve")),
             grpc.StatusCode.PERMISSION_DENIED),
            (lambda: STUB.GetHistory(pb.GetHistoryRequest(chat_id=c, page_size=201),
                                     metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.GetHistory(pb.GetHistoryRequest(chat_id=999), metadata=cc.md("ann")),
             grpc.StatusCode.NOT_FOUND),
            (lambda: STUB.ListChats(pb.ListChatsRequest(page_size=500), metadata=cc.md("ann")),
             grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.PullMessages(pb.PullMessagesRequest(device_id="bad id"),
                                       metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.PullMessages(pb.PullMessagesRequest(device_id="d", page_size=300),
                                       metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.PullMessages(pb.PullMessagesRequest(device_id="d", page_token="junk"),
                                       metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, from_message_id=5,
                                                              to_message_id=5),
                                       metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, to_message_id=100,
                                                              bucket_count=257),
                                       metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, to_message_id=10,
                                                              bucket_count=11),
                                       metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.GetRangeHash(pb.GetRangeHashRequest(chat_id=c, to_message_id=10),
                                       metadata=cc.md("eve")), grpc.StatusCode.PERMISSION_DENIED),
            (lambda: create("ann", ["bad user"]), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: create("ann", ["b"], kind=pb.CHAT_KIND_UNSPECIFIED),
             grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: create("ann", ["b"], title="t" * 257), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.AddMembers(pb.AddMembersRequest(chat_id=c, user_ids=["x"]),
                                     metadata=cc.md("eve")), grpc.StatusCode.PERMISSION_DENIED),
            (lambda: STUB.AddMembers(pb.AddMembersRequest(chat_id=777, user_ids=["x"]),
                                     metadata=cc.md("ann")), grpc.StatusCode.NOT_FOUND),
            (lambda: STUB.AddMembers(pb.AddMembersRequest(chat_id=c, user_ids=[]),
                                     metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.EditMessage(pb.EditMessageRequest(chat_id=c, message_id=1, body="x"),
                                      metadata=cc.md("ann")), grpc.StatusCode.NOT_FOUND),
            (lambda: STUB.EditMessage(pb.EditMessageRequest(chat_id=c, message_id=1, body=""),
                                      metadata=cc.md("ann")), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: STUB.DeleteMessage(pb.DeleteMessageRequest(chat_id=c, message_id=1),
                                        metadata=cc.md("eve")), grpc.StatusCode.PERMISSION_DENIED),
        ]
        for i, (fn, want) in enumerate(cases):
            self.assertEqual(code_of(fn), want, "case %d" % i)
        self.assertEqual(STACK.psql("SELECT count(*) FROM chats"), n_chats)
        self.assertEqual(STACK.psql("SELECT count(*) FROM chat_members"), n_members)


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def metric(text, name):
    for line in text.splitlines():
        if line.replace(" ", "").startswith(name.replace(" ", "")) and not line.startswith("#"):
            return float(line.split()[-1])
    return 0.0


if __name__ == "__main__":
    unittest.main()
