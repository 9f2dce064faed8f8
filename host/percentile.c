/* numpy.percentile (method "linear", numpy 1.24) made exact: the ranks needed by
 * every requested p come from one selection on the backend, and the
 * interpolation is done here, once, so every backend returns the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct pct_plan {
    int64_t lo, hi; /* ranks of a = x[lo] and b = x[hi] in sorted order */
    double gamma;
} pct_plan;

/* numpy: v = (n-1) * (p/100); at or past the last index both neighbours are the
 * last element and gamma = v - (-1) (numpy's index -1 leaks into gamma; with
 * d = 0 it only matters for the sign of a zero result, which we match too). */
static pct_plan plan_for(int64_t n, double p)
{
    pct_plan pl;
    double v = (double)(n - 1) * (p / 100.0);
    if (v >= (double)(n - 1)) {
        pl.lo = pl.hi = n - 1;
        pl.gamma = v + 1.0;
    } else {
        double f = floor(v);
        pl.lo = (int64_t)f;
        pl.hi = pl.lo + 1;
        pl.gamma = v - f;
    }
    return pl;
}

/* numpy's _lerp: d = b - a in the input's dtype, then in double
 * a + d*g below g = 0.5, b - d*(1-g) from 0.5 on. */
static double lerp(double a, double b, double g, qk_dtype dtype)
{
    double d;
    if (dtype == QK_F64) {
        d = b - a;
    } else if (dtype == QK_F16) { /* numpy: half - half, i.e. the exact float difference rounded to half */
        d = (double)qk_half_to_float(qk_float_to_half((float)b - (float)a));
    } else { /* float32; bfloat16 has no numpy reference and is subtracted in float32 */
        d = (double)((float)b - (float)a);
    }
    return g >= 0.5 ? b - d * (1.0 - g) : a + d * g;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

static size_t find_rank(const int64_t *ranks, size_t n, int64_t r)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ranks[mid] < r) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

qk_status qk_percentiles_known_n(qk_context *ctx, const qk_tensor *x, qk_dtype interp, unsigned flags, int64_t n,
                                 const double *p, size_t np, double *out)
{
    if (np == 0) return QK_OK;
    if (n <= 0) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "percentile of an empty set (no finite elements)");
    pct_plan *plans = malloc(np * sizeof *plans);
    int64_t *ranks = malloc(2 * np * sizeof *ranks);
    double *values = malloc(2 * np * sizeof *values);
    qk_status st = QK_OK;
    if (!plans || !ranks || !values) {
        st = qk_set_error(ctx, QK_ERR_NO_MEMORY, "percentiles: out of host memory for %zu targets", np);
        goto done;
    }
    for (size_t i = 0; i < np; i++) {
        plans[i] = plan_for(n, p[i]);
        ranks[2 * i] = plans[i].lo;
        ranks[2 * i + 1] = plans[i].hi;
    }
    qsort(ranks, 2 * np, sizeof *ranks, cmp_i64);
    size_t nr = 0;
    for (size_t i = 0; i < 2 * np; i++) {
        if (nr == 0 || ranks[nr - 1] != ranks[i]) ranks[nr++] = ranks[i];
    }
    st = ctx->backend->iface->select(ctx->backend, x, flags, ranks, nr, values);
    if (st != QK_OK) goto done;
    for (size_t i = 0; i < np; i++) {
        double a = values[find_rank(ranks, nr, plans[i].lo)];
        double b = values[find_rank(ranks, nr, plans[i].hi)];
        out[i] = lerp(a, b, plans[i].gamma, interp);
    }
done:
    free(plans);
    free(ranks);
    free(values);
    return st;
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
