/* stats.c: svc-messaging metrics (see stats.h). */
#include "stats.h"

#include "service.h"

msg_stats stats;

static int counter(const char *name, const char *help, const char *label, const char *value,
                   metrics_counter **out)
{
    const char *labels[] = {label, value, NULL};
    return metrics_counter_get(stats.reg, name, help, label ? labels : NULL, out);
}

int stats_init(void)
{
    /* The process registry: service_main serves it (with the gRPC server's own series) on
     * --metrics-port. */
    stats.reg = service_metrics();
    if (stats.reg == NULL)
        return METRICS_E_INVALID;
    int rv = 0;
    const char *sends = "Sends answered, by outcome";
    rv |= counter("messaging_sends_total", sends, "status", "ok", &stats.send_ok);
    rv |= counter("messaging_sends_total", sends, "status", "duplicate", &stats.send_duplicate);
    rv |= counter("messaging_sends_total", sends, "status", "rejected", &stats.send_rejected);
    rv |= counter("messaging_sends_total", sends, "status", "failed", &stats.send_failed);
    rv |= counter("messaging_sends_reproduced_total",
                  "Resends whose first attempt was unconfirmed, produced again with its id", NULL,
                  NULL, &stats.send_reproduced);
    rv |= counter("messaging_dedupe_mark_errors_total",
                  "Dedupe keys not marked acked after a confirmed send (a resend produces the "
                  "same message_id again)",
                  NULL, NULL, &stats.dedupe_mark_errors);
    rv |= metrics_histogram_get(
        stats.reg, "messaging_send_seconds", "Send accepted to result (delivery report), seconds",
        NULL, metrics_latency_buckets, metrics_latency_buckets_n, &stats.send_latency);
    rv |= metrics_histogram_get(
        stats.reg, "messaging_dedupe_seconds", "Dedupe script round trip in Redis, seconds", NULL,
        metrics_latency_buckets, metrics_latency_buckets_n, &stats.dedupe_latency);
    rv |= metrics_histogram_get(
        stats.reg, "messaging_produce_seconds", "Produce to Kafka delivery report, seconds", NULL,
        metrics_latency_buckets, metrics_latency_buckets_n, &stats.produce_latency);
    rv |= metrics_gauge_get(stats.reg, "messaging_sessions", "Open Connect sessions", NULL,
                            &stats.sessions);
    rv |= counter("messaging_sessions_opened_total", "Connect sessions opened (Hello accepted)",
                  NULL, NULL, &stats.sessions_opened);
    rv |= counter("messaging_sessions_stuck_total",
                  "Sessions ended RESOURCE_EXHAUSTED (a frame unacked after max resends)", NULL,
                  NULL, &stats.sessions_stuck);
    rv |= counter("messaging_sessions_aborted_total",
                  "Sessions ended ABORTED by a newer stream of the same device", NULL, NULL,
                  &stats.sessions_aborted);
    rv |= counter("messaging_deliveries_total", "DeliveryFrames queued to sessions", NULL, NULL,
                  &stats.deliveries);
    rv |= counter("messaging_delivery_drops_total",
                  "DeliveryFrames dropped because the session queue was full", NULL, NULL,
                  &stats.delivery_drops);
    rv |= counter("messaging_delivery_resends_total", "DeliveryFrames resent after ack timeout",
                  NULL, NULL, &stats.resends);
    rv |= counter("messaging_events_consumed_total", "Records consumed from the chat event log",
                  NULL, NULL, &stats.events_consumed);
    rv |= counter("messaging_events_duplicate_total",
                  "Records skipped as already routed (mirror copies, replays)", NULL, NULL,
                  &stats.events_duplicate);
    rv |= counter("messaging_events_skipped_total",
                  "Records not delivered: unreadable, unknown variant or membership unknown", NULL,
                  NULL, &stats.events_skipped);
    rv |=
        metrics_histogram_get(stats.reg, "messaging_event_route_seconds",
                              "Record timestamp to routed to workers, seconds", NULL,
                              metrics_latency_buckets, metrics_latency_buckets_n, &stats.event_lag);
    rv |= counter("messaging_membership_loads_total", "GetChat calls for membership cache misses",
                  NULL, NULL, &stats.membership_loads);
    rv |= counter("messaging_membership_load_errors_total", "GetChat calls that failed", NULL, NULL,
                  &stats.membership_load_errors);
    rv |= metrics_gauge_get(stats.reg, "messaging_consumer_paused",
                            "1 while the event consumer is paused by back-pressure", NULL,
                            &stats.consumer_paused);
    rv |= metrics_gauge_get(stats.reg, "messaging_snowflake_instance",
                            "Leased Snowflake instance number, -1 while none", NULL,
                            &stats.snowflake_instance);
    metrics_gauge_set(stats.snowflake_instance, -1);
    return rv;
}

void stats_free(void)
{
    /* The registry belongs to service_main. */
    stats.reg = NULL;
}
