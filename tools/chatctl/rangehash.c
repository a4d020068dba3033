/*
 * rangehash.c: the client-side range hash (see rangehash.h).
 */
#include <string.h>

#include <openssl/sha.h>

#include "rangehash.h"

uint64_t rangehash_message(uint64_t message_id, uint32_t version, bool deleted)
{
    uint8_t in[13];
    for (int i = 0; i < 8; i++)
        in[i] = (uint8_t)(message_id >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        in[8 + i] = (uint8_t)(version >> (24 - 8 * i));
    in[12] = deleted ? 1 : 0;

    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(in, sizeof in, md);
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = (h << 8) | md[i];
    return h;
}

/* floor(i * d / n) without the 128-bit product: i*(d/n) + (i*(d%n))/n, where i*(d%n) < n*n
 * fits easily and i*(d/n) <= d. */
static uint64_t split_at(uint64_t d, uint32_t n, uint64_t i)
{
    return i * (d / n) + (i * (d % n)) / n;
}

void rangehash_bucket_bounds(uint64_t from, uint64_t to, uint32_t n, uint32_t i, uint64_t *lo,
                             uint64_t *hi)
{
    uint64_t d = to - from;
    *lo = from + split_at(d, n, i);
    *hi = from + split_at(d, n, (uint64_t)i + 1);
}

int rangehash_acc_init(rangehash_acc *a, uint64_t from, uint64_t to, uint32_t n_buckets)
{
    memset(a, 0, sizeof *a);
    if (from >= to)
        return RANGEHASH_E_RANGE;
    if (n_buckets > RANGEHASH_MAX_BUCKETS || n_buckets > to - from)
        return RANGEHASH_E_BUCKETS;
    a->total.from = from;
    a->total.to = to;
    a->n_buckets = n_buckets;
    for (uint32_t i = 0; i < n_buckets; i++)
        rangehash_bucket_bounds(from, to, n_buckets, i, &a->buckets[i].from, &a->buckets[i].to);
    return 0;
}

int rangehash_acc_bucket_of(const rangehash_acc *a, uint64_t message_id)
{
    if (a->n_buckets == 0 || message_id < a->total.from || message_id >= a->total.to)
        return -1;
    /* The buckets tile the range in order: binary search for the last one starting <= id. */
    uint32_t lo = 0, hi = a->n_buckets;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (a->buckets[mid].from <= message_id)
            lo = mid;
        else
            hi = mid;
    }
    return (int)lo;
}

bool rangehash_acc_add(rangehash_acc *a, uint64_t message_id, uint32_t version, bool deleted)
{
    if (message_id < a->total.from || message_id >= a->total.to)
        return false;
    uint64_t h = rangehash_message(message_id, version, deleted);
    a->total.count++;
    a->total.hash ^= h;
    int b = rangehash_acc_bucket_of(a, message_id);
    if (b >= 0) {
        a->buckets[b].count++;
        a->buckets[b].hash ^= h;
    }
    return true;
}

const char *rangehash_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case RANGEHASH_E_RANGE:
        return "the range is empty: from must be below to";
    case RANGEHASH_E_BUCKETS:
        return "bucket count over 256 or over the range's width (to - from)";
    default:
        return "unknown error";
    }
}
