/*
 * hash.h: the range-hash term of one message state (chats.proto, GetRangeHash):
 *
 *   h(m) = first 8 bytes, big-endian, of SHA-256(be64 message_id || be32 version || u8 deleted)
 *
 * Computed once per stored state by the materializer and kept in messages.h (as the BIGINT
 * with the same 64 bits), so ranges are XOR-aggregated inside PostgreSQL.
 */
#ifndef CHATS_HASH_H
#define CHATS_HASH_H

#include <stdbool.h>
#include <stdint.h>

/* h(m) for (|message_id|, |version|, |deleted|). Pure; any thread. */
uint64_t hash_message(uint64_t message_id, uint32_t version, bool deleted);

/* Bucket |i| of |n| over [from, to): writes its bounds (chats.proto: from + floor(i*D/N)).
 * Requires 0 <= i < n, n >= 1, from < to. Computed with 128-bit integers. */
void hash_bucket_bounds(uint64_t from, uint64_t to, uint32_t n, uint32_t i, uint64_t *lo,
                        uint64_t *hi);

#endif /* CHATS_HASH_H */
