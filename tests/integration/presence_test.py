#!/usr/bin/env python3
"""svc-presence against a real redis-server, through Python grpcio.

Starts redis-server (Debian package) on a free loopback port in a temp dir and two
svc-presence instances on it, generates the chat.v1 presence stubs with grpc_tools.protoc
into a temp dir, mints HS256 tokens by hand (hmac), and checks:

  - heartbeat then expiry: the watcher sees online, then offline within 1 s of the TTL,
    and last_seen_at_ms equals the granted expiry;
  - expiry is seen on time even when Redis's own expiry of keys lags (50,000 unrelated keys
    with TTLs: the service's expiry backstop);
  - multi-device: online until the last device leaves, counts and last-seen right;
  - batch GetPresence: order, duplicates, unknown users, 500 ids;
  - heartbeats that arrive together go to Redis as one script call, each with its own answer
    or error (a repeated device, an unreadable record, an invalid request among them); a full
    heartbeat queue answers RESOURCE_EXHAUSTED;
  - a watcher on instance A sees changes made through instance B within 1 s;
  - Redis restarted during a watch: the watcher gets a fresh snapshot (and later changes);
    Redis down longer than the resync timeout: the stream ends with UNAVAILABLE;
  - CountOnline from a seeded chat:<id>:members set; NOT_FOUND, PERMISSION_DENIED;
  - bad input: each gets its exact status (INVALID_ARGUMENT, PERMISSION_DENIED,
    UNAUTHENTICATED), and a watch stream ends UNAUTHENTICATED when its token expires;
  - the service logs that it enabled keyspace notifications, and exits 0 on SIGTERM;
  - SIGTERM during a watch ends the stream with UNAVAILABLE at once (drain hook), exit 0.

    BUILD_DIR=build python3 tests/integration/presence_test.py [-v] [unittest args]

grpcio comes from the tools venv (tools/install-tools.sh, ~/.cache/chat-backend/tools/venv):
the script re-executes itself with that python when the current one lacks grpcio.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
REEXEC = "CHAT_PRESENCE_TEST_REEXEC"


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
import base64
import hashlib
import hmac
import json
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

import grpc
from grpc_tools import protoc

SECRET = b"presence-test-secret-0123456789abcdef"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SVC = os.path.join(BUILD_DIR, "svc-presence", "svc-presence")
RESYNC_TIMEOUT_MS = 2500

pb = None  # presence_pb2
pbg = None  # presence_pb2_grpc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
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
    sig = b64(hmac.new(secret, (head + "." + body).encode(), hashlib.sha256).digest())
    return head + "." + body + "." + sig


def md(user, **kw):
    return (("authorization", "Bearer " + token(user, **kw)),)


class Redis:
    """redis-server on a free port in a temp dir; stop/start keep the port."""

    def __init__(self, tmp):
        self.port = free_port()
        self.dir = os.path.join(tmp, "redis")
        os.makedirs(self.dir)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            raise RuntimeError("redis-server did not start")

    def stop(self, hard=True):
        if self.proc:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None

    def cli(self, *args, stdin=None):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port)] + list(args), input=stdin,
                             capture_output=True, check=True)
        return out.stdout.decode().strip()


class Presence:
    """One svc-presence instance."""

    def __init__(self, tmp, name, redis_port, extra=()):
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = os.path.join(tmp, name + ".log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, JWT_SECRET=SECRET.decode(),
                   REDIS_URL="redis://127.0.0.1:%d" % redis_port)
        self.proc = subprocess.Popen(
            [SVC, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
             "--metrics-port", str(self.metrics_port)] + list(extra) + [
             "--watch-resync-timeout-ms", str(RESYNC_TIMEOUT_MS)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if not wait_port(self.port):
            raise RuntimeError(name + " did not start: " + self.read_log())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = pbg.PresenceServiceStub(self.channel)

    def metrics(self):
        """The /metrics text as {series: value} (labels included in the key)."""
        import urllib.request  # pylint: disable=import-outside-toplevel
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(20)
        self.log.close()
        return rc


class Watch:
    """A WatchPresence stream read by a thread into a queue of (time, response) / status."""

    def __init__(self, stub, user, ids, **kw):
        self.q = queue.Queue()
        self.call = stub.WatchPresence(pb.WatchPresenceRequest(user_ids=ids), metadata=md(user, **kw))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for resp in self.call:
                self.q.put((time.time(), resp))
            self.q.put((time.time(), grpc.StatusCode.OK))
        except grpc.RpcError as e:
            self.q.put((time.time(), e.code()))

    def next(self, timeout=5.0):
        """The next response (or final StatusCode) and when it arrived; fails on timeout."""
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no watch message within %.1f s" % timeout) from None

    def until(self, pred, timeout=5.0):
        """Skips responses until pred(resp) holds; returns (time, resp)."""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError("watch condition not met within %.1f s" % timeout)
            t, r = self.next(left)
            if isinstance(r, grpc.StatusCode):
                raise AssertionError("watch ended with %s" % r)
            if pred(r):
                return t, r

    def cancel(self):
        self.call.cancel()


def state(resp, user):
    for u in resp.users:
        if u.user_id == user:
            return u
    return None


def is_online(user, devices=None):
    def pred(r):
        u = state(r, user)
        return u is not None and u.online and (devices is None or u.online_devices == devices)
    return pred


def is_offline(user):
    def pred(r):
        u = state(r, user)
        return u is not None and not u.online
    return pred


TMP = None
REDIS = None
A = None
B = None


def setUpModule():
    global TMP, REDIS, A, B, pb, pbg
    if not os.access(SVC, os.X_OK):
        raise unittest.SkipTest("svc-presence not built: " + SVC)
    TMP = tempfile.mkdtemp(prefix="chat-presence-test-")
    gen = os.path.join(TMP, "gen")
    os.makedirs(gen)
    rc = protoc.main(["protoc", "-I" + os.path.join(SOURCE_DIR, "proto"), "--python_out=" + gen,
                      "--grpc_python_out=" + gen, "chat/v1/presence.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, gen)
    from chat.v1 import presence_pb2, presence_pb2_grpc  # pylint: disable=import-outside-toplevel
    pb, pbg = presence_pb2, presence_pb2_grpc
    REDIS = Redis(TMP)
    REDIS.start()
    A = Presence(TMP, "presence-a", REDIS.port)
    B = Presence(TMP, "presence-b", REDIS.port)


def tearDownModule():
    for inst in (A, B):
        if inst and inst.proc.poll() is None:
            inst.proc.kill()
    if REDIS:
        REDIS.stop()
    if TMP and not os.environ.get("KEEP_TMP"):
        shutil.rmtree(TMP, ignore_errors=True)


def hb(stub, user, device, ttl_ms=0, **kw):
    return stub.Heartbeat(pb.HeartbeatRequest(device_id=device, ttl_ms=ttl_ms), metadata=md(user, **kw),
                          timeout=5)


def hb_retry(stub, user, device, ttl_ms=0, within=8.0):
    """Heartbeat, retried while the instance's Redis connection is still reconnecting."""
    end = time.time() + within
    while True:
        try:
            return hb(stub, user, device, ttl_ms=ttl_ms)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.time() > end:
                raise
            time.sleep(0.1)


def get(stub, ids, user="asker"):
    return stub.GetPresence(pb.GetPresenceRequest(user_ids=ids), metadata=md(user), timeout=5)


class T1Expiry(unittest.TestCase):
    def test_heartbeat_then_expiry(self):
        w = Watch(B.stub, "watcher", ["exp-alice"])
        _, snap = w.next()
        self.assertTrue(snap.snapshot)
        self.assertFalse(state(snap, "exp-alice").online)
        self.assertEqual(state(snap, "exp-alice").last_seen_at_ms, 0)
        resp = hb(A.stub, "exp-alice", "phone", ttl_ms=5000)
        self.assertEqual(resp.ttl_ms, 5000)
        self.assertAlmostEqual(resp.expires_at_ms / 1000, time.time() + 5, delta=1.0)
        _, on = w.until(is_online("exp-alice", 1), timeout=1.0)
        self.assertFalse(on.snapshot)
        t_off, off = w.until(is_offline("exp-alice"), timeout=7.0)
        late = t_off - resp.expires_at_ms / 1000
        print("  offline event %.0f ms after the expiry" % (late * 1000), file=sys.stderr)
        self.assertLess(late, 1.0, "offline event more than 1 s after expiry")
        self.assertEqual(state(off, "exp-alice").last_seen_at_ms, resp.expires_at_ms)
        self.assertEqual(state(off, "exp-alice").online_devices, 0)
        u = get(A.stub, ["exp-alice"]).users[0]
        self.assertFalse(u.online)
        self.assertEqual(u.last_seen_at_ms, resp.expires_at_ms)
        # settled in Redis: the record holds last-seen and no device any more
        self.assertEqual(REDIS.cli("GET", "presence-state:exp-alice"), str(resp.expires_at_ms))
        self.assertEqual(REDIS.cli("EXISTS", "presence:exp-alice:phone"), "0")
        w.cancel()

    def test_expiry_on_time_with_many_ttl_keys(self):
        # 50,000 unrelated keys with long TTLs: Redis's sampling expiry then takes many seconds
        # to find one expired key; the service's backstop must not.
        cmds = "".join("SET filler:%d x EX 3600\r\n" % i for i in range(50000)).encode()
        subprocess.run([REDIS_CLI, "-p", str(REDIS.port), "--pipe"], input=cmds, check=True,
                       capture_output=True)
        w = Watch(A.stub, "watcher", ["exp-dave"])
        w.next()
        hb(B.stub, "exp-dave", "tablet", ttl_ms=120000)
        w.until(is_online("exp-dave"), timeout=1.0)
        # the same device shortens its TTL: watchers must learn the earlier expiry
        resp = hb(A.stub, "exp-dave", "tablet", ttl_ms=5000)
        t_off, off = w.until(is_offline("exp-dave"), timeout=7.0)
        late = t_off - resp.expires_at_ms / 1000
        print("  offline event %.0f ms after the expiry (50k TTL keys)" % (late * 1000),
              file=sys.stderr)
        self.assertLess(late, 1.0)
        self.assertEqual(state(off, "exp-dave").last_seen_at_ms, resp.expires_at_ms)
        w.cancel()
        REDIS.cli("EVAL", "for _, k in ipairs(redis.call('KEYS', 'filler:*')) do "
                  "redis.call('DEL', k) end", "0")


class T2MultiDevice(unittest.TestCase):
    def test_online_until_last_device_leaves(self):
        w = Watch(A.stub, "watcher", ["md-bob"])
        w.next()
        hb(A.stub, "md-bob", "phone", ttl_ms=60000)
        w.until(is_online("md-bob", 1), timeout=1.0)
        hb(B.stub, "md-bob", "laptop", ttl_ms=60000)
        w.until(is_online("md-bob", 2), timeout=1.0)
        # refreshes change nothing and produce none of the events the feed listens to (sadd,
        # del, expired): the record's SET and the key's PEXPIREAT only
        # publish on channels nobody subscribes to
        events_before = A.metrics()["presence_watch_events_total"]
        for _ in range(20):
            hb(B.stub, "md-bob", "laptop", ttl_ms=60000)
        time.sleep(0.2)
        self.assertEqual(A.metrics()["presence_watch_events_total"], events_before)
        u = get(B.stub, ["md-bob"]).users[0]
        self.assertTrue(u.online)
        self.assertEqual(u.online_devices, 2)
        r = A.stub.SetOffline(pb.SetOfflineRequest(device_id="phone"), metadata=md("md-bob"),
                              timeout=5)
        self.assertTrue(r.presence.online)
        self.assertEqual(r.presence.online_devices, 1)
        self.assertEqual(r.presence.user_id, "md-bob")
        _, one = w.until(is_online("md-bob", 1), timeout=1.0)
        before = int(time.time() * 1000)
        r = B.stub.SetOffline(pb.SetOfflineRequest(device_id="laptop", user_id="md-bob"),
                              metadata=md("md-bob"), timeout=5)
        after = int(time.time() * 1000)
        self.assertFalse(r.presence.online)
        self.assertEqual(r.presence.online_devices, 0)
        self.assertTrue(before - 50 <= r.presence.last_seen_at_ms <= after + 50)
        _, off = w.until(is_offline("md-bob"), timeout=1.0)
        self.assertEqual(state(off, "md-bob").last_seen_at_ms, r.presence.last_seen_at_ms)
        # idempotent: an unknown or already offline device is fine, and changes nothing
        r2 = A.stub.SetOffline(pb.SetOfflineRequest(device_id="never-seen"), metadata=md("md-bob"),
                               timeout=5)
        self.assertFalse(r2.presence.online)
        self.assertEqual(r2.presence.last_seen_at_ms, r.presence.last_seen_at_ms)
        # no further event for the no-op
        with self.assertRaises(AssertionError):
            w.next(timeout=0.7)
        w.cancel()

    def test_one_device_expires_other_stays(self):
        w = Watch(B.stub, "watcher", ["md-carol"])
        w.next()
        hb(A.stub, "md-carol", "watch", ttl_ms=5000)
        hb(A.stub, "md-carol", "desk", ttl_ms=60000)
        w.until(is_online("md-carol", 2), timeout=1.5)
        _, r = w.until(is_online("md-carol", 1), timeout=7.0)  # the short one expired
        self.assertTrue(state(r, "md-carol").online)
        u = get(A.stub, ["md-carol"]).users[0]
        self.assertEqual((u.online, u.online_devices, u.last_seen_at_ms), (True, 1, 0))
        A.stub.SetOffline(pb.SetOfflineRequest(device_id="desk"), metadata=md("md-carol"),
                          timeout=5)
        w.until(is_offline("md-carol"), timeout=1.0)
        w.cancel()


class T3Batch(unittest.TestCase):
    def test_batch_query(self):
        for i in range(0, 500, 7):
            hb(A.stub if i % 2 else B.stub, "batch-%d" % i, "d%d" % (i % 3), ttl_ms=60000)
        ids = ["batch-%d" % i for i in range(500)]
        resp = get(A.stub, ids)
        self.assertEqual([u.user_id for u in resp.users], ids)
        for i, u in enumerate(resp.users):
            self.assertEqual(u.online, i % 7 == 0, u.user_id)
            self.assertEqual(u.online_devices, 1 if i % 7 == 0 else 0)
        # duplicates answered once, in order of first occurrence; unknown users offline
        resp = get(B.stub, ["batch-7", "nobody", "batch-7", "batch-14", "nobody"])
        self.assertEqual([u.user_id for u in resp.users], ["batch-7", "nobody", "batch-14"])
        self.assertEqual([u.online for u in resp.users], [True, False, True])
        self.assertEqual(resp.users[1].last_seen_at_ms, 0)
        # 500 ids of which many repeat still count as 500 entries
        resp = get(A.stub, ["batch-0"] * 500)
        self.assertEqual(len(resp.users), 1)


def h2_burst(port, reqs):
    """Sends every (method, user, request message) of |reqs| as a unary gRPC call on one
    HTTP/2 connection in a single write, so the server reads them in one loop iteration;
    returns [(grpc-status, response bytes, grpc-message)] in the same order."""
    import h2.connection  # pylint: disable=import-outside-toplevel
    import h2.config  # pylint: disable=import-outside-toplevel
    import h2.events  # pylint: disable=import-outside-toplevel
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    # wait for the server's SETTINGS (its stream limit) before the burst
    sock.settimeout(10)
    settled = False
    while not settled:
        for ev in conn.receive_data(sock.recv(65536)):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                settled = True
    sock.sendall(conn.data_to_send())
    ids = []
    for method, user, msg in reqs:
        sid = conn.get_next_available_stream_id()
        body = msg.SerializeToString()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                (":path", "/chat.v1.PresenceService/" + method),
                                (":authority", "127.0.0.1:%d" % port),
                                ("content-type", "application/grpc"), ("te", "trailers"),
                                ("authorization", "Bearer " + token(user))])
        conn.send_data(sid, b"\0" + len(body).to_bytes(4, "big") + body, end_stream=True)
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    data = {sid: b"" for sid in ids}
    status = {}
    while len(status) < len(ids):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.DataReceived):
                data[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                h = dict((k.decode() if isinstance(k, bytes) else k,
                          v.decode() if isinstance(v, bytes) else v) for k, v in ev.headers)
                if "grpc-status" in h:
                    status[ev.stream_id] = (int(h["grpc-status"]), h.get("grpc-message", ""))
        sock.sendall(conn.data_to_send())
    sock.close()
    return [(status[sid][0], data[sid][5:], status[sid][1]) for sid in ids]


def batch_metric(inst):
    m = inst.metrics()
    return (m.get("presence_heartbeat_batch_size_count", 0),
            m.get("presence_heartbeat_batch_size_sum", 0))


class T3HeartbeatBatches(unittest.TestCase):
    """Heartbeats that arrive together are sent to Redis as one script call (hbqueue.c), and
    every call still gets its own answer or error."""

    def test_1_burst_is_one_script_call_with_answers_per_call(self):
        REDIS.cli("HSET", "presence-state:hbb-broken", "x", "1")  # a record Redis cannot read
        reqs = []
        for i in range(30):
            reqs.append(("Heartbeat", "hbb-%d" % i, pb.HeartbeatRequest(device_id="phone",
                                                                        ttl_ms=60000)))
            reqs.append(("Heartbeat", "hbb-%d" % i, pb.HeartbeatRequest(device_id="pad",
                                                                        ttl_ms=30000)))
        reqs.append(("Heartbeat", "hbb-0", pb.HeartbeatRequest(device_id="phone", ttl_ms=90000)))
        reqs.append(("Heartbeat", "hbb-broken", pb.HeartbeatRequest(device_id="p")))
        reqs.append(("Heartbeat", "hbb-1", pb.HeartbeatRequest(device_id="bad id")))
        count0, sum0 = batch_metric(A)
        t0 = time.time()
        out = h2_burst(A.port, reqs)
        t1 = time.time()
        count1, sum1 = batch_metric(A)
        # 62 heartbeats reached Redis (the invalid one did not), in very few script calls
        self.assertEqual(sum1 - sum0, 62)
        self.assertLessEqual(count1 - count0, 2, "heartbeats that arrived together not batched")
        for i in range(30):
            for k, ttl in ((2 * i, 60000), (2 * i + 1, 30000)):
                code, body, msg = out[k]
                self.assertEqual(code, 0, msg)
                r = pb.HeartbeatResponse.FromString(body)
                self.assertEqual(r.ttl_ms, ttl)
                self.assertTrue(t0 * 1000 + ttl - 1000 <= r.expires_at_ms <= t1 * 1000 + ttl + 1000)
        # the repeated device saw the earlier heartbeat: same user, later expiry, one record
        r0 = pb.HeartbeatResponse.FromString(out[0][1])
        r60 = pb.HeartbeatResponse.FromString(out[60][1])
        self.assertEqual(out[60][0], 0)
        self.assertEqual(r60.expires_at_ms - r0.expires_at_ms, 30000)
        self.assertEqual(out[61][0], grpc.StatusCode.INTERNAL.value[0])  # its own error only
        self.assertEqual(out[62][0], grpc.StatusCode.INVALID_ARGUMENT.value[0])
        resp = get(A.stub, ["hbb-%d" % i for i in range(30)])
        self.assertEqual([u.online_devices for u in resp.users], [2] * 30)
        rec = REDIS.cli("GET", "presence-state:hbb-0").split()
        self.assertEqual(sorted(rec[1:]), ["pad=%d" % (r0.expires_at_ms - 30000),
                                           "phone=%d" % r60.expires_at_ms])

    def test_2_full_queue_is_resource_exhausted(self):
        # Redis holds write commands for 1.5 s, so the first 8 heartbeats stay in flight and
        # the worker's queue (--heartbeat-queue-max 8) refuses the rest at once.
        inst = Presence(TMP, "presence-q", REDIS.port, extra=["--heartbeat-queue-max", "8"])
        try:
            hb_retry(inst.stub, "hbq-warm", "p")
            reqs = [("Heartbeat", "hbq-%d" % i, pb.HeartbeatRequest(device_id="p"))
                    for i in range(20)]
            REDIS.cli("CLIENT", "PAUSE", "1500", "WRITE")
            t0 = time.time()
            out = h2_burst(inst.port, reqs)
            codes = [c for c, _, _ in out]
            self.assertEqual(codes[:8], [0] * 8)
            self.assertEqual(codes[8:], [grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]] * 12)
            self.assertIn("too many heartbeats", out[8][2].replace("%20", " "))
            self.assertGreater(time.time() - t0, 1.0)  # the accepted ones waited for Redis
            # and the queue takes heartbeats again once they are answered
            self.assertEqual(hb(inst.stub, "hbq-8", "p").ttl_ms, 30000)
        finally:
            REDIS.cli("CLIENT", "UNPAUSE")
            inst.stop()


class T4AcrossInstances(unittest.TestCase):
    def test_watch_on_a_sees_changes_through_b(self):
        users = ["x-%d" % i for i in range(20)]
        wa = Watch(A.stub, "watcher", users)
        wb = Watch(B.stub, "watcher", users)
        wa.next()
        wb.next()
        lat = []
        for i, u in enumerate(users[:10]):
            stub = B.stub if i % 2 == 0 else A.stub
            t0 = time.time()
            hb(stub, u, "phone", ttl_ms=60000)
            t1, _ = wa.until(is_online(u), timeout=1.0)
            wb.until(is_online(u), timeout=1.0)
            lat.append(t1 - t0)
        print("  cross-instance change-to-watcher: max %.1f ms" % (max(lat) * 1000),
              file=sys.stderr)
        for u in users[:10]:
            A.stub.SetOffline(pb.SetOfflineRequest(device_id="phone"), metadata=md(u), timeout=5)
            wb.until(is_offline(u), timeout=1.0)
            wa.until(is_offline(u), timeout=1.0)
        wa.cancel()
        wb.cancel()


class T5BadInput(unittest.TestCase):
    def code(self, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, timeout=5, **kw)
        return cm.exception.code(), cm.exception.details()

    def test_heartbeat_and_set_offline(self):
        s = A.stub
        cases = [
            (pb.HeartbeatRequest(device_id=""), grpc.StatusCode.INVALID_ARGUMENT, "device_id"),
            (pb.HeartbeatRequest(device_id="bad device"), grpc.StatusCode.INVALID_ARGUMENT,
             "device_id"),
            (pb.HeartbeatRequest(device_id="d" * 65), grpc.StatusCode.INVALID_ARGUMENT, "device_id"),
            (pb.HeartbeatRequest(device_id="a:b"), grpc.StatusCode.INVALID_ARGUMENT, "device_id"),
            (pb.HeartbeatRequest(device_id="p", ttl_ms=4999), grpc.StatusCode.INVALID_ARGUMENT,
             "ttl_ms"),
            (pb.HeartbeatRequest(device_id="p", ttl_ms=120001), grpc.StatusCode.INVALID_ARGUMENT,
             "ttl_ms"),
            (pb.HeartbeatRequest(device_id="p", user_id="mallory"),
             grpc.StatusCode.PERMISSION_DENIED, "another user"),
        ]
        for req, want, text in cases:
            code, details = self.code(s.Heartbeat, req, metadata=md("eve"))
            self.assertEqual(code, want, req)
            self.assertIn(text, details)
        code, _ = self.code(s.SetOffline, pb.SetOfflineRequest(device_id=""), metadata=md("eve"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code, _ = self.code(s.SetOffline, pb.SetOfflineRequest(device_id="p", user_id="mallory"),
                            metadata=md("eve"))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        # bounds themselves are fine, and 0 is the default
        self.assertEqual(hb(s, "eve", "p", ttl_ms=5000).ttl_ms, 5000)
        self.assertEqual(hb(s, "eve", "p", ttl_ms=120000).ttl_ms, 120000)
        self.assertEqual(hb(s, "eve", "p").ttl_ms, 30000)
        self.assertEqual(s.Heartbeat(pb.HeartbeatRequest(device_id="p", user_id="eve"),
                                     metadata=md("eve"), timeout=5).ttl_ms, 30000)
        # nothing was written for the refused calls
        self.assertEqual(REDIS.cli("EXISTS", "presence-state:mallory"), "0")
        rec = REDIS.cli("GET", "presence-state:eve").split()
        self.assertEqual([d.split("=")[0] for d in rec[1:]], ["p"])

    def test_lists(self):
        for fn in (A.stub.GetPresence,):
            for ids, text in (([], "empty"), (["u%d" % i for i in range(501)], "at most 500"),
                              (["ok", ""], "user_ids[1]"), (["ok", "has space"], "user_ids[1]"),
                              (["x" * 129], "user_ids[0]")):
                code, details = self.code(fn, pb.GetPresenceRequest(user_ids=ids), metadata=md("eve"))
                self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(text, details)
        for ids in ([], ["u%d" % i for i in range(501)], ["bad\tid"]):
            w = Watch(A.stub, "eve", ids)
            _, status = w.next()
            self.assertEqual(status, grpc.StatusCode.INVALID_ARGUMENT)

    def test_tokens(self):
        s = A.stub
        req = pb.HeartbeatRequest(device_id="p")
        bad = [
            (),
            (("authorization", "Bearer not.a.token"),),
            (("authorization", "Basic Zm9vOmJhcg=="),),
            (("authorization", "Bearer " + token("eve", secret=b"x" * 40)),),
            (("authorization", "Bearer " + token("eve", ttl_s=-3600)),),
            (("authorization", "Bearer " + token("eve", alg="HS384")),),
        ]
        for m in bad:
            code, _ = self.code(s.Heartbeat, req, metadata=m)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, m)
            code, _ = self.code(s.GetPresence, pb.GetPresenceRequest(user_ids=["a"]), metadata=m)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, m)
            code, _ = self.code(s.CountOnline, pb.CountOnlineRequest(chat_id=1), metadata=m)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, m)
        call = s.WatchPresence(pb.WatchPresenceRequest(user_ids=["a"]), metadata=bad[1])
        with self.assertRaises(grpc.RpcError) as cm:
            next(iter(call))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_watch_ends_when_token_expires(self):
        # the verifier allows 30 s of clock leeway; the stream itself ends at exp
        w = Watch(B.stub, "eve", ["someone"], ttl_s=1)
        _, snap = w.next()
        self.assertTrue(snap.snapshot)
        _, status = w.next(timeout=4.0)
        self.assertEqual(status, grpc.StatusCode.UNAUTHENTICATED)


class T6CountOnline(unittest.TestCase):
    def test_count_online(self):
        REDIS.cli("SADD", "chat:4242:members", "c-ann", "c-ben", "c-cat", "c-dan")
        hb(A.stub, "c-ann", "p", ttl_ms=60000)
        hb(B.stub, "c-ben", "p", ttl_ms=60000)
        hb(B.stub, "c-ben", "q", ttl_ms=60000)
        hb(A.stub, "c-zed", "p", ttl_ms=60000)  # online, not a member
        r = A.stub.CountOnline(pb.CountOnlineRequest(chat_id=4242), metadata=md("c-dan"), timeout=5)
        self.assertEqual((r.online_count, r.member_count), (2, 4))
        self.assertAlmostEqual(r.computed_at_ms / 1000, time.time(), delta=2)
        A.stub.SetOffline(pb.SetOfflineRequest(device_id="p"), metadata=md("c-ann"), timeout=5)
        r = B.stub.CountOnline(pb.CountOnlineRequest(chat_id=4242), metadata=md("c-ann"), timeout=5)
        self.assertEqual((r.online_count, r.member_count), (1, 4))
        for chat, user, want in ((4243, "c-ann", grpc.StatusCode.NOT_FOUND),
                                 (4242, "c-zed", grpc.StatusCode.PERMISSION_DENIED),
                                 (0, "c-ann", grpc.StatusCode.INVALID_ARGUMENT)):
            with self.assertRaises(grpc.RpcError) as cm:
                A.stub.CountOnline(pb.CountOnlineRequest(chat_id=chat), metadata=md(user), timeout=5)
            self.assertEqual(cm.exception.code(), want)


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class T7SlowWatcher(unittest.TestCase):
    """A watcher that never reads (HTTP/2 stream window 0, raw h2 client): the server keeps at
    most its per-stream buffer, coalesces further changes, and ends the stream with
    RESOURCE_EXHAUSTED after the stall timeout; nothing else is disturbed."""

    def test_slow_watcher_is_bounded_and_ended(self):
        import h2.connection  # pylint: disable=import-outside-toplevel
        import h2.config  # pylint: disable=import-outside-toplevel
        import h2.events  # pylint: disable=import-outside-toplevel
        import h2.settings  # pylint: disable=import-outside-toplevel
        inst = Presence(TMP, "presence-c", REDIS.port, extra=["--watch-stall-timeout-ms", "1500"])
        try:
            users = ["slow-%03d-%s" % (i, "x" * 110) for i in range(500)]
            sock = socket.create_connection(("127.0.0.1", inst.port))
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            body = pb.WatchPresenceRequest(user_ids=users).SerializeToString()
            conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                                  (":path", "/chat.v1.PresenceService/WatchPresence"),
                                  (":authority", "127.0.0.1:%d" % inst.port),
                                  ("content-type", "application/grpc"), ("te", "trailers"),
                                  ("authorization", "Bearer " + token("slowpoke"))])
            msg = b"\0" + len(body).to_bytes(4, "big") + body
            for off in range(0, len(msg), 16384):
                conn.send_data(1, msg[off:off + 16384], end_stream=off + 16384 >= len(msg))
            sock.sendall(conn.data_to_send())
            time.sleep(0.5)  # snapshot queued on the server, not sent: window 0
            # ~45 rounds flipping all 500 users, written straight into Redis (the same records
            # and device keys the scripts write), each round ~70 KB of changes for the stream
            rounds = 45
            for r in range(rounds):
                now = int(time.time() * 1000)
                cmds = b""
                for u in users:
                    if r % 2 == 0:
                        cmds += resp_cmd("SET", "presence-state:" + u, "0 d=%d" % (now + 60000),
                                         "PX", 600000)
                        cmds += resp_cmd("SADD", "presence:%s:d" % u, "1")
                        cmds += resp_cmd("PEXPIREAT", "presence:%s:d" % u, now + 60000)
                    else:
                        cmds += resp_cmd("SET", "presence-state:" + u, str(now), "PX", 600000)
                        cmds += resp_cmd("DEL", "presence:%s:d" % u)
                subprocess.run([REDIS_CLI, "-p", str(REDIS.port), "--pipe"], input=cmds,
                               check=True, capture_output=True)
                time.sleep(0.03)
            # other clients are served meanwhile
            self.assertEqual(len(get(inst.stub, users[:10]).users), 10)
            time.sleep(2.5)  # > stall timeout
            m = inst.metrics()
            self.assertEqual(m['presence_watch_ended_total{reason="slow"}'], 1)
            # now read everything the server kept: open the windows
            conn.increment_flow_control_window(1 << 30)
            conn.increment_flow_control_window(1 << 30, stream_id=1)
            sock.sendall(conn.data_to_send())
            data, trailers, ended = b"", None, False
            sock.settimeout(10)
            while not ended:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                for ev in conn.receive_data(chunk):
                    if isinstance(ev, h2.events.DataReceived):
                        data += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        trailers = dict((k.decode() if isinstance(k, bytes) else k,
                                         v.decode() if isinstance(v, bytes) else v)
                                        for k, v in ev.headers)
                    elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                        ended = True
                sock.sendall(conn.data_to_send())
            sock.close()
            self.assertIsNotNone(trailers)
            self.assertEqual(trailers.get("grpc-status"), "8")
            self.assertIn("too slow", trailers.get("grpc-message", "").replace("%20", " "))
            msgs, off = [], 0
            while off < len(data):
                n = int.from_bytes(data[off + 1:off + 5], "big")
                msgs.append(pb.WatchPresenceResponse.FromString(data[off + 5:off + 5 + n]))
                off += 5 + n
            self.assertTrue(msgs[0].snapshot)
            self.assertEqual(len(msgs[0].users), 500)
            changes = sum(len(mm.users) for mm in msgs[1:])
            print("  slow watcher: %d bytes kept, %d responses, %d user changes of %d made" %
                  (len(data), len(msgs), changes, rounds * 500), file=sys.stderr)
            # bounded: about the per-stream buffer (1 MiB) plus one response, not all changes
            self.assertLess(len(data), 1_300_000)
            self.assertLess(changes, rounds * 500)
        finally:
            inst.stop()


class T9RedisRestart(unittest.TestCase):
    """Runs last: restarts Redis (all presence data is gone afterwards)."""

    def test_1_restart_during_watch_resends_snapshot(self):
        hb(A.stub, "rs-fay", "p", ttl_ms=60000)
        w = Watch(A.stub, "watcher", ["rs-fay", "rs-gus"])
        _, snap = w.next()
        self.assertTrue(state(snap, "rs-fay").online)
        REDIS.stop(hard=True)
        time.sleep(0.5)
        REDIS.start()  # empty: rs-fay is offline now, and the notification config is reset
        _, r = w.next(timeout=RESYNC_TIMEOUT_MS / 1000 + 2)
        self.assertNotIsInstance(r, grpc.StatusCode, "expected a snapshot, got a status")
        self.assertTrue(r.snapshot)
        self.assertFalse(state(r, "rs-fay").online)
        self.assertIn("E", REDIS.cli("CONFIG", "GET", "notify-keyspace-events").split()[-1])
        # the feed works again, for changes through either instance (B's command connection
        # may still be in its reconnect backoff: UNAVAILABLE until then)
        hb_retry(B.stub, "rs-gus", "p", ttl_ms=60000)
        w.until(is_online("rs-gus"), timeout=1.0)
        w.cancel()

    def test_2_redis_down_too_long_ends_with_unavailable(self):
        w = Watch(B.stub, "watcher", ["rs-hal"])
        w.next()
        REDIS.stop(hard=True)
        t0 = time.time()
        t, status = w.next(timeout=RESYNC_TIMEOUT_MS / 1000 + 3)
        self.assertEqual(status, grpc.StatusCode.UNAVAILABLE)
        print("  stream ended UNAVAILABLE %.1f s after Redis died" % (t - t0), file=sys.stderr)
        # requests fail fast meanwhile, with UNAVAILABLE
        with self.assertRaises(grpc.RpcError) as cm:
            hb(A.stub, "rs-hal", "p")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        REDIS.start()
        # a new watch works once Redis is back
        end = time.time() + 10
        while True:
            w2 = Watch(B.stub, "watcher", ["rs-hal"])
            _, r = w2.next(timeout=RESYNC_TIMEOUT_MS / 1000 + 2)
            if not isinstance(r, grpc.StatusCode):
                break
            self.assertLess(time.time(), end, "watch never recovered")
            time.sleep(0.3)
        self.assertTrue(r.snapshot)
        hb_retry(A.stub, "rs-hal", "p", ttl_ms=60000)
        w2.until(is_online("rs-hal"), timeout=1.0)
        w2.cancel()


class TzShutdown(unittest.TestCase):
    def test_1_metrics(self):
        m = A.metrics()
        self.assertGreater(m['presence_watch_events_total'], 0)
        self.assertGreater(m['presence_watch_pushes_total{kind="snapshot"}'], 0)
        self.assertGreater(m['presence_watch_pushes_total{kind="change"}'], 0)
        self.assertGreater(m['presence_redis_seconds_count{op="heartbeat"}'], 0)
        self.assertGreater(m['presence_redis_seconds_count{op="sweep"}'], 0)
        self.assertGreater(m['presence_watch_resyncs_total'], 0)
        self.assertEqual(m['presence_watch_streams'], 0)
        self.assertEqual(m['presence_watched_users'], 0)
        mb = B.metrics()
        self.assertGreater(mb['presence_watch_ended_total{reason="unavailable"}'], 0)
        self.assertGreater(mb['presence_watch_ended_total{reason="token_expired"}'], 0)

    def test_2_logs_and_clean_exit(self):
        log = A.read_log()
        self.assertIn("keyspace notifications", log)
        self.assertIn("notify-keyspace-events", log)
        self.assertEqual(A.stop(), 0)
        self.assertEqual(B.stop(), 0)

    def test_3_sigterm_ends_watch_at_once(self):
        # The drain hook ends watch streams with UNAVAILABLE when SIGTERM arrives, long before
        # the drain deadline (10 s by default), and the process still exits 0.
        c = Presence(TMP, "presence-c", REDIS.port)
        try:
            hb_retry(c.stub, "term-ivy", "p", ttl_ms=60000)
            w = Watch(c.stub, "watcher", ["term-ivy"])
            _, snap = w.next()
            self.assertTrue(state(snap, "term-ivy").online)
            t0 = time.time()
            c.proc.send_signal(signal.SIGTERM)
            t, status = w.next(timeout=5.0)
            self.assertEqual(status, grpc.StatusCode.UNAVAILABLE)
            self.assertLess(t - t0, 2.0, "watch not ended promptly on SIGTERM")
            print("  watch ended UNAVAILABLE %.3f s after SIGTERM" % (t - t0), file=sys.stderr)
            self.assertEqual(c.proc.wait(20), 0)
            self.assertIn("draining", c.read_log())
        finally:
            c.channel.close()
            if c.proc.poll() is None:
                c.proc.kill()
            c.log.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
