/* numpy.percentile (method "linear", numpy 1.24) made exact: the ranks needed by
 * every requested p come from one selection on the backend, and the
 * interpolation is done on the host, once (host/segments.c), so every backend
 * returns the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

qk_status qk_percentiles_known_n(qk_context *ctx, const qk_tensor *x, qk_dtype interp, unsigned flags, int64_t n,
                                 const double *p, size_t np, double *out)
{
    return qk_seg_percentiles(ctx, x, x->n, interp, flags, &n, p, np, out);
}

qk_status qk_minmax(qk_context *ctx, const qk_tensor *x, unsigned flags, qk_minmax_result *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_minmax: out is NULL");
    memset(out, 0, sizeof *out);
    qk_status st = qk_check_tensor(ctx, x, "qk_minmax: x");
    if (st != QK_OK) return st;
    if (flags & ~(unsigned)QK_IGNORE_NONFINITE) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_minmax: unknown flags 0x%x", flags);
    }
    qk_staged sx;
    if ((st = qk_stage_float(ctx, x, "qk_minmax: x", &sx)) != QK_OK) return st;
    st = ctx->backend->iface->minmax(ctx->backend, &sx.t, out);
    qk_staged_release(&sx);
    if (st != QK_OK) return st;
    if (out->nonfinite_count && !(flags & QK_IGNORE_NONFINITE)) {
        return qk_fail_nonfinite(ctx, "qk_minmax", out->nonfinite_count, out->first_nonfinite);
    }
    if (out->n_finite == 0) {
        return qk_fail_nonfinite(ctx, "qk_minmax: no finite values at all", out->nonfinite_count,
                                 out->first_nonfinite);
    }
    return QK_OK;
}

qk_status qk_percentiles(qk_context *ctx, const qk_tensor *x, const double *p, size_t np, unsigned flags,
                         double *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    qk_status st = qk_check_tensor(ctx, x, "qk_percentiles: x");
    if (st != QK_OK) return st;
    if (np && (!p || !out)) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_percentiles: p or out is NULL");
    if (flags & ~(unsigned)(QK_IGNORE_NONFINITE | QK_ABS)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_percentiles: unknown flags 0x%x", flags);
    }
    for (size_t i = 0; i < np; i++) {
        if (!(p[i] >= 0.0 && p[i] <= 100.0)) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_percentiles: p[%zu] = %g is outside [0, 100]", i, p[i]);
        }
    }
    qk_staged sx;
    if ((st = qk_stage_float(ctx, x, "qk_percentiles: x", &sx)) != QK_OK) return st;
    qk_minmax_result mm;
    st = qk_minmax(ctx, &sx.t, flags & QK_IGNORE_NONFINITE, &mm);
    if (st == QK_OK) st = qk_percentiles_known_n(ctx, &sx.t, sx.interp, flags, mm.n_finite, p, np, out);
    qk_staged_release(&sx);
    return st;
}
