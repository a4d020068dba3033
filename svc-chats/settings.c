/* settings.c: svc-chats configuration (see settings.h). */
#include "settings.h"

#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "log.h"

static int get_int(const char *name, int def, int min, int max)
{
    int64_t v;
    conf_get_int(name, def, min, max, &v);
    return (int)v;
}

int settings_load(settings *s)
{
    memset(s, 0, sizeof(*s));
    s->pg_url = conf_get_str("pg-url", NULL);
    s->kafka_brokers = conf_get_str("kafka-brokers", NULL);
    s->jwt_secret = conf_get_str("jwt-secret", NULL);
    if (s->pg_url == NULL || s->pg_url[0] == '\0') {
        log_error("pg-url (or PG_URL) must be set");
        return -1;
    }
    if (s->kafka_brokers == NULL || s->kafka_brokers[0] == '\0') {
        log_error("kafka-brokers (or KAFKA_BROKERS) must be set");
        return -1;
    }
    if (s->jwt_secret == NULL || strlen(s->jwt_secret) < AUTH_SECRET_MIN) {
        log_error("jwt-secret (or JWT_SECRET) must be set to at least %d bytes", AUTH_SECRET_MIN);
        return -1;
    }
    s->redis_url = conf_get_str("redis-url", "127.0.0.1:6379");
    s->topic = conf_get_str("kafka-topic", "chat.events");
    s->site = conf_get_str("site", "a");
    s->site_id = get_int("site-id", 0, 0, 7);
    snprintf(s->group, sizeof(s->group), "%s", conf_get_str("kafka-group", ""));
    if (s->group[0] == '\0')
        snprintf(s->group, sizeof(s->group), "svc-chats-%s", s->site);
    s->session_timeout_ms = get_int("kafka-session-timeout-ms", 10000, 1000, 600000);
    s->pg_pool = get_int("pg-pool", 4, 1, 64);
    s->batch_max = get_int("batch-max", 5000, 1, 100000);
    s->write_timeout_ms = get_int("write-timeout-ms", 10000, 100, 600000);
    s->max_waiters = get_int("max-waiters", 10000, 1, 1000000);
    s->cache_window = get_int("cache-window", 100, 0, 10000);
    s->cache_ttl_s = get_int("cache-ttl-s", 86400, 1, 30 * 86400);
    conf_get_bool("materializer", true, &s->materializer);
    return 0;
}
