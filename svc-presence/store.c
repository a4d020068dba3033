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
 * Lua numbers are doubles: Unix ms (< 2^53) are exact. Numbers are converted to and from text
 * as little as possible (tonumber and string.format each cost Redis about as much as a
 * redis.call): a record's expiries keep their text next to their value and are written back
 * as read, and a batch formats each distinct expiry once. Scripts are effect-replicated
 * (Redis 7). */
/* clang-format off */

/* now (Unix ms, Redis clock).
 * load(record) -> seen, devs: |seen| is last-seen as its decimal text ('0' if none), |devs| a
 * flat array of (device, expiry, expiry text) triples. Records are written only here, so they
 * are well-formed (state.h); a one-device record, the common case, is read by one match.
 * settle(seen, devs) drops expired devices (in place) and, if none is online, raises last-seen
 * to the latest expiry: returns live, seen, the expired device names (nil if none).
 * save(key, seen, devs, ttl) writes the record. */
#define LUA_PRELUDE                                                                                \
    "local call, tonumber, match, fmt = redis.call, tonumber, string.match, string.format\n"       \
    "local t = call('TIME')\n"                                                                     \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                      \
    "local function load(s)\n"                                                                     \
    "  if not s then return '0', {} end\n"                                                         \
    "  local seen, d, e = match(s, '^(%d+) ([^ =]+)=(%d+)$')\n"                                    \
    "  if seen then return seen, {d, tonumber(e), e} end\n"                                        \
    "  local devs, n = {}, 0\n"                                                                    \
    "  for d, e in string.gmatch(s, ' ([^ =]+)=(%d+)') do\n"                                       \
    "    devs[n + 1], devs[n + 2], devs[n + 3] = d, tonumber(e), e\n"                              \
    "    n = n + 3\n"                                                                              \
    "  end\n"                                                                                      \
    "  return match(s, '^%d+') or '0', devs\n"                                                     \
    "end\n"                                                                                        \
    "local function settle(seen, devs)\n"                                                          \
    "  local live, last, lasts, dead, j, n = 0, 0, nil, nil, 0, #devs\n"                           \
    "  for i = 1, n, 3 do\n"                                                                       \
    "    local e = devs[i + 1]\n"                                                                  \
    "    if e >= now then\n"                                                                       \
    "      live = live + 1\n"                                                                      \
    "      if j + 1 < i then devs[j + 1], devs[j + 2], devs[j + 3] = devs[i], e, devs[i + 2] end\n" \
    "      j = j + 3\n"                                                                            \
    "    else\n"                                                                                   \
    "      if dead then dead[#dead + 1] = devs[i] else dead = {devs[i]} end\n"                     \
    "      if e > last then last, lasts = e, devs[i + 2] end\n"                                    \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for i = n, j + 1, -1 do devs[i] = nil end\n"                                                \
    "  if live == 0 and lasts and last > tonumber(seen) then seen = lasts end\n"                   \
    "  return live, seen, dead\n"                                                                  \
    "end\n"                                                                                        \
    "local function save(key, seen, devs, ttl)\n"                                                  \
    "  local s = seen\n"                                                                           \
    "  for i = 1, #devs, 3 do s = s .. ' ' .. devs[i] .. '=' .. devs[i + 2] end\n"                 \
    "  call('SET', key, s, 'PX', ttl)\n"                                                           \
    "end\n"

/* No KEYS (the keys are built here from the ids, like SWEEP_LUA's: standalone Redis only).
 * ARGV: record ttl ms, max devices, then (user, device, ttl ms) per heartbeat, applied in
 * order, each exactly as if it were a script call of its own (a repeated user or device sees
 * the earlier one's write), but with one TIME for all. Returns two elements per heartbeat:
 * expires_at and devices online, or an error reply and 0 when that user's record could not be
 * read (a key of another type); the others are not affected.
 *
 * A device already online whose expiry moves later only gets its key's TTL moved (PEXPIREAT:
 * an "expire" event the feed does not subscribe to); a device coming online, or whose expiry
 * moves earlier (watchers must re-read it to reschedule their expiry backstop), gets its key
 * re-created (DEL, SADD: "sadd" and maybe "del" events). A new device beyond max devices
 * replaces the one whose expiry is nearest, whose key is deleted ("del"). */
static const char HEARTBEATS_LUA[] =
    LUA_PRELUDE
    "local rttl, maxd, out, exps, j = ARGV[1], tonumber(ARGV[2]), {}, {}, 0\n"
    "for i = 3, #ARGV - 2, 3 do\n"
    "  local u, dev, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n"
    "  local rk = '" KEYS_STATE_PREFIX "' .. u\n"
    "  local s = redis.pcall('GET', rk)\n"
    "  if type(s) == 'table' then\n"
    "    out[j + 1], out[j + 2] = s, 0\n"
    "  else\n"
    "    local seen, devs = load(s)\n"
    "    local live, at\n"
    "    live, seen = settle(seen, devs)\n"
    "    for k = 1, #devs, 3 do\n"
    "      if devs[k] == dev then at = k break end\n"
    "    end\n"
    "    local was = at and devs[at + 1]\n"
    "    local pre = '" KEYS_DEVICE_PREFIX "' .. u .. ':'\n"
    "    if not at and live >= maxd then\n"
    "      at = 1\n"
    "      for k = 4, #devs, 3 do\n"
    "        if devs[k + 1] < devs[at + 1] then at = k end\n"
    "      end\n"
    "      call('DEL', pre .. devs[at])\n"
    "      live = live - 1\n"
    "    end\n"
    "    local x = exps[ttl]\n"
    "    if not x then\n"
    "      x = {now + tonumber(ttl)}\n"
    "      x[2] = fmt('%d', x[1])\n"
    "      exps[ttl] = x\n"
    "    end\n"
    "    local exp, es = x[1], x[2]\n"
    "    at = at or #devs + 1\n"
    "    devs[at], devs[at + 1], devs[at + 2] = dev, exp, es\n"
    "    save(rk, seen, devs, rttl)\n"
    "    local dk = pre .. dev\n"
    "    if not (was and exp >= was and call('PEXPIREAT', dk, es) == 1) then\n"
    "      call('DEL', dk)\n"
    "      call('SADD', dk, '1')\n"
    "      call('PEXPIREAT', dk, es)\n"
    "    end\n"
    "    if not was then live = live + 1 end\n"
    "    out[j + 1], out[j + 2] = exp, live\n"
    "  end\n"
    "  j = j + 2\n"
    "end\n"
    "return out\n";

/* KEYS: record, device key. ARGV: device, record ttl ms. Returns {devices, last_seen}. */
static const char SET_OFFLINE_LUA[] =
    LUA_PRELUDE
    "local s = call('GET', KEYS[1])\n"
    "call('DEL', KEYS[2])\n"
    "if not s then return {0, 0} end\n"
    "local seen, devs = load(s)\n"
    "local live\n"
    "live, seen = settle(seen, devs)\n"
    "for k = 1, #devs, 3 do\n"
    "  if devs[k] == ARGV[1] then\n"
    "    local n = #devs\n"
    "    devs[k], devs[k + 1], devs[k + 2] = devs[n - 2], devs[n - 1], devs[n]\n"
    "    devs[n], devs[n - 1], devs[n - 2] = nil, nil, nil\n"
    "    live = live - 1\n"
    "    if live == 0 then seen = fmt('%d', now) end\n"
    "    break\n"
    "  end\n"
    "end\n"
    "save(KEYS[1], seen, devs, ARGV[2])\n"
    "return {live, tonumber(seen)}\n";

/* KEYS: records. ARGV: record ttl ms, then the user ids (to name the device keys of expired
 * devices, which are touched so Redis expires them now and publishes "expired"; keys built
 * inside the script: standalone Redis only, as is all of svc-presence).
 * Returns {now, devices, last_seen, next_expiry, ...}. */
static const char SWEEP_LUA[] =
    LUA_PRELUDE
    "local out = {now}\n"
    "for i = 1, #KEYS do\n"
    "  local seen, devs = load(call('GET', KEYS[i]))\n"
    "  local live, dead\n"
    "  live, seen, dead = settle(seen, devs)\n"
    "  if dead then\n"
    "    save(KEYS[i], seen, devs, ARGV[1])\n"
    "    for _, d in ipairs(dead) do\n"
    "      call('EXISTS', '" KEYS_DEVICE_PREFIX "' .. ARGV[i + 1] .. ':' .. d)\n"
    "    end\n"
    "  end\n"
    "  local nxt = 0\n"
    "  for k = 2, #devs, 3 do\n"
    "    if nxt == 0 or devs[k] < nxt then nxt = devs[k] end\n"
    "  end\n"
    "  out[#out + 1] = live\n"
    "  out[#out + 1] = tonumber(seen)\n"
    "  out[#out + 1] = nxt\n"
    "end\n"
    "return out\n";

/* KEYS: chat:<id>:members. ARGV: caller. Returns {-1} no chat, {-2} not a member, else
 * {online, members, now}. */
static const char COUNT_LUA[] =
    "#!lua flags=no-writes\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {-2} end\n"
    "local members = redis.call('SMEMBERS', KEYS[1])\n"
    "local online = 0\n"
    "for i = 1, #members, 256 do\n"
    "  local keys = {}\n"
    "  for j = i, math.min(i + 255, #members) do\n"
    "    keys[#keys + 1] = '" KEYS_STATE_PREFIX "' .. members[j]\n"
    "  end\n"
    "  for _, v in ipairs(redis.call('MGET', unpack(keys))) do\n"
    "    if v then\n"
    "      for e in string.gmatch(v, '=(%d+)') do\n"
    "        if tonumber(e) >= now then\n"
    "          online = online + 1\n"
    "          break\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {online, #members, now}\n";

/* clang-format on */

struct store {
    store_config cfg;
    redis_script *heartbeat;
    redis_script *set_offline;
    redis_script *sweep;
    redis_script *count;
    char record_ttl[24]; /* cfg.record_ttl_ms as a decimal argument */
    char max_devices[16];
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
    cfg->record_ttl_ms = 30LL * 24 * 3600 * 1000;
    cfg->max_devices = 32;
}

int store_new(store **out, const store_config *cfg)
{
    store *st = mem_calloc(1, sizeof(*st));
    if (cfg)
        st->cfg = *cfg;
    else
        store_config_init(&st->cfg);
    if (st->cfg.max_devices == 0)
        st->cfg.max_devices = 1;
    snprintf(st->record_ttl, sizeof(st->record_ttl), "%" PRId64, st->cfg.record_ttl_ms);
    snprintf(st->max_devices, sizeof(st->max_devices), "%" PRIu32, st->cfg.max_devices);
    redis_script_new(&st->heartbeat, HEARTBEATS_LUA);
    redis_script_new(&st->set_offline, SET_OFFLINE_LUA);
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

/* --- heartbeats ---------------------------------------------------------------------------- */

typedef struct batch_hb_op {
    store_heartbeats_cb cb;
    void *ud;
    size_t n; /* heartbeats sent */
} batch_hb_op;

static void on_heartbeats(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    batch_hb_op *op = ud;
    size_t n = op->n;
    int err = 0;
    if (r == NULL)
        err = status ? status : STORE_E_REPLY;
    else if (r->type == REDIS_REPLY_ERROR)
        err = reply_check(r, status, 0); /* logs it */
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 * n)
        err = STORE_E_REPLY;
    store_hb_result res[STORE_HEARTBEATS_MAX];
    for (size_t i = 0; i < n && err == 0; i++) {
        const redisReply *e = r->element[2 * i], *d = r->element[2 * i + 1];
        if (d->type != REDIS_REPLY_INTEGER) {
            err = STORE_E_REPLY;
        } else if (e->type == REDIS_REPLY_INTEGER) {
            res[i] = (store_hb_result){0, (int64_t)e->integer, (uint32_t)d->integer};
        } else if (e->type == REDIS_REPLY_ERROR) {
            log_warn("presence store: heartbeat: redis error: %.*s", (int)e->len, e->str);
            res[i] = (store_hb_result){STORE_E_REPLY, 0, 0};
        } else {
            err = STORE_E_REPLY;
        }
    }
    if (err)
        op->cb(err, NULL, n, op->ud);
    else
        op->cb(0, res, n, op->ud);
    free(op);
}

int store_heartbeats(const store *st, redis_client *c, const store_hb *hb, size_t n,
                     store_heartbeats_cb cb, void *ud)
{
    if (n == 0 || n > STORE_HEARTBEATS_MAX)
        return STORE_E_INVALID;
    /* ARGV: record ttl, max devices, then user, device, ttl per heartbeat */
    const char *argv[2 + 3 * STORE_HEARTBEATS_MAX];
    size_t lens[2 + 3 * STORE_HEARTBEATS_MAX];
    char ttls[STORE_HEARTBEATS_MAX][11];
    argv[0] = st->record_ttl;
    lens[0] = strlen(st->record_ttl);
    argv[1] = st->max_devices;
    lens[1] = strlen(st->max_devices);
    for (size_t i = 0; i < n; i++) {
        size_t ul = strlen(hb[i].user), dl = strlen(hb[i].device);
        /* the longest key the script builds: "presence:<user>:<device>" */
        if (sizeof(KEYS_DEVICE_PREFIX) + ul + 1 + dl > KEYS_MAX)
            return STORE_E_INVALID;
        size_t k = 2 + 3 * i;
        argv[k] = hb[i].user;
        lens[k] = ul;
        argv[k + 1] = hb[i].device;
        lens[k + 1] = dl;
        argv[k + 2] = ttls[i];
        lens[k + 2] = (size_t)snprintf(ttls[i], sizeof(ttls[i]), "%" PRIu32, hb[i].ttl_ms);
    }
    batch_hb_op *op = mem_alloc(sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    op->n = n;
    int rv =
        redis_client_eval(c, st->heartbeat, 0, (int)(2 + 3 * n), argv, lens, on_heartbeats, op);
    if (rv != 0)
        free(op);
    return rv;
}

/* store_heartbeat: a batch of one. */
typedef struct one_hb_op {
    store_heartbeat_cb cb;
    void *ud;
} one_hb_op;

static void on_one_heartbeat(int err, const store_hb_result *r, size_t n, void *ud)
{
    (void)n;
    one_hb_op *op = ud;
    if (err == 0)
        err = r[0].err;
    if (err)
        op->cb(err, 0, 0, op->ud);
    else
        op->cb(0, r[0].expires_at_ms, r[0].devices, op->ud);
    free(op);
}

int store_heartbeat(const store *st, redis_client *c, const char *user, const char *device,
                    uint32_t ttl_ms, store_heartbeat_cb cb, void *ud)
{
    const store_hb hb = {.user = user, .device = device, .ttl_ms = ttl_ms};
    one_hb_op *op = mem_alloc(sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    int rv = store_heartbeats(st, c, &hb, 1, on_one_heartbeat, op);
    if (rv != 0)
        free(op);
    return rv;
}

/* --- set offline --------------------------------------------------------------------------- */

typedef struct one_op {
    store_presence_cb cb;
    void *ud;
} one_op;

typedef struct user_keys {
    char state[KEYS_MAX];
    char device[KEYS_MAX];
} user_keys;

static int user_keys_make(user_keys *k, const char *user, const char *device)
{
    if (keys_state(k->state, sizeof(k->state), user) == 0 ||
        keys_device(k->device, sizeof(k->device), user, device) == 0)
        return STORE_E_INVALID;
    return 0;
}

static void on_set_offline(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    one_op *op = ud;
    int err = reply_check(r, status, 2);
    if (err) {
        op->cb(err, NULL, op->ud);
    } else {
        store_presence p = {.devices = (uint32_t)el(r, 0), .last_seen_ms = el(r, 1)};
        op->cb(0, &p, op->ud);
    }
    free(op);
}

int store_set_offline(const store *st, redis_client *c, const char *user, const char *device,
                      store_presence_cb cb, void *ud)
{
    user_keys k;
    if (user_keys_make(&k, user, device) != 0)
        return STORE_E_INVALID;
    const char *argv[] = {k.state, k.device, device, st->record_ttl};
    one_op *op = mem_alloc(sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    int rv = redis_client_eval(c, st->set_offline, 2, 4, argv, NULL, on_set_offline, op);
    if (rv != 0)
        free(op);
    return rv;
}

/* --- batch reads ------------------------------------------------------------------------- */

/* Builds "presence-state:<user>" for each of |n| users after |lead| leading arguments, all in
 * one allocation: |*argv|, |*lens| (lead + n entries, the lead ones left for the caller) and
 * the returned buffer, freed by the caller. */
static char *state_keys(const char *const *users, size_t n, size_t lead, const char ***argv,
                        size_t **lens)
{
    const size_t plen = sizeof(KEYS_STATE_PREFIX) - 1;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += plen + strlen(users[i]);
    *argv = mem_alloc((lead + n) * sizeof(**argv));
    *lens = mem_alloc((lead + n) * sizeof(**lens));
    char *buf = mem_alloc(bytes ? bytes : 1);
    char *p = buf;
    for (size_t i = 0; i < n; i++) {
        size_t ul = strlen(users[i]);
        memcpy(p, KEYS_STATE_PREFIX, plen);
        memcpy(p + plen, users[i], ul);
        (*argv)[lead + i] = p;
        (*lens)[lead + i] = plen + ul;
        p += plen + ul;
    }
    return buf;
}

/* store_get: TIME and MGET pipelined on one connection, so TIME's reply comes first. */
typedef struct get_op {
    store_batch_cb cb;
    void *ud;
    size_t n;          /* users asked */
    int pending;       /* replies still to come */
    int err;           /* first error */
    int64_t now;       /* from TIME */
    store_presence *p; /* results, filled by the MGET reply */
} get_op;

static void get_finish(get_op *op)
{
    if (--op->pending > 0)
        return;
    if (op->err)
        op->cb(op->err, 0, NULL, 0, op->ud);
    else
        op->cb(0, op->now, op->p, op->n, op->ud);
    free(op->p);
    free(op);
}

static void on_get_time(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    get_op *op = ud;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        if (!op->err)
            op->err = r == NULL && status ? status : STORE_E_REPLY;
    } else {
        op->now = strtoll(r->element[0]->str, NULL, 10) * 1000 +
                  strtoll(r->element[1]->str, NULL, 10) / 1000;
    }
    get_finish(op);
}

static void on_get_mget(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    get_op *op = ud;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != op->n) {
        if (!op->err)
            op->err = r == NULL && status ? status : STORE_E_REPLY;
    } else if (!op->err) {
        op->p = mem_alloc(op->n * sizeof(*op->p));
        for (size_t i = 0; i < op->n; i++) {
            const redisReply *e = r->element[i];
            bool str = e->type == REDIS_REPLY_STRING;
            if (state_parse(str ? e->str : NULL, str ? e->len : 0, op->now, &op->p[i]) != 0)
                log_warn("presence store: malformed presence record (ignored)");
        }
    }
    get_finish(op);
}

int store_get(const store *st, redis_client *c, const char *const *users, size_t n,
              store_batch_cb cb, void *ud)
{
    (void)st;
    if (n == 0 || n > STORE_BATCH_MAX)
        return STORE_E_INVALID;
    const char *time_argv[] = {"TIME"};
    get_op *op = mem_calloc(1, sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    op->n = n;
    int rv = redis_client_command(c, 1, time_argv, NULL, on_get_time, op);
    if (rv != 0) {
        free(op);
        return rv;
    }
    op->pending = 1;
    const char **argv;
    size_t *lens;
    char *buf = state_keys(users, n, 1, &argv, &lens);
    argv[0] = "MGET";
    lens[0] = 4;
    rv = redis_client_command(c, (int)(n + 1), argv, lens, on_get_mget, op);
    if (rv == 0)
        op->pending++;
    else
        op->err = rv; /* reported when TIME's reply comes */
    free(buf);
    free(lens);
    free(argv);
    return 0;
}

typedef struct batch_op {
    store_batch_cb cb;
    void *ud;
    size_t n; /* users asked */
} batch_op;

static void on_sweep(redis_client *c, const redisReply *r, int status, void *ud)
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

int store_sweep(const store *st, redis_client *c, const char *const *users, size_t n,
                store_batch_cb cb, void *ud)
{
    if (n == 0 || n > STORE_BATCH_MAX)
        return STORE_E_INVALID;
    /* KEYS = the n records (built at the front), ARGV = record ttl + the n user ids */
    const char **argv;
    size_t *lens;
    char *buf = state_keys(users, n, 0, &argv, &lens);
    argv = mem_realloc(argv, (2 * n + 1) * sizeof(*argv));
    lens = mem_realloc(lens, (2 * n + 1) * sizeof(*lens));
    argv[n] = st->record_ttl;
    lens[n] = strlen(st->record_ttl);
    for (size_t i = 0; i < n; i++) {
        argv[n + 1 + i] = users[i];
        lens[n + 1 + i] = strlen(users[i]);
    }
    batch_op *op = mem_alloc(sizeof(*op));
    op->cb = cb;
    op->ud = ud;
    op->n = n;
    int rv = redis_client_eval(c, st->sweep, (int)n, (int)(2 * n + 1), argv, lens, on_sweep, op);
    if (rv != 0)
        free(op);
    free(buf);
    free(lens);
    free(argv);
    return rv;
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
