/* rpc_health.c: grpc.health.v1.Health (Check and Watch) served by every server. */
#include "rpc_server_int.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.rpc-c.h"
#include "mem.h"

/* Per Watch call: the service watched and the status last sent. */
typedef struct watch_state {
    char *service;
    int last_sent;
} watch_state;

static void watch_state_free(void *p)
{
    watch_state *ws = p;
    free(ws->service);
    free(ws);
}

static int status_for(rpc_server *srv, const char *service)
{
    int st = rpc__health_get(srv, service);
    return st < 0 ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN : st;
}

static void on_check(rpc_call *call, const Grpc__Health__V1__HealthCheckRequest *req,
                     void *user_data)
{
    (void)user_data;
    const char *service = req->service ? req->service : "";
    int st = rpc__health_get(rpc_call_server(call), service);
    if (st < 0) {
        rpc_call_finishf(call, RPC_STATUS_NOT_FOUND, "unknown service %s", service);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = st;
    rpc_call_reply(call, &resp.base);
}

static void watch_send(rpc_call *call, watch_state *ws, int st)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = st;
    /* Watch sends one small message per change; a full buffer means the client is not reading:
     * it will get the newest status when it reads again (the next change resends). */
    if (rpc_call_send(call, &resp.base) == 0)
        ws->last_sent = st;
}

static void on_watch(rpc_call *call, const Grpc__Health__V1__HealthCheckRequest *req,
                     void *user_data)
{
    (void)user_data;
    watch_state *ws = mem_calloc(1, sizeof(*ws));
    ws->service = mem_strdup(req->service ? req->service : "");
    ws->last_sent = -1;
    rpc_call_set_data(call, ws, watch_state_free);
    rpc__worker *w = rpc__call_worker(call);
    if (w->draining) {
        watch_send(call, ws, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    watch_send(call, ws, status_for(rpc_call_server(call), ws->service));
    rpc__link_insert(&w->health_watchers, rpc__call_watch_link(call));
}

void rpc__health_notify_worker(rpc__worker *w)
{
    for (rpc__link *l = w->health_watchers.next, *n; l != &w->health_watchers; l = n) {
        n = l->next;
        rpc_call *call = rpc__call_from_watch_link(l);
        watch_state *ws = rpc_call_data(call);
        int st = status_for(w->srv, ws->service);
        if (st != ws->last_sent)
            watch_send(call, ws, st);
    }
}

void rpc__health_end_watchers(rpc__worker *w)
{
    rpc__health_notify_worker(w);
    while (!rpc__link_empty(&w->health_watchers)) {
        rpc_call *call = rpc__call_from_watch_link(w->health_watchers.next);
        rpc__link_remove(w->health_watchers.next);
        /* UNAVAILABLE tells a watcher to re-watch elsewhere; the connection can then drain. */
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "server shutting down");
    }
}

static const Grpc__Health__V1__Health__RpcServer health_impl = {
    .check = on_check,
    .watch = on_watch,
};

int rpc__health_register(rpc_server *srv)
{
    return grpc__health__v1__health__rpc_register(srv, &health_impl);
}
