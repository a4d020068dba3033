/*
 * Tests of svc-presence's Redis store (store.c: the Lua scripts) against a real redis-server on
 * a free loopback port: heartbeat, multi-device counts, SetOffline and last-seen, lazy reads of
 * unsettled expiries, sweep (settles and makes Redis publish "expired" at once), CountOnline,
 * the notification config merge, and argument refusal. TTLs here are a few hundred ms (the
 * store takes any TTL; the API enforces 5..120 s).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <cmocka.h>

#include "clock.h"

#include "../../svc-presence/keys.c"
#include "../../svc-presence/state.c"
#include "../../svc-presence/store.c"
#include "../../svc-presence/validate.c"

#include "presence_fixture.h"

/* --- collecting results ---------------------------------------------------------------------- */

typedef struct res {
    int done;
    int err;
    int64_t exp;
    uint32_t devices;
    int64_t now;
    store_presence p[8];
    size_t n;
    store_count count;
    char before[64], after[64];
    bool before_null, changed;
} res;

static void on_hb(int err, int64_t exp, uint32_t devices, void *ud)
{
    res *r = ud;
    r->err = err;
    r->exp = exp;
    r->devices = devices;
    r->done++;
}

static void on_pr(int err, const store_presence *p, void *ud)
{
    res *r = ud;
    r->err = err;
    if (p)
        r->p[0] = *p;
    r->done++;
}

static void on_batch_res(int err, int64_t now, const store_presence *p, size_t n, void *ud)
{
    res *r = ud;
    r->err = err;
    r->now = now;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        r->p[i] = p[i];
    r->done++;
}

static void on_count_res(int err, const store_count *c, void *ud)
{
    res *r = ud;
    r->err = err;
    if (c)
        r->count = *c;
    r->done++;
}

static void on_notify_res(int err, const char *before, const char *after, bool changed, void *ud)
{
    res *r = ud;
    r->err = err;
    r->before_null = before == NULL;
    snprintf(r->before, sizeof(r->before), "%s", before ? before : "");
    snprintf(r->after, sizeof(r->after), "%s", after ? after : "");
    r->changed = changed;
    r->done++;
}

static void wait_done(res *r)
{
    assert_true(ts_wait_for(base, &r->done, 1, 5000));
}

static res heartbeat(const char *user, const char *device, uint32_t ttl)
{
    res r = {0};
    assert_int_equal(store_heartbeat(st, rc, user, device, ttl, on_hb, &r), 0);
    wait_done(&r);
    assert_int_equal(r.err, 0);
    return r;
}

static res get1(const char *user)
{
    res r = {0};
    const char *u[] = {user};
    assert_int_equal(store_get(st, rc, u, 1, on_batch_res, &r), 0);
    wait_done(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, 1);
    return r;
}

/* Runs a command and returns its integer or string reply as a number (-1 for nil). */
static void on_cmd(redis_client *c, const redisReply *reply, int status, void *ud)
{
    (void)c;
    (void)status;
    long long *out = ud;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        out[0] = reply->integer;
    else if (reply && reply->type == REDIS_REPLY_STRING)
        out[0] = strtoll(reply->str, NULL, 10);
    else
        out[0] = -1;
    out[1]++;
}

static long long cmd1(const char *a, const char *b, const char *c)
{
    long long out[2] = {0, 0};
    const char *argv[] = {a, b, c};
    int argc = c ? 3 : 2;
    assert_int_equal(redis_client_command(rc, argc, argv, NULL, on_cmd, out), 0);
    int done = 0;
    while (out[1] == 0 && done++ < 500)
        ts_run_for(base, 10);
    assert_int_equal(out[1], 1);
    return out[0];
}

/* Runs a command and copies its string reply into |out| ("" for nil). */
static void on_cmd_str(redis_client *c, const redisReply *reply, int status, void *ud)
{
    (void)c;
    (void)status;
    char *out = ud;
    if (reply && reply->type == REDIS_REPLY_STRING)
        snprintf(out, 256, "%.*s", (int)reply->len, reply->str);
    else
        snprintf(out, 256, "%s", "");
    out[255] = 1; /* done marker in the last byte */
}

static const char *record(const char *user)
{
    static char out[256];
    char key[KEYS_MAX];
    keys_state(key, sizeof(key), user);
    memset(out, 0, sizeof(out));
    const char *argv[] = {"GET", key};
    assert_int_equal(redis_client_command(rc, 2, argv, NULL, on_cmd_str, out), 0);
    for (int i = 0; i < 500 && out[255] == 0; i++)
        ts_run_for(base, 10);
    assert_int_equal(out[255], 1);
    out[255] = 0;
    return out;
}

/* --- fixtures ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    return presence_fixture_start();
}

static int group_teardown(void **state)
{
    (void)state;
    return presence_fixture_stop();
}

/* --- tests --------------------------------------------------------------------------------- */

static void test_heartbeat_and_devices(void **state)
{
    (void)state;
    int64_t t0 = clock_wall_ms();
    res a = heartbeat("ann", "phone", 10000);
    assert_int_equal(a.devices, 1);
    assert_true(a.exp >= t0 + 10000 - 50 && a.exp <= clock_wall_ms() + 10000 + 50);
    res b = heartbeat("ann", "laptop", 20000);
    assert_int_equal(b.devices, 2);
    res again = heartbeat("ann", "phone", 10000); /* refresh: still 2 */
    assert_int_equal(again.devices, 2);
    res g = get1("ann");
    assert_int_equal(g.p[0].devices, 2);
    assert_int_equal(g.p[0].last_seen_ms, 0);
    assert_int_equal(g.p[0].next_expiry_ms, again.exp); /* the earlier of the two */
    /* keys: device keys with TTLs, the record with the record TTL */
    assert_true(cmd1("PTTL", "presence:ann:phone", NULL) > 9000);
    assert_true(cmd1("PTTL", "presence-state:ann", NULL) > 29LL * 24 * 3600 * 1000);
    const char *rec = record("ann");
    assert_true(strncmp(rec, "0 ", 2) == 0);
    assert_non_null(strstr(rec, "phone="));
    assert_non_null(strstr(rec, "laptop="));

    res off = {0};
    assert_int_equal(store_set_offline(st, rc, "ann", "phone", on_pr, &off), 0);
    wait_done(&off);
    assert_int_equal(off.p[0].devices, 1);
    assert_int_equal(off.p[0].last_seen_ms, 0); /* still online */
    assert_int_equal(cmd1("EXISTS", "presence:ann:phone", NULL), 0);
    res off2 = {0};
    int64_t before = clock_wall_ms();
    assert_int_equal(store_set_offline(st, rc, "ann", "laptop", on_pr, &off2), 0);
    wait_done(&off2);
    assert_int_equal(off2.p[0].devices, 0);
    assert_true(off2.p[0].last_seen_ms >= before - 50 &&
                off2.p[0].last_seen_ms <= clock_wall_ms() + 50);
    char want[64];
    snprintf(want, sizeof(want), "%lld", (long long)off2.p[0].last_seen_ms);
    assert_string_equal(record("ann"), want);
    /* idempotent */
    res off3 = {0};
    assert_int_equal(store_set_offline(st, rc, "ann", "laptop", on_pr, &off3), 0);
    wait_done(&off3);
    assert_int_equal(off3.p[0].devices, 0);
    assert_int_equal(off3.p[0].last_seen_ms, off2.p[0].last_seen_ms);
}

static void test_expiry_lazy_then_settled(void **state)
{
    (void)state;
    res a = heartbeat("bo", "watch", 150);
    res b = heartbeat("bo", "tv", 300);
    ts_run_for(base, 200);
    res g = get1("bo"); /* one expired, one online: no last-seen */
    assert_int_equal(g.p[0].devices, 1);
    assert_int_equal(g.p[0].last_seen_ms, 0);
    assert_int_equal(g.p[0].next_expiry_ms, b.exp);
    ts_run_for(base, 200);
    g = get1("bo"); /* both expired: last seen = the later expiry, read without any write */
    assert_int_equal(g.p[0].devices, 0);
    assert_int_equal(g.p[0].last_seen_ms, b.exp);
    assert_true(strncmp(record("bo"), "0 ", 2) == 0); /* not settled yet: both devices there */
    assert_non_null(strstr(record("bo"), "watch="));
    (void)a;
    /* sweep settles: last-seen written, set emptied */
    res s = {0};
    const char *u[] = {"bo", "nobody"};
    assert_int_equal(store_sweep(st, rc, u, 2, on_batch_res, &s), 0);
    wait_done(&s);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.p[0].devices, 0);
    assert_int_equal(s.p[0].last_seen_ms, b.exp);
    assert_int_equal(s.p[1].devices, 0);
    assert_int_equal(s.p[1].last_seen_ms, 0);
    char want[64];
    snprintf(want, sizeof(want), "%lld", (long long)b.exp);
    assert_string_equal(record("bo"), want); /* settled: last-seen only */
    /* coming back settles too, and keeps last-seen while online */
    heartbeat("bo", "tv", 10000);
    g = get1("bo");
    assert_int_equal(g.p[0].devices, 1);
    assert_int_equal(g.p[0].last_seen_ms, b.exp);
}

static void test_heartbeat_settles_unswept_offline_period(void **state)
{
    (void)state;
    res a = heartbeat("cy", "phone", 100);
    ts_run_for(base, 200);
    /* never swept; the next heartbeat records the offline period before going online */
    heartbeat("cy", "phone", 10000);
    char want[64];
    snprintf(want, sizeof(want), "%lld ", (long long)a.exp);
    assert_true(strncmp(record("cy"), want, strlen(want)) == 0);
}

/* pub/sub capture of "expired" events */
typedef struct caught {
    int n;
    char key[64];
} caught;

static void on_sub_msg(redis_sub *s, const char *pattern, const char *channel, size_t clen,
                       const char *msg, size_t mlen, void *ud)
{
    (void)s;
    (void)pattern;
    (void)channel;
    (void)clen;
    caught *c = ud;
    snprintf(c->key, sizeof(c->key), "%.*s", (int)mlen, msg);
    c->n++;
}

static void on_sub_ready(redis_sub *s, bool again, void *ud)
{
    (void)s;
    (void)again;
    caught *c = ud;
    c->n = -1000; /* marks ready; reset by the test */
}

static void test_sweep_publishes_expired(void **state)
{
    (void)state;
    res n = {0};
    assert_int_equal(store_ensure_notify(rc, on_notify_res, &n), 0);
    wait_done(&n);
    caught c = {0};
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    const redis_sub_callbacks cbs = {.on_message = on_sub_msg, .on_ready = on_sub_ready};
    redis_sub *sub;
    assert_int_equal(redis_sub_new(&sub, base, &cfg, &cbs, &c), 0);
    redis_sub_subscribe(sub, "__keyevent@0__:expired");
    for (int i = 0; i < 200 && !redis_sub_ready(sub); i++)
        ts_run_for(base, 10);
    assert_true(redis_sub_ready(sub));
    c.n = 0;
    /* Redis's own expiry (DEBUG SET-ACTIVE-EXPIRE is refused by default, so it stays on) may
     * beat the sweep here on a near-empty keyspace; the integration test shows the sweep
     * winning on a big one. Either way the event must come. */
    heartbeat("di", "pad", 50);
    ts_run_for(base, 80);
    res s = {0};
    const char *u[] = {"di"};
    assert_int_equal(store_sweep(st, rc, u, 1, on_batch_res, &s), 0);
    wait_done(&s);
    assert_true(ts_wait_for(base, &c.n, 1, 2000));
    assert_string_equal(c.key, "presence:di:pad");
    redis_sub_free(sub);
}

static void test_count_online(void **state)
{
    (void)state;
    const char *argv[] = {"SADD", "chat:77:members", "m1", "m2", "m3"};
    long long out[2] = {0, 0};
    assert_int_equal(redis_client_command(rc, 5, argv, NULL, on_cmd, out), 0);
    while (out[1] == 0)
        ts_run_for(base, 10);
    heartbeat("m1", "a", 10000);
    heartbeat("m1", "b", 10000);
    heartbeat("m3", "a", 10000);
    heartbeat("x9", "a", 10000);
    res r = {0};
    assert_int_equal(store_count_online(st, rc, 77, "m2", on_count_res, &r), 0);
    wait_done(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.count.online, 2);
    assert_int_equal(r.count.members, 3);
    assert_true(r.count.computed_at_ms > clock_wall_ms() - 2000);
    res nf = {0};
    assert_int_equal(store_count_online(st, rc, 78, "m2", on_count_res, &nf), 0);
    wait_done(&nf);
    assert_int_equal(nf.err, STORE_E_NOT_FOUND);
    res nm = {0};
    assert_int_equal(store_count_online(st, rc, 77, "x9", on_count_res, &nm), 0);
    wait_done(&nm);
    assert_int_equal(nm.err, STORE_E_NOT_MEMBER);
}

static void test_notify_config(void **state)
{
    (void)state;
    char out[64];
    assert_false(store_notify_union("", "Egsx", out, sizeof(out)));
    assert_string_equal(out, "Egsx");
    assert_true(store_notify_union("gsxE", "Egsx", out, sizeof(out)));
    assert_true(store_notify_union("AE", "Egsx", out, sizeof(out))); /* A covers gsx */
    assert_false(store_notify_union("AK", "Egsx", out, sizeof(out)));
    assert_string_equal(out, "AKE");
    assert_false(store_notify_union("Klz", "Egsx", out, sizeof(out)));
    assert_string_equal(out, "KlzEgsx");

    const char *set[] = {"CONFIG", "SET", "notify-keyspace-events", "Klh"};
    long long o[2] = {0, 0};
    assert_int_equal(redis_client_command(rc, 4, set, NULL, on_cmd, o), 0);
    while (o[1] == 0)
        ts_run_for(base, 10);
    res r = {0};
    assert_int_equal(store_ensure_notify(rc, on_notify_res, &r), 0);
    wait_done(&r);
    assert_int_equal(r.err, 0);
    assert_true(r.changed);
    assert_string_equal(r.before, "lhK");
    /* whatever else was set is kept */
    for (const char *p = "lhKEgsx"; *p; p++)
        assert_non_null(strchr(r.after, *p));
    res again = {0};
    assert_int_equal(store_ensure_notify(rc, on_notify_res, &again), 0);
    wait_done(&again);
    assert_false(again.changed);
}

static void test_max_devices(void **state)
{
    (void)state;
    store_config cfg;
    store_config_init(&cfg);
    cfg.max_devices = 2;
    store *small;
    store_new(&small, &cfg);
    res r = {0};
    assert_int_equal(store_heartbeat(small, rc, "ed", "a", 30000, on_hb, &r), 0);
    wait_done(&r);
    res r2 = {0};
    assert_int_equal(store_heartbeat(small, rc, "ed", "b", 10000, on_hb, &r2), 0);
    wait_done(&r2);
    res r3 = {0};
    assert_int_equal(store_heartbeat(small, rc, "ed", "c", 20000, on_hb, &r3), 0);
    wait_done(&r3);
    assert_int_equal(r3.err, 0);
    assert_int_equal(r3.devices, 2);
    /* "b" (nearest expiry) made room: gone from the record and its key deleted */
    assert_null(strstr(record("ed"), "b="));
    assert_int_equal(cmd1("EXISTS", "presence:ed:b", NULL), 0);
    assert_int_equal(cmd1("EXISTS", "presence:ed:a", NULL), 1);
    /* a known device refreshes without evicting anything */
    res r4 = {0};
    assert_int_equal(store_heartbeat(small, rc, "ed", "a", 30000, on_hb, &r4), 0);
    wait_done(&r4);
    assert_int_equal(r4.devices, 2);
    assert_non_null(strstr(record("ed"), "c="));
    store_free(small);
}

static void test_refusals(void **state)
{
    (void)state;
    res r = {0};
    assert_int_equal(store_get(st, rc, NULL, 0, on_batch_res, &r), STORE_E_INVALID);
    const char *many[STORE_BATCH_MAX + 1];
    for (int i = 0; i <= STORE_BATCH_MAX; i++)
        many[i] = "u";
    assert_int_equal(store_get(st, rc, many, STORE_BATCH_MAX + 1, on_batch_res, &r),
                     STORE_E_INVALID);
    char longid[300];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(store_heartbeat(st, rc, longid, "d", 1000, on_hb, &r), STORE_E_INVALID);
    assert_int_equal(r.done, 0);
    /* 500 users in one call */
    res big = {0};
    assert_int_equal(store_get(st, rc, many, STORE_BATCH_MAX, on_batch_res, &big), 0);
    wait_done(&big);
    assert_int_equal(big.err, 0);
    assert_int_equal(big.n, STORE_BATCH_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeat_and_devices),
        cmocka_unit_test(test_expiry_lazy_then_settled),
        cmocka_unit_test(test_heartbeat_settles_unswept_offline_period),
        cmocka_unit_test(test_sweep_publishes_expired),
        cmocka_unit_test(test_count_online),
        cmocka_unit_test(test_notify_config),
        cmocka_unit_test(test_max_devices),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
