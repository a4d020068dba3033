/* worker.c: per-worker state, the inbox and the device registry (see worker.h). */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery.h"
#include "log.h"
#include "mem.h"
#include "presence.h"
#include "session.h"
#include "sendpath.h"

#define INBOX_BATCH 256 /* items handled per loop turn */

void worker_create_all(msg_service *svc)
{
    svc->n_workers = svc->cfg.workers;
    svc->workers = mem_calloc((size_t)svc->n_workers, sizeof(*svc->workers));
    for (int i = 0; i < svc->n_workers; i++) {
        msg_worker *w = mem_calloc(1, sizeof(*w));
        w->svc = svc;
        w->index = i;
        pthread_mutex_init(&w->inbox_lock, NULL);
        w->inbox_cap = svc->cfg.worker_inbox_size + INBOX_RESERVE;
        w->inbox = mem_calloc(w->inbox_cap, sizeof(*w->inbox));
        svc->workers[i] = w;
    }
}

void worker_free_all(msg_service *svc)
{
    for (int i = 0; i < svc->n_workers; i++) {
        msg_worker *w = svc->workers[i];
        pthread_mutex_destroy(&w->inbox_lock);
        free(w->inbox);
        free(w);
    }
    free(svc->workers);
    svc->workers = NULL;
}

bool worker_post(msg_worker *w, const inbox_item *it)
{
    bool ok = false;
    pthread_mutex_lock(&w->inbox_lock);
    uint32_t limit = it->kind == INBOX_EVENT ? w->inbox_cap - INBOX_RESERVE : w->inbox_cap;
    if (w->alive && w->inbox_count < limit) {
        w->inbox[(w->inbox_head + w->inbox_count) % w->inbox_cap] = *it;
        if (w->inbox_count++ == 0)
            event_active(w->inbox_ev, EV_READ, 0);
        ok = true;
    }
    pthread_mutex_unlock(&w->inbox_lock);
    return ok;
}

bool worker_has_room(msg_worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    bool room = !w->alive || w->inbox_count < w->inbox_cap - INBOX_RESERVE;
    if (!room)
        w->hub_waiting = true;
    pthread_mutex_unlock(&w->inbox_lock);
    return room;
}

typedef struct route_ctx {
    msg_worker *w;
    dl_event *e;
} route_ctx;

static bool route_user(const char *user, void *value, void *ud)
{
    (void)value;
    route_ctx *r = ud;
    if (member_set_has(r->e->to, user))
        session_deliver_user(r->w, user, r->e);
    return true;
}

/* Hands |e| to this worker's sessions of its recipients: whichever side is smaller is walked. */
static void route_event(msg_worker *w, dl_event *e)
{
    if (e->to != NULL) {
        if (w->users.n < e->to->n) {
            route_ctx r = {w, e};
            strtab_each(&w->users, route_user, &r);
        } else {
            for (size_t i = 0; i < e->to->n; i++)
                session_deliver_user(w, e->to->ids[i], e);
        }
    }
    for (size_t i = 0; i < e->n_extra; i++)
        if (!member_set_has(e->to, e->extra[i]))
            session_deliver_user(w, e->extra[i], e);
}

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    msg_worker *w = arg;
    inbox_item batch[64];
    for (int done = 0; done < INBOX_BATCH;) {
        uint32_t n = 0;
        bool wake = false;
        pthread_mutex_lock(&w->inbox_lock);
        while (n < 64 && w->inbox_count > 0) {
            batch[n++] = w->inbox[w->inbox_head];
            w->inbox_head = (w->inbox_head + 1) % w->inbox_cap;
            w->inbox_count--;
        }
        if (w->hub_waiting && w->inbox_count < (w->inbox_cap - INBOX_RESERVE) / 2) {
            w->hub_waiting = false;
            wake = true;
        }
        bool more = w->inbox_count > 0;
        pthread_mutex_unlock(&w->inbox_lock);
        if (wake)
            delivery_wake(w->svc->dl);
        for (uint32_t i = 0; i < n; i++) {
            inbox_item *it = &batch[i];
            switch (it->kind) {
            case INBOX_EVENT:
                route_event(w, it->ev);
                dl_event_unref(it->ev);
                break;
            case INBOX_KICK:
                session_kick(w, it->user, it->sid);
                break;
            }
        }
        done += (int)n;
        if (!more)
            return;
    }
    event_active(w->inbox_ev, EV_READ, 0); /* more left: after other events had their turn */
}

void *worker_start(rpc_server *srv, int index, struct event_base *base, void *user_data)
{
    (void)srv;
    msg_service *svc = user_data;
    msg_worker *w = svc->workers[index];
    const settings *cfg = &svc->cfg;
    w->base = base;
    strtab_init(&w->users);
    uint32_t tick = cfg->ack_timeout_ms / 2;
    if (tick > 1000)
        tick = 1000;
    struct timeval tv = {tick / 1000, (tick % 1000) * 1000};
    w->tick_tv = event_base_init_common_timeout(base, &tv);
    char name[48];
    redis_config rcfg;
    redis_config_init(&rcfg);
    snprintf(name, sizeof(name), "messaging-redis[%d]", index);
    rcfg.url = cfg->redis_url;
    rcfg.name = name;
    rcfg.command_timeout_ms = cfg->redis_timeout_ms;
    int rv = redis_client_new(&w->redis, base, &rcfg);
    if (rv != 0) {
        log_error("worker %d: redis: %s", index, redis_strerror(rv));
        return NULL;
    }
    kafka_config kcfg;
    kafka_config_init(&kcfg);
    snprintf(name, sizeof(name), "messaging-producer[%d]", index);
    char linger[48], timeout[48];
    snprintf(linger, sizeof(linger), "linger.ms=%s", cfg->linger_ms);
    snprintf(timeout, sizeof(timeout), "message.timeout.ms=%u", cfg->send_timeout_ms);
    const char *props[] = {linger, timeout, "socket.nagle.disable=true", NULL};
    kcfg.brokers = cfg->kafka_brokers;
    kcfg.client_id = "svc-messaging";
    kcfg.name = name;
    kcfg.props = props;
    rv = kafka_producer_new(&w->producer, base, &kcfg, NULL, NULL);
    if (rv != 0) {
        log_error("worker %d: kafka producer: %s", index, kafka_strerror(rv));
        redis_client_free(w->redis);
        return NULL;
    }
    kafka_producer_set_reports_done(w->producer, sendpath_reports_done, w);
    /* Warm-up: a topic handle makes librdkafka fetch the topic's metadata and connect to the
     * partition leaders now (asynchronously), not on the first send, whose ack would otherwise
     * wait for both (measured: first-second p99 671 -> 157 ms at 2,000 msg/s). */
    rd_kafka_topic_t *warm =
        rd_kafka_topic_new(kafka_producer_handle(w->producer), cfg->topic, NULL);
    if (warm != NULL)
        rd_kafka_topic_destroy(warm);
    rv = membership_loader_new(&w->loader, base, svc->members, cfg->chats_addr, cfg->jwt_secret,
                               cfg->membership_max_loads);
    if (rv != 0) {
        kafka_producer_free(w->producer);
        redis_client_free(w->redis);
        return NULL;
    }
    if (presence_new(&w->presence, w) != 0) {
        membership_loader_free(w->loader);
        kafka_producer_free(w->producer);
        redis_client_free(w->redis);
        return NULL;
    }
    w->inbox_ev = event_new(base, -1, EV_PERSIST, on_inbox, w);
    event_add(w->inbox_ev, NULL);
    pthread_mutex_lock(&w->inbox_lock);
    w->alive = true;
    pthread_mutex_unlock(&w->inbox_lock);
    return w;
}

void worker_stop(rpc_server *srv, int index, void *worker_data, void *user_data)
{
    (void)srv;
    (void)index;
    (void)user_data;
    msg_worker *w = worker_data;
    if (w != NULL) {
        pthread_mutex_lock(&w->inbox_lock);
        w->alive = false;
        while (w->inbox_count > 0) {
            inbox_item *it = &w->inbox[w->inbox_head];
            if (it->kind == INBOX_EVENT)
                dl_event_unref(it->ev);
            w->inbox_head = (w->inbox_head + 1) % w->inbox_cap;
            w->inbox_count--;
        }
        pthread_mutex_unlock(&w->inbox_lock);
        w->stopping = true;
        session_close_all(w, RPC_STATUS_UNAVAILABLE, "server shutting down");
        /* Operations in flight fail as each piece goes (each step checks |stopping|). */
        presence_free(w->presence);
        w->presence = NULL;
        membership_loader_free(w->loader);
        redis_client_free(w->redis);
        kafka_producer_free(w->producer);
        event_free(w->inbox_ev);
        w->inbox_ev = NULL;
        strtab_clear(&w->users);
    }
}

static void close_all_sessions(void *ud)
{
    session_close_all(ud, RPC_STATUS_UNAVAILABLE, "server shutting down");
}

void worker_drain(rpc_server *srv, int index, void *worker_data, void *user_data)
{
    (void)srv;
    (void)index;
    msg_service *svc = user_data;
    msg_worker *w = worker_data;
    atomic_store(&svc->shutting_down, true);
    if (w != NULL) /* the devices go offline first, then their streams end (presence.h) */
        presence_drain(w->presence, close_all_sessions, w);
}

void worker_claim_device(msg_worker *w, const char *user, const char *device, uint64_t sid)
{
    msg_service *svc = w->svc;
    char key[AUTH_USER_ID_MAX + MSG_MAX_DEVICE_ID + 2];
    snprintf(key, sizeof(key), "%s %s", user, device);
    device_owner *o = mem_alloc(sizeof(*o));
    o->worker = w->index;
    o->sid = sid;
    pthread_mutex_lock(&svc->devices_lock);
    device_owner *old = strtab_put(&svc->devices, key, o);
    pthread_mutex_unlock(&svc->devices_lock);
    if (old == NULL)
        return;
    if (old->worker == w->index) {
        session_kick(w, user, old->sid);
    } else {
        inbox_item it = {.kind = INBOX_KICK, .sid = old->sid};
        snprintf(it.user, sizeof(it.user), "%s", user);
        if (!worker_post(svc->workers[old->worker], &it))
            log_warn("could not kick the older stream of %s on worker %d", key, old->worker);
    }
    free(old);
}

void worker_release_device(msg_worker *w, const char *user, const char *device, uint64_t sid)
{
    msg_service *svc = w->svc;
    char key[AUTH_USER_ID_MAX + MSG_MAX_DEVICE_ID + 2];
    snprintf(key, sizeof(key), "%s %s", user, device);
    pthread_mutex_lock(&svc->devices_lock);
    device_owner *o = strtab_get(&svc->devices, key);
    if (o != NULL && o->worker == w->index && o->sid == sid)
        free(strtab_del(&svc->devices, key));
    pthread_mutex_unlock(&svc->devices_lock);
}

bool worker_device_claimed(msg_worker *w, const char *user, const char *device)
{
    msg_service *svc = w->svc;
    char key[AUTH_USER_ID_MAX + MSG_MAX_DEVICE_ID + 2];
    snprintf(key, sizeof(key), "%s %s", user, device);
    pthread_mutex_lock(&svc->devices_lock);
    bool claimed = strtab_get(&svc->devices, key) != NULL;
    pthread_mutex_unlock(&svc->devices_lock);
    return claimed;
}
