/*
 * tokens.h: a per-worker cache of verified bearer tokens.
 *
 * Verifying an HS256 JWT (base64, JSON, HMAC via libjwt) was about a third of svc-presence's CPU
 * per heartbeat, and clients send the same token on every call of a connection. A token that
 * verified once is remembered with its identity: a later call with the byte-identical token
 * (compared in full, not by hash) reuses the identity as long as now < exp + leeway, the same
 * condition the verifier applies. A forged or altered token never matches a cached one, so it
 * still goes to the verifier. Bounded: at most TOKENS_ENTRIES tokens, found through a hash
 * index of TOKENS_SLOTS compact slots (open addressing, at most 3/8 full, so probes stay short
 * even while the cache churns); when full, a new token replaces one chosen in CLOCK order
 * (tokens used since the hand last passed are skipped once), so any working set of up to
 * TOKENS_ENTRIES tokens stays cached whatever its hashes (a direct-mapped table lost ~45% of a
 * 10,000-token round robin to collisions). Tokens longer than TOKENS_MAX_LEN are not cached.
 *
 * Single-threaded: one cache per worker, used on its loop only.
 */
#ifndef PRESENCE_TOKENS_H
#define PRESENCE_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"

#define TOKENS_SLOTS 32768   /* index slots per worker (a power of 2), 8 bytes each */
#define TOKENS_ENTRIES 12288 /* tokens cached per worker (about 4.5 MiB when full) */
#define TOKENS_MAX_LEN 1024  /* bytes; longer tokens are verified every time */

typedef struct token_cache token_cache;

/* Creates an empty cache. |leeway_s| is the verifier's clock leeway for "exp". */
token_cache *tokens_new(int leeway_s);
void tokens_free(token_cache *tc);

/* Verifies the "authorization" value |authorization| ("Bearer <token>") with |v|, through the
 * cache. Same results as auth_verify_bearer(). |now_s| is the current Unix time. */
int tokens_verify_bearer(token_cache *tc, const auth_verifier *v, const char *authorization,
                         int64_t now_s, auth_identity *id);

/* Hits and misses so far (for tests). */
void tokens_stats(const token_cache *tc, uint64_t *hits, uint64_t *misses);

/* Tokens cached now. */
size_t tokens_count(const token_cache *tc);

#endif /* PRESENCE_TOKENS_H */
