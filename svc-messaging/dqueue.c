/* dqueue.c: a session's delivery queue (see dqueue.h). */
#include "dqueue.h"

#include <stdlib.h>

#include "mem.h"

void dqueue_init(dqueue *q, uint32_t cap)
{
    *q = (dqueue){.cap = cap ? cap : 1};
}

dq_item *dqueue_at(dqueue *q, uint32_t i)
{
    return &q->q[(q->head + i) & (q->alloc - 1)];
}

void dqueue_clear(dqueue *q, dqueue_release_cb release)
{
    for (uint32_t i = 0; i < q->count; i++)
        if (release != NULL)
            release(dqueue_at(q, i)->ev);
    free(q->q);
    q->q = NULL;
    q->alloc = q->head = q->count = q->written = 0;
    q->resend_due = false;
}

bool dqueue_push(dqueue *q, void *ev, uint64_t *seq)
{
    *seq = ++q->last_seq;
    if (q->count >= q->cap)
        return false;
    if (q->count == q->alloc) {
        uint32_t n = q->alloc ? q->alloc * 2 : 8;
        dq_item *ring = mem_alloc(n * sizeof(*ring));
        for (uint32_t i = 0; i < q->count; i++)
            ring[i] = *dqueue_at(q, i);
        free(q->q);
        q->q = ring;
        q->alloc = n;
        q->head = 0;
    }
    *dqueue_at(q, q->count) = (dq_item){.seq = *seq, .ev = ev};
    q->count++;
    return true;
}

int dqueue_ack(dqueue *q, uint64_t seq, dqueue_release_cb release)
{
    if (seq > q->last_seq)
        return -1;
    if (seq <= q->acked)
        return 0;
    q->acked = seq;
    while (q->count > 0 && dqueue_at(q, 0)->seq <= seq) {
        if (release != NULL)
            release(dqueue_at(q, 0)->ev);
        q->head = (q->head + 1) & (q->alloc - 1);
        q->count--;
        if (q->written > 0)
            q->written--;
    }
    return 0;
}

dq_item *dqueue_next_new(dqueue *q)
{
    return q->written < q->count ? dqueue_at(q, q->written) : NULL;
}

void dqueue_mark_written(dqueue *q, int64_t now)
{
    dqueue_at(q, q->written)->sent_at = now;
    q->written++;
}

dq_item *dqueue_next_due(dqueue *q)
{
    for (uint32_t i = 0; i < q->written; i++)
        if (dqueue_at(q, i)->due)
            return dqueue_at(q, i);
    q->resend_due = false;
    return NULL;
}

void dqueue_mark_resent(dq_item *it, int64_t now)
{
    it->due = false;
    it->sent_at = now;
    it->resends++;
}

dq_item *dqueue_check_timeouts(dqueue *q, int64_t now, uint32_t ack_timeout_ms,
                               uint32_t max_resends)
{
    for (uint32_t i = 0; i < q->written; i++) {
        dq_item *it = dqueue_at(q, i);
        if (it->due || now - it->sent_at < (int64_t)ack_timeout_ms)
            continue;
        if (it->resends >= max_resends)
            return it;
        it->due = true;
        q->resend_due = true;
    }
    return NULL;
}

uint64_t dqueue_last_written_seq(const dqueue *q)
{
    if (q->written < q->count)
        return q->q[(q->head + q->written) & (q->alloc - 1)].seq - 1;
    return q->last_seq;
}
