/* settings.c: svc-presence configuration (see settings.h). */
#include "settings.h"

#include <string.h>

#include "auth.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "rpc_server.h"

int settings_load(settings *s)
{
    memset(s, 0, sizeof(*s));
    int64_t v;
    s->redis_url = conf_get_str("redis-url", "127.0.0.1:6379");
    s->db = keys_url_db(s->redis_url);
    if (s->db < 0) {
        log_error("redis-url: bad database number in '%s'", s->redis_url);
        return -1;
    }
    s->jwt_secret = conf_get_str("jwt-secret", NULL);
    if (s->jwt_secret == NULL || strlen(s->jwt_secret) < AUTH_SECRET_MIN) {
        log_error("jwt-secret (or JWT_SECRET) must be set to at least %d bytes", AUTH_SECRET_MIN);
        return -1;
    }
    rpc_server_config rc;
    rpc_server_config_init(&rc);
    conf_get_int("workers", rc.workers, 1, 256, &v); /* as service_main() reads it */
    s->workers = (int)v;
    conf_get_int("redis-max-inflight", 10000, 1, 1000000, &v);
    s->redis_max_inflight = (uint32_t)v;
    conf_get_int("redis-timeout-ms", 5000, 0, 600000, &v);
    s->redis_command_timeout_ms = (uint32_t)v;
    hbqueue_config_init(&s->hbqueue);
    conf_get_int("heartbeat-batch-max", s->hbqueue.batch_max, 1, STORE_HEARTBEATS_MAX, &v);
    s->hbqueue.batch_max = (uint32_t)v;
    conf_get_int("heartbeat-queue-max", s->hbqueue.queue_max, 1, 10000000, &v);
    s->hbqueue.queue_max = (uint32_t)v;
    watch_config_init(&s->watch);
    s->watch.workers = s->workers;
    conf_get_int("watch-resync-timeout-ms", s->watch.resync_timeout_ms, 100, 600000, &v);
    s->watch.resync_timeout_ms = (uint32_t)v;
    conf_get_int("watch-stall-timeout-ms", s->watch.stall_timeout_ms, 100, 3600000, &v);
    s->watch.stall_timeout_ms = (uint32_t)v;
    conf_get_int("watch-max-streams", s->watch.max_watchers, 1, 10000000, &v);
    s->watch.max_watchers = (uint32_t)v;
    conf_get_int("reap-queue-max", s->watch.reap_queue_max, 1, 10000000, &v);
    s->watch.reap_queue_max = (uint32_t)v;
    store_config_init(&s->store);
    conf_get_int("record-ttl-s", s->store.record_ttl_ms / 1000, 600, 10LL * 365 * 86400, &v);
    s->store.record_ttl_ms = v * 1000;
    conf_get_int("max-devices", s->store.max_devices, 1, 1000, &v);
    s->store.max_devices = (uint32_t)v;
    return 0;
}

void settings_redis_config(const settings *s, const char *name, redis_config *out)
{
    redis_config_init(out);
    out->url = s->redis_url;
    out->name = name;
    out->max_inflight = s->redis_max_inflight;
    out->command_timeout_ms = s->redis_command_timeout_ms;
}
