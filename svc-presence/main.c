/* svc-presence: wiring only. Settings, the token verifier, the Redis scripts, the
 * PresenceService handlers and the per-worker Redis connections and watch hubs. */
#include <string.h>

#include "api.h"
#include "auth.h"
#include "log.h"
#include "service.h"
#include "metrics.h"
#include "settings.h"
#include "stats.h"
#include "store.h"
#include "worker.h"

static presence_service svc;

static int setup(rpc_server *srv, int argc, char **argv, void *user_data)
{
    (void)argc;
    (void)argv;
    (void)user_data;
    if (settings_load(&svc.cfg) != 0)
        return -1;
    int rv = auth_verifier_new(&svc.auth, svc.cfg.jwt_secret, strlen(svc.cfg.jwt_secret), -1);
    if (rv != 0) {
        log_error("jwt-secret: %s", auth_strerror(rv));
        return -1;
    }
    store_new(&svc.st, &svc.cfg.store);
    rv = stats_init(&svc.stats, service_metrics());
    if (rv != 0)
        log_warn("presence metrics: %s", metrics_strerror(rv));
    rv = api_register(srv, &svc);
    if (rv != 0)
        return rv;
    rpc_server_set_worker_hooks(srv, worker_start, worker_stop, &svc);
    rpc_server_set_drain_hook(srv, worker_drain, &svc);
    log_info("presence: redis=%s db=%d workers=%d watch-resync-timeout=%ums", svc.cfg.redis_url,
             svc.cfg.db, svc.cfg.workers, svc.cfg.watch.resync_timeout_ms);
    return 0;
}

static void teardown(void *user_data)
{
    (void)user_data;
    store_free(svc.st);
    auth_verifier_free(svc.auth);
}

int main(int argc, char **argv)
{
    const service_def def = {
        .name = "svc-presence",
        .default_port = 50053,
        .default_metrics_port = 9103,
        .setup = setup,
        .teardown = teardown,
    };
    return service_main(&def, argc, argv);
}
