/* ggml block formats on OpenCL (ggml.cl over kernels/common/ggml_blocks.h):
 * one work-item per block, the same block functions as the CPU backend (Q8_0
 * and Q4_0: vector kernels, the same operations lane by lane). Host tensors
 * are taken as they are when the device shares host memory (wrapped with
 * CL_MEM_USE_HOST_PTR: no copy in or out; host/ggml.c asks ocl_ggml_host
 * first), device tensors at their offsets. Quantizing checks finiteness in the
 * same pass (a flag the kernels set). */
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

int ocl_ggml_host(qk_backend *base, uint64_t bytes)
{
    const ocl_backend *be = (const ocl_backend *)base;
    return ocl_host_fits(be, bytes) && bytes <= be->max_alloc;
}

/* One side of a launch: a device tensor's cl_mem at its offset (in units of
 * es), or host memory wrapped for the launch. */
typedef struct ggml_side {
    cl_mem mem;
    cl_ulong off;
    int wrapped;
} ggml_side;

static qk_status side_open(ocl_backend *be, const qk_tensor *t, size_t es, cl_mem_flags flags, ggml_side *s)
{
    s->wrapped = t->host != NULL;
    s->off = s->wrapped ? 0 : (cl_ulong)t->offset / es;
    if (!s->wrapped) {
        s->mem = ocl_tensor_mem(t);
        return QK_OK;
    }
    return ocl_wrap_host(be, t->host, (size_t)t->n * qk_dtype_size(t->dtype), flags, &s->mem);
}

/* Mapping a wrapped output is what makes the device's writes visible to the
 * host by the OpenCL memory model (a no-op on PoCL). */
static qk_status side_sync(ocl_backend *be, ggml_side *s, size_t bytes)
{
    cl_int err;
    void *p = clEnqueueMapBuffer(be->queue, s->mem, CL_TRUE, CL_MAP_READ, 0, bytes, 0, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return ocl_fail(be, err, "clEnqueueMapBuffer(output, %zu bytes)", bytes);
    err = clEnqueueUnmapMemObject(be->queue, s->mem, p, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return ocl_fail(be, err, "clEnqueueUnmapMemObject(output)");
    return ocl_finish(be);
}

/* src -> dst by kernel k over count items (blocks, or elements with a kind);
 * bad: the quantize kernels' non-finite flag (NULL for the others). */
static qk_status run(ocl_backend *be, ocl_kernel_id k, const qk_tensor *src, size_t src_es, const qk_tensor *dst,
                     size_t dst_es, cl_ulong count, const cl_int *kind, int *bad)
{
    ggml_side s = {NULL, 0, 0}, d = {NULL, 0, 0};
    cl_mem flag = NULL;
    cl_int zero = 0;
    qk_status st = side_open(be, src, src_es, CL_MEM_READ_ONLY, &s);
    if (st == QK_OK)
        st = side_open(be, dst, dst_es, CL_MEM_WRITE_ONLY, &d);
    if (st == QK_OK && bad) {
        cl_int err;
        flag = clCreateBuffer(be->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zero, &zero, &err);
        if (err != CL_SUCCESS) {
            flag = NULL;
            st = ocl_fail(be, err, "clCreateBuffer(the non-finite flag)");
        }
    }
    if (st == QK_OK) {
        ocl_arg args[6] = {OCL_ARG(s.mem), OCL_ARG(s.off), OCL_ARG(d.mem), OCL_ARG(d.off), OCL_ARG(count)};
        unsigned nargs = 5;
        if (kind)
            args[nargs++] = (ocl_arg){sizeof *kind, kind};
        if (bad)
            args[nargs++] = OCL_ARG(flag);
        st = ocl_launch(be, k, args, nargs, ggml_groups(be, count), ocl_local_size(be), 0, NULL, NULL);
    }
    qk_status fst = ocl_finish(be); /* nothing may still touch wrapped memory once this returns */
    if (st == QK_OK)
        st = fst;
    if (st == QK_OK && d.wrapped)
        st = side_sync(be, &d, (size_t)dst->n * qk_dtype_size(dst->dtype));
    if (st == QK_OK && bad) {
        cl_int v = 0;
        st = ocl_read(be, flag, 0, &v, sizeof v);
        *bad = v != 0;
    }
    ocl_release_mem(&flag);
    if (s.wrapped)
        ocl_release_mem(&s.mem);
    if (d.wrapped)
        ocl_release_mem(&d.mem);
    return st;
}

qk_status ocl_ggml_quantize(qk_backend *base, const qk_tensor *x, int type, qk_tensor *out, int *nonfinite)
{
    ocl_backend *be = (ocl_backend *)base;
    cl_int kind = pass_kind(type);
    *nonfinite = 0;
    if (kind >= 0)
        return run(be, OCL_K_GGML_FROM_F32, x, 4, out, 1, (cl_ulong)x->n, &kind, NULL);
    for (size_t i = 0; i < sizeof k_kinds / sizeof k_kinds[0]; i++)
        if (k_kinds[i].type == type)
            return run(be, k_kinds[i].quant, x, 4, out, 1, (cl_ulong)(x->n / k_kinds[i].elems), NULL, nonfinite);
    return qk_set_error(base->ctx, QK_ERR_UNSUPPORTED, "opencl: ggml type %d is not supported", type);
}

qk_status ocl_ggml_dequantize(qk_backend *base, const qk_tensor *in, int type, qk_tensor *out)
{
    ocl_backend *be = (ocl_backend *)base;
    cl_int kind = pass_kind(type);
    if (kind >= 0)
        return run(be, OCL_K_GGML_TO_F32, in, 1, out, 4, (cl_ulong)out->n, &kind, NULL);
    for (size_t i = 0; i < sizeof k_kinds / sizeof k_kinds[0]; i++)
        if (k_kinds[i].type == type)
            return run(be, k_kinds[i].dequant, in, 1, out, 4, (cl_ulong)(out->n / k_kinds[i].elems), NULL, NULL);
    return qk_set_error(base->ctx, QK_ERR_UNSUPPORTED, "opencl: ggml type %d is not supported", type);
}
