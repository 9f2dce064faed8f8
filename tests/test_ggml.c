/* ggml block formats on the backend under test, with no network and no ggml:
 * every type's bytes and dequantized values equal the CPU backend's (which
 * ggml_oracle_cpu checks against ggml itself), for host and device tensors, at
 * offsets, over inputs that stress each search (ties, zeros, subnormals,
 * values near and beyond the float16 limit). This is what runs on a second
 * OpenCL implementation (scripts/opencl-portability.sh) and under oclgrind,
 * where ggml cannot be built. On the CPU backend the same cases check what
 * holds without an oracle: the round trip stays within each format's step,
 * all-zero blocks come back as zeros, and errors leave the output untouched. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

static qk_context *ctx; /* the backend under test */
static qk_context *cpu; /* the reference */

static const qk_ggml_type k_types[] = {QK_GGML_Q4_0, QK_GGML_Q4_1, QK_GGML_Q5_0, QK_GGML_Q5_1, QK_GGML_Q8_0,
                                       QK_GGML_Q2_K, QK_GGML_Q3_K, QK_GGML_Q4_K, QK_GGML_Q5_K, QK_GGML_Q6_K,
                                       QK_GGML_F16,  QK_GGML_BF16, QK_GGML_F32};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* Small sizes under oclgrind (QKERN_TEST_GGML_SMALL=1): it runs kernels ~1000x slower. */
static int small_run(void)
{
    const char *s = getenv("QKERN_TEST_GGML_SMALL");
    return s && *s && strcmp(s, "0") != 0;
}

enum { C_NORMAL, C_LAPLACE, C_ZERO_BLOCKS, C_TIES, C_SUBNORMAL, C_NEAR_F16, C_BEYOND_F16, C_SIGNED_ZEROS, C_COUNT };
static const char *const k_case_names[C_COUNT] = {"normal", "laplace+outliers", "zero blocks", "ties",
                                                  "subnormal", "near f16 max", "beyond f16", "signed zeros"};

static void fill_case(float *x, int64_t n, int c, uint64_t seed)
{
    ref_rng r = {seed};
    switch (c) {
    case C_NORMAL: ref_fill(x, n, REF_NORMAL, seed); break;
    case C_LAPLACE: ref_fill(x, n, REF_LAPLACE_OUTLIERS, seed); break;
    case C_TIES: ref_fill(x, n, REF_TIES, seed); break;
    case C_SUBNORMAL: ref_fill(x, n, REF_DENORMAL, seed); break;
    case C_SIGNED_ZEROS: ref_fill(x, n, REF_SIGNED_ZEROS, seed); break;
    case C_ZERO_BLOCKS: /* every other 256-element stretch all zero, the rest normal */
        ref_fill(x, n, REF_NORMAL, seed);
        for (int64_t i = 0; i < n; i++)
            if ((i / 256) % 2 == 0) x[i] = 0.0f;
        break;
    case C_NEAR_F16:
        for (int64_t i = 0; i < n; i++) x[i] = (float)((ref_uniform(&r) * 2.0 - 1.0) * 65504.0);
        break;
    default: /* beyond: scales that overflow float16 */
        for (int64_t i = 0; i < n; i++) x[i] = (float)(ref_normal(&r) * 1e30);
        break;
    }
}

/* Quantize x on c into a fresh buffer of the type's size (host tensors). */
static uint8_t *quantize_host(qk_context *c, const float *x, int64_t n, qk_ggml_type t, size_t *bytes)
{
    assert_int_equal(qk_ggml_size(t, n, bytes), QK_OK);
    uint8_t *q = malloc(*bytes ? *bytes : 1);
    assert_non_null(q);
    qk_tensor xt = qk_tensor_host(QK_F32, x, n), qt = qk_tensor_host(QK_U8, q, (int64_t)*bytes);
    qk_status st = qk_ggml_quantize(c, &xt, t, &qt);
    if (st != QK_OK) fprintf(stderr, "qk_ggml_quantize: %s\n", qk_context_message(c));
    assert_int_equal(st, QK_OK);
    return q;
}

static float *dequantize_host(qk_context *c, const uint8_t *q, size_t bytes, int64_t n, qk_ggml_type t)
{
    float *y = malloc((size_t)n * 4 + 4);
    assert_non_null(y);
    qk_tensor qt = qk_tensor_host(QK_U8, q, (int64_t)bytes), yt = qk_tensor_host(QK_F32, y, n);
    qk_status st = qk_ggml_dequantize(c, &qt, t, &yt);
    if (st != QK_OK) fprintf(stderr, "qk_ggml_dequantize: %s\n", qk_context_message(c));
    assert_int_equal(st, QK_OK);
    return y;
}

/* The first differing block, for a readable failure. */
static void expect_same_bytes(const uint8_t *want, const uint8_t *got, size_t bytes, qk_ggml_type t,
                              const char *what)
{
    if (memcmp(want, got, bytes) == 0) return;
    const char *name = "?";
    size_t bb = 1;
    qk_ggml_type_info(t, &name, NULL, &bb);
    size_t i = 0;
    while (want[i] == got[i]) i++;
    fail_msg("%s %s: byte %zu (block %zu) differs: cpu 0x%02x, %s 0x%02x", name, what, i, i / bb, want[i],
             qk_backend_name(qk_context_backend(ctx)), got[i]);
}

static void expect_same_floats(const float *want, const float *got, int64_t n, qk_ggml_type t, const char *what)
{
    if (memcmp(want, got, (size_t)n * 4) == 0) return;
    const char *name = "?";
    qk_ggml_type_info(t, &name, NULL, NULL);
    int64_t i = 0;
    while (memcmp(&want[i], &got[i], 4) == 0) i++;
    fail_msg("%s %s dequantized: element %lld differs: cpu %.9g, %s %.9g", name, what, (long long)i, want[i],
             qk_backend_name(qk_context_backend(ctx)), got[i]);
}

/* How far a round trip may stray per block: a bound from each format's step
 * (max |x| of the block over its code range, generously), not a formula of
 * the search; it catches a garbled block, not a slightly worse scale. */
static double step_bound(qk_ggml_type t, double amax)
{
    switch (t) {
    case QK_GGML_Q8_0: return amax / 127.0 * 0.51 + amax * 1e-3;
    case QK_GGML_Q4_0: case QK_GGML_Q4_1: return amax / 7.0 + amax * 1e-2;
    case QK_GGML_Q5_0: case QK_GGML_Q5_1: return amax / 15.0 + amax * 1e-2;
    case QK_GGML_Q6_K: return amax / 15.0 + amax * 2e-2;
    case QK_GGML_Q5_K: return amax / 7.0 + amax * 2e-2;
    case QK_GGML_Q4_K: return amax / 3.0 + amax * 2e-2;
    case QK_GGML_Q3_K: return amax / 1.5 + amax * 2e-2;
    case QK_GGML_Q2_K: return amax * 1.05;
    case QK_GGML_F16: return amax * 1e-3;
    case QK_GGML_BF16: return amax * 8e-3;
    default: return 0.0;
    }
}

static void check_round_trip(const float *x, const float *y, int64_t n, qk_ggml_type t, int64_t row)
{
    for (int64_t r0 = 0; r0 < n; r0 += row) {
        double amax = 0.0;
        for (int64_t i = r0; i < r0 + row; i++) amax = fmax(amax, fabs(x[i]));
        double bound = step_bound(t, amax);
        if (amax < 1e-3) /* the float16 scales flush tiny steps to zero: all may come back as 0 */
            bound = fmax(bound, amax * 1.001);
        for (int64_t i = r0; i < r0 + row; i++) {
            if (!(fabs((double)y[i] - (double)x[i]) <= bound))
                fail_msg("type %d element %lld: %.9g restored as %.9g (row max %.9g, bound %.9g)", (int)t,
                         (long long)i, x[i], y[i], amax, bound);
        }
    }
}

/* Every type, every input case, rows of 256 to 16384 elements. */
static void test_types_and_cases(void **state)
{
    (void)state;
    int small = small_run();
    const int64_t rows[] = {256, 4096, 16384};
    int is_cpu = qk_context_backend(ctx) == QK_BACKEND_CPU;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        qk_ggml_type t = k_types[ti];
        for (int c = 0; c < C_COUNT; c++) {
            int64_t row = rows[(ti + (size_t)c) % (small ? 1 : 3)];
            int64_t n = small ? 1024 : row * 4;
            float *x = malloc((size_t)n * 4);
            fill_case(x, n, c, 1000 + ti * 17 + (uint64_t)c);
            size_t bytes;
            uint8_t *got = quantize_host(ctx, x, n, t, &bytes);
            float *back = dequantize_host(ctx, got, bytes, n, t);
            if (!is_cpu) {
                size_t wb;
                uint8_t *want = quantize_host(cpu, x, n, t, &wb);
                assert_int_equal(wb, bytes);
                expect_same_bytes(want, got, bytes, t, k_case_names[c]);
                float *wback = dequantize_host(cpu, want, bytes, n, t);
                expect_same_floats(wback, back, n, t, k_case_names[c]);
                free(wback);
                free(want);
            }
            if (c != C_BEYOND_F16) /* there the float16 scale itself overflows */
                check_round_trip(x, back, n, t, row);
            if (c == C_ZERO_BLOCKS) /* an all-zero stretch comes back as zeros in every format */
                for (int64_t i = 0; i < n; i++)
                    if ((i / 256) % 2 == 0 && back[i] != 0.0f)
                        fail_msg("type %d: zero at %lld restored as %.9g", (int)t, (long long)i, back[i]);
            free(x);
            free(got);
            free(back);
        }
    }
}

/* Device buffers at block-aligned offsets, and lengths that are not a power of two. */
static void test_device_tensors(void **state)
{
    (void)state;
    const int64_t n = small_run() ? 512 : 256 * 37;
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_LAPLACE_OUTLIERS, 77);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        qk_ggml_type t = k_types[ti];
        size_t bytes, bb;
        int64_t be;
        qk_ggml_type_info(t, NULL, &be, &bb);
        uint8_t *want = quantize_host(cpu, x, n, t, &bytes);
        const int64_t xoff = 256, qoff = (int64_t)bb * 3; /* bytes: 64 floats, three blocks in */
        qk_buffer *xb = NULL, *qb = NULL, *yb = NULL;
        assert_int_equal(qk_buffer_create(ctx, (size_t)n * 4 + (size_t)xoff, &xb), QK_OK);
        assert_int_equal(qk_buffer_create(ctx, bytes + (size_t)qoff, &qb), QK_OK);
        assert_int_equal(qk_buffer_create(ctx, (size_t)n * 4 + (size_t)xoff, &yb), QK_OK);
        assert_int_equal(qk_buffer_write(ctx, xb, (size_t)xoff, x, (size_t)n * 4), QK_OK);
        qk_tensor xt = qk_tensor_buffer(QK_F32, xb, xoff, n), qt = qk_tensor_buffer(QK_U8, qb, qoff, (int64_t)bytes);
        qk_tensor yt = qk_tensor_buffer(QK_F32, yb, xoff, n);
        assert_int_equal(qk_ggml_quantize(ctx, &xt, t, &qt), QK_OK);
        uint8_t *got = malloc(bytes);
        assert_int_equal(qk_buffer_read(ctx, qb, (size_t)qoff, got, bytes), QK_OK);
        expect_same_bytes(want, got, bytes, t, "device tensors");
        assert_int_equal(qk_ggml_dequantize(ctx, &qt, t, &yt), QK_OK);
        float *back = malloc((size_t)n * 4), *wback = dequantize_host(cpu, want, bytes, n, t);
        assert_int_equal(qk_buffer_read(ctx, yb, (size_t)xoff, back, (size_t)n * 4), QK_OK);
        expect_same_floats(wback, back, n, t, "device tensors");
        qk_buffer_destroy(ctx, xb);
        qk_buffer_destroy(ctx, qb);
        qk_buffer_destroy(ctx, yb);
        free(want);
        free(got);
        free(back);
        free(wback);
        (void)be;
    }
    free(x);
}

/* A tensor larger than a small device budget (QKERN_DEVICE_MEMORY_LIMIT=1M in
 * test_ggml_opencl_pieces): host data staged in many pieces of whole blocks. */
static void test_large_host(void **state)
{
    (void)state;
    if (small_run() || qk_context_backend(ctx) == QK_BACKEND_CPU) {
        printf("skipped: test_large_host (%s)\n", small_run() ? "small inputs" : "no staging on the CPU backend");
        return;
    }
    const int64_t n = (int64_t)256 * 2053; /* 2 MiB of floats, not a multiple of any piece */
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_LAPLACE_OUTLIERS, 99);
    const qk_ggml_type types[] = {QK_GGML_Q8_0, QK_GGML_Q4_K, QK_GGML_Q6_K, QK_GGML_F16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t bytes, wb;
        uint8_t *got = quantize_host(ctx, x, n, types[i], &bytes), *want = quantize_host(cpu, x, n, types[i], &wb);
        expect_same_bytes(want, got, bytes, types[i], "large host tensor");
        float *back = dequantize_host(ctx, got, bytes, n, types[i]), *wback = dequantize_host(cpu, want, wb, n, types[i]);
        expect_same_floats(wback, back, n, types[i], "large host tensor");
        free(got);
        free(want);
        free(back);
        free(wback);
    }
    free(x);
}

/* Refusals: nothing written, a message that names the problem. */
static void test_errors(void **state)
{
    (void)state;
    enum { N = 512 };
    float x[N];
    ref_fill(x, N, REF_NORMAL, 5);
    uint8_t q[N * 2];
    memset(q, 0xa5, sizeof q);
    size_t bytes;
    assert_int_equal(qk_ggml_size(QK_GGML_Q4_K, N, &bytes), QK_OK);
    assert_int_equal(bytes, 288u);
    qk_tensor xt = qk_tensor_host(QK_F32, x, N), qt = qk_tensor_host(QK_U8, q, (int64_t)bytes);

    /* non-finite input: the count and the first index; the output all zero
     * bytes (the check runs in the quantizing pass), for every block type */
    x[300] = NAN;
    x[301] = INFINITY;
    assert_int_equal(qk_ggml_quantize(ctx, &xt, QK_GGML_Q4_K, &qt), QK_ERR_NONFINITE);
    assert_non_null(strstr(qk_context_message(ctx), "300"));
    int64_t count = 0, first = 0;
    qk_context_nonfinite(ctx, &count, &first);
    assert_int_equal(count, 2);
    assert_int_equal(first, 300);
    for (size_t i = 0; i < bytes; i++) assert_int_equal(q[i], 0);
    for (size_t i = bytes; i < sizeof q; i++) assert_int_equal(q[i], 0xa5);
    for (size_t t = 0; t < N_TYPES; t++) {
        int64_t be = 0;
        size_t tb;
        assert_int_equal(qk_ggml_type_info(k_types[t], NULL, &be, &tb), QK_OK);
        if (be == 1) continue;
        assert_int_equal(qk_ggml_size(k_types[t], N, &tb), QK_OK);
        memset(q, 0xa5, sizeof q);
        qk_tensor qt2 = qk_tensor_host(QK_U8, q, (int64_t)tb);
        x[301] = (t & 1) ? -INFINITY : NAN; /* one bad value, in the second half */
        x[300] = 0.5f;
        assert_int_equal(qk_ggml_quantize(ctx, &xt, k_types[t], &qt2), QK_ERR_NONFINITE);
        assert_non_null(strstr(qk_context_message(ctx), "301"));
        for (size_t i = 0; i < tb; i++) assert_int_equal(q[i], 0);
        for (size_t i = tb; i < sizeof q; i++) assert_int_equal(q[i], 0xa5);
    }
    /* the same with device tensors at offsets: the bytes in range zeroed, those around untouched */
    {
        qk_buffer *xb = NULL, *qb = NULL;
        size_t qbytes;
        assert_int_equal(qk_ggml_size(QK_GGML_Q4_0, N, &qbytes), QK_OK);
        assert_int_equal(qk_buffer_create(ctx, N * 4 + 12, &xb), QK_OK);
        assert_int_equal(qk_buffer_create(ctx, qbytes + 7 + 5, &qb), QK_OK);
        x[301] = NAN;
        assert_int_equal(qk_buffer_write(ctx, xb, 12, x, N * 4), QK_OK);
        memset(q, 0xa5, sizeof q);
        assert_int_equal(qk_buffer_write(ctx, qb, 0, q, qbytes + 12), QK_OK);
        qk_tensor xd = qk_tensor_buffer(QK_F32, xb, 12, N), qd = qk_tensor_buffer(QK_U8, qb, 7, (int64_t)qbytes);
        assert_int_equal(qk_ggml_quantize(ctx, &xd, QK_GGML_Q4_0, &qd), QK_ERR_NONFINITE);
        assert_non_null(strstr(qk_context_message(ctx), "301"));
        assert_int_equal(qk_buffer_read(ctx, qb, 0, q, qbytes + 12), QK_OK);
        for (size_t i = 0; i < qbytes + 12; i++) assert_int_equal(q[i], i < 7 || i >= 7 + qbytes ? 0xa5 : 0);
        qk_buffer_destroy(ctx, xb);
        qk_buffer_destroy(ctx, qb);
    }
    memset(q, 0xa5, sizeof q);
    x[300] = 0.5f;
    x[301] = -0.5f;

    /* not a whole number of blocks */
    qk_tensor x31 = qk_tensor_host(QK_F32, x, 31);
    assert_int_equal(qk_ggml_quantize(ctx, &x31, QK_GGML_Q8_0, &qt), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctx), "whole number"));
    /* a block tensor of the wrong size */
    qk_tensor q_short = qk_tensor_host(QK_U8, q, (int64_t)bytes - 1);
    assert_int_equal(qk_ggml_quantize(ctx, &xt, QK_GGML_Q4_K, &q_short), QK_ERR_INVALID_ARG);
    /* the wrong dtypes */
    qk_tensor q_f32 = qk_tensor_host(QK_F32, q, (int64_t)bytes / 4);
    assert_int_equal(qk_ggml_quantize(ctx, &xt, QK_GGML_Q4_K, &q_f32), QK_ERR_INVALID_ARG);
    qk_tensor x_f16 = qk_tensor_host(QK_F16, x, N);
    assert_int_equal(qk_ggml_quantize(ctx, &x_f16, QK_GGML_Q4_K, &qt), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctx), "float32"));
    /* an unknown type */
    assert_int_equal(qk_ggml_quantize(ctx, &xt, (qk_ggml_type)4, &qt), QK_ERR_INVALID_ARG);
    for (size_t i = 0; i < sizeof q; i++) assert_int_equal(q[i], 0xa5);

    /* names and sizes */
    qk_ggml_type t;
    assert_int_equal(qk_ggml_type_parse("Q4_k", &t), QK_OK);
    assert_int_equal(t, QK_GGML_Q4_K);
    assert_int_equal(qk_ggml_type_parse("q4_2", &t), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_ggml_size(QK_GGML_Q8_0, 33, &bytes), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_ggml_size(QK_GGML_Q8_0, 64, &bytes), QK_OK);
    assert_int_equal(bytes, 68u);
}

int main(void)
{
    ctx = ref_test_context();
    if (!ctx) {
        fprintf(stderr, "SKIPPED: the backend under test is not available\n");
        return 77;
    }
    char msg[256];
    if (qk_context_create(QK_BACKEND_CPU, &cpu, msg, sizeof msg) != QK_OK) {
        fprintf(stderr, "FAILED: a CPU context: %s\n", msg);
        return 1;
    }
    qk_device_info dev;
    memset(&dev, 0, sizeof dev);
    qk_context_device(ctx, &dev);
    printf("test_ggml: backend %s, device %s%s\n", qk_backend_name(qk_context_backend(ctx)), dev.name,
           small_run() ? " (small inputs)" : "");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_and_cases),
        cmocka_unit_test(test_device_tensors),
        cmocka_unit_test(test_large_host),
        cmocka_unit_test(test_errors),
    };
    int failed = cmocka_run_group_tests_name(qk_backend_name(qk_context_backend(ctx)), tests, NULL, NULL);
    qk_context_destroy(cpu);
    qk_context_destroy(ctx);
    return failed ? 1 : 0;
}
