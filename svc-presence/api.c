/* api.c: chat.v1.PresenceService handlers (see api.h). */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "chat/v1/presence.rpc-c.h"
#include "hbqueue.h"
#include "log.h"
#include "mem.h"
#include "stats.h"
#include "store.h"
#include "tokens.h"
#include "validate.h"
#include "watch.h"

/* Verifies the bearer token (through the worker's cache of verified tokens); finishes the call
 * with UNAUTHENTICATED and returns false when it is not valid. */
static bool authenticate(rpc_call *call, const presence_service *svc, auth_identity *id)
{
    const char *authz = rpc_call_metadata_get(call, "authorization");
    presence_worker *w = rpc_call_worker_data(call);
    int rv = w != NULL ? tokens_verify_bearer(w->tokens, svc->auth, authz, (int64_t)time(NULL), id)
                       : auth_verify_bearer(svc->auth, authz, id);
    if (rv != 0) {
        rpc_call_finish(call, RPC_STATUS_UNAUTHENTICATED, auth_strerror(rv));
        return false;
    }
    return true;
}

/* The calling worker's state; finishes the call with UNAVAILABLE when the worker could not set
 * up its Redis connections. */
static presence_worker *worker_of(rpc_call *call)
{
    presence_worker *w = rpc_call_worker_data(call);
    if (w == NULL)
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "presence store not configured");
    return w;
}

/* Finishes |call| for a store error (refused or failed). */
static void finish_store_error(rpc_call *call, int err)
{
    switch (err) {
    case STORE_E_REPLY:
    case STORE_E_INVALID:
        rpc_call_finishf(call, RPC_STATUS_INTERNAL, "presence store: %s", store_strerror(err));
        break;
    case REDIS_E_BUSY:
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "presence store busy; retry");
        break;
    case HBQUEUE_E_FULL:
        rpc_call_finish(call, RPC_STATUS_RESOURCE_EXHAUSTED,
                        "too many heartbeats waiting for the presence store; retry");
        break;
    default:
        rpc_call_finishf(call, RPC_STATUS_UNAVAILABLE, "presence store unavailable: %s",
                         store_strerror(err));
        break;
    }
}

/* Checks the device_id / user_id pair of Heartbeat and SetOffline. */
static bool check_own_device(rpc_call *call, const auth_identity *id, const char *device_id,
                             const char *user_id)
{
    if (device_id == NULL || !validate_device_id(device_id, strlen(device_id))) {
        rpc_call_finishf(call, RPC_STATUS_INVALID_ARGUMENT,
                         "device_id must be 1..%d bytes of [A-Za-z0-9._-]", VALIDATE_DEVICE_ID_MAX);
        return false;
    }
    if (user_id != NULL && user_id[0] != '\0' && strcmp(user_id, id->user_id) != 0) {
        rpc_call_finish(call, RPC_STATUS_PERMISSION_DENIED,
                        "user_id names another user: users may only change their own devices");
        return false;
    }
    return true;
}

/* A call waiting for Redis; holds a reference on the call. */
typedef struct pending {
    rpc_call *call;
    const presence_service *svc;
    stats_op op;   /* for the latency histogram */
    int64_t t0_ns; /* when the script was sent */
    uint32_t ttl_ms;
    char user[AUTH_USER_ID_MAX + 1];
} pending;

static pending *pending_new(rpc_call *call, const presence_service *svc, stats_op op)
{
    pending *p = mem_calloc(1, sizeof(*p));
    p->call = call;
    p->svc = svc;
    p->op = op;
    p->t0_ns = stats_now_ns();
    rpc_call_ref(call);
    return p;
}

/* Records the round trip of a successful script call. */
static void pending_observe(const pending *p, int err)
{
    if (err == 0)
        stats_observe_since(p->svc->stats.redis_seconds[p->op], p->t0_ns);
}

/* True when the call still wants an answer. */
static bool pending_live(const pending *p)
{
    return !rpc_call_is_done(p->call);
}

static void pending_free(pending *p)
{
    rpc_call_unref(p->call);
    free(p);
}

/* --- Heartbeat ------------------------------------------------------------------------------ */

static void on_heartbeat_done(int err, int64_t expires_at_ms, uint32_t devices, void *ud)
{
    (void)devices;
    pending *p = ud; /* the round trip is observed per batch (hbqueue) */
    if (pending_live(p)) {
        if (err != 0) {
            finish_store_error(p->call, err);
        } else {
            Chat__V1__HeartbeatResponse resp = CHAT__V1__HEARTBEAT_RESPONSE__INIT;
            resp.ttl_ms = p->ttl_ms;
            resp.expires_at_ms = expires_at_ms;
            chat__v1__presence_service__rpc_heartbeat_reply(p->call, &resp);
        }
    }
    pending_free(p);
}

static void heartbeat(rpc_call *call, const Chat__V1__HeartbeatRequest *req, void *user_data)
{
    const presence_service *svc = user_data;
    auth_identity id;
    if (!authenticate(call, svc, &id))
        return;
    if (!check_own_device(call, &id, req->device_id, req->user_id))
        return;
    uint32_t ttl = validate_ttl(req->ttl_ms);
    if (ttl == 0) {
        rpc_call_finishf(call, RPC_STATUS_INVALID_ARGUMENT,
                         "ttl_ms %u out of range: 0 (default %d) or %d..%d", req->ttl_ms,
                         VALIDATE_TTL_DEFAULT, VALIDATE_TTL_MIN, VALIDATE_TTL_MAX);
        return;
    }
    presence_worker *w = worker_of(call);
    if (w == NULL)
        return;
    pending *p = pending_new(call, svc, STATS_OP_HEARTBEAT);
    p->ttl_ms = ttl;
    int rv = hbqueue_heartbeat(w->hbq, id.user_id, req->device_id, ttl, on_heartbeat_done, p);
    if (rv != 0) {
        finish_store_error(call, rv);
        pending_free(p);
    }
}

/* --- SetOffline ----------------------------------------------------------------------------- */

static void on_set_offline_done(int err, const store_presence *pr, void *ud)
{
    pending *p = ud;
    pending_observe(p, err);
    if (pending_live(p)) {
        if (err != 0) {
            finish_store_error(p->call, err);
        } else {
            Chat__V1__UserPresence up = CHAT__V1__USER_PRESENCE__INIT;
            up.user_id = p->user;
            up.online = pr->devices > 0;
            up.online_devices = pr->devices;
            up.last_seen_at_ms = pr->last_seen_ms;
            Chat__V1__SetOfflineResponse resp = CHAT__V1__SET_OFFLINE_RESPONSE__INIT;
            resp.presence = &up;
            chat__v1__presence_service__rpc_set_offline_reply(p->call, &resp);
        }
    }
    pending_free(p);
}

static void set_offline(rpc_call *call, const Chat__V1__SetOfflineRequest *req, void *user_data)
{
    const presence_service *svc = user_data;
    auth_identity id;
    if (!authenticate(call, svc, &id))
        return;
    if (!check_own_device(call, &id, req->device_id, req->user_id))
        return;
    presence_worker *w = worker_of(call);
    if (w == NULL)
        return;
    pending *p = pending_new(call, svc, STATS_OP_SET_OFFLINE);
    memcpy(p->user, id.user_id, sizeof(p->user));
    int rv = store_set_offline(svc->st, w->rc, id.user_id, req->device_id, on_set_offline_done, p);
    if (rv != 0) {
        finish_store_error(call, rv);
        pending_free(p);
    }
}

/* --- GetPresence ---------------------------------------------------------------------------- */

typedef struct get_op {
    rpc_call *call;
    const presence_service *svc;
    int64_t t0_ns;
    size_t n;
    const char **ids; /* into the request, valid while the call is not done */
} get_op;

static void on_get_done(int err, int64_t now_ms, const store_presence *ps, size_t n, void *ud)
{
    (void)now_ms;
    get_op *op = ud;
    if (err == 0)
        stats_observe_since(op->svc->stats.redis_seconds[STATS_OP_GET], op->t0_ns);
    if (!rpc_call_is_done(op->call)) {
        if (err != 0) {
            finish_store_error(op->call, err);
        } else {
            Chat__V1__UserPresence *ups = mem_alloc(n * sizeof(*ups));
            Chat__V1__UserPresence **ptrs = mem_alloc(n * sizeof(*ptrs));
            for (size_t i = 0; i < n; i++) {
                chat__v1__user_presence__init(&ups[i]);
                ups[i].user_id = (char *)op->ids[i];
                ups[i].online = ps[i].devices > 0;
                ups[i].online_devices = ps[i].devices;
                ups[i].last_seen_at_ms = ps[i].last_seen_ms;
                ptrs[i] = &ups[i];
            }
            Chat__V1__GetPresenceResponse resp = CHAT__V1__GET_PRESENCE_RESPONSE__INIT;
            resp.n_users = n;
            resp.users = ptrs;
            chat__v1__presence_service__rpc_get_presence_reply(op->call, &resp);
            free(ptrs);
            free(ups);
        }
    }
    rpc_call_unref(op->call);
    free(op->ids);
    free(op);
}

static void get_presence(rpc_call *call, const Chat__V1__GetPresenceRequest *req, void *user_data)
{
    const presence_service *svc = user_data;
    auth_identity id;
    if (!authenticate(call, svc, &id))
        return;
    size_t order[VALIDATE_MAX_USERS], n;
    char err[160];
    if (validate_user_list(req->user_ids, req->n_user_ids, order, &n, err, sizeof(err)) != 0) {
        rpc_call_finish(call, RPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    presence_worker *w = worker_of(call);
    if (w == NULL)
        return;
    get_op *op = mem_alloc(sizeof(*op));
    op->call = call;
    op->svc = svc;
    op->t0_ns = stats_now_ns();
    op->n = n;
    op->ids = mem_alloc(n * sizeof(*op->ids));
    for (size_t i = 0; i < n; i++)
        op->ids[i] = req->user_ids[order[i]];
    rpc_call_ref(call);
    int rv = store_get(svc->st, w->rc, op->ids, n, on_get_done, op);
    if (rv != 0) {
        finish_store_error(call, rv);
        rpc_call_unref(call);
        free(op->ids);
        free(op);
    }
}

/* --- WatchPresence -------------------------------------------------------------------------- */

static void watch_presence(rpc_call *call, const Chat__V1__WatchPresenceRequest *req,
                           void *user_data)
{
    const presence_service *svc = user_data;
    auth_identity id;
    if (!authenticate(call, svc, &id))
        return;
    size_t order[VALIDATE_MAX_USERS], n;
    char err[160];
    if (validate_user_list(req->user_ids, req->n_user_ids, order, &n, err, sizeof(err)) != 0) {
        rpc_call_finish(call, RPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    presence_worker *w = worker_of(call);
    if (w == NULL)
        return;
    watch_start(w->hub, call, req->user_ids, order, n, id.expires_at);
}

/* --- CountOnline ---------------------------------------------------------------------------- */

static void on_count_done(int err, const store_count *r, void *ud)
{
    pending *p = ud;
    pending_observe(p, err);
    if (pending_live(p)) {
        if (err == STORE_E_NOT_FOUND) {
            rpc_call_finish(p->call, RPC_STATUS_NOT_FOUND, "no such chat");
        } else if (err == STORE_E_NOT_MEMBER) {
            rpc_call_finish(p->call, RPC_STATUS_PERMISSION_DENIED, "not a member of the chat");
        } else if (err != 0) {
            finish_store_error(p->call, err);
        } else {
            Chat__V1__CountOnlineResponse resp = CHAT__V1__COUNT_ONLINE_RESPONSE__INIT;
            resp.online_count = r->online;
            resp.member_count = r->members;
            resp.computed_at_ms = r->computed_at_ms;
            chat__v1__presence_service__rpc_count_online_reply(p->call, &resp);
        }
    }
    pending_free(p);
}

static void count_online(rpc_call *call, const Chat__V1__CountOnlineRequest *req, void *user_data)
{
    const presence_service *svc = user_data;
    auth_identity id;
    if (!authenticate(call, svc, &id))
        return;
    if (req->chat_id == 0) {
        rpc_call_finish(call, RPC_STATUS_INVALID_ARGUMENT, "chat_id must not be 0");
        return;
    }
    presence_worker *w = worker_of(call);
    if (w == NULL)
        return;
    pending *p = pending_new(call, svc, STATS_OP_COUNT_ONLINE);
    int rv = store_count_online(svc->st, w->rc, req->chat_id, id.user_id, on_count_done, p);
    if (rv != 0) {
        finish_store_error(call, rv);
        pending_free(p);
    }
}

static Chat__V1__PresenceService__RpcServer impl = {
    .heartbeat = heartbeat,
    .set_offline = set_offline,
    .get_presence = get_presence,
    .watch_presence = watch_presence,
    .count_online = count_online,
};

int api_register(rpc_server *srv, presence_service *svc)
{
    impl.user_data = svc;
    return chat__v1__presence_service__rpc_register(srv, &impl);
}
