/* Unit tests of svc-chats/pagetoken.c: PullMessages page tokens are "p1.<pos>.<mac>", the mac
 * being the first 16 bytes of HMAC-SHA256(key, "p1\n" user "\n" device "\n" pos) in hex (vector
 * computed independently with Python's hmac), and bound to user, device and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pagetoken.h"

static void test_make_matches_the_definition(void **state)
{
    (void)state;
    char tok[PAGETOKEN_MAX];
    pagetoken_make("k3y", "alice", "phone", 42, tok);
    assert_string_equal(tok, "p1.42.d671d4288dd734e7def801fedc2fed95");
}

static void test_round_trip(void **state)
{
    (void)state;
    const uint64_t positions[] = {0, 1, 382915382668861440ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
        char tok[PAGETOKEN_MAX];
        pagetoken_make("secret", "bob", "tablet-2", positions[i], tok);
        assert_true(strlen(tok) <= 64); /* the proto promises short tokens */
        uint64_t pos = 7;
        assert_int_equal(pagetoken_parse("secret", "bob", "tablet-2", tok, &pos), 0);
        assert_int_equal(pos, positions[i]);
    }
}

static void test_bound_to_user_device_and_key(void **state)
{
    (void)state;
    char tok[PAGETOKEN_MAX];
    uint64_t pos = 0;
    pagetoken_make("secret", "bob", "phone", 99, tok);
    assert_int_equal(pagetoken_parse("secret", "carol", "phone", tok, &pos), -1);
    assert_int_equal(pagetoken_parse("secret", "bob", "laptop", tok, &pos), -1);
    assert_int_equal(pagetoken_parse("other", "bob", "phone", tok, &pos), -1);
    /* "bob\nx" + "y" must not collide with "bob" + "x\ny": separators are part of the MAC. */
    assert_int_equal(pagetoken_parse("secret", "bo", "b\nphone", tok, &pos), -1);
    assert_int_equal(pos, 0); /* untouched on failure */
}

static void test_tampered_or_malformed(void **state)
{
    (void)state;
    char tok[PAGETOKEN_MAX], bad[PAGETOKEN_MAX + 8];
    uint64_t pos = 0;
    pagetoken_make("secret", "bob", "phone", 99, tok);
    /* Another position with the same mac. */
    snprintf(bad, sizeof(bad), "p1.100%s", strchr(tok + 3, '.'));
    assert_int_equal(pagetoken_parse("secret", "bob", "phone", bad, &pos), -1);
    /* One hex digit of the mac changed. */
    snprintf(bad, sizeof(bad), "%s", tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    assert_int_equal(pagetoken_parse("secret", "bob", "phone", bad, &pos), -1);
    const char *malformed[] = {
        "",
        "p1.",
        "p1..",
        "p2.99.d671d4288dd734e7def801fedc2fed95",
        "p1.-1.x",
        "p1.99",
        "p1.99.short",
        "p1.x.d671d4288dd734e7def801fedc2fed95",
        "p1.99.d671d4288dd734e7def801fedc2fed95ff", /* mac too long */
        "p1.99.d671d4288dd734e7def801fedc2fed95.p1.99.d671d4288dd734e7def801fedc2fed95xxxxxxxx",
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
        assert_int_equal(pagetoken_parse("secret", "bob", "phone", malformed[i], &pos), -1);
    assert_int_equal(pagetoken_parse("secret", "bob", "phone", NULL, &pos), -1);
    assert_int_equal(pos, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_make_matches_the_definition),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bound_to_user_device_and_key),
        cmocka_unit_test(test_tampered_or_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
