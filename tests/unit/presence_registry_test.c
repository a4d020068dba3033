/*
 * Unit tests of svc-presence's registry (registry.c): the watched-user table, the refresh FIFO
 * and the expiry heap, including a randomized check of the heap against a plain scan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../svc-presence/keys.c"
#include "../../svc-presence/registry.c"
#include "../../svc-presence/validate.c"

static reg_user *acq(registry *r, const char *id)
{
    return registry_acquire(r, id, strlen(id));
}

static void test_table(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    reg_user *a = acq(&r, "alice");
    assert_non_null(a);
    assert_false(a->known);
    assert_int_equal(a->refs, 1);
    assert_ptr_equal(acq(&r, "alice"), a);
    assert_int_equal(a->refs, 2);
    assert_int_equal(r.n_users, 1);
    assert_ptr_equal(registry_find(&r, "alice", 5), a);
    assert_null(registry_find(&r, "alic", 4));
    /* grows past its first bucket count and finds everything again */
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        acq(&r, id);
    }
    assert_int_equal(r.n_users, 1001);
    assert_true(r.n_buckets >= 1001);
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        reg_user *u = registry_find(&r, id, strlen(id));
        assert_non_null(u);
        assert_string_equal(u->id, id);
    }
    registry_release(&r, a);
    assert_non_null(registry_find(&r, "alice", 5));
    registry_release(&r, a);
    assert_null(registry_find(&r, "alice", 5));
    assert_int_equal(r.n_users, 1000);
    registry_clear(&r);
}

static void test_dirty_fifo(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    reg_user *a = acq(&r, "a"), *b = acq(&r, "b"), *c = acq(&r, "c");
    registry_mark_dirty(&r, b);
    registry_mark_dirty(&r, a);
    registry_mark_dirty(&r, b); /* once only */
    registry_mark_dirty(&r, c);
    assert_int_equal(r.n_dirty, 3);
    assert_ptr_equal(registry_pop_dirty(&r), b);
    assert_false(b->dirty);
    /* a user released while queued leaves the queue */
    registry_release(&r, a);
    assert_int_equal(r.n_dirty, 1);
    assert_ptr_equal(registry_pop_dirty(&r), c);
    assert_null(registry_pop_dirty(&r));
    registry_mark_dirty(&r, b);
    assert_ptr_equal(registry_pop_dirty(&r), b);
    registry_clear(&r);
}

static void test_heap(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    reg_user *a = acq(&r, "a"), *b = acq(&r, "b"), *c = acq(&r, "c");
    registry_schedule(&r, a, 300);
    registry_schedule(&r, b, 100);
    registry_schedule(&r, c, 200);
    assert_null(registry_pop_due(&r, 99));
    assert_ptr_equal(registry_pop_due(&r, 100), b);
    assert_int_equal(b->heap_idx, REG_NOT_SCHEDULED);
    registry_schedule(&r, a, 50); /* moved earlier */
    assert_ptr_equal(registry_pop_due(&r, 1000), a);
    registry_schedule(&r, c, 5000); /* moved later */
    assert_null(registry_pop_due(&r, 1000));
    registry_unschedule(&r, c);
    registry_unschedule(&r, c); /* twice is fine */
    assert_null(registry_pop_due(&r, 10000));
    registry_schedule(&r, b, 7);
    registry_release(&r, b); /* released users leave the heap */
    assert_int_equal(r.heap_len, 0);
    registry_clear(&r);
}

static void test_heap_random(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    enum { N = 300 };
    reg_user *u[N];
    int64_t due[N];
    char id[16];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        u[i] = acq(&r, id);
        due[i] = -1;
    }
    srand(12345);
    for (int step = 0; step < 20000; step++) {
        int i = rand() % N;
        int op = rand() % 4;
        if (op < 2) {
            due[i] = rand() % 100000;
            registry_schedule(&r, u[i], due[i]);
        } else if (op == 2) {
            due[i] = -1;
            registry_unschedule(&r, u[i]);
        } else {
            int64_t now = rand() % 100000;
            /* expected: the earliest due <= now */
            int best = -1;
            for (int k = 0; k < N; k++)
                if (due[k] >= 0 && due[k] <= now && (best < 0 || due[k] < due[best]))
                    best = k;
            reg_user *got = registry_pop_due(&r, now);
            if (best < 0) {
                assert_null(got);
            } else {
                assert_non_null(got);
                int gi = (int)(got - u[0]); /* not contiguous: find it */
                for (gi = 0; gi < N && u[gi] != got; gi++)
                    ;
                assert_true(gi < N);
                assert_int_equal(due[gi], due[best]);
                due[gi] = -1;
            }
        }
    }
    registry_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_dirty_fifo),
        cmocka_unit_test(test_heap),
        cmocka_unit_test(test_heap_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
