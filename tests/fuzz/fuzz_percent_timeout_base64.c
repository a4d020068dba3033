/*
 * fuzz_percent_timeout_base64: the header value parsers of lib/rpc_wire.c. grpc-message
 * (rpc_percent_decode/encode), grpc-timeout (rpc_timeout_parse/format) and "-bin" metadata
 * (rpc_base64_decode/encode).
 *
 * Input: a header value; its first 8 bytes also serve as a millisecond count for
 * rpc_timeout_format.
 *
 * Oracles beyond the sanitizers: decode(encode(x)) == x for percent-encoding and base64;
 * percent-encoded text is printable ASCII without a bare '%'; a parsed timeout lies in
 * [0, 100 years]; a formatted timeout parses again, to no less than what was formatted (up
 * to that cap).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "rpc_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int64_t TIMEOUT_CAP = INT64_C(100) * 365 * 24 * 3600 * 1000;

static void check_percent(const uint8_t *data, size_t size)
{
    char *dec = rpc_percent_decode((const char *)data, size);
    if (strlen(dec) > size)
        abort();
    /* Encoding what was decoded (as a C string) and decoding again is the identity. */
    char *enc = rpc_percent_encode(dec);
    for (const char *p = enc; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            abort();
    char *dec2 = rpc_percent_decode(enc, strlen(enc));
    if (strcmp(dec, dec2) != 0)
        abort();
    free(dec2);
    free(enc);
    free(dec);
}

static void check_timeout(const uint8_t *data, size_t size)
{
    int64_t ms = -1;
    if (rpc_timeout_parse((const char *)data, size, &ms) == 0 && (ms < 0 || ms > TIMEOUT_CAP))
        abort();
    if (size < 8)
        return;
    int64_t v;
    memcpy(&v, data, sizeof(v));
    if (v <= 0)
        return;
    char buf[16];
    rpc_timeout_format(v, buf, sizeof(buf));
    int64_t back;
    if (rpc_timeout_parse(buf, strlen(buf), &back) != 0)
        abort(); /* we must never send a grpc-timeout a peer has to reject */
    if (back < (v < TIMEOUT_CAP ? v : TIMEOUT_CAP))
        abort(); /* rounding goes up, never shortening a deadline */
}

static void check_base64(const uint8_t *data, size_t size)
{
    uint8_t *out;
    size_t out_len;
    if (rpc_base64_decode((const char *)data, size, &out, &out_len) == 0) {
        if (out_len > size)
            abort();
        char *enc = rpc_base64_encode(out, out_len);
        uint8_t *again;
        size_t again_len;
        if (rpc_base64_decode(enc, strlen(enc), &again, &again_len) != 0 || again_len != out_len ||
            memcmp(again, out, out_len) != 0)
            abort();
        free(again);
        free(enc);
        free(out);
    }
    char *enc = rpc_base64_encode(data, size);
    if (rpc_base64_decode(enc, strlen(enc), &out, &out_len) != 0 || out_len != size ||
        memcmp(out, data, size) != 0)
        abort();
    free(out);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_percent(data, size);
    check_timeout(data, size);
    check_base64(data, size);
    return 0;
}
