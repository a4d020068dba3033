"""Shared harness of the svc-chats integration tests (tests/integration/chats_*_test.py).

Starts real PostgreSQL, Redis and Kafka (KRaft, one broker) through tools/stack-lib.sh on
free ports in a temp dir, generates the chat.v1 Python stubs from proto/ with grpc_tools,
runs svc-chats from $BUILD_DIR, mints HS256 tokens with hmac, and produces ChatEvent records
straight to Kafka with kcat (one file per record, key = chat_id in decimal, murmur2_random), so
these tests do not depend on svc-messaging.
"""

import base64
import hashlib
import hmac
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
REEXEC = "CHAT_CHATS_TEST_REEXEC"
SECRET = "chats-test-secret-0123456789abcdef0123"
PARTITIONS = 4


def _has_grpc(python):
    return subprocess.run([python, "-c", "import grpc, grpc_tools.protoc"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def bootstrap(path):
    """Re-exec |path| with the tools venv's python when this one lacks grpcio."""
    if _has_grpc(sys.executable) or os.environ.get(REEXEC):
        return
    tools = os.environ.get("CHAT_TOOLS_DIR") or os.path.expanduser("~/.cache/chat-backend/tools")
    py = os.path.join(tools, "venv", "bin", "python3")
    if not (os.access(py, os.X_OK) and _has_grpc(py)):
        subprocess.run([os.path.join(SOURCE_DIR, "tools", "install-tools.sh")], check=True,
                       stdout=sys.stderr)
    os.execve(py, [py, os.path.abspath(path)] + sys.argv[1:], dict(os.environ, **{REEXEC: "1"}))


def gen_stubs(out):
    """Generates chat/v1 stubs into |out| and imports them: (chats_pb2, chats_pb2_grpc, events_pb2)."""
    from grpc_tools import protoc  # pylint: disable=import-outside-toplevel
    import grpc_tools  # pylint: disable=import-outside-toplevel
    inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for f in ("chat/v1/chats.proto", "chat/v1/events.proto"):
        rc = protoc.main(["protoc", "-I" + os.path.join(SOURCE_DIR, "proto"), "-I" + inc,
                          "--python_out=" + out, "--grpc_python_out=" + out, f])
        if rc != 0:
            raise RuntimeError("protoc failed for " + f)
    sys.path.insert(0, out)
    from chat.v1 import chats_pb2, chats_pb2_grpc, events_pb2  # pylint: disable=import-outside-toplevel
    return chats_pb2, chats_pb2_grpc, events_pb2


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, ttl_s=3600, secret=SECRET):
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "iat": now, "exp": now + ttl_s}).encode())
    sig = b64(hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest())
    return head + "." + body + "." + sig


def md(user, **kw):
    return (("authorization", "Bearer " + token(user, **kw)),)


def h(message_id, version, deleted):
    """The range-hash term, as chats.proto defines it."""
    data = struct.pack(">QIB", message_id, version, 1 if deleted else 0)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def range_hash(msgs, lo, hi):
    count, acc = 0, 0
    for m in msgs:
        if lo <= m.message_id < hi:
            count += 1
            acc ^= h(m.message_id, m.version, m.deleted)
    return count, acc


class Stack:
    """PostgreSQL + Redis + Kafka started with tools/stack-lib.sh in a temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="chats-test.")
        script = """
set -e
source {lib}
start_pg {d} "$(free_port)" >&2
start_redis {d} "$(free_port)" >&2
KAFKA_PARTITIONS={parts} start_kafka {d} "$(free_port 2)" 1 >&2
printf 'PG_URL=%s\\nREDIS_URL=%s\\nKAFKA_BROKERS=%s\\nPG_PORT=%s\\nREDIS_PORT=%s\\n' \
  "$PG_URL" "$REDIS_URL" "$KAFKA_BROKERS" "$PG_PORT" "$REDIS_PORT"
""".format(lib=shlex.quote(os.path.join(SOURCE_DIR, "tools", "stack-lib.sh")),
           d=shlex.quote(self.dir), parts=PARTITIONS)
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        if out.returncode != 0:
            self.close()
            raise RuntimeError("stack did not start:\n" + out.stderr[-4000:])
        self.env = dict(line.split("=", 1) for line in out.stdout.strip().splitlines())
        self.seq = 0

    def close(self):
        subprocess.run(["bash", "-c", "source {} && stack_cleanup {}".format(
            shlex.quote(os.path.join(SOURCE_DIR, "tools", "stack-lib.sh")),
            shlex.quote(self.dir))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def psql(self, sql):
        out = subprocess.run(["psql", "-X", "-q", "-tA", "-h", "127.0.0.1", "-p",
                              self.env["PG_PORT"], "-U", "chat", "-d", "chat", "-c", sql],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def redis(self, *args):
        out = subprocess.run(["redis-cli", "-p", self.env["REDIS_PORT"]] + list(args),
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def produce(self, events):
        """Produces serialized ChatEvents, grouped per chat (one kcat call per chat, in order)."""
        by_chat = {}
        for ev in events:
            by_chat.setdefault(ev.chat_id, []).append(ev)
        tmp = tempfile.mkdtemp(dir=self.dir)
        for chat_id, evs in by_chat.items():
            files = []
            for ev in evs:
                self.seq += 1
                path = os.path.join(tmp, "%08d" % self.seq)
                with open(path, "wb") as f:
                    f.write(ev.SerializeToString())
                files.append(path)
            for i in range(0, len(files), 2000):
                subprocess.run(["kcat", "-P", "-b", self.env["KAFKA_BROKERS"], "-t", "chat.events",
                                "-k", str(chat_id), "-X", "topic.partitioner=murmur2_random",
                                "-X", "enable.idempotence=true"] + files[i:i + 2000],
                               check=True, capture_output=True)
        subprocess.run(["rm", "-rf", tmp], check=False)


class Chats:
    """One svc-chats process."""

    def __init__(self, stack, name="chats", extra=()):
        import grpc  # pylint: disable=import-outside-toplevel
        self.stack = stack
        self.port = free_port()
        self.mport = free_port()
        self.log_path = os.path.join(stack.dir, name + ".log")
        env = dict(os.environ, JWT_SECRET=SECRET, **stack.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BUILD_DIR, "svc-chats", "svc-chats"), "--host", "127.0.0.1", "--port",
             str(self.port), "--metrics-port", str(self.mport), "--workers", "2",
             "--kafka-session-timeout-ms", "6000"] + list(extra),
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        grpc.channel_ready_future(self.channel).result(timeout=60)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metrics(self):
        import urllib.request  # pylint: disable=import-outside-toplevel
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=5) as r:
            return r.read().decode()

    def kill(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.log.close()
        return rc


def free_port():
    import socket  # pylint: disable=import-outside-toplevel
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=30.0, step=0.1, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)
