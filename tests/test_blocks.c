/* Per-channel and per-group parameters, float16/bfloat16 input and packed
 * 4-bit codes, on the backend under test. Each block must give exactly what a
 * per-tensor call on that block alone gives. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

static qk_context *ctx;

/* Per-block results equal per-tensor calls on copies of each block. */
static void check_blocks(const float *x, const qk_layout *l, qk_calib_options *o, int64_t nblocks,
                         int64_t (*index)(const qk_layout *, int64_t b, int64_t j), int64_t block_len)
{
    int64_t n = 1;
    for (int d = 0; d < l->ndim; d++) n *= l->shape[d];
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    qk_block_calib_result r;
    assert_int_equal(qk_calibrate_blocks(ctx, &t, l, o, &r), QK_OK);
    assert_int_equal(r.count, nblocks);
    int64_t cnt;
    assert_int_equal(qk_layout_blocks(l, &cnt), QK_OK);
    assert_int_equal(cnt, nblocks);
    qk_dtype cdt;
    qk_code_dtype(&r.params[0], &cdt);
    uint8_t *codes = malloc((size_t)n * 2);
    float *back = malloc((size_t)n * 4);
    qk_tensor c = qk_tensor_host(cdt, codes, n), bk = qk_tensor_host(QK_F32, back, n);
    assert_int_equal(qk_quantize_blocks(ctx, &t, l, r.params, r.count, &c), QK_OK);
    assert_int_equal(qk_dequantize_blocks(ctx, &c, l, r.params, r.count, &bk), QK_OK);
    size_t es = qk_dtype_size(cdt);
    float *blk = malloc((size_t)block_len * 4);
    uint8_t *bc = malloc((size_t)block_len * 2);
    double sse = 0;
    for (int64_t b = 0; b < nblocks; b++) {
        for (int64_t j = 0; j < block_len; j++) blk[j] = x[index(l, b, j)];
        qk_tensor bt = qk_tensor_host(QK_F32, blk, block_len), bct = qk_tensor_host(cdt, bc, block_len);
        qk_calib_result one;
        assert_int_equal(qk_calibrate(ctx, &bt, o, &one), QK_OK);
        assert_memory_equal(&one.params, &r.params[b], sizeof one.params);
        assert_true(one.candidates[one.best].mse == r.chosen[b].mse);
        sse += r.chosen[b].mse * (double)block_len;
        assert_int_equal(qk_quantize(ctx, &bt, &one.params, &bct), QK_OK);
        for (int64_t j = 0; j < block_len; j++) {
            int64_t i = index(l, b, j);
            assert_memory_equal(codes + (size_t)i * es, bc + (size_t)j * es, es);
            long q = es == 1 ? (cdt == QK_I8 ? ((int8_t *)bc)[j] : bc[j])
                             : (cdt == QK_I16 ? ((int16_t *)bc)[j] : ((uint16_t *)bc)[j]);
            float want = (float)(q - one.params.zero_point) * one.params.scale;
            assert_true(memcmp(&back[i], &want, 4) == 0);
        }
        qk_calib_result_release(&one);
    }
    assert_true(fabs(r.mse - sse / (double)n) <= 1e-12 * r.mse);
    free(blk);
    free(bc);
    free(codes);
    free(back);
    qk_block_calib_result_release(&r);
}

static int64_t row_index(const qk_layout *l, int64_t b, int64_t j)
{
    return b * l->shape[1] + j;
}

static int64_t col_index(const qk_layout *l, int64_t b, int64_t j)
{
    return j * l->shape[1] + b;
}

static int64_t group_index(const qk_layout *l, int64_t b, int64_t j)
{
    return b * l->group_size + j;
}

/* axis 1 of a [2, 3, 5] tensor: channel c holds x[o, c, i] for all o, i */
static int64_t mid_index(const qk_layout *l, int64_t b, int64_t j)
{
    return (j / 5) * 15 + b * 5 + j % 5;
}

static void test_per_channel_and_group(void **state)
{
    enum { R = 24, K = 128 };
    float *x = malloc(R * K * 4);
    ref_fill(x, R * K, REF_LAPLACE_OUTLIERS, 99);
    for (int k = 0; k < K; k++) x[5 * K + k] = -1.0f - (float)k; /* an all-negative channel */
    for (int k = 0; k < K; k++) x[7 * K + k] = 0.5f;              /* a constant channel */
    static const qk_calib_method methods[] = {QK_CALIB_MINMAX, QK_CALIB_PERCENTILE, QK_CALIB_GRIDSEARCH};
    for (int s = 0; s < 2; s++) {
        for (int m = 0; m < 3; m++) {
            qk_calib_options o;
            qk_calib_options_default(&o);
            o.scheme = (qk_scheme)s;
            o.method = methods[m];
            o.percentile = 99.5;
            o.grid_start = 99;
            o.grid_step = 0.25;
            o.bits = s ? 4 : 8;
            o.narrow_range = s;
            qk_layout rows = {QK_PER_CHANNEL, 2, {R, K}, 0, 0};
            check_blocks(x, &rows, &o, R, row_index, K);
            qk_layout cols = {QK_PER_CHANNEL, 2, {R, K}, -1, 0};
            check_blocks(x, &cols, &o, K, col_index, R);
            qk_layout groups = {QK_PER_GROUP, 2, {R, K}, 0, 32};
            check_blocks(x, &groups, &o, R * K / 32, group_index, 32);
            qk_layout mid = {QK_PER_CHANNEL, 3, {2, 3, 5}, 1, 0};
            check_blocks(x, &mid, &o, 3, mid_index, 10);
        }
    }
    free(x);
}

static void test_layout_errors(void **state)
{
    float x[12] = {0};
    qk_tensor t = qk_tensor_host(QK_F32, x, 12);
    qk_calib_options o;
    qk_calib_options_default(&o);
    qk_block_calib_result r;
    qk_layout bad_shape = {QK_PER_CHANNEL, 2, {3, 5}, 0, 0};
    assert_int_equal(qk_calibrate_blocks(ctx, &t, &bad_shape, &o, &r), QK_ERR_INVALID_ARG);
    qk_layout bad_axis = {QK_PER_CHANNEL, 2, {3, 4}, 2, 0};
    assert_int_equal(qk_calibrate_blocks(ctx, &t, &bad_axis, &o, &r), QK_ERR_INVALID_ARG);
    qk_layout bad_group = {QK_PER_GROUP, 2, {3, 4}, 0, 3};
    assert_int_equal(qk_calibrate_blocks(ctx, &t, &bad_group, &o, &r), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctx), "divide"));
    qk_layout good = {QK_PER_GROUP, 2, {3, 4}, 0, 2};
    assert_int_equal(qk_calibrate_blocks(ctx, &t, &good, &o, &r), QK_OK);
    uint8_t c[12];
    qk_tensor ct = qk_tensor_host(QK_U8, c, 12);
    assert_int_equal(qk_quantize_blocks(ctx, &t, &good, r.params, r.count - 1, &ct), QK_ERR_INVALID_ARG);
    qk_block_calib_result_release(&r);
    float bad[4] = {1, NAN, 2, 3};
    qk_tensor tb = qk_tensor_host(QK_F32, bad, 4);
    qk_layout two = {QK_PER_GROUP, 1, {4}, 0, 2};
    assert_int_equal(qk_calibrate_blocks(ctx, &tb, &two, &o, &r), QK_ERR_NONFINITE);
    assert_non_null(strstr(qk_context_message(ctx), "group 0"));
}

/* float16: min/max, numpy's percentile (d rounded to half) and codes equal to
 * the float32 path on the same values. */
static void test_float16_input(void **state)
{
    enum { N = 4099 };
    uint16_t *h = malloc(N * 2);
    float *f = malloc(N * 4);
    ref_rng r = {5};
    for (int i = 0; i < N; i++) {
        h[i] = (uint16_t)(ref_next(&r) & 0xffff);
        if ((h[i] & 0x7c00) == 0x7c00) h[i] &= 0xbfff; /* no Inf/NaN */
    }
    qk_tensor th = qk_tensor_host(QK_F16, h, N);
    qk_minmax_result mm;
    assert_int_equal(qk_minmax(ctx, &th, 0, &mm), QK_OK);
    /* convert by the definition of binary16 */
    for (int i = 0; i < N; i++) {
        int e = (h[i] >> 10) & 31, m = h[i] & 1023;
        double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
        f[i] = (float)((h[i] & 0x8000) ? -v : v);
    }
    qk_tensor tf = qk_tensor_host(QK_F32, f, N);
    qk_minmax_result mf;
    assert_int_equal(qk_minmax(ctx, &tf, 0, &mf), QK_OK);
    assert_true(mm.min == mf.min && mm.max == mf.max);
    qk_calib_options o;
    qk_calib_options_default(&o);
    qk_calib_result rh, rf;
    assert_int_equal(qk_calibrate(ctx, &th, &o, &rh), QK_OK);
    assert_int_equal(qk_calibrate(ctx, &tf, &o, &rf), QK_OK);
    assert_memory_equal(&rh.params, &rf.params, sizeof rh.params);
    uint8_t *ch = malloc(N), *cf = malloc(N);
    qk_tensor cth = qk_tensor_host(QK_U8, ch, N), ctf = qk_tensor_host(QK_U8, cf, N);
    assert_int_equal(qk_quantize(ctx, &th, &rh.params, &cth), QK_OK);
    assert_int_equal(qk_quantize(ctx, &tf, &rf.params, &ctf), QK_OK);
    assert_memory_equal(ch, cf, N);
    /* percentile: sorted neighbours a, b with d = half(b - a) */
    float *s = ref_sorted_f32(f, N);
    double p = 37.3, got;
    assert_int_equal(qk_percentiles(ctx, &th, &p, 1, 0, &got), QK_OK);
    double v = (N - 1) * (p / 100.0);
    int64_t i = (int64_t)floor(v);
    double g = v - (double)i, a = s[i], b = s[i + 1];
    float dd = (float)(b - a); /* exact */
    /* round to half precision: 11 significant bits, subnormal step 2^-24 */
    int ex;
    frexp(dd, &ex);
    double ulp = ldexp(1.0, (ex - 11) < -24 ? -24 : ex - 11);
    double d = rint(dd / ulp) * ulp;
    double want = g >= 0.5 ? b - d * (1 - g) : a + d * g;
    assert_true(got == want);
    free(s);
    free(ch);
    free(cf);
    free(h);
    free(f);
    qk_calib_result_release(&rh);
    qk_calib_result_release(&rf);
}

static void test_bfloat16_input(void **state)
{
    enum { N = 1000 };
    uint16_t b[N];
    float f[N];
    for (int i = 0; i < N; i++) {
        f[i] = (float)(i - 400) * 0.37f;
        uint32_t u;
        memcpy(&u, &f[i], 4);
        b[i] = (uint16_t)(u >> 16);
        u &= 0xffff0000u;
        memcpy(&f[i], &u, 4);
    }
    qk_tensor tb = qk_tensor_host(QK_BF16, b, N), tf = qk_tensor_host(QK_F32, f, N);
    double p[] = {1, 50, 99}, vb[3], vf[3];
    assert_int_equal(qk_percentiles(ctx, &tb, p, 3, 0, vb), QK_OK);
    assert_int_equal(qk_percentiles(ctx, &tf, p, 3, 0, vf), QK_OK);
    assert_memory_equal(vb, vf, sizeof vb);
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(ctx, QK_SYMMETRIC, 8, 1, 0, -148, 222, &qp), QK_OK);
    int8_t cb[N], cf[N];
    qk_tensor cbt = qk_tensor_host(QK_I8, cb, N), cft = qk_tensor_host(QK_I8, cf, N);
    assert_int_equal(qk_quantize(ctx, &tb, &qp, &cbt), QK_OK);
    assert_int_equal(qk_quantize(ctx, &tf, &qp, &cft), QK_OK);
    assert_memory_equal(cb, cf, N);
}

static void test_pack_int4(void **state)
{
    uint8_t u[7] = {0, 1, 15, 8, 7, 3, 9}, pk[4], back[7];
    qk_tensor t = qk_tensor_host(QK_U8, u, 7), tb = qk_tensor_host(QK_U8, back, 7);
    assert_int_equal(qk_pack_int4(ctx, &t, pk), QK_OK);
    uint8_t want[4] = {0x10, 0x8f, 0x37, 0x09};
    assert_memory_equal(pk, want, 4);
    assert_int_equal(qk_unpack_int4(ctx, pk, &tb), QK_OK);
    assert_memory_equal(back, u, 7);
    int8_t s[4] = {-8, 7, -1, 0}, sb[4];
    uint8_t spk[2];
    qk_tensor ts = qk_tensor_host(QK_I8, s, 4), tsb = qk_tensor_host(QK_I8, sb, 4);
    assert_int_equal(qk_pack_int4(ctx, &ts, spk), QK_OK);
    assert_true(spk[0] == 0x78 && spk[1] == 0x0f);
    assert_int_equal(qk_unpack_int4(ctx, spk, &tsb), QK_OK);
    assert_memory_equal(sb, s, 4);
    uint8_t big[2] = {16, 0};
    qk_tensor tbig = qk_tensor_host(QK_U8, big, 2);
    assert_int_equal(qk_pack_int4(ctx, &tbig, pk), QK_ERR_RANGE);
}

/* Many blocks: the library calibrates them in batches (about 2^19 candidate
 * rows each), so a grid search over 6000 groups spans two batches. Sampled
 * blocks, those around the batch edge included, must equal per-tensor calls. */
static void test_many_blocks(void **state)
{
    enum { G = 32, NB = 6000, N = G * NB };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_LAPLACE_OUTLIERS, 4242);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_start = 75;
    o.grid_step = 0.25; /* 101 candidates: 5190 blocks a batch */
    o.objective = QK_OBJECTIVE_MSE_INLIERS;
    qk_layout l = {QK_PER_GROUP, 2, {NB / 4, 4 * G}, 0, G};
    qk_tensor t = qk_tensor_host(QK_F32, x, N);
    qk_block_calib_result r;
    assert_int_equal(qk_calibrate_blocks(ctx, &t, &l, &o, &r), QK_OK);
    assert_int_equal(r.count, NB);
    static const int64_t picks[] = {0, 1, 977, 2500, 5189, 5190, 5191, NB - 1};
    double sse = 0;
    for (int64_t b = 0; b < NB; b++) sse += r.chosen[b].mse * (double)G;
    assert_true(fabs(r.mse - sse / (double)N) <= 1e-12 * r.mse);
    for (size_t i = 0; i < sizeof picks / sizeof *picks; i++) {
        int64_t b = picks[i];
        qk_tensor bt = qk_tensor_host(QK_F32, x + b * G, G);
        qk_calib_result one;
        assert_int_equal(qk_calibrate(ctx, &bt, &o, &one), QK_OK);
        assert_memory_equal(&one.params, &r.params[b], sizeof one.params);
        assert_memory_equal(&one.candidates[one.best], &r.chosen[b], sizeof one.candidates[0]);
        qk_calib_result_release(&one);
    }
    qk_block_calib_result_release(&r);
    /* a NaN in a late block names that block */
    x[5500 * G + 3] = NAN;
    assert_int_equal(qk_calibrate_blocks(ctx, &t, &l, &o, &r), QK_ERR_NONFINITE);
    assert_non_null(strstr(qk_context_message(ctx), "group 5500"));
    free(x);
}

/* Device-resident input and output (qk_buffer) give the host results, for a
 * contiguous layout and a gathered one (channels of the last axis). */
static void test_device_tensors(void **state)
{
    enum { R = 96, K = 384, N = R * K };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_LAPLACE_OUTLIERS, 7);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_PERCENTILE;
    o.percentile = 99.9;
    o.scheme = QK_SYMMETRIC;
    o.narrow_range = 1;
    qk_buffer *bx, *bc, *bo;
    assert_int_equal(qk_buffer_create(ctx, N * 4, &bx), QK_OK);
    assert_int_equal(qk_buffer_create(ctx, N, &bc), QK_OK);
    assert_int_equal(qk_buffer_create(ctx, N * 4, &bo), QK_OK);
    assert_int_equal(qk_buffer_write(ctx, bx, 0, x, N * 4), QK_OK);
    int8_t *c_host = malloc(N), *c_dev = malloc(N);
    float *o_host = malloc(N * 4), *o_dev = malloc(N * 4);
    for (int axis = 0; axis < 2; axis++) {
        qk_layout l = {QK_PER_CHANNEL, 2, {R, K}, axis, 0};
        qk_tensor th = qk_tensor_host(QK_F32, x, N), td = qk_tensor_buffer(QK_F32, bx, 0, N);
        qk_block_calib_result rh, rd;
        assert_int_equal(qk_calibrate_blocks(ctx, &th, &l, &o, &rh), QK_OK);
        assert_int_equal(qk_calibrate_blocks(ctx, &td, &l, &o, &rd), QK_OK);
        assert_memory_equal(rh.params, rd.params, (size_t)rh.count * sizeof *rh.params);
        assert_memory_equal(rh.chosen, rd.chosen, (size_t)rh.count * sizeof *rh.chosen);
        qk_tensor ch = qk_tensor_host(QK_I8, c_host, N), cd = qk_tensor_buffer(QK_I8, bc, 0, N);
        assert_int_equal(qk_quantize_blocks(ctx, &th, &l, rh.params, rh.count, &ch), QK_OK);
        assert_int_equal(qk_quantize_blocks(ctx, &td, &l, rd.params, rd.count, &cd), QK_OK);
        assert_int_equal(qk_buffer_read(ctx, bc, 0, c_dev, N), QK_OK);
        assert_memory_equal(c_host, c_dev, N);
        qk_tensor oh = qk_tensor_host(QK_F32, o_host, N), od = qk_tensor_buffer(QK_F32, bo, 0, N);
        assert_int_equal(qk_dequantize_blocks(ctx, &ch, &l, rh.params, rh.count, &oh), QK_OK);
        assert_int_equal(qk_dequantize_blocks(ctx, &cd, &l, rd.params, rd.count, &od), QK_OK);
        assert_int_equal(qk_buffer_read(ctx, bo, 0, o_dev, N * 4), QK_OK);
        assert_memory_equal(o_host, o_dev, N * 4);
        /* mixed: device input, host codes */
        memset(c_dev, 0x55, N);
        qk_tensor cm = qk_tensor_host(QK_I8, c_dev, N);
        assert_int_equal(qk_quantize_blocks(ctx, &td, &l, rd.params, rd.count, &cm), QK_OK);
        assert_memory_equal(c_host, c_dev, N);
        for (int64_t b = 0; b < rh.count; b += 37) { /* spot-check the formula */
            int64_t i = axis ? b : b * K;
            float want = (float)(c_host[i] - rh.params[b].zero_point) * rh.params[b].scale;
            assert_true(memcmp(&o_host[i], &want, 4) == 0);
        }
        qk_block_calib_result_release(&rh);
        qk_block_calib_result_release(&rd);
    }
    /* parameters that do not fit the codes are refused before any work */
    qk_layout l = {QK_PER_CHANNEL, 2, {R, K}, 0, 0};
    qk_block_calib_result r;
    qk_tensor th = qk_tensor_host(QK_F32, x, N), cu = qk_tensor_host(QK_U8, c_host, N);
    assert_int_equal(qk_calibrate_blocks(ctx, &th, &l, &o, &r), QK_OK);
    assert_int_equal(qk_quantize_blocks(ctx, &th, &l, r.params, r.count, &cu), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctx), "channel 0"));
    qk_block_calib_result_release(&r);
    qk_buffer_destroy(ctx, bx);
    qk_buffer_destroy(ctx, bc);
    qk_buffer_destroy(ctx, bo);
    free(x);
    free(c_host);
    free(c_dev);
    free(o_host);
    free(o_dev);
}

/* float16 per group: minmax parameters and codes equal float32's on the same
 * (exactly widened) values, and a grid search per group equals per-tensor
 * calls on each group's float16 values. */
static void test_float16_blocks(void **state)
{
    enum { G = 128, NB = 200, N = G * NB };
    uint16_t *h = malloc(N * 2);
    float *f = malloc(N * 4);
    ref_rng r = {77};
    for (int i = 0; i < N; i++) {
        h[i] = (uint16_t)(ref_next(&r) & 0xffff);
        if ((h[i] & 0x7c00) == 0x7c00) h[i] &= 0xbfff; /* no Inf/NaN */
        int e = (h[i] >> 10) & 31, m = h[i] & 1023;
        double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
        f[i] = (float)((h[i] & 0x8000) ? -v : v);
    }
    qk_calib_options o;
    qk_calib_options_default(&o);
    qk_layout l = {QK_PER_GROUP, 2, {NB, G}, 0, G};
    qk_tensor th = qk_tensor_host(QK_F16, h, N), tf = qk_tensor_host(QK_F32, f, N);
    qk_block_calib_result rh, rf;
    assert_int_equal(qk_calibrate_blocks(ctx, &th, &l, &o, &rh), QK_OK);
    assert_int_equal(qk_calibrate_blocks(ctx, &tf, &l, &o, &rf), QK_OK);
    assert_memory_equal(rh.params, rf.params, (size_t)NB * sizeof *rh.params);
    uint8_t *ch = malloc(N), *cf = malloc(N);
    qk_tensor cth = qk_tensor_host(QK_U8, ch, N), ctf = qk_tensor_host(QK_U8, cf, N);
    assert_int_equal(qk_quantize_blocks(ctx, &th, &l, rh.params, rh.count, &cth), QK_OK);
    assert_int_equal(qk_quantize_blocks(ctx, &tf, &l, rf.params, rf.count, &ctf), QK_OK);
    assert_memory_equal(ch, cf, N);
    qk_block_calib_result_release(&rh);
    qk_block_calib_result_release(&rf);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_start = 90;
    o.grid_step = 0.5;
    assert_int_equal(qk_calibrate_blocks(ctx, &th, &l, &o, &rh), QK_OK);
    for (int64_t b = 0; b < NB; b += 39) {
        qk_tensor bt = qk_tensor_host(QK_F16, h + b * G, G);
        qk_calib_result one;
        assert_int_equal(qk_calibrate(ctx, &bt, &o, &one), QK_OK);
        assert_memory_equal(&one.params, &rh.params[b], sizeof one.params);
        assert_memory_equal(&one.candidates[one.best], &rh.chosen[b], sizeof one.candidates[0]);
        qk_calib_result_release(&one);
    }
    qk_block_calib_result_release(&rh);
    free(h);
    free(f);
    free(ch);
    free(cf);
}

/* The one-pass call equals calibrate then quantize, for contiguous and
 * gathered layouts, host and device codes, float32 and bfloat16 input. */
static void test_calibrate_quantize(void **state)
{
    enum { R = 64, K = 256, N = R * K };
    float *x = malloc(N * 4);
    uint16_t *bf = malloc(N * 2);
    ref_fill(x, N, REF_LAPLACE_OUTLIERS, 11);
    for (int i = 0; i < N; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        bf[i] = (uint16_t)(u >> 16);
    }
    uint8_t *want = malloc(N), *got = malloc(N);
    qk_buffer *bc;
    assert_int_equal(qk_buffer_create(ctx, N, &bc), QK_OK);
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.grid_start = 98;
    o.grid_step = 0.5;
    qk_layout layouts[] = {{QK_PER_CHANNEL, 2, {R, K}, 0, 0},
                           {QK_PER_CHANNEL, 2, {R, K}, 1, 0},
                           {QK_PER_GROUP, 2, {R, K}, 0, 64}};
    for (int d = 0; d < 2; d++) {
        qk_tensor t = d ? qk_tensor_host(QK_BF16, bf, N) : qk_tensor_host(QK_F32, x, N);
        for (size_t li = 0; li < sizeof layouts / sizeof *layouts; li++) {
            qk_block_calib_result r1, r2, r3;
            qk_tensor cw = qk_tensor_host(QK_U8, want, N), cg = qk_tensor_host(QK_U8, got, N);
            assert_int_equal(qk_calibrate_blocks(ctx, &t, &layouts[li], &o, &r1), QK_OK);
            assert_int_equal(qk_quantize_blocks(ctx, &t, &layouts[li], r1.params, r1.count, &cw), QK_OK);
            memset(got, 0xa5, N);
            assert_int_equal(qk_calibrate_quantize_blocks(ctx, &t, &layouts[li], &o, &r2, &cg), QK_OK);
            assert_memory_equal(r1.params, r2.params, (size_t)r1.count * sizeof *r1.params);
            assert_memory_equal(r1.chosen, r2.chosen, (size_t)r1.count * sizeof *r1.chosen);
            assert_true(r1.mse == r2.mse && r1.n == r2.n);
            assert_memory_equal(want, got, N);
            qk_tensor cd = qk_tensor_buffer(QK_U8, bc, 0, N);
            assert_int_equal(qk_calibrate_quantize_blocks(ctx, &t, &layouts[li], &o, &r3, &cd), QK_OK);
            memset(got, 0x5a, N);
            assert_int_equal(qk_buffer_read(ctx, bc, 0, got, N), QK_OK);
            assert_memory_equal(want, got, N);
            qk_block_calib_result_release(&r1);
            qk_block_calib_result_release(&r2);
            qk_block_calib_result_release(&r3);
        }
    }
    /* codes that cannot hold the range: refused before any work */
    qk_tensor t = qk_tensor_host(QK_F32, x, N), ci = qk_tensor_host(QK_I8, got, N);
    qk_block_calib_result r;
    assert_int_equal(qk_calibrate_quantize_blocks(ctx, &t, &layouts[0], &o, &r, &ci), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(ctx), "cannot hold"));
    qk_buffer_destroy(ctx, bc);
    free(x);
    free(bf);
    free(want);
    free(got);
}

int main(void)
{
    ctx = ref_test_context();
    if (!ctx) {
        fprintf(stderr, "SKIPPED: the backend under test is not available\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_channel_and_group), cmocka_unit_test(test_layout_errors),
        cmocka_unit_test(test_float16_input),         cmocka_unit_test(test_bfloat16_input),
        cmocka_unit_test(test_pack_int4),             cmocka_unit_test(test_many_blocks),
        cmocka_unit_test(test_device_tensors),        cmocka_unit_test(test_float16_blocks),
        cmocka_unit_test(test_calibrate_quantize),
    };
    int failed = cmocka_run_group_tests_name(qk_backend_name(qk_context_backend(ctx)), tests, NULL, NULL);
    qk_context_destroy(ctx);
    return failed ? 1 : 0;
}
