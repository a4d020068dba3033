/* cache.c: the Redis recent-message cache (see cache.h). */
#include "cache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "stats.h"

#define PAD_ID_LEN 20

/* Bytewise string order, independent of the server's locale (Lua's < uses strcoll). */
#define LUA_LT                                                                                     \
    "local function lt(a, b)\n"                                                                    \
    "  local n = math.min(#a, #b)\n"                                                               \
    "  for i = 1, n do\n"                                                                          \
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"                                      \
    "    if x ~= y then return x < y end\n"                                                        \
    "  end\n"                                                                                      \
    "  return #a < #b\n"                                                                           \
    "end\n"

/* Trim to the window: drop the oldest entries and raise the floor to the oldest kept. */
#define LUA_TRIM                                                                                   \
    "local function trim(window)\n"                                                                \
    "  local n = redis.call('ZCARD', KEYS[1])\n"                                                   \
    "  if n > window then\n"                                                                       \
    "    local old = redis.call('ZRANGE', KEYS[1], 0, n - window - 1)\n"                           \
    "    for _, id in ipairs(old) do redis.call('HDEL', KEYS[2], id, 'v:' .. id) end\n"            \
    "    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - window - 1)\n"                              \
    "    local first = redis.call('ZRANGE', KEYS[1], 0, 0)\n"                                      \
    "    redis.call('SET', KEYS[3], first[1])\n"                                                   \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function touch(ttl)\n"                                                                  \
    "  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end\n"                                   \
    "end\n"

/* KEYS: recent, msgs, floor, gen. ARGV: window, ttl, then per message (ascending ids, one
 * chat): id, updated_at_ms, version, deleted (0|1), body, serialized message. One call per
 * chat and batch: the generation moves once, the trim and TTL refresh run once. Returns -1
 * cold, else the number of states applied (older ones and ids below the floor are skipped). */
static const char apply_lua[] = LUA_LT LUA_TRIM
    "redis.call('INCR', KEYS[4])\n"
    "redis.call('EXPIRE', KEYS[4], ARGV[2])\n"
    "local floor = redis.call('GET', KEYS[3])\n"
    "if not floor then return -1 end\n"
    "local function newer(i)\n"
    "  local cur = redis.call('HGET', KEYS[2], 'v:' .. ARGV[i])\n"
    "  if not cur then return true end\n"
    "  local u, v, d, b = string.match(cur, '^(%d+) (%d+) (%d) (.*)$')\n"
    "  local nu, nv = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n"
    "  u, v = tonumber(u), tonumber(v)\n"
    "  if nu ~= u then return nu > u end\n"
    "  if nv ~= v then return nv > v end\n"
    "  if ARGV[i + 3] ~= d then return ARGV[i + 3] > d end\n"
    "  return lt(b, ARGV[i + 4])\n"
    "end\n"
    "local applied = 0\n"
    "for i = 3, #ARGV, 6 do\n"
    "  local id = ARGV[i]\n"
    "  if not lt(id, floor) and newer(i) then\n"
    "    redis.call('HSET', KEYS[2], id, ARGV[i + 5], 'v:' .. id,\n"
    "               ARGV[i + 1] .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3] .. ' ' ..\n"
    "               ARGV[i + 4])\n"
    "    redis.call('ZADD', KEYS[1], 0, id)\n"
    "    applied = applied + 1\n"
    "  end\n"
    "end\n"
    "if applied > 0 then\n"
    "  trim(tonumber(ARGV[1]))\n"
    "  touch(ARGV[2])\n"
    "end\n"
    "return applied\n";

/* KEYS: recent, msgs, floor, gen. ARGV: gen, window, ttl, floor, then per message: id, meta,
 * serialized. Returns 1 filled, 0 generation moved. */
static const char fill_lua[] =
    LUA_TRIM "local g = redis.call('GET', KEYS[4]) or '0'\n"
             "if g ~= ARGV[1] then return 0 end\n"
             "redis.call('DEL', KEYS[1], KEYS[2])\n"
             "for i = 5, #ARGV, 3 do\n"
             "  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2], 'v:' .. ARGV[i], ARGV[i + 1])\n"
             "  redis.call('ZADD', KEYS[1], 0, ARGV[i])\n"
             "end\n"
             "redis.call('SET', KEYS[3], ARGV[4])\n"
             "trim(tonumber(ARGV[2]))\n"
             "touch(ARGV[3])\n"
             "return 1\n";

/* KEYS: members, recent, msgs, floor. ARGV: user ('' = any), page. Returns {-1} for a miss or
 * {1, has_more, serialized...} ascending. */
static const char read_lua[] =
    "if ARGV[1] ~= '' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {-1} end\n"
    "local floor = redis.call('GET', KEYS[4])\n"
    "if not floor then return {-1} end\n"
    "local n = redis.call('ZCARD', KEYS[2])\n"
    "local p = tonumber(ARGV[2])\n"
    "local whole = floor == '00000000000000000000'\n"
    "if not whole and n < p + 1 then return {-1} end\n"
    "local k = math.min(n, p)\n"
    "local out = {1, (n > p) and 1 or 0}\n"
    "if k == 0 then return out end\n"
    "local ids = redis.call('ZREVRANGE', KEYS[2], 0, k - 1)\n"
    "for i = #ids, 1, -1 do\n"
    "  local m = redis.call('HGET', KEYS[3], ids[i])\n"
    "  if not m then return {-1} end\n"
    "  out[#out + 1] = m\n"
    "end\n"
    "return out\n";

static redis_script *apply_script, *fill_script, *read_script;
static int cache_window = 100, cache_ttl = 86400;

int cache_init(int window, int ttl_s)
{
    cache_window = window;
    cache_ttl = ttl_s;
    if (redis_script_new(&apply_script, apply_lua) != 0 ||
        redis_script_new(&fill_script, fill_lua) != 0 ||
        redis_script_new(&read_script, read_lua) != 0)
        return REDIS_E_INVALID;
    return 0;
}

void cache_shutdown(void)
{
    redis_script_free(apply_script);
    redis_script_free(fill_script);
    redis_script_free(read_script);
}

static void key(char *buf, size_t cap, uint64_t chat_id, const char *suffix)
{
    snprintf(buf, cap, "chat:%" PRIu64 ":%s", chat_id, suffix);
}

static void pad(char *buf, uint64_t id)
{
    snprintf(buf, PAD_ID_LEN + 1, "%020" PRIu64, id);
}

/* "<updated_at_ms> <version> <deleted>" (the body follows after one more space). */
static size_t meta_prefix(char *buf, size_t cap, const Chat__V1__Message *m)
{
    return (size_t)snprintf(buf, cap, "%" PRId64 " %u %d ", m->updated_at_ms, m->version,
                            m->deleted ? 1 : 0);
}

static void count_error(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    (void)ud;
    if (status != 0 || r == NULL || r->type == REDIS_REPLY_ERROR) {
        metrics_counter_inc(stats.cache_errors);
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            log_warn("cache: %s", r->str);
    }
}

int cache_apply(redis_client *rc, uint64_t chat_id, const Chat__V1__Message *const *msgs, size_t n,
                redis_reply_cb cb, void *ud)
{
    if (cache_window <= 0 || n == 0)
        return 0;
    /* Only the newest |window| ids can survive the trim: older ones would be dropped again. */
    if (n > (size_t)cache_window) {
        msgs += n - (size_t)cache_window;
        n = (size_t)cache_window;
    }
    size_t argc = 6 + 6 * n;
    const char **argv = mem_calloc(argc, sizeof(*argv));
    size_t *lens = mem_calloc(argc, sizeof(*lens));
    char *nums = mem_alloc(n * (PAD_ID_LEN + 1 + 24 + 16)); /* id, updated_at_ms, version */
    uint8_t **packed = mem_calloc(n, sizeof(*packed));
    char k[4][64], win[16], ttl[16];
    key(k[0], sizeof(k[0]), chat_id, "recent");
    key(k[1], sizeof(k[1]), chat_id, "recent:msgs");
    key(k[2], sizeof(k[2]), chat_id, "recent:floor");
    key(k[3], sizeof(k[3]), chat_id, "recent:gen");
    snprintf(win, sizeof(win), "%d", cache_window);
    snprintf(ttl, sizeof(ttl), "%d", cache_ttl);
    const char *fixed[6] = {k[0], k[1], k[2], k[3], win, ttl};
    for (size_t i = 0; i < 6; i++) {
        argv[i] = fixed[i];
        lens[i] = strlen(fixed[i]);
    }
    for (size_t i = 0; i < n; i++) {
        const Chat__V1__Message *m = msgs[i];
        size_t a = 6 + 6 * i;
        char *id = nums + i * (PAD_ID_LEN + 1 + 24 + 16), *upd = id + PAD_ID_LEN + 1,
             *ver = upd + 24;
        pad(id, m->message_id);
        snprintf(upd, 24, "%" PRId64, m->updated_at_ms);
        snprintf(ver, 16, "%u", m->version);
        size_t plen = chat__v1__message__get_packed_size(m);
        packed[i] = mem_alloc(plen ? plen : 1);
        chat__v1__message__pack(m, packed[i]);
        const char *vals[6] = {
            id, upd, ver, m->deleted ? "1" : "0", m->body, (const char *)packed[i]};
        for (size_t f = 0; f < 6; f++) {
            argv[a + f] = vals[f];
            /* the last field is packed protobuf: binary, not NUL-terminated */
            lens[a + f] = f == 5 ? plen : strlen(vals[f]);
        }
    }
    int rv =
        redis_client_eval(rc, apply_script, 4, (int)argc, argv, lens, cb ? cb : count_error, ud);
    if (rv != 0)
        metrics_counter_inc(stats.cache_errors);
    for (size_t i = 0; i < n; i++)
        free(packed[i]);
    free(packed);
    free(nums);
    free(lens);
    free(argv);
    return rv;
}

int cache_member(redis_client *rc, uint64_t chat_id, const char *user, bool add)
{
    char k[64];
    key(k, sizeof(k), chat_id, "members");
    const char *argv[] = {add ? "SADD" : "SREM", k, user};
    int rv = redis_client_command(rc, 3, argv, NULL, count_error, NULL);
    if (rv != 0)
        metrics_counter_inc(stats.cache_errors);
    return rv;
}

typedef struct read_ctx {
    cache_read_cb cb;
    void *ud;
    uint32_t page;
} read_ctx;

static void on_read(redis_client *c, const redisReply *r, int status, void *arg)
{
    (void)c;
    read_ctx *x = arg;
    if (status != 0 || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[0]->integer != 1 ||
        r->elements < 2 || r->elements - 2 > x->page) {
        if (status != 0 || (r != NULL && r->type == REDIS_REPLY_ERROR))
            count_error(c, r, status ? status : -1, NULL);
        x->cb(false, NULL, 0, false, x->ud);
        free(x);
        return;
    }
    size_t n = r->elements - 2;
    Chat__V1__Message **msgs = mem_calloc(n ? n : 1, sizeof(*msgs));
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const redisReply *e = r->element[i + 2];
        ok = e->type == REDIS_REPLY_STRING &&
             (msgs[i] = chat__v1__message__unpack(NULL, e->len, (const uint8_t *)e->str)) != NULL;
    }
    if (ok)
        x->cb(true, msgs, n, r->element[1]->integer == 1, x->ud);
    else
        x->cb(false, NULL, 0, false, x->ud);
    for (size_t i = 0; i < n; i++)
        if (msgs[i] != NULL)
            chat__v1__message__free_unpacked(msgs[i], NULL);
    free(msgs);
    free(x);
}

void cache_read(redis_client *rc, uint64_t chat_id, const char *user, uint32_t page,
                cache_read_cb cb, void *ud)
{
    if (cache_window <= 0 || page > (uint32_t)cache_window) {
        cb(false, NULL, 0, false, ud);
        return;
    }
    char k[4][64], p[16];
    key(k[0], sizeof(k[0]), chat_id, "members");
    key(k[1], sizeof(k[1]), chat_id, "recent");
    key(k[2], sizeof(k[2]), chat_id, "recent:msgs");
    key(k[3], sizeof(k[3]), chat_id, "recent:floor");
    snprintf(p, sizeof(p), "%u", page);
    const char *argv[] = {k[0], k[1], k[2], k[3], user ? user : "", p};
    read_ctx *x = mem_alloc(sizeof(*x));
    x->cb = cb;
    x->ud = ud;
    x->page = page;
    if (redis_client_eval(rc, read_script, 4, 6, argv, NULL, on_read, x) != 0) {
        free(x);
        cb(false, NULL, 0, false, ud);
    }
}

typedef struct gen_ctx {
    cache_gen_cb cb;
    void *ud;
} gen_ctx;

static void on_gen(redis_client *c, const redisReply *r, int status, void *arg)
{
    (void)c;
    gen_ctx *x = arg;
    if (status == 0 && r != NULL && r->type == REDIS_REPLY_NIL)
        x->cb("0", x->ud);
    else if (status == 0 && r != NULL && r->type == REDIS_REPLY_STRING)
        x->cb(r->str, x->ud);
    else
        x->cb(NULL, x->ud);
    free(x);
}

void cache_gen(redis_client *rc, uint64_t chat_id, cache_gen_cb cb, void *ud)
{
    char k[64];
    key(k, sizeof(k), chat_id, "recent:gen");
    const char *argv[] = {"GET", k};
    gen_ctx *x = mem_alloc(sizeof(*x));
    x->cb = cb;
    x->ud = ud;
    if (cache_window <= 0 || redis_client_command(rc, 2, argv, NULL, on_gen, x) != 0) {
        free(x);
        cb(NULL, ud);
    }
}

void cache_fill(redis_client *rc, uint64_t chat_id, const char *gen, Chat__V1__Message *const *msgs,
                size_t n, bool whole)
{
    if (cache_window <= 0)
        return;
    size_t argc = 8 + 3 * n;
    const char **argv = mem_calloc(argc, sizeof(*argv));
    size_t *lens = mem_calloc(argc, sizeof(*lens));
    char **owned = mem_calloc(argc, sizeof(*owned));
    char k[4][64], win[16], ttl[16], floor[PAD_ID_LEN + 1];
    key(k[0], sizeof(k[0]), chat_id, "recent");
    key(k[1], sizeof(k[1]), chat_id, "recent:msgs");
    key(k[2], sizeof(k[2]), chat_id, "recent:floor");
    key(k[3], sizeof(k[3]), chat_id, "recent:gen");
    snprintf(win, sizeof(win), "%d", cache_window);
    snprintf(ttl, sizeof(ttl), "%d", cache_ttl);
    pad(floor, whole || n == 0 ? 0 : msgs[0]->message_id);
    const char *fixed[8] = {k[0], k[1], k[2], k[3], gen, win, ttl, floor};
    for (size_t i = 0; i < 8; i++) {
        argv[i] = fixed[i];
        lens[i] = strlen(fixed[i]);
    }
    for (size_t i = 0; i < n; i++) {
        const Chat__V1__Message *m = msgs[i];
        size_t a = 8 + 3 * i;
        owned[a] = mem_alloc(PAD_ID_LEN + 1);
        pad(owned[a], m->message_id);
        size_t bl = strlen(m->body);
        owned[a + 1] = mem_alloc(64 + bl);
        size_t ml = meta_prefix(owned[a + 1], 64, m);
        memcpy(owned[a + 1] + ml, m->body, bl);
        size_t pl = chat__v1__message__get_packed_size(m);
        owned[a + 2] = mem_alloc(pl ? pl : 1);
        chat__v1__message__pack(m, (uint8_t *)owned[a + 2]);
        argv[a] = owned[a];
        lens[a] = PAD_ID_LEN;
        argv[a + 1] = owned[a + 1];
        lens[a + 1] = ml + bl;
        argv[a + 2] = owned[a + 2];
        lens[a + 2] = pl;
    }
    if (redis_client_eval(rc, fill_script, 4, (int)argc, argv, lens, count_error, NULL) != 0)
        metrics_counter_inc(stats.cache_errors);
    for (size_t i = 0; i < argc; i++)
        free(owned[i]);
    free(owned);
    free(lens);
    free(argv);
}
