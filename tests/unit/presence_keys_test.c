/*
 * Unit tests of svc-presence's pure modules: key names and keyevent parsing (keys.c), the
 * per-user record reader (state.c) and the input rules (validate.c). The service's sources are
 * compiled into this test directly (the tests/unit glob links only lib/).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../svc-presence/keys.c"
#include "../../svc-presence/state.c"
#include "../../svc-presence/validate.c"

static void test_key_names(void **state)
{
    (void)state;
    char buf[KEYS_MAX];
    assert_int_equal(keys_device(buf, sizeof(buf), "alice", "phone"),
                     strlen("presence:alice:phone"));
    assert_string_equal(buf, "presence:alice:phone");
    keys_state(buf, sizeof(buf), "a:b");
    assert_string_equal(buf, "presence-state:a:b");
    keys_members(buf, sizeof(buf), 18446744073709551615ULL);
    assert_string_equal(buf, "chat:18446744073709551615:members");
    /* too small a buffer: 0, never a truncated key */
    assert_int_equal(keys_device(buf, 10, "alice", "phone"), 0);
    /* the longest ids fit */
    char user[VALIDATE_USER_ID_MAX + 1], dev[VALIDATE_DEVICE_ID_MAX + 1];
    memset(user, 'u', VALIDATE_USER_ID_MAX);
    user[VALIDATE_USER_ID_MAX] = '\0';
    memset(dev, 'd', VALIDATE_DEVICE_ID_MAX);
    dev[VALIDATE_DEVICE_ID_MAX] = '\0';
    assert_true(keys_device(buf, sizeof(buf), user, dev) > 0);
    assert_true(keys_state(buf, sizeof(buf), user) > 0);
}

static void test_parse_device_key(void **state)
{
    (void)state;
    const char *u, *d;
    size_t ul, dl;
    const char *k = "presence:alice:phone";
    assert_int_equal(keys_parse_device(k, strlen(k), &u, &ul, &d, &dl), 0);
    assert_int_equal(ul, 5);
    assert_memory_equal(u, "alice", 5);
    assert_int_equal(dl, 5);
    assert_memory_equal(d, "phone", 5);
    /* a user id may contain ':'; the device never does, so the last ':' splits */
    k = "presence:urn:user:42:tab-1";
    assert_int_equal(keys_parse_device(k, strlen(k), &u, &ul, &d, &dl), 0);
    assert_int_equal(ul, strlen("urn:user:42"));
    assert_memory_equal(u, "urn:user:42", ul);
    assert_memory_equal(d, "tab-1", dl);
    /* not ours */
    const char *bad[] = {
        "presence:alice",        /* no device */
        "presence::phone",       /* empty user */
        "presence:alice:",       /* empty device */
        "presence-state:alice",  /* the record */
        "presencealice:phone",   /* no prefix */
        "presence:alice:ph one", /* bad device byte */
        "dedupe:123",            /* another service's key */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(keys_parse_device(bad[i], strlen(bad[i]), &u, &ul, &d, &dl), -1);
    /* length-delimited, not NUL-terminated */
    assert_int_equal(keys_parse_device("presence:bob:pcXXX", 15, &u, &ul, &d, &dl), 0);
    assert_int_equal(dl, 2);
}

static void test_event_channels(void **state)
{
    (void)state;
    char buf[64];
    keys_event_channel(buf, sizeof(buf), 0, KEYS_EV_ONLINE);
    assert_string_equal(buf, "__keyevent@0__:sadd");
    keys_event_channel(buf, sizeof(buf), 3, KEYS_EV_EXPIRED);
    assert_string_equal(buf, "__keyevent@3__:expired");
    assert_int_equal(keys_event_channel(buf, sizeof(buf), 0, KEYS_EV_OTHER), 0);
    const struct {
        const char *ch;
        keys_event ev;
    } cases[] = {
        {"__keyevent@0__:sadd", KEYS_EV_ONLINE},
        {"__keyevent@0__:set", KEYS_EV_OTHER}, /* the record's SET on every heartbeat */
        {"__keyevent@12__:del", KEYS_EV_DEL},
        {"__keyevent@0__:expired", KEYS_EV_EXPIRED},
        {"__keyevent@0__:expire", KEYS_EV_OTHER}, /* a TTL refresh: not a change */
        {"__keyevent@0__:saddx", KEYS_EV_OTHER},
        {"__keyspace@0__:presence:a:b", KEYS_EV_OTHER},
        {"other", KEYS_EV_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(keys_parse_event_channel(cases[i].ch, strlen(cases[i].ch)), cases[i].ev);
}

static void test_url_db(void **state)
{
    (void)state;
    assert_int_equal(keys_url_db("127.0.0.1:6379"), 0);
    assert_int_equal(keys_url_db("redis://127.0.0.1:6379"), 0);
    assert_int_equal(keys_url_db("redis://127.0.0.1:6379/"), 0);
    assert_int_equal(keys_url_db("redis://:pw@host:1/5"), 5);
    assert_int_equal(keys_url_db("host/7"), 7);
    assert_int_equal(keys_url_db("redis://[::1]:6379/2"), 2);
    assert_int_equal(keys_url_db("redis://host/x"), -1);
    assert_int_equal(keys_url_db(NULL), 0);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(validate_user_id("alice", 5));
    assert_true(validate_user_id("!~:{}*", 6));
    assert_false(validate_user_id("", 0));
    assert_false(validate_user_id("a b", 3));
    assert_false(validate_user_id("a\x7f", 2));
    assert_false(validate_user_id("\xc3\xa9", 2));
    char u[130];
    memset(u, 'x', sizeof(u));
    assert_true(validate_user_id(u, 128));
    assert_false(validate_user_id(u, 129));
    assert_true(validate_device_id("Pixel-7_pro.2", 13));
    assert_false(validate_device_id("", 0));
    assert_false(validate_device_id("a:b", 3));
    assert_false(validate_device_id("a/b", 3));
    assert_true(validate_device_id(u, 64));
    assert_false(validate_device_id(u, 65));
}

static void test_ttl(void **state)
{
    (void)state;
    assert_int_equal(validate_ttl(0), 30000);
    assert_int_equal(validate_ttl(5000), 5000);
    assert_int_equal(validate_ttl(120000), 120000);
    assert_int_equal(validate_ttl(4999), 0);
    assert_int_equal(validate_ttl(120001), 0);
    assert_int_equal(validate_ttl(1), 0);
    assert_int_equal(validate_ttl(UINT32_MAX), 0);
}

static void test_user_list(void **state)
{
    (void)state;
    size_t order[VALIDATE_MAX_USERS], n;
    char err[160];
    char *ids[] = {"b", "a", "b", "c", "a"};
    assert_int_equal(validate_user_list(ids, 5, order, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 3);
    assert_int_equal(validate_user_list(ids, 0, order, &n, err, sizeof(err)), -1);
    assert_string_equal(err, "user_ids must not be empty");
    char *bad[] = {"ok", "", "x"};
    assert_int_equal(validate_user_list(bad, 3, order, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "user_ids[1]"));
    char *nul[] = {"ok", NULL};
    assert_int_equal(validate_user_list(nul, 2, order, &n, err, sizeof(err)), -1);
    /* 500 distinct ids: fine; 501: refused before anything is looked at */
    static char names[501][8];
    char *many[501];
    for (int i = 0; i < 501; i++) {
        snprintf(names[i], sizeof(names[i]), "u%d", i);
        many[i] = names[i];
    }
    assert_int_equal(validate_user_list(many, 500, order, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 500);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(order[i], i);
    assert_int_equal(validate_user_list(many, 501, order, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "at most 500"));
    /* 500 copies of one id: one entry */
    char *same[500];
    for (int i = 0; i < 500; i++)
        same[i] = "x";
    assert_int_equal(validate_user_list(same, 500, order, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
}

static presence_state parse_ok(const char *s, int64_t now)
{
    presence_state st;
    assert_int_equal(state_parse(s, strlen(s), now, &st), 0);
    return st;
}

static void test_state_records(void **state)
{
    (void)state;
    presence_state st;
    /* no record: offline, never seen */
    assert_int_equal(state_parse(NULL, 0, 1000, &st), 0);
    assert_int_equal(st.devices, 0);
    assert_int_equal(st.last_seen_ms, 0);
    st = parse_ok("0", 1000);
    assert_int_equal(st.devices, 0);
    /* two devices online: count, earliest expiry; last-seen kept while online */
    st = parse_ok("500 phone=2000 laptop=1500", 1000);
    assert_int_equal(st.devices, 2);
    assert_int_equal(st.next_expiry_ms, 1500);
    assert_int_equal(st.last_seen_ms, 500);
    /* one expired, one online: still online, last-seen unchanged */
    st = parse_ok("500 phone=2000 laptop=900", 1000);
    assert_int_equal(st.devices, 1);
    assert_int_equal(st.next_expiry_ms, 2000);
    assert_int_equal(st.last_seen_ms, 500);
    /* an expiry exactly now still counts (online while expiry >= now) */
    st = parse_ok("0 a=1000", 1000);
    assert_int_equal(st.devices, 1);
    /* all expired, unsettled: offline since the latest expiry */
    st = parse_ok("500 phone=900 laptop=950", 1000);
    assert_int_equal(st.devices, 0);
    assert_int_equal(st.last_seen_ms, 950);
    assert_int_equal(st.next_expiry_ms, 0);
    /* ... unless the stored last-seen is later */
    st = parse_ok("990 phone=900", 1000);
    assert_int_equal(st.last_seen_ms, 990);
    /* real-sized numbers, ids with the allowed punctuation */
    st = parse_ok("1795359300000 Pixel-7_pro.2=1795359311376", 1795359300001);
    assert_int_equal(st.devices, 1);
    assert_int_equal(st.next_expiry_ms, 1795359311376);
    /* malformed records are refused and read as offline */
    const char *bad[] = {"",       "x",        "0 phone",
                         "0 =5",   "0 phone=", "0 phone=x",
                         "0  a=1", "0 a=1 ",   "99999999999999999999 a=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(state_parse(bad[i], strlen(bad[i]), 1000, &st), -1);
        assert_int_equal(st.devices, 0);
    }
    /* length-delimited */
    assert_int_equal(state_parse("0 a=2000XYZ", 8, 1000, &st), 0);
    assert_int_equal(st.devices, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_names),
        cmocka_unit_test(test_parse_device_key),
        cmocka_unit_test(test_event_channels),
        cmocka_unit_test(test_url_db),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_user_list),
        cmocka_unit_test(test_state_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
