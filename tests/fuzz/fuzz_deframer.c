/*
 * fuzz_deframer: the first code that sees a request body. gRPC length-prefixed message
 * reassembly (rpc_deframer_feed), message decoding (rpc_decode_message: gunzip + protobuf-c with
 * grpc.testing descriptors) and framing (rpc_frame_bytes) round trips.
 *
 * Input: byte 0 picks max_len and the descriptor, byte 1 seeds the chunking, the rest is the
 * body of a request stream (what DATA frames carry).
 *
 * Oracles beyond the sanitizers: fed whole and fed in random chunks the deframer reports the
 * same messages (count, flags, bytes) and the same result; no message is longer than max_len;
 * framing the input and deframing it (plain and gzip) gives the input back.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/testing/empty.pb-c.h"
#include "grpc/testing/messages.pb-c.h"
#include "rpc.h"
#include "rpc_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    size_t max_len;                       /* the deframer's limit */
    const ProtobufCMessageDescriptor *pd; /* decode messages with this; NULL = don't */
    size_t n;                             /* messages delivered */
    uint64_t hash;                        /* FNV-1a over flags, lengths and bytes */
} seen;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int on_message(bool compressed, const uint8_t *msg, size_t len, void *user_data)
{
    seen *s = user_data;
    if (len > s->max_len)
        abort(); /* the limit is the deframer's whole point */
    uint8_t meta[9] = {compressed};
    for (int i = 0; i < 8; i++)
        meta[1 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    s->hash = fnv(fnv(s->hash, meta, sizeof(meta)), msg, len);
    s->n++;
    if (s->pd && s->n <= 8) {
        ProtobufCMessage *m = NULL;
        int rv = rpc_decode_message(s->pd, compressed, msg, len, s->max_len, &m);
        if (rv == 0) {
            /* What decoded must re-encode within sane bounds. */
            size_t packed = protobuf_c_message_get_packed_size(m);
            uint8_t *buf = malloc(packed ? packed : 1);
            if (protobuf_c_message_pack(m, buf) != packed)
                abort();
            free(buf);
            protobuf_c_message_free_unpacked(m, NULL);
        } else if (rv != RPC_ERR_PROTO && rv != RPC_ERR_TOO_LARGE) {
            abort();
        }
    }
    return 0;
}

static uint32_t next_rand(uint32_t *x)
{
    /* xorshift32: the chunking only has to be reproducible from the input. */
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static int collect_bytes(bool compressed, const uint8_t *msg, size_t len, void *user_data)
{
    (void)compressed;
    uint8_t **out = user_data;
    *out = malloc(len ? len : 1);
    memcpy(*out, msg, len);
    return 0;
}

/* rpc_frame_bytes then the deframer (and gunzip) must give |body| back. */
static void roundtrip(const uint8_t *body, size_t len, bool gzip)
{
    uint8_t *framed;
    size_t flen;
    if (rpc_frame_bytes(body, len, gzip, 1 << 20, &framed, &flen) != 0)
        abort();
    rpc_deframer d;
    rpc_deframer_init(&d, 1 << 20);
    uint8_t *got = NULL;
    if (rpc_deframer_feed(&d, framed, flen, collect_bytes, &got) != 0 || got == NULL ||
        rpc_deframer_partial(&d))
        abort();
    size_t glen = flen - RPC_FRAME_HEADER;
    if (gzip) {
        uint8_t *plain;
        size_t plen;
        if (rpc_gzip_decompress(got, glen, 1 << 20, &plain, &plen) != 0)
            abort();
        free(got);
        got = plain;
        glen = plen;
    }
    if (glen != len || memcmp(got, body, len) != 0)
        abort();
    free(got);
    rpc_deframer_free(&d);
    free(framed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const size_t limits[] = {0, 1, 5, 64, 1024, 65536, 4u << 20, 16};
    static const ProtobufCMessageDescriptor *const descs[] = {
        &grpc__testing__simple_request__descriptor,
        &grpc__testing__streaming_output_call_request__descriptor,
        &grpc__testing__streaming_input_call_request__descriptor,
        &grpc__testing__empty__descriptor,
    };
    size_t max_len = limits[data[0] & 7];
    const ProtobufCMessageDescriptor *pd = descs[(data[0] >> 3) & 3];
    uint32_t rnd = 0x9e3779b9u ^ ((uint32_t)data[1] << 8 | data[0]);
    data += 2;
    size_t len = size - 2;

    /* Whole, with decoding. */
    seen whole = {.max_len = max_len, .pd = pd};
    rpc_deframer d;
    rpc_deframer_init(&d, max_len);
    int rv_whole = rpc_deframer_feed(&d, data, len, on_message, &whole);
    bool partial_whole = rv_whole == 0 && rpc_deframer_partial(&d);
    rpc_deframer_free(&d);

    /* Random chunks (0-length ones too), stopping at the first error as the contract says. */
    seen chunked = {.max_len = max_len};
    rpc_deframer_init(&d, max_len);
    int rv_chunked = 0;
    size_t off = 0;
    while (off <= len) {
        size_t n = next_rand(&rnd) % (1u << (next_rand(&rnd) % 10));
        if (n > len - off)
            n = len - off;
        rv_chunked = rpc_deframer_feed(&d, data + off, n, on_message, &chunked);
        off += n;
        if (rv_chunked != 0 || off == len)
            break;
    }
    bool partial_chunked = rv_chunked == 0 && rpc_deframer_partial(&d);
    rpc_deframer_free(&d);

    if (rv_whole != rv_chunked || whole.n != chunked.n || whole.hash != chunked.hash ||
        partial_whole != partial_chunked)
        abort();

    if (len <= 4096) {
        roundtrip(data, len, false);
        roundtrip(data, len, true);
    }
    return 0;
}
