/* materializer.c: chat.events -> PostgreSQL in one transaction per batch (see materializer.h). */
#include "materializer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "chat/v1/events.pb-c.h"
#include "clock.h"
#include "hash.h"
#include "kafka.h"
#include "log.h"
#include "mem.h"
#include "pg.h"
#include "redis.h"
#include "sqlarr.h"
#include "stats.h"
#include "validate.h"

#define MZ_RETRY_MS 1000
#define MZ_HIGH_WATER_BATCHES 10 /* filling records (x batch_max) that pause the consumer */
#define MZ_MAX_LAGS 1024
#define MZ_MAX_STMTS 5
#define MZ_MAX_PARAMS 10
#define MZ_REQUEST_HEADER "chat-request-id" /* CreateChat's request_id (api.c sets it) */

/* One consumed partition position: the next offset to read. */
typedef struct mz_offset {
    char *topic;
    int32_t partition;
    int64_t next;
} mz_offset;

/* Records consumed but not yet committed to PostgreSQL. */
typedef struct batch {
    Chat__V1__ChatEvent **ev; /* decoded records, arrival order */
    char **request_ids;       /* per record: MZ_REQUEST_HEADER value or NULL */
    size_t n, cap;
    size_t records; /* records consumed, decodable or not */
    mz_offset *offs;
    size_t noffs, offcap;
    int64_t newest_ts; /* newest record timestamp, Unix ms */
} batch;

/* A member change RETURNED by the upsert, replayed into Redis after COMMIT. */
typedef struct member_change {
    uint64_t chat_id;
    char *user;
    bool add;
} member_change;

typedef struct stmt {
    const char *sql;
    int n;
    sqlarr arr[MZ_MAX_PARAMS];
} stmt;

struct materializer {
    const settings *s;
    waiters *w;
    pthread_t thread;
    struct event_base *base;
    struct event *stop_ev, *flush_ev, *retry_ev, *assign_retry_ev, *exit_ev;
    kafka_consumer *kc;
    pg_pool *pg;
    redis_client *rc;
    bool stopping;

    batch *filling, *writing;
    bool plan_ready;
    stmt stmts[MZ_MAX_STMTS];
    size_t nstmts, step;
    const Chat__V1__Message **msgs; /* deduplicated message states of |writing| */
    size_t nmsgs;
    pg_conn *conn;
    int64_t t0;
    member_change *changes;
    size_t nchanges, changecap;

    rd_kafka_topic_partition_list_t *pending_assign;
    uint64_t assign_gen;

    struct {
        char topic[128];
        int32_t partition;
        int64_t lag;
    } lags[MZ_MAX_LAGS];
    size_t nlags;
};

/* --- batches ---------------------------------------------------------------------------- */

static batch *batch_new(void)
{
    return mem_calloc(1, sizeof(batch));
}

static void batch_free(batch *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n; i++) {
        chat__v1__chat_event__free_unpacked(b->ev[i], NULL);
        free(b->request_ids[i]);
    }
    for (size_t i = 0; i < b->noffs; i++)
        free(b->offs[i].topic);
    free(b->ev);
    free(b->request_ids);
    free(b->offs);
    free(b);
}

static void batch_note_offset(batch *b, const char *topic, int32_t partition, int64_t offset)
{
    b->records++;
    for (size_t i = 0; i < b->noffs; i++) {
        if (b->offs[i].partition == partition && strcmp(b->offs[i].topic, topic) == 0) {
            if (offset + 1 > b->offs[i].next)
                b->offs[i].next = offset + 1;
            return;
        }
    }
    if (b->noffs == b->offcap) {
        b->offcap = b->offcap ? 2 * b->offcap : 16;
        b->offs = mem_realloc(b->offs, b->offcap * sizeof(*b->offs));
    }
    b->offs[b->noffs++] = (mz_offset){mem_strdup(topic), partition, offset + 1};
}

static void batch_add(batch *b, Chat__V1__ChatEvent *ev, char *request_id)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 256;
        b->ev = mem_realloc(b->ev, b->cap * sizeof(*b->ev));
        b->request_ids = mem_realloc(b->request_ids, b->cap * sizeof(*b->request_ids));
    }
    b->ev[b->n] = ev;
    b->request_ids[b->n] = request_id;
    b->n++;
}

/* --- validation: a record PostgreSQL would refuse must not stall the partition ---------- */

static bool id_ok(uint64_t id)
{
    return id != 0 && id <= (uint64_t)INT64_MAX;
}

static bool text_ok(const char *s)
{
    return s != NULL && validate_utf8(s, strlen(s));
}

static bool message_ok(const Chat__V1__ChatEvent *ev, const Chat__V1__Message *m)
{
    return m != NULL && id_ok(m->message_id) && m->chat_id == ev->chat_id && m->version >= 1 &&
           m->version <= (uint32_t)INT32_MAX && text_ok(m->sender_id) &&
           text_ok(m->client_message_id) && text_ok(m->body);
}

static bool members_ok(size_t n, char **ids)
{
    for (size_t i = 0; i < n; i++)
        if (!validate_user_id(ids[i]))
            return false;
    return true;
}

static bool event_ok(const Chat__V1__ChatEvent *ev)
{
    if (!id_ok(ev->chat_id))
        return false;
    switch (ev->event_case) {
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_POSTED:
        return message_ok(ev, ev->message_posted);
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_EDITED:
        return message_ok(ev, ev->message_edited);
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_DELETED:
        return message_ok(ev, ev->message_deleted);
    case CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED: {
        const Chat__V1__Chat *c = ev->chat_created;
        return c != NULL && c->chat_id == ev->chat_id &&
               (c->kind == CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT ||
                c->kind == CHAT__V1__CHAT_KIND__CHAT_KIND_GROUP) &&
               text_ok(c->title) && validate_user_id(c->creator_id) &&
               members_ok(c->n_member_ids, c->member_ids);
    }
    case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED:
        return ev->members_added != NULL &&
               members_ok(ev->members_added->n_user_ids, ev->members_added->user_ids);
    case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED:
        return ev->members_removed != NULL &&
               members_ok(ev->members_removed->n_user_ids, ev->members_removed->user_ids);
    default:
        return false;
    }
}

/* --- the plan: one statement per table, rows as array parameters ----------------------- */

static const char sql_chats[] =
    "INSERT INTO chats (chat_id, kind, title, creator_id, created_at_ms, request_key, "
    "direct_key) SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::text[], "
    "$5::bigint[], $6::text[], $7::text[]) ON CONFLICT (chat_id) DO NOTHING";

static const char sql_members[] =
    "WITH up AS (INSERT INTO chat_members AS cm (chat_id, user_id, is_member, changed_at_ms, "
    "changed_event_id) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::bigint[], "
    "$5::bigint[]) ON CONFLICT (chat_id, user_id) DO UPDATE SET is_member = EXCLUDED.is_member, "
    "changed_at_ms = EXCLUDED.changed_at_ms, changed_event_id = EXCLUDED.changed_event_id "
    "WHERE (EXCLUDED.changed_at_ms, EXCLUDED.changed_event_id) > "
    "(cm.changed_at_ms, cm.changed_event_id) RETURNING chat_id, user_id, is_member) "
    "SELECT chat_id, user_id, is_member FROM up";

static const char sql_counts[] =
    "UPDATE chats c SET member_count = (SELECT count(*) FROM chat_members m "
    "WHERE m.chat_id = c.chat_id AND m.is_member) WHERE c.chat_id = ANY($1::bigint[])";

/* Last writer wins on (updated_at_ms, version); ties: deleted wins, then the bytewise greater
 * body (events.proto). The same order as msg_cmp() and the cache's apply script. */
static const char sql_messages[] =
    "INSERT INTO messages AS m (chat_id, message_id, sender_id, client_message_id, body, "
    "created_at_ms, updated_at_ms, version, deleted, h) SELECT * FROM unnest($1::bigint[], "
    "$2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::int[], "
    "$9::bool[], $10::bigint[]) ON CONFLICT (chat_id, message_id) DO UPDATE SET "
    "sender_id = EXCLUDED.sender_id, client_message_id = EXCLUDED.client_message_id, "
    "body = EXCLUDED.body, created_at_ms = EXCLUDED.created_at_ms, "
    "updated_at_ms = EXCLUDED.updated_at_ms, version = EXCLUDED.version, "
    "deleted = EXCLUDED.deleted, h = EXCLUDED.h "
    "WHERE (EXCLUDED.updated_at_ms, EXCLUDED.version, EXCLUDED.deleted, "
    "EXCLUDED.body COLLATE \"C\") > (m.updated_at_ms, m.version, m.deleted, m.body COLLATE \"C\")";

static const char sql_offsets[] =
    "INSERT INTO kafka_offsets (topic, partition, next_offset) SELECT * FROM "
    "unnest($1::text[], $2::int[], $3::bigint[]) ON CONFLICT (topic, partition) DO UPDATE SET "
    "next_offset = EXCLUDED.next_offset";

static int msg_cmp(const void *pa, const void *pb)
{
    const Chat__V1__Message *a = *(const Chat__V1__Message *const *)pa;
    const Chat__V1__Message *b = *(const Chat__V1__Message *const *)pb;
    if (a->message_id != b->message_id)
        return a->message_id < b->message_id ? -1 : 1;
    if (a->updated_at_ms != b->updated_at_ms)
        return a->updated_at_ms < b->updated_at_ms ? -1 : 1;
    if (a->version != b->version)
        return a->version < b->version ? -1 : 1;
    if (a->deleted != b->deleted)
        return a->deleted ? 1 : -1;
    return strcmp(a->body, b->body); /* bytewise on unsigned char, as COLLATE "C" */
}

typedef struct member_row {
    uint64_t chat_id;
    const char *user;
    bool add;
    int64_t at;
    uint64_t event_id;
} member_row;

static int member_cmp(const void *pa, const void *pb)
{
    const member_row *a = pa, *b = pb;
    if (a->chat_id != b->chat_id)
        return a->chat_id < b->chat_id ? -1 : 1;
    int c = strcmp(a->user, b->user);
    if (c != 0)
        return c;
    if (a->at != b->at)
        return a->at < b->at ? -1 : 1;
    if (a->event_id != b->event_id)
        return a->event_id < b->event_id ? -1 : 1;
    return 0;
}

static int u64_cmp(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

static stmt *stmt_new(materializer *m, const char *sql, int n)
{
    stmt *s = &m->stmts[m->nstmts++];
    s->sql = sql;
    s->n = n;
    for (int i = 0; i < n; i++)
        sqlarr_init(&s->arr[i]);
    return s;
}

static void plan_free(materializer *m)
{
    for (size_t i = 0; i < m->nstmts; i++)
        for (int k = 0; k < m->stmts[i].n; k++)
            sqlarr_free(&m->stmts[i].arr[k]);
    m->nstmts = 0;
    free(m->msgs);
    m->msgs = NULL;
    m->nmsgs = 0;
    m->plan_ready = false;
}

static void add_members(member_row **rows, size_t *n, size_t *cap, const Chat__V1__ChatEvent *ev,
                        size_t count, char **users, bool add)
{
    for (size_t i = 0; i < count; i++) {
        if (*n == *cap) {
            *cap = *cap ? 2 * *cap : 64;
            *rows = mem_realloc(*rows, *cap * sizeof(**rows));
        }
        (*rows)[(*n)++] =
            (member_row){ev->chat_id, users[i], add, ev->produced_at_ms, ev->event_id};
    }
}

/* Builds the statements for m->writing (deduplicated: one row per key, the LWW winner). */
static void plan_build(materializer *m)
{
    batch *b = m->writing;
    member_row *rows = NULL;
    size_t nrows = 0, rowcap = 0;
    uint64_t *touched = mem_calloc(b->n + 1, sizeof(uint64_t));
    size_t ntouched = 0;
    m->msgs = mem_calloc(b->n + 1, sizeof(*m->msgs));
    stmt *chats = NULL;
    uint64_t *created = mem_calloc(b->n + 1, sizeof(uint64_t));
    size_t ncreated = 0;

    for (size_t i = 0; i < b->n; i++) {
        const Chat__V1__ChatEvent *ev = b->ev[i];
        switch (ev->event_case) {
        case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_POSTED:
            m->msgs[m->nmsgs++] = ev->message_posted;
            break;
        case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_EDITED:
            m->msgs[m->nmsgs++] = ev->message_edited;
            break;
        case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_DELETED:
            m->msgs[m->nmsgs++] = ev->message_deleted;
            break;
        case CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED: {
            const Chat__V1__Chat *c = ev->chat_created;
            bool dup = false;
            for (size_t k = 0; k < ncreated && !dup; k++)
                dup = created[k] == c->chat_id;
            if (!dup) {
                created[ncreated++] = c->chat_id;
                if (chats == NULL)
                    chats = stmt_new(m, sql_chats, 7);
                sqlarr_add_i64(&chats->arr[0], (int64_t)c->chat_id);
                sqlarr_add_i64(&chats->arr[1], c->kind);
                sqlarr_add_text(&chats->arr[2], c->title);
                sqlarr_add_text(&chats->arr[3], c->creator_id);
                sqlarr_add_i64(&chats->arr[4], c->created_at_ms);
                char *rk = NULL;
                if (b->request_ids[i] != NULL) {
                    rk = mem_alloc(strlen(c->creator_id) + strlen(b->request_ids[i]) + 2);
                    sprintf(rk, "%s %s", c->creator_id, b->request_ids[i]);
                }
                sqlarr_add_text(&chats->arr[5], rk);
                free(rk);
                char *dk = NULL;
                if (c->kind == CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT && c->n_member_ids == 2) {
                    const char *x = c->member_ids[0], *y = c->member_ids[1];
                    if (strcmp(x, y) > 0) {
                        const char *t = x;
                        x = y;
                        y = t;
                    }
                    dk = mem_alloc(strlen(x) + strlen(y) + 2);
                    sprintf(dk, "%s %s", x, y);
                }
                sqlarr_add_text(&chats->arr[6], dk);
                free(dk);
            }
            add_members(&rows, &nrows, &rowcap, ev, c->n_member_ids, c->member_ids, true);
            touched[ntouched++] = ev->chat_id;
            break;
        }
        case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED:
            add_members(&rows, &nrows, &rowcap, ev, ev->members_added->n_user_ids,
                        ev->members_added->user_ids, true);
            touched[ntouched++] = ev->chat_id;
            break;
        case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED:
            add_members(&rows, &nrows, &rowcap, ev, ev->members_removed->n_user_ids,
                        ev->members_removed->user_ids, false);
            touched[ntouched++] = ev->chat_id;
            break;
        default:
            break;
        }
    }
    free(created);

    if (nrows > 0) {
        qsort(rows, nrows, sizeof(*rows), member_cmp);
        stmt *s = stmt_new(m, sql_members, 5);
        for (size_t i = 0; i < nrows; i++) {
            if (i + 1 < nrows && rows[i + 1].chat_id == rows[i].chat_id &&
                strcmp(rows[i + 1].user, rows[i].user) == 0)
                continue; /* a later write of the same key follows */
            sqlarr_add_i64(&s->arr[0], (int64_t)rows[i].chat_id);
            sqlarr_add_text(&s->arr[1], rows[i].user);
            sqlarr_add_bool(&s->arr[2], rows[i].add);
            sqlarr_add_i64(&s->arr[3], rows[i].at);
            sqlarr_add_i64(&s->arr[4], (int64_t)rows[i].event_id);
        }
        qsort(touched, ntouched, sizeof(*touched), u64_cmp);
        stmt *c = stmt_new(m, sql_counts, 1);
        for (size_t i = 0; i < ntouched; i++)
            if (i == 0 || touched[i] != touched[i - 1])
                sqlarr_add_i64(&c->arr[0], (int64_t)touched[i]);
    }
    free(rows);
    free(touched);

    if (m->nmsgs > 0) {
        qsort(m->msgs, m->nmsgs, sizeof(*m->msgs), msg_cmp);
        size_t k = 0; /* keep the greatest state of each message_id */
        for (size_t i = 0; i < m->nmsgs; i++) {
            if (i + 1 < m->nmsgs && m->msgs[i + 1]->message_id == m->msgs[i]->message_id)
                continue;
            m->msgs[k++] = m->msgs[i];
        }
        m->nmsgs = k;
        stmt *s = stmt_new(m, sql_messages, 10);
        for (size_t i = 0; i < m->nmsgs; i++) {
            const Chat__V1__Message *x = m->msgs[i];
            sqlarr_add_i64(&s->arr[0], (int64_t)x->chat_id);
            sqlarr_add_i64(&s->arr[1], (int64_t)x->message_id);
            sqlarr_add_text(&s->arr[2], x->sender_id);
            sqlarr_add_text(&s->arr[3], x->client_message_id);
            sqlarr_add_text(&s->arr[4], x->body);
            sqlarr_add_i64(&s->arr[5], x->created_at_ms);
            sqlarr_add_i64(&s->arr[6], x->updated_at_ms);
            sqlarr_add_i64(&s->arr[7], x->version);
            sqlarr_add_bool(&s->arr[8], x->deleted);
            sqlarr_add_i64(&s->arr[9],
                           (int64_t)hash_message(x->message_id, x->version, x->deleted));
        }
    }

    stmt *o = stmt_new(m, sql_offsets, 3);
    for (size_t i = 0; i < b->noffs; i++) {
        sqlarr_add_text(&o->arr[0], b->offs[i].topic);
        sqlarr_add_i64(&o->arr[1], b->offs[i].partition);
        sqlarr_add_i64(&o->arr[2], b->offs[i].next);
    }
    m->plan_ready = true;
}

/* --- the transaction --------------------------------------------------------------------- */

static void write_batch(materializer *m);
static void run_step(materializer *m);

static void changes_clear(materializer *m)
{
    for (size_t i = 0; i < m->nchanges; i++)
        free(m->changes[i].user);
    m->nchanges = 0;
}

static void fail_batch(materializer *m, const char *why)
{
    log_warn("materializer: batch of %zu records failed (%s); retrying in %d ms",
             m->writing->records, why, MZ_RETRY_MS);
    metrics_counter_inc(stats.batches_failed);
    changes_clear(m);
    if (m->conn != NULL) {
        pg_conn_release(m->conn); /* rolls the transaction back */
        m->conn = NULL;
    }
    struct timeval tv = {MZ_RETRY_MS / 1000, (MZ_RETRY_MS % 1000) * 1000};
    event_add(m->retry_ev, &tv);
}

static void update_lag(materializer *m)
{
    rd_kafka_t *rk = kafka_consumer_handle(m->kc);
    for (size_t i = 0; i < m->writing->noffs; i++) {
        const mz_offset *o = &m->writing->offs[i];
        int64_t lo = 0, hi = 0;
        if (rd_kafka_get_watermark_offsets(rk, o->topic, o->partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        size_t k;
        for (k = 0; k < m->nlags; k++)
            if (m->lags[k].partition == o->partition && strcmp(m->lags[k].topic, o->topic) == 0)
                break;
        if (k == m->nlags) {
            if (m->nlags == MZ_MAX_LAGS)
                continue;
            m->nlags++;
            snprintf(m->lags[k].topic, sizeof(m->lags[k].topic), "%s", o->topic);
            m->lags[k].partition = o->partition;
        }
        m->lags[k].lag = hi > o->next ? hi - o->next : 0;
    }
    int64_t total = 0;
    for (size_t k = 0; k < m->nlags; k++)
        total += m->lags[k].lag;
    metrics_gauge_set(stats.lag_messages, (double)total);
    if (m->writing->newest_ts > 0)
        metrics_gauge_set(stats.lag_seconds,
                          (double)(clock_wall_ms() - m->writing->newest_ts) / 1000.0);
}

static int chat_msg_cmp(const void *pa, const void *pb)
{
    const Chat__V1__Message *a = *(const Chat__V1__Message *const *)pa;
    const Chat__V1__Message *b = *(const Chat__V1__Message *const *)pb;
    if (a->chat_id != b->chat_id)
        return a->chat_id < b->chat_id ? -1 : 1;
    return a->message_id < b->message_id ? -1 : a->message_id > b->message_id;
}

/* One pipelined script call per chat of the batch (not per message): the materializer thread
 * and Redis then spend per batch what they used to spend per record. */
static void cache_messages(materializer *m)
{
    if (m->nmsgs == 0)
        return;
    qsort(m->msgs, m->nmsgs, sizeof(*m->msgs), chat_msg_cmp);
    size_t first = 0;
    for (size_t i = 1; i <= m->nmsgs; i++) {
        if (i < m->nmsgs && m->msgs[i]->chat_id == m->msgs[first]->chat_id)
            continue;
        cache_apply(m->rc, m->msgs[first]->chat_id, &m->msgs[first], i - first, NULL, NULL);
        first = i;
    }
}

static void committed(materializer *m)
{
    batch *b = m->writing;
    double secs = (double)(clock_mono_ms() - m->t0) / 1000.0;
    metrics_histogram_observe(stats.apply_seconds, secs);
    metrics_histogram_observe(stats.batch_size, (double)b->records);
    metrics_counter_add(stats.events_applied, b->n);
    log_debug("materializer: committed %zu records (%zu events, %zu messages) in %.1f ms",
              b->records, b->n, m->nmsgs, secs * 1000);
    for (size_t i = 0; i < b->n; i++)
        if (b->ev[i]->event_id != 0)
            waiters_signal(m->w, b->ev[i]->event_id);
    /* Redis follows the committed state; a failure there is counted and the next write of
     * the same key (or the TTL) repairs it. */
    for (size_t i = 0; i < m->nchanges; i++)
        cache_member(m->rc, m->changes[i].chat_id, m->changes[i].user, m->changes[i].add);
    changes_clear(m);
    cache_messages(m);
    update_lag(m);
    plan_free(m);
    batch_free(b);
    m->writing = NULL;
    if (kafka_consumer_paused(m->kc) && !m->stopping)
        kafka_consumer_resume(m->kc);
    if (m->filling->records > 0)
        event_active(m->flush_ev, EV_TIMEOUT, 0);
}

static void on_step(pg_pool *pool, PGresult *res, int err, void *ud)
{
    (void)pool;
    materializer *m = ud;
    if (err != 0) {
        fail_batch(m, pg_strerror(err)); /* releases (a broken connection is replaced) */
        return;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char why[256];
        snprintf(why, sizeof(why), "%s", PQresultErrorMessage(res));
        why[strcspn(why, "\n")] = '\0';
        fail_batch(m, why);
        return;
    }
    if (m->step >= 1 && m->step <= m->nstmts && m->stmts[m->step - 1].sql == sql_members) {
        int rows = PQntuples(res);
        for (int r = 0; r < rows; r++) {
            if (m->nchanges == m->changecap) {
                m->changecap = m->changecap ? 2 * m->changecap : 64;
                m->changes = mem_realloc(m->changes, m->changecap * sizeof(*m->changes));
            }
            m->changes[m->nchanges++] =
                (member_change){strtoull(PQgetvalue(res, r, 0), NULL, 10),
                                mem_strdup(PQgetvalue(res, r, 1)), PQgetvalue(res, r, 2)[0] == 't'};
        }
    }
    if (m->step == m->nstmts + 1) { /* COMMIT answered */
        pg_conn_release(m->conn);
        m->conn = NULL;
        committed(m);
        return;
    }
    m->step++;
    run_step(m);
}

/* step 0: BEGIN; 1..nstmts: the statements; nstmts + 1: COMMIT. */
static void run_step(materializer *m)
{
    int rv;
    if (m->step == 0) {
        rv = pg_conn_query(m->conn, "BEGIN", NULL, on_step, m);
    } else if (m->step <= m->nstmts) {
        stmt *s = &m->stmts[m->step - 1];
        const char *vals[MZ_MAX_PARAMS];
        for (int i = 0; i < s->n; i++)
            vals[i] = sqlarr_str(&s->arr[i]);
        pg_params p = {.n = s->n, .values = vals};
        rv = pg_conn_query(m->conn, s->sql, &p, on_step, m);
    } else {
        rv = pg_conn_query(m->conn, "COMMIT", NULL, on_step, m);
    }
    if (rv != 0)
        fail_batch(m, pg_strerror(rv));
}

static void on_acquired(pg_pool *pool, pg_conn *conn, int err, void *ud)
{
    (void)pool;
    materializer *m = ud;
    if (err != 0 || conn == NULL) {
        fail_batch(m, pg_strerror(err));
        return;
    }
    m->conn = conn;
    m->step = 0;
    m->t0 = clock_mono_ms();
    run_step(m);
}

static void write_batch(materializer *m)
{
    if (m->stopping)
        return;
    if (!m->plan_ready)
        plan_build(m);
    int rv = pg_pool_acquire(m->pg, on_acquired, m);
    if (rv != 0)
        fail_batch(m, pg_strerror(rv));
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    materializer *m = arg;
    if (m->writing != NULL || m->filling->records == 0 || m->stopping)
        return;
    m->writing = m->filling;
    m->filling = batch_new();
    write_batch(m);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_batch(arg);
}

/* --- consuming -------------------------------------------------------------------------- */

/* Pausing drops what librdkafka prefetched, and after the resume the next records came
 * 200-400 ms later here (bench/chats/README.md): pausing at every batch_max records left the
 * consumer idle for most of the run. Keep filling while a transaction runs and pause only at
 * a level whose transaction takes longer to write than that refetch, so the refetch overlaps
 * the write. Memory: a decoded record is a few hundred bytes. */
static size_t high_water(const materializer *m)
{
    return (size_t)m->s->batch_max * MZ_HIGH_WATER_BATCHES;
}

static void on_message(kafka_consumer *c, const kafka_message *km, void *ud)
{
    materializer *m = ud;
    batch *b = m->filling;
    batch_note_offset(b, km->topic, km->partition, km->offset);
    if (km->timestamp_ms > b->newest_ts)
        b->newest_ts = km->timestamp_ms;
    Chat__V1__ChatEvent *ev =
        km->value ? chat__v1__chat_event__unpack(NULL, km->value_len, km->value) : NULL;
    if (ev == NULL || !event_ok(ev)) {
        log_warn("materializer: skipping record %s/%" PRId32 "@%" PRId64 " (%s)", km->topic,
                 km->partition, km->offset, ev == NULL ? "undecodable" : "invalid or unknown");
        metrics_counter_inc(stats.events_skipped);
        if (ev != NULL)
            chat__v1__chat_event__free_unpacked(ev, NULL);
    } else {
        const void *v;
        size_t len;
        char *rid = NULL;
        if (kafka_message_header(km, MZ_REQUEST_HEADER, &v, &len) == 0 && len > 0 &&
            len <= VALIDATE_REQUEST_ID_MAX) {
            rid = mem_strndup(v, len);
            if (!validate_token_id(rid)) {
                free(rid);
                rid = NULL;
            }
        }
        batch_add(b, ev, rid);
    }
    if (m->writing == NULL)
        event_active(m->flush_ev, EV_TIMEOUT, 0);
    else if (b->records >= high_water(m) && !kafka_consumer_paused(c))
        kafka_consumer_pause(c); /* resumed when the running transaction ends */
}

static void request_offsets(materializer *m);

static void on_offsets(pg_pool *pool, PGresult *res, int err, void *ud)
{
    (void)pool;
    materializer **slot = ud;
    materializer *m = slot[0];
    uint64_t gen = (uint64_t)(uintptr_t)slot[1];
    free(slot);
    if (gen != m->assign_gen || m->pending_assign == NULL)
        return; /* superseded by a newer rebalance */
    if (err != 0 || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("materializer: reading stored offsets failed (%s); retrying",
                 err ? pg_strerror(err) : PQresultErrorMessage(res));
        struct timeval tv = {1, 0};
        event_add(m->assign_retry_ev, &tv);
        return;
    }
    rd_kafka_topic_partition_list_t *parts = m->pending_assign;
    for (int i = 0; i < parts->cnt; i++) {
        parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        for (int r = 0; r < PQntuples(res); r++) {
            if (strcmp(PQgetvalue(res, r, 0), parts->elems[i].topic) == 0 &&
                atoi(PQgetvalue(res, r, 1)) == parts->elems[i].partition) {
                parts->elems[i].offset = strtoll(PQgetvalue(res, r, 2), NULL, 10);
                break;
            }
        }
        log_info("materializer: assigned %s/%d from %s offset %" PRId64, parts->elems[i].topic,
                 parts->elems[i].partition,
                 parts->elems[i].offset == RD_KAFKA_OFFSET_BEGINNING ? "the beginning (no stored)"
                                                                     : "stored",
                 parts->elems[i].offset);
    }
    int rv = kafka_consumer_assign(m->kc, parts);
    if (rv != 0)
        log_warn("materializer: assign: %s", kafka_strerror(rv));
    rd_kafka_topic_partition_list_destroy(parts);
    m->pending_assign = NULL;
}

static void request_offsets(materializer *m)
{
    if (m->pending_assign == NULL)
        return;
    sqlarr topics;
    sqlarr_init(&topics);
    for (int i = 0; i < m->pending_assign->cnt; i++)
        sqlarr_add_text(&topics, m->pending_assign->elems[i].topic);
    const char *vals[] = {sqlarr_str(&topics)};
    pg_params p = {.n = 1, .values = vals};
    void **slot = mem_alloc(2 * sizeof(void *));
    slot[0] = m;
    slot[1] = (void *)(uintptr_t)m->assign_gen;
    int rv = pg_pool_query(m->pg,
                           "SELECT topic, partition, next_offset FROM kafka_offsets "
                           "WHERE topic = ANY($1::text[])",
                           &p, on_offsets, slot);
    sqlarr_free(&topics);
    if (rv != 0) {
        free(slot);
        struct timeval tv = {1, 0};
        event_add(m->assign_retry_ev, &tv);
    }
}

static void on_assign_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    request_offsets(arg);
}

static int on_rebalance(kafka_consumer *c, kafka_rebalance_kind kind,
                        rd_kafka_topic_partition_list_t *parts, void *ud)
{
    (void)c;
    materializer *m = ud;
    m->assign_gen++;
    if (m->pending_assign != NULL) {
        rd_kafka_topic_partition_list_destroy(m->pending_assign);
        m->pending_assign = NULL;
    }
    if (kind != KAFKA_REBALANCE_ASSIGN) {
        log_info("materializer: %d partition(s) %s", parts->cnt,
                 kind == KAFKA_REBALANCE_LOST ? "lost" : "revoked");
        return 0;
    }
    m->pending_assign = rd_kafka_topic_partition_list_copy(parts);
    request_offsets(m);
    return KAFKA_REBALANCE_DEFER;
}

/* --- thread ----------------------------------------------------------------------------- */

static void on_exit_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    materializer *m = arg;
    event_base_loopexit(m->base, NULL);
}

static void on_closed(kafka_consumer *c, void *ud)
{
    (void)c;
    materializer *m = ud;
    event_base_loopexit(m->base, NULL);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    materializer *m = arg;
    m->stopping = true;
    struct timeval tv = {5, 0}; /* do not wait for an unreachable broker forever */
    event_add(m->exit_ev, &tv);
    if (kafka_consumer_close(m->kc, on_closed, m) != 0)
        event_base_loopexit(m->base, NULL);
}

static void *thread_main(void *arg)
{
    materializer *m = arg;
    event_base_dispatch(m->base);
    return NULL;
}

int materializer_start(materializer **out, const settings *s, waiters *w)
{
    materializer *m = mem_calloc(1, sizeof(*m));
    m->s = s;
    m->w = w;
    m->filling = batch_new();
    m->base = event_base_new();
    if (m->base == NULL)
        abort();
    m->stop_ev = event_new(m->base, -1, 0, on_stop, m);
    m->flush_ev = event_new(m->base, -1, 0, on_flush, m);
    m->retry_ev = evtimer_new(m->base, on_retry, m);
    m->assign_retry_ev = evtimer_new(m->base, on_assign_retry, m);
    m->exit_ev = evtimer_new(m->base, on_exit_timer, m);

    pg_config pc;
    pg_config_init(&pc);
    pc.conninfo = s->pg_url;
    pc.name = "materializer-pg";
    pc.size = 2; /* one held for the batch transaction, one for offset reads */
    pc.queue_timeout_ms = 0;
    if (pg_pool_new(&m->pg, m->base, &pc) != 0) {
        log_error("materializer: bad pg-url");
        return -1;
    }
    redis_config rc;
    redis_config_init(&rc);
    rc.url = s->redis_url;
    rc.name = "materializer-redis";
    if (redis_client_new(&m->rc, m->base, &rc) != 0) {
        log_error("materializer: bad redis-url");
        return -1;
    }
    char session[32];
    snprintf(session, sizeof(session), "session.timeout.ms=%d", s->session_timeout_ms);
    const char *props[] = {"auto.offset.reset=earliest",
                           "enable.auto.commit=false",
                           "topic.metadata.refresh.interval.ms=10000",
                           "fetch.wait.max.ms=20",
                           "heartbeat.interval.ms=1000",
                           session,
                           NULL};
    kafka_config kc;
    kafka_config_init(&kc);
    kc.brokers = s->kafka_brokers;
    kc.client_id = "svc-chats-materializer";
    kc.name = "materializer";
    kc.group_id = s->group;
    kc.offsets = KAFKA_OFFSETS_MANUAL;
    kc.batch_max = (uint32_t)(s->batch_max < 2000 ? s->batch_max : 2000);
    kc.props = props;
    kafka_consumer_callbacks cbs = {.on_message = on_message, .on_rebalance = on_rebalance};
    if (kafka_consumer_new(&m->kc, m->base, &kc, &cbs, m) != 0) {
        log_error("materializer: cannot create the Kafka consumer");
        return -1;
    }
    const char *topics[] = {MATERIALIZER_TOPICS};
    if (kafka_consumer_subscribe(m->kc, topics, 1) != 0) {
        log_error("materializer: cannot subscribe to %s", MATERIALIZER_TOPICS);
        return -1;
    }
    if (pthread_create(&m->thread, NULL, thread_main, m) != 0) {
        log_error("materializer: cannot start its thread");
        return -1;
    }
    log_info("materializer: group=%s topics=%s batch-max=%d", s->group, MATERIALIZER_TOPICS,
             s->batch_max);
    *out = m;
    return 0;
}

void materializer_stop(materializer *m)
{
    if (m == NULL)
        return;
    event_active(m->stop_ev, EV_TIMEOUT, 0);
    pthread_join(m->thread, NULL);
    kafka_consumer_free(m->kc);
    if (m->conn != NULL)
        pg_conn_release(m->conn);
    pg_pool_free(m->pg);
    redis_client_free(m->rc);
    if (m->pending_assign != NULL)
        rd_kafka_topic_partition_list_destroy(m->pending_assign);
    plan_free(m);
    changes_clear(m);
    free(m->changes);
    batch_free(m->writing);
    batch_free(m->filling);
    /* The clients' own deferred callbacks (a host-name lookup the pool cancelled runs its
     * callback later, from the loop) run once more on the stopped loop, so nothing they hold
     * leaks; our events are taken off first so none of them fires into freed state. */
    event_del(m->stop_ev);
    event_del(m->flush_ev);
    event_del(m->retry_ev);
    event_del(m->assign_retry_ev);
    event_del(m->exit_ev);
    event_base_loop(m->base, EVLOOP_NONBLOCK);
    event_free(m->stop_ev);
    event_free(m->flush_ev);
    event_free(m->retry_ev);
    event_free(m->assign_retry_ev);
    event_free(m->exit_ev);
    event_base_free(m->base);
    free(m);
}
