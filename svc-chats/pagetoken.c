/* pagetoken.c: PullMessages page tokens (see pagetoken.h). */
#include "pagetoken.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static void mac_hex(const char *key, const char *user, const char *device, uint64_t pos,
                    char out[33])
{
    size_t n = strlen(user) + strlen(device) + 48;
    char *msg = mem_alloc(n);
    int len = snprintf(msg, n, "p1\n%s\n%s\n%" PRIu64, user, device, pos);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, (size_t)len, md, &mdlen);
    free(msg);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void pagetoken_make(const char *key, const char *user, const char *device, uint64_t pos, char *out)
{
    char mac[33];
    mac_hex(key, user, device, pos, mac);
    snprintf(out, PAGETOKEN_MAX, "p1.%" PRIu64 ".%s", pos, mac);
}

int pagetoken_parse(const char *key, const char *user, const char *device, const char *token,
                    uint64_t *pos)
{
    if (token == NULL || strlen(token) >= PAGETOKEN_MAX || strncmp(token, "p1.", 3) != 0)
        return -1;
    const char *p = token + 3;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    uint64_t v = strtoull(p, &end, 10);
    if (*end != '.' || strlen(end + 1) != 32)
        return -1;
    char mac[33];
    mac_hex(key, user, device, v, mac);
    if (CRYPTO_memcmp(mac, end + 1, 32) != 0)
        return -1;
    *pos = v;
    return 0;
}
