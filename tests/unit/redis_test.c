/*
 * Tests of lib/redis.c against a real redis-server started on a free loopback port:
 * commands, in-flight limit, refusal while disconnected, EVALSHA fallback, command timeout,
 * reconnect after a server kill, free from a callback, AUTH/SELECT from the URL, and pub/sub
 * with resubscription after a restart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib_servers.h"
#include "redis.h"

static ts_redis srv;
static struct event_base *base;
static char url[128];

static int group_setup(void **state)
{
    (void)state;
    if (!ts_redis_start(&srv)) {
        fprintf(stderr, "redis-server not available\n");
        return -1;
    }
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv.port);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_redis_cleanup(&srv);
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
    event_base_free(base);
    base = NULL;
    return 0;
}

/* Collects replies. */
typedef struct got {
    int n;              /* callbacks so far */
    int status[16];     /* their status */
    int type[16];       /* reply type or -1 */
    long long ints[16]; /* integer replies */
    char str[16][64];   /* string replies (truncated) */
    size_t len[16];     /* string lengths */
} got;

static void collect(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    got *g = ud;
    int i = g->n < 16 ? g->n : 15;
    g->status[i] = status;
    g->type[i] = r ? r->type : -1;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
              r->type == REDIS_REPLY_ERROR)) {
        size_t n = r->len < 63 ? r->len : 63;
        memcpy(g->str[i], r->str, n);
        g->str[i][n] = '\0';
        g->len[i] = r->len;
    }
    if (r && r->type == REDIS_REPLY_INTEGER)
        g->ints[i] = r->integer;
    g->n++;
}

typedef struct conn_events {
    int up;       /* on_connect count */
    int down;     /* on_disconnect count */
    int last_err; /* last on_disconnect error */
} conn_events;

static void on_up(redis_client *c, void *ud)
{
    (void)c;
    ((conn_events *)ud)->up++;
}

static void on_down(redis_client *c, int err, void *ud)
{
    (void)c;
    conn_events *e = ud;
    e->down++;
    e->last_err = err;
}

static redis_client *new_client(const char *u, conn_events *ev, uint32_t max_inflight)
{
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = u;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 100;
    if (max_inflight)
        cfg.max_inflight = max_inflight;
    redis_client *c = NULL;
    assert_int_equal(redis_client_new(&c, base, &cfg), 0);
    redis_client_callbacks cbs = {.on_connect = on_up, .on_disconnect = on_down};
    if (ev)
        redis_client_set_callbacks(c, &cbs, ev);
    return c;
}

static void test_bad_urls(void **state)
{
    (void)state;
    const char *bad[] = {
        "",         "redis://", "redis://:6379",          "host:0",          "host:99999",
        "host:12x", "[::1",     "redis://h:1/notanumber", "redis://user@h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redis_config cfg;
        redis_config_init(&cfg);
        cfg.url = bad[i];
        redis_client *c = (redis_client *)1;
        assert_int_equal(redis_client_new(&c, base, &cfg), REDIS_E_INVALID);
        assert_null(c);
    }
    assert_string_equal(redis_strerror(REDIS_E_BUSY), "too many Redis commands in flight");
}

static void test_set_get_binary(void **state)
{
    (void)state;
    conn_events ev = {0};
    redis_client *c = new_client(url, &ev, 0);
    got g = {0};
    const char val[] = {'a', '\0', 'b', '\r', '\n'};
    const char *set[] = {"SET", "t:bin", val};
    size_t setlen[] = {3, 5, sizeof(val)};
    assert_int_equal(redis_client_command(c, 3, set, setlen, collect, &g), 0);
    const char *get[] = {"GET", "t:bin"};
    assert_int_equal(redis_client_command(c, 2, get, NULL, collect, &g), 0);
    assert_int_equal(redis_client_inflight(c), 2);
    assert_true(ts_wait_for(base, &g.n, 2, 5000));
    assert_int_equal(ev.up, 1);
    assert_true(redis_client_connected(c));
    assert_int_equal(g.status[0], 0);
    assert_string_equal(g.str[0], "OK");
    assert_int_equal(g.type[1], REDIS_REPLY_STRING);
    assert_int_equal(g.len[1], sizeof(val));
    assert_memory_equal(g.str[1], val, sizeof(val));
    /* A server-side error is a reply, not a failure. */
    assert_int_equal(redis_client_commandf(c, collect, &g, "INCR %s", "t:bin"), 0);
    assert_true(ts_wait_for(base, &g.n, 3, 5000));
    assert_int_equal(g.status[2], 0);
    assert_int_equal(g.type[2], REDIS_REPLY_ERROR);
    assert_int_equal(redis_client_inflight(c), 0);
    redis_client_free(c);
    assert_int_equal(ev.down, 0); /* freeing does not report a disconnect */
}

/* redis_client_flush: a queued command reaches Redis without the loop running, so a command
 * another connection sends afterwards sees its effect (svc-messaging writes a dedupe mark that
 * way before answering a send). Without the flush the SET waits in hiredis's buffer. */
static void test_flush_writes_before_the_loop_runs(void **state)
{
    (void)state;
    redis_client *c = new_client(url, NULL, 0);
    got g = {0};
    assert_int_equal(redis_client_commandf(c, collect, &g, "DEL %s", "t:flush"), 0);
    assert_true(ts_wait_for(base, &g.n, 1, 5000));
    assert_true(redis_client_connected(c));
    redisContext *other = redisConnect("127.0.0.1", srv.port);
    assert_non_null(other);
    assert_int_equal(other->err, 0);
    for (int round = 0; round < 2; round++) {
        char val[8];
        snprintf(val, sizeof(val), "v%d", round);
        assert_int_equal(redis_client_commandf(c, collect, &g, "SET %s %s", "t:flush", val), 0);
        if (round == 1)
            redis_client_flush(c);
        redisReply *r = redisCommand(other, "GET t:flush");
        assert_non_null(r);
        if (round == 0) {
            assert_int_equal(r->type, REDIS_REPLY_NIL); /* still in our buffer */
        } else {
            assert_int_equal(r->type, REDIS_REPLY_STRING);
            assert_string_equal(r->str, "v1");
        }
        freeReplyObject(r);
        assert_true(ts_wait_for(base, &g.n, 2 + round, 5000));
        assert_int_equal(g.status[1 + round], 0);
    }
    redisFree(other);
    redis_client_free(c);
}

static void test_host_name_resolved(void **state)
{
    (void)state;
    char u[128];
    snprintf(u, sizeof(u), "redis://localhost:%d", srv.port);
    conn_events ev = {0};
    redis_client *c = new_client(u, &ev, 0);
    assert_true(ts_wait_for(base, &ev.up, 1, 5000));
    got g = {0};
    assert_int_equal(redis_client_commandf(c, collect, &g, "ECHO %s", "resolved"), 0);
    assert_true(ts_wait_for(base, &g.n, 1, 5000));
    assert_string_equal(g.str[0], "resolved");
    redis_client_free(c);

    /* A name that cannot resolve fails the attempt with REDIS_E_RESOLVE and retries. */
    conn_events bad = {0};
    c = new_client("redis://no-such-host.invalid:6379", &bad, 0);
    assert_true(ts_wait_for(base, &bad.down, 1, 10000));
    assert_int_equal(bad.last_err, REDIS_E_RESOLVE);
    redis_client_free(c);
}

static void test_inflight_limit(void **state)
{
    (void)state;
    redis_client *c = new_client(url, NULL, 2);
    got g = {0};
    const char *ping[] = {"PING"};
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), REDIS_E_BUSY);
    assert_true(ts_wait_for(base, &g.n, 2, 5000));
    ts_run_for(base, 50);
    assert_int_equal(g.n, 2); /* the refused one never calls back */
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 3, 5000));
    assert_string_equal(g.str[2], "PONG");
    redis_client_free(c);
}

static void test_unreachable_fails_fast(void **state)
{
    (void)state;
    char u[64];
    snprintf(u, sizeof(u), "127.0.0.1:%d", ts_free_port());
    conn_events ev = {0};
    redis_client *c = new_client(u, &ev, 0);
    got g = {0};
    const char *ping[] = {"PING"};
    /* Queued while connecting; fails with the connection attempt. */
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &ev.down, 1, 5000));
    assert_int_equal(ev.last_err, REDIS_E_CONNECT);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.status[0], REDIS_E_CONNECT);
    assert_int_equal(g.type[0], -1);
    /* Between attempts: refused at once. */
    int rv = redis_client_command(c, 1, ping, NULL, collect, &g);
    if (rv != 0) /* unless an attempt is already under way again */
        assert_int_equal(rv, REDIS_E_DISCONNECTED);
    /* It keeps retrying with backoff. */
    assert_true(ts_wait_for(base, &ev.down, 3, 5000));
    assert_int_equal(ev.up, 0);
    redis_client_free(c);
}

static const char *script_src = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}";

static void test_script_noscript_fallback(void **state)
{
    (void)state;
    redis_client *c = new_client(url, NULL, 0);
    redis_script *s = NULL;
    assert_int_equal(redis_script_new(&s, ""), REDIS_E_INVALID);
    assert_int_equal(redis_script_new(&s, script_src), 0);
    assert_int_equal(strlen(redis_script_sha(s)), 40);
    got g = {0};
    const char *flush[] = {"SCRIPT", "FLUSH"};
    assert_int_equal(redis_client_command(c, 2, flush, NULL, collect, &g), 0);
    const char *exists[] = {"SCRIPT", "EXISTS", redis_script_sha(s)};
    assert_int_equal(redis_client_command(c, 3, exists, NULL, NULL, NULL), 0);
    /* First run: EVALSHA -> NOSCRIPT -> EVAL, transparently. */
    const char *args[] = {"k1", "hello", "41"};
    assert_int_equal(redis_client_eval(c, s, 1, 3, args, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 2, 5000));
    assert_int_equal(g.status[0], 0);
    assert_int_equal(g.status[1], 0);
    assert_int_equal(g.type[1], REDIS_REPLY_ARRAY);
    /* A second client (fresh script cache use) and a flush in between: still transparent. */
    assert_int_equal(redis_client_command(c, 2, flush, NULL, collect, &g), 0);
    assert_int_equal(redis_client_eval(c, s, 1, 3, args, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 4, 5000));
    assert_int_equal(g.status[3], 0);
    assert_int_equal(g.type[3], REDIS_REPLY_ARRAY);
    /* Bad arity is refused before sending. */
    assert_int_equal(redis_client_eval(c, s, 4, 3, args, NULL, collect, &g), REDIS_E_INVALID);
    redis_client_free(c);
    redis_script_free(s);
}

/* Checks the array reply of the script in detail. */
static void check_script_reply(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    int *ok = ud;
    if (status == 0 && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        strcmp(r->element[0]->str, "k1") == 0 && strcmp(r->element[1]->str, "hello") == 0 &&
        r->element[2]->integer == 42)
        *ok += 1;
    else
        *ok += 1000;
}

static void check_exists(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    int *ok = ud;
    if (status == 0 && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->integer == 1)
        *ok += 1;
    else
        *ok += 1000;
}

static void test_script_reply_contents(void **state)
{
    (void)state;
    redis_client *c = new_client(url, NULL, 0);
    redis_script *s = NULL;
    assert_int_equal(redis_script_new(&s, script_src), 0);
    const char *flush[] = {"SCRIPT", "FLUSH"};
    assert_int_equal(redis_client_command(c, 2, flush, NULL, NULL, NULL), 0);
    int ok = 0;
    const char *args[] = {"k1", "hello", "41"};
    assert_int_equal(redis_client_eval(c, s, 1, 3, args, NULL, check_script_reply, &ok), 0);
    assert_true(ts_wait_for(base, &ok, 1, 5000));
    /* The EVAL fallback loaded the script: SCRIPT EXISTS says so. */
    const char *exists[] = {"SCRIPT", "EXISTS", redis_script_sha(s)};
    assert_int_equal(redis_client_command(c, 3, exists, NULL, check_exists, &ok), 0);
    assert_int_equal(redis_client_eval(c, s, 1, 3, args, NULL, check_script_reply, &ok), 0);
    assert_true(ts_wait_for(base, &ok, 3, 5000));
    ts_run_for(base, 20);
    assert_int_equal(ok, 3);
    redis_client_free(c);
    redis_script_free(s);
}

static void test_command_timeout_reconnects(void **state)
{
    (void)state;
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    cfg.command_timeout_ms = 200;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 50;
    redis_client *c = NULL;
    assert_int_equal(redis_client_new(&c, base, &cfg), 0);
    conn_events ev = {0};
    redis_client_callbacks cbs = {.on_connect = on_up, .on_disconnect = on_down};
    redis_client_set_callbacks(c, &cbs, &ev);
    got g = {0};
    /* BLPOP on an empty list blocks this connection for 2 s: longer than the timeout. */
    const char *blpop[] = {"BLPOP", "t:empty-list", "2"};
    const char *ping[] = {"PING"};
    long long t0 = ts_now_ms();
    assert_int_equal(redis_client_command(c, 3, blpop, NULL, collect, &g), 0);
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 2, 5000));
    long long took = ts_now_ms() - t0;
    assert_int_equal(g.status[0], REDIS_E_TIMEOUT);
    assert_int_equal(g.status[1], REDIS_E_TIMEOUT);
    assert_true(took >= 150 && took < 1500);
    assert_int_equal(ev.down, 1);
    assert_int_equal(ev.last_err, REDIS_E_TIMEOUT);
    /* And it comes back by itself. */
    assert_true(ts_wait_for(base, &ev.up, 2, 5000));
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 3, 5000));
    assert_int_equal(g.status[2], 0);
    assert_string_equal(g.str[2], "PONG");
    redis_client_free(c);
}

typedef struct free_ctx {
    redis_client *c; /* freed by the first callback */
    int n;           /* callbacks */
    int status[4];   /* statuses in order */
} free_ctx;

static void free_in_cb(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)r;
    free_ctx *f = ud;
    f->status[f->n++] = status;
    if (f->c == c) {
        f->c = NULL;
        redis_client_free(c);
        /* Further calls on a closing client are refused, not crashes. */
    }
}

static void test_free_inside_callback(void **state)
{
    (void)state;
    redis_client *c = new_client(url, NULL, 0);
    free_ctx f = {.c = c};
    const char *ping[] = {"PING"};
    const char *blpop[] = {"BLPOP", "t:never", "5"};
    assert_int_equal(redis_client_command(c, 1, ping, NULL, free_in_cb, &f), 0);
    assert_int_equal(redis_client_command(c, 3, blpop, NULL, free_in_cb, &f), 0);
    assert_int_equal(redis_client_command(c, 1, ping, NULL, free_in_cb, &f), 0);
    assert_true(ts_wait_for(base, &f.n, 3, 3000));
    assert_int_equal(f.status[0], 0);
    assert_int_equal(f.status[1], REDIS_E_CLOSED);
    assert_int_equal(f.status[2], REDIS_E_CLOSED);
    ts_run_for(base, 50);
    assert_int_equal(f.n, 3);
}

static int freed_in_connect;

static void free_on_connect(redis_client *c, void *ud)
{
    (void)ud;
    freed_in_connect++;
    redis_client_free(c);
}

static void free_on_ready(redis_sub *s, bool reconnected, void *ud)
{
    (void)reconnected;
    (void)ud;
    freed_in_connect++;
    redis_sub_free(s);
}

static void test_free_inside_connect_callbacks(void **state)
{
    (void)state;
    freed_in_connect = 0;
    redis_client *c = new_client(url, NULL, 0);
    redis_client_callbacks cbs = {.on_connect = free_on_connect};
    redis_client_set_callbacks(c, &cbs, NULL);
    got g = {0};
    const char *ping[] = {"PING"};
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &freed_in_connect, 1, 5000));
    ts_run_for(base, 100);
    /* The command queued before the connect was answered or closed; never lost. */
    assert_int_equal(g.n, 1);
    assert_true(g.status[0] == 0 || g.status[0] == REDIS_E_CLOSED);

    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    redis_sub_callbacks scbs = {.on_ready = free_on_ready};
    redis_sub *s = NULL;
    assert_int_equal(redis_sub_new(&s, base, &cfg, &scbs, NULL), 0);
    assert_int_equal(redis_sub_subscribe(s, "t.x"), 0);
    assert_true(ts_wait_for(base, &freed_in_connect, 2, 5000));
    ts_run_for(base, 100);
}

static void test_restart_reconnects(void **state)
{
    (void)state;
    conn_events ev = {0};
    redis_client *c = new_client(url, &ev, 0);
    got g = {0};
    const char *ping[] = {"PING"};
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 1, 5000));
    const char *blpop[] = {"BLPOP", "t:never", "10"};
    assert_int_equal(redis_client_command(c, 3, blpop, NULL, collect, &g), 0);
    ts_run_for(base, 50);
    ts_redis_stop(&srv, true);
    assert_true(ts_wait_for(base, &ev.down, 1, 5000));
    assert_int_equal(ev.last_err, REDIS_E_CONNECTION);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.status[1], REDIS_E_CONNECTION);
    assert_false(redis_client_connected(c));
    assert_true(ts_redis_start(&srv));
    assert_true(ts_wait_for(base, &ev.up, 2, 10000));
    assert_int_equal(redis_client_command(c, 1, ping, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 3, 5000));
    assert_string_equal(g.str[2], "PONG");
    redis_client_free(c);
}

static void test_auth_and_select_from_url(void **state)
{
    (void)state;
    redis_client *admin = new_client(url, NULL, 0);
    got g = {0};
    const char *setpw[] = {"CONFIG", "SET", "requirepass", "s3cret"};
    assert_int_equal(redis_client_command(admin, 4, setpw, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 1, 5000));
    assert_string_equal(g.str[0], "OK");

    /* Wrong password: AUTH refused, reported as REDIS_E_AUTH. */
    char u[160];
    snprintf(u, sizeof(u), "redis://:wrong@127.0.0.1:%d", srv.port);
    conn_events bad = {0};
    redis_client *c = new_client(u, &bad, 0);
    assert_true(ts_wait_for(base, &bad.down, 1, 5000));
    assert_int_equal(bad.last_err, REDIS_E_AUTH);
    redis_client_free(c);

    /* Right password and db 3: SET lands in db 3 only. */
    snprintf(u, sizeof(u), "redis://:s3cret@127.0.0.1:%d/3", srv.port);
    c = new_client(u, NULL, 0);
    const char *set[] = {"SET", "t:db3", "x"};
    assert_int_equal(redis_client_command(c, 3, set, NULL, collect, &g), 0);
    const char *sel0[] = {"SELECT", "0"};
    assert_int_equal(redis_client_command(c, 2, sel0, NULL, collect, &g), 0);
    const char *exists[] = {"EXISTS", "t:db3"};
    assert_int_equal(redis_client_command(c, 2, exists, NULL, collect, &g), 0);
    const char *sel3[] = {"SELECT", "3"};
    assert_int_equal(redis_client_command(c, 2, sel3, NULL, collect, &g), 0);
    assert_int_equal(redis_client_command(c, 2, exists, NULL, collect, &g), 0);
    const char *clearpw[] = {"CONFIG", "SET", "requirepass", ""};
    assert_int_equal(redis_client_command(c, 4, clearpw, NULL, collect, &g), 0);
    assert_true(ts_wait_for(base, &g.n, 7, 5000));
    assert_string_equal(g.str[1], "OK");
    assert_int_equal(g.ints[3], 0);
    assert_int_equal(g.ints[5], 1);
    assert_string_equal(g.str[6], "OK");
    redis_client_free(c);
    redis_client_free(admin); /* its connection was authenticated before requirepass */
}

typedef struct sub_events {
    int ready;       /* on_ready count */
    int reconnected; /* on_ready with reconnected */
    int down;        /* on_disconnect count */
    int msgs;        /* messages */
    char last_pattern[64];
    char last_channel[64];
    char last_msg[64];
} sub_events;

static void sub_msg(redis_sub *s, const char *pattern, const char *channel, size_t clen,
                    const char *msg, size_t len, void *ud)
{
    (void)s;
    sub_events *e = ud;
    e->msgs++;
    snprintf(e->last_pattern, sizeof(e->last_pattern), "%s", pattern ? pattern : "");
    snprintf(e->last_channel, sizeof(e->last_channel), "%.*s", (int)clen, channel);
    snprintf(e->last_msg, sizeof(e->last_msg), "%.*s", (int)len, msg);
}

static void sub_ready(redis_sub *s, bool reconnected, void *ud)
{
    (void)s;
    sub_events *e = ud;
    e->ready++;
    if (reconnected)
        e->reconnected++;
}

static void sub_down(redis_sub *s, int err, void *ud)
{
    (void)s;
    (void)err;
    ((sub_events *)ud)->down++;
}

static void publish(redis_client *c, const char *ch, const char *msg, got *g)
{
    const char *argv[] = {"PUBLISH", ch, msg};
    assert_int_equal(redis_client_command(c, 3, argv, NULL, collect, g), 0);
}

static void test_pubsub_and_resubscribe(void **state)
{
    (void)state;
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 100;
    cfg.max_subscriptions = 3;
    sub_events e = {0};
    redis_sub_callbacks cbs = {
        .on_message = sub_msg, .on_ready = sub_ready, .on_disconnect = sub_down};
    redis_sub *s = NULL;
    assert_int_equal(redis_sub_new(&s, base, &cfg, &cbs, &e), 0);
    assert_int_equal(redis_sub_subscribe(s, "t.ch"), 0);
    assert_int_equal(redis_sub_subscribe(s, "t.ch"), 0); /* idempotent */
    assert_int_equal(redis_sub_psubscribe(s, "t.p.*"), 0);
    assert_int_equal(redis_sub_subscribe(s, "t.other"), 0);
    assert_int_equal(redis_sub_subscribe(s, "t.fourth"), REDIS_E_LIMIT);
    assert_int_equal(redis_sub_unsubscribe(s, "t.nope"), REDIS_E_INVALID);
    assert_true(ts_wait_for(base, &e.ready, 1, 5000));
    assert_int_equal(e.reconnected, 0);
    assert_true(redis_sub_ready(s));

    redis_client *c = new_client(url, NULL, 0);
    got g = {0};
    publish(c, "t.ch", "hello", &g);
    assert_true(ts_wait_for(base, &e.msgs, 1, 5000));
    assert_string_equal(e.last_channel, "t.ch");
    assert_string_equal(e.last_pattern, "");
    assert_string_equal(e.last_msg, "hello");
    publish(c, "t.p.42", "pat", &g);
    assert_true(ts_wait_for(base, &e.msgs, 2, 5000));
    assert_string_equal(e.last_pattern, "t.p.*");
    assert_string_equal(e.last_channel, "t.p.42");
    assert_string_equal(e.last_msg, "pat");

    /* Unsubscribed channels stop delivering. */
    assert_int_equal(redis_sub_unsubscribe(s, "t.other"), 0);
    ts_run_for(base, 50);
    publish(c, "t.other", "ignored", &g);
    publish(c, "t.ch", "after-unsub", &g);
    assert_true(ts_wait_for(base, &e.msgs, 3, 5000));
    ts_run_for(base, 50);
    assert_int_equal(e.msgs, 3);
    assert_string_equal(e.last_msg, "after-unsub");

    /* Server restart: disconnect, then resubscribed and told so. */
    ts_redis_stop(&srv, true);
    assert_true(ts_wait_for(base, &e.down, 1, 5000));
    assert_false(redis_sub_ready(s));
    assert_true(ts_redis_start(&srv));
    assert_true(ts_wait_for(base, &e.reconnected, 1, 10000));
    assert_int_equal(e.ready, 2);
    /* The command client reconnects too; publish until it goes through. */
    long long end = ts_now_ms() + 10000;
    while (e.msgs < 5 && ts_now_ms() < end) {
        if (redis_client_connected(c)) {
            publish(c, "t.ch", "back", &g);
            publish(c, "t.p.x", "back-p", &g);
        }
        ts_run_for(base, 50);
    }
    assert_true(e.msgs >= 5);
    redis_sub_free(s);
    redis_client_free(c);
}

static void test_sub_probe_detects_silent_server(void **state)
{
    (void)state;
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 100;
    cfg.ping_interval_ms = 100;
    cfg.command_timeout_ms = 300;
    sub_events e = {0};
    redis_sub_callbacks cbs = {
        .on_message = sub_msg, .on_ready = sub_ready, .on_disconnect = sub_down};
    redis_sub *s = NULL;
    assert_int_equal(redis_sub_new(&s, base, &cfg, &cbs, &e), 0);
    assert_int_equal(redis_sub_psubscribe(s, "t.silent.*"), 0);
    assert_true(ts_wait_for(base, &e.ready, 1, 5000));
    /* Probes are answered: a healthy idle connection is kept. */
    ts_run_for(base, 600);
    assert_int_equal(e.down, 0);
    /* A frozen server keeps the TCP connection open but answers nothing. */
    kill(srv.pid, SIGSTOP);
    long long t0 = ts_now_ms();
    assert_true(ts_wait_for(base, &e.down, 1, 5000));
    assert_true(ts_now_ms() - t0 < 1500);
    assert_false(redis_sub_ready(s));
    kill(srv.pid, SIGCONT);
    assert_true(ts_wait_for(base, &e.reconnected, 1, 10000));
    /* Subscriptions work again after the resync point. */
    redis_client *c = new_client(url, NULL, 0);
    got g = {0};
    int before = e.msgs;
    long long end = ts_now_ms() + 5000;
    while (e.msgs == before && ts_now_ms() < end) {
        if (redis_client_connected(c))
            publish(c, "t.silent.1", "alive", &g);
        ts_run_for(base, 50);
    }
    assert_string_equal(e.last_msg, "alive");
    redis_client_free(c);
    redis_sub_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_get_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_writes_before_the_loop_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_name_resolved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_noscript_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_reply_contents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_timeout_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_connect_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_and_select_from_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pubsub_and_resubscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sub_probe_detects_silent_server, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
