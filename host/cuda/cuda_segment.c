/* The CUDA backend's segmented operations (host/backend.h's seg_* members)
 * and widen: one launch per batch of segments (kernels/cuda/segment.cu), the
 * batch as large as QK_CU_SEG_BATCH_BYTES of scratch allows, usually the whole
 * tensor. The kernels write the result records in the interface's own layout,
 * so they are copied straight into the caller's arrays.
 *
 * A call these members cannot do in one go (a segment longer than the sort's
 * shared memory, longer than one launch, scratch beyond the device or the
 * memory limit, a host tensor) returns QK_ERR_UNSUPPORTED without a message:
 * host/segments.c then runs the per-tensor members segment by segment, which
 * give the same results. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* Device scratch one batch may use (parameters, ranks, results). */
#define QK_CU_SEG_BATCH_BYTES ((size_t)64 << 20)
/* Sub-arrays of a batch's scratch start at this alignment. */
#define QK_CU_SEG_ALIGN ((size_t)256)

/* The kernels' records are the interface's records. */
_Static_assert(sizeof(qk_cu_seg_sums) == sizeof(qk_error_sums) && offsetof(qk_cu_seg_sums, sse) ==
                   offsetof(qk_error_sums, sse) && offsetof(qk_cu_seg_sums, sse_inliers) ==
                   offsetof(qk_error_sums, sse_inliers) && offsetof(qk_cu_seg_sums, clipped) ==
                   offsetof(qk_error_sums, clipped),
               "qk_cu_seg_sums must match qk_error_sums");
_Static_assert(sizeof(qk_cu_seg_counts) == sizeof(qk_error_counts) && offsetof(qk_cu_seg_counts, n_finite) ==
                   offsetof(qk_error_counts, n_finite) && offsetof(qk_cu_seg_counts, n_inliers) ==
                   offsetof(qk_error_counts, n_inliers) && offsetof(qk_cu_seg_counts, nonfinite_count) ==
                   offsetof(qk_error_counts, nonfinite_count) && offsetof(qk_cu_seg_counts, first_nonfinite) ==
                   offsetof(qk_error_counts, first_nonfinite),
               "qk_cu_seg_counts must match qk_error_counts");
_Static_assert(sizeof(long long) == sizeof(int64_t), "64-bit records");

static int is_float(qk_dtype t)
{
    return t == QK_F32 || t == QK_F64;
}

static int is_code(qk_dtype t)
{
    return t == QK_U8 || t == QK_I8 || t == QK_U16 || t == QK_I16 || t == QK_I32;
}

/* The calls a batch of whole segments can take: device tensors, segments
 * that divide x and fit one launch. Anything else is the fallback's. */
static int seg_fits(const qk_tensor *x, int64_t seg)
{
    return !x->host && x->buffer && seg >= 1 && seg <= QK_CU_MAX_LAUNCH && x->n >= seg && x->n % seg == 0;
}

static size_t align_up(size_t v)
{
    return (v + QK_CU_SEG_ALIGN - 1) / QK_CU_SEG_ALIGN * QK_CU_SEG_ALIGN;
}

/* ---- batches ---------------------------------------------------------------------------------- */

/* One batch's scratch: up to four arrays of per-segment records, carved from
 * one allocation. */
typedef struct seg_batch {
    int64_t nseg, seg; /* segments of the call, their length */
    int64_t nb;        /* segments per batch */
    size_t per[4];     /* bytes each array takes per segment */
    void *arr[4];
    void *mem;
    size_t bytes;
} seg_batch;

static size_t batch_bytes(const seg_batch *b, int64_t nb)
{
    size_t t = 0;
    for (int i = 0; i < 4; i++) t += align_up(b->per[i] * (size_t)nb);
    return t;
}

/* Plan and allocate: as many segments as QK_CU_SEG_BATCH_BYTES (a quarter of
 * what a memory limit leaves) and one launch (max_elems) allow, fewer while
 * the device refuses. QK_ERR_UNSUPPORTED, no message, when one does not fit. */
static qk_status batch_alloc(qk_backend *be, seg_batch *b, int64_t max_elems)
{
    cu_state *cu = cu_of(be);
    size_t cap = QK_CU_SEG_BATCH_BYTES;
    if (cu->limit != UINT64_MAX && cap > cu_budget(be) / 4) cap = (size_t)(cu_budget(be) / 4);
    size_t per = 0;
    for (int i = 0; i < 4; i++) per += b->per[i];
    int64_t nb = b->nseg;
    if (per && (uint64_t)nb > cap / per) nb = (int64_t)(cap / per);
    if (nb > max_elems / b->seg) nb = max_elems / b->seg;
    if (nb < 1) nb = 1;
    for (;;) {
        b->bytes = batch_bytes(b, nb);
        qk_status st = cu_alloc(be, b->bytes, CU_QUIET, &b->mem);
        if (st == QK_OK) break;
        b->mem = NULL;
        b->bytes = 0;
        if (st != QK_ERR_NO_MEMORY) return st;
        if (nb == 1) return QK_ERR_UNSUPPORTED; /* quiet: the per-segment path decides */
        nb /= 2;
    }
    b->nb = nb;
    char *p = b->mem;
    for (int i = 0; i < 4; i++) {
        b->arr[i] = b->per[i] ? p : NULL;
        p += align_up(b->per[i] * (size_t)nb);
    }
    return QK_OK;
}

/* After the last batch: wait for the streams, then free the scratch. */
static qk_status batch_end(qk_backend *be, seg_batch *b, qk_status st)
{
    qk_status s2 = cu_sync(be);
    cu_free(be, b->mem, b->bytes);
    b->mem = NULL;
    return st != QK_OK ? st : s2;
}

/* Copy count records of device results into the caller's array, then wait
 * (the copy to pageable memory is complete once the stream is). */
static qk_status fetch(qk_backend *be, void *dst, const void *src, size_t bytes)
{
    cu_state *cu = cu_of(be);
    qk_status st = QK_OK;
    CU_CHECK(be, st, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu->compute));
done:
    return st;
}

static qk_status upload(qk_backend *be, void *dst, const void *src, size_t bytes)
{
    qk_status st = QK_OK;
    CU_CHECK(be, st, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu_of(be)->compute));
done:
    return st;
}

/* Per-segment parameters of segments [b0, b0 + cnt), k sets each, converted
 * into host staging and uploaded.
 * Fragile, correct today: the callers refill `staging` for the next batch right
 * after this returns. CUDA allows that only because staging is PAGEABLE memory:
 * a cudaMemcpyAsync from pageable memory has copied the bytes out by the time it
 * returns. From pinned memory (cudaMallocHost) the copy runs later, and the
 * refill would race it: whoever pins this buffer must double-buffer it and wait
 * on an event before reusing a half. */
static qk_status upload_params(qk_backend *be, qk_cu_qparam *staging, qk_cu_qparam *dst, const qk_qparams *params,
                               int64_t b0, int64_t cnt, size_t k)
{
    const size_t m = (size_t)cnt * k;
    const qk_qparams *src = params + (size_t)b0 * k;
    for (size_t i = 0; i < m; i++) staging[i] = cu_param_of(&src[i]);
    return upload(be, dst, staging, m * sizeof *staging);
}

/* ---- min/max ------------------------------------------------------------------------------------ */

qk_status qk_cu_op_seg_minmax(qk_backend *be, const qk_tensor *x, int64_t seg, qk_minmax_result *out)
{
    if (!seg_fits(x, seg) || !is_float(x->dtype)) return QK_ERR_UNSUPPORTED;
    cu_state *cu = cu_of(be);
    const size_t es = qk_dtype_size(x->dtype);
    seg_batch b = {.nseg = x->n / seg, .seg = seg, .per = {sizeof(qk_cu_minmax_acc), sizeof(qk_minmax_result)}};
    qk_status st = batch_alloc(be, &b, QK_CU_MAX_LAUNCH);
    if (st != QK_OK) return st;
    const char *xp = cu_tensor_ptr(x);
    for (int64_t b0 = 0; b0 < b.nseg && st == QK_OK; b0 += b.nb) {
        const int64_t cnt = b.nseg - b0 < b.nb ? b.nseg - b0 : b.nb;
        st = cu_launch_status(be, "segmented minmax kernel launch",
                           qk_cu_seg_minmax(cu->compute, cu->sms, x->dtype == QK_F64, xp + (size_t)(b0 * seg) * es,
                                            seg, cnt, b.arr[0], b.arr[1]));
        if (st == QK_OK) st = fetch(be, out + b0, b.arr[1], (size_t)cnt * sizeof *out);
    }
    return batch_end(be, &b, st);
}

/* ---- order statistics ------------------------------------------------------------------------------ */

qk_status qk_cu_op_seg_select(qk_backend *be, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                              size_t nranks, double *values)
{
    if (nranks == 0) return QK_OK;
    if (!seg_fits(x, seg) || !is_float(x->dtype)) return QK_ERR_UNSUPPORTED;
    cu_state *cu = cu_of(be);
    const int f64 = x->dtype == QK_F64;
    const size_t smem = qk_cu_seg_select_smem(f64, seg);
    if (smem == 0 || smem > (size_t)cu->smem_optin) return QK_ERR_UNSUPPORTED; /* longer than the sort takes */
    if (nranks > QK_CU_SEG_BATCH_BYTES / 16) return QK_ERR_UNSUPPORTED;
    const size_t es = qk_dtype_size(x->dtype);
    seg_batch b = {.nseg = x->n / seg, .seg = seg, .per = {nranks * sizeof(int64_t), nranks * sizeof(double)}};
    qk_status st = batch_alloc(be, &b, QK_CU_MAX_LAUNCH);
    if (st != QK_OK) return st;
    /* the first segment with a rank out of range (~0: none), in the persistent scratch */
    unsigned long long *dbad = (unsigned long long *)cu->dscratch, bad = ~0ull;
    CU_CHECK(be, st, cudaMemsetAsync(dbad, 0xff, sizeof *dbad, cu->compute));
    const char *xp = cu_tensor_ptr(x);
    for (int64_t b0 = 0; b0 < b.nseg && st == QK_OK; b0 += b.nb) {
        const int64_t cnt = b.nseg - b0 < b.nb ? b.nseg - b0 : b.nb;
        const size_t m = (size_t)cnt * nranks;
        st = upload(be, b.arr[0], ranks + (size_t)b0 * nranks, m * sizeof *ranks);
        if (st != QK_OK) break;
        st = cu_launch_status(be, "segmented select kernel launch",
                           qk_cu_seg_select(cu->compute, f64, xp + (size_t)(b0 * seg) * es, seg, cnt, flags, b.arr[0],
                                            (int64_t)nranks, b.arr[1], b0, dbad));
        if (st == QK_OK) st = fetch(be, values + (size_t)b0 * nranks, b.arr[1], m * sizeof *values);
    }
    if (st == QK_OK) st = fetch(be, &bad, dbad, sizeof bad);
    if (st == QK_OK && bad != ~0ull) {
        st = qk_set_error(be->ctx, QK_ERR_INVALID_ARG,
                          "cuda: segment %llu: a rank is out of range (each must be below the segment's key count)",
                          bad);
    }
done:
    return batch_end(be, &b, st);
}

/* ---- quantize / dequantize ------------------------------------------------------------------------------ */

typedef struct seg_quant {
    qk_backend *be;
    const qk_tensor *in;
    qk_tensor *out;
    int64_t seg;
    const qk_qparams *params;
    int dequant;
} seg_quant;

static qk_status seg_quant_run(const seg_quant *q)
{
    qk_backend *be = q->be;
    cu_state *cu = cu_of(be);
    const int64_t seg = q->seg;
    const size_t ies = qk_dtype_size(q->in->dtype), oes = qk_dtype_size(q->out->dtype);
    seg_batch b = {.nseg = q->in->n / seg, .seg = seg, .per = {sizeof(qk_cu_qparam)}};
    qk_status st = batch_alloc(be, &b, QK_CU_MAX_LAUNCH);
    if (st != QK_OK) return st;
    qk_cu_qparam *staging = malloc((size_t)b.nb * sizeof *staging);
    if (!staging) st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory for %lld parameter sets",
                                    (long long)b.nb);
    const char *ip = cu_tensor_ptr(q->in);
    char *op = cu_tensor_ptr(q->out);
    for (int64_t b0 = 0; b0 < b.nseg && st == QK_OK; b0 += b.nb) {
        const int64_t cnt = b.nseg - b0 < b.nb ? b.nseg - b0 : b.nb;
        st = upload_params(be, staging, b.arr[0], q->params, b0, cnt, 1);
        if (st != QK_OK) break;
        const void *src = ip + (size_t)(b0 * seg) * ies;
        void *dst = op + (size_t)(b0 * seg) * oes;
        if (q->dequant) {
            st = cu_launch_status(be, "segmented dequantize kernel launch",
                               qk_cu_seg_dequantize(cu->compute, cu->sms, q->in->dtype, src, dst, cnt * seg, seg, 0,
                                                    b.arr[0]));
        } else {
            st = cu_launch_status(be, "segmented quantize kernel launch",
                               qk_cu_seg_quantize(cu->compute, cu->sms, q->in->dtype, src, q->out->dtype, dst,
                                                  cnt * seg, seg, 0, b.arr[0]));
        }
    }
    st = batch_end(be, &b, st); /* the staging is copied before each upload returns; wait anyway */
    free(staging);
    return st;
}

qk_status qk_cu_op_seg_quantize(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                                qk_tensor *codes)
{
    if (!seg_fits(x, seg) || codes->host || !codes->buffer || codes->n != x->n || !is_float(x->dtype) ||
        !is_code(codes->dtype))
        return QK_ERR_UNSUPPORTED;
    seg_quant q = {be, x, codes, seg, params, 0};
    return seg_quant_run(&q);
}

qk_status qk_cu_op_seg_dequantize(qk_backend *be, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                                  qk_tensor *out)
{
    if (!seg_fits(codes, seg) || out->host || !out->buffer || out->n != codes->n || !is_code(codes->dtype) ||
        out->dtype != QK_F32)
        return QK_ERR_UNSUPPORTED;
    seg_quant q = {be, codes, out, seg, params, 1};
    return seg_quant_run(&q);
}

/* ---- the fused error pass ------------------------------------------------------------------------------------ */

qk_status qk_cu_op_seg_error(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                             const double *fences, qk_error_sums *sums, qk_error_counts *counts)
{
    if (!seg_fits(x, seg) || !is_float(x->dtype)) return QK_ERR_UNSUPPORTED;
    const int64_t nseg = x->n / seg;
    if (k == 0) { /* as the per-tensor member: no pass, nothing counted */
        for (int64_t b = 0; b < nseg; b++) {
            memset(&counts[b], 0, sizeof counts[b]);
            counts[b].first_nonfinite = -1;
        }
        return QK_OK;
    }
    if (k > (size_t)1 << 24) return QK_ERR_UNSUPPORTED; /* the per-tensor member says why */
    cu_state *cu = cu_of(be);
    const size_t es = qk_dtype_size(x->dtype);
    const int64_t ncg = ((int64_t)k + 3) / 4;
    seg_batch b = {.nseg = nseg,
                   .seg = seg,
                   .per = {k * sizeof(qk_cu_qparam), 2 * sizeof(double), k * sizeof(qk_cu_seg_sums),
                           sizeof(qk_cu_seg_counts) + qk_cu_seg_error_scratch(seg, 1, (int)k)}};
    /* keep the grid (segments x fixed blocks x parameter groups) below 2^31 blocks */
    const int64_t per_blk = seg <= QK_CU_SEG_WARP_ERROR ? 1 : (seg + QK_CU_ERROR_BLOCK - 1) / QK_CU_ERROR_BLOCK;
    int64_t max_segs = ((int64_t)1 << 30) / (per_blk * ncg);
    if (max_segs < 1) return QK_ERR_UNSUPPORTED;
    int64_t max_elems = QK_CU_MAX_LAUNCH;
    if (max_elems / seg > max_segs) max_elems = max_segs * seg;
    qk_status st = batch_alloc(be, &b, max_elems);
    if (st != QK_OK) return st;
    qk_cu_qparam *staging = malloc((size_t)b.nb * k * sizeof *staging);
    if (!staging) st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory for %zu parameter sets", k);
    /* the counts array's tail holds the block-path scratch */
    qk_cu_seg_counts *dcounts = b.arr[3];
    void *scratch = dcounts + b.nb;
    const char *xp = cu_tensor_ptr(x);
    for (int64_t b0 = 0; b0 < nseg && st == QK_OK; b0 += b.nb) {
        const int64_t cnt = nseg - b0 < b.nb ? nseg - b0 : b.nb;
        st = upload_params(be, staging, b.arr[0], params, b0, cnt, k);
        if (st == QK_OK) st = upload(be, b.arr[1], fences + 2 * b0, (size_t)cnt * 2 * sizeof *fences);
        if (st != QK_OK) break;
        st = cu_launch_status(be, "segmented error kernel launch",
                           qk_cu_seg_error(cu->compute, cu->sms, x->dtype == QK_F64, xp + (size_t)(b0 * seg) * es, seg,
                                           cnt, b.arr[0], (int)k, b.arr[1], scratch, b.arr[2], dcounts));
        if (st == QK_OK) st = fetch(be, sums + (size_t)b0 * k, b.arr[2], (size_t)cnt * k * sizeof *sums);
        if (st == QK_OK) st = fetch(be, counts + b0, dcounts, (size_t)cnt * sizeof *counts);
    }
    st = batch_end(be, &b, st);
    free(staging);
    return st;
}

/* ---- widen -------------------------------------------------------------------------------------------- */

qk_status qk_cu_op_widen(qk_backend *be, const qk_tensor *x, qk_tensor *out)
{
    if (x->host || !x->buffer || out->host || !out->buffer || out->n != x->n || out->dtype != QK_F32 ||
        (x->dtype != QK_F16 && x->dtype != QK_BF16))
        return QK_ERR_UNSUPPORTED;
    cu_state *cu = cu_of(be);
    const uint16_t *xp = (const uint16_t *)cu_tensor_ptr(x);
    float *op = (float *)cu_tensor_ptr(out);
    qk_status st = QK_OK;
    for (int64_t start = 0; start < x->n && st == QK_OK; start += QK_CU_MAX_LAUNCH) {
        const int64_t cnt = x->n - start < QK_CU_MAX_LAUNCH ? x->n - start : QK_CU_MAX_LAUNCH;
        st = cu_launch_status(be, "widen kernel launch",
                           qk_cu_widen(cu->compute, cu->sms, x->dtype, xp + start, op + start, cnt));
    }
    qk_status s2 = cu_sync(be);
    return st != QK_OK ? st : s2;
}
