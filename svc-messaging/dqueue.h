/*
 * dqueue.h: one session's delivery queue (session.c), pure logic with no I/O so it is unit
 * tested alone (svc-messaging/tests/dqueue_test.c).
 *
 * A ring of at most |cap| frames, each either queued (not written yet) or written and not yet
 * acknowledged; the first |written| frames of the ring have been written at least once. Grown
 * on demand from 8 slots (an idle session costs little), never beyond |cap| frames.
 *
 * session_seq is assigned at push, also to a frame dropped because the ring is full: the
 * device sees the gap in the numbers and fetches what it missed from svc-chats. Acks are
 * cumulative: ack N removes every frame with session_seq <= N (written or not: the device
 * said it has them). A written frame unacked for ack_timeout_ms becomes due for a resend with
 * the same session_seq; after max_resends resends the session is stuck (the caller closes it).
 *
 * Frames carry an opaque |ev| pointer; the queue never dereferences it and hands it to the
 * |release| callback when the frame leaves (ack or clear). Not thread-safe (one worker loop).
 */
#ifndef MSG_DQUEUE_H
#define MSG_DQUEUE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dq_item {
    uint64_t seq;     /* session_seq */
    void *ev;         /* the caller's event, owned by the queue until released */
    int64_t sent_at;  /* monotonic ms of the last write, 0 = not written */
    uint32_t resends; /* writes after the first */
    bool due;         /* to be written again */
} dq_item;

typedef struct dqueue {
    dq_item *q;        /* ring, NULL until the first push */
    uint32_t cap;      /* frames held at most (--queue-size) */
    uint32_t alloc;    /* allocated slots (power of two) */
    uint32_t head;     /* index of the oldest */
    uint32_t count;    /* frames held */
    uint32_t written;  /* the first |written| frames have been written at least once */
    uint64_t last_seq; /* highest session_seq assigned (dropped frames included) */
    uint64_t acked;    /* highest cumulative ack */
    bool resend_due;   /* some written frame is due */
} dqueue;

typedef void (*dqueue_release_cb)(void *ev);

/* An empty queue holding at most |cap| (>= 1) frames. */
void dqueue_init(dqueue *q, uint32_t cap);

/* Releases every frame held (|release| may be NULL) and frees the ring; the numbering stays. */
void dqueue_clear(dqueue *q, dqueue_release_cb release);

/* Assigns the next session_seq to *|seq|. Returns true when the frame was queued (the queue
 * now owns |ev|), false when it was dropped because the queue is full (|ev| stays the
 * caller's; the number is used up all the same). */
bool dqueue_push(dqueue *q, void *ev, uint64_t *seq);

/* Cumulative ack of |seq|. Returns -1 when |seq| is above the last assigned session_seq (a
 * protocol error; nothing changes), else 0: frames with session_seq <= |seq| are removed and
 * released. Acks at or below an earlier one change nothing. */
int dqueue_ack(dqueue *q, uint64_t seq, dqueue_release_cb release);

/* The i-th frame from the oldest (i < count). */
dq_item *dqueue_at(dqueue *q, uint32_t i);

/* The oldest frame not written yet, or NULL. */
dq_item *dqueue_next_new(dqueue *q);

/* Records that dqueue_next_new() was written at |now|. */
void dqueue_mark_written(dqueue *q, int64_t now);

/* The oldest written frame that is due for a resend, or NULL (which also clears
 * resend_due). */
dq_item *dqueue_next_due(dqueue *q);

/* Records that |it| (from dqueue_next_due) was written again at |now|. */
void dqueue_mark_resent(dq_item *it, int64_t now);

/* At |now|: marks written frames unacked for |ack_timeout_ms| as due. Returns the first such
 * frame that already had |max_resends| resends (the session is stuck: close it), or NULL. */
dq_item *dqueue_check_timeouts(dqueue *q, int64_t now, uint32_t ack_timeout_ms,
                               uint32_t max_resends);

/* Every frame up to this session_seq was written or dropped (PongFrame.last_session_seq). */
uint64_t dqueue_last_written_seq(const dqueue *q);

#endif /* MSG_DQUEUE_H */
