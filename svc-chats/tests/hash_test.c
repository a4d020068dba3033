/* Unit tests of svc-chats/hash.c: the range-hash term (chats.proto's definition, checked against
 * vectors computed independently with Python's hashlib) and the bucket bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hash.h"

static void test_hash_vectors(void **state)
{
    (void)state;
    /* int.from_bytes(sha256(struct.pack('>QIB', id, version, deleted)).digest()[:8], 'big') */
    assert_int_equal(hash_message(1, 1, false), 0x6d6ddee048b7bdfbULL);
    assert_int_equal(hash_message(382915382668861440ULL, 3, true), 0x8a9aa776ec93d4b3ULL);
    assert_int_equal(hash_message(UINT64_MAX, UINT32_MAX, false), 0xe8623dada26f4c4eULL);
}

static void test_hash_every_field_counts(void **state)
{
    (void)state;
    uint64_t base = hash_message(1000, 2, false);
    assert_int_not_equal(base, hash_message(1001, 2, false));
    assert_int_not_equal(base, hash_message(1000, 3, false));
    assert_int_not_equal(base, hash_message(1000, 2, true));
    assert_int_equal(base, hash_message(1000, 2, false));
}

/* Buckets tile [from, to) exactly: contiguous, ends match, sizes differ by at most one. */
static void check_tiling(uint64_t from, uint64_t to, uint32_t n)
{
    uint64_t prev_hi = from, min = UINT64_MAX, max = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t lo, hi;
        hash_bucket_bounds(from, to, n, i, &lo, &hi);
        assert_int_equal(lo, prev_hi);
        assert_true(hi >= lo);
        uint64_t size = hi - lo;
        min = size < min ? size : min;
        max = size > max ? size : max;
        prev_hi = hi;
    }
    assert_int_equal(prev_hi, to);
    assert_true(max - min <= 1);
}

static void test_bucket_bounds_tile_the_range(void **state)
{
    (void)state;
    check_tiling(0, 10, 1);
    check_tiling(0, 10, 3);
    check_tiling(5, 6, 4); /* fewer ids than buckets: empty buckets, still contiguous */
    check_tiling(100, 1000, 256);
    /* The whole id space: i * D overflows 64 bits without 128-bit math. */
    check_tiling(0, UINT64_MAX, 3);
    check_tiling(0, UINT64_MAX, 256);
    check_tiling(UINT64_MAX - 7, UINT64_MAX, 2);
}

static void test_bucket_bounds_formula(void **state)
{
    (void)state;
    uint64_t lo, hi;
    /* from + floor(i * D / N): D = 10, N = 3 -> 0, 3, 6, 10 */
    hash_bucket_bounds(0, 10, 3, 0, &lo, &hi);
    assert_int_equal(lo, 0);
    assert_int_equal(hi, 3);
    hash_bucket_bounds(0, 10, 3, 1, &lo, &hi);
    assert_int_equal(lo, 3);
    assert_int_equal(hi, 6);
    hash_bucket_bounds(0, 10, 3, 2, &lo, &hi);
    assert_int_equal(lo, 6);
    assert_int_equal(hi, 10);
    /* D = 2^64 - 1, N = 2: the middle is floor((2^64 - 1) / 2). */
    hash_bucket_bounds(0, UINT64_MAX, 2, 1, &lo, &hi);
    assert_int_equal(lo, UINT64_MAX / 2);
    assert_int_equal(hi, UINT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_vectors),
        cmocka_unit_test(test_hash_every_field_counts),
        cmocka_unit_test(test_bucket_bounds_tile_the_range),
        cmocka_unit_test(test_bucket_bounds_formula),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
