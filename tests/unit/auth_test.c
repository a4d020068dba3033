/* Unit tests of lib/auth.c: HS256 JWT verification and minting on libjwt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jwt.h>
#include <openssl/evp.h>

#include "auth.h"

static const char secret[] = "0123456789abcdef0123456789abcdef-test-secret";
static const char other[] = "fedcba9876543210fedcba9876543210-other-secret";
#define SLEN (sizeof(secret) - 1)

static auth_verifier *v;
static int64_t now;

static int setup(void **state)
{
    (void)state;
    now = (int64_t)time(NULL);
    return auth_verifier_new(&v, secret, SLEN, 30);
}

static int teardown(void **state)
{
    (void)state;
    auth_verifier_free(v);
    v = NULL;
    return 0;
}

/* base64url without padding, as JWS wants. */
static char *b64url(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    int k = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    while (k > 0 && out[k - 1] == '=')
        k--;
    out[k] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return out;
}

/* Builds "b64(header).b64(payload).sig" by hand. */
static char *hand_token(const char *header, const char *payload, const char *sig)
{
    char *h = b64url(header), *p = b64url(payload);
    size_t n = strlen(h) + strlen(p) + strlen(sig) + 3;
    char *t = malloc(n);
    snprintf(t, n, "%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return t;
}

static void test_valid_token(void **state)
{
    (void)state;
    char *tok = NULL;
    assert_int_equal(auth_token_mint(secret, SLEN, "user-42", 3600, &tok), 0);
    auth_identity id;
    assert_int_equal(auth_verify_token(v, tok, &id), 0);
    assert_string_equal(id.user_id, "user-42");
    assert_true(id.expires_at >= now + 3600 && id.expires_at <= now + 3700);
    free(tok);
}

static void test_expired_and_leeway(void **state)
{
    (void)state;
    char *tok = NULL;
    auth_identity id;
    assert_int_equal(auth_token_mint_at(secret, SLEN, "u", now - 100, 0, now - 40, &tok), 0);
    assert_int_equal(auth_verify_token(v, tok, &id), AUTH_E_EXPIRED);
    assert_string_equal(id.user_id, "");
    assert_string_equal(auth_strerror(AUTH_E_EXPIRED), "token expired");
    free(tok);
    /* Expired 20 s ago but within the 30 s leeway. */
    assert_int_equal(auth_token_mint_at(secret, SLEN, "u", now - 100, 0, now - 20, &tok), 0);
    assert_int_equal(auth_verify_token(v, tok, &id), 0);
    /* The same token at an explicit later time is expired. */
    assert_int_equal(auth_verify_token_at(v, tok, now + 10, &id), AUTH_E_EXPIRED);
    free(tok);
}

static void test_not_before(void **state)
{
    (void)state;
    char *tok = NULL;
    auth_identity id;
    assert_int_equal(auth_token_mint_at(secret, SLEN, "u", now, now + 100, now + 3600, &tok), 0);
    assert_int_equal(auth_verify_token(v, tok, &id), AUTH_E_NOT_YET);
    assert_int_equal(auth_verify_token_at(v, tok, now + 100, &id), 0);
    free(tok);
    assert_int_equal(auth_token_mint_at(secret, SLEN, "u", now, now + 10, now + 3600, &tok), 0);
    assert_int_equal(auth_verify_token(v, tok, &id), 0); /* within leeway */
    free(tok);
}

static void test_forged_signature(void **state)
{
    (void)state;
    char *tok = NULL;
    auth_identity id;
    assert_int_equal(auth_token_mint(other, sizeof(other) - 1, "admin", 3600, &tok), 0);
    assert_int_equal(auth_verify_token(v, tok, &id), AUTH_E_SIGNATURE);
    free(tok);

    /* A genuine token whose payload is swapped for another user's keeps its old signature. */
    assert_int_equal(auth_token_mint(secret, SLEN, "alice", 3600, &tok), 0);
    char payload[128];
    snprintf(payload, sizeof(payload), "{\"exp\":%lld,\"sub\":\"mallory\"}", (long long)now + 3600);
    char *forged_payload = b64url(payload);
    char *dot1 = strchr(tok, '.');
    char *dot2 = strchr(dot1 + 1, '.');
    char forged[1024];
    snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(dot1 - tok), tok, forged_payload, dot2);
    assert_int_equal(auth_verify_token(v, forged, &id), AUTH_E_SIGNATURE);
    /* Flipping one signature character also fails. */
    size_t n = strlen(tok);
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_verify_token(v, tok, &id), AUTH_E_SIGNATURE);
    free(forged_payload);
    free(tok);
}

static void test_alg_none_and_others_refused(void **state)
{
    (void)state;
    auth_identity id;
    char payload[128];
    snprintf(payload, sizeof(payload), "{\"sub\":\"root\",\"exp\":%lld}", (long long)now + 3600);
    char *none = hand_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, "");
    assert_int_equal(auth_verify_token(v, none, &id), AUTH_E_ALG);
    free(none);
    char *none2 = hand_token("{\"typ\":\"JWT\", \"alg\" : \"None\"}", payload, "c2ln");
    assert_int_equal(auth_verify_token(v, none2, &id), AUTH_E_ALG);
    free(none2);
    char *rs = hand_token("{\"alg\":\"RS256\"}", payload, "c2lnbmF0dXJl");
    assert_int_equal(auth_verify_token(v, rs, &id), AUTH_E_ALG);
    free(rs);

    /* HS512 correctly signed with our own secret is still not HS256. */
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    jwt_add_grant(jwt, "sub", "u");
    jwt_add_grant_int(jwt, "exp", (long)(now + 3600));
    jwt_set_alg(jwt, JWT_ALG_HS512, (const unsigned char *)secret, (int)SLEN);
    char *hs512 = jwt_encode_str(jwt);
    jwt_free(jwt);
    assert_non_null(hs512);
    assert_int_equal(auth_verify_token(v, hs512, &id), AUTH_E_ALG);
    free(hs512);
    assert_string_equal(auth_strerror(AUTH_E_ALG), "token algorithm not allowed (HS256 only)");
}

/* Signs |payload| (JSON claims) properly with HS256 through libjwt. */
static char *sign_claims(const char *payload)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, payload), 0);
    jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)SLEN);
    char *t = jwt_encode_str(jwt);
    jwt_free(jwt);
    assert_non_null(t);
    return t;
}

static void test_claims_checked(void **state)
{
    (void)state;
    auth_identity id;
    char buf[512];
    char *t;

    snprintf(buf, sizeof(buf), "{\"exp\":%lld}", (long long)now + 60);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_SUBJECT);
    free(t);

    snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":\"\"}", (long long)now + 60);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_SUBJECT);
    free(t);

    snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":\"has space\"}", (long long)now + 60);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_SUBJECT);
    free(t);

    snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":42}", (long long)now + 60);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_SUBJECT);
    free(t);

    char longsub[AUTH_USER_ID_MAX + 2];
    memset(longsub, 'x', sizeof(longsub) - 1);
    longsub[sizeof(longsub) - 1] = '\0';
    snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":\"%s\"}", (long long)now + 60, longsub);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_SUBJECT);
    free(t);
    longsub[AUTH_USER_ID_MAX] = '\0'; /* exactly the limit is fine */
    snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":\"%s\"}", (long long)now + 60, longsub);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), 0);
    assert_int_equal(strlen(id.user_id), AUTH_USER_ID_MAX);
    free(t);

    t = sign_claims("{\"sub\":\"u\"}");
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_NO_EXP);
    free(t);

    snprintf(buf, sizeof(buf), "{\"exp\":\"%lld\",\"sub\":\"u\"}", (long long)now + 60);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_NO_EXP);
    free(t);

    /* Fractional NumericDate is allowed. */
    snprintf(buf, sizeof(buf), "{\"exp\":%lld.5,\"sub\":\"u\"}", (long long)now + 60);
    t = sign_claims(buf);
    assert_int_equal(auth_verify_token(v, t, &id), 0);
    free(t);
}

static void test_garbage(void **state)
{
    (void)state;
    auth_identity id;
    const char *bad[] = {"abc",     "a.b",         "a.b.c.d", "..",   "!!!.x.y",
                         "a b.c.d", "eyJ.eyJ.sig", ".x.y",    "x..y", "\xff.a.b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(auth_verify_token(v, bad[i], &id), AUTH_E_MALFORMED);
    assert_int_equal(auth_verify_token(v, "", &id), AUTH_E_MISSING);
    assert_int_equal(auth_verify_token(v, NULL, &id), AUTH_E_MISSING);
    /* Header that is base64 of non-JSON. */
    char *t = hand_token("not json at all", "{}", "sig");
    assert_int_equal(auth_verify_token(v, t, &id), AUTH_E_MALFORMED);
    free(t);
    /* HS256 header but the payload is not JSON: libjwt refuses it. */
    t = hand_token("{\"alg\":\"HS256\"}", "][", "c2ln");
    assert_int_not_equal(auth_verify_token(v, t, &id), 0);
    free(t);
    /* Over-long token. */
    char *huge = malloc(AUTH_TOKEN_MAX + 10);
    memset(huge, 'a', AUTH_TOKEN_MAX + 9);
    huge[10] = '.';
    huge[20] = '.';
    huge[AUTH_TOKEN_MAX + 9] = '\0';
    assert_int_equal(auth_verify_token(v, huge, &id), AUTH_E_MALFORMED);
    free(huge);
}

static void test_bearer(void **state)
{
    (void)state;
    char *tok = NULL;
    assert_int_equal(auth_token_mint(secret, SLEN, "bob", 60, &tok), 0);
    char hdr[1024];
    auth_identity id;
    snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
    assert_int_equal(auth_verify_bearer(v, hdr, &id), 0);
    assert_string_equal(id.user_id, "bob");
    snprintf(hdr, sizeof(hdr), "  bearer   %s  ", tok);
    assert_int_equal(auth_verify_bearer(v, hdr, &id), 0);
    snprintf(hdr, sizeof(hdr), "Basic %s", tok);
    assert_int_equal(auth_verify_bearer(v, hdr, &id), AUTH_E_SCHEME);
    snprintf(hdr, sizeof(hdr), "Bearer%s", tok);
    assert_int_equal(auth_verify_bearer(v, hdr, &id), AUTH_E_SCHEME);
    assert_int_equal(auth_verify_bearer(v, "Bearer ", &id), AUTH_E_SCHEME);
    assert_int_equal(auth_verify_bearer(v, "", &id), AUTH_E_MISSING);
    assert_int_equal(auth_verify_bearer(v, NULL, &id), AUTH_E_MISSING);
    assert_int_equal(auth_verify_bearer(v, "Bearer x.y.z", &id), AUTH_E_MALFORMED);
    const char *t;
    size_t n;
    assert_int_equal(auth_parse_bearer("Bearer abc ", &t, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(t, "abc", 3);
    free(tok);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    auth_verifier *w = NULL;
    assert_int_equal(auth_verifier_new(&w, "short", 5, 30), AUTH_E_INVALID);
    assert_null(w);
    char *tok = NULL;
    assert_int_equal(auth_token_mint("short", 5, "u", 60, &tok), AUTH_E_INVALID);
    assert_int_equal(auth_token_mint(secret, SLEN, "bad user", 60, &tok), AUTH_E_INVALID);
    assert_int_equal(auth_token_mint(secret, SLEN, "u", 0, &tok), AUTH_E_INVALID);
    assert_null(tok);
    /* A verifier with another secret refuses our tokens. */
    assert_int_equal(auth_verifier_new(&w, other, sizeof(other) - 1, -1), 0);
    assert_int_equal(auth_token_mint(secret, SLEN, "u", 60, &tok), 0);
    auth_identity id;
    assert_int_equal(auth_verify_token(w, tok, &id), AUTH_E_SIGNATURE);
    free(tok);
    auth_verifier_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_and_leeway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alg_none_and_others_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bearer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
