/* Calibration: minmax, percentile and the grid search. Every candidate's clip
 * values come from one multi-target selection and every candidate's errors from
 * one fused pass over the data (DESIGN.md, "Calibration"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static qk_status check_p(qk_context *ctx, qk_scheme scheme, double p)
{
    if (scheme == QK_ASYMMETRIC && !(p >= 50.0 && p <= 100.0)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "percentile %g: the asymmetric scheme clips to [P(100-p), P(p)], so p must be in "
                            "[50, 100]", p);
    }
    if (scheme == QK_SYMMETRIC && !(p > 0.0 && p <= 100.0)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "percentile %g: the symmetric scheme clips to P(|x|, p), so p must be in (0, 100]", p);
    }
    return QK_OK;
}

/* The candidate percentiles of opts (malloc'd into *out). */
static qk_status candidate_list(qk_context *ctx, const qk_calib_options *o, double **out, size_t *count)
{
    size_t n = 1;
    if (o->method == QK_CALIB_GRIDSEARCH) {
        if (o->grid) {
            n = o->grid_len;
            if (n == 0) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "grid search: the candidate list is empty");
        } else if (qk_grid_expand(o->grid_start, o->grid_stop, o->grid_step, NULL, 0, &n) != QK_OK) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                                "grid %g:%g:%g: need finite start <= stop and step > 0, at most 1e6 candidates",
                                o->grid_start, o->grid_stop, o->grid_step);
        }
    }
    double *p = malloc(n * sizeof *p);
    if (!p) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "calibration: out of host memory");
    if (o->method == QK_CALIB_MINMAX) {
        p[0] = 100.0;
    } else if (o->method == QK_CALIB_PERCENTILE) {
        p[0] = o->percentile;
    } else if (o->grid) {
        memcpy(p, o->grid, n * sizeof *p);
    } else {
        qk_grid_expand(o->grid_start, o->grid_stop, o->grid_step, p, n, &n);
    }
    for (size_t i = 0; i < n; i++) {
        qk_status st = check_p(ctx, o->scheme, p[i]);
        if (st != QK_OK) {
            free(p);
            return st;
        }
    }
    *out = p;
    *count = n;
    return QK_OK;
}

static qk_status check_options(qk_context *ctx, const qk_calib_options *o)
{
    int32_t qmin, qmax;
    if (qk_code_range(o->scheme, o->bits, o->narrow_range, &qmin, &qmax) != QK_OK) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "bits %d, scheme %d, narrow_range %d: need 2..16 bits, asymmetric or symmetric, "
                            "narrow range only when symmetric", o->bits, (int)o->scheme, o->narrow_range);
    }
    if (o->method != QK_CALIB_MINMAX && o->method != QK_CALIB_PERCENTILE && o->method != QK_CALIB_GRIDSEARCH) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "unknown calibration method %d", (int)o->method);
    }
    if (o->objective != QK_OBJECTIVE_MSE && o->objective != QK_OBJECTIVE_MSE_INLIERS) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "unknown objective %d", (int)o->objective);
    }
    if (!(o->fence_k >= 0.0) || !isfinite(o->fence_k)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "fence_k %g must be finite and >= 0", o->fence_k);
    }
    return QK_OK;
}

/* The clip range of each candidate: one selection on x for the asymmetric
 * P(100-p)/P(p) pairs and the quartiles, one on |x| for symmetric clips. */
static qk_status clip_values(qk_context *ctx, const qk_tensor *x, qk_dtype interp, const qk_calib_options *o,
                             int64_t n,
                             const qk_minmax_result *mm, const double *p, size_t k, int fences, double *lo,
                             double *hi, double *q1q3)
{
    unsigned ign = o->ignore_nonfinite ? QK_IGNORE_NONFINITE : 0;
    if (o->method == QK_CALIB_MINMAX) {
        lo[0] = o->scheme == QK_SYMMETRIC ? -mm->absmax : mm->min;
        hi[0] = o->scheme == QK_SYMMETRIC ? mm->absmax : mm->max;
    }
    int asym_pct = o->method != QK_CALIB_MINMAX && o->scheme == QK_ASYMMETRIC;
    size_t nx = (fences ? 2 : 0) + (asym_pct ? 2 * k : 0);
    double *px = malloc((nx ? nx : 1) * 2 * sizeof *px);
    if (!px) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "calibration: out of host memory");
    double *vx = px + (nx ? nx : 1);
    size_t j = 0;
    if (fences) {
        px[j++] = 25.0;
        px[j++] = 75.0;
    }
    if (asym_pct) {
        for (size_t i = 0; i < k; i++) {
            px[j++] = 100.0 - p[i];
            px[j++] = p[i];
        }
    }
    qk_status st = qk_percentiles_known_n(ctx, x, interp, ign, n, px, nx, vx);
    if (st == QK_OK) {
        j = 0;
        if (fences) {
            q1q3[0] = vx[j++];
            q1q3[1] = vx[j++];
        }
        for (size_t i = 0; asym_pct && i < k; i++) {
            lo[i] = vx[j++];
            hi[i] = vx[j++];
        }
        if (o->method != QK_CALIB_MINMAX && o->scheme == QK_SYMMETRIC) {
            st = qk_percentiles_known_n(ctx, x, interp, ign | QK_ABS, n, p, k, hi);
            for (size_t i = 0; st == QK_OK && i < k; i++) lo[i] = -hi[i];
        }
    }
    free(px);
    return st;
}

/* The best candidate: lowest objective; those within 1e-9 relative of it tie,
 * and ties go to the larger p (less clipping). */
static size_t choose_best(const qk_candidate *c, size_t k, qk_objective obj)
{
    double best = INFINITY;
    for (size_t i = 0; i < k; i++) {
        double v = obj == QK_OBJECTIVE_MSE ? c[i].mse : c[i].mse_inliers;
        if (v < best) best = v;
    }
    double bound = best + 1e-9 * fabs(best);
    size_t pick = 0;
    int found = 0;
    for (size_t i = 0; i < k; i++) {
        double v = obj == QK_OBJECTIVE_MSE ? c[i].mse : c[i].mse_inliers;
        if (v <= bound && (!found || c[i].percentile > c[pick].percentile)) {
            pick = i;
            found = 1;
        }
    }
    return pick;
}

qk_status qk_calib_result_release(qk_calib_result *res)
{
    if (res) {
        free(res->candidates);
        res->candidates = NULL;
        res->n_candidates = 0;
    }
    return QK_OK;
}

qk_status qk_calibrate(qk_context *ctx, const qk_tensor *x, const qk_calib_options *opts, qk_calib_result *out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!opts || !out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_calibrate: opts or out is NULL");
    memset(out, 0, sizeof *out);
    qk_status st = qk_check_tensor(ctx, x, "qk_calibrate: x");
    if (st != QK_OK) return st;
    qk_staged sx;
    if ((st = qk_stage_float(ctx, x, "qk_calibrate: x", &sx)) != QK_OK) return st;
    st = qk_calibrate_staged(ctx, &sx.t, sx.interp, opts, out);
    qk_staged_release(&sx);
    return st;
}

qk_status qk_calibrate_staged(qk_context *ctx, const qk_tensor *x, qk_dtype interp, const qk_calib_options *opts,
                              qk_calib_result *out)
{
    qk_status st;
    memset(out, 0, sizeof *out);
    if ((st = check_options(ctx, opts)) != QK_OK) return st;

    double *p = NULL, *lo = NULL, *hi = NULL;
    qk_qparams *params = NULL;
    qk_error_sums *sums = NULL;
    qk_candidate *cand = NULL;
    size_t k = 0;
    if ((st = candidate_list(ctx, opts, &p, &k)) != QK_OK) return st;

    qk_minmax_result mm;
    st = ctx->backend->iface->minmax(ctx->backend, x, &mm);
    if (st != QK_OK) goto done;
    if (mm.nonfinite_count && !opts->ignore_nonfinite) {
        st = qk_fail_nonfinite(ctx, "qk_calibrate", mm.nonfinite_count, mm.first_nonfinite);
        goto done;
    }
    if (mm.n_finite == 0) {
        st = qk_fail_nonfinite(ctx, "qk_calibrate: no finite values at all", mm.nonfinite_count, mm.first_nonfinite);
        goto done;
    }

    lo = malloc(k * sizeof *lo);
    hi = malloc(k * sizeof *hi);
    params = malloc(k * sizeof *params);
    sums = malloc(k * sizeof *sums);
    cand = calloc(k, sizeof *cand);
    if (!lo || !hi || !params || !sums || !cand) {
        st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "qk_calibrate: out of host memory for %zu candidates", k);
        goto done;
    }
    /* Fences cost a selection; they are computed when something uses them.
     * Otherwise they are infinite and mse_inliers equals mse. */
    int fences = opts->method == QK_CALIB_GRIDSEARCH || opts->objective == QK_OBJECTIVE_MSE_INLIERS;
    double q[2] = {0, 0};
    st = clip_values(ctx, x, interp, opts, mm.n_finite, &mm, p, k, fences, lo, hi, q);
    if (st != QK_OK) goto done;
    out->fence_lo = fences ? q[0] - opts->fence_k * (q[1] - q[0]) : -INFINITY;
    out->fence_hi = fences ? q[1] + opts->fence_k * (q[1] - q[0]) : INFINITY;

    for (size_t i = 0; i < k; i++) {
        /* numpy's interpolation subtracts neighbours in the input's dtype, so two
         * float32 values more than FLT_MAX apart give an infinite percentile. */
        if (!isfinite(lo[i]) || !isfinite(hi[i])) {
            st = qk_set_error(ctx, QK_ERR_RANGE,
                              "percentile %g of the data is not finite (%g, %g): neighbouring values are more "
                              "than FLT_MAX apart, so float32 interpolation overflows; use minmax or float64 input",
                              p[i], lo[i], hi[i]);
            goto done;
        }
        st = qk_qparams_from_range(ctx, opts->scheme, opts->bits, opts->narrow_range, opts->include_zero, lo[i],
                                   hi[i], &params[i]);
        if (st != QK_OK) goto done;
    }
    qk_error_counts counts;
    st = ctx->backend->iface->error(ctx->backend, x, params, k, out->fence_lo, out->fence_hi, sums, &counts);
    if (st != QK_OK) goto done;

    for (size_t i = 0; i < k; i++) {
        cand[i].percentile = p[i];
        cand[i].clip_lo = params[i].clip_lo;
        cand[i].clip_hi = params[i].clip_hi;
        cand[i].scale = params[i].scale;
        cand[i].zero_point = params[i].zero_point;
        cand[i].clipped = sums[i].clipped;
        cand[i].mse = sums[i].sse / (double)counts.n_finite;
        cand[i].mse_inliers = counts.n_inliers ? sums[i].sse_inliers / (double)counts.n_inliers : NAN;
    }
    out->best = choose_best(cand, k, opts->objective);
    out->params = params[out->best];
    out->candidates = cand;
    out->n_candidates = k;
    out->n = counts.n_finite;
    out->n_inliers = counts.n_inliers;
    cand = NULL;
done:
    free(p);
    free(lo);
    free(hi);
    free(params);
    free(sums);
    free(cand);
    return st;
}
