/*
 * table.h: the two hash tables svc-messaging needs, chained with power-of-two bucket arrays
 * that double when the load passes 1:
 *
 *   u64tab  uint64_t key -> void *value (chat ids, message ids, pending loads)
 *   strtab  NUL-terminated string key (copied) -> void *value (user ids)
 *
 * Single-threaded: the owner serializes access (a loop, or a lock). Values are not owned.
 */
#ifndef MSG_TABLE_H
#define MSG_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct u64tab_node {
    struct u64tab_node *next;
    uint64_t key;
    void *value;
} u64tab_node;

typedef struct u64tab {
    u64tab_node **buckets; /* n_buckets heads */
    size_t n_buckets;      /* power of two */
    size_t n;              /* entries */
} u64tab;

void u64tab_init(u64tab *t);
/* Frees the nodes (not the values). */
void u64tab_clear(u64tab *t);
void *u64tab_get(const u64tab *t, uint64_t key);
/* Sets |key| to |value|; returns the previous value or NULL. */
void *u64tab_put(u64tab *t, uint64_t key, void *value);
/* Removes |key|; returns its value or NULL. */
void *u64tab_del(u64tab *t, uint64_t key);
/* Any one entry's key (for eviction), false when empty. |*cursor| walks the buckets. */
bool u64tab_any(const u64tab *t, size_t *cursor, uint64_t *key);

typedef struct strtab_node {
    struct strtab_node *next;
    uint32_t hash;
    void *value;
    char key[]; /* NUL-terminated copy */
} strtab_node;

typedef struct strtab {
    strtab_node **buckets;
    size_t n_buckets;
    size_t n;
} strtab;

void strtab_init(strtab *t);
void strtab_clear(strtab *t);
void *strtab_get(const strtab *t, const char *key);
void *strtab_put(strtab *t, const char *key, void *value);
void *strtab_del(strtab *t, const char *key);
/* Calls |fn| for each entry until it returns false. |fn| must not modify |t|. */
void strtab_each(const strtab *t, bool (*fn)(const char *key, void *value, void *ud), void *ud);

uint32_t table_hash_str(const char *s);

#endif /* MSG_TABLE_H */
