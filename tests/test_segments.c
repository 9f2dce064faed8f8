/* The backend's segmented members (seg_minmax, seg_select, seg_quantize,
 * seg_dequantize, seg_error) and widen, called directly through the backend
 * interface on device buffers: every segment's result must equal, bit for bit,
 * what the per-tensor member gives for that segment as a buffer tensor of its
 * own. A member may answer QK_ERR_UNSUPPORTED (then with no message: the
 * library falls back to per-segment calls); a missing member is reported as
 * skipped, and a backend with none at all skips the whole test (77). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"
#include "ref.h"

static qk_context *ctx;

static qk_backend *be_of(qk_context *c)
{
    return c->backend;
}

static const qk_backend_iface *ifc(void)
{
    return ctx->backend->iface;
}

#define SKIP_WITHOUT(member)                                                                       \
    do {                                                                                           \
        if (!ifc()->member) {                                                                      \
            print_message("backend has no " #member ": skipped\n");                                \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* Segment sizes and counts: tiny, odd, the error pass's 4096-element block and
 * one past it, and a segment over a 65536-element super-block. */
typedef struct seg_case {
    int64_t seg, nseg;
} seg_case;

/* 8192 and 16384 reach the largest shared-memory sorts of the CUDA backend. */
static const seg_case cases[] = {{1, 61},   {7, 41},   {32, 23},   {128, 37},   {1000, 11},
                                 {4096, 5}, {4097, 3}, {8192, 3}, {16384, 3}, {70000, 3}};
#define NCASES (sizeof cases / sizeof cases[0])

/* A segmented call's status: OK (then the caller compares), or UNSUPPORTED
 * with no message set (then there is nothing to compare). */
static int seg_ran(qk_status st, const char *what, int64_t seg)
{
    if (st == QK_ERR_UNSUPPORTED) {
        assert_string_equal(qk_context_message(ctx), "");
        print_message("%s: segments of %lld unsupported (the caller falls back)\n", what, (long long)seg);
        return 0;
    }
    if (st != QK_OK) print_message("%s failed: %s\n", what, qk_context_message(ctx));
    assert_int_equal(st, QK_OK);
    return 1;
}

/* ---- data ------------------------------------------------------------------------------ */

enum { KIND_COUNT = 9 };

/* Laplace data with outliers, and per segment (by index) one of: NaN inside,
 * +-Inf inside, all equal, a -0/+0 mix, all non-finite (keep_finite: all but
 * the last element), huge values, a negative constant, denormals. */
static void fill_segments(float *x, int64_t seg, int64_t nseg, uint64_t seed, int keep_finite)
{
    ref_fill(x, seg * nseg, REF_LAPLACE_OUTLIERS, seed);
    ref_rng r = {seed * 31 + 7};
    for (int64_t b = 0; b < nseg; b++) {
        float *s = x + b * seg;
        switch (b % KIND_COUNT) {
        case 1: /* in a long segment, past its first 65536-element super-block */
            if (seg > 65536) s[65536 + (int64_t)(ref_next(&r) % (uint64_t)(seg - 65536))] = NAN;
            else s[ref_next(&r) % (uint64_t)seg] = NAN;
            break;
        case 2:
            s[ref_next(&r) % (uint64_t)seg] = INFINITY;
            s[ref_next(&r) % (uint64_t)seg] = -INFINITY;
            break;
        case 3: for (int64_t j = 0; j < seg; j++) s[j] = 3.25f; break;
        case 4:
            for (int64_t j = 0; j < seg; j++) s[j] = (ref_next(&r) & 1) ? 0.0f : -0.0f;
            if (seg > 4) s[seg / 2] = -1.5f;
            break;
        case 5:
            for (int64_t j = 0; j < seg; j++) {
                uint32_t u = (uint32_t)(ref_next(&r) % 3 == 0 ? 0x7f800000u : 0x7fc00000u | (uint32_t)j);
                u |= (ref_next(&r) & 1) ? 0x80000000u : 0;
                memcpy(&s[j], &u, 4);
            }
            if (keep_finite) s[seg - 1] = 1.5f;
            break;
        case 6:
            for (int64_t j = 0; j < seg; j += 3) s[j] = (j & 1) ? 3.4e38f : -3.3e38f;
            break;
        case 7: for (int64_t j = 0; j < seg; j++) s[j] = -2.0f; break;
        case 8:
            for (int64_t j = 0; j < seg; j++) s[j] = (float)((int)(ref_next(&r) % 41) - 20) * 1.401298464324817e-45f;
            break;
        default: break;
        }
        /* a single-element segment of kind 1 or 2 is all non-finite */
        if (keep_finite && seg == 1 && !isfinite(s[0])) s[0] = 0.75f;
    }
}

/* float64 copy of the same data, plus values only float64 has. */
static double *widen_f64(const float *x, int64_t seg, int64_t nseg)
{
    double *d = malloc((size_t)(seg * nseg) * sizeof *d);
    for (int64_t i = 0; i < seg * nseg; i++) d[i] = x[i];
    for (int64_t b = 0; b < nseg; b++) {
        double *s = d + b * seg;
        if (b % KIND_COUNT == 6) s[seg - 1] = isfinite(s[seg - 1]) ? 1e300 : s[seg - 1];
        if (b % KIND_COUNT == 8) s[0] = 4.9406564584124654e-324 * (double)(b + 1);
        if (b % KIND_COUNT == 0 && seg > 2) s[1] = 0.1 + 1e-17 * (double)b; /* not a float */
    }
    return d;
}

/* A device buffer holding n elements of dtype pad elements in (an offset the
 * kernels must honour); data may be NULL. */
typedef struct dev_t_ {
    qk_buffer *buf;
    qk_tensor t;
} dev_t_;

static dev_t_ dev_put(qk_context *c, qk_dtype dt, const void *data, int64_t n, int64_t pad)
{
    size_t es = qk_dtype_size(dt);
    dev_t_ d;
    assert_int_equal(qk_buffer_create(c, (size_t)(n + pad + 1) * es, &d.buf), QK_OK);
    if (data) assert_int_equal(qk_buffer_write(c, d.buf, (size_t)pad * es, data, (size_t)n * es), QK_OK);
    d.t = qk_tensor_buffer(dt, d.buf, pad * (int64_t)es, n);
    return d;
}

static void dev_free(qk_context *c, dev_t_ *d)
{
    assert_int_equal(qk_buffer_destroy(c, d->buf), QK_OK);
}

static void *dev_get(qk_context *c, const dev_t_ *d)
{
    size_t bytes = (size_t)d->t.n * qk_dtype_size(d->t.dtype);
    void *h = malloc(bytes ? bytes : 1);
    assert_int_equal(qk_buffer_read(c, d->buf, (size_t)d->t.offset, h, bytes), QK_OK);
    return h;
}

/* Segment b of t as a tensor of its own. */
static qk_tensor view(const qk_tensor *t, int64_t b, int64_t seg)
{
    return qk_tensor_buffer(t->dtype, t->buffer, t->offset + b * seg * (int64_t)qk_dtype_size(t->dtype), seg);
}

/* The input of a case as a device tensor of dtype (F32 or F64). */
static dev_t_ case_input(qk_context *c, qk_dtype dt, const float *x, int64_t seg, int64_t nseg)
{
    if (dt == QK_F32) return dev_put(c, dt, x, seg * nseg, 3);
    double *d = widen_f64(x, seg, nseg);
    dev_t_ t = dev_put(c, dt, d, seg * nseg, 3);
    free(d);
    return t;
}

static double elem(const void *host, qk_dtype dt, int64_t i)
{
    return dt == QK_F64 ? ((const double *)host)[i] : ((const float *)host)[i];
}

/* ---- seg_minmax -------------------------------------------------------------------------- */

static void check_minmax(qk_dtype dt, int64_t seg, int64_t nseg, uint64_t seed)
{
    qk_backend *be = be_of(ctx);
    float *x = malloc((size_t)(seg * nseg) * 4);
    fill_segments(x, seg, nseg, seed, 0);
    dev_t_ d = case_input(ctx, dt, x, seg, nseg);
    qk_minmax_result *got = calloc((size_t)nseg, sizeof *got);
    qk_clear_error(ctx);
    if (seg_ran(ifc()->seg_minmax(be, &d.t, seg, got), "seg_minmax", seg)) {
        for (int64_t b = 0; b < nseg; b++) {
            qk_tensor v = view(&d.t, b, seg);
            qk_minmax_result want;
            assert_int_equal(ifc()->minmax(be, &v, &want), QK_OK);
            if (memcmp(&want, &got[b], sizeof want) != 0) {
                print_message("%s seg %lld segment %lld: min %g/%g max %g/%g bad %lld/%lld first %lld/%lld\n",
                              qk_dtype_name(dt), (long long)seg, (long long)b, want.min, got[b].min, want.max,
                              got[b].max, (long long)want.nonfinite_count, (long long)got[b].nonfinite_count,
                              (long long)want.first_nonfinite, (long long)got[b].first_nonfinite);
                fail();
            }
        }
    }
    dev_free(ctx, &d);
    free(got);
    free(x);
}

static void test_seg_minmax(void **state)
{
    (void)state;
    SKIP_WITHOUT(seg_minmax);
    for (size_t c = 0; c < NCASES; c++) {
        check_minmax(QK_F32, cases[c].seg, cases[c].nseg, 10 + c);
        check_minmax(QK_F64, cases[c].seg, cases[c].nseg, 20 + c);
    }
}

/* ---- seg_select ------------------------------------------------------------------------------ */

/* Keys of segment b with flags: every element, or the finite ones. */
static int64_t key_count(const void *host, qk_dtype dt, int64_t b, int64_t seg, unsigned flags)
{
    if (!(flags & QK_IGNORE_NONFINITE)) return seg;
    int64_t m = 0;
    for (int64_t j = 0; j < seg; j++) m += isfinite(elem(host, dt, b * seg + j)) != 0;
    return m;
}

/* nranks non-decreasing ranks per segment, a repeat among them, first and last. */
static int64_t *make_ranks(const void *host, qk_dtype dt, int64_t seg, int64_t nseg, unsigned flags, size_t nranks,
                           uint64_t seed)
{
    int64_t *r = malloc((size_t)nseg * nranks * sizeof *r);
    ref_rng rng = {seed};
    for (int64_t b = 0; b < nseg; b++) {
        int64_t m = key_count(host, dt, b, seg, flags);
        assert_true(m > 0);
        int64_t *rb = r + (size_t)b * nranks;
        for (size_t j = 0; j < nranks; j++) rb[j] = (int64_t)(ref_next(&rng) % (uint64_t)m);
        if (nranks > 1) {
            rb[0] = 0;
            rb[nranks - 1] = m - 1;
        }
        if (nranks > 3) rb[2] = rb[1];
        /* insertion sort: ascending */
        for (size_t i = 1; i < nranks; i++) {
            for (size_t j = i; j > 0 && rb[j - 1] > rb[j]; j--) {
                int64_t t = rb[j];
                rb[j] = rb[j - 1];
                rb[j - 1] = t;
            }
        }
    }
    return r;
}

static void check_select(qk_dtype dt, int64_t seg, int64_t nseg, unsigned flags, size_t nranks, uint64_t seed)
{
    qk_backend *be = be_of(ctx);
    float *x = malloc((size_t)(seg * nseg) * 4);
    fill_segments(x, seg, nseg, seed, 1);
    void *host = x;
    double *xd = NULL;
    if (dt == QK_F64) host = xd = widen_f64(x, seg, nseg);
    dev_t_ d = dev_put(ctx, dt, host, seg * nseg, 5);
    int64_t *ranks = make_ranks(host, dt, seg, nseg, flags, nranks, seed);
    double *got = calloc((size_t)nseg * nranks, sizeof *got), *want = calloc(nranks, sizeof *want);
    qk_clear_error(ctx);
    if (seg_ran(ifc()->seg_select(be, &d.t, seg, flags, ranks, nranks, got), "seg_select", seg)) {
        for (int64_t b = 0; b < nseg; b++) {
            qk_tensor v = view(&d.t, b, seg);
            assert_int_equal(ifc()->select(be, &v, flags, ranks + (size_t)b * nranks, nranks, want), QK_OK);
            if (memcmp(want, got + (size_t)b * nranks, nranks * sizeof *want) != 0) {
                for (size_t j = 0; j < nranks; j++) {
                    print_message("%s seg %lld flags %u segment %lld rank %lld: want %a got %a\n", qk_dtype_name(dt),
                                  (long long)seg, flags, (long long)b, (long long)ranks[(size_t)b * nranks + j],
                                  want[j], got[(size_t)b * nranks + j]);
                }
                fail();
            }
        }
    }
    dev_free(ctx, &d);
    free(ranks);
    free(got);
    free(want);
    free(xd);
    free(x);
}

static void test_seg_select(void **state)
{
    (void)state;
    SKIP_WITHOUT(seg_select);
    static const unsigned flag_sets[] = {0, QK_IGNORE_NONFINITE, QK_ABS, QK_ABS | QK_IGNORE_NONFINITE};
    for (size_t c = 0; c < NCASES; c++) {
        for (size_t f = 0; f < 4; f++) {
            check_select(QK_F32, cases[c].seg, cases[c].nseg, flag_sets[f], f == 1 ? 1 : 6, 100 + c * 4 + f);
        }
        check_select(QK_F64, cases[c].seg, cases[c].nseg, 0, 6, 200 + c);
        check_select(QK_F64, cases[c].seg, cases[c].nseg, QK_ABS | QK_IGNORE_NONFINITE, 3, 300 + c);
    }
}

/* ---- seg_quantize / seg_dequantize ---------------------------------------------------------- */

/* Finite range of segment b (or [-1, 1] when it has none). */
static void seg_range(const void *host, qk_dtype dt, int64_t b, int64_t seg, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t j = 0; j < seg; j++) {
        double v = elem(host, dt, b * seg + j);
        if (!isfinite(v)) continue;
        if (v < *lo) *lo = v;
        if (v > *hi) *hi = v;
    }
    if (*lo > *hi) {
        *lo = -1;
        *hi = 1;
    }
}

/* The scheme a code dtype goes with in these tests. */
static void code_scheme(qk_dtype cdt, qk_scheme *scheme, int *bits, int *narrow)
{
    *narrow = 0;
    switch (cdt) {
    case QK_U8: *scheme = QK_ASYMMETRIC; *bits = 8; break;
    case QK_I8: *scheme = QK_SYMMETRIC; *bits = 8; *narrow = 1; break;
    case QK_U16: *scheme = QK_ASYMMETRIC; *bits = 16; break;
    case QK_I16: *scheme = QK_SYMMETRIC; *bits = 12; break;
    default: *scheme = QK_ASYMMETRIC; *bits = 16; break; /* int32 codes hold any */
    }
}

/* Parameters per segment from its range (shrunk by `shrink` to clip some
 * values), all with one scheme; asymmetric ones every fifth segment with a
 * zero point far outside the codes (the kernels' general, non-fast path). */
static qk_qparams make_params(const void *host, qk_dtype dt, int64_t b, int64_t seg, qk_scheme scheme, int bits,
                              int narrow, double shrink)
{
    double lo, hi;
    seg_range(host, dt, b, seg, &lo, &hi);
    qk_qparams p;
    if (scheme == QK_ASYMMETRIC && b % 5 == 4) {
        int32_t zp = (b & 1) ? -300000000 : 2000000000;
        assert_int_equal(qk_qparams_from_scale(NULL, scheme, bits, narrow, 0.001f * (float)(b + 1), zp, &p), QK_OK);
        return p;
    }
    if (qk_qparams_from_range(NULL, scheme, bits, narrow, 0, lo * shrink, hi * shrink, &p) != QK_OK) {
        assert_int_equal(qk_qparams_from_scale(NULL, scheme, bits, narrow, 1.0f, 0, &p), QK_OK);
    }
    return p;
}

static void check_quant(qk_dtype dt, qk_dtype cdt, int64_t seg, int64_t nseg, uint64_t seed)
{
    qk_backend *be = be_of(ctx);
    int64_t n = seg * nseg;
    float *x = malloc((size_t)n * 4);
    fill_segments(x, seg, nseg, seed, 0);
    void *host = x;
    double *xd = NULL;
    if (dt == QK_F64) host = xd = widen_f64(x, seg, nseg);
    qk_scheme scheme;
    int bits, narrow;
    code_scheme(cdt, &scheme, &bits, &narrow);
    qk_qparams *prm = malloc((size_t)nseg * sizeof *prm);
    for (int64_t b = 0; b < nseg; b++) prm[b] = make_params(host, dt, b, seg, scheme, bits, narrow, 0.9);
    dev_t_ d = dev_put(ctx, dt, host, n, 3);
    dev_t_ cs = dev_put(ctx, cdt, NULL, n, 5), cr = dev_put(ctx, cdt, NULL, n, 5);
    qk_clear_error(ctx);
    if (ifc()->seg_quantize && seg_ran(ifc()->seg_quantize(be, &d.t, seg, prm, &cs.t), "seg_quantize", seg)) {
        for (int64_t b = 0; b < nseg; b++) {
            qk_tensor v = view(&d.t, b, seg), cv = view(&cr.t, b, seg);
            assert_int_equal(ifc()->quantize(be, &v, &prm[b], &cv), QK_OK);
        }
        void *hs = dev_get(ctx, &cs), *hr = dev_get(ctx, &cr);
        assert_memory_equal(hs, hr, (size_t)n * qk_dtype_size(cdt));
        free(hs);
        free(hr);
    }
    if (ifc()->seg_dequantize) {
        /* codes over the whole range (not only what quantize produced) */
        size_t cs_es = qk_dtype_size(cdt);
        unsigned char *codes = malloc((size_t)n * cs_es);
        ref_rng r = {seed + 1};
        int64_t span = (int64_t)prm[0].qmax - prm[0].qmin + 1;
        for (int64_t i = 0; i < n; i++) {
            int64_t q = prm[0].qmin + (int64_t)(ref_next(&r) % (uint64_t)span);
            if (i % 97 == 0) q = (i & 1) ? prm[0].qmax : prm[0].qmin;
            switch (cdt) {
            case QK_U8: ((uint8_t *)codes)[i] = (uint8_t)q; break;
            case QK_I8: ((int8_t *)codes)[i] = (int8_t)q; break;
            case QK_U16: ((uint16_t *)codes)[i] = (uint16_t)q; break;
            case QK_I16: ((int16_t *)codes)[i] = (int16_t)q; break;
            default: ((int32_t *)codes)[i] = (int32_t)q; break;
            }
        }
        dev_t_ c = dev_put(ctx, cdt, codes, n, 1);
        dev_t_ os = dev_put(ctx, QK_F32, NULL, n, 2), orf = dev_put(ctx, QK_F32, NULL, n, 2);
        qk_clear_error(ctx);
        if (seg_ran(ifc()->seg_dequantize(be, &c.t, seg, prm, &os.t), "seg_dequantize", seg)) {
            for (int64_t b = 0; b < nseg; b++) {
                qk_tensor cv = view(&c.t, b, seg), ov = view(&orf.t, b, seg);
                assert_int_equal(ifc()->dequantize(be, &cv, &prm[b], &ov), QK_OK);
            }
            void *hs = dev_get(ctx, &os), *hr = dev_get(ctx, &orf);
            assert_memory_equal(hs, hr, (size_t)n * 4);
            free(hs);
            free(hr);
        }
        dev_free(ctx, &c);
        dev_free(ctx, &os);
        dev_free(ctx, &orf);
        free(codes);
    }
    dev_free(ctx, &d);
    dev_free(ctx, &cs);
    dev_free(ctx, &cr);
    free(prm);
    free(xd);
    free(x);
}

static void test_seg_quantize_dequantize(void **state)
{
    (void)state;
    if (!ifc()->seg_quantize) print_message("backend has no seg_quantize: skipped\n");
    if (!ifc()->seg_dequantize) print_message("backend has no seg_dequantize: skipped\n");
    if (!ifc()->seg_quantize && !ifc()->seg_dequantize) skip();
    static const qk_dtype code_types[] = {QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
    for (size_t c = 0; c < NCASES; c++) {
        for (size_t t = 0; t < 5; t++) {
            /* every code dtype on the small cases, two on the big ones (time) */
            if (cases[c].seg * cases[c].nseg > 100000 && t % 2) continue;
            check_quant(QK_F32, code_types[t], cases[c].seg, cases[c].nseg, 400 + c * 8 + t);
        }
        check_quant(QK_F64, code_types[c % 5], cases[c].seg, cases[c].nseg, 500 + c);
    }
}

/* ---- seg_error ------------------------------------------------------------------------------ */

static void check_error(qk_dtype dt, int64_t seg, int64_t nseg, size_t k, qk_scheme scheme, uint64_t seed)
{
    qk_backend *be = be_of(ctx);
    int64_t n = seg * nseg;
    float *x = malloc((size_t)n * 4);
    fill_segments(x, seg, nseg, seed, 0);
    void *host = x;
    double *xd = NULL;
    if (dt == QK_F64) host = xd = widen_f64(x, seg, nseg);
    qk_qparams *prm = malloc((size_t)nseg * k * sizeof *prm);
    double *fences = malloc((size_t)nseg * 2 * sizeof *fences);
    for (int64_t b = 0; b < nseg; b++) {
        for (size_t c = 0; c < k; c++) {
            prm[(size_t)b * k + c] = make_params(host, dt, b, seg, scheme, 8, 0, 1.0 - 0.08 * (double)c);
        }
        double lo, hi;
        seg_range(host, dt, b, seg, &lo, &hi);
        if (b % 4 == 0) {
            fences[2 * b] = -INFINITY;
            fences[2 * b + 1] = INFINITY;
        } else {
            fences[2 * b] = lo + 0.1 * (hi - lo);
            fences[2 * b + 1] = hi - 0.15 * (hi - lo) + (b % 3 == 0 ? 1e-9 : 0.0); /* not a float */
        }
    }
    dev_t_ d = dev_put(ctx, dt, host, n, 3);
    qk_error_sums *got = calloc((size_t)nseg * k, sizeof *got), *want = calloc(k, sizeof *want);
    qk_error_counts *gotc = calloc((size_t)nseg, sizeof *gotc), wantc;
    qk_clear_error(ctx);
    if (seg_ran(ifc()->seg_error(be, &d.t, seg, prm, k, fences, got, gotc), "seg_error", seg)) {
        for (int64_t b = 0; b < nseg; b++) {
            qk_tensor v = view(&d.t, b, seg);
            assert_int_equal(ifc()->error(be, &v, prm + (size_t)b * k, k, fences[2 * b], fences[2 * b + 1], want,
                                          &wantc),
                             QK_OK);
            for (size_t c = 0; c < k; c++) {
                const qk_error_sums *g = &got[(size_t)b * k + c];
                if (memcmp(&want[c], g, sizeof *g) != 0) {
                    print_message("%s seg %lld k %zu segment %lld candidate %zu: sse %a/%a in %a/%a clip %lld/%lld\n",
                                  qk_dtype_name(dt), (long long)seg, k, (long long)b, c, want[c].sse, g->sse,
                                  want[c].sse_inliers, g->sse_inliers, (long long)want[c].clipped,
                                  (long long)g->clipped);
                    fail();
                }
            }
            assert_memory_equal(&wantc, &gotc[b], sizeof wantc);
        }
    }
    dev_free(ctx, &d);
    free(got);
    free(want);
    free(gotc);
    free(prm);
    free(fences);
    free(xd);
    free(x);
}

static void test_seg_error(void **state)
{
    (void)state;
    SKIP_WITHOUT(seg_error);
    for (size_t c = 0; c < NCASES; c++) {
        check_error(QK_F32, cases[c].seg, cases[c].nseg, 1, QK_ASYMMETRIC, 600 + c);
        check_error(QK_F32, cases[c].seg, cases[c].nseg, 9, QK_SYMMETRIC, 700 + c);
        check_error(QK_F64, cases[c].seg, cases[c].nseg, c % 2 ? 9 : 1, QK_ASYMMETRIC, 800 + c);
    }
}

/* ---- widen ---------------------------------------------------------------------------------- */

static void check_widen(qk_dtype dt, int64_t start, int64_t n)
{
    qk_backend *be = be_of(ctx);
    uint16_t *h = malloc(65536 * sizeof *h);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    dev_t_ x = dev_put(ctx, dt, h + start, n, 3), out = dev_put(ctx, QK_F32, NULL, n, 1);
    qk_clear_error(ctx);
    assert_int_equal(ifc()->widen(be, &x.t, &out.t), QK_OK);
    uint32_t *got = dev_get(ctx, &out);
    for (int64_t i = 0; i < n; i++) {
        uint16_t v = h[start + i];
        uint32_t want;
        if (dt == QK_F16) {
            float f = qk_half_to_float(v);
            memcpy(&want, &f, 4);
        } else {
            want = (uint32_t)v << 16;
        }
        if (got[i] != want) {
            print_message("%s 0x%04x: want 0x%08x got 0x%08x\n", qk_dtype_name(dt), v, want, got[i]);
            fail();
        }
    }
    dev_free(ctx, &x);
    dev_free(ctx, &out);
    free(got);
    free(h);
}

static void test_widen(void **state)
{
    (void)state;
    SKIP_WITHOUT(widen);
    check_widen(QK_F16, 0, 65536); /* every half value: NaN payloads, subnormals, -0 */
    check_widen(QK_BF16, 0, 65536);
    check_widen(QK_F16, 5, 65531 - 7); /* odd length, odd start */
    check_widen(QK_BF16, 1, 13);
    check_widen(QK_F16, 0x7c01, 1);
}

/* ---- batches: the same results when the backend must cut a call into many ----------------------- */

/* A second context with a small device-memory budget (3 MiB: the CUDA
 * backend counts the caller's buffers against it too, and the input takes
 * 1.1 MB), so a GPU backend runs each call in many batches; compared with the first
 * context's results, which the other tests compared with per-tensor calls, and
 * spot-checked against per-tensor calls directly. */
static void test_seg_batches(void **state)
{
    (void)state;
    const qk_backend_iface *f = ifc();
    if (!f->seg_minmax && !f->seg_select && !f->seg_quantize && !f->seg_error) skip();
    setenv("QKERN_DEVICE_MEMORY_LIMIT", "3M", 1);
    qk_context *small = NULL;
    char msg[256];
    qk_status st = qk_context_create(qk_context_backend(ctx), &small, msg, sizeof msg);
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    assert_int_equal(st, QK_OK);
    qk_backend *bs = be_of(small), *bb = be_of(ctx);
    const int64_t seg = 7, nseg = 40001, n = seg * nseg;
    float *x = malloc((size_t)n * 4);
    fill_segments(x, seg, nseg, 77, 1);
    dev_t_ d = dev_put(ctx, QK_F32, x, n, 1), ds = dev_put(small, QK_F32, x, n, 1);

    if (f->seg_minmax) {
        qk_minmax_result *a = calloc((size_t)nseg, sizeof *a), *b = calloc((size_t)nseg, sizeof *b);
        qk_status s1 = f->seg_minmax(bb, &d.t, seg, a), s2 = f->seg_minmax(bs, &ds.t, seg, b);
        assert_int_equal(s1, s2);
        if (s1 == QK_OK) assert_memory_equal(a, b, (size_t)nseg * sizeof *a);
        free(a);
        free(b);
    }
    if (f->seg_select) {
        const size_t nr = 4;
        int64_t *ranks = make_ranks(x, QK_F32, seg, nseg, QK_IGNORE_NONFINITE, nr, 5);
        double *a = calloc((size_t)nseg * nr, sizeof *a), *b = calloc((size_t)nseg * nr, sizeof *b);
        qk_status s1 = f->seg_select(bb, &d.t, seg, QK_IGNORE_NONFINITE, ranks, nr, a);
        qk_status s2 = f->seg_select(bs, &ds.t, seg, QK_IGNORE_NONFINITE, ranks, nr, b);
        assert_int_equal(s1, s2);
        if (s1 == QK_OK) {
            assert_memory_equal(a, b, (size_t)nseg * nr * sizeof *a);
            double want[4];
            for (int64_t g = 0; g < nseg; g += 4999) {
                qk_tensor v = view(&ds.t, g, seg);
                assert_int_equal(f->select(bs, &v, QK_IGNORE_NONFINITE, ranks + (size_t)g * nr, nr, want), QK_OK);
                assert_memory_equal(want, b + (size_t)g * nr, sizeof want);
            }
        }
        free(ranks);
        free(a);
        free(b);
    }
    if (f->seg_quantize) {
        qk_qparams *prm = malloc((size_t)nseg * sizeof *prm);
        for (int64_t g = 0; g < nseg; g++) prm[g] = make_params(x, QK_F32, g, seg, QK_ASYMMETRIC, 8, 0, 1.0);
        dev_t_ ca = dev_put(ctx, QK_U8, NULL, n, 0), cb = dev_put(small, QK_U8, NULL, n, 0);
        qk_status s1 = f->seg_quantize(bb, &d.t, seg, prm, &ca.t), s2 = f->seg_quantize(bs, &ds.t, seg, prm, &cb.t);
        assert_int_equal(s1, s2);
        if (s1 == QK_OK) {
            void *ha = dev_get(ctx, &ca), *hb = dev_get(small, &cb);
            assert_memory_equal(ha, hb, (size_t)n);
            free(ha);
            free(hb);
        }
        dev_free(ctx, &ca);
        dev_free(small, &cb);
        free(prm);
    }
    if (f->seg_error) {
        const int64_t eseg = 128, enseg = 2180; /* a prefix of the same data */
        const size_t k = 9;
        qk_tensor t1 = qk_tensor_buffer(QK_F32, d.t.buffer, d.t.offset, eseg * enseg);
        qk_tensor t2 = qk_tensor_buffer(QK_F32, ds.t.buffer, ds.t.offset, eseg * enseg);
        qk_qparams *prm = malloc((size_t)enseg * k * sizeof *prm);
        double *fences = malloc((size_t)enseg * 2 * sizeof *fences);
        for (int64_t g = 0; g < enseg; g++) {
            for (size_t c = 0; c < k; c++) {
                prm[(size_t)g * k + c] = make_params(x, QK_F32, g, eseg, QK_ASYMMETRIC, 4, 0, 1.0 - 0.05 * (double)c);
            }
            fences[2 * g] = g % 2 ? -0.01 : -INFINITY;
            fences[2 * g + 1] = g % 2 ? 0.02 : INFINITY;
        }
        qk_error_sums *a = calloc((size_t)enseg * k, sizeof *a), *b = calloc((size_t)enseg * k, sizeof *b);
        qk_error_counts *ac = calloc((size_t)enseg, sizeof *ac), *bc = calloc((size_t)enseg, sizeof *bc);
        qk_status s1 = f->seg_error(bb, &t1, eseg, prm, k, fences, a, ac);
        qk_status s2 = f->seg_error(bs, &t2, eseg, prm, k, fences, b, bc);
        assert_int_equal(s1, s2);
        if (s1 == QK_OK) {
            assert_memory_equal(a, b, (size_t)enseg * k * sizeof *a);
            assert_memory_equal(ac, bc, (size_t)enseg * sizeof *ac);
        }
        free(a);
        free(b);
        free(ac);
        free(bc);
        free(prm);
        free(fences);
    }
    dev_free(ctx, &d);
    dev_free(small, &ds);
    qk_context_destroy(small);
    free(x);
}

int main(void)
{
    ctx = ref_test_context();
    if (!ctx) {
        fprintf(stderr, "SKIPPED: the backend under test is not available\n");
        return 77;
    }
    const qk_backend_iface *f = ifc();
    if (!f->seg_minmax && !f->seg_select && !f->seg_quantize && !f->seg_dequantize && !f->seg_error && !f->widen) {
        fprintf(stderr, "SKIPPED: backend %s has no segmented operations (seg_* / widen members)\n",
                qk_backend_name(qk_context_backend(ctx)));
        qk_context_destroy(ctx);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seg_minmax),
        cmocka_unit_test(test_seg_select),
        cmocka_unit_test(test_seg_quantize_dequantize),
        cmocka_unit_test(test_seg_error),
        cmocka_unit_test(test_widen),
        cmocka_unit_test(test_seg_batches),
    };
    int failed = cmocka_run_group_tests_name(qk_backend_name(qk_context_backend(ctx)), tests, NULL, NULL);
    qk_context_destroy(ctx);
    return failed ? 1 : 0;
}
