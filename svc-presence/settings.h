/*
 * settings.h: svc-presence configuration, from flags or the environment (config.h):
 *
 *   --redis-url URL              [REDIS_URL]              default 127.0.0.1:6379 (redis.h syntax;
 *                                                         "/db" selects the database)
 *   --jwt-secret S               [JWT_SECRET]             HS256 secret, required, >= 32 bytes
 *   --redis-max-inflight N       [REDIS_MAX_INFLIGHT]     commands in flight per worker, 10000
 *   --redis-timeout-ms N         [REDIS_TIMEOUT_MS]       reply overdue -> reconnect, 5000
 *   --heartbeat-batch-max N      [HEARTBEAT_BATCH_MAX]    heartbeats per script call, 128
 *                                                         (1..256; hbqueue.h)
 *   --heartbeat-queue-max N      [HEARTBEAT_QUEUE_MAX]    heartbeats queued or in flight per
 *                                                         worker, 10000 (beyond:
 *                                                         RESOURCE_EXHAUSTED)
 *   --watch-resync-timeout-ms N  [WATCH_RESYNC_TIMEOUT_MS] feed lost this long -> watch
 *                                                         streams end UNAVAILABLE, 5000
 *   --watch-stall-timeout-ms N   [WATCH_STALL_TIMEOUT_MS] unread stream -> RESOURCE_EXHAUSTED,
 *                                                         30000
 *   --watch-max-streams N        [WATCH_MAX_STREAMS]      watch streams per worker, 20000
 *   --reap-queue-max N           [REAP_QUEUE_MAX]         unwatched expiries queued per worker
 *                                                         for settling, 10000
 *   --record-ttl-s N             [RECORD_TTL_S]           a user's record (last-seen) is kept
 *                                                         this long after its last write, 30 d
 *   --max-devices N              [MAX_DEVICES]            devices per user, 32 (a new one
 *                                                         beyond replaces the nearest expiry)
 *   --workers N                  [WORKERS]                read here too (reaping duty)
 */
#ifndef PRESENCE_SETTINGS_H
#define PRESENCE_SETTINGS_H

#include <stdint.h>

#include "hbqueue.h"
#include "store.h"
#include "watch.h"

typedef struct settings {
    const char *redis_url;             /* points into argv/environment/default */
    const char *jwt_secret;            /* idem; never logged */
    int db;                            /* database of redis_url */
    int workers;                       /* worker threads of the server */
    uint32_t redis_max_inflight;       /* per worker command connection */
    uint32_t redis_command_timeout_ms; /* per worker connections */
    watch_config watch;                /* worker/workers filled per worker */
    store_config store;                /* record lifetime, devices per user */
    hbqueue_config hbqueue;            /* heartbeat batching (no metrics set here) */
} settings;

/* Reads every setting; logs and returns -1 when one is missing or invalid. */
int settings_load(settings *s);

/* The redis_config for |s| with |name| as log label. */
void settings_redis_config(const settings *s, const char *name, redis_config *out);

#endif /* PRESENCE_SETTINGS_H */
