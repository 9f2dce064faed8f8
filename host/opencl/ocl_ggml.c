/* ggml block formats on OpenCL (ggml.cl over kernels/common/ggml_blocks.h):
 * one work-item per block, the same block functions as the CPU backend. */
#include "ocl.h"

#include "../../kernels/common/ggml_blocks.h"

typedef struct ocl_ggml_kind {
    int type;
    int elems, bytes;
    ocl_kernel_id quant, dequant;
} ocl_ggml_kind;

static const ocl_ggml_kind k_kinds[] = {
    {QKG_Q4_0, QKG_QK, QKG_BYTES_Q4_0, OCL_K_GGML_QUANT_Q4_0, OCL_K_GGML_DEQUANT_Q4_0},
    {QKG_Q4_1, QKG_QK, QKG_BYTES_Q4_1, OCL_K_GGML_QUANT_Q4_1, OCL_K_GGML_DEQUANT_Q4_1},
    {QKG_Q5_0, QKG_QK, QKG_BYTES_Q5_0, OCL_K_GGML_QUANT_Q5_0, OCL_K_GGML_DEQUANT_Q5_0},
    {QKG_Q5_1, QKG_QK, QKG_BYTES_Q5_1, OCL_K_GGML_QUANT_Q5_1, OCL_K_GGML_DEQUANT_Q5_1},
    {QKG_Q8_0, QKG_QK, QKG_BYTES_Q8_0, OCL_K_GGML_QUANT_Q8_0, OCL_K_GGML_DEQUANT_Q8_0},
    {QKG_Q2_K, QKG_QK_K, QKG_BYTES_Q2_K, OCL_K_GGML_QUANT_Q2_K, OCL_K_GGML_DEQUANT_Q2_K},
    {QKG_Q3_K, QKG_QK_K, QKG_BYTES_Q3_K, OCL_K_GGML_QUANT_Q3_K, OCL_K_GGML_DEQUANT_Q3_K},
    {QKG_Q4_K, QKG_QK_K, QKG_BYTES_Q4_K, OCL_K_GGML_QUANT_Q4_K, OCL_K_GGML_DEQUANT_Q4_K},
    {QKG_Q5_K, QKG_QK_K, QKG_BYTES_Q5_K, OCL_K_GGML_QUANT_Q5_K, OCL_K_GGML_DEQUANT_Q5_K},
    {QKG_Q6_K, QKG_QK_K, QKG_BYTES_Q6_K, OCL_K_GGML_QUANT_Q6_K, OCL_K_GGML_DEQUANT_Q6_K},
};

/* Work-groups for `items` independent items: CPU style, a few work-items per
 * compute unit (each strides over many blocks); GPU style, one item per
 * work-item up to a grid that fills the device, the rest by striding. */
static size_t ggml_groups(const ocl_backend *be, uint64_t items)
{
    uint64_t cu = be->compute_units ? be->compute_units : 1;
    uint64_t g = be->gpu_style ? (items + QK_OCL_GPU_WG - 1) / QK_OCL_GPU_WG : cu * 4;
    uint64_t cap = be->gpu_style ? cu * 64 : items;
    if (g > cap)
        g = cap;
    return g ? (size_t)g : 1;
}

/* The half/bfloat16/float32 pass-through kinds of ggml.cl. */
static int pass_kind(int type)
{
    return type == QKG_F32 ? 0 : type == QKG_F16 ? 1 : type == QKG_BF16 ? 2 : -1;
}

static qk_status run(ocl_backend *be, ocl_kernel_id k, const qk_tensor *src, cl_ulong soff, const qk_tensor *dst,
                     cl_ulong doff, cl_ulong count, const cl_int *kind)
{
    cl_mem s = ocl_tensor_mem(src), d = ocl_tensor_mem(dst);
    ocl_arg args[6] = {OCL_ARG(s), OCL_ARG(soff), OCL_ARG(d), OCL_ARG(doff), OCL_ARG(count)};
    unsigned nargs = 5;
    if (kind)
        args[nargs++] = (ocl_arg){sizeof *kind, kind};
    qk_status st = ocl_launch(be, k, args, nargs, ggml_groups(be, count), ocl_local_size(be), 0, NULL, NULL);
    return st == QK_OK ? ocl_finish(be) : st;
}

qk_status ocl_ggml_quantize(qk_backend *base, const qk_tensor *x, int type, qk_tensor *out)
{
    ocl_backend *be = (ocl_backend *)base;
    cl_ulong xoff = (cl_ulong)x->offset / 4, yoff = (cl_ulong)out->offset;
    cl_int kind = pass_kind(type);
    if (kind >= 0)
        return run(be, OCL_K_GGML_FROM_F32, x, xoff, out, yoff, (cl_ulong)x->n, &kind);
    for (size_t i = 0; i < sizeof k_kinds / sizeof k_kinds[0]; i++)
        if (k_kinds[i].type == type)
            return run(be, k_kinds[i].quant, x, xoff, out, yoff, (cl_ulong)(x->n / k_kinds[i].elems), NULL);
    return qk_set_error(base->ctx, QK_ERR_UNSUPPORTED, "opencl: ggml type %d is not supported", type);
}

qk_status ocl_ggml_dequantize(qk_backend *base, const qk_tensor *in, int type, qk_tensor *out)
{
    ocl_backend *be = (ocl_backend *)base;
    cl_ulong yoff = (cl_ulong)in->offset, xoff = (cl_ulong)out->offset / 4;
    cl_int kind = pass_kind(type);
    if (kind >= 0)
        return run(be, OCL_K_GGML_TO_F32, in, yoff, out, xoff, (cl_ulong)out->n, &kind);
    for (size_t i = 0; i < sizeof k_kinds / sizeof k_kinds[0]; i++)
        if (k_kinds[i].type == type)
            return run(be, k_kinds[i].dequant, in, yoff, out, xoff, (cl_ulong)(out->n / k_kinds[i].elems), NULL);
    return qk_set_error(base->ctx, QK_ERR_UNSUPPORTED, "opencl: ggml type %d is not supported", type);
}
