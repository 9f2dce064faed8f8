/* The OpenCL backend's own paths, checked against the CPU reference and each
 * other (cmocka; exits 77 with a message when no OpenCL device answers):
 *
 *   mem    the default context: host tensors wrapped in place on PoCL, the
 *          select's sampled prefilter;
 *   chunk  QKERN_DEVICE_MEMORY_LIMIT=8M, QKERN_OPENCL_PREFILTER=0: tensors
 *          streamed in chunks through staging buffers, the radix select's
 *          histogram passes streaming too, refining by more streaming passes
 *          when the target buckets do not fit (a constant tensor);
 *   gpu    QKERN_OPENCL_STYLE=gpu, QKERN_OPENCL_ZERO_COPY=0 and a 32M limit:
 *          the GPU-style kernels (256-wide work-groups, local-memory
 *          histograms and reductions), staged and uploaded data, the
 *          prefilter streamed.
 *
 * On 2^24 + 13 elements and a prime size, for normal, Laplace-with-outliers,
 * all-negative, constant, tie-heavy and tiny inputs, at 2, 4, 8 and 16 bits,
 * both schemes and every calibration method: min, max, percentiles, clip
 * values, scale, zero point, clipped counts and codes equal the CPU
 * reference's; MSE within 1e-6 of it; and every OpenCL path gives the very
 * same bytes (MSE included) as the in-memory one, call after call. Also: a
 * caller's cl_mem wrapped into a context, and a qk_buffer tensor. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

#ifdef QKERN_HAVE_OPENCL
#include "opencl/ocl.h"

enum { CTX_CPU, CTX_MEM, CTX_CHUNK, CTX_GPU, CTX_COUNT };
static const char *ctx_names[CTX_COUNT] = {"cpu", "opencl in-memory", "opencl chunked (8M, radix only)",
                                           "opencl gpu-style (32M, staged)"};
static qk_context *ctxs[CTX_COUNT];

/* Sanitizer builds run every check on smaller tensors (still several chunks of
 * the 8M context). */
#if defined(__SANITIZE_ADDRESS__)
#define N_BIG ((1 << 22) + 13)
#define N_PRIME 262147
#else
#define N_BIG ((1 << 24) + 13)
#define N_PRIME 1000003
#endif

enum { D_NORMAL, D_LAPLACE, D_NEGATIVE, D_CONSTANT, D_TIES, D_COUNT };
static const int dist_ref[D_COUNT] = {REF_NORMAL, REF_LAPLACE_OUTLIERS, REF_ALL_NEGATIVE, REF_CONSTANT, REF_TIES};
static const char *dist_names[D_COUNT] = {"normal", "laplace+outliers", "all-negative", "constant", "ties"};

static const int bit_widths[] = {2, 4, 8, 16};
static const double pct_list[] = {0, 0.001, 0.1, 1, 25, 50, 75, 99, 99.9, 99.999, 100};
#define N_PCT (sizeof pct_list / sizeof pct_list[0])

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* A context of one kind, with the environment that selects its path set only
 * while it is created (the backend reads it then). */
static qk_context *make_context(int which)
{
    qk_context *ctx = NULL;
    char msg[512];
    if (which == CTX_CPU) {
        return qk_context_create(QK_BACKEND_CPU, &ctx, msg, sizeof msg) == QK_OK ? ctx : NULL;
    }
    if (which == CTX_CHUNK) {
        setenv("QKERN_DEVICE_MEMORY_LIMIT", "8M", 1);
        setenv("QKERN_OPENCL_PREFILTER", "0", 1);
    }
    if (which == CTX_GPU) {
        setenv("QKERN_DEVICE_MEMORY_LIMIT", "32M", 1);
        setenv("QKERN_OPENCL_STYLE", "gpu", 1);
        setenv("QKERN_OPENCL_ZERO_COPY", "0", 1);
    }
    qk_status st = qk_context_create(QK_BACKEND_OPENCL, &ctx, msg, sizeof msg);
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    unsetenv("QKERN_OPENCL_PREFILTER");
    unsetenv("QKERN_OPENCL_STYLE");
    unsetenv("QKERN_OPENCL_ZERO_COPY");
    if (st != QK_OK) fprintf(stderr, "%s: %s (%s)\n", ctx_names[which], msg, qk_status_string(st));
    return st == QK_OK ? ctx : NULL;
}

static float *make_data(int dist, int64_t n)
{
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    ref_fill(x, n, dist_ref[dist], 0x0c1c + (uint64_t)dist * 977 + (uint64_t)n);
    return x;
}

/* ---- min/max and percentiles ----------------------------------------------------- */

static void check_stats(const float *x, int64_t n, const char *what)
{
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_minmax_result mm[CTX_COUNT];
    double pv[CTX_COUNT][2][N_PCT];
    for (int c = 0; c < CTX_COUNT; c++) {
        assert_int_equal(qk_minmax(ctxs[c], &t, 0, &mm[c]), QK_OK);
        for (int f = 0; f < 2; f++) {
            if (qk_percentiles(ctxs[c], &t, pct_list, N_PCT, f ? QK_ABS : 0, pv[c][f]) != QK_OK) {
                fail_msg("%s on %s: %s", what, ctx_names[c], qk_context_message(ctxs[c]));
            }
        }
    }
    for (int c = 1; c < CTX_COUNT; c++) {
        if (!same_bits(mm[c].min, mm[0].min) || !same_bits(mm[c].max, mm[0].max) || mm[c].n_finite != n) {
            fail_msg("%s: %s min/max %.9g %.9g, cpu %.9g %.9g", what, ctx_names[c], mm[c].min, mm[c].max, mm[0].min,
                     mm[0].max);
        }
        for (int f = 0; f < 2; f++) {
            for (size_t j = 0; j < N_PCT; j++) {
                if (!same_bits(pv[c][f][j], pv[0][f][j])) {
                    fail_msg("%s: %s percentile%s %g = %.17g, cpu %.17g", what, ctx_names[c], f ? " of |x|" : "",
                             pct_list[j], pv[c][f][j], pv[0][f][j]);
                }
            }
        }
    }
}

/* ---- calibration and codes ----------------------------------------------------------- */

static int64_t count_clipped(const float *x, int64_t n, double lo, double hi)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += x[i] < lo || x[i] > hi;
    return c;
}

static void check_codes(const float *x, int64_t n, const qk_qparams *qp, const char *what)
{
    qk_dtype cdt;
    assert_int_equal(qk_code_dtype(qp, &cdt), QK_OK);
    size_t es = qk_dtype_size(cdt);
    void *codes[CTX_COUNT];
    float *back[CTX_COUNT];
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    for (int c = 0; c < CTX_COUNT; c++) {
        codes[c] = malloc((size_t)n * es);
        back[c] = malloc((size_t)n * sizeof(float));
        assert_true(codes[c] && back[c]);
        qk_tensor ct = qk_tensor_host(cdt, codes[c], n), bt = qk_tensor_host(QK_F32, back[c], n);
        assert_int_equal(qk_quantize(ctxs[c], &t, qp, &ct), QK_OK);
        assert_int_equal(qk_dequantize(ctxs[c], &ct, qp, &bt), QK_OK);
    }
    for (int c = 1; c < CTX_COUNT; c++) {
        if (memcmp(codes[c], codes[0], (size_t)n * es) != 0) fail_msg("%s: %s codes differ", what, ctx_names[c]);
        if (memcmp(back[c], back[0], (size_t)n * sizeof(float)) != 0) {
            fail_msg("%s: %s dequantized values differ", what, ctx_names[c]);
        }
    }
    for (int c = 0; c < CTX_COUNT; c++) {
        free(codes[c]);
        free(back[c]);
    }
}

/* One calibration on every context. The clip values must be the CPU's; the
 * OpenCL results must be byte-identical to each other (and to a second call). */
static void check_calibration(const float *x, int64_t n, qk_scheme scheme, int bits, qk_calib_method method,
                              int with_codes, const char *dname)
{
    char what[160];
    snprintf(what, sizeof what, "%s n=%lld %s %d-bit %s", dname, (long long)n,
             scheme == QK_ASYMMETRIC ? "asym" : "sym", bits,
             method == QK_CALIB_MINMAX ? "minmax" : method == QK_CALIB_PERCENTILE ? "percentile" : "gridsearch");
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.scheme = scheme;
    o.bits = bits;
    o.method = method;
    o.percentile = 99.9;
    o.grid_start = 99.0;
    o.grid_stop = 100.0;
    o.grid_step = 0.5;
    /* the grid search scores on the inliers (its fences need the quartiles' select) */
    o.objective = method == QK_CALIB_GRIDSEARCH ? QK_OBJECTIVE_MSE_INLIERS : QK_OBJECTIVE_MSE;
    qk_calib_result r[CTX_COUNT];
    for (int c = 0; c < CTX_COUNT; c++) {
        if (qk_calibrate(ctxs[c], &t, &o, &r[c]) != QK_OK) {
            fail_msg("%s on %s: %s", what, ctx_names[c], qk_context_message(ctxs[c]));
        }
    }
    for (int c = 1; c < CTX_COUNT; c++) {
        assert_int_equal(r[c].n_candidates, r[0].n_candidates);
        assert_int_equal(r[c].n, r[0].n);
        assert_int_equal(r[c].n_inliers, r[0].n_inliers);
        assert_true(same_bits(r[c].fence_lo, r[0].fence_lo) && same_bits(r[c].fence_hi, r[0].fence_hi));
        for (size_t i = 0; i < r[0].n_candidates; i++) {
            const qk_candidate *a = &r[c].candidates[i], *b = &r[0].candidates[i];
            if (!same_bits(a->clip_lo, b->clip_lo) || !same_bits(a->clip_hi, b->clip_hi) || a->scale != b->scale ||
                a->zero_point != b->zero_point || a->clipped != b->clipped) {
                fail_msg("%s: %s candidate %zu: clip [%.9g, %.9g] scale %.9g zp %d clipped %lld; cpu [%.9g, %.9g] "
                         "%.9g %d %lld", what, ctx_names[c], i, a->clip_lo, a->clip_hi, (double)a->scale,
                         (int)a->zero_point, (long long)a->clipped, b->clip_lo, b->clip_hi, (double)b->scale,
                         (int)b->zero_point, (long long)b->clipped);
            }
            double tol = 1e-6 * fabs(b->mse) + 1e-300;
            if (!(fabs(a->mse - b->mse) <= tol) || !(fabs(a->mse_inliers - b->mse_inliers) <= 1e-6 * fabs(b->mse_inliers) + 1e-300)) {
                fail_msg("%s: %s candidate %zu mse %.17g / %.17g, cpu %.17g / %.17g", what, ctx_names[c], i, a->mse,
                         a->mse_inliers, b->mse, b->mse_inliers);
            }
        }
        /* the OpenCL paths agree to the byte, MSE included */
        if (c > CTX_MEM) {
            if (memcmp(r[c].candidates, r[CTX_MEM].candidates, r[0].n_candidates * sizeof(qk_candidate)) != 0 ||
                r[c].best != r[CTX_MEM].best) {
                fail_msg("%s: %s differs from the in-memory OpenCL result", what, ctx_names[c]);
            }
        }
    }
    /* the clipped count, independently */
    const qk_candidate *best = &r[0].candidates[r[0].best];
    assert_int_equal(best->clipped, count_clipped(x, n, best->clip_lo, best->clip_hi));
    /* the same call again: the same bytes */
    qk_calib_result again;
    assert_int_equal(qk_calibrate(ctxs[CTX_MEM], &t, &o, &again), QK_OK);
    assert_memory_equal(again.candidates, r[CTX_MEM].candidates, again.n_candidates * sizeof(qk_candidate));
    qk_calib_result_release(&again);
    if (with_codes) check_codes(x, n, &r[0].params, what);
    for (int c = 0; c < CTX_COUNT; c++) qk_calib_result_release(&r[c]);
}

/* The prime size: every setting against full CPU calibrations. */
static void check_distribution(int dist, int64_t n)
{
    float *x = make_data(dist, n);
    char what[96];
    snprintf(what, sizeof what, "%s n=%lld", dist_names[dist], (long long)n);
    check_stats(x, n, what);
    for (int s = 0; s < 2; s++) {
        for (size_t b = 0; b < sizeof bit_widths / sizeof bit_widths[0]; b++) {
            for (int m = 0; m < 3; m++) {
                check_calibration(x, n, (qk_scheme)s, bit_widths[b], (qk_calib_method)m, 1, dist_names[dist]);
            }
        }
    }
    free(x);
}

/* ---- 2^24 + 13 elements: the CPU reference computed once per distribution ------- */

/* The percentiles every setting below needs, from the CPU context. */
/* the asymmetric lower clips are P(100 - p), computed as the library does */
static const double big_p[] = {100.0 - 99.9, 99.9, 100.0 - 100.0, 100, 100.0 - 99.5, 99.5, 100.0 - 99.0, 99, 25, 75};
static const double big_abs_p[] = {99.9, 99, 99.5, 100};
#define N_BIG_P (sizeof big_p / sizeof big_p[0])
#define N_BIG_ABS (sizeof big_abs_p / sizeof big_abs_p[0])

typedef struct big_ref {
    qk_minmax_result mm;
    double p[N_BIG_P], ap[N_BIG_ABS];
} big_ref;

static double ref_pct(const big_ref *ref, double p, int absval)
{
    const double *list = absval ? big_abs_p : big_p;
    size_t len = absval ? N_BIG_ABS : N_BIG_P;
    for (size_t i = 0; i < len; i++) {
        if (list[i] == p) return absval ? ref->ap[i] : ref->p[i];
    }
    fail_msg("no reference percentile %g", p);
    return 0;
}

static void check_big_setting(const float *x, int64_t n, const big_ref *ref, qk_scheme scheme, int bits,
                              qk_calib_method method, int all_contexts, int with_codes, int with_mse,
                              const char *dname)
{
    char what[160];
    snprintf(what, sizeof what, "%s n=%lld %s %d-bit %s", dname, (long long)n,
             scheme == QK_ASYMMETRIC ? "asym" : "sym", bits,
             method == QK_CALIB_MINMAX ? "minmax" : method == QK_CALIB_PERCENTILE ? "percentile" : "gridsearch");
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.scheme = scheme;
    o.bits = bits;
    o.method = method;
    o.percentile = 99.9;
    o.grid_start = 99.0;
    o.grid_stop = 100.0;
    o.grid_step = 0.5;
    /* the grid search scores on the inliers (its fences need the quartiles' select) */
    o.objective = method == QK_CALIB_GRIDSEARCH ? QK_OBJECTIVE_MSE_INLIERS : QK_OBJECTIVE_MSE;
    qk_calib_result r[CTX_COUNT];
    int last = all_contexts ? CTX_COUNT - 1 : CTX_CHUNK;
    for (int c = CTX_MEM; c <= last; c++) {
        if (qk_calibrate(ctxs[c], &t, &o, &r[c]) != QK_OK) {
            fail_msg("%s on %s: %s", what, ctx_names[c], qk_context_message(ctxs[c]));
        }
        if (c > CTX_MEM && (memcmp(r[c].candidates, r[CTX_MEM].candidates,
                                   r[c].n_candidates * sizeof(qk_candidate)) != 0 ||
                            r[c].best != r[CTX_MEM].best || r[c].n_inliers != r[CTX_MEM].n_inliers)) {
            fail_msg("%s: %s differs from the in-memory OpenCL result", what, ctx_names[c]);
        }
    }
    const qk_calib_result *m = &r[CTX_MEM];
    /* fences from the CPU quartiles (the grid search always computes them) */
    if (method == QK_CALIB_GRIDSEARCH) {
        double q1 = ref_pct(ref, 25, 0), q3 = ref_pct(ref, 75, 0);
        assert_true(same_bits(m->fence_lo, q1 - 3.0 * (q3 - q1)) && same_bits(m->fence_hi, q3 + 3.0 * (q3 - q1)));
    }
    for (size_t i = 0; i < m->n_candidates; i++) {
        const qk_candidate *cd = &m->candidates[i];
        double lo, hi;
        if (method == QK_CALIB_MINMAX) {
            lo = scheme == QK_SYMMETRIC ? -ref->mm.absmax : ref->mm.min;
            hi = scheme == QK_SYMMETRIC ? ref->mm.absmax : ref->mm.max;
        } else if (scheme == QK_ASYMMETRIC) {
            lo = ref_pct(ref, 100.0 - cd->percentile, 0);
            hi = ref_pct(ref, cd->percentile, 0);
        } else {
            hi = ref_pct(ref, cd->percentile, 1);
            lo = -hi;
        }
        qk_qparams want;
        assert_int_equal(qk_qparams_from_range(ctxs[CTX_CPU], scheme, bits, 0, 0, lo, hi, &want), QK_OK);
        if (!same_bits(cd->clip_lo, want.clip_lo) || !same_bits(cd->clip_hi, want.clip_hi) ||
            cd->scale != want.scale || cd->zero_point != want.zero_point) {
            fail_msg("%s: candidate %zu clip [%.9g, %.9g] scale %.9g zp %d, cpu [%.9g, %.9g] %.9g %d", what, i,
                     cd->clip_lo, cd->clip_hi, (double)cd->scale, (int)cd->zero_point, want.clip_lo, want.clip_hi,
                     (double)want.scale, (int)want.zero_point);
        }
    }
    /* the chosen row against the CPU: clipped count and MSE */
    const qk_candidate *best = &m->candidates[m->best];
    assert_int_equal(best->clipped, count_clipped(x, n, best->clip_lo, best->clip_hi));
    if (with_mse) {
        qk_error_result er;
        assert_int_equal(qk_quant_error(ctxs[CTX_CPU], &t, &m->params, 0, &er), QK_OK);
        if (!(fabs(best->mse - er.mse) <= 1e-6 * er.mse + 1e-300)) {
            fail_msg("%s: mse %.17g, cpu %.17g", what, best->mse, er.mse);
        }
        assert_int_equal(er.clipped, best->clipped);
    }
    if (with_codes) check_codes(x, n, &m->params, what);
    for (int c = CTX_MEM; c <= last; c++) qk_calib_result_release(&r[c]);
}

static void check_big(int dist)
{
    int64_t n = N_BIG;
    float *x = make_data(dist, n);
    char what[96];
    snprintf(what, sizeof what, "%s n=%lld", dist_names[dist], (long long)n);
    check_stats(x, n, what);
    big_ref ref;
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    assert_int_equal(qk_minmax(ctxs[CTX_CPU], &t, 0, &ref.mm), QK_OK);
    assert_int_equal(qk_percentiles(ctxs[CTX_CPU], &t, big_p, N_BIG_P, 0, ref.p), QK_OK);
    assert_int_equal(qk_percentiles(ctxs[CTX_CPU], &t, big_abs_p, N_BIG_ABS, QK_ABS, ref.ap), QK_OK);
    for (int s = 0; s < 2; s++) {
        for (size_t b = 0; b < sizeof bit_widths / sizeof bit_widths[0]; b++) {
            for (int m = 0; m < 3; m++) {
                /* the GPU-style kernels (slow on a CPU device) on the grid search at 8 bits;
                 * codes once per width (every setting has them on the prime size) */
                int all = bit_widths[b] == 8 && m == QK_CALIB_GRIDSEARCH;
                int codes = m == QK_CALIB_GRIDSEARCH && s == (int)(b % 2);
                int mse = m == (int)((b + (size_t)s) % 3); /* the CPU's error pass, one method per width */
                check_big_setting(x, n, &ref, (qk_scheme)s, bit_widths[b], (qk_calib_method)m, all, codes, mse,
                                  dist_names[dist]);
            }
        }
    }
    free(x);
}

static void test_prime_size(void **state)
{
    for (int d = 0; d < D_COUNT; d++) check_distribution(d, N_PRIME);
}

static void test_big_normal(void **state)
{
    check_big(D_NORMAL);
}

static void test_big_laplace(void **state)
{
    check_big(D_LAPLACE);
}

static void test_big_negative(void **state)
{
    check_big(D_NEGATIVE);
}

static void test_big_constant(void **state)
{
    check_big(D_CONSTANT);
}

static void test_big_ties(void **state)
{
    check_big(D_TIES);
}

static void test_tiny(void **state)
{
    static const int64_t sizes[] = {1, 2, 3, 7, 65537};
    for (int d = 0; d < D_COUNT; d++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            float *x = make_data(d, sizes[i]);
            char what[64];
            snprintf(what, sizeof what, "%s n=%lld", dist_names[d], (long long)sizes[i]);
            check_stats(x, sizes[i], what);
            for (int s = 0; s < 2; s++) {
                for (int m = 0; m < 3; m++) check_calibration(x, sizes[i], (qk_scheme)s, 8, (qk_calib_method)m, 1, what);
            }
            free(x);
        }
    }
}

/* float64 through the chunked path: the select's 64-bit keys, the double division. */
static void test_float64_chunked(void **state)
{
    int64_t n = (1 << 21) + 3;
    double *x = malloc((size_t)n * sizeof *x);
    ref_rng g = {77};
    for (int64_t i = 0; i < n; i++) x[i] = ref_normal(&g) * (i % 1013 == 0 ? 1e6 : 1e-3);
    qk_tensor t = qk_tensor_host(QK_F64, x, n);
    double v[CTX_COUNT][N_PCT];
    uint16_t *codes[CTX_COUNT];
    qk_calib_result r[CTX_COUNT];
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.bits = 12;
    o.grid_start = 99.5;
    o.grid_stop = 100;
    o.grid_step = 0.25;
    for (int c = 0; c < CTX_COUNT; c++) {
        assert_int_equal(qk_percentiles(ctxs[c], &t, pct_list, N_PCT, 0, v[c]), QK_OK);
        assert_int_equal(qk_calibrate(ctxs[c], &t, &o, &r[c]), QK_OK);
        codes[c] = malloc((size_t)n * 2);
        qk_tensor ct = qk_tensor_host(QK_U16, codes[c], n);
        assert_int_equal(qk_quantize(ctxs[c], &t, &r[0].params, &ct), QK_OK);
    }
    for (int c = 1; c < CTX_COUNT; c++) {
        assert_memory_equal(v[c], v[0], sizeof v[0]);
        assert_memory_equal(codes[c], codes[0], (size_t)n * 2);
        for (size_t i = 0; i < r[0].n_candidates; i++) {
            assert_true(same_bits(r[c].candidates[i].clip_hi, r[0].candidates[i].clip_hi));
            assert_true(fabs(r[c].candidates[i].mse - r[0].candidates[i].mse) <= 1e-6 * r[0].candidates[i].mse);
        }
        if (c > CTX_MEM) {
            assert_memory_equal(r[c].candidates, r[CTX_MEM].candidates, r[0].n_candidates * sizeof(qk_candidate));
        }
    }
    for (int c = 0; c < CTX_COUNT; c++) {
        free(codes[c]);
        qk_calib_result_release(&r[c]);
    }
    free(x);
}

/* Non-finite values in a chunked tensor: the count and the first index. */
static void test_nonfinite_chunked(void **state)
{
    int64_t n = N_PRIME * 3, at = N_PRIME * 5 / 2;
    float *x = make_data(D_LAPLACE, n);
    x[n - 5] = NAN;
    x[at] = -INFINITY;
    x[at + 2] = NAN;
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    for (int c = 0; c < CTX_COUNT; c++) {
        qk_minmax_result mm;
        assert_int_equal(qk_minmax(ctxs[c], &t, 0, &mm), QK_ERR_NONFINITE);
        int64_t count, first;
        qk_context_nonfinite(ctxs[c], &count, &first);
        assert_int_equal(count, 3);
        assert_int_equal(first, at);
        qk_calib_options o;
        qk_calib_options_default(&o);
        o.ignore_nonfinite = 1;
        o.method = QK_CALIB_GRIDSEARCH;
        o.grid_start = 99.8;
        qk_calib_result r;
        assert_int_equal(qk_calibrate(ctxs[c], &t, &o, &r), QK_OK);
        assert_int_equal(r.n, n - 3);
        qk_calib_result_release(&r);
    }
    free(x);
}

/* A caller's cl_mem in this context: wrapped, quantized from, still the caller's. */
static void test_wrap_cl_mem(void **state)
{
    qk_context *ctx = ctxs[CTX_MEM];
    qk_native_handles nh; /* what an engine uses: the public accessor */
    assert_int_equal(qk_context_native(ctx, &nh), QK_OK);
    assert_non_null(nh.cl_context);
    assert_non_null(nh.cl_queue);
    assert_int_equal(nh.cuda_device, -1);
    cl_context clctx = (cl_context)nh.cl_context;
    cl_command_queue clq = (cl_command_queue)nh.cl_queue;
    int64_t n = N_PRIME;
    float *x = make_data(D_LAPLACE, n);
    cl_int err;
    size_t bytes = (size_t)n * sizeof(float) + 256;
    cl_mem mine = clCreateBuffer(clctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    assert_int_equal(clEnqueueWriteBuffer(clq, mine, CL_TRUE, 256, (size_t)n * sizeof(float), x, 0, NULL, NULL),
                     CL_SUCCESS);
    qk_buffer *buf;
    assert_int_equal(qk_buffer_wrap(ctx, mine, bytes, &buf), QK_OK);
    qk_tensor tb = qk_tensor_buffer(QK_F32, buf, 256, n), th = qk_tensor_host(QK_F32, x, n);
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, &tb, 0, &mm), QK_OK);
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, QK_SYMMETRIC, 8, 0, 0, mm.min, mm.max, &qp), QK_OK);
    int8_t *from_buf = malloc((size_t)n), *from_cpu = malloc((size_t)n);
    qk_tensor cb = qk_tensor_host(QK_I8, from_buf, n), cc = qk_tensor_host(QK_I8, from_cpu, n);
    assert_int_equal(qk_quantize(ctx, &tb, &qp, &cb), QK_OK);
    assert_int_equal(qk_quantize(ctxs[CTX_CPU], &th, &qp, &cc), QK_OK);
    assert_memory_equal(from_buf, from_cpu, (size_t)n);
    double p = 99.9, vb, vc;
    assert_int_equal(qk_percentiles(ctx, &tb, &p, 1, QK_ABS, &vb), QK_OK);
    assert_int_equal(qk_percentiles(ctxs[CTX_CPU], &th, &p, 1, QK_ABS, &vc), QK_OK);
    assert_true(same_bits(vb, vc));
    /* another context's cl_mem is refused; too small a cl_mem too */
    qk_buffer *other;
    assert_int_equal(qk_buffer_wrap(ctxs[CTX_CHUNK], mine, bytes, &other), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctxs[CTX_CHUNK]), "cl_context"));
    assert_int_equal(qk_buffer_wrap(ctx, mine, bytes + 1, &other), QK_ERR_INVALID_ARG);
    /* destroying the qkern buffer leaves the caller's reference */
    assert_int_equal(qk_buffer_destroy(ctx, buf), QK_OK);
    cl_uint refs = 0;
    assert_int_equal(clGetMemObjectInfo(mine, CL_MEM_REFERENCE_COUNT, sizeof refs, &refs, NULL), CL_SUCCESS);
    assert_int_equal(refs, 1);
    clReleaseMemObject(mine);
    free(from_buf);
    free(from_cpu);
    free(x);
}

/* Device-resident data in a qk_buffer, on every OpenCL context: in place, no copy. */
static void test_buffer_tensor(void **state)
{
    int64_t n = N_PRIME * 5 + 2;
    float *x = make_data(D_NORMAL, n);
    qk_tensor th = qk_tensor_host(QK_F32, x, n);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_start = 99.5;
    qk_calib_result want;
    assert_int_equal(qk_calibrate(ctxs[CTX_MEM], &th, &o, &want), QK_OK);
    for (int c = CTX_MEM; c < CTX_COUNT; c++) {
        qk_buffer *bx, *bq;
        assert_int_equal(qk_buffer_create(ctxs[c], (size_t)n * 4 + 8, &bx), QK_OK);
        assert_int_equal(qk_buffer_create(ctxs[c], (size_t)n, &bq), QK_OK);
        assert_int_equal(qk_buffer_write(ctxs[c], bx, 8, x, (size_t)n * 4), QK_OK);
        qk_tensor tb = qk_tensor_buffer(QK_F32, bx, 8, n), qb = qk_tensor_buffer(QK_U8, bq, 0, n);
        qk_calib_result r;
        assert_int_equal(qk_calibrate(ctxs[c], &tb, &o, &r), QK_OK);
        assert_memory_equal(r.candidates, want.candidates, r.n_candidates * sizeof(qk_candidate));
        assert_int_equal(qk_quantize(ctxs[c], &tb, &r.params, &qb), QK_OK);
        uint8_t *got = malloc((size_t)n), *ref = malloc((size_t)n);
        qk_tensor rt = qk_tensor_host(QK_U8, ref, n);
        assert_int_equal(qk_buffer_read(ctxs[c], bq, 0, got, (size_t)n), QK_OK);
        assert_int_equal(qk_quantize(ctxs[CTX_CPU], &th, &r.params, &rt), QK_OK);
        assert_memory_equal(got, ref, (size_t)n);
        /* a device-side copy of the codes reads back the same */
        qk_buffer *bq2;
        assert_int_equal(qk_buffer_create(ctxs[c], (size_t)n + 16, &bq2), QK_OK);
        assert_int_equal(qk_buffer_copy(ctxs[c], bq2, 16, bq, 0, (size_t)n), QK_OK);
        memset(got, 0, (size_t)n);
        assert_int_equal(qk_buffer_read(ctxs[c], bq2, 16, got, (size_t)n), QK_OK);
        assert_memory_equal(got, ref, (size_t)n);
        qk_buffer_destroy(ctxs[c], bq2);
        free(got);
        free(ref);
        qk_calib_result_release(&r);
        qk_buffer_destroy(ctxs[c], bx);
        qk_buffer_destroy(ctxs[c], bq);
    }
    qk_calib_result_release(&want);
    free(x);
}

static void test_bad_memory_limit(void **state)
{
    qk_context *ctx = NULL;
    char msg[256];
    setenv("QKERN_DEVICE_MEMORY_LIMIT", "lots", 1);
    assert_int_equal(qk_context_create(QK_BACKEND_OPENCL, &ctx, msg, sizeof msg), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(msg, "QKERN_DEVICE_MEMORY_LIMIT"));
    setenv("QKERN_DEVICE_MEMORY_LIMIT", "64M", 1);
    assert_int_equal(qk_context_create(QK_BACKEND_OPENCL, &ctx, msg, sizeof msg), QK_OK);
    qk_context_destroy(ctx);
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
}

int main(void)
{
    qk_backend_info info;
    qk_backend_query(QK_BACKEND_OPENCL, &info);
    if (!info.available) {
        fprintf(stderr, "SKIPPED: no OpenCL device: %s\n", info.reason);
        return 77;
    }
    for (int c = 0; c < CTX_COUNT; c++) {
        ctxs[c] = make_context(c);
        if (!ctxs[c]) {
            fprintf(stderr, "SKIPPED: cannot create the %s context\n", ctx_names[c]);
            return 77;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_prime_size),
        cmocka_unit_test(test_big_normal),
        cmocka_unit_test(test_big_laplace),
        cmocka_unit_test(test_big_negative),
        cmocka_unit_test(test_big_constant),
        cmocka_unit_test(test_big_ties),
        cmocka_unit_test(test_float64_chunked),
        cmocka_unit_test(test_nonfinite_chunked),
        cmocka_unit_test(test_wrap_cl_mem),
        cmocka_unit_test(test_buffer_tensor),
        cmocka_unit_test(test_bad_memory_limit),
    };
    int failed = cmocka_run_group_tests_name("opencl paths", tests, NULL, NULL);
    for (int c = 0; c < CTX_COUNT; c++) qk_context_destroy(ctxs[c]);
    return failed ? 1 : 0;
}

#else /* built without the OpenCL backend */

int main(void)
{
    fprintf(stderr, "SKIPPED: this build has no OpenCL backend\n");
    return 77;
}

#endif
