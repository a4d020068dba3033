/* store.c: presence in Redis with Lua scripts (see store.h). */
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "log.h"
#include "mem.h"

/* --- scripts --------------------------------------------------------------------------------
 * Lua numbers are doubles: Unix ms (< 2^53) are exact. Numbers are formatted with %d before
 * they go into ZRANGEBYSCORE bounds so that no exponent notation reaches Redis. */
/* clang-format off */

#define LUA_NOW                                                                                    \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* settle(devices, seen, seen_ttl): if no device is online but some expired, the user went
 * offline at the latest expiry: raise last-seen to it. Then drop the expired devices.
 * Returns the online count, last-seen and the expired entries (member, score, ...). */
#define LUA_SETTLE                                                                                 \
    "local function settle(z, s, seen_ttl)\n"                                                      \
    "  local live = redis.call('ZCOUNT', z, now, '+inf')\n"                                        \
    "  local seen = tonumber(redis.call('GET', s) or '0') or 0\n"                                  \
    "  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', string.format('(%d', now),\n"           \
    "                          'WITHSCORES')\n"                                                    \
    "  if #dead > 0 then\n"                                                                        \
    "    if live == 0 then\n"                                                                      \
    "      local last = tonumber(dead[#dead])\n"                                                   \
    "      if last > seen then\n"                                                                  \
    "        seen = last\n"                                                                        \
    "        redis.call('SET', s, string.format('%d', seen), 'PX', seen_ttl)\n"                    \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "    redis.call('ZREMRANGEBYSCORE', z, '-inf', string.format('(%d', now))\n"                   \
    "  end\n"                                                                                      \
    "  return live, seen, dead\n"                                                                  \
    "end\n"

/* The earliest expiry among online devices, 0 when none. */
#define LUA_NEXT                                                                                   \
    "local function next_expiry(z)\n"                                                              \
    "  local f = redis.call('ZRANGEBYSCORE', z, now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)\n"       \
    "  if f[2] then return tonumber(f[2]) end\n"                                                   \
    "  return 0\n"                                                                                 \
    "end\n"

/* KEYS: devices, seen, device key. ARGV: device, ttl ms, seen ttl ms, devices grace ms.
 * A device that is already online only gets its TTL moved (PEXPIREAT: an "expire" event that
 * the feed does not subscribe to); a device coming online gets SET ("set" event). */
static const char HEARTBEAT_LUA[] =
    LUA_NOW LUA_SETTLE
    "settle(KEYS[1], KEYS[2], ARGV[3])\n"
    "local exp = now + tonumber(ARGV[2])\n"
    "redis.call('ZADD', KEYS[1], string.format('%d', exp), ARGV[1])\n"
    "if redis.call('PEXPIREAT', KEYS[3], string.format('%d', exp)) == 0 then\n"
    "  redis.call('SET', KEYS[3], '1', 'PXAT', string.format('%d', exp))\n"
    "end\n"
    "local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')\n"
    "redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(top[2]) + tonumber(ARGV[4])))\n"
    "return {exp, redis.call('ZCOUNT', KEYS[1], now, '+inf')}\n";

/* KEYS: devices, seen, device key. ARGV: device, seen ttl ms. Returns {devices, last_seen}. */
static const char SET_OFFLINE_LUA[] =
    LUA_NOW LUA_SETTLE
    "local live, seen = settle(KEYS[1], KEYS[2], ARGV[2])\n"
    "if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then\n"
    "  live = live - 1\n"
    "  if live == 0 then\n"
    "    seen = now\n"
    "    redis.call('SET', KEYS[2], string.format('%d', now), 'PX', ARGV[2])\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[3])\n"
    "return {live, seen}\n";

/* KEYS: devices_1, seen_1, devices_2, seen_2, ... Returns {now, devices, seen, next, ...}
 * computed as if settled, without writing. */
static const char GET_LUA[] =
    "#!lua flags=no-writes\n"
    LUA_NOW LUA_NEXT
    "local out = {now}\n"
    "for i = 1, #KEYS, 2 do\n"
    "  local live = redis.call('ZCOUNT', KEYS[i], now, '+inf')\n"
    "  local seen = tonumber(redis.call('GET', KEYS[i + 1]) or '0') or 0\n"
    "  local nxt = 0\n"
    "  if live == 0 then\n"
    "    local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')\n"
    "    if top[2] and tonumber(top[2]) > seen then seen = tonumber(top[2]) end\n"
    "  else\n"
    "    nxt = next_expiry(KEYS[i])\n"
    "  end\n"
    "  out[#out + 1] = live\n"
    "  out[#out + 1] = seen\n"
    "  out[#out + 1] = nxt\n"
    "end\n"
    "return out\n";

/* KEYS: devices_i, seen_i pairs. ARGV: seen ttl ms, then the user ids (to name the device keys
 * of expired devices, which are touched so Redis expires them and publishes "expired"). Keys
 * built inside the script: standalone Redis only (as is all of svc-presence). */
static const char SWEEP_LUA[] =
    LUA_NOW LUA_SETTLE LUA_NEXT
    "local out = {now}\n"
    "for i = 1, #KEYS / 2 do\n"
    "  local live, seen, dead = settle(KEYS[2 * i - 1], KEYS[2 * i], ARGV[1])\n"
    "  for j = 1, #dead, 2 do\n"
    "    redis.call('EXISTS', '" KEYS_DEVICE_PREFIX "' .. ARGV[i + 1] .. ':' .. dead[j])\n"
    "  end\n"
    "  local nxt = 0\n"
    "  if live > 0 then nxt = next_expiry(KEYS[2 * i - 1]) end\n"
    "  out[#out + 1] = live\n"
    "  out[#out + 1] = seen\n"
    "  out[#out + 1] = nxt\n"
    "end\n"
    "return out\n";

/* KEYS: chat:<id>:members. ARGV: caller. Returns {-1} no chat, {-2} not a member, else
 * {online, members, now}. */
static const char COUNT_LUA[] =
    "#!lua flags=no-writes\n"
    LUA_NOW
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {-2} end\n"
    "local members = redis.call('SMEMBERS', KEYS[1])\n"
    "local online = 0\n"
    "for _, m in ipairs(members) do\n"
    "  if redis.call('ZCOUNT', '" KEYS_DEVICES_PREFIX "' .. m, now, '+inf') > 0 then\n"
    "    online = online + 1\n"
    "  end\n"
    "end\n"
    "return {online, #members, now}\n";

/* clang-format on */

struct store {
    store_config cfg;
    redis_script *heartbeat;
    redis_script *set_offline;
    redis_script *get;
    redis_script *sweep;
    redis_script *count;
};

const char *store_strerror(int err)
{
    switch (err) {
    case STORE_E_REPLY:
        return "unexpected reply from Redis";
    case STORE_E_NOT_FOUND:
        return "no such chat";
    case STORE_E_NOT_MEMBER:
        return "not a member of the chat";
    case STORE_E_INVALID:
        return "invalid argument";
    default:
        return redis_strerror(err);
    }
}

void store_config_init(store_config *cfg)
{
    cfg->last_seen_ttl_ms = 30LL * 24 * 3600 * 1000;
    cfg->devices_grace_ms = 24LL * 3600 * 1000;
}

int store_new(store **out, const store_config *cfg)
{
    store *st = mem_calloc(1, sizeof(*st));
    if (cfg)
        st->cfg = *cfg;
    else
        store_config_init(&st->cfg);
    redis_script_new(&st->heartbeat, HEARTBEAT_LUA);
    redis_script_new(&st->set_offline, SET_OFFLINE_LUA);
    redis_script_new(&st->get, GET_LUA);
    redis_script_new(&st->sweep, SWEEP_LUA);
    redis_script_new(&st->count, COUNT_LUA);
    *out = st;
    return 0;
}

void store_free(store *st)
{
    if (st == NULL)
        return;
    redis_script_free(st->heartbeat);
    redis_script_free(st->set_offline);
    redis_script_free(st->get);
    redis_script_free(st->sweep);
    redis_script_free(st->count);
    free(st);
}

/* --- reply helpers ------------------------------------------------------------------------- */

/* 0, the transport error, or STORE_E_REPLY for a Redis error / non-array of at least |min|. */
static int reply_check(const redisReply *r, int status, size_t min)
{
    if (r == NULL)
        return status ? status : STORE_E_REPLY;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn("presence store: redis error: %.*s", (int)r->len, r->str);
        return STORE_E_REPLY;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < min)
        return STORE_E_REPLY;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return STORE_E_REPLY;
    return 0;
}

static int64_t el(const redisReply *r, size_t i)
{
    return (int64_t)r->element[i]->integer;
}

/* --- heartbeat / set offline -------------------------------------------------------------- */

typedef struct one_op {
    union {
        store_heartbeat_cb hb;
        store_presence_cb pr;
    } cb;
    void *ud;
} one_op;

typedef struct user_keys {
    char devices[KEYS_MAX];
    char seen[KEYS_MAX];
    char device[KEYS_MAX];
} user_keys;

static int user_keys_make(user_keys *k, const char *user, const char *device)
{
    if (keys_devices(k->devices, sizeof(k->devices), user) == 0 ||
        keys_seen(k->seen, sizeof(k->seen), user) == 0 ||
        keys_device(k->device, sizeof(k->device), user, device) == 0)
        return STORE_E_INVALID;
    return 0;
}

static void on_heartbeat(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    one_op *op = ud;
    int err = reply_check(r, status, 2);
    if (err)
        op->cb.hb(err, 0, 0, op->ud);
    else
        op->cb.hb(0, el(r, 0), (uint32_t)el(r, 1), op->ud);
    free(op);
}

int store_heartbeat(const store *st, redis_client *c, const char *user, const char *device,
                    uint32_t ttl_ms, store_heartbeat_cb cb, void *ud)
{
    user_keys k;
    if (user_keys_make(&k, user, device) != 0)
        return STORE_E_INVALID;
    char ttl[24], seen_ttl[24], grace[24];
    snprintf(ttl, sizeof(ttl), "%" PRIu32, ttl_ms);
    snprintf(seen_ttl, sizeof(seen_ttl), "%" PRId64, st->cfg.last_seen_ttl_ms);
    snprintf(grace, sizeof(grace), "%" PRId64, st->cfg.devices_grace_ms);
    const char *argv[] = {k.devices, k.seen, k.device, device, ttl, seen_ttl, grace};
    one_op *op = mem_alloc(sizeof(*op));
    op->cb.hb = cb;
    op->ud = ud;
    int rv = redis_client_eval(c, st->heartbeat, 3, 7, argv, NULL, on_heartbeat, op);
    if (rv != 0)
        free(op);
    return rv;
}

static void on_set_offline(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    one_op *op = ud;
    int err = reply_check(r, status, 2);
    if (err) {
        op->cb.pr(err, NULL, op->ud);
    } else {
        store_presence p = {.devices = (uint32_t)el(r, 0), .last_seen_ms = el(r, 1)};
        op->cb.pr(0, &p, op->ud);
    }
    free(op);
}

int store_set_offline(const store *st, redis_client *c, const char *user, const char *device,
                      store_presence_cb cb, void *ud)
{
    user_keys k;
    if (user_keys_make(&k, user, device) != 0)
        return STORE_E_INVALID;
    char seen_ttl[24];
    snprintf(seen_ttl, sizeof(seen_ttl), "%" PRId64, st->cfg.last_seen_ttl_ms);
    const char *argv[] = {k.devices, k.seen, k.device, device, seen_ttl};
    one_op *op = mem_alloc(sizeof(*op));
    op->cb.pr = cb;
    op->ud = ud;
    int rv = redis_client_eval(c, st->set_offline, 3, 5, argv, NULL, on_set_offline, op);
    if (rv != 0)
        free(op);
    return rv;
}

/* --- batch reads --------------------------------------------------------------------------- */

typedef struct batch_op {
    store_batch_cb cb;
    void *ud;
    size_t n; /* users asked */
} batch_op;

static void on_batch(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    batch_op *op = ud;
    int err = reply_check(r, status, 1 + 3 * op->n);
    if (err) {
        op->cb(err, 0, NULL, 0, op->ud);
    } else {
        store_presence *p = mem_alloc(op->n * sizeof(*p));
        for (size_t i = 0; i < op->n; i++) {
            p[i].devices = (uint32_t)el(r, 1 + 3 * i);
            p[i].last_seen_ms = el(r, 2 + 3 * i);
            p[i].next_expiry_ms = el(r, 3 + 3 * i);
        }
        op->cb(0, el(r, 0), p, op->n, op->ud);
        free(p);
    }
    free(op);
}

/* Builds KEYS (devices_i, seen_i) and, for |with_users|, ARGV (|extra| then the user ids) in one
 * allocation, and sends |script|. */
static int batch_eval(const store *st, redis_client *c, const redis_script *script,
                      const char *const *users, size_t n, const char *extra, bool with_users,
                      store_batch_cb cb, void *ud)
{
    if (n == 0 || n > STORE_BATCH_MAX)
        return STORE_E_INVALID;
    (void)st;
    size_t nkeys = 2 * n;
    size_t argc = nkeys + (with_users ? 1 + n : 0);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += 2 * strlen(users[i]) + sizeof(KEYS_DEVICES_PREFIX) + sizeof(KEYS_SEEN_PREFIX);
    const char **argv = mem_alloc(argc * sizeof(*argv));
    size_t *lens = mem_alloc(argc * sizeof(*lens));
    char *buf = mem_alloc(bytes);
    char *p = buf;
    for (size_t i = 0; i < n; i++) {
        size_t ul = strlen(users[i]);
        argv[2 * i] = p;
        memcpy(p, KEYS_DEVICES_PREFIX, sizeof(KEYS_DEVICES_PREFIX) - 1);
        memcpy(p + sizeof(KEYS_DEVICES_PREFIX) - 1, users[i], ul);
        lens[2 * i] = sizeof(KEYS_DEVICES_PREFIX) - 1 + ul;
        p += lens[2 * i];
        argv[2 * i + 1] = p;
        memcpy(p, KEYS_SEEN_PREFIX, sizeof(KEYS_SEEN_PREFIX) - 1);
        memcpy(p + sizeof(KEYS_SEEN_PREFIX) - 1, users[i], ul);
        lens[2 * i + 1] = sizeof(KEYS_SEEN_PREFIX) - 1 + ul;
        p += lens[2 * i + 1];
    }
    if (with_users) {
        argv[nkeys] = extra;
        lens[nkeys] = strlen(extra);
        for (size_t i = 0; i < n; i++) {
            argv[nkeys + 1 + i] = users[i];
            lens[nkeys + 1 + i] = strlen(users[i]);
        }
    }
    batch_op *op = mem_alloc(sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    op->n = n;
    int rv = redis_client_eval(c, script, (int)nkeys, (int)argc, argv, lens, on_batch, op);
    if (rv != 0)
        free(op);
    free(buf);
    free(lens);
    free(argv);
    return rv;
}

int store_get(const store *st, redis_client *c, const char *const *users, size_t n,
              store_batch_cb cb, void *ud)
{
    return batch_eval(st, c, st->get, users, n, NULL, false, cb, ud);
}

int store_sweep(const store *st, redis_client *c, const char *const *users, size_t n,
                store_batch_cb cb, void *ud)
{
    char seen_ttl[24];
    snprintf(seen_ttl, sizeof(seen_ttl), "%" PRId64, st->cfg.last_seen_ttl_ms);
    return batch_eval(st, c, st->sweep, users, n, seen_ttl, true, cb, ud);
}

/* --- CountOnline --------------------------------------------------------------------------- */

typedef struct count_op {
    store_count_cb cb;
    void *ud;
} count_op;

static void on_count(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    count_op *op = ud;
    int err = reply_check(r, status, 1);
    if (!err && el(r, 0) == -1)
        err = STORE_E_NOT_FOUND;
    else if (!err && el(r, 0) == -2)
        err = STORE_E_NOT_MEMBER;
    else if (!err && r->elements < 3)
        err = STORE_E_REPLY;
    if (err) {
        op->cb(err, NULL, op->ud);
    } else {
        store_count res = {.online = (uint32_t)el(r, 0),
                           .members = (uint32_t)el(r, 1),
                           .computed_at_ms = el(r, 2)};
        op->cb(0, &res, op->ud);
    }
    free(op);
}

int store_count_online(const store *st, redis_client *c, uint64_t chat_id, const char *caller,
                       store_count_cb cb, void *ud)
{
    char key[64];
    if (keys_members(key, sizeof(key), chat_id) == 0)
        return STORE_E_INVALID;
    const char *argv[] = {key, caller};
    count_op *op = mem_alloc(sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    int rv = redis_client_eval(c, st->count, 1, 2, argv, NULL, on_count, op);
    if (rv != 0)
        free(op);
    return rv;
}

/* --- notify-keyspace-events ---------------------------------------------------------------- */

/* Classes that the alias 'A' stands for (Redis 7). */
#define NOTIFY_ALIAS_A "g$lshzxetd"

static bool notify_has(const char *have, char c)
{
    if (strchr(have, c) != NULL)
        return true;
    return strchr(have, 'A') != NULL && strchr(NOTIFY_ALIAS_A, c) != NULL;
}

bool store_notify_union(const char *have, const char *need, char *out, size_t cap)
{
    size_t n = 0;
    bool covered = true;
    for (const char *p = have; *p && n + 1 < cap; p++)
        out[n++] = *p;
    for (const char *p = need; *p; p++) {
        if (notify_has(have, *p))
            continue;
        covered = false;
        if (n + 1 < cap)
            out[n++] = *p;
    }
    out[n] = '\0';
    return covered;
}

typedef struct notify_op {
    store_notify_cb cb;
    void *ud;
    char before[64];
    char after[64];
} notify_op;

static void on_notify_set(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    notify_op *op = ud;
    if (r == NULL) {
        op->cb(status ? status : STORE_E_REPLY, op->before, op->before, false, op->ud);
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_warn("presence store: CONFIG SET notify-keyspace-events %s refused: %.*s", op->after,
                 (int)r->len, r->str);
        op->cb(0, op->before, op->before, false, op->ud);
    } else {
        op->cb(0, op->before, op->after, true, op->ud);
    }
    free(op);
}

static void on_notify_get(redis_client *c, const redisReply *r, int status, void *ud)
{
    notify_op *op = ud;
    if (r == NULL) {
        op->cb(status ? status : STORE_E_REPLY, NULL, NULL, false, op->ud);
        free(op);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len >= 32) {
        if (r->type == REDIS_REPLY_ERROR)
            log_warn("presence store: CONFIG GET notify-keyspace-events refused: %.*s", (int)r->len,
                     r->str);
        op->cb(0, NULL, NULL, false, op->ud);
        free(op);
        return;
    }
    memcpy(op->before, r->element[1]->str, r->element[1]->len);
    op->before[r->element[1]->len] = '\0';
    if (store_notify_union(op->before, STORE_NOTIFY_FLAGS, op->after, sizeof(op->after))) {
        op->cb(0, op->before, op->before, false, op->ud);
        free(op);
        return;
    }
    const char *argv[] = {"CONFIG", "SET", "notify-keyspace-events", op->after};
    int rv = redis_client_command(c, 4, argv, NULL, on_notify_set, op);
    if (rv != 0) {
        op->cb(rv, op->before, op->before, false, op->ud);
        free(op);
    }
}

int store_ensure_notify(redis_client *c, store_notify_cb cb, void *ud)
{
    notify_op *op = mem_calloc(1, sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    const char *argv[] = {"CONFIG", "GET", "notify-keyspace-events"};
    int rv = redis_client_command(c, 3, argv, NULL, on_notify_get, op);
    if (rv != 0)
        free(op);
    return rv;
}
