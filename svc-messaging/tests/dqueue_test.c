/* Unit tests of svc-messaging/dqueue.c: session_seq assigned at push (dropped frames too),
 * cumulative acks, write/resend bookkeeping, stuck detection, the pong's last_session_seq, and
 * ring growth with wrap-around. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dqueue.h"

static int released[256];
static int n_released;

static void release(void *ev)
{
    released[n_released++] = (int)(intptr_t)ev;
}

static void *ev(int i)
{
    return (void *)(intptr_t)i;
}

static int setup(void **state)
{
    (void)state;
    n_released = 0;
    return 0;
}

static void test_seq_at_push_and_drops_use_numbers(void **state)
{
    (void)state;
    dqueue q;
    dqueue_init(&q, 4);
    uint64_t seq;
    for (int i = 1; i <= 4; i++) {
        assert_true(dqueue_push(&q, ev(i), &seq));
        assert_int_equal(seq, i);
    }
    /* Full: dropped, but numbered 5 and 6 (the device will see 4 -> 7). */
    assert_false(dqueue_push(&q, ev(5), &seq));
    assert_int_equal(seq, 5);
    assert_false(dqueue_push(&q, ev(6), &seq));
    assert_int_equal(seq, 6);
    assert_int_equal(q.count, 4);
    assert_int_equal(dqueue_ack(&q, 2, release), 0);
    assert_int_equal(n_released, 2);
    assert_true(dqueue_push(&q, ev(7), &seq));
    assert_int_equal(seq, 7);
    uint64_t want[] = {3, 4, 7};
    for (uint32_t i = 0; i < q.count; i++)
        assert_int_equal(dqueue_at(&q, i)->seq, want[i]);
    dqueue_clear(&q, release);
    assert_int_equal(n_released, 5);
}

static void test_cumulative_ack(void **state)
{
    (void)state;
    dqueue q;
    dqueue_init(&q, 16);
    uint64_t seq;
    for (int i = 1; i <= 5; i++)
        dqueue_push(&q, ev(i), &seq);
    for (int i = 0; i < 3; i++)
        dqueue_mark_written(&q, 100);
    assert_int_equal(q.written, 3);
    /* Above the last assigned number: a protocol error, nothing changes. */
    assert_int_equal(dqueue_ack(&q, 6, release), -1);
    assert_int_equal(q.count, 5);
    assert_int_equal(dqueue_ack(&q, 2, release), 0);
    assert_int_equal(q.count, 3);
    assert_int_equal(q.written, 1);
    assert_int_equal(n_released, 2);
    assert_int_equal(released[0], 1);
    assert_int_equal(released[1], 2);
    /* An older or repeated ack changes nothing. */
    assert_int_equal(dqueue_ack(&q, 1, release), 0);
    assert_int_equal(dqueue_ack(&q, 2, release), 0);
    assert_int_equal(q.count, 3);
    /* Acking beyond what was written drops unwritten frames too (the device has them). */
    assert_int_equal(dqueue_ack(&q, 5, release), 0);
    assert_int_equal(q.count, 0);
    assert_int_equal(q.written, 0);
    assert_null(dqueue_next_new(&q));
    assert_int_equal(n_released, 5);
    dqueue_clear(&q, release);
    assert_int_equal(n_released, 5);
}

static void test_write_order_and_pong_seq(void **state)
{
    (void)state;
    dqueue q;
    dqueue_init(&q, 2);
    uint64_t seq;
    assert_int_equal(dqueue_last_written_seq(&q), 0);
    dqueue_push(&q, ev(1), &seq);
    dqueue_push(&q, ev(2), &seq);
    dqueue_push(&q, ev(3), &seq); /* dropped */
    /* Nothing written: everything below seq 1 is written or dropped. */
    assert_int_equal(dqueue_last_written_seq(&q), 0);
    assert_int_equal(dqueue_next_new(&q)->seq, 1);
    dqueue_mark_written(&q, 10);
    assert_int_equal(dqueue_last_written_seq(&q), 1);
    assert_int_equal(dqueue_next_new(&q)->seq, 2);
    dqueue_mark_written(&q, 11);
    assert_null(dqueue_next_new(&q));
    /* All written: the tail drop (3) shows in the pong. */
    assert_int_equal(dqueue_last_written_seq(&q), 3);
    dqueue_clear(&q, release);
}

static void test_resends_then_stuck(void **state)
{
    (void)state;
    dqueue q;
    dqueue_init(&q, 8);
    uint64_t seq;
    dqueue_push(&q, ev(1), &seq);
    dqueue_push(&q, ev(2), &seq);
    dqueue_push(&q, ev(3), &seq);
    dqueue_mark_written(&q, 1000);
    dqueue_mark_written(&q, 1500);
    /* Frame 3 is not written: never due. Before the timeout nothing is due. */
    assert_null(dqueue_check_timeouts(&q, 1999, 1000, 2));
    assert_false(q.resend_due);
    assert_null(dqueue_check_timeouts(&q, 2000, 1000, 2));
    assert_true(q.resend_due);
    dq_item *it = dqueue_next_due(&q);
    assert_non_null(it);
    assert_int_equal(it->seq, 1);
    dqueue_mark_resent(it, 2000);
    assert_null(dqueue_next_due(&q));
    assert_false(q.resend_due);
    /* Frame 2 times out; frame 1 was just resent. */
    assert_null(dqueue_check_timeouts(&q, 2500, 1000, 2));
    it = dqueue_next_due(&q);
    assert_int_equal(it->seq, 2);
    dqueue_mark_resent(it, 2500);
    /* Frame 1: second resend, then stuck after max_resends (2). */
    assert_null(dqueue_check_timeouts(&q, 3000, 1000, 2));
    it = dqueue_next_due(&q);
    assert_int_equal(it->seq, 1);
    assert_int_equal(it->resends, 1);
    dqueue_mark_resent(it, 3000);
    assert_int_equal(it->resends, 2);
    it = dqueue_check_timeouts(&q, 4000, 1000, 2);
    assert_non_null(it);
    assert_int_equal(it->seq, 1);
    /* An ack clears it: no longer stuck. */
    dqueue_ack(&q, 1, release);
    assert_null(dqueue_check_timeouts(&q, 4000, 1000, 2));
    dqueue_clear(&q, release);
}

static void test_ring_grows_and_wraps(void **state)
{
    (void)state;
    dqueue q;
    dqueue_init(&q, 100);
    uint64_t seq, next_ack = 0;
    int pushed = 0;
    /* Push and ack in waves so head wraps around while the ring grows 8 -> 16 -> ... */
    for (int wave = 0; wave < 20; wave++) {
        for (int i = 0; i < 7; i++) {
            assert_true(dqueue_push(&q, ev(++pushed), &seq));
            assert_int_equal(seq, pushed);
        }
        for (uint32_t i = 0; i < q.count; i++)
            assert_int_equal(dqueue_at(&q, i)->seq, next_ack + 1 + i);
        next_ack += 6; /* the queue grows by one frame per wave */
        dqueue_ack(&q, next_ack, release);
        assert_true(q.alloc >= q.count);
        assert_true((q.alloc & (q.alloc - 1)) == 0);
    }
    assert_int_equal(q.count, 20);
    assert_int_equal(q.alloc, 32);
    for (int i = 0; i < n_released; i++)
        assert_int_equal(released[i], i + 1);
    dqueue_clear(&q, release);
    assert_int_equal(n_released, pushed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_seq_at_push_and_drops_use_numbers, setup),
        cmocka_unit_test_setup(test_cumulative_ack, setup),
        cmocka_unit_test_setup(test_write_order_and_pong_seq, setup),
        cmocka_unit_test_setup(test_resends_then_stuck, setup),
        cmocka_unit_test_setup(test_ring_grows_and_wraps, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
