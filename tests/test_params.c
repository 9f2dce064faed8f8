/* Parameters, grids, statuses and context creation: the host-side logic that
 * does not depend on a backend. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>

#include "ref.h"

static void test_code_ranges(void **state)
{
    int32_t lo, hi;
    assert_int_equal(qk_code_range(QK_ASYMMETRIC, 8, 0, &lo, &hi), QK_OK);
    assert_true(lo == 0 && hi == 255);
    assert_int_equal(qk_code_range(QK_SYMMETRIC, 8, 0, &lo, &hi), QK_OK);
    assert_true(lo == -128 && hi == 127);
    assert_int_equal(qk_code_range(QK_SYMMETRIC, 8, 1, &lo, &hi), QK_OK);
    assert_true(lo == -127 && hi == 127);
    assert_int_equal(qk_code_range(QK_SYMMETRIC, 2, 0, &lo, &hi), QK_OK);
    assert_true(lo == -2 && hi == 1);
    assert_int_equal(qk_code_range(QK_ASYMMETRIC, 16, 0, &lo, &hi), QK_OK);
    assert_true(lo == 0 && hi == 65535);
    assert_int_equal(qk_code_range(QK_ASYMMETRIC, 1, 0, &lo, &hi), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_code_range(QK_ASYMMETRIC, 17, 0, &lo, &hi), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_code_range(QK_ASYMMETRIC, 8, 1, &lo, &hi), QK_ERR_INVALID_ARG);
}

static void test_asymmetric_formulas(void **state)
{
    ref_rng r = {77};
    for (int i = 0; i < 20000; i++) {
        double a = ref_normal(&r) * pow(10.0, (double)(int)(ref_next(&r) % 20) - 10);
        double b = a + fabs(ref_normal(&r)) * pow(10.0, (double)(int)(ref_next(&r) % 20) - 10);
        int bits = 2 + (int)(ref_next(&r) % 15);
        qk_qparams p;
        qk_status st = qk_qparams_from_range(NULL, QK_ASYMMETRIC, bits, 0, 0, a, b, &p);
        ref_params w = ref_asym(a, b, bits);
        if (w.zp < INT32_MIN || w.zp > INT32_MAX) {
            assert_int_equal(st, QK_ERR_RANGE);
            continue;
        }
        assert_int_equal(st, QK_OK);
        assert_true(memcmp(&p.scale, &w.scale, 4) == 0);
        assert_int_equal(p.zero_point, w.zp);
    }
}

static void test_degenerate_ranges(void **state)
{
    qk_qparams p;
    /* hi == lo > 0: widened to [0, hi] */
    assert_int_equal(qk_qparams_from_range(NULL, QK_ASYMMETRIC, 8, 0, 0, 3.0, 3.0, &p), QK_OK);
    assert_true(p.clip_lo == 0.0 && p.clip_hi == 3.0 && p.scale == (float)(3.0 / 255) && p.zero_point == 0);
    /* hi == lo < 0: widened to [lo, 0] */
    assert_int_equal(qk_qparams_from_range(NULL, QK_ASYMMETRIC, 8, 0, 0, -2.0, -2.0, &p), QK_OK);
    assert_true(p.clip_lo == -2.0 && p.clip_hi == 0.0 && p.zero_point == 255);
    /* all zero: scale 1, zero point qmin */
    assert_int_equal(qk_qparams_from_range(NULL, QK_ASYMMETRIC, 4, 0, 0, 0.0, 0.0, &p), QK_OK);
    assert_true(p.scale == 1.0f && p.zero_point == 0);
    assert_int_equal(qk_qparams_from_range(NULL, QK_SYMMETRIC, 8, 0, 0, -0.0, 0.0, &p), QK_OK);
    assert_true(p.scale == 1.0f && p.zero_point == 0);
    /* include_zero */
    assert_int_equal(qk_qparams_from_range(NULL, QK_ASYMMETRIC, 8, 0, 1, 5.0, 10.0, &p), QK_OK);
    assert_true(p.clip_lo == 0.0 && p.zero_point == 0);
    /* symmetric uses max |.| */
    assert_int_equal(qk_qparams_from_range(NULL, QK_SYMMETRIC, 8, 1, 0, -7.0, 3.0, &p), QK_OK);
    assert_true(p.scale == (float)(7.0 / 127) && p.clip_lo == -7.0 && p.clip_hi == 7.0 && p.qmin == -127);
    /* a range of a few denormals: the float scale would be 0, it becomes the smallest denormal */
    assert_int_equal(qk_qparams_from_range(NULL, QK_ASYMMETRIC, 16, 0, 0, 0.0, 1e-44, &p), QK_OK);
    assert_true(p.scale == FLT_TRUE_MIN);
}

static void test_range_errors(void **state)
{
    qk_context *ctx = NULL;
    assert_int_equal(qk_context_create(QK_BACKEND_CPU, &ctx, NULL, 0), QK_OK);
    qk_qparams p;
    /* far from 0 compared with its width: the zero point leaves int32 */
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, 1e20, 1e20 + 1e6, &p), QK_ERR_RANGE);
    assert_non_null(strstr(qk_context_message(ctx), "include_zero"));
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 1, 1e20, 1e20 + 1e6, &p), QK_OK);
    /* float64 range too wide for a float scale */
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, -1e300, 1e300, &p), QK_ERR_RANGE);
    assert_int_equal(qk_qparams_from_range(ctx, QK_SYMMETRIC, 8, 0, 0, -1e300, 1e300, &p), QK_ERR_RANGE);
    /* bad arguments */
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, 2.0, 1.0, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, NAN, 1.0, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, 0, INFINITY, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 1, 0, 0, 0, 1, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 1, 0, 0, 1, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_scale(ctx, QK_SYMMETRIC, 8, 0, 0.5f, 3, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_scale(ctx, QK_ASYMMETRIC, 8, 0, -0.5f, 3, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_scale(ctx, QK_ASYMMETRIC, 8, 0, INFINITY, 3, &p), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_qparams_from_scale(ctx, QK_ASYMMETRIC, 8, 0, 0.5f, 3, &p), QK_OK);
    assert_true(p.clip_lo == -1.5 && p.clip_hi == 126.0);
    qk_context_destroy(ctx);
}

static void test_grid_expand(void **state)
{
    size_t n;
    double p[2000];
    assert_int_equal(qk_grid_expand(99, 100, 0.01, p, 2000, &n), QK_OK);
    assert_int_equal(n, 101);
    assert_true(p[0] == 99.0 && p[100] == 100.0);
    for (size_t i = 1; i < n; i++) assert_true(p[i] > p[i - 1] && p[i] <= 100.0);
    assert_int_equal(qk_grid_expand(90, 100, 0.1, p, 2000, &n), QK_OK);
    assert_int_equal(n, 101);
    assert_true(p[100] == 100.0);
    assert_int_equal(qk_grid_expand(90, 100, 0.3, p, 2000, &n), QK_OK);
    assert_int_equal(n, 34); /* stop not on the grid: last is 99.9, never past stop */
    assert_true(p[33] <= 100.0 && p[33] > 99.8);
    assert_int_equal(qk_grid_expand(99.5, 99.5, 1, p, 2000, &n), QK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(qk_grid_expand(0, 100, 1.0 / 3.0, NULL, 0, &n), QK_OK);
    assert_int_equal(n, 301);
    assert_int_equal(qk_grid_expand(100, 99, 0.1, p, 2000, &n), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_grid_expand(99, 100, 0, p, 2000, &n), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_grid_expand(99, 100, -1, p, 2000, &n), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_grid_expand(0, 100, 1e-9, NULL, 0, &n), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_grid_expand(99, 100, 0.01, p, 10, &n), QK_ERR_INVALID_ARG);
}

static void test_status_strings(void **state)
{
    for (int s = 0; s < QK_STATUS_COUNT; s++) {
        const char *a = qk_status_string((qk_status)s);
        assert_non_null(a);
        for (int t = 0; t < s; t++) assert_string_not_equal(a, qk_status_string((qk_status)t));
    }
    assert_non_null(strstr(qk_status_string((qk_status)999), "UNKNOWN"));
    assert_string_equal(qk_dtype_name(QK_F32), "float32");
    assert_int_equal(qk_dtype_size(QK_F64), 8);
    qk_backend_kind k;
    assert_int_equal(qk_backend_parse("opencl", &k), QK_OK);
    assert_int_equal(k, QK_BACKEND_OPENCL);
    assert_int_equal(qk_backend_parse("gpu", &k), QK_ERR_INVALID_ARG);
}

static void test_context_env(void **state)
{
    qk_context *ctx = NULL;
    char msg[256];
    setenv("QKERN_BACKEND", "bogus", 1);
    assert_int_equal(qk_context_create(QK_BACKEND_AUTO, &ctx, msg, sizeof msg), QK_ERR_INVALID_ARG);
    assert_null(ctx);
    assert_non_null(strstr(msg, "bogus"));
    setenv("QKERN_BACKEND", "cpu", 1);
    assert_int_equal(qk_context_create(QK_BACKEND_AUTO, &ctx, msg, sizeof msg), QK_OK);
    assert_int_equal(qk_context_backend(ctx), QK_BACKEND_CPU);
    qk_device_info d;
    assert_int_equal(qk_context_device(ctx, &d), QK_OK);
    assert_string_equal(d.type, "cpu");
    qk_native_handles nh;
    assert_int_equal(qk_context_native(ctx, &nh), QK_OK);
    assert_true(nh.cl_context == NULL && nh.cuda_stream == NULL && nh.cuda_device == -1);
    qk_context_destroy(ctx);
    unsetenv("QKERN_BACKEND");
    setenv("QKERN_DEVICE", "abc", 1);
    assert_int_equal(qk_context_create(QK_BACKEND_CPU, &ctx, msg, sizeof msg), QK_ERR_INVALID_ARG);
    setenv("QKERN_DEVICE", "3", 1);
    assert_int_equal(qk_context_create(QK_BACKEND_CPU, &ctx, msg, sizeof msg), QK_ERR_NO_DEVICE);
    unsetenv("QKERN_DEVICE");
    /* AUTO always ends somewhere: the CPU reference at worst */
    assert_int_equal(qk_context_create(QK_BACKEND_AUTO, &ctx, msg, sizeof msg), QK_OK);
    qk_context_destroy(ctx);
    assert_int_equal(qk_context_create((qk_backend_kind)42, &ctx, msg, sizeof msg), QK_ERR_INVALID_ARG);
}

/* Backends not compiled in report it cleanly, both on query and on create. */
static void test_backend_query(void **state)
{
    qk_backend_info info;
    assert_int_equal(qk_backend_query(QK_BACKEND_CPU, &info), QK_OK);
    assert_true(info.compiled && info.available && info.n_devices == 1);
    for (int k = QK_BACKEND_OPENCL; k <= QK_BACKEND_CUDA; k++) {
        assert_int_equal(qk_backend_query((qk_backend_kind)k, &info), QK_OK);
        qk_context *ctx = NULL;
        char msg[256];
        qk_status st = qk_context_create((qk_backend_kind)k, &ctx, msg, sizeof msg);
        if (!info.compiled) {
            assert_int_equal(st, QK_ERR_UNSUPPORTED);
            assert_false(info.available);
            assert_non_null(strstr(info.reason, "not built in"));
            assert_non_null(strstr(msg, "not built in"));
        } else if (!info.available) {
            assert_int_not_equal(st, QK_OK);
            assert_true(strlen(info.reason) > 0);
        } else {
            assert_int_equal(st, QK_OK);
        }
        qk_context_destroy(ctx);
    }
    assert_int_equal(qk_backend_query(QK_BACKEND_AUTO, &info), QK_ERR_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_ranges),     cmocka_unit_test(test_asymmetric_formulas),
        cmocka_unit_test(test_degenerate_ranges), cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_grid_expand),     cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_context_env),     cmocka_unit_test(test_backend_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
