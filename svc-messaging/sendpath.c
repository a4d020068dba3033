/* sendpath.c: validate, dedupe, produce, answer (see sendpath.h). */
#include "sendpath.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/v1/events.pb-c.h"
#include "log.h"
#include "mem.h"
#include "stats.h"

/* KEYS[1] dedupe key; ARGV: id, created_at_ms, chat_id, ttl_ms. */
static const char DEDUPE_LUA[] =
    "local v = redis.call('HMGET', KEYS[1], 'state', 'id', 'created', 'chat')\n"
    "if v[1] then return {v[1], v[2], v[3], v[4]} end\n"
    "redis.call('HSET', KEYS[1], 'state', 'pending', 'id', ARGV[1], 'created', ARGV[2],"
    " 'chat', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "return {'new', ARGV[1], ARGV[2], ARGV[3]}\n";

/* KEYS[1] dedupe key; ARGV[1] id: pending -> acked, only for that id. */
static const char ACKED_LUA[] = "if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then\n"
                                "  redis.call('HSET', KEYS[1], 'state', 'acked') return 1\n"
                                "end\n"
                                "return 0\n";

int sendpath_scripts_new(msg_service *svc)
{
    int rv = redis_script_new(&svc->dedupe_script, DEDUPE_LUA);
    if (rv == 0)
        rv = redis_script_new(&svc->acked_script, ACKED_LUA);
    return rv;
}

void sendpath_scripts_free(msg_service *svc)
{
    if (svc->dedupe_script)
        redis_script_free(svc->dedupe_script);
    if (svc->acked_script)
        redis_script_free(svc->acked_script);
}

/* --- validation ------------------------------------------------------------------------------ */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned min;
        if ((c & 0xE0) == 0xC0) {
            len = 2, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            c = c << 6 | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static void reject(send_result *r, int code, const char *reason)
{
    memset(r, 0, sizeof(*r));
    r->status = CHAT__V1__SEND_STATUS__SEND_STATUS_REJECTED;
    r->code = code;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

int sendpath_validate(const char *cmid, uint64_t chat_id, const char *body, send_result *r)
{
    size_t n = cmid ? strlen(cmid) : 0;
    if (n == 0 || n > MSG_MAX_CMID_BYTES) {
        reject(r, RPC_STATUS_INVALID_ARGUMENT, "client_message_id must be 1..64 bytes");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)cmid[i] < 0x21 || (unsigned char)cmid[i] > 0x7E) {
            reject(r, RPC_STATUS_INVALID_ARGUMENT,
                   "client_message_id must be printable ASCII (0x21..0x7E)");
            return -1;
        }
    if (chat_id == 0) {
        reject(r, RPC_STATUS_INVALID_ARGUMENT, "chat_id must be set");
        return -1;
    }
    size_t blen = body ? strlen(body) : 0;
    if (blen == 0) {
        reject(r, RPC_STATUS_INVALID_ARGUMENT, "body is empty");
        return -1;
    }
    if (blen > MSG_MAX_BODY_BYTES) {
        reject(r, RPC_STATUS_INVALID_ARGUMENT, "body is over 4096 bytes");
        return -1;
    }
    if (!utf8_valid((const unsigned char *)body, blen)) {
        reject(r, RPC_STATUS_INVALID_ARGUMENT, "body is not valid UTF-8");
        return -1;
    }
    return 0;
}

/* --- the operation --------------------------------------------------------------------------- */

typedef struct send_op {
    msg_worker *w;
    sendpath_cb cb;
    void *ud;
    char *sender;
    char *cmid;
    char *body;
    uint64_t chat_id;
    uint64_t message_id;
    int64_t created_at_ms;
    bool reproduced;    /* a pending earlier attempt is produced again */
    int64_t started_ms; /* monotonic, for the latency histogram */
    int64_t step_ms;    /* monotonic start of the current step */
    char key[AUTH_USER_ID_MAX + MSG_MAX_CMID_BYTES + 32];
} send_op;

static void op_finish(send_op *op, send_result *r)
{
    msg_worker *w = op->w;
    w->pending_sends--;
    switch (r->status) {
    case CHAT__V1__SEND_STATUS__SEND_STATUS_OK:
        metrics_counter_inc(stats.send_ok);
        break;
    case CHAT__V1__SEND_STATUS__SEND_STATUS_DUPLICATE:
        metrics_counter_inc(stats.send_duplicate);
        break;
    case CHAT__V1__SEND_STATUS__SEND_STATUS_REJECTED:
        metrics_counter_inc(stats.send_rejected);
        break;
    default:
        metrics_counter_inc(stats.send_failed);
        break;
    }
    metrics_histogram_observe(stats.send_latency, (rpc_now_ms() - op->started_ms) / 1000.0);
    op->cb(r, op->ud);
    free(op->sender);
    free(op->cmid);
    free(op->body);
    free(op);
}

static void op_reject(send_op *op, int code, const char *reason)
{
    send_result r;
    reject(&r, code, reason);
    op_finish(op, &r);
}

static void op_fail(send_op *op, const char *what, const char *detail)
{
    send_result r;
    memset(&r, 0, sizeof(r));
    r.status = CHAT__V1__SEND_STATUS__SEND_STATUS_FAILED;
    r.code = RPC_STATUS_UNAVAILABLE;
    r.message_id = op->message_id;
    snprintf(r.reason, sizeof(r.reason), "%s%s", what, detail ? detail : "");
    op_finish(op, &r);
}

static void op_done(send_op *op, Chat__V1__SendStatus status)
{
    send_result r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.message_id = op->message_id;
    r.created_at_ms = op->created_at_ms;
    op_finish(op, &r);
}

static void on_marked(redis_client *c, const redisReply *reply, int status, void *ud)
{
    (void)c;
    (void)ud;
    /* Durable either way; a failed mark only means a resend produces once more, same id. */
    if (status != 0 || reply == NULL || reply->type == REDIS_REPLY_ERROR)
        metrics_counter_inc(stats.dedupe_mark_errors);
}

static void on_delivery(kafka_producer *p, const kafka_delivery *d, void *ud)
{
    (void)p;
    send_op *op = ud;
    metrics_histogram_observe(stats.produce_latency, (rpc_now_ms() - op->step_ms) / 1000.0);
    if (d->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* The key stays pending: a resend produces again with the same id. */
        op_fail(op, "the log did not confirm the write: ", d->errstr);
        return;
    }
    /* Mark the key acked, then answer without waiting for Redis's reply. The answer is only
     * queued here; the connection writes it from a later event of this loop turn, while the
     * marks queued by this turn's reports are written to Redis's socket by
     * sendpath_reports_done() before this turn's report callback returns. So whatever the
     * client does after the answer (a resend through this or another instance) reaches Redis
     * after the mark and is a DUPLICATE. Only a mark that fails (or an EVALSHA retried as EVAL
     * after a Redis restart) lets a resend find "pending"; it then produces the same
     * message_id again, which every consumer deduplicates: never a second message. */
    if (!op->w->stopping) {
        char id[24];
        snprintf(id, sizeof(id), "%" PRIu64, op->message_id);
        const char *argv[] = {op->key, id};
        if (redis_client_eval(op->w->redis, op->w->svc->acked_script, 1, 2, argv, NULL, on_marked,
                              NULL) != 0)
            metrics_counter_inc(stats.dedupe_mark_errors);
        else
            op->w->marks_unflushed = true;
    }
    op_done(op, CHAT__V1__SEND_STATUS__SEND_STATUS_OK);
}

void sendpath_reports_done(kafka_producer *p, void *ud)
{
    (void)p;
    msg_worker *w = ud;
    if (!w->marks_unflushed)
        return;
    w->marks_unflushed = false;
    redis_client_flush(w->redis); /* one write for all of the turn's marks */
}

static void op_produce(send_op *op)
{
    msg_worker *w = op->w;
    msg_service *svc = w->svc;
    uint64_t event_id;
    int rv = snowflake_next(svc->ids, &event_id);
    if (rv != 0) {
        op_fail(op, "no id available: ", snowflake_strerror(rv));
        return;
    }
    Chat__V1__Message m = CHAT__V1__MESSAGE__INIT;
    m.message_id = op->message_id;
    m.chat_id = op->chat_id;
    m.sender_id = op->sender;
    m.client_message_id = op->cmid;
    m.body = op->body;
    m.created_at_ms = op->created_at_ms;
    m.updated_at_ms = op->created_at_ms;
    m.version = 1;
    Chat__V1__ChatEvent ev = CHAT__V1__CHAT_EVENT__INIT;
    ev.event_id = event_id;
    ev.chat_id = op->chat_id;
    ev.produced_at_ms = snowflake_wall_ms();
    ev.origin_site = (char *)svc->cfg.site;
    ev.producer = svc->producer_name;
    ev.actor_id = op->sender;
    ev.source = CHAT__V1__EVENT_SOURCE__EVENT_SOURCE_API;
    ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_POSTED;
    ev.message_posted = &m;
    uint8_t buf[MSG_MAX_BODY_BYTES + 1024];
    size_t len = chat__v1__chat_event__get_packed_size(&ev);
    if (len > sizeof(buf)) {
        op_fail(op, "event too large", "");
        return;
    }
    chat__v1__chat_event__pack(&ev, buf);
    char key[24];
    int klen = snprintf(key, sizeof(key), "%" PRIu64, op->chat_id);
    op->step_ms = rpc_now_ms();
    rv = kafka_producer_send(w->producer, svc->cfg.topic, KAFKA_PARTITION_ANY, key, (size_t)klen,
                             buf, len, NULL, 0, on_delivery, op);
    if (rv != 0)
        op_fail(op, "cannot produce: ", kafka_strerror(rv));
}

static int reply_str(const redisReply *r, size_t i, char *out, size_t cap)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements <= i)
        return -1;
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS)
        return -1;
    if (e->len + 1 > cap)
        return -1;
    memcpy(out, e->str, e->len);
    out[e->len] = '\0';
    return 0;
}

static void on_dedupe(redis_client *c, const redisReply *reply, int status, void *ud)
{
    (void)c;
    send_op *op = ud;
    char state[16], id[24], created[24], chat[24];
    metrics_histogram_observe(stats.dedupe_latency, (rpc_now_ms() - op->step_ms) / 1000.0);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        op->message_id = 0;
        op_fail(op, "dedupe store unavailable: ", reply ? reply->str : redis_strerror(status));
        return;
    }
    if (reply_str(reply, 0, state, sizeof(state)) || reply_str(reply, 1, id, sizeof(id)) ||
        reply_str(reply, 2, created, sizeof(created)) || reply_str(reply, 3, chat, sizeof(chat))) {
        op->message_id = 0;
        op_fail(op, "dedupe store: unexpected reply", "");
        return;
    }
    uint64_t stored_id = strtoull(id, NULL, 10);
    int64_t stored_created = strtoll(created, NULL, 10);
    uint64_t stored_chat = strtoull(chat, NULL, 10);
    if (strcmp(state, "new") == 0) {
        if (op->w->stopping) {
            op_fail(op, "server shutting down", "");
            return;
        }
        op_produce(op);
        return;
    }
    if (stored_chat != op->chat_id) {
        op->message_id = 0;
        op_reject(op, RPC_STATUS_INVALID_ARGUMENT,
                  "client_message_id was already used for another chat");
        return;
    }
    op->message_id = stored_id;
    op->created_at_ms = stored_created;
    if (strcmp(state, "acked") == 0) {
        op_done(op, CHAT__V1__SEND_STATUS__SEND_STATUS_DUPLICATE);
        return;
    }
    /* pending: the first attempt was never confirmed; produce it again under its own id. */
    op->reproduced = true;
    metrics_counter_inc(stats.send_reproduced);
    if (op->w->stopping) {
        op_fail(op, "server shutting down", "");
        return;
    }
    op_produce(op);
}

static void op_dedupe(send_op *op)
{
    msg_worker *w = op->w;
    if (w->stopping) {
        op_fail(op, "server shutting down", "");
        return;
    }
    uint64_t id;
    int rv = snowflake_next(w->svc->ids, &id);
    if (rv != 0) {
        op_fail(op, "no message id available: ", snowflake_strerror(rv));
        return;
    }
    op->message_id = id;
    op->created_at_ms = snowflake_unix_ms(id);
    char sid[24], screated[24], schat[24], sttl[24];
    snprintf(sid, sizeof(sid), "%" PRIu64, id);
    snprintf(screated, sizeof(screated), "%" PRId64, op->created_at_ms);
    snprintf(schat, sizeof(schat), "%" PRIu64, op->chat_id);
    snprintf(sttl, sizeof(sttl), "%" PRIu64, (uint64_t)w->svc->cfg.dedupe_ttl_s * 1000);
    const char *argv[] = {op->key, sid, screated, schat, sttl};
    op->step_ms = rpc_now_ms();
    rv = redis_client_eval(w->redis, w->svc->dedupe_script, 1, 5, argv, NULL, on_dedupe, op);
    if (rv != 0) {
        op->message_id = 0;
        op_fail(op, "dedupe store unavailable: ", redis_strerror(rv));
    }
}

static void membership_verdict(send_op *op)
{
    switch (membership_check(op->w->svc->members, op->chat_id, op->sender)) {
    case MEMBERSHIP_MEMBER:
        op_dedupe(op);
        break;
    case MEMBERSHIP_NOT_MEMBER:
        op_reject(op, RPC_STATUS_PERMISSION_DENIED, "not a member of this chat");
        break;
    default:
        op_fail(op, "membership of the chat is unknown", "");
        break;
    }
}

static void on_loaded(int code, void *ud)
{
    send_op *op = ud;
    if (code == RPC_STATUS_OK) {
        membership_verdict(op);
    } else if (code == RPC_STATUS_NOT_FOUND) {
        op_reject(op, RPC_STATUS_NOT_FOUND, "no such chat");
    } else {
        op_fail(op, "membership unavailable: GetChat ", rpc_status_name(code));
    }
}

/* After a "not a member" verdict from the cache was re-checked with svc-chats: the snapshot
 * fills in users no consumed event has named yet, so the verdict is now current. When svc-chats
 * cannot answer, the cache's verdict stands. */
static void on_rechecked(int code, void *ud)
{
    send_op *op = ud;
    if (code == RPC_STATUS_OK)
        membership_verdict(op);
    else
        op_reject(op, RPC_STATUS_PERMISSION_DENIED, "not a member of this chat");
}

void sendpath_submit(msg_worker *w, const char *sender, const char *cmid, uint64_t chat_id,
                     const char *body, sendpath_cb cb, void *user_data)
{
    send_op *op = mem_calloc(1, sizeof(*op));
    op->w = w;
    op->cb = cb;
    op->ud = user_data;
    op->sender = mem_strdup(sender);
    op->cmid = mem_strdup(cmid);
    op->body = mem_strdup(body);
    op->chat_id = chat_id;
    op->started_ms = rpc_now_ms();
    snprintf(op->key, sizeof(op->key), "dedupe:%zu:%s:%s", strlen(sender), sender, cmid);
    w->pending_sends++;
    if (w->pending_sends > w->svc->cfg.max_pending_sends) {
        op_reject(op, RPC_STATUS_RESOURCE_EXHAUSTED, "server busy: too many sends pending");
        return;
    }
    if (w->stopping) {
        op_fail(op, "server shutting down", "");
        return;
    }
    int m = membership_check(w->svc->members, chat_id, sender);
    if (m == MEMBERSHIP_MEMBER) {
        op_dedupe(op);
    } else if (m == MEMBERSHIP_NOT_MEMBER) {
        /* The cache follows the log, which this instance may not have read as far as svc-chats
         * has: AddMembers returns once svc-chats applied the event, and the new member may send
         * at once. So a negative verdict is confirmed with GetChat (coalesced per chat) before
         * rejecting; events already consumed still win over the snapshot. */
        if (!membership_loader_remote(w->loader) ||
            membership_load(w->loader, chat_id, on_rechecked, op) != 0)
            op_reject(op, RPC_STATUS_PERMISSION_DENIED, "not a member of this chat");
    } else if (membership_load(w->loader, chat_id, on_loaded, op) != 0) {
        op_fail(op, "membership unavailable (too many loads)", "");
    }
}
