/* hash.c: range-hash terms and bucket bounds (see hash.h). */
#include "hash.h"

#include <openssl/evp.h>
#include <stdlib.h>

uint64_t hash_message(uint64_t message_id, uint32_t version, bool deleted)
{
    unsigned char in[13], md[EVP_MAX_MD_SIZE];
    for (int i = 0; i < 8; i++)
        in[i] = (unsigned char)(message_id >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        in[8 + i] = (unsigned char)(version >> (24 - 8 * i));
    in[12] = deleted ? 1 : 0;
    unsigned int len = 0;
    if (EVP_Digest(in, sizeof(in), md, &len, EVP_sha256(), NULL) != 1 || len < 8)
        abort(); /* libcrypto without SHA-256 cannot serve this contract */
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | md[i];
    return h;
}

static uint64_t bound(uint64_t from, uint64_t d, uint32_t n, uint32_t i)
{
    return from + (uint64_t)((unsigned __int128)i * d / n);
}

void hash_bucket_bounds(uint64_t from, uint64_t to, uint32_t n, uint32_t i, uint64_t *lo,
                        uint64_t *hi)
{
    uint64_t d = to - from;
    *lo = bound(from, d, n, i);
    *hi = i + 1 == n ? to : bound(from, d, n, i + 1);
}
