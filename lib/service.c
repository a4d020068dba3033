#include "service.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "metrics.h"

static metrics_registry *registry;

metrics_registry *service_metrics(void)
{
    return registry;
}

/* The metrics HTTP server runs on a thread of its own, so a scrape never touches a worker. */
typedef struct metrics_thread {
    struct event_base *base;
    metrics_http *http;
    pthread_t thread;
    struct event *stop;
} metrics_thread;

static int health_cb(void *user_data)
{
    (void)user_data;
    return 0;
}

static void on_metrics_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    metrics_thread *mt = arg;
    event_base_loopexit(mt->base, NULL);
}

static void *metrics_main(void *arg)
{
    metrics_thread *mt = arg;
    event_base_loop(mt->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static int metrics_start(metrics_thread *mt, const char *host, uint16_t port)
{
    mt->base = event_base_new();
    int rv = metrics_http_new(&mt->http, mt->base, registry, host, port);
    if (rv < 0) {
        event_base_free(mt->base);
        mt->base = NULL;
        return rv;
    }
    metrics_http_set_health(mt->http, health_cb, NULL);
    mt->stop = event_new(mt->base, -1, 0, on_metrics_stop, mt);
    pthread_create(&mt->thread, NULL, metrics_main, mt);
    return 0;
}

static void metrics_stop(metrics_thread *mt)
{
    if (mt->base == NULL)
        return;
    event_active(mt->stop, EV_READ, 0);
    pthread_join(mt->thread, NULL);
    metrics_http_free(mt->http);
    event_free(mt->stop);
    event_base_free(mt->base);
    mt->base = NULL;
}

int service_main(const service_def *def, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--host ADDR] [--port N] [--workers N] [--metrics-port N] "
                   "[--drain-ms N] [service flags]\n(see lib/service.h and docs/ARCHITECTURE.md; "
                   "every flag has an environment variable)\n",
                   def->name);
            return 0;
        }
    log_init(def->name);
    conf_init(argc, argv);
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.name = def->name;
    cfg.host = conf_get_str("host", "0.0.0.0");
    int64_t v;
    conf_get_int("port", def->default_port, 0, 65535, &v);
    cfg.port = (uint16_t)v;
    conf_get_int("workers", cfg.workers, 1, 256, &v);
    cfg.workers = (int)v;
    conf_get_int("drain-ms", 10000, 0, 3600000, &v);
    cfg.drain_timeout_ms = (uint32_t)v;
    conf_get_int("max-recv-message", (int64_t)cfg.max_recv_message, 1024, 64 << 20, &v);
    cfg.max_recv_message = (size_t)v;
    conf_get_int("max-concurrent-streams", cfg.max_concurrent_streams, 1, 1 << 20, &v);
    cfg.max_concurrent_streams = (uint32_t)v;
    conf_get_int("metrics-port", def->default_metrics_port, 0, 65535, &v);
    uint16_t metrics_port = (uint16_t)v;
    metrics_registry_new(&registry, 0);
    rpc_server *srv;
    int rv = rpc_server_new(&srv, &cfg);
    if (rv < 0) {
        log_error("cannot create server: %s", rpc_strerror(rv));
        return 1;
    }
    rpc_server_set_metrics(srv, registry);
    if (def->setup && (rv = def->setup(srv, argc, argv, def->user_data)) < 0) {
        log_error("setup failed: %s", rpc_strerror(rv));
        rpc_server_free(srv);
        metrics_registry_free(registry);
        return 1;
    }
    rv = rpc_server_start(srv);
    if (rv < 0) {
        log_error("cannot listen on %s:%u: %s", cfg.host, (unsigned)cfg.port, rpc_strerror(rv));
        rpc_server_free(srv);
        metrics_registry_free(registry);
        return 1;
    }
    metrics_thread mt = {0};
    if (metrics_port) {
        rv = metrics_start(&mt, cfg.host, metrics_port);
        if (rv < 0)
            log_warn("metrics port %u: %s (continuing without metrics)", (unsigned)metrics_port,
                     metrics_strerror(rv));
    }
    log_info("started: grpc=%s:%u metrics=%s:%u pid=%d", cfg.host, (unsigned)rpc_server_port(srv),
             cfg.host, mt.http ? (unsigned)metrics_http_port(mt.http) : 0u, (int)getpid());
    rv = rpc_server_run(srv);
    metrics_stop(&mt);
    if (def->teardown)
        def->teardown(def->user_data);
    rpc_server_free(srv);
    metrics_registry_free(registry);
    registry = NULL;
    log_info("stopped cleanly");
    return rv < 0 ? 1 : 0;
}
