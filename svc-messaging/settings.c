/* settings.c: svc-messaging configuration (see settings.h). */
#include "settings.h"

#include <string.h>

#include "auth.h"
#include "config.h"
#include "log.h"
#include "rpc_server.h"

static uint32_t get_u32(const char *name, int64_t def, int64_t min, int64_t max)
{
    int64_t v;
    conf_get_int(name, def, min, max, &v);
    return (uint32_t)v;
}

static int site_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

/* librdkafka takes linger.ms as a float: "0", "0.5", "1", ... 0..10000 with at most 3
 * decimals (a plain decimal: no sign, exponent or spaces). */
static int linger_ok(const char *s)
{
    unsigned long thousandths = 0;
    size_t i = 0, digits = 0, decimals = 0;
    for (; s[i] >= '0' && s[i] <= '9' && digits < 6; i++, digits++)
        thousandths = thousandths * 10 + (unsigned long)(s[i] - '0');
    if (digits == 0)
        return 0;
    thousandths *= 1000;
    if (s[i] == '.') {
        unsigned long scale = 100;
        for (i++; s[i] >= '0' && s[i] <= '9' && decimals < 3; i++, decimals++, scale /= 10)
            thousandths += (unsigned long)(s[i] - '0') * scale;
        if (decimals == 0)
            return 0;
    }
    return s[i] == '\0' && thousandths <= 10000000;
}

int settings_load(settings *s)
{
    memset(s, 0, sizeof(*s));
    s->site = conf_get_str("site", "a");
    if (!site_ok(s->site)) {
        log_error("site: '%s' is not 1..32 bytes of [a-z0-9-]", s->site);
        return -1;
    }
    s->site_id = get_u32("site-id", 0, 0, 7);
    s->redis_url = conf_get_str("redis-url", "127.0.0.1:6379");
    s->kafka_brokers = conf_get_str("kafka-brokers", "127.0.0.1:9092");
    s->chats_addr = conf_get_str("chats-addr", NULL);
    if (s->chats_addr != NULL && s->chats_addr[0] == '\0')
        s->chats_addr = NULL;
    s->jwt_secret = conf_get_str("jwt-secret", NULL);
    if (s->jwt_secret == NULL || strlen(s->jwt_secret) < AUTH_SECRET_MIN) {
        log_error("jwt-secret (or JWT_SECRET) must be set to at least %d bytes", AUTH_SECRET_MIN);
        return -1;
    }
    s->topic = conf_get_str("topic", "chat.events");
    s->queue_size = get_u32("queue-size", 1024, 1, 1 << 20);
    s->ack_timeout_ms = get_u32("ack-timeout-ms", 5000, 50, 600000);
    s->max_resends = get_u32("max-resends", 3, 0, 1000);
    s->ping_interval_ms = get_u32("ping-interval-ms", 25000, 100, 3600000);
    s->hello_timeout_ms = get_u32("hello-timeout-ms", 10000, 100, 600000);
    s->max_inflight_sends = get_u32("max-inflight-sends", 64, 1, 100000);
    s->max_pending_sends = get_u32("max-pending-sends", 10000, 1, 10000000);
    s->worker_inbox_size = get_u32("worker-inbox-size", 8192, 128, 10000000);
    s->delivery_backlog = get_u32("delivery-backlog", 4096, 64, 10000000);
    s->membership_chats = get_u32("membership-cache-chats", 200000, 16, 100000000);
    s->membership_max_loads = get_u32("membership-max-loads", 1024, 1, 1000000);
    s->send_timeout_ms = get_u32("send-timeout-ms", 10000, 100, 3600000);
    s->linger_ms = conf_get_str("kafka-linger-ms", "1");
    if (!linger_ok(s->linger_ms)) {
        log_error("kafka-linger-ms: '%s' is not a number of ms in 0..10000 with at most 3 "
                  "decimals",
                  s->linger_ms);
        return -1;
    }
    s->dedupe_ttl_s = get_u32("dedupe-ttl-s", 86400, 1, 30 * 86400);
    s->redis_timeout_ms = get_u32("redis-timeout-ms", 5000, 0, 600000);
    s->presence_ttl_ms = get_u32("presence-ttl-ms", 30000, 5000, 120000);
    s->presence_addr = conf_get_str("presence-addr", NULL);
    if (s->presence_addr != NULL && s->presence_addr[0] == '\0')
        s->presence_addr = NULL;
    s->metrics_host = conf_get_str("metrics-host", "0.0.0.0");
    s->metrics_port = (uint16_t)get_u32("metrics-port", 9102, 0, 65535);
    rpc_server_config rc;
    rpc_server_config_init(&rc);
    int64_t v;
    conf_get_int("workers", rc.workers, 1, 256, &v); /* as service_main() reads it */
    s->workers = (int)v;
    return 0;
}
