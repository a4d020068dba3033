/* Status names, error strings and metadata lists (rpc.h). */
#include "rpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "rpc_wire.h"

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rpc_status_name(int code)
{
    if (code < 0 || code > 16)
        return "UNKNOWN";
    return status_names[code];
}

const char *rpc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case RPC_ERR_INVALID:
        return "invalid argument or state";
    case RPC_ERR_WOULDBLOCK:
        return "send buffer full";
    case RPC_ERR_CLOSED:
        return "call or connection closed";
    case RPC_ERR_TOO_LARGE:
        return "message larger than the limit";
    case RPC_ERR_PROTO:
        return "malformed message";
    case RPC_ERR_NOMEM:
        return "out of memory";
    case RPC_ERR_HTTP2:
        return "HTTP/2 error";
    case RPC_ERR_UNSUPPORTED:
        return "unsupported";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

/* Each entry is one allocation: the lower-cased key, then the value (both NUL-terminated, so
 * string users can read values directly); rpc_mdlist_clear() frees the key only. */
static int mdlist_push(rpc_mdlist *l, const char *key, const void *value, size_t value_len)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->items = mem_realloc(l->items, l->cap * sizeof(*l->items));
    }
    size_t klen = strlen(key);
    char *k = mem_alloc(klen + 1 + value_len + 1);
    for (size_t i = 0; i <= klen; i++)
        k[i] = (key[i] >= 'A' && key[i] <= 'Z') ? (char)(key[i] - 'A' + 'a') : key[i];
    uint8_t *v = (uint8_t *)k + klen + 1;
    if (value_len)
        memcpy(v, value, value_len);
    v[value_len] = '\0';
    l->items[l->n].key = k;
    l->items[l->n].value = v;
    l->items[l->n].value_len = value_len;
    l->n++;
    return 0;
}

int rpc_mdlist_add(rpc_mdlist *l, const char *key, const void *value, size_t value_len)
{
    char lower[256];
    size_t n = strlen(key);
    if (n == 0 || n >= sizeof(lower))
        return RPC_ERR_INVALID;
    for (size_t i = 0; i <= n; i++)
        lower[i] = (key[i] >= 'A' && key[i] <= 'Z') ? (char)(key[i] - 'A' + 'a') : key[i];
    if (!rpc_md_key_valid(lower, false))
        return RPC_ERR_INVALID;
    if (!rpc_md_key_is_bin(lower)) {
        const uint8_t *v = value;
        for (size_t i = 0; i < value_len; i++)
            if (v[i] < 0x20 || v[i] > 0x7e)
                return RPC_ERR_INVALID;
    }
    return mdlist_push(l, lower, value, value_len);
}

int rpc_mdlist_add_str(rpc_mdlist *l, const char *key, const char *value)
{
    return rpc_mdlist_add(l, key, value, strlen(value));
}

const rpc_md *rpc_mdlist_get(const rpc_mdlist *l, const char *key)
{
    if (l == NULL)
        return NULL;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].key, key) == 0)
            return &l->items[i];
    return NULL;
}

void rpc_mdlist_clear(rpc_mdlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free((void *)l->items[i].key); /* the value shares its allocation */
    free(l->items);
    memset(l, 0, sizeof(*l));
}
