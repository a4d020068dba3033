/*
 * presence_fixture.h: the fixture the svc-presence store tests share: a redis-server of their
 * own (lib_servers.h), one loop, one connected redis_client and a store. Include after the
 * svc-presence sources the test compiles in (store.h must be known).
 */
#ifndef TESTS_PRESENCE_FIXTURE_H
#define TESTS_PRESENCE_FIXTURE_H

#include "lib_servers.h"

static ts_redis srv;
static char url[128];
static struct event_base *base;
static redis_client *rc;
static store *st;

/* Starts the server and connects; 0 once connected, -1 otherwise (cmocka group setup). */
static inline int presence_fixture_start(void)
{
    if (!ts_redis_start(&srv)) {
        fprintf(stderr, "redis-server not available\n");
        return -1;
    }
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv.port);
    base = event_base_new();
    redis_config cfg;
    redis_config_init(&cfg);
    cfg.url = url;
    if (redis_client_new(&rc, base, &cfg) != 0)
        return -1;
    for (int i = 0; i < 200 && !redis_client_connected(rc); i++)
        ts_run_for(base, 10);
    store_new(&st, NULL);
    return redis_client_connected(rc) ? 0 : -1;
}

static inline int presence_fixture_stop(void)
{
    store_free(st);
    redis_client_free(rc);
    event_base_free(base);
    ts_redis_cleanup(&srv);
    return 0;
}

#endif /* TESTS_PRESENCE_FIXTURE_H */
