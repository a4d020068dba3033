/*
 * Tests of svc-presence's heartbeat batching against a real redis-server on a free loopback
 * port: store_heartbeats() (one script call for many heartbeats) and hbqueue (the heartbeats of
 * one loop iteration sent as such calls). A batch must give every heartbeat the result, the
 * record, the device key and the keyevent notifications that the same heartbeats sent one by
 * one would give: mixed users and devices, a device twice in one batch (the second sees the
 * first), eviction at the device limit inside a batch, an error for one heartbeat that leaves
 * the others alone, and the queue's bounds (batch size, queue full, disconnected, free).
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

#include "../../svc-presence/hbqueue.c"
#include "../../svc-presence/keys.c"
#include "../../svc-presence/state.c"
#include "../../svc-presence/store.c"
#include "../../svc-presence/validate.c"

#include "presence_fixture.h"

/* --- results ------------------------------------------------------------------------------- */

typedef struct hb_res {
    int done;
    int err;
    int64_t exp;
    uint32_t devices;
    int order; /* completion order, from 1 */
} hb_res;

static int completions;

static void on_hb(int err, int64_t exp, uint32_t devices, void *ud)
{
    hb_res *r = ud;
    r->err = err;
    r->exp = exp;
    r->devices = devices;
    r->order = ++completions;
    r->done++;
}

/* Runs the loop until |n| results in |r| are done (fails after 5 s). */
static void wait_all(hb_res *r, size_t n)
{
    for (int i = 0; i < 500; i++) {
        size_t done = 0;
        for (size_t k = 0; k < n; k++)
            done += r[k].done != 0;
        if (done == n)
            break;
        ts_run_for(base, 10);
    }
    for (size_t k = 0; k < n; k++)
        assert_int_equal(r[k].done, 1);
}

typedef struct batch_res {
    int done;
    int err;
    size_t n;
    store_hb_result r[16];
} batch_res;

static void on_batch_res(int err, const store_hb_result *r, size_t n, void *ud)
{
    batch_res *b = ud;
    b->err = err;
    b->n = n;
    for (size_t i = 0; r != NULL && i < n && i < 16; i++)
        b->r[i] = r[i];
    b->done++;
}

/* --- Redis helpers ------------------------------------------------------------------------- */

typedef struct cmd_out {
    int done;
    long long num; /* integer reply, string reply as a number, -1 for nil/other */
    char str[256]; /* string reply, "" for nil */
} cmd_out;

static void on_cmd(redis_client *c, const redisReply *reply, int status, void *ud)
{
    (void)c;
    (void)status;
    cmd_out *o = ud;
    o->num = -1;
    o->str[0] = '\0';
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        o->num = reply->integer;
    } else if (reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)) {
        snprintf(o->str, sizeof(o->str), "%.*s", (int)reply->len, reply->str);
        o->num = strtoll(o->str, NULL, 10);
    }
    o->done = 1;
}

static cmd_out cmd(int argc, const char **argv)
{
    cmd_out o = {0};
    assert_int_equal(redis_client_command(rc, argc, argv, NULL, on_cmd, &o), 0);
    for (int i = 0; i < 500 && !o.done; i++)
        ts_run_for(base, 10);
    assert_int_equal(o.done, 1);
    return o;
}

static long long cmd2(const char *a, const char *b)
{
    const char *argv[] = {a, b};
    return cmd(2, argv).num;
}

static const char *record(const char *user)
{
    static cmd_out o;
    char key[KEYS_MAX];
    keys_state(key, sizeof(key), user);
    const char *argv[] = {"GET", key};
    o = cmd(2, argv);
    return o.str;
}

/* The expiry of |device| in a record, 0 when absent. */
static int64_t rec_expiry(const char *rec, const char *device)
{
    char pat[80];
    snprintf(pat, sizeof(pat), " %s=", device);
    const char *p = strstr(rec, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

/* Keyevent capture: every sadd / del / expired event on presence keys, in order. */
typedef struct events {
    int ready;
    int n;
    char ev[64][96]; /* "<event> <key>" */
} events;

static void on_ev(redis_sub *s, const char *pattern, const char *channel, size_t clen,
                  const char *msg, size_t mlen, void *ud)
{
    (void)s;
    (void)pattern;
    events *e = ud;
    const char *colon = memchr(channel, ':', clen);
    if (colon == NULL || e->n >= 64)
        return;
    snprintf(e->ev[e->n++], sizeof(e->ev[0]), "%.*s %.*s",
             (int)(clen - (size_t)(colon + 1 - channel)), colon + 1, (int)mlen, msg);
}

static void on_ev_ready(redis_sub *s, bool again, void *ud)
{
    (void)s;
    (void)again;
    ((events *)ud)->ready = 1;
}

static redis_sub *events_start(events *e)
{
    memset(e, 0, sizeof(*e));
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    const redis_sub_callbacks cbs = {.on_message = on_ev, .on_ready = on_ev_ready};
    redis_sub *sub;
    assert_int_equal(redis_sub_new(&sub, base, &cfg, &cbs, e), 0);
    redis_sub_subscribe(sub, "__keyevent@0__:sadd");
    redis_sub_subscribe(sub, "__keyevent@0__:del");
    redis_sub_subscribe(sub, "__keyevent@0__:expired");
    for (int i = 0; i < 200 && !e->ready; i++)
        ts_run_for(base, 10);
    assert_true(e->ready);
    return sub;
}

/* Events of |user| only, with the user's name replaced by "U", joined by ", ". */
static void events_of(const events *e, const char *user, char *out, size_t cap)
{
    char key[KEYS_MAX];
    size_t klen = keys_device(key, sizeof(key), user, "");
    out[0] = '\0';
    for (int i = 0; i < e->n; i++) {
        const char *sp = strchr(e->ev[i], ' ');
        if (strncmp(sp + 1, key, klen) != 0)
            continue;
        snprintf(out + strlen(out), cap - strlen(out), "%s%.*s U:%s", out[0] ? ", " : "",
                 (int)(sp - e->ev[i]), e->ev[i], sp + 1 + klen);
    }
}

/* --- fixtures ------------------------------------------------------------------------------ */

static void on_notify(int err, const char *before, const char *after, bool changed, void *ud)
{
    (void)before;
    (void)after;
    (void)changed;
    *(int *)ud = err == 0 ? 1 : -1;
}

static int group_setup(void **state)
{
    (void)state;
    if (presence_fixture_start() != 0)
        return -1;
    int ok = 0;
    store_ensure_notify(rc, on_notify, &ok);
    for (int i = 0; i < 200 && ok == 0; i++)
        ts_run_for(base, 10);
    return ok == 1 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return presence_fixture_stop();
}

/* --- store_heartbeats ---------------------------------------------------------------------- */

static void test_store_heartbeats_results_in_order(void **state)
{
    (void)state;
    int64_t t0 = clock_wall_ms();
    const store_hb hbs[] = {
        {"sa", "phone", 10000},
        {"sb", "phone", 20000},
        {"sa", "laptop", 30000},
        {"sa", "phone", 40000}, /* a refresh of the first, later */
    };
    batch_res b = {0};
    assert_int_equal(store_heartbeats(st, rc, hbs, 4, on_batch_res, &b), 0);
    for (int i = 0; i < 500 && !b.done; i++)
        ts_run_for(base, 10);
    assert_int_equal(b.done, 1);
    assert_int_equal(b.err, 0);
    assert_int_equal(b.n, 4);
    /* one Redis time for all: expiries differ exactly by the TTLs */
    int64_t now = b.r[0].expires_at_ms - 10000;
    assert_true(now >= t0 - 50 && now <= clock_wall_ms() + 50);
    assert_int_equal(b.r[1].expires_at_ms, now + 20000);
    assert_int_equal(b.r[2].expires_at_ms, now + 30000);
    assert_int_equal(b.r[3].expires_at_ms, now + 40000);
    assert_int_equal(b.r[0].devices, 1);
    assert_int_equal(b.r[1].devices, 1);
    assert_int_equal(b.r[2].devices, 2);
    assert_int_equal(b.r[3].devices, 2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(b.r[i].err, 0);
    assert_int_equal(rec_expiry(record("sa"), "phone"), now + 40000);
    assert_int_equal(rec_expiry(record("sa"), "laptop"), now + 30000);
    assert_true(cmd2("PTTL", "presence:sa:phone") > 35000);

    /* refusals: nothing sent */
    char longid[300];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    const store_hb bad[] = {{"sa", "phone", 1000}, {longid, "d", 1000}};
    batch_res r = {0};
    assert_int_equal(store_heartbeats(st, rc, bad, 2, on_batch_res, &r), STORE_E_INVALID);
    assert_int_equal(store_heartbeats(st, rc, bad, 0, on_batch_res, &r), STORE_E_INVALID);
    store_hb many[STORE_HEARTBEATS_MAX + 1];
    for (int i = 0; i <= STORE_HEARTBEATS_MAX; i++)
        many[i] = (store_hb){"sm", "d", 1000};
    assert_int_equal(store_heartbeats(st, rc, many, STORE_HEARTBEATS_MAX + 1, on_batch_res, &r),
                     STORE_E_INVALID);
    ts_run_for(base, 50);
    assert_int_equal(r.done, 0);
    /* the largest batch works */
    for (int i = 0; i < STORE_HEARTBEATS_MAX; i++)
        many[i].device = i % 2 ? "d1" : "d2";
    assert_int_equal(store_heartbeats(st, rc, many, STORE_HEARTBEATS_MAX, on_batch_res, &r), 0);
    for (int i = 0; i < 500 && !r.done; i++)
        ts_run_for(base, 10);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, STORE_HEARTBEATS_MAX);
    assert_int_equal(r.r[0].devices, 1);
    assert_int_equal(r.r[1].devices, 2);
}

/* --- hbqueue ------------------------------------------------------------------------------- */

static hbqueue *queue_new(uint32_t batch_max, uint32_t queue_max)
{
    hbqueue_config cfg;
    hbqueue_config_init(&cfg);
    cfg.batch_max = batch_max;
    cfg.queue_max = queue_max;
    hbqueue *q;
    assert_int_equal(hbqueue_new(&q, base, st, rc, &cfg), 0);
    return q;
}

/* Mixed users and devices queued in one loop iteration: one script call, each heartbeat its
 * own result, and the same records, keys and events as the same heartbeats one by one. */
static void test_queue_one_call_same_as_sequential(void **state)
{
    (void)state;
    events ev;
    redis_sub *sub = events_start(&ev);
    hbqueue *q = queue_new(128, 1000);
    /* the same sequence for user "seq-*" one heartbeat per loop iteration, and for "bat-*" all
     * in one iteration: new devices, a refresh, a device moved earlier, a second user */
    struct {
        const char *user, *device;
        uint32_t ttl;
    } ops[] = {
        {"u1", "phone", 30000},  {"u1", "laptop", 30000},
        {"u2", "phone", 30000},  {"u1", "phone", 60000}, /* refresh: later, only the TTL moves */
        {"u1", "laptop", 10000},                         /* earlier: key re-created (del + sadd) */
        {"u2", "watch", 20000},
    };
    enum { N = sizeof(ops) / sizeof(ops[0]) };
    hb_res seq[N], bat[N];
    memset(seq, 0, sizeof(seq));
    memset(bat, 0, sizeof(bat));
    char user[64];
    uint64_t calls0, beats0, calls1, beats1, calls2, beats2;
    hbqueue_stats(q, &calls0, &beats0);
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "seq-%s", ops[i].user);
        assert_int_equal(hbqueue_heartbeat(q, user, ops[i].device, ops[i].ttl, on_hb, &seq[i]), 0);
        wait_all(&seq[i], 1);
    }
    hbqueue_stats(q, &calls1, &beats1);
    assert_int_equal(calls1 - calls0, N);
    completions = 0;
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "bat-%s", ops[i].user);
        assert_int_equal(hbqueue_heartbeat(q, user, ops[i].device, ops[i].ttl, on_hb, &bat[i]), 0);
        assert_int_equal(bat[i].done, 0); /* never from inside the call */
    }
    assert_int_equal(hbqueue_queued(q), N);
    wait_all(bat, N);
    hbqueue_stats(q, &calls2, &beats2);
    assert_int_equal(calls2 - calls1, 1); /* one script call */
    assert_int_equal(beats2 - beats1, N);
    assert_int_equal(hbqueue_queued(q), 0);
    assert_int_equal(hbqueue_inflight(q), 0);
    /* each got its own answer, in order; the same counts as one by one, and expiries that
     * differ by the same TTLs */
    for (int i = 0; i < N; i++) {
        assert_int_equal(bat[i].err, 0);
        assert_int_equal(bat[i].order, i + 1);
        assert_int_equal(bat[i].devices, seq[i].devices);
        assert_int_equal(bat[i].exp - bat[0].exp, (int64_t)ops[i].ttl - (int64_t)ops[0].ttl);
    }
    assert_int_equal(bat[1].devices, 2);
    assert_int_equal(bat[4].devices, 2);
    assert_int_equal(bat[5].devices, 2);
    /* records: the same devices with the last expiry each */
    assert_int_equal(rec_expiry(record("bat-u1"), "phone"), bat[3].exp);
    assert_int_equal(rec_expiry(record("bat-u1"), "laptop"), bat[4].exp);
    assert_int_equal(rec_expiry(record("bat-u2"), "watch"), bat[5].exp);
    assert_true(cmd2("PTTL", "presence:bat-u1:phone") > 55000);
    long long laptop_ttl = cmd2("PTTL", "presence:bat-u1:laptop");
    assert_true(laptop_ttl > 5000 && laptop_ttl <= 10000);
    /* notifications: the same events in the same order (no event for the refresh) */
    ts_run_for(base, 100);
    char es[512], eb[512];
    events_of(&ev, "seq-u1", es, sizeof(es));
    events_of(&ev, "bat-u1", eb, sizeof(eb));
    assert_string_equal(es, "sadd U:phone, sadd U:laptop, del U:laptop, sadd U:laptop");
    assert_string_equal(eb, es);
    events_of(&ev, "seq-u2", es, sizeof(es));
    events_of(&ev, "bat-u2", eb, sizeof(eb));
    assert_string_equal(es, "sadd U:phone, sadd U:watch");
    assert_string_equal(eb, es);
    /* a batch of refreshes only publishes nothing the feed listens to */
    int n0 = ev.n;
    hb_res ref[3] = {{0}};
    hbqueue_heartbeat(q, "bat-u1", "phone", 90000, on_hb, &ref[0]);
    hbqueue_heartbeat(q, "bat-u2", "phone", 90000, on_hb, &ref[1]);
    hbqueue_heartbeat(q, "bat-u1", "laptop", 90000, on_hb, &ref[2]);
    wait_all(ref, 3);
    ts_run_for(base, 100);
    assert_int_equal(ev.n, n0);
    hbqueue_free(q);
    redis_sub_free(sub);
}

/* The same device twice in one batch: the second sees the first (sequential). */
static void test_queue_duplicate_device(void **state)
{
    (void)state;
    hbqueue *q = queue_new(128, 1000);
    hb_res r[4] = {{0}};
    hbqueue_heartbeat(q, "dup", "pad", 30000, on_hb, &r[0]);  /* comes online */
    hbqueue_heartbeat(q, "dup", "pad", 30000, on_hb, &r[1]);  /* refresh, same expiry */
    hbqueue_heartbeat(q, "dup", "pad", 5000, on_hb, &r[2]);   /* earlier */
    hbqueue_heartbeat(q, "dup", "other", 5000, on_hb, &r[3]); /* second device */
    wait_all(r, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].err, 0);
    assert_int_equal(r[0].devices, 1);
    assert_int_equal(r[1].devices, 1); /* not counted twice */
    assert_int_equal(r[2].devices, 1);
    assert_int_equal(r[3].devices, 2);
    assert_int_equal(r[0].exp, r[1].exp);
    assert_int_equal(r[2].exp, r[0].exp - 25000);
    const char *rec = record("dup");
    assert_int_equal(rec_expiry(rec, "pad"), r[2].exp); /* the last one wins */
    assert_int_equal(rec_expiry(rec, "other"), r[3].exp);
    assert_true(strncmp(rec, "0 ", 2) == 0);
    long long ttl = cmd2("PTTL", "presence:dup:pad");
    assert_true(ttl > 0 && ttl <= 5000);
    assert_int_equal(cmd2("SCARD", "presence:dup:pad"), 1);
    hbqueue_free(q);
}

/* Eviction at the device limit inside a batch, and an expired device settled by a batch. */
static void test_queue_eviction_in_batch(void **state)
{
    (void)state;
    store_config cfg;
    store_config_init(&cfg);
    cfg.max_devices = 2;
    store *small;
    store_new(&small, &cfg);
    hbqueue *q;
    assert_int_equal(hbqueue_new(&q, base, small, rc, NULL), 0);
    hb_res r[4] = {{0}};
    hbqueue_heartbeat(q, "ev", "a", 30000, on_hb, &r[0]);
    hbqueue_heartbeat(q, "ev", "b", 10000, on_hb, &r[1]);
    hbqueue_heartbeat(q, "ev", "c", 20000, on_hb, &r[2]); /* evicts b, the nearest expiry */
    hbqueue_heartbeat(q, "ev", "a", 40000, on_hb, &r[3]); /* known: evicts nothing */
    wait_all(r, 4);
    uint64_t calls, beats;
    hbqueue_stats(q, &calls, &beats);
    assert_int_equal(calls, 1);
    assert_int_equal(r[0].devices, 1);
    assert_int_equal(r[1].devices, 2);
    assert_int_equal(r[2].devices, 2);
    assert_int_equal(r[3].devices, 2);
    const char *rec = record("ev");
    assert_int_equal(rec_expiry(rec, "b"), 0);
    assert_int_equal(rec_expiry(rec, "c"), r[2].exp);
    assert_int_equal(rec_expiry(rec, "a"), r[3].exp);
    assert_int_equal(cmd2("EXISTS", "presence:ev:b"), 0);
    assert_int_equal(cmd2("EXISTS", "presence:ev:c"), 1);

    /* a device that expired is settled by the next batch: last-seen = its expiry */
    hb_res s[2] = {{0}};
    hbqueue_heartbeat(q, "gone", "x", 100, on_hb, &s[0]);
    wait_all(s, 1);
    ts_run_for(base, 200);
    hbqueue_heartbeat(q, "gone", "y", 30000, on_hb, &s[1]);
    wait_all(&s[1], 1);
    assert_int_equal(s[1].devices, 1);
    char want[64];
    snprintf(want, sizeof(want), "%lld y=%lld", (long long)s[0].exp, (long long)s[1].exp);
    assert_string_equal(record("gone"), want);
    hbqueue_free(q);
    store_free(small);
}

/* A heartbeat Redis cannot apply fails alone; the rest of its batch succeeds. */
static void test_queue_error_per_item(void **state)
{
    (void)state;
    const char *argv[] = {"HSET", "presence-state:wrongtype", "x", "1"};
    cmd(4, argv);
    hbqueue *q = queue_new(128, 1000);
    hb_res r[3] = {{0}};
    hbqueue_heartbeat(q, "ok-1", "d", 30000, on_hb, &r[0]);
    hbqueue_heartbeat(q, "wrongtype", "d", 30000, on_hb, &r[1]);
    hbqueue_heartbeat(q, "ok-2", "d", 30000, on_hb, &r[2]);
    wait_all(r, 3);
    uint64_t calls, beats;
    hbqueue_stats(q, &calls, &beats);
    assert_int_equal(calls, 1);
    assert_int_equal(r[0].err, 0);
    assert_int_equal(r[1].err, STORE_E_REPLY);
    assert_int_equal(r[2].err, 0);
    assert_int_equal(r[0].devices, 1);
    assert_int_equal(r[2].devices, 1);
    assert_int_equal(cmd2("EXISTS", "presence:wrongtype:d"), 0); /* nothing written for it */
    assert_int_equal(cmd2("EXISTS", "presence:ok-2:d"), 1);
    /* the single call reports it too */
    hb_res one = {0};
    assert_int_equal(store_heartbeat(st, rc, "wrongtype", "d", 1000, on_hb, &one), 0);
    wait_all(&one, 1);
    assert_int_equal(one.err, STORE_E_REPLY);
    hbqueue_free(q);
}

/* Bounds: batch_max splits a flush into several calls; queue_max counts queued and in-flight
 * heartbeats and refuses beyond; free gives queued heartbeats REDIS_E_CLOSED. */
static void test_queue_bounds(void **state)
{
    (void)state;
    hbqueue *q = queue_new(2, 5);
    hb_res r[7] = {{0}};
    char user[16];
    for (int i = 0; i < 5; i++) {
        snprintf(user, sizeof(user), "bd-%d", i);
        assert_int_equal(hbqueue_heartbeat(q, user, "d", 30000, on_hb, &r[i]), 0);
    }
    assert_int_equal(hbqueue_heartbeat(q, "bd-5", "d", 30000, on_hb, &r[5]), HBQUEUE_E_FULL);
    assert_int_equal(hbqueue_queued(q), 5);
    /* one iteration: all five sent (2 + 2 + 1), still counted while in flight */
    /* ONCE: with NONBLOCK alone libevent loops again after active events and may already
     * read the replies of a fast Redis */
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(hbqueue_queued(q), 0);
    assert_int_equal(hbqueue_inflight(q), 5);
    assert_int_equal(hbqueue_heartbeat(q, "bd-5", "d", 30000, on_hb, &r[5]), HBQUEUE_E_FULL);
    wait_all(r, 5);
    uint64_t calls, beats;
    hbqueue_stats(q, &calls, &beats);
    assert_int_equal(calls, 3);
    assert_int_equal(beats, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].err, 0);
        assert_int_equal(r[i].devices, 1);
    }
    assert_int_equal(r[5].done, 0);
    /* room again */
    assert_int_equal(hbqueue_heartbeat(q, "bd-5", "d", 30000, on_hb, &r[5]), 0);
    wait_all(&r[5], 1);
    assert_int_equal(r[5].err, 0);
    /* free with a queued heartbeat: its callback runs with REDIS_E_CLOSED */
    assert_int_equal(hbqueue_heartbeat(q, "bd-6", "d", 30000, on_hb, &r[6]), 0);
    hbqueue_free(q);
    assert_int_equal(r[6].done, 1);
    assert_int_equal(r[6].err, REDIS_E_CLOSED);
    ts_run_for(base, 50);
    assert_int_equal(r[6].done, 1);
    assert_int_equal(cmd2("EXISTS", "presence:bd-6:d"), 0);

    /* refusals at once: an id too long for a key, a client that is not connected */
    q = queue_new(128, 10);
    char longid[300];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    hb_res x = {0};
    assert_int_equal(hbqueue_heartbeat(q, longid, "d", 1000, on_hb, &x), STORE_E_INVALID);
    hbqueue_free(q);
    redis_config cfg;
    redis_config_init(&cfg);
    char dead[64];
    snprintf(dead, sizeof(dead), "127.0.0.1:%d", ts_free_port());
    cfg.url = dead;
    redis_client *down;
    assert_int_equal(redis_client_new(&down, base, &cfg), 0);
    assert_int_equal(hbqueue_new(&q, base, st, down, NULL), 0);
    assert_int_equal(hbqueue_heartbeat(q, "u", "d", 1000, on_hb, &x), REDIS_E_DISCONNECTED);
    ts_run_for(base, 20);
    assert_int_equal(x.done, 0);
    hbqueue_free(q);
    redis_client_free(down);
}

/* A flush whose call the client refuses (here: its in-flight limit) gives each heartbeat of
 * that call the error; a heartbeat queued by such a callback gets a flush of its own. */
typedef struct requeue {
    hbqueue *q;
    hb_res first, second;
} requeue;

static void on_hb_requeue(int err, int64_t exp, uint32_t devices, void *ud)
{
    requeue *rq = ud;
    on_hb(err, exp, devices, &rq->first);
    int rv = hbqueue_heartbeat(rq->q, "rq", "d", 30000, on_hb, &rq->second);
    if (rv != 0)
        on_hb(rv, 0, 0, &rq->second);
}

static void test_queue_flush_refused(void **state)
{
    (void)state;
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    cfg.max_inflight = 1;
    redis_client *c1;
    assert_int_equal(redis_client_new(&c1, base, &cfg), 0);
    for (int i = 0; i < 200 && !redis_client_connected(c1); i++)
        ts_run_for(base, 10);
    hbqueue_config qc;
    hbqueue_config_init(&qc);
    qc.batch_max = 1; /* two calls, but the client takes one at a time */
    hbqueue *q;
    assert_int_equal(hbqueue_new(&q, base, st, c1, &qc), 0);
    hb_res a = {0};
    requeue rq = {.q = q};
    assert_int_equal(hbqueue_heartbeat(q, "rf-a", "d", 30000, on_hb, &a), 0);
    assert_int_equal(hbqueue_heartbeat(q, "rf-b", "d", 30000, on_hb_requeue, &rq), 0);
    wait_all(&a, 1);
    wait_all(&rq.first, 1);
    assert_int_equal(a.err, 0);
    assert_int_equal(rq.first.err, REDIS_E_BUSY);
    /* the heartbeat queued from inside the refusal got a flush of its own (sent, or refused
     * again if rf-a's reply had not come back yet: the client takes one call at a time) */
    wait_all(&rq.second, 1);
    assert_true(rq.second.err == 0 || rq.second.err == REDIS_E_BUSY);
    assert_int_equal(cmd2("EXISTS", "presence:rf-b:d"), 0);
    assert_int_equal(cmd2("EXISTS", "presence:rq:d"), rq.second.err == 0);
    assert_int_equal(hbqueue_queued(q), 0);
    assert_int_equal(hbqueue_inflight(q), 0);
    hb_res again = {0};
    assert_int_equal(hbqueue_heartbeat(q, "rq", "d", 30000, on_hb, &again), 0);
    wait_all(&again, 1);
    assert_int_equal(again.err, 0);
    hbqueue_free(q);
    redis_client_free(c1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_heartbeats_results_in_order),
        cmocka_unit_test(test_queue_one_call_same_as_sequential),
        cmocka_unit_test(test_queue_duplicate_device),
        cmocka_unit_test(test_queue_eviction_in_batch),
        cmocka_unit_test(test_queue_error_per_item),
        cmocka_unit_test(test_queue_bounds),
        cmocka_unit_test(test_queue_flush_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
