/* Synthetic input and timing summaries for `qkern bench`.
 * The values come from a counter-based generator (splitmix64 of seed and
 * index) rather than a sequential stream, so a tensor is reproducible from its
 * seed alone and could be generated in any order or in pieces. */
#include "bench_data.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform double in (0, 1): 53 random bits, never exactly 0 or 1. */
static double uniform_open(uint64_t r)
{
    return ((double)(r >> 11) + 0.5) * 0x1p-53;
}

void bench_fill_laplace(float *x, int64_t n, uint64_t seed)
{
    uint64_t key = mix64(seed ^ 0x4c61706c616365ull); /* "Laplace" */
    for (int64_t i = 0; i < n; i++) {
        double u = uniform_open(mix64(key + (uint64_t)i));
        /* Inverse CDF of Laplace(0, 1). */
        x[i] = (float)(u < 0.5 ? log(2.0 * u) : -log(2.0 * (1.0 - u)));
    }
    /* The outliers a clipping percentile is meant to cut off. */
    int64_t n_out = 3 + n / ((int64_t)1 << 20);
    uint64_t okey = mix64(seed ^ 0x6f75746c69657273ull); /* "outliers" */
    for (int64_t k = 0; k < n_out && k < n; k++) {
        uint64_t r = mix64(okey + 2 * (uint64_t)k);
        double mag = 40.0 + 40.0 * uniform_open(mix64(okey + 2 * (uint64_t)k + 1));
        x[r % (uint64_t)n] = (float)((r & 1u) ? mag : -mag);
    }
}

int bench_parse_count(const char *s, int64_t *out)
{
    const int64_t limit = (int64_t)1 << 40;
    if (*s == '\0' || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -1;
    if (end[0] == '^') {
        /* 2^K */
        if (v != 2 || !isdigit((unsigned char)end[1]))
            return -1;
        const char *k = end + 1;
        errno = 0;
        long long e = strtoll(k, &end, 10);
        if (errno == ERANGE || *end != '\0' || e > 40)
            return -1;
        *out = (int64_t)1 << e;
        return 0;
    }
    int shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (*end != '\0' || v < 1 || v > (limit >> shift))
        return -1;
    *out = (int64_t)v << shift;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_summarise(double *t, size_t n, double *median, double *minimum)
{
    qsort(t, n, sizeof *t, cmp_double);
    *minimum = t[0];
    *median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
