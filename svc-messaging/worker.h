/*
 * worker.h: what svc-messaging keeps per process and per worker thread.
 *
 * Process (msg_service): settings, the token verifier, the membership cache, the Snowflake
 * generator (its lease runs on the delivery thread), the Redis scripts, the device registry
 * (which worker holds the stream of each (user, device), for ABORTED), and the workers.
 *
 * Worker (msg_worker), one per rpc_server worker thread and owned by its loop: its Redis
 * connection (dedupe), its Kafka producer (delivery reports come back on this loop), its
 * membership loader (GetChat channel), its sessions indexed by user, and its inbox: a bounded
 * FIFO the delivery thread fills with events (and kicks) and wakes
 * with event_active. The worker structs live from setup() to teardown(); |alive| (under the
 * inbox lock) says whether the loop side exists, so the delivery thread never posts to a
 * stopped loop.
 */
#ifndef MSG_WORKER_H
#define MSG_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "auth.h"
#include "kafka.h"
#include "membership.h"
#include "redis.h"
#include "rpc_server.h"
#include "settings.h"
#include "snowflake.h"
#include "table.h"

typedef struct delivery delivery;
typedef struct dl_event dl_event;
typedef struct msg_worker msg_worker;
typedef struct msg_presence msg_presence;

typedef struct msg_service {
    settings cfg;                 /* configuration */
    auth_verifier *auth;          /* bearer tokens, shared */
    membership *members;          /* membership cache, shared (locked) */
    snowflake *ids;               /* message and event ids (thread-safe) */
    redis_script *dedupe_script;  /* sendpath.c */
    redis_script *acked_script;   /* sendpath.c */
    msg_worker **workers;         /* cfg.workers slots */
    int n_workers;                /* slots */
    delivery *dl;                 /* the delivery thread */
    pthread_mutex_t devices_lock; /* guards |devices| */
    strtab devices;               /* "user device" -> device_owner */
    atomic_bool shutting_down;    /* draining began: new Connect streams are refused */
    char producer_name[80];       /* ChatEvent.producer */
} msg_service;

/* Where the stream of one (user, device) lives. */
typedef struct device_owner {
    int worker;   /* worker index */
    uint64_t sid; /* session id on it */
} device_owner;

typedef enum inbox_kind {
    INBOX_EVENT = 1, /* deliver |ev| */
    INBOX_KICK = 2,  /* end session |sid| of |user| with ABORTED */
} inbox_kind;

typedef struct inbox_item {
    inbox_kind kind;
    dl_event *ev;                    /* INBOX_EVENT: one reference */
    uint64_t sid;                    /* INBOX_KICK */
    char user[AUTH_USER_ID_MAX + 1]; /* INBOX_KICK */
} inbox_item;

#define INBOX_RESERVE 64 /* slots only kicks may use */

struct msg_worker {
    msg_service *svc;              /* process state */
    int index;                     /* worker number */
    struct event_base *base;       /* its loop */
    redis_client *redis;           /* dedupe */
    kafka_producer *producer;      /* chat.events */
    membership_loader *loader;     /* GetChat */
    msg_presence *presence;        /* heartbeats of its devices, partner watches (presence.h) */
    strtab users;                  /* user id -> first session (list via session links) */
    atomic_uint n_sessions;        /* open sessions (read by the delivery thread) */
    uint32_t pending_sends;        /* sendpath operations in flight */
    uint64_t next_sid;             /* session ids */
    bool stopping;                 /* worker_stop running: fail new work */
    bool marks_unflushed;          /* dedupe marks queued in this turn's delivery reports */
    const struct timeval *tick_tv; /* common timeout for session ticks */
    /* inbox, shared with the delivery thread */
    pthread_mutex_t inbox_lock;
    inbox_item *inbox; /* ring of inbox_cap */
    uint32_t inbox_cap, inbox_head, inbox_count;
    bool alive;             /* loop side exists (under inbox_lock) */
    bool hub_waiting;       /* the delivery thread waits for room (under inbox_lock) */
    struct event *inbox_ev; /* wakes this loop */
};

/* Allocates the worker slots (setup time). */
void worker_create_all(msg_service *svc);
void worker_free_all(msg_service *svc);

/* rpc_server worker hooks; |user_data| is the msg_service. */
void *worker_start(rpc_server *srv, int index, struct event_base *base, void *user_data);
void worker_stop(rpc_server *srv, int index, void *worker_data, void *user_data);

/* rpc_server drain hook (graceful shutdown began, on each worker's loop): refuses new Connect
 * streams and ends this worker's with UNAVAILABLE at once, while the loop still runs (so the
 * devices' SetOffline reaches Redis) instead of at the drain deadline. */
void worker_drain(rpc_server *srv, int index, void *worker_data, void *user_data);

/* Any thread. Posts |it| (copied; an event reference is taken over on success). Events need
 * a free slot beyond INBOX_RESERVE. Returns true when queued. */
bool worker_post(msg_worker *w, const inbox_item *it);

/* Delivery thread: true if |w| can take one more event now; if not, marks it so the worker
 * wakes the delivery thread once it has drained below half. */
bool worker_has_room(msg_worker *w);

/* Device registry: records the stream |sid| on |w| for (user, device) and kicks an older one.
 * Any worker thread. */
void worker_claim_device(msg_worker *w, const char *user, const char *device, uint64_t sid);
void worker_release_device(msg_worker *w, const char *user, const char *device, uint64_t sid);

/* True when some stream of (user, device) is registered on this instance (any worker). */
bool worker_device_claimed(msg_worker *w, const char *user, const char *device);

#endif /* MSG_WORKER_H */
