/*
 * Tests of lib/snowflake.c: id layout, uniqueness under sequence overflow, clock steps back
 * and threads; and instance leases against a real redis-server (exclusive numbers, loss on
 * takeover and on Redis outage, high-water marks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "lib_servers.h"
#include "snowflake.h"

static const int64_t T0 = INT64_C(1767225600000); /* 2026-01-01T00:00:00Z */

static void test_epoch_and_layout(void **state)
{
    (void)state;
    /* 2024-01-01T00:00:00Z */
    assert_int_equal(SNOWFLAKE_EPOCH_MS, INT64_C(1704067200000));
    uint64_t id = snowflake_make(T0 + 123, 5, 99, 4000);
    assert_true((int64_t)id > 0);
    assert_int_equal(snowflake_unix_ms(id), T0 + 123);
    assert_int_equal(snowflake_site(id), 5);
    assert_int_equal(snowflake_instance(id), 99);
    assert_int_equal(snowflake_node(id), 5 * 128 + 99);
    assert_int_equal(snowflake_seq(id), 4000);
    /* Bit positions as documented: seq 0..11, instance 12..18, site 19..21, ts 22..62. */
    assert_int_equal(snowflake_make(SNOWFLAKE_EPOCH_MS, 0, 0, 1), 1);
    assert_int_equal(snowflake_make(SNOWFLAKE_EPOCH_MS, 0, 1, 0), UINT64_C(1) << 12);
    assert_int_equal(snowflake_make(SNOWFLAKE_EPOCH_MS, 1, 0, 0), UINT64_C(1) << 19);
    assert_int_equal(snowflake_make(SNOWFLAKE_EPOCH_MS + 1, 0, 0, 0), UINT64_C(1) << 22);
    /* Last representable ms keeps the sign bit clear. */
    int64_t last = SNOWFLAKE_EPOCH_MS + (INT64_C(1) << 41) - 1;
    assert_true((int64_t)snowflake_make(last, 7, 127, 4095) > 0);
    assert_true(snowflake_min_at(T0) < snowflake_make(T0, 0, 0, 1));
}

static void test_invalid_args(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 8, 0), SNOWFLAKE_E_INVALID);
    assert_int_equal(snowflake_new(&g, 0, 128), SNOWFLAKE_E_INVALID);
    assert_int_equal(snowflake_new(&g, 0, -2), SNOWFLAKE_E_INVALID);
    assert_int_equal(snowflake_new(&g, 7, SNOWFLAKE_NO_INSTANCE), 0);
    uint64_t id = 0;
    assert_int_equal(snowflake_next(g, &id), SNOWFLAKE_E_NO_INSTANCE);
    assert_int_equal(snowflake_set_instance(g, 200), SNOWFLAKE_E_INVALID);
    assert_int_equal(snowflake_set_instance(g, 3), 0);
    assert_int_equal(snowflake_next(g, &id), 0);
    assert_int_equal(snowflake_site(id), 7);
    assert_int_equal(snowflake_instance(id), 3);
    int64_t now = snowflake_wall_ms();
    assert_true(llabs(snowflake_unix_ms(id) - now) < 1000);
    assert_int_equal(snowflake_set_instance(g, SNOWFLAKE_NO_INSTANCE), 0);
    assert_int_equal(snowflake_next(g, &id), SNOWFLAKE_E_NO_INSTANCE);
    snowflake_free(g);
}

static void test_sequence_overflow_borrows_next_ms(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 1, 2), 0);
    uint64_t prev = 0, id = 0;
    for (unsigned i = 0; i < 4096; i++) {
        assert_int_equal(snowflake_next_at(g, T0, &id), 0);
        assert_int_equal(snowflake_unix_ms(id), T0);
        assert_int_equal(snowflake_seq(id), i);
        assert_true(id > prev);
        prev = id;
    }
    /* The 4097th id in the same ms moves to the next ms logically (no sleep). */
    assert_int_equal(snowflake_next_at(g, T0, &id), 0);
    assert_int_equal(snowflake_unix_ms(id), T0 + 1);
    assert_int_equal(snowflake_seq(id), 0);
    assert_true(id > prev);
    assert_int_equal(snowflake_drift_ms(g, T0), 1);
    /* When the clock catches up, sequences restart at 0 of the new ms. */
    assert_int_equal(snowflake_next_at(g, T0 + 5, &id), 0);
    assert_int_equal(snowflake_unix_ms(id), T0 + 5);
    assert_int_equal(snowflake_seq(id), 0);
    assert_int_equal(snowflake_drift_ms(g, T0 + 5), 0);
    snowflake_free(g);
}

static void test_clock_step_back_never_repeats(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 0, 1), 0);
    uint64_t a = 0, b = 0, c = 0;
    assert_int_equal(snowflake_next_at(g, T0 + 10000, &a), 0);
    /* Clock jumps back 10 s: ids continue on the logical timestamp. */
    assert_int_equal(snowflake_next_at(g, T0, &b), 0);
    assert_true(b > a);
    assert_int_equal(snowflake_unix_ms(b), T0 + 10000);
    assert_int_equal(snowflake_seq(b), 1);
    assert_int_equal(snowflake_drift_ms(g, T0), 10000);
    /* With a drift limit the generator refuses instead, and consumes nothing. */
    snowflake_set_max_drift(g, 5000);
    assert_int_equal(snowflake_next_at(g, T0, &c), SNOWFLAKE_E_CLOCK);
    assert_int_equal(snowflake_next_at(g, T0 + 6000, &c), 0);
    assert_int_equal(snowflake_seq(c), 2);
    snowflake_set_max_drift(g, 0);
    assert_int_equal(snowflake_next_at(g, T0 - 99999, &c), 0);
    assert_int_equal(snowflake_seq(c), 3);
    /* A clock before the epoch still yields increasing ids. */
    uint64_t d = 0;
    assert_int_equal(snowflake_next_at(g, 0, &d), 0);
    assert_true(d > c);
    snowflake_free(g);
}

static void test_advance_to(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 0, 1), 0);
    snowflake_advance_to(g, T0 + 500);
    assert_int_equal(snowflake_logical_ms(g), T0 + 499);
    uint64_t id = 0;
    assert_int_equal(snowflake_next_at(g, T0, &id), 0);
    assert_int_equal(snowflake_unix_ms(id), T0 + 500);
    assert_int_equal(snowflake_seq(id), 0);
    snowflake_advance_to(g, T0); /* never lowers */
    assert_int_equal(snowflake_next_at(g, T0, &id), 0);
    assert_int_equal(snowflake_unix_ms(id), T0 + 500);
    assert_int_equal(snowflake_seq(id), 1);
    snowflake_free(g);
}

#define THREADS 4
#define PER_THREAD 50000

typedef struct worker {
    snowflake *g;
    uint64_t *ids;
} worker;

static void *gen_many(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++)
        if (snowflake_next(w->g, &w->ids[i]) != 0)
            w->ids[i] = 0;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_threads_unique(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 2, 17), 0);
    uint64_t *all = calloc((size_t)THREADS * PER_THREAD, sizeof(uint64_t));
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].g = g;
        w[i].ids = all + (size_t)i * PER_THREAD;
        assert_int_equal(pthread_create(&th[i], NULL, gen_many, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    /* Each thread sees increasing ids. */
    for (int i = 0; i < THREADS; i++)
        for (int k = 1; k < PER_THREAD; k++)
            assert_true(w[i].ids[k] > w[i].ids[k - 1]);
    qsort(all, (size_t)THREADS * PER_THREAD, sizeof(uint64_t), cmp_u64);
    assert_true(all[0] != 0);
    for (size_t k = 1; k < (size_t)THREADS * PER_THREAD; k++)
        assert_true(all[k] != all[k - 1]);
    free(all);
    snowflake_free(g);
}

/* --- leases against Redis --------------------------------------------------------------- */

static ts_redis srv;
static struct event_base *base;
static redis_client *rc;

static int redis_setup(void **state)
{
    (void)state;
    if (srv.pid == 0 && !ts_redis_start(&srv))
        return -1;
    base = event_base_new();
    redis_config cfg;
    redis_config_init(&cfg);
    char url[64];
    snprintf(url, sizeof(url), "127.0.0.1:%d", srv.port);
    cfg.url = url;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 100;
    cfg.command_timeout_ms = 300;
    return redis_client_new(&rc, base, &cfg);
}

static int redis_teardown(void **state)
{
    (void)state;
    redis_client_free(rc);
    rc = NULL;
    event_base_free(base);
    base = NULL;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_redis_cleanup(&srv);
    return 0;
}

typedef struct lease_events {
    int acquired; /* ACQUIRED count */
    int lost;     /* LOST count */
    int last;     /* last instance reported */
    int lost_instance;
} lease_events;

static void on_lease(snowflake_lease *l, snowflake_lease_event ev, int instance, void *ud)
{
    (void)l;
    lease_events *e = ud;
    if (ev == SNOWFLAKE_LEASE_ACQUIRED) {
        e->acquired++;
        e->last = instance;
    } else {
        e->lost++;
        e->lost_instance = instance;
    }
}

typedef struct reply_box {
    int n;
    char str[64];
    long long integer;
    int type;
} reply_box;

static void box_reply(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    reply_box *b = ud;
    b->type = status == 0 ? r->type : -1;
    b->str[0] = '\0';
    if (status == 0 && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        snprintf(b->str, sizeof(b->str), "%.*s", (int)r->len, r->str);
    if (status == 0 && r->type == REDIS_REPLY_INTEGER)
        b->integer = r->integer;
    b->n++;
}

static void redis_do(reply_box *b, int argc, const char **argv)
{
    int before = b->n;
    /* The client may still be (re)connecting: retry until the command is accepted. */
    long long end = ts_now_ms() + 5000;
    while (redis_client_command(rc, argc, argv, NULL, box_reply, b) != 0 && ts_now_ms() < end)
        ts_run_for(base, 20);
    assert_true(ts_wait_for(base, &b->n, before + 1, 5000));
}

static snowflake_lease_config test_cfg(unsigned first, unsigned count)
{
    snowflake_lease_config cfg;
    snowflake_lease_config_init(&cfg);
    cfg.ttl_ms = 1000;
    cfg.retry_ms = 50;
    cfg.first_instance = first;
    cfg.instance_count = count;
    cfg.key_prefix = "t-sf";
    return cfg;
}

static void test_lease_exclusive_numbers(void **state)
{
    (void)state;
    snowflake *g1 = NULL, *g2 = NULL, *g3 = NULL;
    assert_int_equal(snowflake_new(&g1, 3, SNOWFLAKE_NO_INSTANCE), 0);
    assert_int_equal(snowflake_new(&g2, 3, SNOWFLAKE_NO_INSTANCE), 0);
    assert_int_equal(snowflake_new(&g3, 3, SNOWFLAKE_NO_INSTANCE), 0);
    snowflake_lease_config cfg = test_cfg(10, 2);
    lease_events e1 = {0}, e2 = {0}, e3 = {0};
    snowflake_lease *l1 = NULL, *l2 = NULL, *l3 = NULL;
    cfg.owner = "owner-1";
    assert_int_equal(snowflake_lease_new(&l1, base, rc, g1, &cfg, on_lease, &e1), 0);
    cfg.owner = "owner-2";
    assert_int_equal(snowflake_lease_new(&l2, base, rc, g2, &cfg, on_lease, &e2), 0);
    assert_true(ts_wait_for(base, &e1.acquired, 1, 5000));
    assert_true(ts_wait_for(base, &e2.acquired, 1, 5000));
    assert_true(e1.last == 10 || e1.last == 11);
    assert_true(e2.last == 10 || e2.last == 11);
    assert_int_not_equal(e1.last, e2.last);
    assert_int_equal(snowflake_lease_instance(l1), e1.last);
    uint64_t id = 0;
    assert_int_equal(snowflake_next(g1, &id), 0);
    assert_int_equal(snowflake_instance(id), e1.last);
    assert_int_equal(snowflake_site(id), 3);

    /* The key holds the owner, with a TTL. */
    reply_box b = {0};
    char key[64];
    snprintf(key, sizeof(key), "t-sf:lease:3:%d", e1.last);
    const char *get[] = {"GET", key};
    redis_do(&b, 2, get);
    assert_string_equal(b.str, "owner-1");
    const char *pttl[] = {"PTTL", key};
    redis_do(&b, 2, pttl);
    assert_true(b.integer > 0 && b.integer <= 1000);

    /* A third generator finds no free number and waits; renewals keep the others alive. */
    cfg.owner = "owner-3";
    assert_int_equal(snowflake_lease_new(&l3, base, rc, g3, &cfg, on_lease, &e3), 0);
    ts_run_for(base, 1500); /* longer than the TTL: renewals must have happened */
    assert_int_equal(e3.acquired, 0);
    assert_int_equal(snowflake_next(g3, &id), SNOWFLAKE_E_NO_INSTANCE);
    assert_int_equal(e1.lost + e2.lost, 0);
    assert_int_equal(snowflake_next(g1, &id), 0);

    /* Releasing one hands its number over; the new holder starts after the old one's ids. */
    int freed_number = e1.last;
    uint64_t last_of_g1 = 0;
    snowflake_advance_to(g1, snowflake_wall_ms() + 3000); /* g1 ran ahead of the clock */
    assert_int_equal(snowflake_next(g1, &last_of_g1), 0);
    snowflake_lease_free(l1);
    assert_int_equal(snowflake_next(g1, &id), SNOWFLAKE_E_NO_INSTANCE);
    assert_true(ts_wait_for(base, &e3.acquired, 1, 5000));
    assert_int_equal(e3.last, freed_number);
    uint64_t first_of_g3 = 0;
    assert_int_equal(snowflake_next(g3, &first_of_g3), 0);
    assert_true(snowflake_unix_ms(first_of_g3) > snowflake_unix_ms(last_of_g1));
    /* Clean release: no TTL-sized jump beyond the recorded mark. */
    assert_true(snowflake_unix_ms(first_of_g3) <= snowflake_unix_ms(last_of_g1) + 50);

    snowflake_lease_free(l2);
    snowflake_lease_free(l3);
    ts_run_for(base, 50);
    snowflake_free(g1);
    snowflake_free(g2);
    snowflake_free(g3);
}

static void test_lease_lost_on_takeover(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 4, SNOWFLAKE_NO_INSTANCE), 0);
    snowflake_lease_config cfg = test_cfg(20, 1);
    cfg.owner = "victim";
    lease_events e = {0};
    snowflake_lease *l = NULL;
    assert_int_equal(snowflake_lease_new(&l, base, rc, g, &cfg, on_lease, &e), 0);
    assert_true(ts_wait_for(base, &e.acquired, 1, 5000));
    assert_int_equal(e.last, 20);
    /* Someone else overwrites the key: the next renewal notices and stops the generator. */
    reply_box b = {0};
    const char *steal[] = {"SET", "t-sf:lease:4:20", "thief", "PX", "800"};
    redis_do(&b, 5, steal);
    assert_true(ts_wait_for(base, &e.lost, 1, 2000));
    assert_int_equal(e.lost_instance, 20);
    uint64_t id = 0;
    assert_int_equal(snowflake_next(g, &id), SNOWFLAKE_E_NO_INSTANCE);
    assert_int_equal(snowflake_lease_instance(l), SNOWFLAKE_NO_INSTANCE);
    /* The high-water mark written while we held it carries no clean-release mark. */
    const char *gethw[] = {"GET", "t-sf:hw:4:20"};
    redis_do(&b, 2, gethw);
    assert_null(strchr(b.str, ':'));
    long long hw = atoll(b.str);
    assert_true(hw > T0);
    /* When the thief's key expires the number comes back, after its possible ids: an unclean
     * takeover starts at least a TTL after the recorded mark. */
    assert_true(ts_wait_for(base, &e.acquired, 2, 5000));
    assert_int_equal(snowflake_next(g, &id), 0);
    assert_int_equal(snowflake_instance(id), 20);
    assert_true(snowflake_unix_ms(id) >= hw + 1000 + 1);
    snowflake_lease_free(l);
    ts_run_for(base, 50);
    snowflake_free(g);
}

static void free_in_lease_cb(snowflake_lease *l, snowflake_lease_event ev, int instance, void *ud)
{
    (void)instance;
    int *n = ud;
    (*n)++;
    if (ev == SNOWFLAKE_LEASE_ACQUIRED)
        snowflake_lease_free(l);
}

static void test_lease_free_in_callback(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 5, SNOWFLAKE_NO_INSTANCE), 0);
    snowflake_lease_config cfg = test_cfg(30, 1);
    int n = 0;
    snowflake_lease *l = NULL;
    assert_int_equal(snowflake_lease_new(&l, base, rc, g, &cfg, free_in_lease_cb, &n), 0);
    assert_true(ts_wait_for(base, &n, 1, 5000));
    uint64_t id = 0;
    assert_int_equal(snowflake_next(g, &id), SNOWFLAKE_E_NO_INSTANCE);
    /* The release went out: the key is gone and the mark says clean. */
    ts_run_for(base, 50);
    reply_box b = {0};
    const char *exists[] = {"EXISTS", "t-sf:lease:5:30"};
    redis_do(&b, 2, exists);
    assert_int_equal(b.integer, 0);
    const char *hw[] = {"GET", "t-sf:hw:5:30"};
    redis_do(&b, 2, hw);
    assert_non_null(strstr(b.str, ":c"));
    snowflake_free(g);
}

static void test_lease_lost_when_redis_down(void **state)
{
    (void)state;
    snowflake *g = NULL;
    assert_int_equal(snowflake_new(&g, 6, SNOWFLAKE_NO_INSTANCE), 0);
    snowflake_lease_config cfg = test_cfg(40, 1);
    lease_events e = {0};
    snowflake_lease *l = NULL;
    assert_int_equal(snowflake_lease_new(&l, base, rc, g, &cfg, on_lease, &e), 0);
    assert_true(ts_wait_for(base, &e.acquired, 1, 5000));
    long long t0 = ts_now_ms();
    ts_redis_stop(&srv, true);
    /* No renewal can succeed: the generator stops before the TTL (1 s) could run out. */
    assert_true(ts_wait_for(base, &e.lost, 1, 3000));
    assert_true(ts_now_ms() - t0 <= 1000);
    uint64_t id = 0;
    assert_int_equal(snowflake_next(g, &id), SNOWFLAKE_E_NO_INSTANCE);
    assert_true(ts_redis_start(&srv));
    assert_true(ts_wait_for(base, &e.acquired, 2, 10000));
    assert_int_equal(snowflake_next(g, &id), 0);
    snowflake_lease_free(l);
    ts_run_for(base, 50);
    snowflake_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch_and_layout),
        cmocka_unit_test(test_invalid_args),
        cmocka_unit_test(test_sequence_overflow_borrows_next_ms),
        cmocka_unit_test(test_clock_step_back_never_repeats),
        cmocka_unit_test(test_advance_to),
        cmocka_unit_test(test_threads_unique),
        cmocka_unit_test_setup_teardown(test_lease_exclusive_numbers, redis_setup, redis_teardown),
        cmocka_unit_test_setup_teardown(test_lease_lost_on_takeover, redis_setup, redis_teardown),
        cmocka_unit_test_setup_teardown(test_lease_free_in_callback, redis_setup, redis_teardown),
        cmocka_unit_test_setup_teardown(test_lease_lost_when_redis_down, redis_setup,
                                        redis_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
