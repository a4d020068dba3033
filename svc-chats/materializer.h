/*
 * materializer.h: chat.events -> PostgreSQL, on a thread of its own.
 *
 * The thread owns an event_base, a Kafka consumer (group settings.group, regex subscription
 * MATERIALIZER_TOPICS: the local topic and the mirrored "<site>.chat.events" ones), a
 * two-connection PostgreSQL pool (one held for batch transactions, one for offset reads) and
 * a Redis client (cache + member sets). Nothing it does blocks the RPC workers.
 *
 * Batches: records are decoded as they arrive into the filling batch. When no transaction is
 * running the batch is written at once; while one runs, records keep filling the next batch
 * (written whole when the transaction ends), and once that holds 10 x batch_max records the
 * consumer is paused (back-pressure; librdkafka drops its prefetch on pause, so not at every
 * batch) until the running transaction ends. One transaction per batch: BEGIN; chats; members
 * (LWW); member counts; messages (LWW, with h); kafka_offsets (next offset per partition); COMMIT.
 * After COMMIT: waiters of the batch's event_ids are signalled, member sets and the message
 * cache in Redis are updated (one pipelined script call per chat of the batch). A failed
 * transaction is retried (same batch) after a backoff.
 *
 * Offsets live only in PostgreSQL: on assignment the consumer is positioned at the stored
 * next_offset of each partition (the beginning when none), never at Kafka's committed offset.
 */
#ifndef CHATS_MATERIALIZER_H
#define CHATS_MATERIALIZER_H

#include "settings.h"
#include "waiters.h"

#define MATERIALIZER_TOPICS "^([a-z0-9-]+\\.)?chat\\.events$"

typedef struct materializer materializer;

/* Starts the thread. |s| and |w| must outlive it. Returns 0 or -1. */
int materializer_start(materializer **out, const settings *s, waiters *w);

/* Leaves the group, stops the thread and frees everything. */
void materializer_stop(materializer *m);

#endif /* CHATS_MATERIALIZER_H */
