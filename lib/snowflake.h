/*
 * snowflake.h: 64-bit unique ids (message_id) and Redis leases for instance numbers.
 *
 * Layout, most significant bit first:
 *
 *   | 0 | 41-bit timestamp, ms since 2024-01-01T00:00:00Z | 3-bit site | 7-bit instance | 12-bit
 * seq | 63  62                                            22  21      19   18            12   11 0
 *
 * The sign bit is always 0, so ids are positive as int64 (PostgreSQL bigint) and sort by time.
 * The 10-bit node is the site (0..7, one per geo site) and the instance number (0..127, leased
 * in Redis so that no two live generators share one). 41 bits of ms last until 2093.
 *
 * Clock steps backwards never cause a repeat: the generator keeps a logical timestamp that only
 * moves forward. When the wall clock is behind it, or when the 4096 sequence numbers of a
 * millisecond are used up, ids continue on the logical timestamp (the next ms is "borrowed");
 * the generator never sleeps. snowflake_drift_ms() reports how far ahead of the wall clock the
 * logical timestamp runs.
 */
#ifndef SNOWFLAKE_H
#define SNOWFLAKE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SNOWFLAKE_EPOCH_MS INT64_C(1704067200000) /* 2024-01-01T00:00:00Z in Unix ms */
#define SNOWFLAKE_TIMESTAMP_BITS 41
#define SNOWFLAKE_SITE_BITS 3
#define SNOWFLAKE_INSTANCE_BITS 7
#define SNOWFLAKE_NODE_BITS (SNOWFLAKE_SITE_BITS + SNOWFLAKE_INSTANCE_BITS)
#define SNOWFLAKE_SEQ_BITS 12
#define SNOWFLAKE_MAX_SITE ((1u << SNOWFLAKE_SITE_BITS) - 1)         /* 7 */
#define SNOWFLAKE_MAX_INSTANCE ((1u << SNOWFLAKE_INSTANCE_BITS) - 1) /* 127 */
#define SNOWFLAKE_MAX_SEQ ((1u << SNOWFLAKE_SEQ_BITS) - 1)           /* 4095 */
#define SNOWFLAKE_NO_INSTANCE (-1) /* a generator without an instance issues nothing */

/* Error codes: 0 success, negative failure. */
enum {
    SNOWFLAKE_E_INVALID = -1500,     /* bad argument (site or instance out of range) */
    SNOWFLAKE_E_NO_INSTANCE = -1501, /* no (leased) instance number: stopped issuing */
    SNOWFLAKE_E_CLOCK = -1502,       /* logical clock ahead of the wall clock by over max drift */
    SNOWFLAKE_E_EXHAUSTED = -1503,   /* the 41-bit timestamp ran out (year 2093) */
};

/* Returns a static description of |err| (a SNOWFLAKE_E_* or -errno). */
const char *snowflake_strerror(int err);

/* --- id fields --------------------------------------------------------------------------- */

/* Builds an id from its parts (no range checks beyond masking; |unix_ms| >= the epoch). */
static inline uint64_t snowflake_make(int64_t unix_ms, unsigned site, unsigned instance,
                                      unsigned seq)
{
    uint64_t ts = (uint64_t)(unix_ms - SNOWFLAKE_EPOCH_MS) & ((UINT64_C(1) << 41) - 1);
    return ts << (SNOWFLAKE_NODE_BITS + SNOWFLAKE_SEQ_BITS) |
           (uint64_t)(site & SNOWFLAKE_MAX_SITE) << (SNOWFLAKE_INSTANCE_BITS + SNOWFLAKE_SEQ_BITS) |
           (uint64_t)(instance & SNOWFLAKE_MAX_INSTANCE) << SNOWFLAKE_SEQ_BITS |
           (seq & SNOWFLAKE_MAX_SEQ);
}

/* The id's timestamp in Unix ms. */
static inline int64_t snowflake_unix_ms(uint64_t id)
{
    return (int64_t)(id >> (SNOWFLAKE_NODE_BITS + SNOWFLAKE_SEQ_BITS)) + SNOWFLAKE_EPOCH_MS;
}

/* The 10-bit node: site << 7 | instance. */
static inline unsigned snowflake_node(uint64_t id)
{
    return (unsigned)(id >> SNOWFLAKE_SEQ_BITS) & ((1u << SNOWFLAKE_NODE_BITS) - 1);
}

static inline unsigned snowflake_site(uint64_t id)
{
    return snowflake_node(id) >> SNOWFLAKE_INSTANCE_BITS;
}

static inline unsigned snowflake_instance(uint64_t id)
{
    return snowflake_node(id) & SNOWFLAKE_MAX_INSTANCE;
}

static inline unsigned snowflake_seq(uint64_t id)
{
    return (unsigned)id & SNOWFLAKE_MAX_SEQ;
}

/* The smallest id with timestamp >= |unix_ms| (for range queries by time). */
static inline uint64_t snowflake_min_at(int64_t unix_ms)
{
    return snowflake_make(unix_ms, 0, 0, 0);
}

/* --- generator --------------------------------------------------------------------------- */

typedef struct snowflake snowflake;

/* Creates a generator for |site| (0..7) with |instance| (0..127), or SNOWFLAKE_NO_INSTANCE to
 * start stopped until snowflake_set_instance() (which the lease below calls). Returns 0 or
 * SNOWFLAKE_E_INVALID. */
int snowflake_new(snowflake **out, unsigned site, int instance);

/* Frees |g|. No call may be in progress on another thread. */
void snowflake_free(snowflake *g);

/* Issues the next id into |out|. Thread-safe and lock-free (one CAS loop); never blocks or
 * sleeps. Returns 0, SNOWFLAKE_E_NO_INSTANCE when stopped, SNOWFLAKE_E_CLOCK when a max drift
 * is set and exceeded, SNOWFLAKE_E_EXHAUSTED after 2093. Nothing is consumed on error. */
int snowflake_next(snowflake *g, uint64_t *out);

/* Same with an explicit wall-clock reading in Unix ms (tests, replays). */
int snowflake_next_at(snowflake *g, int64_t now_unix_ms, uint64_t *out);

/* Sets the instance number (0..127), or SNOWFLAKE_NO_INSTANCE to stop issuing at once.
 * Thread-safe. Returns 0 or SNOWFLAKE_E_INVALID. */
int snowflake_set_instance(snowflake *g, int instance);

/* The current instance number or SNOWFLAKE_NO_INSTANCE. */
int snowflake_get_instance(const snowflake *g);

/* The site given to snowflake_new(). */
unsigned snowflake_get_site(const snowflake *g);

/* Raises the logical timestamp to at least |unix_ms| (never lowers it): ids issued afterwards
 * have timestamps >= |unix_ms|. The lease uses it so that a new holder of an instance number
 * cannot repeat ids of the previous holder, whose clock may have been ahead. Thread-safe. */
void snowflake_advance_to(snowflake *g, int64_t unix_ms);

/* The logical timestamp (Unix ms) of the last id issued, or of the floor set. */
int64_t snowflake_logical_ms(const snowflake *g);

/* How many ms the logical timestamp runs ahead of |now_unix_ms| (0 when not ahead). */
int64_t snowflake_drift_ms(const snowflake *g, int64_t now_unix_ms);

/* Refuse ids (SNOWFLAKE_E_CLOCK) while the drift exceeds |ms|; 0 (the default) never refuses,
 * which is what the message path wants: a clock step back must not stop sending. */
void snowflake_set_max_drift(snowflake *g, int64_t ms);

/* The wall clock in Unix ms (CLOCK_REALTIME). */
int64_t snowflake_wall_ms(void);

/* --- instance leases in Redis ------------------------------------------------------------ */

/*
 * A lease makes the generator's instance number exclusive among live processes:
 *
 *   SET snowflake:lease:<site>:<n> <owner> NX PX <ttl>   (tried for n over the range)
 *
 * then renewed every renew_ms with a script that extends the TTL only while the value is still
 * <owner>. The generator issues ids only while the lease is held: the lease stops it (instance
 * SNOWFLAKE_NO_INSTANCE) when a renewal is refused, and also on its own when no renewal has
 * succeeded for ttl - ttl/5 ms (Redis unreachable), before the key can expire and be taken by
 * another process. It then looks for a number again.
 *
 * Each renewal also records the generator's logical timestamp in snowflake:hw:<site>:<n>
 * (7-day TTL); a new holder starts its logical clock after that high-water mark plus the TTL
 * (plus 1 ms after a clean release), so clock skew between hosts cannot repeat an id.
 *
 * All Redis traffic goes through |redis| on its loop; nothing blocks.
 */
typedef struct snowflake_lease snowflake_lease;

typedef enum snowflake_lease_event {
    SNOWFLAKE_LEASE_ACQUIRED = 1, /* |instance| is ours; the generator issues ids */
    SNOWFLAKE_LEASE_LOST = 2,     /* the generator stopped; a new number is being sought */
} snowflake_lease_event;

/* Lease callback, on the loop. |instance| is the number acquired or lost. */
typedef void (*snowflake_lease_cb)(snowflake_lease *l, snowflake_lease_event ev, int instance,
                                   void *user_data);

typedef struct snowflake_lease_config {
    const char *owner;       /* unique per process; default "<hostname>:<pid>:<random hex>" */
    const char *key_prefix;  /* default "snowflake" */
    uint32_t ttl_ms;         /* lease TTL in Redis, default 10000 (min 1000) */
    uint32_t renew_ms;       /* renewal period, default ttl_ms / 3 */
    uint32_t retry_ms;       /* pause before scanning again when none was free, default 1000 */
    unsigned first_instance; /* lowest number to try, default 0 */
    unsigned instance_count; /* how many numbers to try, default 128 (up to 128 - first) */
} snowflake_lease_config;

/* Fills |cfg| with the defaults above. */
void snowflake_lease_config_init(snowflake_lease_config *cfg);

/* Starts leasing an instance number for |gen| (whose site names the keys) through |redis|.
 * |gen| is stopped until the first ACQUIRED. |cfg| is copied. |base|, |redis| and |gen| must
 * outlive the lease; free the lease before the redis client. |cb| may be NULL.
 * Returns 0 or SNOWFLAKE_E_INVALID. */
int snowflake_lease_new(snowflake_lease **out, struct event_base *base, redis_client *redis,
                        snowflake *gen, const snowflake_lease_config *cfg, snowflake_lease_cb cb,
                        void *user_data);

/* Stops the generator and releases the lease (an asynchronous best-effort delete that keeps
 * the high-water mark). Safe from inside the lease callback. */
void snowflake_lease_free(snowflake_lease *l);

/* The instance held, or SNOWFLAKE_NO_INSTANCE. */
int snowflake_lease_instance(const snowflake_lease *l);

/* The owner string written into the lease key. */
const char *snowflake_lease_owner(const snowflake_lease *l);

#ifdef __cplusplus
}
#endif

#endif /* SNOWFLAKE_H */
