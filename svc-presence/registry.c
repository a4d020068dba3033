/* registry.c: watched users of one worker (see registry.h). */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "mem.h"

void registry_init(registry *r)
{
    memset(r, 0, sizeof(*r));
    r->n_buckets = 64;
    r->buckets = mem_calloc(r->n_buckets, sizeof(*r->buckets));
    reg_link_init(&r->dirty);
}

static void user_free(reg_user *u)
{
    free(u->id);
    free(u);
}

void registry_clear(registry *r)
{
    for (size_t i = 0; i < r->n_buckets; i++) {
        reg_user *u = r->buckets[i];
        while (u != NULL) {
            reg_user *next = u->chain;
            user_free(u);
            u = next;
        }
    }
    free(r->buckets);
    free(r->heap);
    memset(r, 0, sizeof(*r));
    reg_link_init(&r->dirty);
}

reg_user *registry_find(const registry *r, const char *id, size_t len)
{
    uint32_t h = keys_hash(id, len);
    for (reg_user *u = r->buckets[h & (r->n_buckets - 1)]; u != NULL; u = u->chain)
        if (u->hash == h && u->id_len == len && memcmp(u->id, id, len) == 0)
            return u;
    return NULL;
}

static void grow(registry *r)
{
    size_t nb = r->n_buckets * 2;
    reg_user **b = mem_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < r->n_buckets; i++) {
        reg_user *u = r->buckets[i];
        while (u != NULL) {
            reg_user *next = u->chain;
            u->chain = b[u->hash & (nb - 1)];
            b[u->hash & (nb - 1)] = u;
            u = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->n_buckets = nb;
}

reg_user *registry_acquire(registry *r, const char *id, size_t len)
{
    reg_user *u = registry_find(r, id, len);
    if (u == NULL) {
        if (r->n_users >= r->n_buckets)
            grow(r);
        u = mem_calloc(1, sizeof(*u));
        u->id = mem_strndup(id, len);
        u->id_len = len;
        u->hash = keys_hash(id, len);
        reg_link_init(&u->slots);
        reg_link_init(&u->dirty_link);
        u->heap_idx = REG_NOT_SCHEDULED;
        size_t b = u->hash & (r->n_buckets - 1);
        u->chain = r->buckets[b];
        r->buckets[b] = u;
        r->n_users++;
    }
    u->refs++;
    return u;
}

void registry_release(registry *r, reg_user *u)
{
    if (--u->refs > 0)
        return;
    if (u->dirty) {
        reg_link_remove(&u->dirty_link);
        u->dirty = false;
        r->n_dirty--;
    }
    registry_unschedule(r, u);
    reg_user **pp = &r->buckets[u->hash & (r->n_buckets - 1)];
    while (*pp != u)
        pp = &(*pp)->chain;
    *pp = u->chain;
    r->n_users--;
    user_free(u);
}

void registry_mark_dirty(registry *r, reg_user *u)
{
    if (u->dirty)
        return;
    u->dirty = true;
    reg_link_append(&r->dirty, &u->dirty_link);
    r->n_dirty++;
}

reg_user *registry_pop_dirty(registry *r)
{
    if (reg_link_empty(&r->dirty))
        return NULL;
    reg_user *u = REG_CONTAINER_OF(r->dirty.next, reg_user, dirty_link);
    reg_link_remove(&u->dirty_link);
    u->dirty = false;
    r->n_dirty--;
    return u;
}

/* --- the expiry heap --------------------------------------------------------------------- */

static void heap_set(registry *r, size_t i, reg_user *u)
{
    r->heap[i] = u;
    u->heap_idx = i;
}

static void sift_up(registry *r, size_t i)
{
    reg_user *u = r->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (r->heap[p]->due_ms <= u->due_ms)
            break;
        heap_set(r, i, r->heap[p]);
        i = p;
    }
    heap_set(r, i, u);
}

static void sift_down(registry *r, size_t i)
{
    reg_user *u = r->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->heap_len)
            break;
        if (c + 1 < r->heap_len && r->heap[c + 1]->due_ms < r->heap[c]->due_ms)
            c++;
        if (r->heap[c]->due_ms >= u->due_ms)
            break;
        heap_set(r, i, r->heap[c]);
        i = c;
    }
    heap_set(r, i, u);
}

void registry_schedule(registry *r, reg_user *u, int64_t due_ms)
{
    if (u->heap_idx != REG_NOT_SCHEDULED) {
        int64_t old = u->due_ms;
        u->due_ms = due_ms;
        if (due_ms < old)
            sift_up(r, u->heap_idx);
        else
            sift_down(r, u->heap_idx);
        return;
    }
    if (r->heap_len == r->heap_cap) {
        r->heap_cap = r->heap_cap ? r->heap_cap * 2 : 64;
        r->heap = mem_realloc(r->heap, r->heap_cap * sizeof(*r->heap));
    }
    u->due_ms = due_ms;
    heap_set(r, r->heap_len++, u);
    sift_up(r, u->heap_idx);
}

void registry_unschedule(registry *r, reg_user *u)
{
    size_t i = u->heap_idx;
    if (i == REG_NOT_SCHEDULED)
        return;
    u->heap_idx = REG_NOT_SCHEDULED;
    reg_user *last = r->heap[--r->heap_len];
    if (i == r->heap_len)
        return;
    heap_set(r, i, last);
    sift_up(r, i);
    sift_down(r, last->heap_idx);
}

reg_user *registry_pop_due(registry *r, int64_t now_ms)
{
    if (r->heap_len == 0 || r->heap[0]->due_ms > now_ms)
        return NULL;
    reg_user *u = r->heap[0];
    registry_unschedule(r, u);
    return u;
}

void registry_foreach(registry *r, void (*fn)(reg_user *u, void *ud), void *ud)
{
    for (size_t i = 0; i < r->n_buckets; i++)
        for (reg_user *u = r->buckets[i]; u != NULL; u = u->chain)
            fn(u, ud);
}
