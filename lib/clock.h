/* clock.h: milliseconds on the monotonic and the wall clock, and libevent timeouts in
 * milliseconds. Timers and deadlines use the monotonic clock; wall time is for timestamps
 * that leave the process (Snowflake ids, produced_at_ms, logs). */
#ifndef CHAT_CLOCK_H
#define CHAT_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>

static inline int64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Nanoseconds on the monotonic clock, for durations under a millisecond. */
static inline int64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A relative timeout of |ms| milliseconds for event_add(); negative counts as 0. */
static inline struct timeval clock_ms_tv(int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* event_add() with a relative timeout of |ms| milliseconds (negative: 0). */
static inline int clock_event_add_ms(struct event *ev, int64_t ms)
{
    struct timeval tv = clock_ms_tv(ms);
    return event_add(ev, &tv);
}

#endif
