/*
 * api.h: the MessagingService handlers: Connect (authenticates the stream, then hands every
 * frame to its session) and the unary Send (same send path, outcome mapped to a gRPC status).
 */
#ifndef MSG_API_H
#define MSG_API_H

#include "rpc_server.h"
#include "worker.h"

/* Registers MessagingService on |srv| with |svc| as handler data. */
int api_register(rpc_server *srv, msg_service *svc);

#endif /* MSG_API_H */
