/* api.c: chat.v1.ChatsService handlers (see api.h). */
#include "api.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "chat/v1/chats.rpc-c.h"
#include "chat/v1/events.pb-c.h"
#include "hash.h"
#include "log.h"
#include "mem.h"
#include "pagetoken.h"
#include "stats.h"
#include "store.h"
#include "validate.h"

#define PAGE_MAX 200
#define HISTORY_PAGE_DEFAULT 50
#define LIST_PAGE_DEFAULT 50
#define PULL_PAGE_DEFAULT 100
#define BUCKETS_MAX 256
#define CREATE_IDS_MAX 1000 /* member_ids entries read at most (duplicates included) */
#define REQUEST_HEADER "chat-request-id"

typedef struct op op;
typedef void (*op_step)(op *o, PGresult *res);

/* One call in progress. Every asynchronous step holds a reference. */
struct op {
    int refs;
    rpc_call *call;
    chats_worker *w;
    const chats_service *svc;
    const char *method;
    auth_identity id;
    bool service;               /* a service token: reads any chat */
    const void *req;            /* the decoded request; valid while the call is not done */
    op_step step;               /* what the pending query's result goes to */
    waiter *wt;                 /* read-your-writes wait (holds a reference) */
    struct event *timer;        /* write-timeout-ms when the client set no deadline */
    void (*after_apply)(op *o); /* continuation once the write is applied */
    uint64_t chat_id;
    char **users; /* AddMembers/RemoveMembers: the users changed */
    size_t nusers;
    uint32_t page;
    char gen[32]; /* cache generation read before a cold history read ("" = none) */
};

/* --- op lifetime -------------------------------------------------------------------------- */

static void op_ref(op *o)
{
    o->refs++;
}

static void free_users(op *o)
{
    for (size_t i = 0; i < o->nusers; i++)
        free(o->users[i]);
    free(o->users);
    o->users = NULL;
    o->nusers = 0;
}

/* Drops |n| references at once (n may be 0). */
static void op_unref_n(op *o, int n)
{
    o->refs -= n;
    if (o->refs > 0)
        return;
    if (o->wt != NULL)
        waiter_free(o->wt);
    if (o->timer != NULL)
        event_free(o->timer);
    free_users(o);
    rpc_call_unref(o->call);
    free(o);
}

static void op_unref(op *o)
{
    op_unref_n(o, 1);
}

static void op_finish_status(op *o, int code, const char *msg)
{
    if (rpc_call_is_done(o->call))
        return;
    stats_rpc(o->method, code);
    rpc_call_finish(o->call, code, msg);
}

__attribute__((format(printf, 3, 4))) static void op_fail(op *o, int code, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    op_finish_status(o, code, buf);
}

static void op_reply(op *o, const ProtobufCMessage *msg)
{
    if (rpc_call_is_done(o->call))
        return;
    stats_rpc(o->method, RPC_STATUS_OK);
    rpc_call_reply(o->call, msg);
}

/* Drops the read-your-writes wait; returns the number of references it held (0 or 1), which
 * the caller drops (with its own, in one op_unref_n: o stays valid until then). */
static int take_wait(op *o)
{
    if (o->timer != NULL)
        event_del(o->timer);
    if (o->wt == NULL)
        return 0;
    waiter_free(o->wt);
    o->wt = NULL;
    return 1;
}

static void on_cancel(rpc_call *call, rpc_cancel_reason reason, void *data)
{
    (void)call;
    (void)reason;
    op *o = data;
    stats_rpc(o->method,
              reason == RPC_CANCEL_DEADLINE ? RPC_STATUS_DEADLINE_EXCEEDED : RPC_STATUS_CANCELLED);
    op_unref_n(o, take_wait(o));
}

/* Authenticates and creates the op (one reference: the handler's). NULL when finished. */
static op *op_new(rpc_call *call, void *user_data, const void *req, const char *method)
{
    chats_service *svc = user_data;
    op *o = mem_calloc(1, sizeof(*o));
    o->refs = 1;
    o->call = call;
    rpc_call_ref(call);
    o->svc = svc;
    o->method = method;
    o->req = req;
    o->w = rpc_call_worker_data(call);
    int rv = auth_verify_bearer(svc->auth, rpc_call_metadata_get(call, "authorization"), &o->id);
    if (rv != 0) {
        op_finish_status(o, RPC_STATUS_UNAUTHENTICATED, auth_strerror(rv));
        op_unref(o);
        return NULL;
    }
    if (o->w == NULL) {
        op_finish_status(o, RPC_STATUS_UNAVAILABLE, "chats store not configured on this worker");
        op_unref(o);
        return NULL;
    }
    o->service = strncmp(o->id.user_id, API_SERVICE_PREFIX, strlen(API_SERVICE_PREFIX)) == 0;
    rpc_call_callbacks cbs = {.on_cancel = on_cancel};
    rpc_call_set_callbacks(call, &cbs, o);
    return o;
}

/* The user a read checks membership of: NULL (any chat) for service identities. */
static const char *reader(const op *o)
{
    return o->service ? NULL : o->id.user_id;
}

/* --- queries ------------------------------------------------------------------------------ */

static void on_pg(pg_pool *pool, PGresult *res, int err, void *ud)
{
    (void)pool;
    op *o = ud;
    if (!rpc_call_is_done(o->call)) {
        const char *why;
        if (err != 0) {
            op_fail(o, RPC_STATUS_UNAVAILABLE, "chats store unavailable: %s", pg_strerror(err));
        } else if ((why = store_error(res)) != NULL) {
            log_warn("%s: query failed: %s", o->method, why);
            op_fail(o, RPC_STATUS_INTERNAL, "chats store query failed");
        } else {
            o->step(o, res);
        }
    }
    op_unref(o);
}

/* Call with the return value of a store_* call that was given on_pg and |o|. */
static void queried(op *o, op_step step, int rv)
{
    (void)step;
    if (rv != 0) {
        op_unref(o);
        op_fail(o, RPC_STATUS_UNAVAILABLE, "chats store busy: %s", pg_strerror(rv));
    }
}

#define QUERY(o, stepfn, callexpr)                                                                 \
    do {                                                                                           \
        (o)->step = (stepfn);                                                                      \
        op_ref(o);                                                                                 \
        queried((o), (stepfn), (callexpr));                                                        \
    } while (0)

/* Checks the access columns of a chat-scoped result; finishes and returns false on refusal. */
static bool access_ok(op *o, const PGresult *res)
{
    if (PQntuples(res) == 0) {
        op_fail(o, RPC_STATUS_NOT_FOUND, "no chat %" PRIu64, o->chat_id);
        return false;
    }
    if (!store_bool(res, 0, 0)) {
        op_fail(o, RPC_STATUS_PERMISSION_DENIED, "not a member of chat %" PRIu64, o->chat_id);
        return false;
    }
    return true;
}

/* Splits a space-separated member list into owned strings. */
static char **split_members(const char *s, size_t *n)
{
    *n = 0;
    if (s == NULL || *s == '\0')
        return NULL;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ' ';
    char **out = mem_calloc(cap, sizeof(*out));
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        out[(*n)++] = mem_strndup(p, l);
        p += l;
        if (*p == ' ')
            p++;
    }
    return out;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static bool in_list(char **l, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i], s) == 0)
            return true;
    return false;
}

/* --- GetChat ------------------------------------------------------------------------------ */

/* Fills |c| (+ member list, owned by the caller via *members) from a store_get_chat row. */
static void chat_from_row(const PGresult *res, uint64_t chat_id, Chat__V1__Chat *c, char ***members,
                          size_t *n)
{
    store_chat(res, 0, 1, chat_id, c);
    *members = split_members(store_is_null(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6), n);
    c->n_member_ids = *n;
    c->member_ids = *members;
}

static void get_chat_done(op *o, PGresult *res)
{
    if (!access_ok(o, res))
        return;
    Chat__V1__Chat c;
    char **members;
    size_t n;
    chat_from_row(res, o->chat_id, &c, &members, &n);
    Chat__V1__GetChatResponse resp = CHAT__V1__GET_CHAT_RESPONSE__INIT;
    resp.chat = &c;
    resp.newest_message_id = store_u64(res, 0, 7);
    op_reply(o, &resp.base);
    free_list(members, n);
}

static void get_chat(rpc_call *call, const Chat__V1__GetChatRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "GetChat");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    QUERY(o, get_chat_done, store_get_chat(o->w->pg, req->chat_id, reader(o), on_pg, o));
    op_unref(o);
}

/* --- ListChats ---------------------------------------------------------------------------- */

static void list_chats_done(op *o, PGresult *res)
{
    int rows = PQntuples(res);
    size_t n = rows > (int)o->page ? o->page : (size_t)rows;
    Chat__V1__ChatSummary *sums = mem_calloc(n + 1, sizeof(*sums));
    Chat__V1__ChatSummary **ptrs = mem_calloc(n + 1, sizeof(*ptrs));
    Chat__V1__Chat *chats = mem_calloc(n + 1, sizeof(*chats));
    for (size_t i = 0; i < n; i++) {
        chat__v1__chat_summary__init(&sums[i]);
        store_chat(res, (int)i, 1, store_u64(res, (int)i, 0), &chats[i]);
        sums[i].chat = &chats[i];
        sums[i].newest_message_id = store_u64(res, (int)i, 6);
        ptrs[i] = &sums[i];
    }
    Chat__V1__ListChatsResponse resp = CHAT__V1__LIST_CHATS_RESPONSE__INIT;
    resp.n_chats = n;
    resp.chats = ptrs;
    resp.next_after_chat_id = n > 0 ? chats[n - 1].chat_id : 0;
    resp.has_more = (size_t)rows > n;
    op_reply(o, &resp.base);
    free(sums);
    free(ptrs);
    free(chats);
}

static void list_chats(rpc_call *call, const Chat__V1__ListChatsRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "ListChats");
    if (o == NULL)
        return;
    if (req->page_size > PAGE_MAX) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "page_size %u is over %d", req->page_size,
                PAGE_MAX);
    } else {
        o->page = req->page_size ? req->page_size : LIST_PAGE_DEFAULT;
        QUERY(o, list_chats_done,
              store_list_chats(o->w->pg, o->id.user_id, req->after_chat_id, o->page + 1, on_pg, o));
    }
    op_unref(o);
}

/* --- GetHistory --------------------------------------------------------------------------- */

static void history_done(op *o, PGresult *res)
{
    if (!access_ok(o, res))
        return;
    const Chat__V1__GetHistoryRequest *req = o->req;
    bool forward = req->direction == CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_FORWARD;
    int rows = PQntuples(res);
    size_t have = 0;
    for (int r = 0; r < rows; r++)
        have += !store_is_null(res, r, 1);
    size_t n = have > o->page ? o->page : have;
    size_t first = forward ? 0 : have - n; /* backward: drop the oldest extra row */
    Chat__V1__Message *msgs = mem_calloc(n + 1, sizeof(*msgs));
    Chat__V1__Message **ptrs = mem_calloc(n + 1, sizeof(*ptrs));
    for (size_t i = 0; i < n; i++) {
        store_message(res, (int)(first + i), 1, &msgs[i]);
        ptrs[i] = &msgs[i];
    }
    Chat__V1__GetHistoryResponse resp = CHAT__V1__GET_HISTORY_RESPONSE__INIT;
    resp.n_messages = n;
    resp.messages = ptrs;
    resp.has_more = have > n;
    op_reply(o, &resp.base);
    if (o->gen[0] != '\0') {
        /* A cold newest page: warm the cache with every row read, the extra older one
         * included, so that the cache can tell has_more for this page size itself. */
        Chat__V1__Message *all = mem_calloc(have + 1, sizeof(*all));
        Chat__V1__Message **allp = mem_calloc(have + 1, sizeof(*allp));
        size_t k = 0;
        for (int r = 0; r < rows; r++) {
            if (store_is_null(res, r, 1))
                continue;
            store_message(res, r, 1, &all[k]);
            allp[k] = &all[k];
            k++;
        }
        cache_fill(o->w->rc, o->chat_id, o->gen, allp, k, !resp.has_more);
        free(all);
        free(allp);
    }
    free(msgs);
    free(ptrs);
}

static void history_query(op *o)
{
    const Chat__V1__GetHistoryRequest *req = o->req;
    bool forward = req->direction == CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_FORWARD;
    QUERY(o, history_done,
          store_history(o->w->pg, o->chat_id, reader(o), req->anchor_message_id, forward,
                        o->page + 1, on_pg, o));
}

static void history_gen(const char *gen, void *ud)
{
    op *o = ud;
    if (!rpc_call_is_done(o->call)) {
        if (gen != NULL)
            snprintf(o->gen, sizeof(o->gen), "%s", gen);
        history_query(o);
    }
    op_unref(o);
}

static void history_cached(bool hit, Chat__V1__Message **msgs, size_t n, bool has_more, void *ud)
{
    op *o = ud;
    if (!rpc_call_is_done(o->call)) {
        if (hit) {
            metrics_counter_inc(stats.cache_hit);
            log_debug("GetHistory chat=%" PRIu64 ": newest page from the cache", o->chat_id);
            Chat__V1__GetHistoryResponse resp = CHAT__V1__GET_HISTORY_RESPONSE__INIT;
            resp.n_messages = n;
            resp.messages = msgs;
            resp.has_more = has_more;
            op_reply(o, &resp.base);
        } else {
            metrics_counter_inc(stats.cache_miss);
            log_debug("GetHistory chat=%" PRIu64 ": newest page from PostgreSQL", o->chat_id);
            op_ref(o);
            cache_gen(o->w->rc, o->chat_id, history_gen, o);
        }
    }
    op_unref(o);
}

static void get_history(rpc_call *call, const Chat__V1__GetHistoryRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "GetHistory");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    if (req->page_size > PAGE_MAX) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "page_size %u is over %d", req->page_size,
                PAGE_MAX);
    } else if ((unsigned)req->direction > CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_FORWARD) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "unknown direction %d", (int)req->direction);
    } else {
        o->page = req->page_size ? req->page_size : HISTORY_PAGE_DEFAULT;
        bool newest = req->anchor_message_id == 0 &&
                      req->direction != CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_FORWARD;
        if (newest) {
            op_ref(o);
            cache_read(o->w->rc, o->chat_id, reader(o), o->page, history_cached, o);
        } else {
            history_query(o);
        }
    }
    op_unref(o);
}

/* --- GetRangeHash ------------------------------------------------------------------------- */

static void range_done(op *o, PGresult *res)
{
    if (!access_ok(o, res))
        return;
    const Chat__V1__GetRangeHashRequest *req = o->req;
    uint32_t nb = req->bucket_count;
    size_t slots = nb ? nb : 1;
    Chat__V1__RangeHash *b = mem_calloc(slots, sizeof(*b));
    Chat__V1__RangeHash **ptrs = mem_calloc(slots, sizeof(*ptrs));
    for (size_t i = 0; i < slots; i++) {
        chat__v1__range_hash__init(&b[i]);
        ptrs[i] = &b[i];
        if (nb)
            hash_bucket_bounds(req->from_message_id, req->to_message_id, nb, (uint32_t)i,
                               &b[i].from_message_id, &b[i].to_message_id);
    }
    Chat__V1__RangeHash total = CHAT__V1__RANGE_HASH__INIT;
    total.from_message_id = req->from_message_id;
    total.to_message_id = req->to_message_id;
    for (int r = 0; r < PQntuples(res); r++) {
        if (store_is_null(res, r, 1))
            continue;
        int64_t idx = store_i64(res, r, 1) - 1;
        uint64_t cnt = store_u64(res, r, 2);
        uint64_t h = (uint64_t)store_i64(res, r, 3);
        total.count += cnt;
        total.hash ^= h;
        if (nb && idx >= 0 && idx < (int64_t)nb) {
            b[idx].count += cnt;
            b[idx].hash ^= h;
        }
    }
    Chat__V1__GetRangeHashResponse resp = CHAT__V1__GET_RANGE_HASH_RESPONSE__INIT;
    resp.total = &total;
    resp.n_buckets = nb;
    resp.buckets = nb ? ptrs : NULL;
    op_reply(o, &resp.base);
    free(b);
    free(ptrs);
}

static void get_range_hash(rpc_call *call, const Chat__V1__GetRangeHashRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "GetRangeHash");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    if (req->from_message_id >= req->to_message_id) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "from_message_id must be < to_message_id");
    } else if (req->bucket_count > BUCKETS_MAX ||
               req->bucket_count > req->to_message_id - req->from_message_id) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT,
                "bucket_count %u is over %d or over to_message_id - from_message_id",
                req->bucket_count, BUCKETS_MAX);
    } else {
        QUERY(o, range_done,
              store_range_hash(o->w->pg, o->chat_id, reader(o), req->from_message_id,
                               req->to_message_id, req->bucket_count, on_pg, o));
    }
    op_unref(o);
}

/* --- PullMessages ------------------------------------------------------------------------- */

static void pull_done(op *o, PGresult *res)
{
    const Chat__V1__PullMessagesRequest *req = o->req;
    int rows = PQntuples(res);
    uint64_t after = rows > 0 ? store_u64(res, 0, 0) : 0;
    size_t have = 0;
    for (int r = 0; r < rows; r++)
        have += !store_is_null(res, r, 1);
    size_t n = have > o->page ? o->page : have;
    Chat__V1__Message *msgs = mem_calloc(n + 1, sizeof(*msgs));
    Chat__V1__Message **ptrs = mem_calloc(n + 1, sizeof(*ptrs));
    for (size_t i = 0; i < n; i++) {
        store_message(res, (int)i, 1, &msgs[i]);
        ptrs[i] = &msgs[i];
    }
    char token[PAGETOKEN_MAX];
    pagetoken_make(o->svc->cfg.jwt_secret, o->id.user_id, req->device_id,
                   n > 0 ? msgs[n - 1].message_id : after, token);
    Chat__V1__PullMessagesResponse resp = CHAT__V1__PULL_MESSAGES_RESPONSE__INIT;
    resp.n_messages = n;
    resp.messages = ptrs;
    resp.next_page_token = token;
    resp.has_more = have > n;
    op_reply(o, &resp.base);
    free(msgs);
    free(ptrs);
}

static void pull_messages(rpc_call *call, const Chat__V1__PullMessagesRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "PullMessages");
    if (o == NULL)
        return;
    uint64_t pos = req->start_after_message_id;
    bool ack = req->page_token != NULL && req->page_token[0] != '\0';
    if (!validate_device_id(req->device_id)) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "device_id must be 1..%d bytes of [A-Za-z0-9._-]",
                VALIDATE_DEVICE_ID_MAX);
    } else if (req->page_size > PAGE_MAX) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "page_size %u is over %d", req->page_size,
                PAGE_MAX);
    } else if (ack && pagetoken_parse(o->svc->cfg.jwt_secret, o->id.user_id, req->device_id,
                                      req->page_token, &pos) != 0) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT,
                "page_token was not issued for this user and device");
    } else {
        o->page = req->page_size ? req->page_size : PULL_PAGE_DEFAULT;
        QUERY(o, pull_done,
              store_pull(o->w->pg, o->id.user_id, req->device_id, ack, !ack && pos != 0, pos,
                         o->page + 1, on_pg, o));
    }
    op_unref(o);
}

/* --- the write path ---------------------------------------------------------------------- */

static void on_applied(waiter *w, void *ud)
{
    (void)w;
    op *o = ud;
    waiter_free(o->wt);
    o->wt = NULL;
    if (o->timer != NULL)
        event_del(o->timer);
    if (!rpc_call_is_done(o->call))
        o->after_apply(o);
    op_unref(o); /* the wait's reference */
}

static void on_write_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    op *o = arg;
    op_fail(o, RPC_STATUS_DEADLINE_EXCEEDED,
            "the write was not applied by this site's store in time; it may still be applied");
    op_unref_n(o, take_wait(o));
}

static void on_delivery(kafka_producer *p, const kafka_delivery *d, void *ud)
{
    (void)p;
    op *o = ud;
    int refs = 1; /* the delivery report's */
    if (d->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("%s: chat.events did not confirm the record: %s", o->method, d->errstr);
        op_fail(o, RPC_STATUS_UNAVAILABLE, "the log did not confirm the write: %s", d->errstr);
        refs += take_wait(o);
    }
    op_unref_n(o, refs);
}

/* Fills the common fields of |ev|, produces it and waits for the materializer; then runs
 * |after|. |ev|'s payload stays the caller's. */
static void publish(op *o, Chat__V1__ChatEvent *ev, const char *request_id, void (*after)(op *o))
{
    const chats_service *svc = o->svc;
    uint64_t event_id;
    int rv = snowflake_next(svc->ids, &event_id);
    if (rv != 0) {
        op_fail(o, RPC_STATUS_UNAVAILABLE, "cannot issue ids: %s", snowflake_strerror(rv));
        return;
    }
    ev->event_id = event_id;
    ev->chat_id = o->chat_id;
    ev->produced_at_ms = snowflake_wall_ms();
    ev->origin_site = (char *)svc->cfg.site;
    ev->producer = (char *)svc->producer;
    ev->actor_id = o->id.user_id;
    ev->source = CHAT__V1__EVENT_SOURCE__EVENT_SOURCE_API;
    o->after_apply = after;
    o->wt = waiters_add(svc->waits, o->w->base, event_id, on_applied, o);
    if (o->wt == NULL) {
        op_fail(o, RPC_STATUS_UNAVAILABLE, "too many writes waiting; retry");
        return;
    }
    op_ref(o); /* the wait's */
    metrics_gauge_set(stats.waiters, (double)waiters_count(svc->waits));
    if (rpc_call_deadline(o->call) == 0) {
        o->timer = evtimer_new(o->w->base, on_write_timeout, o);
        struct timeval tv = {svc->cfg.write_timeout_ms / 1000,
                             (svc->cfg.write_timeout_ms % 1000) * 1000};
        event_add(o->timer, &tv);
    }
    size_t len = chat__v1__chat_event__get_packed_size(ev);
    uint8_t *buf = mem_alloc(len ? len : 1);
    chat__v1__chat_event__pack(ev, buf);
    char key[24];
    int klen = snprintf(key, sizeof(key), "%" PRIu64, o->chat_id);
    kafka_header h = {REQUEST_HEADER, request_id, request_id ? strlen(request_id) : 0};
    op_ref(o); /* the delivery report's */
    rv = kafka_producer_send(o->w->kp, svc->cfg.topic, KAFKA_PARTITION_ANY, key, (size_t)klen, buf,
                             len, &h, request_id ? 1 : 0, on_delivery, o);
    free(buf);
    if (rv != 0) {
        op_fail(o, RPC_STATUS_UNAVAILABLE, "cannot produce to the log: %s", kafka_strerror(rv));
        op_unref_n(o, 1 + take_wait(o)); /* the report's that will not come, and the wait's */
    }
}

/* --- CreateChat --------------------------------------------------------------------------- */

static void create_reply(op *o, PGresult *res, bool created)
{
    if (PQntuples(res) == 0) {
        op_fail(o, RPC_STATUS_INTERNAL, "chat %" PRIu64 " vanished", o->chat_id);
        return;
    }
    Chat__V1__Chat c;
    char **members;
    size_t n;
    chat_from_row(res, o->chat_id, &c, &members, &n);
    Chat__V1__CreateChatResponse resp = CHAT__V1__CREATE_CHAT_RESPONSE__INIT;
    resp.chat = &c;
    resp.created = created;
    op_reply(o, &resp.base);
    free_list(members, n);
}

static void create_done_new(op *o, PGresult *res)
{
    create_reply(o, res, true);
}

static void create_done_old(op *o, PGresult *res)
{
    create_reply(o, res, false);
}

static void create_applied(op *o)
{
    QUERY(o, create_done_new, store_get_chat(o->w->pg, o->chat_id, NULL, on_pg, o));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* o->users: the sorted member set (caller included). */
static void create_found(op *o, PGresult *res)
{
    const Chat__V1__CreateChatRequest *req = o->req;
    uint64_t existing = store_u64(res, 0, 0);
    if (existing == 0)
        existing = store_u64(res, 0, 1);
    if (existing != 0) {
        o->chat_id = existing;
        QUERY(o, create_done_old, store_get_chat(o->w->pg, existing, NULL, on_pg, o));
        return;
    }
    int rv = snowflake_next(o->svc->ids, &o->chat_id);
    if (rv != 0) {
        op_fail(o, RPC_STATUS_UNAVAILABLE, "cannot issue ids: %s", snowflake_strerror(rv));
        return;
    }
    Chat__V1__Chat c = CHAT__V1__CHAT__INIT;
    c.chat_id = o->chat_id;
    c.kind = req->kind;
    c.title = req->title ? req->title : "";
    c.creator_id = o->id.user_id;
    c.created_at_ms = snowflake_wall_ms();
    c.member_count = (uint32_t)o->nusers;
    c.n_member_ids = o->nusers;
    c.member_ids = o->users;
    Chat__V1__ChatEvent ev = CHAT__V1__CHAT_EVENT__INIT;
    ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED;
    ev.chat_created = &c;
    const char *rid = req->request_id && req->request_id[0] ? req->request_id : NULL;
    publish(o, &ev, rid, create_applied);
}

static void create_chat(rpc_call *call, const Chat__V1__CreateChatRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "CreateChat");
    if (o == NULL)
        return;
    bool direct = req->kind == CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT;
    const char *title = req->title ? req->title : "";
    const char *rid = req->request_id && req->request_id[0] ? req->request_id : NULL;
    if (req->kind != CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT &&
        req->kind != CHAT__V1__CHAT_KIND__CHAT_KIND_GROUP) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "kind must be CHAT_KIND_DIRECT or CHAT_KIND_GROUP");
        goto out;
    }
    if (req->n_member_ids > CREATE_IDS_MAX) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "member_ids: at most %d members",
                VALIDATE_MAX_MEMBERS);
        goto out;
    }
    if (strlen(title) > VALIDATE_TITLE_MAX || !validate_utf8(title, strlen(title)) ||
        (direct && title[0] != '\0')) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT,
                "title must be 0..%d bytes of UTF-8, and empty for a direct chat",
                VALIDATE_TITLE_MAX);
        goto out;
    }
    if (rid != NULL && !validate_token_id(rid)) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "request_id must be 1..%d printable ASCII bytes",
                VALIDATE_REQUEST_ID_MAX);
        goto out;
    }
    o->users = mem_calloc(req->n_member_ids + 1, sizeof(char *));
    o->users[o->nusers++] = mem_strdup(o->id.user_id);
    for (size_t i = 0; i < req->n_member_ids; i++) {
        if (!validate_user_id(req->member_ids[i])) {
            op_fail(o, RPC_STATUS_INVALID_ARGUMENT,
                    "member_ids[%zu] is not a user id (1..%d printable ASCII bytes)", i,
                    VALIDATE_USER_ID_MAX);
            goto out;
        }
        if (!in_list(o->users, o->nusers, req->member_ids[i]))
            o->users[o->nusers++] = mem_strdup(req->member_ids[i]);
    }
    if (direct && o->nusers != 2) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT,
                "a direct chat needs exactly one member other than the caller");
        goto out;
    }
    if (o->nusers > VALIDATE_MAX_MEMBERS) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "a group has at most %d members (%zu given)",
                VALIDATE_MAX_MEMBERS, o->nusers);
        goto out;
    }
    qsort(o->users, o->nusers, sizeof(char *), cmp_str);
    char *rk = NULL, *dk = NULL;
    if (rid != NULL) {
        rk = mem_alloc(strlen(o->id.user_id) + strlen(rid) + 2);
        sprintf(rk, "%s %s", o->id.user_id, rid);
    }
    if (direct) {
        dk = mem_alloc(strlen(o->users[0]) + strlen(o->users[1]) + 2);
        sprintf(dk, "%s %s", o->users[0], o->users[1]);
    }
    QUERY(o, create_found, store_find_chat(o->w->pg, rk, dk, on_pg, o));
    free(rk);
    free(dk);
out:
    op_unref(o);
}

/* --- AddMembers / RemoveMembers ----------------------------------------------------------- */

static void members_reply(op *o, PGresult *res, bool add)
{
    if (PQntuples(res) == 0) {
        op_fail(o, RPC_STATUS_NOT_FOUND, "no chat %" PRIu64, o->chat_id);
        return;
    }
    size_t n;
    char **now = split_members(store_is_null(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6), &n);
    char **changed = mem_calloc(o->nusers + 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < o->nusers; i++)
        if (in_list(now, n, o->users[i]) == add)
            changed[k++] = o->users[i];
    if (add) {
        Chat__V1__AddMembersResponse resp = CHAT__V1__ADD_MEMBERS_RESPONSE__INIT;
        resp.n_added_user_ids = k;
        resp.added_user_ids = changed;
        resp.member_count = (uint32_t)n;
        op_reply(o, &resp.base);
    } else {
        Chat__V1__RemoveMembersResponse resp = CHAT__V1__REMOVE_MEMBERS_RESPONSE__INIT;
        resp.n_removed_user_ids = k;
        resp.removed_user_ids = changed;
        resp.member_count = (uint32_t)n;
        op_reply(o, &resp.base);
    }
    free(changed);
    free_list(now, n);
}

static void add_done(op *o, PGresult *res)
{
    members_reply(o, res, true);
}

static void remove_done(op *o, PGresult *res)
{
    members_reply(o, res, false);
}

static void add_applied(op *o)
{
    QUERY(o, add_done, store_get_chat(o->w->pg, o->chat_id, NULL, on_pg, o));
}

static void remove_applied(op *o)
{
    QUERY(o, remove_done, store_get_chat(o->w->pg, o->chat_id, NULL, on_pg, o));
}

/* Validates 1..500 user ids into o->users (deduplicated). */
static bool take_user_ids(op *o, size_t n, char **ids)
{
    if (n == 0 || n > VALIDATE_MAX_MEMBERS) {
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "user_ids must hold 1..%d ids",
                VALIDATE_MAX_MEMBERS);
        return false;
    }
    o->users = mem_calloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        if (!validate_user_id(ids[i])) {
            op_fail(o, RPC_STATUS_INVALID_ARGUMENT,
                    "user_ids[%zu] is not a user id (1..%d printable ASCII bytes)", i,
                    VALIDATE_USER_ID_MAX);
            return false;
        }
        if (!in_list(o->users, o->nusers, ids[i]))
            o->users[o->nusers++] = mem_strdup(ids[i]);
    }
    return true;
}

/* Keeps in o->users only those whose membership |add| would change; returns the current
 * member count through |count|. */
static void members_checked(op *o, PGresult *res, bool add)
{
    if (!access_ok(o, res))
        return;
    if (store_i64(res, 0, 1) != CHAT__V1__CHAT_KIND__CHAT_KIND_GROUP) {
        op_fail(o, RPC_STATUS_FAILED_PRECONDITION, "the members of a direct chat cannot change");
        return;
    }
    const char *creator = PQgetvalue(res, 0, 3);
    if (!add && strcmp(creator, o->id.user_id) != 0) {
        for (size_t i = 0; i < o->nusers; i++) {
            if (strcmp(o->users[i], o->id.user_id) != 0) {
                op_fail(o, RPC_STATUS_PERMISSION_DENIED,
                        "only the chat's creator may remove other members");
                return;
            }
        }
    }
    size_t n;
    char **cur = split_members(store_is_null(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6), &n);
    size_t k = 0;
    for (size_t i = 0; i < o->nusers; i++) {
        if (in_list(cur, n, o->users[i]) != add)
            o->users[k++] = o->users[i];
        else
            free(o->users[i]);
    }
    o->nusers = k;
    free_list(cur, n);
    if (add && n + k > VALIDATE_MAX_MEMBERS) {
        op_fail(o, RPC_STATUS_FAILED_PRECONDITION, "the chat would have %zu members; at most %d",
                n + k, VALIDATE_MAX_MEMBERS);
        return;
    }
    if (k == 0) { /* nothing changes: answer from what was read */
        members_reply(o, res, add);
        return;
    }
    Chat__V1__MembersChanged mc = CHAT__V1__MEMBERS_CHANGED__INIT;
    mc.n_user_ids = k;
    mc.user_ids = o->users;
    Chat__V1__ChatEvent ev = CHAT__V1__CHAT_EVENT__INIT;
    if (add) {
        ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED;
        ev.members_added = &mc;
    } else {
        ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED;
        ev.members_removed = &mc;
    }
    publish(o, &ev, NULL, add ? add_applied : remove_applied);
}

static void add_checked(op *o, PGresult *res)
{
    members_checked(o, res, true);
}

static void remove_checked(op *o, PGresult *res)
{
    members_checked(o, res, false);
}

static void add_members(rpc_call *call, const Chat__V1__AddMembersRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "AddMembers");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    if (take_user_ids(o, req->n_user_ids, req->user_ids))
        QUERY(o, add_checked, store_get_chat(o->w->pg, o->chat_id, o->id.user_id, on_pg, o));
    op_unref(o);
}

static void remove_members(rpc_call *call, const Chat__V1__RemoveMembersRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "RemoveMembers");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    if (take_user_ids(o, req->n_user_ids, req->user_ids))
        QUERY(o, remove_checked, store_get_chat(o->w->pg, o->chat_id, o->id.user_id, on_pg, o));
    op_unref(o);
}

/* --- EditMessage / DeleteMessage ---------------------------------------------------------- */

static void message_reply(op *o, PGresult *res, bool edit)
{
    if (PQntuples(res) == 0 || store_is_null(res, 0, 1)) {
        op_fail(o, RPC_STATUS_INTERNAL, "message vanished");
        return;
    }
    Chat__V1__Message m;
    store_message(res, 0, 1, &m);
    if (edit) {
        Chat__V1__EditMessageResponse resp = CHAT__V1__EDIT_MESSAGE_RESPONSE__INIT;
        resp.message = &m;
        op_reply(o, &resp.base);
    } else {
        Chat__V1__DeleteMessageResponse resp = CHAT__V1__DELETE_MESSAGE_RESPONSE__INIT;
        resp.message = &m;
        op_reply(o, &resp.base);
    }
}

static void edit_done(op *o, PGresult *res)
{
    message_reply(o, res, true);
}

static void delete_done(op *o, PGresult *res)
{
    message_reply(o, res, false);
}

static uint64_t req_message_id(const op *o, bool edit)
{
    return edit ? ((const Chat__V1__EditMessageRequest *)o->req)->message_id
                : ((const Chat__V1__DeleteMessageRequest *)o->req)->message_id;
}

static void edit_applied(op *o)
{
    QUERY(o, edit_done,
          store_get_message(o->w->pg, o->chat_id, NULL, req_message_id(o, true), on_pg, o));
}

static void delete_applied(op *o)
{
    QUERY(o, delete_done,
          store_get_message(o->w->pg, o->chat_id, NULL, req_message_id(o, false), on_pg, o));
}

static void message_checked(op *o, PGresult *res, bool edit)
{
    if (!access_ok(o, res))
        return;
    if (store_is_null(res, 0, 1)) {
        op_fail(o, RPC_STATUS_NOT_FOUND, "no message %" PRIu64 " in chat %" PRIu64,
                req_message_id(o, edit), o->chat_id);
        return;
    }
    Chat__V1__Message m;
    store_message(res, 0, 1, &m);
    uint32_t expected = edit ? ((const Chat__V1__EditMessageRequest *)o->req)->expected_version
                             : ((const Chat__V1__DeleteMessageRequest *)o->req)->expected_version;
    if (strcmp(m.sender_id, o->id.user_id) != 0) {
        op_fail(o, RPC_STATUS_PERMISSION_DENIED, "only the sender may %s a message",
                edit ? "edit" : "delete");
        return;
    }
    if (m.deleted) {
        if (edit)
            op_fail(o, RPC_STATUS_FAILED_PRECONDITION, "the message is deleted");
        else
            message_reply(o, res, false); /* deleting a tombstone changes nothing */
        return;
    }
    if (expected != 0 && expected != m.version) {
        op_fail(o, RPC_STATUS_ABORTED, "expected version %u, stored version is %u", expected,
                m.version);
        return;
    }
    /* The new state must win LWW even against a clock that is behind the stored one. */
    int64_t now = snowflake_wall_ms();
    m.updated_at_ms = now > m.updated_at_ms ? now : m.updated_at_ms;
    m.version++;
    Chat__V1__ChatEvent ev = CHAT__V1__CHAT_EVENT__INIT;
    if (edit) {
        m.body = ((const Chat__V1__EditMessageRequest *)o->req)->body;
        ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_EDITED;
        ev.message_edited = &m;
    } else {
        m.body = "";
        m.deleted = true;
        ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_DELETED;
        ev.message_deleted = &m;
    }
    publish(o, &ev, NULL, edit ? edit_applied : delete_applied);
}

static void edit_checked(op *o, PGresult *res)
{
    message_checked(o, res, true);
}

static void delete_checked(op *o, PGresult *res)
{
    message_checked(o, res, false);
}

static void edit_message(rpc_call *call, const Chat__V1__EditMessageRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "EditMessage");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    if (!validate_body(req->body))
        op_fail(o, RPC_STATUS_INVALID_ARGUMENT, "body must be 1..%d bytes of valid UTF-8",
                VALIDATE_BODY_MAX);
    else
        QUERY(o, edit_checked,
              store_get_message(o->w->pg, o->chat_id, o->id.user_id, req->message_id, on_pg, o));
    op_unref(o);
}

static void delete_message(rpc_call *call, const Chat__V1__DeleteMessageRequest *req, void *ud)
{
    op *o = op_new(call, ud, req, "DeleteMessage");
    if (o == NULL)
        return;
    o->chat_id = req->chat_id;
    QUERY(o, delete_checked,
          store_get_message(o->w->pg, o->chat_id, o->id.user_id, req->message_id, on_pg, o));
    op_unref(o);
}

/* --- registration ------------------------------------------------------------------------- */

static Chat__V1__ChatsService__RpcServer impl = {
    .create_chat = create_chat,
    .add_members = add_members,
    .remove_members = remove_members,
    .get_chat = get_chat,
    .list_chats = list_chats,
    .get_history = get_history,
    .get_range_hash = get_range_hash,
    .pull_messages = pull_messages,
    .edit_message = edit_message,
    .delete_message = delete_message,
};

int api_register(rpc_server *srv, chats_service *svc)
{
    impl.user_data = svc;
    return chat__v1__chats_service__rpc_register(srv, &impl);
}
