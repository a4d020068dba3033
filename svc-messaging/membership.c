/* membership.c: the membership cache and its loader (see membership.h). */
#include "membership.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "chat/v1/chats.rpc-c.h"
#include "log.h"
#include "mem.h"
#include "rpc_client.h"
#include "stats.h"
#include "table.h"

#define SNAPSHOT_TS INT64_MIN /* what a GetChat snapshot's verdicts are stamped with */
#define SERVICE_SUB "service:svc-messaging"
#define TOKEN_TTL_S 3600
#define LOAD_TIMEOUT_MS 5000

/* --- member sets ----------------------------------------------------------------------------- */

void member_set_ref(member_set *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void member_set_unref(member_set *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
        free(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

bool member_set_has(const member_set *s, const char *user)
{
    return s != NULL && bsearch(&user, s->ids, s->n, sizeof(char *), cmp_str) != NULL;
}

/* --- cache ----------------------------------------------------------------------------------- */

typedef struct mrec {
    char *user;   /* owned */
    int64_t ts;   /* produced_at_ms of the deciding event, SNAPSHOT_TS for a snapshot */
    uint64_t eid; /* event_id tie-break */
    bool present; /* member or not */
} mrec;

typedef struct mentry {
    bool complete;   /* the whole member list is known */
    mrec *recs;      /* sorted by user */
    size_t n, cap;   /* recs used / allocated */
    member_set *set; /* current members (complete entries only), one reference */
} mentry;

struct membership {
    pthread_rwlock_t lock;
    u64tab chats; /* chat_id -> mentry */
    size_t max_chats;
    size_t evict_cursor;
};

int membership_new(membership **out, size_t max_chats)
{
    membership *m = mem_calloc(1, sizeof(*m));
    pthread_rwlock_init(&m->lock, NULL);
    u64tab_init(&m->chats);
    m->max_chats = max_chats ? max_chats : 100000;
    *out = m;
    return 0;
}

static void entry_free(mentry *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->recs[i].user);
    free(e->recs);
    member_set_unref(e->set);
    free(e);
}

void membership_free(membership *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->chats.n_buckets; i++)
        for (u64tab_node *n = m->chats.buckets[i]; n; n = n->next)
            entry_free(n->value);
    u64tab_clear(&m->chats);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

int membership_check(membership *m, uint64_t chat_id, const char *user)
{
    int r = MEMBERSHIP_UNKNOWN;
    pthread_rwlock_rdlock(&m->lock);
    mentry *e = u64tab_get(&m->chats, chat_id);
    if (e != NULL && e->complete)
        r = member_set_has(e->set, user) ? MEMBERSHIP_MEMBER : MEMBERSHIP_NOT_MEMBER;
    pthread_rwlock_unlock(&m->lock);
    return r;
}

member_set *membership_get(membership *m, uint64_t chat_id)
{
    member_set *s = NULL;
    pthread_rwlock_rdlock(&m->lock);
    mentry *e = u64tab_get(&m->chats, chat_id);
    if (e != NULL && e->complete && e->set != NULL) {
        s = e->set;
        member_set_ref(s);
    }
    pthread_rwlock_unlock(&m->lock);
    return s;
}

/* Under the write lock. */
static mentry *entry_get(membership *m, uint64_t chat_id)
{
    mentry *e = u64tab_get(&m->chats, chat_id);
    if (e != NULL)
        return e;
    while (m->chats.n >= m->max_chats) {
        uint64_t victim;
        if (!u64tab_any(&m->chats, &m->evict_cursor, &victim))
            break;
        entry_free(u64tab_del(&m->chats, victim));
    }
    e = mem_calloc(1, sizeof(*e));
    u64tab_put(&m->chats, chat_id, e);
    return e;
}

static size_t rec_find(const mentry *e, const char *user, bool *found)
{
    size_t lo = 0, hi = e->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(e->recs[mid].user, user);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Sets the verdict for |user| if (ts, eid) is newer than the one stored. */
static void rec_apply(mentry *e, const char *user, int64_t ts, uint64_t eid, bool present)
{
    bool found;
    size_t i = rec_find(e, user, &found);
    if (found) {
        mrec *r = &e->recs[i];
        if (ts > r->ts || (ts == r->ts && eid > r->eid)) {
            r->ts = ts;
            r->eid = eid;
            r->present = present;
        }
        return;
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->recs = mem_realloc(e->recs, e->cap * sizeof(*e->recs));
    }
    memmove(&e->recs[i + 1], &e->recs[i], (e->n - i) * sizeof(*e->recs));
    e->recs[i] = (mrec){mem_strdup(user), ts, eid, present};
    e->n++;
}

static void entry_rebuild(mentry *e)
{
    member_set_unref(e->set);
    e->set = NULL;
    if (!e->complete)
        return;
    size_t n = 0, bytes = 0;
    for (size_t i = 0; i < e->n; i++)
        if (e->recs[i].present) {
            n++;
            bytes += strlen(e->recs[i].user) + 1;
        }
    member_set *s = mem_alloc(sizeof(*s) + n * sizeof(char *) + bytes);
    atomic_init(&s->refs, 1);
    s->n = n;
    s->ids = (char **)(s + 1);
    char *p = (char *)(s->ids + n);
    size_t k = 0;
    for (size_t i = 0; i < e->n; i++) /* recs are sorted, so the set is too */
        if (e->recs[i].present) {
            size_t len = strlen(e->recs[i].user) + 1;
            memcpy(p, e->recs[i].user, len);
            s->ids[k++] = p;
            p += len;
        }
    e->set = s;
}

void membership_apply_event(membership *m, const Chat__V1__ChatEvent *ev)
{
    char **ids;
    size_t n;
    bool present = true, complete = false;
    switch (ev->event_case) {
    case CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED:
        if (ev->chat_created == NULL)
            return;
        ids = ev->chat_created->member_ids;
        n = ev->chat_created->n_member_ids;
        complete = true;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED:
        if (ev->members_added == NULL)
            return;
        ids = ev->members_added->user_ids;
        n = ev->members_added->n_user_ids;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED:
        if (ev->members_removed == NULL)
            return;
        ids = ev->members_removed->user_ids;
        n = ev->members_removed->n_user_ids;
        present = false;
        break;
    default:
        return;
    }
    pthread_rwlock_wrlock(&m->lock);
    mentry *e = entry_get(m, ev->chat_id);
    for (size_t i = 0; i < n; i++)
        rec_apply(e, ids[i], ev->produced_at_ms, ev->event_id, present);
    if (complete)
        e->complete = true;
    entry_rebuild(e);
    pthread_rwlock_unlock(&m->lock);
}

void membership_apply_snapshot(membership *m, const Chat__V1__Chat *chat)
{
    pthread_rwlock_wrlock(&m->lock);
    mentry *e = entry_get(m, chat->chat_id);
    size_t k = 0; /* drop an older snapshot's verdicts; events' stay */
    for (size_t i = 0; i < e->n; i++) {
        if (e->recs[i].ts == SNAPSHOT_TS)
            free(e->recs[i].user);
        else
            e->recs[k++] = e->recs[i];
    }
    e->n = k;
    for (size_t i = 0; i < chat->n_member_ids; i++)
        rec_apply(e, chat->member_ids[i], SNAPSHOT_TS, 0, true);
    e->complete = true;
    entry_rebuild(e);
    pthread_rwlock_unlock(&m->lock);
}

/* --- loader ---------------------------------------------------------------------------------- */

typedef struct waiter {
    membership_load_cb cb;
    void *ud;
} waiter;

typedef struct load {
    membership_loader *l;
    uint64_t chat_id;
    waiter *w;             /* waiters */
    size_t n, cap;         /* used / allocated */
    int code;              /* result once closed */
    bool got_chat;         /* a GetChatResponse with a chat arrived */
    struct event *done_ev; /* runs the waiters on a later loop turn */
} load;

struct membership_loader {
    struct event_base *base;
    membership *m;
    rpc_channel *ch;  /* NULL without svc-chats */
    char *secret;     /* for minting */
    char *token;      /* "Bearer ..." */
    int64_t token_at; /* minted at, Unix s */
    u64tab loads;     /* chat_id -> load */
    uint32_t max_loads;
    bool closing;
};

int membership_loader_new(membership_loader **out, struct event_base *base, membership *m,
                          const char *chats_addr, const char *secret, uint32_t max_loads)
{
    membership_loader *l = mem_calloc(1, sizeof(*l));
    l->base = base;
    l->m = m;
    l->secret = mem_strdup(secret);
    l->max_loads = max_loads;
    u64tab_init(&l->loads);
    if (chats_addr != NULL) {
        int rv = rpc_channel_new(&l->ch, base, chats_addr, NULL);
        if (rv != 0) {
            log_error("chats-addr '%s': %s", chats_addr, rpc_strerror(rv));
            u64tab_clear(&l->loads);
            free(l->secret);
            free(l);
            return rv;
        }
    }
    *out = l;
    return 0;
}

static void load_finish(load *ld)
{
    membership_loader *l = ld->l;
    u64tab_del(&l->loads, ld->chat_id);
    event_free(ld->done_ev);
    if (ld->code != 0)
        metrics_counter_inc(stats.membership_load_errors);
    for (size_t i = 0; i < ld->n; i++)
        ld->w[i].cb(ld->code, ld->w[i].ud);
    free(ld->w);
    free(ld);
}

static void on_load_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    load_finish(arg);
}

void membership_loader_free(membership_loader *l)
{
    if (l == NULL)
        return;
    l->closing = true;
    if (l->ch != NULL)
        rpc_channel_free(l->ch); /* on_close of each call: code CANCELLED */
    uint64_t key;
    size_t cursor = 0;
    while (u64tab_any(&l->loads, &cursor, &key)) {
        load *ld = u64tab_get(&l->loads, key);
        ld->code = 1; /* CANCELLED */
        load_finish(ld);
        cursor = 0;
    }
    u64tab_clear(&l->loads);
    free(l->token);
    free(l->secret);
    free(l);
}

bool membership_loader_remote(const membership_loader *l)
{
    return l->ch != NULL;
}

static const char *loader_token(membership_loader *l)
{
    int64_t now = time(NULL);
    if (l->token == NULL || now - l->token_at > TOKEN_TTL_S / 2) {
        char *tok = NULL;
        int rv = auth_token_mint(l->secret, strlen(l->secret), SERVICE_SUB, TOKEN_TTL_S, &tok);
        if (rv != 0) {
            log_error("membership: cannot mint a service token: %s", auth_strerror(rv));
            return NULL;
        }
        free(l->token);
        size_t n = strlen(tok) + 8;
        l->token = mem_alloc(n);
        snprintf(l->token, n, "Bearer %s", tok);
        free(tok);
        l->token_at = now;
    }
    return l->token;
}

static void on_getchat_message(rpc_ccall *call, const Chat__V1__GetChatResponse *msg, void *ud)
{
    (void)call;
    load *ld = ud;
    if (msg->chat != NULL && msg->chat->chat_id == ld->chat_id) {
        membership_apply_snapshot(ld->l->m, msg->chat);
        ld->got_chat = true;
    }
}

static void on_getchat_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    load *ld = ud;
    ld->code = st->code;
    if (st->code == 0 && !ld->got_chat)
        ld->code = RPC_STATUS_INTERNAL;
    if (st->code != 0 && st->code != RPC_STATUS_NOT_FOUND)
        log_warn("membership: GetChat %llu: %s %s", (unsigned long long)ld->chat_id,
                 rpc_status_name(st->code), st->message);
    if (!ld->l->closing)
        event_active(ld->done_ev, EV_TIMEOUT, 0);
}

int membership_load(membership_loader *l, uint64_t chat_id, membership_load_cb cb, void *user_data)
{
    if (l->closing)
        return -1;
    load *ld = u64tab_get(&l->loads, chat_id);
    if (ld == NULL) {
        if (l->loads.n >= l->max_loads)
            return -1;
        ld = mem_calloc(1, sizeof(*ld));
        ld->l = l;
        ld->chat_id = chat_id;
        ld->done_ev = event_new(l->base, -1, 0, on_load_done, ld);
        u64tab_put(&l->loads, chat_id, ld);
        metrics_counter_inc(stats.membership_loads);
        const char *tok = l->ch != NULL ? loader_token(l) : NULL;
        if (tok == NULL) {
            ld->code = RPC_STATUS_NOT_FOUND; /* no svc-chats: the log is all we know */
            event_active(ld->done_ev, EV_TIMEOUT, 0);
        } else {
            rpc_mdlist md = {0};
            rpc_mdlist_add_str(&md, "authorization", tok);
            rpc_call_opts opts = {.timeout_ms = LOAD_TIMEOUT_MS, .metadata = &md};
            Chat__V1__GetChatRequest req = CHAT__V1__GET_CHAT_REQUEST__INIT;
            req.chat_id = chat_id;
            Chat__V1__ChatsService__GetChat__RpcClientCallbacks cbs = {
                .on_message = on_getchat_message,
                .on_close = on_getchat_close,
            };
            int rv = chat__v1__chats_service__rpc_get_chat(NULL, l->ch, &req, &opts, &cbs, ld);
            rpc_mdlist_clear(&md);
            if (rv != 0) {
                ld->code = RPC_STATUS_UNAVAILABLE;
                event_active(ld->done_ev, EV_TIMEOUT, 0);
            }
        }
    }
    if (ld->n == ld->cap) {
        ld->cap = ld->cap ? ld->cap * 2 : 4;
        ld->w = mem_realloc(ld->w, ld->cap * sizeof(*ld->w));
    }
    ld->w[ld->n++] = (waiter){cb, user_data};
    return 0;
}
