/*
 * service.h: the common main() of every service binary: flags and
 * environment, logging, the gRPC server with health and reflection, the
 * metrics port, a log line at start and stop, graceful SIGTERM.
 *
 * Flags (each also read from the environment variable in brackets):
 *   --host ADDR       [HOST]          listen address, default 0.0.0.0
 *   --port N          [PORT]          gRPC port, default per service
 *   --workers N       [WORKERS]       worker threads, default: CPUs
 *   --metrics-port N  [METRICS_PORT]  Prometheus /metrics over HTTP, 0 = off
 *   --drain-ms N      [DRAIN_MS]      graceful-shutdown budget, default 10000
 *   --max-recv-message N [MAX_RECV_MESSAGE] bytes, default 4194304
 *   --max-concurrent-streams N [MAX_CONCURRENT_STREAMS] per connection, default 100
 * Services read their own settings with conf_get_*() (config.h); conf_init() has run.
 */
#ifndef SERVICE_H
#define SERVICE_H

#include <stdint.h>

#include "rpc_server.h"

typedef struct service_def {
    const char *name;              /* "svc-chats": logs, metrics, health */
    uint16_t default_port;         /* gRPC port when none is given */
    uint16_t default_metrics_port; /* metrics port when none is given */
    /* Registers the service's RPCs on |srv| (before it starts); returns 0 or a negative code
     * to abort start-up. May set worker hooks. */
    int (*setup)(rpc_server *srv, int argc, char **argv, void *user_data);
    /* Called after the server stopped (may be NULL). */
    void (*teardown)(void *user_data);
    void *user_data;
} service_def;

struct metrics_registry;
/* The process's metrics registry (served on the metrics port; valid inside setup() and until
 * service_main returns). Services add their own series to it. */
struct metrics_registry *service_metrics(void);

/* Runs the service until SIGTERM/SIGINT; returns the process exit code. */
int service_main(const service_def *def, int argc, char **argv);

#endif /* SERVICE_H */
