/*
 * worker.h: what svc-presence keeps per process and per worker thread.
 *
 * The process has one presence_service (settings, token verifier, scripts), immutable once the
 * server starts. Each worker thread gets, on its own loop, its own Redis command connection
 * and its own watch hub (with its pub/sub connection): every rpc_call and every Redis callback
 * of a request stay on the loop of the worker that accepted it.
 */
#ifndef PRESENCE_WORKER_H
#define PRESENCE_WORKER_H

#include <event2/event.h>

#include "auth.h"
#include "hbqueue.h"
#include "redis.h"
#include "rpc_server.h"
#include "settings.h"
#include "stats.h"
#include "store.h"
#include "tokens.h"
#include "watch.h"

typedef struct presence_service {
    settings cfg;         /* configuration */
    auth_verifier *auth;  /* bearer token verifier, shared by all workers */
    store *st;            /* scripts, shared by all workers */
    presence_stats stats; /* metrics, shared by all workers */
} presence_service;

typedef struct presence_worker {
    const presence_service *svc; /* process-wide state */
    int index;                   /* worker number */
    redis_client *rc;            /* this worker's command connection */
    hbqueue *hbq;                /* heartbeats batched per loop iteration, on |rc| */
    watch_hub *hub;              /* this worker's watch streams */
    token_cache *tokens;         /* verified bearer tokens seen by this worker */
} presence_worker;

/* rpc_server worker hooks; |user_data| is the presence_service. worker_start returns the
 * presence_worker (NULL if the Redis URL is unusable: requests then get UNAVAILABLE). */
void *worker_start(rpc_server *srv, int index, struct event_base *base, void *user_data);
void worker_stop(rpc_server *srv, int index, void *worker_data, void *user_data);
/* rpc_server drain hook: ends this worker's watch streams with UNAVAILABLE (watch.h). */
void worker_drain(rpc_server *srv, int index, void *worker_data, void *user_data);

#endif /* PRESENCE_WORKER_H */
