/* keys.c: presence key names and keyevent parsing (see keys.h). */
#include "keys.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

static size_t fit(int n, size_t cap)
{
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t keys_device(char *buf, size_t cap, const char *user, const char *device)
{
    return fit(snprintf(buf, cap, KEYS_DEVICE_PREFIX "%s:%s", user, device), cap);
}

size_t keys_devices(char *buf, size_t cap, const char *user)
{
    return fit(snprintf(buf, cap, KEYS_DEVICES_PREFIX "%s", user), cap);
}

size_t keys_seen(char *buf, size_t cap, const char *user)
{
    return fit(snprintf(buf, cap, KEYS_SEEN_PREFIX "%s", user), cap);
}

size_t keys_members(char *buf, size_t cap, uint64_t chat_id)
{
    return fit(snprintf(buf, cap, "chat:%" PRIu64 ":members", chat_id), cap);
}

int keys_parse_device(const char *key, size_t len, const char **user, size_t *user_len,
                      const char **device, size_t *device_len)
{
    const size_t plen = sizeof(KEYS_DEVICE_PREFIX) - 1;
    if (len <= plen || memcmp(key, KEYS_DEVICE_PREFIX, plen) != 0)
        return -1;
    const char *rest = key + plen;
    size_t rlen = len - plen;
    const char *colon = NULL;
    for (size_t i = rlen; i > 0; i--)
        if (rest[i - 1] == ':') {
            colon = rest + i - 1;
            break;
        }
    if (colon == NULL)
        return -1;
    size_t ulen = (size_t)(colon - rest);
    size_t dlen = rlen - ulen - 1;
    if (!validate_user_id(rest, ulen) || !validate_device_id(colon + 1, dlen))
        return -1;
    *user = rest;
    *user_len = ulen;
    *device = colon + 1;
    *device_len = dlen;
    return 0;
}

static const char *const event_names[] = {
    [KEYS_EV_SET] = "set",
    [KEYS_EV_DEL] = "del",
    [KEYS_EV_EXPIRED] = "expired",
};

size_t keys_event_channel(char *buf, size_t cap, int db, keys_event ev)
{
    if (ev <= KEYS_EV_OTHER || ev > KEYS_EV_EXPIRED)
        return 0;
    return fit(snprintf(buf, cap, "__keyevent@%d__:%s", db, event_names[ev]), cap);
}

keys_event keys_parse_event_channel(const char *channel, size_t len)
{
    static const char pre[] = "__keyevent@";
    if (len < sizeof(pre) - 1 || memcmp(channel, pre, sizeof(pre) - 1) != 0)
        return KEYS_EV_OTHER;
    const char *sep = memchr(channel, ':', len);
    if (sep == NULL)
        return KEYS_EV_OTHER;
    const char *ev = sep + 1;
    size_t elen = len - (size_t)(ev - channel);
    for (int k = KEYS_EV_SET; k <= KEYS_EV_EXPIRED; k++)
        if (strlen(event_names[k]) == elen && memcmp(event_names[k], ev, elen) == 0)
            return (keys_event)k;
    return KEYS_EV_OTHER;
}

int keys_url_db(const char *url)
{
    /* Same reading as lib/redis.c: the database follows the first '/' after the scheme. */
    if (url == NULL)
        return 0;
    if (strncmp(url, "redis://", 8) == 0)
        url += 8;
    const char *slash = strchr(url, '/');
    if (slash == NULL || slash[1] == '\0')
        return 0;
    long db = 0;
    for (const char *p = slash + 1; *p; p++) {
        if (*p < '0' || *p > '9' || db > 1000000)
            return -1;
        db = db * 10 + (*p - '0');
    }
    return db > 1000000 ? -1 : (int)db;
}

uint32_t keys_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}
