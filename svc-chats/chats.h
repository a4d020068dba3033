/*
 * chats.h: the process-wide state of svc-chats, shared (read-only after start-up, or
 * thread-safe) by the RPC workers, the materializer thread and the main loop.
 */
#ifndef CHATS_CHATS_H
#define CHATS_CHATS_H

#include "auth.h"
#include "kafka.h"
#include "pg.h"
#include "redis.h"
#include "settings.h"
#include "snowflake.h"
#include "waiters.h"

typedef struct chats_service {
    settings cfg;
    auth_verifier *auth;
    snowflake *ids;    /* chat and event ids; issues once the lease holds an instance */
    waiters *waits;    /* read-your-writes */
    char producer[64]; /* ChatEvent.producer, "svc-chats/<site>/<pid>" */
} chats_service;

/* One RPC worker's clients, created on its loop (worker.c). */
typedef struct chats_worker {
    const chats_service *svc;
    struct event_base *base;
    pg_pool *pg;
    redis_client *rc;
    kafka_producer *kp;
} chats_worker;

#endif /* CHATS_CHATS_H */
