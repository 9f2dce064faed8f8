/* Multi-target quickselect on integer keys: the CPU reference's way to exact
 * order statistics. Deliberately a different algorithm from the GPU backends'
 * radix select, so the two check each other. */
#include "cpu_select.h"

/* splitmix64: a fixed seed keeps runs reproducible; randomness only guards the
 * expected running time against adversarial orders, not the result. */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define QK_DEFINE_SELECT(SUFFIX, T)                                                                  \
    static T median3_##SUFFIX(T a, T b, T c)                                                         \
    {                                                                                                \
        if (a > b) { T t = a; a = b; b = t; }                                                        \
        if (b > c) b = c;                                                                            \
        return a > b ? a : b;                                                                        \
    }                                                                                                \
                                                                                                     \
    static void insertion_##SUFFIX(T *a, int64_t lo, int64_t hi)                                     \
    {                                                                                                \
        for (int64_t i = lo + 1; i < hi; i++) {                                                      \
            T v = a[i];                                                                              \
            int64_t j = i;                                                                           \
            while (j > lo && a[j - 1] > v) { a[j] = a[j - 1]; j--; }                                 \
            a[j] = v;                                                                                \
        }                                                                                            \
    }                                                                                                \
                                                                                                     \
    /* ranks[r0..r1) all lie in [lo, hi). */                                                         \
    static void select_##SUFFIX(T *a, int64_t lo, int64_t hi, const int64_t *ranks, size_t r0,       \
                                size_t r1, uint64_t *seed)                                           \
    {                                                                                                \
        while (r0 < r1) {                                                                            \
            if (hi - lo <= 32) {                                                                     \
                insertion_##SUFFIX(a, lo, hi);                                                       \
                return;                                                                              \
            }                                                                                        \
            uint64_t span = (uint64_t)(hi - lo);                                                     \
            T pivot = median3_##SUFFIX(a[lo + (int64_t)(next_random(seed) % span)],                  \
                                       a[lo + (int64_t)(next_random(seed) % span)],                  \
                                       a[lo + (int64_t)(next_random(seed) % span)]);                 \
            /* Dijkstra's three-way partition: [lo,lt) < pivot, [lt,gt) == pivot, [gt,hi) > pivot */ \
            int64_t lt = lo, i = lo, gt = hi;                                                        \
            while (i < gt) {                                                                         \
                T v = a[i];                                                                          \
                if (v < pivot) { a[i++] = a[lt]; a[lt++] = v; }                                      \
                else if (v > pivot) { a[i] = a[--gt]; a[gt] = v; }                                   \
                else i++;                                                                            \
            }                                                                                        \
            size_t m0 = r0, m1;                                                                      \
            while (m0 < r1 && ranks[m0] < lt) m0++;                                                  \
            m1 = m0;                                                                                 \
            while (m1 < r1 && ranks[m1] < gt) m1++;                                                  \
            /* ranks in [m0, m1) hit the pivot run: done. Recurse into the smaller side with       \
             * targets, loop on the other, so the stack stays shallow. */                            \
            int left = m0 > r0, right = r1 > m1;                                                     \
            if (left && right) {                                                                     \
                if (lt - lo < hi - gt) {                                                             \
                    select_##SUFFIX(a, lo, lt, ranks, r0, m0, seed);                                 \
                    lo = gt; r0 = m1;                                                                \
                } else {                                                                             \
                    select_##SUFFIX(a, gt, hi, ranks, m1, r1, seed);                                 \
                    hi = lt; r1 = m0;                                                                \
                }                                                                                    \
            } else if (left) {                                                                       \
                hi = lt; r1 = m0;                                                                    \
            } else if (right) {                                                                      \
                lo = gt; r0 = m1;                                                                    \
            } else {                                                                                 \
                return;                                                                              \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
                                                                                                     \
    void qk_cpu_select_##SUFFIX(T *keys, int64_t n, const int64_t *ranks, size_t nranks)             \
    {                                                                                                \
        uint64_t seed = 0x5eed5eed5eed5eedull;                                                       \
        select_##SUFFIX(keys, 0, n, ranks, 0, nranks, &seed);                                        \
    }

QK_DEFINE_SELECT(u32, uint32_t)
QK_DEFINE_SELECT(u64, uint64_t)
