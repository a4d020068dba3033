/* tokens.c: per-worker cache of verified bearer tokens (see tokens.h). */
#include "tokens.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "mem.h"

#define MASK (TOKENS_SLOTS - 1)

typedef struct token_entry {
    char *token;      /* owned copy */
    uint32_t len;     /* bytes in |token| */
    uint32_t hash;    /* token_hash() */
    bool used;        /* hit since the clock hand last passed (second chance) */
    auth_identity id; /* what it verified to */
} token_entry;

/* The index is open addressing with linear probing over two compact arrays (8 bytes a slot,
 * at most 3/8 full), so a probe touches no entry but the one that matches; the entries are a
 * dense array that the CLOCK hand walks when the cache is full. */
struct token_cache {
    uint32_t slot_hash[TOKENS_SLOTS];    /* hash of the entry in each slot */
    uint32_t slot_entry[TOKENS_SLOTS];   /* entry index + 1; 0 = empty */
    token_entry entries[TOKENS_ENTRIES]; /* [0, count) in use */
    size_t count;                        /* entries in use */
    size_t hand;                         /* clock hand: next entry considered for eviction */
    int leeway_s;
    uint64_t hits, misses;
};

/* Hashes the token's last 32 bytes (its signature: the part that differs between any two
 * tokens, and the part an attacker cannot choose without the secret) and its length; the full
 * token is compared on a match. */
static uint32_t token_hash(const char *tok, size_t len)
{
    size_t tail = len < 32 ? len : 32;
    return keys_hash(tok + len - tail, tail) ^ ((uint32_t)len * 0x9e3779b1u);
}

token_cache *tokens_new(int leeway_s)
{
    token_cache *tc = mem_calloc(1, sizeof(*tc));
    tc->leeway_s = leeway_s < 0 ? AUTH_DEFAULT_LEEWAY_S : leeway_s;
    return tc;
}

void tokens_free(token_cache *tc)
{
    if (tc == NULL)
        return;
    for (size_t i = 0; i < tc->count; i++)
        free(tc->entries[i].token);
    free(tc);
}

/* Puts entry |e| into the index. */
static void index_add(token_cache *tc, uint32_t hash, size_t e)
{
    size_t i = hash & MASK;
    while (tc->slot_entry[i] != 0)
        i = (i + 1) & MASK;
    tc->slot_hash[i] = hash;
    tc->slot_entry[i] = (uint32_t)e + 1;
}

/* Takes entry |e| out of the index, moving later slots of its probe run back (backward-shift
 * deletion: no tombstones, so lookups stop at the first empty slot). */
static void index_remove(token_cache *tc, uint32_t hash, size_t e)
{
    size_t i = hash & MASK;
    while (tc->slot_entry[i] != (uint32_t)e + 1)
        i = (i + 1) & MASK;
    for (size_t j = (i + 1) & MASK; tc->slot_entry[j] != 0; j = (j + 1) & MASK) {
        size_t home = tc->slot_hash[j] & MASK;
        /* the slot at |j| may fill the hole at |i| unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        tc->slot_hash[i] = tc->slot_hash[j];
        tc->slot_entry[i] = tc->slot_entry[j];
        i = j;
    }
    tc->slot_entry[i] = 0;
}

/* Picks the entry to replace, CLOCK order: entries hit since the hand last passed get a
 * second chance. Takes it out of the index. */
static size_t evict_one(token_cache *tc)
{
    for (;;) {
        size_t e = tc->hand;
        tc->hand = (tc->hand + 1) % TOKENS_ENTRIES;
        token_entry *x = &tc->entries[e];
        if (x->used) {
            x->used = false;
            continue;
        }
        index_remove(tc, x->hash, e);
        free(x->token);
        x->token = NULL;
        return e;
    }
}

int tokens_verify_bearer(token_cache *tc, const auth_verifier *v, const char *authorization,
                         int64_t now_s, auth_identity *id)
{
    const char *tok;
    size_t len;
    int rv = auth_parse_bearer(authorization, &tok, &len);
    if (rv != 0) {
        memset(id, 0, sizeof(*id));
        return rv;
    }
    token_entry *found = NULL;
    uint32_t h = 0;
    if (len <= TOKENS_MAX_LEN) {
        h = token_hash(tok, len);
        for (size_t i = h & MASK; tc->slot_entry[i] != 0; i = (i + 1) & MASK) {
            if (tc->slot_hash[i] != h)
                continue;
            token_entry *e = &tc->entries[tc->slot_entry[i] - 1];
            if (e->len == len && memcmp(e->token, tok, len) == 0) {
                found = e;
                break;
            }
        }
        if (found != NULL && now_s < found->id.expires_at + tc->leeway_s) {
            tc->hits++;
            found->used = true;
            *id = found->id;
            return 0;
        }
    }
    tc->misses++;
    rv = auth_verify_bearer(v, authorization, id);
    if (rv != 0 || len > TOKENS_MAX_LEN)
        return rv;
    if (found != NULL) { /* the same token, verified again (past exp + leeway by |now_s|) */
        found->id = *id;
        return rv;
    }
    size_t e = tc->count < TOKENS_ENTRIES ? tc->count++ : evict_one(tc);
    token_entry *x = &tc->entries[e];
    x->token = mem_strndup(tok, len);
    x->len = (uint32_t)len;
    x->hash = h;
    x->used = false;
    x->id = *id;
    index_add(tc, h, e);
    return rv;
}

void tokens_stats(const token_cache *tc, uint64_t *hits, uint64_t *misses)
{
    *hits = tc->hits;
    *misses = tc->misses;
}

size_t tokens_count(const token_cache *tc)
{
    return tc->count;
}
