/*
 * rangehash_test.c: chatctl's range hash against the worked example of docs/API.md and the
 * bucket rule of chats.proto.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rangehash.h"

/* The three messages of the worked example: (message_id, version, deleted, h(m)). */
static const struct {
    uint64_t id;
    uint32_t version;
    bool deleted;
    uint64_t h;
} example[] = {
    {7139847602483200001ULL, 1, false, 0xf4db7b01de677747ULL},
    {7139847602483200002ULL, 2, false, 0xe629f81366eda383ULL},
    {7139847606677504000ULL, 3, true, 0x5670a5caac4001e5ULL},
};

static void test_message_hash_matches_example(void **state)
{
    (void)state;
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(rangehash_message(example[i].id, example[i].version, example[i].deleted),
                         example[i].h);
    /* The decimal forms the guide prints, too. */
    assert_true(rangehash_message(example[0].id, 1, false) == 17643831213110556487ULL);
    assert_true(rangehash_message(example[2].id, 3, true) == 6228660574545248741ULL);
}

static void test_version_and_deleted_change_the_hash(void **state)
{
    (void)state;
    uint64_t base = rangehash_message(example[0].id, 1, false);
    assert_true(rangehash_message(example[0].id, 2, false) != base);
    assert_true(rangehash_message(example[0].id, 1, true) != base);
    assert_true(rangehash_message(example[0].id + 1, 1, false) != base);
}

static void test_total_over_whole_id_space(void **state)
{
    (void)state;
    rangehash_acc a;
    assert_int_equal(rangehash_acc_init(&a, 0, UINT64_MAX, 0), 0);
    for (size_t i = 0; i < 3; i++)
        assert_true(rangehash_acc_add(&a, example[i].id, example[i].version, example[i].deleted));
    assert_int_equal(a.total.count, 3);
    assert_int_equal(a.total.hash, 0x448226d814cad521ULL);
    assert_true(a.total.hash == 4936550851055113505ULL);
    assert_int_equal(a.n_buckets, 0);
    assert_int_equal(rangehash_acc_bucket_of(&a, example[0].id), -1);
}

static void test_empty_range_is_zero(void **state)
{
    (void)state;
    rangehash_acc a;
    assert_int_equal(rangehash_acc_init(&a, 100, 200, 4), 0);
    assert_false(rangehash_acc_add(&a, 99, 1, false));
    assert_false(rangehash_acc_add(&a, 200, 1, false)); /* to is exclusive */
    assert_int_equal(a.total.count, 0);
    assert_int_equal(a.total.hash, 0);
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(a.buckets[i].count, 0);
        assert_int_equal(a.buckets[i].hash, 0);
    }
}

static void test_example_buckets(void **state)
{
    (void)state;
    rangehash_acc a;
    assert_int_equal(rangehash_acc_init(&a, 7139847602483200000ULL, 7139847606677504001ULL, 4), 0);
    for (size_t i = 0; i < 3; i++)
        assert_true(rangehash_acc_add(&a, example[i].id, example[i].version, example[i].deleted));
    const uint64_t counts[4] = {2, 0, 0, 1};
    const uint64_t hashes[4] = {0x12f28312b88ad4c4ULL, 0, 0, 0x5670a5caac4001e5ULL};
    uint64_t x = 0;
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(a.buckets[i].count, counts[i]);
        assert_int_equal(a.buckets[i].hash, hashes[i]);
        x ^= a.buckets[i].hash;
    }
    assert_int_equal(x, a.total.hash);
    assert_int_equal(a.total.count, 3);
}

static void test_bucket_bounds_small(void **state)
{
    (void)state;
    /* D = 10, N = 3: [0,3) [3,6) [6,10). */
    const uint64_t want[4] = {0, 3, 6, 10};
    for (uint32_t i = 0; i < 3; i++) {
        uint64_t lo, hi;
        rangehash_bucket_bounds(0, 10, 3, i, &lo, &hi);
        assert_int_equal(lo, want[i]);
        assert_int_equal(hi, want[i + 1]);
    }
    /* N = D: unit buckets. */
    for (uint32_t i = 0; i < 5; i++) {
        uint64_t lo, hi;
        rangehash_bucket_bounds(20, 25, 5, i, &lo, &hi);
        assert_int_equal(lo, 20 + i);
        assert_int_equal(hi, 21 + i);
    }
}

/* floor(i*D/N) exactly, with 128-bit arithmetic, to check the 64-bit formula. */
static uint64_t split_ref(uint64_t d, uint32_t n, uint32_t i)
{
    return (uint64_t)(((unsigned __int128)d * i) / n);
}

static void test_bucket_bounds_tile_full_space(void **state)
{
    (void)state;
    const uint64_t froms[] = {0, 1, 7139847602483200000ULL};
    const uint64_t tos[] = {UINT64_MAX, UINT64_MAX - 1, UINT64_MAX};
    const uint32_t ns[] = {1, 3, 7, 16, 255, 256};
    for (size_t f = 0; f < 3; f++) {
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            rangehash_acc a;
            assert_int_equal(rangehash_acc_init(&a, froms[f], tos[f], ns[k]), 0);
            uint64_t d = tos[f] - froms[f];
            assert_int_equal(a.buckets[0].from, froms[f]);
            assert_int_equal(a.buckets[ns[k] - 1].to, tos[f]);
            for (uint32_t i = 0; i < ns[k]; i++) {
                assert_int_equal(a.buckets[i].from, froms[f] + split_ref(d, ns[k], i));
                assert_int_equal(a.buckets[i].to, froms[f] + split_ref(d, ns[k], i + 1));
                assert_true(a.buckets[i].from < a.buckets[i].to);
                if (i > 0)
                    assert_int_equal(a.buckets[i].from, a.buckets[i - 1].to);
                /* Both ends of every bucket land in it. */
                assert_int_equal(rangehash_acc_bucket_of(&a, a.buckets[i].from), (int)i);
                assert_int_equal(rangehash_acc_bucket_of(&a, a.buckets[i].to - 1), (int)i);
            }
        }
    }
}

static void test_init_rejects_what_the_server_rejects(void **state)
{
    (void)state;
    rangehash_acc a;
    assert_int_equal(rangehash_acc_init(&a, 5, 5, 0), RANGEHASH_E_RANGE);
    assert_int_equal(rangehash_acc_init(&a, 6, 5, 0), RANGEHASH_E_RANGE);
    assert_int_equal(rangehash_acc_init(&a, 0, 100, 257), RANGEHASH_E_BUCKETS);
    assert_int_equal(rangehash_acc_init(&a, 0, 3, 4), RANGEHASH_E_BUCKETS);
    assert_int_equal(rangehash_acc_init(&a, 0, 4, 4), 0);
    assert_int_equal(rangehash_acc_init(&a, 0, 1000, 256), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_hash_matches_example),
        cmocka_unit_test(test_version_and_deleted_change_the_hash),
        cmocka_unit_test(test_total_over_whole_id_space),
        cmocka_unit_test(test_empty_range_is_zero),
        cmocka_unit_test(test_example_buckets),
        cmocka_unit_test(test_bucket_bounds_small),
        cmocka_unit_test(test_bucket_bounds_tile_full_space),
        cmocka_unit_test(test_init_rejects_what_the_server_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
