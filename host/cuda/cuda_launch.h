/* The CUDA kernels' launchers (kernels/cuda, the .cu files), callable from C. Each one
 * enqueues its kernel(s) on the given stream and returns cudaGetLastError():
 * nothing here synchronizes. All pointers are device pointers unless a comment
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

#ifdef __cplusplus
}
#endif

#endif
