#!/usr/bin/env python3
"""End to end: svc-chats and svc-messaging together on real PostgreSQL, Redis and Kafka.

One stack (tools/stack-lib.sh via chats_common), one svc-chats, svc-messaging instances A and
B (plus C with a 4-frame queue for the overflow test, and K, killed with SIGKILL), all with
--chats-addr pointing at svc-chats. Chats are created with CreateChat; every message goes
through svc-messaging; what svc-chats serves is what its materializer read from the log.

  - group of 4 users, 6 devices on A and B (same user on both, two devices of one user on
    one instance): sends over Connect and unary Send on both instances; every device gets
    every message exactly once, all in the same order, which is history order for sequential
    sends; GetHistory holds each once with the answered ids;
  - resends with one client_message_id (unary and Connect, across instances) and a kill -9 of
    an instance after its record reached Kafka but before the dedupe key was marked acked
    (Redis writes paused with CLIENT PAUSE to hold the mark): one message in history;
    a kill -9 during a burst: every client_message_id once, with the answered id;
  - an offline member pulls everything after its cursor across 3 chats in pages of 4; passing
    a page token acknowledges the previous page (a fresh pull resumes after it);
  - forced overflow (--queue-size 4, no acks): the session_seq gap is seen and the missing
    messages come back from GetHistory and PullMessages;
  - AddMembers then an immediate send by the new member on both instances: OK; a removed
    member is PERMISSION_DENIED / REJECTED 7 once the instance consumed the removal;
  - EditMessage / DeleteMessage on svc-chats reach the online devices over Connect.

    BUILD_DIR=build python3 tests/integration/e2e_test.py [-v]
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chats_common  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == "__main__":
    chats_common.bootstrap(__file__)

# pylint: disable=wrong-import-position
import socket  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import e2e_harness as e  # noqa: E402

W = None
A = None
B = None


def setUpModule():
    global W, A, B
    for b in (e.MESSAGING_BIN, e.CHATS_BIN):
        if not os.access(b, os.X_OK):
            raise unittest.SkipTest("not built: " + b)
    W = e.World()
    try:
        A = W.messaging("messaging-a")
        B = W.messaging("messaging-b")
        W.wait_consuming([A, B])
    except Exception:
        W.close()
        raise


def tearDownModule():
    if W is not None:
        W.close()


_n = [0]


def cmid(prefix):
    _n[0] += 1
    return "%s-%d-%d" % (prefix, int(time.time() * 1000) % 1000000, _n[0])


def ids(msgs):
    return [m.message_id for m in msgs]


class Redis:
    """A tiny RESP client (fast enough to poll for a key within a Kafka round trip)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError("bad RESP reply %r" % line)

    def close(self):
        self.s.close()


def dedupe_key(user, c):
    return "dedupe:%d:%s:%s" % (len(user), user, c)


class E2E(unittest.TestCase):
    maxDiff = None

    def expect_ok(self, status):
        self.assertIn(status, (e.mpb.SEND_STATUS_OK, e.mpb.SEND_STATUS_DUPLICATE))

    # 1 ------------------------------------------------------------------------------------------
    def test_group_on_two_instances_exactly_once_in_order_and_in_history(self):
        chat = W.create_chat("alice", ["bob", "carol", "dave"]).chat_id
        devs = [e.Device(A, "alice", "a-phone"), e.Device(B, "alice", "a-laptop"),
                e.Device(A, "bob", "b-phone"), e.Device(B, "carol", "c-phone"),
                e.Device(B, "dave", "d-phone"), e.Device(B, "dave", "d-tablet")]
        by_user = {"alice": devs[0], "bob": devs[2], "carol": devs[3], "dave": devs[4]}
        sent = {}  # message_id -> (sender, cmid, body)
        order = []
        # Sequential: each send waits for its answer, so log order = id order = history order.
        # The first one right after CreateChat (a cold membership cache on that instance).
        users = ["alice", "bob", "carol", "dave"]
        for i in range(12):
            user = users[i % 4]
            c, body = cmid("seq"), "sequential %d from %s" % (i, user)
            if i % 3 == 2:
                r = (A if i % 2 else B).send(user, c, chat, body)
                self.assertEqual(r.status, e.mpb.SEND_STATUS_OK, (i, r))
                mid = r.message_id
            else:
                by_user[user].send_msg(c, chat, body)
                r = by_user[user].result(c)
                self.assertEqual(r.status, e.mpb.SEND_STATUS_OK, (i, r))
                self.assertEqual(r.chat_id, chat)
                mid = r.message_id
            self.assertNotIn(mid, sent)
            sent[mid] = (user, c, body)
            order.append(mid)
            # Ids of two instances taken in one millisecond order by instance number, not by
            # time: the next send starts in a later millisecond.
            time.sleep(0.002)
        self.assertEqual(order, sorted(order), "sequential sends got ids out of order")
        # Concurrent: every user sends 5 at once over Connect.
        burst = []
        for user in users:
            for k in range(5):
                c, body = cmid("burst"), "burst %d from %s" % (k, user)
                by_user[user].send_msg(c, chat, body)
                burst.append((user, c, body))
        for user, c, body in burst:
            r = by_user[user].result(c)
            self.assertEqual(r.status, e.mpb.SEND_STATUS_OK, r)
            sent[r.message_id] = (user, c, body)
        self.assertEqual(len(sent), 32)

        first = None
        for d in devs:
            got = d.wait_posted(chat, sent.keys())
            got_ids = ids(got)
            self.assertEqual(len(got_ids), len(set(got_ids)),
                             "%s/%s got a message twice" % (d.user, d.device_id))
            self.assertEqual(set(got_ids), set(sent))
            self.assertEqual(got_ids[:12], order, "%s/%s: not in chat order" % (d.user,
                                                                                d.device_id))
            first = first or got_ids
            self.assertEqual(got_ids, first, "devices disagree on the order")
            for m in got:
                self.assertEqual((m.sender_id, m.client_message_id, m.body), sent[m.message_id])
            seqs = [x.session_seq for x in d.deliveries()]
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))),
                             "%s/%s: session_seq gap without overflow" % (d.user, d.device_id))
        hist = W.wait_history("carol", chat, lambda ms: len(ms) >= 32, what="32 in history")
        time.sleep(0.5)
        hist = W.history("carol", chat)
        self.assertEqual(len(hist), 32, "history holds a message twice or too many")
        self.assertEqual(set(ids(hist)), set(sent))
        self.assertEqual(ids(hist)[:12], order)
        for m in hist:
            self.assertEqual((m.sender_id, m.client_message_id, m.body), sent[m.message_id])
            self.assertEqual(m.version, 1)
        # GetChat's newest id and ListChats agree with what messaging produced.
        gc = W.chats_stub.GetChat(e.cpb.GetChatRequest(chat_id=chat), metadata=e.md("bob"))
        self.assertEqual(gc.newest_message_id, max(sent))
        for d in devs:
            d.close()

    # 2 ------------------------------------------------------------------------------------------
    def test_resend_same_client_message_id_is_one_message(self):
        chat = W.create_chat("rita", ["sam", "tom"]).chat_id
        c = cmid("again")
        r1 = A.send("rita", c, chat, "once")
        self.assertEqual(r1.status, e.mpb.SEND_STATUS_OK)
        r2 = A.send("rita", c, chat, "once")
        self.assertEqual((r2.status, r2.message_id), (e.mpb.SEND_STATUS_DUPLICATE, r1.message_id))
        r3 = B.send("rita", c, chat, "once")
        self.assertEqual((r3.status, r3.message_id), (e.mpb.SEND_STATUS_DUPLICATE, r1.message_id))
        dev = e.Device(B, "rita", "r-phone")
        dev.send_msg(c, chat, "once")
        r4 = dev.result(c)
        self.assertEqual((r4.status, r4.message_id), (e.mpb.SEND_STATUS_DUPLICATE, r1.message_id))
        dev.close()
        marker = B.send("sam", cmid("marker"), chat, "after").message_id
        hist = W.wait_history("tom", chat, lambda ms: marker in ids(ms))
        self.assertEqual([m.message_id for m in hist if m.client_message_id == c],
                         [r1.message_id])

    def test_kill9_between_produce_and_ack_then_resend_is_one_message(self):
        """The dedupe key's 'acked' mark is held back by pausing Redis writes as soon as the
        key exists; the record reaches Kafka; the instance is killed; the resend produces again
        with the same id and history still has one message."""
        chat = W.create_chat("kora", ["lev", "mia"]).chat_id
        watcher = e.Device(A, "lev", "l-phone")
        rport = int(W.stack.env["REDIS_PORT"])
        rc = Redis(rport)
        hit = None
        try:
            for attempt in range(6):
                k = W.messaging("messaging-k%d" % attempt)
                W.wait_consuming([k])
                dev = e.Device(k, "kora", "k-phone-%d" % attempt)
                c = cmid("window")
                key = dedupe_key("kora", c)
                dev.send_msg(c, chat, "window %d" % attempt)
                end = time.time() + 10
                while rc.cmd("EXISTS", key) == 0 and time.time() < end:
                    pass
                rc.cmd("CLIENT", "PAUSE", "4000", "WRITE")
                try:
                    st = rc.cmd("HGET", key, "state")
                    mid = int(rc.cmd("HGET", key, "id") or 0)
                    # Wait until the record is materialized (PostgreSQL, not the Redis cache).
                    end = time.time() + 3
                    while time.time() < end and W.stack.psql(
                            "SELECT count(*) FROM messages WHERE message_id = %d" % mid) != "1":
                        time.sleep(0.05)
                    in_pg = W.stack.psql(
                        "SELECT count(*) FROM messages WHERE message_id = %d" % mid) == "1"
                    k.kill()
                    W.instances.remove(k)
                finally:
                    rc.cmd("CLIENT", "UNPAUSE")
                state_after = rc.cmd("HGET", key, "state")
                if st == "pending" and state_after == "pending" and in_pg:
                    hit = (c, mid)
                    break
            self.assertIsNotNone(hit, "never caught a send between produce and ack")
            c, mid = hit
            r = B.send("kora", c, chat, "window %d" % attempt)
            self.assertEqual((r.status, r.message_id), (e.mpb.SEND_STATUS_OK, mid),
                             "a pending send must be produced again with its id")
            r = A.send("kora", c, chat, "window %d" % attempt)
            self.assertEqual((r.status, r.message_id), (e.mpb.SEND_STATUS_DUPLICATE, mid))
            marker = A.send("mia", cmid("marker"), chat, "after the kill").message_id
            hist = W.wait_history("mia", chat, lambda ms: marker in ids(ms))
            self.assertEqual([m.message_id for m in hist if m.client_message_id == c], [mid])
            # The watcher saw it once although it is on the log twice.
            got = watcher.wait_posted(chat, [mid, marker])
            self.assertEqual(ids(got).count(mid), 1)
        finally:
            rc.close()
            watcher.close()

    def test_kill9_during_burst_then_resend_everything_is_once(self):
        chat = W.create_chat("nina", ["otto"]).chat_id
        k = W.messaging("messaging-burst")
        W.wait_consuming([k])
        devs = [e.Device(k, "nina", "n-%d" % i) for i in range(3)]
        cmids = {}
        for i in range(90):
            c = cmid("kb")
            cmids[c] = "burst %d" % i
            devs[i % 3].send_msg(c, chat, cmids[c])
        answered = {}
        devs[0].wait(lambda fs: sum(f.WhichOneof("frame") == "send_result" for f in fs) >= 5,
                     what="first results")
        k.kill()
        W.instances.remove(k)
        for d in devs:
            for f in list(d.frames):
                if f.WhichOneof("frame") == "send_result":
                    answered[f.send_result.client_message_id] = f.send_result.message_id
        final = {}
        for c, body in cmids.items():
            r = A.send("nina", c, chat, body)
            self.expect_ok(r.status)
            if c in answered:
                self.assertEqual(r.message_id, answered[c])
            final[c] = r.message_id
        hist = W.wait_history("otto", chat, lambda ms: len(ms) >= len(cmids))
        time.sleep(0.5)
        hist = W.history("otto", chat)
        self.assertEqual(sorted((m.client_message_id, m.message_id) for m in hist),
                         sorted(final.items()))

    # 3 ------------------------------------------------------------------------------------------
    def test_offline_member_pulls_everything_across_chats_and_pages(self):
        chats = [W.create_chat("olga", ["pete", "quin"]).chat_id,
                 W.create_chat("pete", ["olga", "quin"]).chat_id,
                 W.create_chat("quin", ["olga", "pete"]).chat_id]
        dev = e.Device(A, "olga", "o-phone")
        first = B.send("pete", cmid("pre"), chats[0], "before going offline").message_id
        dev.wait_posted(chats[0], [first])
        cursor = dev.posted(chats[0])[-1].message_id
        dev.close()
        dev.wait(lambda fs: dev.code is not None, what="stream end")
        missed = []
        for i in range(15):
            chat = chats[i % 3]
            sender = "pete" if i % 2 else "quin"
            inst = A if i % 2 else B
            r = inst.send(sender, cmid("off"), chat, "while offline %d" % i)
            self.assertEqual(r.status, e.mpb.SEND_STATUS_OK)
            missed.append(r.message_id)
        for chat in chats:
            n = len([m for j, m in enumerate(missed) if chats[j % 3] == chat])
            W.wait_history("pete", chat, lambda ms, n=n, c=chat: len(
                [m for m in ms if m.message_id > cursor]) >= n)

        def pull(token="", start=0):
            return W.chats_stub.PullMessages(e.cpb.PullMessagesRequest(
                device_id="o-phone", page_token=token, start_after_message_id=start,
                page_size=4), metadata=e.md("olga"), timeout=10)
        p1 = pull(start=cursor)
        self.assertEqual(len(p1.messages), 4)
        self.assertTrue(p1.has_more)
        p2 = pull(token=p1.next_page_token)  # acknowledges p1
        # A new session without a token resumes after the acknowledged page 1.
        again = pull()
        self.assertEqual(ids(again.messages), ids(p2.messages))
        got = list(p1.messages) + list(p2.messages)
        page, pages = p2, 2
        while page.has_more:
            page = pull(token=page.next_page_token)
            pages += 1
            got.extend(page.messages)
        self.assertEqual(ids(got), sorted(missed), "pull must return every missed message once")
        self.assertGreaterEqual(pages, 4)
        self.assertEqual({m.chat_id for m in got}, set(chats))
        done = pull(token=page.next_page_token)  # acknowledges the last page
        self.assertEqual(len(done.messages), 0)
        self.assertFalse(done.has_more)
        self.assertEqual(len(pull().messages), 0, "everything was acknowledged")
        late = A.send("quin", cmid("late"), chats[2], "one more").message_id
        W.wait_history("quin", chats[2], lambda ms: late in ids(ms))
        self.assertEqual(ids(pull().messages), [late])
        # Back online: the live stream works again.
        dev = e.Device(B, "olga", "o-phone")
        live = A.send("pete", cmid("live"), chats[1], "welcome back").message_id
        self.assertEqual(ids(dev.wait_posted(chats[1], [live])), [live])
        dev.close()

    # 4 ------------------------------------------------------------------------------------------
    def test_queue_overflow_gap_recovered_from_chats(self):
        c_inst = W.messaging("messaging-c", "--queue-size", "4", "--ack-timeout-ms", "60000")
        W.wait_consuming([c_inst])
        chat = W.create_chat("uma", ["vic"]).chat_id
        dev = e.Device(c_inst, "vic", "v-phone", auto_ack=False)
        self.assertEqual(dev.welcome.queue_capacity, 4)
        sent = []
        for i in range(12):
            sent.append(A.send("uma", cmid("ovf"), chat, "flood %d" % i).message_id)
        dev.wait(lambda fs: len(dev.deliveries()) >= 4, what="4 deliveries")
        e_drops = 0
        end = time.time() + 20
        while time.time() < end:
            e_drops = c_inst.metric("messaging_delivery_drops_total")
            if e_drops >= 8:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(e_drops, 8)
        self.assertEqual([d.session_seq for d in dev.deliveries()], [1, 2, 3, 4])
        dev.ack(4)
        for i in range(2):
            sent.append(B.send("uma", cmid("ovf"), chat, "after %d" % i).message_id)
        dev.wait(lambda fs: len(dev.deliveries()) >= 6, what="2 more deliveries")
        frames = dev.deliveries()
        seqs = [d.session_seq for d in frames]
        self.assertEqual(seqs, [1, 2, 3, 4, 13, 14], "dropped frames must use up their seqs")
        # The device sees the gap after seq 4 and asks svc-chats for what follows.
        have = {d.message_posted.message_id: d.message_posted for d in frames}
        gap_after = frames[3].message_posted.message_id
        # svc-chats materializes the log on its own schedule: wait until it holds the newest.
        W.wait_history("vic", chat, lambda ms: sent[-1] in ids(ms))
        r = W.chats_stub.GetHistory(e.cpb.GetHistoryRequest(
            chat_id=chat, anchor_message_id=gap_after, direction=e.cpb.HISTORY_DIRECTION_FORWARD,
            page_size=50), metadata=e.md("vic"), timeout=10)
        for m in r.messages:
            have.setdefault(m.message_id, m)
        self.assertEqual(sorted(have), sorted(sent), "the gap was not recovered from history")
        self.assertEqual(ids(r.messages), sorted(sent)[4:])
        # PullMessages recovers the same range.
        p = W.chats_stub.PullMessages(e.cpb.PullMessagesRequest(
            device_id="v-phone", start_after_message_id=gap_after, page_size=200),
            metadata=e.md("vic"), timeout=10)
        self.assertEqual(ids(p.messages), sorted(sent)[4:])
        dev.ack(14)
        dev.close()
        c_inst.stop()
        W.instances.remove(c_inst)

    # 5 ------------------------------------------------------------------------------------------
    def test_added_member_sends_at_once_removed_member_is_denied(self):
        chat = W.create_chat("wes", ["xia"]).chat_id
        wa = e.Device(A, "wes", "w-phone")
        xb = e.Device(B, "xia", "x-phone")
        warm = A.send("xia", cmid("warm"), chat, "warm A").message_id
        warm2 = B.send("wes", cmid("warm"), chat, "warm B").message_id
        wa.wait_posted(chat, [warm, warm2])
        xb.wait_posted(chat, [warm, warm2])
        for inst, user in ((A, "yan"), (B, "zed")):
            added = W.chats_stub.AddMembers(e.cpb.AddMembersRequest(chat_id=chat,
                                                                     user_ids=[user]),
                                            metadata=e.md("wes"), timeout=20)
            self.assertEqual(list(added.added_user_ids), [user])
            r = inst.send(user, cmid("new"), chat, "hello from " + user)
            self.assertEqual(r.status, e.mpb.SEND_STATUS_OK, "added member rejected right after "
                             "AddMembers on " + inst.name)
            other = B if inst is A else A
            r2 = other.send(user, cmid("new"), chat, "again from " + user)
            self.assertEqual(r2.status, e.mpb.SEND_STATUS_OK)
            wa.wait_posted(chat, [r.message_id, r2.message_id])
        # Over Connect too, on the other instance.
        zd = e.Device(A, "zed", "z-phone")
        c = cmid("new")
        zd.send_msg(c, chat, "zed over Connect")
        self.assertEqual(zd.result(c).status, e.mpb.SEND_STATUS_OK)
        # Remove zed; once each instance consumed the removal (a member's device there got the
        # members_removed frame), zed is denied on it.
        removed = W.chats_stub.RemoveMembers(e.cpb.RemoveMembersRequest(chat_id=chat,
                                                                         user_ids=["zed"]),
                                             metadata=e.md("wes"), timeout=20)
        self.assertEqual(list(removed.removed_user_ids), ["zed"])
        for d in (wa, xb, zd):
            d.wait(lambda fs, d=d: d.deliveries("members_removed", chat), what="members_removed")
        self.assertEqual(list(zd.deliveries("members_removed", chat)[0].members_removed.user_ids),
                         ["zed"])
        for inst in (A, B):
            with self.assertRaises(e.grpc.RpcError) as ctx:
                inst.send("zed", cmid("gone"), chat, "still here?")
            self.assertEqual(ctx.exception.code(), e.grpc.StatusCode.PERMISSION_DENIED)
        c = cmid("gone")
        zd.send_msg(c, chat, "still here?")
        r = zd.result(c)
        self.assertEqual((r.status, r.code), (e.mpb.SEND_STATUS_REJECTED, 7))
        # zed no longer gets the chat's messages; the others do.
        after = B.send("xia", cmid("after"), chat, "zed is gone").message_id
        wa.wait_posted(chat, [after])
        time.sleep(0.5)
        self.assertNotIn(after, ids(zd.posted(chat)))
        hist = W.history("wes", chat)
        self.assertNotIn("still here?", [m.body for m in hist])
        for d in (wa, xb, zd):
            d.close()

    # 6 ------------------------------------------------------------------------------------------
    def test_edits_and_deletes_reach_online_devices(self):
        chat = W.create_chat("abe", ["bea", "cal"]).chat_id
        devs = [e.Device(A, "bea", "b2"), e.Device(B, "cal", "c2"), e.Device(B, "abe", "a3")]
        mid = A.send("abe", cmid("ed"), chat, "first draft").message_id
        for d in devs:
            d.wait_posted(chat, [mid])
        W.wait_history("abe", chat, lambda ms: mid in ids(ms))
        ed = W.chats_stub.EditMessage(e.cpb.EditMessageRequest(chat_id=chat, message_id=mid,
                                                               body="final text"),
                                      metadata=e.md("abe"), timeout=20).message
        self.assertEqual((ed.version, ed.body), (2, "final text"))
        for d in devs:
            f = d.wait(lambda fs, d=d: d.deliveries("message_edited", chat), what="edit")
            m = f[0].message_edited
            self.assertEqual((m.message_id, m.version, m.body, m.deleted),
                             (mid, 2, "final text", False))
        de = W.chats_stub.DeleteMessage(e.cpb.DeleteMessageRequest(chat_id=chat, message_id=mid),
                                        metadata=e.md("abe"), timeout=20).message
        self.assertTrue(de.deleted)
        for d in devs:
            f = d.wait(lambda fs, d=d: d.deliveries("message_deleted", chat), what="delete")
            m = f[0].message_deleted
            self.assertEqual((m.message_id, m.version, m.deleted), (mid, 3, True))
            self.assertEqual(len(d.deliveries("message_edited", chat)), 1)
            self.assertEqual(len(d.deliveries("message_deleted", chat)), 1)
        hist = W.history("cal", chat)
        self.assertEqual([(m.message_id, m.version, m.deleted) for m in hist], [(mid, 3, True)])
        for d in devs:
            d.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
