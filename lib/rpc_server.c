/* rpc_server.c: server lifecycle, worker threads, method registry, health table. */
#include "rpc_server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/thread.h>

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

int64_t rpc_now_ms(void)
{
    return clock_mono_ms();
}

void rpc__link_init(rpc__link *l)
{
    l->prev = l->next = l;
}

void rpc__link_insert(rpc__link *head, rpc__link *l)
{
    l->next = head->next;
    l->prev = head;
    head->next->prev = l;
    head->next = l;
}

void rpc__link_remove(rpc__link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

bool rpc__link_empty(const rpc__link *head)
{
    return head->next == head;
}

void rpc_server_config_init(rpc_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "0.0.0.0";
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = n > 0 ? (int)n : 1;
    cfg->max_recv_message = 4u << 20;
    cfg->max_send_message = 4u << 20;
    cfg->max_concurrent_streams = 100;
    cfg->max_header_list = 16384;
    cfg->initial_window = 1u << 20;
    cfg->stream_send_buffer = 1u << 20;
    cfg->conn_send_buffer = 4u << 20;
    cfg->idle_timeout_ms = 300000;
    cfg->keepalive_ms = 60000;
    cfg->keepalive_timeout_ms = 20000;
    cfg->drain_timeout_ms = 10000;
    cfg->max_connections = 100000;
    cfg->stream_reset_burst = 1000;
    cfg->stream_reset_rate = 33;
    cfg->max_continuations = 8;
    cfg->max_settings = 32;
    cfg->max_outbound_ack = 1000;
    cfg->install_signal_handlers = true;
    cfg->enable_reflection = true;
    cfg->enable_health = true;
    cfg->name = "rpc";
}

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void init_evthread(void)
{
    /* Health changes and shutdown wake worker loops from other threads. */
    evthread_use_pthreads();
}

int rpc_server_new(rpc_server **out, const rpc_server_config *cfg)
{
    if (cfg->workers < 1 || cfg->workers > 256 || cfg->max_recv_message == 0)
        return RPC_ERR_INVALID;
    pthread_once(&evthread_once, init_evthread);
    rpc_server *srv = mem_calloc(1, sizeof(*srv));
    srv->cfg = *cfg;
    srv->methods_cap = 64;
    srv->methods = mem_calloc(srv->methods_cap, sizeof(*srv->methods));
    pthread_mutex_init(&srv->health_mu, NULL);
    srv->n_workers = cfg->workers;
    rpc_server_set_health(srv, "", 1);
    int rv = 0;
    if (cfg->enable_health && (rv = rpc__health_register(srv)) < 0)
        goto fail;
    if (cfg->enable_reflection && (rv = rpc__reflection_register(srv)) < 0)
        goto fail;
    *out = srv;
    return 0;
fail:
    rpc_server_free(srv);
    return rv;
}

void rpc_server_free(rpc_server *srv)
{
    if (srv == NULL)
        return;
    for (size_t i = 0; i < srv->methods_cap; i++)
        free(srv->methods[i].stats);
    free(srv->methods);
    free(srv->services);
    free(srv->files);
    for (size_t i = 0; i < srv->n_health; i++)
        free(srv->health[i].service);
    free(srv->health);
    pthread_mutex_destroy(&srv->health_mu);
    free(srv->workers);
    free(srv);
}

static uint64_t hash_path(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void methods_put(rpc__method *tab, size_t cap, const rpc__method *m)
{
    const char *p = m->desc->path;
    size_t i = hash_path(p, strlen(p)) & (cap - 1);
    while (tab[i].desc != NULL)
        i = (i + 1) & (cap - 1);
    tab[i] = *m;
}

const rpc__method *rpc__server_find_method(const rpc_server *srv, const char *path, size_t len)
{
    size_t cap = srv->methods_cap;
    size_t i = hash_path(path, len) & (cap - 1);
    while (srv->methods[i].desc != NULL) {
        const char *p = srv->methods[i].desc->path;
        if (strncmp(p, path, len) == 0 && p[len] == '\0')
            return &srv->methods[i];
        i = (i + 1) & (cap - 1);
    }
    return NULL;
}

int rpc_server_add_method(rpc_server *srv, const rpc_method_desc *m, const rpc_handler *h,
                          void *user_data)
{
    if (srv->started || m == NULL || h == NULL || m->path == NULL || m->path[0] != '/')
        return RPC_ERR_INVALID;
    bool streaming_in = m->kind == RPC_CLIENT_STREAMING || m->kind == RPC_BIDI_STREAMING;
    if (streaming_in ? h->on_message == NULL : h->on_request == NULL)
        return RPC_ERR_INVALID;
    if (rpc__server_find_method(srv, m->path, strlen(m->path)) != NULL)
        return RPC_ERR_INVALID;
    if ((srv->n_methods + 1) * 2 > srv->methods_cap) {
        size_t ncap = srv->methods_cap * 2;
        rpc__method *nt = mem_calloc(ncap, sizeof(*nt));
        for (size_t i = 0; i < srv->methods_cap; i++)
            if (srv->methods[i].desc != NULL)
                methods_put(nt, ncap, &srv->methods[i]);
        free(srv->methods);
        srv->methods = nt;
        srv->methods_cap = ncap;
    }
    rpc__method e = {.desc = m, .handler = h, .user_data = user_data};
    e.stats = mem_calloc(1, sizeof(*e.stats));
    /* "/pkg.Svc/Method" -> service "pkg.Svc", method "Method" for the metric labels. */
    const char *slash = strrchr(m->path, '/');
    snprintf(e.stats->service, sizeof(e.stats->service), "%.*s", (int)(slash - m->path - 1),
             m->path + 1);
    snprintf(e.stats->method, sizeof(e.stats->method), "%s", slash + 1);
    methods_put(srv->methods, srv->methods_cap, &e);
    srv->n_methods++;
    return 0;
}

int rpc_server_add_file(rpc_server *srv, const rpc_file_desc *file)
{
    if (file == NULL)
        return RPC_ERR_INVALID;
    for (size_t i = 0; i < srv->n_files; i++)
        if (srv->files[i] == file || strcmp(srv->files[i]->name, file->name) == 0)
            return 0;
    srv->files = mem_realloc(srv->files, (srv->n_files + 1) * sizeof(*srv->files));
    srv->files[srv->n_files++] = file;
    for (size_t i = 0; i < file->n_deps; i++) {
        int rv = rpc_server_add_file(srv, file->deps[i]);
        if (rv < 0)
            return rv;
    }
    return 0;
}

int rpc_server_add_service(rpc_server *srv, const rpc_service_desc *svc, const rpc_file_desc *file)
{
    if (srv->started || svc == NULL)
        return RPC_ERR_INVALID;
    for (size_t i = 0; i < srv->n_services; i++)
        if (strcmp(srv->services[i]->name, svc->name) == 0)
            return file ? rpc_server_add_file(srv, file) : 0;
    srv->services = mem_realloc(srv->services, (srv->n_services + 1) * sizeof(*srv->services));
    srv->services[srv->n_services++] = svc;
    if (rpc__health_get(srv, svc->name) < 0)
        rpc_server_set_health(srv, svc->name, 1);
    return file ? rpc_server_add_file(srv, file) : 0;
}

void rpc_server_set_worker_hooks(rpc_server *srv, rpc_worker_start_cb start,
                                 rpc_worker_stop_cb stop, void *user_data)
{
    srv->worker_start = start;
    srv->worker_stop = stop;
    srv->worker_hook_data = user_data;
}

static void collect_gauges(metrics_registry *r, void *user_data)
{
    rpc_server *srv = user_data;
    metrics_gauge *g;
    if (metrics_gauge_get(r, "grpc_server_connections", "Open HTTP/2 connections.", NULL, &g) == 0)
        metrics_gauge_set(g, (double)atomic_load(&srv->n_conns));
    if (metrics_gauge_get(r, "grpc_server_calls_in_flight", "Calls not yet finished.", NULL, &g) ==
        0)
        metrics_gauge_set(g, (double)atomic_load(&srv->n_calls));
}

void rpc_server_set_metrics(rpc_server *srv, metrics_registry *r)
{
    srv->metrics = r;
    if (r)
        metrics_registry_add_collector(r, collect_gauges, srv);
}

void rpc__metrics_record(rpc_server *srv, const rpc__method *m, int code, int64_t elapsed_ms)
{
    if (srv->metrics == NULL || m == NULL || code < 0 || code > 16)
        return;
    rpc__method_stats *st = m->stats;
    metrics_counter *c = atomic_load(&st->by_code[code]);
    if (c == NULL) {
        const char *labels[] = {"grpc_service", st->service,           "grpc_method", st->method,
                                "grpc_code",    rpc_status_name(code), NULL};
        if (metrics_counter_get(srv->metrics, "grpc_server_handled_total",
                                "Calls completed on the server, by status code.", labels, &c) < 0)
            return;
        atomic_store(&st->by_code[code], c);
    }
    metrics_counter_inc(c);
    metrics_histogram *h = atomic_load(&st->latency);
    if (h == NULL) {
        const char *labels[] = {"grpc_service", st->service, "grpc_method", st->method, NULL};
        if (metrics_histogram_get(srv->metrics, "grpc_server_handling_seconds",
                                  "Time from request headers to the end of the call.", labels,
                                  metrics_latency_buckets, metrics_latency_buckets_n, &h) < 0)
            return;
        atomic_store(&st->latency, h);
    }
    metrics_histogram_observe(h, (double)elapsed_ms / 1000.0);
}

void rpc_server_set_drain_hook(rpc_server *srv, rpc_worker_drain_cb drain, void *user_data)
{
    srv->worker_drain = drain;
    srv->drain_hook_data = user_data;
}

void rpc_server_set_main_hook(rpc_server *srv, rpc_main_start_cb start, void *user_data)
{
    srv->main_start = start;
    srv->main_hook_data = user_data;
}

int rpc__health_get(rpc_server *srv, const char *service)
{
    int st = -1;
    pthread_mutex_lock(&srv->health_mu);
    for (size_t i = 0; i < srv->n_health; i++)
        if (strcmp(srv->health[i].service, service) == 0) {
            st = srv->health[i].status;
            break;
        }
    pthread_mutex_unlock(&srv->health_mu);
    return st;
}

static void notify_workers(rpc_server *srv, int what)
{
    if (srv->workers == NULL)
        return;
    for (int i = 0; i < srv->n_workers; i++) {
        rpc__worker *w = &srv->workers[i];
        if (w->notify_ev == NULL)
            continue;
        atomic_fetch_or(&w->pending_notify, what);
        event_active(w->notify_ev, EV_READ, 0);
    }
}

void rpc_server_set_health(rpc_server *srv, const char *service, int status)
{
    bool changed = false, found = false;
    pthread_mutex_lock(&srv->health_mu);
    for (size_t i = 0; i < srv->n_health; i++)
        if (strcmp(srv->health[i].service, service) == 0) {
            changed = srv->health[i].status != status;
            srv->health[i].status = status;
            found = true;
            break;
        }
    if (!found) {
        srv->health = mem_realloc(srv->health, (srv->n_health + 1) * sizeof(*srv->health));
        srv->health[srv->n_health].service = mem_strdup(service);
        srv->health[srv->n_health].status = status;
        srv->n_health++;
        changed = true;
    }
    pthread_mutex_unlock(&srv->health_mu);
    if (changed && srv->started)
        notify_workers(srv, RPC__NOTIFY_HEALTH);
}

static void set_all_health(rpc_server *srv, int status)
{
    pthread_mutex_lock(&srv->health_mu);
    for (size_t i = 0; i < srv->n_health; i++)
        srv->health[i].status = status;
    pthread_mutex_unlock(&srv->health_mu);
    notify_workers(srv, RPC__NOTIFY_HEALTH);
}

/* A listening socket with SO_REUSEPORT on |port| (0: any); |first|: the process's first. */
static int listen_socket(const rpc_server *srv, uint16_t port, bool first, uint16_t *bound)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, srv->cfg.host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sl = sizeof(*sin);
    } else if (inet_pton(AF_INET6, srv->cfg.host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sl = sizeof(*sin6);
    } else {
        return -EINVAL;
    }
    int one = 1;
    if (port != 0 && first) {
        /* SO_REUSEPORT would let this process share a port another process (same uid) is
         * listening on, each getting part of the connections. Before the first socket, a
         * bind without it tells whether anyone holds the port. */
        int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return -errno;
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        int e = bind(probe, (struct sockaddr *)&ss, sl) < 0 ? errno : 0;
        close(probe);
        if (e != 0)
            return -e;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    getsockname(fd, (struct sockaddr *)&got, &gl);
    *bound = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                            : ((struct sockaddr_in6 *)&got)->sin6_port);
    return fd;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    rpc__worker *w = arg;
    /* Bounded batch per wake-up so one busy listener cannot starve the loop. */
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_warn("accept: %s (connection limit of the process reached)", strerror(errno));
            return;
        }
        if (w->draining || w->n_conns >= w->srv->cfg.max_connections) {
            close(cfd);
            continue;
        }
        rpc__conn_accept(w, cfd, (struct sockaddr *)&ss, sl);
    }
}

static void worker_maybe_exit(rpc__worker *w)
{
    if ((w->draining || w->stopping) && w->n_conns == 0)
        event_base_loopexit(w->base, NULL);
}

static void on_worker_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc__worker *w = arg;
    int bits = atomic_exchange(&w->pending_notify, 0);
    if (bits & RPC__NOTIFY_HEALTH)
        rpc__health_notify_worker(w);
    if ((bits & RPC__NOTIFY_DRAIN) && !w->draining) {
        w->draining = true;
        event_del(w->accept_ev);
        /* Closing the listener makes new connections fail fast instead of waiting in a
         * backlog nobody accepts from. */
        if (w->listen_fd >= 0) {
            close(w->listen_fd);
            w->listen_fd = -1;
        }
        rpc__health_end_watchers(w);
        if (w->srv->worker_drain)
            w->srv->worker_drain(w->srv, w->index, w->worker_data, w->srv->drain_hook_data);
        rpc__conns_drain(w);
    }
    if ((bits & RPC__NOTIFY_STOP) && !w->stopping) {
        w->stopping = true;
        w->draining = true;
        rpc__conns_close_all(w);
    }
    worker_maybe_exit(w);
}

void rpc__worker_conn_closed(rpc__worker *w)
{
    worker_maybe_exit(w);
}

static void *worker_main(void *arg)
{
    rpc__worker *w = arg;
    rpc_server *srv = w->srv;
    if (srv->worker_start)
        w->worker_data = srv->worker_start(srv, w->index, w->base, srv->worker_hook_data);
    event_add(w->accept_ev, NULL);
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    rpc__conns_close_all(w);
    if (srv->worker_stop)
        srv->worker_stop(srv, w->index, w->worker_data, srv->worker_hook_data);
    /* Run what closing scheduled (deferred frees), then leave. */
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    rpc__conns_cleanup(w);
    if (atomic_fetch_sub(&srv->live_workers, 1) == 1 && srv->main_notify)
        event_active(srv->main_notify, EV_READ, 0);
    return NULL;
}

static void on_signal(evutil_socket_t sig, short what, void *arg);
static void on_main_notify(evutil_socket_t fd, short what, void *arg);
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg);

int rpc_server_start(rpc_server *srv)
{
    if (srv->started)
        return 0;
    signal(SIGPIPE, SIG_IGN);
    /* The main loop and its signal events exist before the port is bound, so a SIGTERM that
     * arrives as soon as the port accepts still drains instead of killing the process. */
    srv->main_base = event_base_new();
    srv->main_notify = event_new(srv->main_base, -1, EV_PERSIST, on_main_notify, srv);
    srv->drain_timer = evtimer_new(srv->main_base, on_drain_timeout, srv);
    if (srv->cfg.install_signal_handlers) {
        srv->sig_term = evsignal_new(srv->main_base, SIGTERM, on_signal, srv);
        srv->sig_int = evsignal_new(srv->main_base, SIGINT, on_signal, srv);
        event_add(srv->sig_term, NULL);
        event_add(srv->sig_int, NULL);
    }
    /* A persistent event with no fd never fires by itself; it keeps the loop alive. */
    event_add(srv->main_notify, NULL);
    srv->workers = mem_calloc((size_t)srv->n_workers, sizeof(*srv->workers));
    uint16_t port = srv->cfg.port;
    int rv = 0;
    for (int i = 0; i < srv->n_workers; i++) {
        rpc__worker *w = &srv->workers[i];
        w->srv = srv;
        w->index = i;
        rpc__link_init(&w->conns);
        rpc__link_init(&w->health_watchers);
        uint16_t bound = 0;
        /* The first socket may pick the port; the others join it with SO_REUSEPORT. */
        int fd = listen_socket(srv, port, i == 0, &bound);
        if (fd < 0) {
            rv = fd;
            goto fail;
        }
        port = bound;
        w->listen_fd = fd;
        w->base = event_base_new();
        w->accept_ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_accept, w);
        w->notify_ev = event_new(w->base, -1, 0, on_worker_notify, w);
    }
    srv->port = port;
    srv->started = true;
    atomic_store(&srv->live_workers, srv->n_workers);
    /* Workers inherit a mask without SIGTERM/SIGINT: only the main loop takes them. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (int i = 0; i < srv->n_workers; i++) {
        rpc__worker *w = &srv->workers[i];
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e != 0) {
            log_error("pthread_create: %s", strerror(e));
            abort();
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    log_info("serving gRPC on %s:%u with %d worker(s)", srv->cfg.host, (unsigned)srv->port,
             srv->n_workers);
    return 0;
fail:
    for (int i = 0; i < srv->n_workers; i++) {
        rpc__worker *w = &srv->workers[i];
        if (w->accept_ev)
            event_free(w->accept_ev);
        if (w->notify_ev)
            event_free(w->notify_ev);
        if (w->base)
            event_base_free(w->base);
        if (w->listen_fd > 0)
            close(w->listen_fd);
    }
    free(srv->workers);
    srv->workers = NULL;
    if (srv->sig_term) {
        event_free(srv->sig_term);
        event_free(srv->sig_int);
        srv->sig_term = srv->sig_int = NULL;
    }
    event_free(srv->main_notify);
    event_free(srv->drain_timer);
    event_base_free(srv->main_base);
    srv->main_notify = srv->drain_timer = NULL;
    srv->main_base = NULL;
    return rv;
}

uint16_t rpc_server_port(const rpc_server *srv)
{
    return srv->port;
}

struct event_base *rpc_server_main_base(rpc_server *srv)
{
    return srv->main_base;
}

static void begin_drain(rpc_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    log_info("draining: health NOT_SERVING, GOAWAY sent, in-flight calls get %u ms",
             srv->cfg.drain_timeout_ms);
    set_all_health(srv, 2);
    notify_workers(srv, RPC__NOTIFY_DRAIN);
    struct timeval tv = {srv->cfg.drain_timeout_ms / 1000,
                         (srv->cfg.drain_timeout_ms % 1000) * 1000};
    event_add(srv->drain_timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    rpc_server *srv = arg;
    log_info("got %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    begin_drain(srv);
}

static void on_main_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_server *srv = arg;
    if (atomic_load(&srv->live_workers) == 0) {
        event_base_loopexit(srv->main_base, NULL);
        return;
    }
    if (atomic_load(&srv->shutdown_requested))
        begin_drain(srv);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_server *srv = arg;
    log_warn("drain deadline passed: cancelling the calls still running");
    notify_workers(srv, RPC__NOTIFY_STOP);
}

int rpc_server_run(rpc_server *srv)
{
    int rv = rpc_server_start(srv);
    if (rv < 0)
        return rv;
    if (srv->main_start)
        srv->main_start(srv, srv->main_base, srv->main_hook_data);
    if (atomic_load(&srv->shutdown_requested))
        begin_drain(srv);
    event_base_loop(srv->main_base, EVLOOP_NO_EXIT_ON_EMPTY);
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i].thread, NULL);
    for (int i = 0; i < srv->n_workers; i++) {
        rpc__worker *w = &srv->workers[i];
        event_free(w->accept_ev);
        event_free(w->notify_ev);
        w->notify_ev = NULL;
        if (w->listen_fd >= 0)
            close(w->listen_fd);
        event_base_free(w->base);
    }
    if (srv->sig_term) {
        /* The process is on its way out: a second SIGTERM must not turn a clean exit into
         * death by signal. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        event_free(srv->sig_term);
        event_free(srv->sig_int);
    }
    event_free(srv->main_notify);
    event_free(srv->drain_timer);
    srv->main_notify = NULL;
    event_base_free(srv->main_base);
    srv->main_base = NULL;
    log_info("server stopped");
    return 0;
}

void rpc_server_shutdown(rpc_server *srv)
{
    atomic_store(&srv->shutdown_requested, true);
    if (srv->main_notify)
        event_active(srv->main_notify, EV_READ, 0);
}
