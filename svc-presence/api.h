/*
 * api.h: the chat.v1.PresenceService handlers (proto/chat/v1/presence.proto).
 *
 * Every call: authorization "Bearer <JWT>" -> user (UNAUTHENTICATED otherwise), then input
 * validation (INVALID_ARGUMENT with a message naming the field), then one Redis script call on
 * the worker's connection (UNAVAILABLE when Redis is unreachable or the worker's in-flight
 * limit is reached). Heartbeats go through the worker's hbqueue instead: those of one loop
 * iteration share a script call, and a full queue answers RESOURCE_EXHAUSTED. Handlers never
 * block: they answer from the Redis reply callback, holding a reference on the call
 * meanwhile.
 */
#ifndef PRESENCE_API_H
#define PRESENCE_API_H

#include "rpc_server.h"
#include "worker.h"

/* Registers PresenceService on |srv|; |svc| must outlive the server. Returns 0 or the
 * registration error. */
int api_register(rpc_server *srv, presence_service *svc);

#endif /* PRESENCE_API_H */
