/* hashblocks.c: splitting a range into block runs and raw ranges (see hashblocks.h). */
#include "hashblocks.h"

#include <string.h>

/* One past the largest bigint: the end of every range. */
#define ID_END ((uint64_t)1 << 63)

const int hashblocks_bits[HASHBLOCKS_LEVELS] = {42, 47, 52};

void hashblocks_split(uint64_t from, uint64_t to, hashblocks_plan *out)
{
    const int *bits = hashblocks_bits;
    memset(out, 0, sizeof(*out));
    if (to > ID_END)
        to = ID_END;
    if (from >= to)
        return;
    /* What is left to cover, as half-open ranges [lo, hi) with hi <= 2^63: one at first, at
     * most two (left of and right of the first run) afterwards. */
    uint64_t lo[2] = {from}, hi[2] = {to};
    size_t n = 1;
    for (int l = HASHBLOCKS_LEVELS - 1; l >= 0; l--) {
        int b = bits[l];
        uint64_t nlo[2], nhi[2];
        size_t nn = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t first = (lo[i] >> b) + ((lo[i] & (((uint64_t)1 << b) - 1)) != 0);
            uint64_t end = hi[i] >> b; /* one past the last whole block */
            if (first >= end) {
                nlo[nn] = lo[i];
                nhi[nn++] = hi[i];
                continue;
            }
            out->runs[out->nruns++] =
                (hashblocks_run){.bits = b, .first = (int64_t)first, .last = (int64_t)(end - 1)};
            if (lo[i] < first << b) {
                nlo[nn] = lo[i];
                nhi[nn++] = first << b;
            }
            if (end << b < hi[i]) {
                nlo[nn] = end << b;
                nhi[nn++] = hi[i];
            }
        }
        /* nn <= 2: a part that yields a run and two remainders can only be the first one. */
        memcpy(lo, nlo, nn * sizeof(*lo));
        memcpy(hi, nhi, nn * sizeof(*hi));
        n = nn;
    }
    for (size_t i = 0; i < n; i++)
        out->raw[out->nraw++] =
            (hashblocks_raw){.first = (int64_t)lo[i], .last = (int64_t)(hi[i] - 1)};
}
