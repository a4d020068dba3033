/*
 * kafka.h: librdkafka producer and consumer adapters that never block a libevent loop.
 *
 * librdkafka runs its network I/O on its own threads. What reaches the application --
 * delivery reports, consumed messages, rebalances, errors -- waits on an rdkafka queue. Here
 * that queue is woken through a pipe (rd_kafka_queue_io_event_enable) watched by the loop, and
 * drained with zero-timeout polls, so every callback below runs on the loop's thread and no
 * call waits for the network.
 *
 * Producer: enable.idempotence=true and acks=all always (the log of record must neither lose
 * nor duplicate an acknowledged write). Every message gets exactly one delivery callback. The
 * number of messages not yet reported is bounded by max_inflight (queue.buffering.max.messages):
 * beyond it kafka_producer_send() fails at once with KAFKA_E_QUEUE_FULL.
 *
 * Consumer: subscribe to names or regexes ("^(.*\\.)?chat\\.events$"), one message callback
 * per message, at most batch_max per loop turn; a rebalance hook that can supply starting
 * offsets (also asynchronously, e.g. after reading them from PostgreSQL); pause/resume of all
 * assigned partitions for back-pressure; offsets committed automatically, stored by the
 * application (at-least-once), or left entirely to the application.
 *
 * Threading: a producer or consumer belongs to the loop it was created on; call its functions
 * from that loop's thread only (one producer per worker loop keeps workers shared-nothing).
 *
 * Configuration passthrough: |props| are "key=value" librdkafka properties applied after the
 * adapter's own settings, so they win (except the two producer guarantees above, which are
 * re-applied last).
 */
#ifndef KAFKA_H
#define KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 success, negative failure. */
enum {
    KAFKA_E_INVALID = -1300,    /* bad argument */
    KAFKA_E_CONFIG = -1301,     /* librdkafka refused a property (logged with its reason) */
    KAFKA_E_QUEUE_FULL = -1302, /* max_inflight messages are waiting for delivery reports */
    KAFKA_E_MSG_SIZE = -1303,   /* message larger than message.max.bytes */
    KAFKA_E_FATAL = -1304,      /* the producer hit a fatal error: recreate it */
    KAFKA_E_CLOSED = -1305,     /* the handle is closing or closed */
    KAFKA_E_STATE = -1306,      /* not possible in the current state (e.g. nothing assigned) */
    KAFKA_E_KAFKA = -1307,      /* another librdkafka error (logged) */
};

/* Returns a static description of |err| (a KAFKA_E_* or -errno). */
const char *kafka_strerror(int err);

/* How consumer offsets are committed. */
typedef enum kafka_offset_mode {
    KAFKA_OFFSETS_AUTO = 0,   /* committed periodically as messages are delivered (at-most-once
                                 across crashes for the messages in flight) */
    KAFKA_OFFSETS_STORE = 1,  /* committed periodically, but only what kafka_consumer_store()
                                 marked as processed (at-least-once) */
    KAFKA_OFFSETS_MANUAL = 2, /* never committed by the adapter: kafka_consumer_commit(), or the
                                 application keeps offsets itself and sets them on assign */
} kafka_offset_mode;

/* Settings for both kinds. Fill with kafka_config_init() and override. */
typedef struct kafka_config {
    const char *brokers;       /* bootstrap.servers "host:port,...", required */
    const char *client_id;     /* client.id, default "chat" */
    const char *name;          /* label for logs, default "kafka" */
    const char *const *props;  /* NULL-terminated "key=value" librdkafka properties, or NULL */
    uint32_t max_inflight;     /* producer: unreported messages, default 100000 */
    const char *group_id;      /* consumer: group.id, required for consumers */
    kafka_offset_mode offsets; /* consumer: default KAFKA_OFFSETS_AUTO */
    uint32_t batch_max;        /* consumer: messages per loop turn, default 500 */
} kafka_config;

/* Fills |cfg| with the defaults documented above. */
void kafka_config_init(kafka_config *cfg);

/* Errors librdkafka reports outside any message (broker down, authentication, fatal). |fatal|
 * is true when the handle cannot continue and must be recreated. Runs on the loop. */
typedef void (*kafka_error_cb)(void *handle, bool fatal, rd_kafka_resp_err_t err,
                               const char *reason, void *user_data);

/* --- producer ------------------------------------------------------------------------------ */

typedef struct kafka_producer kafka_producer;

#define KAFKA_PARTITION_ANY (-1) /* partition by key (murmur2 like the Java client), or random */

/* One record header for kafka_producer_send (name and value copied). */
typedef struct kafka_header {
    const char *name;  /* header name */
    const void *value; /* bytes, may be NULL */
    size_t len;        /* bytes in |value| */
} kafka_header;

/* What a delivery report says. */
typedef struct kafka_delivery {
    rd_kafka_resp_err_t err; /* RD_KAFKA_RESP_ERR_NO_ERROR when acknowledged by all ISRs */
    const char *errstr;      /* rd_kafka_err2str(err) */
    const char *topic;       /* topic name */
    int32_t partition;       /* partition written (or -1) */
    int64_t offset;          /* offset written, or -1 */
    bool possibly_persisted; /* on failure: the broker may still have it (timeout in flight) */
} kafka_delivery;

/* Delivery callback: exactly once per accepted message, on the loop; |d| is valid during the
 * call only. */
typedef void (*kafka_delivery_cb)(kafka_producer *p, const kafka_delivery *d, void *user_data);

/* Creates a producer on |base|. Returns 0, KAFKA_E_INVALID or KAFKA_E_CONFIG. |base| must
 * outlive it. |on_error| may be NULL (errors are logged either way). */
int kafka_producer_new(kafka_producer **out, struct event_base *base, const kafka_config *cfg,
                       kafka_error_cb on_error, void *user_data);

/* Called on the loop after a turn that served one or more delivery reports, once per turn
 * (after the last report's callback): a caller that queues follow-up work in its report
 * callbacks can send it in one go. NULL removes it. */
typedef void (*kafka_reports_done_cb)(kafka_producer *p, void *user_data);
void kafka_producer_set_reports_done(kafka_producer *p, kafka_reports_done_cb cb, void *user_data);

/*
 * Sends one record to |topic| (|partition| or KAFKA_PARTITION_ANY) with |key| and |value|
 * (either may be NULL/0) and |n_headers| headers. Everything is copied. Returns 0 when queued
 * (|cb|, which may be NULL, will be called once), or KAFKA_E_QUEUE_FULL, KAFKA_E_MSG_SIZE,
 * KAFKA_E_FATAL, KAFKA_E_CLOSED, KAFKA_E_INVALID, KAFKA_E_KAFKA (then |cb| is not called).
 */
int kafka_producer_send(kafka_producer *p, const char *topic, int32_t partition, const void *key,
                        size_t key_len, const void *value, size_t value_len,
                        const kafka_header *headers, size_t n_headers, kafka_delivery_cb cb,
                        void *user_data);

/* Messages accepted and not yet reported. */
size_t kafka_producer_inflight(const kafka_producer *p);

/* Calls |done| on the loop once every accepted message has been reported, or after
 * |timeout_ms| with the number still outstanding (0 = all reported). One flush at a time:
 * KAFKA_E_STATE if one is running. */
int kafka_producer_flush(kafka_producer *p, uint32_t timeout_ms,
                         void (*done)(kafka_producer *p, size_t remaining, void *user_data),
                         void *user_data);

/* Frees |p|. Messages not yet reported are purged and get their delivery callback (error
 * RD_KAFKA_RESP_ERR__PURGE_QUEUE or __PURGE_INFLIGHT) during this call; flush first for a
 * graceful stop. Joining librdkafka's threads may take a moment: a shutdown-time call. From
 * inside a delivery callback the free happens when the callback returns. */
void kafka_producer_free(kafka_producer *p);

/* The librdkafka handle, for metadata queries or admin use on its own threads. */
rd_kafka_t *kafka_producer_handle(kafka_producer *p);

/* --- consumer ------------------------------------------------------------------------------ */

typedef struct kafka_consumer kafka_consumer;

/* A consumed record, valid during the message callback only. */
typedef struct kafka_message {
    const char *topic;             /* topic name */
    int32_t partition;             /* partition */
    int64_t offset;                /* offset of this record */
    const void *key;               /* key bytes or NULL */
    size_t key_len;                /* bytes in |key| */
    const void *value;             /* value bytes or NULL */
    size_t value_len;              /* bytes in |value| */
    int64_t timestamp_ms;          /* record timestamp, or -1 */
    const rd_kafka_message_t *raw; /* the librdkafka message (headers etc.) */
} kafka_message;

/* Looks up the last header called |name|: 0 with |*value|/|*len| set (pointing into the
 * message), or -1 when absent. */
int kafka_message_header(const kafka_message *m, const char *name, const void **value, size_t *len);

typedef enum kafka_rebalance_kind {
    KAFKA_REBALANCE_ASSIGN = 1, /* |parts| are being assigned to this consumer */
    KAFKA_REBALANCE_REVOKE = 2, /* |parts| are being taken away (orderly) */
    KAFKA_REBALANCE_LOST = 3,   /* |parts| were lost (session timeout): others may own them */
} kafka_rebalance_kind;

#define KAFKA_REBALANCE_DEFER 1 /* on_rebalance return: "I will call kafka_consumer_assign()" */

/*
 * Consumer callbacks (on the loop; any may be NULL except on_message).
 * on_message: one record.
 * on_rebalance: for ASSIGN the hook may set parts->elems[i].offset (e.g. offsets stored with
 *   the data) and return 0, and the adapter assigns |parts| when it returns; or return
 *   KAFKA_REBALANCE_DEFER, copy |parts| (rd_kafka_topic_partition_list_copy) and call
 *   kafka_consumer_assign() later, when the offsets are known; no messages flow meanwhile.
 *   For REVOKE/LOST the return value is ignored and the adapter unassigns afterwards; after
 *   the hook returns no more messages of those partitions are delivered.
 * on_error: as kafka_error_cb.
 */
typedef struct kafka_consumer_callbacks {
    void (*on_message)(kafka_consumer *c, const kafka_message *m, void *user_data);
    int (*on_rebalance)(kafka_consumer *c, kafka_rebalance_kind kind,
                        rd_kafka_topic_partition_list_t *parts, void *user_data);
    kafka_error_cb on_error;
} kafka_consumer_callbacks;

/* Creates a consumer on |base| (group member of cfg->group_id). |cbs| is copied. Returns 0,
 * KAFKA_E_INVALID or KAFKA_E_CONFIG. */
int kafka_consumer_new(kafka_consumer **out, struct event_base *base, const kafka_config *cfg,
                       const kafka_consumer_callbacks *cbs, void *user_data);

/* Subscribes to |n| topics; names starting with '^' are regular expressions (librdkafka
 * syntax). Replaces any earlier subscription. Returns 0, KAFKA_E_INVALID, KAFKA_E_KAFKA. */
int kafka_consumer_subscribe(kafka_consumer *c, const char *const *topics, size_t n);

/* Completes a deferred ASSIGN with |parts| (offsets as wanted; not taken over). Returns 0,
 * KAFKA_E_STATE when no assign is pending, KAFKA_E_KAFKA. */
int kafka_consumer_assign(kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts);

/* Stops delivering (back-pressure): pauses every assigned partition, and those assigned while
 * paused. Messages already fetched are dropped by librdkafka and fetched again on resume, from
 * the first one not delivered. Group membership is kept (the adapter keeps polling). */
void kafka_consumer_pause(kafka_consumer *c);
void kafka_consumer_resume(kafka_consumer *c);
bool kafka_consumer_paused(const kafka_consumer *c);

/* KAFKA_OFFSETS_STORE: marks |m| processed (its offset + 1 will be committed). Returns 0 or
 * KAFKA_E_KAFKA (e.g. the partition is no longer assigned). */
int kafka_consumer_store(kafka_consumer *c, const kafka_message *m);

/* Commits |offsets| (NULL = the current positions of all assigned partitions) asynchronously;
 * failures are logged and reported through on_error. Returns 0 or KAFKA_E_KAFKA. */
int kafka_consumer_commit(kafka_consumer *c, const rd_kafka_topic_partition_list_t *offsets);

/* Leaves the group in an orderly way without blocking: revocation is delivered through
 * on_rebalance as usual and |done| runs on the loop when the consumer is closed; then free it.
 * Returns 0, KAFKA_E_STATE (already closing) or KAFKA_E_KAFKA. */
int kafka_consumer_close(kafka_consumer *c, void (*done)(kafka_consumer *c, void *user_data),
                         void *user_data);

/* Frees |c| (without the group leave handshake when kafka_consumer_close() did not finish: the
 * group then rebalances after session.timeout.ms). Safe from inside its callbacks. */
void kafka_consumer_free(kafka_consumer *c);

/* The librdkafka handle (positions, committed offsets, metadata). */
rd_kafka_t *kafka_consumer_handle(kafka_consumer *c);

#ifdef __cplusplus
}
#endif

#endif /* KAFKA_H */
