#ifndef QK_CPU_SELECT_H
#define QK_CPU_SELECT_H

#include <stddef.h>
#include <stdint.h>

/* Rearrange keys[0..n) so that keys[r] holds the r-th smallest key for every r in
 * ranks (ascending, each < n): a multi-target quickselect with three-way
 * partitioning (ties cost nothing) and pseudo-random pivots, expected
 * O(n log(nranks)) time, no sort. */
void qk_cpu_select_u32(uint32_t *keys, int64_t n, const int64_t *ranks, size_t nranks);
void qk_cpu_select_u64(uint64_t *keys, int64_t n, const int64_t *ranks, size_t nranks);

#endif
