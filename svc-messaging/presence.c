/* presence.c: devices online while Connect-ed, and partner presence (see presence.h). */
#include "presence.h"

#include <stdlib.h>
#include <string.h>

#include "chat/v1/chats.rpc-c.h"
#include "chat/v1/messaging.pb-c.h"
#include "chat/v1/presence.rpc-c.h"
#include "log.h"
#include "mem.h"
#include "rpc_client.h"
#include "store.h"
#include "worker.h"

#define LIST_PAGE 200          /* ListChats page size (the RPC's maximum) */
#define RETRY_MIN_MS 1000      /* first backoff of a failed partner step */
#define RETRY_MAX_MS 30000     /* backoff ceiling */
#define LOAD_BUSY_RETRY_MS 100 /* membership loader full: try again this soon */
#define PARTNER_RPC_TIMEOUT_MS 10000

/* A presence_drain() in progress. Freed once |done| ran and no reply is due (it outlives |p|
 * when Redis answers after presence_free()). */
typedef struct drain_op {
    msg_presence *p;        /* NULL after presence_free() */
    size_t pending;         /* SetOffline replies awaited */
    void (*done)(void *ud); /* NULL once called */
    void *ud;               /* for |done| */
} drain_op;

struct msg_presence {
    msg_worker *w;          /* owner */
    store *st;              /* the presence scripts */
    uint32_t ttl_ms;        /* granted to each heartbeat */
    int64_t interval_ms;    /* ttl / 3 */
    presence_dev *head;     /* refresh FIFO, due order */
    presence_dev *tail;     /* newest */
    struct event *tick;     /* PRESENCE_TICK_MS */
    rpc_channel *chats;     /* ListChats, or NULL */
    rpc_channel *presence;  /* WatchPresence, or NULL */
    bool draining;          /* presence_drain() ran */
    drain_op *drain;        /* in progress, or NULL */
    struct event *drain_ev; /* PRESENCE_DRAIN_MAX_MS */
};

typedef enum partner_step {
    STEP_OFF = 0,   /* not asked, or given up */
    STEP_LIST = 1,  /* ListChats pages */
    STEP_LOAD = 2,  /* resolving direct chats to partners */
    STEP_WATCH = 3, /* WatchPresence stream */
} partner_step;

typedef struct partner {
    char *id;             /* user id, owned */
    bool known;           /* a state arrived */
    bool online;          /* any device online */
    uint32_t devices;     /* devices online */
    int64_t last_seen_ms; /* Unix ms */
    bool dirty;           /* newest state not written yet */
} partner;

struct presence_dev {
    int refs;                  /* the session's + one per callback in flight */
    msg_presence *p;           /* owner (not touched once closed) */
    presence_dev *prev, *next; /* refresh FIFO */
    bool queued;               /* in the FIFO */
    int64_t due_ms;            /* next refresh, monotonic ms */
    bool closed;               /* presence_close() ran */
    bool offline_sent;         /* presence_drain() set it offline already */
    char user[AUTH_USER_ID_MAX + 1];
    char device[MSG_MAX_DEVICE_ID + 1];
    /* partner presence */
    presence_wake_cb wake;
    void *wake_ud;
    char *authz;            /* "Bearer ..." of the stream, owned */
    partner_step step;      /* what runs */
    uint64_t *chats;        /* direct chats found, <= PRESENCE_MAX_PARTNERS */
    size_t n_chats;         /* entries */
    size_t next_chat;       /* STEP_LOAD position */
    uint64_t after;         /* ListChats cursor */
    bool list_more;         /* another page follows */
    partner *partners;      /* sorted by id once watching */
    size_t n_partners;      /* entries */
    size_t n_dirty;         /* partners with dirty set */
    rpc_ccall *cc;          /* ListChats / WatchPresence in flight */
    struct event *retry_ev; /* backoff */
    uint32_t backoff_ms;    /* next backoff */
};

static void dev_unref(presence_dev *d)
{
    if (--d->refs > 0)
        return;
    if (d->retry_ev)
        event_free(d->retry_ev);
    for (size_t i = 0; i < d->n_partners; i++)
        free(d->partners[i].id);
    free(d->partners);
    free(d->chats);
    free(d->authz);
    free(d);
}

/* --- keeping devices online ---------------------------------------------------------------- */

static void fifo_append(msg_presence *p, presence_dev *d)
{
    d->prev = p->tail;
    d->next = NULL;
    if (p->tail)
        p->tail->next = d;
    else
        p->head = d;
    p->tail = d;
    d->queued = true;
}

static void fifo_remove(msg_presence *p, presence_dev *d)
{
    if (!d->queued)
        return;
    if (d->prev)
        d->prev->next = d->next;
    else
        p->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        p->tail = d->prev;
    d->prev = d->next = NULL;
    d->queued = false;
}

static void on_heartbeat(int err, int64_t expires_at_ms, uint32_t devices, void *ud)
{
    (void)expires_at_ms;
    (void)devices;
    (void)ud;
    if (err != 0)
        log_debug("presence: heartbeat failed: %s", store_strerror(err));
}

static void on_offline(int err, const store_presence *pr, void *ud)
{
    (void)pr;
    (void)ud;
    if (err != 0)
        log_debug("presence: set offline failed: %s", store_strerror(err));
}

/* Sends one heartbeat; the callback needs nothing of |d| (it may be gone by then). */
static void heartbeat(msg_presence *p, presence_dev *d)
{
    int rv = store_heartbeat(p->st, p->w->redis, d->user, d->device, p->ttl_ms, on_heartbeat, NULL);
    if (rv != 0)
        log_debug("presence: heartbeat of %s/%s not sent: %s", d->user, d->device,
                  store_strerror(rv));
}

static void on_heartbeats(int err, const store_hb_result *r, size_t n, void *ud)
{
    (void)ud;
    if (err != 0) {
        log_debug("presence: %zu refreshes failed: %s", n, store_strerror(err));
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (r[i].err != 0)
            log_debug("presence: a refresh failed: %s", store_strerror(r[i].err));
}

/* Sends the refreshes gathered in |hb| as one script call (one Redis round trip for up to
 * STORE_HEARTBEATS_MAX devices instead of one each); the callback needs none of them. */
static void refresh_batch(msg_presence *p, const store_hb *hb, size_t n)
{
    if (n == 0)
        return;
    int rv = store_heartbeats(p->st, p->w->redis, hb, n, on_heartbeats, NULL);
    if (rv != 0)
        log_debug("presence: %zu refreshes not sent: %s", n, store_strerror(rv));
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    msg_presence *p = arg;
    int64_t now = rpc_now_ms();
    store_hb hb[STORE_HEARTBEATS_MAX];
    size_t n = 0;
    /* Re-appended devices are due an interval later, so the loop ends at the first of them.
     * The batch's strings point into the devices, which stay alive until refresh_batch()
     * returns (store_heartbeats copies its arguments into the command). */
    while (p->head != NULL && p->head->due_ms <= now) {
        presence_dev *d = p->head;
        fifo_remove(p, d);
        hb[n++] = (store_hb){.user = d->user, .device = d->device, .ttl_ms = p->ttl_ms};
        d->due_ms = now + p->interval_ms;
        fifo_append(p, d);
        if (n == STORE_HEARTBEATS_MAX) {
            refresh_batch(p, hb, n);
            n = 0;
        }
    }
    refresh_batch(p, hb, n);
}

/* --- shutdown ------------------------------------------------------------------------------ */

static void drain_call_done(drain_op *op)
{
    void (*done)(void *) = op->done;
    if (done == NULL)
        return;
    op->done = NULL;
    if (op->p != NULL)
        event_del(op->p->drain_ev);
    done(op->ud);
}

static void drain_maybe_free(drain_op *op)
{
    if (op->pending > 0 || op->done != NULL)
        return;
    if (op->p != NULL)
        op->p->drain = NULL;
    free(op);
}

static void on_drain_offline(int err, const store_presence *pr, void *ud)
{
    (void)pr;
    drain_op *op = ud;
    if (err != 0)
        log_debug("presence: set offline (drain) failed: %s", store_strerror(err));
    if (--op->pending == 0)
        drain_call_done(op);
    drain_maybe_free(op);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    msg_presence *p = arg;
    drain_op *op = p->drain;
    if (op == NULL)
        return;
    log_warn("presence: %zu offline writes unanswered after %d ms; ending the streams anyway",
             op->pending, PRESENCE_DRAIN_MAX_MS);
    drain_call_done(op);
    drain_maybe_free(op);
}

void presence_drain(msg_presence *p, void (*done)(void *user_data), void *user_data)
{
    if (p->draining) {
        done(user_data);
        return;
    }
    p->draining = true;
    drain_op *op = mem_calloc(1, sizeof(*op));
    op->p = p;
    op->done = done;
    op->ud = user_data;
    p->drain = op;
    while (p->head != NULL) {
        presence_dev *d = p->head;
        fifo_remove(p, d);
        d->offline_sent = true;
        if (store_set_offline(p->st, p->w->redis, d->user, d->device, on_drain_offline, op) == 0)
            op->pending++;
    }
    if (op->pending > 0) {
        struct timeval tv = {PRESENCE_DRAIN_MAX_MS / 1000, (PRESENCE_DRAIN_MAX_MS % 1000) * 1000};
        event_add(p->drain_ev, &tv);
        return;
    }
    drain_call_done(op);
    drain_maybe_free(op);
}

/* --- partner presence ---------------------------------------------------------------------- */

static void step_next(presence_dev *d);
static void start_list(presence_dev *d);
static void start_watch(presence_dev *d);

static void retry_later(presence_dev *d, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(d->retry_ev, &tv);
}

static void backoff(presence_dev *d)
{
    retry_later(d, d->backoff_ms);
    d->backoff_ms = d->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : d->backoff_ms * 2;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    presence_dev *d = arg;
    if (d->closed)
        return;
    switch (d->step) {
    case STEP_LIST:
        start_list(d);
        break;
    case STEP_LOAD:
        step_next(d);
        break;
    case STEP_WATCH:
        start_watch(d);
        break;
    case STEP_OFF:
        break;
    }
}

static void call_opts(presence_dev *d, rpc_mdlist *md, rpc_call_opts *opts, int64_t timeout_ms)
{
    memset(opts, 0, sizeof(*opts));
    rpc_mdlist_add_str(md, "authorization", d->authz);
    opts->metadata = md;
    opts->timeout_ms = timeout_ms;
}

static void on_list_message(rpc_ccall *call, const Chat__V1__ListChatsResponse *msg, void *ud)
{
    (void)call;
    presence_dev *d = ud;
    if (d->closed)
        return;
    for (size_t i = 0; i < msg->n_chats && d->n_chats < PRESENCE_MAX_PARTNERS; i++) {
        const Chat__V1__Chat *c = msg->chats[i]->chat;
        if (c != NULL && c->kind == CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT)
            d->chats[d->n_chats++] = c->chat_id;
    }
    if (msg->next_after_chat_id > d->after)
        d->after = msg->next_after_chat_id;
    d->list_more = msg->has_more;
}

static void on_list_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    presence_dev *d = ud;
    d->cc = NULL;
    if (!d->closed) {
        if (st->code == RPC_STATUS_UNAUTHENTICATED) {
            d->step = STEP_OFF;
        } else if (st->code != RPC_STATUS_OK) {
            log_debug("presence: ListChats for %s: %s %s", d->user, rpc_status_name(st->code),
                      st->message);
            backoff(d);
        } else if (d->list_more && d->n_chats < PRESENCE_MAX_PARTNERS) {
            start_list(d);
        } else {
            d->backoff_ms = RETRY_MIN_MS;
            d->step = STEP_LOAD;
            step_next(d);
        }
    }
    dev_unref(d);
}

static void start_list(presence_dev *d)
{
    Chat__V1__ListChatsRequest req = CHAT__V1__LIST_CHATS_REQUEST__INIT;
    req.after_chat_id = d->after;
    req.page_size = LIST_PAGE;
    rpc_mdlist md = {0};
    rpc_call_opts opts;
    call_opts(d, &md, &opts, PARTNER_RPC_TIMEOUT_MS);
    const Chat__V1__ChatsService__ListChats__RpcClientCallbacks cb = {
        .on_message = on_list_message,
        .on_close = on_list_close,
    };
    d->refs++;
    rpc_ccall *cc = NULL;
    int rv = chat__v1__chats_service__rpc_list_chats(&cc, d->p->chats, &req, &opts, &cb, d);
    rpc_mdlist_clear(&md);
    if (rv != 0) {
        dev_unref(d);
        backoff(d);
        return;
    }
    if (cc != NULL)
        d->cc = cc; /* NULL when it already ended inside the call */
}

/* Adds the member of |chat_id| other than the device's user, if the cache has the chat.
 * Returns false when the chat is not in the cache. */
static bool add_partner_of(presence_dev *d, uint64_t chat_id)
{
    member_set *ms = membership_get(d->p->w->svc->members, chat_id);
    if (ms == NULL)
        return false;
    for (size_t i = 0; i < ms->n; i++) {
        const char *u = ms->ids[i];
        if (strcmp(u, d->user) == 0)
            continue;
        bool dup = false;
        for (size_t j = 0; j < d->n_partners && !dup; j++)
            dup = strcmp(d->partners[j].id, u) == 0;
        if (!dup && d->n_partners < PRESENCE_MAX_PARTNERS)
            d->partners[d->n_partners++].id = mem_strdup(u);
    }
    member_set_unref(ms);
    return true;
}

static void on_loaded(int code, void *ud)
{
    presence_dev *d = ud;
    if (!d->closed) {
        uint64_t chat = d->chats[d->next_chat];
        if (code != RPC_STATUS_OK || !add_partner_of(d, chat))
            log_debug("presence: partner of chat %llu for %s not found: %s",
                      (unsigned long long)chat, d->user, rpc_status_name(code));
        d->next_chat++;
        step_next(d);
    }
    dev_unref(d);
}

static int cmp_partner(const void *a, const void *b)
{
    return strcmp(((const partner *)a)->id, ((const partner *)b)->id);
}

/* STEP_LOAD: resolves the direct chats one by one (cache first, else one load at a time). */
static void step_next(presence_dev *d)
{
    while (d->next_chat < d->n_chats) {
        uint64_t chat = d->chats[d->next_chat];
        if (add_partner_of(d, chat)) {
            d->next_chat++;
            continue;
        }
        d->refs++;
        if (membership_load(d->p->w->loader, chat, on_loaded, d) != 0) {
            d->refs--;
            retry_later(d, LOAD_BUSY_RETRY_MS);
        }
        return;
    }
    if (d->n_partners == 0) {
        d->step = STEP_OFF;
        return;
    }
    qsort(d->partners, d->n_partners, sizeof(*d->partners), cmp_partner);
    d->step = STEP_WATCH;
    start_watch(d);
}

static partner *find_partner(presence_dev *d, const char *id)
{
    partner key = {.id = (char *)id};
    return bsearch(&key, d->partners, d->n_partners, sizeof(*d->partners), cmp_partner);
}

static void on_watch_message(rpc_ccall *call, const Chat__V1__WatchPresenceResponse *msg, void *ud)
{
    (void)call;
    presence_dev *d = ud;
    if (d->closed)
        return;
    d->backoff_ms = RETRY_MIN_MS; /* the watch works */
    size_t before = d->n_dirty;
    for (size_t i = 0; i < msg->n_users; i++) {
        const Chat__V1__UserPresence *u = msg->users[i];
        partner *pt = u->user_id ? find_partner(d, u->user_id) : NULL;
        if (pt == NULL)
            continue;
        bool changed = !pt->known || pt->online != (bool)u->online ||
                       pt->devices != u->online_devices || pt->last_seen_ms != u->last_seen_at_ms;
        pt->known = true;
        pt->online = u->online;
        pt->devices = u->online_devices;
        pt->last_seen_ms = u->last_seen_at_ms;
        /* A snapshot is the current state of every partner: all of it is written. */
        if ((changed || msg->snapshot) && !pt->dirty) {
            pt->dirty = true;
            d->n_dirty++;
        }
    }
    if (d->n_dirty > before && d->wake)
        d->wake(d->wake_ud);
}

static void on_watch_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    presence_dev *d = ud;
    d->cc = NULL;
    if (!d->closed) {
        if (st->code == RPC_STATUS_UNAUTHENTICATED || st->code == RPC_STATUS_INVALID_ARGUMENT) {
            log_debug("presence: partner watch of %s ended for good: %s %s", d->user,
                      rpc_status_name(st->code), st->message);
            d->step = STEP_OFF;
        } else {
            log_debug("presence: partner watch of %s ended: %s %s; watching again", d->user,
                      rpc_status_name(st->code), st->message);
            backoff(d);
        }
    }
    dev_unref(d);
}

static void start_watch(presence_dev *d)
{
    char **ids = mem_alloc(d->n_partners * sizeof(*ids));
    for (size_t i = 0; i < d->n_partners; i++)
        ids[i] = d->partners[i].id;
    Chat__V1__WatchPresenceRequest req = CHAT__V1__WATCH_PRESENCE_REQUEST__INIT;
    req.n_user_ids = d->n_partners;
    req.user_ids = ids;
    rpc_mdlist md = {0};
    rpc_call_opts opts;
    call_opts(d, &md, &opts, 0);
    const Chat__V1__PresenceService__WatchPresence__RpcClientCallbacks cb = {
        .on_message = on_watch_message,
        .on_close = on_watch_close,
    };
    d->refs++;
    rpc_ccall *cc = NULL;
    int rv =
        chat__v1__presence_service__rpc_watch_presence(&cc, d->p->presence, &req, &opts, &cb, d);
    rpc_mdlist_clear(&md);
    free(ids);
    if (rv != 0) {
        dev_unref(d);
        backoff(d);
        return;
    }
    if (cc != NULL)
        d->cc = cc;
}

/* --- public -------------------------------------------------------------------------------- */

int presence_new(msg_presence **out, msg_worker *w)
{
    const settings *cfg = &w->svc->cfg;
    msg_presence *p = mem_calloc(1, sizeof(*p));
    p->w = w;
    store_config scfg;
    store_config_init(&scfg);
    store_new(&p->st, &scfg);
    p->ttl_ms = cfg->presence_ttl_ms;
    p->interval_ms = cfg->presence_ttl_ms / 3;
    if (cfg->chats_addr != NULL && cfg->presence_addr != NULL) {
        int rv = rpc_channel_new(&p->chats, w->base, cfg->chats_addr, NULL);
        if (rv == 0)
            rv = rpc_channel_new(&p->presence, w->base, cfg->presence_addr, NULL);
        if (rv != 0) {
            log_error("presence-addr '%s': %s", cfg->presence_addr, rpc_strerror(rv));
            if (p->chats)
                rpc_channel_free(p->chats);
            store_free(p->st);
            free(p);
            return rv;
        }
    }
    p->drain_ev = event_new(w->base, -1, 0, on_drain_timeout, p);
    p->tick = event_new(w->base, -1, EV_PERSIST, on_tick, p);
    struct timeval tv = {PRESENCE_TICK_MS / 1000, (PRESENCE_TICK_MS % 1000) * 1000};
    event_add(p->tick, &tv);
    *out = p;
    return 0;
}

void presence_free(msg_presence *p)
{
    if (p == NULL)
        return;
    event_free(p->tick);
    event_free(p->drain_ev);
    if (p->drain != NULL) { /* replies still due free it */
        p->drain->p = NULL;
        p->drain->done = NULL;
    }
    while (p->head != NULL)
        fifo_remove(p, p->head); /* sessions close first; this is a backstop */
    if (p->presence)
        rpc_channel_free(p->presence);
    if (p->chats)
        rpc_channel_free(p->chats);
    store_free(p->st);
    free(p);
}

presence_dev *presence_open(msg_presence *p, const char *user, const char *device,
                            bool watch_partners, const char *authorization, presence_wake_cb wake,
                            void *user_data)
{
    presence_dev *d = mem_calloc(1, sizeof(*d));
    d->refs = 1;
    d->p = p;
    snprintf(d->user, sizeof(d->user), "%s", user);
    snprintf(d->device, sizeof(d->device), "%s", device);
    if (p->draining) {
        d->offline_sent = true; /* shutting down: not worth a heartbeat */
    } else {
        heartbeat(p, d);
        d->due_ms = rpc_now_ms() + p->interval_ms;
        fifo_append(p, d);
    }
    if (watch_partners && p->chats != NULL && authorization != NULL) {
        d->wake = wake;
        d->wake_ud = user_data;
        d->authz = mem_strdup(authorization);
        d->chats = mem_alloc(PRESENCE_MAX_PARTNERS * sizeof(*d->chats));
        d->partners = mem_calloc(PRESENCE_MAX_PARTNERS, sizeof(*d->partners));
        d->retry_ev = event_new(p->w->base, -1, 0, on_retry, d);
        d->backoff_ms = RETRY_MIN_MS;
        d->step = STEP_LIST;
        start_list(d);
    }
    return d;
}

void presence_close(presence_dev *d)
{
    if (d == NULL || d->closed)
        return;
    msg_presence *p = d->p;
    d->closed = true;
    d->wake = NULL;
    fifo_remove(p, d);
    if (!d->offline_sent && !worker_device_claimed(p->w, d->user, d->device)) {
        int rv = store_set_offline(p->st, p->w->redis, d->user, d->device, on_offline, NULL);
        if (rv != 0)
            log_debug("presence: offline of %s/%s not sent: %s", d->user, d->device,
                      store_strerror(rv));
    }
    if (d->retry_ev)
        event_del(d->retry_ev);
    if (d->cc != NULL) {
        rpc_ccall *cc = d->cc;
        d->cc = NULL;
        rpc_ccall_cancel(cc); /* its on_close drops the reference */
    }
    dev_unref(d);
}

int presence_write(presence_dev *d, rpc_call *call)
{
    if (d == NULL || d->n_dirty == 0)
        return 0;
    for (size_t i = 0; i < d->n_partners && d->n_dirty > 0; i++) {
        partner *pt = &d->partners[i];
        if (!pt->dirty)
            continue;
        Chat__V1__UserPresence up = CHAT__V1__USER_PRESENCE__INIT;
        up.user_id = pt->id;
        up.online = pt->online;
        up.online_devices = pt->devices;
        up.last_seen_at_ms = pt->last_seen_ms;
        Chat__V1__ConnectResponse resp = CHAT__V1__CONNECT_RESPONSE__INIT;
        resp.frame_case = CHAT__V1__CONNECT_RESPONSE__FRAME_PRESENCE;
        resp.presence = &up;
        int rv = rpc_call_send(call, &resp.base);
        if (rv != 0)
            return rv;
        pt->dirty = false;
        d->n_dirty--;
    }
    return 0;
}
