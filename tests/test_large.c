/* One large tensor (2^26 + 13 float32 elements, Laplace with outliers) through
 * every operation on the backend under test, checked against a full radix sort
 * and the formulas of ref.h. QKERN_TEST_LARGE_N overrides the size. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

static qk_context *ctx;
static float *x;
static double *sorted;
static int64_t n;

static int setup(void **state)
{
    const char *s = getenv("QKERN_TEST_LARGE_N");
    n = s && *s ? strtoll(s, NULL, 10) : (1LL << 26) + 13;
    x = malloc((size_t)n * 4);
    if (!x) return -1;
    ref_fill(x, n, REF_LAPLACE_OUTLIERS, 0xb16b16);
    float *s32 = ref_sorted_f32(x, n);
    sorted = malloc((size_t)n * sizeof *sorted);
    if (!s32 || !sorted) return -1;
    for (int64_t i = 0; i < n; i++) sorted[i] = s32[i];
    free(s32);
    return 0;
}

static int teardown(void **state)
{
    free(x);
    free(sorted);
    return 0;
}

static void test_large_minmax_percentiles(void **state)
{
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, &t, 0, &mm), QK_OK);
    assert_true(mm.min == sorted[0] && mm.max == sorted[n - 1]);
    double p[] = {0, 1e-6, 0.01, 1, 25, 50, 75, 99, 99.9, 99.99, 99.9999, 100}, got[12];
    assert_int_equal(qk_percentiles(ctx, &t, p, 12, 0, got), QK_OK);
    for (int j = 0; j < 12; j++) {
        double want = ref_percentile_sorted(sorted, n, p[j], 1);
        if (memcmp(&want, &got[j], 8)) fail_msg("p=%g: got %.17g want %.17g", p[j], got[j], want);
    }
}

static void test_large_quantize_roundtrip(void **state)
{
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_PERCENTILE;
    o.percentile = 99.99;
    qk_calib_result r;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
    double lo = ref_percentile_sorted(sorted, n, 100 - 99.99, 1), hi = ref_percentile_sorted(sorted, n, 99.99, 1);
    assert_true(r.params.clip_lo == lo && r.params.clip_hi == hi);
    ref_params rp = ref_asym(lo, hi, 8);
    assert_true(r.params.scale == rp.scale && r.params.zero_point == rp.zp);

    uint8_t *codes = malloc((size_t)n);
    float *back = malloc((size_t)n * 4);
    qk_tensor c = qk_tensor_host(QK_U8, codes, n), b = qk_tensor_host(QK_F32, back, n);
    assert_int_equal(qk_quantize(ctx, &t, &r.params, &c), QK_OK);
    assert_int_equal(qk_dequantize(ctx, &c, &r.params, &b), QK_OK);
    long double sse = 0;
    int64_t clipped = 0;
    for (int64_t i = 0; i < n; i++) {
        long q = ref_code_f32(x[i], rp);
        if (codes[i] != q) fail_msg("i=%lld: code %d want %ld", (long long)i, codes[i], q);
        float xr = ref_dequant(q, rp);
        if (memcmp(&back[i], &xr, 4)) fail_msg("i=%lld: dequantized %.9g want %.9g", (long long)i, back[i], xr);
        long double e = (long double)x[i] - xr;
        sse += e * e;
        clipped += x[i] < lo || x[i] > hi;
    }
    const qk_candidate *row = &r.candidates[r.best];
    assert_true(fabs(row->mse - (double)(sse / n)) <= 1e-9 * row->mse);
    assert_int_equal(row->clipped, clipped);
    qk_error_result er;
    assert_int_equal(qk_quant_error(ctx, &t, &r.params, 0, &er), QK_OK);
    assert_true(fabs(er.mse - (double)(sse / n)) <= 1e-9 * er.mse);
    free(codes);
    free(back);
    qk_calib_result_release(&r);
}

static void test_large_gridsearch(void **state)
{
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.scheme = QK_SYMMETRIC;
    o.grid_start = 99.9;
    o.grid_stop = 100;
    o.grid_step = 0.05;
    o.objective = QK_OBJECTIVE_MSE_INLIERS;
    qk_calib_result r;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
    assert_int_equal(r.n_candidates, 3);
    float *ax = calloc((size_t)n, 4);
    for (int64_t i = 0; i < n; i++) ax[i] = fabsf(x[i]);
    float *as = ref_sorted_f32(ax, n);
    double *ab = malloc((size_t)n * sizeof *ab);
    for (int64_t i = 0; i < n; i++) ab[i] = as[i];
    free(ax);
    free(as);
    for (size_t i = 0; i < r.n_candidates; i++) {
        double c = ref_percentile_sorted(ab, n, r.candidates[i].percentile, 1);
        assert_true(r.candidates[i].clip_hi == c && r.candidates[i].clip_lo == -c);
        assert_true(r.candidates[i].mse > 0 && r.candidates[i].mse_inliers > 0);
    }
    free(ab);
    qk_calib_result_release(&r);
}

int main(void)
{
    ctx = ref_test_context();
    if (!ctx) {
        fprintf(stderr, "SKIPPED: the backend under test is not available\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_minmax_percentiles),
        cmocka_unit_test(test_large_quantize_roundtrip),
        cmocka_unit_test(test_large_gridsearch),
    };
    int failed = cmocka_run_group_tests_name(qk_backend_name(qk_context_backend(ctx)), tests, setup, teardown);
    qk_context_destroy(ctx);
    return failed ? 1 : 0;
}
