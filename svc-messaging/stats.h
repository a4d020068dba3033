/*
 * stats.h: svc-messaging's Prometheus metrics. One process-wide registry; the series are
 * looked up once at start (stats_init) and updated lock-free from any thread.
 */
#ifndef MSG_STATS_H
#define MSG_STATS_H

#include "metrics.h"

typedef struct msg_stats {
    metrics_registry *reg;
    metrics_counter *send_ok;         /* messaging_sends_total{status="ok"} */
    metrics_counter *send_duplicate;  /* {status="duplicate"} */
    metrics_counter *send_rejected;   /* {status="rejected"} */
    metrics_counter *send_failed;     /* {status="failed"} */
    metrics_counter *send_reproduced; /* resends of a pending first attempt produced again */
    metrics_counter
        *dedupe_mark_errors;           /* pending -> acked marks that failed (resend re-produces) */
    metrics_histogram *send_latency;   /* send accepted -> result, seconds */
    metrics_histogram *dedupe_latency; /* dedupe script round trip, seconds */
    metrics_histogram *produce_latency; /* produce -> delivery report, seconds */
    metrics_gauge *sessions;            /* open Connect sessions */
    metrics_counter *sessions_opened;   /* Hello accepted */
    metrics_counter *sessions_stuck;    /* closed RESOURCE_EXHAUSTED */
    metrics_counter *sessions_aborted;  /* replaced by a newer stream of the same device */
    metrics_counter *deliveries;        /* DeliveryFrames queued */
    metrics_counter *delivery_drops;    /* DeliveryFrames dropped (queue full): session_seq gaps */
    metrics_counter *resends;           /* DeliveryFrames written again after ack timeout */
    metrics_counter *events_consumed;   /* records read from chat.events (+ mirrors) */
    metrics_counter *events_duplicate;  /* records skipped as already seen (mirror, replays) */
    metrics_counter *events_skipped;    /* unreadable / unknown / membership unknown */
    metrics_histogram *event_lag;       /* record timestamp -> routed to workers, seconds */
    metrics_counter *membership_loads;  /* GetChat calls */
    metrics_counter *membership_load_errors; /* GetChat failures */
    metrics_gauge *consumer_paused;          /* 1 while the consumer is paused (back-pressure) */
    metrics_gauge *snowflake_instance;       /* leased instance number, -1 without */
} msg_stats;

extern msg_stats stats;

/* Creates the registry and the series. Returns 0 or a METRICS_E_* code. */
int stats_init(void);
void stats_free(void);

#endif /* MSG_STATS_H */
