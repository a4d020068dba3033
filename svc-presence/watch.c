/* watch.c: WatchPresence streams fed by keyevent notifications (see watch.h). */
#include "watch.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/v1/presence.rpc-c.h"
#include "keys.h"
#include "log.h"
#include "mem.h"
#include "registry.h"

typedef enum feed_state {
    FEED_DOWN = 0,    /* no subscription, or a read failed: streams wait for a resync */
    FEED_SYNCING = 1, /* subscribed; checking the notification config before the resync */
    FEED_LIVE = 2,    /* subscribed, config checked, changes flow */
} feed_state;

typedef struct watcher watcher;

/* One watched user of one stream. */
typedef struct watch_slot {
    reg_link link;  /* node in user->slots */
    reg_user *user; /* registry entry (one reference held) */
    watcher *w;     /* owning stream */
    bool dirty;     /* changed since last sent */
} watch_slot;

struct watcher {
    watch_hub *hub;        /* owner */
    rpc_call *call;        /* referenced until detach */
    reg_link link;         /* node in hub->watchers */
    reg_link send_link;    /* node in hub->to_send (linked = pump after this batch) */
    watch_slot *slots;     /* n slots, request order */
    size_t n;              /* watched users */
    size_t unknown;        /* slots whose user has no read yet (the snapshot waits) */
    size_t n_dirty;        /* slots with dirty set */
    bool need_snapshot;    /* next response is snapshot = true */
    bool blocked;          /* send returned WOULDBLOCK; waiting for on_writable */
    int64_t blocked_since; /* rpc_now_ms() when it blocked */
    int64_t token_exp_s;   /* token exp, Unix s, 0 = none */
};

/* One batch read in flight. */
typedef struct flush_batch {
    watch_hub *hub;
    uint64_t gen;   /* hub->gen when sent; a resync since makes it stale */
    size_t n;       /* ids */
    size_t watched; /* the first |watched| ids are watched users, the rest reaps */
    int64_t t0_ns;  /* when sent */
    char **ids;     /* owned copies */
} flush_batch;

struct watch_hub {
    struct event_base *base;
    const store *st;
    redis_client *rc; /* not owned */
    redis_sub *sub;   /* owned */
    watch_config cfg;
    int db;
    registry reg;      /* watched users */
    reg_link watchers; /* every stream */
    reg_link to_send;  /* streams to pump after the current batch */
    feed_state feed;
    int64_t down_since;  /* rpc_now_ms() when the feed was lost */
    bool ever_live;      /* logged the first sync */
    bool syncing;        /* store_ensure_notify in flight */
    bool flush_inflight; /* a batch read is in flight */
    bool closing;        /* watch_hub_free running */
    bool draining;       /* graceful shutdown began: no new streams */
    uint64_t gen;        /* bumped by every resync */
    char **reaps;        /* unwatched users whose devices expired (owned) */
    size_t n_reaps;
    struct event *flush_ev; /* runs flush() after the current loop pass */
    bool flush_scheduled;
    struct event *tick_ev; /* WATCH_TICK_MS housekeeping */
    unsigned ticks;
    size_t n_watchers;        /* streams now */
    const presence_stats *ps; /* metrics (never NULL: points at no_stats when none) */
};

static const presence_stats no_stats;

static void watcher_pump(watcher *w);
static void watcher_end(watcher *w, int code, const char *msg);
static void start_sync(watch_hub *h);

void watch_config_init(watch_config *cfg)
{
    cfg->worker = 0;
    cfg->workers = 1;
    cfg->resync_timeout_ms = 5000;
    cfg->stall_timeout_ms = 30000;
    cfg->max_watchers = 20000;
    cfg->reap_queue_max = 10000;
}

static void schedule_flush(watch_hub *h)
{
    if (h->flush_scheduled || h->closing)
        return;
    h->flush_scheduled = true;
    event_active(h->flush_ev, EV_TIMEOUT, 0);
}

/* --- the feed ------------------------------------------------------------------------------ */

static void feed_lost(watch_hub *h, const char *why)
{
    if (h->feed == FEED_DOWN)
        return;
    log_warn("presence watch[%d]: change feed lost (%s); %zu streams wait for a resync",
             h->cfg.worker, why, h->n_watchers);
    stats_inc(h->ps->feed_losses);
    h->feed = FEED_DOWN;
    h->down_since = rpc_now_ms();
}

static void mark_unknown(reg_user *u, void *ud)
{
    watch_hub *h = ud;
    u->known = false;
    registry_mark_dirty(&h->reg, u);
}

/* Everything is re-read and every stream gets a new snapshot. */
static void resync_all(watch_hub *h)
{
    h->gen++;
    stats_inc(h->ps->resyncs);
    registry_foreach(&h->reg, mark_unknown, h);
    for (reg_link *l = h->watchers.next; l != &h->watchers; l = l->next) {
        watcher *w = REG_CONTAINER_OF(l, watcher, link);
        w->need_snapshot = true;
        w->unknown = w->n;
        w->n_dirty = 0;
        for (size_t i = 0; i < w->n; i++)
            w->slots[i].dirty = false;
    }
    schedule_flush(h);
}

/* A closed hub is freed once no Redis callback can reach it any more. */
static void hub_maybe_destroy(watch_hub *h)
{
    if (h->closing && !h->flush_inflight && !h->syncing)
        free(h);
}

static void on_notify_checked(int err, const char *before, const char *after, bool changed,
                              void *ud)
{
    watch_hub *h = ud;
    h->syncing = false;
    if (h->closing) {
        hub_maybe_destroy(h);
        return;
    }
    if (err != 0) {
        log_warn("presence watch[%d]: cannot check notify-keyspace-events: %s", h->cfg.worker,
                 store_strerror(err));
        feed_lost(h, "notification config not checked");
        return;
    }
    if (h->feed != FEED_SYNCING)
        return; /* lost again meanwhile: the next tick retries */
    char tmp[64];
    if (before == NULL)
        log_warn("presence watch[%d]: cannot read notify-keyspace-events (CONFIG refused); it "
                 "must include '%s' or watchers miss changes",
                 h->cfg.worker, STORE_NOTIFY_FLAGS);
    else if (!store_notify_union(after, STORE_NOTIFY_FLAGS, tmp, sizeof(tmp)))
        log_error("presence watch[%d]: notify-keyspace-events is '%s' and could not be set to "
                  "include '%s': watchers will miss changes",
                  h->cfg.worker, after, STORE_NOTIFY_FLAGS);
    else if (changed)
        log_info("keyspace notifications enabled: CONFIG SET notify-keyspace-events '%s' (was "
                 "'%s'; presence needs '%s')",
                 after, before, STORE_NOTIFY_FLAGS);
    else if (!h->ever_live && h->cfg.worker == 0)
        log_info("keyspace notifications already enabled: notify-keyspace-events '%s' "
                 "(presence needs '%s')",
                 after, STORE_NOTIFY_FLAGS);
    if (h->ever_live)
        log_info("presence watch[%d]: change feed back after %lld ms; resending snapshots to %zu "
                 "streams",
                 h->cfg.worker, (long long)(rpc_now_ms() - h->down_since), h->n_watchers);
    h->ever_live = true;
    h->feed = FEED_LIVE;
    resync_all(h);
}

static void start_sync(watch_hub *h)
{
    if (h->syncing || h->closing || !redis_sub_ready(h->sub))
        return;
    if (h->feed == FEED_LIVE)
        feed_lost(h, "resubscribed");
    h->feed = FEED_SYNCING;
    if (store_ensure_notify(h->rc, on_notify_checked, h) == 0)
        h->syncing = true;
    else
        h->feed = FEED_DOWN; /* command connection not up yet: the tick retries */
}

static void on_sub_ready(redis_sub *s, bool reconnected, void *ud)
{
    (void)s;
    watch_hub *h = ud;
    if (reconnected)
        feed_lost(h, "pub/sub reconnected");
    start_sync(h);
}

static void on_sub_disconnect(redis_sub *s, int err, void *ud)
{
    (void)s;
    watch_hub *h = ud;
    feed_lost(h, redis_strerror(err));
}

static void on_sub_message(redis_sub *s, const char *pattern, const char *channel,
                           size_t channel_len, const char *msg, size_t msg_len, void *ud)
{
    (void)s;
    (void)pattern;
    watch_hub *h = ud;
    keys_event ev = keys_parse_event_channel(channel, channel_len);
    const char *user, *device;
    size_t ulen, dlen;
    if (ev == KEYS_EV_OTHER || keys_parse_device(msg, msg_len, &user, &ulen, &device, &dlen) != 0)
        return;
    stats_inc(h->ps->events);
    reg_user *u = registry_find(&h->reg, user, ulen);
    if (u != NULL) {
        registry_mark_dirty(&h->reg, u);
        schedule_flush(h);
        return;
    }
    if (ev != KEYS_EV_EXPIRED ||
        keys_hash(user, ulen) % (uint32_t)h->cfg.workers != (uint32_t)h->cfg.worker)
        return;
    if (h->n_reaps >= h->cfg.reap_queue_max) {
        stats_inc(h->ps->reaps_dropped);
        return;
    }
    h->reaps[h->n_reaps++] = mem_strndup(user, ulen);
    schedule_flush(h);
}

/* --- batch reads ----------------------------------------------------------------------------- */

static void batch_free(flush_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->ids[i]);
    free(b->ids);
    free(b);
}

static void queue_send(watch_hub *h, watcher *w)
{
    if (!reg_link_linked(&w->send_link))
        reg_link_append(&h->to_send, &w->send_link);
}

/* Stores a fresh read of |u| and tells its streams. */
static void apply(watch_hub *h, reg_user *u, const store_presence *p, int64_t redis_now,
                  int64_t local_now)
{
    bool was_known = u->known;
    bool changed = was_known && (u->devices != p->devices ||
                                 (p->devices == 0 && u->last_seen_ms != p->last_seen_ms));
    u->devices = p->devices;
    u->last_seen_ms = p->last_seen_ms;
    u->known = true;
    if (p->devices > 0 && p->next_expiry_ms > 0) {
        int64_t in = p->next_expiry_ms - redis_now;
        registry_schedule(&h->reg, u, local_now + (in > 0 ? in : 0) + WATCH_BACKSTOP_MARGIN_MS);
    } else {
        registry_unschedule(&h->reg, u);
    }
    for (reg_link *l = u->slots.next; l != &u->slots; l = l->next) {
        watch_slot *s = REG_CONTAINER_OF(l, watch_slot, link);
        watcher *w = s->w;
        if (w->need_snapshot) {
            if (!was_known && w->unknown > 0 && --w->unknown == 0)
                queue_send(h, w);
        } else if (changed) {
            if (!s->dirty) {
                s->dirty = true;
                w->n_dirty++;
            }
            queue_send(h, w);
        }
    }
}

static void pump_queued(watch_hub *h)
{
    while (!reg_link_empty(&h->to_send)) {
        reg_link *l = h->to_send.next;
        reg_link_remove(l);
        watcher_pump(REG_CONTAINER_OF(l, watcher, send_link));
    }
}

static void on_batch(int err, int64_t redis_now, const store_presence *p, size_t n, void *ud)
{
    flush_batch *b = ud;
    watch_hub *h = b->hub;
    h->flush_inflight = false;
    if (err == 0)
        stats_observe_since(h->ps->redis_seconds[STATS_OP_SWEEP], b->t0_ns);
    if (h->closing) {
        batch_free(b);
        hub_maybe_destroy(h);
        return;
    }
    if (err != 0) {
        /* Whatever changed meanwhile is unknown now: the resync re-reads everything. */
        feed_lost(h, store_strerror(err));
        batch_free(b);
        return;
    }
    if (b->gen == h->gen) {
        int64_t local_now = rpc_now_ms();
        for (size_t i = 0; i < b->watched && i < n; i++) {
            reg_user *u = registry_find(&h->reg, b->ids[i], strlen(b->ids[i]));
            if (u != NULL)
                apply(h, u, &p[i], redis_now, local_now);
        }
        pump_queued(h);
    }
    batch_free(b);
    if (h->reg.n_dirty > 0 || h->n_reaps > 0)
        schedule_flush(h);
}

static void flush(watch_hub *h)
{
    if (h->closing || h->flush_inflight || h->feed != FEED_LIVE)
        return;
    size_t cap = h->reg.n_dirty + h->n_reaps;
    if (cap == 0)
        return;
    if (cap > STORE_BATCH_MAX)
        cap = STORE_BATCH_MAX;
    flush_batch *b = mem_calloc(1, sizeof(*b));
    b->hub = h;
    b->gen = h->gen;
    b->t0_ns = stats_now_ns();
    b->ids = mem_alloc(cap * sizeof(*b->ids));
    reg_user *u;
    while (b->n < cap && (u = registry_pop_dirty(&h->reg)) != NULL)
        b->ids[b->n++] = mem_strndup(u->id, u->id_len);
    b->watched = b->n;
    size_t taken = 0;
    while (b->n < cap && taken < h->n_reaps)
        b->ids[b->n++] = h->reaps[taken++];
    memmove(h->reaps, h->reaps + taken, (h->n_reaps - taken) * sizeof(*h->reaps));
    h->n_reaps -= taken;
    int rv = store_sweep(h->st, h->rc, (const char *const *)b->ids, b->n, on_batch, b);
    if (rv != 0) {
        for (size_t i = 0; i < b->watched; i++) {
            reg_user *w = registry_find(&h->reg, b->ids[i], strlen(b->ids[i]));
            if (w != NULL)
                registry_mark_dirty(&h->reg, w);
        }
        feed_lost(h, store_strerror(rv));
        batch_free(b);
        return;
    }
    h->flush_inflight = true;
}

static void on_flush_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    watch_hub *h = arg;
    h->flush_scheduled = false;
    flush(h);
}

/* --- housekeeping ------------------------------------------------------------------------- */

static void end_all(watch_hub *h, int code, const char *msg)
{
    while (!reg_link_empty(&h->watchers)) {
        stats_inc(h->ps->ended[STATS_END_UNAVAILABLE]);
        watcher_end(REG_CONTAINER_OF(h->watchers.next, watcher, link), code, msg);
    }
}

static void check_watchers(watch_hub *h, int64_t now)
{
    int64_t wall = (int64_t)time(NULL);
    for (reg_link *l = h->watchers.next, *next; l != &h->watchers; l = next) {
        next = l->next;
        watcher *w = REG_CONTAINER_OF(l, watcher, link);
        if (w->token_exp_s > 0 && wall >= w->token_exp_s) {
            stats_inc(h->ps->ended[STATS_END_TOKEN]);
            watcher_end(w, RPC_STATUS_UNAUTHENTICATED, "token expired");
        } else if (w->blocked && now - w->blocked_since >= (int64_t)h->cfg.stall_timeout_ms) {
            stats_inc(h->ps->ended[STATS_END_SLOW]);
            watcher_end(w, RPC_STATUS_RESOURCE_EXHAUSTED,
                        "watch stream not read for too long (client too slow)");
        }
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    watch_hub *h = arg;
    int64_t now = rpc_now_ms();
    if (h->feed == FEED_LIVE) {
        reg_user *u;
        while ((u = registry_pop_due(&h->reg, now)) != NULL)
            registry_mark_dirty(&h->reg, u);
        if (h->reg.n_dirty > 0 || h->n_reaps > 0)
            schedule_flush(h);
    } else {
        if (h->feed == FEED_DOWN)
            start_sync(h);
        if (now - h->down_since >= (int64_t)h->cfg.resync_timeout_ms &&
            !reg_link_empty(&h->watchers)) {
            log_warn("presence watch[%d]: change feed down for %lld ms: ending %zu streams with "
                     "UNAVAILABLE",
                     h->cfg.worker, (long long)(now - h->down_since), h->n_watchers);
            end_all(h, RPC_STATUS_UNAVAILABLE,
                    "presence change feed unavailable (Redis); watch again");
        }
    }
    if (++h->ticks % (1000 / WATCH_TICK_MS) == 0)
        check_watchers(h, now);
}

/* --- streams ------------------------------------------------------------------------------ */

static void watcher_detach(watcher *w)
{
    watch_hub *h = w->hub;
    reg_link_remove(&w->link);
    if (reg_link_linked(&w->send_link))
        reg_link_remove(&w->send_link);
    size_t users = h->reg.n_users;
    for (size_t i = 0; i < w->n; i++) {
        reg_link_remove(&w->slots[i].link);
        registry_release(&h->reg, w->slots[i].user);
    }
    h->n_watchers--;
    stats_gauge_add(h->ps->watch_streams, -1);
    stats_gauge_add(h->ps->watched_users, (double)h->reg.n_users - (double)users);
    rpc_call *call = w->call;
    free(w->slots);
    free(w);
    rpc_call_unref(call);
}

static void watcher_end(watcher *w, int code, const char *msg)
{
    rpc_call_finish(w->call, code, msg);
    watcher_detach(w);
}

static void watcher_pump(watcher *w)
{
    watch_hub *h = w->hub;
    if (w->blocked || rpc_call_is_done(w->call))
        return;
    bool snapshot = w->need_snapshot;
    if (snapshot && (w->unknown > 0 || h->feed != FEED_LIVE))
        return;
    if (!snapshot && w->n_dirty == 0)
        return;
    size_t n = snapshot ? w->n : w->n_dirty;
    Chat__V1__UserPresence *ups = mem_alloc(n * sizeof(*ups));
    Chat__V1__UserPresence **ptrs = mem_alloc(n * sizeof(*ptrs));
    size_t k = 0;
    for (size_t i = 0; i < w->n && k < n; i++) {
        watch_slot *s = &w->slots[i];
        if (!snapshot && !s->dirty)
            continue;
        reg_user *u = s->user;
        chat__v1__user_presence__init(&ups[k]);
        ups[k].user_id = u->id;
        ups[k].online = u->devices > 0;
        ups[k].online_devices = u->devices;
        ups[k].last_seen_at_ms = u->last_seen_ms;
        ptrs[k] = &ups[k];
        k++;
    }
    Chat__V1__WatchPresenceResponse resp = CHAT__V1__WATCH_PRESENCE_RESPONSE__INIT;
    resp.n_users = k;
    resp.users = ptrs;
    resp.snapshot = snapshot;
    int rv = chat__v1__presence_service__rpc_watch_presence_send(w->call, &resp);
    free(ptrs);
    free(ups);
    if (rv == RPC_ERR_WOULDBLOCK) {
        w->blocked = true;
        w->blocked_since = rpc_now_ms();
        return;
    }
    if (rv != 0) {
        watcher_end(w, RPC_STATUS_INTERNAL, rpc_strerror(rv));
        return;
    }
    stats_inc(snapshot ? h->ps->pushes_snapshot : h->ps->pushes_change);
    w->need_snapshot = false;
    for (size_t i = 0; i < w->n; i++)
        w->slots[i].dirty = false;
    w->n_dirty = 0;
}

static void on_writable(rpc_call *call, void *call_data)
{
    (void)call;
    watcher *w = call_data;
    w->blocked = false;
    watcher_pump(w);
}

static void on_cancel(rpc_call *call, rpc_cancel_reason reason, void *call_data)
{
    (void)call;
    (void)reason;
    watcher_detach(call_data);
}

void watch_start(watch_hub *h, rpc_call *call, char *const *ids, const size_t *order, size_t n,
                 int64_t token_expires_at_s)
{
    if (h->draining) {
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE, "server shutting down; watch again");
        return;
    }
    if (h->n_watchers >= h->cfg.max_watchers) {
        rpc_call_finishf(call, RPC_STATUS_RESOURCE_EXHAUSTED,
                         "too many presence watch streams on this server (limit %u per worker)",
                         h->cfg.max_watchers);
        return;
    }
    if (h->feed != FEED_LIVE && rpc_now_ms() - h->down_since >= (int64_t)h->cfg.resync_timeout_ms) {
        rpc_call_finish(call, RPC_STATUS_UNAVAILABLE,
                        "presence change feed unavailable (Redis); watch again");
        return;
    }
    watcher *w = mem_calloc(1, sizeof(*w));
    w->hub = h;
    w->call = call;
    rpc_call_ref(call);
    w->n = n;
    w->slots = mem_calloc(n, sizeof(*w->slots));
    w->need_snapshot = true;
    w->token_exp_s = token_expires_at_s;
    reg_link_init(&w->send_link);
    reg_link_append(&h->watchers, &w->link);
    size_t users = h->reg.n_users;
    for (size_t i = 0; i < n; i++) {
        const char *id = ids[order[i]];
        reg_user *u = registry_acquire(&h->reg, id, strlen(id));
        watch_slot *s = &w->slots[i];
        s->user = u;
        s->w = w;
        reg_link_append(&u->slots, &s->link);
        if (!u->known) {
            w->unknown++;
            registry_mark_dirty(&h->reg, u);
        }
    }
    h->n_watchers++;
    stats_gauge_add(h->ps->watch_streams, 1);
    stats_gauge_add(h->ps->watched_users, (double)h->reg.n_users - (double)users);
    const rpc_call_callbacks cb = {.on_cancel = on_cancel, .on_writable = on_writable};
    rpc_call_set_callbacks(call, &cb, w);
    if (w->unknown == 0)
        watcher_pump(w);
    else
        schedule_flush(h);
}

/* --- the hub --------------------------------------------------------------------------------- */

int watch_hub_new(watch_hub **out, struct event_base *base, const store *st, redis_client *rc,
                  const redis_config *rcfg, int db, const watch_config *cfg,
                  const presence_stats *stats)
{
    watch_hub *h = mem_calloc(1, sizeof(*h));
    h->ps = stats ? stats : &no_stats;
    h->base = base;
    h->st = st;
    h->rc = rc;
    h->cfg = *cfg;
    if (h->cfg.workers < 1)
        h->cfg.workers = 1;
    h->db = db;
    registry_init(&h->reg);
    reg_link_init(&h->watchers);
    reg_link_init(&h->to_send);
    h->feed = FEED_DOWN;
    h->down_since = rpc_now_ms();
    h->reaps = mem_alloc((h->cfg.reap_queue_max ? h->cfg.reap_queue_max : 1) * sizeof(char *));
    h->flush_ev = event_new(base, -1, 0, on_flush_ev, h);
    h->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, h);
    const redis_sub_callbacks cbs = {
        .on_message = on_sub_message,
        .on_ready = on_sub_ready,
        .on_disconnect = on_sub_disconnect,
    };
    int rv = redis_sub_new(&h->sub, base, rcfg, &cbs, h);
    if (rv != 0) {
        event_free(h->flush_ev);
        event_free(h->tick_ev);
        registry_clear(&h->reg);
        free(h->reaps);
        free(h);
        return rv;
    }
    static const keys_event evs[] = {KEYS_EV_ONLINE, KEYS_EV_DEL, KEYS_EV_EXPIRED};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
        char ch[64];
        keys_event_channel(ch, sizeof(ch), db, evs[i]);
        redis_sub_subscribe(h->sub, ch);
    }
    struct timeval tv = {0, WATCH_TICK_MS * 1000};
    event_add(h->tick_ev, &tv);
    *out = h;
    return 0;
}

void watch_hub_drain(watch_hub *h)
{
    if (h == NULL || h->draining)
        return;
    h->draining = true;
    if (h->n_watchers > 0)
        log_info("presence watch[%d]: draining: ending %zu streams with UNAVAILABLE", h->cfg.worker,
                 h->n_watchers);
    end_all(h, RPC_STATUS_UNAVAILABLE, "server shutting down; watch again");
}

void watch_hub_free(watch_hub *h)
{
    if (h == NULL)
        return;
    end_all(h, RPC_STATUS_UNAVAILABLE, "server shutting down");
    h->closing = true;
    redis_sub_free(h->sub);
    event_free(h->flush_ev);
    event_free(h->tick_ev);
    for (size_t i = 0; i < h->n_reaps; i++)
        free(h->reaps[i]);
    free(h->reaps);
    registry_clear(&h->reg);
    /* A batch read or config check still in flight holds |h|: its callback (at the latest when
     * the worker frees its redis_client) finds the hub closing and frees it. */
    hub_maybe_destroy(h);
}
