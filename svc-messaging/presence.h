/*
 * presence.h: Connect-ed devices in svc-presence, and presence of chat partners over Connect.
 *
 * Keeping devices online: on Hello the device is heartbeated with the presence_store library
 * (svc-presence/store.h: the same Lua scripts as PresenceService.Heartbeat) on the worker's own
 * Redis connection, with a TTL of --presence-ttl-ms. Every device of a worker sits in one FIFO
 * ordered by when its next refresh is due (Hello + ttl/3, then every ttl/3); one per-worker
 * timer (PRESENCE_TICK_MS) pops the due ones and heartbeats them again, so refreshes spread
 * over time as the Hellos did and no session has a timer of its own. A refresh that fails
 * (Redis down, busy) is not retried early: two more are due before the TTL runs out. When the
 * stream ends (any reason) the device is set offline (store_set_offline), except when another
 * stream of the same (user, device) on this instance has taken over (ABORTED kick): that
 * stream keeps it online. A device that moved to another instance may be set offline by the
 * old instance's late end; the new instance's next refresh (<= ttl/3) brings it back.
 *
 * Partner presence (Hello.watch_partner_presence): the device's partners are the other member
 * of each direct chat it is in when the Hello arrives, at most PRESENCE_MAX_PARTNERS. They are
 * found with ChatsService.ListChats (pages of 200, the device's own bearer token, over
 * --chats-addr) and the worker's membership cache (GetChat loads on a miss), one request at a
 * time per session. Their presence comes from one PresenceService.WatchPresence stream per
 * session (--presence-addr, the device's own token: a watch ends when the token expires, as
 * the Connect stream does). Each partner's newest state is kept here with a dirty flag and
 * written by the session's pump after everything else (presence_write): under back-pressure
 * intermediate states are skipped, never the newest. A watch that ends (svc-presence draining,
 * Redis feed lost, RESOURCE_EXHAUSTED) is started again after a backoff (1 s doubling to
 * 30 s) and its snapshot re-sends every partner; UNAUTHENTICATED stops it for good. Without
 * --chats-addr or --presence-addr nothing is pushed.
 *
 * Bounds: per session <= 500 partners (and as many direct chats), one RPC in flight; per
 * watching session one WatchPresence stream on the worker's presence channel.
 *
 * All functions run on the worker's loop.
 */
#ifndef MSG_PRESENCE_H
#define MSG_PRESENCE_H

#include <stdbool.h>

#include <event2/event.h>

#include "rpc_server.h"

#define PRESENCE_TICK_MS 1000     /* refresh timer period */
#define PRESENCE_MAX_PARTNERS 500 /* partners pushed per session (the proto's limit) */

typedef struct msg_worker msg_worker;
typedef struct msg_presence msg_presence;
typedef struct presence_dev presence_dev;

/* Creates the presence side of worker |w| (its loop, Redis connection, membership loader and
 * settings must outlive it). Returns 0 or a negative code (bad --presence-addr). */
int presence_new(msg_presence **out, msg_worker *w);

/* Stops the timer and frees the channels (calls in flight end; their sessions must already be
 * closed). */
void presence_free(msg_presence *p);

/* Graceful shutdown began: sets every device of this worker offline now and calls |done|
 * (with |user_data|, once, on the loop) when Redis has answered them all, or after
 * PRESENCE_DRAIN_MAX_MS: the caller ends the streams then, while the loop still runs (ending
 * them first lets the worker exit before the commands are written). No refreshes follow, and
 * presence_close() of these devices sends nothing more. Devices that say Hello afterwards are
 * not heartbeated. */
#define PRESENCE_DRAIN_MAX_MS 1000
void presence_drain(msg_presence *p, void (*done)(void *user_data), void *user_data);

/* Asks the session to write (partner presence became dirty). */
typedef void (*presence_wake_cb)(void *user_data);

/* A device said Hello: heartbeats it now and every ttl/3. With |watch_partners|, starts finding
 * its partners and watching them; |authorization| (the stream's metadata value, copied) is the
 * credential used for that, and |wake| (with |user_data|) is called whenever frames are ready
 * for presence_write(). Returns the device handle, owned by the session until
 * presence_close(). */
presence_dev *presence_open(msg_presence *p, const char *user, const char *device,
                            bool watch_partners, const char *authorization, presence_wake_cb wake,
                            void *user_data);

/* The stream ended: sets the device offline (unless another stream of it on this instance took
 * over), cancels the partner watch and releases |d| (memory goes when the last callback in
 * flight returns). |wake| is never called after this. */
void presence_close(presence_dev *d);

/* Writes the pending UserPresence frames on |call|. Returns 0 when none is left,
 * RPC_ERR_WOULDBLOCK when the stream is full (the rest wait), or another rpc error. */
int presence_write(presence_dev *d, rpc_call *call);

#endif /* MSG_PRESENCE_H */
