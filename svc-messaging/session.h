/*
 * session.h: one device's Connect stream on one worker.
 *
 * States:
 *
 *   HELLO_WAIT --Hello ok--> OPEN --(end)--> CLOSED
 *        |                     |
 *        +-- no Hello within hello_timeout_ms: DEADLINE_EXCEEDED; first frame not Hello:
 *            FAILED_PRECONDITION; bad Hello: INVALID_ARGUMENT
 *   OPEN ends with: OK (client half-closed), INVALID_ARGUMENT (empty frame, ack above the last
 *   session_seq), FAILED_PRECONDITION (second Hello), DEADLINE_EXCEEDED (silent for
 *   3 x ping_interval_ms), UNAUTHENTICATED (token exp passed), RESOURCE_EXHAUSTED (a frame
 *   unacked after max_resends resends; or the client stopped reading its control frames),
 *   ABORTED (same user+device opened a newer stream on this instance), UNAVAILABLE (shutdown);
 *   or the client cancels.
 *
 * Outgoing frames, written in this order whenever the stream is writable (on RPC_ERR_WOULDBLOCK
 * the pump waits for on_writable):
 *   1. control frames (Welcome, SendResult, Pong) in FIFO order; bounded: one per send in
 *      flight (max_inflight_sends, a send's slot is freed when its result is written) plus
 *      CTL_PONG_MAX pongs -- a client that keeps pinging without reading is ended;
 *   2. resends of delivery frames whose ack timed out, in session_seq order;
 *   3. new delivery frames, in session_seq order.
 *
 * Delivery queue: a ring of at most queue_size frames, queued or written-but-unacked (grown on
 * demand, so an idle session costs little). session_seq is assigned at enqueue, also to a frame
 * that is dropped because the ring is full. Cumulative acks pop the ring.
 *
 * One timer per session (a libevent common timeout) ticks every min(ack_timeout/2, 1 s):
 * Hello deadline, silence, token expiry and resends.
 *
 * Lifetime: reference-counted; the stream holds one reference until it ends, every send in
 * flight holds one. All functions run on the worker's loop.
 */
#ifndef MSG_SESSION_H
#define MSG_SESSION_H

#include <stdint.h>

#include "auth.h"
#include "chat/v1/messaging.pb-c.h"
#include "delivery.h"
#include "rpc_server.h"
#include "worker.h"

#define CTL_PONG_MAX 16

typedef struct session session;

/* Creates a session for |call| (authenticated as |id|) and installs the call callbacks. */
session *session_new(msg_worker *w, rpc_call *call, const auth_identity *id);

/* One client frame. */
void session_on_frame(session *s, const Chat__V1__ConnectRequest *req);

/* The client half-closed: the stream ends OK. */
void session_on_half_close(session *s);

/* Queues |e| for this device (takes no reference on failure; a reference on success). */
void session_deliver(session *s, dl_event *e);

/* Ends the stream with |code| and |msg| and releases the session's queues. */
void session_close(session *s, int code, const char *msg);

/* For the worker's user index. */
session *session_next_of_user(const session *s);
uint64_t session_id(const session *s);

/* Delivers |e| to every session of |user| on |w|. */
void session_deliver_user(msg_worker *w, const char *user, dl_event *e);

/* Closes every session of |w| with |code| (shutdown). */
void session_close_all(msg_worker *w, int code, const char *msg);

/* Closes the session |sid| of |user| with ABORTED (a newer stream of the device). */
void session_kick(msg_worker *w, const char *user, uint64_t sid);

#endif /* MSG_SESSION_H */
