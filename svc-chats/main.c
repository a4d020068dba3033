/* svc-chats: wiring only. Settings, schema migrations, the token verifier, ids, the
 * read-your-writes table, the ChatsService handlers with their per-worker clients, and on
 * the main loop the Snowflake lease and the materializer thread. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "cache.h"
#include "chats.h"
#include "log.h"
#include "materializer.h"
#include "metrics.h"
#include "schema.h"
#include "service.h"
#include "stats.h"
#include "worker.h"

static chats_service svc;
static materializer *mz;
static redis_client *main_redis;
static snowflake_lease *lease;

static void on_lease(snowflake_lease *l, snowflake_lease_event ev, int instance, void *ud)
{
    (void)l;
    (void)ud;
    if (ev == SNOWFLAKE_LEASE_ACQUIRED)
        log_info("ids: leased instance %d of site %d", instance, svc.cfg.site_id);
    else
        log_warn("ids: lost instance %d; writes answer UNAVAILABLE until a new lease", instance);
}

static void main_start(rpc_server *srv, struct event_base *base, void *ud)
{
    (void)srv;
    (void)ud;
    redis_config rc;
    redis_config_init(&rc);
    rc.url = svc.cfg.redis_url;
    rc.name = "chats-lease-redis";
    if (redis_client_new(&main_redis, base, &rc) == 0) {
        snowflake_lease_config lc;
        snowflake_lease_config_init(&lc);
        snowflake_lease_new(&lease, base, main_redis, svc.ids, &lc, on_lease, NULL);
    } else {
        log_error("ids: bad redis-url; no ids will be issued");
    }
    if (svc.cfg.materializer && materializer_start(&mz, &svc.cfg, svc.waits) != 0)
        log_error("materializer: not running; writes will time out");
}

static int setup(rpc_server *srv, int argc, char **argv, void *user_data)
{
    (void)argc;
    (void)argv;
    (void)user_data;
    if (settings_load(&svc.cfg) != 0)
        return -1;
    if (schema_migrate(svc.cfg.pg_url, 30000) != 0)
        return -1;
    int rv = auth_verifier_new(&svc.auth, svc.cfg.jwt_secret, strlen(svc.cfg.jwt_secret), -1);
    if (rv != 0) {
        log_error("jwt-secret: %s", auth_strerror(rv));
        return -1;
    }
    if (stats_init(service_metrics()) != 0 ||
        cache_init(svc.cfg.cache_window, svc.cfg.cache_ttl_s) != 0) {
        log_error("cannot set up metrics or cache scripts");
        return -1;
    }
    if (snowflake_new(&svc.ids, (unsigned)svc.cfg.site_id, SNOWFLAKE_NO_INSTANCE) != 0)
        return -1;
    svc.waits = waiters_new((size_t)svc.cfg.max_waiters);
    snprintf(svc.producer, sizeof(svc.producer), "svc-chats/%s/%d", svc.cfg.site, (int)getpid());
    rv = api_register(srv, &svc);
    if (rv != 0)
        return rv;
    rpc_server_set_worker_hooks(srv, worker_start, worker_stop, &svc);
    rpc_server_set_main_hook(srv, main_start, NULL);
    log_info("chats: pg=%s redis=%s kafka=%s topic=%s site=%s/%d", "(set)", svc.cfg.redis_url,
             svc.cfg.kafka_brokers, svc.cfg.topic, svc.cfg.site, svc.cfg.site_id);
    return 0;
}

static void teardown(void *user_data)
{
    (void)user_data;
    materializer_stop(mz); /* its own loop and thread */
    /* The lease, its Redis client and the metrics server live on the main loop, which is gone
     * by now; the process exits and the lease key expires by its TTL. */
}

int main(int argc, char **argv)
{
    const service_def def = {
        .name = "svc-chats",
        .default_port = 50051,
        .default_metrics_port = 9101,
        .setup = setup,
        .teardown = teardown,
    };
    return service_main(&def, argc, argv);
}
