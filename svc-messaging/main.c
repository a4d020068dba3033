/* svc-messaging: wiring only. Settings, the token verifier, the membership cache, the Snowflake
 * generator, the Redis scripts, the MessagingService handlers, the per-worker state and the
 * delivery thread (which also holds the Snowflake lease and serves /metrics). */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "auth.h"
#include "delivery.h"
#include "log.h"
#include "sendpath.h"
#include "service.h"
#include "settings.h"
#include "stats.h"
#include "worker.h"

static msg_service svc;

static int setup(rpc_server *srv, int argc, char **argv, void *user_data)
{
    (void)argc;
    (void)argv;
    (void)user_data;
    if (settings_load(&svc.cfg) != 0)
        return -1;
    if (stats_init() != 0) {
        log_error("metrics: cannot create the series");
        return -1;
    }
    int rv = auth_verifier_new(&svc.auth, svc.cfg.jwt_secret, strlen(svc.cfg.jwt_secret), -1);
    if (rv != 0) {
        log_error("jwt-secret: %s", auth_strerror(rv));
        return -1;
    }
    membership_new(&svc.members, svc.cfg.membership_chats);
    rv = snowflake_new(&svc.ids, svc.cfg.site_id, SNOWFLAKE_NO_INSTANCE);
    if (rv != 0 || sendpath_scripts_new(&svc) != 0)
        return -1;
    snprintf(svc.producer_name, sizeof(svc.producer_name), "svc-messaging/%s", svc.cfg.site);
    pthread_mutex_init(&svc.devices_lock, NULL);
    strtab_init(&svc.devices);
    atomic_init(&svc.shutting_down, false);
    worker_create_all(&svc);
    rv = api_register(srv, &svc);
    if (rv != 0)
        return rv;
    rpc_server_set_worker_hooks(srv, worker_start, worker_stop, &svc);
    rpc_server_set_drain_hook(srv, worker_drain, &svc); /* SIGTERM: Connect streams end now */
    if (delivery_start(&svc.dl, &svc) != 0)
        return -1;
    log_info("messaging: site=%s redis=%s kafka=%s topic=%s workers=%d queue-size=%u "
             "ack-timeout=%ums max-resends=%u metrics-port=%u",
             svc.cfg.site, svc.cfg.redis_url, svc.cfg.kafka_brokers, svc.cfg.topic, svc.cfg.workers,
             svc.cfg.queue_size, svc.cfg.ack_timeout_ms, svc.cfg.max_resends, svc.cfg.metrics_port);
    return 0;
}

static bool free_owner(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    free(value);
    return true;
}

static void teardown(void *user_data)
{
    (void)user_data;
    delivery_stop(svc.dl);
    worker_free_all(&svc);
    strtab_each(&svc.devices, free_owner, NULL);
    strtab_clear(&svc.devices);
    pthread_mutex_destroy(&svc.devices_lock);
    sendpath_scripts_free(&svc);
    snowflake_free(svc.ids);
    membership_free(svc.members);
    auth_verifier_free(svc.auth);
    stats_free();
}

int main(int argc, char **argv)
{
    const service_def def = {
        .name = "svc-messaging",
        .default_port = 50052,
        .default_metrics_port = 9102,
        .setup = setup,
        .teardown = teardown,
    };
    return service_main(&def, argc, argv);
}
