/* table.c: chained hash tables (see table.h). */
#include "table.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

uint32_t table_hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

void u64tab_init(u64tab *t)
{
    t->n_buckets = 16;
    t->buckets = mem_calloc(t->n_buckets, sizeof(*t->buckets));
    t->n = 0;
}

void u64tab_clear(u64tab *t)
{
    for (size_t i = 0; i < t->n_buckets; i++) {
        u64tab_node *n = t->buckets[i];
        while (n != NULL) {
            u64tab_node *next = n->next;
            free(n);
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->n_buckets = 0;
    t->n = 0;
}

static void u64tab_grow(u64tab *t)
{
    size_t nb = t->n_buckets * 2;
    u64tab_node **b = mem_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->n_buckets; i++) {
        u64tab_node *n = t->buckets[i];
        while (n != NULL) {
            u64tab_node *next = n->next;
            size_t j = mix64(n->key) & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = nb;
}

void *u64tab_get(const u64tab *t, uint64_t key)
{
    for (u64tab_node *n = t->buckets[mix64(key) & (t->n_buckets - 1)]; n; n = n->next)
        if (n->key == key)
            return n->value;
    return NULL;
}

void *u64tab_put(u64tab *t, uint64_t key, void *value)
{
    size_t i = mix64(key) & (t->n_buckets - 1);
    for (u64tab_node *n = t->buckets[i]; n; n = n->next)
        if (n->key == key) {
            void *old = n->value;
            n->value = value;
            return old;
        }
    u64tab_node *n = mem_alloc(sizeof(*n));
    n->key = key;
    n->value = value;
    n->next = t->buckets[i];
    t->buckets[i] = n;
    if (++t->n > t->n_buckets)
        u64tab_grow(t);
    return NULL;
}

void *u64tab_del(u64tab *t, uint64_t key)
{
    u64tab_node **pp = &t->buckets[mix64(key) & (t->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->key == key) {
            u64tab_node *n = *pp;
            void *v = n->value;
            *pp = n->next;
            free(n);
            t->n--;
            return v;
        }
    return NULL;
}

bool u64tab_any(const u64tab *t, size_t *cursor, uint64_t *key)
{
    if (t->n == 0)
        return false;
    for (size_t k = 0; k < t->n_buckets; k++) {
        size_t i = (*cursor + k) & (t->n_buckets - 1);
        if (t->buckets[i] != NULL) {
            *key = t->buckets[i]->key;
            *cursor = i + 1;
            return true;
        }
    }
    return false;
}

void strtab_init(strtab *t)
{
    t->n_buckets = 16;
    t->buckets = mem_calloc(t->n_buckets, sizeof(*t->buckets));
    t->n = 0;
}

void strtab_clear(strtab *t)
{
    for (size_t i = 0; i < t->n_buckets; i++) {
        strtab_node *n = t->buckets[i];
        while (n != NULL) {
            strtab_node *next = n->next;
            free(n);
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->n_buckets = 0;
    t->n = 0;
}

static void strtab_grow(strtab *t)
{
    size_t nb = t->n_buckets * 2;
    strtab_node **b = mem_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->n_buckets; i++) {
        strtab_node *n = t->buckets[i];
        while (n != NULL) {
            strtab_node *next = n->next;
            size_t j = n->hash & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = nb;
}

void *strtab_get(const strtab *t, const char *key)
{
    uint32_t h = table_hash_str(key);
    for (strtab_node *n = t->buckets[h & (t->n_buckets - 1)]; n; n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0)
            return n->value;
    return NULL;
}

void *strtab_put(strtab *t, const char *key, void *value)
{
    uint32_t h = table_hash_str(key);
    size_t i = h & (t->n_buckets - 1);
    for (strtab_node *n = t->buckets[i]; n; n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0) {
            void *old = n->value;
            n->value = value;
            return old;
        }
    size_t len = strlen(key);
    strtab_node *n = mem_alloc(sizeof(*n) + len + 1);
    memcpy(n->key, key, len + 1);
    n->hash = h;
    n->value = value;
    n->next = t->buckets[i];
    t->buckets[i] = n;
    if (++t->n > t->n_buckets)
        strtab_grow(t);
    return NULL;
}

void *strtab_del(strtab *t, const char *key)
{
    uint32_t h = table_hash_str(key);
    strtab_node **pp = &t->buckets[h & (t->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0) {
            strtab_node *n = *pp;
            void *v = n->value;
            *pp = n->next;
            free(n);
            t->n--;
            return v;
        }
    return NULL;
}

void strtab_each(const strtab *t, bool (*fn)(const char *key, void *value, void *ud), void *ud)
{
    for (size_t i = 0; i < t->n_buckets; i++)
        for (strtab_node *n = t->buckets[i]; n; n = n->next)
            if (!fn(n->key, n->value, ud))
                return;
}
