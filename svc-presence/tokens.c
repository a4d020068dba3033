/* tokens.c: per-worker cache of verified bearer tokens (see tokens.h). */
#include "tokens.h"

#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "mem.h"

typedef struct token_entry {
    char *token;      /* owned copy, NULL when empty */
    size_t len;       /* bytes in |token| */
    auth_identity id; /* what it verified to */
} token_entry;

struct token_cache {
    token_entry slots[TOKENS_SLOTS];
    int leeway_s;
    uint64_t hits, misses;
};

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
    token_entry *e = NULL;
    if (len <= TOKENS_MAX_LEN) {
        e = &tc->slots[keys_hash(tok, len) % TOKENS_SLOTS];
        if (e->token != NULL && e->len == len && memcmp(e->token, tok, len) == 0 &&
            now_s < e->id.expires_at + tc->leeway_s) {
            tc->hits++;
            *id = e->id;
            return 0;
        }
    }
    tc->misses++;
    rv = auth_verify_bearer(v, authorization, id);
    if (rv == 0 && e != NULL) {
        free(e->token);
        e->token = mem_strndup(tok, len);
        e->len = len;
        e->id = *id;
    }
    return rv;
}

void tokens_stats(const token_cache *tc, uint64_t *hits, uint64_t *misses)
{
    *hits = tc->hits;
    *misses = tc->misses;
}
