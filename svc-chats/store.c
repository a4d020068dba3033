/* store.c: read queries (see store.h). */
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "hash.h"
#include "hashblocks.h"
#include "sqlarr.h"

#define MSG_COLS                                                                                   \
    "m.message_id, m.chat_id, m.sender_id, m.client_message_id, m.body, m.created_at_ms, "         \
    "m.updated_at_ms, m.version, m.deleted"

/* $1 chat_id, $2 user (NULL = any). One row per existing chat: allowed + chat columns. */
#define ACCESS_CTE                                                                                 \
    "WITH acc AS (SELECT c.kind, c.title, c.creator_id, c.created_at_ms, c.member_count, "         \
    "($2::text IS NULL OR EXISTS (SELECT 1 FROM chat_members cm WHERE cm.chat_id = c.chat_id "     \
    "AND cm.user_id = $2::text AND cm.is_member)) AS allowed FROM chats c "                        \
    "WHERE c.chat_id = $1::bigint) "

int64_t store_clamp(uint64_t id)
{
    return id > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)id;
}

static void fmt_i64(char *buf, int64_t v)
{
    snprintf(buf, 24, "%" PRId64, v);
}

int store_get_chat(pg_pool *pool, uint64_t chat_id, const char *user, pg_result_cb cb, void *ud)
{
    char id[24];
    fmt_i64(id, store_clamp(chat_id));
    const char *v[] = {id, user};
    pg_params p = {.n = 2, .values = v};
    return pg_pool_query(pool,
                         ACCESS_CTE
                         "SELECT acc.allowed, acc.kind, acc.title, acc.creator_id, "
                         "acc.created_at_ms, acc.member_count, "
                         "(SELECT string_agg(user_id, ' ' ORDER BY user_id COLLATE \"C\") "
                         "FROM chat_members WHERE chat_id = $1::bigint AND is_member), "
                         "(SELECT max(message_id) FROM messages WHERE chat_id = $1::bigint) "
                         "FROM acc",
                         &p, cb, ud);
}

int store_list_chats(pg_pool *pool, const char *user, uint64_t after, uint32_t limit,
                     pg_result_cb cb, void *ud)
{
    char a[24], l[24];
    fmt_i64(a, store_clamp(after));
    fmt_i64(l, limit);
    const char *v[] = {user, a, l};
    pg_params p = {.n = 3, .values = v};
    return pg_pool_query(pool,
                         "SELECT c.chat_id, c.kind, c.title, c.creator_id, c.created_at_ms, "
                         "c.member_count, (SELECT max(message_id) FROM messages m "
                         "WHERE m.chat_id = c.chat_id) FROM chat_members cm "
                         "JOIN chats c ON c.chat_id = cm.chat_id WHERE cm.user_id = $1 "
                         "AND cm.is_member AND cm.chat_id > $2::bigint ORDER BY cm.chat_id "
                         "LIMIT $3::int",
                         &p, cb, ud);
}

int store_history(pg_pool *pool, uint64_t chat_id, const char *user, uint64_t anchor, bool forward,
                  uint32_t limit, pg_result_cb cb, void *ud)
{
    char id[24], a[24], l[24];
    fmt_i64(id, store_clamp(chat_id));
    fmt_i64(l, limit);
    const char *sql;
    if (forward) {
        fmt_i64(a, store_clamp(anchor));
        sql = ACCESS_CTE "SELECT acc.allowed, " MSG_COLS " FROM acc LEFT JOIN LATERAL "
                         "(SELECT * FROM messages WHERE chat_id = $1::bigint AND acc.allowed "
                         "AND message_id > $3::bigint ORDER BY message_id LIMIT $4::int) m "
                         "ON true ORDER BY m.message_id";
    } else {
        fmt_i64(a, anchor == 0 || anchor > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)anchor - 1);
        sql = ACCESS_CTE "SELECT acc.allowed, " MSG_COLS " FROM acc LEFT JOIN LATERAL "
                         "(SELECT * FROM messages WHERE chat_id = $1::bigint AND acc.allowed "
                         "AND message_id <= $3::bigint ORDER BY message_id DESC "
                         "LIMIT $4::int) m ON true ORDER BY m.message_id";
    }
    const char *v[] = {id, user, a, l};
    pg_params p = {.n = 4, .values = v};
    return pg_pool_query(pool, sql, &p, cb, ud);
}

int store_range_hash(pg_pool *pool, uint64_t chat_id, const char *user, uint64_t from, uint64_t to,
                     uint32_t n, pg_result_cb cb, void *ud)
{
    char id[24];
    fmt_i64(id, store_clamp(chat_id));
    /* Each bucket is split into runs of whole blocks of message_hash_blocks (a few hundred rows
     * for any range) and at most two short raw id ranges of messages (hashblocks.h); every piece
     * is one index range scan, summed per bucket. Buckets without messages give no row. */
    sqlarr rb, rbits, rfirst, rlast, mb, mfirst, mlast;
    sqlarr *all[] = {&rb, &rbits, &rfirst, &rlast, &mb, &mfirst, &mlast};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sqlarr_init(all[i]);
    uint32_t buckets = n == 0 ? 1 : n;
    for (uint32_t i = 0; i < buckets; i++) {
        uint64_t lo = from, hi = to;
        if (n > 0)
            hash_bucket_bounds(from, to, n, i, &lo, &hi);
        hashblocks_plan plan;
        hashblocks_split(lo, hi, &plan);
        for (size_t k = 0; k < plan.nruns; k++) {
            sqlarr_add_i64(&rb, i + 1);
            sqlarr_add_i64(&rbits, plan.runs[k].bits);
            sqlarr_add_i64(&rfirst, plan.runs[k].first);
            sqlarr_add_i64(&rlast, plan.runs[k].last);
        }
        for (size_t k = 0; k < plan.nraw; k++) {
            sqlarr_add_i64(&mb, i + 1);
            sqlarr_add_i64(&mfirst, plan.raw[k].first);
            sqlarr_add_i64(&mlast, plan.raw[k].last);
        }
    }
    const char *v[] = {id,
                       user,
                       sqlarr_str(&rb),
                       sqlarr_str(&rbits),
                       sqlarr_str(&rfirst),
                       sqlarr_str(&rlast),
                       sqlarr_str(&mb),
                       sqlarr_str(&mfirst),
                       sqlarr_str(&mlast)};
    pg_params p = {.n = 9, .values = v};
    int rv = pg_pool_query(
        pool,
        ACCESS_CTE "SELECT acc.allowed, x.b, x.n, x.h FROM acc LEFT JOIN LATERAL "
                   "(SELECT p.b, sum(p.n)::bigint AS n, bit_xor(p.h) AS h FROM ("
                   "SELECT k.b, s.n, s.h FROM unnest($3::int[], $4::smallint[], $5::bigint[], "
                   "$6::bigint[]) AS k(b, bits, lo, hi), LATERAL (SELECT sum(n) AS n, "
                   "bit_xor(x) AS h FROM message_hash_blocks WHERE chat_id = $1::bigint AND "
                   "bits = k.bits AND blk >= k.lo AND blk <= k.hi) s "
                   "UNION ALL "
                   "SELECT k.b, s.n, s.h FROM unnest($7::int[], $8::bigint[], $9::bigint[]) "
                   "AS k(b, lo, hi), LATERAL (SELECT count(*) AS n, bit_xor(h) AS h FROM "
                   "messages WHERE chat_id = $1::bigint AND message_id >= k.lo AND "
                   "message_id <= k.hi) s) p "
                   "WHERE acc.allowed GROUP BY p.b HAVING sum(p.n) > 0) x ON true ORDER BY x.b",
        &p, cb, ud);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        sqlarr_free(all[i]);
    return rv;
}

int store_pull(pg_pool *pool, const char *user, const char *device, bool ack, bool explicit_pos,
               uint64_t pos, uint32_t limit, pg_result_cb cb, void *ud)
{
    char ps[24], l[24], now[24];
    fmt_i64(ps, store_clamp(pos));
    fmt_i64(l, limit);
    fmt_i64(now, clock_wall_ms());
    const char *v[] = {user, device, ps, ack ? "t" : "f", now, explicit_pos ? "t" : "f", l};
    pg_params p = {.n = 7, .values = v};
    /* The acknowledgement and the read are one statement: the CTE's write is not visible to
     * the read (same snapshot), so the read uses the acknowledged position itself. Each chat
     * contributes at most |limit| rows through its primary-key range scan. */
    return pg_pool_query(
        pool,
        "WITH ack AS (INSERT INTO pull_positions (user_id, device_id, after_message_id, "
        "updated_at_ms) SELECT $1::text, $2::text, $3::bigint, $5::bigint WHERE $4::bool "
        "ON CONFLICT (user_id, device_id) DO UPDATE SET after_message_id = "
        "EXCLUDED.after_message_id, updated_at_ms = EXCLUDED.updated_at_ms), "
        "pos AS (SELECT CASE WHEN $4::bool OR $6::bool THEN $3::bigint ELSE COALESCE((SELECT "
        "after_message_id FROM pull_positions WHERE user_id = $1::text AND device_id = "
        "$2::text), 0) END AS after) "
        "SELECT pos.after, " MSG_COLS " FROM pos LEFT JOIN LATERAL (SELECT mm.* FROM "
        "chat_members cm CROSS JOIN LATERAL (SELECT * FROM messages x WHERE x.chat_id = "
        "cm.chat_id AND x.message_id > pos.after ORDER BY x.message_id LIMIT $7::int) mm "
        "WHERE cm.user_id = $1::text AND cm.is_member ORDER BY mm.message_id LIMIT $7::int) m "
        "ON true ORDER BY m.message_id",
        &p, cb, ud);
}

int store_get_message(pg_pool *pool, uint64_t chat_id, const char *user, uint64_t message_id,
                      pg_result_cb cb, void *ud)
{
    char id[24], mid[24];
    fmt_i64(id, store_clamp(chat_id));
    fmt_i64(mid, store_clamp(message_id));
    const char *v[] = {id, user, mid};
    pg_params p = {.n = 3, .values = v};
    return pg_pool_query(pool,
                         ACCESS_CTE "SELECT acc.allowed, " MSG_COLS " FROM acc LEFT JOIN "
                                    "messages m ON m.chat_id = $1::bigint AND m.message_id = "
                                    "$3::bigint",
                         &p, cb, ud);
}

int store_find_chat(pg_pool *pool, const char *request_key, const char *direct_key, pg_result_cb cb,
                    void *ud)
{
    const char *v[] = {request_key, direct_key};
    pg_params p = {.n = 2, .values = v};
    return pg_pool_query(pool,
                         "SELECT (SELECT chat_id FROM chats WHERE request_key = $1::text "
                         "ORDER BY chat_id LIMIT 1), (SELECT chat_id FROM chats WHERE "
                         "direct_key = $2::text ORDER BY chat_id LIMIT 1)",
                         &p, cb, ud);
}

bool store_is_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}

uint64_t store_u64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

int64_t store_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

bool store_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

void store_message(const PGresult *r, int row, int col, Chat__V1__Message *m)
{
    chat__v1__message__init(m);
    m->message_id = store_u64(r, row, col);
    m->chat_id = store_u64(r, row, col + 1);
    m->sender_id = PQgetvalue(r, row, col + 2);
    m->client_message_id = PQgetvalue(r, row, col + 3);
    m->body = PQgetvalue(r, row, col + 4);
    m->created_at_ms = store_i64(r, row, col + 5);
    m->updated_at_ms = store_i64(r, row, col + 6);
    m->version = (uint32_t)store_i64(r, row, col + 7);
    m->deleted = store_bool(r, row, col + 8);
}

void store_chat(const PGresult *r, int row, int col, uint64_t chat_id, Chat__V1__Chat *c)
{
    chat__v1__chat__init(c);
    c->chat_id = chat_id;
    c->kind = (Chat__V1__ChatKind)store_i64(r, row, col);
    c->title = PQgetvalue(r, row, col + 1);
    c->creator_id = PQgetvalue(r, row, col + 2);
    c->created_at_ms = store_i64(r, row, col + 3);
    c->member_count = (uint32_t)store_i64(r, row, col + 4);
}

const char *store_error(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return NULL;
    return PQresultErrorMessage(r);
}
