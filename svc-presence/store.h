/*
 * store.h: presence in Redis. Every write is a Lua script over the user's record (state.h)
 * and the device's notification key (keys.h), so they change together; heartbeats go in
 * batches, one script call applying many in order (store_heartbeats(), hbqueue.h); a batch
 * read is TIME plus one MGET of the records, pipelined (one round trip, no Lua). Times are
 * Redis's clock (TIME), so instances with skewed clocks agree.
 *
 * Semantics:
 *   - a device is online while its expiry >= now; the user is online while any device is;
 *   - "settling" (every write script does it first): expired devices are dropped, and when no
 *     device is online but some had expired, the user went offline at the latest expiry, so
 *     last-seen is raised to it. Reads compute the same answer without writing, so a read is
 *     right even before an expiry has been settled;
 *   - the record lives record_ttl_ms after its last write (a user offline that long is
 *     forgotten: offline, last-seen 0);
 *   - at most max_devices devices per user: a new device beyond that replaces the one whose
 *     expiry is nearest (which goes offline), so a record stays small.
 *
 * This is also the API for svc-messaging, which keeps devices online for the life of a
 * Connect stream: it can link the presence_store library and call store_heartbeat() /
 * store_set_offline() on its own worker's redis_client (see docs/ARCHITECTURE.md), or batch
 * them with store_heartbeats() or an hbqueue.
 *
 * Threading: a store is immutable after store_new() and may be shared by all workers; each
 * call runs on the loop of the redis_client it is given and calls back there.
 */
#ifndef PRESENCE_STORE_H
#define PRESENCE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "redis.h"
#include "state.h"

/* Error codes (besides the REDIS_E_* of redis.h, passed through). */
enum {
    STORE_E_REPLY = -2100,      /* Redis answered with an error or an unexpected shape */
    STORE_E_NOT_FOUND = -2101,  /* CountOnline: no chat:<id>:members set */
    STORE_E_NOT_MEMBER = -2102, /* CountOnline: the caller is not in the set */
    STORE_E_INVALID = -2103,    /* bad argument (id too long for a key, n out of range) */
};

/* Returns a static description of |err| (STORE_E_* or REDIS_E_*). */
const char *store_strerror(int err);

/* Settings. Fill with store_config_init(). */
typedef struct store_config {
    int64_t record_ttl_ms; /* presence-state:<user> lifetime after a write, default 30 days */
    uint32_t max_devices;  /* devices per user, default 32 */
} store_config;

void store_config_init(store_config *cfg);

typedef struct store store;

/* Creates a store (compiles nothing: scripts are loaded lazily by EVALSHA/EVAL). Returns 0. */
int store_new(store **out, const store_config *cfg);
void store_free(store *st);

/* One user's presence as read (state.h). */
typedef presence_state store_presence;

/* Every call below returns 0 when the command was sent (then |cb| runs exactly once, with
 * |err| 0 or a negative code), or a negative code when it was refused (REDIS_E_BUSY,
 * REDIS_E_DISCONNECTED, STORE_E_INVALID, ...; |cb| does not run). Arguments are copied. */

/* Heartbeat result: the expiry granted (Unix ms, Redis clock) and the devices now online. */
typedef void (*store_heartbeat_cb)(int err, int64_t expires_at_ms, uint32_t devices, void *ud);

/* Marks |device| of |user| online until now + |ttl_ms|. Validated ids are the caller's job.
 * A batch of one (store_heartbeats()); to batch the heartbeats of a loop iteration, see
 * hbqueue.h. */
int store_heartbeat(const store *st, redis_client *c, const char *user, const char *device,
                    uint32_t ttl_ms, store_heartbeat_cb cb, void *ud);

/* One heartbeat of store_heartbeats(): validated ids (the caller's job), TTL in ms. */
typedef struct store_hb {
    const char *user;
    const char *device;
    uint32_t ttl_ms;
} store_hb;

/* Outcome of one heartbeat of a batch. */
typedef struct store_hb_result {
    int err;               /* 0, or STORE_E_REPLY: Redis could not apply this one (its user's
                              record is a key of another type); the others are not affected */
    int64_t expires_at_ms; /* expiry granted (Unix ms, Redis clock), when err is 0 */
    uint32_t devices;      /* devices of the user online after it, when err is 0 */
} store_hb_result;

/* Batch result: |err| is 0 and |r| holds the |n| outcomes in the order sent (valid during the
 * callback), or |err| is the batch's error (STORE_E_REPLY, REDIS_E_CONNECTION, ...) and |r| is
 * NULL (a lost connection leaves it unknown whether the heartbeats were applied). */
typedef void (*store_heartbeats_cb)(int err, const store_hb_result *r, size_t n, void *ud);

/* Heartbeats per store_heartbeats() call. */
#define STORE_HEARTBEATS_MAX 256

/* Applies |n| heartbeats (1..STORE_HEARTBEATS_MAX) with one script call: each exactly as
 * store_heartbeat() would, in the order given (a user or device repeated in the batch sees the
 * earlier heartbeat's write), all at one Redis time. STORE_E_INVALID when an id is too long
 * for a key (nothing sent). */
int store_heartbeats(const store *st, redis_client *c, const store_hb *hb, size_t n,
                     store_heartbeats_cb cb, void *ud);

/* Presence of one user after a write. */
typedef void (*store_presence_cb)(int err, const store_presence *p, void *ud);

/* Marks |device| of |user| offline now (idempotent); reports the user's presence after. */
int store_set_offline(const store *st, redis_client *c, const char *user, const char *device,
                      store_presence_cb cb, void *ud);

/* Presence of |n| users, |p| in the order asked (valid during the callback). |now_ms| is the
 * Redis time of the read. */
typedef void (*store_batch_cb)(int err, int64_t now_ms, const store_presence *p, size_t n,
                               void *ud);

/* Reads |n| users (1..STORE_BATCH_MAX) without writing: TIME + MGET, pipelined. */
#define STORE_BATCH_MAX 500
int store_get(const store *st, redis_client *c, const char *const *users, size_t n,
              store_batch_cb cb, void *ud);

/* Like store_get(), but also settles each user (see above) and touches the keys of devices
 * whose expiry has passed, so that Redis expires them now and publishes their "expired"
 * events (Redis's own expiry of keys can lag by many seconds on a big keyspace). */
int store_sweep(const store *st, redis_client *c, const char *const *users, size_t n,
                store_batch_cb cb, void *ud);

/* CountOnline result. */
typedef struct store_count {
    uint32_t online;        /* members with a device online */
    uint32_t members;       /* members in the set */
    int64_t computed_at_ms; /* Redis time of the count */
} store_count;
typedef void (*store_count_cb)(int err, const store_count *r, void *ud);

/* Counts the online members of chat:<chat_id>:members, checking that |caller| is one of
 * them (STORE_E_NOT_FOUND / STORE_E_NOT_MEMBER). One script: SMEMBERS, then MGET of the
 * members' records in chunks of 256. */
int store_count_online(const store *st, redis_client *c, uint64_t chat_id, const char *caller,
                       store_count_cb cb, void *ud);

/* The notification classes the watch feed needs: keyevent channels (E) for the generic class
 * (g: DEL -> "del"), the set class (s: SADD -> "sadd") and expirations (x: "expired"). Not K:
 * keyspace channels would carry every event of the presence keys to every subscriber,
 * including the "expire" of every heartbeat's TTL refresh; on keyevent channels that event goes
 * to __keyevent@<db>__:expire, which nobody subscribes to, so it costs Redis a lookup and
 * nothing else. Not $: the record's SET on every heartbeat would then be published too. */
#define STORE_NOTIFY_FLAGS "Egsx"

/* Result of store_ensure_notify(): |before| is the server's setting when read (NULL if it could
 * not be read), |after| what it is now (NULL likewise); |changed| when this call set it. */
typedef void (*store_notify_cb)(int err, const char *before, const char *after, bool changed,
                                void *ud);

/* Makes notify-keyspace-events include STORE_NOTIFY_FLAGS, keeping whatever else is set
 * (CONFIG GET, then CONFIG SET of the union only when something is missing). A server that
 * refuses CONFIG (ACLs, managed Redis) is reported with err 0 and |changed| false: |before|
 * and |after| are NULL when even CONFIG GET was refused, else the unchanged setting (which then
 * lacks some flags); the operator must set them. err is a REDIS_E_* only when the connection
 * failed. */
int store_ensure_notify(redis_client *c, store_notify_cb cb, void *ud);

/* The union of notify-keyspace-events |have| and |need| as Redis would accept it, written into
 * |out| (|cap| bytes). Returns true when |have| already covers |need| (out = have). Pure. */
bool store_notify_union(const char *have, const char *need, char *out, size_t cap);

#endif /* PRESENCE_STORE_H */
