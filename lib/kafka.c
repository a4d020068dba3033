/* librdkafka producer and consumer on a libevent loop (kafka.h). */
#include "kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

const char *kafka_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case KAFKA_E_INVALID:
        return "invalid argument";
    case KAFKA_E_CONFIG:
        return "invalid Kafka client configuration";
    case KAFKA_E_QUEUE_FULL:
        return "Kafka producer queue full";
    case KAFKA_E_MSG_SIZE:
        return "Kafka message too large";
    case KAFKA_E_FATAL:
        return "Kafka producer failed fatally";
    case KAFKA_E_CLOSED:
        return "Kafka client closed";
    case KAFKA_E_STATE:
        return "not possible in the Kafka client's current state";
    case KAFKA_E_KAFKA:
        return "Kafka client error";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

void kafka_config_init(kafka_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->client_id = "chat";
    cfg->name = "kafka";
    cfg->max_inflight = 100000;
    cfg->offsets = KAFKA_OFFSETS_AUTO;
    cfg->batch_max = 500;
}

/* librdkafka logs from its own threads; log_write is thread-safe. */
static void on_rdk_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const char *name = rd_kafka_name(rk);
    if (level <= 3)
        log_error("kafka %s: %s: %s", name, fac, buf);
    else if (level == 4)
        log_warn("kafka %s: %s: %s", name, fac, buf);
    else if (level <= 6)
        log_info("kafka %s: %s: %s", name, fac, buf);
    else
        log_debug("kafka %s: %s: %s", name, fac, buf);
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *key, const char *val)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        log_error("%s: config %s=%s: %s", name, key, val, errstr);
        return KAFKA_E_CONFIG;
    }
    return 0;
}

/* Applies "key=value" entries. */
static int conf_props(rd_kafka_conf_t *conf, const char *name, const char *const *props)
{
    for (size_t i = 0; props != NULL && props[i] != NULL; i++) {
        const char *eq = strchr(props[i], '=');
        if (eq == NULL || eq == props[i]) {
            log_error("%s: config entry \"%s\" is not key=value", name, props[i]);
            return KAFKA_E_CONFIG;
        }
        char *key = mem_strndup(props[i], (size_t)(eq - props[i]));
        int rv = conf_set(conf, name, key, eq + 1);
        free(key);
        if (rv != 0)
            return rv;
    }
    return 0;
}

/* A pipe the rdkafka queue writes to when it becomes non-empty. */
static int make_pipe(int fds[2])
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return -errno;
    return 0;
}

static void drain_pipe(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

static void close_pipe(int fds[2])
{
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    fds[0] = fds[1] = -1;
}

/* --- producer ------------------------------------------------------------------------------ */

struct kafka_producer {
    struct event_base *base;   /* loop */
    rd_kafka_t *rk;            /* handle */
    rd_kafka_queue_t *mainq;   /* main queue (delivery reports, errors) */
    int fds[2];                /* wake pipe */
    struct event *wake;        /* read event on fds[0] */
    char *name;                /* for logs */
    kafka_error_cb on_error;   /* user hook or NULL */
    void *ud;                  /* its user_data */
    size_t inflight;           /* accepted, not yet reported */
    int depth;                 /* callback nesting; free deferred while > 0 */
    bool closing;              /* free requested */
    bool fatal;                /* fatal error seen */
    struct event *flush_timer; /* flush progress */
    void (*flush_done)(kafka_producer *, size_t, void *); /* flush callback */
    void *flush_ud;                                       /* its user_data */
    int64_t flush_deadline;                               /* mono ms */
    kafka_reports_done_cb reports_done; /* after a turn that served reports, or NULL */
    void *reports_ud;                   /* its user_data */
};

typedef struct kmsg {
    kafka_delivery_cb cb; /* user callback or NULL */
    void *ud;             /* its user_data */
} kmsg;

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kafka_producer *p = opaque;
    kmsg *km = m->_private;
    p->inflight--;
    if (km == NULL)
        return;
    if (km->cb != NULL) {
        kafka_delivery d;
        d.err = m->err;
        d.errstr = rd_kafka_err2str(m->err);
        d.topic = m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "";
        d.partition = m->partition;
        d.offset = m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? m->offset : -1;
        d.possibly_persisted = m->err != RD_KAFKA_RESP_ERR_NO_ERROR &&
                               rd_kafka_message_status(m) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
        km->cb(p, &d, km->ud);
    }
    free(km);
}

static void on_producer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        p->fatal = true;
        log_error("%s: fatal producer error %s: %s", p->name, rd_kafka_err2name(orig), buf);
        if (p->on_error != NULL && !p->closing)
            p->on_error(p, true, orig, buf, p->ud);
        return;
    }
    log_warn("%s: %s: %s", p->name, rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    if (p->on_error != NULL && !p->closing)
        p->on_error(p, false, (rd_kafka_resp_err_t)err, reason, p->ud);
}

static void producer_destroy(kafka_producer *p)
{
    if (p->rk != NULL) {
        /* Every accepted message gets its report before the handle goes: purge, then serve
         * the purge reports (in-flight purges complete on broker threads, hence the loop). */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        int64_t end = clock_mono_ms() + 5000;
        rd_kafka_poll(p->rk, 0);
        while (p->inflight > 0 && clock_mono_ms() < end)
            rd_kafka_poll(p->rk, 10);
        if (p->inflight > 0)
            log_warn("%s: %zu delivery reports still missing at shutdown", p->name, p->inflight);
        rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(p->mainq);
        rd_kafka_destroy(p->rk);
    }
    if (p->wake != NULL)
        event_free(p->wake);
    if (p->flush_timer != NULL)
        event_free(p->flush_timer);
    close_pipe(p->fds);
    free(p->name);
    free(p);
}

static void p_enter(kafka_producer *p)
{
    p->depth++;
}

static bool p_leave(kafka_producer *p)
{
    if (--p->depth == 0 && p->closing) {
        producer_destroy(p);
        return true;
    }
    return false;
}

/* Serves the queued delivery reports (and errors), then the reports_done hook. */
static void producer_serve(kafka_producer *p)
{
    if (p->closing)
        return;
    int served = rd_kafka_poll(p->rk, 0);
    if (served > 0 && !p->closing && p->reports_done != NULL)
        p->reports_done(p, p->reports_ud);
}

void kafka_producer_set_reports_done(kafka_producer *p, kafka_reports_done_cb cb, void *user_data)
{
    p->reports_done = cb;
    p->reports_ud = user_data;
}

static void on_producer_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    kafka_producer *p = arg;
    drain_pipe(fd);
    p_enter(p);
    producer_serve(p);
    p_leave(p);
}

static void on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kafka_producer *p = arg;
    p_enter(p);
    producer_serve(p);
    if (!p->closing && p->flush_done != NULL &&
        (p->inflight == 0 || clock_mono_ms() >= p->flush_deadline)) {
        void (*done)(kafka_producer *, size_t, void *) = p->flush_done;
        p->flush_done = NULL;
        event_del(p->flush_timer);
        done(p, p->inflight, p->flush_ud);
    }
    p_leave(p);
}

int kafka_producer_new(kafka_producer **out, struct event_base *base, const kafka_config *cfg,
                       kafka_error_cb on_error, void *user_data)
{
    *out = NULL;
    if (base == NULL || cfg == NULL || cfg->brokers == NULL || cfg->brokers[0] == '\0')
        return KAFKA_E_INVALID;
    kafka_producer *p = mem_calloc(1, sizeof(*p));
    p->base = base;
    p->fds[0] = p->fds[1] = -1;
    p->name = mem_strdup(cfg->name ? cfg->name : "kafka");
    p->on_error = on_error;
    p->ud = user_data;
    int rv = make_pipe(p->fds);
    if (rv != 0) {
        producer_destroy(p);
        return rv;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char max[24];
    snprintf(max, sizeof(max), "%u", cfg->max_inflight ? cfg->max_inflight : 100000);
    rv = conf_set(conf, p->name, "bootstrap.servers", cfg->brokers);
    if (rv == 0)
        rv = conf_set(conf, p->name, "client.id", cfg->client_id ? cfg->client_id : "chat");
    if (rv == 0)
        rv = conf_set(conf, p->name, "queue.buffering.max.messages", max);
    if (rv == 0)
        rv = conf_set(conf, p->name, "partitioner", "murmur2_random");
    if (rv == 0)
        rv = conf_props(conf, p->name, cfg->props);
    /* The guarantees the log of record depends on are not negotiable. */
    if (rv == 0)
        rv = conf_set(conf, p->name, "enable.idempotence", "true");
    if (rv == 0)
        rv = conf_set(conf, p->name, "acks", "all");
    if (rv != 0) {
        rd_kafka_conf_destroy(conf);
        producer_destroy(p);
        return rv;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_conf_set_error_cb(conf, on_producer_error);
    rd_kafka_conf_set_log_cb(conf, on_rdk_log);
    char errstr[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        log_error("%s: cannot create producer: %s", p->name, errstr);
        rd_kafka_conf_destroy(conf);
        producer_destroy(p);
        return KAFKA_E_CONFIG;
    }
    p->mainq = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(p->mainq, p->fds[1], "1", 1);
    p->wake = event_new(base, p->fds[0], EV_READ | EV_PERSIST, on_producer_wake, p);
    event_add(p->wake, NULL);
    /* The pipe is written only when the queue turns non-empty: whatever librdkafka queued
     * before io events were enabled would wait forever, so serve once on the first turn. */
    event_active(p->wake, EV_READ, 0);
    p->flush_timer = event_new(base, -1, EV_PERSIST, on_flush_timer, p);
    *out = p;
    return 0;
}

int kafka_producer_send(kafka_producer *p, const char *topic, int32_t partition, const void *key,
                        size_t key_len, const void *value, size_t value_len,
                        const kafka_header *headers, size_t n_headers, kafka_delivery_cb cb,
                        void *user_data)
{
    if (p == NULL || topic == NULL || topic[0] == '\0' || partition < KAFKA_PARTITION_ANY ||
        (n_headers > 0 && headers == NULL) || n_headers > 64)
        return KAFKA_E_INVALID;
    if (p->closing)
        return KAFKA_E_CLOSED;
    if (p->fatal)
        return KAFKA_E_FATAL;
    kmsg *km = mem_alloc(sizeof(*km));
    km->cb = cb;
    km->ud = user_data;
    rd_kafka_vu_t vu[6 + 64];
    size_t n = 0;
    vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
    vu[n++].u.cstr = topic;
    vu[n].vtype = RD_KAFKA_VTYPE_PARTITION;
    vu[n++].u.i32 = partition;
    vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[n++].u.i = RD_KAFKA_MSG_F_COPY;
    vu[n].vtype = RD_KAFKA_VTYPE_KEY;
    vu[n].u.mem.ptr = (void *)key;
    vu[n++].u.mem.size = key != NULL ? key_len : 0;
    vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[n].u.mem.ptr = (void *)value;
    vu[n++].u.mem.size = value != NULL ? value_len : 0;
    vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[n++].u.ptr = km;
    for (size_t i = 0; i < n_headers; i++) {
        vu[n].vtype = RD_KAFKA_VTYPE_HEADER;
        vu[n].u.header.name = headers[i].name;
        vu[n].u.header.val = headers[i].value;
        vu[n++].u.header.size = headers[i].value != NULL ? (ssize_t)headers[i].len : -1;
    }
    rd_kafka_error_t *error = rd_kafka_produceva(p->rk, vu, n);
    if (error == NULL) {
        p->inflight++;
        return 0;
    }
    rd_kafka_resp_err_t err = rd_kafka_error_code(error);
    int rv;
    switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        rv = KAFKA_E_QUEUE_FULL;
        break;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        rv = KAFKA_E_MSG_SIZE;
        break;
    case RD_KAFKA_RESP_ERR__FATAL:
        rv = KAFKA_E_FATAL;
        break;
    default:
        log_warn("%s: produce to %s: %s", p->name, topic, rd_kafka_error_string(error));
        rv = KAFKA_E_KAFKA;
        break;
    }
    rd_kafka_error_destroy(error);
    free(km);
    return rv;
}

size_t kafka_producer_inflight(const kafka_producer *p)
{
    return p->inflight;
}

int kafka_producer_flush(kafka_producer *p, uint32_t timeout_ms,
                         void (*done)(kafka_producer *p, size_t remaining, void *user_data),
                         void *user_data)
{
    if (p == NULL || done == NULL)
        return KAFKA_E_INVALID;
    if (p->closing)
        return KAFKA_E_CLOSED;
    if (p->flush_done != NULL)
        return KAFKA_E_STATE;
    p->flush_done = done;
    p->flush_ud = user_data;
    p->flush_deadline = clock_mono_ms() + timeout_ms;
    /* Reports arrive through the wake pipe; the timer only checks progress and the deadline
     * (its first run is immediate, so an empty producer completes at once). */
    struct timeval tv = {0, 10000};
    event_add(p->flush_timer, &tv);
    event_active(p->flush_timer, EV_TIMEOUT, 0);
    return 0;
}

void kafka_producer_free(kafka_producer *p)
{
    if (p == NULL || p->closing)
        return;
    p->closing = true;
    if (p->wake != NULL)
        event_del(p->wake);
    if (p->flush_timer != NULL)
        event_del(p->flush_timer);
    if (p->depth == 0)
        producer_destroy(p);
}

rd_kafka_t *kafka_producer_handle(kafka_producer *p)
{
    return p->rk;
}

/* --- consumer ------------------------------------------------------------------------------ */

struct kafka_consumer {
    struct event_base *base;      /* loop */
    rd_kafka_t *rk;               /* handle */
    rd_kafka_queue_t *q;          /* consumer queue (main queue forwarded to it) */
    int fds[2];                   /* wake pipe */
    struct event *wake;           /* read event on fds[0] */
    struct event *more;           /* continue a batch on the next loop turn */
    struct event *tick;           /* periodic poll: keeps max.poll.interval.ms happy */
    char *name;                   /* for logs */
    kafka_consumer_callbacks cbs; /* user callbacks */
    void *ud;                     /* their user_data */
    uint32_t batch_max;           /* messages per turn */
    kafka_offset_mode mode;       /* offset handling */
    int depth;                    /* callback nesting */
    bool closing;                 /* free requested */
    bool leaving;                 /* kafka_consumer_close() in progress */
    bool closed;                  /* group left cleanly */
    void (*close_done)(kafka_consumer *, void *); /* close callback */
    void *close_ud;                               /* its user_data */
    bool paused;                                  /* back-pressure on */
    bool assign_pending; /* a deferred ASSIGN awaits kafka_consumer_assign() */
};

static void consumer_destroy(kafka_consumer *c)
{
    if (c->rk != NULL) {
        if (c->q != NULL) {
            rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
            rd_kafka_queue_destroy(c->q);
        }
        rd_kafka_destroy_flags(c->rk, c->closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    if (c->wake != NULL)
        event_free(c->wake);
    if (c->more != NULL)
        event_free(c->more);
    if (c->tick != NULL)
        event_free(c->tick);
    close_pipe(c->fds);
    free(c->name);
    free(c);
}

static void c_enter(kafka_consumer *c)
{
    c->depth++;
}

static bool c_leave(kafka_consumer *c)
{
    if (--c->depth == 0 && c->closing) {
        consumer_destroy(c);
        return true;
    }
    return false;
}

static bool cooperative(kafka_consumer *c)
{
    const char *proto = rd_kafka_rebalance_protocol(c->rk);
    return proto != NULL && strcmp(proto, "COOPERATIVE") == 0;
}

static int do_assign(kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    if (cooperative(c)) {
        rd_kafka_error_t *e = rd_kafka_incremental_assign(c->rk, parts);
        if (e != NULL) {
            log_warn("%s: incremental assign: %s", c->name, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            return KAFKA_E_KAFKA;
        }
    } else {
        rd_kafka_resp_err_t err = rd_kafka_assign(c->rk, parts);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            log_warn("%s: assign: %s", c->name, rd_kafka_err2str(err));
            return KAFKA_E_KAFKA;
        }
    }
    if (c->paused && parts != NULL && parts->cnt > 0) {
        rd_kafka_topic_partition_list_t *copy = rd_kafka_topic_partition_list_copy(parts);
        rd_kafka_pause_partitions(c->rk, copy);
        rd_kafka_topic_partition_list_destroy(copy);
    }
    return 0;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_consumer *c = opaque;
    bool coop = cooperative(c);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        int r = 0;
        if (c->cbs.on_rebalance != NULL && !c->closing)
            r = c->cbs.on_rebalance(c, KAFKA_REBALANCE_ASSIGN, parts, c->ud);
        if (r == KAFKA_REBALANCE_DEFER && !c->closing) {
            c->assign_pending = true;
            return;
        }
        do_assign(c, parts);
        return;
    }
    c->assign_pending = false;
    kafka_rebalance_kind kind =
        rd_kafka_assignment_lost(rk) ? KAFKA_REBALANCE_LOST : KAFKA_REBALANCE_REVOKE;
    if (c->cbs.on_rebalance != NULL && !c->closing)
        c->cbs.on_rebalance(c, kind, parts, c->ud);
    if (coop) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e != NULL)
            rd_kafka_error_destroy(e);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

static void on_consumer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    kafka_consumer *c = opaque;
    bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    if (fatal)
        log_error("%s: fatal consumer error: %s", c->name, reason);
    else
        log_warn("%s: %s: %s", c->name, rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    if (c->cbs.on_error != NULL && !c->closing)
        c->cbs.on_error(c, fatal, (rd_kafka_resp_err_t)err, reason, c->ud);
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    (void)offsets;
    kafka_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    log_warn("%s: offset commit failed: %s", c->name, rd_kafka_err2str(err));
    if (c->cbs.on_error != NULL && !c->closing)
        c->cbs.on_error(c, false, err, rd_kafka_err2str(err), c->ud);
}

/* Serves the consumer queue: at most batch_max messages, plus any rebalance/error events. */
static void consumer_serve(kafka_consumer *c)
{
    c_enter(c);
    uint32_t n = 0;
    while (!c->closing && n < c->batch_max) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
        if (m == NULL)
            break;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            n++;
            kafka_message km;
            km.topic = m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "";
            km.partition = m->partition;
            km.offset = m->offset;
            km.key = m->key;
            km.key_len = m->key_len;
            km.value = m->payload;
            km.value_len = m->len;
            km.timestamp_ms = rd_kafka_message_timestamp(m, NULL);
            km.raw = m;
            c->cbs.on_message(c, &km, c->ud);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            const char *why = rd_kafka_message_errstr(m);
            log_warn("%s: consume: %s", c->name, why);
            if (c->cbs.on_error != NULL && !c->closing)
                c->cbs.on_error(c, m->err == RD_KAFKA_RESP_ERR__FATAL, m->err, why, c->ud);
        }
        rd_kafka_message_destroy(m);
    }
    /* The wake pipe fires only when the queue goes from empty to non-empty: if we stopped
     * with work left, come back on the next loop turn (after other events had their go). */
    if (!c->closing && n >= c->batch_max)
        event_active(c->more, EV_TIMEOUT, 0);
    if (!c->closing && c->leaving && !c->closed && rd_kafka_consumer_closed(c->rk)) {
        c->closed = true;
        if (c->close_done != NULL)
            c->close_done(c, c->close_ud);
    }
    c_leave(c);
}

static void on_consumer_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    drain_pipe(fd);
    consumer_serve(arg);
}

static void on_consumer_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    consumer_serve(arg);
}

int kafka_consumer_new(kafka_consumer **out, struct event_base *base, const kafka_config *cfg,
                       const kafka_consumer_callbacks *cbs, void *user_data)
{
    *out = NULL;
    if (base == NULL || cfg == NULL || cfg->brokers == NULL || cfg->brokers[0] == '\0' ||
        cfg->group_id == NULL || cfg->group_id[0] == '\0' || cbs == NULL || cbs->on_message == NULL)
        return KAFKA_E_INVALID;
    kafka_consumer *c = mem_calloc(1, sizeof(*c));
    c->base = base;
    c->fds[0] = c->fds[1] = -1;
    c->name = mem_strdup(cfg->name ? cfg->name : "kafka");
    c->cbs = *cbs;
    c->ud = user_data;
    c->batch_max = cfg->batch_max ? cfg->batch_max : 500;
    c->mode = cfg->offsets;
    int rv = make_pipe(c->fds);
    if (rv != 0) {
        consumer_destroy(c);
        return rv;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rv = conf_set(conf, c->name, "bootstrap.servers", cfg->brokers);
    if (rv == 0)
        rv = conf_set(conf, c->name, "client.id", cfg->client_id ? cfg->client_id : "chat");
    if (rv == 0)
        rv = conf_set(conf, c->name, "group.id", cfg->group_id);
    if (rv == 0)
        rv = conf_set(conf, c->name, "enable.partition.eof", "false");
    if (rv == 0)
        rv = conf_set(conf, c->name, "enable.auto.commit",
                      cfg->offsets == KAFKA_OFFSETS_MANUAL ? "false" : "true");
    if (rv == 0)
        rv = conf_set(conf, c->name, "enable.auto.offset.store",
                      cfg->offsets == KAFKA_OFFSETS_AUTO ? "true" : "false");
    if (rv == 0)
        rv = conf_props(conf, c->name, cfg->props);
    if (rv != 0) {
        rd_kafka_conf_destroy(conf);
        consumer_destroy(c);
        return rv;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_consumer_error);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_log_cb(conf, on_rdk_log);
    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        log_error("%s: cannot create consumer: %s", c->name, errstr);
        rd_kafka_conf_destroy(conf);
        consumer_destroy(c);
        return KAFKA_E_CONFIG;
    }
    /* Errors, rebalances and commits come out of the consumer queue like messages do. */
    rd_kafka_poll_set_consumer(c->rk);
    c->q = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_queue_io_event_enable(c->q, c->fds[1], "1", 1);
    c->wake = event_new(base, c->fds[0], EV_READ | EV_PERSIST, on_consumer_wake, c);
    event_add(c->wake, NULL);
    event_active(c->wake, EV_READ, 0); /* see kafka_producer_new() */
    c->more = event_new(base, -1, 0, on_consumer_more, c);
    /* librdkafka expects a poll at least every max.poll.interval.ms even when idle. */
    c->tick = event_new(base, -1, EV_PERSIST, on_consumer_more, c);
    struct timeval tv = {1, 0};
    event_add(c->tick, &tv);
    *out = c;
    return 0;
}

int kafka_consumer_subscribe(kafka_consumer *c, const char *const *topics, size_t n)
{
    if (c == NULL || topics == NULL || n == 0)
        return KAFKA_E_INVALID;
    if (c->closing || c->leaving)
        return KAFKA_E_CLOSED;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        if (topics[i] == NULL || topics[i][0] == '\0') {
            rd_kafka_topic_partition_list_destroy(l);
            return KAFKA_E_INVALID;
        }
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("%s: subscribe: %s", c->name, rd_kafka_err2str(err));
        return KAFKA_E_KAFKA;
    }
    return 0;
}

int kafka_consumer_assign(kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    if (c == NULL || parts == NULL)
        return KAFKA_E_INVALID;
    if (c->closing)
        return KAFKA_E_CLOSED;
    if (!c->assign_pending)
        return KAFKA_E_STATE;
    c->assign_pending = false;
    return do_assign(c, parts);
}

static void pause_resume(kafka_consumer *c, bool pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || parts == NULL)
        return;
    if (parts->cnt > 0) {
        if (pause)
            rd_kafka_pause_partitions(c->rk, parts);
        else
            rd_kafka_resume_partitions(c->rk, parts);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

void kafka_consumer_pause(kafka_consumer *c)
{
    if (c->paused || c->closing)
        return;
    c->paused = true;
    pause_resume(c, true);
}

void kafka_consumer_resume(kafka_consumer *c)
{
    if (!c->paused || c->closing)
        return;
    c->paused = false;
    pause_resume(c, false);
}

bool kafka_consumer_paused(const kafka_consumer *c)
{
    return c->paused;
}

int kafka_message_header(const kafka_message *m, const char *name, const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs = NULL;
    *value = NULL;
    *len = 0;
    if (m->raw == NULL || rd_kafka_message_headers(m->raw, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    return 0;
}

int kafka_consumer_store(kafka_consumer *c, const kafka_message *m)
{
    if (c == NULL || m == NULL)
        return KAFKA_E_INVALID;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, m->topic, m->partition)->offset = m->offset + 1;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_debug("%s: offset store %s[%d]@%lld: %s", c->name, m->topic, (int)m->partition,
                  (long long)m->offset, rd_kafka_err2str(err));
        return KAFKA_E_KAFKA;
    }
    return 0;
}

int kafka_consumer_commit(kafka_consumer *c, const rd_kafka_topic_partition_list_t *offsets)
{
    if (c == NULL)
        return KAFKA_E_INVALID;
    if (c->closing)
        return KAFKA_E_CLOSED;
    rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, offsets, 1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        log_warn("%s: commit: %s", c->name, rd_kafka_err2str(err));
        return KAFKA_E_KAFKA;
    }
    return 0;
}

int kafka_consumer_close(kafka_consumer *c, void (*done)(kafka_consumer *c, void *user_data),
                         void *user_data)
{
    if (c == NULL)
        return KAFKA_E_INVALID;
    if (c->closing || c->leaving)
        return KAFKA_E_STATE;
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, c->q);
    if (e != NULL) {
        log_warn("%s: close: %s", c->name, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return KAFKA_E_KAFKA;
    }
    c->leaving = true;
    c->close_done = done;
    c->close_ud = user_data;
    event_active(c->more, EV_TIMEOUT, 0);
    return 0;
}

void kafka_consumer_free(kafka_consumer *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    if (c->wake != NULL)
        event_del(c->wake);
    if (c->more != NULL)
        event_del(c->more);
    if (c->tick != NULL)
        event_del(c->tick);
    if (c->depth == 0)
        consumer_destroy(c);
}

rd_kafka_t *kafka_consumer_handle(kafka_consumer *c)
{
    return c->rk;
}
