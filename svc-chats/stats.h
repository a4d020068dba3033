/*
 * stats.h: svc-chats metrics (lib/metrics.h), created once at start-up and updated from any
 * thread. Served on --metrics-port at /metrics.
 */
#ifndef CHATS_STATS_H
#define CHATS_STATS_H

#include "metrics.h"

typedef struct chats_stats {
    metrics_registry *reg;
    metrics_counter *events_applied;  /* chats_materializer_events_total */
    metrics_counter *events_skipped;  /* chats_materializer_events_skipped_total */
    metrics_counter *batches_failed;  /* chats_materializer_batch_failures_total */
    metrics_histogram *batch_size;    /* chats_materializer_batch_events */
    metrics_histogram *apply_seconds; /* chats_materializer_apply_seconds */
    metrics_gauge *lag_messages;      /* chats_materializer_lag_messages */
    metrics_gauge *lag_seconds;       /* chats_materializer_lag_seconds */
    metrics_counter *cache_hit;       /* chats_history_cache_total{result="hit"} */
    metrics_counter *cache_miss;      /* ...{result="miss"} */
    metrics_counter *cache_errors;    /* chats_cache_errors_total */
    metrics_gauge *waiters;           /* chats_rpc_waiters */
} chats_stats;

extern chats_stats stats;

/* Creates every series above in |r| (the service's registry, lib/service.h). Returns 0 or a
 * METRICS_E_*. */
int stats_init(metrics_registry *r);

/* Counts one finished RPC: chats_rpc_total{method, code}. */
void stats_rpc(const char *method, int code);

#endif /* CHATS_STATS_H */
