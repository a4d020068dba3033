/*
 * stats.h: svc-presence's own Prometheus series (the runtime already exports per-method call
 * counts by status code and handling time). Created once in setup() on the service registry;
 * updates are lock-free atomics, safe from every worker. With no registry every pointer is
 * NULL and the helpers do nothing.
 *
 *   presence_redis_seconds{op}            Redis script round trip: heartbeat (one batch of
 *                                         heartbeats, hbqueue.h), set_offline, get,
 *                                         count_online, sweep (watch refreshes)
 *   presence_heartbeat_batch_size         heartbeats per heartbeat script call
 *   presence_watch_streams                WatchPresence streams open
 *   presence_watched_users                distinct watched users, summed over workers
 *   presence_watch_events_total           keyevent notifications for presence keys received
 *   presence_watch_pushes_total{kind}     responses sent: snapshot, change
 *   presence_watch_feed_losses_total      change feed lost (pub/sub down, failed read)
 *   presence_watch_resyncs_total          full re-reads after the feed came back
 *   presence_watch_ended_total{reason}    streams ended by the server: unavailable, slow,
 *                                         token_expired
 *   presence_reaps_dropped_total          expiries not settled because the queue was full
 */
#ifndef PRESENCE_STATS_H
#define PRESENCE_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "metrics.h"

typedef enum stats_op {
    STATS_OP_HEARTBEAT = 0,
    STATS_OP_SET_OFFLINE,
    STATS_OP_GET,
    STATS_OP_COUNT_ONLINE,
    STATS_OP_SWEEP,
    STATS_OP_N,
} stats_op;

typedef enum stats_end {
    STATS_END_UNAVAILABLE = 0,
    STATS_END_SLOW,
    STATS_END_TOKEN,
    STATS_END_N,
} stats_end;

typedef struct presence_stats {
    metrics_histogram *redis_seconds[STATS_OP_N];
    metrics_histogram *heartbeat_batch;
    metrics_gauge *watch_streams;
    metrics_gauge *watched_users;
    metrics_counter *events;
    metrics_counter *pushes_snapshot;
    metrics_counter *pushes_change;
    metrics_counter *feed_losses;
    metrics_counter *resyncs;
    metrics_counter *ended[STATS_END_N];
    metrics_counter *reaps_dropped;
} presence_stats;

/* Registers the series on |r| (NULL: leaves |s| all NULL). Returns 0 or a METRICS_E_*. */
int stats_init(presence_stats *s, metrics_registry *r);

/* Monotonic time in ns, for stats_observe_since(). */
static inline int64_t stats_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void stats_inc(metrics_counter *c)
{
    if (c != NULL)
        metrics_counter_inc(c);
}

static inline void stats_gauge_add(metrics_gauge *g, double d)
{
    if (g != NULL)
        metrics_gauge_add(g, d);
}

/* Observes the seconds since |t0_ns| on |h|. */
static inline void stats_observe_since(metrics_histogram *h, int64_t t0_ns)
{
    if (h != NULL)
        metrics_histogram_observe(h, (double)(stats_now_ns() - t0_ns) / 1e9);
}

#endif /* PRESENCE_STATS_H */
