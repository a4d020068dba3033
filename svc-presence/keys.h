/*
 * keys.h: the Redis key layout of presence, and parsing of the keyevent notifications that
 * carry those keys. Pure string code (no Redis, no I/O), shared by the store, the watch feed
 * and the unit tests.
 *
 *   presence:<user>:<device>    a Redis set holding "1", expiring (PEXPIREAT) when the device's
 *                               TTL runs out. Exists only to produce keyevent notifications:
 *                               "sadd" when a device comes online, "del" on SetOffline,
 *                               "expired" on expiry. (A set rather than a string so that the
 *                               notifications the feed needs are of a class, 's', that the
 *                               record's SET on every heartbeat does not produce.)
 *   presence-state:<user>       the user's record (state.h): last-seen and every device with
 *                               its expiry. The truth for counts and last-seen.
 *   chat:<chat_id>:members      set of user ids (maintained by the chats materializer; read
 *                               by CountOnline).
 *
 * The record key has a prefix of its own so that no user/device pair can produce its name. A
 * device id never contains ':' (validate.h), so a device key splits at its last ':' even when
 * the user id contains ':'.
 */
#ifndef PRESENCE_KEYS_H
#define PRESENCE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYS_DEVICE_PREFIX "presence:"
#define KEYS_STATE_PREFIX "presence-state:"

/* Longest key built here: prefix + 128-byte user + ':' + 64-byte device, with room. */
#define KEYS_MAX 256

/* Writes "presence:<user>:<device>" into |buf| (|cap| bytes, NUL-terminated). Returns the
 * length, or 0 when it does not fit. */
size_t keys_device(char *buf, size_t cap, const char *user, const char *device);

/* Writes "presence-state:<user>". Returns the length or 0. */
size_t keys_state(char *buf, size_t cap, const char *user);

/* Writes "chat:<chat_id>:members". Returns the length or 0. */
size_t keys_members(char *buf, size_t cap, uint64_t chat_id);

/* Splits a device key ("presence:<user>:<device>", |len| bytes, not NUL-terminated) into
 * pointers into |key|. Returns 0, or -1 when |key| is not a well-formed device key (other
 * prefix, empty user or device, bad characters). */
int keys_parse_device(const char *key, size_t len, const char **user, size_t *user_len,
                      const char **device, size_t *device_len);

/* Keyevent kinds the watch feed listens to. */
typedef enum keys_event {
    KEYS_EV_OTHER = 0,   /* not one of ours */
    KEYS_EV_ONLINE = 1,  /* a device came online (SADD) */
    KEYS_EV_DEL = 2,     /* SetOffline (DEL) */
    KEYS_EV_EXPIRED = 3, /* TTL ran out */
} keys_event;

/* Writes the channel "__keyevent@<db>__:<event>" for |ev| (not KEYS_EV_OTHER). Returns the
 * length or 0. */
size_t keys_event_channel(char *buf, size_t cap, int db, keys_event ev);

/* The kind of a keyevent channel "__keyevent@<db>__:<event>" (|len| bytes). */
keys_event keys_parse_event_channel(const char *channel, size_t len);

/* The database index in a Redis URL ("redis://[:pw@]host[:port][/db]" or "host[:port]"):
 * the number after the last '/' of a redis:// URL, else 0. Returns -1 for a malformed one. */
int keys_url_db(const char *url);

/* FNV-1a of |len| bytes: the hash used to pick one reaping worker per user. */
uint32_t keys_hash(const char *s, size_t len);

#endif /* PRESENCE_KEYS_H */
