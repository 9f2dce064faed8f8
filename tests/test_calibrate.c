/* Calibration on the backend under test: minmax, percentile, the grid search
 * with its table, objectives, ties, and bad options. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

static qk_context *ctx;

/* The worked case: 1000 values uniform in [-80, 100) plus an outlier at 580. */
static float *worked_case(int64_t *n)
{
    *n = 1001;
    float *x = malloc(1001 * 4);
    ref_fill(x, 1000, REF_UNIFORM, 2024);
    x[1000] = 580.0f;
    return x;
}

/* Error over the 1000 bulk values with the given params, computed here. */
static double bulk_mse(const float *x, const qk_qparams *p)
{
    ref_params rp = {p->scale, p->zero_point, p->qmin, p->qmax};
    long double s = 0;
    for (int i = 0; i < 1000; i++) {
        long double e = (long double)x[i] - ref_dequant(ref_code_f32(x[i], rp), rp);
        s += e * e;
    }
    return (double)(s / 1000);
}

static void test_worked_case(void **state)
{
    int64_t n;
    float *x = worked_case(&n);
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_calib_options o;
    qk_calib_options_default(&o);
    qk_calib_result mm, pc, gs_mse, gs_in;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &mm), QK_OK);
    o.method = QK_CALIB_PERCENTILE;
    o.percentile = 99.0;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &pc), QK_OK);
    double e_mm = bulk_mse(x, &mm.params), e_pc = bulk_mse(x, &pc.params);
    /* min-max wastes the codes on the outlier; percentile 99 fixes the bulk */
    assert_true(e_mm > 0.4 && e_mm < 0.7);
    assert_true(e_pc < 0.1);
    assert_true(mm.params.clip_hi == 580.0 && mm.candidates[0].clipped == 0);
    assert_true(pc.params.clip_hi < 100.0);

    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_start = 90;
    o.grid_stop = 100;
    o.grid_step = 0.1;
    o.objective = QK_OBJECTIVE_MSE;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &gs_mse), QK_OK);
    o.objective = QK_OBJECTIVE_MSE_INLIERS;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &gs_in), QK_OK);
    assert_int_equal(gs_mse.n_candidates, 101);
    assert_int_equal(gs_in.n_inliers, 1000); /* the outlier is outside the far-out fences */
    assert_true(gs_in.fence_hi < 580.0);
    /* over all elements, clipping the outlier costs most: keep it */
    assert_true(gs_mse.candidates[gs_mse.best].percentile == 100.0);
    /* on the inliers, the search beats percentile 99 and min-max */
    const qk_candidate *b = &gs_in.candidates[gs_in.best];
    assert_true(b->percentile < 100.0);
    assert_true(b->mse_inliers <= gs_in.candidates[90].mse_inliers); /* p = 99 is row 90 */
    assert_true(b->mse_inliers < 0.07);
    assert_true(fabs(bulk_mse(x, &gs_in.params) - b->mse_inliers) < 1e-9 * b->mse_inliers);
    /* the best is the argmin, ties to the larger p */
    for (size_t i = 0; i < gs_in.n_candidates; i++) {
        const qk_candidate *c = &gs_in.candidates[i];
        assert_true(c->mse_inliers >= b->mse_inliers * (1 - 1e-9));
        if (c->percentile > b->percentile) assert_true(c->mse_inliers > b->mse_inliers * (1 + 1e-9));
    }
    qk_calib_result_release(&mm);
    qk_calib_result_release(&pc);
    qk_calib_result_release(&gs_mse);
    qk_calib_result_release(&gs_in);
    free(x);
}

/* Every row of the table agrees with an independent computation. */
static void test_table_rows(void **state)
{
    enum { N = 30011 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_LAPLACE_OUTLIERS, 31337);
    qk_tensor t = qk_tensor_host(QK_F32, x, N);
    for (int scheme = 0; scheme < 2; scheme++) {
        qk_calib_options o;
        qk_calib_options_default(&o);
        o.scheme = (qk_scheme)scheme;
        o.method = QK_CALIB_GRIDSEARCH;
        o.grid_start = 99.0;
        o.grid_stop = 100.0;
        o.grid_step = 0.25;
        o.bits = 4;
        qk_calib_result r;
        assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
        assert_int_equal(r.n_candidates, 5);
        double q1 = ref_percentile_f32(x, N, 25), q3 = ref_percentile_f32(x, N, 75);
        assert_true(r.fence_lo == q1 - 3 * (q3 - q1) && r.fence_hi == q3 + 3 * (q3 - q1));
        float *ax = malloc(N * 4);
        for (int i = 0; i < N; i++) ax[i] = fabsf(x[i]);
        for (size_t i = 0; i < r.n_candidates; i++) {
            const qk_candidate *c = &r.candidates[i];
            double lo, hi;
            ref_params rp;
            if (scheme == QK_ASYMMETRIC) {
                lo = ref_percentile_f32(x, N, 100 - c->percentile);
                hi = ref_percentile_f32(x, N, c->percentile);
                rp = ref_asym(lo, hi, 4);
            } else {
                hi = ref_percentile_f32(ax, N, c->percentile);
                lo = -hi;
                rp = ref_sym(hi, 4, 0);
            }
            assert_true(c->clip_lo == lo && c->clip_hi == hi);
            assert_true(c->scale == rp.scale && c->zero_point == rp.zp);
            long double sse = 0, sse_in = 0;
            int64_t clipped = 0, inl = 0;
            for (int j = 0; j < N; j++) {
                long double e = (long double)x[j] - ref_dequant(ref_code_f32(x[j], rp), rp);
                sse += e * e;
                if (x[j] >= r.fence_lo && x[j] <= r.fence_hi) {
                    sse_in += e * e;
                    inl++;
                }
                clipped += x[j] < lo || x[j] > hi;
            }
            assert_int_equal(c->clipped, clipped);
            assert_int_equal(r.n_inliers, inl);
            assert_true(fabs(c->mse - (double)(sse / N)) <= 1e-12 * c->mse);
            assert_true(fabs(c->mse_inliers - (double)(sse_in / inl)) <= 1e-12 * c->mse_inliers);
            /* the same parameters through qk_quant_error give the same error */
            qk_qparams qp;
            assert_int_equal(qk_qparams_from_range(ctx, o.scheme, 4, 0, 0, lo, hi, &qp), QK_OK);
            qk_error_result er;
            assert_int_equal(qk_quant_error(ctx, &t, &qp, 0, &er), QK_OK);
            assert_true(fabs(er.mse - c->mse) <= 1e-12 * c->mse);
            assert_int_equal(er.clipped, clipped);
        }
        free(ax);
        qk_calib_result_release(&r);
    }
    free(x);
}

/* A constant tensor: every candidate ties, the largest p wins. */
static void test_ties_go_to_larger_p(void **state)
{
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = 2.0f;
    qk_tensor t = qk_tensor_host(QK_F32, x, 64);
    double grid[] = {99.5, 100.0, 99.0, 99.9};
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid = grid;
    o.grid_len = 4;
    qk_calib_result r;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
    assert_int_equal(r.best, 1);
    assert_true(r.candidates[r.best].percentile == 100.0);
    assert_true(r.params.clip_lo == 0.0 && r.params.clip_hi == 2.0); /* degenerate range widened to 0 */
    qk_calib_result_release(&r);
}

static void test_tiny_and_special_inputs(void **state)
{
    float one[] = {-3.0f}, two[] = {-0.0f, 0.0f}, neg[] = {-5, -4, -3, -2, -1};
    struct { float *x; int64_t n; } cases[] = {{one, 1}, {two, 2}, {neg, 5}};
    for (size_t c = 0; c < 3; c++) {
        qk_tensor t = qk_tensor_host(QK_F32, cases[c].x, cases[c].n);
        for (int m = 0; m < 3; m++) {
            for (int s = 0; s < 2; s++) {
                qk_calib_options o;
                qk_calib_options_default(&o);
                o.method = (qk_calib_method)m;
                o.scheme = (qk_scheme)s;
                o.percentile = 99.0;
                qk_calib_result r;
                assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
                assert_true(r.params.scale > 0 && isfinite(r.params.scale));
                assert_true(isfinite(r.candidates[r.best].mse));
                qk_calib_result_release(&r);
            }
        }
    }
    /* all negative, minmax asymmetric: hi = -1, zero point = 255 + ... */
    qk_tensor t = qk_tensor_host(QK_F32, neg, 5);
    qk_calib_options o;
    qk_calib_options_default(&o);
    qk_calib_result r;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
    assert_true(r.params.clip_lo == -5.0 && r.params.clip_hi == -1.0);
    ref_params rp = ref_asym(-5.0, -1.0, 8);
    assert_int_equal(r.params.zero_point, rp.zp);
    qk_calib_result_release(&r);
    o.include_zero = 1;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
    assert_true(r.params.clip_hi == 0.0 && r.params.zero_point == 255);
    qk_calib_result_release(&r);
}

static void test_nonfinite(void **state)
{
    float x[] = {1, 2, NAN, 4, INFINITY, 6}, f[] = {1, 2, 4, 6};
    qk_tensor t = qk_tensor_host(QK_F32, x, 6), tf = qk_tensor_host(QK_F32, f, 4);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_start = 90;
    o.grid_stop = 100;
    o.grid_step = 5;
    qk_calib_result r, rf;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_NONFINITE);
    int64_t count, first;
    qk_context_nonfinite(ctx, &count, &first);
    assert_true(count == 2 && first == 2);
    assert_null(r.candidates);
    o.ignore_nonfinite = 1;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK);
    assert_int_equal(qk_calibrate(ctx, &tf, &o, &rf), QK_OK);
    assert_int_equal(r.n, 4);
    for (size_t i = 0; i < r.n_candidates; i++) {
        assert_memory_equal(&r.candidates[i], &rf.candidates[i], sizeof r.candidates[i]);
    }
    qk_calib_result_release(&r);
    qk_calib_result_release(&rf);
}

static void test_bad_options(void **state)
{
    float x[] = {1, 2, 3};
    qk_tensor t = qk_tensor_host(QK_F32, x, 3);
    qk_calib_result r;
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_PERCENTILE;
    o.percentile = 40; /* asymmetric needs [50, 100] */
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctx), "[50, 100]"));
    o.scheme = QK_SYMMETRIC;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_OK); /* fine for symmetric */
    qk_calib_result_release(&r);
    o.percentile = 0;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    o.percentile = 100.5;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_step = 0;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    o.grid_step = 0.5;
    o.grid_start = 40;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    double empty[1] = {99};
    o.grid = empty;
    o.grid_len = 0;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    qk_calib_options_default(&o);
    o.bits = 17;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    qk_calib_options_default(&o);
    o.narrow_range = 1;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    qk_calib_options_default(&o);
    o.fence_k = -1;
    o.objective = QK_OBJECTIVE_MSE_INLIERS;
    assert_int_equal(qk_calibrate(ctx, &t, &o, &r), QK_ERR_INVALID_ARG);
    double far[] = {1e20, 1e20 + 1e6, 1e20 + 2e6};
    qk_tensor tf = qk_tensor_host(QK_F64, far, 3);
    qk_calib_options_default(&o);
    if (ref_has_fp64(ctx, "test_bad_options: a float64 range far from 0")) {
        assert_int_equal(qk_calibrate(ctx, &tf, &o, &r), QK_ERR_RANGE);
        o.include_zero = 1;
        assert_int_equal(qk_calibrate(ctx, &tf, &o, &r), QK_OK);
        qk_calib_result_release(&r);
    }
    /* float32 interpolation between values more than FLT_MAX apart overflows, as in numpy */
    float wide[] = {-3.4e38f, 3.4e38f};
    qk_tensor tw = qk_tensor_host(QK_F32, wide, 2);
    qk_calib_options_default(&o);
    o.method = QK_CALIB_PERCENTILE;
    o.percentile = 60;
    assert_int_equal(qk_calibrate(ctx, &tw, &o, &r), QK_ERR_RANGE);
    assert_non_null(strstr(qk_context_message(ctx), "FLT_MAX"));
}

int main(void)
{
    ctx = ref_test_context();
    if (!ctx) {
        fprintf(stderr, "SKIPPED: the backend under test is not available\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worked_case),      cmocka_unit_test(test_table_rows),
        cmocka_unit_test(test_ties_go_to_larger_p), cmocka_unit_test(test_tiny_and_special_inputs),
        cmocka_unit_test(test_nonfinite),        cmocka_unit_test(test_bad_options),
    };
    int failed = cmocka_run_group_tests_name(qk_backend_name(qk_context_backend(ctx)), tests, NULL, NULL);
    qk_context_destroy(ctx);
    return failed ? 1 : 0;
}
