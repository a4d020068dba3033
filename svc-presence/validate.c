/* validate.c: input rules of PresenceService (see validate.h). */
#include "validate.h"

#include <stdio.h>
#include <string.h>

#include "keys.h"

bool validate_user_id(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > VALIDATE_USER_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

bool validate_device_id(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > VALIDATE_DEVICE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

uint32_t validate_ttl(uint32_t ttl_ms)
{
    if (ttl_ms == 0)
        return VALIDATE_TTL_DEFAULT;
    if (ttl_ms < VALIDATE_TTL_MIN || ttl_ms > VALIDATE_TTL_MAX)
        return 0;
    return ttl_ms;
}

/* Open-addressing set of indices into |ids| for duplicate detection; 1024 slots keep the load
 * under one half for the 500-id limit. */
#define DEDUPE_SLOTS 1024

int validate_user_list(char *const *ids, size_t n, size_t *order, size_t *n_unique, char *err,
                       size_t errcap)
{
    *n_unique = 0;
    if (n == 0) {
        snprintf(err, errcap, "user_ids must not be empty");
        return -1;
    }
    if (n > VALIDATE_MAX_USERS) {
        snprintf(err, errcap, "user_ids has %zu entries; at most %d are allowed", n,
                 VALIDATE_MAX_USERS);
        return -1;
    }
    int slots[DEDUPE_SLOTS];
    memset(slots, -1, sizeof(slots));
    for (size_t i = 0; i < n; i++) {
        const char *id = ids[i] ? ids[i] : "";
        size_t len = strlen(id);
        if (!validate_user_id(id, len)) {
            snprintf(err, errcap,
                     "user_ids[%zu] is not a valid user id (1..%d bytes of printable ASCII "
                     "0x21..0x7e)",
                     i, VALIDATE_USER_ID_MAX);
            return -1;
        }
        uint32_t h = keys_hash(id, len) & (DEDUPE_SLOTS - 1);
        bool dup = false;
        while (slots[h] >= 0) {
            if (strcmp(ids[slots[h]], id) == 0) {
                dup = true;
                break;
            }
            h = (h + 1) & (DEDUPE_SLOTS - 1);
        }
        if (dup)
            continue;
        slots[h] = (int)i;
        order[(*n_unique)++] = i;
    }
    return 0;
}
