/*
 * waiters.h: read-your-writes. A write RPC registers a waiter for the event_id it produces;
 * the materializer thread signals it once the transaction that applied the event committed.
 *
 * The table is shared by all threads (one mutex) and bounded: at most |cap| waiters exist at
 * once; beyond that waiters_add() refuses (the RPC answers UNAVAILABLE rather than queue
 * without bound). A waiter belongs to the worker loop that added it: its callback runs there
 * (the materializer wakes it with event_active, which libevent makes thread-safe), and it is
 * removed and freed there.
 */
#ifndef CHATS_WAITERS_H
#define CHATS_WAITERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

typedef struct waiters waiters;
typedef struct waiter waiter;

/* Called on the waiter's loop once its event was applied. The waiter is already out of the
 * table; free it with waiter_free() (from here or later). */
typedef void (*waiter_cb)(waiter *w, void *user_data);

/* Creates a table for at most |cap| waiters. */
waiters *waiters_new(size_t cap);
void waiters_free(waiters *t);

/* Registers a waiter for |event_id| on |base|. Returns NULL when the table is full. */
waiter *waiters_add(waiters *t, struct event_base *base, uint64_t event_id, waiter_cb cb,
                    void *user_data);

/* Removes |w| from the table (if still there) and frees it; its callback will not run. Call
 * on the waiter's loop. */
void waiter_free(waiter *w);

/* Materializer side, any thread: wakes the waiter of |event_id| if there is one. */
void waiters_signal(waiters *t, uint64_t event_id);

/* Waiters registered now. */
size_t waiters_count(waiters *t);

#endif /* CHATS_WAITERS_H */
