/*
 * cache.h: the Redis recent-message cache and the chat member sets.
 *
 * Keys (all with the cache TTL, refreshed by every write; ids are 20-digit zero-padded
 * decimal so that byte order is id order):
 *
 *   chat:<id>:recent        sorted set, every member scored 0 (so ordered by the padded id)
 *   chat:<id>:recent:msgs   hash: <padded id> -> serialized chat.v1.Message,
 *                           "v:<padded id>" -> "<updated_at_ms> <version> <deleted 0|1> <body>"
 *   chat:<id>:recent:floor  the cache holds every message of the chat with id >= floor
 *                           (all zeros: the whole chat); absent = cold (not served)
 *   chat:<id>:recent:gen    bumped by every materializer write, warm or not: a fill from
 *                           PostgreSQL is applied only if it did not change since the read
 *   chat:<id>:members       set of current member ids (no TTL; read by svc-presence's
 *                           CountOnline), written after the membership change committed
 *
 * Scripts (EVALSHA, EVAL on NOSCRIPT):
 *   apply: upsert a chat's message states (one call per chat and materializer batch), each
 *          if newer by (updated_at_ms, version), ties broken as in events.proto (deleted
 *          wins, then the bytewise greater body); returns -1 when the cache is cold, else how
 *          many states were applied (ids below the floor and older states are skipped).
 *          Trims to the window once, raising the floor.
 *   fill:  replace the cache with a page read from PostgreSQL (unless gen moved).
 *   read:  the newest N messages if the caller is in the member set and the cache can answer
 *          exactly (whole chat cached, or more than N cached); otherwise a miss.
 */
#ifndef CHATS_CACHE_H
#define CHATS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/v1/chats.pb-c.h"
#include "redis.h"

/* Loads the scripts (process-wide, immutable). Returns 0 or REDIS_E_INVALID. */
int cache_init(int window, int ttl_s);
void cache_shutdown(void);

/* Materializer: apply the |n| message states of chat |chat_id| in |msgs| (ascending
 * message_id, one state per id; only the newest window of them are sent, older ones could not
 * survive the trim). |msgs| stays the caller's; the call copies what it sends. |cb| may be
 * NULL (errors are counted). Returns as redis_client_eval. */
int cache_apply(redis_client *rc, uint64_t chat_id, const Chat__V1__Message *const *msgs, size_t n,
                redis_reply_cb cb, void *ud);

/* Materializer: add or remove |user| in chat:<id>:members. */
int cache_member(redis_client *rc, uint64_t chat_id, const char *user, bool add);

/* Result of cache_read. On a hit |msgs| (|n| of them, ascending) are owned by the callee and
 * valid during the callback only. */
typedef void (*cache_read_cb)(bool hit, Chat__V1__Message **msgs, size_t n, bool has_more,
                              void *ud);

/* Worker: reads the newest |page| messages for |user| (NULL = no membership check). |cb| is
 * called exactly once (a refused command reports a miss synchronously). */
void cache_read(redis_client *rc, uint64_t chat_id, const char *user, uint32_t page,
                cache_read_cb cb, void *ud);

/* Worker: the chat's generation counter ("0" when absent) for a later cache_fill. |cb| gets
 * NULL on error. */
typedef void (*cache_gen_cb)(const char *gen, void *ud);
void cache_gen(redis_client *rc, uint64_t chat_id, cache_gen_cb cb, void *ud);

/* Worker: fills the cache with |n| messages (ascending) read under generation |gen|; |whole|
 * when they are all the chat has. Fire and forget. */
void cache_fill(redis_client *rc, uint64_t chat_id, const char *gen, Chat__V1__Message *const *msgs,
                size_t n, bool whole);

#endif /* CHATS_CACHE_H */
