/*
 * rangehash.h: the range hash of chat.v1 GetRangeHash, computed on the client.
 *
 * The definition (proto/chat/v1/chats.proto, GetRangeHash; docs/API.md "Verifying with range
 * hashes"):
 *
 *   h(m) = first 8 bytes, big-endian, of SHA-256(be64(message_id) || be32(version) || u8(deleted))
 *   hash(range) = XOR of h(m) over the chat's messages with from <= message_id < to, tombstones
 *                 included (0 for an empty range); count(range) = how many there are.
 *
 * With N buckets (1..RANGEHASH_MAX_BUCKETS, at most to - from) and D = to - from, bucket i covers
 * [from + floor(i*D/N), from + floor((i+1)*D/N)).
 *
 * Pure functions, no I/O; SHA-256 from OpenSSL's libcrypto.
 */
#ifndef CHATCTL_RANGEHASH_H
#define CHATCTL_RANGEHASH_H

#include <stdbool.h>
#include <stdint.h>

#define RANGEHASH_MAX_BUCKETS 256

/* Error codes: 0 success, negative failure. */
enum {
    RANGEHASH_E_RANGE = -1,   /* from >= to */
    RANGEHASH_E_BUCKETS = -2, /* bucket count over RANGEHASH_MAX_BUCKETS or over to - from */
};

/* The count and hash of one half-open range of message ids [from, to). */
typedef struct rangehash {
    uint64_t from;  /* inclusive lower bound */
    uint64_t to;    /* exclusive upper bound */
    uint64_t count; /* messages added in the range, tombstones included */
    uint64_t hash;  /* XOR of h(m) of those messages; 0 when count is 0 */
} rangehash;

/* h(m) of one message. */
uint64_t rangehash_message(uint64_t message_id, uint32_t version, bool deleted);

/* Bounds of bucket |i| (< |n|) of [from, to) split into |n| buckets, as the contract defines
 * them; computed without overflow for any 64-bit range. |n| must be >= 1 and from < to. */
void rangehash_bucket_bounds(uint64_t from, uint64_t to, uint32_t n, uint32_t i, uint64_t *lo,
                             uint64_t *hi);

/* A range being accumulated: the total and |n| buckets (n may be 0). */
typedef struct rangehash_acc {
    rangehash total;                          /* the whole range */
    uint32_t n_buckets;                       /* 0..RANGEHASH_MAX_BUCKETS */
    rangehash buckets[RANGEHASH_MAX_BUCKETS]; /* the first n_buckets are in use */
} rangehash_acc;

/* Starts an empty accumulation of [from, to) with |n_buckets| buckets. Returns 0,
 * RANGEHASH_E_RANGE or RANGEHASH_E_BUCKETS (the errors GetRangeHash answers INVALID_ARGUMENT
 * for). */
int rangehash_acc_init(rangehash_acc *a, uint64_t from, uint64_t to, uint32_t n_buckets);

/* Adds one message. Returns true if it lies in the range (and was counted), false if it is
 * outside and was ignored. Adding a message twice counts it twice (and cancels its hash):
 * callers deduplicate by message_id. */
bool rangehash_acc_add(rangehash_acc *a, uint64_t message_id, uint32_t version, bool deleted);

/* The index of the bucket holding |message_id|, or -1 if outside the range or no buckets. */
int rangehash_acc_bucket_of(const rangehash_acc *a, uint64_t message_id);

/* A static description of a RANGEHASH_E_* code. */
const char *rangehash_strerror(int err);

#endif /* CHATCTL_RANGEHASH_H */
