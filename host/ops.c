/* Quantize, dequantize and the round-trip error: argument checks, then one
 * backend call each. */
#include <math.h>
#include <string.h>

#include "internal.h"

static qk_status check_x(qk_context *ctx, const qk_tensor *x, const char *name)
{
    qk_status st = qk_check_tensor(ctx, x, name);
    if (st != QK_OK) return st;
    if (!qk_dtype_is_float(x->dtype)) {
        return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "%s: dtype %s is not a float input (float32, float64, "
                            "float16, bfloat16)", name, qk_dtype_name(x->dtype));
    }
    return QK_OK;
}

int qk_code_fits(qk_dtype dt, int32_t qmin, int32_t qmax)
{
    switch (dt) {
    case QK_U8: return qmin >= 0 && qmax <= 255;
    case QK_I8: return qmin >= -128 && qmax <= 127;
    case QK_U16: return qmin >= 0 && qmax <= 65535;
    case QK_I16: return qmin >= -32768 && qmax <= 32767;
    case QK_I32: return 1;
    default: return 0;
    }
}

qk_status qk_quantize(qk_context *ctx, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    qk_status st = check_x(ctx, x, "qk_quantize: x");
    if (st == QK_OK) st = qk_check_qparams(ctx, params);
    if (st == QK_OK) st = qk_check_tensor(ctx, codes, "qk_quantize: codes");
    if (st != QK_OK) return st;
    if (codes->n != x->n) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_quantize: codes has %lld elements, x has %lld",
                            (long long)codes->n, (long long)x->n);
    }
    if (!qk_dtype_is_code(codes->dtype) || !qk_code_fits(codes->dtype, params->qmin, params->qmax)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_quantize: codes dtype %s cannot hold codes %d..%d",
                            qk_dtype_name(codes->dtype), (int)params->qmin, (int)params->qmax);
    }
    qk_staged sx;
    if ((st = qk_stage_float(ctx, x, "qk_quantize: x", &sx)) != QK_OK) return st;
    st = ctx->backend->iface->quantize(ctx->backend, &sx.t, params, codes);
    qk_staged_release(&sx);
    return st;
}

qk_status qk_dequantize(qk_context *ctx, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!params) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_dequantize: params is NULL");
    /* Only scale and zero point are used: codes may come from any scheme. */
    if (!(params->scale > 0.0f) || !isfinite(params->scale)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_dequantize: scale %g must be finite and > 0",
                            (double)params->scale);
    }
    qk_status st = qk_check_tensor(ctx, codes, "qk_dequantize: codes");
    if (st == QK_OK) st = qk_check_tensor(ctx, out, "qk_dequantize: out");
    if (st != QK_OK) return st;
    if (!qk_dtype_is_code(codes->dtype)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_dequantize: codes dtype %s is not an integer code type",
                            qk_dtype_name(codes->dtype));
    }
    if (out->dtype != QK_F32) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_dequantize: out must be float32, not %s",
                            qk_dtype_name(out->dtype));
    }
    if (out->n != codes->n) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_dequantize: out has %lld elements, codes has %lld",
                            (long long)out->n, (long long)codes->n);
    }
    return ctx->backend->iface->dequantize(ctx->backend, codes, params, out);
}

qk_status qk_quant_error(qk_context *ctx, const qk_tensor *x, const qk_qparams *params, unsigned flags,
                         qk_error_result *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_quant_error: out is NULL");
    memset(out, 0, sizeof *out);
    qk_status st = check_x(ctx, x, "qk_quant_error: x");
    if (st == QK_OK) st = qk_check_qparams(ctx, params);
    if (st != QK_OK) return st;
    if (flags & ~(unsigned)QK_IGNORE_NONFINITE) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_quant_error: unknown flags 0x%x", flags);
    }
    qk_error_sums sums;
    qk_error_counts counts;
    qk_staged sx;
    if ((st = qk_stage_float(ctx, x, "qk_quant_error: x", &sx)) != QK_OK) return st;
    st = ctx->backend->iface->error(ctx->backend, &sx.t, params, 1, -INFINITY, INFINITY, &sums, &counts);
    qk_staged_release(&sx);
    if (st != QK_OK) return st;
    if (counts.nonfinite_count && !(flags & QK_IGNORE_NONFINITE)) {
        return qk_fail_nonfinite(ctx, "qk_quant_error", counts.nonfinite_count, counts.first_nonfinite);
    }
    if (counts.n_finite == 0) {
        return qk_fail_nonfinite(ctx, "qk_quant_error: no finite values at all", counts.nonfinite_count,
                                 counts.first_nonfinite);
    }
    out->sse = sums.sse;
    out->n = counts.n_finite;
    out->mse = sums.sse / (double)counts.n_finite;
    out->clipped = sums.clipped;
    return QK_OK;
}
