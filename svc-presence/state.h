/*
 * state.h: the per-user presence record kept in Redis as one short string, and its reading.
 *
 * presence-state:<user> holds, in ASCII:
 *
 *     <last_seen_ms>[ <device_id>=<expires_at_ms>]*
 *
 * e.g. "0 phone=1795359311376 laptop=1795359318001": last-seen (Unix ms the user last went
 * offline, 0 = never) and every device with its expiry (Unix ms, Redis clock). A device is
 * online while its expiry >= now. Device ids are [A-Za-z0-9._-], so ' ' and '=' cannot occur
 * in them. The Lua scripts in store.c write it; reads parse it here, so a batch read is one
 * MGET (one string per user), which costs Redis a fraction of per-user commands or Lua.
 */
#ifndef PRESENCE_STATE_H
#define PRESENCE_STATE_H

#include <stddef.h>
#include <stdint.h>

/* One user's presence at a given time. */
typedef struct presence_state {
    uint32_t devices;       /* devices online (expiry >= now) */
    int64_t last_seen_ms;   /* Unix ms the user last went offline, 0 = never recorded */
    int64_t next_expiry_ms; /* earliest expiry among online devices, 0 = none */
} presence_state;

/*
 * Reads the record |s| (|len| bytes; NULL = no record) as of |now_ms|. When no device is
 * online but some have expired without being settled yet, the user went offline at the latest
 * of those expiries, which then counts as last-seen (if later than the stored one): the same
 * answer a settling write would store. Returns 0, or -1 for a malformed record (|out| then
 * says offline, never seen).
 */
int state_parse(const char *s, size_t len, int64_t now_ms, presence_state *out);

#endif /* PRESENCE_STATE_H */
