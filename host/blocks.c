/* Per-channel and per-group parameters, built on the per-tensor operations:
 * each block is calibrated, quantized and dequantized exactly as a tensor of
 * its own would be, so every backend gives the same per-block results as for
 * the per-tensor case. Blocks that are contiguous (groups, channels of axis 0)
 * are plain views; the channels of another axis are gathered into a host copy.
 * Backends may later fuse the block loop into one launch; the results may not
 * change when they do. */
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

/* A view of block b of t when the block is contiguous. */
static qk_tensor block_view(const qk_tensor *t, const geometry *g, int64_t b)
{
    qk_tensor v = *t;
    int64_t es = (int64_t)qk_dtype_size(t->dtype), first = b * g->run;
    v.n = g->run * g->runs;
    if (v.host) v.host = (char *)v.host + first * es;
    else v.offset += first * es;
    return v;
}

/* Copy block b between t and a contiguous host array (to_block: gather). */
static qk_status move_block(qk_context *ctx, const qk_tensor *t, const geometry *g, int64_t b, void *blk, int gather)
{
    size_t es = qk_dtype_size(t->dtype), bytes = (size_t)g->run * es;
    for (int64_t r = 0; r < g->runs; r++) {
        size_t off = (size_t)(r * g->stride + b * g->run) * es;
        char *mine = (char *)blk + (size_t)r * bytes;
        if (t->host) {
            if (gather) memcpy(mine, (char *)t->host + off, bytes);
            else memcpy((char *)t->host + off, mine, bytes);
        } else {
            qk_status st = gather ? qk_buffer_read(ctx, t->buffer, (size_t)t->offset + off, mine, bytes)
                                  : qk_buffer_write(ctx, t->buffer, (size_t)t->offset + off, mine, bytes);
            if (st != QK_OK) return st;
        }
    }
    return QK_OK;
}

/* A block as a tensor: a view, or a gathered host copy in *scratch. */
static qk_status block_tensor(qk_context *ctx, const qk_tensor *t, const geometry *g, int64_t b, void **scratch,
                              qk_tensor *out)
{
    if (g->runs == 1) {
        *out = block_view(t, g, b);
        return QK_OK;
    }
    size_t bytes = (size_t)(g->run * g->runs) * qk_dtype_size(t->dtype);
    if (!*scratch && !(*scratch = malloc(bytes))) {
        return qk_set_error(ctx, QK_ERR_NO_MEMORY, "no host memory for a %zu-byte channel", bytes);
    }
    *out = qk_tensor_host(t->dtype, *scratch, g->run * g->runs);
    return move_block(ctx, t, g, b, *scratch, 1);
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

qk_status qk_calibrate_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                              const qk_calib_options *opts, qk_block_calib_result *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!opts || !out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_calibrate_blocks: opts or out is NULL");
    memset(out, 0, sizeof *out);
    qk_status st = qk_check_tensor(ctx, x, "qk_calibrate_blocks: x");
    geometry g;
    if (st == QK_OK) st = layout_geometry(ctx, layout, x->n, &g);
    if (st != QK_OK) return st;
    qk_staged sx;
    if ((st = qk_stage_float(ctx, x, "qk_calibrate_blocks: x", &sx)) != QK_OK) return st;
    out->params = calloc((size_t)g.count, sizeof *out->params);
    out->chosen = calloc((size_t)g.count, sizeof *out->chosen);
    void *scratch = NULL;
    double sse = 0.0;
    if (!out->params || !out->chosen) st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "no memory for %lld blocks",
                                                        (long long)g.count);
    for (int64_t b = 0; st == QK_OK && b < g.count; b++) {
        qk_tensor v;
        qk_calib_result r;
        st = block_tensor(ctx, &sx.t, &g, b, &scratch, &v);
        if (st == QK_OK) st = qk_calibrate_staged(ctx, &v, sx.interp, opts, &r);
        if (st != QK_OK) {
            st = block_error(ctx, st, layout, b);
            break;
        }
        out->params[b] = r.params;
        out->chosen[b] = r.candidates[r.best];
        out->n += r.n;
        sse += r.candidates[r.best].mse * (double)r.n;
        qk_calib_result_release(&r);
    }
    free(scratch);
    qk_staged_release(&sx);
    if (st != QK_OK) {
        qk_block_calib_result_release(out);
        return st;
    }
    out->count = g.count;
    out->mse = sse / (double)out->n;
    return QK_OK;
}

/* Shared by quantize and dequantize: run op on each block of in -> out. */
typedef qk_status (*block_op)(qk_context *, const qk_tensor *, const qk_qparams *, qk_tensor *);

static qk_status run_blocks(qk_context *ctx, const qk_tensor *in, const qk_layout *layout, const qk_qparams *params,
                            int64_t count, qk_tensor *out, block_op op, const char *fn)
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
    void *sin = NULL, *sout = NULL;
    for (int64_t b = 0; st == QK_OK && b < g.count; b++) {
        qk_tensor vi, vo;
        st = block_tensor(ctx, in, &g, b, &sin, &vi);
        if (st == QK_OK && g.runs == 1) {
            vo = block_view(out, &g, b);
        } else if (st == QK_OK) {
            size_t bytes = (size_t)vi.n * qk_dtype_size(out->dtype);
            if (!sout && !(sout = malloc(bytes))) st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "%s: no host memory", fn);
            vo = qk_tensor_host(out->dtype, sout, vi.n);
        }
        if (st == QK_OK) st = op(ctx, &vi, &params[b], &vo);
        if (st == QK_OK && g.runs > 1) st = move_block(ctx, out, &g, b, sout, 0);
        if (st != QK_OK) st = block_error(ctx, st, layout, b);
    }
    free(sin);
    free(sout);
    return st;
}

qk_status qk_quantize_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout, const qk_qparams *params,
                             int64_t count, qk_tensor *codes)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    return run_blocks(ctx, x, layout, params, count, codes, qk_quantize, "qk_quantize_blocks");
}

static qk_status dequantize_op(qk_context *ctx, const qk_tensor *codes, const qk_qparams *p, qk_tensor *out)
{
    return qk_dequantize(ctx, codes, p, out);
}

qk_status qk_dequantize_blocks(qk_context *ctx, const qk_tensor *codes, const qk_layout *layout,
                               const qk_qparams *params, int64_t count, qk_tensor *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    return run_blocks(ctx, codes, layout, params, count, out, dequantize_op, "qk_dequantize_blocks");
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
