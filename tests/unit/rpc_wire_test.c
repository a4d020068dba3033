/* Unit tests of lib/rpc_wire.c: deframer, framing, gzip, timeouts, encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"
#include "rpc_wire.h"

typedef struct collected {
    int n;
    size_t lens[16];
    bool comp[16];
    uint8_t first[16];
} collected;

static int collect(bool compressed, const uint8_t *data, size_t len, void *ud)
{
    collected *c = ud;
    c->lens[c->n] = len;
    c->comp[c->n] = compressed;
    c->first[c->n] = len ? data[0] : 0;
    c->n++;
    return 0;
}

static void test_deframer_byte_by_byte(void **state)
{
    (void)state;
    uint8_t *f1, *f2;
    size_t l1, l2;
    uint8_t body[300];
    memset(body, 7, sizeof(body));
    assert_int_equal(rpc_frame_bytes(body, sizeof(body), false, 1000, &f1, &l1), 0);
    assert_int_equal(rpc_frame_bytes(body, 0, false, 1000, &f2, &l2), 0);
    rpc_deframer d;
    rpc_deframer_init(&d, 1000);
    collected c = {0};
    for (size_t i = 0; i < l1; i++) {
        assert_int_equal(rpc_deframer_feed(&d, f1 + i, 1, collect, &c), 0);
        if (i + 1 < l1)
            assert_true(rpc_deframer_partial(&d));
    }
    assert_int_equal(rpc_deframer_feed(&d, f2, l2, collect, &c), 0);
    assert_false(rpc_deframer_partial(&d));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.lens[0], 300);
    assert_int_equal(c.first[0], 7);
    assert_int_equal(c.lens[1], 0);
    rpc_deframer_free(&d);
    free(f1);
    free(f2);
}

static void test_deframer_limit_before_alloc(void **state)
{
    (void)state;
    /* Announces 4 GiB - 1: must be refused from the header alone. */
    const uint8_t hdr[5] = {0, 0xff, 0xff, 0xff, 0xff};
    rpc_deframer d;
    rpc_deframer_init(&d, 4 << 20);
    collected c = {0};
    assert_int_equal(rpc_deframer_feed(&d, hdr, 5, collect, &c), RPC_ERR_TOO_LARGE);
    assert_int_equal(c.n, 0);
    rpc_deframer_free(&d);
    const uint8_t bad[5] = {2, 0, 0, 0, 0};
    rpc_deframer_init(&d, 100);
    assert_int_equal(rpc_deframer_feed(&d, bad, 5, collect, &c), RPC_ERR_PROTO);
    rpc_deframer_free(&d);
}

static void test_deframer_grows_with_data(void **state)
{
    (void)state;
    /* 4 MiB announced, 10 bytes sent: memory follows the bytes, not the announcement. */
    const uint8_t hdr[5] = {0, 0x00, 0x40, 0x00, 0x00};
    uint8_t body[10] = {0};
    rpc_deframer d;
    rpc_deframer_init(&d, 4 << 20);
    collected c = {0};
    assert_int_equal(rpc_deframer_feed(&d, hdr, 5, collect, &c), 0);
    assert_int_equal(rpc_deframer_feed(&d, body, sizeof(body), collect, &c), 0);
    assert_true(d.cap <= 16384);
    assert_true(rpc_deframer_partial(&d));
    /* The rest arrives in 64 KiB pieces and the message is complete and intact. */
    uint8_t *chunk = calloc(1, 65536);
    size_t left = (4u << 20) - sizeof(body);
    while (left > 0) {
        size_t n = left < 65536 ? left : 65536;
        assert_int_equal(rpc_deframer_feed(&d, chunk, n, collect, &c), 0);
        left -= n;
    }
    assert_int_equal(c.n, 1);
    assert_int_equal(c.lens[0], 4u << 20);
    assert_false(rpc_deframer_partial(&d));
    free(chunk);
    rpc_deframer_free(&d);
}

static void test_gzip_roundtrip_and_bomb(void **state)
{
    (void)state;
    size_t n = 100000;
    uint8_t *in = calloc(1, n);
    uint8_t *z, *out;
    size_t zl, ol;
    assert_int_equal(rpc_gzip_compress(in, n, &z, &zl), 0);
    assert_true(zl < n / 10);
    assert_int_equal(rpc_gzip_decompress(z, zl, n, &out, &ol), 0);
    assert_int_equal(ol, n);
    assert_memory_equal(in, out, n);
    free(out);
    /* A small input that inflates past the limit is refused, not allocated in full. */
    assert_int_equal(rpc_gzip_decompress(z, zl, n - 1, &out, &ol), RPC_ERR_TOO_LARGE);
    /* Truncated gzip is a protocol error. */
    assert_int_equal(rpc_gzip_decompress(z, zl / 2, n, &out, &ol), RPC_ERR_PROTO);
    free(z);
    free(in);
}

/* rpc_frame_message_at: the same frame as rpc_frame_message, after |headroom| bytes the caller
 * owns (rpc_conn.c puts its queue chunk's header there), plain and gzip, and the size limit. */
static void test_frame_message_at_headroom(void **state)
{
    (void)state;
    char service[3000];
    memset(service, 'a', sizeof(service) - 1);
    service[sizeof(service) - 1] = '\0';
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = service;
    const ProtobufCMessage *m = &req.base;
    for (int gz = 0; gz <= 1; gz++) {
        uint8_t *plain, *at;
        size_t plen, alen;
        assert_int_equal(rpc_frame_message(m, gz, 1 << 20, &plain, &plen), 0);
        assert_int_equal(rpc_frame_message_at(m, gz, 1 << 20, 24, &at, &alen), 0);
        assert_int_equal(alen, plen);
        assert_memory_equal(at + 24, plain, plen);
        assert_int_equal(plain[0], gz);
        size_t body =
            (size_t)plain[1] << 24 | (size_t)plain[2] << 16 | (size_t)plain[3] << 8 | plain[4];
        assert_int_equal(body + RPC_FRAME_HEADER, plen);
        if (gz)
            assert_true(plen < 200); /* 3,000 repeated bytes compress */
        else
            assert_int_equal(body, protobuf_c_message_get_packed_size(m));
        memset(at, 0x5a, 24); /* the headroom is the caller's to write */
        free(plain);
        free(at);
        uint8_t *none = NULL;
        assert_int_equal(rpc_frame_message_at(m, gz, 100, 24, &none, &alen), RPC_ERR_TOO_LARGE);
        assert_null(none);
    }
}

static void test_timeout(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(rpc_timeout_parse("100m", 4, &ms), 0);
    assert_int_equal(ms, 100);
    assert_int_equal(rpc_timeout_parse("5S", 2, &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(rpc_timeout_parse("1500u", 5, &ms), 0);
    assert_int_equal(ms, 2);
    assert_int_equal(rpc_timeout_parse("1n", 2, &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(rpc_timeout_parse("2H", 2, &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(rpc_timeout_parse("123456789m", 10, &ms), RPC_ERR_INVALID);
    assert_int_equal(rpc_timeout_parse("10x", 3, &ms), RPC_ERR_INVALID);
    assert_int_equal(rpc_timeout_parse("m", 1, &ms), RPC_ERR_INVALID);
    assert_int_equal(rpc_timeout_parse("-1m", 3, &ms), RPC_ERR_INVALID);
    char buf[16];
    rpc_timeout_format(250, buf, sizeof(buf));
    assert_string_equal(buf, "250m");
    assert_int_equal(rpc_timeout_parse(buf, strlen(buf), &ms), 0);
    assert_int_equal(ms, 250);
}

/* Found by tests/fuzz/fuzz_percent_timeout_base64: large timeouts were formatted with more
 * than the 8 digits grpc-timeout allows, which a peer must reject. */
static void test_timeout_format_at_most_8_digits(void **state)
{
    (void)state;
    const int64_t cap = INT64_C(100) * 365 * 24 * 3600 * 1000;
    const int64_t cases[] = {1,           99999999,        100000000,     99999999001,
                             99999999999, 99999999999 + 1, 5999999940000, 6000000000001,
                             cap,         INT64_MAX};
    char buf[16];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -1;
        rpc_timeout_format(cases[i], buf, sizeof(buf));
        assert_true(strlen(buf) <= 9);
        assert_int_equal(rpc_timeout_parse(buf, strlen(buf), &ms), 0);
        assert_true(ms >= (cases[i] < cap ? cases[i] : cap));
    }
    rpc_timeout_format(99999999001, buf, sizeof(buf));
    assert_string_equal(buf, "1666667M"); /* was "100000000S" */
}

static void test_percent(void **state)
{
    (void)state;
    const char *msg = "\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP "
                      "\xf0\x9f\x98\x88\t\n 100%";
    char *enc = rpc_percent_encode(msg);
    assert_null(strchr(enc, '\n'));
    assert_non_null(strstr(enc, "%E2%98%BA"));
    assert_non_null(strstr(enc, "100%25"));
    char *dec = rpc_percent_decode(enc, strlen(enc));
    assert_string_equal(dec, msg);
    free(enc);
    free(dec);
    /* Invalid escapes pass through literally. */
    dec = rpc_percent_decode("a%zzb%4", 7);
    assert_string_equal(dec, "a%zzb%4");
    free(dec);
}

static void test_base64(void **state)
{
    (void)state;
    const uint8_t bin[] = {0xab, 0xab, 0xab};
    char *e = rpc_base64_encode(bin, 3);
    assert_string_equal(e, "q6ur");
    uint8_t *d;
    size_t dl;
    assert_int_equal(rpc_base64_decode("q6ur", 4, &d, &dl), 0);
    assert_int_equal(dl, 3);
    assert_memory_equal(d, bin, 3);
    free(d);
    assert_int_equal(rpc_base64_decode("AQ==", 4, &d, &dl), 0);
    assert_int_equal(dl, 1);
    assert_int_equal(d[0], 1);
    free(d);
    assert_int_equal(rpc_base64_decode("A!", 2, &d, &dl), RPC_ERR_INVALID);
    free(e);
}

static void test_mdlist(void **state)
{
    (void)state;
    rpc_mdlist l = {0};
    assert_int_equal(rpc_mdlist_add_str(&l, "X-User", "alice"), 0);
    assert_int_equal(rpc_mdlist_add(&l, "trace-bin", "\x00\x01", 2), 0);
    assert_int_equal(rpc_mdlist_add_str(&l, "bad key", "v"), RPC_ERR_INVALID);
    assert_int_equal(rpc_mdlist_add_str(&l, "k", "line\nbreak"), RPC_ERR_INVALID);
    const rpc_md *m = rpc_mdlist_get(&l, "x-user");
    assert_non_null(m);
    assert_string_equal((const char *)m->value, "alice");
    assert_int_equal(rpc_mdlist_get(&l, "trace-bin")->value_len, 2);
    rpc_mdlist_clear(&l);
    assert_int_equal(l.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deframer_byte_by_byte),
        cmocka_unit_test(test_deframer_limit_before_alloc),
        cmocka_unit_test(test_deframer_grows_with_data),
        cmocka_unit_test(test_gzip_roundtrip_and_bomb),
        cmocka_unit_test(test_frame_message_at_headroom),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_timeout_format_at_most_8_digits),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_mdlist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
