/* validate.h: input rules of the chat.v1 conventions (chats.proto header). Pure functions. */
#ifndef CHATS_VALIDATE_H
#define CHATS_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#define VALIDATE_USER_ID_MAX 128
#define VALIDATE_DEVICE_ID_MAX 64
#define VALIDATE_BODY_MAX 4096
#define VALIDATE_TITLE_MAX 256
#define VALIDATE_REQUEST_ID_MAX 64
#define VALIDATE_MAX_MEMBERS 500

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF, no NUL). */
bool validate_utf8(const char *s, size_t len);
/* 1..128 bytes of 0x21..0x7E. */
bool validate_user_id(const char *s);
/* 1..64 bytes of [A-Za-z0-9._-]. */
bool validate_device_id(const char *s);
/* 1..64 bytes of printable ASCII (request_id, client_message_id). */
bool validate_token_id(const char *s);
/* 1..4096 bytes of valid UTF-8. */
bool validate_body(const char *s);

#endif /* CHATS_VALIDATE_H */
