/*
 * store.h: the read queries of ChatsService on PostgreSQL (the writes are the materializer's).
 *
 * Each function sends one statement on |pool| (one round trip) and calls |cb| with the raw
 * result (pg.h: called exactly once when 0 is returned). Every chat-scoped statement starts
 * with the same access check, so a query also tells unknown chats (no rows) from forbidden
 * ones (column 0 false); |user| NULL skips the membership part (service tokens).
 *
 * The store_* decoders read rows into protobuf-c structs whose strings point into the
 * PGresult: use them within the callback only.
 *
 * Ids are bigint in PostgreSQL; Snowflake ids never set bit 63, and range bounds above
 * INT64_MAX are clamped (store_clamp).
 */
#ifndef CHATS_STORE_H
#define CHATS_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/v1/chats.pb-c.h"
#include "pg.h"

/* Columns of a message in query results: message_id, chat_id, sender_id, client_message_id,
 * body, created_at_ms, updated_at_ms, version, deleted. */
#define STORE_MESSAGE_COLS 9

/* GetChat / write pre-checks: one row (none = unknown chat): allowed, kind, title, creator_id,
 * created_at_ms, member_count, members (space-separated, byte order), newest message id. */
int store_get_chat(pg_pool *pool, uint64_t chat_id, const char *user, pg_result_cb cb, void *ud);

/* ListChats: rows chat_id, kind, title, creator_id, created_at_ms, member_count, newest id. */
int store_list_chats(pg_pool *pool, const char *user, uint64_t after, uint32_t limit,
                     pg_result_cb cb, void *ud);

/* GetHistory: rows (allowed, message columns...) ascending; message columns NULL when the page
 * is empty or access is refused. |limit| rows at most (ask for page + 1 to learn has_more).
 * Backward: ids < |anchor| (0 = no bound), the newest |limit|; forward: ids > |anchor|. */
int store_history(pg_pool *pool, uint64_t chat_id, const char *user, uint64_t anchor, bool forward,
                  uint32_t limit, pg_result_cb cb, void *ud);

/* GetRangeHash over [from, to) with |n| buckets (0 = none): rows (allowed, bucket 1..n or
 * NULL, count, xor as signed bigint). */
int store_range_hash(pg_pool *pool, uint64_t chat_id, const char *user, uint64_t from, uint64_t to,
                     uint32_t n, pg_result_cb cb, void *ud);

/* PullMessages: acknowledges |ack_pos| first when |ack|; reads after |pos| when |ack| or
 * |explicit_pos|, else after the stored position. Rows (after, message columns...) ascending by
 * message_id; message columns NULL when empty. */
int store_pull(pg_pool *pool, const char *user, const char *device, bool ack, bool explicit_pos,
               uint64_t pos, uint32_t limit, pg_result_cb cb, void *ud);

/* Edit/Delete pre-check: one row (none = unknown chat): allowed, message columns (NULL when the
 * message is not in that chat). */
int store_get_message(pg_pool *pool, uint64_t chat_id, const char *user, uint64_t message_id,
                      pg_result_cb cb, void *ud);

/* CreateChat retries: one row: chat id of the caller's earlier request (or NULL), chat id of the
 * existing direct chat of the pair (or NULL). Either key may be NULL. */
int store_find_chat(pg_pool *pool, const char *request_key, const char *direct_key, pg_result_cb cb,
                    void *ud);

/* Decoders. */
bool store_is_null(const PGresult *r, int row, int col);
uint64_t store_u64(const PGresult *r, int row, int col);
int64_t store_i64(const PGresult *r, int row, int col);
bool store_bool(const PGresult *r, int row, int col);
/* Fills |m| (initialized here) from STORE_MESSAGE_COLS columns starting at |col|. */
void store_message(const PGresult *r, int row, int col, Chat__V1__Message *m);
/* Fills |c| (initialized here) from kind, title, creator_id, created_at_ms, member_count at
 * |col|; chat_id given. member_ids not set. */
void store_chat(const PGresult *r, int row, int col, uint64_t chat_id, Chat__V1__Chat *c);

/* A result's error line for logs/statuses, or NULL when |r| is OK. */
const char *store_error(const PGresult *r);

/* Clamp an id to the bigint range. */
int64_t store_clamp(uint64_t id);

#endif /* CHATS_STORE_H */
