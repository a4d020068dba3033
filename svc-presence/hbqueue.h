/*
 * hbqueue.h: the heartbeats of one loop iteration, sent as batched script calls.
 *
 * A queue belongs to one redis_client and the loop it runs on. hbqueue_heartbeat() only
 * queues; the first heartbeat queued in a loop iteration activates a zero-delay event, which
 * libevent runs after the callbacks already active in that iteration (every connection that
 * was readable, so every request that had arrived), and which sends the queue as
 * store_heartbeats() calls of at most batch_max heartbeats each. Under load one script call
 * then carries many heartbeats, which costs Redis a fraction of a script call each (the
 * per-call work of EVALSHA, TIME and the network is shared); with one heartbeat per
 * iteration it is a batch of one. Each heartbeat still gets its own callback with its own
 * result or error, exactly as store_heartbeat() would give it.
 *
 * Bounded: at most queue_max heartbeats are queued or in script calls not answered yet;
 * beyond that hbqueue_heartbeat() refuses at once with HBQUEUE_E_FULL (nothing waits without
 * bound). While the connection is down it refuses with REDIS_E_DISCONNECTED, as
 * store_heartbeat() does.
 *
 * Single-threaded: use a queue only on its loop.
 */
#ifndef PRESENCE_HBQUEUE_H
#define PRESENCE_HBQUEUE_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "metrics.h"
#include "redis.h"
#include "store.h"

/* Error code (besides STORE_E_* and REDIS_E_*). */
enum {
    HBQUEUE_E_FULL = -2150, /* queue_max heartbeats already queued or in flight */
};

/* Returns a static description of |err| (HBQUEUE_E_*, STORE_E_* or REDIS_E_*). */
const char *hbqueue_strerror(int err);

/* Settings. Fill with hbqueue_config_init(). */
typedef struct hbqueue_config {
    uint32_t batch_max;            /* heartbeats per script call, 1..STORE_HEARTBEATS_MAX,
                                      default 128 */
    uint32_t queue_max;            /* heartbeats queued or in flight, default 10000 */
    metrics_histogram *round_trip; /* optional: seconds from send to reply of each call */
    metrics_histogram *batch_size; /* optional: heartbeats in each call */
} hbqueue_config;

void hbqueue_config_init(hbqueue_config *cfg);

typedef struct hbqueue hbqueue;

/* Creates a queue for |c| on |base| (the client's loop). |st| and |c| must outlive the queue;
 * |cfg| is copied (NULL = defaults; batch_max is clamped to 1..STORE_HEARTBEATS_MAX).
 * Returns 0. */
int hbqueue_new(hbqueue **out, struct event_base *base, const store *st, redis_client *c,
                const hbqueue_config *cfg);

/* Frees |q|: queued heartbeats get their callbacks with REDIS_E_CLOSED during this call;
 * heartbeats already sent get theirs when the client answers or fails them (so free the
 * client too, or keep its loop running). Not from inside a callback of |q|. */
void hbqueue_free(hbqueue *q);

/* Queues a heartbeat (arguments copied). Returns 0, and then |cb| runs exactly once, later,
 * from the loop (never from inside this call); or HBQUEUE_E_FULL, REDIS_E_DISCONNECTED,
 * REDIS_E_CLOSED or STORE_E_INVALID (an id too long for a key), and |cb| does not run. The
 * callback's errors are store_heartbeat()'s, plus REDIS_E_BUSY / REDIS_E_DISCONNECTED when the
 * script call could not be sent at the flush. */
int hbqueue_heartbeat(hbqueue *q, const char *user, const char *device, uint32_t ttl_ms,
                      store_heartbeat_cb cb, void *ud);

/* Heartbeats queued for the next flush, and in script calls not answered yet. */
size_t hbqueue_queued(const hbqueue *q);
size_t hbqueue_inflight(const hbqueue *q);

/* Script calls sent and heartbeats they carried, since the queue was created. */
void hbqueue_stats(const hbqueue *q, uint64_t *calls, uint64_t *heartbeats);

#endif /* PRESENCE_HBQUEUE_H */
