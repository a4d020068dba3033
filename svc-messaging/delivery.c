/* delivery.c: the delivery thread: consume, route to workers (see delivery.h). */
#include "delivery.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "snowflake.h"
#include "stats.h"
#include "table.h"

#define CONSUMER_BATCH 256
#define SEEN_WINDOW 65536 /* recent record keys remembered for deduplication */
#define CLOSE_TIMEOUT_S 3

typedef struct bl_item {
    Chat__V1__ChatEvent *ev; /* owned */
    int64_t ts_ms;           /* record timestamp */
    bool applied;            /* membership change applied to the cache */
} bl_item;

struct delivery {
    msg_service *svc;
    pthread_t thread;
    struct event_base *base;
    struct event *stop_ev, *resume_ev, *close_timer;
    redis_client *redis;
    snowflake_lease *lease;
    kafka_consumer *consumer;
    membership_loader *loader;
    metrics_http *http;
    char group_id[160];
    char topic_re[160];
    /* backlog of consumed records, in log order */
    bl_item *bl;
    uint32_t bl_alloc, bl_head, bl_count;
    bool waiting_load;  /* the head waits for GetChat */
    int head_load_code; /* -1 none yet; else the load's result for the head */
    bool waiting_space; /* a worker inbox is full */
    bool paused;
    /* recently seen record keys */
    u64tab seen;
    uint64_t *seen_ring;
    uint32_t seen_pos;
    bool closed;
};

void dl_event_unref(dl_event *e)
{
    if (e == NULL || atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    member_set_unref(e->to);
    chat__v1__chat_event__free_unpacked(e->ev, NULL);
    free(e);
}

void dl_event_fill_frame(const dl_event *e, Chat__V1__DeliveryFrame *f)
{
    const Chat__V1__ChatEvent *ev = e->ev;
    switch (ev->event_case) {
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_POSTED:
        f->event_case = CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_POSTED;
        f->message_posted = ev->message_posted;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_EDITED:
        f->event_case = CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_EDITED;
        f->message_edited = ev->message_edited;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_DELETED:
        f->event_case = CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_DELETED;
        f->message_deleted = ev->message_deleted;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED:
        f->event_case = CHAT__V1__DELIVERY_FRAME__EVENT_CHAT_CREATED;
        f->chat_created = ev->chat_created;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED:
        f->event_case = CHAT__V1__DELIVERY_FRAME__EVENT_MEMBERS_ADDED;
        f->members_added = (Chat__V1__MembershipChange *)&e->change;
        break;
    case CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED:
        f->event_case = CHAT__V1__DELIVERY_FRAME__EVENT_MEMBERS_REMOVED;
        f->members_removed = (Chat__V1__MembershipChange *)&e->change;
        break;
    default:
        break;
    }
}

/* --- deduplication window -------------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= UINT64_C(0x7fb5d329728ea185);
    x ^= x >> 27;
    x *= UINT64_C(0x81dadef4bc2dd44d);
    x ^= x >> 33;
    return x;
}

static const Chat__V1__Message *event_message(const Chat__V1__ChatEvent *ev)
{
    switch (ev->event_case) {
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_POSTED:
        return ev->message_posted;
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_EDITED:
        return ev->message_edited;
    case CHAT__V1__CHAT_EVENT__EVENT_MESSAGE_DELETED:
        return ev->message_deleted;
    default:
        return NULL;
    }
}

/* Message states are keyed by (message_id, version, deleted): a re-produced send and the
 * mirror's copy are the same state. Other events by chat (created) or event id. */
static uint64_t event_key(const Chat__V1__ChatEvent *ev)
{
    const Chat__V1__Message *m = event_message(ev);
    if (m != NULL)
        return mix(m->message_id) ^ mix(((uint64_t)m->version << 1 | (m->deleted ? 1 : 0)) + 17);
    if (ev->event_case == CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED)
        return mix(ev->chat_id ^ UINT64_C(0x5bd1e995));
    return mix(ev->event_id + 3);
}

/* True when |key| was seen recently; remembers it otherwise. */
static bool seen_check(delivery *d, uint64_t key)
{
    if (u64tab_get(&d->seen, key) != NULL)
        return true;
    uint64_t old = d->seen_ring[d->seen_pos];
    if (old != 0)
        u64tab_del(&d->seen, old);
    d->seen_ring[d->seen_pos] = key;
    d->seen_pos = (d->seen_pos + 1) % SEEN_WINDOW;
    u64tab_put(&d->seen, key, (void *)1);
    return false;
}

/* --- routing --------------------------------------------------------------------------------- */

static void process(delivery *d);

static void set_paused(delivery *d, bool pause)
{
    if (d->paused == pause || d->consumer == NULL)
        return;
    d->paused = pause;
    if (pause)
        kafka_consumer_pause(d->consumer);
    else
        kafka_consumer_resume(d->consumer);
    metrics_gauge_set(stats.consumer_paused, pause ? 1 : 0);
}

static void bl_pop(delivery *d)
{
    bl_item *it = &d->bl[d->bl_head];
    if (it->ev)
        chat__v1__chat_event__free_unpacked(it->ev, NULL);
    it->ev = NULL;
    d->bl_head = (d->bl_head + 1) % d->bl_alloc;
    d->bl_count--;
    d->head_load_code = -1;
}

static void on_loaded(int code, void *ud)
{
    delivery *d = ud;
    d->waiting_load = false;
    d->head_load_code = code;
    if (!d->closed)
        process(d);
}

static bool any_sessions(const msg_service *svc)
{
    for (int i = 0; i < svc->n_workers; i++)
        if (atomic_load(&svc->workers[i]->n_sessions) > 0)
            return true;
    return false;
}

static dl_event *make_event(bl_item *it, member_set *to)
{
    dl_event *e = mem_calloc(1, sizeof(*e));
    atomic_init(&e->refs, 1);
    e->ev = it->ev;
    it->ev = NULL;
    e->to = to;
    Chat__V1__MembersChanged *mc = NULL;
    if (e->ev->event_case == CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED)
        mc = e->ev->members_added;
    if (e->ev->event_case == CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED) {
        mc = e->ev->members_removed;
        e->extra = mc->user_ids;
        e->n_extra = mc->n_user_ids;
    }
    chat__v1__membership_change__init(&e->change);
    if (mc != NULL) {
        e->change.chat_id = e->ev->chat_id;
        e->change.n_user_ids = mc->n_user_ids;
        e->change.user_ids = mc->user_ids;
        e->change.actor_id = e->ev->actor_id;
        e->change.changed_at_ms = e->ev->produced_at_ms;
        e->change.member_count = (uint32_t)to->n;
    }
    return e;
}

static void process(delivery *d)
{
    msg_service *svc = d->svc;
    while (d->bl_count > 0 && !d->waiting_load && !d->waiting_space) {
        bl_item *it = &d->bl[d->bl_head];
        Chat__V1__ChatEvent *ev = it->ev;
        if (!it->applied) {
            membership_apply_event(svc->members, ev);
            it->applied = true;
        }
        if (!any_sessions(svc)) {
            bl_pop(d); /* nobody to tell on this instance */
            continue;
        }
        member_set *to = membership_get(svc->members, ev->chat_id);
        if (to == NULL) {
            if (d->head_load_code < 0) {
                if (membership_load(d->loader, ev->chat_id, on_loaded, d) == 0) {
                    d->waiting_load = true;
                    return;
                }
            }
            if (d->head_load_code != RPC_STATUS_NOT_FOUND)
                log_warn("delivery: members of chat %" PRIu64 " unknown (%s): event %" PRIu64
                         " not delivered",
                         ev->chat_id, rpc_status_name(d->head_load_code), ev->event_id);
            metrics_counter_inc(stats.events_skipped);
            bl_pop(d);
            continue;
        }
        for (int i = 0; i < svc->n_workers; i++) {
            msg_worker *w = svc->workers[i];
            if (atomic_load(&w->n_sessions) > 0 && !worker_has_room(w)) {
                member_set_unref(to);
                d->waiting_space = true;
                set_paused(d, true);
                return;
            }
        }
        int64_t ts = it->ts_ms;
        dl_event *e = make_event(it, to);
        for (int i = 0; i < svc->n_workers; i++) {
            msg_worker *w = svc->workers[i];
            if (atomic_load(&w->n_sessions) == 0)
                continue;
            inbox_item in = {.kind = INBOX_EVENT, .ev = e};
            atomic_fetch_add(&e->refs, 1);
            if (!worker_post(w, &in))
                atomic_fetch_sub(&e->refs, 1); /* stopped meanwhile */
        }
        dl_event_unref(e);
        if (ts > 0)
            metrics_histogram_observe(stats.event_lag, (snowflake_wall_ms() - ts) / 1000.0);
        bl_pop(d);
    }
    if (d->paused && !d->waiting_space && d->bl_count < d->svc->cfg.delivery_backlog / 4)
        set_paused(d, false);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    delivery *d = arg;
    d->waiting_space = false;
    if (!d->closed)
        process(d);
}

void delivery_wake(delivery *d)
{
    if (d != NULL)
        event_active(d->resume_ev, EV_READ, 0);
}

static void on_record(kafka_consumer *c, const kafka_message *m, void *ud)
{
    (void)c;
    delivery *d = ud;
    metrics_counter_inc(stats.events_consumed);
    Chat__V1__ChatEvent *ev = chat__v1__chat_event__unpack(NULL, m->value_len, m->value);
    if (ev == NULL || ev->event_case == CHAT__V1__CHAT_EVENT__EVENT__NOT_SET || ev->chat_id == 0) {
        log_warn("delivery: %s[%d]@%" PRId64 ": unreadable or unknown event skipped", m->topic,
                 m->partition, m->offset);
        metrics_counter_inc(stats.events_skipped);
        if (ev)
            chat__v1__chat_event__free_unpacked(ev, NULL);
        return;
    }
    if (seen_check(d, event_key(ev))) {
        metrics_counter_inc(stats.events_duplicate);
        chat__v1__chat_event__free_unpacked(ev, NULL);
        return;
    }
    if (d->bl_count == d->bl_alloc) { /* cannot happen: paused at half (see delivery.h) */
        log_error("delivery: backlog full, event %" PRIu64 " dropped", ev->event_id);
        metrics_counter_inc(stats.events_skipped);
        chat__v1__chat_event__free_unpacked(ev, NULL);
        return;
    }
    d->bl[(d->bl_head + d->bl_count) % d->bl_alloc] =
        (bl_item){.ev = ev, .ts_ms = m->timestamp_ms, .applied = false};
    d->bl_count++;
    if (d->bl_count >= d->svc->cfg.delivery_backlog / 2)
        set_paused(d, true);
    process(d);
}

static int on_rebalance(kafka_consumer *c, kafka_rebalance_kind kind,
                        rd_kafka_topic_partition_list_t *parts, void *ud)
{
    (void)c;
    (void)ud;
    log_info("delivery: %s %d partition(s)",
             kind == KAFKA_REBALANCE_ASSIGN ? "assigned" : "revoked", parts->cnt);
    return 0;
}

/* --- lease ----------------------------------------------------------------------------------- */

static void on_lease(snowflake_lease *l, snowflake_lease_event ev, int instance, void *ud)
{
    (void)l;
    delivery *d = ud;
    if (ev == SNOWFLAKE_LEASE_ACQUIRED) {
        snprintf(d->svc->producer_name, sizeof(d->svc->producer_name), "svc-messaging/%s/%d",
                 d->svc->cfg.site, instance);
        log_info("snowflake: instance %d leased (site %u)", instance, d->svc->cfg.site_id);
        metrics_gauge_set(stats.snowflake_instance, instance);
    } else {
        log_warn("snowflake: lease of instance %d lost: sends fail until a new one", instance);
        metrics_gauge_set(stats.snowflake_instance, -1);
    }
}

/* --- thread ---------------------------------------------------------------------------------- */

static void finish_close(delivery *d)
{
    if (d->consumer) {
        kafka_consumer_free(d->consumer);
        d->consumer = NULL;
    }
    event_base_loopexit(d->base, NULL);
}

static void on_consumer_closed(kafka_consumer *c, void *ud)
{
    (void)c;
    finish_close(ud);
}

static void on_close_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    log_warn("delivery: consumer did not close within %d s", CLOSE_TIMEOUT_S);
    finish_close(arg);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    delivery *d = arg;
    d->closed = true;
    if (d->lease) {
        snowflake_lease_free(d->lease);
        d->lease = NULL;
    }
    struct timeval tv = {CLOSE_TIMEOUT_S, 0};
    d->close_timer = evtimer_new(d->base, on_close_timeout, d);
    event_add(d->close_timer, &tv);
    if (d->consumer == NULL || kafka_consumer_close(d->consumer, on_consumer_closed, d) != 0)
        finish_close(d);
}

static void *thread_main(void *arg)
{
    delivery *d = arg;
    event_base_loop(d->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void escape_topic(char *out, size_t cap, const char *topic)
{
    size_t k = 0;
    for (const char *p = topic; *p && k + 3 < cap; p++) {
        if (*p == '.' || *p == '-' || *p == '_') {
            if (*p == '.')
                out[k++] = '\\';
        }
        out[k++] = *p;
    }
    out[k] = '\0';
}

int delivery_start(delivery **out, msg_service *svc)
{
    const settings *cfg = &svc->cfg;
    delivery *d = mem_calloc(1, sizeof(*d));
    d->svc = svc;
    d->head_load_code = -1;
    d->base = event_base_new();
    d->bl_alloc = cfg->delivery_backlog + CONSUMER_BATCH * 2;
    d->bl = mem_calloc(d->bl_alloc, sizeof(*d->bl));
    u64tab_init(&d->seen);
    d->seen_ring = mem_calloc(SEEN_WINDOW, sizeof(*d->seen_ring));
    d->stop_ev = event_new(d->base, -1, 0, on_stop, d);
    d->resume_ev = event_new(d->base, -1, EV_PERSIST, on_resume, d);
    event_add(d->resume_ev, NULL);

    redis_config rcfg;
    redis_config_init(&rcfg);
    rcfg.url = cfg->redis_url;
    rcfg.name = "messaging-lease";
    rcfg.command_timeout_ms = cfg->redis_timeout_ms;
    int rv = redis_client_new(&d->redis, d->base, &rcfg);
    if (rv != 0) {
        log_error("redis-url: %s", redis_strerror(rv));
        goto fail;
    }
    snowflake_lease_config lcfg;
    snowflake_lease_config_init(&lcfg);
    rv = snowflake_lease_new(&d->lease, d->base, d->redis, svc->ids, &lcfg, on_lease, d);
    if (rv != 0) {
        log_error("snowflake lease: %s", snowflake_strerror(rv));
        goto fail;
    }
    rv = membership_loader_new(&d->loader, d->base, svc->members, cfg->chats_addr, cfg->jwt_secret,
                               cfg->membership_max_loads);
    if (rv != 0)
        goto fail;

    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    snprintf(d->group_id, sizeof(d->group_id), "svc-messaging.%s.%s.%d.%08x", cfg->site, host,
             (int)getpid(), (unsigned)(snowflake_wall_ms() & 0xffffffff));
    char esc[128];
    escape_topic(esc, sizeof(esc), cfg->topic);
    snprintf(d->topic_re, sizeof(d->topic_re), "^([a-z0-9-]+\\.)?%s$", esc);
    kafka_config kcfg;
    kafka_config_init(&kcfg);
    const char *props[] = {"auto.offset.reset=latest", "fetch.wait.max.ms=20",
                           "socket.nagle.disable=true", "topic.metadata.refresh.interval.ms=30000",
                           NULL};
    kcfg.brokers = cfg->kafka_brokers;
    kcfg.client_id = "svc-messaging";
    kcfg.name = "messaging-consumer";
    kcfg.props = props;
    kcfg.group_id = d->group_id;
    kcfg.offsets = KAFKA_OFFSETS_MANUAL; /* nothing to resume: devices catch up via svc-chats */
    kcfg.batch_max = CONSUMER_BATCH;
    kafka_consumer_callbacks kcb = {.on_message = on_record, .on_rebalance = on_rebalance};
    rv = kafka_consumer_new(&d->consumer, d->base, &kcfg, &kcb, d);
    if (rv != 0) {
        log_error("kafka consumer: %s", kafka_strerror(rv));
        goto fail;
    }
    const char *topics[] = {d->topic_re};
    rv = kafka_consumer_subscribe(d->consumer, topics, 1);
    if (rv != 0) {
        log_error("kafka subscribe %s: %s", d->topic_re, kafka_strerror(rv));
        goto fail;
    }
    log_info("delivery: consuming %s as group %s; chats-addr=%s", d->topic_re, d->group_id,
             cfg->chats_addr ? cfg->chats_addr : "(none: membership from the log only)");
    if (pthread_create(&d->thread, NULL, thread_main, d) != 0) {
        log_error("cannot start the delivery thread");
        goto fail;
    }
    *out = d;
    return 0;
fail:
    if (d->http)
        metrics_http_free(d->http);
    if (d->consumer)
        kafka_consumer_free(d->consumer);
    membership_loader_free(d->loader);
    if (d->lease)
        snowflake_lease_free(d->lease);
    if (d->redis)
        redis_client_free(d->redis);
    event_free(d->stop_ev);
    event_free(d->resume_ev);
    event_base_free(d->base);
    u64tab_clear(&d->seen);
    free(d->seen_ring);
    free(d->bl);
    free(d);
    return -1;
}

void delivery_stop(delivery *d)
{
    if (d == NULL)
        return;
    event_active(d->stop_ev, EV_READ, 0);
    pthread_join(d->thread, NULL);
    /* The loop has stopped: free the rest on this thread. */
    if (d->http)
        metrics_http_free(d->http);
    membership_loader_free(d->loader);
    redis_client_free(d->redis);
    while (d->bl_count > 0)
        bl_pop(d);
    if (d->close_timer)
        event_free(d->close_timer);
    event_free(d->stop_ev);
    event_free(d->resume_ev);
    event_base_free(d->base);
    u64tab_clear(&d->seen);
    free(d->seen_ring);
    free(d->bl);
    free(d);
}
