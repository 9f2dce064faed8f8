/* The CUDA backend: device choice, buffers, memory accounting, and the
 * interface table. The runtime is linked statically and loads the driver on
 * the first call, so a machine without one gets QK_ERR_NO_DEVICE here, with
 * the runtime's own words for why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* ---- errors and the current device ---------------------------------------------- */

int cu_error_is_sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable: return 1;
    default: return 0;
    }
}

/* Never cudaGetLastError() here: the thread's last error is the
 * application's, and reading it resets it. A failed call of ours does set it
 * (the runtime does that), which is no more than the truth. */
qk_status cu_fail(qk_backend *be, const char *call, cudaError_t err)
{
    qk_status st = err == cudaErrorMemoryAllocation ? QK_ERR_NO_MEMORY : QK_ERR_BACKEND;
    /* CU_CHECK passes the whole call expression: name the function */
    int len = (int)strcspn(call, "(");
    if (be && cu_error_is_sticky(err)) {
        /* A kernel faulted (it surfaces at the next call that waits, whatever
         * that call is): the context is gone for the whole process. Name the
         * last kernel launched and refuse everything from now on. */
        cu_state *cu = cu_of(be);
        const char *k = cu->last_kernel ? cu->last_kernel : "(no kernel launched yet)";
        const char *tail = strstr(k, " launch"); /* cu_launch_status's "minmax kernel launch" */
        const int klen = tail ? (int)(tail - k) : (int)strlen(k);
        snprintf(cu->poison, sizeof cu->poison,
                 "cuda: device %d faulted in or after the %.*s (the last kernel launched; reported by %.*s): %s (%d: "
                 "%s); the CUDA context of this process is unusable: destroy this qkern context and restart the "
                 "process to use the GPU again", cu->device, klen, k, len, call, cudaGetErrorName(err), (int)err,
                 cudaGetErrorString(err));
        cu->poisoned = 1;
        return qk_set_error(be->ctx, QK_ERR_BACKEND, "%s", cu->poison);
    }
    return qk_set_error(be ? be->ctx : NULL, st, "cuda: %.*s failed: %s (%d: %s)", len, call, cudaGetErrorName(err),
                        (int)err, cudaGetErrorString(err));
}

/* Make the backend's primary context current, noting what was: with the
 * driver's context calls when the runtime gave them (an application may have a
 * context of its own current, which the runtime would otherwise use), else by
 * device. */
static qk_status cu_switch(qk_backend *be, cu_scope *sc)
{
    cu_state *cu = cu_of(be);
    sc->device = -1;
    sc->ctx = NULL;
    sc->switched = 0;
    if (cu->ctx_get && cu->ctx_set && cu->primary) {
        if (cu->ctx_get(&sc->ctx) != 0) sc->ctx = NULL;
        if (sc->ctx == cu->primary) return QK_OK;
        if (cu->ctx_set(cu->primary) != 0)
            return qk_set_error(be->ctx, QK_ERR_BACKEND, "cuda: cuCtxSetCurrent failed for device %d", cu->device);
        sc->switched = 1;
        return QK_OK;
    }
    if (cudaGetDevice(&sc->device) != cudaSuccess) sc->device = -1;
    if (sc->device == cu->device) return QK_OK;
    cudaError_t e = cudaSetDevice(cu->device);
    if (e != cudaSuccess) return cu_fail(be, "cudaSetDevice", e);
    sc->switched = 1;
    return QK_OK;
}

qk_status cu_enter(qk_backend *be, cu_scope *sc)
{
    cu_state *cu = cu_of(be);
    sc->switched = 0;
    if (cu->poisoned) return qk_set_error(be->ctx, QK_ERR_BACKEND, "%s", cu->poison);
    return cu_switch(be, sc);
}

void cu_leave(qk_backend *be, cu_scope *sc)
{
    cu_state *cu = cu_of(be);
    if (!sc->switched) return;
    if (cu->ctx_set && cu->primary) (void)cu->ctx_set(sc->ctx);
    else if (sc->device >= 0) (void)cudaSetDevice(sc->device);
    sc->switched = 0;
}

/* ---- memory accounting ------------------------------------------------------------ */

uint64_t cu_limit_room(qk_backend *be)
{
    cu_state *cu = cu_of(be);
    return cu->in_use >= cu->limit ? 0 : cu->limit - cu->in_use;
}

/* Free device memory now (UINT64_MAX when the runtime cannot say). */
static uint64_t device_free(void)
{
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return UINT64_MAX;
    return (uint64_t)free_b;
}

uint64_t cu_budget(qk_backend *be)
{
    /* sized work leaves the reserve to the device's other users; only the
     * smallest required pieces (one chunk, one block) may dip into it */
    const uint64_t room = cu_limit_room(be), f = device_free(), r = cu_of(be)->reserve;
    const uint64_t dev = f == UINT64_MAX ? f : f > r ? f - r : 0;
    return room < dev ? room : dev;
}

qk_status cu_alloc(qk_backend *be, size_t bytes, int mode, void **out)
{
    cu_state *cu = cu_of(be);
    const int quiet = mode != CU_REQUIRED;
    *out = NULL;
    if (bytes == 0) bytes = 1;
    uint64_t room = cu_limit_room(be);
    if (mode == CU_OPTIONAL) {
        /* an optional buffer never takes the last of a limit or of the device */
        if (cu->limit != UINT64_MAX) room = room > QK_CU_RESERVE_BYTES ? room - QK_CU_RESERVE_BYTES : 0;
        const uint64_t dev = cu_budget(be);
        if (dev < room) room = dev;
    }
    if ((uint64_t)bytes > room) {
        if (quiet) return QK_ERR_NO_MEMORY;
        return qk_set_error(be->ctx, QK_ERR_NO_MEMORY,
                            "cuda: %zu bytes of device scratch exceed QKERN_DEVICE_MEMORY_LIMIT (%llu bytes, %llu in "
                            "use)", bytes, (unsigned long long)cu->limit, (unsigned long long)cu->in_use);
    }
    cudaError_t e = cu->pool    ? cudaMallocFromPoolAsync(out, bytes, cu->pool, cu->compute)
                    : cu->pools ? cudaMallocAsync(out, bytes, cu->compute)
                                : cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        *out = NULL;
        if (quiet && e == cudaErrorMemoryAllocation) {
            return QK_ERR_NO_MEMORY;
        }
        return cu_fail(be, cu->pool ? "cudaMallocFromPoolAsync" : cu->pools ? "cudaMallocAsync" : "cudaMalloc", e);
    }
    cu->in_use += bytes;
    return QK_OK;
}

void cu_free(qk_backend *be, void *p, size_t bytes)
{
    cu_state *cu = cu_of(be);
    if (!p) return;
    if (bytes == 0) bytes = 1;
    if (cu->pools) (void)cudaFreeAsync(p, cu->compute);
    else (void)cudaFree(p);
    cu->in_use -= bytes < cu->in_use ? bytes : cu->in_use;
}

qk_status cu_host_alloc(qk_backend *be, size_t bytes, void **out, int *pageable)
{
    *pageable = 0;
    if (cudaHostAlloc(out, bytes, cudaHostAllocDefault) == cudaSuccess) return QK_OK;
    /* pinning refused (a locked-memory limit, a sandbox): pageable memory is
     * correct with the same calls, only the copies stop overlapping */
    *out = malloc(bytes);
    if (!*out) return qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory for %zu bytes of staging", bytes);
    *pageable = 1;
    return QK_OK;
}

void cu_host_free(void *p, int pageable)
{
    if (!p) return;
    if (pageable) {
        free(p);
    } else {
        (void)cudaFreeHost(p);
    }
}

qk_status cu_sync(qk_backend *be)
{
    cu_state *cu = cu_of(be);
    cudaError_t e1 = cudaStreamSynchronize(cu->h2d);
    cudaError_t e2 = cudaStreamSynchronize(cu->d2h);
    cudaError_t e3 = cudaStreamSynchronize(cu->compute);
    if (e3 != cudaSuccess) return cu_fail(be, "cudaStreamSynchronize", e3);
    if (e1 != cudaSuccess) return cu_fail(be, "cudaStreamSynchronize", e1);
    if (e2 != cudaSuccess) return cu_fail(be, "cudaStreamSynchronize", e2);
    return QK_OK;
}

/* ---- what this build can run on -------------------------------------------------------- */

/* cmake/cuda.cmake passes the fat binary's contents: machine code for
 * QK_CUDA_REAL_ARCHS ("80,90") and PTX for QK_CUDA_VIRTUAL_ARCHS ("90").
 * Machine code sm_XY runs on X.Y..X.9 of the same major; PTX compute_XY is
 * compiled by the driver for any X.Y or newer. */
static int arch_listed(const char *list, int major, int minor, int ptx)
{
    const int cc = major * 10 + minor;
    for (const char *p = list; *p;) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p) break;
        if (ptx ? a <= cc : (a / 10 == major && a <= cc)) return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

int cu_arch_supported(int major, int minor, char *why, size_t why_len)
{
#if defined(QK_CUDA_REAL_ARCHS) && defined(QK_CUDA_VIRTUAL_ARCHS)
    if (arch_listed(QK_CUDA_REAL_ARCHS, major, minor, 0) || arch_listed(QK_CUDA_VIRTUAL_ARCHS, major, minor, 1))
        return 1;
    snprintf(why, why_len,
             "is compute capability %d.%d (sm_%d%d): this build has machine code for sm_{%s} and PTX for compute_{%s} "
             "only, so no kernel could run there (rebuild with -DQKERN_CUDA_ARCHITECTURES=%d%d to try)", major,
             minor, major, minor, QK_CUDA_REAL_ARCHS, QK_CUDA_VIRTUAL_ARCHS, major, minor);
    return 0;
#else
    (void)major, (void)minor, (void)why, (void)why_len;
    return 1; /* architectures cmake could not list ("native", "all"): the launches tell */
#endif
}

/* cuCtxGetCurrent/cuCtxSetCurrent through the runtime: NULL when it cannot
 * give them (cu_enter then switches by device only). */
static void get_ctx_calls(cu_state *cu)
{
    void *g = NULL, *s = NULL;
    enum cudaDriverEntryPointQueryResult qg = cudaDriverEntryPointSymbolNotFound, qs = qg;
#if CUDART_VERSION >= 12050
    if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &g, 12000, cudaEnableDefault, &qg) != cudaSuccess ||
        cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &s, 12000, cudaEnableDefault, &qs) != cudaSuccess ||
        qg != cudaDriverEntryPointSuccess || qs != cudaDriverEntryPointSuccess || !g || !s)
        return;
#else /* an older toolkit (README: building for an older driver) */
    if (cudaGetDriverEntryPoint("cuCtxGetCurrent", &g, cudaEnableDefault, &qg) != cudaSuccess ||
        cudaGetDriverEntryPoint("cuCtxSetCurrent", &s, cudaEnableDefault, &qs) != cudaSuccess ||
        qg != cudaDriverEntryPointSuccess || qs != cudaDriverEntryPointSuccess || !g || !s)
        return;
#endif
    cu->ctx_get = (cu_ctx_get_fn)g;
    cu->ctx_set = (cu_ctx_set_fn)s;
}

/* ---- device description -------------------------------------------------------------- */

static void describe(int device, const struct cudaDeviceProp *p, qk_device_info *d)
{
    memset(d, 0, sizeof *d);
    size_t len = strnlen(p->name, sizeof p->name);
    if (len >= sizeof d->name) len = sizeof d->name - 1; /* cudaDeviceProp's name is longer */
    memcpy(d->name, p->name, len);
    d->name[len] = '\0';
    snprintf(d->vendor, sizeof d->vendor, "NVIDIA");
    snprintf(d->type, sizeof d->type, "gpu");
    int drv = 0, rt = 0;
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
    snprintf(d->version, sizeof d->version, "sm_%d%d, CUDA driver %d.%d, runtime %d.%d, device %d", p->major, p->minor,
             drv / 1000, (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10, device);
    d->global_mem = (uint64_t)p->totalGlobalMem;
}

/* Why no device can be used, or "" with *count set. */
static void device_count(int *count, char *why, size_t why_len)
{
    *count = 0;
    why[0] = '\0';
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess) {
        snprintf(why, why_len, "no CUDA device: cudaGetDeviceCount returned %d (%s: %s)", (int)e, cudaGetErrorName(e),
                 cudaGetErrorString(e));
        *count = 0;
    } else if (*count <= 0) {
        snprintf(why, why_len, "no CUDA device: cudaGetDeviceCount found none");
        *count = 0;
    }
}

/* ---- buffers --------------------------------------------------------------------------- */

static qk_status cuda_buffer_alloc(qk_backend *be, size_t bytes, void **handle)
{
    cu_state *cu = cu_of(be);
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    cu_buf *b = calloc(1, sizeof *b);
    if (!b) {
        st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory");
        goto done;
    }
    if ((uint64_t)bytes > cu_limit_room(be)) {
        st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY,
                          "cuda: a %zu-byte buffer exceeds QKERN_DEVICE_MEMORY_LIMIT (%llu bytes, %llu in use)", bytes,
                          (unsigned long long)cu->limit, (unsigned long long)cu->in_use);
        goto done;
    }
    CU_CHECK(be, st, cudaMalloc(&b->ptr, bytes));
    b->bytes = bytes;
    cu->in_use += bytes;
    *handle = b;
    b = NULL;
done:
    free(b);
    cu_leave(be, &prev);
    return st;
}

/* The caller's device pointer: it must be device (or managed) memory of this
 * device, the first and the last byte. */
static qk_status check_device_pointer(qk_backend *be, const void *p, const char *which)
{
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof a);
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        return qk_set_error(be->ctx, QK_ERR_INVALID_ARG,
                            "cuda: qk_buffer_wrap: the %s byte at %p is not CUDA memory (cudaPointerGetAttributes: %s)",
                            which, p, cudaGetErrorString(e));
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged) {
        return qk_set_error(be->ctx, QK_ERR_INVALID_ARG,
                            "cuda: qk_buffer_wrap: the %s byte at %p is not device memory (memory type %d; a host "
                            "pointer goes in a host tensor instead)", which, p, (int)a.type);
    }
    if (a.device != cu_of(be)->device) {
        return qk_set_error(be->ctx, QK_ERR_INVALID_ARG,
                            "cuda: qk_buffer_wrap: the %s byte at %p is memory of device %d, this context uses device %d",
                            which, p, a.device, cu_of(be)->device);
    }
    return QK_OK;
}

static qk_status cuda_buffer_wrap(qk_backend *be, void *native, size_t bytes, void **handle)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = check_device_pointer(be, native, "first");
    if (st == QK_OK && bytes > 1) st = check_device_pointer(be, (const char *)native + (bytes - 1), "last");
    if (st == QK_OK) {
        cu_buf *b = calloc(1, sizeof *b);
        if (!b) {
            st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory");
        } else {
            b->ptr = native;
            b->bytes = bytes;
            *handle = b;
        }
    }
    cu_leave(be, &prev);
    return st;
}

static void cuda_buffer_free(qk_backend *be, void *handle, int owned)
{
    cu_buf *b = handle;
    if (!b) return;
    if (owned && b->ptr) {
        cu_scope prev; /* not cu_enter: a poisoned backend still frees what it can */
        if (cu_switch(be, &prev) == QK_OK) {
            (void)cudaFree(b->ptr);
            cu_leave(be, &prev);
        }
        cu_state *cu = cu_of(be);
        cu->in_use -= b->bytes < cu->in_use ? b->bytes : cu->in_use;
    }
    free(b);
}

static qk_status cuda_buffer_write(qk_backend *be, void *handle, size_t offset, const void *src, size_t bytes)
{
    cu_buf *b = handle;
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    /* on the compute stream, so every later kernel sees it; then wait, so the
     * caller may reuse src at once */
    CU_CHECK(be, st, cudaMemcpyAsync((char *)b->ptr + offset, src, bytes, cudaMemcpyHostToDevice, cu_of(be)->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu_of(be)->compute));
done:
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_buffer_read(qk_backend *be, void *handle, size_t offset, void *dst, size_t bytes)
{
    cu_buf *b = handle;
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    CU_CHECK(be, st, cudaMemcpyAsync(dst, (const char *)b->ptr + offset, bytes, cudaMemcpyDeviceToHost,
                                     cu_of(be)->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu_of(be)->compute));
done:
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_buffer_copy(qk_backend *be, void *dst, size_t dst_offset, void *src, size_t src_offset,
                                 size_t bytes)
{
    cu_buf *d = dst, *sb = src;
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    CU_CHECK(be, st, cudaMemcpyAsync((char *)d->ptr + dst_offset, (const char *)sb->ptr + src_offset, bytes,
                                     cudaMemcpyDeviceToDevice, cu_of(be)->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu_of(be)->compute));
done:
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_native(qk_backend *be, qk_native_handles *out)
{
    out->cuda_device = cu_of(be)->device;
    out->cuda_stream = (void *)cu_of(be)->compute;
    return QK_OK;
}

/* ---- the interface ------------------------------------------------------------------------ */

static void release_state(cu_state *cu)
{
    for (int i = 0; i < 2; i++) {
        if (cu->ev_in[i]) cudaEventDestroy(cu->ev_in[i]);
        if (cu->ev_kernel[i]) cudaEventDestroy(cu->ev_kernel[i]);
        if (cu->ev_done[i]) cudaEventDestroy(cu->ev_done[i]);
    }
    if (cu->dscratch) cudaFree(cu->dscratch);
    cu_host_free(cu->hscratch, cu->hscratch_pageable);
    cu_host_free(cu->pin, cu->pin_pageable);
    if (cu->pool) cudaMemPoolDestroy(cu->pool); /* everything in it was freed, the streams are idle */
    if (cu->compute) cudaStreamDestroy(cu->compute);
    if (cu->h2d) cudaStreamDestroy(cu->h2d);
    if (cu->d2h) cudaStreamDestroy(cu->d2h);
}

static void cuda_destroy(qk_backend *be)
{
    cu_state *cu = cu_of(be);
    cu_scope prev; /* not cu_enter: a poisoned backend still releases what it can */
    if (cu_switch(be, &prev) == QK_OK) {
        (void)cudaStreamSynchronize(cu->compute);
        (void)cudaStreamSynchronize(cu->h2d);
        (void)cudaStreamSynchronize(cu->d2h);
        release_state(cu);
        cu_leave(be, &prev);
    }
    free(cu);
    free(be);
}

static qk_status cuda_device_info(qk_backend *be, qk_device_info *out)
{
    *out = cu_of(be)->info;
    return QK_OK;
}

/* Each operation runs with the backend's device current. */
static qk_status cuda_minmax(qk_backend *be, const qk_tensor *x, qk_minmax_result *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_minmax(be, x, out);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_select(qk_backend *be, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                             double *values)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_select(be, x, flags, ranks, nranks, values);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_quantize(qk_backend *be, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_quantize(be, x, params, codes);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_dequantize(qk_backend *be, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_dequantize(be, codes, params, out);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_error(qk_backend *be, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                            double fence_hi, qk_error_sums *sums, qk_error_counts *counts)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_error(be, x, params, k, fence_lo, fence_hi, sums, counts);
    cu_leave(be, &prev);
    return st;
}

/* The segmented members: the same entry and exit. */
static qk_status cuda_seg_minmax(qk_backend *be, const qk_tensor *x, int64_t seg, qk_minmax_result *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_seg_minmax(be, x, seg, out);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_seg_select(qk_backend *be, const qk_tensor *x, int64_t seg, unsigned flags,
                                 const int64_t *ranks, size_t nranks, double *values)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_seg_select(be, x, seg, flags, ranks, nranks, values);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_seg_quantize(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                                   qk_tensor *codes)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_seg_quantize(be, x, seg, params, codes);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_seg_dequantize(qk_backend *be, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                                     qk_tensor *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_seg_dequantize(be, codes, seg, params, out);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_seg_error(qk_backend *be, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                                const double *fences, qk_error_sums *sums, qk_error_counts *counts)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_seg_error(be, x, seg, params, k, fences, sums, counts);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_widen(qk_backend *be, const qk_tensor *x, qk_tensor *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_widen(be, x, out);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_ggml_quantize(qk_backend *be, const qk_tensor *x, int type, qk_tensor *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_ggml(be, 1, x, type, out);
    cu_leave(be, &prev);
    return st;
}

static qk_status cuda_ggml_dequantize(qk_backend *be, const qk_tensor *in, int type, qk_tensor *out)
{
    cu_scope prev;
    qk_status st = cu_enter(be, &prev);
    if (st != QK_OK) return st;
    st = qk_cu_op_ggml(be, 0, out, type, in);
    cu_leave(be, &prev);
    return st;
}

static const qk_backend_iface cuda_iface = {
    .destroy = cuda_destroy,
    .device_info = cuda_device_info,
    .buffer_alloc = cuda_buffer_alloc,
    .buffer_wrap = cuda_buffer_wrap,
    .buffer_free = cuda_buffer_free,
    .buffer_write = cuda_buffer_write,
    .buffer_read = cuda_buffer_read,
    .minmax = cuda_minmax,
    .select = cuda_select,
    .quantize = cuda_quantize,
    .dequantize = cuda_dequantize,
    .error = cuda_error,
    .buffer_copy = cuda_buffer_copy,
    .native = cuda_native,
    .seg_minmax = cuda_seg_minmax,
    .seg_select = cuda_seg_select,
    .seg_quantize = cuda_seg_quantize,
    .seg_dequantize = cuda_seg_dequantize,
    .seg_error = cuda_seg_error,
    .widen = cuda_widen,
    .ggml_quantize = cuda_ggml_quantize,
    .ggml_dequantize = cuda_ggml_dequantize,
};

qk_status qk_cuda_backend_create(qk_context *ctx, int device, qk_backend **out)
{
    *out = NULL;
    uint64_t limit;
    qk_status lst = qk_device_memory_limit(ctx, &limit);
    if (lst != QK_OK) return lst;
    int count;
    char why[256];
    device_count(&count, why, sizeof why);
    if (!count) return qk_set_error(ctx, QK_ERR_NO_DEVICE, "cuda: %s", why);
    if (device < 0 || device >= count) {
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "cuda: device %d does not exist (%d CUDA device%s, QKERN_DEVICE)",
                            device, count, count == 1 ? "" : "s");
    }

    /* A device the fat binary has no code for would pass everything below and
     * fail every launch (cudaErrorNoKernelImageForDevice): refuse it here, so
     * AUTO goes on to OpenCL or the CPU. */
    struct cudaDeviceProp props;
    cudaError_t pe = cudaGetDeviceProperties(&props, device);
    if (pe != cudaSuccess) {
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "cuda: cudaGetDeviceProperties(%d) failed: %s (%d: %s)", device,
                            cudaGetErrorName(pe), (int)pe, cudaGetErrorString(pe));
    }
    if (!cu_arch_supported(props.major, props.minor, why, sizeof why)) {
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "cuda: device %d (%.*s) %s", device, 96, props.name, why);
    }

    qk_backend *be = calloc(1, sizeof *be);
    cu_state *cu = calloc(1, sizeof *cu);
    if (!be || !cu) {
        free(be);
        free(cu);
        return qk_set_error(ctx, QK_ERR_NO_MEMORY, "cuda: out of host memory");
    }
    be->iface = &cuda_iface;
    be->impl = cu;
    be->ctx = ctx;
    cu->device = device;
    cu->limit = limit;
    cu->cc_major = props.major;
    cu->cc_minor = props.minor;
    get_ctx_calls(cu);

    /* the caller's device and context, restored at the end as cu_leave does */
    qk_status st = QK_OK;
    cu_scope prev = {-1, NULL, 1};
    if (cu->ctx_get && cu->ctx_get(&prev.ctx) != 0) prev.ctx = NULL;
    if (cudaGetDevice(&prev.device) != cudaSuccess) prev.device = -1;
    CU_CHECK(be, st, cudaSetDevice(device)); /* initializes the primary context and makes it current */
    if (cu->ctx_get && cu->ctx_get(&cu->primary) != 0) cu->primary = NULL;
    describe(device, &props, &cu->info);
    cu->sms = props.multiProcessorCount > 0 ? props.multiProcessorCount : 1;
    int pools = 0;
    if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess) {
        pools = 0;
    }
    cu->pools = pools != 0;
    {
        size_t f = 0, total = 0;
        if (cudaMemGetInfo(&f, &total) != cudaSuccess) total = (size_t)props.totalGlobalMem;
        uint64_t r = (uint64_t)total / 16;
        cu->reserve = r < QK_CU_DEVICE_RESERVE_MIN ? QK_CU_DEVICE_RESERVE_MIN
                      : r > QK_CU_DEVICE_RESERVE_MAX ? QK_CU_DEVICE_RESERVE_MAX
                                                     : r;
        if (cu->reserve > (uint64_t)total / 4) cu->reserve = (uint64_t)total / 4; /* tiny (simulated) devices */
        cu->pool_keep = limit != UINT64_MAX ? 0 : (uint64_t)total / 16 < QK_CU_POOL_KEEP ? (uint64_t)total / 16
                                                                                          : QK_CU_POOL_KEEP;
    }
    if (cu->pools) {
        /* A pool of our own: its release threshold is ours to set (the
         * device's default pool is the application's, and with threshold 0 it
         * unmaps all free memory at every synchronization). Without one, the
         * default pool serves, as before. */
        struct cudaMemPoolProps pp;
        memset(&pp, 0, sizeof pp);
        pp.allocType = cudaMemAllocationTypePinned;
        pp.handleTypes = cudaMemHandleTypeNone;
        pp.location.type = cudaMemLocationTypeDevice;
        pp.location.id = device;
        if (cudaMemPoolCreate(&cu->pool, &pp) == cudaSuccess) {
            uint64_t keep = cu->pool_keep;
            if (cudaMemPoolSetAttribute(cu->pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) {
                (void)cudaMemPoolDestroy(cu->pool);
                cu->pool = NULL;
            }
        } else {
            cu->pool = NULL;
        }
    }
    /* the segmented sort's tiers above 48 KiB of shared memory need the opt-in */
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
        optin = 0;
    }
    cu->smem_optin = optin > 48 * 1024 ? optin : 48 * 1024;
    /* non-blocking: no implicit ordering with the caller's legacy default stream */
    CU_CHECK(be, st, cudaStreamCreateWithFlags(&cu->compute, cudaStreamNonBlocking));
    CU_CHECK(be, st, cudaStreamCreateWithFlags(&cu->h2d, cudaStreamNonBlocking));
    CU_CHECK(be, st, cudaStreamCreateWithFlags(&cu->d2h, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++) {
        CU_CHECK(be, st, cudaEventCreateWithFlags(&cu->ev_in[i], cudaEventDisableTiming));
        CU_CHECK(be, st, cudaEventCreateWithFlags(&cu->ev_kernel[i], cudaEventDisableTiming));
        CU_CHECK(be, st, cudaEventCreateWithFlags(&cu->ev_done[i], cudaEventDisableTiming));
    }
    CU_CHECK(be, st, cudaMalloc(&cu->dscratch, QK_CU_SCRATCH_BYTES));
    cu->in_use = QK_CU_SCRATCH_BYTES;
    if ((st = cu_host_alloc(be, QK_CU_SCRATCH_BYTES, &cu->hscratch, &cu->hscratch_pageable)) != QK_OK) goto done;
done:
    if (st != QK_OK) release_state(cu); /* with the primary context still current */
    if (cu->ctx_set && cu->primary) (void)cu->ctx_set(prev.ctx);
    else if (prev.device >= 0 && prev.device != device) (void)cudaSetDevice(prev.device);
    if (st != QK_OK) {
        free(cu);
        free(be);
        be = NULL;
    }
    *out = be;
    return st;
}

/* The oldest Linux driver for the runtime built in (NVIDIA's CUDA Toolkit
 * release notes, "CUDA Toolkit and Minimum Required Driver Version"; within a
 * major version the runtime runs on that major's first driver). */
static const char *driver_needed(int runtime)
{
    const int major = runtime / 1000;
    return major >= 13 ? "580.65.06" : major == 12 ? "525.60.13" : major == 11 ? "450.80.02" : "unknown";
}

void qk_cuda_backend_query(qk_backend_info *out)
{
    out->compiled = 1;
    /* both answer without a driver: the runtime is linked in, the driver's is 0 */
    if (cudaRuntimeGetVersion(&out->runtime_version) != cudaSuccess) out->runtime_version = CUDART_VERSION;
    if (cudaDriverGetVersion(&out->driver_version) != cudaSuccess) out->driver_version = 0;
    snprintf(out->driver_needed, sizeof out->driver_needed, "%s", driver_needed(out->runtime_version));
    int count;
    char why[256];
    device_count(&count, why, sizeof why);
    if (!count) {
        snprintf(out->reason, sizeof out->reason, "%s", why);
        return;
    }
    out->n_devices = count < QK_MAX_DEVICES ? count : QK_MAX_DEVICES;
    for (int d = 0; d < out->n_devices; d++) {
        struct cudaDeviceProp props;
        if (cudaGetDeviceProperties(&props, d) == cudaSuccess) {
            describe(d, &props, &out->devices[d]);
            char no[256];
            if (cu_arch_supported(props.major, props.minor, no, sizeof no)) {
                out->available = 1;
            } else {
                /* listed, but refused: say so in its line and, if none is usable, in the reason */
                size_t l = strlen(out->devices[d].version);
                snprintf(out->devices[d].version + l, sizeof out->devices[d].version - l, ", unsupported");
                if (!out->reason[0]) snprintf(out->reason, sizeof out->reason, "no usable CUDA device: device %d %.200s", d, no);
            }
        } else {
            snprintf(out->devices[d].name, sizeof out->devices[d].name, "CUDA device %d (no properties)", d);
        }
    }
    if (out->available) out->reason[0] = '\0';
}
