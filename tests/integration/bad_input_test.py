#!/usr/bin/env python3
"""Bad input against our gRPC server, each case asserting the exact outcome.

Starts build/tests/interop/interop_server (grpc.testing.TestService on our
runtime, --max-recv-message 1048576) on a loopback port and talks raw HTTP/2
to it: frames are built here with struct, header blocks are (de)compressed
with the `hpack` package (installed with `h2` into the tools venv by
tools/install-tools.sh), so each case can send exactly the broken bytes it
names:

  garbage before the client preface, DATA on stream 0, bad HPACK (an index
  past both tables), a gRPC length prefix over the limit, a truncated message,
  an unparsable protobuf, a non-gRPC content-type, an unknown method and an
  unknown service, grpc-encoding: snappy, a rapid-reset burst, a CONTINUATION
  flood, a SETTINGS flood, a SETTINGS frame with too many entries, a PING
  flood.

After every case a fresh, well-behaved connection must still get an OK
EmptyCall and the server process must be alive; a background connection makes
EmptyCalls all along and must never see a failure; at the end SIGTERM must
stop the server with exit status 0 (under ASan that includes no leak report).

Env: BUILD_DIR (default <repo>/build), SOURCE_DIR. Ends with 'N passed, N failed'.
"""
import os
import sys


def _python_with_hpack():
    """Re-executes under the tools venv's python when this one lacks hpack."""
    try:
        import hpack  # noqa: F401

        return
    except ImportError:
        pass
    tools = os.environ.get("CHAT_TOOLS_DIR") or os.path.join(
        os.environ.get("CHAT_CACHE") or os.path.expanduser("~/.cache/chat-backend"), "tools"
    )
    venv_python = os.path.join(tools, "venv", "bin", "python3")
    if os.path.exists(venv_python) and os.environ.get("BAD_INPUT_REEXEC") != "1":
        os.environ["BAD_INPUT_REEXEC"] = "1"
        os.execv(venv_python, [venv_python] + sys.argv)
    sys.stderr.write(
        "bad_input_test: the Python package 'hpack' is missing; run tools/install-tools.sh "
        "(it installs h2 and hpack into %s)\n" % os.path.dirname(os.path.dirname(venv_python))
    )
    print("0 passed, 1 failed")
    sys.exit(1)


_python_with_hpack()

import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import hpack  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
SERVER_BIN = os.path.join(BUILD_DIR, "tests", "interop", "interop_server")
MAX_RECV = 1048576

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Error codes (RFC 9113 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
FRAME_SIZE_ERROR, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 6, 8, 9, 0xB

EMPTY_CALL = "/grpc.testing.TestService/EmptyCall"
UNARY_CALL = "/grpc.testing.TestService/UnaryCall"
IO_TIMEOUT = 10.0  # seconds any single expected reply may take (generous for ASan builds)


def frame(ftype, flags, stream_id, payload=b""):
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def grpc_message(body, compressed=False, length=None):
    """A gRPC length-prefixed message; |length| overrides the announced length."""
    n = len(body) if length is None else length
    return struct.pack(">BI", 1 if compressed else 0, n) + body


def request_headers(path, content_type="application/grpc", extra=()):
    hs = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("te", "trailers"),
    ]
    if content_type is not None:
        hs.append(("content-type", content_type))
    hs.extend(extra)
    return hs


class StreamResult:
    """What one stream received."""

    def __init__(self):
        self.header_blocks = []  # decoded header lists, in order
        self.header_frames_end_stream = []  # END_STREAM flag of each header block
        self.data = b""
        self.data_frames = 0
        self.ended = False  # END_STREAM seen
        self.rst = None  # RST_STREAM error code

    def first(self, name):
        for block in self.header_blocks:
            for k, v in block:
                if k == name:
                    return v
        return None

    @property
    def http_status(self):
        return self.first(":status")

    @property
    def grpc_status(self):
        # Trailers, or the one block of a Trailers-Only response.
        if not self.header_blocks:
            return None
        for k, v in self.header_blocks[-1]:
            if k == "grpc-status":
                return int(v)
        return None

    def __repr__(self):
        return "StreamResult(headers=%r, data=%r, ended=%r, rst=%r)" % (
            self.header_blocks,
            self.data[:64],
            self.ended,
            self.rst,
        )


class H2Conn:
    """A deliberately simple HTTP/2 client: it sends whatever bytes it is told to."""

    def __init__(self, port, preface=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rbuf = b""
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.streams = {}
        self.next_stream = 1
        self.goaway = None  # (last_stream_id, error_code, debug data)
        self.eof = False
        self.frames = []  # (type, flags, stream_id) of everything received
        self._cont = None  # (stream_id, flags, fragments) while a header block continues
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """Sends |data|; returns False when the server has already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def new_stream(self):
        sid = self.next_stream
        self.next_stream += 2
        self.streams[sid] = StreamResult()
        return sid

    def headers_frame(self, sid, headers, end_stream=False):
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, sid, self.enc.encode(headers))

    # --- reading ------------------------------------------------------------------------

    def _read_frame(self, deadline):
        """Returns (type, flags, sid, payload), or None at EOF. Raises socket.timeout."""
        while True:
            if len(self.rbuf) >= 9:
                hi, lo, ftype, flags, sid = struct.unpack(">BHBBI", self.rbuf[:9])
                n = hi << 16 | lo
                if len(self.rbuf) >= 9 + n:
                    payload = self.rbuf[9 : 9 + n]
                    self.rbuf = self.rbuf[9 + n :]
                    return ftype, flags, sid & 0x7FFFFFFF, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame before the deadline")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.rbuf += chunk

    def _on_header_block(self, sid, flags, block):
        st = self.streams.setdefault(sid, StreamResult())
        st.header_blocks.append(self.dec.decode(block))
        st.header_frames_end_stream.append(bool(flags & END_STREAM))
        if flags & END_STREAM:
            st.ended = True

    def _handle(self, ftype, flags, sid, payload):
        self.frames.append((ftype, flags, sid))
        if ftype == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])
        elif ftype == HEADERS:
            if flags & PADDED:
                pad = payload[0]
                payload = payload[1 : len(payload) - pad]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._on_header_block(sid, flags, payload)
            else:
                self._cont = (sid, flags, [payload])
        elif ftype == CONTINUATION and self._cont:
            self._cont[2].append(payload)
            if flags & END_HEADERS:
                csid, cflags, frags = self._cont
                self._cont = None
                self._on_header_block(csid, cflags, b"".join(frags))
        elif ftype == DATA:
            st = self.streams.setdefault(sid, StreamResult())
            if flags & PADDED:
                pad = payload[0]
                payload = payload[1 : len(payload) - pad]
            st.data += payload
            st.data_frames += 1
            if flags & END_STREAM:
                st.ended = True
            if payload:
                # Keep the windows open: credit the connection and the stream at once.
                inc = struct.pack(">I", len(payload))
                self.send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))
        elif ftype == RST_STREAM:
            self.streams.setdefault(sid, StreamResult()).rst = struct.unpack(">I", payload[:4])[0]

    def pump(self, until, timeout=IO_TIMEOUT):
        """Reads frames until until() is true or the server closes; returns until()."""
        deadline = time.monotonic() + timeout
        while not until():
            f = self._read_frame(deadline)
            if f is None:
                self.eof = True
                break
            self._handle(*f)
        return until()

    def wait_closed(self, timeout=IO_TIMEOUT):
        """Reads (and answers) frames until EOF. Raises socket.timeout if it stays open."""
        self.pump(lambda: self.eof, timeout)
        return self.eof

    def wait_stream(self, sid, timeout=IO_TIMEOUT):
        st = self.streams[sid]
        self.pump(lambda: st.ended or st.rst is not None or self.goaway is not None, timeout)
        return st

    # --- gRPC ---------------------------------------------------------------------------

    def call(self, path, body=b"", content_type="application/grpc", extra=(), raw=None):
        """One request: headers, then |raw| bytes of DATA (default: |body| as one gRPC
        message), with END_STREAM. Returns the StreamResult when the stream has ended."""
        sid = self.new_stream()
        data = grpc_message(body) if raw is None else raw
        out = self.headers_frame(sid, request_headers(path, content_type, extra))
        out += frame(DATA, END_STREAM, sid, data)
        self.send(out)
        return self.wait_stream(sid)


def empty_call_ok(conn):
    """Makes one EmptyCall on |conn| and returns the reason it is not OK, or None."""
    st = conn.call(EMPTY_CALL)
    if st.http_status != "200" or st.grpc_status != 0 or st.data != grpc_message(b""):
        return "EmptyCall got %r" % (st,)
    return None


class Server:
    """interop_server on a kernel-chosen loopback port; its log goes to a temp file."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="bad_input_server.", suffix=".log")
        self.proc = subprocess.Popen(
            [
                SERVER_BIN,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--workers",
                "2",
                "--max-recv-message",
                str(MAX_RECV),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.port = None
        deadline = time.monotonic() + 30
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("interop_server did not start:\n" + self.log_text())
            for line in self.log_text().splitlines():
                if "started: grpc=" in line:
                    self.port = int(line.split("started: grpc=")[1].split()[0].rsplit(":", 1)[1])
            time.sleep(0.05)

    def log_text(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=30):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


class Background(threading.Thread):
    """One well-behaved connection making EmptyCalls for as long as the cases run."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.errors = []
        self.stop_flag = threading.Event()

    def run(self):
        try:
            conn = H2Conn(self.port)
            while not self.stop_flag.is_set():
                why = empty_call_ok(conn)
                if why:
                    self.errors.append(why)
                    return
                self.ok += 1
                self.stop_flag.wait(0.02)
            conn.close()
        except Exception as e:  # reported by test_zz_background_connection_never_failed
            self.errors.append(repr(e))


SERVER = None
BACKGROUND = None


class BadInputTest(unittest.TestCase):
    """Each case: bad bytes on its own connection, an exact outcome, then the server still
    serves a fresh connection and the process is alive."""

    def setUp(self):
        self.conn = None

    def tearDown(self):
        if self.conn:
            self.conn.close()
        self.assertTrue(SERVER.alive(), "server died:\n" + SERVER.log_text()[-4000:])
        fresh = H2Conn(SERVER.port)
        try:
            self.assertIsNone(empty_call_ok(fresh))
        finally:
            fresh.close()

    def connect(self, preface=True):
        self.conn = H2Conn(SERVER.port, preface)
        return self.conn

    def assert_goaway_and_close(self, c, code):
        """The server sends GOAWAY with |code| and then closes the connection."""
        self.assertTrue(c.wait_closed(), "connection not closed")
        self.assertIsNotNone(c.goaway, "no GOAWAY before close; frames %r" % c.frames[-5:])
        self.assertEqual(c.goaway[1], code, "GOAWAY %r" % (c.goaway,))

    def assert_trailers_only(self, st, http_status, grpc_status):
        """One HEADERS frame with END_STREAM, no DATA: the Trailers-Only response."""
        self.assertTrue(st.ended, repr(st))
        self.assertEqual(len(st.header_blocks), 1, repr(st))
        self.assertTrue(st.header_frames_end_stream[0], repr(st))
        self.assertEqual(st.data_frames, 0, repr(st))
        self.assertEqual(st.http_status, str(http_status), repr(st))
        self.assertEqual(st.grpc_status, grpc_status, repr(st))

    # --- connection-level ------------------------------------------------------------------

    def assert_dropped_before_preface(self, c):
        """nghttp2 stops at the bad magic (NGHTTP2_ERR_BAD_CLIENT_MAGIC) and the server drops
        the connection. Only what the server sends at accept arrives (its SETTINGS and the
        connection WINDOW_UPDATE); a GOAWAY, if a later nghttp2 sends one, is PROTOCOL_ERROR."""
        self.assertTrue(c.wait_closed())
        self.assertTrue(
            all(t in (SETTINGS, WINDOW_UPDATE, GOAWAY) and sid == 0 for t, _, sid in c.frames),
            c.frames,
        )
        if c.goaway:
            self.assertEqual(c.goaway[1], PROTOCOL_ERROR)

    def test_garbage_before_preface(self):
        # An HTTP/1.1 request where the client preface belongs.
        c = self.connect(preface=False)
        c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        self.assert_dropped_before_preface(c)

    def test_binary_garbage_before_preface(self):
        c = self.connect(preface=False)
        c.send(bytes((i * 37 + 11) & 0xFF for i in range(4096)))
        self.assert_dropped_before_preface(c)

    def test_data_on_stream_zero(self):
        c = self.connect()
        c.send(frame(DATA, 0, 0, b"hello"))
        self.assert_goaway_and_close(c, PROTOCOL_ERROR)

    def test_frame_over_max_frame_size(self):
        # 16389 bytes of DATA where SETTINGS_MAX_FRAME_SIZE is the default 16384.
        c = self.connect()
        sid = c.new_stream()
        data = grpc_message(b"\x00" * 16384)
        c.send(c.headers_frame(sid, request_headers(UNARY_CALL)) + frame(DATA, 0, sid, data))
        self.assert_goaway_and_close(c, FRAME_SIZE_ERROR)

    def test_headers_with_bad_hpack_index(self):
        # 0xFF 0x7F: an indexed field with index 127+127, past the static table (61) and the
        # empty dynamic table.
        c = self.connect()
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\x7f"))
        self.assert_goaway_and_close(c, COMPRESSION_ERROR)

    def test_headers_with_index_zero(self):
        # Index 0 is not used (RFC 7541 6.1): a decoding error.
        c = self.connect()
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x80"))
        self.assert_goaway_and_close(c, COMPRESSION_ERROR)

    def test_rapid_reset_burst(self):
        # HEADERS then RST_STREAM(CANCEL), 2500 times, in one write: far beyond the stream
        # reset burst (1000, refilled at 33/s). nghttp2 answers with GOAWAY and, the last
        # stream gone, the connection closes.
        c = self.connect()
        burst = []
        block = c.enc.encode(request_headers(EMPTY_CALL))
        for i in range(2500):
            sid = 1 + 2 * i
            # The same header block every time: after the first, every field is indexed.
            burst.append(frame(HEADERS, END_HEADERS, sid, block))
            burst.append(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
            block = c.enc.encode(request_headers(EMPTY_CALL))
        c.send(b"".join(burst))
        self.assert_goaway_and_close(c, INTERNAL_ERROR)
        # The GOAWAY names the last stream processed: about the burst (1000), far from 2500.
        self.assertLess(c.goaway[0], 1 + 2 * 1100, "GOAWAY %r" % (c.goaway,))

    def test_continuation_flood(self):
        # A header block that never ends: HEADERS without END_HEADERS then 1000
        # CONTINUATIONs. nghttp2 allows 8 (max_continuations) and fails the connection.
        c = self.connect()
        sid = c.new_stream()
        out = [frame(HEADERS, 0, sid, c.enc.encode(request_headers(EMPTY_CALL)))]
        pad = b"\x00\x05x-pad\x04aaaa"  # literal field without indexing, new name
        out += [frame(CONTINUATION, 0, sid, pad) for _ in range(1000)]
        c.send(b"".join(out))
        # nghttp2 1.52 fails with NGHTTP2_ERR_TOO_MANY_CONTINUATIONS and sends no GOAWAY.
        self.assertTrue(c.wait_closed())
        self.assertIsNone(c.streams[sid].http_status, "the flooded stream got a response")
        if c.goaway:
            self.assertNotEqual(c.goaway[1], NO_ERROR)

    def test_settings_flood(self):
        # 20000 SETTINGS frames: each asks for an ACK. Past max_outbound_ack (1000) queued
        # ACKs nghttp2 reports a flood and the server drops the connection.
        c = self.connect()
        # (nghttp2 1.52: NGHTTP2_ERR_FLOODED after about 1000 ACKs, no GOAWAY.)
        c.send(frame(SETTINGS, 0, 0) * 20000)
        self.assertTrue(c.wait_closed())
        acks = sum(1 for t, f, _ in c.frames if t == SETTINGS and f & ACK)
        self.assertLess(acks, 20000, "every SETTINGS was acknowledged: no flood limit")

    def test_settings_too_many_entries(self):
        # One SETTINGS frame with 33 entries, over max_settings (32): GOAWAY
        # ENHANCE_YOUR_CALM.
        c = self.connect()
        entries = b"".join(struct.pack(">HI", 0x4, 65535) for _ in range(33))
        c.send(frame(SETTINGS, 0, 0, entries))
        self.assert_goaway_and_close(c, ENHANCE_YOUR_CALM)

    def test_ping_flood(self):
        # The same limit for PING ACKs.
        c = self.connect()
        c.send(frame(PING, 0, 0, b"12345678") * 20000)
        self.assertTrue(c.wait_closed())
        acks = sum(1 for t, f, _ in c.frames if t == PING and f & ACK)
        self.assertLess(acks, 20000, "every PING was acknowledged: no flood limit")

    # --- gRPC-level --------------------------------------------------------------------------

    def test_message_length_over_limit(self):
        # Announce 2 MiB with a 1 MiB limit and send only the first 16000 bytes: the limit is
        # checked on the prefix, RESOURCE_EXHAUSTED comes at once as Trailers-Only.
        c = self.connect()
        sid = c.new_stream()
        data = grpc_message(b"\x00" * 16000, length=2 * 1048576)
        c.send(c.headers_frame(sid, request_headers(UNARY_CALL)) + frame(DATA, 0, sid, data))
        st = c.wait_stream(sid)
        self.assert_trailers_only(st, 200, 8)
        self.assertIsNone(c.goaway)

    def test_message_length_just_over_limit(self):
        c = self.connect()
        st = c.call(UNARY_CALL, raw=grpc_message(b"", length=MAX_RECV + 1))
        self.assert_trailers_only(st, 200, 8)

    def test_truncated_message(self):
        # The prefix says 100 bytes, 10 arrive, then END_STREAM: INTERNAL.
        c = self.connect()
        st = c.call(UNARY_CALL, raw=grpc_message(b"\x00" * 10, length=100))
        self.assert_trailers_only(st, 200, 13)

    def test_truncated_prefix(self):
        # Only 3 of the 5 prefix bytes, then END_STREAM: INTERNAL.
        c = self.connect()
        st = c.call(UNARY_CALL, raw=b"\x00\x00\x00")
        self.assert_trailers_only(st, 200, 13)

    def test_unparsable_protobuf(self):
        # Field 3 (payload, length-delimited) claims 16 bytes and 3 follow: INTERNAL.
        c = self.connect()
        st = c.call(UNARY_CALL, b"\x1a\x10abc")
        self.assert_trailers_only(st, 200, 13)

    def test_bad_compressed_flag(self):
        # A flag byte of 2 is neither identity nor compressed: INTERNAL.
        c = self.connect()
        st = c.call(UNARY_CALL, raw=b"\x02\x00\x00\x00\x00")
        self.assert_trailers_only(st, 200, 13)

    def test_compressed_without_encoding(self):
        # Flag 1 without a grpc-encoding header: INTERNAL (gRPC's PROTOCOL-HTTP2 spec).
        c = self.connect()
        st = c.call(UNARY_CALL, raw=grpc_message(b"", compressed=True))
        self.assert_trailers_only(st, 200, 13)

    def test_bad_gzip(self):
        c = self.connect()
        st = c.call(
            UNARY_CALL,
            raw=grpc_message(b"not gzip at all", compressed=True),
            extra=[("grpc-encoding", "gzip")],
        )
        self.assert_trailers_only(st, 200, 13)

    def test_non_grpc_content_type(self):
        c = self.connect()
        st = c.call(EMPTY_CALL, content_type="text/plain")
        self.assertTrue(st.ended, repr(st))
        self.assertEqual(st.http_status, "415", repr(st))
        self.assertEqual(st.data_frames, 0, repr(st))

    def test_missing_content_type(self):
        c = self.connect()
        st = c.call(EMPTY_CALL, content_type=None)
        self.assertTrue(st.ended, repr(st))
        self.assertEqual(st.http_status, "415", repr(st))

    def test_unknown_method(self):
        c = self.connect()
        st = c.call("/grpc.testing.TestService/NoSuchMethod")
        self.assert_trailers_only(st, 200, 12)

    def test_unknown_service(self):
        c = self.connect()
        st = c.call("/no.such.Service/EmptyCall")
        self.assert_trailers_only(st, 200, 12)

    def test_unsupported_encoding(self):
        c = self.connect()
        st = c.call(EMPTY_CALL, extra=[("grpc-encoding", "snappy")])
        self.assert_trailers_only(st, 200, 12)

    def test_bad_connection_survives_for_good_streams(self):
        # A stream-level error does not hurt the connection it happened on.
        c = self.connect()
        st = c.call(UNARY_CALL, raw=grpc_message(b"\x00" * 10, length=100))
        self.assertEqual(st.grpc_status, 13)
        self.assertIsNone(empty_call_ok(c))


class ZzEndTest(unittest.TestCase):
    """Runs after every case (added last to the suite)."""

    def test_background_connection_never_failed(self):
        BACKGROUND.stop_flag.set()
        BACKGROUND.join(IO_TIMEOUT)
        self.assertEqual(BACKGROUND.errors, [])
        self.assertGreater(BACKGROUND.ok, 0)

    def test_sigterm_exits_cleanly(self):
        self.assertTrue(SERVER.alive())
        rc = SERVER.stop()
        self.assertEqual(rc, 0, "exit status %r; log:\n%s" % (rc, SERVER.log_text()[-4000:]))


def main():
    global SERVER, BACKGROUND
    if not os.access(SERVER_BIN, os.X_OK):
        sys.stderr.write("bad_input_test: %s is not built\n" % SERVER_BIN)
        print("0 passed, 1 failed")
        return 1
    SERVER = Server()
    BACKGROUND = Background(SERVER.port)
    BACKGROUND.start()
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    suite.addTests(loader.loadTestsFromTestCase(BadInputTest))
    # Background first (it must stop before the server does), then the shutdown.
    suite.addTest(ZzEndTest("test_background_connection_never_failed"))
    suite.addTest(ZzEndTest("test_sigterm_exits_cleanly"))
    try:
        result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    finally:
        SERVER.stop(5)
    failed = len(result.failures) + len(result.errors)
    if failed:
        print("---- server log (tail) ----")
        print(SERVER.log_text()[-6000:])
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
