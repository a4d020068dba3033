/* worker.c: per-worker clients (see worker.h). */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "mem.h"

void *worker_start(rpc_server *srv, int index, struct event_base *base, void *user_data)
{
    (void)srv;
    const chats_service *svc = user_data;
    chats_worker *w = mem_calloc(1, sizeof(*w));
    w->svc = svc;
    w->base = base;
    char name[32];
    pg_config pc;
    pg_config_init(&pc);
    pc.conninfo = svc->cfg.pg_url;
    snprintf(name, sizeof(name), "chats-pg[%d]", index);
    pc.name = name;
    pc.size = (unsigned)svc->cfg.pg_pool;
    if (pg_pool_new(&w->pg, base, &pc) != 0)
        goto fail;
    redis_config rc;
    redis_config_init(&rc);
    rc.url = svc->cfg.redis_url;
    snprintf(name, sizeof(name), "chats-redis[%d]", index);
    rc.name = name;
    if (redis_client_new(&w->rc, base, &rc) != 0)
        goto fail;
    kafka_config kc;
    kafka_config_init(&kc);
    kc.brokers = svc->cfg.kafka_brokers;
    kc.client_id = "svc-chats";
    snprintf(name, sizeof(name), "chats-producer[%d]", index);
    kc.name = name;
    const char *props[] = {"linger.ms=1", NULL};
    kc.props = props;
    if (kafka_producer_new(&w->kp, base, &kc, NULL, NULL) != 0)
        goto fail;
    return w;
fail:
    log_error("worker %d: cannot create its clients; its calls answer UNAVAILABLE", index);
    if (w->rc)
        redis_client_free(w->rc);
    if (w->pg)
        pg_pool_free(w->pg);
    free(w);
    return NULL;
}

void worker_stop(rpc_server *srv, int index, void *worker_data, void *user_data)
{
    (void)srv;
    (void)index;
    (void)user_data;
    chats_worker *w = worker_data;
    if (w == NULL)
        return;
    kafka_producer_free(w->kp);
    redis_client_free(w->rc);
    pg_pool_free(w->pg);
    free(w);
}
