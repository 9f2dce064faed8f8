/* The fused error pass (error.cl): k parameter sets in one pass over the data.
 * Per span the kernel writes one result per super-block (65536 elements) and
 * candidate; the reads run without waiting, and the host adds the super-block
 * sums in index order at the end. That fixed structure is why the result does
 * not depend on spans, chunks, launch shapes or runs. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

/* Host memory for per-super-block results and the device's per-span copy stay
 * bounded: very many candidates on a huge tensor take several passes. */
#define QK_ERR_HOST_BYTES ((size_t)64 << 20)
#define QK_ERR_DEVICE_BYTES ((size_t)32 << 20)
#define QK_ERR_RESULT_BYTES (2 * sizeof(double) + sizeof(uint32_t))

typedef struct error_job {
    ocl_kernel_id kernel;
    cl_uint k;
    cl_mem prm, prmd;
    cl_float flo, fhi;
    cl_double flo_d, fhi_d;
    cl_int fences;
    cl_mem d_sse, d_in, d_clip, d_cnt;
    double *h_sse, *h_in;
    uint32_t *h_clip;
    uint64_t *h_cnt;
} error_job;

/* The smallest float >= d and the largest float <= d: x < d and x < ceil(d) agree
 * for every float x (likewise x > d and x > floor(d)), so float32 data compares
 * in float with the very answers of a double comparison. */
float ocl_float_ceil(double d)
{
    if (d > FLT_MAX) return INFINITY;
    if (d < -FLT_MAX) return d == -INFINITY ? -INFINITY : -FLT_MAX;
    float f = (float)d;
    return (double)f < d ? nextafterf(f, INFINITY) : f;
}

float ocl_float_floor(double d)
{
    if (d < -FLT_MAX) return -INFINITY;
    if (d > FLT_MAX) return d == INFINITY ? INFINITY : FLT_MAX;
    float f = (float)d;
    return (double)f > d ? nextafterf(f, -INFINITY) : f;
}

void ocl_pack_error_params(const qk_qparams *q, cl_float *pf, cl_double *pd)
{
    int64_t lo = (int64_t)q->qmin - q->zero_point, hi = (int64_t)q->qmax - q->zero_point;
    memset(pf, 0, 8 * sizeof *pf);
    pf[0] = q->scale;
    pf[1] = (cl_float)lo; /* rounded to nearest: see error.cl */
    pf[2] = (cl_float)hi;
    pf[3] = ocl_float_ceil(q->clip_lo);
    pf[4] = ocl_float_floor(q->clip_hi);
    if (pd) {
        pd[0] = (double)lo;
        pd[1] = (double)hi;
        pd[2] = q->clip_lo;
        pd[3] = q->clip_hi;
    }
}

static qk_status error_span(ocl_backend *be, ocl_span *sp, void *user)
{
    error_job *j = user;
    uint64_t nsb = ((uint64_t)sp->n + QK_OCL_SB - 1) / QK_OCL_SB, sb0 = (uint64_t)sp->start / QK_OCL_SB;
    cl_ulong off = sp->in_off, n = (cl_ulong)sp->n;
    ocl_arg args[] = {OCL_ARG(sp->in),  OCL_ARG(off),     OCL_ARG(n),         OCL_ARG(j->prm),   OCL_ARG(j->prmd),
                      OCL_ARG(j->k),    OCL_ARG(j->flo),  OCL_ARG(j->fhi),    OCL_ARG(j->flo_d), OCL_ARG(j->fhi_d),
                      OCL_ARG(j->fences), OCL_ARG(j->d_sse), OCL_ARG(j->d_in), OCL_ARG(j->d_clip), OCL_ARG(j->d_cnt)};
    size_t groups, local;
    if (be->gpu_style || !be->fp64) { /* (without fp64 only this form exists, error.cl) */
        groups = (size_t)nsb; /* a work-group per super-block: its 16 blocks x 8 lanes */
        local = ocl_local_size(be) < QK_OCL_ERR_LANES ? ocl_local_size(be) : QK_OCL_ERR_LANES;
    } else {
        size_t parts = (size_t)be->compute_units * 4;
        groups = nsb < parts ? (size_t)nsb : parts;
        local = 1;
    }
    cl_event ran = NULL;
    qk_status st = ocl_launch(be, j->kernel, args, 15, groups, local, sp->nwait, sp->wait, &ran);
    if (st != QK_OK) return st;
    size_t nk = (size_t)nsb * j->k;
    struct {
        cl_mem mem;
        void *dst;
        size_t bytes;
    } reads[4] = {{j->d_sse, j->h_sse + sb0 * j->k, nk * sizeof(double)},
                  {j->d_in, j->h_in + sb0 * j->k, nk * sizeof(double)},
                  {j->d_clip, j->h_clip + sb0 * j->k, nk * sizeof(uint32_t)},
                  {j->d_cnt, j->h_cnt + sb0 * 4, (size_t)nsb * 4 * sizeof(uint64_t)}};
    for (int r = 0; r < 4; r++) {
        cl_int err = clEnqueueReadBuffer(be->queue, reads[r].mem, CL_FALSE, 0, reads[r].bytes, reads[r].dst, 1, &ran,
                                         r == 3 ? &sp->done : NULL);
        if (err != CL_SUCCESS) {
            clReleaseEvent(ran);
            return ocl_fail(be, err, "clEnqueueReadBuffer(error sums)");
        }
    }
    clReleaseEvent(ran);
    return QK_OK;
}

/* One pass for candidates [c0, c0 + kb). */
static qk_status error_batch(ocl_backend *be, const qk_tensor *x, const qk_qparams *params, size_t c0, size_t kb,
                             error_job *j, uint64_t total_sb, qk_error_sums *sums, qk_error_counts *counts)
{
    cl_float *prm = calloc(kb * 8, sizeof *prm);
    cl_double *prmd = calloc(kb * 4, sizeof *prmd);
    qk_status st = QK_OK;
    if (!prm || !prmd) st = qk_set_error(be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    for (size_t c = 0; st == QK_OK && c < kb; c++) ocl_pack_error_params(&params[c0 + c], prm + 8 * c, prmd + 4 * c);
    j->k = (cl_uint)kb;
    if (st == QK_OK) st = ocl_alloc(be, kb * 8 * sizeof *prm, CL_MEM_READ_ONLY, &j->prm);
    if (st == QK_OK) st = ocl_alloc(be, kb * 4 * sizeof *prmd, CL_MEM_READ_ONLY, &j->prmd);
    if (st == QK_OK) st = ocl_write(be, j->prm, 0, prm, kb * 8 * sizeof *prm);
    if (st == QK_OK) st = ocl_write(be, j->prmd, 0, prmd, kb * 4 * sizeof *prmd);
    if (st == QK_OK) st = ocl_stream(be, x, NULL, error_span, j);
    if (st == QK_OK) {
        for (size_t c = 0; c < kb; c++) {
            double sse = 0.0, sse_in = 0.0;
            int64_t clipped = 0;
            for (uint64_t s = 0; s < total_sb; s++) {
                sse += j->h_sse[s * kb + c];
                sse_in += j->h_in[s * kb + c];
                clipped += j->h_clip[s * kb + c];
            }
            sums[c0 + c].sse = sse;
            sums[c0 + c].sse_inliers = sse_in;
            sums[c0 + c].clipped = clipped;
        }
        if (c0 == 0) {
            memset(counts, 0, sizeof *counts);
            counts->first_nonfinite = -1;
            for (uint64_t s = 0; s < total_sb; s++) {
                const uint64_t *r = j->h_cnt + 4 * s;
                counts->n_finite += (int64_t)r[0];
                counts->n_inliers += (int64_t)r[1];
                counts->nonfinite_count += (int64_t)r[2];
                if (r[2] && counts->first_nonfinite < 0) counts->first_nonfinite = (int64_t)(s * QK_OCL_SB + r[3]);
            }
        }
    }
    ocl_release_mem(&j->prm);
    ocl_release_mem(&j->prmd);
    free(prm);
    free(prmd);
    return st;
}

qk_status ocl_error(qk_backend *base, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                    double fence_hi, qk_error_sums *sums, qk_error_counts *counts)
{
    ocl_backend *be = ocl_of(base);
    if (!be->fp64 && x->dtype == QK_F64) {
        return qk_set_error(base->ctx, QK_ERR_UNSUPPORTED,
                            "opencl: float64 input needs cl_khr_fp64, which \"%s\" lacks: use another device "
                            "(QKERN_DEVICE) or the cpu backend", be->info.name);
    }
    error_job j;
    memset(&j, 0, sizeof j);
    j.kernel = x->dtype == QK_F64 ? OCL_K_ERROR_F64 : OCL_K_ERROR_F32;
    j.fences = !(fence_lo == -INFINITY && fence_hi == INFINITY);
    j.flo = ocl_float_ceil(fence_lo);
    j.fhi = ocl_float_floor(fence_hi);
    j.flo_d = fence_lo;
    j.fhi_d = fence_hi;
    uint64_t total_sb = ((uint64_t)x->n + QK_OCL_SB - 1) / QK_OCL_SB;
    uint64_t span_sb = ((uint64_t)ocl_stream_span_length(be, x, NULL) + QK_OCL_SB - 1) / QK_OCL_SB;
    if (span_sb > total_sb) span_sb = total_sb;
    size_t kb = k;
    size_t host_cap = QK_ERR_HOST_BYTES / ((size_t)total_sb * QK_ERR_RESULT_BYTES);
    size_t dev_cap = QK_ERR_DEVICE_BYTES / ((size_t)span_sb * QK_ERR_RESULT_BYTES);
    if (kb > host_cap) kb = host_cap;
    if (kb > dev_cap) kb = dev_cap;
    if (kb == 0) kb = 1;

    qk_status st = QK_OK;
    j.h_sse = malloc((size_t)total_sb * kb * sizeof *j.h_sse);
    j.h_in = malloc((size_t)total_sb * kb * sizeof *j.h_in);
    j.h_clip = malloc((size_t)total_sb * kb * sizeof *j.h_clip);
    j.h_cnt = malloc((size_t)total_sb * 4 * sizeof *j.h_cnt);
    if (!j.h_sse || !j.h_in || !j.h_clip || !j.h_cnt) {
        st = qk_set_error(base->ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory for %zu error sums",
                          (size_t)total_sb * kb);
    }
    /* read-write: the CPU-style kernel adds into its super-block's slots (a
     * kernel read of a write-only buffer is undefined) */
    if (st == QK_OK) st = ocl_alloc(be, (size_t)span_sb * kb * sizeof(double), CL_MEM_READ_WRITE, &j.d_sse);
    if (st == QK_OK) st = ocl_alloc(be, (size_t)span_sb * kb * sizeof(double), CL_MEM_READ_WRITE, &j.d_in);
    if (st == QK_OK) st = ocl_alloc(be, (size_t)span_sb * kb * sizeof(uint32_t), CL_MEM_READ_WRITE, &j.d_clip);
    if (st == QK_OK) st = ocl_alloc(be, (size_t)span_sb * 4 * sizeof(uint64_t), CL_MEM_READ_WRITE, &j.d_cnt);
    for (size_t c0 = 0; st == QK_OK && c0 < k; c0 += kb) {
        st = error_batch(be, x, params, c0, k - c0 < kb ? k - c0 : kb, &j, total_sb, sums, counts);
    }
    ocl_release_mem(&j.d_sse);
    ocl_release_mem(&j.d_in);
    ocl_release_mem(&j.d_clip);
    ocl_release_mem(&j.d_cnt);
    free(j.h_sse);
    free(j.h_in);
    free(j.h_clip);
    free(j.h_cnt);
    return st;
}
