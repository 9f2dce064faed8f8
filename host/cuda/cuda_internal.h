/* The CUDA backend's shared state and helpers (host side, plain C). */
#ifndef QK_CUDA_INTERNAL_H
#define QK_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "../internal.h"
#include "cuda_launch.h"

/* Device staging per slot (two slots) for host tensors. */
#define QK_CU_SLOT_BYTES ((size_t)32 << 20)
/* Optional allocations (candidate buffers, resident keys) leave this much of a
 * memory limit for staging and scratch. */
#define QK_CU_RESERVE_BYTES ((size_t)32 << 20)
/* Free device memory that sized work (staging slots, batches) and optional
 * allocations leave to the device's other users and to this backend's
 * smallest required pieces: a sixteenth of the device, at least 64 MiB, at
 * most 1 GiB (a 10 GB MIG slice keeps 640 MiB, an 80 GB H100 1 GiB), never
 * more than a quarter. */
#define QK_CU_DEVICE_RESERVE_MIN ((uint64_t)64 << 20)
#define QK_CU_DEVICE_RESERVE_MAX ((uint64_t)1 << 30)
/* Scratch the backend's own memory pool keeps mapped between calls (its
 * release threshold), so thousands of small calls do not map and unmap it at
 * every synchronization: at most this, and a sixteenth of the device. Zero
 * under QKERN_DEVICE_MEMORY_LIMIT, which caps what the backend holds. */
#define QK_CU_POOL_KEEP ((uint64_t)256 << 20)
/* Small persistent scratch: accumulators and counters. */
#define QK_CU_SCRATCH_BYTES 4096

/* The driver's cuCtxGetCurrent/cuCtxSetCurrent (CUresult f(CUcontext *) and
 * f(CUcontext)), fetched through the runtime (cudaGetDriverEntryPointByVersion)
 * so that libqkern never links libcuda: a context is an opaque pointer here. */
typedef int (*cu_ctx_get_fn)(void **ctx);
typedef int (*cu_ctx_set_fn)(void *ctx);

typedef struct cu_state {
    int device;
    int cc_major, cc_minor; /* compute capability */
    void *primary;        /* the device's primary context (NULL without the driver entry points) */
    cu_ctx_get_fn ctx_get; /* NULL when the runtime could not fetch them */
    cu_ctx_set_fn ctx_set;
    const char *last_kernel; /* the last kernel launched ("minmax kernel"): a device fault names it */
    int poisoned;         /* a sticky error: every later call fails with poison */
    char poison[384];
    int sms;              /* multiprocessors */
    int pools;            /* stream-ordered allocation (cudaMallocAsync) supported */
    cudaMemPool_t pool;   /* the backend's own pool (NULL: the device's default pool) */
    uint64_t pool_keep;   /* its release threshold */
    uint64_t reserve;     /* free device memory optional allocations leave (QK_CU_DEVICE_RESERVE_*) */
    int smem_optin;       /* shared memory bytes a block may opt in to (seg_select's sort) */
    qk_device_info info;
    cudaStream_t compute; /* every kernel, in order */
    cudaStream_t h2d;     /* host -> device staging copies */
    cudaStream_t d2h;     /* device -> host staging copies */
    cudaEvent_t ev_in[2], ev_kernel[2], ev_done[2];
    uint64_t limit;       /* QKERN_DEVICE_MEMORY_LIMIT, or UINT64_MAX */
    uint64_t in_use;      /* device bytes the backend holds now */
    void *pin;            /* pinned host staging: two slots of pin_slot bytes */
    size_t pin_slot;
    int pin_pageable;     /* pinning was refused: pin is plain malloc memory */
    void *dscratch;       /* QK_CU_SCRATCH_BYTES of device memory */
    void *hscratch;       /* QK_CU_SCRATCH_BYTES of pinned host memory */
    int hscratch_pageable;
} cu_state;

/* A buffer handle: device memory of this backend, owned or wrapped. */
typedef struct cu_buf {
    void *ptr;
    size_t bytes;
} cu_buf;

static inline cu_state *cu_of(qk_backend *be)
{
    return (cu_state *)be->impl;
}

/* Record a failed CUDA call (name, error name, string) and return its status:
 * QK_ERR_NO_MEMORY for allocation failures, else QK_ERR_BACKEND. A sticky
 * error (a kernel fault: the CUDA context is lost) names the last kernel
 * launched and poisons the backend: every later entry fails with that message.
 * The thread's last CUDA error is never read or reset (it is the
 * application's). */
qk_status cu_fail(qk_backend *be, const char *call, cudaError_t err);

#define CU_CHECK(be, st, call)                                                                                      \
    do {                                                                                                             \
        cudaError_t cu_err_ = (call);                                                                                \
        if (cu_err_ != cudaSuccess) {                                                                                \
            (st) = cu_fail((be), #call, cu_err_);                                                                    \
            goto done;                                                                                               \
        }                                                                                                            \
    } while (0)

/* What the calling thread had current before an entry point: its device and
 * its driver context, restored on the way out. */
typedef struct cu_scope {
    int device;   /* -1 when unknown */
    void *ctx;    /* the current driver context (NULL: none) */
    int switched; /* cu_enter changed something that cu_leave restores */
} cu_scope;

/* Make the backend's device (its primary context) current for one entry point;
 * cu_leave restores the caller's device and driver context exactly. cu_enter
 * fails at once, with the recorded message, on a poisoned backend. */
qk_status cu_enter(qk_backend *be, cu_scope *sc);
void cu_leave(qk_backend *be, cu_scope *sc);

/* How cu_alloc fails: REQUIRED sets the message; QUIET returns
 * QK_ERR_NO_MEMORY without one (the caller has a smaller plan); OPTIONAL is
 * QUIET and also leaves QK_CU_RESERVE_BYTES of a memory limit, and cu->reserve
 * of the device's free memory, for the staging and scratch that must succeed
 * and for the other users of the device. */
enum { CU_REQUIRED = 0, CU_OPTIONAL = 1, CU_QUIET = 2 };
/* Device scratch, counted against the memory limit. Allocated in the compute
 * stream's order; other streams must wait on an event before using it. */
qk_status cu_alloc(qk_backend *be, size_t bytes, int mode, void **out);
/* Free scratch after all streams are idle (or in the compute stream's order). */
void cu_free(qk_backend *be, void *p, size_t bytes);
/* Bytes the limit still allows (UINT64_MAX-ish without a limit). */
uint64_t cu_limit_room(qk_backend *be);
/* Bytes work may be sized for: what the limit allows and the device has free
 * now (cudaMemGetInfo: other processes, other contexts, MIG slices). */
uint64_t cu_budget(qk_backend *be);

/* The device pointer of element 0 of a buffer tensor. */
static inline char *cu_tensor_ptr(const qk_tensor *t)
{
    return (char *)((cu_buf *)t->buffer->handle)->ptr + t->offset;
}

/* Run fn over in (and out, same n) in chunks: device tensors in place, host
 * tensors through pinned staging and double-buffered device slots, with the
 * copies on their own streams overlapping the kernels. Each call gets device
 * pointers to count elements starting at element base; chunks are multiples of
 * align elements (except a last one) and at most max_chunk elements. fn only
 * enqueues work on the compute stream. Returns with all streams idle. */
typedef qk_status (*cu_chunk_fn)(qk_backend *be, void *user, const void *din, void *dout, int64_t base,
                                 int64_t count);
qk_status cu_for_chunks(qk_backend *be, const qk_tensor *in, const qk_tensor *out, int64_t align, int64_t max_chunk,
                        cu_chunk_fn fn, void *user);

/* Pinned host memory, or pageable memory when pinning is refused (*pageable
 * set): the runtime's copies are correct with either, they only overlap less. */
qk_status cu_host_alloc(qk_backend *be, size_t bytes, void **out, int *pageable);
void cu_host_free(void *p, int pageable);

/* Wait for all three streams (errors of the wait are reported). */
qk_status cu_sync(qk_backend *be);

/* QK_OK, or the launch error of what ("minmax kernel launch"), reported. The
 * name is kept: a fault found at the next synchronization names it. */
static inline qk_status cu_launch_status(qk_backend *be, const char *what, cudaError_t e)
{
    cu_of(be)->last_kernel = what;
    return e == cudaSuccess ? QK_OK : cu_fail(be, what, e);
}

/* Whether this build's fat binary holds code a device of compute capability
 * major.minor can run; why not, in words, when it does not. */
int cu_arch_supported(int major, int minor, char *why, size_t why_len);

/* Errors after which the CUDA context cannot be used again (kernel faults). */
int cu_error_is_sticky(cudaError_t e);

/* Parameters as the kernels read them (cuda_ops.c, cuda_segment.c). */
static inline qk_cu_qparam cu_param_of(const qk_qparams *q)
{
    qk_cu_qparam p;
    memset(&p, 0, sizeof p);
    p.scale = q->scale;
    p.zero_point = q->zero_point;
    p.qmin = q->qmin;
    p.qmax = q->qmax;
    p.clip_lo = q->clip_lo;
    p.clip_hi = q->clip_hi;
    return p;
}

/* The per-tensor operations (cuda_ops.c, cuda_select.c). */
qk_status qk_cu_op_minmax(qk_backend *be, const qk_tensor *x, qk_minmax_result *out);
qk_status qk_cu_op_select(qk_backend *be, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                          double *values);
qk_status qk_cu_op_quantize(qk_backend *be, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes);
qk_status qk_cu_op_dequantize(qk_backend *be, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out);
qk_status qk_cu_op_error(qk_backend *be, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                         double fence_hi, qk_error_sums *sums, qk_error_counts *counts);

/* The segmented operations and widen (cuda_segment.c): QK_ERR_UNSUPPORTED,
 * with no message, for a call they cannot do in one go. */
qk_status qk_cu_op_seg_minmax(qk_backend *be, const qk_tensor *x, int64_t seg, qk_minmax_result *out);
qk_status qk_cu_op_seg_select(qk_backend *be, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                              size_t nranks, double *values);
qk_status qk_cu_op_seg_quantize(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                                qk_tensor *codes);
qk_status qk_cu_op_seg_dequantize(qk_backend *be, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                                  qk_tensor *out);
qk_status qk_cu_op_seg_error(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                             const double *fences, qk_error_sums *sums, qk_error_counts *counts);
qk_status qk_cu_op_widen(qk_backend *be, const qk_tensor *x, qk_tensor *out);
/* ggml block formats on device tensors (cuda_ggml.c). */
qk_status qk_cu_op_ggml(qk_backend *be, int quantize, const qk_tensor *f, int type, const qk_tensor *b);


#endif
