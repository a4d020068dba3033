/*
 * auth.h: bearer tokens. JWTs signed with HS256 (libjwt does the decoding and the signature
 * check), the user id taken from the "sub" claim.
 *
 * A token is accepted only when all of these hold:
 *   - at most AUTH_TOKEN_MAX bytes, three base64url parts;
 *   - the header's "alg" is exactly HS256 ("none", HS384, RS256, ... are refused, whatever the
 *     signature says) and the HMAC-SHA256 signature verifies with the configured secret;
 *   - "exp" is present and now < exp + leeway; if "nbf" is present, now >= nbf - leeway;
 *   - "sub" is a string of 1..AUTH_USER_ID_MAX printable ASCII characters (0x21..0x7e).
 *
 * Every refusal maps to a short message (auth_strerror) meant for the UNAUTHENTICATED status
 * the caller sends; it never echoes the token.
 *
 * Verifiers are immutable after creation: one may be shared by all worker threads.
 */
#ifndef AUTH_H
#define AUTH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AUTH_USER_ID_MAX 128 /* bytes in a user id ("sub") */
#define AUTH_TOKEN_MAX 8192  /* bytes in a token */
#define AUTH_SECRET_MIN 32   /* bytes of HS256 secret (RFC 7518 3.2: >= the hash size) */
#define AUTH_DEFAULT_LEEWAY_S 30

/* Error codes: 0 success, negative failure. */
enum {
    AUTH_E_INVALID = -1400,   /* bad argument (e.g. secret shorter than AUTH_SECRET_MIN) */
    AUTH_E_MISSING = -1401,   /* no authorization value */
    AUTH_E_SCHEME = -1402,    /* the value is not "Bearer <token>" */
    AUTH_E_MALFORMED = -1403, /* not a JWT: wrong shape, bad base64/JSON, too long */
    AUTH_E_ALG = -1404,       /* algorithm other than HS256 (incl. "none") */
    AUTH_E_SIGNATURE = -1405, /* HS256 signature does not verify */
    AUTH_E_EXPIRED = -1406,   /* exp in the past (beyond the leeway) */
    AUTH_E_NOT_YET = -1407,   /* nbf in the future (beyond the leeway) */
    AUTH_E_NO_EXP = -1408,    /* exp missing or not a number */
    AUTH_E_SUBJECT = -1409,   /* sub missing, empty, too long or not printable */
    AUTH_E_INTERNAL = -1410,  /* libjwt failed for another reason (out of memory) */
};

/* Returns a static message for |err|, suitable for an UNAUTHENTICATED status
 * ("token expired", ...), or the -errno text. */
const char *auth_strerror(int err);

typedef struct auth_verifier auth_verifier;

/* Creates a verifier for HS256 tokens signed with |secret| (|len| bytes, copied; at least
 * AUTH_SECRET_MIN). |leeway_s| is the clock tolerance for exp/nbf (negative = default 30 s).
 * Returns 0 or AUTH_E_INVALID. */
int auth_verifier_new(auth_verifier **out, const void *secret, size_t len, int leeway_s);

/* Frees |v| (the secret copy is wiped). */
void auth_verifier_free(auth_verifier *v);

/* The identity a valid token carries. */
typedef struct auth_identity {
    char user_id[AUTH_USER_ID_MAX + 1]; /* "sub", NUL-terminated */
    int64_t expires_at;                 /* "exp", Unix seconds */
} auth_identity;

/* Verifies |token| against the current time (CLOCK_REALTIME). Fills |id| and returns 0, or
 * returns an AUTH_E_* (|id| is zeroed). */
int auth_verify_token(const auth_verifier *v, const char *token, auth_identity *id);

/* Same at |now_s| (Unix seconds), for tests. */
int auth_verify_token_at(const auth_verifier *v, const char *token, int64_t now_s,
                         auth_identity *id);

/* Verifies an "authorization" metadata value: "Bearer <token>" (scheme case-insensitive, one
 * or more spaces). NULL -> AUTH_E_MISSING; another scheme -> AUTH_E_SCHEME. */
int auth_verify_bearer(const auth_verifier *v, const char *authorization, auth_identity *id);

/* Extracts the token from "Bearer <token>" without verifying it: |*token| points into
 * |authorization|, |*len| is its length. Returns 0, AUTH_E_MISSING or AUTH_E_SCHEME. */
int auth_parse_bearer(const char *authorization, const char **token, size_t *len);

/* Mints an HS256 token for |user_id| valid for |ttl_s| seconds from now (iat = now,
 * exp = now + ttl_s), for development tools and tests. On success |*out| is a NUL-terminated
 * string the caller frees with free(). Returns 0, AUTH_E_INVALID (bad secret, user id or
 * ttl), AUTH_E_INTERNAL. */
int auth_token_mint(const void *secret, size_t len, const char *user_id, int64_t ttl_s, char **out);

/* Same with explicit times: |iat_s|, and |nbf_s| (0 = no nbf claim), |exp_s|. */
int auth_token_mint_at(const void *secret, size_t len, const char *user_id, int64_t iat_s,
                       int64_t nbf_s, int64_t exp_s, char **out);

#ifdef __cplusplus
}
#endif

#endif /* AUTH_H */
