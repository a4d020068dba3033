/*
 * pagetoken.h: PullMessages page tokens. "p1.<position>.<mac>" where mac is the first 16 bytes
 * (hex) of HMAC-SHA256(key, "p1\n" user "\n" device "\n" position): opaque to clients, bound
 * to user and device, never expiring, at most 64 bytes.
 */
#ifndef CHATS_PAGETOKEN_H
#define CHATS_PAGETOKEN_H

#include <stddef.h>
#include <stdint.h>

#define PAGETOKEN_MAX 96

/* Writes the token for |pos| into |out| (PAGETOKEN_MAX bytes). */
void pagetoken_make(const char *key, const char *user, const char *device, uint64_t pos, char *out);

/* Parses |token|: 0 with |*pos| set, or -1 when malformed or not issued for user/device. */
int pagetoken_parse(const char *key, const char *user, const char *device, const char *token,
                    uint64_t *pos);

#endif /* CHATS_PAGETOKEN_H */
