/* waiters.c: the read-your-writes table (see waiters.h). Chained hash on event_id. */
#include "waiters.h"

#include <pthread.h>
#include <stdlib.h>

#include "mem.h"

struct waiter {
    waiters *t;
    uint64_t event_id;
    struct event *ev; /* on the owner's loop; activated by waiters_signal */
    waiter_cb cb;
    void *ud;
    waiter *next; /* bucket chain */
    bool linked;  /* in the table */
};

struct waiters {
    pthread_mutex_t mu;
    size_t cap, count, nbuckets;
    waiter **buckets;
};

static size_t slot(const waiters *t, uint64_t id)
{
    id ^= id >> 33;
    id *= UINT64_C(0xff51afd7ed558ccd);
    id ^= id >> 33;
    return (size_t)(id % t->nbuckets);
}

waiters *waiters_new(size_t cap)
{
    waiters *t = mem_calloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    t->cap = cap;
    t->nbuckets = cap < 64 ? 64 : cap;
    t->buckets = mem_calloc(t->nbuckets, sizeof(*t->buckets));
    return t;
}

void waiters_free(waiters *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->buckets);
    free(t);
}

/* Caller holds the lock. */
static void unlink_locked(waiter *w)
{
    if (!w->linked)
        return;
    waiter **pp = &w->t->buckets[slot(w->t, w->event_id)];
    while (*pp != w)
        pp = &(*pp)->next;
    *pp = w->next;
    w->linked = false;
    w->t->count--;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    waiter *w = arg;
    w->cb(w, w->ud);
}

waiter *waiters_add(waiters *t, struct event_base *base, uint64_t event_id, waiter_cb cb,
                    void *user_data)
{
    waiter *w = mem_calloc(1, sizeof(*w));
    w->t = t;
    w->event_id = event_id;
    w->cb = cb;
    w->ud = user_data;
    w->ev = event_new(base, -1, 0, on_wake, w);
    if (w->ev == NULL)
        abort();
    pthread_mutex_lock(&t->mu);
    if (t->count >= t->cap) {
        pthread_mutex_unlock(&t->mu);
        event_free(w->ev);
        free(w);
        return NULL;
    }
    size_t s = slot(t, event_id);
    w->next = t->buckets[s];
    t->buckets[s] = w;
    w->linked = true;
    t->count++;
    pthread_mutex_unlock(&t->mu);
    return w;
}

void waiter_free(waiter *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->t->mu);
    unlink_locked(w);
    pthread_mutex_unlock(&w->t->mu);
    /* Out of the table: no thread can activate it any more; a pending activation is
     * dropped by event_free on this (the owner's) loop. */
    event_free(w->ev);
    free(w);
}

void waiters_signal(waiters *t, uint64_t event_id)
{
    pthread_mutex_lock(&t->mu);
    for (waiter *w = t->buckets[slot(t, event_id)]; w != NULL; w = w->next) {
        if (w->event_id == event_id) {
            unlink_locked(w);
            event_active(w->ev, EV_TIMEOUT, 0);
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

size_t waiters_count(waiters *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}
