/* stats.c: metric series (see stats.h). */
#include "stats.h"

#include <pthread.h>
#include <string.h>

#include "rpc.h"

chats_stats stats;

static const double batch_bounds[] = {1, 10, 50, 100, 500, 1000, 2000, 5000, 10000};

int stats_init(metrics_registry *r)
{
    int rv = 0;
    stats.reg = r;
    rv |= metrics_counter_get(r, "chats_materializer_events_total",
                              "chat.events records applied to PostgreSQL", NULL,
                              &stats.events_applied);
    rv |= metrics_counter_get(r, "chats_materializer_events_skipped_total",
                              "chat.events records skipped (undecodable, unknown or invalid)", NULL,
                              &stats.events_skipped);
    rv |= metrics_counter_get(r, "chats_materializer_batch_failures_total",
                              "batch transactions that failed and were retried", NULL,
                              &stats.batches_failed);
    rv |= metrics_histogram_get(r, "chats_materializer_batch_events", "records per batch", NULL,
                                batch_bounds, sizeof(batch_bounds) / sizeof(batch_bounds[0]),
                                &stats.batch_size);
    rv |= metrics_histogram_get(
        r, "chats_materializer_apply_seconds", "batch transaction time (BEGIN..COMMIT)", NULL,
        metrics_latency_buckets, metrics_latency_buckets_n, &stats.apply_seconds);
    rv |= metrics_gauge_get(r, "chats_materializer_lag_messages",
                            "records behind the high watermark, summed over partitions", NULL,
                            &stats.lag_messages);
    rv |= metrics_gauge_get(r, "chats_materializer_lag_seconds",
                            "now minus the timestamp of the newest applied record", NULL,
                            &stats.lag_seconds);
    rv |= metrics_counter_get(r, "chats_history_cache_total",
                              "GetHistory newest pages by where they were served from",
                              (const char *[]){"result", "hit", NULL}, &stats.cache_hit);
    rv |= metrics_counter_get(r, "chats_history_cache_total",
                              "GetHistory newest pages by where they were served from",
                              (const char *[]){"result", "miss", NULL}, &stats.cache_miss);
    rv |= metrics_counter_get(r, "chats_cache_errors_total", "Redis cache commands that failed",
                              NULL, &stats.cache_errors);
    rv |= metrics_gauge_get(r, "chats_rpc_waiters", "write RPCs waiting for the materializer", NULL,
                            &stats.waiters);
    return rv == 0 ? 0 : METRICS_E_INVALID;
}

void stats_rpc(const char *method, int code)
{
    metrics_counter *c;
    const char *labels[] = {"method", method, "code", rpc_status_name(code), NULL};
    if (metrics_counter_get(stats.reg, "chats_rpc_total", "ChatsService calls by status", labels,
                            &c) == 0)
        metrics_counter_inc(c);
}
