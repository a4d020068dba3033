/*
 * registry.h: the users watched on one worker. For each user: the presence last read from
 * Redis (what watchers are told), the watcher slots pointing at it, whether it is queued for a
 * refresh, and when its next device expiry is due (the expiry backstop).
 *
 * Pure data structures (a chained hash table, a FIFO, an indexed min-heap); single-threaded,
 * owned by one worker's watch hub (watch.h). Memory: one reg_user per distinct watched user;
 * the hub bounds how many watchers (and so users) a worker holds.
 */
#ifndef PRESENCE_REGISTRY_H
#define PRESENCE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Intrusive doubly linked list node / head. */
typedef struct reg_link {
    struct reg_link *prev;
    struct reg_link *next;
} reg_link;

static inline void reg_link_init(reg_link *l)
{
    l->prev = l->next = l;
}

static inline bool reg_link_empty(const reg_link *head)
{
    return head->next == head;
}

static inline bool reg_link_linked(const reg_link *l)
{
    return l->next != l;
}

/* Appends |l| at the tail of |head|. */
static inline void reg_link_append(reg_link *head, reg_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Unlinks |l| (which must be linked) and leaves it self-linked. */
static inline void reg_link_remove(reg_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    reg_link_init(l);
}

#define REG_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define REG_NOT_SCHEDULED ((size_t)-1)

typedef struct reg_user {
    char *id;               /* user id, NUL-terminated, owned */
    size_t id_len;          /* bytes in |id| */
    uint32_t hash;          /* keys_hash(id) */
    struct reg_user *chain; /* next user in the same bucket */
    reg_link slots;         /* watcher slots on this user (nodes owned by watch.c) */
    size_t refs;            /* registry_acquire() count; the user is freed at 0 */
    bool known;             /* devices/last_seen_ms hold a read made since the last resync */
    uint32_t devices;       /* online devices as last read */
    int64_t last_seen_ms;   /* last-seen as last read, Unix ms, 0 = never */
    bool dirty;             /* queued in the registry's refresh FIFO */
    reg_link dirty_link;    /* node in that FIFO */
    size_t heap_idx;        /* index in the expiry heap or REG_NOT_SCHEDULED */
    int64_t due_ms;         /* when the backstop re-reads it (monotonic ms) */
} reg_user;

typedef struct registry {
    reg_user **buckets; /* hash table, n_buckets a power of two */
    size_t n_buckets;   /* allocated buckets */
    size_t n_users;     /* users in the table */
    reg_link dirty;     /* refresh FIFO */
    size_t n_dirty;     /* users in the FIFO */
    reg_user **heap;    /* min-heap on due_ms */
    size_t heap_len;    /* entries in use */
    size_t heap_cap;    /* allocated entries */
} registry;

/* Initialises an empty registry. */
void registry_init(registry *r);

/* Frees every user (their slot lists must already be empty or abandoned) and the tables. */
void registry_clear(registry *r);

/* The user |id| (|len| bytes) or NULL. */
reg_user *registry_find(const registry *r, const char *id, size_t len);

/* Finds or creates the user |id| (copied) and takes one reference. A new user is unknown and
 * not dirty. */
reg_user *registry_acquire(registry *r, const char *id, size_t len);

/* Drops one reference; at zero the user leaves the table, the FIFO and the heap and is
 * freed. */
void registry_release(registry *r, reg_user *u);

/* Queues |u| for a refresh (once; FIFO order). */
void registry_mark_dirty(registry *r, reg_user *u);

/* Takes the oldest queued user off the FIFO (clearing its dirty flag), or NULL. */
reg_user *registry_pop_dirty(registry *r);

/* Schedules (or moves) |u| to be due at |due_ms|. */
void registry_schedule(registry *r, reg_user *u, int64_t due_ms);

/* Removes |u| from the schedule if it is there. */
void registry_unschedule(registry *r, reg_user *u);

/* Takes the earliest scheduled user with due_ms <= |now_ms| off the schedule, or NULL. */
reg_user *registry_pop_due(registry *r, int64_t now_ms);

/* Calls |fn| for every user. |fn| must not add or remove users. */
void registry_foreach(registry *r, void (*fn)(reg_user *u, void *ud), void *ud);

#endif /* PRESENCE_REGISTRY_H */
