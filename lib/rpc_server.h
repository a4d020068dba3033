/*
 * rpc_server.h: a gRPC server on nghttp2 + libevent.
 *
 * Threading: rpc_server_run() starts |workers| threads; each owns one
 * libevent loop and one SO_REUSEPORT listening socket, and accepts, parses and
 * dispatches its own connections (shared nothing). Every callback of a call
 * runs on the loop of the worker that accepted it, and every rpc_call_*
 * function must be called on that loop (rpc_call_base() gives it).
 *
 * Handlers are asynchronous: a handler may answer at once or later from any
 * callback on its loop. A call stays valid until it is done; a handler that
 * keeps a pointer across an asynchronous step takes a reference
 * (rpc_call_ref) and checks rpc_call_is_done() when it comes back.
 */
#ifndef RPC_SERVER_H
#define RPC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

/* Server configuration. Fill with rpc_server_config_init() and override. */
typedef struct rpc_server_config {
    const char *host;                /* listen address (default "0.0.0.0") */
    uint16_t port;                   /* listen port; 0 picks one (see rpc_server_port) */
    int workers;                     /* worker threads (default: online CPUs) */
    size_t max_recv_message;         /* bytes, default 4 MiB: larger -> RESOURCE_EXHAUSTED */
    size_t max_send_message;         /* bytes, default 4 MiB: larger -> handler error */
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS, default 100 */
    uint32_t max_header_list;        /* SETTINGS_MAX_HEADER_LIST_SIZE bytes, default 16 KiB */
    uint32_t initial_window;         /* per-stream receive window bytes, default 1 MiB */
    size_t stream_send_buffer;       /* bytes queued per stream before WOULDBLOCK, 1 MiB */
    size_t conn_send_buffer;         /* bytes queued per connection before WOULDBLOCK, 4 MiB;
                                        a call with an empty queue may always queue one message */
    uint32_t idle_timeout_ms;        /* close a connection with no streams after, 300000 */
    uint32_t keepalive_ms;           /* PING a quiet connection after, 60000 (0 = off) */
    uint32_t keepalive_timeout_ms;   /* close if the PING is not answered within, 20000 */
    uint32_t drain_timeout_ms;       /* graceful shutdown: in-flight calls get this long, 10000 */
    uint32_t max_connections;        /* per worker; further accepts are closed, 100000 */
    uint32_t stream_reset_burst;     /* nghttp2 stream reset rate limit: burst, 1000 */
    uint32_t stream_reset_rate;      /* ... and refill per second, 33 */
    size_t max_continuations;        /* nghttp2 max CONTINUATION frames per header block, 8 */
    size_t max_settings;             /* nghttp2 max SETTINGS entries per frame, 32 */
    size_t max_outbound_ack;         /* nghttp2 max queued PING/SETTINGS ACKs, 1000 */
    bool install_signal_handlers;    /* rpc_server_run handles SIGTERM/SIGINT, default true */
    bool enable_reflection;          /* serve grpc.reflection.v1 and v1alpha, default true */
    bool enable_health;              /* serve grpc.health.v1.Health, default true */
    const char *name;                /* service name for logs, default "rpc" */
} rpc_server_config;

/* Fills |cfg| with the defaults documented above. */
void rpc_server_config_init(rpc_server_config *cfg);

/* Creates a server. |cfg| is copied (strings must outlive the server). Returns 0 or an
 * RPC_ERR_* / -errno. The socket is not bound until rpc_server_start(). */
int rpc_server_new(rpc_server **out, const rpc_server_config *cfg);

/* Frees a stopped server. */
void rpc_server_free(rpc_server *srv);

/* Untyped handler for one method. The generated *_rpc_register() functions fill this from the
 * typed handler table; hand-written code rarely needs it.
 *
 * Unary and server-streaming methods get on_request once, with the decoded request; it stays
 * valid until the call is done. Client-streaming and bidi methods get on_start when the
 * headers arrive, on_message for every request (|msg| is valid only during the callback:
 * copy what you keep) and on_half_close when the client has finished sending. */
typedef struct rpc_handler {
    void (*on_request)(rpc_call *call, const ProtobufCMessage *req, void *user_data);
    void (*on_start)(rpc_call *call, void *user_data);
    void (*on_message)(rpc_call *call, const ProtobufCMessage *msg, void *user_data);
    void (*on_half_close)(rpc_call *call, void *user_data);
} rpc_handler;

/* Registers |h| for |m|. |m|, |h| and |user_data| must outlive the server. Call before
 * rpc_server_start(). Returns 0, RPC_ERR_INVALID if the path is already registered. */
int rpc_server_add_method(rpc_server *srv, const rpc_method_desc *m, const rpc_handler *h,
                          void *user_data);

/* Marks |svc| as served (listed by reflection, health entry SERVING) and adds |file| and its
 * imports to the reflection index. Generated register functions call this. */
int rpc_server_add_service(rpc_server *srv, const rpc_service_desc *svc, const rpc_file_desc *file);

/* Adds a file (and its imports) to the reflection index without a service. */
int rpc_server_add_file(rpc_server *srv, const rpc_file_desc *file);

/* Per-worker hooks: on_worker_start runs on each worker thread, on its loop, before it accepts;
 * its return value becomes that worker's data (rpc_call_worker_data). on_worker_stop runs on
 * the worker thread after the last connection is gone. Either may be NULL. */
typedef void *(*rpc_worker_start_cb)(rpc_server *srv, int worker, struct event_base *base,
                                     void *user_data);
typedef void (*rpc_worker_stop_cb)(rpc_server *srv, int worker, void *worker_data, void *user_data);
void rpc_server_set_worker_hooks(rpc_server *srv, rpc_worker_start_cb start,
                                 rpc_worker_stop_cb stop, void *user_data);

/* Called on each worker thread, on its loop, when graceful shutdown begins (health is already
 * NOT_SERVING, GOAWAY about to go out): the place to end long-lived streams with UNAVAILABLE so
 * clients move elsewhere at once instead of at the drain deadline. |worker_data| is what
 * on_worker_start returned. */
typedef void (*rpc_worker_drain_cb)(rpc_server *srv, int worker, void *worker_data,
                                    void *user_data);
void rpc_server_set_drain_hook(rpc_server *srv, rpc_worker_drain_cb drain, void *user_data);

/* Called on the main thread from rpc_server_run() once the main loop exists and the workers
 * are serving, e.g. to start a metrics HTTP server on |base|. */
typedef void (*rpc_main_start_cb)(rpc_server *srv, struct event_base *base, void *user_data);
void rpc_server_set_main_hook(rpc_server *srv, rpc_main_start_cb start, void *user_data);

struct metrics_registry;
/* Exports grpc_server_handled_total{grpc_service,grpc_method,grpc_code},
 * grpc_server_handling_seconds{grpc_service,grpc_method} and the gauges
 * grpc_server_connections / grpc_server_calls_in_flight into |r| (which must outlive the
 * server). Call before rpc_server_start(). */
void rpc_server_set_metrics(rpc_server *srv, struct metrics_registry *r);

/* Binds and listens (one socket per worker with SO_REUSEPORT) and starts the worker threads.
 * Returns 0 or -errno. */
int rpc_server_start(rpc_server *srv);

/* The bound port (useful with port 0), valid after rpc_server_start(). */
uint16_t rpc_server_port(const rpc_server *srv);

/* Starts (if not yet started) and blocks until shutdown completes: on SIGTERM/SIGINT (when
 * install_signal_handlers) or rpc_server_shutdown(), health turns NOT_SERVING, every connection
 * gets GOAWAY, in-flight calls may finish until drain_timeout_ms, the rest are cancelled and
 * the workers exit. Returns 0 after a clean drain. */
int rpc_server_run(rpc_server *srv);

/* Begins graceful shutdown. Safe from any thread and from a signal-free context. */
void rpc_server_shutdown(rpc_server *srv);

/* The main thread's loop (valid during rpc_server_run): for timers and other servers (metrics)
 * that belong to the process rather than to a worker. */
struct event_base *rpc_server_main_base(rpc_server *srv);

/* Health: sets the status of |service| ("" is the whole server). Statuses are the
 * grpc.health.v1 values: 1 SERVING, 2 NOT_SERVING. Safe from any thread; Watch streams on every
 * worker are told. */
void rpc_server_set_health(rpc_server *srv, const char *service, int status);

/* --- calls ---------------------------------------------------------------------------------- */

/* Why a call ended without the handler finishing it. */
typedef enum rpc_cancel_reason {
    RPC_CANCEL_CLIENT = 1,   /* RST_STREAM from the client */
    RPC_CANCEL_DEADLINE = 2, /* grpc-timeout expired; DEADLINE_EXCEEDED was sent */
    RPC_CANCEL_CONN = 3,     /* the connection closed */
    RPC_CANCEL_SHUTDOWN = 4, /* the server stopped before the handler finished */
} rpc_cancel_reason;

/* Optional per-call callbacks a handler installs (rpc_call_set_callbacks).
 * on_cancel: the call ended before the handler finished it; after it returns the handler must
 *   not send or finish (references stay valid until released).
 * on_writable: the stream's send buffer drained below half after an RPC_ERR_WOULDBLOCK. */
typedef struct rpc_call_callbacks {
    void (*on_cancel)(rpc_call *call, rpc_cancel_reason reason, void *call_data);
    void (*on_writable)(rpc_call *call, void *call_data);
} rpc_call_callbacks;

/* Installs |cb| (copied) with |call_data| for this call. */
void rpc_call_set_callbacks(rpc_call *call, const rpc_call_callbacks *cb, void *call_data);

/* Sends one response message. Returns 0 when queued; RPC_ERR_WOULDBLOCK when the stream's
 * send buffer is over stream_send_buffer (nothing queued: wait for on_writable);
 * RPC_ERR_CLOSED after finish/cancel; RPC_ERR_TOO_LARGE over max_send_message. The message is
 * serialized before return; the caller keeps ownership of |msg|. */
int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg);

/* Flags for rpc_call_send_flags(). */
enum {
    RPC_SEND_NO_COMPRESS = 1, /* send this message uncompressed even if the call compresses */
};

/* rpc_call_send() with |flags| (RPC_SEND_*). */
int rpc_call_send_flags(rpc_call *call, const ProtobufCMessage *msg, unsigned flags);

/* True when a send would be accepted now. */
bool rpc_call_writable(const rpc_call *call);

/* Ends the call with |code| and |message| (may be NULL) plus any trailing metadata added. An
 * error with nothing sent yet goes out as Trailers-Only. Returns 0 or RPC_ERR_CLOSED. */
int rpc_call_finish(rpc_call *call, int code, const char *message);

/* Printf-style finish, for clear error messages. */
int rpc_call_finishf(rpc_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Unary convenience: send |msg| and finish OK. */
int rpc_call_reply(rpc_call *call, const ProtobufCMessage *msg);

/* Request metadata (lower-case keys; -bin values decoded). Valid for the life of the call. */
const rpc_mdlist *rpc_call_metadata(const rpc_call *call);
/* First value of |key| as a NUL-terminated string, or NULL. */
const char *rpc_call_metadata_get(const rpc_call *call, const char *key);

/* Adds response metadata: initial (before the first send/finish) or trailing. Returns 0,
 * RPC_ERR_INVALID for a bad key, RPC_ERR_CLOSED when it is too late, RPC_ERR_TOO_LARGE past 32
 * entries per list. */
int rpc_call_add_initial_metadata(rpc_call *call, const char *key, const void *v, size_t len);
int rpc_call_add_trailing_metadata(rpc_call *call, const char *key, const void *v, size_t len);

/* Asks for responses compressed with |encoding| ("gzip" or "identity"); ignored when the client
 * did not advertise it in grpc-accept-encoding. Returns 0 or RPC_ERR_UNSUPPORTED. */
int rpc_call_set_compression(rpc_call *call, const char *encoding);

/* True when the last request message received had the compressed flag set. */
bool rpc_call_request_compressed(const rpc_call *call);

/* Absolute deadline in CLOCK_MONOTONIC ms, or 0 when the client set none. */
int64_t rpc_call_deadline(const rpc_call *call);

/* The method being called. */
const rpc_method_desc *rpc_call_method(const rpc_call *call);
/* The loop the call lives on, the worker's data, the server. */
struct event_base *rpc_call_base(const rpc_call *call);
void *rpc_call_worker_data(const rpc_call *call);
rpc_server *rpc_call_server(const rpc_call *call);
/* Peer address "ip:port". */
const char *rpc_call_peer(const rpc_call *call);

/* True once finished or cancelled. */
bool rpc_call_is_done(const rpc_call *call);

/* References keep the rpc_call memory valid (not the stream) across asynchronous work. */
void rpc_call_ref(rpc_call *call);
void rpc_call_unref(rpc_call *call);

/* A per-call pointer for the handler, freed with |free_fn| (may be NULL) when the call is
 * freed. */
void rpc_call_set_data(rpc_call *call, void *data, void (*free_fn)(void *));
void *rpc_call_data(const rpc_call *call);

/* Monotonic clock in ms, shared by the runtime and services. */
int64_t rpc_now_ms(void);

#ifdef __cplusplus
}
#endif

#endif /* RPC_SERVER_H */
