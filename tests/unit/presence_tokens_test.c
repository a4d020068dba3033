/*
 * Unit tests of svc-presence's verified-token cache (tokens.c): hits only for byte-identical
 * tokens, never for altered or forged ones, and never past exp + leeway.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../svc-presence/keys.c"
#include "../../svc-presence/tokens.c"
#include "../../svc-presence/validate.c"

static const char SECRET[] = "tokens-test-secret-0123456789abcdef";

static char *bearer(const char *user, int64_t iat, int64_t exp)
{
    char *tok;
    assert_int_equal(auth_token_mint_at(SECRET, strlen(SECRET), user, iat, 0, exp, &tok), 0);
    size_t n = strlen(tok) + 8;
    char *b = malloc(n);
    snprintf(b, n, "Bearer %s", tok);
    free(tok);
    return b;
}

static void test_cache(void **state)
{
    (void)state;
    auth_verifier *v;
    assert_int_equal(auth_verifier_new(&v, SECRET, strlen(SECRET), 30), 0);
    token_cache *tc = tokens_new(30);
    int64_t now = (int64_t)time(NULL);
    char *alice = bearer("alice", now, now + 60);
    auth_identity id;
    uint64_t hits, misses;

    assert_int_equal(tokens_verify_bearer(tc, v, alice, now, &id), 0);
    assert_string_equal(id.user_id, "alice");
    assert_int_equal(tokens_verify_bearer(tc, v, alice, now, &id), 0);
    assert_string_equal(id.user_id, "alice");
    tokens_stats(tc, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);

    /* one flipped signature byte: not the cached token, refused by the verifier */
    char *bad = strdup(alice);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(tokens_verify_bearer(tc, v, bad, now, &id), AUTH_E_SIGNATURE);
    assert_int_equal(id.user_id[0], '\0');
    /* and still refused the second time (failures are not cached) */
    assert_int_equal(tokens_verify_bearer(tc, v, bad, now, &id), AUTH_E_SIGNATURE);

    /* the cached token stops working at exp + leeway, exactly like the verifier */
    assert_int_equal(tokens_verify_bearer(tc, v, alice, now + 60 + 29, &id), 0);
    tokens_stats(tc, &hits, &misses);
    uint64_t before = misses;
    /* past the leeway the cache does not answer; the verifier (at the real clock) still
     * accepts the token, which is not expired yet, so only check the cache missed */
    tokens_verify_bearer(tc, v, alice, now + 60 + 30, &id);
    tokens_stats(tc, &hits, &misses);
    assert_int_equal(misses, before + 1);

    /* schemes and missing values go through the same checks as auth_verify_bearer */
    assert_int_equal(tokens_verify_bearer(tc, v, NULL, now, &id), AUTH_E_MISSING);
    assert_int_equal(tokens_verify_bearer(tc, v, "Basic abc", now, &id), AUTH_E_SCHEME);

    /* another user's token gets its own identity */
    char *bob = bearer("bob", now, now + 60);
    assert_int_equal(tokens_verify_bearer(tc, v, bob, now, &id), 0);
    assert_string_equal(id.user_id, "bob");
    assert_int_equal(tokens_verify_bearer(tc, v, alice, now, &id), 0);
    assert_string_equal(id.user_id, "alice");

    /* an expired token is refused even if it once verified */
    char *old = bearer("carol", now - 200, now - 100);
    assert_int_equal(tokens_verify_bearer(tc, v, old, now, &id), AUTH_E_EXPIRED);
    free(old);
    free(bob);
    free(bad);
    free(alice);
    tokens_free(tc);
    auth_verifier_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
