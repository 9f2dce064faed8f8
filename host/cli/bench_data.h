/* Pieces of `qkern bench` that need no backend: the synthetic input, the
 * element-count syntax and the summary of repeated timings. */
#ifndef QK_CLI_BENCH_DATA_H
#define QK_CLI_BENCH_DATA_H

#include <stddef.h>
#include <stdint.h>

/* Fill x[0..n) with Laplace(0, 1) values plus a few far outliers (3 + n/2^20 of
 * them, |x| in [40, 80)), all a function of (seed, index) only: the same seed
 * gives the same tensor whatever n was generated before. */
void bench_fill_laplace(float *x, int64_t n, uint64_t seed);

/* "67108864", "2^26", "64M" (K/M/G are powers of 2^10). 0 and -1 on failure. */
int bench_parse_count(const char *s, int64_t *out);

/* The median (mean of the middle two for an even count) and the minimum of
 * t[0..n), n >= 1. Sorts t in place. */
void bench_summarise(double *t, size_t n, double *median, double *minimum);

/* Monotonic wall-clock time in seconds. */
double bench_now(void);

#endif
