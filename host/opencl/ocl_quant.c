/* Quantize and dequantize: one kernel per span, input and output streamed
 * together (quantize.cl, dequantize.cl). The host picks the exact fast path
 * when the numbers allow it (see the kernels' comments). */
#include <stdlib.h>

#include "ocl.h"

typedef struct quant_job {
    ocl_kernel_id kernel;
    cl_float scale, lo, hi;
    cl_int zp, qmin, qmax, fast;
} quant_job;

static qk_status quant_span(ocl_backend *be, ocl_span *sp, void *user)
{
    quant_job *j = user;
    cl_ulong in_off = sp->in_off, n = (cl_ulong)sp->n, out_off = sp->out_off;
    ocl_arg args[] = {OCL_ARG(sp->in), OCL_ARG(in_off), OCL_ARG(n),    OCL_ARG(sp->out), OCL_ARG(out_off),
                      OCL_ARG(j->scale), OCL_ARG(j->zp),  OCL_ARG(j->qmin), OCL_ARG(j->qmax),  OCL_ARG(j->lo),
                      OCL_ARG(j->hi),    OCL_ARG(j->fast)};
    return ocl_launch(be, j->kernel, args, 12, ocl_parts(be, (uint64_t)sp->n), ocl_local_size(be), sp->nwait,
                      sp->wait, &sp->done);
}

int ocl_code_index(qk_dtype dt)
{
    switch (dt) {
    case QK_U8: return 0;
    case QK_I8: return 1;
    case QK_U16: return 2;
    case QK_I16: return 3;
    default: return 4;
    }
}

qk_status ocl_quantize(qk_backend *base, const qk_tensor *x, const qk_qparams *p, qk_tensor *codes)
{
    ocl_backend *be = ocl_of(base);
    if (x->dtype == QK_F64 && !be->fp64) {
        return qk_set_error(base->ctx, QK_ERR_UNSUPPORTED,
                            "opencl: float64 input needs a device with cl_khr_fp64 (double division); \"%s\" has "
                            "none: convert to float32 or use the cpu backend", be->info.name);
    }
    quant_job j;
    j.kernel = (ocl_kernel_id)((x->dtype == QK_F64 ? OCL_K_QUANT_F64_U8 : OCL_K_QUANT_F32_U8) +
                               ocl_code_index(codes->dtype));
    j.scale = p->scale;
    j.zp = p->zero_point;
    j.qmin = p->qmin;
    j.qmax = p->qmax;
    int64_t lo = (int64_t)p->qmin - p->zero_point, hi = (int64_t)p->qmax - p->zero_point;
    /* In float, every integer up to 2^24 is exact: then clamping in float is exact. */
    j.fast = llabs(lo) <= (1 << 24) && llabs(hi) <= (1 << 24);
    j.lo = (cl_float)lo;
    j.hi = (cl_float)hi;
    return ocl_stream(be, x, codes, quant_span, &j);
}

typedef struct dequant_job {
    ocl_kernel_id kernel;
    cl_float scale;
    cl_int zp, fast;
} dequant_job;

static qk_status dequant_span(ocl_backend *be, ocl_span *sp, void *user)
{
    dequant_job *j = user;
    cl_ulong in_off = sp->in_off, n = (cl_ulong)sp->n, out_off = sp->out_off;
    ocl_arg args[] = {OCL_ARG(sp->in),  OCL_ARG(in_off), OCL_ARG(n),     OCL_ARG(sp->out),
                      OCL_ARG(out_off), OCL_ARG(j->scale), OCL_ARG(j->zp), OCL_ARG(j->fast)};
    return ocl_launch(be, j->kernel, args, 8, ocl_parts(be, (uint64_t)sp->n), ocl_local_size(be), sp->nwait,
                      sp->wait, &sp->done);
}

qk_status ocl_dequantize(qk_backend *base, const qk_tensor *codes, const qk_qparams *p, qk_tensor *out)
{
    dequant_job j;
    j.kernel = (ocl_kernel_id)(OCL_K_DEQUANT_U8 + ocl_code_index(codes->dtype));
    j.scale = p->scale;
    j.zp = p->zero_point;
    /* codes of at most 16 bits and |zp| <= 2^23: q - zp fits 24 bits, exact in int and float */
    j.fast = codes->dtype != QK_I32 && llabs((long long)p->zero_point) <= (1 << 23);
    return ocl_stream(ocl_of(base), codes, out, dequant_span, &j);
}
