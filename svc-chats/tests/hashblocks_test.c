/* Unit tests of svc-chats/hashblocks.c: the split of a range into block runs and raw ranges,
 * checked piece by piece on the edge cases and, for random ranges, by tiling: the pieces are
 * disjoint, cover exactly [from, min(to, 2^63)), and stay within the documented bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "hashblocks.h"

#define END ((uint64_t)1 << 63)

#define BITS hashblocks_bits
#define LOW BITS[0]
#define TOP BITS[HASHBLOCKS_LEVELS - 1]

typedef struct piece {
    uint64_t lo, hi; /* [lo, hi) in ids */
} piece;

static int piece_cmp(const void *a, const void *b)
{
    uint64_t x = ((const piece *)a)->lo, y = ((const piece *)b)->lo;
    return x < y ? -1 : x > y;
}

/* Checks every property of the plan of [from, to) and returns it. */
static hashblocks_plan check(uint64_t from, uint64_t to)
{
    hashblocks_plan p;
    hashblocks_split(from, to, &p);
    assert_true(p.nruns <= HASHBLOCKS_MAX_RUNS);
    assert_true(p.nraw <= HASHBLOCKS_MAX_RAW);
    piece ps[HASHBLOCKS_MAX_RUNS + HASHBLOCKS_MAX_RAW];
    size_t n = 0;
    int per_level[HASHBLOCKS_LEVELS] = {0};
    uint64_t blocks[HASHBLOCKS_LEVELS] = {0}, raw_ids = 0;
    int prev_level = HASHBLOCKS_LEVELS;
    for (size_t i = 0; i < p.nruns; i++) {
        const hashblocks_run *r = &p.runs[i];
        int l = 0;
        while (l < HASHBLOCKS_LEVELS && BITS[l] != r->bits)
            l++;
        assert_true(l < HASHBLOCKS_LEVELS);
        assert_true(l <= prev_level); /* top level first */
        prev_level = l;
        per_level[l]++;
        assert_true(r->first >= 0);
        assert_true(r->last >= r->first);
        blocks[l] += (uint64_t)(r->last - r->first) + 1;
        ps[n].lo = (uint64_t)r->first << r->bits;
        ps[n].hi = ((uint64_t)r->last + 1) << r->bits;
        n++;
    }
    /* below the top, a level reads less than two blocks of the level above: what is left
     * there lies in at most two of them without covering either */
    for (int l = 0; l < HASHBLOCKS_LEVELS; l++) {
        assert_true(per_level[l] <= 2);
        if (l + 1 < HASHBLOCKS_LEVELS)
            assert_true(blocks[l] <= 2 * (((uint64_t)1 << (BITS[l + 1] - BITS[l])) - 1));
    }
    for (size_t i = 0; i < p.nraw; i++) {
        assert_true(p.raw[i].first >= 0);
        assert_true(p.raw[i].last >= p.raw[i].first);
        raw_ids += (uint64_t)(p.raw[i].last - p.raw[i].first) + 1;
        ps[n].lo = (uint64_t)p.raw[i].first;
        ps[n].hi = (uint64_t)p.raw[i].last + 1;
        n++;
    }
    /* and the raw ids less than two lowest-level blocks */
    assert_true(raw_ids <= 2 * (((uint64_t)1 << LOW) - 1));
    uint64_t end = to < END ? to : END;
    if (from >= end) {
        assert_int_equal(n, 0);
        return p;
    }
    qsort(ps, n, sizeof(*ps), piece_cmp);
    assert_true(n > 0);
    uint64_t at = from;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ps[i].lo, at); /* contiguous and disjoint */
        assert_true(ps[i].hi > ps[i].lo);
        at = ps[i].hi;
    }
    assert_int_equal(at, end);
    return p;
}

static void test_empty(void **state)
{
    (void)state;
    hashblocks_plan p = check(5, 5);
    assert_int_equal(p.nruns + p.nraw, 0);
    p = check(10, 3);
    assert_int_equal(p.nruns + p.nraw, 0);
    /* ids above INT64_MAX cannot exist */
    p = check(END, UINT64_MAX);
    assert_int_equal(p.nruns + p.nraw, 0);
    p = check(UINT64_MAX - 1, UINT64_MAX);
    assert_int_equal(p.nruns + p.nraw, 0);
}

static void test_whole_id_space(void **state)
{
    (void)state;
    /* [0, 2^64 - 1): every bigint id, i.e. the top-level blocks 0 .. 2^(63-TOP) - 1 */
    hashblocks_plan p = check(0, UINT64_MAX);
    assert_int_equal(p.nruns, 1);
    assert_int_equal(p.nraw, 0);
    assert_int_equal(p.runs[0].bits, TOP);
    assert_int_equal(p.runs[0].first, 0);
    assert_int_equal(p.runs[0].last, (int64_t)((END >> TOP) - 1));
    /* to = 2^63 and to = INT64_MAX + 1 are the same range; to = INT64_MAX leaves out one id */
    p = check(0, END);
    assert_int_equal(p.nruns + p.nraw, 1);
    p = check(0, (uint64_t)INT64_MAX);
    assert_int_equal(p.nraw, 1);
    assert_int_equal(p.raw[0].last, INT64_MAX - 1);
    assert_int_equal(p.raw[0].first, (int64_t)(END - ((uint64_t)1 << LOW)));
    assert_int_equal(p.nruns, HASHBLOCKS_LEVELS); /* the top run, then one per level */
    /* from = 0 with a small to: the raw edge starts at 0 */
    p = check(0, 1000);
    assert_int_equal(p.nruns, 0);
    assert_int_equal(p.nraw, 1);
    assert_int_equal(p.raw[0].first, 0);
    assert_int_equal(p.raw[0].last, 999);
    /* the last id alone */
    p = check((uint64_t)INT64_MAX, UINT64_MAX);
    assert_int_equal(p.nraw, 1);
    assert_int_equal(p.raw[0].first, INT64_MAX);
    assert_int_equal(p.raw[0].last, INT64_MAX);
}

static void test_inside_one_lowest_block(void **state)
{
    (void)state;
    uint64_t base = (uint64_t)12345 << LOW;
    hashblocks_plan p = check(base + 7, base + 9);
    assert_int_equal(p.nruns, 0);
    assert_int_equal(p.nraw, 1);
    assert_int_equal(p.raw[0].first, (int64_t)(base + 7));
    assert_int_equal(p.raw[0].last, (int64_t)(base + 8));
    /* the whole block but one id at each end is still raw */
    p = check(base + 1, base + ((uint64_t)1 << LOW) - 1);
    assert_int_equal(p.nruns, 0);
    assert_int_equal(p.nraw, 1);
    /* one id */
    p = check(base, base + 1);
    assert_int_equal(p.nraw, 1);
    assert_int_equal(p.raw[0].first, p.raw[0].last);
    /* straddling two lowest blocks without covering either: one raw range, no run */
    p = check(base + ((uint64_t)1 << LOW) - 3, base + ((uint64_t)1 << LOW) + 3);
    assert_int_equal(p.nruns, 0);
    assert_int_equal(p.nraw, 1);
    assert_int_equal(p.raw[0].last - p.raw[0].first, 5);
}

static void test_exact_block_boundaries(void **state)
{
    (void)state;
    /* exactly one lowest block */
    uint64_t base = (uint64_t)12345 << LOW;
    hashblocks_plan p = check(base, base + ((uint64_t)1 << LOW));
    assert_int_equal(p.nruns, 1);
    assert_int_equal(p.nraw, 0);
    assert_int_equal(p.runs[0].bits, LOW);
    assert_int_equal(p.runs[0].first, 12345);
    assert_int_equal(p.runs[0].last, 12345);
    /* exactly one top block, and three: one run */
    uint64_t top = (uint64_t)1 << TOP;
    p = check(5 * top, 6 * top);
    assert_int_equal(p.nruns, 1);
    assert_int_equal(p.runs[0].bits, TOP);
    p = check(5 * top, 8 * top);
    assert_int_equal(p.nruns, 1);
    assert_int_equal(p.runs[0].first, 5);
    assert_int_equal(p.runs[0].last, 7);
    assert_int_equal(p.nraw, 0);
    /* aligned on the second level on both sides, across a top boundary: one run there */
    uint64_t l1 = (uint64_t)1 << BITS[1];
    p = check(5 * top - 3 * l1, 5 * top + 2 * l1);
    assert_int_equal(p.nraw, 0);
    assert_int_equal(p.nruns, 1);
    assert_int_equal(p.runs[0].bits, BITS[1]);
    assert_int_equal(p.runs[0].last - p.runs[0].first, 4);
    /* the same plus one id on each side: the run, then one raw id at each end */
    p = check(5 * top - 3 * l1 - 1, 5 * top + 2 * l1 + 1);
    assert_int_equal(p.nruns, 1);
    assert_int_equal(p.nraw, 2);
    assert_int_equal(p.raw[0].first, p.raw[0].last);
    assert_int_equal(p.raw[1].first, p.raw[1].last);
    /* one id short of a boundary on each side: the largest plan */
    p = check(5 * top + 1, 9 * top - 1);
    assert_int_equal(p.nruns, 1 + 2 * (HASHBLOCKS_LEVELS - 1));
    assert_int_equal(p.nraw, 2);
    assert_int_equal(p.runs[0].first, 6);
    assert_int_equal(p.runs[0].last, 7);
}

static uint64_t rnd64(void)
{
    uint64_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 16 | (uint64_t)(rand() & 0xffff);
    return v;
}

/* Random ranges of every scale, some near block boundaries, some past 2^63. */
static void test_random_ranges_tile(void **state)
{
    (void)state;
    srand(12345);
    for (int i = 0; i < 200000; i++) {
        uint64_t a = rnd64() >> (rand() % 2);
        uint64_t len = rnd64() >> (rand() % 64);
        if (rand() % 4 == 0) { /* snap to a boundary of a random level, +-1 */
            int b = BITS[rand() % HASHBLOCKS_LEVELS];
            a = (a >> b << b) + (uint64_t)(rand() % 3) - 1;
        }
        uint64_t to = a + len < a ? UINT64_MAX : a + len;
        check(a, to);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_whole_id_space),
        cmocka_unit_test(test_inside_one_lowest_block),
        cmocka_unit_test(test_exact_block_boundaries),
        cmocka_unit_test(test_random_ranges_tile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
