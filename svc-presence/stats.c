/* stats.c: svc-presence's Prometheus series (see stats.h). */
#include "stats.h"

#include <string.h>

int stats_init(presence_stats *s, metrics_registry *r)
{
    memset(s, 0, sizeof(*s));
    if (r == NULL)
        return 0;
    static const char *const ops[STATS_OP_N] = {"heartbeat", "set_offline", "get", "count_online",
                                                "sweep"};
    static const char *const ends[STATS_END_N] = {"unavailable", "slow", "token_expired"};
    int rv = 0;
    for (int i = 0; i < STATS_OP_N && rv == 0; i++)
        rv = metrics_histogram_get(r, "presence_redis_seconds",
                                   "Redis script round trip of presence operations",
                                   (const char *[]){"op", ops[i], NULL}, metrics_latency_buckets,
                                   metrics_latency_buckets_n, &s->redis_seconds[i]);
    static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    if (rv == 0)
        rv = metrics_histogram_get(
            r, "presence_heartbeat_batch_size", "Heartbeats per heartbeat script call", NULL,
            batch_buckets, sizeof(batch_buckets) / sizeof(batch_buckets[0]), &s->heartbeat_batch);
    if (rv == 0)
        rv = metrics_gauge_get(r, "presence_watch_streams", "WatchPresence streams open", NULL,
                               &s->watch_streams);
    if (rv == 0)
        rv = metrics_gauge_get(r, "presence_watched_users",
                               "Distinct watched users, summed over workers", NULL,
                               &s->watched_users);
    if (rv == 0)
        rv = metrics_counter_get(r, "presence_watch_events_total",
                                 "Keyevent notifications for presence keys received", NULL,
                                 &s->events);
    if (rv == 0)
        rv = metrics_counter_get(r, "presence_watch_pushes_total", "WatchPresence responses sent",
                                 (const char *[]){"kind", "snapshot", NULL}, &s->pushes_snapshot);
    if (rv == 0)
        rv = metrics_counter_get(r, "presence_watch_pushes_total", "WatchPresence responses sent",
                                 (const char *[]){"kind", "change", NULL}, &s->pushes_change);
    if (rv == 0)
        rv = metrics_counter_get(r, "presence_watch_feed_losses_total",
                                 "Change feed lost (pub/sub down or a failed read)", NULL,
                                 &s->feed_losses);
    if (rv == 0)
        rv = metrics_counter_get(r, "presence_watch_resyncs_total",
                                 "Full re-reads of watched users after the feed came back", NULL,
                                 &s->resyncs);
    for (int i = 0; i < STATS_END_N && rv == 0; i++)
        rv = metrics_counter_get(r, "presence_watch_ended_total",
                                 "WatchPresence streams ended by the server",
                                 (const char *[]){"reason", ends[i], NULL}, &s->ended[i]);
    if (rv == 0)
        rv = metrics_counter_get(r, "presence_reaps_dropped_total",
                                 "Expiries not settled because the reap queue was full", NULL,
                                 &s->reaps_dropped);
    return rv;
}
