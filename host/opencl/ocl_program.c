/* The program: the embedded kernels/opencl/ *.cl sources (generated into the
 * build directory by cmake/opencl.cmake), built once per context for its
 * device, with every kernel created up front so a failure shows at context
 * creation, not in the middle of an operation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

/* Defined by the generated qk_opencl_sources.c, in cmake/opencl.cmake's order. */
extern const char *const qk_ocl_sources[];
extern const size_t qk_ocl_source_sizes[];
extern const unsigned qk_ocl_source_count;

static const char *const kernel_names[OCL_K_COUNT] = {
    [OCL_K_MINMAX32] = "qk_minmax32",
    [OCL_K_MINMAX64] = "qk_minmax64",
    [OCL_K_HIST32] = "qk_hist32",
    [OCL_K_HIST64] = "qk_hist64",
    [OCL_K_HIST_REDUCE] = "qk_hist_reduce",
    [OCL_K_COMPACT32] = "qk_compact32",
    [OCL_K_COMPACT64] = "qk_compact64",
    [OCL_K_PREFILTER32_2] = "qk_prefilter32_2",
    [OCL_K_PREFILTER32_4] = "qk_prefilter32_4",
    [OCL_K_PREFILTER32_8] = "qk_prefilter32_8",
    [OCL_K_PREFILTER64_2] = "qk_prefilter64_2",
    [OCL_K_PREFILTER64_4] = "qk_prefilter64_4",
    [OCL_K_PREFILTER64_8] = "qk_prefilter64_8",
    [OCL_K_GATHER32] = "qk_gather32",
    [OCL_K_GATHER64] = "qk_gather64",
    [OCL_K_QUANT_F32_U8] = "qk_quantize_f32_u8",
    [OCL_K_QUANT_F32_I8] = "qk_quantize_f32_i8",
    [OCL_K_QUANT_F32_U16] = "qk_quantize_f32_u16",
    [OCL_K_QUANT_F32_I16] = "qk_quantize_f32_i16",
    [OCL_K_QUANT_F32_I32] = "qk_quantize_f32_i32",
    [OCL_K_QUANT_F64_U8] = "qk_quantize_f64_u8",
    [OCL_K_QUANT_F64_I8] = "qk_quantize_f64_i8",
    [OCL_K_QUANT_F64_U16] = "qk_quantize_f64_u16",
    [OCL_K_QUANT_F64_I16] = "qk_quantize_f64_i16",
    [OCL_K_QUANT_F64_I32] = "qk_quantize_f64_i32",
    [OCL_K_DEQUANT_U8] = "qk_dequantize_u8",
    [OCL_K_DEQUANT_I8] = "qk_dequantize_i8",
    [OCL_K_DEQUANT_U16] = "qk_dequantize_u16",
    [OCL_K_DEQUANT_I16] = "qk_dequantize_i16",
    [OCL_K_DEQUANT_I32] = "qk_dequantize_i32",
    [OCL_K_ERROR_F32] = "qk_error_f32",
    [OCL_K_ERROR_F64] = "qk_error_f64",
    [OCL_K_SEG_MINMAX32] = "qk_seg_minmax32",
    [OCL_K_SEG_MINMAX64] = "qk_seg_minmax64",
    [OCL_K_SEG_SELECT32] = "qk_seg_select32",
    [OCL_K_SEG_SELECT64] = "qk_seg_select64",
    [OCL_K_SEG_QUANT_F32_U8] = "qk_seg_quantize_f32_u8",
    [OCL_K_SEG_QUANT_F32_I8] = "qk_seg_quantize_f32_i8",
    [OCL_K_SEG_QUANT_F32_U16] = "qk_seg_quantize_f32_u16",
    [OCL_K_SEG_QUANT_F32_I16] = "qk_seg_quantize_f32_i16",
    [OCL_K_SEG_QUANT_F32_I32] = "qk_seg_quantize_f32_i32",
    [OCL_K_SEG_QUANT_F64_U8] = "qk_seg_quantize_f64_u8",
    [OCL_K_SEG_QUANT_F64_I8] = "qk_seg_quantize_f64_i8",
    [OCL_K_SEG_QUANT_F64_U16] = "qk_seg_quantize_f64_u16",
    [OCL_K_SEG_QUANT_F64_I16] = "qk_seg_quantize_f64_i16",
    [OCL_K_SEG_QUANT_F64_I32] = "qk_seg_quantize_f64_i32",
    [OCL_K_SEG_DEQUANT_U8] = "qk_seg_dequantize_u8",
    [OCL_K_SEG_DEQUANT_I8] = "qk_seg_dequantize_i8",
    [OCL_K_SEG_DEQUANT_U16] = "qk_seg_dequantize_u16",
    [OCL_K_SEG_DEQUANT_I16] = "qk_seg_dequantize_i16",
    [OCL_K_SEG_DEQUANT_I32] = "qk_seg_dequantize_i32",
    [OCL_K_SEG_ERROR_F32] = "qk_seg_error_f32",
    [OCL_K_SEG_ERROR_F64] = "qk_seg_error_f64",
    [OCL_K_WIDEN] = "qk_widen",
    [OCL_K_GGML_QUANT_Q4_0] = "qk_ggml_quantize_q4_0",
    [OCL_K_GGML_QUANT_Q4_1] = "qk_ggml_quantize_q4_1",
    [OCL_K_GGML_QUANT_Q5_0] = "qk_ggml_quantize_q5_0",
    [OCL_K_GGML_QUANT_Q5_1] = "qk_ggml_quantize_q5_1",
    [OCL_K_GGML_QUANT_Q8_0] = "qk_ggml_quantize_q8_0",
    [OCL_K_GGML_QUANT_Q2_K] = "qk_ggml_quantize_q2_k",
    [OCL_K_GGML_QUANT_Q3_K] = "qk_ggml_quantize_q3_k",
    [OCL_K_GGML_QUANT_Q4_K] = "qk_ggml_quantize_q4_k",
    [OCL_K_GGML_QUANT_Q5_K] = "qk_ggml_quantize_q5_k",
    [OCL_K_GGML_QUANT_Q6_K] = "qk_ggml_quantize_q6_k",
    [OCL_K_GGML_DEQUANT_Q4_0] = "qk_ggml_dequantize_q4_0",
    [OCL_K_GGML_DEQUANT_Q4_1] = "qk_ggml_dequantize_q4_1",
    [OCL_K_GGML_DEQUANT_Q5_0] = "qk_ggml_dequantize_q5_0",
    [OCL_K_GGML_DEQUANT_Q5_1] = "qk_ggml_dequantize_q5_1",
    [OCL_K_GGML_DEQUANT_Q8_0] = "qk_ggml_dequantize_q8_0",
    [OCL_K_GGML_DEQUANT_Q2_K] = "qk_ggml_dequantize_q2_k",
    [OCL_K_GGML_DEQUANT_Q3_K] = "qk_ggml_dequantize_q3_k",
    [OCL_K_GGML_DEQUANT_Q4_K] = "qk_ggml_dequantize_q4_k",
    [OCL_K_GGML_DEQUANT_Q5_K] = "qk_ggml_dequantize_q5_k",
    [OCL_K_GGML_DEQUANT_Q6_K] = "qk_ggml_dequantize_q6_k",
    [OCL_K_GGML_FROM_F32] = "qk_ggml_from_f32",
    [OCL_K_GGML_TO_F32] = "qk_ggml_to_f32",
};

/* Kernels that exist only with cl_khr_fp64 (qk_error_f32 has a software-double
 * form without it, error.cl). */
static int needs_fp64(ocl_kernel_id id)
{
    return (id >= OCL_K_QUANT_F64_U8 && id <= OCL_K_QUANT_F64_I32) || id == OCL_K_ERROR_F64 || (id >= OCL_K_SEG_QUANT_F64_U8 && id <= OCL_K_SEG_QUANT_F64_I32) ||
           id == OCL_K_SEG_ERROR_F32 || id == OCL_K_SEG_ERROR_F64;
}

const char *ocl_kernel_name(ocl_kernel_id id)
{
    return (unsigned)id < OCL_K_COUNT ? kernel_names[id] : "?";
}

/* The build log, cut to what fits a one-line message: the error lines first
 * (PoCL prints many harmless warnings before them). */
static void build_log_summary(ocl_backend *be, char *dst, size_t cap)
{
    dst[0] = '\0';
    size_t need = 0;
    if (clGetProgramBuildInfo(be->program, be->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &need) != CL_SUCCESS ||
        need == 0) {
        return;
    }
    char *log = malloc(need + 1);
    if (!log) return;
    if (clGetProgramBuildInfo(be->program, be->device, CL_PROGRAM_BUILD_LOG, need, log, NULL) == CL_SUCCESS) {
        log[need] = '\0';
        size_t used = 0;
        for (char *line = log; *line && used + 1 < cap;) {
            char *end = strchr(line, '\n');
            if (end) *end = '\0';
            if (strstr(line, "error")) {
                int w = snprintf(dst + used, cap - used, "%s%s", used ? " | " : "", line);
                if (w < 0) break;
                used += (size_t)w;
            }
            if (!end) break;
            line = end + 1;
        }
        if (used == 0) snprintf(dst, cap, "%s", log);
    }
    free(log);
}

/* One build of the program with the given work-group size and rounding
 * builtin; every kernel created. *min_wg gets the smallest
 * CL_KERNEL_WORK_GROUP_SIZE over the kernels. On failure the program and
 * kernels are released and the error is set on the context. */
static qk_status build_once(ocl_backend *be, size_t wg, int roundeven, size_t *min_wg)
{
    cl_int err;
    be->program = clCreateProgramWithSource(be->context, qk_ocl_source_count, (const char **)qk_ocl_sources,
                                            qk_ocl_source_sizes, &err);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clCreateProgramWithSource");
    /* Exactness: correctly rounded division (promised by the device, or made so
     * by common.cl's QK_DIV_MODE), no fast-math flags (docs/numerics.md). The spec makes
     * -cl-fp32-correctly-rounded-divide-sqrt a build error where the device does
     * not promise it, so it is passed only where it does. */
    char options[256];
    snprintf(options, sizeof options, "-cl-std=CL1.2%s -DQK_WG=%zu -DQK_FP64=%d -DQK_DIV_MODE=%d%s",
             be->div_mode == 0 ? " -cl-fp32-correctly-rounded-divide-sqrt" : "", wg, be->fp64 ? 1 : 0,
             be->div_mode, roundeven ? "" : " -DQK_NO_ROUNDEVEN");
    err = clBuildProgram(be->program, 1, &be->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        char log[600];
        build_log_summary(be, log, sizeof log);
        qk_status st = qk_set_error(be->base.ctx, QK_ERR_BACKEND,
                                    "opencl: clBuildProgram failed on \"%s\": %s (%d); build log: %s",
                                    be->info.name, ocl_error_name(err), (int)err, log[0] ? log : "(empty)");
        ocl_program_release(be);
        return st;
    }
    *min_wg = SIZE_MAX;
    for (int i = 0; i < OCL_K_COUNT; i++) {
        if (!be->fp64 && needs_fp64((ocl_kernel_id)i)) continue;
        be->kernels[i] = clCreateKernel(be->program, kernel_names[i], &err);
        if (err != CL_SUCCESS) {
            qk_status st = ocl_fail(be, err, "clCreateKernel(%s)", kernel_names[i]);
            ocl_program_release(be);
            return st;
        }
        size_t can = 0;
        err = clGetKernelWorkGroupInfo(be->kernels[i], be->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof can, &can, NULL);
        if (err != CL_SUCCESS) {
            qk_status st = ocl_fail(be, err, "clGetKernelWorkGroupInfo(%s)", kernel_names[i]);
            ocl_program_release(be);
            return st;
        }
        if (can < *min_wg) *min_wg = can;
    }
    return QK_OK;
}

static size_t pow2_floor(size_t v)
{
    size_t p = 1;
    while (p <= v / 2) p *= 2;
    return p;
}

qk_status ocl_program_build(ocl_backend *be)
{
    /* GPU style: start from the largest power of two within 256 and the
     * device's limit (or QKERN_OPENCL_WG); where a kernel allows fewer
     * work-items per group (registers, local memory), build again at the largest
     * power of two that every kernel allows. Results do not depend on it. */
    size_t wg = 1;
    if (be->gpu_style) {
        wg = be->wg_forced ? be->wg_forced : pow2_floor(be->max_wg < QK_OCL_GPU_WG ? be->max_wg : QK_OCL_GPU_WG);
        if (wg < QK_OCL_GPU_WG_MIN) {
            return qk_set_error(be->base.ctx, QK_ERR_NO_DEVICE,
                                "opencl: device \"%s\" allows work-groups of %zu, fewer than %d", be->info.name,
                                be->max_wg, QK_OCL_GPU_WG_MIN);
        }
    }
    int roundeven = be->roundeven;
    for (int attempt = 0; attempt < 4; attempt++) {
        size_t min_wg = 0;
        qk_status st = build_once(be, wg, roundeven, &min_wg);
        if (st != QK_OK) {
            /* __has_builtin answered for the front end only: try rint() */
            if (roundeven) {
                roundeven = 0;
                continue;
            }
            return st;
        }
        if (!be->gpu_style || min_wg >= wg) {
            be->wg = wg;
            be->roundeven = roundeven;
            return QK_OK;
        }
        size_t fit = pow2_floor(min_wg);
        if (be->wg_forced || fit < QK_OCL_GPU_WG_MIN) {
            ocl_program_release(be);
            return qk_set_error(be->base.ctx, QK_ERR_NO_DEVICE,
                                "opencl: a kernel runs at most %zu work-items per group on \"%s\"; it needs %zu%s",
                                min_wg, be->info.name, be->wg_forced ? wg : (size_t)QK_OCL_GPU_WG_MIN,
                                be->wg_forced ? " (QKERN_OPENCL_WG)" : "");
        }
        ocl_program_release(be);
        wg = fit;
    }
    return qk_set_error(be->base.ctx, QK_ERR_BACKEND, "opencl: no work-group size builds on \"%s\"", be->info.name);
}

void ocl_program_release(ocl_backend *be)
{
    for (int i = 0; i < OCL_K_COUNT; i++) {
        if (be->kernels[i]) clReleaseKernel(be->kernels[i]);
        be->kernels[i] = NULL;
    }
    if (be->program) clReleaseProgram(be->program);
    be->program = NULL;
}

qk_status ocl_launch(ocl_backend *be, ocl_kernel_id id, const ocl_arg *args, unsigned nargs, size_t groups,
                     size_t local, cl_uint nwait, const cl_event *wait, cl_event *done)
{
    cl_kernel k = be->kernels[id];
    if (!k) {
        return qk_set_error(be->base.ctx, QK_ERR_UNSUPPORTED,
                            "opencl: kernel %s is not available on \"%s\" (it needs cl_khr_fp64)", kernel_names[id],
                            be->info.name);
    }
    for (unsigned i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(k, i, args[i].size, args[i].value);
        if (err != CL_SUCCESS) return ocl_fail(be, err, "clSetKernelArg(%s, %u)", kernel_names[id], i);
    }
    size_t global = groups * local;
    cl_int err = clEnqueueNDRangeKernel(be->queue, k, 1, NULL, &global, &local, nwait, nwait ? wait : NULL, done);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueNDRangeKernel(%s)", kernel_names[id]);
    return QK_OK;
}

size_t ocl_local_size(const ocl_backend *be)
{
    return be->gpu_style ? be->wg : 1;
}

size_t ocl_parts(const ocl_backend *be, uint64_t n)
{
    uint64_t cu = be->compute_units ? be->compute_units : 1;
    /* CPU: a few contiguous parts per core (load balance against other work on
     * the machine) of at least 64 Ki elements; GPU: enough work-groups to fill
     * every compute unit several times, each looping over its part. */
    uint64_t want = be->gpu_style ? cu * 8 : cu * 4;
    uint64_t grain = be->gpu_style ? (uint64_t)be->wg * 64 : 65536;
    uint64_t useful = (n + grain - 1) / grain;
    if (useful < want) want = useful;
    return want ? (size_t)want : 1;
}
