/* Segmented operations: one call for the x->n / seg contiguous segments of a
 * tensor. A backend that has the segmented member (host/backend.h) does all
 * segments in one launch; otherwise, or when it declines the call, each
 * segment runs through the per-tensor member as a view of its own. Either way
 * segment b's result is what the per-tensor member gives for it, so per-block
 * quantization is exactly per-tensor quantization of each block. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

qk_tensor qk_tensor_range(const qk_tensor *t, int64_t first, int64_t n)
{
    qk_tensor v = *t;
    int64_t es = (int64_t)qk_dtype_size(t->dtype);
    v.n = n;
    if (v.host) v.host = (char *)v.host + first * es;
    else v.offset += first * es;
    return v;
}

static qk_tensor seg_view(const qk_tensor *t, int64_t seg, int64_t b)
{
    return qk_tensor_range(t, b * seg, seg);
}

/* Whether to offer a call to the segmented member: more than one segment, and
 * every tensor involved on the device (the members never see host memory). */
static int offer(const void *member, int64_t count, const qk_tensor *a, const qk_tensor *b)
{
    return member && count > 1 && !a->host && (!b || !b->host);
}

qk_status qk_seg_minmax(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_minmax_result *out)
{
    qk_backend *be = ctx->backend;
    int64_t count = x->n / seg;
    if (offer((const void *)be->iface->seg_minmax, count, x, NULL)) {
        qk_status st = be->iface->seg_minmax(be, x, seg, out);
        if (st != QK_ERR_UNSUPPORTED) return st;
    }
    for (int64_t b = 0; b < count; b++) {
        qk_tensor v = seg_view(x, seg, b);
        qk_status st = be->iface->minmax(be, &v, &out[b]);
        if (st != QK_OK) return st;
    }
    return QK_OK;
}

/* The per-tensor select takes strictly ascending ranks: drop the repeats of
 * one segment's list, select, and spread the values back. */
static qk_status select_one(qk_context *ctx, const qk_tensor *v, unsigned flags, const int64_t *ranks, size_t nr,
                            int64_t *uniq, double *uvals, double *values)
{
    size_t nu = 0;
    for (size_t j = 0; j < nr; j++) {
        if (nu == 0 || uniq[nu - 1] != ranks[j]) uniq[nu++] = ranks[j];
    }
    qk_status st = ctx->backend->iface->select(ctx->backend, v, flags, uniq, nu, uvals);
    for (size_t j = 0, u = 0; st == QK_OK && j < nr; j++) {
        while (uniq[u] != ranks[j]) u++;
        values[j] = uvals[u];
    }
    return st;
}

qk_status qk_seg_select(qk_context *ctx, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                        size_t nranks, double *values)
{
    qk_backend *be = ctx->backend;
    int64_t count = x->n / seg;
    if (offer((const void *)be->iface->seg_select, count, x, NULL)) {
        qk_status st = be->iface->seg_select(be, x, seg, flags, ranks, nranks, values);
        if (st != QK_ERR_UNSUPPORTED) return st;
    }
    int64_t *uniq = malloc(nranks * sizeof *uniq);
    double *uvals = malloc(nranks * sizeof *uvals);
    qk_status st = QK_OK;
    if (!uniq || !uvals) st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "select: out of host memory for %zu ranks", nranks);
    for (int64_t b = 0; st == QK_OK && b < count; b++) {
        qk_tensor v = seg_view(x, seg, b);
        size_t o = (size_t)b * nranks;
        st = select_one(ctx, &v, flags, ranks + o, nranks, uniq, uvals, values + o);
    }
    free(uniq);
    free(uvals);
    return st;
}

/* quantize and dequantize: the same shape of call, in -> out with one
 * parameter set per segment. */
typedef qk_status (*seg_member)(qk_backend *, const qk_tensor *, int64_t, const qk_qparams *, qk_tensor *);
typedef qk_status (*tensor_member)(qk_backend *, const qk_tensor *, const qk_qparams *, qk_tensor *);

static qk_status seg_elementwise(qk_context *ctx, const qk_tensor *in, int64_t seg, const qk_qparams *params,
                                 qk_tensor *out, seg_member fused, tensor_member each)
{
    qk_backend *be = ctx->backend;
    int64_t count = in->n / seg;
    if (offer((const void *)fused, count, in, out)) {
        qk_status st = fused(be, in, seg, params, out);
        if (st != QK_ERR_UNSUPPORTED) return st;
    }
    for (int64_t b = 0; b < count; b++) {
        qk_tensor vi = seg_view(in, seg, b), vo = seg_view(out, seg, b);
        qk_status st = each(be, &vi, &params[b], &vo);
        if (st != QK_OK) return st;
    }
    return QK_OK;
}

qk_status qk_seg_quantize(qk_context *ctx, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                          qk_tensor *codes)
{
    const qk_backend_iface *f = ctx->backend->iface;
    return seg_elementwise(ctx, x, seg, params, codes, f->seg_quantize, f->quantize);
}

qk_status qk_seg_dequantize(qk_context *ctx, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                            qk_tensor *out)
{
    const qk_backend_iface *f = ctx->backend->iface;
    return seg_elementwise(ctx, codes, seg, params, out, f->seg_dequantize, f->dequantize);
}

qk_status qk_seg_error(qk_context *ctx, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                       const double *fences, qk_error_sums *sums, qk_error_counts *counts)
{
    qk_backend *be = ctx->backend;
    int64_t count = x->n / seg;
    if (offer((const void *)be->iface->seg_error, count, x, NULL)) {
        qk_status st = be->iface->seg_error(be, x, seg, params, k, fences, sums, counts);
        if (st != QK_ERR_UNSUPPORTED) return st;
    }
    for (int64_t b = 0; b < count; b++) {
        qk_tensor v = seg_view(x, seg, b);
        size_t o = (size_t)b * k;
        qk_status st = be->iface->error(be, &v, params + o, k, fences[2 * b], fences[2 * b + 1], sums + o,
                                        counts + b);
        if (st != QK_OK) return st;
    }
    return QK_OK;
}

/* ---- percentiles of every segment ------------------------------------------------ */

/* numpy's linear method for p (percent) over n sorted keys: the ranks of the
 * two neighbours and the weight of the upper one. At or past the last index
 * both neighbours are the last key and gamma = v + 1 (numpy's index -1 leaks
 * into gamma; with d = 0 it only matters for the sign of a zero result, which
 * is matched too). */
static void plan_for(int64_t n, double p, int64_t *lo, int64_t *hi, double *gamma)
{
    double v = (double)(n - 1) * (p / 100.0);
    if (v >= (double)(n - 1)) {
        *lo = *hi = n - 1;
        *gamma = v + 1.0;
    } else {
        double f = floor(v);
        *lo = (int64_t)f;
        *hi = *lo + 1;
        *gamma = v - f;
    }
}

/* numpy's _lerp: d = b - a in the input's dtype, then in double a + d*g below
 * g = 0.5, b - d*(1-g) from 0.5 on. */
static double lerp(double a, double b, double g, qk_dtype dtype)
{
    double d;
    if (dtype == QK_F64) {
        d = b - a;
    } else if (dtype == QK_F16) { /* numpy: half - half, the exact float difference rounded to half */
        d = (double)qk_half_to_float(qk_float_to_half((float)b - (float)a));
    } else { /* float32; bfloat16 has no numpy reference and is subtracted in float32 */
        d = (double)((float)b - (float)a);
    }
    return g >= 0.5 ? b - d * (1.0 - g) : a + d * g;
}

typedef struct p_index {
    double p;
    size_t i;
} p_index;

static int cmp_p(const void *x, const void *y)
{
    const p_index *a = x, *b = y;
    return (a->p > b->p) - (a->p < b->p);
}

/* order[] = the indices of p in ascending p. */
static int sort_order(const double *p, size_t np, size_t *order)
{
    p_index *t = malloc(np * sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < np; i++) t[i] = (p_index){p[i], i};
    qsort(t, np, sizeof *t, cmp_p);
    for (size_t i = 0; i < np; i++) order[i] = t[i].i;
    free(t);
    return 0;
}

/* One segment of nk keys: its neighbour ranks for the p[order[i]] (order
 * sorts p ascending) merged into r[0..2np), sorted. In ascending p the lower
 * neighbours' ranks never decrease, nor do the upper ones', so a merge of the
 * two runs sorts them in linear time; pos[i] and pos[np + i] are where the
 * lower and upper neighbour of p[order[i]] landed. */
static void merge_ranks(int64_t nk, const double *p, const size_t *order, size_t np, int64_t *lo, int64_t *hi,
                        double *gamma, size_t *pos, int64_t *r)
{
    for (size_t i = 0; i < np; i++) plan_for(nk, p[order[i]], &lo[i], &hi[i], &gamma[i]);
    size_t a = 0, c = 0, w = 0;
    while (a < np || c < np) {
        if (c == np || (a < np && lo[a] <= hi[c])) {
            pos[a] = w;
            r[w++] = lo[a++];
        } else {
            pos[np + c] = w;
            r[w++] = hi[c++];
        }
    }
}

qk_status qk_seg_percentiles(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_dtype interp, unsigned flags,
                             const int64_t *nkeys, const double *p, size_t np, double *out)
{
    if (np == 0) return QK_OK;
    int64_t count = x->n / seg;
    for (int64_t b = 0; b < count; b++) {
        if (nkeys[b] <= 0) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "percentile of an empty set (no finite elements)");
        }
    }
    size_t nr = 2 * np, *order = malloc(np * sizeof *order), *pos = malloc(nr * sizeof *pos);
    int64_t *lo = malloc(nr * sizeof *lo), *hi = lo ? lo + np : NULL;
    double *gamma = malloc(np * sizeof *gamma);
    int64_t *ranks = malloc((size_t)count * nr * sizeof *ranks);
    double *values = malloc((size_t)count * nr * sizeof *values);
    qk_status st = QK_OK;
    if (!order || !pos || !lo || !gamma || !ranks || !values || sort_order(p, np, order) != 0) {
        st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "percentiles: out of host memory for %lld x %zu targets",
                          (long long)count, np);
        goto done;
    }
    for (int64_t b = 0; b < count; b++) {
        merge_ranks(nkeys[b], p, order, np, lo, hi, gamma, pos, ranks + (size_t)b * nr);
    }
    st = qk_seg_select(ctx, x, seg, flags, ranks, nr, values);
    for (int64_t b = 0; st == QK_OK && b < count; b++) {
        const double *v = values + (size_t)b * nr;
        merge_ranks(nkeys[b], p, order, np, lo, hi, gamma, pos, ranks + (size_t)b * nr);
        for (size_t i = 0; i < np; i++) {
            out[(size_t)b * np + order[i]] = lerp(v[pos[i]], v[pos[np + i]], gamma[i], interp);
        }
    }
done:
    free(order);
    free(pos);
    free(lo);
    free(gamma);
    free(ranks);
    free(values);
    return st;
}
