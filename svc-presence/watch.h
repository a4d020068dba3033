/*
 * watch.h: WatchPresence streams of one worker, fed by Redis keyevent notifications.
 *
 * Each worker has one hub: one pub/sub connection subscribed to __keyevent@<db>__:sadd, :del and
 * :expired (one subscription set per worker, whatever the number of streams), a registry of the
 * users its streams watch (registry.h) with the presence last read for each, and the streams.
 *
 * Flow: a notification for presence:<user>:<device> queues <user> for a refresh if watched
 * here; queued users are read in batches of up to 500 with one script call each (store_sweep),
 * one batch in flight at a time; a user whose presence changed is pushed to each stream that
 * watches it. Notifications are published by Redis for changes made through any instance, so a
 * watcher on any instance sees every change.
 *
 * Expiry backstop: Redis publishes "expired" only when it notices the key is past its TTL,
 * which with many keys can take seconds; so each user's earliest device expiry is scheduled
 * here and re-read (store_sweep touches the expired device keys, making Redis publish the
 * events for every instance) at that time plus WATCH_BACKSTOP_MARGIN_MS.
 *
 * Reaping: an "expired" event of a user nobody watches here is settled (last-seen written) by
 * one worker per instance, chosen by hash(user) % workers; the queue for that is bounded
 * (reap_queue_max; dropped reaps are harmless because reads settle lazily).
 *
 * Feed loss (pub/sub disconnect, Redis restart or failover, a failed read): every stream is
 * marked for a new snapshot. When the subscription is back, the hub makes sure the
 * notification config is still set (a restarted Redis forgets CONFIG SET), re-reads every
 * watched user and sends each stream a snapshot = true response. If that does not happen
 * within resync_timeout_ms, the streams end with UNAVAILABLE so clients watch again: a stream
 * is never silently stale.
 *
 * Back-pressure: a stream has at most one pending change per watched user (<= 500): changes
 * that arrive while its send buffer is full are coalesced into the newest state of each user,
 * sent when the stream is writable again (a slow client skips intermediate states, never the
 * latest one). A stream that stays unwritable for stall_timeout_ms ends with
 * RESOURCE_EXHAUSTED. A stream whose token expires ends with UNAUTHENTICATED.
 */
#ifndef PRESENCE_WATCH_H
#define PRESENCE_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "redis.h"
#include "rpc_server.h"
#include "stats.h"
#include "store.h"

#define WATCH_BACKSTOP_MARGIN_MS 100 /* re-read this long after a device's expiry is due */
#define WATCH_TICK_MS 100            /* housekeeping timer period */

typedef struct watch_config {
    int worker;                 /* this worker's index */
    int workers;                /* workers per instance (reaping duty) */
    uint32_t resync_timeout_ms; /* feed lost this long -> streams end UNAVAILABLE, 5000 */
    uint32_t stall_timeout_ms;  /* stream unwritable this long -> RESOURCE_EXHAUSTED, 30000 */
    uint32_t max_watchers;      /* streams per worker; more -> RESOURCE_EXHAUSTED, 20000 */
    uint32_t reap_queue_max;    /* unwatched expiries waiting to be settled, 10000 */
} watch_config;

/* Fills the defaults documented above (worker 0 of 1). */
void watch_config_init(watch_config *cfg);

typedef struct watch_hub watch_hub;

/*
 * Creates the hub of one worker on |base|. |rc| (the worker's command connection, used for
 * reads and the notification config) and |st| must outlive the hub. |rcfg| configures the
 * pub/sub connection it opens (copied); |db| is the database whose keyevent channels it
 * subscribes to. |stats| (may be NULL) must outlive the hub. Returns 0 or a REDIS_E_*.
 */
int watch_hub_new(watch_hub **out, struct event_base *base, const store *st, redis_client *rc,
                  const redis_config *rcfg, int db, const watch_config *cfg,
                  const presence_stats *stats);

/* Graceful shutdown began (rpc_server drain hook): ends every stream with UNAVAILABLE now, so
 * clients watch again on another instance instead of waiting for the drain deadline, and
 * refuses new ones with UNAVAILABLE. Idempotent. */
void watch_hub_drain(watch_hub *h);

/* Ends every stream still open with UNAVAILABLE and frees the hub. A read still in flight on
 * the hub's redis_client keeps the memory until its callback runs (at the latest when the
 * client is freed); nothing else is touched after this returns. */
void watch_hub_free(watch_hub *h);

/*
 * Serves a WatchPresence call: watches the |n| users ids[order[0..n-1]] (validated, distinct,
 * n <= 500; copied). The hub owns the rest of the call: it sends the snapshot and the changes
 * and finishes the call when it must end. |token_expires_at_s| is the caller's token "exp"
 * (Unix s; 0 = never).
 */
void watch_start(watch_hub *h, rpc_call *call, char *const *ids, const size_t *order, size_t n,
                 int64_t token_expires_at_s);

#endif /* PRESENCE_WATCH_H */
