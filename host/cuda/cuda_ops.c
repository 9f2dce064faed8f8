/* min/max, quantize, dequantize and the fused error pass on the CUDA backend:
 * scratch set up here, the data walked by cu_for_chunks, kernels launched
 * through kernels/cuda's launchers. */
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "../cpu/cpu_keys.h"
#include "cuda_internal.h"

static int is_f64(const qk_tensor *t)
{
    return t->dtype == QK_F64;
}

/* ---- min/max ---------------------------------------------------------------------- */

static qk_status minmax_chunk(qk_backend *be, void *user, const void *din, void *dout, int64_t base, int64_t count)
{
    const qk_tensor *x = user;
    cu_state *cu = cu_of(be);
    return cu_launch_status(be, "minmax kernel launch",
                         qk_cu_minmax(cu->compute, cu->sms, is_f64(x), din, count, base,
                                      (qk_cu_minmax_acc *)cu->dscratch));
}

qk_status qk_cu_op_minmax(qk_backend *be, const qk_tensor *x, qk_minmax_result *out)
{
    cu_state *cu = cu_of(be);
    qk_status st = QK_OK;
    qk_cu_minmax_acc *h = (qk_cu_minmax_acc *)cu->hscratch;
    qk_cu_minmax_acc *init = h + 1;
    memset(init, 0, sizeof *init);
    init->kmin = ~0ull;
    init->first = ~0ull;
    CU_CHECK(be, st, cudaMemcpyAsync(cu->dscratch, init, sizeof *init, cudaMemcpyHostToDevice, cu->compute));
    st = cu_for_chunks(be, x, NULL, 4, QK_CU_MAX_LAUNCH, minmax_chunk, (void *)x);
    if (st != QK_OK) return st;
    CU_CHECK(be, st, cudaMemcpyAsync(h, cu->dscratch, sizeof *h, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu->compute));
    memset(out, 0, sizeof *out);
    out->n_finite = (int64_t)h->n_finite;
    out->nonfinite_count = (int64_t)h->nonfinite;
    out->first_nonfinite = h->nonfinite ? (int64_t)h->first : -1;
    if (h->n_finite) {
        out->min = qk_unkey_f64(h->kmin);
        out->max = qk_unkey_f64(h->kmax);
        out->absmax = fmax(fabs(out->min), fabs(out->max)); /* +0, never -0, as the CPU reference */
    }
done:
    return st;
}

/* ---- quantize / dequantize ------------------------------------------------------------ */

typedef struct quant_job {
    qk_dtype xt, ct;
    qk_cu_qparam p;
} quant_job;

static qk_status quant_chunk(qk_backend *be, void *user, const void *din, void *dout, int64_t base, int64_t count)
{
    const quant_job *j = user;
    cu_state *cu = cu_of(be);
    (void)base;
    return cu_launch_status(be, "quantize kernel launch",
                         qk_cu_quantize(cu->compute, cu->sms, j->xt, din, j->ct, dout, count, j->p));
}

qk_status qk_cu_op_quantize(qk_backend *be, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes)
{
    quant_job j = {x->dtype, codes->dtype, cu_param_of(params)};
    return cu_for_chunks(be, x, codes, 4, QK_CU_MAX_LAUNCH, quant_chunk, &j);
}

static qk_status dequant_chunk(qk_backend *be, void *user, const void *din, void *dout, int64_t base, int64_t count)
{
    const quant_job *j = user;
    cu_state *cu = cu_of(be);
    (void)base;
    return cu_launch_status(be, "dequantize kernel launch",
                         qk_cu_dequantize(cu->compute, cu->sms, j->ct, din, dout, count, j->p.scale,
                                          j->p.zero_point));
}

qk_status qk_cu_op_dequantize(qk_backend *be, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out)
{
    quant_job j = {QK_F32, codes->dtype, cu_param_of(params)};
    return cu_for_chunks(be, codes, out, 4, QK_CU_MAX_LAUNCH, dequant_chunk, &j);
}

/* ---- the fused error pass ------------------------------------------------------------------ */

/* Block sums kept per launch: at most this many bytes (k sets x 2 doubles per block). */
#define QK_CU_PARTIAL_BYTES ((size_t)64 << 20)

typedef struct error_job {
    int is_f64;
    int k;
    double fence_lo, fence_hi;
    qk_cu_qparam *params;      /* device */
    double *partial;           /* device */
    double *run;               /* device, k x 2 */
    unsigned long long *clipped; /* device, k */
    unsigned long long *counts;  /* device, QK_CU_CNT_COUNT */
} error_job;

static qk_status error_chunk(qk_backend *be, void *user, const void *din, void *dout, int64_t base, int64_t count)
{
    const error_job *j = user;
    cu_state *cu = cu_of(be);
    (void)dout;
    return cu_launch_status(be, "error kernel launch",
                         qk_cu_error(cu->compute, j->is_f64, din, count, base, j->params, j->k, j->fence_lo,
                                     j->fence_hi, j->partial, j->clipped, j->counts, j->run));
}

qk_status qk_cu_op_error(qk_backend *be, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                         double fence_hi, qk_error_sums *sums, qk_error_counts *counts)
{
    cu_state *cu = cu_of(be);
    if (k == 0) {
        memset(counts, 0, sizeof *counts);
        counts->first_nonfinite = -1;
        return QK_OK;
    }
    if (k > (size_t)1 << 24) {
        return qk_set_error(be->ctx, QK_ERR_UNSUPPORTED, "cuda: %zu parameter sets in one error pass (at most %d)", k,
                            1 << 24);
    }
    const int64_t nblk_total = (x->n + QK_CU_ERROR_BLOCK - 1) / QK_CU_ERROR_BLOCK;
    /* blocks per launch: bounded by the partial-sum budget (and the limit), the grid, and the tensor */
    uint64_t pbudget = QK_CU_PARTIAL_BYTES;
    const uint64_t budget = cu_budget(be); /* the limit, and the device's free memory */
    if (pbudget > budget / 4) pbudget = budget / 4;
    int64_t nblk = (int64_t)(pbudget / (k * 2 * sizeof(double)));
    if (nblk < 1) nblk = 1;
    if (nblk > QK_CU_MAX_LAUNCH / QK_CU_ERROR_BLOCK) nblk = QK_CU_MAX_LAUNCH / QK_CU_ERROR_BLOCK;
    if (nblk > nblk_total) nblk = nblk_total;

    error_job j;
    memset(&j, 0, sizeof j);
    j.is_f64 = is_f64(x);
    j.k = (int)k;
    j.fence_lo = fence_lo;
    j.fence_hi = fence_hi;
    const size_t params_bytes = k * sizeof(qk_cu_qparam), run_bytes = k * 2 * sizeof(double),
                 clipped_bytes = k * sizeof(unsigned long long),
                 counts_bytes = QK_CU_CNT_COUNT * sizeof(unsigned long long);
    size_t partial_bytes = 0;
    qk_cu_qparam *hp = malloc(params_bytes);
    double *hrun = malloc(run_bytes);
    unsigned long long *hclip = malloc(clipped_bytes);
    unsigned long long hcnt[QK_CU_CNT_COUNT];
    qk_status st = QK_OK;
    if (!hp || !hrun || !hclip) {
        st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory for %zu parameter sets", k);
        goto done;
    }
    for (size_t c = 0; c < k; c++) hp[c] = cu_param_of(&params[c]);
    if ((st = cu_alloc(be, params_bytes, CU_REQUIRED, (void **)&j.params)) != QK_OK) goto done;
    if ((st = cu_alloc(be, run_bytes, CU_REQUIRED, (void **)&j.run)) != QK_OK) goto done;
    if ((st = cu_alloc(be, clipped_bytes, CU_REQUIRED, (void **)&j.clipped)) != QK_OK) goto done;
    if ((st = cu_alloc(be, counts_bytes, CU_REQUIRED, (void **)&j.counts)) != QK_OK) goto done;
    /* fewer blocks per launch when the device has less room than planned */
    for (;;) {
        partial_bytes = (size_t)nblk * k * 2 * sizeof(double);
        st = cu_alloc(be, partial_bytes, nblk == 1 ? CU_REQUIRED : CU_QUIET, (void **)&j.partial);
        if (st == QK_OK) break;
        if (nblk == 1 || st != QK_ERR_NO_MEMORY) {
            partial_bytes = 0;
            goto done;
        }
        nblk /= 2;
    }
    CU_CHECK(be, st, cudaMemcpyAsync(j.params, hp, params_bytes, cudaMemcpyHostToDevice, cu->compute));
    CU_CHECK(be, st, cudaMemsetAsync(j.run, 0, run_bytes, cu->compute));
    CU_CHECK(be, st, cudaMemsetAsync(j.clipped, 0, clipped_bytes, cu->compute));
    CU_CHECK(be, st, cudaMemsetAsync(j.counts, 0, QK_CU_CNT_FIRST * sizeof(unsigned long long), cu->compute));
    CU_CHECK(be, st, cudaMemsetAsync(j.counts + QK_CU_CNT_FIRST, 0xff, sizeof(unsigned long long), cu->compute));

    st = cu_for_chunks(be, x, NULL, QK_CU_ERROR_BLOCK, nblk * QK_CU_ERROR_BLOCK, error_chunk, &j);
    if (st != QK_OK) goto done;

    CU_CHECK(be, st, cudaMemcpyAsync(hrun, j.run, run_bytes, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaMemcpyAsync(hclip, j.clipped, clipped_bytes, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaMemcpyAsync(hcnt, j.counts, counts_bytes, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu->compute));
    for (size_t c = 0; c < k; c++) {
        sums[c].sse = hrun[2 * c];
        sums[c].sse_inliers = hrun[2 * c + 1];
        sums[c].clipped = (int64_t)hclip[c];
    }
    memset(counts, 0, sizeof *counts);
    counts->n_finite = (int64_t)hcnt[QK_CU_CNT_FINITE];
    counts->n_inliers = (int64_t)hcnt[QK_CU_CNT_INLIERS];
    counts->nonfinite_count = (int64_t)hcnt[QK_CU_CNT_NONFINITE];
    counts->first_nonfinite = counts->nonfinite_count ? (int64_t)hcnt[QK_CU_CNT_FIRST] : -1;
done:;
    qk_status s2 = cu_sync(be);
    if (st == QK_OK) st = s2;
    cu_free(be, j.partial, partial_bytes);
    cu_free(be, j.counts, counts_bytes);
    cu_free(be, j.clipped, clipped_bytes);
    cu_free(be, j.run, run_bytes);
    cu_free(be, j.params, params_bytes);
    free(hp);
    free(hrun);
    free(hclip);
    return st;
}
