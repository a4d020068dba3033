#include "service.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

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
    rpc_server *srv;
    int rv = rpc_server_new(&srv, &cfg);
    if (rv < 0) {
        log_error("cannot create server: %s", rpc_strerror(rv));
        return 1;
    }
    if (def->setup && (rv = def->setup(srv, argc, argv, def->user_data)) < 0) {
        log_error("setup failed: %s", rpc_strerror(rv));
        rpc_server_free(srv);
        return 1;
    }
    rv = rpc_server_start(srv);
    if (rv < 0) {
        log_error("cannot listen on %s:%u: %s", cfg.host, (unsigned)cfg.port, rpc_strerror(rv));
        rpc_server_free(srv);
        return 1;
    }
    log_info("started: grpc=%s:%u pid=%d", cfg.host, (unsigned)rpc_server_port(srv), (int)getpid());
    rv = rpc_server_run(srv);
    if (def->teardown)
        def->teardown(def->user_data);
    rpc_server_free(srv);
    log_info("stopped cleanly");
    return rv < 0 ? 1 : 0;
}
