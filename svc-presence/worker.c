/* worker.c: per-worker Redis connections and watch hub (see worker.h). */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "mem.h"

void *worker_start(rpc_server *srv, int index, struct event_base *base, void *user_data)
{
    (void)srv;
    const presence_service *svc = user_data;
    presence_worker *w = mem_calloc(1, sizeof(*w));
    w->svc = svc;
    w->index = index;
    char name[32];
    redis_config rcfg;
    snprintf(name, sizeof(name), "presence-redis[%d]", index);
    settings_redis_config(&svc->cfg, name, &rcfg);
    int rv = redis_client_new(&w->rc, base, &rcfg);
    if (rv != 0) {
        log_error("worker %d: redis client: %s", index, redis_strerror(rv));
        free(w);
        return NULL;
    }
    watch_config wcfg = svc->cfg.watch;
    wcfg.worker = index;
    snprintf(name, sizeof(name), "presence-feed[%d]", index);
    settings_redis_config(&svc->cfg, name, &rcfg);
    rv = watch_hub_new(&w->hub, base, svc->st, w->rc, &rcfg, svc->cfg.db, &wcfg, &svc->stats);
    if (rv != 0) {
        log_error("worker %d: watch feed: %s", index, redis_strerror(rv));
        redis_client_free(w->rc);
        free(w);
        return NULL;
    }
    hbqueue_config qcfg = svc->cfg.hbqueue;
    qcfg.round_trip = svc->stats.redis_seconds[STATS_OP_HEARTBEAT];
    qcfg.batch_size = svc->stats.heartbeat_batch;
    hbqueue_new(&w->hbq, base, svc->st, w->rc, &qcfg);
    w->tokens = tokens_new(-1);
    return w;
}

void worker_stop(rpc_server *srv, int index, void *worker_data, void *user_data)
{
    (void)srv;
    (void)index;
    (void)user_data;
    presence_worker *w = worker_data;
    if (w == NULL)
        return;
    watch_hub_free(w->hub);
    hbqueue_free(w->hbq);     /* queued heartbeats get REDIS_E_CLOSED now */
    redis_client_free(w->rc); /* in-flight commands get REDIS_E_CLOSED now */
    tokens_free(w->tokens);
    free(w);
}

void worker_drain(rpc_server *srv, int index, void *worker_data, void *user_data)
{
    (void)srv;
    (void)index;
    (void)user_data;
    presence_worker *w = worker_data;
    if (w != NULL)
        watch_hub_drain(w->hub);
}
