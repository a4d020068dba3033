/*
 * sendpath.h: one message from SendFrame / SendRequest to the log of record.
 *
 *   validate -> membership -> id + dedupe (Redis) -> produce (Kafka) -> delivery report
 *
 * 1. Validate: client_message_id 1..64 printable ASCII, chat_id != 0, body 1..4096 bytes of
 *    valid UTF-8 -> else REJECTED INVALID_ARGUMENT.
 * 2. Membership from the cache (a miss is loaded with GetChat): no such chat -> REJECTED
 *    NOT_FOUND, not a member -> REJECTED PERMISSION_DENIED.
 * 3. A Snowflake id is taken (none without a lease -> FAILED) and one Lua script on
 *    dedupe:<len(sender)>:<sender>:<client_message_id> (a hash, TTL dedupe_ttl_s from the
 *    first attempt) either records {state=pending, id, created, chat} and answers "new", or
 *    returns what is stored:
 *      new      -> produce with the new id                          -> OK
 *      pending  -> an earlier attempt was never confirmed: produce again with ITS id and
 *                  created_at (consumers deduplicate by message_id) -> OK
 *      acked    -> nothing produced                                  -> DUPLICATE, its id
 *    (pending/acked for another chat_id -> REJECTED INVALID_ARGUMENT.)
 * 4. Produce ChatEvent{message_posted} keyed by the chat id in decimal (acks=all, idempotent).
 * 5. The delivery report answers: OK (after marking the key acked), or
 *    FAILED UNAVAILABLE with the message_id it will have if it was stored anyway. Never
 *    retried by the server.
 *
 * Limits: max_pending_sends operations per worker (beyond: REJECTED RESOURCE_EXHAUSTED);
 * Redis max_inflight; Kafka max_inflight; message.timeout.ms = send_timeout_ms.
 */
#ifndef MSG_SENDPATH_H
#define MSG_SENDPATH_H

#include <stdint.h>

#include "chat/v1/messaging.pb-c.h"
#include "worker.h"

#define SEND_REASON_MAX 256

typedef struct send_result {
    Chat__V1__SendStatus status;      /* OK, DUPLICATE, REJECTED, FAILED */
    int code;                         /* gRPC code as SendResultFrame.code */
    uint64_t message_id;              /* see SendResultFrame.message_id */
    int64_t created_at_ms;            /* OK / DUPLICATE */
    char reason[SEND_REASON_MAX + 1]; /* REJECTED / FAILED */
} send_result;

/* Result callback; |r| is valid during the call only. */
typedef void (*sendpath_cb)(const send_result *r, void *user_data);

/* Step 1 alone: returns 0 when valid, else -1 with |r| filled (REJECTED). */
int sendpath_validate(const char *cmid, uint64_t chat_id, const char *body, send_result *r);

/* Runs steps 2..5 for a validated request on |w|'s loop. Strings are copied. |cb| runs
 * exactly once, possibly before this returns (an answer from the cache). */
void sendpath_submit(msg_worker *w, const char *sender, const char *cmid, uint64_t chat_id,
                     const char *body, sendpath_cb cb, void *user_data);

/* The worker producer's reports_done hook (kafka_producer_set_reports_done, |ud| the
 * msg_worker): writes the turn's dedupe marks to Redis before any answer leaves. */
void sendpath_reports_done(kafka_producer *p, void *ud);

/* The Lua scripts (created once per process). */
int sendpath_scripts_new(msg_service *svc);
void sendpath_scripts_free(msg_service *svc);

#endif /* MSG_SENDPATH_H */
