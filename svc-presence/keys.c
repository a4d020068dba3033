/* keys.c: presence key names and keyevent parsing (see keys.h). */
#include "keys.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "validate.h"

/* Writes the concatenation of |n| strings into |buf|; 0 when it does not fit. */
static size_t join(char *buf, size_t cap, const char *const *parts, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(parts[i]);
        if (len + l >= cap)
            return 0;
        memcpy(buf + len, parts[i], l);
        len += l;
    }
    if (cap == 0)
        return 0;
    buf[len] = '\0';
    return len;
}

size_t keys_device(char *buf, size_t cap, const char *user, const char *device)
{
    const char *parts[] = {KEYS_DEVICE_PREFIX, user, ":", device};
    return join(buf, cap, parts, 4);
}

size_t keys_state(char *buf, size_t cap, const char *user)
{
    const char *parts[] = {KEYS_STATE_PREFIX, user};
    return join(buf, cap, parts, 2);
}

size_t keys_members(char *buf, size_t cap, uint64_t chat_id)
{
    char id[24];
    snprintf(id, sizeof(id), "%" PRIu64, chat_id);
    const char *parts[] = {"chat:", id, ":members"};
    return join(buf, cap, parts, 3);
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
    [KEYS_EV_ONLINE] = "sadd",
    [KEYS_EV_DEL] = "del",
    [KEYS_EV_EXPIRED] = "expired",
};

size_t keys_event_channel(char *buf, size_t cap, int db, keys_event ev)
{
    if (ev <= KEYS_EV_OTHER || ev > KEYS_EV_EXPIRED)
        return 0;
    char pre[32];
    snprintf(pre, sizeof(pre), "__keyevent@%d__:", db);
    const char *parts[] = {pre, event_names[ev]};
    return join(buf, cap, parts, 2);
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
    for (int k = KEYS_EV_ONLINE; k <= KEYS_EV_EXPIRED; k++)
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
