/* Snowflake ids and Redis-leased instance numbers (snowflake.h). */
#include "snowflake.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

const char *snowflake_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case SNOWFLAKE_E_INVALID:
        return "invalid site or instance";
    case SNOWFLAKE_E_NO_INSTANCE:
        return "no leased instance number: id generation stopped";
    case SNOWFLAKE_E_CLOCK:
        return "clock too far behind the id generator";
    case SNOWFLAKE_E_EXHAUSTED:
        return "id timestamp space exhausted";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

/* --- generator ----------------------------------------------------------------------------- */

/* |state| packs the last issued (or floor) logical position as ts << 12 | seq, where ts is ms
 * since the epoch. Adding 1 to a full sequence carries into the timestamp: that is exactly
 * "borrow the next ms", so one CAS of max(state + 1, now << 12) issues an id. */
struct snowflake {
    _Atomic uint64_t state;    /* see above */
    _Atomic int instance;      /* 0..127 or SNOWFLAKE_NO_INSTANCE */
    _Atomic int64_t max_drift; /* ms, 0 = unlimited */
    unsigned site;             /* 0..7 */
};

#define TS_LIMIT (UINT64_C(1) << SNOWFLAKE_TIMESTAMP_BITS)

int64_t snowflake_wall_ms(void)
{
    return clock_wall_ms();
}

int snowflake_new(snowflake **out, unsigned site, int instance)
{
    *out = NULL;
    if (site > SNOWFLAKE_MAX_SITE || (instance != SNOWFLAKE_NO_INSTANCE &&
                                      (instance < 0 || instance > (int)SNOWFLAKE_MAX_INSTANCE)))
        return SNOWFLAKE_E_INVALID;
    snowflake *g = mem_calloc(1, sizeof(*g));
    atomic_init(&g->state, 0);
    atomic_init(&g->instance, instance);
    atomic_init(&g->max_drift, 0);
    g->site = site;
    *out = g;
    return 0;
}

void snowflake_free(snowflake *g)
{
    free(g);
}

int snowflake_next_at(snowflake *g, int64_t now_unix_ms, uint64_t *out)
{
    int inst = atomic_load(&g->instance);
    if (inst < 0)
        return SNOWFLAKE_E_NO_INSTANCE;
    int64_t rel = now_unix_ms - SNOWFLAKE_EPOCH_MS;
    if (rel < 0)
        rel = 0;
    uint64_t floor = (uint64_t)rel << SNOWFLAKE_SEQ_BITS;
    int64_t max_drift = atomic_load(&g->max_drift);
    uint64_t old = atomic_load(&g->state);
    uint64_t next;
    do {
        next = old + 1 > floor ? old + 1 : floor;
        uint64_t ts = next >> SNOWFLAKE_SEQ_BITS;
        if (ts >= TS_LIMIT)
            return SNOWFLAKE_E_EXHAUSTED;
        if (max_drift > 0 && (int64_t)ts - rel > max_drift)
            return SNOWFLAKE_E_CLOCK;
    } while (!atomic_compare_exchange_weak(&g->state, &old, next));
    uint64_t ts = next >> SNOWFLAKE_SEQ_BITS;
    *out = ts << (SNOWFLAKE_NODE_BITS + SNOWFLAKE_SEQ_BITS) |
           (uint64_t)g->site << (SNOWFLAKE_INSTANCE_BITS + SNOWFLAKE_SEQ_BITS) |
           (uint64_t)inst << SNOWFLAKE_SEQ_BITS | (next & SNOWFLAKE_MAX_SEQ);
    return 0;
}

int snowflake_next(snowflake *g, uint64_t *out)
{
    return snowflake_next_at(g, snowflake_wall_ms(), out);
}

int snowflake_set_instance(snowflake *g, int instance)
{
    if (instance != SNOWFLAKE_NO_INSTANCE &&
        (instance < 0 || instance > (int)SNOWFLAKE_MAX_INSTANCE))
        return SNOWFLAKE_E_INVALID;
    atomic_store(&g->instance, instance);
    return 0;
}

int snowflake_get_instance(const snowflake *g)
{
    return atomic_load(&((snowflake *)g)->instance);
}

unsigned snowflake_get_site(const snowflake *g)
{
    return g->site;
}

void snowflake_advance_to(snowflake *g, int64_t unix_ms)
{
    int64_t rel = unix_ms - SNOWFLAKE_EPOCH_MS;
    if (rel <= 0)
        return;
    if ((uint64_t)rel >= TS_LIMIT)
        rel = (int64_t)TS_LIMIT - 1;
    /* The next id is max(state + 1, now << 12): a state just below rel << 12 makes it
     * >= rel << 12. */
    uint64_t want = ((uint64_t)rel << SNOWFLAKE_SEQ_BITS) - 1;
    uint64_t old = atomic_load(&g->state);
    while (old < want && !atomic_compare_exchange_weak(&g->state, &old, want))
        ;
}

int64_t snowflake_logical_ms(const snowflake *g)
{
    uint64_t st = atomic_load(&((snowflake *)g)->state);
    return (int64_t)(st >> SNOWFLAKE_SEQ_BITS) + SNOWFLAKE_EPOCH_MS;
}

int64_t snowflake_drift_ms(const snowflake *g, int64_t now_unix_ms)
{
    int64_t d = snowflake_logical_ms(g) - now_unix_ms;
    return d > 0 ? d : 0;
}

void snowflake_set_max_drift(snowflake *g, int64_t ms)
{
    atomic_store(&g->max_drift, ms > 0 ? ms : 0);
}

/* --- lease --------------------------------------------------------------------------------- */

/* KEYS: lease, hw. ARGV: owner, ttl ms, wall ms. Returns {code, previous hw}: code 1 = newly
 * acquired (SET NX PX), 2 = it was already ours (TTL extended), 0 = held by someone else.
 * While held, the high-water mark never carries the clean-release mark ":c". */
static const char acquire_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "local code = 0\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  code = 2\n"
    "elseif redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  code = 1\n"
    "else\n"
    "  return {0, ''}\n"
    "end\n"
    "local hw = redis.call('GET', KEYS[2]) or ''\n"
    "local old = tonumber(string.match(hw, '^%d+') or '0') or 0\n"
    "local now = tonumber(ARGV[3]) or 0\n"
    "redis.call('SET', KEYS[2], tostring(math.max(old, now)), 'PX', 604800000)\n"
    "return {code, hw}\n";

/* KEYS: lease, hw. ARGV: owner, ttl ms, logical ms. Returns 1 renewed, 0 not ours. */
static const char renew_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "local old = tonumber(string.match(redis.call('GET', KEYS[2]) or '', '^%d+') or '0') or 0\n"
    "local v = math.max(old, tonumber(ARGV[3]) or 0)\n"
    "redis.call('SET', KEYS[2], tostring(v), 'PX', 604800000)\n"
    "return 1\n";

/* KEYS: lease, hw. ARGV: owner, logical ms. Deletes the lease if ours and marks the high-water
 * mark as a clean release. */
static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local old = tonumber(string.match(redis.call('GET', KEYS[2]) or '', '^%d+') or '0') or 0\n"
    "local v = math.max(old, tonumber(ARGV[2]) or 0)\n"
    "redis.call('SET', KEYS[2], tostring(v) .. ':c', 'PX', 604800000)\n"
    "return 1\n";

typedef enum lease_state {
    LEASE_SCANNING = 0, /* trying numbers one by one */
    LEASE_HELD = 1,     /* generator running */
    LEASE_WAITING = 2,  /* none free or Redis unavailable: retry timer armed */
} lease_state;

typedef enum lease_op {
    OP_NONE = 0,
    OP_ACQUIRE = 1,
    OP_RENEW = 2,
} lease_op;

struct snowflake_lease {
    struct event_base *base;    /* loop */
    redis_client *redis;        /* borrowed */
    snowflake *gen;             /* borrowed */
    snowflake_lease_config cfg; /* copy; owner/key_prefix point at the copies below */
    char *owner;                /* owned */
    char *prefix;               /* owned */
    snowflake_lease_cb cb;      /* user callback or NULL */
    void *ud;                   /* its user_data */
    redis_script *acquire;      /* acquire_lua */
    redis_script *renew;        /* renew_lua */
    lease_state state;          /* see lease_state */
    int instance;               /* held number or SNOWFLAKE_NO_INSTANCE */
    unsigned scan_next;         /* next number to try */
    unsigned scan_left;         /* numbers left in this scan */
    unsigned scan_failures;     /* consecutive scans that found nothing (log throttle) */
    lease_op op;                /* the one Redis call in flight */
    int op_instance;            /* number it is about */
    int64_t op_sent;            /* mono ms when it was sent */
    int64_t valid_until;        /* mono ms after which we must assume the lease is gone */
    struct event *tick;         /* renewal period or retry delay */
    struct event *deadline;     /* fires at valid_until */
    int depth;                  /* callback nesting; free deferred while > 0 */
    bool freed;                 /* snowflake_lease_free() was called */
};

void snowflake_lease_config_init(snowflake_lease_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->key_prefix = "snowflake";
    cfg->ttl_ms = 10000;
    cfg->renew_ms = 0; /* ttl / 3 */
    cfg->retry_ms = 1000;
    cfg->first_instance = 0;
    cfg->instance_count = SNOWFLAKE_MAX_INSTANCE + 1;
}

static void lease_destroy(snowflake_lease *l)
{
    event_free(l->tick);
    event_free(l->deadline);
    redis_script_free(l->acquire);
    redis_script_free(l->renew);
    free(l->owner);
    free(l->prefix);
    free(l);
}

static void lease_enter(snowflake_lease *l)
{
    l->depth++;
}

/* Returns true when |l| was destroyed. */
static bool lease_leave(snowflake_lease *l)
{
    if (--l->depth == 0 && l->freed && l->op == OP_NONE) {
        lease_destroy(l);
        return true;
    }
    return false;
}

static void lease_keys(const snowflake_lease *l, int n, char *lease_key, char *hw_key, size_t cap)
{
    unsigned site = snowflake_get_site(l->gen);
    snprintf(lease_key, cap, "%s:lease:%u:%d", l->prefix, site, n);
    snprintf(hw_key, cap, "%s:hw:%u:%d", l->prefix, site, n);
}

static void scan_start(snowflake_lease *l);

/* Deletes lease |n| if still ours, recording a clean high-water mark. Plain EVAL with no
 * callback, so nothing refers back to |l| afterwards. */
static void send_release(snowflake_lease *l, int n)
{
    char lk[160], hk[160], hw[24];
    lease_keys(l, n, lk, hk, sizeof(lk));
    snprintf(hw, sizeof(hw), "%lld", (long long)snowflake_logical_ms(l->gen));
    const char *argv[] = {"EVAL", release_lua, "2", lk, hk, l->owner, hw};
    redis_client_command(l->redis, 7, argv, NULL, NULL, NULL);
}
static void try_next(snowflake_lease *l);

static void wait_retry(snowflake_lease *l)
{
    l->state = LEASE_WAITING;
    event_del(l->tick);
    clock_event_add_ms(l->tick, l->cfg.retry_ms);
}

static void lease_lost(snowflake_lease *l, const char *why)
{
    int n = l->instance;
    snowflake_set_instance(l->gen, SNOWFLAKE_NO_INSTANCE);
    l->instance = SNOWFLAKE_NO_INSTANCE;
    event_del(l->deadline);
    event_del(l->tick);
    log_warn("snowflake: lease on instance %u/%d lost (%s); id generation stopped",
             snowflake_get_site(l->gen), n, why);
    /* Look for a number again before telling the user, so the state is consistent if the
     * callback inspects it; the scan itself only sends a command. */
    scan_start(l);
    if (l->cb != NULL && !l->freed)
        l->cb(l, SNOWFLAKE_LEASE_LOST, n, l->ud);
}

/* Parses "<ms>" or "<ms>:c" (clean release); "" is no mark at all. */
static void parse_hw(const char *s, size_t len, int64_t *hw, bool *clean)
{
    *hw = 0;
    *clean = false;
    size_t i = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9' && *hw < INT64_MAX / 10) {
        *hw = *hw * 10 + (s[i] - '0');
        i++;
    }
    *clean = len == 0 || (i + 2 == len && s[i] == ':' && s[i + 1] == 'c');
}

static void on_acquire(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    snowflake_lease *l = ud;
    int n = l->op_instance;
    int64_t sent = l->op_sent;
    l->op = OP_NONE;
    lease_enter(l);
    if (l->freed) {
        /* Freed while the attempt was in flight: give back what it may have won. */
        if (status == 0 && r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer != 0)
            send_release(l, n);
        lease_leave(l);
        return;
    }
    if (status != 0 || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            log_warn("snowflake: lease script failed: %s", r->str);
        wait_retry(l);
        lease_leave(l);
        return;
    }
    long long code = r->element[0]->integer;
    if (code == 0) {
        try_next(l);
        lease_leave(l);
        return;
    }
    if (code == 1) {
        /* Taken over from an earlier holder (or never used): start after anything it may
         * have issued. A clean release recorded its exact last timestamp; otherwise it may
         * have gone on until its lease ran out. */
        int64_t hw = 0;
        bool clean = true;
        if (r->element[1]->type == REDIS_REPLY_STRING)
            parse_hw(r->element[1]->str, r->element[1]->len, &hw, &clean);
        if (hw > 0)
            snowflake_advance_to(l->gen, clean ? hw + 1 : hw + (int64_t)l->cfg.ttl_ms + 1);
    }
    l->state = LEASE_HELD;
    l->instance = n;
    l->scan_failures = 0;
    l->valid_until = sent + l->cfg.ttl_ms - l->cfg.ttl_ms / 5;
    event_del(l->deadline);
    clock_event_add_ms(l->deadline, l->valid_until - clock_mono_ms());
    event_del(l->tick);
    clock_event_add_ms(l->tick, l->cfg.renew_ms);
    snowflake_set_instance(l->gen, n);
    log_info("snowflake: leased instance %u/%d as %s", snowflake_get_site(l->gen), n, l->owner);
    if (l->cb != NULL)
        l->cb(l, SNOWFLAKE_LEASE_ACQUIRED, n, l->ud);
    lease_leave(l);
}

static void try_next(snowflake_lease *l)
{
    if (l->scan_left == 0) {
        l->scan_failures++;
        /* Powers of two only: a full range is a steady state worth a line, not a flood. */
        if ((l->scan_failures & (l->scan_failures - 1)) == 0)
            log_warn("snowflake: no free instance number in %u..%u for site %u; retrying",
                     l->cfg.first_instance, l->cfg.first_instance + l->cfg.instance_count - 1,
                     snowflake_get_site(l->gen));
        wait_retry(l);
        return;
    }
    int n = (int)l->scan_next;
    l->scan_left--;
    l->scan_next =
        l->cfg.first_instance + (l->scan_next - l->cfg.first_instance + 1) % l->cfg.instance_count;
    char lk[160], hk[160], ttl[16], now[24];
    lease_keys(l, n, lk, hk, sizeof(lk));
    snprintf(ttl, sizeof(ttl), "%u", l->cfg.ttl_ms);
    snprintf(now, sizeof(now), "%lld", (long long)snowflake_wall_ms());
    const char *argv[] = {lk, hk, l->owner, ttl, now};
    l->op = OP_ACQUIRE;
    l->op_instance = n;
    l->op_sent = clock_mono_ms();
    int rv = redis_client_eval(l->redis, l->acquire, 2, 5, argv, NULL, on_acquire, l);
    if (rv != 0) {
        l->op = OP_NONE;
        log_debug("snowflake: lease attempt not sent: %s", redis_strerror(rv));
        wait_retry(l);
    }
}

static void scan_start(snowflake_lease *l)
{
    l->state = LEASE_SCANNING;
    if (l->op != OP_NONE)
        return; /* the reply in flight continues the work */
    l->scan_left = l->cfg.instance_count;
    /* A random start spreads processes that boot together over the range. */
    unsigned r = (unsigned)(clock_mono_ms() ^ (int64_t)getpid() ^ (int64_t)(uintptr_t)l);
    l->scan_next = l->cfg.first_instance + r % l->cfg.instance_count;
    try_next(l);
}

static void on_renew(redis_client *c, const redisReply *r, int status, void *ud)
{
    (void)c;
    snowflake_lease *l = ud;
    int64_t sent = l->op_sent;
    int n = l->op_instance;
    l->op = OP_NONE;
    lease_enter(l);
    if (!l->freed && l->state == LEASE_SCANNING) {
        /* The lease was declared lost while this renewal was in flight. */
        scan_start(l);
        lease_leave(l);
        return;
    }
    if (l->freed || l->state != LEASE_HELD || l->instance != n) {
        lease_leave(l);
        return;
    }
    if (status == 0 && r != NULL && r->type == REDIS_REPLY_INTEGER) {
        if (r->integer == 1) {
            l->valid_until = sent + l->cfg.ttl_ms - l->cfg.ttl_ms / 5;
            event_del(l->deadline);
            clock_event_add_ms(l->deadline, l->valid_until - clock_mono_ms());
        } else {
            lease_lost(l, "taken over or expired in Redis");
        }
    } else {
        /* Keep trying until the local deadline; it stops the generator in time. */
        log_debug("snowflake: lease renewal failed: %s",
                  status != 0 ? redis_strerror(status) : "unexpected reply");
    }
    lease_leave(l);
}

static void send_renew(snowflake_lease *l)
{
    if (l->op != OP_NONE)
        return;
    char lk[160], hk[160], ttl[16], hw[24];
    lease_keys(l, l->instance, lk, hk, sizeof(lk));
    snprintf(ttl, sizeof(ttl), "%u", l->cfg.ttl_ms);
    snprintf(hw, sizeof(hw), "%lld", (long long)snowflake_logical_ms(l->gen));
    const char *argv[] = {lk, hk, l->owner, ttl, hw};
    l->op = OP_RENEW;
    l->op_instance = l->instance;
    l->op_sent = clock_mono_ms();
    if (redis_client_eval(l->redis, l->renew, 2, 5, argv, NULL, on_renew, l) != 0)
        l->op = OP_NONE;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    snowflake_lease *l = arg;
    lease_enter(l);
    if (l->state == LEASE_HELD) {
        send_renew(l);
        clock_event_add_ms(l->tick, l->cfg.renew_ms);
    } else if (l->state == LEASE_WAITING) {
        scan_start(l);
    }
    lease_leave(l);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    snowflake_lease *l = arg;
    lease_enter(l);
    if (l->state == LEASE_HELD && clock_mono_ms() >= l->valid_until)
        lease_lost(l, "not renewed in time");
    else if (l->state == LEASE_HELD)
        clock_event_add_ms(l->deadline, l->valid_until - clock_mono_ms());
    lease_leave(l);
}

int snowflake_lease_new(snowflake_lease **out, struct event_base *base, redis_client *redis,
                        snowflake *gen, const snowflake_lease_config *cfg, snowflake_lease_cb cb,
                        void *user_data)
{
    *out = NULL;
    snowflake_lease_config def;
    if (cfg == NULL) {
        snowflake_lease_config_init(&def);
        cfg = &def;
    }
    if (base == NULL || redis == NULL || gen == NULL || cfg->ttl_ms < 1000 ||
        cfg->instance_count == 0 || cfg->first_instance > SNOWFLAKE_MAX_INSTANCE ||
        cfg->first_instance + cfg->instance_count > SNOWFLAKE_MAX_INSTANCE + 1)
        return SNOWFLAKE_E_INVALID;
    snowflake_lease *l = mem_calloc(1, sizeof(*l));
    l->base = base;
    l->redis = redis;
    l->gen = gen;
    l->cfg = *cfg;
    if (cfg->owner != NULL && cfg->owner[0] != '\0') {
        l->owner = mem_strdup(cfg->owner);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        char buf[160];
        unsigned rnd = (unsigned)(snowflake_wall_ms() ^ clock_mono_ms() ^ (int64_t)(uintptr_t)l);
        snprintf(buf, sizeof(buf), "%s:%ld:%08x", host, (long)getpid(), rnd);
        l->owner = mem_strdup(buf);
    }
    l->prefix = mem_strdup(cfg->key_prefix ? cfg->key_prefix : "snowflake");
    l->cfg.owner = l->owner;
    l->cfg.key_prefix = l->prefix;
    if (l->cfg.renew_ms == 0 || l->cfg.renew_ms >= l->cfg.ttl_ms / 2)
        l->cfg.renew_ms = l->cfg.ttl_ms / 3;
    if (l->cfg.retry_ms == 0)
        l->cfg.retry_ms = 1000;
    l->cb = cb;
    l->ud = user_data;
    l->instance = SNOWFLAKE_NO_INSTANCE;
    redis_script_new(&l->acquire, acquire_lua);
    redis_script_new(&l->renew, renew_lua);
    l->tick = evtimer_new(base, on_tick, l);
    l->deadline = evtimer_new(base, on_deadline, l);
    snowflake_set_instance(gen, SNOWFLAKE_NO_INSTANCE);
    lease_enter(l);
    scan_start(l);
    lease_leave(l);
    *out = l;
    return 0;
}

void snowflake_lease_free(snowflake_lease *l)
{
    if (l == NULL || l->freed)
        return;
    l->freed = true;
    snowflake_set_instance(l->gen, SNOWFLAKE_NO_INSTANCE);
    event_del(l->tick);
    event_del(l->deadline);
    if (l->state == LEASE_HELD)
        send_release(l, l->instance);
    l->instance = SNOWFLAKE_NO_INSTANCE;
    if (l->depth == 0 && l->op == OP_NONE)
        lease_destroy(l);
    /* Otherwise the pending reply (or the current callback's return) destroys it. */
}

int snowflake_lease_instance(const snowflake_lease *l)
{
    return l->instance;
}

const char *snowflake_lease_owner(const snowflake_lease *l)
{
    return l->owner;
}
