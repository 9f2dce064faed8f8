/* The CUDA kernels' launchers (kernels/cuda, the .cu files), callable from C. Each one
 * enqueues its kernel(s) on the given stream and returns the launch's error
 * (cudaLaunchKernelEx's return value: the thread's last CUDA error, which is
 * the application's, is never read or reset): nothing here synchronizes. All pointers are device pointers unless a comment
 * says otherwise; all counts and indices are 64-bit. */
#ifndef QK_CUDA_LAUNCH_H
#define QK_CUDA_LAUNCH_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "qkern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Elements of one fixed error block: sums are formed per block of the tensor's
 * global index and added in index order, so they never depend on chunking. */
#define QK_CU_ERROR_BLOCK 65536
/* Most elements one launch covers (keeps grid sizes and per-block counters small). */
#define QK_CU_MAX_LAUNCH (1LL << 30)
/* Most selection nodes (distinct target prefixes) one pass handles. */
#define QK_CU_SELECT_MAX_NODES 512
/* The radix digit width of the first selection pass (the root histogram). */
#define QK_CU_SELECT_ROOT_BITS 11

/* Quantization parameters as the kernels read them. */
typedef struct qk_cu_qparam {
    float scale;
    int32_t zero_point, qmin, qmax;
    double clip_lo, clip_hi;
} qk_cu_qparam;

/* min/max accumulator: keys are qk_key_f64 of the value (float32 widened). */
typedef struct qk_cu_minmax_acc {
    unsigned long long kmin;      /* starts at ~0 */
    unsigned long long first;     /* first non-finite index, starts at ~0 */
    unsigned long long kmax;      /* starts at 0 */
    unsigned long long n_finite;  /* starts at 0 */
    unsigned long long nonfinite; /* starts at 0 */
} qk_cu_minmax_acc;

/* Fused error pass counters: n_finite, n_inliers, nonfinite (start at 0), first (starts at ~0). */
enum { QK_CU_CNT_FINITE = 0, QK_CU_CNT_INLIERS, QK_CU_CNT_NONFINITE, QK_CU_CNT_FIRST, QK_CU_CNT_COUNT };

/* Sources of a selection pass: raw values (keyed on the fly) or keys. */
enum { QK_CU_SRC_F32 = 0, QK_CU_SRC_F64, QK_CU_SRC_KEY32, QK_CU_SRC_KEY64 };

/* One selection pass over count elements: every element whose key has a node
 * prefix (key >> filter_shift) among prefixes[0..nnodes) is counted in
 * hist[node << digit_bits | next digit], and appended to out when out is set.
 * filter_shift == key bits means one root node that holds every key. */
typedef struct qk_cu_pass {
    int src_kind;                   /* QK_CU_SRC_* */
    unsigned flags;                 /* raw sources: QK_ABS, QK_IGNORE_NONFINITE */
    const void *src;
    int64_t count;
    int filter_shift;
    int nnodes;                     /* 1 for the root; at most QK_CU_SELECT_MAX_NODES */
    const void *prefixes;           /* nnodes sorted keys (uint32 or uint64); unused for the root */
    int digit_bits;                 /* 1..11, <= filter_shift */
    unsigned long long *hist;       /* nnodes << digit_bits counters, added to */
    void *out;                      /* keys of the kept elements, or NULL */
    unsigned long long *out_count;  /* write cursor of out (added to) */
    unsigned long long out_cap;     /* capacity of out in keys: writes past it are dropped */
} qk_cu_pass;

/* min/max, finite count, non-finite count and first index of x[0..n) (float or
 * double by is_f64); indices reported as base + i. Adds to *acc. */
cudaError_t qk_cu_minmax(cudaStream_t s, int sms, int is_f64, const void *x, int64_t n, int64_t base,
                         qk_cu_minmax_acc *acc);

/* codes[i] = quantize(x[i]) for i < n; x float or double, codes U8/I8/U16/I16/I32. */
cudaError_t qk_cu_quantize(cudaStream_t s, int sms, qk_dtype xt, const void *x, qk_dtype ct, void *codes, int64_t n,
                           qk_cu_qparam p);

/* out[i] = (codes[i] - zero_point) * scale in float. */
cudaError_t qk_cu_dequantize(cudaStream_t s, int sms, qk_dtype ct, const void *codes, float *out, int64_t n,
                             float scale, int32_t zero_point);

/* Fused error pass over x[0..n) (n <= nblocks * QK_CU_ERROR_BLOCK, base a
 * multiple of QK_CU_ERROR_BLOCK) for k parameter sets: writes per-block sums to
 * partial[(b * k + c) * 2 + {0: sse, 1: sse_inliers}], adds clipped counts to
 * clipped[c] and counters to counts[QK_CU_CNT_*], then adds the block sums to
 * run[c * 2 + {0, 1}] in block order. */
cudaError_t qk_cu_error(cudaStream_t s, int is_f64, const void *x, int64_t n, int64_t base, const qk_cu_qparam *params,
                        int k, double fence_lo, double fence_hi, double *partial, unsigned long long *clipped,
                        unsigned long long *counts, double *run);

/* One selection pass (see qk_cu_pass). */
cudaError_t qk_cu_select_pass(cudaStream_t s, int sms, const qk_cu_pass *pass);

/* ---- segmented operations -----------------------------------------------------
 * x holds nseg segments of seg contiguous elements; segment b is elements
 * [b * seg, (b + 1) * seg). Each segment's result is what the per-tensor
 * launchers give for that segment as a tensor of its own (host/backend.h). */

/* Largest segments seg_select sorts: one thread block per segment, its keys in
 * shared memory (cub::BlockRadixSort, about 66 KiB at either cap, which every
 * sm_80+ device allows). Larger segments take the per-tensor radix select. */
#define QK_CU_SEG_SORT_CAP32 16384
#define QK_CU_SEG_SORT_CAP64 8192
/* Segments up to this many elements get one warp each in the error pass; larger
 * ones a thread block per fixed error block, as the per-tensor pass. */
#define QK_CU_SEG_WARP_ERROR 4096

/* Per-segment results, laid out as host/backend.h's qk_error_sums and
 * qk_error_counts (host/cuda/cuda_segment.c checks), so they are copied
 * straight into the caller's arrays. */
typedef struct qk_cu_seg_sums {
    double sse, sse_inliers;
    long long clipped;
} qk_cu_seg_sums;

typedef struct qk_cu_seg_counts {
    long long n_finite, n_inliers, nonfinite_count, first_nonfinite; /* first: in the segment, -1 if none */
} qk_cu_seg_counts;

/* out[b] = the min/max result of segment b as qk_cu_op_minmax reports it: keys
 * as qk_cu_minmax, first_nonfinite relative to the segment (-1 if none),
 * min = max = absmax = +0 when nothing is finite, absmax = fmax(fabs(min),
 * fabs(max)) (+0 for a segment of -0 only, as the CPU reference and
 * cuda_ops.c). acc: nseg accumulators of
 * scratch (used when a segment is split between warps). */
cudaError_t qk_cu_seg_minmax(cudaStream_t s, int sms, int is_f64, const void *x, int64_t seg, int64_t nseg,
                             qk_cu_minmax_acc *acc, qk_minmax_result *out);

/* Shared memory bytes per thread block qk_cu_seg_select needs for segments of
 * seg elements; 0 when seg is above the cap (QK_CU_SEG_SORT_CAP32/64). */
size_t qk_cu_seg_select_smem(int is_f64, int64_t seg);

/* values[b * nranks + j] = the ranks[b * nranks + j]-th smallest key (0-based)
 * of segment b, as a double, keys as qk_cu_pass's raw sources with flags
 * (QK_ABS clears the sign; QK_IGNORE_NONFINITE drops NaN/Inf; -0 before +0).
 * Ranks in any order, repeats allowed. A rank outside [0, keys of the segment)
 * sets *bad = min(*bad, seg_base + b) and leaves its value 0. */
cudaError_t qk_cu_seg_select(cudaStream_t s, int is_f64, const void *x, int64_t seg, int64_t nseg, unsigned flags,
                             const int64_t *ranks, int64_t nranks, double *values, int64_t seg_base,
                             unsigned long long *bad);

/* codes[i] = quantize(x[i]) for i < n with params[(off + i) / seg]: x and codes
 * start off elements into a segment (0 <= off < seg), params at that segment.
 * The same arithmetic as qk_cu_quantize (x float or double, any code dtype). */
cudaError_t qk_cu_seg_quantize(cudaStream_t s, int sms, qk_dtype xt, const void *x, qk_dtype ct, void *codes,
                               int64_t n, int64_t seg, int64_t off, const qk_cu_qparam *params);

/* out[i] = (codes[i] - zero_point) * scale in float with params[(off + i) / seg],
 * as qk_cu_dequantize. */
cudaError_t qk_cu_seg_dequantize(cudaStream_t s, int sms, qk_dtype ct, const void *codes, float *out, int64_t n,
                                 int64_t seg, int64_t off, const qk_cu_qparam *params);

/* Scratch bytes qk_cu_seg_error needs (0 for segments a warp does). */
static inline size_t qk_cu_seg_error_scratch(int64_t seg, int64_t nseg, int k)
{
    if (seg <= QK_CU_SEG_WARP_ERROR) return 0;
    const int64_t per = (seg + QK_CU_ERROR_BLOCK - 1) / QK_CU_ERROR_BLOCK;
    return (size_t)(nseg * per) * ((size_t)k * sizeof(qk_cu_seg_sums) + sizeof(qk_cu_seg_counts));
}

/* The fused error pass of every segment: sums[b * k + c] for parameter set
 * params[b * k + c] and counts[b], with fences[2b], fences[2b + 1], exactly
 * what qk_cu_error and the host's fold give for segment b alone: its fixed
 * blocks of QK_CU_ERROR_BLOCK elements start at the segment's first element,
 * each block summed in the same thread order and tree, the block sums added
 * to +0 in block order; first_nonfinite relative to the segment. k >= 1,
 * scratch of qk_cu_seg_error_scratch bytes. */
cudaError_t qk_cu_seg_error(cudaStream_t s, int sms, int is_f64, const void *x, int64_t seg, int64_t nseg,
                            const qk_cu_qparam *params, int k, const double *fences, void *scratch,
                            qk_cu_seg_sums *sums, qk_cu_seg_counts *counts);

/* out[i] = x[i] (F16 or BF16 bits) widened exactly to float32, for i < n. */
cudaError_t qk_cu_widen(cudaStream_t s, int sms, qk_dtype xt, const uint16_t *x, float *out, int64_t n);

/* float16 bits -> float32 bits, exactly host/stage.c's qk_half_to_float (NaN
 * payloads and subnormals kept). Shared by the widen kernel and the tests. */
#if defined(__CUDACC__)
#define QK_CU_HD __host__ __device__
#else
#define QK_CU_HD
#endif
static inline QK_CU_HD uint32_t qk_cu_half_bits(uint32_t h)
{
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) return sign | 0x7f800000u | (man << 13); /* Inf, NaN (payload kept) */
    if (exp) return sign | ((exp + 112u) << 23) | (man << 13);
    if (!man) return sign;
    /* subnormal half: shift the leading 1 into the implicit bit */
#if defined(__CUDA_ARCH__)
    const uint32_t sh = (uint32_t)__clz((int)man) - 21u;
#else
    const uint32_t sh = (uint32_t)__builtin_clz(man) - 21u;
#endif
    return sign | ((113u - sh) << 23) | (((man << sh) & 0x3ffu) << 13);
}

/* ggml block formats (kernels/cuda/ggml.cu): y = ggml's reference quantization of
 * x[0..n) as type (a ggml type id; n a multiple of its block size), and the
 * inverse. y may have any byte alignment. */
cudaError_t qk_cu_ggml_quantize(cudaStream_t s, int sms, int type, const float *x, unsigned char *y, int64_t n);
cudaError_t qk_cu_ggml_dequantize(cudaStream_t s, int sms, int type, const unsigned char *y, float *x, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
