/*
 * membership.h: who is in which chat, as far as this process knows.
 *
 * The cache is process-wide (a read-write lock; the send path on every worker reads it, the
 * event consumer writes it). It is fed by the log itself: chat_created gives a chat's full
 * member list, members_added / members_removed change it. Each (chat, user) keeps the
 * (produced_at_ms, event_id) of the newest event naming it, and a newer one wins (events.proto:
 * last writer wins, order-insensitive), so the local topic and the mirror may interleave.
 *
 * A chat first seen through members_added/removed is incomplete: the cache knows those users
 * but not the rest. A miss (unknown or incomplete chat) is loaded with ChatsService.GetChat,
 * called with a service token (sub "service:svc-messaging") over a per-loop channel
 * (membership_loader); the snapshot fills in the users no event has named yet (events win).
 *
 * Bounded: at most |max_chats| chats; beyond that an arbitrary chat is evicted (it is loaded
 * again on its next miss). Member sets handed out are immutable and reference-counted, so a
 * reader keeps a consistent snapshot while the cache moves on.
 */
#ifndef MSG_MEMBERSHIP_H
#define MSG_MEMBERSHIP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "chat/v1/chats.pb-c.h"
#include "chat/v1/events.pb-c.h"

/* An immutable, sorted set of user ids. */
typedef struct member_set {
    atomic_int refs; /* owners */
    size_t n;        /* members */
    char **ids;      /* sorted (strcmp), point into the same allocation */
} member_set;

void member_set_ref(member_set *s);
void member_set_unref(member_set *s);
bool member_set_has(const member_set *s, const char *user);

typedef struct membership membership;

int membership_new(membership **out, size_t max_chats);
void membership_free(membership *m);

enum {
    MEMBERSHIP_UNKNOWN = 0, /* chat not (completely) known: load it */
    MEMBERSHIP_MEMBER = 1,
    MEMBERSHIP_NOT_MEMBER = 2,
};

/* Whether |user| is a member of |chat_id|. Any thread. */
int membership_check(membership *m, uint64_t chat_id, const char *user);

/* The chat's current members (a new reference) or NULL when the chat is not complete. */
member_set *membership_get(membership *m, uint64_t chat_id);

/* Applies a chat_created / members_added / members_removed event (others are ignored). */
void membership_apply_event(membership *m, const Chat__V1__ChatEvent *ev);

/* Applies a GetChat snapshot; users already named by an event keep the event's verdict. */
void membership_apply_snapshot(membership *m, const Chat__V1__Chat *chat);

/* --- loading misses from svc-chats --------------------------------------------------------- */

typedef struct membership_loader membership_loader;

/* Creates a loader on |base| talking to |chats_addr| (NULL: every load fails NOT_FOUND at once,
 * i.e. membership comes from the log only). Tokens are minted with |secret|. */
int membership_loader_new(membership_loader **out, struct event_base *base, membership *m,
                          const char *chats_addr, const char *secret, uint32_t max_loads);
/* Cancels loads in flight (their callbacks run with RPC_STATUS_CANCELLED) and frees. */
void membership_loader_free(membership_loader *l);

/* Whether loads ask svc-chats (false without a chats address: they fail NOT_FOUND at once). */
bool membership_loader_remote(const membership_loader *l);

/* Load result: a gRPC status code; OK means the cache now holds the chat. */
typedef void (*membership_load_cb)(int code, void *user_data);

/* Loads |chat_id| (coalescing concurrent loads of one chat). |cb| always runs later on the
 * loop, never inside this call. Returns 0, or -1 when max_loads are in flight (cb not called). */
int membership_load(membership_loader *l, uint64_t chat_id, membership_load_cb cb, void *user_data);

#endif /* MSG_MEMBERSHIP_H */
