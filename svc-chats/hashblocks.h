/*
 * hashblocks.h: how GetRangeHash splits an id range over the block aggregates of
 * migrations/002_hash_blocks.sql.
 *
 * message_hash_blocks holds, per chat and level, the count and XOR of h of the messages whose
 * message_id >> bits equals the block number: level |bits| covers the ids
 * [blk << bits, (blk + 1) << bits). A range is split from the top level down: at each level the
 * whole blocks inside what is left are one run, and the parts left of and right of that run go
 * down to the next level; below the lowest level at most two raw id ranges remain, read from
 * messages itself. Only the first split can leave two parts; after it the left part ends and the
 * right part starts on a block boundary of every lower level, so each level adds at most two runs
 * and at most two raw ranges remain. What is left at a level lies in at most two blocks of the
 * level above without covering either, so a level below the top reads at most 2 x (factor - 1)
 * blocks (factor = 2^(bits difference) = 32) and the raw ranges hold less than two lowest-level
 * blocks' worth of ids (< ~35 min of messages).
 *
 * Ids are bigint in PostgreSQL: ids above INT64_MAX cannot exist, so [from, to) is cut to
 * [from, min(to, 2^63)). Everything here is pure integer arithmetic; any thread.
 */
#ifndef CHATS_HASHBLOCKS_H
#define CHATS_HASHBLOCKS_H

#include <stddef.h>
#include <stdint.h>

/* The levels, ascending: hashblocks_bits[] = {42, 47, 52}, blocks of 2^20 ms (~17.5 min),
 * 2^25 ms (~9.3 h) and 2^30 ms (~12.4 days) of Snowflake ids. Must equal
 * message_hash_block_bits() in migrations/002_hash_blocks.sql. */
#define HASHBLOCKS_LEVELS 3
extern const int hashblocks_bits[HASHBLOCKS_LEVELS];

#define HASHBLOCKS_MAX_RUNS (2 * HASHBLOCKS_LEVELS)
#define HASHBLOCKS_MAX_RAW 2

/* Blocks first..last (inclusive) of level |bits|. */
typedef struct hashblocks_run {
    int bits;      /* level: one of hashblocks_bits[] */
    int64_t first; /* first block number */
    int64_t last;  /* last block number, >= first */
} hashblocks_run;

/* Message ids first..last (inclusive), read from messages. */
typedef struct hashblocks_raw {
    int64_t first;
    int64_t last; /* >= first */
} hashblocks_raw;

typedef struct hashblocks_plan {
    size_t nruns;                             /* runs used, top level first */
    hashblocks_run runs[HASHBLOCKS_MAX_RUNS]; /* at most two per level */
    size_t nraw;                              /* raw ranges used */
    hashblocks_raw raw[HASHBLOCKS_MAX_RAW];   /* together < 2 lowest-level blocks of ids */
} hashblocks_plan;

/* Splits the ids |from| <= id < |to| (cut at 2^63) into |out|: the runs and raw ranges are
 * disjoint and cover exactly those ids. from >= to, or from > INT64_MAX, gives an empty plan. */
void hashblocks_split(uint64_t from, uint64_t to, hashblocks_plan *out);

#endif /* CHATS_HASHBLOCKS_H */
