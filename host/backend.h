/* The internal backend interface: a backend is a struct of function pointers
 * behind an opaque handle (ggml-backend style). The context validates every
 * argument before calling in, so backends may assume: tensors are non-empty,
 * buffers belong to this backend and are large enough, dtypes are the ones the
 * operation accepts, params are valid. Backends never call each other. */
#ifndef QK_BACKEND_H
#define QK_BACKEND_H

#include "qkern.h"

typedef struct qk_backend qk_backend;

/* Per-candidate sums of one fused error pass. */
typedef struct qk_error_sums {
    double sse;          /* sum of (x - dequant(quant(x)))^2 over finite elements */
    double sse_inliers;  /* the same over elements with fence_lo <= x <= fence_hi */
    int64_t clipped;     /* finite elements outside [params.clip_lo, params.clip_hi] */
} qk_error_sums;

/* What one fused error pass counted, shared by all candidates. */
typedef struct qk_error_counts {
    int64_t n_finite;
    int64_t n_inliers;
    int64_t nonfinite_count;
    int64_t first_nonfinite; /* -1 if none */
} qk_error_counts;

typedef struct qk_backend_iface {
    /* Free everything the backend owns, then the backend itself. */
    void (*destroy)(qk_backend *be);
    /* Describe the device the backend runs on. */
    qk_status (*device_info)(qk_backend *be, qk_device_info *out);

    /* Device memory: allocate bytes, returning the backend's handle. */
    qk_status (*buffer_alloc)(qk_backend *be, size_t bytes, void **handle);
    /* Wrap caller-owned native memory (device pointer, cl_mem) into a handle (optional). */
    qk_status (*buffer_wrap)(qk_backend *be, void *native, size_t bytes, void **handle);
    /* Release a handle; owned says whether the memory itself is the backend's to free. */
    void (*buffer_free)(qk_backend *be, void *handle, int owned);
    /* Copy host -> device buffer. */
    qk_status (*buffer_write)(qk_backend *be, void *handle, size_t offset, const void *src, size_t bytes);
    /* Copy device buffer -> host. */
    qk_status (*buffer_read)(qk_backend *be, void *handle, size_t offset, void *dst, size_t bytes);
    /* Copy device buffer -> device buffer, on the device (optional: without it the
     * context copies through host memory). The bench's copy-bandwidth yardstick. */
    qk_status (*buffer_copy)(qk_backend *be, void *dst, size_t dst_offset, void *src, size_t src_offset,
                             size_t bytes);

    /* Exact min/max of the finite elements, plus non-finite count and first index. */
    qk_status (*minmax)(qk_backend *be, const qk_tensor *x, qk_minmax_result *out);
    /* Order statistics: values[j] = the ranks[j]-th smallest (0-based) of the keys,
     * keys being x (or |x| with QK_ABS), finite elements only with
     * QK_IGNORE_NONFINITE; ranks ascending, each < number of keys. -0 orders
     * before +0. Values are exact (converted to double). */
    qk_status (*select)(qk_backend *be, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                        double *values);
    /* codes = quantize(x) by params (non-finite: NaN -> clamp(zp), +-Inf -> qmax/qmin). */
    qk_status (*quantize)(qk_backend *be, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes);
    /* out (F32) = (codes - zero_point) * scale. */
    qk_status (*dequantize)(qk_backend *be, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out);
    /* One pass over x for k parameter sets: sums[i] for params[i]; non-finite
     * elements are counted in *counts and skipped. Fixed reduction order: the same
     * input gives the same bits every run. */
    qk_status (*error)(qk_backend *be, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                       double fence_hi, qk_error_sums *sums, qk_error_counts *counts);
    /* The native handles a caller needs to share memory and order work (optional). */
    qk_status (*native)(qk_backend *be, qk_native_handles *out);

    /* ---- segmented operations (all optional) ----------------------------------
     * One launch for many independent blocks ("segments"), for per-channel and
     * per-group quantization. x is cut into x->n / seg segments of seg contiguous
     * elements; segment b is elements [b * seg, (b + 1) * seg). For each segment
     * the result is, bit for bit, what the per-tensor member gives for that
     * segment as a tensor of its own on this backend (error sums included: the
     * fixed reduction structure restarts at each segment's first element).
     *
     * The caller (host/segments.c) passes device-buffer tensors only (never
     * x->host) and guarantees seg >= 1, seg divides x->n, and per-segment
     * arguments as documented. A backend that cannot do a call in one go (a
     * segment too large for its local-memory sort, a launch too big) returns
     * QK_ERR_UNSUPPORTED *without* setting a message; the caller then runs the
     * per-tensor members segment by segment. Any other error is final. */

    /* out[b] = minmax of segment b. */
    qk_status (*seg_minmax)(qk_backend *be, const qk_tensor *x, int64_t seg, qk_minmax_result *out);
    /* values[b * nranks + j] = the ranks[b * nranks + j]-th smallest key of
     * segment b (keys and flags as in select). Ranks are non-decreasing within a
     * segment (repeats allowed) and each < that segment's key count. */
    qk_status (*seg_select)(qk_backend *be, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                            size_t nranks, double *values);
    /* codes = quantize(x) with params[b] for segment b (every params[b] has the
     * same qmin/qmax, valid for the codes dtype). */
    qk_status (*seg_quantize)(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                              qk_tensor *codes);
    /* out (F32) = (codes - zero_point) * scale with params[b] for segment b. */
    qk_status (*seg_dequantize)(qk_backend *be, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                                qk_tensor *out);
    /* The fused error pass per segment: params[b * k + c] is candidate c of
     * segment b, fences[2b], fences[2b + 1] its inlier fences; sums[b * k + c]
     * and counts[b] as error() would give for segment b alone (first_nonfinite
     * relative to the segment's start). */
    qk_status (*seg_error)(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                           const double *fences, qk_error_sums *sums, qk_error_counts *counts);
    /* out (F32 device buffer, same n) = x (F16 or BF16 device buffer) widened
     * exactly to float32, NaN payloads kept as qk_half_to_float does. Lets float16
     * and bfloat16 data cross the bus at 2 bytes an element. */
    qk_status (*widen)(qk_backend *be, const qk_tensor *x, qk_tensor *out);

    /* ---- ggml block formats (optional) ---------------------------------------
     * out (U8, blocks of ggml type `type`) = ggml's reference quantization of x
     * (F32, finite, n a multiple of the block size), byte for byte
     * (kernels/common/ggml_blocks.h). The caller (host/ggml.c) passes host
     * tensors to the CPU backend and where ggml_host says so, device buffers
     * otherwise. */
    qk_status (*ggml_quantize)(qk_backend *be, const qk_tensor *x, int type, qk_tensor *out);
    /* out (F32) = ggml's dequantization of in (U8 blocks of `type`). */
    qk_status (*ggml_dequantize)(qk_backend *be, const qk_tensor *in, int type, qk_tensor *out);
    /* ggml_quantize with the finiteness check folded into the same pass
     * (optional; used instead of ggml_quantize when present): *nonfinite = 1
     * when x holds a NaN or an infinity and type is a block type (out then
     * holds unspecified bytes, which the caller overwrites), else 0 (F32, F16
     * and BF16 take any value). x need not be finite. */
    qk_status (*ggml_quantize_checked)(qk_backend *be, const qk_tensor *x, int type, qk_tensor *out,
                                       int *nonfinite);
    /* Nonzero when the ggml members take host tensors of up to `bytes` directly,
     * without staging copies (optional; OpenCL on a device sharing host memory:
     * wrapped, zero copy). The CPU backend always takes host tensors. */
    int (*ggml_host)(qk_backend *be, uint64_t bytes);
} qk_backend_iface;

struct qk_backend {
    const qk_backend_iface *iface;
    void *impl;      /* the backend's own state */
    qk_context *ctx; /* for qk_set_error(); not owned */
};

/* Backend constructors: device is the QKERN_DEVICE index (0 by default).
 * Each returns QK_ERR_UNSUPPORTED when not compiled in, QK_ERR_NO_DEVICE when no
 * device answers, with the reason set in ctx. */
qk_status qk_cpu_backend_create(qk_context *ctx, int device, qk_backend **out);
qk_status qk_opencl_backend_create(qk_context *ctx, int device, qk_backend **out);
qk_status qk_cuda_backend_create(qk_context *ctx, int device, qk_backend **out);

/* Backend queries for qkern info (never fail for their own kind). */
void qk_cpu_backend_query(qk_backend_info *out);
void qk_opencl_backend_query(qk_backend_info *out);
void qk_cuda_backend_query(qk_backend_info *out);

#endif
