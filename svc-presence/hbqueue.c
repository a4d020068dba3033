/* hbqueue.c: heartbeats of a loop iteration batched into store_heartbeats() calls (see
 * hbqueue.h). */
#include "hbqueue.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "keys.h"
#include "mem.h"

/* A queued heartbeat: its callback, and its ids as offsets into the queue's text buffer (which
 * may move while the queue grows). */
typedef struct hbq_item {
    store_heartbeat_cb cb;
    void *ud;
    uint32_t ttl_ms;
    uint32_t user;   /* offset of the user id in |text| */
    uint32_t device; /* offset of the device id */
} hbq_item;

/* What waits for the next flush. Two of them swap at each flush, so that a callback that
 * queues a heartbeat while the flush runs gets a queue of its own (and a new flush). */
typedef struct hbq_buf {
    hbq_item *items;
    size_t n, cap;
    char *text; /* "user\0device\0" per item */
    size_t len, text_cap;
} hbq_buf;

/* One script call not answered yet. */
typedef struct hbq_call {
    hbqueue *q; /* NULL once the queue is freed */
    struct hbq_call *prev, *next;
    int64_t t0_ns; /* sent */
    size_t n;
    struct {
        store_heartbeat_cb cb;
        void *ud;
    } items[];
} hbq_call;

struct hbqueue {
    struct event_base *base;
    const store *st;
    redis_client *c;
    hbqueue_config cfg;
    struct event *flush_ev;
    bool armed;          /* flush_ev is active */
    hbq_buf bufs[2];     /* bufs[cur] fills */
    int cur;             /* the filling buffer */
    size_t queued;       /* heartbeats not sent yet (both buffers) */
    size_t inflight;     /* heartbeats in calls not answered */
    hbq_call *calls;     /* those calls, to detach them on free */
    uint64_t sent_calls; /* script calls sent */
    uint64_t sent_beats; /* heartbeats in them */
};

const char *hbqueue_strerror(int err)
{
    if (err == HBQUEUE_E_FULL)
        return "too many heartbeats waiting for Redis";
    return store_strerror(err);
}

void hbqueue_config_init(hbqueue_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->batch_max = 128;
    cfg->queue_max = 10000;
}

static void on_flush(evutil_socket_t fd, short what, void *arg);

int hbqueue_new(hbqueue **out, struct event_base *base, const store *st, redis_client *c,
                const hbqueue_config *cfg)
{
    hbqueue *q = mem_calloc(1, sizeof(*q));
    q->base = base;
    q->st = st;
    q->c = c;
    if (cfg != NULL)
        q->cfg = *cfg;
    else
        hbqueue_config_init(&q->cfg);
    if (q->cfg.batch_max == 0)
        q->cfg.batch_max = 1;
    if (q->cfg.batch_max > STORE_HEARTBEATS_MAX)
        q->cfg.batch_max = STORE_HEARTBEATS_MAX;
    if (q->cfg.queue_max == 0)
        q->cfg.queue_max = 1;
    q->flush_ev = event_new(base, -1, 0, on_flush, q);
    *out = q;
    return 0;
}

/* Gives every heartbeat in |b| its callback with |err| and empties |b|. */
static void buf_fail(hbqueue *q, hbq_buf *b, int err)
{
    size_t n = b->n;
    q->queued -= n;
    b->n = 0;
    b->len = 0;
    for (size_t i = 0; i < n; i++)
        b->items[i].cb(err, 0, 0, b->items[i].ud);
}

void hbqueue_free(hbqueue *q)
{
    if (q == NULL)
        return;
    event_free(q->flush_ev);
    for (hbq_call *k = q->calls; k != NULL; k = k->next)
        k->q = NULL;
    for (int i = 0; i < 2; i++) {
        buf_fail(q, &q->bufs[i], REDIS_E_CLOSED);
        free(q->bufs[i].items);
        free(q->bufs[i].text);
    }
    free(q);
}

size_t hbqueue_queued(const hbqueue *q)
{
    return q->queued;
}

size_t hbqueue_inflight(const hbqueue *q)
{
    return q->inflight;
}

void hbqueue_stats(const hbqueue *q, uint64_t *calls, uint64_t *heartbeats)
{
    *calls = q->sent_calls;
    *heartbeats = q->sent_beats;
}

int hbqueue_heartbeat(hbqueue *q, const char *user, const char *device, uint32_t ttl_ms,
                      store_heartbeat_cb cb, void *ud)
{
    hbq_buf *b = &q->bufs[q->cur];
    if (q->queued + q->inflight >= q->cfg.queue_max)
        return HBQUEUE_E_FULL;
    if (!redis_client_connected(q->c))
        return REDIS_E_DISCONNECTED;
    size_t ul = strlen(user), dl = strlen(device);
    if (sizeof(KEYS_DEVICE_PREFIX) + ul + 1 + dl > KEYS_MAX) /* as store_heartbeats() checks */
        return STORE_E_INVALID;
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->items = mem_realloc(b->items, b->cap * sizeof(*b->items));
    }
    if (b->len + ul + dl + 2 > b->text_cap) {
        b->text_cap = b->text_cap ? 2 * b->text_cap : 4096;
        while (b->len + ul + dl + 2 > b->text_cap)
            b->text_cap *= 2;
        b->text = mem_realloc(b->text, b->text_cap);
    }
    q->queued++;
    hbq_item *it = &b->items[b->n++];
    it->cb = cb;
    it->ud = ud;
    it->ttl_ms = ttl_ms;
    it->user = (uint32_t)b->len;
    memcpy(b->text + b->len, user, ul + 1);
    b->len += ul + 1;
    it->device = (uint32_t)b->len;
    memcpy(b->text + b->len, device, dl + 1);
    b->len += dl + 1;
    if (!q->armed) {
        q->armed = true;
        event_active(q->flush_ev, EV_TIMEOUT, 0);
    }
    return 0;
}

static void call_unlink(hbqueue *q, hbq_call *k)
{
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        q->calls = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
}

static void on_batch(int err, const store_hb_result *r, size_t n, void *ud)
{
    hbq_call *k = ud;
    hbqueue *q = k->q;
    if (q != NULL) {
        call_unlink(q, k);
        q->inflight -= n;
        if (err == 0 && q->cfg.round_trip != NULL)
            metrics_histogram_observe(q->cfg.round_trip,
                                      (double)(clock_mono_ns() - k->t0_ns) / 1e9);
    }
    /* |q| is not used past this point */
    for (size_t i = 0; i < n; i++) {
        if (err != 0)
            k->items[i].cb(err, 0, 0, k->items[i].ud);
        else if (r[i].err != 0)
            k->items[i].cb(r[i].err, 0, 0, k->items[i].ud);
        else
            k->items[i].cb(0, r[i].expires_at_ms, r[i].devices, k->items[i].ud);
    }
    free(k);
}

/* Sends |n| items of |b| from |first| as one script call; on refusal gives them their
 * callbacks with the error. */
static void send_batch(hbqueue *q, hbq_buf *b, size_t first, size_t n)
{
    store_hb hbs[STORE_HEARTBEATS_MAX];
    hbq_call *k = mem_alloc(sizeof(*k) + n * sizeof(k->items[0]));
    k->q = q;
    k->n = n;
    for (size_t i = 0; i < n; i++) {
        const hbq_item *it = &b->items[first + i];
        hbs[i].user = b->text + it->user;
        hbs[i].device = b->text + it->device;
        hbs[i].ttl_ms = it->ttl_ms;
        k->items[i].cb = it->cb;
        k->items[i].ud = it->ud;
    }
    k->t0_ns = q->cfg.round_trip != NULL ? clock_mono_ns() : 0;
    q->queued -= n;
    int rv = store_heartbeats(q->st, q->c, hbs, n, on_batch, k);
    if (rv != 0) {
        for (size_t i = 0; i < n; i++)
            k->items[i].cb(rv, 0, 0, k->items[i].ud);
        free(k);
        return;
    }
    k->prev = NULL;
    k->next = q->calls;
    if (q->calls != NULL)
        q->calls->prev = k;
    q->calls = k;
    q->inflight += n;
    q->sent_calls++;
    q->sent_beats += n;
    if (q->cfg.batch_size != NULL)
        metrics_histogram_observe(q->cfg.batch_size, (double)n);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hbqueue *q = arg;
    q->armed = false;
    /* Heartbeats queued by the callbacks below go to the other buffer and a new flush. */
    hbq_buf *b = &q->bufs[q->cur];
    q->cur ^= 1;
    size_t n = b->n;
    for (size_t first = 0; first < n; first += q->cfg.batch_max) {
        size_t k = n - first < q->cfg.batch_max ? n - first : q->cfg.batch_max;
        send_batch(q, b, first, k);
    }
    b->n = 0;
    b->len = 0;
}
