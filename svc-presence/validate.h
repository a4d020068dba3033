/*
 * validate.h: the input rules of chat.v1.PresenceService (proto/chat/v1/presence.proto and
 * docs/API.md "Ids, formats and limits"), as pure functions with the INVALID_ARGUMENT messages
 * the API sends. No allocation except where noted; no I/O.
 */
#ifndef PRESENCE_VALIDATE_H
#define PRESENCE_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VALIDATE_USER_ID_MAX 128   /* bytes, printable ASCII 0x21..0x7e (the JWT "sub") */
#define VALIDATE_DEVICE_ID_MAX 64  /* bytes of [A-Za-z0-9._-] */
#define VALIDATE_MAX_USERS 500     /* GetPresence / WatchPresence ids per call */
#define VALIDATE_TTL_DEFAULT 30000 /* ms granted for ttl_ms = 0 */
#define VALIDATE_TTL_MIN 5000      /* ms */
#define VALIDATE_TTL_MAX 120000    /* ms */

/* True when |s| (|len| bytes) is a valid user id. */
bool validate_user_id(const char *s, size_t len);

/* True when |s| (|len| bytes) is a valid device id. */
bool validate_device_id(const char *s, size_t len);

/* The TTL to grant for a requested |ttl_ms|: the default for 0, |ttl_ms| itself inside
 * [VALIDATE_TTL_MIN, VALIDATE_TTL_MAX], or 0 (invalid). */
uint32_t validate_ttl(uint32_t ttl_ms);

/*
 * Checks a list of |n| user ids (NUL-terminated strings; NULL counts as empty) against the
 * GetPresence/WatchPresence rules and removes duplicates: on success fills |order| (capacity
 * VALIDATE_MAX_USERS) with the indices of the first occurrence of each distinct id, in request
 * order, stores their count in |*n_unique| and returns 0. On failure returns -1 and writes a
 * message naming the field into |err| (|errcap| bytes).
 */
int validate_user_list(char *const *ids, size_t n, size_t *order, size_t *n_unique, char *err,
                       size_t errcap);

#endif /* PRESENCE_VALIDATE_H */
