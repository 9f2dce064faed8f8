/* Quantization parameters from a range or from given values: docs/numerics.md's formulas,
 * computed once on the host so every backend applies the very same numbers. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "internal.h"

qk_status qk_code_range(qk_scheme scheme, int bits, int narrow_range, int32_t *qmin, int32_t *qmax)
{
    if (bits < 2 || bits > 16 || !qmin || !qmax) return QK_ERR_INVALID_ARG;
    if (scheme == QK_ASYMMETRIC) {
        if (narrow_range) return QK_ERR_INVALID_ARG;
        *qmin = 0;
        *qmax = (int32_t)((1u << bits) - 1);
        return QK_OK;
    }
    if (scheme != QK_SYMMETRIC) return QK_ERR_INVALID_ARG;
    *qmax = (int32_t)((1u << (bits - 1)) - 1);
    *qmin = narrow_range ? -*qmax : -*qmax - 1;
    return QK_OK;
}

static qk_status check_scheme(qk_context *ctx, qk_scheme scheme, int bits, int narrow_range)
{
    if (scheme != QK_ASYMMETRIC && scheme != QK_SYMMETRIC) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "unknown scheme %d", (int)scheme);
    }
    if (bits < 2 || bits > 16) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "bits = %d: the bit width must be 2..16", bits);
    }
    if (narrow_range && scheme == QK_ASYMMETRIC) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "narrow_range applies to the symmetric scheme only");
    }
    return QK_OK;
}

/* The scale as the float the contract stores (docs/numerics.md), from a
 * double: overflow to Inf is a range error; a positive value below the
 * smallest float (a range of a few denormals) becomes the smallest denormal,
 * so nothing ever divides by 0. */
static qk_status float_scale(qk_context *ctx, double s, float *out)
{
    float f = (float)s;
    if (!isfinite(f)) {
        return qk_set_error(ctx, QK_ERR_RANGE, "scale %g does not fit in a float32: the range is too wide", s);
    }
    *out = f > 0.0f ? f : FLT_TRUE_MIN;
    return QK_OK;
}

qk_status qk_qparams_from_range(qk_context *ctx, qk_scheme scheme, int bits, int narrow_range, int include_zero,
                                double lo, double hi, qk_qparams *out)
{
    if (!out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_qparams_from_range: out is NULL");
    qk_status st = check_scheme(ctx, scheme, bits, narrow_range);
    if (st != QK_OK) return st;
    if (!isfinite(lo) || !isfinite(hi) || lo > hi) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "range [%g, %g] must be finite with lo <= hi", lo, hi);
    }
    qk_qparams p = {0};
    p.scheme = scheme;
    p.bits = bits;
    p.narrow_range = narrow_range;
    qk_code_range(scheme, bits, narrow_range, &p.qmin, &p.qmax);

    if (scheme == QK_SYMMETRIC) {
        double c = fmax(fabs(lo), fabs(hi));
        p.clip_lo = -c;
        p.clip_hi = c;
        p.zero_point = 0;
        if (c == 0.0) {
            p.scale = 1.0f;
        } else if ((st = float_scale(ctx, c / (double)p.qmax, &p.scale)) != QK_OK) {
            return st;
        }
        *out = p;
        return QK_OK;
    }

    /* Asymmetric: a degenerate range (lo == hi) is widened to include 0, as is
     * any range when include_zero is asked for. */
    if (include_zero || lo == hi) {
        lo = fmin(lo, 0.0);
        hi = fmax(hi, 0.0);
    }
    p.clip_lo = lo;
    p.clip_hi = hi;
    if (lo == hi) { /* both 0 */
        p.scale = 1.0f;
        p.zero_point = p.qmin;
        *out = p;
        return QK_OK;
    }
    if ((st = float_scale(ctx, (hi - lo) / (double)(p.qmax - p.qmin), &p.scale)) != QK_OK) return st;
    double zp = -rint(lo / (double)p.scale);
    if (!(zp >= (double)INT32_MIN && zp <= (double)INT32_MAX)) {
        return qk_set_error(ctx, QK_ERR_RANGE,
                            "zero point %.17g for range [%.9g, %.9g] is outside int32: the range is far from 0 "
                            "compared with its width; use include_zero (--include-zero) or the symmetric scheme",
                            zp, lo, hi);
    }
    p.zero_point = (int32_t)zp;
    *out = p;
    return QK_OK;
}

qk_status qk_qparams_from_scale(qk_context *ctx, qk_scheme scheme, int bits, int narrow_range, float scale,
                                int32_t zero_point, qk_qparams *out)
{
    if (!out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_qparams_from_scale: out is NULL");
    qk_status st = check_scheme(ctx, scheme, bits, narrow_range);
    if (st != QK_OK) return st;
    if (!(scale > 0.0f) || !isfinite(scale)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "scale %g must be finite and > 0", (double)scale);
    }
    if (scheme == QK_SYMMETRIC && zero_point != 0) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "the symmetric scheme has zero point 0 (got %d)",
                            (int)zero_point);
    }
    qk_qparams p = {0};
    p.scheme = scheme;
    p.bits = bits;
    p.narrow_range = narrow_range;
    p.scale = scale;
    p.zero_point = zero_point;
    qk_code_range(scheme, bits, narrow_range, &p.qmin, &p.qmax);
    /* The range these parameters represent exactly. */
    p.clip_lo = ((double)p.qmin - zero_point) * (double)scale;
    p.clip_hi = ((double)p.qmax - zero_point) * (double)scale;
    *out = p;
    return QK_OK;
}

qk_status qk_check_qparams(qk_context *ctx, const qk_qparams *p)
{
    if (!p) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "params is NULL");
    qk_status st = check_scheme(ctx, p->scheme, p->bits, p->narrow_range);
    if (st != QK_OK) return st;
    if (!(p->scale > 0.0f) || !isfinite(p->scale)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "scale %g must be finite and > 0", (double)p->scale);
    }
    int32_t qmin, qmax;
    qk_code_range(p->scheme, p->bits, p->narrow_range, &qmin, &qmax);
    if (p->qmin != qmin || p->qmax != qmax) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qmin/qmax %d/%d do not match %d-bit %s%s (%d/%d)",
                            (int)p->qmin, (int)p->qmax, p->bits,
                            p->scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric",
                            p->narrow_range ? " narrow-range" : "", (int)qmin, (int)qmax);
    }
    return QK_OK;
}

qk_status qk_code_dtype(const qk_qparams *params, qk_dtype *out)
{
    if (!params || !out || params->bits < 2 || params->bits > 16) return QK_ERR_INVALID_ARG;
    int wide = params->bits > 8;
    if (params->scheme == QK_ASYMMETRIC) {
        *out = wide ? QK_U16 : QK_U8;
    } else {
        *out = wide ? QK_I16 : QK_I8;
    }
    return QK_OK;
}

qk_status qk_calib_options_default(qk_calib_options *o)
{
    if (!o) return QK_ERR_INVALID_ARG;
    qk_calib_options d = {0};
    d.scheme = QK_ASYMMETRIC;
    d.bits = 8;
    d.method = QK_CALIB_MINMAX;
    d.percentile = 99.99;
    d.grid_start = 99.0;
    d.grid_stop = 100.0;
    d.grid_step = 0.01;
    d.objective = QK_OBJECTIVE_MSE;
    d.fence_k = 3.0;
    *o = d;
    return QK_OK;
}

#define QK_GRID_MAX 1000000

qk_status qk_grid_expand(double start, double stop, double step, double *p, size_t cap, size_t *count)
{
    if (!count || !isfinite(start) || !isfinite(stop) || !isfinite(step) || !(step > 0.0) || stop < start) {
        return QK_ERR_INVALID_ARG;
    }
    double last = floor((stop - start) / step + 1e-9);
    if (!(last < QK_GRID_MAX)) return QK_ERR_INVALID_ARG;
    size_t n = (size_t)last + 1;
    *count = n;
    if (!p) return QK_OK;
    if (cap < n) return QK_ERR_INVALID_ARG;
    for (size_t i = 0; i < n; i++) {
        double v = start + (double)i * step;
        p[i] = v > stop ? stop : v; /* never overshoot stop through rounding */
    }
    return QK_OK;
}
