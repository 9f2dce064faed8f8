/* Operations on the backend under test (QKERN_TEST_BACKEND, default cpu) against
 * the independent formulas of ref.h: min/max, percentiles, quantize,
 * dequantize, round-trip error, and their edge cases and bad arguments. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

static qk_context *ctx;

static int bits_eq(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---- min/max ------------------------------------------------------------------ */

static void test_minmax_all_distributions(void **state)
{
    static const int64_t sizes[] = {1, 2, 3, 1000, 65537};
    for (int dist = 0; dist < REF_DIST_COUNT; dist++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            float *x = malloc((size_t)n * 4);
            ref_fill(x, n, dist, 100 + (uint64_t)dist * 7 + s);
            uint32_t kmin = UINT32_MAX, kmax = 0;
            for (int64_t i = 0; i < n; i++) {
                uint32_t k = ref_key32(x[i]);
                if (k < kmin) kmin = k;
                if (k > kmax) kmax = k;
            }
            qk_tensor t = qk_tensor_host(QK_F32, x, n);
            qk_minmax_result r;
            assert_int_equal(qk_minmax(ctx, &t, 0, &r), QK_OK);
            assert_true(bits_eq(r.min, (double)ref_unkey32(kmin)));
            assert_true(bits_eq(r.max, (double)ref_unkey32(kmax)));
            assert_int_equal(r.n_finite, n);
            assert_int_equal(r.nonfinite_count, 0);
            assert_int_equal(r.first_nonfinite, -1);
            free(x);
        }
    }
}

static void test_minmax_signed_zeros(void **state)
{
    float x[] = {0.0f, -0.0f, 0.0f};
    qk_tensor t = qk_tensor_host(QK_F32, x, 3);
    qk_minmax_result r;
    assert_int_equal(qk_minmax(ctx, &t, 0, &r), QK_OK);
    assert_true(r.min == 0.0 && signbit(r.min)); /* -0 orders before +0 */
    assert_true(r.max == 0.0 && !signbit(r.max));
}

static void test_minmax_nonfinite(void **state)
{
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = (float)i - 4.0f;
    x[5] = NAN;
    x[9] = INFINITY;
    x[12] = -INFINITY;
    qk_tensor t = qk_tensor_host(QK_F32, x, 16);
    qk_minmax_result r;
    assert_int_equal(qk_minmax(ctx, &t, 0, &r), QK_ERR_NONFINITE);
    int64_t count = 0, first = 0;
    assert_int_equal(qk_context_nonfinite(ctx, &count, &first), QK_OK);
    assert_int_equal(count, 3);
    assert_int_equal(first, 5);
    assert_non_null(strstr(qk_context_message(ctx), "index 5"));
    assert_int_equal(qk_minmax(ctx, &t, QK_IGNORE_NONFINITE, &r), QK_OK);
    assert_true(r.min == -4.0 && r.max == 11.0);
    assert_int_equal(r.n_finite, 13);
    float nan3[3] = {NAN, NAN, INFINITY};
    t = qk_tensor_host(QK_F32, nan3, 3);
    assert_int_equal(qk_minmax(ctx, &t, QK_IGNORE_NONFINITE, &r), QK_ERR_NONFINITE);
}

static void test_minmax_float64(void **state)
{
    double x[] = {1e300, -2.5, 4.9e-324, -1e-300, 7.0};
    qk_tensor t = qk_tensor_host(QK_F64, x, 5);
    qk_minmax_result r;
    assert_int_equal(qk_minmax(ctx, &t, 0, &r), QK_OK);
    assert_true(r.min == -2.5 && r.max == 1e300);
    assert_true(r.absmax == 1e300);
}

/* ---- percentiles ------------------------------------------------------------------ */

static const double special_p[] = {0, 0.01, 1, 25, 33.3, 50, 75, 99, 99.9, 99.99, 100};
#define N_SPECIAL (sizeof special_p / sizeof special_p[0])

static void check_percentiles_f32(const float *x, int64_t n, unsigned flags)
{
    double got[N_SPECIAL];
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    assert_int_equal(qk_percentiles(ctx, &t, special_p, N_SPECIAL, flags, got), QK_OK);
    float *y = calloc((size_t)n, 4);
    for (int64_t i = 0; i < n; i++) y[i] = (flags & QK_ABS) ? fabsf(x[i]) : x[i];
    float *s = ref_sorted_f32(y, n);
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
    for (size_t j = 0; j < N_SPECIAL; j++) {
        double want = ref_percentile_sorted(d, n, special_p[j], 1);
        if (!bits_eq(got[j], want)) {
            fail_msg("n=%lld p=%g: got %.17g want %.17g", (long long)n, special_p[j], got[j], want);
        }
    }
    free(y);
    free(s);
    free(d);
}

static void test_percentiles_vs_sort(void **state)
{
    static const int64_t sizes[] = {1, 2, 3, 4, 5, 10, 101, 1000, 4099, 100003};
    for (int dist = 0; dist < REF_DIST_COUNT; dist++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            float *x = malloc((size_t)n * 4);
            ref_fill(x, n, dist, 7000 + (uint64_t)dist * 131 + s);
            check_percentiles_f32(x, n, 0);
            check_percentiles_f32(x, n, QK_ABS);
            free(x);
        }
    }
}

static void test_percentiles_random_p(void **state)
{
    ref_rng r = {42};
    for (int round = 0; round < 200; round++) {
        int64_t n = 1 + (int64_t)(ref_next(&r) % 3000);
        float *x = malloc((size_t)n * 4);
        ref_fill(x, n, (int)(ref_next(&r) % REF_DIST_COUNT), ref_next(&r));
        double p[8], got[8];
        for (int j = 0; j < 8; j++) p[j] = 100.0 * ref_uniform(&r);
        qk_tensor t = qk_tensor_host(QK_F32, x, n);
        assert_int_equal(qk_percentiles(ctx, &t, p, 8, 0, got), QK_OK);
        for (int j = 0; j < 8; j++) {
            double want = ref_percentile_f32(x, n, p[j]);
            if (!bits_eq(got[j], want)) fail_msg("round %d n=%lld p=%.17g: %.17g != %.17g", round, (long long)n,
                                                 p[j], got[j], want);
        }
        free(x);
    }
}

static void test_percentiles_float64(void **state)
{
    enum { N = 5001 };
    double *x = malloc(N * sizeof *x), *s = malloc(N * sizeof *s);
    ref_rng r = {9};
    for (int i = 0; i < N; i++) x[i] = ref_normal(&r) * 1e-3 + (i % 17 == 0 ? 1e6 : 0);
    memcpy(s, x, N * sizeof *x);
    qsort(s, N, sizeof *s, ref_cmp_f64);
    double got[N_SPECIAL];
    qk_tensor t = qk_tensor_host(QK_F64, x, N);
    assert_int_equal(qk_percentiles(ctx, &t, special_p, N_SPECIAL, 0, got), QK_OK);
    for (size_t j = 0; j < N_SPECIAL; j++) assert_true(bits_eq(got[j], ref_percentile_sorted(s, N, special_p[j], 0)));
    free(x);
    free(s);
}

static void test_percentiles_nonfinite_and_bad_p(void **state)
{
    float x[] = {3, NAN, 1, INFINITY, 2, -INFINITY, 5};
    float finite[] = {3, 1, 2, 5};
    qk_tensor t = qk_tensor_host(QK_F32, x, 7);
    double p[] = {0, 50, 100}, got[3];
    assert_int_equal(qk_percentiles(ctx, &t, p, 3, 0, got), QK_ERR_NONFINITE);
    assert_int_equal(qk_percentiles(ctx, &t, p, 3, QK_IGNORE_NONFINITE, got), QK_OK);
    for (int j = 0; j < 3; j++) assert_true(bits_eq(got[j], ref_percentile_f32(finite, 4, p[j])));
    double bad[] = {-0.5, 100.5, NAN};
    qk_tensor ok = qk_tensor_host(QK_F32, finite, 4);
    for (int j = 0; j < 3; j++) assert_int_equal(qk_percentiles(ctx, &ok, &bad[j], 1, 0, got), QK_ERR_INVALID_ARG);
}

/* numpy's quirk at p = 100 with a -0 maximum: +0 for n >= 2, -0 for n = 1. */
static void test_percentile_signed_zero_quirk(void **state)
{
    float two[] = {-0.0f, -0.0f}, one[] = {-0.0f};
    double p = 100, got;
    qk_tensor t = qk_tensor_host(QK_F32, two, 2);
    assert_int_equal(qk_percentiles(ctx, &t, &p, 1, 0, &got), QK_OK);
    assert_true(got == 0.0 && !signbit(got));
    t = qk_tensor_host(QK_F32, one, 1);
    assert_int_equal(qk_percentiles(ctx, &t, &p, 1, 0, &got), QK_OK);
    assert_true(got == 0.0 && signbit(got));
}

/* ---- quantize / dequantize ---------------------------------------------------------- */

static void quantize_and_check(const float *x, int64_t n, qk_scheme scheme, int bits, int narrow)
{
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, &t, 0, &mm), QK_OK);
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, scheme, bits, narrow, 0, mm.min, mm.max, &qp), QK_OK);
    ref_params rp = scheme == QK_ASYMMETRIC ? ref_asym(mm.min, mm.max, bits) : ref_sym(mm.absmax, bits, narrow);
    if (memcmp(&qp.scale, &rp.scale, 4) != 0) fail_msg("scale %.9g want %.9g (bits %d scheme %d, range %g..%g)", (double)qp.scale, (double)rp.scale, bits, (int)scheme, mm.min, mm.max);
    assert_int_equal(qp.zero_point, rp.zp);
    assert_int_equal(qp.qmin, rp.qmin);
    assert_int_equal(qp.qmax, rp.qmax);

    qk_dtype cdt;
    assert_int_equal(qk_code_dtype(&qp, &cdt), QK_OK);
    size_t es = qk_dtype_size(cdt);
    void *codes = malloc((size_t)n * es);
    qk_tensor c = qk_tensor_host(cdt, codes, n);
    assert_int_equal(qk_quantize(ctx, &t, &qp, &c), QK_OK);
    float *back = malloc((size_t)n * 4);
    qk_tensor b = qk_tensor_host(QK_F32, back, n);
    assert_int_equal(qk_dequantize(ctx, &c, &qp, &b), QK_OK);
    long double sse = 0;
    for (int64_t i = 0; i < n; i++) {
        long want = ref_code_f32(x[i], rp), got;
        switch (cdt) {
        case QK_U8: got = ((uint8_t *)codes)[i]; break;
        case QK_I8: got = ((int8_t *)codes)[i]; break;
        case QK_U16: got = ((uint16_t *)codes)[i]; break;
        default: got = ((int16_t *)codes)[i]; break;
        }
        if (got != want) fail_msg("bits %d scheme %d i=%lld x=%.9g: code %ld want %ld", bits, (int)scheme,
                                  (long long)i, (double)x[i], got, want);
        float xr = ref_dequant(want, rp);
        assert_true(memcmp(&back[i], &xr, 4) == 0);
        long double e = (long double)x[i] - (long double)xr;
        sse += e * e;
    }
    qk_error_result er;
    assert_int_equal(qk_quant_error(ctx, &t, &qp, 0, &er), QK_OK);
    double want_mse = (double)(sse / n);
    /* near FLT_MAX the dequantized value itself can overflow to Inf: then both are Inf */
    if (er.mse != want_mse && !(fabs(er.mse - want_mse) <= 1e-12 * fabs(want_mse) + 1e-300)) fail_msg("mse %.17g want %.17g bits %d scheme %d", er.mse, want_mse, bits, (int)scheme);
    assert_int_equal(er.n, n);
    qk_error_result again;
    assert_int_equal(qk_quant_error(ctx, &t, &qp, 0, &again), QK_OK);
    assert_true(bits_eq(er.mse, again.mse)); /* same bits every run */
    free(codes);
    free(back);
}

static void test_quantize_formulas(void **state)
{
    static const int bits[] = {2, 3, 4, 8, 12, 16};
    for (int dist = 0; dist < REF_DIST_COUNT; dist++) {
        int64_t n = 20011;
        float *x = malloc((size_t)n * 4);
        ref_fill(x, n, dist, 555 + (uint64_t)dist);
        for (size_t b = 0; b < sizeof bits / sizeof bits[0]; b++) {
            quantize_and_check(x, n, QK_ASYMMETRIC, bits[b], 0);
            quantize_and_check(x, n, QK_SYMMETRIC, bits[b], 0);
            quantize_and_check(x, n, QK_SYMMETRIC, bits[b], 1);
        }
        free(x);
    }
    float one = -2.5f, two[2] = {1.0f, -1.0f};
    quantize_and_check(&one, 1, QK_ASYMMETRIC, 8, 0);
    quantize_and_check(&one, 1, QK_SYMMETRIC, 4, 0);
    quantize_and_check(two, 2, QK_ASYMMETRIC, 2, 0);
    quantize_and_check(two, 2, QK_SYMMETRIC, 16, 1);
}

/* Round half to even, the clamp, and non-finite values. */
static void test_quantize_rounding_and_specials(void **state)
{
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_scale(ctx, QK_ASYMMETRIC, 8, 0, 1.0f, 10, &qp), QK_OK);
    float x[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -10.5f, -11.5f, 1e30f, -1e30f, NAN, INFINITY, -INFINITY, 244.5f,
                 245.5f};
    uint8_t want[] = {10, 12, 12, 10, 8, 0, 0, 255, 0, 10, 255, 0, 254, 255};
    uint8_t got[14];
    qk_tensor t = qk_tensor_host(QK_F32, x, 14), c = qk_tensor_host(QK_U8, got, 14);
    assert_int_equal(qk_quantize(ctx, &t, &qp, &c), QK_OK);
    assert_memory_equal(got, want, sizeof want);

    /* zero point outside the code range: NaN maps to the clamped zero point */
    assert_int_equal(qk_qparams_from_scale(ctx, QK_ASYMMETRIC, 4, 0, 0.25f, -1000, &qp), QK_OK);
    float y[] = {NAN, 250.0f, 251.0f, 260.0f};
    uint8_t want2[] = {0, 0, 4, 15}, got2[4];
    t = qk_tensor_host(QK_F32, y, 4);
    c = qk_tensor_host(QK_U8, got2, 4);
    assert_int_equal(qk_quantize(ctx, &t, &qp, &c), QK_OK);
    assert_memory_equal(got2, want2, 4);
}

static void test_quantize_float64(void **state)
{
    if (!ref_has_fp64(ctx, "test_quantize_float64")) skip();
    double x[] = {-1.0, 0.1, 0.3, 2.0, 1e-300};
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, -1.0, 2.0, &qp), QK_OK);
    uint8_t got[5];
    qk_tensor t = qk_tensor_host(QK_F64, x, 5), c = qk_tensor_host(QK_U8, got, 5);
    assert_int_equal(qk_quantize(ctx, &t, &qp, &c), QK_OK);
    for (int i = 0; i < 5; i++) {
        double r = rint(x[i] / (double)qp.scale) + qp.zero_point; /* double division for float64 input */
        long w = r < 0 ? 0 : r > 255 ? 255 : (long)r;
        assert_int_equal(got[i], w);
    }
}

static void test_dequantize_code_dtypes(void **state)
{
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_scale(ctx, QK_ASYMMETRIC, 16, 0, 0.3f, 7, &qp), QK_OK);
    int32_t v32[] = {-2147483647 - 1, -5, 0, 7, 65535, 2147483647};
    float out[6];
    qk_tensor c = qk_tensor_host(QK_I32, v32, 6), o = qk_tensor_host(QK_F32, out, 6);
    assert_int_equal(qk_dequantize(ctx, &c, &qp, &o), QK_OK);
    for (int i = 0; i < 6; i++) {
        float w = (float)((long long)v32[i] - 7) * 0.3f;
        assert_true(memcmp(&out[i], &w, 4) == 0);
    }
    int8_t v8[] = {-128, -1, 0, 127};
    c = qk_tensor_host(QK_I8, v8, 4);
    o = qk_tensor_host(QK_F32, out, 4);
    assert_int_equal(qk_dequantize(ctx, &c, &qp, &o), QK_OK);
    assert_true(out[0] == (float)(-135) * 0.3f && out[3] == (float)120 * 0.3f);
    uint16_t v16[] = {0, 65535};
    c = qk_tensor_host(QK_U16, v16, 2);
    o = qk_tensor_host(QK_F32, out, 2);
    assert_int_equal(qk_dequantize(ctx, &c, &qp, &o), QK_OK);
    assert_true(out[1] == (float)65528 * 0.3f);
}

static void test_bad_arguments(void **state)
{
    float x[4] = {1, 2, 3, 4};
    uint8_t c8[4];
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 12, 0, 0, 1, 4, &qp), QK_OK);
    qk_tensor t = qk_tensor_host(QK_F32, x, 4), c = qk_tensor_host(QK_U8, c8, 4);
    assert_int_equal(qk_quantize(ctx, &t, &qp, &c), QK_ERR_INVALID_ARG); /* 12-bit codes in uint8 */
    assert_true(strlen(qk_context_message(ctx)) > 0);
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, 1, 4, &qp), QK_OK);
    c.n = 3;
    assert_int_equal(qk_quantize(ctx, &t, &qp, &c), QK_ERR_INVALID_ARG);
    c.n = 4;
    qk_tensor empty = qk_tensor_host(QK_F32, x, 0);
    assert_int_equal(qk_quantize(ctx, &empty, &qp, &c), QK_ERR_INVALID_ARG);
    qk_tensor nul = qk_tensor_host(QK_F32, NULL, 4);
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, &nul, 0, &mm), QK_ERR_INVALID_ARG);
    qk_tensor ints = qk_tensor_host(QK_I32, x, 4);
    assert_int_equal(qk_minmax(ctx, &ints, 0, &mm), QK_ERR_UNSUPPORTED);
    qk_qparams broken = qp;
    broken.scale = 0.0f;
    assert_int_equal(qk_quantize(ctx, &t, &broken, &c), QK_ERR_INVALID_ARG);
    broken = qp;
    broken.qmax = 100;
    assert_int_equal(qk_quantize(ctx, &t, &broken, &c), QK_ERR_INVALID_ARG);
    broken = qp;
    broken.bits = 1;
    assert_int_equal(qk_quantize(ctx, &t, &broken, &c), QK_ERR_INVALID_ARG);
    float nan[2] = {NAN, 1};
    qk_tensor tn = qk_tensor_host(QK_F32, nan, 2);
    qk_error_result er;
    assert_int_equal(qk_quant_error(ctx, &tn, &qp, 0, &er), QK_ERR_NONFINITE);
    assert_int_equal(qk_quant_error(ctx, &tn, &qp, QK_IGNORE_NONFINITE, &er), QK_OK);
    assert_int_equal(er.n, 1);
}

/* ---- buffers: device-resident data gives the same results as host data ------------- */

static void test_buffers(void **state)
{
    enum { N = 10007 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_LAPLACE_OUTLIERS, 3);
    qk_buffer *bx, *bc;
    assert_int_equal(qk_buffer_create(ctx, N * 4 + 64, &bx), QK_OK);
    assert_int_equal(qk_buffer_create(ctx, N, &bc), QK_OK);
    assert_int_equal(qk_buffer_write(ctx, bx, 64, x, N * 4), QK_OK);
    qk_tensor tb = qk_tensor_buffer(QK_F32, bx, 64, N), th = qk_tensor_host(QK_F32, x, N);
    qk_minmax_result mb, mh;
    assert_int_equal(qk_minmax(ctx, &tb, 0, &mb), QK_OK);
    assert_int_equal(qk_minmax(ctx, &th, 0, &mh), QK_OK);
    assert_true(bits_eq(mb.min, mh.min) && bits_eq(mb.max, mh.max));
    double p[] = {1, 50, 99.9}, vb[3], vh[3];
    assert_int_equal(qk_percentiles(ctx, &tb, p, 3, 0, vb), QK_OK);
    assert_int_equal(qk_percentiles(ctx, &th, p, 3, 0, vh), QK_OK);
    assert_memory_equal(vb, vh, sizeof vb);
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, mh.min, mh.max, &qp), QK_OK);
    qk_tensor cb = qk_tensor_buffer(QK_U8, bc, 0, N);
    uint8_t *ch = malloc(N), *cr = malloc(N);
    qk_tensor chost = qk_tensor_host(QK_U8, ch, N);
    assert_int_equal(qk_quantize(ctx, &tb, &qp, &cb), QK_OK);
    assert_int_equal(qk_quantize(ctx, &th, &qp, &chost), QK_OK);
    assert_int_equal(qk_buffer_read(ctx, bc, 0, cr, N), QK_OK);
    assert_memory_equal(ch, cr, N);
    /* out of range and misaligned views */
    qk_tensor over = qk_tensor_buffer(QK_F32, bx, 68, N);
    assert_int_equal(qk_minmax(ctx, &over, 0, &mb), QK_ERR_INVALID_ARG);
    qk_tensor odd = qk_tensor_buffer(QK_F32, bx, 2, 4);
    assert_int_equal(qk_minmax(ctx, &odd, 0, &mb), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_buffer_write(ctx, bc, N - 1, x, 2), QK_ERR_INVALID_ARG);
    /* device-to-device copy */
    qk_buffer *bd;
    assert_int_equal(qk_buffer_create(ctx, N * 4, &bd), QK_OK);
    assert_int_equal(qk_buffer_copy(ctx, bd, 0, bx, 64, N * 4), QK_OK);
    float *xr = malloc(N * 4);
    assert_int_equal(qk_buffer_read(ctx, bd, 0, xr, N * 4), QK_OK);
    assert_memory_equal(xr, x, N * 4);
    free(xr);
    assert_int_equal(qk_buffer_copy(ctx, bd, 0, bx, 64, N * 4 + 4), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_buffer_copy(ctx, bx, 0, bx, 8, 64), QK_ERR_INVALID_ARG); /* overlap */
    assert_int_equal(qk_buffer_destroy(ctx, bd), QK_OK);
    assert_int_equal(qk_buffer_destroy(ctx, bx), QK_OK);
    assert_int_equal(qk_buffer_destroy(ctx, bc), QK_OK);
    free(x);
    free(ch);
    free(cr);
}

int main(void)
{
    ctx = ref_test_context();
    if (!ctx) {
        fprintf(stderr, "SKIPPED: the backend under test is not available\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minmax_all_distributions),
        cmocka_unit_test(test_minmax_signed_zeros),
        cmocka_unit_test(test_minmax_nonfinite),
        cmocka_unit_test(test_minmax_float64),
        cmocka_unit_test(test_percentiles_vs_sort),
        cmocka_unit_test(test_percentiles_random_p),
        cmocka_unit_test(test_percentiles_float64),
        cmocka_unit_test(test_percentiles_nonfinite_and_bad_p),
        cmocka_unit_test(test_percentile_signed_zero_quirk),
        cmocka_unit_test(test_quantize_formulas),
        cmocka_unit_test(test_quantize_rounding_and_specials),
        cmocka_unit_test(test_quantize_float64),
        cmocka_unit_test(test_dequantize_code_dtypes),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_buffers),
    };
    int failed = cmocka_run_group_tests_name(qk_backend_name(qk_context_backend(ctx)), tests, NULL, NULL);
    qk_context_destroy(ctx);
    return failed ? 1 : 0;
}
