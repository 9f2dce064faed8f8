/* Calibration: minmax, percentile and the grid search. Every candidate's clip
 * values come from one multi-target selection and every candidate's errors from
 * one fused pass over the data (docs/numerics.md, "Calibration"). */
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

/* The clip range of each candidate of each segment: one selection on x for the
 * asymmetric P(100-p)/P(p) pairs and the quartiles, one on |x| for symmetric
 * clips. lo, hi: [count * k]; q1q3: [count * 2]. */
static qk_status clip_values(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_dtype interp,
                             const qk_calib_options *o, const qk_minmax_result *mm, const int64_t *nkeys,
                             const double *p, size_t k, int fences, double *lo, double *hi, double *q1q3)
{
    int64_t count = x->n / seg;
    unsigned ign = o->ignore_nonfinite ? QK_IGNORE_NONFINITE : 0;
    if (o->method == QK_CALIB_MINMAX) {
        for (int64_t b = 0; b < count; b++) {
            lo[b] = o->scheme == QK_SYMMETRIC ? -mm[b].absmax : mm[b].min;
            hi[b] = o->scheme == QK_SYMMETRIC ? mm[b].absmax : mm[b].max;
        }
    }
    int asym_pct = o->method != QK_CALIB_MINMAX && o->scheme == QK_ASYMMETRIC;
    size_t nx = (fences ? 2 : 0) + (asym_pct ? 2 * k : 0);
    double *px = malloc((nx ? nx : 1) * sizeof *px), *vx = malloc((size_t)count * (nx ? nx : 1) * sizeof *vx);
    if (!px || !vx) {
        free(px);
        free(vx);
        return qk_set_error(ctx, QK_ERR_NO_MEMORY, "calibration: out of host memory");
    }
    size_t j = 0;
    if (fences) {
        px[j++] = 25.0;
        px[j++] = 75.0;
    }
    for (size_t i = 0; asym_pct && i < k; i++) {
        px[j++] = 100.0 - p[i];
        px[j++] = p[i];
    }
    qk_status st = qk_seg_percentiles(ctx, x, seg, interp, ign, nkeys, px, nx, vx);
    for (int64_t b = 0; st == QK_OK && b < count; b++) {
        const double *v = vx + (size_t)b * nx;
        j = 0;
        if (fences) {
            q1q3[2 * b] = v[j++];
            q1q3[2 * b + 1] = v[j++];
        }
        for (size_t i = 0; asym_pct && i < k; i++) {
            lo[(size_t)b * k + i] = v[j++];
            hi[(size_t)b * k + i] = v[j++];
        }
    }
    if (st == QK_OK && o->method != QK_CALIB_MINMAX && o->scheme == QK_SYMMETRIC) {
        st = qk_seg_percentiles(ctx, x, seg, interp, ign | QK_ABS, nkeys, p, k, hi);
        for (size_t i = 0; st == QK_OK && i < (size_t)count * k; i++) lo[i] = -hi[i];
    }
    free(px);
    free(vx);
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

/* The per-segment work of a calibration, in arrays of count (or count * k). */
typedef struct seg_work {
    qk_minmax_result *mm;
    int64_t *nkeys;
    double *lo, *hi, *q1q3, *fences;
    qk_qparams *params;
    qk_error_sums *sums;
    qk_error_counts *counts;
} seg_work;

static void seg_work_free(seg_work *w)
{
    free(w->mm);
    free(w->nkeys);
    free(w->lo);
    free(w->hi);
    free(w->q1q3);
    free(w->fences);
    free(w->params);
    free(w->sums);
    free(w->counts);
}

static int seg_work_alloc(seg_work *w, size_t count, size_t k)
{
    memset(w, 0, sizeof *w);
    w->mm = malloc(count * sizeof *w->mm);
    w->nkeys = malloc(count * sizeof *w->nkeys);
    w->lo = malloc(count * k * sizeof *w->lo);
    w->hi = malloc(count * k * sizeof *w->hi);
    w->q1q3 = calloc(count * 2, sizeof *w->q1q3);
    w->fences = malloc(count * 2 * sizeof *w->fences);
    w->params = malloc(count * k * sizeof *w->params);
    w->sums = malloc(count * k * sizeof *w->sums);
    w->counts = malloc(count * sizeof *w->counts);
    return w->mm && w->nkeys && w->lo && w->hi && w->q1q3 && w->fences && w->params && w->sums && w->counts
               ? 0
               : -1;
}

/* Every segment must have finite values, and only finite ones unless asked to
 * ignore the rest. */
static qk_status check_finite(qk_context *ctx, const qk_calib_options *opts, const seg_work *w, int64_t count,
                              int64_t *failed)
{
    for (int64_t b = 0; b < count; b++) {
        const qk_minmax_result *m = &w->mm[b];
        *failed = b;
        if (m->nonfinite_count && !opts->ignore_nonfinite) {
            return qk_fail_nonfinite(ctx, "qk_calibrate", m->nonfinite_count, m->first_nonfinite);
        }
        if (m->n_finite == 0) {
            return qk_fail_nonfinite(ctx, "qk_calibrate: no finite values at all", m->nonfinite_count,
                                     m->first_nonfinite);
        }
        w->nkeys[b] = m->n_finite;
    }
    *failed = -1;
    return QK_OK;
}

/* Each candidate's parameters from its clip range. */
static qk_status candidate_params(qk_context *ctx, const qk_calib_options *opts, const double *p, size_t k,
                                  int64_t count, seg_work *w, int64_t *failed)
{
    for (size_t i = 0; i < (size_t)count * k; i++) {
        *failed = (int64_t)(i / k);
        /* numpy's interpolation subtracts neighbours in the input's dtype, so two
         * float32 values more than FLT_MAX apart give an infinite percentile. */
        if (!isfinite(w->lo[i]) || !isfinite(w->hi[i])) {
            return qk_set_error(ctx, QK_ERR_RANGE,
                                "percentile %g of the data is not finite (%g, %g): neighbouring values are more "
                                "than FLT_MAX apart, so float32 interpolation overflows; use minmax or float64 "
                                "input",
                                p[i % k], w->lo[i], w->hi[i]);
        }
        qk_status st = qk_qparams_from_range(ctx, opts->scheme, opts->bits, opts->narrow_range, opts->include_zero,
                                             w->lo[i], w->hi[i], &w->params[i]);
        if (st != QK_OK) return st;
    }
    *failed = -1;
    return QK_OK;
}

static void fill_candidates(const double *p, size_t k, const qk_qparams *params, const qk_error_sums *sums,
                            const qk_error_counts *counts, qk_candidate *cand)
{
    for (size_t i = 0; i < k; i++) {
        cand[i].percentile = p[i];
        cand[i].clip_lo = params[i].clip_lo;
        cand[i].clip_hi = params[i].clip_hi;
        cand[i].scale = params[i].scale;
        cand[i].zero_point = params[i].zero_point;
        cand[i].clipped = sums[i].clipped;
        cand[i].mse = sums[i].sse / (double)counts->n_finite;
        cand[i].mse_inliers = counts->n_inliers ? sums[i].sse_inliers / (double)counts->n_inliers : NAN;
    }
}

qk_status qk_calibrate_segments(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_dtype interp,
                                const qk_calib_options *opts, const double *p, size_t k, qk_candidate *cand,
                                qk_seg_calib *res, int64_t *failed)
{
    int64_t count = x->n / seg;
    seg_work w;
    *failed = -1;
    if (seg_work_alloc(&w, (size_t)count, k) != 0) {
        seg_work_free(&w);
        return qk_set_error(ctx, QK_ERR_NO_MEMORY, "qk_calibrate: out of host memory for %lld x %zu candidates",
                            (long long)count, k);
    }
    qk_status st = qk_seg_minmax(ctx, x, seg, w.mm);
    if (st == QK_OK) st = check_finite(ctx, opts, &w, count, failed);
    /* Fences cost a selection; they are computed when something uses them.
     * Otherwise they are infinite and mse_inliers equals mse. */
    int fences = opts->method == QK_CALIB_GRIDSEARCH || opts->objective == QK_OBJECTIVE_MSE_INLIERS;
    if (st == QK_OK) st = clip_values(ctx, x, seg, interp, opts, w.mm, w.nkeys, p, k, fences, w.lo, w.hi, w.q1q3);
    for (int64_t b = 0; st == QK_OK && b < count; b++) {
        double q1 = w.q1q3[2 * b], q3 = w.q1q3[2 * b + 1];
        w.fences[2 * b] = fences ? q1 - opts->fence_k * (q3 - q1) : -INFINITY;
        w.fences[2 * b + 1] = fences ? q3 + opts->fence_k * (q3 - q1) : INFINITY;
    }
    if (st == QK_OK) st = candidate_params(ctx, opts, p, k, count, &w, failed);
    if (st == QK_OK) st = qk_seg_error(ctx, x, seg, w.params, k, w.fences, w.sums, w.counts);
    for (int64_t b = 0; st == QK_OK && b < count; b++) {
        size_t o = (size_t)b * k;
        fill_candidates(p, k, w.params + o, w.sums + o, &w.counts[b], cand + o);
        res[b].best = choose_best(cand + o, k, opts->objective);
        res[b].n = w.counts[b].n_finite;
        res[b].n_inliers = w.counts[b].n_inliers;
        res[b].fence_lo = w.fences[2 * b];
        res[b].fence_hi = w.fences[2 * b + 1];
        res[b].params = w.params[o + res[b].best];
    }
    seg_work_free(&w);
    return st;
}

qk_status qk_calibrate_staged(qk_context *ctx, const qk_tensor *x, qk_dtype interp, const qk_calib_options *opts,
                              qk_calib_result *out)
{
    memset(out, 0, sizeof *out);
    double *p = NULL;
    size_t k = 0;
    qk_status st = qk_calib_plan(ctx, opts, &p, &k);
    if (st != QK_OK) return st;
    qk_candidate *cand = calloc(k, sizeof *cand);
    qk_seg_calib res;
    int64_t failed;
    st = cand ? qk_calibrate_segments(ctx, x, x->n, interp, opts, p, k, cand, &res, &failed)
              : qk_set_error(ctx, QK_ERR_NO_MEMORY, "qk_calibrate: out of host memory for %zu candidates", k);
    free(p);
    if (st != QK_OK) {
        free(cand);
        return st;
    }
    out->best = res.best;
    out->params = res.params;
    out->candidates = cand;
    out->n_candidates = k;
    out->fence_lo = res.fence_lo;
    out->fence_hi = res.fence_hi;
    out->n = res.n;
    out->n_inliers = res.n_inliers;
    return QK_OK;
}

qk_status qk_calib_plan(qk_context *ctx, const qk_calib_options *opts, double **p, size_t *k)
{
    qk_status st = check_options(ctx, opts);
    return st == QK_OK ? candidate_list(ctx, opts, p, k) : st;
}
