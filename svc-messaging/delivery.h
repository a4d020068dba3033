/*
 * delivery.h: live delivery, from the log to the sessions.
 *
 * One thread per process (the delivery thread, its own libevent loop) consumes `chat.events`
 * and the mirrored `<site>.chat.events` (regex subscription) in a consumer group of its own
 * (group id unique per process, starting at the latest offsets, nothing committed: a
 * restarted instance's devices catch up with PullMessages), and for every record:
 *
 *   1. skips it if already seen (same message state from the mirror or a re-produce; bounded
 *      window of recent keys);
 *   2. applies membership events to the membership cache;
 *   3. finds the recipients (the chat's members; plus the removed users for members_removed),
 *      loading the chat with GetChat on a miss -- records wait in order behind that load;
 *   4. posts one shared, reference-counted dl_event to the inbox of every worker that has
 *      sessions; the worker hands it to its sessions of the recipients (session.h).
 *
 * Back-pressure: the consumed-but-not-routed backlog is bounded (delivery_backlog); when a
 * worker inbox is full or the backlog is over half, the consumer is paused and resumed when
 * the worker has drained (librdkafka refetches from the first record not delivered).
 *
 * The delivery thread also holds the Snowflake lease (Redis) and serves /metrics.
 */
#ifndef MSG_DELIVERY_H
#define MSG_DELIVERY_H

#include <stdatomic.h>

#include "chat/v1/events.pb-c.h"
#include "chat/v1/messaging.pb-c.h"
#include "membership.h"
#include "worker.h"

/* One consumed event on its way to sessions; immutable once posted, shared by workers. */
struct dl_event {
    atomic_int refs;                   /* owners */
    Chat__V1__ChatEvent *ev;           /* unpacked record */
    member_set *to;                    /* recipients (members after the change), one ref */
    char **extra;                      /* members_removed: the removed users (point into ev) */
    size_t n_extra;                    /* entries in |extra| */
    Chat__V1__MembershipChange change; /* members_added / members_removed frame body */
};

void dl_event_unref(dl_event *e);

/* Fills the event oneof of |f| from |e| (pointers into |e|, valid while it is referenced). */
void dl_event_fill_frame(const dl_event *e, Chat__V1__DeliveryFrame *f);

/* Starts the delivery thread. Returns 0 or -1. */
int delivery_start(delivery **out, msg_service *svc);

/* Stops the thread (orderly consumer close, lease release) and frees everything. */
void delivery_stop(delivery *d);

/* A worker drained its inbox below half after refusing an event: resume routing. Any thread. */
void delivery_wake(delivery *d);

#endif /* MSG_DELIVERY_H */
