/* Per-channel and per-group parameters: each block is calibrated, quantized and
 * dequantized exactly as a tensor of its own would be, so every backend gives
 * the same per-block results as for the per-tensor case. The blocks are put in
 * block order (already so for groups and the channels of axis 0), the tensor is
 * staged on the device once when the backend has segmented kernels, and every
 * step runs as one segmented operation over all blocks (host/segments.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Block geometry: block b holds `runs` runs of `run` contiguous elements, the
 * r-th starting at element r * stride + b * run. */
typedef struct geometry {
    int64_t count, run, runs, stride;
} geometry;

static qk_status layout_geometry(qk_context *ctx, const qk_layout *l, int64_t n, geometry *g)
{
    if (!l) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "layout is NULL");
    if (l->ndim < 0 || l->ndim > QK_MAX_DIMS) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "layout: ndim %d outside 0..%d", l->ndim, QK_MAX_DIMS);
    }
    int64_t prod = 1;
    for (int d = 0; d < l->ndim; d++) {
        if (l->shape[d] < 0 || (l->shape[d] && prod > INT64_MAX / l->shape[d])) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "layout: shape[%d] = %lld is negative or overflows", d,
                                (long long)l->shape[d]);
        }
        prod *= l->shape[d];
    }
    if (n >= 0 && prod != n) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "layout: the shape holds %lld elements, the tensor %lld",
                            (long long)prod, (long long)n);
    }
    memset(g, 0, sizeof *g);
    switch (l->granularity) {
    case QK_PER_TENSOR:
        *g = (geometry){1, prod, 1, prod};
        return QK_OK;
    case QK_PER_CHANNEL: {
        int axis = l->axis < 0 ? l->axis + l->ndim : l->axis;
        if (l->ndim == 0 || axis < 0 || axis >= l->ndim) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "layout: axis %d is not an axis of a %d-D tensor", l->axis,
                                l->ndim);
        }
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < axis; d++) outer *= l->shape[d];
        for (int d = axis + 1; d < l->ndim; d++) inner *= l->shape[d];
        *g = (geometry){l->shape[axis], inner, outer, l->shape[axis] * inner};
        return QK_OK;
    }
    case QK_PER_GROUP: {
        int64_t last = l->ndim ? l->shape[l->ndim - 1] : 1;
        if (l->group_size < 1 || last % l->group_size) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                                "layout: group size %lld must be >= 1 and divide the last dimension (%lld)",
                                (long long)l->group_size, (long long)last);
        }
        /* Groups never straddle rows, so they tile the flat array. */
        *g = (geometry){prod / l->group_size, l->group_size, 1, prod};
        return QK_OK;
    }
    }
    return qk_set_error(ctx, QK_ERR_INVALID_ARG, "layout: unknown granularity %d", (int)l->granularity);
}

qk_status qk_layout_blocks(const qk_layout *layout, int64_t *count)
{
    geometry g;
    if (!count) return QK_ERR_INVALID_ARG;
    qk_status st = layout_geometry(NULL, layout, -1, &g);
    if (st == QK_OK) *count = g.count;
    return st;
}

/* ---- block order ----------------------------------------------------------------
 * Segmented operations want each block contiguous. Groups and the channels of
 * axis 0 already are; the channels of another axis are gathered into a host
 * copy in block order once (and outputs scattered back once). */

/* Copy between t's layout and block order (gather: t -> blk). t is on the host. */
static void reorder(const qk_tensor *t, const geometry *g, void *blk, int gather)
{
    size_t es = qk_dtype_size(t->dtype), bytes = (size_t)g->run * es;
    char *mine = blk;
    for (int64_t b = 0; b < g->count; b++) {
        for (int64_t r = 0; r < g->runs; r++, mine += bytes) {
            char *theirs = (char *)t->host + (size_t)(r * g->stride + b * g->run) * es;
            if (gather) memcpy(mine, theirs, bytes);
            else memcpy(theirs, mine, bytes);
        }
    }
}

/* A tensor in block order: t itself, or a gathered host copy (owned in *copy). */
static qk_status block_order(qk_context *ctx, const qk_tensor *t, const geometry *g, int load, void **copy,
                             qk_tensor *out)
{
    *copy = NULL;
    *out = *t;
    if (g->runs == 1) return QK_OK;
    size_t bytes = (size_t)t->n * qk_dtype_size(t->dtype);
    void *host = NULL;
    if (!(*copy = malloc(bytes)) || (!t->host && load && !(host = malloc(bytes)))) {
        free(*copy);
        *copy = NULL;
        return qk_set_error(ctx, QK_ERR_NO_MEMORY, "no host memory to put %zu bytes in block order", bytes);
    }
    *out = qk_tensor_host(t->dtype, *copy, t->n);
    if (!load) return QK_OK;
    qk_tensor src = *t;
    qk_status st = QK_OK;
    if (host) { /* device data: read it once, then reorder */
        st = qk_buffer_read(ctx, t->buffer, (size_t)t->offset, host, bytes);
        src = qk_tensor_host(t->dtype, host, t->n);
    }
    if (st == QK_OK) reorder(&src, g, *copy, 1);
    free(host);
    return st;
}

/* Write a block-order result back into t's layout. */
static qk_status scatter(qk_context *ctx, const qk_tensor *blk, const geometry *g, qk_tensor *t)
{
    if (t->host) {
        reorder(t, g, blk->host, 0);
        return QK_OK;
    }
    size_t bytes = (size_t)t->n * qk_dtype_size(t->dtype);
    void *host = malloc(bytes);
    if (!host) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "no host memory to scatter %zu bytes", bytes);
    qk_tensor h = qk_tensor_host(t->dtype, host, t->n);
    reorder(&h, g, blk->host, 0);
    qk_status st = qk_buffer_write(ctx, t->buffer, (size_t)t->offset, host, bytes);
    free(host);
    return st;
}

static qk_status block_error(qk_context *ctx, qk_status st, const qk_layout *l, int64_t b)
{
    char detail[QK_MESSAGE_LEN];
    snprintf(detail, sizeof detail, "%s", ctx->message);
    return qk_set_error(ctx, st, "%s %lld: %s", l->granularity == QK_PER_GROUP ? "group" : "channel", (long long)b,
                        detail);
}

qk_status qk_block_calib_result_release(qk_block_calib_result *res)
{
    if (res) {
        free(res->params);
        free(res->chosen);
        memset(res, 0, sizeof *res);
    }
    return QK_OK;
}

/* Quantize (or dequantize) an input already staged for the segmented
 * members into out: through a device buffer when the input is on the device
 * and out is host memory that fits beside it, so the members see device
 * tensors only. */
static qk_status seg_into(qk_context *ctx, const qk_tensor *in, int64_t seg, const qk_qparams *params,
                          qk_tensor *out, int quantize)
{
    uint64_t out_bytes = (uint64_t)out->n * qk_dtype_size(out->dtype);
    qk_tensor dev = *out;
    qk_buffer *buf = NULL;
    qk_status st = QK_OK;
    if (!in->host && out->host && qk_device_room(ctx, out_bytes)) st = qk_device_copy(ctx, out, 0, &dev, &buf);
    if (st == QK_OK) {
        st = quantize ? qk_seg_quantize(ctx, in, seg, params, &dev) : qk_seg_dequantize(ctx, in, seg, params, &dev);
    }
    if (st == QK_OK && buf) st = qk_buffer_read(ctx, buf, 0, out->host, (size_t)out_bytes);
    qk_buffer_destroy(ctx, buf);
    return st;
}

/* Blocks per piece of a device pass: as many as fit the device budget at
 * bytes_per_elem each (so a tensor larger than the device goes in pieces), at
 * least 1, at most max. Without a budget (CPU backend, data already on the
 * device) just max. */
static int64_t device_blocks(qk_context *ctx, const qk_tensor *t, int64_t seg, uint64_t bytes_per_elem, int64_t max)
{
    if (!t->host || !ctx->backend->iface->seg_minmax) return max;
    uint64_t budget = qk_device_budget(ctx), per_block = (uint64_t)seg * bytes_per_elem;
    int64_t fit = budget / per_block > (uint64_t)max ? max : (int64_t)(budget / per_block);
    return fit < 1 ? 1 : fit;
}

/* Device bytes an element of a float input takes once staged: float32 (or
 * float64), plus the raw 2 bytes while float16/bfloat16 are widened. */
static uint64_t staged_bytes(qk_dtype dt)
{
    return dt == QK_F64 ? 8 : dt == QK_F32 ? 4 : 6;
}

/* Calibrate the blocks of a block-ordered tensor in batches: each batch holds
 * near 2^19 candidate rows at most and fits the device, where it is staged.
 * With codes (block-ordered too), each batch is also quantized while staged. */
static qk_status calibrate_batches(qk_context *ctx, const qk_tensor *x, const qk_layout *layout, const geometry *g,
                                   const qk_calib_options *opts, qk_block_calib_result *out, qk_tensor *codes)
{
    double *p = NULL;
    size_t k = 0;
    qk_status st = qk_calib_plan(ctx, opts, &p, &k);
    if (st != QK_OK) return st;
    int64_t seg = g->run * g->runs, nb = (int64_t)(((size_t)1 << 19) / k);
    uint64_t per_elem = staged_bytes(x->dtype) + (codes ? qk_dtype_size(codes->dtype) : 0);
    nb = device_blocks(ctx, x, seg, per_elem, nb < 1 ? 1 : nb > g->count ? g->count : nb);
    qk_candidate *cand = malloc((size_t)nb * k * sizeof *cand);
    qk_seg_calib *res = malloc((size_t)nb * sizeof *res);
    if (!cand || !res) st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "no memory for %lld blocks", (long long)nb);
    double sse = 0.0;
    for (int64_t b0 = 0; st == QK_OK && b0 < g->count; b0 += nb) {
        int64_t m = g->count - b0 < nb ? g->count - b0 : nb, failed = -1;
        qk_tensor v = qk_tensor_range(x, b0 * seg, m * seg);
        uint64_t code_bytes = codes && codes->host ? (uint64_t)v.n * qk_dtype_size(codes->dtype) : 0;
        qk_staged sx;
        st = qk_stage_float_device(ctx, &v, "qk_calibrate_blocks: x", code_bytes, &sx);
        if (st == QK_OK) st = qk_calibrate_segments(ctx, &sx.t, seg, sx.interp, opts, p, k, cand, res, &failed);
        for (int64_t i = 0; st == QK_OK && i < m; i++) {
            out->params[b0 + i] = res[i].params;
            out->chosen[b0 + i] = cand[(size_t)i * k + res[i].best];
            out->n += res[i].n;
            sse += out->chosen[b0 + i].mse * (double)res[i].n;
        }
        if (st == QK_OK && codes) {
            qk_tensor vc = qk_tensor_range(codes, b0 * seg, m * seg);
            st = seg_into(ctx, &sx.t, seg, out->params + b0, &vc, 1);
        }
        qk_staged_release(&sx);
        if (st != QK_OK && failed >= 0) st = block_error(ctx, st, layout, b0 + failed);
    }
    out->mse = st == QK_OK ? sse / (double)out->n : 0.0;
    free(p);
    free(cand);
    free(res);
    return st;
}

static qk_status calibrate_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                                  const qk_calib_options *opts, qk_block_calib_result *out, qk_tensor *codes,
                                  const char *fn)
{
    if (!opts || !out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: opts or out is NULL", fn);
    memset(out, 0, sizeof *out);
    qk_status st = qk_check_tensor(ctx, x, fn);
    geometry g;
    if (st == QK_OK) st = layout_geometry(ctx, layout, x->n, &g);
    if (st != QK_OK) return st;
    if (!qk_dtype_is_float(x->dtype)) {
        return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "%s: x: dtype %s is not a float input (float32, float64, "
                            "float16, bfloat16)", fn, qk_dtype_name(x->dtype));
    }
    if (codes) {
        int32_t qmin, qmax;
        if ((st = qk_check_tensor(ctx, codes, fn)) != QK_OK) return st;
        if (codes->n != x->n) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: codes has %lld elements, x has %lld", fn,
                                (long long)codes->n, (long long)x->n);
        }
        if (qk_code_range(opts->scheme, opts->bits, opts->narrow_range, &qmin, &qmax) == QK_OK &&
            (!qk_dtype_is_code(codes->dtype) || !qk_code_fits(codes->dtype, qmin, qmax))) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: codes dtype %s cannot hold codes %d..%d", fn,
                                qk_dtype_name(codes->dtype), (int)qmin, (int)qmax);
        }
    }
    void *copy, *code_copy = NULL;
    qk_tensor ordered, codes_ord;
    if ((st = block_order(ctx, x, &g, 1, &copy, &ordered)) != QK_OK) return st;
    if (codes) st = block_order(ctx, codes, &g, 0, &code_copy, &codes_ord);
    out->params = calloc((size_t)g.count, sizeof *out->params);
    out->chosen = calloc((size_t)g.count, sizeof *out->chosen);
    if (st == QK_OK && (!out->params || !out->chosen)) {
        st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "no memory for %lld blocks", (long long)g.count);
    }
    if (st == QK_OK) st = calibrate_batches(ctx, &ordered, layout, &g, opts, out, codes ? &codes_ord : NULL);
    if (st == QK_OK && codes && g.runs > 1) st = scatter(ctx, &codes_ord, &g, codes);
    free(copy);
    free(code_copy);
    if (st != QK_OK) {
        qk_block_calib_result_release(out);
        return st;
    }
    out->count = g.count;
    return QK_OK;
}

qk_status qk_calibrate_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                              const qk_calib_options *opts, qk_block_calib_result *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    return calibrate_blocks(ctx, x, layout, opts, out, NULL, "qk_calibrate_blocks");
}

qk_status qk_calibrate_quantize_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                                       const qk_calib_options *opts, qk_block_calib_result *out, qk_tensor *codes)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!codes) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_calibrate_quantize_blocks: codes is NULL");
    return calibrate_blocks(ctx, x, layout, opts, out, codes, "qk_calibrate_quantize_blocks");
}

/* ---- quantize and dequantize per block ---------------------------------------- */

/* Every block's parameters must be valid for the operation (as qk_quantize /
 * qk_dequantize check them), before any work. */
static qk_status check_block_params(qk_context *ctx, const qk_layout *layout, const qk_qparams *params,
                                    int64_t count, qk_dtype codes, int quantize)
{
    for (int64_t b = 0; b < count; b++) {
        const qk_qparams *q = &params[b];
        qk_status st = QK_OK;
        if (quantize) {
            st = qk_check_qparams(ctx, q);
            if (st == QK_OK && !qk_code_fits(codes, q->qmin, q->qmax)) {
                st = qk_set_error(ctx, QK_ERR_INVALID_ARG, "codes dtype %s cannot hold codes %d..%d",
                                  qk_dtype_name(codes), (int)q->qmin, (int)q->qmax);
            }
        } else if (!(q->scale > 0.0f) || !isfinite(q->scale)) {
            st = qk_set_error(ctx, QK_ERR_INVALID_ARG, "scale %g must be finite and > 0", (double)q->scale);
        }
        if (st != QK_OK) return block_error(ctx, st, layout, b);
    }
    return QK_OK;
}

/* Run the segmented op on one piece of block-ordered tensors: staged on the
 * device when the backend has segmented kernels and the piece fits, else
 * segment by segment on the host tensors through the per-tensor members. */
static qk_status run_piece(qk_context *ctx, const qk_tensor *in, int64_t seg, const qk_qparams *params,
                           qk_tensor *out, int quantize, const char *fn)
{
    uint64_t out_bytes = out->host ? (uint64_t)out->n * qk_dtype_size(out->dtype) : 0;
    qk_staged sx;
    memset(&sx, 0, sizeof sx);
    sx.t = *in;
    qk_status st = QK_OK;
    if (quantize) {
        st = qk_stage_float_device(ctx, in, fn, out_bytes, &sx);
    } else if (in->host && ctx->backend->iface->seg_dequantize &&
               qk_device_room(ctx, (uint64_t)in->n * qk_dtype_size(in->dtype) + out_bytes)) {
        st = qk_device_copy(ctx, in, 1, &sx.t, &sx.buf);
    }
    if (st == QK_OK) st = seg_into(ctx, &sx.t, seg, params, out, quantize);
    qk_staged_release(&sx);
    return st;
}

static qk_status run_blocks(qk_context *ctx, const qk_tensor *in, const qk_layout *layout, const qk_qparams *params,
                            int64_t count, qk_tensor *out, int quantize, const char *fn)
{
    qk_status st = qk_check_tensor(ctx, in, fn);
    if (st == QK_OK) st = qk_check_tensor(ctx, out, fn);
    geometry g;
    if (st == QK_OK) st = layout_geometry(ctx, layout, in->n, &g);
    if (st != QK_OK) return st;
    if (!params || count != g.count) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: %lld parameter sets given, the layout has %lld blocks",
                            fn, (long long)count, (long long)g.count);
    }
    if (out->n != in->n) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: output has %lld elements, input %lld", fn,
                            (long long)out->n, (long long)in->n);
    }
    int in_ok = quantize ? qk_dtype_is_float(in->dtype) : qk_dtype_is_code(in->dtype);
    int out_ok = quantize ? qk_dtype_is_code(out->dtype) : out->dtype == QK_F32;
    if (!in_ok || !out_ok) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: %s input and %s output: need %s", fn,
                            qk_dtype_name(in->dtype), qk_dtype_name(out->dtype),
                            quantize ? "a float input and integer codes" : "integer codes and a float32 output");
    }
    if ((st = check_block_params(ctx, layout, params, count, out->dtype, quantize)) != QK_OK) return st;

    void *in_copy, *out_copy = NULL;
    qk_tensor in_ord = *in, out_ord = *out;
    if ((st = block_order(ctx, in, &g, 1, &in_copy, &in_ord)) == QK_OK) {
        st = block_order(ctx, out, &g, 0, &out_copy, &out_ord);
    }
    int64_t seg = g.run * g.runs;
    uint64_t per_elem = (quantize ? staged_bytes(in->dtype) : qk_dtype_size(in->dtype)) + qk_dtype_size(out->dtype);
    int64_t nb = device_blocks(ctx, &in_ord, seg, per_elem, g.count);
    for (int64_t b0 = 0; st == QK_OK && b0 < g.count; b0 += nb) {
        int64_t m = g.count - b0 < nb ? g.count - b0 : nb;
        qk_tensor vi = qk_tensor_range(&in_ord, b0 * seg, m * seg), vo = qk_tensor_range(&out_ord, b0 * seg, m * seg);
        st = run_piece(ctx, &vi, seg, params + b0, &vo, quantize, fn);
    }
    if (st == QK_OK && g.runs > 1) st = scatter(ctx, &out_ord, &g, out);
    free(in_copy);
    free(out_copy);
    return st;
}

qk_status qk_quantize_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout, const qk_qparams *params,
                             int64_t count, qk_tensor *codes)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    return run_blocks(ctx, x, layout, params, count, codes, 1, "qk_quantize_blocks");
}

qk_status qk_dequantize_blocks(qk_context *ctx, const qk_tensor *codes, const qk_layout *layout,
                               const qk_qparams *params, int64_t count, qk_tensor *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    return run_blocks(ctx, codes, layout, params, count, out, 0, "qk_dequantize_blocks");
}

/* ---- packed 4-bit codes ---------------------------------------------------------- */

qk_status qk_pack_int4(qk_context *ctx, const qk_tensor *codes, uint8_t *packed)
{
    qk_status st = qk_check_tensor(ctx, codes, "qk_pack_int4: codes");
    if (st != QK_OK) return st;
    if (!codes->host || !packed || (codes->dtype != QK_U8 && codes->dtype != QK_I8)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_pack_int4: host uint8/int8 codes and an output are needed");
    }
    const uint8_t *u = codes->host;
    int sig = codes->dtype == QK_I8;
    for (int64_t i = 0; i < codes->n; i++) {
        int v = sig ? (int)((const int8_t *)u)[i] : (int)u[i];
        if (sig ? (v < -8 || v > 7) : (v > 15)) {
            return qk_set_error(ctx, QK_ERR_RANGE, "qk_pack_int4: code %d at index %lld does not fit 4 bits", v,
                                (long long)i);
        }
    }
    for (int64_t i = 0; i < codes->n; i += 2) {
        unsigned lo = u[i] & 0xfu, hi = i + 1 < codes->n ? u[i + 1] & 0xfu : 0u;
        packed[i / 2] = (uint8_t)(lo | hi << 4);
    }
    return QK_OK;
}

qk_status qk_unpack_int4(qk_context *ctx, const uint8_t *packed, qk_tensor *codes)
{
    qk_status st = qk_check_tensor(ctx, codes, "qk_unpack_int4: codes");
    if (st != QK_OK) return st;
    if (!codes->host || !packed || (codes->dtype != QK_U8 && codes->dtype != QK_I8)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_unpack_int4: packed bytes and host uint8/int8 codes needed");
    }
    for (int64_t i = 0; i < codes->n; i++) {
        unsigned nib = (packed[i / 2] >> (4 * (i & 1))) & 0xfu;
        if (codes->dtype == QK_I8) ((int8_t *)codes->host)[i] = (int8_t)((int)nib - (nib & 8u ? 16 : 0));
        else ((uint8_t *)codes->host)[i] = (uint8_t)nib;
    }
    return QK_OK;
}
