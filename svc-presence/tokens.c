/* tokens.c: per-worker cache of verified bearer tokens (see tokens.h). */
#include "tokens.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "mem.h"

#define MASK (TOKENS_SLOTS - 1)

typedef struct token_entry {
    char *token;      /* owned copy, NULL when the slot is empty */
    uint32_t len;     /* bytes in |token| */
    uint32_t hash;    /* token_hash(): its home slot, and a cheap first compare */
    bool used;        /* hit since the clock hand last passed (second chance) */
    auth_identity id; /* what it verified to */
} token_entry;

struct token_cache {
    token_entry slots[TOKENS_SLOTS]; /* open addressing, linear probing */
    size_t count;                    /* entries, at most TOKENS_ENTRIES */
    size_t hand;                     /* clock hand: the next slot considered for eviction */
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
    for (size_t i = 0; i < TOKENS_SLOTS; i++)
        free(tc->slots[i].token);
    free(tc);
}

/* Empties slot |i| and moves later entries of its probe run back (backward-shift deletion:
 * no tombstones, so lookups stop at the first empty slot). */
static void slot_delete(token_cache *tc, size_t i)
{
    free(tc->slots[i].token);
    tc->count--;
    for (size_t j = (i + 1) & MASK;; j = (j + 1) & MASK) {
        token_entry *e = &tc->slots[j];
        if (e->token == NULL)
            break;
        size_t home = e->hash & MASK;
        /* |e| may fill the hole at |i| unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        tc->slots[i] = *e;
        i = j;
    }
    tc->slots[i].token = NULL;
}

/* Evicts one entry, CLOCK order: entries hit since the hand last passed get a second chance. */
static void evict_one(token_cache *tc)
{
    for (;;) {
        size_t i = tc->hand;
        tc->hand = (tc->hand + 1) & MASK;
        token_entry *e = &tc->slots[i];
        if (e->token == NULL)
            continue;
        if (e->used) {
            e->used = false;
            continue;
        }
        slot_delete(tc, i);
        return;
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
        for (size_t i = h & MASK;; i = (i + 1) & MASK) {
            token_entry *e = &tc->slots[i];
            if (e->token == NULL)
                break;
            if (e->hash == h && e->len == len && memcmp(e->token, tok, len) == 0) {
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
    if (tc->count >= TOKENS_ENTRIES)
        evict_one(tc);
    size_t i = h & MASK;
    while (tc->slots[i].token != NULL)
        i = (i + 1) & MASK;
    token_entry *e = &tc->slots[i];
    e->token = mem_strndup(tok, len);
    e->len = (uint32_t)len;
    e->hash = h;
    e->used = false;
    e->id = *id;
    tc->count++;
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
