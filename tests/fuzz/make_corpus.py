#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/ (standard library only, deterministic).

    python3 tests/fuzz/make_corpus.py          # rewrites tests/fuzz/corpus/<target>/seed-*

Seeds are small valid conversations the fuzzer mutates from: HTTP/2 frames and HPACK
(literal fields without indexing, no Huffman) and protobuf are encoded by hand here. Files
other than seed-* (e.g. regress-* reproducers of fixed bugs) are left alone.
"""
import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


# --- HTTP/2 + HPACK ------------------------------------------------------------------------

def frame(ftype, flags, sid, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def hpack_int(v, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if v < limit:
        return bytes([first | v])
    out = [first | limit]
    v -= limit
    while v >= 128:
        out.append(v % 128 + 128)
        v //= 128
    out.append(v)
    return bytes(out)


def hpack_str(s):
    b = s.encode() if isinstance(s, str) else s
    return hpack_int(len(b), 7) + b


def header_block(fields):
    """Literal header fields without indexing, new names (RFC 7541 6.2.2)."""
    return b"".join(b"\x00" + hpack_str(k) + hpack_str(v) for k, v in fields)


def request(path, extra=(), content_type="application/grpc"):
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "localhost"), ("content-type", content_type),
            ("te", "trailers")] + list(extra)


def grpc_msg(body, compressed=False):
    if compressed:
        body = gzip.compress(body, mtime=0)
    return struct.pack(">BI", 1 if compressed else 0, len(body)) + body


def conversation(*streams, pre=b"", post=b""):
    """Preface, SETTINGS, then for each (sid, headers, [messages], end) a HEADERS and DATA."""
    out = PREFACE + frame(SETTINGS, 0, 0) + pre
    for sid, headers, msgs, end in streams:
        out += frame(HEADERS, END_HEADERS | (END_STREAM if end and not msgs else 0), sid,
                     header_block(headers))
        for i, m in enumerate(msgs):
            last = end and i == len(msgs) - 1
            out += frame(DATA, END_STREAM if last else 0, sid, m)
    return out + post


# --- protobuf ------------------------------------------------------------------------------

def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_varint(n, v):
    return varint(n << 3) + varint(v)


def field_bytes(n, b):
    b = b.encode() if isinstance(b, str) else b
    return varint(n << 3 | 2) + varint(len(b)) + b


def payload(body):
    return field_bytes(2, body)  # Payload.body


def simple_request(size=10, body=b"abc", compressed=False, status=None):
    m = field_varint(2, size) + field_bytes(3, payload(body))
    if compressed:
        m += field_bytes(6, field_varint(1, 1))  # response_compressed
    if status:
        m += field_bytes(7, field_varint(1, status[0]) + field_bytes(2, status[1]))
    return m


def streaming_output_request(sizes, status=None):
    m = b"".join(field_bytes(2, field_varint(1, s)) for s in sizes)
    if status:
        m += field_bytes(7, field_varint(1, status[0]) + field_bytes(2, status[1]))
    return m


SVC = "/grpc.testing.TestService/"


def session_seeds():
    s = {}
    s["empty_call"] = conversation((1, request(SVC + "EmptyCall"), [grpc_msg(b"")], True))
    s["unary_call"] = conversation((1, request(SVC + "UnaryCall"), [grpc_msg(simple_request())],
                                    True))
    s["unary_gzip"] = conversation((1, request(SVC + "UnaryCall", [
        ("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity,gzip")]),
        [grpc_msg(simple_request(compressed=True), compressed=True)], True))
    s["unary_status_metadata"] = conversation((1, request(SVC + "UnaryCall", [
        ("grpc-timeout", "1S"), ("x-grpc-test-echo-initial", "hi"),
        ("x-grpc-test-echo-trailing-bin", "AAECAw"), ("user-agent", "seed")]),
        [grpc_msg(simple_request(status=(2, "test status \xe2")))], True))
    s["cacheable_deferred"] = conversation((1, request(SVC + "CacheableUnaryCall"),
                                            [grpc_msg(simple_request())], True))
    s["server_streaming"] = conversation((1, request(SVC + "StreamingOutputCall"),
                                          [grpc_msg(streaming_output_request([5, 0, 100]))], True))
    s["client_streaming"] = conversation((1, request(SVC + "StreamingInputCall"), [
        grpc_msg(field_bytes(1, payload(b"x" * 20))), grpc_msg(field_bytes(1, payload(b"y")))],
        True))
    s["bidi_two_streams"] = conversation(
        (1, request(SVC + "FullDuplexCall"), [grpc_msg(streaming_output_request([3])),
                                              grpc_msg(streaming_output_request([1, 2]))], True),
        (3, request(SVC + "HalfDuplexCall"), [grpc_msg(streaming_output_request([4]))], True))
    s["bidi_cancelled"] = conversation(
        (1, request(SVC + "FullDuplexCall"), [grpc_msg(streaming_output_request([3]))], False),
        post=frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
    s["health_check"] = conversation((1, request("/grpc.health.v1.Health/Check"),
                                      [grpc_msg(field_bytes(1, ""))], True))
    s["health_watch"] = conversation((1, request("/grpc.health.v1.Health/Watch"),
                                      [grpc_msg(field_bytes(1, "grpc.testing.TestService"))],
                                      True))
    s["reflection_v1"] = conversation((1, request(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), [
        grpc_msg(field_bytes(7, "*")),
        grpc_msg(field_bytes(4, "grpc.testing.TestService")),
        grpc_msg(field_bytes(3, "grpc/testing/test.proto"))], True))
    s["reflection_v1alpha"] = conversation((1, request(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
        [grpc_msg(field_bytes(7, "*"))], True))
    s["unknown_method"] = conversation((1, request(SVC + "Nope"), [grpc_msg(b"")], True))
    s["bad_content_type"] = conversation((1, request(SVC + "EmptyCall",
                                                     content_type="text/plain"), [], True))
    s["bad_encoding"] = conversation((1, request(SVC + "EmptyCall", [
        ("grpc-encoding", "snappy")]), [grpc_msg(b"")], True))
    s["over_limit"] = conversation((1, request(SVC + "UnaryCall"),
                                    [struct.pack(">BI", 0, 1 << 20) + b"\0" * 16], True))
    s["control_frames"] = conversation(
        (1, request(SVC + "EmptyCall"), [grpc_msg(b"")], True),
        pre=frame(PING, 0, 0, b"12345678") + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000))
        + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 20) + struct.pack(">HI", 3, 10)),
        post=frame(SETTINGS, ACK, 0) + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    cont = header_block(request(SVC + "EmptyCall"))
    s["continuation"] = (PREFACE + frame(SETTINGS, 0, 0)
                         + frame(HEADERS, 0, 1, cont[:20]) + frame(CONTINUATION, 0, 1, cont[20:40])
                         + frame(CONTINUATION, END_HEADERS, 1, cont[40:])
                         + frame(DATA, END_STREAM, 1, grpc_msg(b"")))
    # Byte 0 is the harness' control byte: 0x00 one write with the preface in the data;
    # 0x80 | n: preface added by the harness, n-byte writes.
    out = {}
    for name, conv in s.items():
        out[name] = b"\x00" + conv
    out["empty_call_3byte_writes"] = b"\x83" + s["empty_call"][len(PREFACE):]
    out["unary_gzip_1byte_writes"] = b"\x81" + s["unary_gzip"][len(PREFACE):]
    out["bidi_64byte_writes"] = b"\xc0" + s["bidi_two_streams"][len(PREFACE):]
    return out


def deframer_seeds():
    # Byte 0: bits 0-2 limit index (4 = 1024 bytes), bits 3-4 descriptor (0 SimpleRequest,
    # 1 StreamingOutputCallRequest); byte 1: chunking seed.
    sr = simple_request()
    return {
        "two_messages": b"\x04\x01" + grpc_msg(sr) + grpc_msg(b""),
        "gzip": b"\x04\x02" + grpc_msg(sr, compressed=True),
        "streaming_output": b"\x0c\x03" + grpc_msg(streaming_output_request([1, 2, 3])),
        "over_limit": b"\x03\x04" + struct.pack(">BI", 0, 65) + b"\0" * 65,
        "partial": b"\x04\x05" + grpc_msg(sr)[:-3],
        "bad_flag": b"\x04\x06" + b"\x02\x00\x00\x00\x00",
        "gzip_bomb_small_limit": b"\x03\x07" + grpc_msg(b"\0" * 5000, compressed=True),
    }


def wire_seeds():
    return {
        "percent": b"hello%20world%E2%98%BA%zz%4",
        "timeout_m": b"100m",
        "timeout_H": b"99999999H",
        "timeout_n": b"1n",
        "base64_padded": b"YWJjZA==",
        "base64_url": b"-_8",
        "int_ms": struct.pack("<q", 99999999001),
    }


def main():
    for target, seeds in (("fuzz_server_session", session_seeds()),
                          ("fuzz_deframer", deframer_seeds()),
                          ("fuzz_percent_timeout_base64", wire_seeds())):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))
        for name, data in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)
        print("%s: %d seeds" % (target, len(seeds)))


if __name__ == "__main__":
    main()
