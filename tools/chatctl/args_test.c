/*
 * args_test.c: chatctl's command-line parsing (args.c, and the shared options of ctl.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctl.h"

static void test_u64(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(args_parse_u64("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(args_parse_u64("382910488834854912", &v), 0);
    assert_true(v == 382910488834854912ULL);
    assert_int_equal(args_parse_u64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(args_parse_u64("max", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(args_parse_u64("end", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(args_parse_u64("18446744073709551616", &v), -1); /* 2^64 */
    assert_int_equal(args_parse_u64("-1", &v), -1);
    assert_int_equal(args_parse_u64(" 1", &v), -1);
    assert_int_equal(args_parse_u64("1x", &v), -1);
    assert_int_equal(args_parse_u64("", &v), -1);
}

static void test_u32(void **state)
{
    (void)state;
    uint32_t v = 0;
    assert_int_equal(args_parse_u32("200", 1, 200, &v), 0);
    assert_int_equal(v, 200);
    assert_int_equal(args_parse_u32("201", 1, 200, &v), -1);
    assert_int_equal(args_parse_u32("0", 1, 200, &v), -1);
    assert_int_equal(args_parse_u32("max", 0, UINT32_MAX, &v), -1);
    assert_int_equal(args_parse_u32("4294967296", 0, UINT32_MAX, &v), -1);
}

static void test_duration(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(args_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(args_parse_duration_ms("10", &ms), 0); /* seconds */
    assert_int_equal(ms, 10000);
    assert_int_equal(args_parse_duration_ms("10s", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(args_parse_duration_ms("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(args_parse_duration_ms("24h", &ms), 0);
    assert_int_equal(ms, 86400000);
    assert_int_equal(args_parse_duration_ms("7d", &ms), 0);
    assert_int_equal(ms, 7 * 86400000LL);
    assert_int_equal(args_parse_duration_ms("0s", &ms), -1);
    assert_int_equal(args_parse_duration_ms("-5s", &ms), -1);
    assert_int_equal(args_parse_duration_ms("5w", &ms), -1);
    assert_int_equal(args_parse_duration_ms("s", &ms), -1);
    assert_int_equal(args_parse_duration_ms("999999999999999999d", &ms), -1); /* overflow */
}

static void test_device(void **state)
{
    (void)state;
    assert_true(args_valid_device("chatctl"));
    assert_true(args_valid_device("A-z_0.9"));
    assert_false(args_valid_device(""));
    assert_false(args_valid_device("has space"));
    assert_false(args_valid_device("slash/no"));
    char long_id[66];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    assert_false(args_valid_device(long_id));
    long_id[64] = '\0';
    assert_true(args_valid_device(long_id));
}

/* Options, shared options and positionals in any order; positionals keep their order. */
static void test_parse_mixed(void **state)
{
    (void)state;
    ctl c;
    ctl_init(&c, "chatctl");
    char a0[] = "create-chat", a1[] = "bob", a2[] = "--title", a3[] = "demo", a4[] = "--as",
         a5[] = "alice", a6[] = "--group", a7[] = "carol", a8[] = "--timeout=2s", a9[] = "--",
         a10[] = "--dave";
    char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10};
    const char *title = NULL;
    bool group = false, direct = false;
    const args_opt opts[] = {{"--group", NULL, &group},
                             {"--direct", NULL, &direct},
                             {"--title", &title, NULL},
                             {NULL, NULL, NULL}};
    int n = args_parse(&c, "create-chat", 11, argv, opts);
    assert_int_equal(n, 3);
    assert_string_equal(argv[0], "bob");
    assert_string_equal(argv[1], "carol");
    assert_string_equal(argv[2], "--dave"); /* after "--": a positional */
    assert_string_equal(title, "demo");
    assert_true(group);
    assert_false(direct);
    assert_string_equal(c.as_user, "alice");
    assert_int_equal(c.timeout_ms, 2000);
    ctl_cleanup(&c);
}

static void test_parse_errors(void **state)
{
    (void)state;
    ctl c;
    ctl_init(&c, "chatctl");
    const char *title = NULL;
    bool flag = false;
    const args_opt opts[] = {
        {"--title", &title, NULL}, {"--flag", NULL, &flag}, {NULL, NULL, NULL}};

    char b0[] = "x", b1[] = "--titles";
    char *unknown[] = {b0, b1};
    assert_int_equal(args_parse(&c, "x", 2, unknown, opts), -1);

    char c0[] = "x", c1[] = "--title";
    char *missing[] = {c0, c1};
    assert_int_equal(args_parse(&c, "x", 2, missing, opts), -1);

    char d0[] = "x", d1[] = "--flag=1";
    char *flag_value[] = {d0, d1};
    assert_int_equal(args_parse(&c, "x", 2, flag_value, opts), -1);

    char e0[] = "x", e1[] = "--timeout", e2[] = "soon";
    char *bad_timeout[] = {e0, e1, e2};
    assert_int_equal(args_parse(&c, "x", 3, bad_timeout, opts), -1);

    char f0[] = "x", f1[] = "-", f2[] = "--title=";
    char *dash[] = {f0, f1, f2};
    assert_int_equal(args_parse(&c, "x", 3, dash, opts), 1); /* "-" is a positional */
    assert_string_equal(dash[0], "-");
    assert_string_equal(title, "");
    ctl_cleanup(&c);
}

static void test_client_id_is_uuid4(void **state)
{
    (void)state;
    char a[CTL_CLIENT_ID_LEN + 1], b[CTL_CLIENT_ID_LEN + 1];
    ctl_new_client_id(a);
    ctl_new_client_id(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    assert_int_equal(a[8], '-');
    assert_int_equal(a[13], '-');
    assert_int_equal(a[14], '4');
    assert_true(strchr("89ab", a[19]) != NULL);
}

static void test_auth_needs_identity(void **state)
{
    (void)state;
    ctl c;
    ctl_init(&c, "chatctl");
    unsetenv("JWT_SECRET");
    assert_int_equal(ctl_auth(&c), -1); /* neither --as nor --token */
    c.as_user = "alice";
    assert_int_equal(ctl_auth(&c), -1); /* --as without JWT_SECRET */
    setenv("JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    assert_int_equal(ctl_auth(&c), 0);
    const rpc_md *md = rpc_mdlist_get(&c.auth_md, "authorization");
    assert_non_null(md);
    assert_true(md->value_len > 7 && memcmp(md->value, "Bearer ey", 9) == 0);
    ctl_cleanup(&c);

    ctl_init(&c, "chatctl");
    c.token_flag = "abc.def.ghi";
    assert_int_equal(ctl_auth(&c), 0);
    md = rpc_mdlist_get(&c.auth_md, "authorization");
    assert_non_null(md);
    assert_int_equal(md->value_len, strlen("Bearer abc.def.ghi"));
    assert_memory_equal(md->value, "Bearer abc.def.ghi", md->value_len);
    ctl_cleanup(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64),
        cmocka_unit_test(test_u32),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_device),
        cmocka_unit_test(test_parse_mixed),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_client_id_is_uuid4),
        cmocka_unit_test(test_auth_needs_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
