/*
 * rpc_server_int.h: internals shared by rpc_server.c (lifecycle, workers,
 * registry), rpc_conn.c (HTTP/2 connections and calls), rpc_health.c and
 * rpc_reflection.c. Not installed; not for services.
 */
#ifndef RPC_SERVER_INT_H
#define RPC_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <nghttp2/nghttp2.h>

#include "rpc_server.h"
#include "rpc_wire.h"

typedef struct rpc__worker rpc__worker;
typedef struct rpc__conn rpc__conn;

/* A registered method. */
/* Per-method metrics, created lazily from any worker (series lookups are idempotent). */
typedef struct rpc__method_stats {
    _Atomic(struct metrics_counter *) by_code[17]; /* grpc_server_handled_total per code */
    _Atomic(struct metrics_histogram *) latency;   /* grpc_server_handling_seconds */
    char service[128];                             /* label values */
    char method[128];
} rpc__method_stats;

typedef struct rpc__method {
    const rpc_method_desc *desc; /* static description */
    const rpc_handler *handler;  /* callbacks */
    void *user_data;             /* passed to every callback */
    rpc__method_stats *stats;    /* owned by the server; stable across table growth */
} rpc__method;

/* Records a finished call of |m| with |code| after |elapsed_ms| (no-op without metrics). */
void rpc__metrics_record(rpc_server *srv, const rpc__method *m, int code, int64_t elapsed_ms);

/* One health entry. */
typedef struct rpc__health_entry {
    char *service; /* "" = whole server (owned) */
    int status;    /* grpc.health.v1 ServingStatus */
} rpc__health_entry;

/* An intrusive doubly linked list node. */
typedef struct rpc__link {
    struct rpc__link *prev, *next;
} rpc__link;

struct rpc__worker {
    rpc_server *srv;           /* owner */
    int index;                 /* 0..workers-1 */
    pthread_t thread;          /* the worker thread */
    struct event_base *base;   /* the worker's loop */
    int listen_fd;             /* SO_REUSEPORT listener, -1 once closed */
    struct event *accept_ev;   /* readable listener */
    struct event *notify_ev;   /* cross-thread wake-up (health, shutdown) */
    rpc__link conns;           /* live connections */
    size_t n_conns;            /* entries in |conns| */
    rpc__link health_watchers; /* calls of Health/Watch on this worker */
    void *worker_data;         /* from on_worker_start */
    uint8_t rbuf[16384];       /* shared read buffer: connections own none */
    atomic_int pending_notify; /* bit set of RPC__NOTIFY_* */
    uint8_t *wscratch;         /* shared write buffer: connections keep only unsent bytes */
    size_t wscap;              /* bytes allocated for |wscratch| */
    nghttp2_option *ng_option; /* limits, shared by this worker's sessions */
    nghttp2_session_callbacks *ng_callbacks; /* shared by this worker's sessions */
    bool draining;                           /* GOAWAY sent to everyone, no accepts */
    bool stopping;                           /* drain deadline passed: cancel everything */
};

enum {
    RPC__NOTIFY_HEALTH = 1,
    RPC__NOTIFY_DRAIN = 2,
    RPC__NOTIFY_STOP = 4,
};

struct rpc_server {
    rpc_server_config cfg;             /* copy of the configuration */
    rpc__method *methods;              /* open-addressing hash table by path */
    size_t methods_cap;                /* power of two */
    size_t n_methods;                  /* entries used */
    const rpc_service_desc **services; /* served services, for reflection */
    size_t n_services;
    const rpc_file_desc **files; /* reflection index, deduplicated, with imports */
    size_t n_files;
    pthread_mutex_t health_mu; /* guards |health| */
    rpc__health_entry *health; /* health table */
    size_t n_health;
    rpc__worker *workers; /* cfg.workers entries */
    int n_workers;
    uint16_t port;                    /* bound port */
    struct event_base *main_base;     /* rpc_server_run's loop */
    struct event *sig_term, *sig_int; /* signal events on main_base */
    struct event *main_notify;        /* shutdown request from another thread */
    struct event *drain_timer;        /* drain deadline */
    atomic_int live_workers;          /* workers still running */
    atomic_bool shutdown_requested;   /* rpc_server_shutdown called */
    bool started;
    bool draining;
    rpc_worker_start_cb worker_start; /* hooks */
    rpc_worker_stop_cb worker_stop;
    void *worker_hook_data;
    struct metrics_registry *metrics; /* optional, rpc_server_set_metrics */
    atomic_long n_conns;              /* open connections, all workers */
    atomic_long n_calls;              /* calls in flight, all workers */
    rpc_worker_drain_cb worker_drain; /* drain hook */
    void *drain_hook_data;
    rpc_main_start_cb main_start; /* main-loop hook */
    void *main_hook_data;
};

/* Registry lookup by :path (NULL if absent). */
const rpc__method *rpc__server_find_method(const rpc_server *srv, const char *path, size_t len);

/* Accepts and serves |fd| on |w|. Takes ownership of |fd|. */
void rpc__conn_accept(rpc__worker *w, int fd, const struct sockaddr *sa, socklen_t salen);
/* Sends GOAWAY on every connection of |w| (graceful). */
void rpc__conns_drain(rpc__worker *w);
/* Cancels every call and closes every connection of |w|. */
void rpc__conns_close_all(rpc__worker *w);
/* Frees the worker's nghttp2 option and callbacks (worker exit). */
void rpc__conns_cleanup(rpc__worker *w);
/* rpc_server.c: a connection of |w| is gone (may end a draining worker). */
void rpc__worker_conn_closed(rpc__worker *w);

/* Health: status of |service| (-1 when unknown). Thread-safe. */
int rpc__health_get(rpc_server *srv, const char *service);
/* Registers grpc.health.v1.Health on |srv|. */
int rpc__health_register(rpc_server *srv);
/* On the worker loop: tell this worker's Watch streams about changes. */
void rpc__health_notify_worker(rpc__worker *w);
/* On the worker loop: end this worker's Watch streams (shutdown). */
void rpc__health_end_watchers(rpc__worker *w);
/* Registers grpc.reflection.v1 and v1alpha on |srv|. */
int rpc__reflection_register(rpc_server *srv);

/* Links. */
void rpc__link_init(rpc__link *l);
void rpc__link_insert(rpc__link *head, rpc__link *l);
void rpc__link_remove(rpc__link *l);
bool rpc__link_empty(const rpc__link *head);

#define RPC__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* The call's link in its worker's Health/Watch list (rpc_health.c uses it). */
rpc__link *rpc__call_watch_link(rpc_call *call);
rpc_call *rpc__call_from_watch_link(rpc__link *l);
rpc__worker *rpc__call_worker(const rpc_call *call);

#endif /* RPC_SERVER_INT_H */
