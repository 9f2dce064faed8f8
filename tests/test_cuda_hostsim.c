/* The CUDA backend's host side (host/cuda: streaming, chunking, the memory
 * limit, the radix-select driver, the error pass's folding) run against a
 * simulated device, on any machine, and compared with the CPU reference.
 *
 * This executable defines the CUDA runtime functions host/cuda calls and the
 * five kernel launchers of host/cuda/cuda_launch.h itself, so the linker takes
 * them from here rather than from libqkern.a / cudart_static. The simulated
 * runtime is deliberately lazy: copies, memsets and "kernels" are queued per
 * stream and run only when the host synchronizes on them (stream and event
 * waits are honoured), and freed memory is checked, so host code that touches
 * pinned staging too early, forgets a wait, or frees in use fails here. The
 * "kernels" are plain loops that implement each launcher's documented
 * contract (the error pass with the same fixed-block structure and fold).
 *
 * What this does not test: the CUDA kernels themselves (kernels/cuda), which
 * need a GPU: QKERN_TEST_BACKEND=cuda runs the backend suite there. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "ref.h"

#if defined(__has_include)
#if __has_include(<cuda_runtime_api.h>)
#define QK_SIM 1
#endif
#endif

#ifndef QK_SIM
int main(void)
{
    printf("CUDA runtime headers not available in this build: nothing to simulate\n");
    return 0;
}
#else

#include <cuda_runtime_api.h>

#include "cpu/cpu_keys.h"
#include "cuda/cuda_launch.h"
#include "internal.h"
#include "quant_math.h"

/* ==== the simulated runtime ================================================================ */

static int sim_fatal_count;
#define SIM_FAIL(...)                                                                                                  \
    do {                                                                                                               \
        fprintf(stderr, "SIMULATOR: " __VA_ARGS__);                                                                    \
        fputc('\n', stderr);                                                                                           \
        sim_fatal_count++;                                                                                             \
    } while (0)

enum { MEM_DEVICE = 1, MEM_PINNED = 2 };
typedef struct sim_alloc {
    char *p;
    size_t bytes;
    int kind;
    int live;
} sim_alloc;

static sim_alloc *allocs;
static size_t n_allocs, cap_allocs;
static size_t device_capacity = (size_t)1 << 30, device_used;
static int sim_pools = 1;
static cudaError_t last_error = cudaSuccess;
static int current_device = 0;

static sim_alloc *find_alloc(const void *p, size_t bytes, int kind)
{
    const char *c = p;
    for (size_t i = 0; i < n_allocs; i++) {
        sim_alloc *a = &allocs[i];
        if (a->live && a->kind == kind && c >= a->p && c + bytes <= a->p + a->bytes && c < a->p + a->bytes + 1)
            return a;
    }
    return NULL;
}

/* Every device access the simulated kernels and copies make goes through this. */
static void dev_check(const void *p, size_t bytes, const char *what)
{
    if (bytes == 0) return;
    if (!find_alloc(p, bytes, MEM_DEVICE)) SIM_FAIL("%s: %zu bytes at %p are not live device memory", what, bytes, p);
}

static void *new_alloc(size_t bytes, int kind)
{
    if (n_allocs == cap_allocs) {
        cap_allocs = cap_allocs ? 2 * cap_allocs : 64;
        allocs = realloc(allocs, cap_allocs * sizeof *allocs);
    }
    char *p = malloc(bytes ? bytes : 1);
    if (!p) return NULL;
    memset(p, 0xa5, bytes); /* device memory starts as garbage */
    allocs[n_allocs++] = (sim_alloc){p, bytes, kind, 1};
    return p;
}

static void drop_alloc(void *p, int kind)
{
    for (size_t i = 0; i < n_allocs; i++) {
        if (allocs[i].live && allocs[i].p == p && allocs[i].kind == kind) {
            allocs[i].live = 0;
            if (kind == MEM_DEVICE) device_used -= allocs[i].bytes;
            free(allocs[i].p);
            allocs[i] = allocs[--n_allocs];
            return;
        }
    }
    SIM_FAIL("free of %p: not a live %s allocation", p, kind == MEM_DEVICE ? "device" : "pinned");
}

/* ---- streams: lazy queues ---- */

enum { OP_COPY, OP_SET, OP_WAIT, OP_CALL, OP_FREE };
typedef struct sim_op {
    int kind;
    void *dst;
    const void *src;
    size_t bytes;
    int value;
    void *owned; /* snapshot of a pageable source, or the call's argument block */
    struct CUstream_st *wait_stream;
    uint64_t wait_target;
    void (*fn)(void *);
} sim_op;

struct CUstream_st {
    sim_op *ops;
    size_t n, cap, head;
    uint64_t enq, done;
};

struct CUevent_st {
    struct CUstream_st *s;
    uint64_t target;
};

#define MAX_STREAMS 64
static struct CUstream_st *streams[MAX_STREAMS];

static void run_until(struct CUstream_st *s, uint64_t target);

static void exec_op(sim_op *op)
{
    switch (op->kind) {
    case OP_COPY: memcpy(op->dst, op->owned ? op->owned : op->src, op->bytes); break;
    case OP_SET: memset(op->dst, op->value, op->bytes); break;
    case OP_WAIT: run_until(op->wait_stream, op->wait_target); break;
    case OP_CALL: op->fn(op->owned); break;
    case OP_FREE: drop_alloc(op->dst, MEM_DEVICE); break;
    }
    free(op->owned);
    op->owned = NULL;
}

static void run_until(struct CUstream_st *s, uint64_t target)
{
    while (s->done < target) {
        sim_op op = s->ops[s->head++];
        s->done++;
        exec_op(&op);
        if (s->head == s->n) s->head = s->n = 0;
    }
}

static void run_all(void)
{
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; i < MAX_STREAMS; i++) {
            if (streams[i] && streams[i]->done < streams[i]->enq) {
                run_until(streams[i], streams[i]->enq);
                again = 1;
            }
        }
    }
}

static void enqueue(struct CUstream_st *s, sim_op op)
{
    if (!s) { /* the legacy stream: run everything, then this */
        run_all();
        exec_op(&op);
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->ops = realloc(s->ops, s->cap * sizeof *s->ops);
    }
    s->ops[s->n++] = op;
    s->enq++;
}

static cudaError_t fail_with(cudaError_t e)
{
    last_error = e;
    return e;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaErrorMemoryAllocation ? "out of memory (simulated)" : "simulated error";
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device != 0) return fail_with(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (device != 0) return fail_with(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "qkern host simulator");
    p->totalGlobalMem = device_capacity;
    p->multiProcessorCount = 4;
    p->major = 9;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    *value = attr == cudaDevAttrMemoryPoolsSupported ? sim_pools : 0;
    return device == 0 ? cudaSuccess : fail_with(cudaErrorInvalidDevice);
}

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

static cudaError_t device_malloc(void **p, size_t bytes)
{
    if (bytes > device_capacity - device_used) {
        *p = NULL;
        return fail_with(cudaErrorMemoryAllocation);
    }
    *p = new_alloc(bytes, MEM_DEVICE);
    if (!*p) return fail_with(cudaErrorMemoryAllocation);
    device_used += bytes;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    return device_malloc(p, bytes);
}

cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s)
{
    (void)s;
    return device_malloc(p, bytes);
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    run_all(); /* cudaFree synchronizes the device */
    drop_alloc(p, MEM_DEVICE);
    return cudaSuccess;
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t s)
{
    enqueue(s, (sim_op){.kind = OP_FREE, .dst = p});
    return cudaSuccess;
}

static int sim_refuse_pinning;

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    (void)flags;
    if (sim_refuse_pinning) {
        *p = NULL;
        return fail_with(cudaErrorMemoryAllocation);
    }
    *p = new_alloc(bytes, MEM_PINNED);
    return *p ? cudaSuccess : fail_with(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *p)
{
    run_all();
    drop_alloc(p, MEM_PINNED);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p)
{
    memset(a, 0, sizeof *a);
    if (find_alloc(p, 1, MEM_DEVICE)) {
        a->type = cudaMemoryTypeDevice;
        a->device = 0;
        a->devicePointer = (void *)p;
    } else if (find_alloc(p, 1, MEM_PINNED)) {
        a->type = cudaMemoryTypeHost;
        a->hostPointer = (void *)p;
    } else {
        a->type = cudaMemoryTypeUnregistered;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t s)
{
    if (kind == cudaMemcpyHostToDevice) {
        dev_check(dst, bytes, "cudaMemcpyAsync H2D destination");
        sim_op op = {.kind = OP_COPY, .dst = dst, .src = src, .bytes = bytes};
        if (!find_alloc(src, bytes, MEM_PINNED)) { /* pageable: staged before the call returns */
            op.owned = malloc(bytes ? bytes : 1);
            memcpy(op.owned, src, bytes);
        }
        enqueue(s, op);
    } else if (kind == cudaMemcpyDeviceToHost) {
        dev_check(src, bytes, "cudaMemcpyAsync D2H source");
        if (find_alloc(dst, bytes, MEM_PINNED)) {
            enqueue(s, (sim_op){.kind = OP_COPY, .dst = dst, .src = src, .bytes = bytes});
        } else { /* pageable: returns once the copy is done */
            if (s) run_until(s, s->enq);
            else run_all();
            memcpy(dst, src, bytes);
        }
    } else if (kind == cudaMemcpyDeviceToDevice) {
        dev_check(src, bytes, "cudaMemcpyAsync D2D source");
        dev_check(dst, bytes, "cudaMemcpyAsync D2D destination");
        enqueue(s, (sim_op){.kind = OP_COPY, .dst = dst, .src = src, .bytes = bytes});
    } else {
        SIM_FAIL("cudaMemcpyAsync kind %d is not simulated", (int)kind);
        return fail_with(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s)
{
    dev_check(p, bytes, "cudaMemsetAsync");
    enqueue(s, (sim_op){.kind = OP_SET, .dst = p, .value = value, .bytes = bytes});
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    (void)flags;
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (!streams[i]) {
            streams[i] = calloc(1, sizeof *streams[i]);
            *s = streams[i];
            return cudaSuccess;
        }
    }
    return fail_with(cudaErrorMemoryAllocation);
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    run_until(s, s->enq);
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (streams[i] == s) streams[i] = NULL;
    }
    free(s->ops);
    free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    run_until(s, s->enq);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    (void)flags;
    *e = calloc(1, sizeof **e);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    e->s = s;
    e->target = s ? s->enq : 0;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (e->s) run_until(e->s, e->target);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    (void)flags;
    if (e->s && e->s != s) enqueue(s, (sim_op){.kind = OP_WAIT, .wait_stream = e->s, .wait_target = e->target});
    return cudaSuccess;
}

/* ==== the simulated kernels: each launcher's contract as a plain loop ===================== */

static cudaError_t launch(cudaStream_t s, void (*fn)(void *), const void *args, size_t size)
{
    void *copy = malloc(size);
    memcpy(copy, args, size);
    enqueue(s, (sim_op){.kind = OP_CALL, .fn = fn, .owned = copy});
    return cudaGetLastError();
}

static double value_at(int is_f64, const void *x, int64_t i)
{
    return is_f64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}

typedef struct minmax_args {
    int is_f64;
    const void *x;
    int64_t n, base;
    qk_cu_minmax_acc *acc;
} minmax_args;

static void minmax_run(void *p)
{
    minmax_args *a = p;
    dev_check(a->x, (size_t)a->n * (a->is_f64 ? 8 : 4), "minmax x");
    dev_check(a->acc, sizeof *a->acc, "minmax acc");
    for (int64_t i = 0; i < a->n; i++) {
        double v = value_at(a->is_f64, a->x, i);
        if (!isfinite(v)) {
            a->acc->nonfinite++;
            if ((unsigned long long)(a->base + i) < a->acc->first) a->acc->first = (unsigned long long)(a->base + i);
            continue;
        }
        unsigned long long k = qk_key_f64(v);
        if (k < a->acc->kmin) a->acc->kmin = k;
        if (k > a->acc->kmax) a->acc->kmax = k;
        a->acc->n_finite++;
    }
}

cudaError_t qk_cu_minmax(cudaStream_t s, int sms, int is_f64, const void *x, int64_t n, int64_t base,
                         qk_cu_minmax_acc *acc)
{
    (void)sms;
    minmax_args a = {is_f64, x, n, base, acc};
    return launch(s, minmax_run, &a, sizeof a);
}

typedef struct quant_args {
    qk_dtype xt, ct;
    const void *x;
    void *codes;
    int64_t n;
    qk_cu_qparam p;
    float scale;
    int32_t zp;
} quant_args;

static void quant_run(void *p)
{
    quant_args *a = p;
    dev_check(a->x, (size_t)a->n * qk_dtype_size(a->xt), "quantize x");
    dev_check(a->codes, (size_t)a->n * qk_dtype_size(a->ct), "quantize codes");
    for (int64_t i = 0; i < a->n; i++) {
        int32_t q = a->xt == QK_F32
                        ? qk_quant_f32(((const float *)a->x)[i], a->p.scale, a->p.zero_point, a->p.qmin, a->p.qmax)
                        : qk_quant_f64(((const double *)a->x)[i], a->p.scale, a->p.zero_point, a->p.qmin, a->p.qmax);
        switch (a->ct) {
        case QK_U8: ((uint8_t *)a->codes)[i] = (uint8_t)q; break;
        case QK_I8: ((int8_t *)a->codes)[i] = (int8_t)q; break;
        case QK_U16: ((uint16_t *)a->codes)[i] = (uint16_t)q; break;
        case QK_I16: ((int16_t *)a->codes)[i] = (int16_t)q; break;
        default: ((int32_t *)a->codes)[i] = q; break;
        }
    }
}

cudaError_t qk_cu_quantize(cudaStream_t s, int sms, qk_dtype xt, const void *x, qk_dtype ct, void *codes, int64_t n,
                           qk_cu_qparam p)
{
    (void)sms;
    quant_args a = {xt, ct, x, codes, n, p, 0, 0};
    return launch(s, quant_run, &a, sizeof a);
}

static int64_t code_at(qk_dtype dt, const void *c, int64_t i)
{
    switch (dt) {
    case QK_U8: return ((const uint8_t *)c)[i];
    case QK_I8: return ((const int8_t *)c)[i];
    case QK_U16: return ((const uint16_t *)c)[i];
    case QK_I16: return ((const int16_t *)c)[i];
    default: return ((const int32_t *)c)[i];
    }
}

static void dequant_run(void *p)
{
    quant_args *a = p;
    dev_check(a->codes, (size_t)a->n * qk_dtype_size(a->ct), "dequantize codes");
    dev_check(a->x, (size_t)a->n * 4, "dequantize out");
    float *out = (float *)a->x;
    for (int64_t i = 0; i < a->n; i++) out[i] = qk_dequant(code_at(a->ct, a->codes, i), a->scale, a->zp);
}

cudaError_t qk_cu_dequantize(cudaStream_t s, int sms, qk_dtype ct, const void *codes, float *out, int64_t n,
                             float scale, int32_t zero_point)
{
    (void)sms;
    quant_args a;
    memset(&a, 0, sizeof a);
    a.ct = ct;
    a.codes = (void *)codes;
    a.x = out;
    a.n = n;
    a.scale = scale;
    a.zp = zero_point;
    return launch(s, dequant_run, &a, sizeof a);
}

typedef struct error_args {
    int is_f64;
    const void *x;
    int64_t n, base;
    const qk_cu_qparam *params;
    int k;
    double flo, fhi;
    double *partial;
    unsigned long long *clipped, *counts;
    double *run;
} error_args;

static void error_run(void *p)
{
    error_args *a = p;
    const int64_t nblk = (a->n + QK_CU_ERROR_BLOCK - 1) / QK_CU_ERROR_BLOCK;
    dev_check(a->x, (size_t)a->n * (a->is_f64 ? 8 : 4), "error x");
    dev_check(a->params, (size_t)a->k * sizeof *a->params, "error params");
    dev_check(a->partial, (size_t)nblk * (size_t)a->k * 16, "error partial");
    dev_check(a->clipped, (size_t)a->k * 8, "error clipped");
    dev_check(a->counts, QK_CU_CNT_COUNT * 8, "error counts");
    dev_check(a->run, (size_t)a->k * 16, "error run");
    if (a->base % QK_CU_ERROR_BLOCK) SIM_FAIL("error pass launched at base %lld, not a block boundary", (long long)a->base);
    for (int64_t b = 0; b < nblk; b++) {
        int64_t i0 = b * QK_CU_ERROR_BLOCK, i1 = i0 + QK_CU_ERROR_BLOCK < a->n ? i0 + QK_CU_ERROR_BLOCK : a->n;
        for (int64_t i = i0; i < i1; i++) {
            double v = value_at(a->is_f64, a->x, i);
            if (!isfinite(v)) {
                a->counts[QK_CU_CNT_NONFINITE]++;
                if ((unsigned long long)(a->base + i) < a->counts[QK_CU_CNT_FIRST])
                    a->counts[QK_CU_CNT_FIRST] = (unsigned long long)(a->base + i);
                continue;
            }
            a->counts[QK_CU_CNT_FINITE]++;
            a->counts[QK_CU_CNT_INLIERS] += v >= a->flo && v <= a->fhi;
        }
        for (int c = 0; c < a->k; c++) {
            const qk_cu_qparam *q = &a->params[c];
            double sse = 0, ssi = 0;
            for (int64_t i = i0; i < i1; i++) {
                double v = value_at(a->is_f64, a->x, i);
                if (!isfinite(v)) continue;
                int32_t code = a->is_f64 ? qk_quant_f64(v, q->scale, q->zero_point, q->qmin, q->qmax)
                                         : qk_quant_f32((float)v, q->scale, q->zero_point, q->qmin, q->qmax);
                double e = v - (double)qk_dequant(code, q->scale, q->zero_point);
                sse += e * e;
                if (v >= a->flo && v <= a->fhi) ssi += e * e;
                a->clipped[c] += v < q->clip_lo || v > q->clip_hi;
            }
            a->partial[(b * a->k + c) * 2] = sse;
            a->partial[(b * a->k + c) * 2 + 1] = ssi;
        }
    }
    for (int c = 0; c < a->k; c++) {
        for (int64_t b = 0; b < nblk; b++) {
            a->run[2 * c] += a->partial[(b * a->k + c) * 2];
            a->run[2 * c + 1] += a->partial[(b * a->k + c) * 2 + 1];
        }
    }
}

cudaError_t qk_cu_error(cudaStream_t s, int is_f64, const void *x, int64_t n, int64_t base, const qk_cu_qparam *params,
                        int k, double fence_lo, double fence_hi, double *partial, unsigned long long *clipped,
                        unsigned long long *counts, double *run)
{
    error_args a = {is_f64, x, n, base, params, k, fence_lo, fence_hi, partial, clipped, counts, run};
    return launch(s, error_run, &a, sizeof a);
}

static unsigned long long sim_passes, sim_pass_keys;

static void pass_run(void *p)
{
    qk_cu_pass *a = p;
    const int raw = a->src_kind == QK_CU_SRC_F32 || a->src_kind == QK_CU_SRC_F64;
    const int wide = a->src_kind == QK_CU_SRC_F64 || a->src_kind == QK_CU_SRC_KEY64;
    const int kb = wide ? 64 : 32;
    const int root = a->filter_shift >= kb;
    sim_passes++;
    sim_pass_keys += (unsigned long long)a->count;
    dev_check(a->src, (size_t)a->count * (wide ? 8 : 4), "select source");
    dev_check(a->hist, ((size_t)(root ? 1 : a->nnodes) << a->digit_bits) * 8, "select histogram");
    dev_check(a->out_count, 8, "select cursor");
    if (!root) dev_check(a->prefixes, (size_t)a->nnodes * (wide ? 8 : 4), "select prefixes");
    if (a->out) dev_check(a->out, (size_t)a->out_cap * (wide ? 8 : 4), "select candidates");
    if (a->digit_bits > a->filter_shift) SIM_FAIL("select pass: digit wider than the remaining bits");
    /* backwards, so the candidate order differs from the source order */
    for (int64_t i = a->count - 1; i >= 0; i--) {
        uint64_t key;
        if (raw) {
            if (wide) {
                double v = ((const double *)a->src)[i];
                if ((a->flags & QK_IGNORE_NONFINITE) && !isfinite(v)) continue;
                key = qk_key_f64((a->flags & QK_ABS) ? fabs(v) : v);
            } else {
                float v = ((const float *)a->src)[i];
                if ((a->flags & QK_IGNORE_NONFINITE) && !isfinite(v)) continue;
                key = qk_key_f32((a->flags & QK_ABS) ? fabsf(v) : v);
            }
        } else {
            key = wide ? ((const uint64_t *)a->src)[i] : ((const uint32_t *)a->src)[i];
        }
        int node = 0;
        if (!root) {
            uint64_t pre = key >> a->filter_shift;
            node = -1;
            for (int j = 0; j < a->nnodes; j++) {
                uint64_t pj = wide ? ((const uint64_t *)a->prefixes)[j] : ((const uint32_t *)a->prefixes)[j];
                if (j && pj <= (wide ? ((const uint64_t *)a->prefixes)[j - 1] : ((const uint32_t *)a->prefixes)[j - 1]))
                    SIM_FAIL("select prefixes not ascending");
                if (pj == pre) node = j;
            }
            if (node < 0) continue;
        }
        uint64_t digit = (key >> (a->filter_shift - a->digit_bits)) & ((1ull << a->digit_bits) - 1);
        a->hist[((uint64_t)node << a->digit_bits) | digit]++;
        if (a->out) {
            unsigned long long w = (*a->out_count)++;
            if (w < a->out_cap) {
                if (wide) ((uint64_t *)a->out)[w] = key;
                else ((uint32_t *)a->out)[w] = (uint32_t)key;
            }
        }
    }
}

cudaError_t qk_cu_select_pass(cudaStream_t s, int sms, const qk_cu_pass *pass)
{
    (void)sms;
    if (pass->count <= 0) return cudaSuccess;
    if (pass->nnodes < 1 || pass->nnodes > QK_CU_SELECT_MAX_NODES || pass->digit_bits < 1 || pass->digit_bits > 11) {
        SIM_FAIL("select pass: %d nodes, %d-bit digit", pass->nnodes, pass->digit_bits);
        return cudaErrorInvalidValue;
    }
    return launch(s, pass_run, pass, sizeof *pass);
}

/* ==== the tests ================================================================================ */
/* (Built with -DQK_SIM_NO_MAIN, the simulator above can be linked under any of
 * the backend tests instead: QKERN_TEST_BACKEND=cuda then runs them on it.) */
#ifndef QK_SIM_NO_MAIN

static qk_context *cpu, *sim;

static int bits_eq(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static qk_context *open_sim(const char *limit)
{
    if (limit) setenv("QKERN_DEVICE_MEMORY_LIMIT", limit, 1);
    else unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    qk_context *c = NULL;
    char msg[512];
    qk_status st = qk_context_create(QK_BACKEND_CUDA, &c, msg, sizeof msg);
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    if (st != QK_OK) fail_msg("simulated CUDA context: %s (%s)", msg, qk_status_string(st));
    return c;
}

static int setup(void **state)
{
    char msg[512];
    if (qk_context_create(QK_BACKEND_CPU, &cpu, msg, sizeof msg) != QK_OK) return -1;
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    if (qk_context_create(QK_BACKEND_CUDA, &sim, msg, sizeof msg) != QK_OK) {
        fprintf(stderr, "simulated CUDA context: %s\n", msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    qk_context_destroy(sim);
    qk_context_destroy(cpu);
    return 0;
}

static void no_sim_errors(void)
{
    if (sim_fatal_count) fail_msg("the simulator saw %d misuse(s) of the runtime (see stderr)", sim_fatal_count);
}

static const double many_p[] = {0, 1e-6, 0.01, 0.5, 1, 2.5, 10, 25, 33.3, 50, 66.6, 75, 90, 99, 99.5, 99.9, 99.99,
                                99.9999, 100};
#define N_MANY (sizeof many_p / sizeof many_p[0])

/* minmax and percentiles of t on ctx equal the CPU reference's, bit for bit */
static void same_stats(qk_context *c, const qk_tensor *tc, const qk_tensor *tr, unsigned flags, const char *what)
{
    qk_minmax_result a, b;
    qk_status sa = qk_minmax(c, tc, flags & QK_IGNORE_NONFINITE, &a), sb = qk_minmax(cpu, tr, flags & QK_IGNORE_NONFINITE, &b);
    assert_int_equal(sa, sb);
    assert_true(bits_eq(a.min, b.min) && bits_eq(a.max, b.max) && bits_eq(a.absmax, b.absmax));
    assert_int_equal(a.n_finite, b.n_finite);
    assert_int_equal(a.nonfinite_count, b.nonfinite_count);
    assert_int_equal(a.first_nonfinite, b.first_nonfinite);
    if (sa != QK_OK) return;
    double ga[N_MANY], gb[N_MANY];
    sa = qk_percentiles(c, tc, many_p, N_MANY, flags, ga);
    if (sa != QK_OK) fail_msg("%s: percentiles: %s", what, qk_context_message(c));
    assert_int_equal(qk_percentiles(cpu, tr, many_p, N_MANY, flags, gb), QK_OK);
    for (size_t j = 0; j < N_MANY; j++) {
        if (!bits_eq(ga[j], gb[j])) fail_msg("%s flags %u p=%g: %.17g, reference %.17g", what, flags, many_p[j], ga[j], gb[j]);
    }
    no_sim_errors();
}

static void test_stats_vs_reference(void **state)
{
    static const int64_t sizes[] = {1, 2, 3, 17, 1000, 65537, 200003};
    for (int dist = 0; dist < REF_DIST_COUNT; dist++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            float *x = malloc((size_t)n * 4);
            ref_fill(x, n, dist, 31 + (uint64_t)dist * 977 + s);
            qk_tensor t = qk_tensor_host(QK_F32, x, n);
            same_stats(sim, &t, &t, 0, "f32");
            same_stats(sim, &t, &t, QK_ABS, "f32 abs");
            free(x);
        }
    }
}

static void test_nonfinite(void **state)
{
    enum { N = 70001 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_NORMAL, 5);
    x[66000] = NAN;
    x[66001] = INFINITY;
    x[69999] = -INFINITY;
    x[70000] = -NAN;
    qk_tensor t = qk_tensor_host(QK_F32, x, N);
    same_stats(sim, &t, &t, 0, "nonfinite");
    same_stats(sim, &t, &t, QK_IGNORE_NONFINITE, "nonfinite ignored");
    same_stats(sim, &t, &t, QK_IGNORE_NONFINITE | QK_ABS, "nonfinite ignored abs");
    int64_t cnt, first;
    qk_error_result er;
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(sim, QK_ASYMMETRIC, 8, 0, 0, -3, 3, &qp), QK_OK);
    assert_int_equal(qk_quant_error(sim, &t, &qp, 0, &er), QK_ERR_NONFINITE);
    assert_int_equal(qk_context_nonfinite(sim, &cnt, &first), QK_OK);
    assert_int_equal(cnt, 4);
    assert_int_equal(first, 66000);
    free(x);
    no_sim_errors();
}

static void test_float64(void **state)
{
    enum { N = 100003 };
    double *x = malloc(N * sizeof *x);
    ref_rng r = {77};
    for (int i = 0; i < N; i++) x[i] = ref_normal(&r) * (i % 101 == 0 ? 1e200 : 1e-3) + (i % 7 == 0 ? 1e-310 : 0);
    qk_tensor t = qk_tensor_host(QK_F64, x, N);
    same_stats(sim, &t, &t, 0, "f64");
    same_stats(sim, &t, &t, QK_ABS, "f64 abs");
    free(x);
}

/* the error sums agree with the CPU within rounding; counts exactly */
static void same_errors(qk_context *c, const qk_tensor *t, int sym, double step)
{
    qk_calib_options o;
    qk_calib_options_default(&o);
    o.method = QK_CALIB_GRIDSEARCH;
    o.scheme = sym ? QK_SYMMETRIC : QK_ASYMMETRIC;
    o.grid_start = 98;
    o.grid_stop = 100;
    o.grid_step = step;
    o.objective = QK_OBJECTIVE_MSE_INLIERS;
    o.ignore_nonfinite = 1;
    qk_calib_result a, b;
    qk_status st = qk_calibrate(c, t, &o, &a);
    if (st != QK_OK) fail_msg("calibrate: %s", qk_context_message(c));
    assert_int_equal(qk_calibrate(cpu, t, &o, &b), QK_OK);
    assert_int_equal(a.n_candidates, b.n_candidates);
    assert_int_equal(a.n, b.n);
    assert_int_equal(a.n_inliers, b.n_inliers);
    assert_true(bits_eq(a.fence_lo, b.fence_lo) && bits_eq(a.fence_hi, b.fence_hi));
    for (size_t i = 0; i < a.n_candidates; i++) {
        const qk_candidate *x = &a.candidates[i], *y = &b.candidates[i];
        assert_true(bits_eq(x->clip_lo, y->clip_lo) && bits_eq(x->clip_hi, y->clip_hi));
        assert_int_equal(x->clipped, y->clipped);
        if (!(fabs(x->mse - y->mse) <= 1e-12 * y->mse)) fail_msg("candidate %zu: mse %.17g, reference %.17g", i, x->mse, y->mse);
        if (!(fabs(x->mse_inliers - y->mse_inliers) <= 1e-12 * y->mse_inliers)) fail_msg("candidate %zu: mse_inliers", i);
    }
    qk_calib_result_release(&a);
    qk_calib_result_release(&b);
    no_sim_errors();
}

static void test_errors_vs_reference(void **state)
{
    int64_t n = 3 * QK_CU_ERROR_BLOCK + 777;
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_LAPLACE_OUTLIERS, 99);
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    same_errors(sim, &t, 0, 0.02);
    same_errors(sim, &t, 1, 0.02);
    free(x);
}

/* quantize/dequantize with every placement of input and output */
static void test_quantize_placements(void **state)
{
    enum { N = 100005 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_UNIFORM, 8);
    static const qk_dtype cts[] = {QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
    qk_buffer *bx, *bc, *bo;
    assert_int_equal(qk_buffer_create(sim, N * 4 + 4, &bx), QK_OK);
    assert_int_equal(qk_buffer_create(sim, N * 4 + 4, &bc), QK_OK);
    assert_int_equal(qk_buffer_create(sim, N * 4 + 4, &bo), QK_OK);
    assert_int_equal(qk_buffer_write(sim, bx, 4, x, N * 4), QK_OK); /* offset 4: unaligned for float4 */
    void *want = malloc(N * 4), *got = malloc(N * 4);
    float *fw = malloc(N * 4), *fg = malloc(N * 4);
    for (size_t ci = 0; ci < sizeof cts / sizeof cts[0]; ci++) {
        qk_qparams qp;
        int sym = cts[ci] == QK_I8 || cts[ci] == QK_I16 || cts[ci] == QK_I32;
        int bits = cts[ci] == QK_U8 || cts[ci] == QK_I8 ? 8 : 16;
        assert_int_equal(qk_qparams_from_range(sim, sym ? QK_SYMMETRIC : QK_ASYMMETRIC, bits, 0, 0, -80, 100, &qp), QK_OK);
        size_t es = qk_dtype_size(cts[ci]);
        qk_tensor th = qk_tensor_host(QK_F32, x, N), tb = qk_tensor_buffer(QK_F32, bx, 4, N);
        qk_tensor cw = qk_tensor_host(cts[ci], want, N);
        assert_int_equal(qk_quantize(cpu, &th, &qp, &cw), QK_OK);
        for (int place = 0; place < 4; place++) {
            const qk_tensor *in = place & 1 ? &tb : &th;
            qk_tensor out = place & 2 ? qk_tensor_buffer(cts[ci], bc, 0, N) : qk_tensor_host(cts[ci], got, N);
            memset(got, 0x5a, N * 4);
            assert_int_equal(qk_quantize(sim, in, &qp, &out), QK_OK);
            if (place & 2) assert_int_equal(qk_buffer_read(sim, bc, 0, got, N * es), QK_OK);
            if (memcmp(got, want, N * es)) fail_msg("codes %s, placement %d differ", qk_dtype_name(cts[ci]), place);
            /* dequantize the codes from the same place they are in */
            qk_tensor deq_out = place & 1 ? qk_tensor_buffer(QK_F32, bo, 4, N) : qk_tensor_host(QK_F32, fg, N);
            assert_int_equal(qk_dequantize(sim, &out, &qp, &deq_out), QK_OK);
            if (place & 1) assert_int_equal(qk_buffer_read(sim, bo, 4, fg, N * 4), QK_OK);
            qk_tensor fwt = qk_tensor_host(QK_F32, fw, N);
            assert_int_equal(qk_dequantize(cpu, &cw, &qp, &fwt), QK_OK);
            if (memcmp(fg, fw, N * 4)) fail_msg("dequantized %s, placement %d differ", qk_dtype_name(cts[ci]), place);
        }
    }
    qk_buffer_destroy(sim, bx);
    qk_buffer_destroy(sim, bc);
    qk_buffer_destroy(sim, bo);
    free(x);
    free(want);
    free(got);
    free(fw);
    free(fg);
    no_sim_errors();
}

/* A memory limit forces small chunks and takes away the candidate buffers:
 * every result is the same, bit for bit, as without it. */
static void chunked_identical(const char *limit, int pools, size_t capacity)
{
    sim_pools = pools;
    size_t saved_capacity = device_capacity;
    device_capacity = capacity;
    qk_context *lim = open_sim(limit);
    int64_t n = (1 << 21) + 13;
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_LAPLACE_OUTLIERS, 1234);
    x[n - 2] = NAN;
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    same_stats(lim, &t, &t, QK_IGNORE_NONFINITE, "chunked");
    same_stats(lim, &t, &t, QK_IGNORE_NONFINITE | QK_ABS, "chunked abs");
    /* 900 ranks: several batches */
    double p[450], ga[450], gb[450];
    for (int i = 0; i < 450; i++) p[i] = 100.0 * i / 449.0;
    assert_int_equal(qk_percentiles(lim, &t, p, 450, QK_IGNORE_NONFINITE, ga), QK_OK);
    assert_int_equal(qk_percentiles(cpu, &t, p, 450, QK_IGNORE_NONFINITE, gb), QK_OK);
    for (int i = 0; i < 450; i++) {
        if (!bits_eq(ga[i], gb[i])) fail_msg("limit %s: p=%g: %.17g, reference %.17g", limit, p[i], ga[i], gb[i]);
    }
    /* error sums: identical bits with and without the limit */
    qk_qparams qp[3];
    assert_int_equal(qk_qparams_from_range(cpu, QK_ASYMMETRIC, 8, 0, 0, -0.5, 0.7, &qp[0]), QK_OK);
    assert_int_equal(qk_qparams_from_range(cpu, QK_SYMMETRIC, 4, 0, 0, -0.2, 0.2, &qp[1]), QK_OK);
    assert_int_equal(qk_qparams_from_range(cpu, QK_SYMMETRIC, 16, 1, 0, -9, 9, &qp[2]), QK_OK);
    for (int i = 0; i < 3; i++) {
        qk_error_result a, b;
        assert_int_equal(qk_quant_error(lim, &t, &qp[i], QK_IGNORE_NONFINITE, &a), QK_OK);
        assert_int_equal(qk_quant_error(sim, &t, &qp[i], QK_IGNORE_NONFINITE, &b), QK_OK);
        if (!bits_eq(a.sse, b.sse)) fail_msg("limit %s: sse %.17g vs %.17g without it", limit, a.sse, b.sse);
        assert_int_equal(a.clipped, b.clipped);
        assert_int_equal(a.n, b.n);
        uint8_t *c1 = malloc((size_t)n * 2), *c2 = malloc((size_t)n * 2);
        qk_dtype cdt;
        assert_int_equal(qk_code_dtype(&qp[i], &cdt), QK_OK);
        qk_tensor o1 = qk_tensor_host(cdt, c1, n), o2 = qk_tensor_host(cdt, c2, n);
        assert_int_equal(qk_quantize(lim, &t, &qp[i], &o1), QK_OK);
        assert_int_equal(qk_quantize(cpu, &t, &qp[i], &o2), QK_OK);
        assert_memory_equal(c1, c2, (size_t)n * qk_dtype_size(cdt));
        free(c1);
        free(c2);
    }
    same_errors(lim, &t, 0, 0.5);
    /* float64 through the limit as well */
    double *d = malloc((size_t)(n / 2) * sizeof *d);
    for (int64_t i = 0; i < n / 2; i++) d[i] = (double)x[i] * 1e-3 + (double)i * 1e-12;
    d[0] = NAN;
    qk_tensor td = qk_tensor_host(QK_F64, d, n / 2);
    same_stats(lim, &td, &td, QK_IGNORE_NONFINITE, "chunked f64");
    free(d);
    free(x);
    qk_context_destroy(lim);
    device_capacity = saved_capacity;
    sim_pools = 1;
    no_sim_errors();
}

static void test_chunked_small_limit(void **state)
{
    chunked_identical("3M", 1, (size_t)1 << 30);
}

/* no stream-ordered allocator, and pinning refused: pageable staging */
static void test_chunked_no_pools(void **state)
{
    sim_refuse_pinning = 1;
    chunked_identical("40M", 0, (size_t)1 << 30);
    sim_refuse_pinning = 0;
}

/* No limit set, but a small device: optional buffers fail to allocate and the
 * passes fall back to reading the tensor again. */
static void test_small_device(void **state)
{
    chunked_identical(NULL, 1, (size_t)12 << 20);
}

static void test_too_small_limit(void **state)
{
    qk_context *lim = open_sim("1M"); /* the smallest limit there is */
    float x[1000];
    ref_fill(x, 1000, REF_NORMAL, 3);
    qk_tensor t = qk_tensor_host(QK_F32, x, 1000);
    qk_minmax_result r;
    qk_status st = qk_minmax(lim, &t, 0, &r);
    /* either it fits in what is left, or it says why, naming the limit */
    if (st != QK_OK) {
        assert_int_equal(st, QK_ERR_NO_MEMORY);
        assert_non_null(strstr(qk_context_message(lim), "QKERN_DEVICE_MEMORY_LIMIT"));
    }
    qk_buffer *b;
    assert_int_equal(qk_buffer_create(lim, 1 << 20, &b), QK_ERR_NO_MEMORY);
    assert_non_null(strstr(qk_context_message(lim), "QKERN_DEVICE_MEMORY_LIMIT"));
    qk_buffer *small;
    assert_int_equal(qk_buffer_create(lim, 1 << 19, &small), QK_OK);
    assert_int_equal(qk_buffer_create(lim, 1 << 19, &b), QK_ERR_NO_MEMORY); /* the first one counts */
    assert_int_equal(qk_buffer_destroy(lim, small), QK_OK);
    assert_int_equal(qk_buffer_create(lim, 1 << 19, &small), QK_OK);
    assert_int_equal(qk_buffer_destroy(lim, small), QK_OK);
    qk_context_destroy(lim);
    no_sim_errors();
}

static void test_wrap(void **state)
{
    enum { N = 4099 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_TIES, 4);
    void *dev = NULL;
    assert_int_equal(cudaMalloc(&dev, N * 4), cudaSuccess); /* "the engine's" device memory */
    assert_int_equal(cudaMemcpyAsync(dev, x, N * 4, cudaMemcpyHostToDevice, NULL), cudaSuccess);
    qk_buffer *w;
    assert_int_equal(qk_buffer_wrap(sim, dev, N * 4, &w), QK_OK);
    qk_tensor tw = qk_tensor_buffer(QK_F32, w, 0, N), th = qk_tensor_host(QK_F32, x, N);
    same_stats(sim, &tw, &th, 0, "wrapped");
    assert_int_equal(qk_buffer_destroy(sim, w), QK_OK);
    /* not device memory, or running past the allocation */
    assert_int_equal(qk_buffer_wrap(sim, x, N * 4, &w), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(sim), "not device memory"));
    assert_int_equal(qk_buffer_wrap(sim, dev, N * 4 + 1, &w), QK_ERR_INVALID_ARG);
    assert_int_equal(cudaFree(dev), cudaSuccess); /* still the caller's */
    free(x);
    no_sim_errors();
}

/* The passes read the tensor twice for float32, then only candidates. */
static void test_pass_count(void **state)
{
    int64_t n = 1 << 20;
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_NORMAL, 6);
    qk_buffer *b;
    assert_int_equal(qk_buffer_create(sim, (size_t)n * 4, &b), QK_OK);
    assert_int_equal(qk_buffer_write(sim, b, 0, x, (size_t)n * 4), QK_OK);
    qk_tensor t = qk_tensor_buffer(QK_F32, b, 0, n);
    int64_t rank = n / 2;
    double v;
    sim_passes = sim_pass_keys = 0;
    assert_int_equal(sim->backend->iface->select(sim->backend, &t, 0, &rank, 1, &v), QK_OK);
    assert_int_equal(sim_passes, 3);
    /* two full reads plus a small candidate set */
    assert_true(sim_pass_keys > (unsigned long long)(2 * n) && sim_pass_keys < (unsigned long long)(2 * n + n / 8));
    qk_tensor th = qk_tensor_host(QK_F32, x, n);
    double w;
    assert_int_equal(cpu->backend->iface->select(cpu->backend, &th, 0, &rank, 1, &w), QK_OK);
    assert_true(bits_eq(v, w));
    qk_buffer_destroy(sim, b);
    free(x);
    no_sim_errors();
}

int main(void)
{
    qk_backend_info info;
    qk_backend_query(QK_BACKEND_CUDA, &info);
    if (!info.compiled) {
        printf("CUDA backend not built in: nothing to simulate\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_vs_reference),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_float64),
        cmocka_unit_test(test_errors_vs_reference),
        cmocka_unit_test(test_quantize_placements),
        cmocka_unit_test(test_chunked_small_limit),
        cmocka_unit_test(test_chunked_no_pools),
        cmocka_unit_test(test_small_device),
        cmocka_unit_test(test_too_small_limit),
        cmocka_unit_test(test_wrap),
        cmocka_unit_test(test_pass_count),
    };
    return cmocka_run_group_tests_name("cuda_hostsim", tests, setup, teardown) ? 1 : 0;
}

#endif /* QK_SIM_NO_MAIN */

#endif
