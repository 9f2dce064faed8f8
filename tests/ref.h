/* Independent re-implementations of docs/numerics.md's formulas for the tests: written
 * from the spec, sharing no code with the library (sorting instead of
 * selection, long double where the library uses double, etc.). */
#ifndef QK_TEST_REF_H
#define QK_TEST_REF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkern.h"

/* ---- random data ------------------------------------------------------------- */

typedef struct { uint64_t s; } ref_rng;

static inline uint64_t ref_next(ref_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static inline double ref_uniform(ref_rng *r)
{
    return (double)(ref_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double ref_normal(ref_rng *r)
{
    double u = ref_uniform(r), v = ref_uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

static inline double ref_laplace(ref_rng *r)
{
    double u = ref_uniform(r) - 0.5;
    return u < 0 ? log(1.0 + 2.0 * u) : -log(1.0 - 2.0 * u);
}

/* Distributions used across the tests. */
enum { REF_NORMAL, REF_LAPLACE_OUTLIERS, REF_UNIFORM, REF_TIES, REF_ALL_NEGATIVE, REF_CONSTANT, REF_DENORMAL,
       REF_SIGNED_ZEROS, REF_HUGE, REF_DIST_COUNT };

static inline void ref_fill(float *x, int64_t n, int dist, uint64_t seed)
{
    ref_rng r = {seed};
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (dist) {
        case REF_NORMAL: v = ref_normal(&r); break;
        case REF_LAPLACE_OUTLIERS: v = ref_laplace(&r) * 0.02; if (ref_next(&r) % 10007 == 0) v *= 500; break;
        case REF_UNIFORM: v = -80.0 + 180.0 * ref_uniform(&r); break;
        case REF_TIES: v = (double)(int)(ref_next(&r) % 7) - 3.0; break;
        case REF_ALL_NEGATIVE: v = -1.0 - 100.0 * ref_uniform(&r); break;
        case REF_CONSTANT: v = 3.25; break;
        case REF_DENORMAL: v = (double)((int)(ref_next(&r) % 2001) - 1000) * 1.401298464324817e-45; break;
        case REF_SIGNED_ZEROS: v = (ref_next(&r) & 1) ? 0.0 : -0.0; if (ref_next(&r) % 5 == 0) v = ref_normal(&r); break;
        default: v = ref_normal(&r) * 1e37; if (ref_next(&r) % 101 == 0) v = (ref_next(&r) & 1) ? 3.4e38 : -3.4e38; break;
        }
        x[i] = (float)v;
    }
}

/* ---- total order and sorting ---------------------------------------------------- */

static inline uint32_t ref_key32(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (u >> 31) ? ~u : u ^ 0x80000000u;
}

static inline float ref_unkey32(uint32_t k)
{
    uint32_t u = (k >> 31) ? k ^ 0x80000000u : ~k;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* LSD radix sort of float32 by total order (-0 < +0): an O(n) sort for the
 * reference percentiles of large tensors. Returns a malloc'd sorted copy. */
static inline float *ref_sorted_f32(const float *x, int64_t n)
{
    uint32_t *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    float *out = malloc((size_t)n * 4);
    if (!a || !b || !out) { free(a); free(b); free(out); return NULL; }
    for (int64_t i = 0; i < n; i++) a[i] = ref_key32(x[i]);
    for (int shift = 0; shift < 32; shift += 8) {
        int64_t count[257] = {0};
        for (int64_t i = 0; i < n; i++) count[((a[i] >> shift) & 255) + 1]++;
        for (int d = 0; d < 256; d++) count[d + 1] += count[d];
        for (int64_t i = 0; i < n; i++) b[count[(a[i] >> shift) & 255]++] = a[i];
        uint32_t *t = a; a = b; b = t;
    }
    for (int64_t i = 0; i < n; i++) out[i] = ref_unkey32(a[i]);
    free(a);
    free(b);
    return out;
}

static inline int ref_cmp_f64(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    if (a < b) return -1;
    if (a > b) return 1;
    return (int)(signbit(b) != 0) - (int)(signbit(a) != 0); /* -0 first */
}

/* numpy 1.24 percentile (linear) of a sorted array; d in float for float32 input. */
static inline double ref_percentile_sorted(const double *s, int64_t n, double p, int is_f32)
{
    double v = (double)(n - 1) * (p / 100.0);
    double a, b, g;
    if (v >= (double)(n - 1)) {
        a = b = s[n - 1];
        g = v + 1.0; /* numpy's index -1 */
    } else {
        int64_t i = (int64_t)floor(v);
        a = s[i];
        b = s[i + 1];
        g = v - (double)i;
    }
    double d = is_f32 ? (double)((float)b - (float)a) : b - a;
    return g >= 0.5 ? b - d * (1.0 - g) : a + d * g;
}

/* Percentile of float32 data via a full sort (tests only). */
static inline double ref_percentile_f32(const float *x, int64_t n, double p)
{
    float *s = ref_sorted_f32(x, n);
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
    double r = ref_percentile_sorted(d, n, p, 1);
    free(s);
    free(d);
    return r;
}

/* ---- docs/numerics.md formulas ------------------------------------------------------------ */

typedef struct { float scale; long long zp; long qmin, qmax; } ref_params;

static inline ref_params ref_asym(double lo, double hi, int bits)
{
    ref_params r = {1.0f, 0, 0, (1L << bits) - 1};
    if (lo == hi) { if (lo > 0) lo = 0; if (hi < 0) hi = 0; }
    if (lo == hi) { r.zp = r.qmin; return r; }
    r.scale = (float)((hi - lo) / (double)((1L << bits) - 1));
    if (r.scale == 0.0f) r.scale = 1.401298464324817e-45f; /* qkern's rule: never a zero scale */
    r.zp = (long long)-rintl((long double)lo / (long double)r.scale);
    return r;
}

static inline ref_params ref_sym(double c, int bits, int narrow)
{
    ref_params r = {1.0f, 0, -(1L << (bits - 1)) + (narrow ? 1 : 0), (1L << (bits - 1)) - 1};
    if (c != 0) r.scale = (float)(c / (double)((1L << (bits - 1)) - 1));
    if (r.scale == 0.0f) r.scale = 1.401298464324817e-45f;
    return r;
}

static inline long ref_code_f32(float x, ref_params p)
{
    float r = rintf(x / p.scale);
    if (isnan(r)) return p.zp < p.qmin ? p.qmin : p.zp > p.qmax ? p.qmax : (long)p.zp;
    long double t = (long double)r + (long double)p.zp;
    if (t < p.qmin) return p.qmin;
    if (t > p.qmax) return p.qmax;
    return (long)t;
}

static inline float ref_dequant(long q, ref_params p)
{
    return (float)(q - p.zp) * p.scale;
}

/* ---- the backend under test --------------------------------------------------------- */

/* QKERN_TEST_BACKEND=cpu|opencl|cuda picks it (default cpu): the same suite runs
 * on every backend. QKERN_TEST_DEVICE=N picks its device (the library's own
 * QKERN_DEVICE would move the tests' CPU reference contexts too). Returns NULL
 * (and prints why) when it is unavailable. */
static inline qk_context *ref_test_context(void)
{
    const char *name = getenv("QKERN_TEST_BACKEND");
    qk_backend_kind kind = QK_BACKEND_CPU;
    if (name && *name && qk_backend_parse(name, &kind) != QK_OK) {
        fprintf(stderr, "unknown QKERN_TEST_BACKEND=%s\n", name);
        return NULL;
    }
    qk_context *ctx = NULL;
    char msg[512];
    const char *dev = getenv("QKERN_TEST_DEVICE");
    char *saved = getenv("QKERN_DEVICE") ? strdup(getenv("QKERN_DEVICE")) : NULL;
    if (dev && *dev) setenv("QKERN_DEVICE", dev, 1);
    qk_status st = qk_context_create(kind, &ctx, msg, sizeof msg);
    if (dev && *dev) {
        if (saved) setenv("QKERN_DEVICE", saved, 1);
        else unsetenv("QKERN_DEVICE");
    }
    free(saved);
    if (st == QK_ERR_UNSUPPORTED || st == QK_ERR_NO_DEVICE) {
        fprintf(stderr, "backend %s unavailable: %s (%s)\n", qk_backend_name(kind), msg, qk_status_string(st));
    } else if (st != QK_OK) { /* a real failure (bad settings, a broken driver): not a skip */
        fprintf(stderr, "FAILED: creating a %s context: %s (%s)\n", qk_backend_name(kind), msg, qk_status_string(st));
        exit(1);
    }
    return ctx;
}

/* Whether the backend under test takes float64 input: an OpenCL device without
 * cl_khr_fp64 does not (QK_ERR_UNSUPPORTED naming the extension), and the
 * float64 cases are then skipped with a message; everything float32 still runs. */
static inline int ref_has_fp64(qk_context *ctx, const char *what)
{
    double x = 1.0;
    uint8_t q = 0;
    qk_qparams qp;
    if (qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, -1.0, 2.0, &qp) != QK_OK) return 1;
    qk_tensor t = qk_tensor_host(QK_F64, &x, 1), c = qk_tensor_host(QK_U8, &q, 1);
    if (qk_quantize(ctx, &t, &qp, &c) == QK_ERR_UNSUPPORTED && strstr(qk_context_message(ctx), "cl_khr_fp64")) {
        printf("skipped: %s (float64 input): %s\n", what, qk_context_message(ctx));
        return 0;
    }
    return 1;
}

#endif
