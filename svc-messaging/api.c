/* api.c: MessagingService.Connect and .Send (see api.h). */
#include "api.h"

#include <stdlib.h>

#include "chat/v1/messaging.rpc-c.h"
#include "log.h"
#include "mem.h"
#include "sendpath.h"
#include "session.h"

/* Authenticates |call|; on failure finishes it and returns -1. */
static int authenticate(rpc_call *call, msg_service *svc, auth_identity *id)
{
    int rv = auth_verify_bearer(svc->auth, rpc_call_metadata_get(call, "authorization"), id);
    if (rv != 0) {
        rpc_call_finish(call, RPC_STATUS_UNAUTHENTICATED, auth_strerror(rv));
        return -1;
    }
    return 0;
}

static void connect_start(rpc_call *call, void *user_data)
{
    msg_service *svc = user_data;
    msg_worker *w = rpc_call_worker_data(call);
    if (w == NULL || atomic_load(&svc->shutting_down)) {
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "server not ready or shutting down");
        return;
    }
    auth_identity id;
    if (authenticate(call, svc, &id) != 0)
        return;
    session_new(w, call, &id); /* owned by the stream from now on (session.h) */
}

/* The session is the call's callback data; recover it through a tiny lookup: the runtime gives
 * the per-call pointer set with rpc_call_set_data. */
static session *call_session(rpc_call *call)
{
    return rpc_call_data(call);
}

static void connect_message(rpc_call *call, const Chat__V1__ConnectRequest *msg, void *user_data)
{
    (void)user_data;
    session *s = call_session(call);
    if (s != NULL)
        session_on_frame(s, msg);
}

static void connect_half_close(rpc_call *call, void *user_data)
{
    (void)user_data;
    session *s = call_session(call);
    if (s != NULL)
        session_on_half_close(s);
    else if (!rpc_call_is_done(call))
        rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

/* --- unary Send ------------------------------------------------------------------------------ */

static void on_send_done(const send_result *r, void *ud)
{
    rpc_call *call = ud;
    if (!rpc_call_is_done(call)) {
        if (r->status == CHAT__V1__SEND_STATUS__SEND_STATUS_OK ||
            r->status == CHAT__V1__SEND_STATUS__SEND_STATUS_DUPLICATE) {
            Chat__V1__SendResponse resp = CHAT__V1__SEND_RESPONSE__INIT;
            resp.status = r->status;
            resp.message_id = r->message_id;
            resp.created_at_ms = r->created_at_ms;
            chat__v1__messaging_service__rpc_send_reply(call, &resp);
        } else {
            rpc_call_finish(call, r->code ? r->code : RPC_STATUS_UNAVAILABLE, r->reason);
        }
    }
    rpc_call_unref(call);
}

static void send_unary(rpc_call *call, const Chat__V1__SendRequest *req, void *user_data)
{
    msg_service *svc = user_data;
    msg_worker *w = rpc_call_worker_data(call);
    if (w == NULL) {
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "server not ready");
        return;
    }
    auth_identity id;
    if (authenticate(call, svc, &id) != 0)
        return;
    send_result r;
    if (sendpath_validate(req->client_message_id, req->chat_id, req->body, &r) != 0) {
        rpc_call_finish(call, r.code, r.reason);
        return;
    }
    rpc_call_ref(call);
    sendpath_submit(w, id.user_id, req->client_message_id, req->chat_id, req->body, on_send_done,
                    call);
}

static Chat__V1__MessagingService__RpcServer impl;

int api_register(rpc_server *srv, msg_service *svc)
{
    impl.connect.on_start = connect_start;
    impl.connect.on_message = connect_message;
    impl.connect.on_half_close = connect_half_close;
    impl.send = send_unary;
    impl.user_data = svc;
    return chat__v1__messaging_service__rpc_register(srv, &impl);
}
