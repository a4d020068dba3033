/*
 * Unit tests of lib/metrics.c: series registration rules, text exposition, atomic updates from
 * several threads, and the HTTP endpoint (GET /metrics, /healthz) through an evhttp client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>

#include "metrics.h"

static void test_counter_gauge_render(void **state)
{
    (void)state;
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 0), 0);
    metrics_counter *ok = NULL, *bad = NULL, *again = NULL;
    const char *l_ok[] = {"method", "Send", "code", "OK", NULL};
    const char *l_bad[] = {"method", "Send", "code", "UNAVAILABLE", NULL};
    assert_int_equal(metrics_counter_get(r, "rpc_total", "RPCs handled.", l_ok, &ok), 0);
    assert_int_equal(metrics_counter_get(r, "rpc_total", "RPCs handled.", l_bad, &bad), 0);
    assert_int_equal(metrics_counter_get(r, "rpc_total", "RPCs handled.", l_ok, &again), 0);
    assert_ptr_equal(ok, again);
    assert_ptr_not_equal(ok, bad);
    metrics_counter_inc(ok);
    metrics_counter_add(ok, 41);
    metrics_counter_inc(bad);
    assert_int_equal(metrics_counter_value(ok), 42);

    metrics_gauge *g = NULL;
    assert_int_equal(metrics_gauge_get(r, "sessions", "Open sessions.", NULL, &g), 0);
    metrics_gauge_set(g, 10);
    metrics_gauge_add(g, -2.5);
    assert_true(metrics_gauge_value(g) == 7.5);

    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(r, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "# HELP rpc_total RPCs handled.\n# TYPE rpc_total counter\n"));
    assert_non_null(strstr(text, "rpc_total{method=\"Send\",code=\"OK\"} 42\n"));
    assert_non_null(strstr(text, "rpc_total{method=\"Send\",code=\"UNAVAILABLE\"} 1\n"));
    assert_non_null(strstr(text, "# TYPE sessions gauge\nsessions 7.5\n"));
    free(text);
    metrics_registry_free(r);
}

static void test_histogram(void **state)
{
    (void)state;
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 0), 0);
    const double b[] = {0.005, 0.1, 1};
    metrics_histogram *h = NULL;
    const char *l[] = {"method", "Get", NULL};
    assert_int_equal(metrics_histogram_get(r, "lat_seconds", "Latency.", l, b, 3, &h), 0);
    metrics_histogram_observe(h, 0.001);
    metrics_histogram_observe(h, 0.005); /* le is inclusive */
    metrics_histogram_observe(h, 0.05);
    metrics_histogram_observe(h, 3);
    assert_int_equal(metrics_histogram_count(h), 4);
    assert_true(metrics_histogram_sum(h) > 3.055 && metrics_histogram_sum(h) < 3.057);
    char *text = NULL;
    size_t len = 0;
    metrics_render(r, &text, &len);
    assert_non_null(strstr(text, "# TYPE lat_seconds histogram\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{method=\"Get\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{method=\"Get\",le=\"0.1\"} 3\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{method=\"Get\",le=\"1\"} 3\n"));
    assert_non_null(strstr(text, "lat_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "lat_seconds_sum{method=\"Get\"} 3.056\n"));
    assert_non_null(strstr(text, "lat_seconds_count{method=\"Get\"} 4\n"));
    free(text);

    /* Same name, other buckets: refused. Unsorted bounds: refused. */
    const double b2[] = {0.01, 0.1, 1};
    const char *l2[] = {"method", "Put", NULL};
    metrics_histogram *h2 = NULL;
    assert_int_equal(metrics_histogram_get(r, "lat_seconds", "Latency.", l2, b2, 3, &h2),
                     METRICS_E_BUCKETS);
    assert_null(h2);
    const double bad[] = {1, 0.5};
    assert_int_equal(metrics_histogram_get(r, "x_seconds", "X.", NULL, bad, 2, &h2),
                     METRICS_E_INVALID);
    const char *le[] = {"le", "1", NULL};
    assert_int_equal(metrics_histogram_get(r, "y_seconds", "Y.", le, b, 3, &h2), METRICS_E_INVALID);
    assert_int_equal(metrics_histogram_get(r, "z_seconds", "Z.", NULL, metrics_latency_buckets,
                                           metrics_latency_buckets_n, &h2),
                     0);
    metrics_registry_free(r);
}

static void test_registration_rules(void **state)
{
    (void)state;
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 3), 0);
    metrics_counter *c = NULL;
    metrics_gauge *g = NULL;
    assert_int_equal(metrics_counter_get(r, "9bad", "h", NULL, &c), METRICS_E_INVALID);
    assert_int_equal(metrics_counter_get(r, "bad-name", "h", NULL, &c), METRICS_E_INVALID);
    const char *badlabel[] = {"__reserved", "x", NULL};
    assert_int_equal(metrics_counter_get(r, "ok", "h", badlabel, &c), METRICS_E_INVALID);
    const char *odd[] = {"k", NULL};
    assert_int_equal(metrics_counter_get(r, "ok", "h", odd, &c), METRICS_E_INVALID);
    assert_int_equal(metrics_counter_get(r, "ns:ok_total", "h", NULL, &c), 0);
    /* Same name, other type / help / label names. */
    assert_int_equal(metrics_gauge_get(r, "ns:ok_total", "h", NULL, &g), METRICS_E_TYPE);
    assert_int_equal(metrics_counter_get(r, "ns:ok_total", "other", NULL, &c), METRICS_E_TYPE);
    const char *l1[] = {"a", "1", NULL};
    assert_int_equal(metrics_counter_get(r, "ns:ok_total", "h", l1, &c), METRICS_E_TYPE);
    /* The series cap. */
    assert_int_equal(metrics_counter_get(r, "lab_total", "h", l1, &c), 0);
    const char *l2[] = {"a", "2", NULL};
    assert_int_equal(metrics_counter_get(r, "lab_total", "h", l2, &c), 0);
    const char *l3[] = {"a", "3", NULL};
    assert_int_equal(metrics_counter_get(r, "lab_total", "h", l3, &c), METRICS_E_LIMIT);
    assert_null(c);
    /* Existing series are still found at the cap. */
    assert_int_equal(metrics_counter_get(r, "lab_total", "h", l2, &c), 0);
    assert_string_equal(metrics_strerror(METRICS_E_LIMIT), "too many metric series");
    metrics_registry_free(r);
}

static void test_escaping(void **state)
{
    (void)state;
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 0), 0);
    metrics_gauge *g = NULL;
    const char *l[] = {"path", "a\"b\\c\nd", NULL};
    assert_int_equal(metrics_gauge_get(r, "esc", "Line one\nback\\slash", l, &g), 0);
    metrics_gauge_set(g, INFINITY);
    char *text = NULL;
    size_t len = 0;
    metrics_render(r, &text, &len);
    assert_non_null(strstr(text, "# HELP esc Line one\\nback\\\\slash\n"));
    assert_non_null(strstr(text, "esc{path=\"a\\\"b\\\\c\\nd\"} +Inf\n"));
    free(text);
    metrics_registry_free(r);
}

#define THREADS 4
#define ITERS 100000

typedef struct shared {
    metrics_counter *c;
    metrics_gauge *g;
    metrics_histogram *h;
} shared;

static void *hammer(void *arg)
{
    shared *s = arg;
    for (int i = 0; i < ITERS; i++) {
        metrics_counter_inc(s->c);
        metrics_gauge_add(s->g, 1.0);
        metrics_histogram_observe(s->h, (i % 2) ? 0.002 : 2.0);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 0), 0);
    shared s;
    assert_int_equal(metrics_counter_get(r, "n_total", "n", NULL, &s.c), 0);
    assert_int_equal(metrics_gauge_get(r, "g", "g", NULL, &s.g), 0);
    const double b[] = {0.01};
    assert_int_equal(metrics_histogram_get(r, "h_seconds", "h", NULL, b, 1, &s.h), 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &s), 0);
    /* Render concurrently with the updates: must not crash or block them. */
    for (int i = 0; i < 20; i++) {
        char *text;
        size_t len;
        metrics_render(r, &text, &len);
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(metrics_counter_value(s.c), THREADS * ITERS);
    assert_true(metrics_gauge_value(s.g) == THREADS * ITERS);
    assert_int_equal(metrics_histogram_count(s.h), THREADS * ITERS);
    double want = THREADS * (ITERS / 2) * (2.0 + 0.002);
    assert_true(metrics_histogram_sum(s.h) > want - 1e-3 &&
                metrics_histogram_sum(s.h) < want + 1e-3);
    char *text;
    size_t len;
    metrics_render(r, &text, &len);
    char line[128];
    snprintf(line, sizeof(line), "h_seconds_bucket{le=\"0.01\"} %d\n", THREADS * ITERS / 2);
    assert_non_null(strstr(text, line));
    free(text);
    metrics_registry_free(r);
}

/* --- HTTP ---------------------------------------------------------------------------------- */

typedef struct http_result {
    int done;        /* responses received */
    int code;        /* HTTP status */
    char ctype[128]; /* Content-Type */
    char body[4096]; /* body (truncated) */
} http_result;

static void on_response(struct evhttp_request *req, void *arg)
{
    http_result *res = arg;
    res->done++;
    if (req == NULL) {
        res->code = -1;
        return;
    }
    res->code = evhttp_request_get_response_code(req);
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    snprintf(res->ctype, sizeof(res->ctype), "%s", ct ? ct : "");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof(res->body))
        n = sizeof(res->body) - 1;
    evbuffer_remove(in, res->body, n);
    res->body[n] = '\0';
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void http_get(struct event_base *base, uint16_t port, enum evhttp_cmd_type cmd,
                     const char *path, http_result *res)
{
    memset(res, 0, sizeof(*res));
    struct evhttp_connection *conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
    struct evhttp_request *req = evhttp_request_new(on_response, res);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "localhost");
    assert_int_equal(evhttp_make_request(conn, req, cmd, path), 0);
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(t, &tv);
    for (int i = 0; i < 500 && res->done == 0; i++)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    evhttp_connection_free(conn);
    assert_int_equal(res->done, 1);
}

static int health_state;

static int health(void *ud)
{
    (void)ud;
    return health_state;
}

static void test_http(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 0), 0);
    metrics_counter *c = NULL;
    assert_int_equal(metrics_counter_get(r, "hits_total", "Hits.", NULL, &c), 0);
    metrics_counter_add(c, 7);
    metrics_http *h = NULL;
    assert_int_equal(metrics_http_new(&h, base, r, "127.0.0.1", 0), 0);
    uint16_t port = metrics_http_port(h);
    assert_true(port > 0);

    http_result res;
    http_get(base, port, EVHTTP_REQ_GET, "/metrics", &res);
    assert_int_equal(res.code, 200);
    assert_string_equal(res.ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(res.body, "hits_total 7\n"));

    http_get(base, port, EVHTTP_REQ_GET, "/metrics?x=1", &res);
    assert_int_equal(res.code, 200);

    http_get(base, port, EVHTTP_REQ_GET, "/healthz", &res);
    assert_int_equal(res.code, 200);
    assert_string_equal(res.body, "ok\n");
    metrics_http_set_health(h, health, NULL);
    health_state = 1;
    http_get(base, port, EVHTTP_REQ_GET, "/healthz", &res);
    assert_int_equal(res.code, 503);
    health_state = 0;
    http_get(base, port, EVHTTP_REQ_GET, "/healthz", &res);
    assert_int_equal(res.code, 200);

    http_get(base, port, EVHTTP_REQ_GET, "/nope", &res);
    assert_int_equal(res.code, 404);
    http_get(base, port, EVHTTP_REQ_POST, "/metrics", &res);
    assert_true(res.code >= 400);

    /* A second server on the same port fails with -errno. */
    metrics_http *h2 = NULL;
    int rv = metrics_http_new(&h2, base, r, "127.0.0.1", port);
    assert_true(rv < 0);
    assert_null(h2);

    metrics_http_free(h);
    metrics_registry_free(r);
    event_base_free(base);
}

static int collected;

static void collect_hook(metrics_registry *r, void *ud)
{
    (void)ud;
    metrics_gauge *g = NULL;
    if (metrics_gauge_get(r, "computed", "Computed at scrape.", NULL, &g) == 0)
        metrics_gauge_set(g, ++collected);
}

static void test_collector(void **state)
{
    (void)state;
    metrics_registry *r = NULL;
    assert_int_equal(metrics_registry_new(&r, 0), 0);
    assert_int_equal(metrics_registry_add_collector(r, collect_hook, NULL), 0);
    char *text;
    size_t len;
    metrics_render(r, &text, &len);
    assert_non_null(strstr(text, "computed 1\n"));
    free(text);
    metrics_render(r, &text, &len);
    assert_non_null(strstr(text, "computed 2\n"));
    free(text);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge_render),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_registration_rules),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_http),
        cmocka_unit_test(test_collector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
