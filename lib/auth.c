/* HS256 bearer tokens on libjwt (auth.h). */
#include "auth.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mem.h"

struct auth_verifier {
    unsigned char *secret; /* owned copy */
    size_t len;            /* bytes in |secret| */
    int leeway_s;          /* exp/nbf tolerance */
};

const char *auth_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case AUTH_E_INVALID:
        return "invalid argument";
    case AUTH_E_MISSING:
        return "missing authorization";
    case AUTH_E_SCHEME:
        return "authorization must be \"Bearer <token>\"";
    case AUTH_E_MALFORMED:
        return "malformed token";
    case AUTH_E_ALG:
        return "token algorithm not allowed (HS256 only)";
    case AUTH_E_SIGNATURE:
        return "invalid token signature";
    case AUTH_E_EXPIRED:
        return "token expired";
    case AUTH_E_NOT_YET:
        return "token not yet valid";
    case AUTH_E_NO_EXP:
        return "token has no expiry";
    case AUTH_E_SUBJECT:
        return "token has no valid subject";
    case AUTH_E_INTERNAL:
        return "token verification failed";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

int auth_verifier_new(auth_verifier **out, const void *secret, size_t len, int leeway_s)
{
    *out = NULL;
    if (secret == NULL || len < AUTH_SECRET_MIN || len > 4096)
        return AUTH_E_INVALID;
    auth_verifier *v = mem_calloc(1, sizeof(*v));
    v->secret = mem_dup(secret, len);
    v->len = len;
    v->leeway_s = leeway_s < 0 ? AUTH_DEFAULT_LEEWAY_S : leeway_s;
    *out = v;
    return 0;
}

void auth_verifier_free(auth_verifier *v)
{
    if (v == NULL)
        return;
    OPENSSL_cleanse(v->secret, v->len);
    free(v->secret);
    free(v);
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Checks "head.body.sig" over the base64url alphabet; the signature may be empty (alg none
 * tokens have one), which the algorithm check then refuses with a precise message. */
static int check_shape(const char *token, size_t *head_len)
{
    size_t dots = 0, part = 0;
    size_t lens[3] = {0, 0, 0};
    for (const char *p = token; *p; p++) {
        if (*p == '.') {
            if (++dots > 2)
                return AUTH_E_MALFORMED;
            part++;
        } else if (is_b64url(*p)) {
            lens[part]++;
        } else {
            return AUTH_E_MALFORMED;
        }
    }
    if (dots != 2 || lens[0] == 0 || lens[1] == 0)
        return AUTH_E_MALFORMED;
    *head_len = lens[0];
    return 0;
}

/* Reads the header's "alg" value into |alg| (truncated to cap - 1). The header is decoded with
 * OpenSSL's base64 and scanned for the one key; libjwt parses the real thing afterwards, and
 * this result only chooses the error message and short-circuits obvious refusals. Returns
 * false when the header is not base64 or has no string "alg". */
static bool header_alg(const char *head, size_t len, char *alg, size_t cap)
{
    size_t padded = (len + 3) / 4 * 4;
    char *b64 = mem_alloc(padded + 1);
    for (size_t i = 0; i < len; i++)
        b64[i] = head[i] == '-' ? '+' : head[i] == '_' ? '/' : head[i];
    for (size_t i = len; i < padded; i++)
        b64[i] = '=';
    b64[padded] = '\0';
    unsigned char *json = mem_alloc(padded / 4 * 3 + 1);
    int n = EVP_DecodeBlock(json, (const unsigned char *)b64, (int)padded);
    free(b64);
    if (n < 0) {
        free(json);
        return false;
    }
    n -= (int)(padded - len); /* EVP_DecodeBlock counts the bytes the padding stood for */
    json[n > 0 ? n : 0] = '\0';
    bool found = false;
    const char *p = strstr((const char *)json, "\"alg\"");
    if (p != NULL) {
        p += 5;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p == ':') {
            p++;
            while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
                p++;
            if (*p == '"') {
                p++;
                size_t k = 0;
                while (*p && *p != '"' && k + 1 < cap)
                    alg[k++] = *p++;
                alg[k] = '\0';
                found = *p == '"';
            }
        }
    }
    free(json);
    return found;
}

/* Reads a NumericDate claim (integer or fractional seconds). Returns 1 found, 0 absent,
 * -1 present but not a number. */
static int numeric_claim(jwt_t *jwt, const char *name, int64_t *out)
{
    char *js = jwt_get_grants_json(jwt, name);
    if (js == NULL)
        return 0;
    int rv = -1;
    char *end = NULL;
    errno = 0;
    long long i = strtoll(js, &end, 10);
    if (end != js && *end == '\0' && errno == 0) {
        *out = i;
        rv = 1;
    } else {
        errno = 0;
        double d = strtod(js, &end);
        if (end != js && *end == '\0' && errno == 0 && d > -9.0e15 && d < 9.0e15) {
            *out = (int64_t)d;
            rv = 1;
        }
    }
    free(js);
    return rv;
}

static bool valid_user_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c < 0x21 || c > 0x7e || n >= AUTH_USER_ID_MAX)
            return false;
    }
    return n > 0;
}

int auth_verify_token_at(const auth_verifier *v, const char *token, int64_t now_s,
                         auth_identity *id)
{
    memset(id, 0, sizeof(*id));
    if (token == NULL || token[0] == '\0')
        return AUTH_E_MISSING;
    if (strnlen(token, AUTH_TOKEN_MAX + 1) > AUTH_TOKEN_MAX)
        return AUTH_E_MALFORMED;
    size_t head_len = 0;
    int rv = check_shape(token, &head_len);
    if (rv != 0)
        return rv;
    char alg[16];
    if (!header_alg(token, head_len, alg, sizeof(alg)))
        return AUTH_E_MALFORMED;
    if (strcmp(alg, "HS256") != 0)
        return AUTH_E_ALG;

    jwt_t *jwt = NULL;
    int err = jwt_decode(&jwt, token, v->secret, (int)v->len);
    if (err != 0 || jwt == NULL)
        return err == ENOMEM ? AUTH_E_INTERNAL : AUTH_E_SIGNATURE;
    /* Defence in depth: whatever the header scan saw, libjwt's view decides. */
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        rv = AUTH_E_ALG;
        goto out;
    }
    int64_t exp = 0, nbf = 0;
    int have = numeric_claim(jwt, "exp", &exp);
    if (have <= 0) {
        rv = AUTH_E_NO_EXP;
        goto out;
    }
    if (now_s >= exp + v->leeway_s) {
        rv = AUTH_E_EXPIRED;
        goto out;
    }
    have = numeric_claim(jwt, "nbf", &nbf);
    if (have < 0 || (have > 0 && now_s + v->leeway_s < nbf)) {
        rv = have < 0 ? AUTH_E_MALFORMED : AUTH_E_NOT_YET;
        goto out;
    }
    const char *sub = jwt_get_grant(jwt, "sub");
    if (sub == NULL || !valid_user_id(sub)) {
        rv = AUTH_E_SUBJECT;
        goto out;
    }
    memcpy(id->user_id, sub, strlen(sub) + 1);
    id->expires_at = exp;
    rv = 0;
out:
    jwt_free(jwt);
    if (rv != 0)
        memset(id, 0, sizeof(*id));
    return rv;
}

int auth_verify_token(const auth_verifier *v, const char *token, auth_identity *id)
{
    return auth_verify_token_at(v, token, (int64_t)time(NULL), id);
}

int auth_parse_bearer(const char *authorization, const char **token, size_t *len)
{
    *token = NULL;
    *len = 0;
    if (authorization == NULL)
        return AUTH_E_MISSING;
    const char *p = authorization;
    while (*p == ' ')
        p++;
    if (*p == '\0')
        return AUTH_E_MISSING;
    if (strncasecmp(p, "Bearer", 6) != 0 || p[6] != ' ')
        return AUTH_E_SCHEME;
    p += 6;
    while (*p == ' ')
        p++;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == ' ')
        n--;
    if (n == 0)
        return AUTH_E_SCHEME;
    *token = p;
    *len = n;
    return 0;
}

int auth_verify_bearer(const auth_verifier *v, const char *authorization, auth_identity *id)
{
    memset(id, 0, sizeof(*id));
    const char *tok;
    size_t len;
    int rv = auth_parse_bearer(authorization, &tok, &len);
    if (rv != 0)
        return rv;
    if (len > AUTH_TOKEN_MAX)
        return AUTH_E_MALFORMED;
    char *copy = mem_strndup(tok, len);
    rv = auth_verify_token(v, copy, id);
    free(copy);
    return rv;
}

int auth_token_mint_at(const void *secret, size_t len, const char *user_id, int64_t iat_s,
                       int64_t nbf_s, int64_t exp_s, char **out)
{
    *out = NULL;
    if (secret == NULL || len < AUTH_SECRET_MIN || len > 4096 || user_id == NULL ||
        !valid_user_id(user_id) || exp_s <= 0)
        return AUTH_E_INVALID;
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt) != 0)
        return AUTH_E_INTERNAL;
    int rv = AUTH_E_INTERNAL;
    if (jwt_add_grant(jwt, "sub", user_id) != 0 || jwt_add_grant_int(jwt, "iat", (long)iat_s) ||
        jwt_add_grant_int(jwt, "exp", (long)exp_s) != 0)
        goto out;
    if (nbf_s != 0 && jwt_add_grant_int(jwt, "nbf", (long)nbf_s) != 0)
        goto out;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, secret, (int)len) != 0)
        goto out;
    char *s = jwt_encode_str(jwt);
    if (s == NULL)
        goto out;
    *out = mem_strdup(s);
    free(s);
    rv = 0;
out:
    jwt_free(jwt);
    return rv;
}

int auth_token_mint(const void *secret, size_t len, const char *user_id, int64_t ttl_s, char **out)
{
    *out = NULL;
    if (ttl_s <= 0)
        return AUTH_E_INVALID;
    int64_t now = (int64_t)time(NULL);
    return auth_token_mint_at(secret, len, user_id, now, 0, now + ttl_s, out);
}
