/* worker.h: per-worker PostgreSQL pool, Redis client and Kafka producer (rpc_server worker
 * hooks). A worker whose clients could not be created has NULL data; its RPCs answer
 * UNAVAILABLE. */
#ifndef CHATS_WORKER_H
#define CHATS_WORKER_H

#include "chats.h"
#include "rpc_server.h"

void *worker_start(rpc_server *srv, int index, struct event_base *base, void *user_data);
void worker_stop(rpc_server *srv, int index, void *worker_data, void *user_data);

#endif /* CHATS_WORKER_H */
