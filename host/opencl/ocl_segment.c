/* Segmented operations (segment.cl): the seg_* members and widen of the
 * backend interface. Each runs one launch per batch of segments, where the
 * per-segment fallback would run one (or, for the select, several) per
 * segment: per-group quantization of a model is millions of segments.
 *
 * Every result equals, bit for bit, the per-tensor operation on the segment
 * alone: the kernels repeat the per-tensor kernels' arithmetic per element and
 * their record structure per piece (a piece is part of one segment), and the
 * host folds a segment's records in the order the per-tensor host code folds
 * its own. The select is a sort of each segment's keys in local memory
 * instead of a radix select, which gives the same exact values.
 *
 * Batches bound the device buffers (parameters in, records out) to a slice of
 * the budget. The buffers are kept in the backend between calls: on PoCL a
 * fresh buffer costs its page faults on every call, which for small tensors
 * would cost more than the work. Results are read and parameters written by
 * mapping (zero copy on CPU devices). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../cpu/cpu_keys.h"
#include "ocl.h"

#define SEG_BATCH_MAX ((uint64_t)64 << 20) /* device bytes of one batch's buffers */
#define SEG_PIECE_CPU 65536                /* minmax piece: one record per 256 KiB of float32 */
#define SEG_PIECE_GPU 4096                 /* smaller on GPUs: more work-items for big segments */
#define SEG_GPU_GROUPS_MAX 65536           /* GPU style: more work is strided over these */
#define SEG_SORT_MIN_KEYS 512              /* GPU-style sort: keys per work-group at least 2 x 256 */
#define SEG_LOCAL_RESERVE 1024             /* local memory left to the implementation */

/* ---- batch buffers and plumbing ---------------------------------------------------- */

/* Device bytes one batch may use: a slice of the budget, capped. */
static uint64_t seg_batch_cap(const ocl_backend *be)
{
    uint64_t cap = be->budget / 2;
    return cap < SEG_BATCH_MAX ? cap : SEG_BATCH_MAX;
}

/* Segments per batch when each needs per_seg bytes of batch buffers;
 * QK_ERR_UNSUPPORTED (no message) when not even one fits. */
static qk_status seg_plan(const ocl_backend *be, int64_t nseg, uint64_t per_seg, int64_t *per)
{
    uint64_t cap = seg_batch_cap(be);
    if (per_seg == 0) per_seg = 1;
    if (per_seg > cap) return QK_ERR_UNSUPPORTED;
    uint64_t n = cap / per_seg;
    *per = n < (uint64_t)nseg ? (int64_t)n : nseg;
    return QK_OK;
}

/* Batch buffer `slot` of at least bytes: the one kept from an earlier call when
 * it is big enough. */
static qk_status seg_buffer(ocl_backend *be, int slot, size_t bytes, cl_mem *out)
{
    if (!be->seg_mem[slot] || be->seg_bytes[slot] < bytes) {
        ocl_release_mem(&be->seg_mem[slot]);
        be->seg_bytes[slot] = 0;
        qk_status st = ocl_alloc(be, bytes, CL_MEM_READ_WRITE, &be->seg_mem[slot]);
        if (st != QK_OK) return st;
        be->seg_bytes[slot] = bytes ? bytes : 16;
    }
    *out = be->seg_mem[slot];
    return QK_OK;
}

void ocl_seg_release(ocl_backend *be)
{
    for (int i = 0; i < OCL_SEG_SLOTS; i++) {
        ocl_release_mem(&be->seg_mem[i]);
        be->seg_bytes[i] = 0;
    }
}

/* Keep the buffers for the next call only while they are a small share of the
 * budget: a one-off huge call should not pin its buffers. */
static void seg_trim(ocl_backend *be)
{
    uint64_t kept = 0;
    for (int i = 0; i < OCL_SEG_SLOTS; i++) kept += be->seg_bytes[i];
    if (kept > seg_batch_cap(be)) ocl_seg_release(be);
}

static qk_status seg_map(ocl_backend *be, cl_mem mem, size_t bytes, cl_map_flags flags, void **p)
{
    cl_int err;
    *p = clEnqueueMapBuffer(be->queue, mem, CL_TRUE, flags, 0, bytes ? bytes : 1, 0, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        *p = NULL;
        return ocl_fail(be, err, "clEnqueueMapBuffer(segment batch, %zu bytes)", bytes);
    }
    return QK_OK;
}

static qk_status seg_unmap(ocl_backend *be, cl_mem mem, void *p)
{
    if (!p) return QK_OK;
    cl_int err = clEnqueueUnmapMemObject(be->queue, mem, p, 0, NULL, NULL);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueUnmapMemObject(segment batch)");
    return QK_OK;
}

/* Work-groups for a launch over `items` pieces (one work-item each): CPU, a
 * few contiguous ranges per core (balance against the machine's other load);
 * GPU, one work-item per piece up to a cap, then strided. */
static size_t seg_groups(const ocl_backend *be, uint64_t items)
{
    uint64_t cu = be->compute_units ? be->compute_units : 1;
    uint64_t g = be->gpu_style ? (items + be->wg - 1) / be->wg : cu * 8;
    if (be->gpu_style && g > SEG_GPU_GROUPS_MAX) g = SEG_GPU_GROUPS_MAX;
    if (!be->gpu_style && g > items) g = items;
    return g ? (size_t)g : 1;
}

/* Work-groups for an elementwise launch over n elements (rows of 8 on GPUs). */
static size_t seg_elem_groups(const ocl_backend *be, uint64_t n)
{
    if (!be->gpu_style) return ocl_parts(be, n);
    uint64_t g = (n + 8 * be->wg - 1) / (8 * be->wg);
    if (g > SEG_GPU_GROUPS_MAX) g = SEG_GPU_GROUPS_MAX;
    return g ? (size_t)g : 1;
}

/* ---- min/max ------------------------------------------------------------------------ */

/* Fold one segment's piece records as ocl_minmax folds its work-group records. */
static void minmax_fold(const uint64_t *rec, uint64_t seg, uint64_t plen, uint64_t ppseg, int wide,
                        qk_minmax_result *out)
{
    uint64_t kmin = UINT64_MAX, kmax = 0, bad = 0, first = QK_OCL_NONE;
    for (uint64_t j = 0; j < ppseg; j++) {
        const uint64_t *r = rec + 4 * j;
        uint64_t len = seg - j * plen < plen ? seg - j * plen : plen;
        if (len > r[2]) { /* the piece has finite elements */
            if (r[0] < kmin) kmin = r[0];
            if (r[1] > kmax) kmax = r[1];
        }
        if (r[2] && first == QK_OCL_NONE) first = j * plen + r[3];
        bad += r[2];
    }
    memset(out, 0, sizeof *out);
    out->n_finite = (int64_t)(seg - bad);
    out->nonfinite_count = (int64_t)bad;
    out->first_nonfinite = bad ? (int64_t)first : -1;
    if (out->n_finite) {
        out->min = qk_key_value(kmin, wide);
        out->max = qk_key_value(kmax, wide);
        out->absmax = fmax(fabs(out->min), fabs(out->max));
    }
}

qk_status ocl_seg_minmax(qk_backend *base, const qk_tensor *x, int64_t seg, qk_minmax_result *out)
{
    ocl_backend *be = ocl_of(base);
    int wide = x->dtype == QK_F64;
    size_t es = wide ? 8 : 4;
    int64_t nseg = x->n / seg, per = 0;
    uint64_t plen = be->gpu_style ? SEG_PIECE_GPU : SEG_PIECE_CPU;
    uint64_t ppseg = ((uint64_t)seg + plen - 1) / plen, rec_bytes = 4 * sizeof(uint64_t);
    qk_status st = seg_plan(be, nseg, ppseg * rec_bytes, &per);
    if (st != QK_OK) return st;
    cl_mem src = ocl_tensor_mem(x), rec = NULL;
    st = seg_buffer(be, 0, (size_t)(per * ppseg * rec_bytes), &rec);
    for (int64_t b0 = 0; st == QK_OK && b0 < nseg; b0 += per) {
        int64_t nb = nseg - b0 < per ? nseg - b0 : per;
        cl_ulong off = (cl_ulong)x->offset / es + (cl_ulong)(b0 * seg), sg = (cl_ulong)seg, pl = plen, pp = ppseg;
        cl_ulong np = (cl_ulong)nb * ppseg;
        ocl_arg args[] = {OCL_ARG(src), OCL_ARG(off), OCL_ARG(sg), OCL_ARG(pl), OCL_ARG(pp), OCL_ARG(np), OCL_ARG(rec)};
        st = ocl_launch(be, wide ? OCL_K_SEG_MINMAX64 : OCL_K_SEG_MINMAX32, args, 7, seg_groups(be, np),
                        ocl_local_size(be), 0, NULL, NULL);
        uint64_t *r = NULL;
        if (st == QK_OK) st = seg_map(be, rec, (size_t)(np * rec_bytes), CL_MAP_READ, (void **)&r);
        for (int64_t g = 0; st == QK_OK && g < nb; g++) {
            minmax_fold(r + (uint64_t)g * ppseg * 4, (uint64_t)seg, plen, ppseg, wide, &out[b0 + g]);
        }
        qk_status su = seg_unmap(be, rec, r);
        if (st == QK_OK) st = su;
    }
    seg_trim(be);
    return st;
}

/* ---- order statistics ---------------------------------------------------------------- */

/* ceil(log2(n)) for n >= 1 */
static unsigned seg_log2_ceil(uint64_t n)
{
    unsigned l = 0;
    while (((uint64_t)1 << l) < n) l++;
    return l;
}

/* Keys one work-group of the select sorts: the segment padded to a power of
 * two, at least one vector of 8 (CPU style) or 2 x 256 (GPU style: one
 * comparator per work-item and step). */
static uint64_t sort_min_keys(const ocl_backend *be)
{
    return be->gpu_style ? SEG_SORT_MIN_KEYS : 8;
}

static uint64_t select_local_keys(const ocl_backend *be, uint64_t seg)
{
    uint64_t p = (uint64_t)1 << seg_log2_ceil(seg);
    return p < sort_min_keys(be) ? sort_min_keys(be) : p;
}

int64_t ocl_seg_select_cap(const ocl_backend *be, size_t ks)
{
    if (be->local_mem <= SEG_LOCAL_RESERVE) return 0;
    uint64_t avail = be->local_mem - SEG_LOCAL_RESERVE, p = sort_min_keys(be);
    if (p * ks > avail) return 0;
    while (2 * p * ks <= avail) p *= 2;
    return (int64_t)p;
}

qk_status ocl_seg_select(qk_backend *base, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                         size_t nranks, double *values)
{
    ocl_backend *be = ocl_of(base);
    if (nranks == 0) return QK_OK;
    int wide = x->dtype == QK_F64;
    size_t ks = wide ? 8 : 4;
    if (seg > ocl_seg_select_cap(be, ks) || nranks > UINT32_MAX) return QK_ERR_UNSUPPORTED;
    int64_t nseg = x->n / seg, per = 0;
    qk_status st = seg_plan(be, nseg, nranks * (sizeof(cl_uint) + ks), &per);
    if (st != QK_OK) return st;
    cl_uint mode = ((flags & QK_IGNORE_NONFINITE) ? QK_OCL_MODE_SKIP_NONFINITE : 0) |
                   ((flags & QK_ABS) ? QK_OCL_MODE_ABS : 0);
    cl_uint logp = seg_log2_ceil((uint64_t)seg), nr = (cl_uint)nranks;
    uint64_t lkeys = select_local_keys(be, (uint64_t)seg);
    cl_uint spw = (cl_uint)(lkeys >> logp); /* segments per work-group (GPU style) */
    size_t lbytes = (size_t)(lkeys * ks);
    cl_mem src = ocl_tensor_mem(x), d_ranks = NULL, d_out = NULL;
    st = seg_buffer(be, 0, (size_t)per * nranks * sizeof(cl_uint), &d_ranks);
    if (st == QK_OK) st = seg_buffer(be, 1, (size_t)per * nranks * ks, &d_out);
    for (int64_t b0 = 0; st == QK_OK && b0 < nseg; b0 += per) {
        int64_t nb = nseg - b0 < per ? nseg - b0 : per;
        size_t count = (size_t)nb * nranks;
        cl_uint *rk = NULL;
        st = seg_map(be, d_ranks, count * sizeof *rk, CL_MAP_WRITE_INVALIDATE_REGION, (void **)&rk);
        /* ranks are below the segment length, itself below the cap: 32 bits hold them */
        for (size_t i = 0; st == QK_OK && i < count; i++) rk[i] = (cl_uint)ranks[(size_t)b0 * nranks + i];
        qk_status su = seg_unmap(be, d_ranks, rk);
        if (st == QK_OK) st = su;
        cl_ulong off = (cl_ulong)x->offset / ks + (cl_ulong)(b0 * seg), sg = (cl_ulong)seg, n = (cl_ulong)nb;
        ocl_arg args[] = {OCL_ARG(src),     OCL_ARG(off),   OCL_ARG(sg),   OCL_ARG(n),
                          OCL_ARG(mode),    OCL_ARG(nr),    OCL_ARG(d_ranks), OCL_ARG(d_out),
                          OCL_LOCAL(lbytes), OCL_ARG(logp), OCL_ARG(spw)};
        size_t groups = be->gpu_style ? (size_t)((n + spw - 1) / spw) : seg_groups(be, n);
        if (st == QK_OK) {
            st = ocl_launch(be, wide ? OCL_K_SEG_SELECT64 : OCL_K_SEG_SELECT32, args, 11, groups, ocl_local_size(be),
                            0, NULL, NULL);
        }
        void *picked = NULL;
        if (st == QK_OK) st = seg_map(be, d_out, count * ks, CL_MAP_READ, &picked);
        if (st == QK_OK) {
            double *v = values + (size_t)b0 * nranks;
            if (wide) {
                for (size_t i = 0; i < count; i++) v[i] = qk_key_value(((const uint64_t *)picked)[i], 1);
            } else {
                for (size_t i = 0; i < count; i++) v[i] = qk_key_value(((const uint32_t *)picked)[i], 0);
            }
        }
        su = seg_unmap(be, d_out, picked);
        if (st == QK_OK) st = su;
    }
    seg_trim(be);
    return st;
}

/* ---- quantize and dequantize ------------------------------------------------------------- */

/* Upload the batch's (scale bits, zero point) pairs. */
static qk_status upload_scales(ocl_backend *be, cl_mem mem, const qk_qparams *params, int64_t nb)
{
    cl_int *p = NULL;
    qk_status st = seg_map(be, mem, (size_t)nb * 2 * sizeof *p, CL_MAP_WRITE_INVALIDATE_REGION, (void **)&p);
    for (int64_t b = 0; st == QK_OK && b < nb; b++) {
        memcpy(&p[2 * b], &params[b].scale, sizeof(cl_int));
        p[2 * b + 1] = params[b].zero_point;
    }
    qk_status su = seg_unmap(be, mem, p);
    return st == QK_OK ? su : st;
}

/* One elementwise launch per batch: in (element size ies) -> out (oes), with
 * the batch's parameters; extra args (qmin, qmax) follow when nextra is 2. */
static qk_status seg_elementwise(ocl_backend *be, ocl_kernel_id kernel, const qk_tensor *in, const qk_tensor *out,
                                 int64_t seg, const qk_qparams *params, const cl_int *extra, unsigned nextra)
{
    int64_t nseg = in->n / seg, per = 0;
    qk_status st = seg_plan(be, nseg, 2 * sizeof(cl_int), &per);
    if (st != QK_OK) return st;
    size_t ies = qk_dtype_size(in->dtype), oes = qk_dtype_size(out->dtype);
    cl_mem src = ocl_tensor_mem(in), dst = ocl_tensor_mem(out), prm = NULL;
    st = seg_buffer(be, 0, (size_t)per * 2 * sizeof(cl_int), &prm);
    for (int64_t b0 = 0; st == QK_OK && b0 < nseg; b0 += per) {
        int64_t nb = nseg - b0 < per ? nseg - b0 : per;
        st = upload_scales(be, prm, params + b0, nb);
        cl_ulong ioff = (cl_ulong)in->offset / ies + (cl_ulong)(b0 * seg), n = (cl_ulong)(nb * seg);
        cl_ulong ooff = (cl_ulong)out->offset / oes + (cl_ulong)(b0 * seg), sg = (cl_ulong)seg;
        ocl_arg args[9] = {OCL_ARG(src), OCL_ARG(ioff), OCL_ARG(n), OCL_ARG(dst), OCL_ARG(ooff), OCL_ARG(sg),
                           OCL_ARG(prm)};
        for (unsigned i = 0; i < nextra; i++) args[7 + i] = OCL_ARG(extra[i]);
        if (st == QK_OK) {
            st = ocl_launch(be, kernel, args, 7 + nextra, seg_elem_groups(be, n), ocl_local_size(be), 0, NULL, NULL);
        }
    }
    if (st == QK_OK) st = ocl_finish(be);
    seg_trim(be);
    return st;
}

qk_status ocl_seg_quantize(qk_backend *base, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                           qk_tensor *codes)
{
    ocl_backend *be = ocl_of(base);
    if (x->dtype == QK_F64 && !be->fp64) return QK_ERR_UNSUPPORTED;
    ocl_kernel_id k = (ocl_kernel_id)((x->dtype == QK_F64 ? OCL_K_SEG_QUANT_F64_U8 : OCL_K_SEG_QUANT_F32_U8) +
                                      ocl_code_index(codes->dtype));
    cl_int range[2] = {params[0].qmin, params[0].qmax};
    return seg_elementwise(be, k, x, codes, seg, params, range, 2);
}

qk_status ocl_seg_dequantize(qk_backend *base, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                             qk_tensor *out)
{
    ocl_backend *be = ocl_of(base);
    ocl_kernel_id k = (ocl_kernel_id)(OCL_K_SEG_DEQUANT_U8 + ocl_code_index(codes->dtype));
    return seg_elementwise(be, k, codes, out, seg, params, NULL, 0);
}

/* ---- widen ------------------------------------------------------------------------------ */

qk_status ocl_widen(qk_backend *base, const qk_tensor *x, qk_tensor *out)
{
    ocl_backend *be = ocl_of(base);
    cl_mem src = ocl_tensor_mem(x), dst = ocl_tensor_mem(out);
    cl_ulong xoff = (cl_ulong)x->offset / 2, n = (cl_ulong)x->n, ooff = (cl_ulong)out->offset / 4;
    cl_int bf16 = x->dtype == QK_BF16;
    ocl_arg args[] = {OCL_ARG(src), OCL_ARG(xoff), OCL_ARG(n), OCL_ARG(dst), OCL_ARG(ooff), OCL_ARG(bf16)};
    qk_status st = ocl_launch(be, OCL_K_WIDEN, args, 6, seg_elem_groups(be, n), ocl_local_size(be), 0, NULL, NULL);
    return st == QK_OK ? ocl_finish(be) : st;
}

/* ---- the fused error pass ---------------------------------------------------------------- */

typedef struct seg_err_bufs {
    cl_mem prm, prmd, fen_f, fen_d, sse, in, clip, cnt;
} seg_err_bufs;

/* Per-segment-and-candidate parameters and per-segment fences of a batch, laid
 * out as error.cl reads them (prm: 8 floats, prmd: 4 doubles a candidate). */
static qk_status upload_error_params(ocl_backend *be, const seg_err_bufs *d, const qk_qparams *params, size_t k,
                                     const double *fences, int64_t nb, int wide)
{
    size_t nk = (size_t)nb * k;
    cl_float *prm = NULL, *ff = NULL;
    cl_double *prmd = NULL, *fd = NULL;
    qk_status st = seg_map(be, d->prm, nk * 8 * sizeof *prm, CL_MAP_WRITE_INVALIDATE_REGION, (void **)&prm);
    if (st == QK_OK && wide) {
        st = seg_map(be, d->prmd, nk * 4 * sizeof *prmd, CL_MAP_WRITE_INVALIDATE_REGION, (void **)&prmd);
    }
    if (st == QK_OK) st = seg_map(be, d->fen_f, (size_t)nb * 2 * sizeof *ff, CL_MAP_WRITE_INVALIDATE_REGION, (void **)&ff);
    if (st == QK_OK && wide) {
        st = seg_map(be, d->fen_d, (size_t)nb * 2 * sizeof *fd, CL_MAP_WRITE_INVALIDATE_REGION, (void **)&fd);
    }
    for (size_t c = 0; st == QK_OK && c < nk; c++) {
        ocl_pack_error_params(&params[c], prm + 8 * c, wide ? prmd + 4 * c : NULL);
    }
    for (int64_t g = 0; st == QK_OK && g < nb; g++) {
        ff[2 * g] = ocl_float_ceil(fences[2 * g]);
        ff[2 * g + 1] = ocl_float_floor(fences[2 * g + 1]);
        if (wide) {
            fd[2 * g] = fences[2 * g];
            fd[2 * g + 1] = fences[2 * g + 1];
        }
    }
    qk_status su[4] = {seg_unmap(be, d->prm, prm), seg_unmap(be, d->prmd, prmd), seg_unmap(be, d->fen_f, ff),
                       seg_unmap(be, d->fen_d, fd)};
    for (int i = 0; i < 4 && st == QK_OK; i++) st = su[i];
    return st;
}

/* Fold segment g's super-block records as ocl_error folds a tensor's. */
static void error_fold(const double *sse, const double *in, const uint32_t *clip, const uint64_t *cnt, size_t k,
                       uint64_t ppseg, qk_error_sums *sums, qk_error_counts *counts)
{
    for (size_t c = 0; c < k; c++) {
        double s = 0.0, si = 0.0;
        int64_t clipped = 0;
        for (uint64_t j = 0; j < ppseg; j++) {
            s += sse[j * k + c];
            si += in[j * k + c];
            clipped += clip[j * k + c];
        }
        sums[c].sse = s;
        sums[c].sse_inliers = si;
        sums[c].clipped = clipped;
    }
    memset(counts, 0, sizeof *counts);
    counts->first_nonfinite = -1;
    for (uint64_t j = 0; j < ppseg; j++) {
        const uint64_t *r = cnt + 4 * j;
        counts->n_finite += (int64_t)r[0];
        counts->n_inliers += (int64_t)r[1];
        counts->nonfinite_count += (int64_t)r[2];
        if (r[2] && counts->first_nonfinite < 0) counts->first_nonfinite = (int64_t)(j * QK_OCL_SB + r[3]);
    }
}

/* Launch one batch of nb segments and fold its records. */
static qk_status error_batch(ocl_backend *be, const qk_tensor *x, int64_t seg, int64_t b0, int64_t nb, size_t k,
                             uint64_t ppseg, const seg_err_bufs *d, qk_error_sums *sums, qk_error_counts *counts)
{
    int wide = x->dtype == QK_F64;
    size_t es = wide ? 8 : 4;
    cl_mem src = ocl_tensor_mem(x);
    cl_ulong off = (cl_ulong)x->offset / es + (cl_ulong)(b0 * seg), sg = (cl_ulong)seg, pp = ppseg;
    cl_ulong np = (cl_ulong)nb * ppseg;
    cl_uint kk = (cl_uint)k;
    ocl_arg args[] = {OCL_ARG(src),    OCL_ARG(off),    OCL_ARG(sg),   OCL_ARG(pp),     OCL_ARG(np),
                      OCL_ARG(d->prm), OCL_ARG(d->prmd), OCL_ARG(kk),  OCL_ARG(d->fen_f), OCL_ARG(d->fen_d),
                      OCL_ARG(d->sse), OCL_ARG(d->in),  OCL_ARG(d->clip), OCL_ARG(d->cnt)};
    qk_status st = ocl_launch(be, wide ? OCL_K_SEG_ERROR_F64 : OCL_K_SEG_ERROR_F32, args, 14, seg_groups(be, np),
                              ocl_local_size(be), 0, NULL, NULL);
    double *hs = NULL, *hi = NULL;
    uint32_t *hc = NULL;
    uint64_t *hn = NULL;
    size_t npk = (size_t)np * k;
    if (st == QK_OK) st = seg_map(be, d->sse, npk * sizeof *hs, CL_MAP_READ, (void **)&hs);
    if (st == QK_OK) st = seg_map(be, d->in, npk * sizeof *hi, CL_MAP_READ, (void **)&hi);
    if (st == QK_OK) st = seg_map(be, d->clip, npk * sizeof *hc, CL_MAP_READ, (void **)&hc);
    if (st == QK_OK) st = seg_map(be, d->cnt, (size_t)np * 4 * sizeof *hn, CL_MAP_READ, (void **)&hn);
    for (int64_t g = 0; st == QK_OK && g < nb; g++) {
        size_t at = (size_t)g * ppseg;
        error_fold(hs + at * k, hi + at * k, hc + at * k, hn + at * 4, k, ppseg, sums + (size_t)(b0 + g) * k,
                   counts + b0 + g);
    }
    qk_status su[4] = {seg_unmap(be, d->sse, hs), seg_unmap(be, d->in, hi), seg_unmap(be, d->clip, hc),
                       seg_unmap(be, d->cnt, hn)};
    for (int i = 0; i < 4 && st == QK_OK; i++) st = su[i];
    return st;
}

qk_status ocl_seg_error(qk_backend *base, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                        const double *fences, qk_error_sums *sums, qk_error_counts *counts)
{
    ocl_backend *be = ocl_of(base);
    if (!be->fp64 || k > UINT32_MAX) return QK_ERR_UNSUPPORTED;
    int wide = x->dtype == QK_F64;
    int64_t nseg = x->n / seg, per = 0;
    uint64_t ppseg = ((uint64_t)seg + QK_OCL_SB - 1) / QK_OCL_SB;
    /* per segment: candidates' parameters, fences, and per super-block the sums and counts */
    uint64_t in_bytes = k * 8 * sizeof(cl_float) + (wide ? k * 4 * sizeof(cl_double) : 0) + 2 * sizeof(cl_float) +
                        (wide ? 2 * sizeof(cl_double) : 0);
    uint64_t out_bytes = ppseg * (k * (2 * sizeof(double) + sizeof(uint32_t)) + 4 * sizeof(uint64_t));
    qk_status st = seg_plan(be, nseg, in_bytes + out_bytes, &per);
    if (st != QK_OK) return st;
    size_t pk = (size_t)per * k, pp = (size_t)(per * (int64_t)ppseg);
    seg_err_bufs d;
    memset(&d, 0, sizeof d);
    st = seg_buffer(be, 0, pk * 8 * sizeof(cl_float), &d.prm);
    if (st == QK_OK) st = seg_buffer(be, 1, (size_t)per * 2 * sizeof(cl_float), &d.fen_f);
    if (st == QK_OK && wide) st = seg_buffer(be, 2, pk * 4 * sizeof(cl_double), &d.prmd);
    if (st == QK_OK && wide) st = seg_buffer(be, 3, (size_t)per * 2 * sizeof(cl_double), &d.fen_d);
    if (!wide) { /* the float32 kernel never reads them; any buffer will do */
        d.prmd = d.prm;
        d.fen_d = d.fen_f;
    }
    if (st == QK_OK) st = seg_buffer(be, 4, pp * k * sizeof(double), &d.sse);
    if (st == QK_OK) st = seg_buffer(be, 5, pp * k * sizeof(double), &d.in);
    if (st == QK_OK) st = seg_buffer(be, 6, pp * k * sizeof(uint32_t), &d.clip);
    if (st == QK_OK) st = seg_buffer(be, 7, pp * 4 * sizeof(uint64_t), &d.cnt);
    for (int64_t b0 = 0; st == QK_OK && b0 < nseg; b0 += per) {
        int64_t nb = nseg - b0 < per ? nseg - b0 : per;
        st = upload_error_params(be, &d, params + (size_t)b0 * k, k, fences + 2 * b0, nb, wide);
        if (st == QK_OK) st = error_batch(be, x, seg, b0, nb, k, ppseg, &d, sums, counts);
    }
    seg_trim(be);
    return st;
}
