/* Internal declarations of the OpenCL backend (host/opencl/ *.c).
 *
 * The backend runs every operation as kernels from kernels/opencl/ *.cl, built
 * once per context. Kernel "style" follows the device type: CPU devices (PoCL)
 * get one work-item per contiguous part with plain vector loops; GPUs get
 * 256-wide work-groups with coalesced loads and local-memory reductions. Both
 * give the same results (integer results trivially; the error sums because
 * their reduction structure is fixed by the element index, error.cl).
 *
 * Host tensors reach the device in one of three ways (ocl_stream.c):
 *   - zero copy: on devices that share host memory (CPU devices, integrated
 *     GPUs), a CL_MEM_USE_HOST_PTR buffer over the caller's memory;
 *   - staged: in chunks through two device staging buffers, the upload of one
 *     chunk overlapping the kernels of the previous one (separate upload,
 *     compute and download queues tied by events). Tensors larger than the
 *     device-memory budget always go this way; QKERN_DEVICE_MEMORY_LIMIT sets
 *     the budget, so the path is exercised on PoCL too;
 *   - device buffers (qk_buffer) are used in place.
 *
 * Environment (read at context creation):
 *   QKERN_DEVICE_MEMORY_LIMIT=<bytes>[K|M|G]  cap on the device memory the
 *       backend's own working set uses (staging, candidates, scratch); with it
 *       set, host tensors larger than the cap are streamed in chunks.
 *   QKERN_OPENCL_STYLE=cpu|gpu   force a kernel style (tests run the GPU
 *       kernels on PoCL this way).
 *   QKERN_OPENCL_ZERO_COPY=0     never wrap host memory: stage it, as on a
 *       discrete GPU.
 *   QKERN_OPENCL_PREFILTER=0     no sampled prefilter in the select: radix
 *       passes over the whole tensor (tests cover both paths this way).
 *   QKERN_OPENCL_WG=32|64|128|256  work-group size of the GPU-style kernels
 *       (default: the largest power of two <= 256 that every kernel allows).
 *   QKERN_OPENCL_DIVIDE=native|double|fma  how float division is made
 *       correctly rounded (default: native where CL_DEVICE_SINGLE_FP_CONFIG
 *       promises it, else double with cl_khr_fp64, else fma; common.cl).
 *   QKERN_OPENCL_FP64=0          act as a device without cl_khr_fp64.
 *   QKERN_OPENCL_ROUNDEVEN=0     rint() rather than clang's roundeven builtin.
 *   QKERN_OPENCL_SELFTEST=0|nocache  skip the known-answer self-test, or run it
 *       without the verdict cache (ocl_selftest.c).
 *
 * The budget covers the backend's own buffers, not the caller's qk_buffers.
 * Devices without cl_khr_fp64 run everything on float32/16 input (the error
 * pass's double sums in software, bit for bit, error.cl); float64 input is
 * QK_ERR_UNSUPPORTED with the reason.
 *
 * Segmented operations (ocl_segment.c, segment.cl) run per-channel and
 * per-group work as one launch per batch of segments, each segment's result
 * bit for bit the per-tensor one; the select among them sorts each segment in
 * local memory, so its segments are capped by CL_DEVICE_LOCAL_MEM_SIZE.
 *
 * A context is not meant to be used from two threads at once (kernel arguments
 * are set on shared cl_kernel objects). */
#ifndef QK_OCL_H
#define QK_OCL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "../internal.h"

/* Mirrors of kernels/opencl/common.cl and error.cl. */
#define QK_OCL_MODE_SKIP_NONFINITE 1u
#define QK_OCL_MODE_ABS 2u
#define QK_OCL_MODE_KEYS 4u
#define QK_OCL_SB 65536         /* super-block of the error pass: chunks are multiples of it */
#define QK_OCL_GPU_WG 256       /* largest work-group size of the GPU-style kernels */
#define QK_OCL_GPU_WG_MIN 32    /* smallest one (below it: QK_ERR_NO_DEVICE) */
#define QK_OCL_ERR_LANES 128    /* error pass, GPU style: 16 blocks x 8 lanes per super-block */
#define QK_OCL_MM_REC 5         /* ulongs per min/max record */
#define QK_OCL_NONE UINT64_MAX

typedef enum ocl_kernel_id {
    OCL_K_MINMAX32,
    OCL_K_MINMAX64,
    OCL_K_HIST32,
    OCL_K_HIST64,
    OCL_K_HIST_REDUCE,
    OCL_K_COMPACT32,
    OCL_K_COMPACT64,
    OCL_K_PREFILTER32_2,
    OCL_K_PREFILTER32_4,
    OCL_K_PREFILTER32_8,
    OCL_K_PREFILTER64_2,
    OCL_K_PREFILTER64_4,
    OCL_K_PREFILTER64_8,
    OCL_K_GATHER32,
    OCL_K_GATHER64,
    OCL_K_QUANT_F32_U8,
    OCL_K_QUANT_F32_I8,
    OCL_K_QUANT_F32_U16,
    OCL_K_QUANT_F32_I16,
    OCL_K_QUANT_F32_I32,
    OCL_K_QUANT_F64_U8,
    OCL_K_QUANT_F64_I8,
    OCL_K_QUANT_F64_U16,
    OCL_K_QUANT_F64_I16,
    OCL_K_QUANT_F64_I32,
    OCL_K_DEQUANT_U8,
    OCL_K_DEQUANT_I8,
    OCL_K_DEQUANT_U16,
    OCL_K_DEQUANT_I16,
    OCL_K_DEQUANT_I32,
    OCL_K_ERROR_F32,
    OCL_K_ERROR_F64,
    OCL_K_SEG_MINMAX32,
    OCL_K_SEG_MINMAX64,
    OCL_K_SEG_SELECT32,
    OCL_K_SEG_SELECT64,
    OCL_K_SEG_QUANT_F32_U8,
    OCL_K_SEG_QUANT_F32_I8,
    OCL_K_SEG_QUANT_F32_U16,
    OCL_K_SEG_QUANT_F32_I16,
    OCL_K_SEG_QUANT_F32_I32,
    OCL_K_SEG_QUANT_F64_U8,
    OCL_K_SEG_QUANT_F64_I8,
    OCL_K_SEG_QUANT_F64_U16,
    OCL_K_SEG_QUANT_F64_I16,
    OCL_K_SEG_QUANT_F64_I32,
    OCL_K_SEG_DEQUANT_U8,
    OCL_K_SEG_DEQUANT_I8,
    OCL_K_SEG_DEQUANT_U16,
    OCL_K_SEG_DEQUANT_I16,
    OCL_K_SEG_DEQUANT_I32,
    OCL_K_SEG_ERROR_F32,
    OCL_K_SEG_ERROR_F64,
    OCL_K_WIDEN,
    OCL_K_GGML_QUANT_Q4_0,
    OCL_K_GGML_QUANT_Q4_1,
    OCL_K_GGML_QUANT_Q5_0,
    OCL_K_GGML_QUANT_Q5_1,
    OCL_K_GGML_QUANT_Q8_0,
    OCL_K_GGML_QUANT_Q2_K,
    OCL_K_GGML_QUANT_Q3_K,
    OCL_K_GGML_QUANT_Q4_K,
    OCL_K_GGML_QUANT_Q5_K,
    OCL_K_GGML_QUANT_Q6_K,
    OCL_K_GGML_DEQUANT_Q4_0,
    OCL_K_GGML_DEQUANT_Q4_1,
    OCL_K_GGML_DEQUANT_Q5_0,
    OCL_K_GGML_DEQUANT_Q5_1,
    OCL_K_GGML_DEQUANT_Q8_0,
    OCL_K_GGML_DEQUANT_Q2_K,
    OCL_K_GGML_DEQUANT_Q3_K,
    OCL_K_GGML_DEQUANT_Q4_K,
    OCL_K_GGML_DEQUANT_Q5_K,
    OCL_K_GGML_DEQUANT_Q6_K,
    OCL_K_GGML_FROM_F32,
    OCL_K_GGML_TO_F32,
    OCL_K_COUNT
} ocl_kernel_id;

#define OCL_SEG_SLOTS 8 /* batch buffers of one segmented operation */

/* One device as found by the ordered enumeration (ocl_device.c). */
typedef struct ocl_device_ref {
    cl_platform_id platform;
    cl_device_id device;
} ocl_device_ref;

typedef struct ocl_backend {
    qk_backend base; /* first: a qk_backend * is an ocl_backend * */
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;    /* kernels, and everything in-memory */
    cl_command_queue upload;   /* host -> staging (chunked path) */
    cl_command_queue download; /* staging -> host (chunked path) */
    cl_program program;
    cl_kernel kernels[OCL_K_COUNT];
    qk_device_info info;
    char driver[64];      /* CL_DRIVER_VERSION */
    int st_state;         /* self-test: 1 passed (cached, or skipped), 0 to be run */
    int query_only;       /* opened for qk_backend_query: a cached verdict is enough */

    int gpu_style;        /* GPU-style kernels (QK_WG = wg) rather than CPU-style (QK_WG = 1) */
    size_t wg;            /* GPU style: the work-group size the program was built for */
    size_t wg_forced;     /* QKERN_OPENCL_WG, or 0 */
    size_t max_wg;        /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    int fp64;             /* cl_khr_fp64: the error pass and float64 quantize need it */
    int fp64_veto;        /* QKERN_OPENCL_FP64=0: run as a device without cl_khr_fp64 */
    int div_mode;         /* common.cl's QK_DIV_MODE: 0 native, 1 in double, 2 fma-corrected */
    int div_forced;       /* QKERN_OPENCL_DIVIDE gave div_mode */
    int roundeven;        /* QK_RINT may use clang's roundeven builtin (else rint) */
    int zero_copy;        /* host memory may be wrapped with CL_MEM_USE_HOST_PTR */
    int prefilter;        /* the select may start with a sampled prefilter pass */
    cl_uint compute_units;
    uint64_t global_mem;
    uint64_t max_alloc;
    uint64_t local_mem;   /* CL_DEVICE_LOCAL_MEM_SIZE: bounds the segmented select's sort */
    uint64_t budget;      /* device memory the backend's working set may use */
    int budget_explicit;  /* QKERN_DEVICE_MEMORY_LIMIT was set */
    /* staging buffers kept between calls (fresh ones would cost an allocation
     * and, on PoCL, first-touch page faults every call): [side][slot] */
    cl_mem stage[2][2];
    size_t stage_bytes[2][2];
    /* the segmented operations' batch buffers, kept between calls for the same
     * reason (ocl_segment.c; released when they grow past what is worth keeping) */
    cl_mem seg_mem[OCL_SEG_SLOTS];
    size_t seg_bytes[OCL_SEG_SLOTS];
} ocl_backend;

static inline ocl_backend *ocl_of(qk_backend *be)
{
    return (ocl_backend *)be;
}

/* ---- errors (ocl_errors.c) ---------------------------------------------------- */

/* "CL_OUT_OF_RESOURCES" for -5, "CL_UNKNOWN_ERROR" otherwise. */
const char *ocl_error_name(cl_int err);
/* Map a failed OpenCL call to a status (QK_ERR_NO_MEMORY for allocation
 * failures, QK_ERR_BACKEND otherwise) with a message naming the call:
 * "opencl: clEnqueueNDRangeKernel(qk_minmax32) failed: CL_OUT_OF_RESOURCES (-5)". */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
qk_status ocl_fail(ocl_backend *be, cl_int err, const char *call_fmt, ...);

/* ---- devices (ocl_device.c) ----------------------------------------------------- */

/* Every device of every platform, GPUs first, then CPUs and accelerators, in
 * platform-name order: QKERN_DEVICE indexes this list. *out is malloc'd. On failure
 * (no platform, no device) returns 0 devices and a reason. */
int ocl_list_devices(ocl_device_ref **out, char *reason, size_t reason_len);
void ocl_describe_device(const ocl_device_ref *ref, qk_device_info *info);
/* Whether a device string-valued extension list holds ext. */
int ocl_device_has_extension(cl_device_id dev, const char *ext);

/* ---- the known-answer self-test (ocl_selftest.c) ---------------------------------- */

/* Before the program is built: the cached verdict, if any (a cached failure is
 * QK_ERR_NO_DEVICE at once; a cached pass sets be->st_state). */
qk_status ocl_selftest_cached(ocl_backend *be);
/* After it is built: run the self-test unless a verdict was cached, and cache
 * it; the verdict goes to be->info.check. QK_ERR_NO_DEVICE, naming the failed
 * check, when the device gets an answer wrong. */
qk_status ocl_selftest(ocl_backend *be);

/* ---- program and kernels (ocl_program.c) ----------------------------------------- */

/* Build the embedded program for be's device and create every kernel. */
qk_status ocl_program_build(ocl_backend *be);
void ocl_program_release(ocl_backend *be);
const char *ocl_kernel_name(ocl_kernel_id id);

/* Set kernel arguments from a list of (size, pointer) pairs and enqueue a 1-D
 * range on queue; the event of the launch goes to *done when done != NULL. */
typedef struct ocl_arg {
    size_t size;
    const void *value;
} ocl_arg;
#define OCL_ARG(v) ((ocl_arg){sizeof(v), &(v)})
#define OCL_LOCAL(bytes) ((ocl_arg){(bytes), NULL})
qk_status ocl_launch(ocl_backend *be, ocl_kernel_id id, const ocl_arg *args, unsigned nargs, size_t groups,
                     size_t local, cl_uint nwait, const cl_event *wait, cl_event *done);

/* Work-groups for a part-wise kernel over n items: CPU style, a few per compute
 * unit (each a contiguous part); GPU style, enough to fill the device. */
size_t ocl_parts(const ocl_backend *be, uint64_t n);
/* The local size of the part-wise kernels (1 or QK_OCL_GPU_WG). */
size_t ocl_local_size(const ocl_backend *be);

/* ---- buffers (ocl_buffer.c) ------------------------------------------------------- */

/* A device buffer of at least bytes (never 0 bytes). */
qk_status ocl_alloc(ocl_backend *be, size_t bytes, cl_mem_flags flags, cl_mem *out);
/* A buffer over host memory (CL_MEM_USE_HOST_PTR): zero copy on PoCL. */
qk_status ocl_wrap_host(ocl_backend *be, void *host, size_t bytes, cl_mem_flags flags, cl_mem *out);
qk_status ocl_fill_zero(ocl_backend *be, cl_mem mem, size_t bytes, cl_uint nwait, const cl_event *wait,
                        cl_event *done);
qk_status ocl_read(ocl_backend *be, cl_mem mem, size_t offset, void *dst, size_t bytes);
qk_status ocl_write(ocl_backend *be, cl_mem mem, size_t offset, const void *src, size_t bytes);
qk_status ocl_finish(ocl_backend *be);
/* Wait for n events (NULL entries skipped) and check that each command
 * completed: a failed one gives its error naming `what` (ocl_wait.c). Returns
 * only once every command has left the device, on failure too. */
qk_status ocl_wait(ocl_backend *be, cl_uint n, const cl_event *ev, const char *what);
/* Everything queued on queue has completed (a marker, clFinish, then the
 * marker's status); the first failure is returned. */
qk_status ocl_drain(ocl_backend *be, cl_command_queue queue, const char *what);
/* The cl_mem and element offset of a buffer tensor. */
cl_mem ocl_tensor_mem(const qk_tensor *t);
void ocl_release_mem(cl_mem *mem);
void ocl_release_event(cl_event *ev);

qk_status ocl_buffer_alloc(qk_backend *be, size_t bytes, void **handle);
qk_status ocl_buffer_wrap(qk_backend *be, void *native, size_t bytes, void **handle);
void ocl_buffer_free(qk_backend *be, void *handle, int owned);
qk_status ocl_buffer_write(qk_backend *be, void *handle, size_t offset, const void *src, size_t bytes);
qk_status ocl_buffer_read(qk_backend *be, void *handle, size_t offset, void *dst, size_t bytes);
qk_status ocl_buffer_copy(qk_backend *be, void *dst, size_t dst_offset, void *src, size_t src_offset, size_t bytes);

/* ---- streaming (ocl_stream.c) ------------------------------------------------------ */

/* One piece of a pass over a tensor: elements [start, start + n) of the tensor,
 * found at element offset in_off of `in` (and, for a pass with an output,
 * out_off of `out`). The callback enqueues its kernels on be->queue waiting on
 * the nwait events of wait, and leaves the event of its last command in *done. */
typedef struct ocl_span {
    int64_t start, n;
    cl_mem in, out;
    uint64_t in_off, out_off;
    int index;            /* 0, 1, 2, ... in order */
    cl_uint nwait;
    cl_event wait[3];
    cl_event done;        /* set by the callback */
} ocl_span;

typedef qk_status (*ocl_span_fn)(ocl_backend *be, ocl_span *sp, void *user);

/* Run fn over in (and out, which may be NULL) in spans whose starts are
 * multiples of QK_OCL_SB. Device tensors are used in place; host tensors are
 * wrapped (zero copy) when the device shares host memory and the budget allows,
 * else streamed through staging buffers. Returns when everything, output
 * included, has landed. */
qk_status ocl_stream(ocl_backend *be, const qk_tensor *in, const qk_tensor *out, ocl_span_fn fn, void *user);
/* The span length ocl_stream will use for these tensors (all spans but the
 * last have it), so an operation can size its per-span results up front. */
int64_t ocl_stream_span_length(ocl_backend *be, const qk_tensor *in, const qk_tensor *out);
/* Whether a host tensor of this many bytes is handled without staging. */
int ocl_host_fits(const ocl_backend *be, uint64_t bytes);

/* ---- operations (ocl_minmax.c, ocl_select.c, ocl_quant.c, ocl_error.c) ------------ */

qk_status ocl_minmax(qk_backend *be, const qk_tensor *x, qk_minmax_result *out);
/* The select's sampled first pass (ocl_prefilter.c): when it pays and the
 * sample's windows hold every rank, *used = 1, *cand holds the *ncand keys of
 * the windows and mapped[] the ranks among them; otherwise *used = 0. */
qk_status ocl_prefilter(ocl_backend *be, const qk_tensor *x, unsigned mode, const int64_t *ranks, size_t nranks,
                        uint64_t room, cl_mem *cand, int64_t *ncand, int64_t *mapped, int *used);
qk_status ocl_select(qk_backend *be, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                     double *values);
/* The kernel offset of a code dtype in the U8, I8, U16, I16, I32 kernel runs. */
int ocl_code_index(qk_dtype dt);
qk_status ocl_quantize(qk_backend *be, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes);
qk_status ocl_dequantize(qk_backend *be, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out);
/* The smallest float >= d and the largest float <= d: x < d and x < ceil(d)
 * agree for every float x (likewise x > d and x > floor(d)), so float32 data
 * compares in float with the very answers of a double comparison (ocl_error.c,
 * also for the segmented pass). */
float ocl_float_ceil(double d);
float ocl_float_floor(double d);
/* One candidate as error.cl reads it: pf[8] floats (scale, qmin - zp, qmax - zp,
 * the clip range as float bounds), pd[4] doubles (the same in double) unless NULL. */
void ocl_pack_error_params(const qk_qparams *q, cl_float *pf, cl_double *pd);
qk_status ocl_error(qk_backend *be, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                    double fence_hi, qk_error_sums *sums, qk_error_counts *counts);

/* ---- segmented operations (ocl_segment.c, segment.cl) -----------------------------
 * The optional seg_* members of qk_backend_iface: one launch per batch of
 * segments. QK_ERR_UNSUPPORTED, with no message, when a call cannot be done
 * that way (a segment past the local-memory sort's cap, no cl_khr_fp64 where
 * it is needed, one segment's buffers beyond the budget): the caller then
 * runs the per-tensor members segment by segment. */

qk_status ocl_seg_minmax(qk_backend *be, const qk_tensor *x, int64_t seg, qk_minmax_result *out);
qk_status ocl_seg_select(qk_backend *be, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                         size_t nranks, double *values);
qk_status ocl_seg_quantize(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                           qk_tensor *codes);
qk_status ocl_seg_dequantize(qk_backend *be, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                             qk_tensor *out);
qk_status ocl_seg_error(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                        const double *fences, qk_error_sums *sums, qk_error_counts *counts);
qk_status ocl_widen(qk_backend *be, const qk_tensor *x, qk_tensor *out);
/* ggml block formats (ocl_ggml.c, ggml.cl). */
qk_status ocl_ggml_quantize(qk_backend *be, const qk_tensor *x, int type, qk_tensor *out, int *nonfinite);
int ocl_ggml_host(qk_backend *be, uint64_t bytes);
qk_status ocl_ggml_dequantize(qk_backend *be, const qk_tensor *in, int type, qk_tensor *out);
/* The largest segment the segmented select sorts in one go for this key width
 * (4 or 8 bytes), from the device's local memory and the kernel style. */
int64_t ocl_seg_select_cap(const ocl_backend *be, size_t key_bytes);
/* Release the kept batch buffers. */
void ocl_seg_release(ocl_backend *be);

#endif
