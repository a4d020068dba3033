#!/usr/bin/env python3
"""Python grpcio (C-core, not ours) against our interop server.

The grpc.testing messages come from grpc's own test.proto (Debian grpc-proto,
/usr/share/grpc-proto, or $GRPC_PROTO) compiled at start with grpcio-tools into
a descriptor set; calls go through grpcio's generic channel API. Covered: the
four call kinds, metadata echo, status codes and messages, deadlines, gzip
request compression (including the expect_compressed check and a compressed
message that inflates past the limit), an unsupported encoding (deflate), a
message over 4 MiB, health Check and Watch (Watch sees NOT_SERVING when the
server gets SIGTERM, then its stream ends) and reflection through
grpcio-reflection's ProtoReflectionDescriptorDatabase.

    BUILD_DIR=build python3 tests/integration/grpcio_test.py [-v] [unittest args]

grpcio comes from the tools venv of tools/install-tools.sh
($CHAT_TOOLS_DIR/venv, default ~/.cache/chat-backend/tools/venv): the script
re-executes itself with that venv's python, running install-tools.sh first if
the venv or its modules are missing. Ends with 'N passed, N failed'.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
NEEDED = ("import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2_grpc, "
          "grpc_reflection.v1alpha.proto_reflection_descriptor_database")
REEXEC_MARK = "CHAT_GRPCIO_TEST_REEXEC"


def _venv_dir():
    tools = os.environ.get("CHAT_TOOLS_DIR") or os.path.join(
        os.environ.get("CHAT_CACHE") or os.path.expanduser("~/.cache/chat-backend"), "tools")
    return os.path.join(tools, "venv")


def _imports_ok(python):
    return subprocess.run([python, "-c", NEEDED], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def _bootstrap():
    """Makes sure this process runs on a python that has grpcio: the tools venv when it has
    the modules, else this python if it has them, else the venv after install-tools.sh."""
    venv = _venv_dir()
    venv_python = os.path.join(venv, "bin", "python3")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv) or os.environ.get(REEXEC_MARK):
        return  # already the venv (or re-executed once: a failing import below says why)
    if not (os.access(venv_python, os.X_OK) and _imports_ok(venv_python)):
        if _imports_ok(sys.executable):
            return
        print("grpcio_test: grpcio missing: running tools/install-tools.sh", file=sys.stderr)
        rc = subprocess.run([os.path.join(SOURCE_DIR, "tools", "install-tools.sh")],
                            stdout=sys.stderr, check=False).returncode
        if rc != 0:
            sys.exit("grpcio_test: tools/install-tools.sh failed (exit %d): 0 passed, 1 failed" % rc)
    env = dict(os.environ, **{REEXEC_MARK: "1"})
    os.execve(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:], env)


if __name__ == "__main__":
    _bootstrap()

# pylint: disable=wrong-import-position
import queue
import signal
import socket
import tempfile
import time
import unittest

import grpc
import grpc_tools
from grpc_tools import protoc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase)

INTEROP_SERVER = os.path.join(BUILD_DIR, "tests", "interop", "interop_server")
GRPC_PROTO = os.environ.get("GRPC_PROTO", "/usr/share/grpc-proto")
SERVICE = "grpc.testing.TestService"
MAX_RECV = 4 << 20  # the server's default max receive message
CODE = {sc.value[0]: sc for sc in grpc.StatusCode}

# grpc.testing message classes, filled by load_messages().
M = {}


def load_messages():
    """Compiles grpc/testing/test.proto (and its imports) to a descriptor set with grpcio-tools'
    protoc and makes message classes from it. No generated modules: they would be named
    grpc.testing.* and clash with the grpc package."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        rc = protoc.main(["protoc", "-I", GRPC_PROTO, "-I", well_known, "--include_imports",
                          "--descriptor_set_out=" + out, "grpc/testing/test.proto"])
        if rc != 0:
            raise RuntimeError("protoc failed on grpc/testing/test.proto (%d)" % rc)
        with open(out, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    for name in ("Empty", "Payload", "EchoStatus", "BoolValue", "SimpleRequest", "SimpleResponse",
                 "ResponseParameters", "StreamingInputCallRequest", "StreamingInputCallResponse",
                 "StreamingOutputCallRequest", "StreamingOutputCallResponse"):
        M[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.testing." +
                                                                             name))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Our interop server on a free loopback port, with its log in a temp file."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="interop_server.", suffix=".log")
        self.proc = None
        self.port = None
        self.terminated = False

    def start(self):
        if not os.access(INTEROP_SERVER, os.X_OK):
            raise RuntimeError("interop server not built: %s (set BUILD_DIR)" % INTEROP_SERVER)
        for _ in range(5):  # the port may be taken between picking and binding
            self.port = free_port()
            self.proc = subprocess.Popen(
                [INTEROP_SERVER, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"],
                stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            self.terminated = False
        raise RuntimeError("interop server did not start:\n" + self.log_text())

    def wait_log(self, text, timeout=10):
        """Waits until the server's log contains |text|."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("no %r in the server log:\n%s" % (text, self.log_text()))
            time.sleep(0.02)

    def target(self):
        return "127.0.0.1:%d" % self.port

    def terminate(self):
        """Sends SIGTERM once: a second one may land after the server has put the default
        disposition back on its way out, and kill it."""
        if self.proc is not None and not self.terminated and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout=15):
        """SIGTERM (unless sent already), then wait; returns the exit status (None if it had to
        be killed)."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()


def channel(target):
    return grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", 16 << 20),
    ])


class Stubs:
    """grpc.testing.TestService through grpcio's generic multi-callables."""

    def __init__(self, ch):

        def method(kind, name, req, resp):
            return getattr(ch, kind)("/%s/%s" % (SERVICE, name),
                                     request_serializer=M[req].SerializeToString,
                                     response_deserializer=M[resp].FromString)

        self.unary = method("unary_unary", "UnaryCall", "SimpleRequest", "SimpleResponse")
        self.server_streaming = method("unary_stream", "StreamingOutputCall",
                                       "StreamingOutputCallRequest",
                                       "StreamingOutputCallResponse")
        self.client_streaming = method("stream_unary", "StreamingInputCall",
                                       "StreamingInputCallRequest", "StreamingInputCallResponse")
        self.bidi = method("stream_stream", "FullDuplexCall", "StreamingOutputCallRequest",
                           "StreamingOutputCallResponse")
        self.empty = method("unary_unary", "EmptyCall", "Empty", "Empty")
        self.unimplemented = ch.unary_unary("/%s/UnimplementedCall" % SERVICE,
                                            request_serializer=M["Empty"].SerializeToString,
                                            response_deserializer=M["Empty"].FromString)


def zeros(n):
    return M["Payload"](body=bytes(n))


def out_request(*sizes, **kw):
    return M["StreamingOutputCallRequest"](
        response_parameters=[M["ResponseParameters"](size=s) for s in sizes], **kw)


SERVER = None


def setUpModule():  # pylint: disable=invalid-name
    global SERVER  # pylint: disable=global-statement
    if not os.path.isfile(os.path.join(GRPC_PROTO, "grpc", "testing", "test.proto")):
        raise RuntimeError("%s has no grpc/testing/test.proto: install Debian's grpc-proto "
                           "(tools/install-deps.sh) or set GRPC_PROTO" % GRPC_PROTO)
    load_messages()
    SERVER = Server().start()


def tearDownModule():  # pylint: disable=invalid-name
    if SERVER is not None:
        rc = SERVER.stop()
        if rc != 0:  # an unclean stop, or a leak report under ASan
            raise AssertionError("interop server exited %r after SIGTERM, want 0; log:\n%s" %
                                 (rc, SERVER.log_text()))


class InteropTest(unittest.TestCase):
    """Calls of every kind against the shared server."""

    def setUp(self):
        self.ch = channel(SERVER.target())
        grpc.channel_ready_future(self.ch).result(timeout=10)
        self.stub = Stubs(self.ch)

    def tearDown(self):
        self.ch.close()

    def assert_code(self, ctx, code):
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())

    def test_unary(self):
        resp = self.stub.unary(M["SimpleRequest"](response_size=314159, payload=zeros(271828)),
                               timeout=30)
        self.assertEqual(resp.payload.body, bytes(314159))

    def test_empty_unary(self):
        resp, call = self.stub.empty.with_call(M["Empty"](), timeout=30)
        self.assertEqual(resp.ByteSize(), 0)
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_server_streaming(self):
        sizes = [31415, 9, 2653, 58979]
        got = [len(r.payload.body) for r in self.stub.server_streaming(out_request(*sizes),
                                                                       timeout=30)]
        self.assertEqual(got, sizes)

    def test_client_streaming(self):
        reqs = (M["StreamingInputCallRequest"](payload=zeros(n)) for n in (27182, 8, 1828, 45904))
        resp = self.stub.client_streaming(reqs, timeout=30)
        self.assertEqual(resp.aggregated_payload_size, 74922)

    def test_bidi_ping_pong(self):
        q = queue.Queue()

        def requests():
            while True:
                item = q.get()
                if item is None:
                    return
                yield item

        responses = self.stub.bidi(requests(), timeout=30)
        for size, body in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
            q.put(out_request(size, payload=zeros(body)))  # the next only after the reply
            self.assertEqual(len(next(responses).payload.body), size)
        q.put(None)
        self.assertEqual(list(responses), [])  # exactly four, then OK
        self.assertEqual(responses.code(), grpc.StatusCode.OK)

    def test_empty_stream(self):
        responses = self.stub.bidi(iter([]), timeout=30)
        self.assertEqual(list(responses), [])
        self.assertEqual(responses.code(), grpc.StatusCode.OK)

    def test_metadata_echo(self):
        md = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
              ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
        _, call = self.stub.unary.with_call(
            M["SimpleRequest"](response_size=314159, payload=zeros(271828)), metadata=md,
            timeout=30)
        self.assertIn(md[0], [(m.key, m.value) for m in call.initial_metadata()])
        self.assertIn(md[1], [(m.key, m.value) for m in call.trailing_metadata()])

        call = self.stub.bidi(iter([out_request(314159, payload=zeros(271828))]), metadata=md,
                              timeout=30)
        self.assertEqual([len(r.payload.body) for r in call], [314159])
        self.assertIn(md[0], [(m.key, m.value) for m in call.initial_metadata()])
        self.assertIn(md[1], [(m.key, m.value) for m in call.trailing_metadata()])

    def test_status_codes(self):
        special = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
        for code, message in ((2, "test status message"), (3, "bad"), (5, "not here"),
                              (9, "precondition: 100%"), (14, "try again"), (2, special)):
            status = M["EchoStatus"](code=code, message=message)
            with self.subTest(code=code, kind="unary"):
                with self.assertRaises(grpc.RpcError) as ctx:
                    self.stub.unary(M["SimpleRequest"](response_status=status), timeout=30)
                self.assert_code(ctx, CODE[code])
                self.assertEqual(ctx.exception.details(), message)
            with self.subTest(code=code, kind="bidi"):
                call = self.stub.bidi(iter([M["StreamingOutputCallRequest"](
                    response_status=status)]), timeout=30)
                with self.assertRaises(grpc.RpcError) as ctx:
                    list(call)
                self.assert_code(ctx, CODE[code])
                self.assertEqual(ctx.exception.details(), message)

    def test_unimplemented_method(self):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.unimplemented(M["Empty"](), timeout=30)
        self.assert_code(ctx, grpc.StatusCode.UNIMPLEMENTED)

    def test_deadline_exceeded(self):
        # The response would come after 2 s; the deadline is 300 ms.
        req = M["StreamingOutputCallRequest"](
            response_parameters=[M["ResponseParameters"](size=1, interval_us=2000000)])
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as ctx:
            list(self.stub.server_streaming(req, timeout=0.3))
        self.assert_code(ctx, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 1.5)

        # timeout_on_sleeping_server: a bidi call the server never answers.
        q = queue.Queue()
        call = self.stub.bidi(iter(q.get, None), timeout=0.3)
        q.put(M["StreamingOutputCallRequest"](payload=zeros(27182)))
        try:
            with self.assertRaises(grpc.RpcError) as ctx:
                list(call)
            self.assert_code(ctx, grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            q.put(None)

    def test_gzip_request_compression(self):
        expect = M["BoolValue"](value=True)
        # The probe: an uncompressed request that says it is compressed is refused...
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.unary(M["SimpleRequest"](expect_compressed=expect, response_size=10,
                                               payload=zeros(271828)), timeout=30)
        self.assert_code(ctx, grpc.StatusCode.INVALID_ARGUMENT)
        # ...the same request gzip-compressed is taken,
        resp = self.stub.unary(M["SimpleRequest"](expect_compressed=expect, response_size=314159,
                                                  payload=zeros(271828)),
                               compression=grpc.Compression.Gzip, timeout=30)
        self.assertEqual(resp.payload.body, bytes(314159))
        # ...and so is every message of a compressed client stream.
        reqs = (M["StreamingInputCallRequest"](expect_compressed=expect, payload=zeros(n))
                for n in (27182, 45904))
        resp = self.stub.client_streaming(reqs, compression=grpc.Compression.Gzip, timeout=30)
        self.assertEqual(resp.aggregated_payload_size, 73086)
        # A compressed response decodes to the right payload.
        resp = self.stub.unary(M["SimpleRequest"](response_compressed=M["BoolValue"](value=True),
                                                  response_size=314159, payload=zeros(271828)),
                               compression=grpc.Compression.Gzip, timeout=30)
        self.assertEqual(resp.payload.body, bytes(314159))

    def test_unsupported_encoding(self):
        # grpcio can deflate; we accept identity and gzip only: UNIMPLEMENTED (compression.md).
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.unary(M["SimpleRequest"](response_size=5, payload=zeros(1000)),
                            compression=grpc.Compression.Deflate, timeout=30)
        self.assert_code(ctx, grpc.StatusCode.UNIMPLEMENTED)

    def test_gzip_bomb_exhausts(self):
        # A few KiB on the wire that inflate past the 4 MiB limit.
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.unary(M["SimpleRequest"](response_size=1, payload=zeros(MAX_RECV + 1024)),
                            compression=grpc.Compression.Gzip, timeout=30)
        self.assert_code(ctx, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_large_message_exhausts(self):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.unary(M["SimpleRequest"](response_size=1, payload=zeros(MAX_RECV + 1024)),
                            timeout=30)
        self.assert_code(ctx, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # The connection still serves calls afterwards.
        resp = self.stub.unary(M["SimpleRequest"](response_size=7), timeout=30)
        self.assertEqual(resp.payload.body, bytes(7))


class HealthTest(unittest.TestCase):
    """grpcio-health-checking's client."""

    def test_check(self):
        with channel(SERVER.target()) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", SERVICE):
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING, service)
            with self.assertRaises(grpc.RpcError) as ctx:
                stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_watch_unknown_service(self):
        # An unknown service is reported as SERVICE_UNKNOWN and the call stays open.
        with channel(SERVER.target()) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"),
                               timeout=30)
            self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            time.sleep(0.2)
            self.assertTrue(watch.is_active())
            watch.cancel()

    def test_watch_sees_shutdown(self):
        server = Server().start()  # this one gets SIGTERM
        try:
            with channel(server.target()) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
                self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
                # Workers serve before the main thread has logged "started:" and installed its
                # SIGTERM handler; a SIGTERM before that kills the server outright (a runtime
                # race, reported). Wait for the line so that this tests Watch, not the race.
                server.wait_log("started:")
                server.terminate()
                self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
                # Then the stream ends (cleanly, or cut by the shutdown) well before the 30 s
                # deadline, with no further status.
                start = time.monotonic()
                rest = []
                try:
                    rest = list(watch)
                except grpc.RpcError as e:  # ours: UNAVAILABLE "server shutting down"
                    self.assertNotEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                                        "Watch did not end on shutdown")
                self.assertEqual(rest, [])
                self.assertLess(time.monotonic() - start, 20)
            rc = server.stop()
            self.assertEqual(rc, 0, "interop server exit status %r after SIGTERM%s; log:\n%s" % (
                rc, " (killed by it: no handler yet?)" if rc == -signal.SIGTERM else "",
                server.log_text()))
        finally:
            server.stop()


class ReflectionTest(unittest.TestCase):
    """grpcio-reflection's ProtoReflectionDescriptorDatabase (grpc.reflection.v1alpha)."""

    def setUp(self):
        self.ch = channel(SERVER.target())
        self.db = ProtoReflectionDescriptorDatabase(self.ch)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def tearDown(self):
        self.ch.close()

    def test_list_services(self):
        services = set(self.db.get_services())
        for s in (SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                  "grpc.reflection.v1.ServerReflection"):
            self.assertIn(s, services)

    def test_file_containing_symbol(self):
        fd = self.pool.FindFileContainingSymbol(SERVICE)
        self.assertEqual(fd.name, "grpc/testing/test.proto")
        self.assertIn("grpc/testing/messages.proto", [d.name for d in fd.dependencies])
        svc = self.pool.FindServiceByName(SERVICE)
        self.assertTrue({"EmptyCall", "UnaryCall", "StreamingOutputCall", "StreamingInputCall",
                         "FullDuplexCall"} <= set(svc.methods_by_name))
        unary = svc.methods_by_name["UnaryCall"]
        self.assertEqual(unary.input_type.full_name, "grpc.testing.SimpleRequest")
        self.assertEqual(unary.output_type.full_name, "grpc.testing.SimpleResponse")
        with self.assertRaises(KeyError):
            self.pool.FindFileContainingSymbol("no.such.Symbol")

    def test_call_with_reflected_schema(self):
        # Message classes built only from what the server described answer a real call.
        req_cls = message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName("grpc.testing.SimpleRequest"))
        resp_cls = message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName("grpc.testing.SimpleResponse"))
        call = self.ch.unary_unary("/%s/UnaryCall" % SERVICE,
                                   request_serializer=req_cls.SerializeToString,
                                   response_deserializer=resp_cls.FromString)
        resp = call(req_cls(response_size=12), timeout=10)
        self.assertEqual(resp.payload.body, bytes(12))


class CountingResult(unittest.TextTestResult):
    """Counts the tests that passed outright (every subtest included)."""

    passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


class Runner(unittest.TextTestRunner):
    resultclass = CountingResult


def main():
    # unittest's own command line: -v, -k PATTERN, test names.
    prog = unittest.main(module=__name__, argv=sys.argv, testRunner=Runner, exit=False)
    result = prog.result
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print("grpcio_test (grpcio %s): %d passed, %d failed" %
          (grpc.__version__, result.passed, failed))
    return 0 if failed == 0 and result.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
