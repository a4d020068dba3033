/*
 * Tests of lib/kafka.c, error paths only: configuration errors, the in-flight bound, delivery
 * timeouts with no broker, purge on free, oversized messages; and, on librdkafka's mock cluster
 * (rdkafka_mock.h; never the real stack's Kafka), injected produce and fetch errors, consumer
 * back-pressure (pause/resume) across them, deferred assignment with externally stored offsets,
 * and an orderly close. Real-broker behaviour is covered by the integration tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "kafka.h" /* includes librdkafka/rdkafka.h, which rdkafka_mock.h needs first */
#include "log.h"
#include "lib_servers.h"
#include <librdkafka/rdkafka_mock.h>

static struct event_base *base;
static pthread_t main_thread;

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    main_thread = pthread_self();
    return base ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    event_base_free(base);
    base = NULL;
    return 0;
}

typedef struct reports {
    int n;                       /* delivery callbacks */
    int off_loop;                /* callbacks not on the loop thread */
    rd_kafka_resp_err_t err[64]; /* errors in order */
    int64_t offset[64];          /* offsets in order */
    int32_t partition[64];       /* partitions in order */
} reports;

static void on_delivery(kafka_producer *p, const kafka_delivery *d, void *ud)
{
    (void)p;
    reports *r = ud;
    if (!pthread_equal(pthread_self(), main_thread))
        r->off_loop++;
    if (r->n < 64) {
        r->err[r->n] = d->err;
        r->offset[r->n] = d->offset;
        r->partition[r->n] = d->partition;
    }
    r->n++;
}

static void test_config_errors(void **state)
{
    (void)state;
    kafka_config cfg;
    kafka_config_init(&cfg);
    kafka_producer *p = NULL;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), KAFKA_E_INVALID);
    cfg.brokers = "127.0.0.1:1";
    const char *bad[] = {"no.such.property=1", NULL};
    cfg.props = bad;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), KAFKA_E_CONFIG);
    const char *noeq[] = {"linger.ms", NULL};
    cfg.props = noeq;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), KAFKA_E_CONFIG);
    assert_null(p);
    cfg.props = NULL;
    kafka_consumer *c = NULL;
    kafka_consumer_callbacks cbs = {0};
    assert_int_equal(kafka_consumer_new(&c, base, &cfg, &cbs, NULL), KAFKA_E_INVALID);
    assert_string_equal(kafka_strerror(KAFKA_E_QUEUE_FULL), "Kafka producer queue full");
}

static void test_queue_full_then_purged_on_free(void **state)
{
    (void)state;
    kafka_config cfg;
    kafka_config_init(&cfg);
    cfg.brokers = "127.0.0.1:1"; /* nothing listens: messages stay queued */
    cfg.max_inflight = 3;
    kafka_producer *p = NULL;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), 0);
    reports r = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(kafka_producer_send(p, "t.q", KAFKA_PARTITION_ANY, "k", 1, "v", 1, NULL, 0,
                                             on_delivery, &r),
                         0);
    assert_int_equal(kafka_producer_inflight(p), 3);
    /* Over the bound: refused at once, no callback. */
    assert_int_equal(kafka_producer_send(p, "t.q", KAFKA_PARTITION_ANY, "k", 1, "v", 1, NULL, 0,
                                         on_delivery, &r),
                     KAFKA_E_QUEUE_FULL);
    ts_run_for(base, 100);
    assert_int_equal(r.n, 0);
    /* Free purges: every accepted message gets its report, during the free. */
    kafka_producer_free(p);
    assert_int_equal(r.n, 3);
    for (int i = 0; i < 3; i++)
        assert_true(r.err[i] == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                    r.err[i] == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT);
    assert_int_equal(r.off_loop, 0);
}

static void test_delivery_timeout_on_loop(void **state)
{
    (void)state;
    kafka_config cfg;
    kafka_config_init(&cfg);
    cfg.brokers = "127.0.0.1:1";
    const char *props[] = {"message.timeout.ms=300", NULL};
    cfg.props = props;
    kafka_producer *p = NULL;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), 0);
    reports r = {0};
    long long t0 = ts_now_ms();
    assert_int_equal(
        kafka_producer_send(p, "t.timeout", 0, NULL, 0, "v", 1, NULL, 0, on_delivery, &r), 0);
    /* The report arrives through the wake pipe while the loop runs. */
    assert_true(ts_wait_for(base, &r.n, 1, 5000));
    long long took = ts_now_ms() - t0;
    assert_int_equal(r.err[0], RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    assert_int_equal(r.offset[0], -1);
    assert_true(took >= 250);
    assert_int_equal(r.off_loop, 0);
    assert_int_equal(kafka_producer_inflight(p), 0);
    kafka_producer_free(p);
}

static void test_message_too_large(void **state)
{
    (void)state;
    kafka_config cfg;
    kafka_config_init(&cfg);
    cfg.brokers = "127.0.0.1:1";
    const char *props[] = {"message.max.bytes=1000", NULL};
    cfg.props = props;
    kafka_producer *p = NULL;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), 0);
    char big[4000];
    memset(big, 'x', sizeof(big));
    reports r = {0};
    assert_int_equal(kafka_producer_send(p, "t.big", KAFKA_PARTITION_ANY, NULL, 0, big, sizeof(big),
                                         NULL, 0, on_delivery, &r),
                     KAFKA_E_MSG_SIZE);
    assert_int_equal(
        kafka_producer_send(p, "", KAFKA_PARTITION_ANY, NULL, 0, "v", 1, NULL, 0, on_delivery, &r),
        KAFKA_E_INVALID);
    assert_int_equal(kafka_producer_inflight(p), 0);
    kafka_producer_free(p);
    assert_int_equal(r.n, 0);
}

/* --- mock cluster ------------------------------------------------------------------------- */

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static const char *brokers;

static int mock_setup(void **state)
{
    if (setup(state) != 0)
        return -1;
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (mock_rk == NULL)
        return -1;
    mock = rd_kafka_mock_cluster_new(mock_rk, 3);
    if (mock == NULL)
        return -1;
    brokers = rd_kafka_mock_cluster_bootstraps(mock);
    rd_kafka_mock_topic_create(mock, "t.chat.events", 1, 3);
    rd_kafka_mock_topic_create(mock, "siteb.t.chat.events", 1, 3);
    rd_kafka_mock_topic_create(mock, "t.other", 1, 3);
    return 0;
}

static int mock_teardown(void **state)
{
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    mock = NULL;
    mock_rk = NULL;
    return teardown(state);
}

static kafka_producer *mock_producer(void)
{
    kafka_config cfg;
    kafka_config_init(&cfg);
    cfg.brokers = brokers;
    const char *props[] = {"linger.ms=0", "retry.backoff.ms=20", NULL};
    cfg.props = props;
    kafka_producer *p = NULL;
    assert_int_equal(kafka_producer_new(&p, base, &cfg, NULL, NULL), 0);
    return p;
}

static void test_produce_retriable_errors_no_duplicates(void **state)
{
    (void)state;
    kafka_producer *p = mock_producer();
    /* The next produce requests fail with retriable errors; the idempotent producer retries
     * and the log gets each message once, in order. */
    rd_kafka_mock_push_request_errors(
        mock, 0 /* Produce */, 3, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);
    reports r = {0};
    for (int i = 0; i < 5; i++) {
        char v[16];
        snprintf(v, sizeof(v), "m%d", i);
        kafka_header h = {.name = "seq", .value = v, .len = strlen(v)};
        assert_int_equal(kafka_producer_send(p, "t.other", KAFKA_PARTITION_ANY, "chat-1", 6, v,
                                             strlen(v), &h, 1, on_delivery, &r),
                         0);
    }
    assert_true(ts_wait_for(base, &r.n, 5, 20000));
    int64_t first = r.offset[0];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r.err[i], RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_int_equal(r.partition[i], 0);
        assert_int_equal(r.offset[i], first + i); /* contiguous: nothing written twice */
    }
    assert_int_equal(r.off_loop, 0);
    kafka_producer_free(p);
}

/* reports_done: after a loop turn's reports, once per turn, never before a report it follows. */
typedef struct turns {
    reports *r;
    int calls;        /* hook calls */
    int seen_at_last; /* reports served when the hook last ran */
    int not_advanced; /* hook calls with no new report since the previous one */
    int off_loop;     /* hook calls off the loop thread */
} turns;

static void on_reports_done(kafka_producer *p, void *ud)
{
    (void)p;
    turns *t = ud;
    if (!pthread_equal(pthread_self(), main_thread))
        t->off_loop++;
    if (t->r->n == t->seen_at_last)
        t->not_advanced++;
    t->seen_at_last = t->r->n;
    t->calls++;
}

static void test_reports_done_after_each_turn(void **state)
{
    (void)state;
    kafka_producer *p = mock_producer();
    reports r = {0};
    turns t = {.r = &r};
    kafka_producer_set_reports_done(p, on_reports_done, &t);
    for (int round = 0; round < 3; round++) {
        int before = r.n;
        for (int i = 0; i < 4; i++)
            assert_int_equal(kafka_producer_send(p, "t.other", KAFKA_PARTITION_ANY, "k", 1, "v", 1,
                                                 NULL, 0, on_delivery, &r),
                             0);
        assert_true(ts_wait_for(base, &r.n, before + 4, 20000));
        ts_run_for(base, 50);
        /* the hook ran after the round's last report, and at most once per report */
        assert_int_equal(t.seen_at_last, r.n);
        assert_true(t.calls >= round + 1);
        assert_true(t.calls <= r.n);
    }
    assert_int_equal(t.not_advanced, 0);
    assert_int_equal(t.off_loop, 0);
    kafka_producer_set_reports_done(p, NULL, NULL);
    int calls = t.calls;
    assert_int_equal(kafka_producer_send(p, "t.other", KAFKA_PARTITION_ANY, "k", 1, "v", 1, NULL, 0,
                                         on_delivery, &r),
                     0);
    assert_true(ts_wait_for(base, &r.n, 13, 20000));
    ts_run_for(base, 50);
    assert_int_equal(t.calls, calls); /* removed */
    kafka_producer_free(p);
}

static void test_produce_permanent_error_reported(void **state)
{
    (void)state;
    kafka_producer *p = mock_producer();
    rd_kafka_mock_push_request_errors(mock, 0, 1, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    reports r = {0};
    assert_int_equal(
        kafka_producer_send(p, "t.other", 0, "k", 1, "denied", 6, NULL, 0, on_delivery, &r), 0);
    assert_true(ts_wait_for(base, &r.n, 1, 20000));
    assert_int_equal(r.err[0], RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    assert_int_equal(r.offset[0], -1);
    kafka_producer_free(p);
}

typedef struct consumed {
    int n;                /* messages */
    int dup;              /* messages seen twice */
    int off_loop;         /* callbacks off the loop thread */
    int pause_at;         /* pause the consumer when n reaches this (0 = never) */
    int64_t next[2];      /* next expected offset per topic (0: t.chat.events, 1: siteb.) */
    int per_topic[2];     /* messages per topic */
    int assigned;         /* ASSIGN callbacks */
    int assigned_parts;   /* partitions in the last ASSIGN */
    int revoked;          /* REVOKE/LOST callbacks */
    bool defer;           /* defer ASSIGN */
    int64_t start_offset; /* offset to start t.chat.events from when deferring */
    rd_kafka_topic_partition_list_t *pending; /* deferred assignment */
    int64_t first_offset;                     /* first offset delivered */
    char last_header[16];                     /* value of header "seq" of the last message */
    kafka_consumer *c;                        /* the consumer */
} consumed;

static void on_msg(kafka_consumer *c, const kafka_message *m, void *ud)
{
    consumed *s = ud;
    if (!pthread_equal(pthread_self(), main_thread))
        s->off_loop++;
    int t = strcmp(m->topic, "t.chat.events") == 0 ? 0 : 1;
    if (s->n == 0)
        s->first_offset = m->offset;
    if (s->next[t] != 0 && m->offset < s->next[t])
        s->dup++;
    s->next[t] = m->offset + 1;
    s->per_topic[t]++;
    s->n++;
    const void *hv;
    size_t hl;
    if (kafka_message_header(m, "seq", &hv, &hl) == 0)
        snprintf(s->last_header, sizeof(s->last_header), "%.*s", (int)hl, (const char *)hv);
    kafka_consumer_store(c, m);
    if (s->pause_at > 0 && s->n == s->pause_at)
        kafka_consumer_pause(c);
}

static int on_rebal(kafka_consumer *c, kafka_rebalance_kind kind,
                    rd_kafka_topic_partition_list_t *parts, void *ud)
{
    (void)c;
    consumed *s = ud;
    if (kind != KAFKA_REBALANCE_ASSIGN) {
        s->revoked++;
        return 0;
    }
    s->assigned++;
    s->assigned_parts = parts->cnt;
    if (!s->defer)
        return 0;
    s->pending = rd_kafka_topic_partition_list_copy(parts);
    for (int i = 0; i < s->pending->cnt; i++)
        if (strcmp(s->pending->elems[i].topic, "t.chat.events") == 0)
            s->pending->elems[i].offset = s->start_offset;
    return KAFKA_REBALANCE_DEFER;
}

static kafka_consumer *mock_consumer(consumed *s, const char *group)
{
    kafka_config cfg;
    kafka_config_init(&cfg);
    cfg.brokers = brokers;
    cfg.group_id = group;
    cfg.offsets = KAFKA_OFFSETS_STORE;
    cfg.batch_max = 4; /* small batches exercise the continuation path */
    /* KAFKA_TEST_DEBUG=cgrp,... (with LOG_LEVEL=debug) shows librdkafka's own trace. */
    static char debug[128];
    const char *dbg = getenv("KAFKA_TEST_DEBUG");
    snprintf(debug, sizeof(debug), "debug=%s", dbg != NULL ? dbg : "");
    const char *props[] = {"auto.offset.reset=earliest",
                           "fetch.error.backoff.ms=20",
                           "session.timeout.ms=6000",
                           "heartbeat.interval.ms=500",
                           "topic.metadata.refresh.interval.ms=500",
                           dbg != NULL ? debug : NULL,
                           NULL};
    cfg.props = props;
    kafka_consumer_callbacks cbs = {.on_message = on_msg, .on_rebalance = on_rebal};
    kafka_consumer *c = NULL;
    assert_int_equal(kafka_consumer_new(&c, base, &cfg, &cbs, s), 0);
    s->c = c;
    return c;
}

static void produce_n(kafka_producer *p, const char *topic, int n, reports *r)
{
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        kafka_header h = {.name = "seq", .value = v, .len = strlen(v)};
        assert_int_equal(
            kafka_producer_send(p, topic, 0, "chat-7", 6, v, strlen(v), &h, 1, on_delivery, r), 0);
    }
}

static void test_consumer_regex_fetch_errors_and_pause(void **state)
{
    (void)state;
    kafka_producer *p = mock_producer();
    reports r = {0};
    produce_n(p, "t.chat.events", 20, &r);
    produce_n(p, "siteb.t.chat.events", 6, &r);
    produce_n(p, "t.other", 3, &r);
    assert_true(ts_wait_for(base, &r.n, 29, 20000));

    consumed s = {.pause_at = 5};
    kafka_consumer *c = mock_consumer(&s, "g-pause");
    /* Local and mirrored topics through one regex; t.other does not match. */
    const char *topics[] = {"^(.*\\.)?t\\.chat\\.events$"};
    assert_int_equal(kafka_consumer_subscribe(c, topics, 1), 0);
    /* Fetches fail a few times first. */
    rd_kafka_mock_push_request_errors(
        mock, 1 /* Fetch */, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    assert_true(ts_wait_for(base, &s.n, 5, 30000));
    assert_true(kafka_consumer_paused(c));
    /* Paused: nothing more arrives, though the consumer keeps serving the group. */
    ts_run_for(base, 700);
    int at_pause = s.n;
    /* Pausing drops what was already fetched: not even the rest of the batch is delivered. */
    assert_int_equal(at_pause, 5);
    kafka_consumer_resume(c);
    assert_true(ts_wait_for(base, &s.n, 26, 30000));
    ts_run_for(base, 300);
    assert_int_equal(s.n, 26);
    assert_int_equal(s.per_topic[0], 20);
    assert_int_equal(s.per_topic[1], 6);
    assert_int_equal(s.dup, 0);
    assert_int_equal(s.off_loop, 0);
    assert_true(s.assigned >= 1);
    assert_int_equal(s.assigned_parts, 2);
    assert_true(strlen(s.last_header) > 0);
    kafka_consumer_free(c);
    kafka_producer_free(p);
}

static void test_deferred_assign_from_stored_offsets(void **state)
{
    (void)state;
    kafka_producer *p = mock_producer();
    reports r = {0};
    produce_n(p, "t.chat.events", 12, &r);
    assert_true(ts_wait_for(base, &r.n, 12, 20000));
    consumed s = {.defer = true, .start_offset = 10};
    kafka_consumer *c = mock_consumer(&s, "g-deferred");
    const char *topics[] = {"t.chat.events"};
    assert_int_equal(kafka_consumer_subscribe(c, topics, 1), 0);
    assert_int_equal(kafka_consumer_assign(c, NULL), KAFKA_E_INVALID);
    assert_true(ts_wait_for(base, &s.assigned, 1, 30000));
    /* Nothing flows until the application supplies the offsets (e.g. from PostgreSQL). */
    ts_run_for(base, 300);
    assert_int_equal(s.n, 0);
    assert_non_null(s.pending);
    assert_int_equal(kafka_consumer_assign(c, s.pending), 0);
    assert_int_equal(kafka_consumer_assign(c, s.pending), KAFKA_E_STATE);
    rd_kafka_topic_partition_list_destroy(s.pending);
    s.pending = NULL;
    assert_true(ts_wait_for(base, &s.n, 2, 30000));
    assert_int_equal(s.first_offset, 10);
    ts_run_for(base, 200);
    assert_int_equal(s.n, 2);
    kafka_consumer_free(c);
    kafka_producer_free(p);
}

static int closed_calls;

static void on_closed(kafka_consumer *c, void *ud)
{
    (void)c;
    (void)ud;
    closed_calls++;
}

static void test_orderly_close(void **state)
{
    (void)state;
    consumed s = {0};
    kafka_consumer *c = mock_consumer(&s, "g-close");
    const char *topics[] = {"t.chat.events"};
    assert_int_equal(kafka_consumer_subscribe(c, topics, 1), 0);
    assert_true(ts_wait_for(base, &s.assigned, 1, 30000));
    closed_calls = 0;
    assert_int_equal(kafka_consumer_close(c, on_closed, NULL), 0);
    assert_int_equal(kafka_consumer_close(c, on_closed, NULL), KAFKA_E_STATE);
    assert_true(ts_wait_for(base, &closed_calls, 1, 30000));
    assert_true(s.revoked >= 1);
    kafka_consumer_free(c);
}

int main(void)
{
    log_init("kafka_test"); /* LOG_LEVEL=debug */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_then_purged_on_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_timeout_on_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_produce_retriable_errors_no_duplicates, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_reports_done_after_each_turn, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_produce_permanent_error_reported, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_consumer_regex_fetch_errors_and_pause, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_deferred_assign_from_stored_offsets, mock_setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_orderly_close, mock_setup, mock_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
