/*
 * settings.h: svc-chats configuration, read once at start-up (flags or environment, see
 * lib/config.h):
 *
 *   --pg-url            [PG_URL]            libpq conninfo (required)
 *   --pg-pool           [PG_POOL]           connections per worker, default 4
 *   --redis-url         [REDIS_URL]         default 127.0.0.1:6379
 *   --kafka-brokers     [KAFKA_BROKERS]     bootstrap servers (required)
 *   --kafka-topic       [KAFKA_TOPIC]       default chat.events (produce target)
 *   --kafka-group       [KAFKA_GROUP]       materializer group, default svc-chats-<site>
 *   --kafka-session-timeout-ms              default 10000
 *   --jwt-secret        [JWT_SECRET]        HS256 secret, >= 32 bytes (required)
 *   --site              [SITE]              origin_site of produced events, default "a"
 *   --site-id           [SITE_ID]           Snowflake site number 0..7, default 0
 *   --batch-max         [BATCH_MAX]         batch unit, default 5000 (a transaction: up to 10x)
 *   --write-timeout-ms  [WRITE_TIMEOUT_MS]  read-your-writes wait without a client deadline,
 *                                           default 10000
 *   --max-waiters       [MAX_WAITERS]       write RPCs waiting at once, default 10000
 *   --cache-window      [CACHE_WINDOW]      messages per chat in the Redis cache, default 100
 *   --cache-ttl-s       [CACHE_TTL_S]       default 86400
 *   --materializer      [MATERIALIZER]      run the materializer thread, default true
 */
#ifndef CHATS_SETTINGS_H
#define CHATS_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct settings {
    const char *pg_url;
    int pg_pool;
    const char *redis_url;
    const char *kafka_brokers;
    const char *topic;
    char group[128];
    int session_timeout_ms;
    const char *jwt_secret;
    const char *site;
    int site_id;
    int batch_max;
    int write_timeout_ms;
    int max_waiters;
    int cache_window;
    int cache_ttl_s;
    bool materializer;
} settings;

/* Reads every setting; logs and returns -1 when a required one is missing or invalid. */
int settings_load(settings *s);

#endif /* CHATS_SETTINGS_H */
