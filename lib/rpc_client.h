/*
 * rpc_client.h: a gRPC client channel on nghttp2 + libevent.
 *
 * A channel is one HTTP/2 (h2c, prior knowledge) connection to host:port,
 * owned by one libevent loop; every function here must be called on that
 * loop and every callback runs on it. The channel connects lazily on the first
 * call, reconnects with exponential backoff (1 s initial, x1.6, +-20% jitter,
 * 120 s max, as gRPC's connection-backoff spec) after a failure, and fails
 * calls started while it cannot connect with UNAVAILABLE.
 *
 * The generated stubs wrap rpc_ccall_start() into typed calls.
 */
#ifndef RPC_CLIENT_H
#define RPC_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rpc_channel rpc_channel;
typedef struct rpc_ccall rpc_ccall;

typedef struct rpc_channel_config {
    size_t max_recv_message;     /* bytes, default 4 MiB: larger -> RESOURCE_EXHAUSTED */
    uint32_t connect_timeout_ms; /* default 20000 */
    uint32_t backoff_initial_ms; /* default 1000 */
    uint32_t backoff_max_ms;     /* default 120000 */
    uint32_t keepalive_ms;       /* PING after this much quiet, default 0 (off) */
    const char *user_agent;      /* default "chat-rpc-c/<version>" */
} rpc_channel_config;

void rpc_channel_config_init(rpc_channel_config *cfg);

/* Creates a channel to |target| ("host:port") on |base|. |cfg| may be NULL for defaults.
 * Returns 0 or RPC_ERR_INVALID for a bad target. */
int rpc_channel_new(rpc_channel **out, struct event_base *base, const char *target,
                    const rpc_channel_config *cfg);

/* Cancels every call in flight (each gets on_close with CANCELLED) and frees the channel.
 * Safe to call from a call callback: the free is deferred until it returns. */
void rpc_channel_free(rpc_channel *ch);

/* True while an HTTP/2 connection is established. */
bool rpc_channel_connected(const rpc_channel *ch);

/* Per-call options. Zero-initialise; all fields optional. */
typedef struct rpc_call_opts {
    int64_t timeout_ms;         /* sent as grpc-timeout, enforced locally too; 0 = none */
    const rpc_mdlist *metadata; /* request metadata (copied) */
    const char *compression;    /* "gzip" compresses requests; NULL/"identity" does not */
    bool wait_for_ready;        /* queue while connecting instead of failing fast */
} rpc_call_opts;

/* Callbacks of one client call.
 * on_headers: initial metadata arrived (may be skipped for Trailers-Only).
 * on_message: one response; |msg| is owned by the runtime and valid only during the callback.
 * on_close:   the call ended (always exactly once, also for cancel/deadline/connect failure);
 *             the rpc_ccall is freed after it returns. */
typedef struct rpc_ccall_callbacks {
    void (*on_headers)(rpc_ccall *call, const rpc_mdlist *md, void *user_data);
    void (*on_message)(rpc_ccall *call, const ProtobufCMessage *msg, void *user_data);
    void (*on_close)(rpc_ccall *call, const rpc_status *status, void *user_data);
} rpc_ccall_callbacks;

/* Starts a call of |m|. |cb| is copied. On success *out is the call (valid until on_close
 * returns). Errors: RPC_ERR_INVALID. A call that cannot proceed (not connected and not
 * wait_for_ready) still succeeds here and reports UNAVAILABLE through on_close. */
int rpc_ccall_start(rpc_ccall **out, rpc_channel *ch, const rpc_method_desc *m,
                    const rpc_call_opts *opts, const rpc_ccall_callbacks *cb, void *user_data);

/* Queues one request message (serialized before return; caller keeps |msg|). Returns 0,
 * RPC_ERR_CLOSED after close_send/close, RPC_ERR_TOO_LARGE. Messages are buffered without
 * limit up to the HTTP/2 flow-control window; check rpc_ccall_pending_bytes() to pace. */
int rpc_ccall_send(rpc_ccall *call, const ProtobufCMessage *msg);

/* Sends a raw, already-serialized message (for tests of malformed input). It is compressed like
 * rpc_ccall_send() messages when the call compresses. */
int rpc_ccall_send_raw(rpc_ccall *call, const uint8_t *data, size_t len);

/* Like rpc_ccall_send(), but |compress| decides for this one message: false sends it with the
 * compressed flag clear even on a call started with compression "gzip" (gRPC allows mixing per
 * message); true on a call without compression is RPC_ERR_INVALID (no grpc-encoding was sent). */
int rpc_ccall_send_ex(rpc_ccall *call, const ProtobufCMessage *msg, bool compress);

/* Half-closes: no more requests (END_STREAM). */
int rpc_ccall_close_send(rpc_ccall *call);

/* Cancels the call (RST_STREAM CANCEL); on_close follows with CANCELLED. */
void rpc_ccall_cancel(rpc_ccall *call);

/* Bytes queued and not yet written to the socket for this call. */
size_t rpc_ccall_pending_bytes(const rpc_ccall *call);

/* Response header value (initial metadata or trailers) of |key|, or NULL; for tests. */
const char *rpc_ccall_response_header(const rpc_ccall *call, const char *key);

/* Only inside on_message: true when that message arrived with the compressed flag set. */
bool rpc_ccall_message_compressed(const rpc_ccall *call);

/* Blocking helper for tools and tests, NOT for services: runs |base| until |*done| becomes
 * true or |timeout_ms| passes. Returns 0, or -ETIMEDOUT. */
int rpc_run_until(struct event_base *base, const bool *done, int64_t timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* RPC_CLIENT_H */
