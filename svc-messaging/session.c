/* session.c: the Connect session state machine (see session.h). */
#include "session.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/v1/messaging.rpc-c.h"
#include "dqueue.h"
#include "log.h"
#include "mem.h"
#include "presence.h"
#include "sendpath.h"
#include "snowflake.h"
#include "stats.h"

typedef enum sess_state {
    SESS_HELLO_WAIT = 0,
    SESS_OPEN = 1,
    SESS_CLOSED = 2,
} sess_state;

typedef enum ctl_kind {
    CTL_WELCOME = 1,
    CTL_RESULT = 2,
    CTL_PONG = 3,
} ctl_kind;

typedef struct ctl_item {
    struct ctl_item *next;
    ctl_kind kind;
    session *s;       /* CTL_RESULT while the send is in flight */
    uint64_t nonce;   /* CTL_PONG */
    uint64_t chat_id; /* CTL_RESULT */
    char cmid[MSG_MAX_CMID_BYTES + 1];
    send_result r; /* CTL_RESULT */
    bool ready;    /* CTL_RESULT: the result arrived */
} ctl_item;

struct session {
    int refs;
    msg_worker *w;
    rpc_call *call;
    sess_state state;
    uint64_t sid;
    char user[AUTH_USER_ID_MAX + 1];
    char device[MSG_MAX_DEVICE_ID + 1];
    char session_id[64];
    int64_t token_exp_ms; /* Unix ms */
    int64_t opened_ms;    /* monotonic */
    int64_t last_rx_ms;   /* monotonic */
    session *next_of_user, *prev_of_user;
    bool indexed; /* in w->users and the device registry */
    dqueue dq;    /* delivery frames, each holding one dl_event reference */
    /* control frames */
    ctl_item *ctl_head, *ctl_tail;
    uint32_t n_pongs;        /* pongs queued */
    uint32_t inflight_sends; /* sends whose result is not written yet */
    struct event *tick;
    bool pumping;
    presence_dev *pres; /* from Hello to the end (presence.h) */
};

static void session_unref(session *s)
{
    if (--s->refs > 0)
        return;
    if (s->tick)
        event_free(s->tick);
    rpc_call_unref(s->call);
    free(s);
}

session *session_next_of_user(const session *s)
{
    return s->next_of_user;
}

uint64_t session_id(const session *s)
{
    return s->sid;
}

/* --- index ----------------------------------------------------------------------------------- */

static void index_add(session *s)
{
    msg_worker *w = s->w;
    session *first = strtab_get(&w->users, s->user);
    s->prev_of_user = NULL;
    s->next_of_user = first;
    if (first)
        first->prev_of_user = s;
    strtab_put(&w->users, s->user, s);
    s->indexed = true;
    atomic_fetch_add(&w->n_sessions, 1);
    metrics_gauge_add(stats.sessions, 1);
    worker_claim_device(w, s->user, s->device, s->sid);
}

static void index_remove(session *s)
{
    if (!s->indexed)
        return;
    msg_worker *w = s->w;
    if (s->prev_of_user)
        s->prev_of_user->next_of_user = s->next_of_user;
    else if (s->next_of_user)
        strtab_put(&w->users, s->user, s->next_of_user);
    else
        strtab_del(&w->users, s->user);
    if (s->next_of_user)
        s->next_of_user->prev_of_user = s->prev_of_user;
    s->indexed = false;
    atomic_fetch_sub(&w->n_sessions, 1);
    metrics_gauge_add(stats.sessions, -1);
    worker_release_device(w, s->user, s->device, s->sid);
}

/* --- closing --------------------------------------------------------------------------------- */

static void release_ev(void *ev)
{
    dl_event_unref(ev);
}

static void release_queues(session *s)
{
    dqueue_clear(&s->dq, release_ev);
    ctl_item *c = s->ctl_head;
    while (c) {
        ctl_item *next = c->next;
        if (c->kind == CTL_RESULT && !c->ready) {
            c->s = NULL; /* the send still runs; its callback frees the item */
            s->refs--;   /* ...and drops its reference now (the stream's is still held) */
        } else
            free(c);
        c = next;
    }
    s->ctl_head = s->ctl_tail = NULL;
}

static void session_end(session *s)
{
    s->state = SESS_CLOSED;
    rpc_call_set_data(s->call, NULL, NULL); /* later frames of the call find no session */
    if (s->tick)
        event_del(s->tick);
    index_remove(s);
    presence_close(s->pres); /* after index_remove: offline unless a newer stream holds it */
    s->pres = NULL;
    release_queues(s);
    session_unref(s); /* the stream's reference */
}

void session_close(session *s, int code, const char *msg)
{
    if (s->state == SESS_CLOSED)
        return;
    if (!rpc_call_is_done(s->call))
        rpc_call_finish(s->call, code, msg);
    if (code != 0 && code != RPC_STATUS_UNAVAILABLE && code != RPC_STATUS_ABORTED)
        log_debug("session %s user=%s device=%s closed: %s %s", s->session_id, s->user, s->device,
                  rpc_status_name(code), msg ? msg : "");
    session_end(s);
}

static void on_cancel(rpc_call *call, rpc_cancel_reason reason, void *data)
{
    (void)call;
    (void)reason;
    session *s = data;
    if (s->state != SESS_CLOSED)
        session_end(s);
}

/* --- writing --------------------------------------------------------------------------------- */

static int send_delivery(session *s, dq_item *it)
{
    Chat__V1__DeliveryFrame f = CHAT__V1__DELIVERY_FRAME__INIT;
    f.session_seq = it->seq;
    dl_event_fill_frame((dl_event *)it->ev, &f);
    Chat__V1__ConnectResponse resp = CHAT__V1__CONNECT_RESPONSE__INIT;
    resp.frame_case = CHAT__V1__CONNECT_RESPONSE__FRAME_DELIVERY;
    resp.delivery = &f;
    return rpc_call_send(s->call, &resp.base);
}

static int send_ctl(session *s, ctl_item *c)
{
    msg_service *svc = s->w->svc;
    Chat__V1__ConnectResponse resp = CHAT__V1__CONNECT_RESPONSE__INIT;
    Chat__V1__WelcomeFrame wf = CHAT__V1__WELCOME_FRAME__INIT;
    Chat__V1__SendResultFrame rf = CHAT__V1__SEND_RESULT_FRAME__INIT;
    Chat__V1__PongFrame pf = CHAT__V1__PONG_FRAME__INIT;
    switch (c->kind) {
    case CTL_WELCOME:
        wf.session_id = s->session_id;
        wf.user_id = s->user;
        wf.site = (char *)svc->cfg.site;
        wf.sent_at_ms = snowflake_wall_ms();
        wf.token_expires_at_ms = s->token_exp_ms;
        wf.queue_capacity = svc->cfg.queue_size;
        wf.ack_timeout_ms = svc->cfg.ack_timeout_ms;
        wf.max_resends = svc->cfg.max_resends;
        wf.ping_interval_ms = svc->cfg.ping_interval_ms;
        wf.max_inflight_sends = svc->cfg.max_inflight_sends;
        wf.max_body_bytes = MSG_MAX_BODY_BYTES;
        resp.frame_case = CHAT__V1__CONNECT_RESPONSE__FRAME_WELCOME;
        resp.welcome = &wf;
        break;
    case CTL_RESULT:
        rf.client_message_id = c->cmid;
        rf.chat_id = c->chat_id;
        rf.status = c->r.status;
        rf.message_id = c->r.message_id;
        rf.created_at_ms = c->r.created_at_ms;
        rf.code = c->r.code;
        rf.reason = c->r.reason;
        resp.frame_case = CHAT__V1__CONNECT_RESPONSE__FRAME_SEND_RESULT;
        resp.send_result = &rf;
        break;
    case CTL_PONG:
        pf.nonce = c->nonce;
        pf.sent_at_ms = snowflake_wall_ms();
        /* Everything below the first frame not yet written was written or dropped. */
        pf.last_session_seq = dqueue_last_written_seq(&s->dq);
        resp.frame_case = CHAT__V1__CONNECT_RESPONSE__FRAME_PONG;
        resp.pong = &pf;
        break;
    }
    return rpc_call_send(s->call, &resp.base);
}

static void pump(session *s)
{
    if (s->pumping || s->state == SESS_CLOSED)
        return;
    s->pumping = true;
    int64_t now = rpc_now_ms();
    for (;;) {
        int rv;
        /* The first control frame that is ready (results may overtake each other). */
        ctl_item *c = s->ctl_head, *prev = NULL;
        while (c != NULL && c->kind == CTL_RESULT && !c->ready) {
            prev = c;
            c = c->next;
        }
        if (c != NULL) {
            rv = send_ctl(s, c);
            if (rv == RPC_ERR_WOULDBLOCK)
                break;
            if (prev)
                prev->next = c->next;
            else
                s->ctl_head = c->next;
            if (s->ctl_tail == c)
                s->ctl_tail = prev;
            if (c->kind == CTL_PONG)
                s->n_pongs--;
            if (c->kind == CTL_RESULT)
                s->inflight_sends--;
            free(c);
            if (rv != 0)
                goto closed;
            continue;
        }
        if (s->state != SESS_OPEN)
            break;
        if (s->dq.resend_due) {
            dq_item *it = dqueue_next_due(&s->dq);
            if (it == NULL)
                continue;
            rv = send_delivery(s, it);
            if (rv == RPC_ERR_WOULDBLOCK)
                break;
            if (rv != 0)
                goto closed;
            dqueue_mark_resent(it, now);
            metrics_counter_inc(stats.resends);
            continue;
        }
        dq_item *it = dqueue_next_new(&s->dq);
        if (it != NULL) {
            rv = send_delivery(s, it);
            if (rv == RPC_ERR_WOULDBLOCK)
                break;
            if (rv != 0)
                goto closed;
            dqueue_mark_written(&s->dq, now);
            continue;
        }
        /* Partner presence last: best effort, the newest state of each partner. */
        rv = presence_write(s->pres, s->call);
        if (rv != 0 && rv != RPC_ERR_WOULDBLOCK)
            goto closed;
        break;
    }
    s->pumping = false;
    return;
closed:
    s->pumping = false;
    session_close(s, RPC_STATUS_INTERNAL, "cannot write to the stream");
}

static void on_presence_ready(void *data)
{
    pump(data);
}

static void on_writable(rpc_call *call, void *data)
{
    (void)call;
    pump(data);
}

static void ctl_push(session *s, ctl_item *c)
{
    c->next = NULL;
    if (s->ctl_tail)
        s->ctl_tail->next = c;
    else
        s->ctl_head = c;
    s->ctl_tail = c;
}

/* --- timer ----------------------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    session *s = arg;
    const settings *cfg = &s->w->svc->cfg;
    int64_t now = rpc_now_ms();
    if (s->state == SESS_HELLO_WAIT) {
        if (now - s->opened_ms >= cfg->hello_timeout_ms)
            session_close(s, RPC_STATUS_DEADLINE_EXCEEDED, "no Hello within the hello timeout");
        return;
    }
    if (s->state != SESS_OPEN)
        return;
    if (snowflake_wall_ms() >= s->token_exp_ms) {
        session_close(s, RPC_STATUS_UNAUTHENTICATED, "token expired");
        return;
    }
    if (now - s->last_rx_ms >= 3 * (int64_t)cfg->ping_interval_ms) {
        session_close(s, RPC_STATUS_DEADLINE_EXCEEDED, "no frame from the client for 3 pings");
        return;
    }
    dq_item *stuck = dqueue_check_timeouts(&s->dq, now, cfg->ack_timeout_ms, cfg->max_resends);
    if (stuck != NULL) {
        metrics_counter_inc(stats.sessions_stuck);
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "session stuck: session_seq %" PRIu64 " unacknowledged after %u resends",
                 stuck->seq, stuck->resends);
        session_close(s, RPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    if (s->dq.resend_due)
        pump(s);
}

/* --- public ---------------------------------------------------------------------------------- */

session *session_new(msg_worker *w, rpc_call *call, const auth_identity *id)
{
    session *s = mem_calloc(1, sizeof(*s));
    s->refs = 1;
    dqueue_init(&s->dq, w->svc->cfg.queue_size);
    s->w = w;
    s->call = call;
    rpc_call_ref(call);
    s->sid = ++w->next_sid;
    snprintf(s->user, sizeof(s->user), "%s", id->user_id);
    s->token_exp_ms = id->expires_at * 1000;
    s->opened_ms = s->last_rx_ms = rpc_now_ms();
    snprintf(s->session_id, sizeof(s->session_id), "%s-%d-%" PRIu64 "-%" PRIx64, w->svc->cfg.site,
             w->index, s->sid, (uint64_t)snowflake_wall_ms());
    s->tick = event_new(w->base, -1, EV_PERSIST, on_tick, s);
    event_add(s->tick, w->tick_tv);
    rpc_call_callbacks cbs = {.on_cancel = on_cancel, .on_writable = on_writable};
    rpc_call_set_callbacks(call, &cbs, s);
    rpc_call_set_data(call, s, NULL);
    return s;
}

static int device_ok(const char *d)
{
    size_t n = d ? strlen(d) : 0;
    if (n == 0 || n > MSG_MAX_DEVICE_ID)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = d[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void on_hello(session *s, const Chat__V1__Hello *h)
{
    if (s->state != SESS_HELLO_WAIT) {
        session_close(s, RPC_STATUS_FAILED_PRECONDITION, "Hello may only be the first frame");
        return;
    }
    if (!device_ok(h->device_id)) {
        session_close(s, RPC_STATUS_INVALID_ARGUMENT,
                      "Hello.device_id must be 1..64 bytes of [A-Za-z0-9._-]");
        return;
    }
    if (h->client_info != NULL && strlen(h->client_info) > 128) {
        session_close(s, RPC_STATUS_INVALID_ARGUMENT, "Hello.client_info is over 128 bytes");
        return;
    }
    snprintf(s->device, sizeof(s->device), "%s", h->device_id);
    s->state = SESS_OPEN;
    metrics_counter_inc(stats.sessions_opened);
    ctl_item *c = mem_calloc(1, sizeof(*c));
    c->kind = CTL_WELCOME;
    ctl_push(s, c);
    index_add(s); /* may kick an older stream of this device */
    s->pres = presence_open(s->w->presence, s->user, s->device, h->watch_partner_presence,
                            rpc_call_metadata_get(s->call, "authorization"), on_presence_ready, s);
    pump(s);
}

static void on_send_result(const send_result *r, void *ud)
{
    ctl_item *c = ud;
    session *s = c->s;
    if (s == NULL) { /* the session ended meanwhile */
        free(c);
        return;
    }
    c->r = *r;
    c->ready = true;
    pump(s);
    session_unref(s);
}

static void on_send(session *s, const Chat__V1__SendFrame *f)
{
    ctl_item *c = mem_calloc(1, sizeof(*c));
    c->kind = CTL_RESULT;
    c->chat_id = f->chat_id;
    snprintf(c->cmid, sizeof(c->cmid), "%s", f->client_message_id ? f->client_message_id : "");
    s->inflight_sends++;
    ctl_push(s, c);
    send_result r;
    if (sendpath_validate(f->client_message_id, f->chat_id, f->body, &r) != 0) {
        c->r = r;
        c->ready = true;
    } else if (s->inflight_sends > s->w->svc->cfg.max_inflight_sends) {
        memset(&c->r, 0, sizeof(c->r));
        c->r.status = CHAT__V1__SEND_STATUS__SEND_STATUS_REJECTED;
        c->r.code = RPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(c->r.reason, sizeof(c->r.reason), "more than %u sends pending",
                 s->w->svc->cfg.max_inflight_sends);
        c->ready = true;
        metrics_counter_inc(stats.send_rejected);
    } else {
        c->s = s;
        s->refs++;
        sendpath_submit(s->w, s->user, f->client_message_id, f->chat_id, f->body, on_send_result,
                        c);
        return;
    }
    pump(s);
}

static void on_ack(session *s, uint64_t seq)
{
    if (dqueue_ack(&s->dq, seq, release_ev) != 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "ack %" PRIu64 " is above the last session_seq %" PRIu64, seq,
                 s->dq.last_seq);
        session_close(s, RPC_STATUS_INVALID_ARGUMENT, msg);
    }
}

static void on_ping(session *s, uint64_t nonce)
{
    if (s->n_pongs >= CTL_PONG_MAX) {
        session_close(s, RPC_STATUS_RESOURCE_EXHAUSTED,
                      "too many pings not answered: read the stream");
        return;
    }
    ctl_item *c = mem_calloc(1, sizeof(*c));
    c->kind = CTL_PONG;
    c->nonce = nonce;
    s->n_pongs++;
    ctl_push(s, c);
    pump(s);
}

void session_on_frame(session *s, const Chat__V1__ConnectRequest *req)
{
    if (s->state == SESS_CLOSED)
        return;
    s->last_rx_ms = rpc_now_ms();
    if (req->frame_case == CHAT__V1__CONNECT_REQUEST__FRAME_HELLO) {
        on_hello(s, req->hello);
        return;
    }
    if (s->state == SESS_HELLO_WAIT) {
        session_close(s, RPC_STATUS_FAILED_PRECONDITION, "the first frame must be Hello");
        return;
    }
    switch (req->frame_case) {
    case CHAT__V1__CONNECT_REQUEST__FRAME_SEND:
        on_send(s, req->send);
        break;
    case CHAT__V1__CONNECT_REQUEST__FRAME_ACK:
        on_ack(s, req->ack->session_seq);
        break;
    case CHAT__V1__CONNECT_REQUEST__FRAME_PING:
        on_ping(s, req->ping->nonce);
        break;
    default:
        session_close(s, RPC_STATUS_INVALID_ARGUMENT, "a frame with nothing set");
        break;
    }
}

void session_on_half_close(session *s)
{
    session_close(s, RPC_STATUS_OK, NULL);
}

void session_deliver(session *s, dl_event *e)
{
    if (s->state != SESS_OPEN)
        return;
    uint64_t seq;
    if (!dqueue_push(&s->dq, e, &seq)) {
        metrics_counter_inc(stats.delivery_drops);
        return; /* the number is used: the device sees the gap */
    }
    atomic_fetch_add(&e->refs, 1);
    metrics_counter_inc(stats.deliveries);
    pump(s);
}

void session_deliver_user(msg_worker *w, const char *user, dl_event *e)
{
    session *s = strtab_get(&w->users, user);
    while (s != NULL) {
        session *next = s->next_of_user; /* deliver never closes, but stay safe */
        session_deliver(s, e);
        s = next;
    }
}

static bool collect(const char *key, void *value, void *ud)
{
    (void)key;
    session ***pp = ud;
    for (session *s = value; s; s = s->next_of_user) {
        s->refs++;
        *(*pp)++ = s;
    }
    return true;
}

void session_close_all(msg_worker *w, int code, const char *msg)
{
    size_t n = atomic_load(&w->n_sessions);
    if (n == 0)
        return;
    session **all = mem_alloc(n * sizeof(*all)), **p = all;
    strtab_each(&w->users, collect, &p);
    for (session **q = all; q < p; q++) {
        session_close(*q, code, msg);
        session_unref(*q);
    }
    free(all);
}

void session_kick(msg_worker *w, const char *user, uint64_t sid)
{
    for (session *s = strtab_get(&w->users, user); s; s = s->next_of_user)
        if (s->sid == sid) {
            metrics_counter_inc(stats.sessions_aborted);
            session_close(s, RPC_STATUS_ABORTED,
                          "the same device opened a newer stream on this server");
            return;
        }
}
