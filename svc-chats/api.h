/*
 * api.h: chat.v1.ChatsService handlers.
 *
 * Every call: bearer token -> user (UNAUTHENTICATED otherwise); validation (INVALID_ARGUMENT)
 * before any I/O; then one PostgreSQL statement that both checks access (NOT_FOUND for an
 * unknown chat, PERMISSION_DENIED for a non-member) and reads. Tokens whose sub starts with
 * API_SERVICE_PREFIX are service identities: they may read any chat (GetChat, GetHistory,
 * GetRangeHash) without being a member; they cannot write as anyone else.
 *
 * Writes (CreateChat, AddMembers, RemoveMembers, EditMessage, DeleteMessage) produce one
 * ChatEvent to the log (key = chat_id in decimal, acks=all, idempotent producer) and answer
 * after this site's materializer committed it (waiters.h), re-reading the stored state; or
 * DEADLINE_EXCEEDED at the call's deadline (write-timeout-ms without one), UNAVAILABLE when the
 * log refuses the record.
 */
#ifndef CHATS_API_H
#define CHATS_API_H

#include "chats.h"
#include "rpc_server.h"

#define API_SERVICE_PREFIX "service:"

/* Registers the handlers; |svc| must outlive |srv|. */
int api_register(rpc_server *srv, chats_service *svc);

#endif /* CHATS_API_H */
