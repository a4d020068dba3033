#!/usr/bin/env python3
"""Presence driven by svc-messaging: Connect-ed devices are online in svc-presence.

One stack (PostgreSQL, Redis, Kafka via tools/stack-lib.sh through chats_common), svc-chats,
one svc-presence and one svc-messaging with --presence-addr and a short --presence-ttl-ms
(6 s, refreshed every 2 s), all on one Redis and one JWT secret. Chats are made with
ChatsService.CreateChat (e2e_harness.World).

  - a device that said Hello on Connect is online: GetPresence and a WatchPresence watcher on
    svc-presence see it, and it stays online past its TTL (messaging refreshes it);
  - the stream closed (half-close, cancel) -> the watcher sees it offline at once;
  - Hello.watch_partner_presence: the device gets UserPresence frames for the other member
    of its direct chat (first the current state, then each change), and none for members of
    its group chats; without the flag none at all;
  - SIGTERM of svc-messaging with a device connected: the device's stream ends UNAVAILABLE,
    it goes offline at once, and svc-messaging exits 0.

    BUILD_DIR=build python3 tests/integration/presence_messaging_test.py [-v]
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chats_common  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == "__main__":
    chats_common.bootstrap(__file__)

# pylint: disable=wrong-import-position
import queue  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import e2e_harness as e  # noqa: E402

PRESENCE_BIN = os.path.join(e.BUILD_DIR, "svc-presence", "svc-presence")
TTL_MS = 6000

W = None
M = None
P = None
ppb = ppbg = None  # presence stubs


class Presence:
    """One svc-presence on the stack's Redis."""

    def __init__(self, stack):
        self.port = chats_common.free_port()
        self.mport = chats_common.free_port()
        self.log_path = os.path.join(stack.dir, "presence.log")
        self.log = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        env = dict(os.environ, JWT_SECRET=e.SECRET, REDIS_URL=stack.env["REDIS_URL"])
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [PRESENCE_BIN, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
             "--metrics-port", str(self.mport)], stdout=self.log, stderr=subprocess.STDOUT,
            env=env)
        self.channel = e.grpc.insecure_channel("127.0.0.1:%d" % self.port)
        e.grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = ppbg.PresenceServiceStub(self.channel)

    def get(self, users):
        r = self.stub.GetPresence(ppb.GetPresenceRequest(user_ids=users), metadata=e.md("asker"),
                                  timeout=5)
        return {u.user_id: u for u in r.users}

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.log.close()
        return rc


class Watch:
    """A WatchPresence stream on svc-presence, read by a thread."""

    def __init__(self, users):
        self.q = queue.Queue()
        self.call = P.stub.WatchPresence(ppb.WatchPresenceRequest(user_ids=users),
                                         metadata=e.md("watcher"))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for r in self.call:
                self.q.put(r)
        except e.grpc.RpcError:
            pass

    def until(self, user, online, timeout=5.0):
        """Waits for a response saying |user| is (not) online; returns how long it took."""
        t0 = time.time()
        end = t0 + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError("watch: %s online=%s not seen within %.1f s" % (
                    user, online, timeout))
            try:
                r = self.q.get(timeout=left)
            except queue.Empty:
                continue
            for u in r.users:
                if u.user_id == user and u.online == online:
                    return time.time() - t0

    def cancel(self):
        self.call.cancel()


class Device(e.Device):
    """e2e_harness.Device whose Hello may ask for partner presence."""

    def __init__(self, inst, user, device_id, watch=False):  # pylint: disable=super-init-not-called
        self.user = user
        self.device_id = device_id
        self.inst = inst
        self.auto_ack = True
        self.out = queue.Queue()
        self.cv = threading.Condition()
        self.frames = []
        self.code = None
        self.call = inst.stub.Connect(self._requests(), metadata=e.md(user))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.out.put(e.mpb.ConnectRequest(hello=e.mpb.Hello(device_id=device_id,
                                                            watch_partner_presence=watch)))
        self.welcome = self.wait(
            lambda fs: next((f.welcome for f in fs if f.WhichOneof("frame") == "welcome"), None),
            what=user + "/" + device_id + " welcome")

    def presence(self):
        with self.cv:
            return [f.presence for f in self.frames if f.WhichOneof("frame") == "presence"]

    def wait_presence(self, user, online, timeout=10.0):
        """Waits for a UserPresence frame of |user| with |online|; returns it."""
        def find(fs):
            for f in reversed(fs):
                if f.WhichOneof("frame") == "presence" and f.presence.user_id == user:
                    return f.presence if f.presence.online == online else None
            return None
        return self.wait(find, timeout, "presence frame %s online=%s" % (user, online))

    def wait_end(self, timeout=10.0):
        with self.cv:
            end = time.time() + timeout
            while self.code is None and time.time() < end:
                self.cv.wait(end - time.time())
            return self.code


def setUpModule():
    global W, M, P, ppb, ppbg
    for b in (e.MESSAGING_BIN, e.CHATS_BIN, PRESENCE_BIN):
        if not os.access(b, os.X_OK):
            raise unittest.SkipTest("not built: " + b)
    W = e.World()
    try:
        from chat.v1 import presence_pb2, presence_pb2_grpc  # pylint: disable=import-outside-toplevel
        ppb, ppbg = presence_pb2, presence_pb2_grpc
        P = Presence(W.stack)
        M = W.messaging("messaging", "--presence-addr", "127.0.0.1:%d" % P.port,
                        "--presence-ttl-ms", str(TTL_MS))
        W.wait_consuming([M])
    except Exception:
        tearDownModule()
        raise


def tearDownModule():
    if P is not None:
        try:
            P.stop()
        except Exception:  # pylint: disable=broad-except
            pass
    if W is not None:
        W.close()


def wait_listed(user, chat_id, timeout=30.0):
    """Waits until svc-chats lists |chat_id| among |user|'s chats (materialized)."""
    end = time.time() + timeout
    while time.time() < end:
        r = W.chats_stub.ListChats(e.cpb.ListChatsRequest(page_size=200), metadata=e.md(user),
                                   timeout=10)
        if any(s.chat.chat_id == chat_id for s in r.chats):
            return
        time.sleep(0.2)
    raise AssertionError("chat %d not listed for %s" % (chat_id, user))


class T1Online(unittest.TestCase):
    def test_connect_heartbeats_and_close_sets_offline(self):
        w = Watch(["pm-amy"])
        w.until("pm-amy", False)  # the snapshot: never seen
        d = Device(M, "pm-amy", "phone")
        print("  online seen by the watcher %.3f s after Welcome" % w.until("pm-amy", True),
              file=sys.stderr)
        self.assertEqual(P.get(["pm-amy"])["pm-amy"].online_devices, 1)
        d2 = Device(M, "pm-amy", "tablet")
        end = time.time() + 5
        while P.get(["pm-amy"])["pm-amy"].online_devices != 2:
            self.assertLess(time.time(), end, "second device not online")
            time.sleep(0.1)
        # messaging refreshes the heartbeat every ttl/3: still online well past the TTL
        time.sleep(TTL_MS / 1000 * 1.5)
        self.assertEqual(P.get(["pm-amy"])["pm-amy"].online_devices, 2)
        d2.close()  # half-close: OK; the user stays online with the phone
        self.assertEqual(d2.wait_end(), e.grpc.StatusCode.OK)
        end = time.time() + 5
        while P.get(["pm-amy"])["pm-amy"].online_devices != 1:
            self.assertLess(time.time(), end, "tablet not set offline")
            time.sleep(0.1)
        t0 = time.time()
        d.cancel()  # the client goes away without a status
        took = w.until("pm-amy", False, timeout=3.0)
        print("  offline seen %.3f s after the cancel" % (time.time() - t0), file=sys.stderr)
        self.assertLess(took, 3.0)
        p = P.get(["pm-amy"])["pm-amy"]
        self.assertFalse(p.online)
        self.assertGreater(p.last_seen_at_ms, 0)
        self.assertLess(abs(p.last_seen_at_ms / 1000 - time.time()), 5)
        w.cancel()


class T2Partners(unittest.TestCase):
    def test_partner_presence_over_connect(self):
        direct = W.create_chat("pm-bea", ["pm-cal"], kind=e.cpb.CHAT_KIND_DIRECT)
        group = W.create_chat("pm-bea", ["pm-dan", "pm-eve"])
        wait_listed("pm-bea", direct.chat_id)
        wait_listed("pm-bea", group.chat_id)
        # pm-dan is online from the start: a group member, never pushed to pm-bea
        dan = Device(M, "pm-dan", "phone")
        bea = Device(M, "pm-bea", "phone", watch=True)
        first = bea.wait_presence("pm-cal", False)  # the current state first
        self.assertEqual(first.online_devices, 0)
        cal = Device(M, "pm-cal", "laptop")
        on = bea.wait_presence("pm-cal", True)
        self.assertEqual(on.online_devices, 1)
        cal.close()
        off = bea.wait_presence("pm-cal", False)
        self.assertGreater(off.last_seen_at_ms, 0)
        self.assertEqual({p.user_id for p in bea.presence()}, {"pm-cal"})
        # a device that did not ask gets no presence frames
        self.assertEqual(dan.presence(), [])
        bea.close()
        dan.close()
        self.assertEqual(bea.wait_end(), e.grpc.StatusCode.OK)


class TzShutdown(unittest.TestCase):
    def test_sigterm_ends_streams_and_sets_offline(self):
        w = Watch(["pm-fay"])
        w.until("pm-fay", False)
        d = Device(M, "pm-fay", "phone")
        w.until("pm-fay", True)
        t0 = time.time()
        M.proc.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_end(), e.grpc.StatusCode.UNAVAILABLE)
        w.until("pm-fay", False, timeout=3.0)
        print("  offline seen %.3f s after SIGTERM" % (time.time() - t0), file=sys.stderr)
        self.assertEqual(M.proc.wait(30), 0)
        w.cancel()


if __name__ == "__main__":
    unittest.main(verbosity=2)
