/* A tensor past 2^31 elements on the CUDA backend: 2^31 + 17 float32 values
 * (8.6 GB), as a host tensor (streamed) and in device memory, through min/max,
 * percentiles, quantize and the error pass. Every index and count must be
 * 64-bit for this to pass.
 *
 * The data is x[i] = r_i / 2^24 - 0.5 with r_i = (i * 2654435761) mod 2^24: a
 * bijection on each run of 2^24 indices, so each r appears 128 times and the
 * 17 r of i < 17 once more. The sorted order, and so every percentile, follows
 * from those counts without sorting 8.6 GB.
 *
 * Opt-in (QKERN_TEST_HUGE=1) and only where a CUDA device answers: it needs
 * about 12 GB of host memory and 11 GB of device memory. Otherwise it says so
 * and passes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "ref.h"

#define HUGE_N ((INT64_C(1) << 31) + 17)
#define RBITS 24
#define NR (1 << RBITS)

static qk_context *ctx;
static float *x;
static uint32_t *counts; /* of each r */

static uint32_t r_of(int64_t i)
{
    return (uint32_t)(((uint64_t)i * 2654435761u) & (NR - 1));
}

static float value_of_r(uint32_t r)
{
    return (float)r / (float)NR - 0.5f; /* exact: r < 2^24 */
}

/* the k-th smallest value (0-based) */
static double kth(uint64_t k)
{
    uint64_t cum = 0;
    for (uint32_t r = 0; r < NR; r++) {
        cum += counts[r];
        if (k < cum) return (double)value_of_r(r);
    }
    return NAN;
}

static double percentile(double p)
{
    const int64_t n = HUGE_N;
    double v = (double)(n - 1) * (p / 100.0), a, b, g;
    if (v >= (double)(n - 1)) {
        a = b = kth((uint64_t)(n - 1));
        g = v + 1.0;
    } else {
        int64_t i = (int64_t)floor(v);
        a = kth((uint64_t)i);
        b = kth((uint64_t)i + 1);
        g = v - (double)i;
    }
    double d = (double)((float)b - (float)a);
    return g >= 0.5 ? b - d * (1.0 - g) : a + d * g;
}

static void check_tensor(const qk_tensor *t, const char *where)
{
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, t, 0, &mm), QK_OK);
    assert_true(mm.min == -0.5 && mm.max == (double)value_of_r(NR - 1));
    assert_int_equal(mm.n_finite, HUGE_N);
    static const double p[] = {0, 1e-7, 0.001, 1, 25, 50, 75, 99, 99.999, 99.9999999, 100};
    double got[11];
    assert_int_equal(qk_percentiles(ctx, t, p, 11, 0, got), QK_OK);
    for (int j = 0; j < 11; j++) {
        double want = percentile(p[j]);
        if (memcmp(&got[j], &want, 8)) fail_msg("%s p=%g: %.17g want %.17g", where, p[j], got[j], want);
    }
    assert_int_equal(qk_percentiles(ctx, t, p, 11, QK_ABS, got), QK_OK);

    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, QK_ASYMMETRIC, 8, 0, 0, -0.5, 0.5, &qp), QK_OK);
    uint8_t *codes = malloc((size_t)HUGE_N);
    assert_non_null(codes);
    qk_tensor c = qk_tensor_host(QK_U8, codes, HUGE_N);
    assert_int_equal(qk_quantize(ctx, t, &qp, &c), QK_OK);
    ref_params rp = ref_asym(-0.5, 0.5, 8);
    long double sse = 0;
    for (int64_t i = 0; i < HUGE_N; i++) {
        float xi = value_of_r(r_of(i));
        long q = ref_code_f32(xi, rp);
        if (codes[i] != q) fail_msg("%s i=%lld: code %d want %ld", where, (long long)i, codes[i], q);
        long double e = (long double)xi - (long double)ref_dequant(q, rp);
        sse += e * e;
    }
    free(codes);
    qk_error_result er;
    assert_int_equal(qk_quant_error(ctx, t, &qp, 0, &er), QK_OK);
    assert_int_equal(er.n, HUGE_N);
    double want = (double)(sse / HUGE_N);
    if (!(fabs(er.mse - want) <= 1e-9 * want)) fail_msg("%s: mse %.17g want %.17g", where, er.mse, want);
    qk_error_result again;
    assert_int_equal(qk_quant_error(ctx, t, &qp, 0, &again), QK_OK);
    assert_true(memcmp(&er.mse, &again.mse, 8) == 0);
}

static void test_huge_host(void **state)
{
    qk_tensor t = qk_tensor_host(QK_F32, x, HUGE_N);
    check_tensor(&t, "host");
}

static void test_huge_device(void **state)
{
    qk_buffer *b;
    qk_status st = qk_buffer_create(ctx, (size_t)HUGE_N * 4, &b);
    if (st == QK_ERR_NO_MEMORY) {
        printf("device memory too small for the device-resident copy: %s\n", qk_context_message(ctx));
        return;
    }
    assert_int_equal(st, QK_OK);
    assert_int_equal(qk_buffer_write(ctx, b, 0, x, (size_t)HUGE_N * 4), QK_OK);
    qk_tensor t = qk_tensor_buffer(QK_F32, b, 0, HUGE_N);
    check_tensor(&t, "device");
    /* a non-finite value past 2^31: its index comes back whole */
    float nan = NAN;
    const int64_t at = (INT64_C(1) << 31) + 5;
    assert_int_equal(qk_buffer_write(ctx, b, (size_t)at * 4, &nan, 4), QK_OK);
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, &t, 0, &mm), QK_ERR_NONFINITE);
    int64_t count, first;
    assert_int_equal(qk_context_nonfinite(ctx, &count, &first), QK_OK);
    assert_int_equal(count, 1);
    assert_int_equal(first, at);
    qk_buffer_destroy(ctx, b);
}

int main(void)
{
    const char *on = getenv("QKERN_TEST_HUGE");
    if (!on || strcmp(on, "1") != 0) {
        printf("skipped: set QKERN_TEST_HUGE=1 to run the 2^31 + 17 element test (needs a CUDA device)\n");
        return 77; /* ctest: skipped, never a silent pass */
    }
    char msg[512];
    if (qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg) != QK_OK) {
        printf("skipped: no CUDA device: %s\n", msg);
        return 77;
    }
    x = malloc((size_t)HUGE_N * 4);
    counts = calloc(NR, sizeof *counts);
    if (!x || !counts) {
        printf("skipped: not enough host memory\n");
        free(x);
        free(counts);
        return 77;
    }
    for (int64_t i = 0; i < HUGE_N; i++) {
        uint32_t r = r_of(i);
        x[i] = value_of_r(r);
        counts[r]++;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huge_host),
        cmocka_unit_test(test_huge_device),
    };
    int failed = cmocka_run_group_tests_name("cuda_huge", tests, NULL, NULL);
    qk_context_destroy(ctx);
    free(x);
    free(counts);
    return failed ? 1 : 0;
}
