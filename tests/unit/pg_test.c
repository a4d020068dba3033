/*
 * Tests of lib/pg.c against a real PostgreSQL 15 started by the test on a free loopback port
 * in a temp dir: parameters (text and binary), server errors, the bounded wait queue and its
 * timeout, parallel connections, held connections for transactions (commit, implicit
 * rollback on release), multi-host conninfo, reconnect after backend termination and after a
 * server restart, and freeing from a callback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <endian.h>

#include "lib_servers.h"
#include "pg.h"

static ts_pg srv;
static struct event_base *base;
static char conninfo[256];

static int group_setup(void **state)
{
    (void)state;
    if (!ts_pg_start(&srv)) {
        fprintf(stderr, "could not start PostgreSQL 15 from %s\n", TS_PG_BIN);
        return -1;
    }
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5", srv.port);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_pg_cleanup(&srv);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    return base ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    /* A pool freed while a host name lookup was in flight cancels it; libevent runs the
     * cancelled lookup's callback (which frees its state) from the loop, deferred. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
    base = NULL;
    return 0;
}

static pg_pool *new_pool(const char *ci, unsigned size, size_t max_queue, uint32_t qtimeout)
{
    pg_config cfg;
    pg_config_init(&cfg);
    cfg.conninfo = ci;
    cfg.size = size;
    if (max_queue)
        cfg.max_queue = max_queue;
    cfg.queue_timeout_ms = qtimeout;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 200;
    pg_pool *p = NULL;
    assert_int_equal(pg_pool_new(&p, base, &cfg), 0);
    return p;
}

typedef struct got {
    int n;             /* callbacks */
    int err[16];       /* their err */
    int status[16];    /* PQresultStatus or -1 */
    char val[16][64];  /* first value (text) */
    char state[16][8]; /* SQLSTATE of errors */
    long long ms[16];  /* when it arrived */
} got;

static void collect(pg_pool *p, PGresult *res, int err, void *ud)
{
    (void)p;
    got *g = ud;
    int i = g->n < 16 ? g->n : 15;
    g->err[i] = err;
    g->status[i] = res ? (int)PQresultStatus(res) : -1;
    g->val[i][0] = '\0';
    g->state[i][0] = '\0';
    g->ms[i] = ts_now_ms();
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 &&
        !PQgetisnull(res, 0, 0))
        snprintf(g->val[i], sizeof(g->val[i]), "%s", PQgetvalue(res, 0, 0));
    if (res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
        const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(g->state[i], sizeof(g->state[i]), "%s", s ? s : "");
    }
    g->n++;
}

static void run_sql(pg_pool *p, const char *sql, got *g)
{
    int before = g->n;
    assert_int_equal(pg_pool_query(p, sql, NULL, collect, g), 0);
    assert_true(ts_wait_for(base, &g->n, before + 1, 10000));
}

static void test_bad_config(void **state)
{
    (void)state;
    pg_config cfg;
    pg_config_init(&cfg);
    pg_pool *p = NULL;
    assert_int_equal(pg_pool_new(&p, base, &cfg), PG_E_INVALID);
    cfg.conninfo = "host=127.0.0.1 nosuchoption=1";
    assert_int_equal(pg_pool_new(&p, base, &cfg), PG_E_INVALID);
    assert_null(p);
    assert_string_equal(pg_strerror(PG_E_BUSY), "too many PostgreSQL queries waiting");
}

static void test_params_text_and_binary(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 2, 0, 5000);
    got g = {0};
    const char *vals[] = {"41", "hé"};
    pg_params tp = {.n = 2, .values = vals};
    assert_int_equal(
        pg_pool_query(p, "SELECT ($1::int + 1)::text || ':' || $2::text", &tp, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 1, 10000));
    assert_int_equal(g.err[0], 0);
    assert_int_equal(g.status[0], PGRES_TUPLES_OK);
    assert_string_equal(g.val[0], "42:hé");

    /* SQL NULL parameter. */
    const char *nul[] = {NULL};
    pg_params np = {.n = 1, .values = nul};
    assert_int_equal(pg_pool_query(p, "SELECT coalesce($1::text, 'was-null')", &np, collect, &g),
                     0);
    assert_true(ts_wait_for(base, &g.n, 2, 10000));
    assert_string_equal(g.val[1], "was-null");

    pg_pool_free(p);
}

/* Checks a binary int8 result exactly. */
static void check_binary(pg_pool *p, PGresult *res, int err, void *ud)
{
    (void)p;
    long long *v = ud;
    if (err == 0 && res && PQresultStatus(res) == PGRES_TUPLES_OK && PQfformat(res, 0) == 1 &&
        PQgetlength(res, 0, 0) == 8) {
        uint64_t be;
        memcpy(&be, PQgetvalue(res, 0, 0), 8);
        *v = (long long)be64toh(be);
    } else {
        *v = -1;
    }
}

static void test_binary_result(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 1, 0, 5000);
    uint64_t be = htobe64((uint64_t)1234567890123LL);
    const char *bvals[] = {(const char *)&be};
    int lens[] = {8};
    int fmts[] = {1};
    Oid types[] = {20};
    pg_params bp = {.n = 1,
                    .types = types,
                    .values = bvals,
                    .lengths = lens,
                    .formats = fmts,
                    .result_format = 1};
    long long v = 0;
    assert_int_equal(pg_pool_query(p, "SELECT $1 + 1", &bp, check_binary, &v), 0);
    be = 0; /* the pool copied the parameter */
    long long end = ts_now_ms() + 10000;
    while (v == 0 && ts_now_ms() < end)
        ts_run_for(base, 10);
    assert_int_equal(v, 1234567890124LL);
    pg_pool_free(p);
}

static void test_server_error_is_a_result(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 1, 0, 5000);
    got g = {0};
    run_sql(p, "SELECT 1/0", &g);
    assert_int_equal(g.err[0], 0);
    assert_int_equal(g.status[0], PGRES_FATAL_ERROR);
    assert_string_equal(g.state[0], "22012");
    /* The connection is fine afterwards. */
    run_sql(p, "SELECT 'still ok'", &g);
    assert_string_equal(g.val[1], "still ok");
    pg_pool_free(p);
}

static void test_queue_bound_and_timeout(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 1, 2, 300);
    got warm = {0};
    run_sql(p, "SELECT 1", &warm);
    got g = {0};
    long long t0 = ts_now_ms();
    assert_int_equal(pg_pool_query(p, "SELECT pg_sleep(1)", NULL, collect, &g), 0);
    assert_int_equal(pg_pool_query(p, "SELECT 'q1'", NULL, collect, &g), 0);
    assert_int_equal(pg_pool_query(p, "SELECT 'q2'", NULL, collect, &g), 0);
    assert_int_equal(pg_pool_queued(p), 2);
    assert_int_equal(pg_pool_query(p, "SELECT 'q3'", NULL, collect, &g), PG_E_BUSY);
    assert_true(ts_wait_for(base, &g.n, 3, 10000));
    /* The two waiting ones time out first, then the sleep finishes. */
    assert_int_equal(g.err[0], PG_E_TIMEOUT);
    assert_int_equal(g.err[1], PG_E_TIMEOUT);
    assert_true(g.ms[0] - t0 >= 250 && g.ms[0] - t0 < 900);
    assert_int_equal(g.err[2], 0);
    assert_int_equal(g.status[2], PGRES_TUPLES_OK);
    assert_int_equal(pg_pool_queued(p), 0);
    pg_pool_free(p);
}

static void test_parallel_connections(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 4, 0, 10000);
    got g = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pg_pool_query(p,
                                       "SELECT pg_backend_pid()::text || ':' || "
                                       "pg_sleep(0.3)::text",
                                       NULL, collect, &g),
                         0);
    assert_true(ts_wait_for(base, &g.n, 4, 10000));
    assert_int_equal(pg_pool_connected(p), 4);
    /* Four different backends served them: the queries ran in parallel. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g.err[i], 0);
        for (int k = 0; k < i; k++)
            assert_string_not_equal(g.val[i], g.val[k]);
    }
    pg_pool_free(p);
}

typedef struct txn {
    pg_conn *conn; /* held connection */
    int acquired;  /* acquire callbacks */
    int err;       /* acquire error */
} txn;

static void on_acquire(pg_pool *p, pg_conn *conn, int err, void *ud)
{
    (void)p;
    txn *t = ud;
    t->conn = conn;
    t->err = err;
    t->acquired++;
}

static void conn_sql(pg_conn *c, const char *sql, got *g)
{
    int before = g->n;
    assert_int_equal(pg_conn_query(c, sql, NULL, collect, g), 0);
    assert_true(ts_wait_for(base, &g->n, before + 1, 10000));
    assert_int_equal(g->err[before], 0);
}

static void test_transactions(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 1, 0, 10000);
    got g = {0};
    run_sql(p, "CREATE TABLE IF NOT EXISTS t_txn (k text PRIMARY KEY)", &g);
    assert_int_equal(g.status[0], PGRES_COMMAND_OK);

    txn t = {0};
    assert_int_equal(pg_pool_acquire(p, on_acquire, &t), 0);
    assert_true(ts_wait_for(base, &t.acquired, 1, 10000));
    assert_non_null(t.conn);
    assert_ptr_equal(pg_conn_pool(t.conn), p);
    conn_sql(t.conn, "BEGIN", &g);
    conn_sql(t.conn, "INSERT INTO t_txn VALUES ('committed')", &g);
    /* One at a time on a held connection. */
    got busy = {0};
    assert_int_equal(pg_conn_query(t.conn, "SELECT pg_sleep(0.2)", NULL, collect, &busy), 0);
    assert_int_equal(pg_conn_query(t.conn, "SELECT 1", NULL, collect, &busy), PG_E_BUSY);
    assert_true(ts_wait_for(base, &busy.n, 1, 10000));
    /* While held, pool queries wait (the pool has one connection). */
    got waiting = {0};
    assert_int_equal(pg_pool_query(p, "SELECT count(*)::text FROM t_txn", NULL, collect, &waiting),
                     0);
    ts_run_for(base, 200);
    assert_int_equal(waiting.n, 0);
    conn_sql(t.conn, "COMMIT", &g);
    pg_conn_release(t.conn);
    assert_true(ts_wait_for(base, &waiting.n, 1, 10000));
    assert_string_equal(waiting.val[0], "1");

    /* An unfinished transaction is rolled back on release. */
    txn t2 = {0};
    assert_int_equal(pg_pool_acquire(p, on_acquire, &t2), 0);
    assert_true(ts_wait_for(base, &t2.acquired, 1, 10000));
    conn_sql(t2.conn, "BEGIN", &g);
    conn_sql(t2.conn, "INSERT INTO t_txn VALUES ('abandoned')", &g);
    pg_conn_release(t2.conn);
    got after = {0};
    run_sql(p, "SELECT string_agg(k, ',' ORDER BY k) FROM t_txn", &after);
    assert_string_equal(after.val[0], "committed");
    /* And a failed one (INERROR) too: the next user of the connection is not stuck. */
    txn t3 = {0};
    assert_int_equal(pg_pool_acquire(p, on_acquire, &t3), 0);
    assert_true(ts_wait_for(base, &t3.acquired, 1, 10000));
    conn_sql(t3.conn, "BEGIN", &g);
    conn_sql(t3.conn, "SELECT 1/0", &g);
    pg_conn_release(t3.conn);
    run_sql(p, "SELECT 'usable'", &after);
    assert_string_equal(after.val[1], "usable");
    pg_pool_free(p);
}

static void test_multi_host_read_write(void **state)
{
    (void)state;
    char ci[256];
    int dead = ts_free_port();
    snprintf(ci, sizeof(ci),
             "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
             "target_session_attrs=read-write",
             dead, srv.port);
    pg_pool *p = new_pool(ci, 1, 0, 10000);
    got g = {0};
    run_sql(p, "SELECT current_setting('port')", &g);
    assert_int_equal(g.err[0], 0);
    char want[16];
    snprintf(want, sizeof(want), "%d", srv.port);
    assert_string_equal(g.val[0], want);
    pg_pool_free(p);
}

/* A pool freed while its name lookup is still in flight (a name no hosts file has, so evdns
 * asks a nameserver) leaks nothing under ASan once the loop has run the cancelled lookup's
 * deferred callback (teardown). */
static void test_free_while_resolving(void **state)
{
    (void)state;
    pg_pool *p = new_pool("host=pg-test-never-resolves.invalid user=postgres", 2, 0, 10000);
    struct timeval tv = {0, 20000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    pg_pool_free(p);
}

static void test_host_names_resolved_without_blocking(void **state)
{
    (void)state;
    /* A URI with a name: resolved with evdns, then connected through hostaddr. */
    char ci[256];
    snprintf(ci, sizeof(ci), "postgresql://postgres@localhost:%d/postgres", srv.port);
    pg_pool *p = new_pool(ci, 1, 0, 10000);
    got g = {0};
    run_sql(p, "SELECT inet_server_addr()::text", &g);
    assert_int_equal(g.err[0], 0);
    assert_string_equal(g.val[0], "127.0.0.1/32");
    pg_pool_free(p);

    /* Names with per-host ports, the first dead: libpq still walks the list. */
    snprintf(ci, sizeof(ci),
             "host=localhost,localhost port=%d,%d user=postgres dbname=postgres "
             "target_session_attrs=read-write",
             ts_free_port(), srv.port);
    p = new_pool(ci, 1, 0, 10000);
    got g2 = {0};
    run_sql(p, "SELECT 'via names'", &g2);
    assert_int_equal(g2.err[0], 0);
    assert_string_equal(g2.val[0], "via names");
    pg_pool_free(p);

    /* A name that does not resolve never connects; queries time out in the queue. */
    p = new_pool("host=no-such-host.invalid user=postgres connect_timeout=2", 1, 0, 500);
    got g3 = {0};
    run_sql(p, "SELECT 1", &g3);
    assert_int_equal(g3.err[0], PG_E_TIMEOUT);
    pg_pool_free(p);
}

static void test_unreachable_times_out(void **state)
{
    (void)state;
    char ci[128];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d user=postgres", ts_free_port());
    pg_pool *p = new_pool(ci, 2, 0, 300);
    got g = {0};
    run_sql(p, "SELECT 1", &g);
    assert_int_equal(g.err[0], PG_E_TIMEOUT);
    assert_int_equal(pg_pool_connected(p), 0);
    pg_pool_free(p);
}

static void test_backend_killed_reconnects(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 1, 0, 10000);
    pg_pool *admin = new_pool(conninfo, 1, 0, 10000);
    got g = {0};
    run_sql(p, "SELECT pg_backend_pid()::text", &g);
    char pid[64];
    snprintf(pid, sizeof(pid), "%s", g.val[0]);
    const char *vals[] = {pid};
    pg_params prm = {.n = 1, .values = vals};
    got a = {0};
    assert_int_equal(
        pg_pool_query(admin, "SELECT pg_terminate_backend($1::int)::text", &prm, collect, &a), 0);
    assert_true(ts_wait_for(base, &a.n, 1, 10000));
    assert_string_equal(a.val[0], "true");
    /* The idle connection notices, reconnects, and the next query runs on a new backend. */
    long long end = ts_now_ms() + 10000;
    char newpid[64] = "";
    while (ts_now_ms() < end) {
        got r = {0};
        assert_int_equal(pg_pool_query(p, "SELECT pg_backend_pid()::text", NULL, collect, &r), 0);
        assert_true(ts_wait_for(base, &r.n, 1, 10000));
        if (r.err[0] == 0 && r.status[0] == PGRES_TUPLES_OK) {
            snprintf(newpid, sizeof(newpid), "%s", r.val[0]);
            break;
        }
        ts_run_for(base, 20);
    }
    assert_true(newpid[0] != '\0');
    assert_string_not_equal(newpid, pid);
    pg_pool_free(admin);
    pg_pool_free(p);
}

static void test_server_restart(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 2, 0, 500);
    got g = {0};
    run_sql(p, "SELECT 'before'", &g);
    assert_string_equal(g.val[0], "before");
    got slow = {0};
    assert_int_equal(pg_pool_query(p, "SELECT pg_sleep(5)", NULL, collect, &slow), 0);
    ts_run_for(base, 100);
    ts_pg_stop(&srv, true);
    /* The running query fails with a connection error (or a server error result sent by the
     * shutting-down backend), never hangs. */
    assert_true(ts_wait_for(base, &slow.n, 1, 10000));
    assert_true(slow.err[0] == PG_E_CONNECTION ||
                (slow.err[0] == 0 && slow.status[0] == PGRES_FATAL_ERROR));
    got during = {0};
    run_sql(p, "SELECT 1", &during);
    assert_true(during.err[0] == PG_E_TIMEOUT || during.err[0] == PG_E_CONNECTION);
    assert_true(ts_pg_start(&srv));
    long long end = ts_now_ms() + 15000;
    int ok = 0;
    while (!ok && ts_now_ms() < end) {
        got r = {0};
        assert_int_equal(pg_pool_query(p, "SELECT 'after'", NULL, collect, &r), 0);
        assert_true(ts_wait_for(base, &r.n, 1, 10000));
        ok = r.err[0] == 0 && strcmp(r.val[0], "after") == 0;
        if (!ok)
            ts_run_for(base, 50);
    }
    assert_true(ok);
    pg_pool_free(p);
}

typedef struct free_ctx {
    pg_pool *p; /* freed in the first callback */
    int n;      /* callbacks */
    int err[4]; /* errors in order */
} free_ctx;

static void free_in_cb(pg_pool *p, PGresult *res, int err, void *ud)
{
    (void)res;
    free_ctx *f = ud;
    f->err[f->n++] = err;
    if (f->p == p) {
        f->p = NULL;
        pg_pool_free(p);
        assert_int_equal(pg_pool_query(p, "SELECT 1", NULL, NULL, NULL), PG_E_CLOSED);
    }
}

static void test_free_inside_callback(void **state)
{
    (void)state;
    pg_pool *p = new_pool(conninfo, 2, 0, 10000);
    free_ctx f = {.p = p};
    assert_int_equal(pg_pool_query(p, "SELECT 1", NULL, free_in_cb, &f), 0);
    assert_int_equal(pg_pool_query(p, "SELECT pg_sleep(2)", NULL, free_in_cb, &f), 0);
    assert_int_equal(pg_pool_query(p, "SELECT 3", NULL, free_in_cb, &f), 0);
    assert_true(ts_wait_for(base, &f.n, 3, 10000));
    assert_int_equal(f.err[0], 0);
    assert_int_equal(f.err[1], PG_E_CLOSED);
    assert_int_equal(f.err[2], PG_E_CLOSED);
    ts_run_for(base, 50);
    assert_int_equal(f.n, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_while_resolving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_params_text_and_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_error_is_a_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multi_host_read_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_names_resolved_without_blocking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_killed_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
