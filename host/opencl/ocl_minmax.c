/* Exact min/max: per-work-group records from qk_minmax32/64 (minmax.cl), read
 * back per span without waiting, combined on the host in index order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../cpu/cpu_keys.h"
#include "ocl.h"

typedef struct minmax_job {
    int wide;            /* float64 */
    size_t max_parts;    /* records per span slot */
    cl_mem records;      /* device: one span's records */
    uint64_t *host;      /* host: every span's records */
    int *parts;          /* records written per span */
} minmax_job;

static qk_status minmax_span(ocl_backend *be, ocl_span *sp, void *user)
{
    minmax_job *job = user;
    size_t parts = ocl_parts(be, (uint64_t)sp->n);
    cl_ulong off = sp->in_off, n = (cl_ulong)sp->n;
    ocl_arg args[] = {OCL_ARG(sp->in), OCL_ARG(off), OCL_ARG(n), OCL_ARG(job->records)};
    cl_event ran = NULL;
    qk_status st = ocl_launch(be, job->wide ? OCL_K_MINMAX64 : OCL_K_MINMAX32, args, 4, parts, ocl_local_size(be),
                              sp->nwait, sp->wait, &ran);
    if (st != QK_OK) return st;
    job->parts[sp->index] = (int)parts;
    size_t bytes = parts * QK_OCL_MM_REC * sizeof(uint64_t);
    cl_int err = clEnqueueReadBuffer(be->queue, job->records, CL_FALSE, 0, bytes,
                                     job->host + (size_t)sp->index * job->max_parts * QK_OCL_MM_REC, 1, &ran,
                                     &sp->done);
    clReleaseEvent(ran);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueReadBuffer(minmax records)");
    return QK_OK;
}

qk_status ocl_minmax(qk_backend *base, const qk_tensor *x, qk_minmax_result *out)
{
    ocl_backend *be = ocl_of(base);
    minmax_job job = {x->dtype == QK_F64, 0, NULL, NULL, NULL};
    int64_t span = ocl_stream_span_length(be, x, NULL);
    size_t nspans = (size_t)((x->n + span - 1) / span);
    job.max_parts = ocl_parts(be, (uint64_t)(span < x->n ? span : x->n));
    job.host = malloc(nspans * job.max_parts * QK_OCL_MM_REC * sizeof *job.host);
    job.parts = calloc(nspans, sizeof *job.parts);
    qk_status st = QK_OK;
    if (!job.host || !job.parts) st = qk_set_error(base->ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    if (st == QK_OK) st = ocl_alloc(be, job.max_parts * QK_OCL_MM_REC * sizeof(uint64_t), CL_MEM_WRITE_ONLY, &job.records);
    if (st == QK_OK) st = ocl_stream(be, x, NULL, minmax_span, &job);
    if (st == QK_OK) {
        uint64_t kmin = UINT64_MAX, kmax = 0, bad = 0, count = 0, first = QK_OCL_NONE;
        for (size_t s = 0; s < nspans; s++) {
            for (int p = 0; p < job.parts[s]; p++) {
                const uint64_t *r = job.host + (s * job.max_parts + (size_t)p) * QK_OCL_MM_REC;
                if (r[4] > r[2]) { /* the part has finite elements */
                    if (r[0] < kmin) kmin = r[0];
                    if (r[1] > kmax) kmax = r[1];
                }
                if (r[2] && first == QK_OCL_NONE) first = (uint64_t)s * (uint64_t)span + r[3];
                bad += r[2];
                count += r[4];
            }
        }
        memset(out, 0, sizeof *out);
        out->n_finite = (int64_t)(count - bad);
        out->nonfinite_count = (int64_t)bad;
        out->first_nonfinite = bad ? (int64_t)first : -1;
        if (out->n_finite) {
            out->min = qk_key_value(kmin, job.wide);
            out->max = qk_key_value(kmax, job.wide);
            out->absmax = fmax(fabs(out->min), fabs(out->max));
        }
    }
    ocl_release_mem(&job.records);
    free(job.host);
    free(job.parts);
    return st;
}
