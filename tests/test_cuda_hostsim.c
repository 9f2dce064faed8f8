/* The CUDA backend's host side (host/cuda: streaming, chunking, the memory
 * limit, the radix-select driver, the error pass's folding) run against a
 * simulated device, on any machine, and compared with the CPU reference.
 *
 * This executable defines the CUDA runtime functions host/cuda calls and the
 * kernel launchers of host/cuda/cuda_launch.h itself (the per-tensor ones and
 * the segmented ones of kernels/cuda/segment.cu), so the linker takes them
 * from here rather than from libqkern.a / cudart_static. The simulated
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

#include "cpu/cpu_ggml.h"
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
static size_t sim_other_use; /* device memory other processes hold */
static int sim_pools = 1;
static int sim_smem_optin = 232448; /* an H100's 227 KiB */
static cudaError_t last_error = cudaSuccess; /* the thread's: the library must never read or reset it */
static int sim_device_count = 1;
static int sim_cc_major = 9, sim_cc_minor = 0;       /* compute capability of every simulated device */
static cudaError_t sim_sticky;                      /* a kernel faulted: every later call returns this */
static cudaError_t sim_next_launch_error;           /* the next launch fails with this (not sticky) */
static cudaError_t sim_fault_next_kernel;           /* the next kernel faults when it runs (sticky) */
static int sim_no_entry_points;                     /* the runtime gives no driver entry points */
static unsigned long long sim_launches;

/* Contexts: the runtime's current device is the current context's; a stream
 * belongs to the context it was created in and may not be used from another. */
struct sim_ctx {
    int device;
};
static struct sim_ctx sim_primary[4] = {{0}, {1}, {2}, {3}};
static struct sim_ctx sim_foreign = {0}; /* a context "the application" made on device 0 */
static struct sim_ctx *current_ctx;
static int rt_device; /* the runtime's device when no context is current */

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

/* A kernel's access to elements of `align` bytes: a misaligned one is the
 * sticky cudaErrorMisalignedAddress on a GPU (and a library bug here). */
static void dev_aligned(const void *p, size_t align, const char *what)
{
    if ((uintptr_t)p % align) {
        SIM_FAIL("%s: %p is not aligned to %zu bytes (cudaErrorMisalignedAddress on a GPU)", what, p, align);
        if (!sim_sticky) sim_sticky = cudaErrorMisalignedAddress;
    }
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
    cudaError_t fault; /* OP_CALL: this kernel faults instead of running */
} sim_op;

struct CUstream_st {
    struct sim_ctx *ctx; /* the context current when it was made */
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
    case OP_CALL: /* after a fault, nothing more runs on the device */
        if (op->fault && !sim_sticky) sim_sticky = op->fault;
        if (!sim_sticky) op->fn(op->owned);
        break;
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
    if (s->ctx != current_ctx)
        SIM_FAIL("a stream of another context used: the backend's context was not current (device %d current)",
                 current_ctx ? current_ctx->device : rt_device);
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
    SIM_FAIL("the library read (and so reset) the thread's last CUDA error, which is the application's");
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

/* The calls that touch the device fail once a kernel has faulted, as CUDA's do. */
#define SIM_STICKY()                                                                                                   \
    do {                                                                                                               \
        if (sim_sticky) return fail_with(sim_sticky);                                                                  \
    } while (0)

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaErrorMemoryAllocation ? "out of memory (simulated)" : "simulated error";
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = sim_device_count;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = current_ctx ? current_ctx->device : rt_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= sim_device_count) return fail_with(cudaErrorInvalidDevice);
    rt_device = device;
    current_ctx = &sim_primary[device]; /* CUDA 12+: the primary context, current at once */
    return cudaSuccess;
}

static int sim_cuCtxGetCurrent(void **ctx)
{
    *ctx = current_ctx;
    return 0;
}

static int sim_cuCtxSetCurrent(void *ctx)
{
    current_ctx = ctx;
    return 0;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned int version,
                                             unsigned long long flags, enum cudaDriverEntryPointQueryResult *q)
{
    (void)version, (void)flags;
    *fn = NULL;
    if (q) *q = cudaDriverEntryPointSymbolNotFound;
    if (sim_no_entry_points) return cudaSuccess;
    if (!strcmp(symbol, "cuCtxGetCurrent")) *fn = (void *)sim_cuCtxGetCurrent;
    else if (!strcmp(symbol, "cuCtxSetCurrent")) *fn = (void *)sim_cuCtxSetCurrent;
    if (*fn && q) *q = cudaDriverEntryPointSuccess;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (device < 0 || device >= sim_device_count) return fail_with(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "qkern host simulator %d", device);
    p->totalGlobalMem = device_capacity;
    p->multiProcessorCount = 4;
    p->major = sim_cc_major;
    p->minor = sim_cc_minor;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    *value = attr == cudaDevAttrMemoryPoolsSupported          ? sim_pools
             : attr == cudaDevAttrMaxSharedMemoryPerBlockOptin ? sim_smem_optin
                                                                : 0;
    return device >= 0 && device < sim_device_count ? cudaSuccess : fail_with(cudaErrorInvalidDevice);
}

static int sim_driver_version = 13000;

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = sim_driver_version;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

static size_t pending_frees(void);

static cudaError_t device_malloc(void **p, size_t bytes)
{
    SIM_STICKY();
    if (bytes + sim_other_use > device_capacity - device_used && pending_frees()) {
        run_all(); /* the device catches up with the queued frees (as a GPU would have) */
    }
    if (bytes + sim_other_use > device_capacity - device_used) {
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

/* sim_low_free: the least free device memory seen after an allocation. */
static size_t sim_low_free = SIZE_MAX;

/* Device bytes whose cudaFreeAsync is queued but not yet run: a GPU gets
 * there on its own soon, this lazy simulator only when someone waits. */
static size_t pending_frees(void)
{
    size_t t = 0;
    for (int i = 0; i < MAX_STREAMS; i++) {
        struct CUstream_st *s = streams[i];
        if (!s) continue;
        for (size_t j = s->head; j < s->n; j++) {
            if (s->ops[j].kind != OP_FREE) continue;
            for (size_t a = 0; a < n_allocs; a++)
                if (allocs[a].live && allocs[a].p == s->ops[j].dst) t += allocs[a].bytes;
        }
    }
    return t;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
    SIM_STICKY();
    size_t used = device_used + sim_other_use - pending_frees();
    *free_b = used < device_capacity ? device_capacity - used : 0;
    *total = device_capacity;
    return cudaSuccess;
}

static void note_low_free(void)
{
    size_t used = device_used + sim_other_use - pending_frees();
    size_t f = used < device_capacity ? device_capacity - used : 0;
    if (f < sim_low_free) sim_low_free = f;
}

/* Pools: one the backend makes (and its release threshold), or the default one. */
struct CUmemPoolHandle_st {
    uint64_t threshold;
    int device;
};
static int sim_pools_live, sim_pool_allocs, sim_default_pool_allocs;
static uint64_t sim_pool_threshold = ~0ull;

cudaError_t cudaMemPoolCreate(cudaMemPool_t *pool, const struct cudaMemPoolProps *props)
{
    SIM_STICKY();
    if (!sim_pools || props->location.type != cudaMemLocationTypeDevice || props->location.id < 0 ||
        props->location.id >= sim_device_count)
        return fail_with(cudaErrorInvalidValue);
    *pool = calloc(1, sizeof **pool);
    (*pool)->device = props->location.id;
    sim_pools_live++;
    return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr attr, void *value)
{
    if (attr != cudaMemPoolAttrReleaseThreshold) return fail_with(cudaErrorInvalidValue);
    pool->threshold = *(uint64_t *)value;
    sim_pool_threshold = pool->threshold;
    return cudaSuccess;
}

cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool)
{
    free(pool);
    sim_pools_live--;
    return cudaSuccess;
}

cudaError_t cudaMallocFromPoolAsync(void **p, size_t bytes, cudaMemPool_t pool, cudaStream_t s)
{
    (void)pool, (void)s;
    sim_pool_allocs++;
    cudaError_t e = device_malloc(p, bytes);
    if (e == cudaSuccess) note_low_free();
    return e;
}

cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s)
{
    sim_default_pool_allocs++;
    (void)s;
    return device_malloc(p, bytes);
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    run_all(); /* cudaFree synchronizes the device */
    drop_alloc(p, MEM_DEVICE);
    return sim_sticky ? fail_with(sim_sticky) : cudaSuccess;
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
    SIM_STICKY();
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
            if (sim_sticky) return fail_with(sim_sticky);
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
    SIM_STICKY();
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
            streams[i]->ctx = current_ctx;
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
    return sim_sticky ? fail_with(sim_sticky) : cudaSuccess;
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
    SIM_STICKY();
    e->s = s;
    e->target = s ? s->enq : 0;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (e->s) run_until(e->s, e->target);
    return sim_sticky ? fail_with(sim_sticky) : cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    (void)flags;
    SIM_STICKY();
    if (e->s && e->s != s) enqueue(s, (sim_op){.kind = OP_WAIT, .wait_stream = e->s, .wait_target = e->target});
    return cudaSuccess;
}

/* ==== the simulated kernels: each launcher's contract as a plain loop ===================== */

/* What cudaLaunchKernelEx would say: a device the fat binary has no code for
 * (compute capability 7.x here: the build has sm_80/sm_90 and compute_90),
 * a resource failure the test asks for, the sticky error of an earlier fault.
 * A launch error is returned, never left for cudaGetLastError(). */
static cudaError_t launch(cudaStream_t s, void (*fn)(void *), const void *args, size_t size)
{
    SIM_STICKY();
    if (sim_cc_major < 8) return fail_with(cudaErrorNoKernelImageForDevice);
    if (sim_next_launch_error) {
        cudaError_t e = sim_next_launch_error;
        sim_next_launch_error = cudaSuccess;
        return fail_with(e);
    }
    sim_launches++;
    void *copy = malloc(size);
    memcpy(copy, args, size);
    enqueue(s, (sim_op){.kind = OP_CALL, .fn = fn, .owned = copy, .fault = sim_fault_next_kernel});
    sim_fault_next_kernel = cudaSuccess;
    return cudaSuccess;
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
    dev_aligned(a->x, a->is_f64 ? 8 : 4, "minmax x");
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
    dev_aligned(a->x, qk_dtype_size(a->xt), "quantize x");
    dev_check(a->codes, (size_t)a->n * qk_dtype_size(a->ct), "quantize codes");
    dev_aligned(a->codes, qk_dtype_size(a->ct), "quantize codes");
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
    dev_aligned(a->codes, qk_dtype_size(a->ct), "dequantize codes");
    dev_check(a->x, (size_t)a->n * 4, "dequantize out");
    dev_aligned(a->x, 4, "dequantize out");
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
    dev_aligned(a->x, a->is_f64 ? 8 : 4, "error x");
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
    dev_aligned(a->src, wide ? 8 : 4, "select source");
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

/* ---- the segmented launchers (kernels/cuda/segment.cu's contracts) ---- */

static double value_unkey(int is_f64, uint64_t key)
{
    return is_f64 ? qk_unkey_f64(key) : (double)qk_unkey_f32((uint32_t)key);
}

/* cuda_ops.c's result record from the accumulated keys and counts */
static void sim_minmax_record(const qk_cu_minmax_acc *a, qk_minmax_result *r)
{
    memset(r, 0, sizeof *r);
    r->n_finite = (int64_t)a->n_finite;
    r->nonfinite_count = (int64_t)a->nonfinite;
    r->first_nonfinite = a->nonfinite ? (int64_t)a->first : -1;
    if (a->n_finite) {
        r->min = qk_unkey_f64(a->kmin);
        r->max = qk_unkey_f64(a->kmax);
        r->absmax = fmax(fabs(r->min), fabs(r->max));
    }
}

typedef struct seg_minmax_args {
    int is_f64;
    const void *x;
    int64_t seg, nseg;
    qk_cu_minmax_acc *acc;
    qk_minmax_result *out;
} seg_minmax_args;

static unsigned long long sim_seg_launches;

static void seg_minmax_run(void *p)
{
    seg_minmax_args *a = p;
    dev_check(a->x, (size_t)(a->seg * a->nseg) * (a->is_f64 ? 8 : 4), "seg minmax x");
    dev_aligned(a->x, a->is_f64 ? 8 : 4, "seg minmax x");
    dev_check(a->acc, (size_t)a->nseg * sizeof *a->acc, "seg minmax acc");
    dev_check(a->out, (size_t)a->nseg * sizeof *a->out, "seg minmax out");
    for (int64_t b = 0; b < a->nseg; b++) {
        qk_cu_minmax_acc acc = {~0ull, ~0ull, 0, 0, 0};
        for (int64_t i = 0; i < a->seg; i++) {
            double v = value_at(a->is_f64, a->x, b * a->seg + i);
            if (!isfinite(v)) {
                if (acc.nonfinite++ == 0) acc.first = (unsigned long long)i;
                continue;
            }
            unsigned long long k = qk_key_f64(v);
            if (k < acc.kmin) acc.kmin = k;
            if (k > acc.kmax) acc.kmax = k;
            acc.n_finite++;
        }
        a->acc[b] = acc; /* scratch: the host must not read it */
        sim_minmax_record(&acc, &a->out[b]);
    }
}

cudaError_t qk_cu_seg_minmax(cudaStream_t s, int sms, int is_f64, const void *x, int64_t seg, int64_t nseg,
                             qk_cu_minmax_acc *acc, qk_minmax_result *out)
{
    (void)sms;
    sim_seg_launches++;
    if (nseg <= 0) return cudaSuccess;
    seg_minmax_args a = {is_f64, x, seg, nseg, acc, out};
    return launch(s, seg_minmax_run, &a, sizeof a);
}

/* The tiers' shared memory as the real kernels take it (cub's TempStorage
 * sizes on sm_90, measured with nvcc 13.0), plus the count. */
size_t qk_cu_seg_select_smem(int is_f64, int64_t seg)
{
    static const int64_t cap[] = {128, 512, 2048, 4096, 8192, 16384};
    static const size_t b32[] = {4640, 4640, 9280, 18528, 33792, 67584}, b64[] = {4640, 4640, 16896, 33792, 67584, 0};
    if (seg <= 32) return (is_f64 ? 8 : 4) * 32 * 8;
    if (seg > (is_f64 ? QK_CU_SEG_SORT_CAP64 : QK_CU_SEG_SORT_CAP32)) return 0;
    for (int t = 0; t < 6; t++) {
        if (seg <= cap[t]) return (is_f64 ? b64[t] : b32[t]) + sizeof(int);
    }
    return 0;
}

typedef struct seg_select_args {
    int is_f64;
    const void *x;
    int64_t seg, nseg;
    unsigned flags;
    const int64_t *ranks;
    int64_t nranks;
    double *values;
    int64_t seg_base;
    unsigned long long *bad;
} seg_select_args;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void seg_select_run(void *p)
{
    seg_select_args *a = p;
    dev_check(a->x, (size_t)(a->seg * a->nseg) * (a->is_f64 ? 8 : 4), "seg select x");
    dev_aligned(a->x, a->is_f64 ? 8 : 4, "seg select x");
    dev_check(a->ranks, (size_t)(a->nseg * a->nranks) * 8, "seg select ranks");
    dev_check(a->values, (size_t)(a->nseg * a->nranks) * 8, "seg select values");
    dev_check(a->bad, 8, "seg select bad");
    if (qk_cu_seg_select_smem(a->is_f64, a->seg) == 0) SIM_FAIL("seg select launched for %lld-element segments", (long long)a->seg);
    uint64_t *keys = malloc((size_t)a->seg * sizeof *keys);
    for (int64_t b = 0; b < a->nseg; b++) {
        int64_t m = 0;
        for (int64_t i = 0; i < a->seg; i++) {
            int64_t e = b * a->seg + i;
            if (a->is_f64) {
                double v = ((const double *)a->x)[e];
                if ((a->flags & QK_IGNORE_NONFINITE) && !isfinite(v)) continue;
                keys[m++] = qk_key_f64((a->flags & QK_ABS) ? fabs(v) : v);
            } else {
                float v = ((const float *)a->x)[e];
                if ((a->flags & QK_IGNORE_NONFINITE) && !isfinite(v)) continue;
                keys[m++] = qk_key_f32((a->flags & QK_ABS) ? fabsf(v) : v);
            }
        }
        qsort(keys, (size_t)m, sizeof *keys, cmp_u64);
        for (int64_t j = 0; j < a->nranks; j++) {
            int64_t r = a->ranks[b * a->nranks + j];
            double v = 0.0;
            if (r < 0 || r >= m) {
                if ((unsigned long long)(a->seg_base + b) < *a->bad) *a->bad = (unsigned long long)(a->seg_base + b);
            } else {
                v = value_unkey(a->is_f64, keys[r]);
            }
            a->values[b * a->nranks + j] = v;
        }
    }
    free(keys);
}

cudaError_t qk_cu_seg_select(cudaStream_t s, int is_f64, const void *x, int64_t seg, int64_t nseg, unsigned flags,
                             const int64_t *ranks, int64_t nranks, double *values, int64_t seg_base,
                             unsigned long long *bad)
{
    sim_seg_launches++;
    if (nseg <= 0 || nranks <= 0) return cudaSuccess;
    seg_select_args a = {is_f64, x, seg, nseg, flags & (QK_ABS | QK_IGNORE_NONFINITE), ranks, nranks, values, seg_base, bad};
    return launch(s, seg_select_run, &a, sizeof a);
}

typedef struct seg_quant_args {
    int dequant;
    qk_dtype xt, ct;
    const void *in;
    void *out;
    int64_t n, seg, off;
    const qk_cu_qparam *params;
} seg_quant_args;

static void store_code(qk_dtype ct, void *codes, int64_t i, int32_t q)
{
    switch (ct) {
    case QK_U8: ((uint8_t *)codes)[i] = (uint8_t)q; break;
    case QK_I8: ((int8_t *)codes)[i] = (int8_t)q; break;
    case QK_U16: ((uint16_t *)codes)[i] = (uint16_t)q; break;
    case QK_I16: ((int16_t *)codes)[i] = (int16_t)q; break;
    default: ((int32_t *)codes)[i] = q; break;
    }
}

static int64_t code_at(qk_dtype dt, const void *c, int64_t i);

static void seg_quant_run(void *p)
{
    seg_quant_args *a = p;
    const int64_t nparams = (a->off + a->n - 1) / a->seg + 1;
    dev_check(a->params, (size_t)nparams * sizeof *a->params, "seg quantize params");
    if (a->dequant) {
        dev_check(a->in, (size_t)a->n * qk_dtype_size(a->ct), "seg dequantize codes");
        dev_check(a->out, (size_t)a->n * 4, "seg dequantize out");
    } else {
        dev_check(a->in, (size_t)a->n * qk_dtype_size(a->xt), "seg quantize x");
        dev_check(a->out, (size_t)a->n * qk_dtype_size(a->ct), "seg quantize codes");
    }
    for (int64_t i = 0; i < a->n; i++) {
        const qk_cu_qparam *q = &a->params[(a->off + i) / a->seg];
        if (a->dequant) {
            ((float *)a->out)[i] = qk_dequant(code_at(a->ct, a->in, i), q->scale, q->zero_point);
        } else {
            int32_t c = a->xt == QK_F32 ? qk_quant_f32(((const float *)a->in)[i], q->scale, q->zero_point, q->qmin, q->qmax)
                                        : qk_quant_f64(((const double *)a->in)[i], q->scale, q->zero_point, q->qmin, q->qmax);
            store_code(a->ct, a->out, i, c);
        }
    }
}

cudaError_t qk_cu_seg_quantize(cudaStream_t s, int sms, qk_dtype xt, const void *x, qk_dtype ct, void *codes,
                               int64_t n, int64_t seg, int64_t off, const qk_cu_qparam *params)
{
    (void)sms;
    sim_seg_launches++;
    if (n <= 0) return cudaSuccess;
    if (off < 0 || off >= seg) SIM_FAIL("seg quantize: offset %lld in %lld-element segments", (long long)off, (long long)seg);
    seg_quant_args a = {0, xt, ct, x, codes, n, seg, off, params};
    return launch(s, seg_quant_run, &a, sizeof a);
}

cudaError_t qk_cu_seg_dequantize(cudaStream_t s, int sms, qk_dtype ct, const void *codes, float *out, int64_t n,
                                 int64_t seg, int64_t off, const qk_cu_qparam *params)
{
    (void)sms;
    sim_seg_launches++;
    if (n <= 0) return cudaSuccess;
    if (off < 0 || off >= seg) SIM_FAIL("seg dequantize: offset %lld in %lld-element segments", (long long)off, (long long)seg);
    seg_quant_args a = {1, QK_F32, ct, codes, out, n, seg, off, params};
    return launch(s, seg_quant_run, &a, sizeof a);
}

typedef struct seg_error_args {
    int is_f64;
    const void *x;
    int64_t seg, nseg;
    const qk_cu_qparam *params;
    int k;
    const double *fences;
    void *scratch;
    qk_cu_seg_sums *sums;
    qk_cu_seg_counts *counts;
} seg_error_args;

/* Per segment, the per-tensor launcher's structure: fixed blocks from the
 * segment's first element, each summed on its own (error_run's order), the
 * block sums added to +0 in block order. */
static void seg_error_run(void *p)
{
    seg_error_args *a = p;
    dev_check(a->x, (size_t)(a->seg * a->nseg) * (a->is_f64 ? 8 : 4), "seg error x");
    dev_aligned(a->x, a->is_f64 ? 8 : 4, "seg error x");
    dev_check(a->params, (size_t)(a->nseg * a->k) * sizeof *a->params, "seg error params");
    dev_check(a->fences, (size_t)a->nseg * 16, "seg error fences");
    dev_check(a->scratch, qk_cu_seg_error_scratch(a->seg, a->nseg, a->k), "seg error scratch");
    dev_check(a->sums, (size_t)(a->nseg * a->k) * sizeof *a->sums, "seg error sums");
    dev_check(a->counts, (size_t)a->nseg * sizeof *a->counts, "seg error counts");
    for (int64_t b = 0; b < a->nseg; b++) {
        const int64_t s0 = b * a->seg;
        const double flo = a->fences[2 * b], fhi = a->fences[2 * b + 1];
        qk_cu_seg_counts cnt = {0, 0, 0, -1};
        for (int c = 0; c < a->k; c++) a->sums[b * a->k + c] = (qk_cu_seg_sums){0.0, 0.0, 0};
        for (int64_t i0 = 0; i0 < a->seg; i0 += QK_CU_ERROR_BLOCK) {
            int64_t i1 = i0 + QK_CU_ERROR_BLOCK < a->seg ? i0 + QK_CU_ERROR_BLOCK : a->seg;
            for (int64_t i = i0; i < i1; i++) {
                double v = value_at(a->is_f64, a->x, s0 + i);
                if (!isfinite(v)) {
                    if (cnt.nonfinite_count++ == 0) cnt.first_nonfinite = i;
                    continue;
                }
                cnt.n_finite++;
                cnt.n_inliers += v >= flo && v <= fhi;
            }
            for (int c = 0; c < a->k; c++) {
                const qk_cu_qparam *q = &a->params[b * a->k + c];
                qk_cu_seg_sums *r = &a->sums[b * a->k + c];
                double sse = 0, ssi = 0;
                for (int64_t i = i0; i < i1; i++) {
                    double v = value_at(a->is_f64, a->x, s0 + i);
                    if (!isfinite(v)) continue;
                    int32_t code = a->is_f64 ? qk_quant_f64(v, q->scale, q->zero_point, q->qmin, q->qmax)
                                             : qk_quant_f32((float)v, q->scale, q->zero_point, q->qmin, q->qmax);
                    double e = v - (double)qk_dequant(code, q->scale, q->zero_point);
                    sse += e * e;
                    if (v >= flo && v <= fhi) ssi += e * e;
                    r->clipped += v < q->clip_lo || v > q->clip_hi;
                }
                r->sse += sse;
                r->sse_inliers += ssi;
            }
        }
        a->counts[b] = cnt;
    }
}

cudaError_t qk_cu_seg_error(cudaStream_t s, int sms, int is_f64, const void *x, int64_t seg, int64_t nseg,
                            const qk_cu_qparam *params, int k, const double *fences, void *scratch,
                            qk_cu_seg_sums *sums, qk_cu_seg_counts *counts)
{
    (void)sms;
    sim_seg_launches++;
    if (nseg <= 0 || k <= 0) return cudaSuccess;
    seg_error_args a = {is_f64, x, seg, nseg, params, k, fences, scratch, sums, counts};
    return launch(s, seg_error_run, &a, sizeof a);
}

typedef struct widen_args {
    qk_dtype xt;
    const uint16_t *x;
    float *out;
    int64_t n;
} widen_args;

static void widen_run(void *p)
{
    widen_args *a = p;
    dev_check(a->x, (size_t)a->n * 2, "widen x");
    dev_aligned(a->x, 2, "widen x");
    dev_check(a->out, (size_t)a->n * 4, "widen out");
    dev_aligned(a->out, 4, "widen out");
    for (int64_t i = 0; i < a->n; i++) {
        uint32_t bits = a->xt == QK_F16 ? qk_cu_half_bits(a->x[i]) : (uint32_t)a->x[i] << 16;
        memcpy(&a->out[i], &bits, 4);
    }
}

cudaError_t qk_cu_widen(cudaStream_t s, int sms, qk_dtype xt, const uint16_t *x, float *out, int64_t n)
{
    (void)sms;
    sim_seg_launches++;
    if (n <= 0) return cudaSuccess;
    if (xt != QK_F16 && xt != QK_BF16) return fail_with(cudaErrorInvalidValue);
    widen_args a = {xt, x, out, n};
    return launch(s, widen_run, &a, sizeof a);
}

/* ggml block formats: the shared block functions run on the host, block by block. */
typedef struct ggml_args {
    int type, quantize;
    float *x;
    unsigned char *y;
    int64_t n;
} ggml_args;

static void ggml_run(void *p)
{
    ggml_args *a = p;
    qk_tensor f = qk_tensor_host(QK_F32, a->x, a->n);
    size_t bytes = 0;
    assert_int_equal(qk_ggml_size((qk_ggml_type)a->type, a->n, &bytes), QK_OK);
    qk_tensor b = qk_tensor_host(QK_U8, a->y, (int64_t)bytes);
    dev_check(a->x, (size_t)a->n * 4, "ggml x");
    dev_check(a->y, bytes, "ggml y");
    /* the CPU backend's member is the plain loop over the shared block functions
     * (it needs no state: a blank backend will do) */
    static qk_backend blank;
    int nonfinite = 0; /* the CUDA host code checks finiteness before launching */
    if (a->quantize) assert_int_equal(qk_cpu_ggml_quantize(&blank, &f, a->type, &b, &nonfinite), QK_OK);
    else assert_int_equal(qk_cpu_ggml_dequantize(&blank, &b, a->type, &f), QK_OK);
}

cudaError_t qk_cu_ggml_quantize(cudaStream_t s, int sms, int type, const float *x, unsigned char *y, int64_t n)
{
    (void)sms;
    sim_seg_launches++;
    if (n <= 0) return cudaSuccess;
    size_t bytes;
    if (qk_ggml_size((qk_ggml_type)type, n, &bytes) != QK_OK) return fail_with(cudaErrorInvalidValue);
    ggml_args a = {type, 1, (float *)x, y, n};
    return launch(s, ggml_run, &a, sizeof a);
}

cudaError_t qk_cu_ggml_dequantize(cudaStream_t s, int sms, int type, const unsigned char *y, float *x, int64_t n)
{
    (void)sms;
    sim_seg_launches++;
    if (n <= 0) return cudaSuccess;
    size_t bytes;
    if (qk_ggml_size((qk_ggml_type)type, n, &bytes) != QK_OK) return fail_with(cudaErrorInvalidValue);
    ggml_args a = {type, 0, x, (unsigned char *)y, n};
    return launch(s, ggml_run, &a, sizeof a);
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

/* ==== the segmented members (host/backend.h's seg_* and widen) ================== */

/* host data in a fresh device buffer, offset bytes in (unaligned on purpose) */
static qk_tensor to_device(qk_context *c, qk_dtype dt, const void *data, int64_t n, int64_t offset, qk_buffer **buf)
{
    size_t bytes = (size_t)n * qk_dtype_size(dt);
    assert_int_equal(qk_buffer_create(c, bytes + (size_t)offset, buf), QK_OK);
    assert_int_equal(qk_buffer_write(c, *buf, (size_t)offset, data, bytes), QK_OK);
    return qk_tensor_buffer(dt, *buf, offset, n);
}

/* segment b of t as a tensor of its own (what host/segments.c's fallback passes) */
static qk_tensor seg_view(const qk_tensor *t, int64_t seg, int64_t b)
{
    qk_tensor v = *t;
    v.n = seg;
    if (v.host) v.host = (char *)v.host + (size_t)(b * seg) * qk_dtype_size(t->dtype);
    else v.offset += b * seg * (int64_t)qk_dtype_size(t->dtype);
    return v;
}

static const qk_backend_iface *ifc(qk_context *c)
{
    return c->backend->iface;
}

/* The segment sizes of the brief: one element, odd, a group, the warp/block
 * boundary of the error pass, past it, and past a fixed error block. */
typedef struct seg_case {
    int64_t seg, nseg;
} seg_case;
static const seg_case seg_cases[] = {{1, 1000}, {7, 301}, {128, 200}, {4096, 12}, {4097, 9}, {70000, 7}};
#define N_SEG_CASES (sizeof seg_cases / sizeof seg_cases[0])

/* Test data, the hard cases in fixed segments: 1 a NaN and +Inf, 2 all -0,
 * 3 -0/+0 alternating, 4 all NaN (when allowed, else one NaN), 5 -Inf and NaN,
 * 6 denormals; the rest scaled and shifted per segment. */
static double *seg_values(int64_t seg, int64_t nseg, int allnan, uint64_t seed)
{
    int64_t n = seg * nseg;
    double *v = malloc((size_t)n * sizeof *v);
    ref_rng r = {seed};
    for (int64_t b = 0; b < nseg; b++) {
        double scale = 1.0 + (double)(b % 7) * 3.0, shift = (double)(b % 3) - 1.0;
        for (int64_t i = 0; i < seg; i++) {
            double x = ref_laplace(&r) * 0.05 * scale + shift * 0.01;
            if (ref_next(&r) % 997 == 0) x *= 300;
            switch (b) {
            case 2: x = -0.0; break;
            case 3: x = (i & 1) ? 0.0 : -0.0; break;
            case 4: x = allnan ? ((i & 1) ? -NAN : NAN) : (seg > 2 && i == seg / 3 ? NAN : x); break;
            case 6: x = (double)((int)(ref_next(&r) % 201) - 100) * 1.401298464324817e-45; break;
            default: break;
            }
            v[b * seg + i] = x;
        }
        if (!allnan && seg < 3 && (b == 1 || b == 5)) continue; /* keep a finite key */
        if (b == 1) {
            v[b * seg + (seg > 3 ? 3 : 0)] = NAN;
            if (seg > 1) v[b * seg + seg - 1] = INFINITY;
        }
        if (b == 5) {
            v[b * seg + seg / 2] = -INFINITY;
            if (seg > 2) v[b * seg] = NAN;
        }
    }
    return v;
}

/* the values as dtype (float32 or float64) */
static void *as_dtype(const double *v, int64_t n, qk_dtype dt)
{
    void *p = malloc((size_t)n * qk_dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        if (dt == QK_F32) ((float *)p)[i] = (float)v[i];
        else ((double *)p)[i] = v[i];
    }
    return p;
}

static void expect_unsupported_quietly(qk_status st, const char *what)
{
    if (st != QK_ERR_UNSUPPORTED) fail_msg("%s: status %s, expected QK_ERR_UNSUPPORTED", what, qk_status_string(st));
    if (qk_context_message(sim)[0]) fail_msg("%s: UNSUPPORTED with a message: %s", what, qk_context_message(sim));
}

static int same_minmax(const qk_minmax_result *a, const qk_minmax_result *b)
{
    return bits_eq(a->min, b->min) && bits_eq(a->max, b->max) && bits_eq(a->absmax, b->absmax) &&
           a->n_finite == b->n_finite && a->nonfinite_count == b->nonfinite_count &&
           a->first_nonfinite == b->first_nonfinite;
}

static void test_seg_minmax(void **state)
{
    static const qk_dtype dts[] = {QK_F32, QK_F64};
    for (size_t ci = 0; ci < N_SEG_CASES; ci++) {
        const int64_t seg = seg_cases[ci].seg, nseg = seg_cases[ci].nseg, n = seg * nseg;
        double *v = seg_values(seg, nseg, 1, 11 + ci);
        for (int d = 0; d < 2; d++) {
            void *h = as_dtype(v, n, dts[d]);
            qk_buffer *buf;
            qk_tensor tx = to_device(sim, dts[d], h, n, (int64_t)qk_dtype_size(dts[d]), &buf);
            qk_tensor th = qk_tensor_host(dts[d], h, n);
            qk_minmax_result *got = malloc((size_t)nseg * sizeof *got);
            memset(got, 0x5a, (size_t)nseg * sizeof *got);
            qk_clear_error(sim);
            assert_int_equal(ifc(sim)->seg_minmax(sim->backend, &tx, seg, got), QK_OK);
            for (int64_t b = 0; b < nseg; b++) {
                qk_tensor vd = seg_view(&tx, seg, b), vh = seg_view(&th, seg, b);
                qk_minmax_result pt, ref;
                assert_int_equal(ifc(sim)->minmax(sim->backend, &vd, &pt), QK_OK);
                assert_int_equal(ifc(cpu)->minmax(cpu->backend, &vh, &ref), QK_OK);
                if (!same_minmax(&got[b], &pt))
                    fail_msg("seg %lld %s segment %lld: [%.17g, %.17g] |%.17g| %lld/%lld/%lld, per-tensor [%.17g, %.17g] "
                             "|%.17g| %lld/%lld/%lld", (long long)seg, qk_dtype_name(dts[d]), (long long)b, got[b].min,
                             got[b].max, got[b].absmax, (long long)got[b].n_finite, (long long)got[b].nonfinite_count,
                             (long long)got[b].first_nonfinite, pt.min, pt.max, pt.absmax, (long long)pt.n_finite,
                             (long long)pt.nonfinite_count, (long long)pt.first_nonfinite);
                /* the CPU reference: the same bits (absmax of an all -0 segment is +0) */
                assert_true(bits_eq(got[b].min, ref.min) && bits_eq(got[b].max, ref.max));
                assert_true(bits_eq(got[b].absmax, ref.absmax));
                assert_int_equal(got[b].n_finite, ref.n_finite);
                assert_int_equal(got[b].nonfinite_count, ref.nonfinite_count);
                assert_int_equal(got[b].first_nonfinite, ref.first_nonfinite);
            }
            /* the hard cases are where they were put */
            if (nseg > 4 && seg > 1) {
                assert_int_equal(got[4].n_finite, 0);
                assert_true(signbit(got[2].min) && signbit(got[2].max));
                assert_true(signbit(got[3].min) && !signbit(got[3].max));
            }
            free(got);
            qk_buffer_destroy(sim, buf);
            free(h);
        }
        free(v);
    }
    no_sim_errors();
}

/* reference order statistics of one segment on the CPU (strictly ascending ranks there) */
static void cpu_select_ranks(const qk_tensor *vh, unsigned flags, const int64_t *ranks, size_t nr, double *out)
{
    int64_t uniq[64];
    double uv[64];
    size_t nu = 0;
    assert_true(nr <= 64);
    for (size_t j = 0; j < nr; j++) {
        if (nu == 0 || uniq[nu - 1] != ranks[j]) uniq[nu++] = ranks[j];
    }
    assert_int_equal(ifc(cpu)->select(cpu->backend, vh, flags, uniq, nu, uv), QK_OK);
    for (size_t j = 0, u = 0; j < nr; j++) {
        while (uniq[u] != ranks[j]) u++;
        out[j] = uv[u];
    }
}

/* keys of segment b: all its elements, or its finite ones */
static int64_t seg_keys(const double *v, int64_t seg, int64_t b, unsigned flags)
{
    if (!(flags & QK_IGNORE_NONFINITE)) return seg;
    int64_t m = 0;
    for (int64_t i = 0; i < seg; i++) m += isfinite(v[b * seg + i]) != 0;
    return m;
}

enum { SEL_NR = 6 };

/* ranks of a segment with m keys: the ends, a repeat, the middle */
static void seg_ranks(int64_t m, int64_t b, int64_t *r)
{
    r[0] = 0;
    r[1] = m / 3;
    r[2] = m / 3;
    r[3] = m / 2;
    r[4] = (m - 1) - (b % 2 ? 0 : (m > 4 ? 1 : 0));
    r[5] = m - 1;
}

static void test_seg_select(void **state)
{
    static const qk_dtype dts[] = {QK_F32, QK_F64};
    static const unsigned flag_sets[] = {0, QK_ABS, QK_IGNORE_NONFINITE, QK_IGNORE_NONFINITE | QK_ABS};
    for (size_t ci = 0; ci < N_SEG_CASES; ci++) {
        const int64_t seg = seg_cases[ci].seg, nseg = seg_cases[ci].nseg, n = seg * nseg;
        /* every segment keeps a finite key (ranks must be below each key count) */
        double *v = seg_values(seg, nseg, 0, 21 + ci);
        for (int d = 0; d < 2; d++) {
            void *h = as_dtype(v, n, dts[d]);
            qk_buffer *buf;
            qk_tensor tx = to_device(sim, dts[d], h, n, (int64_t)qk_dtype_size(dts[d]), &buf);
            qk_tensor th = qk_tensor_host(dts[d], h, n);
            const int64_t cap = dts[d] == QK_F64 ? QK_CU_SEG_SORT_CAP64 : QK_CU_SEG_SORT_CAP32;
            int64_t *ranks = malloc((size_t)nseg * SEL_NR * sizeof *ranks);
            double *got = malloc((size_t)nseg * SEL_NR * sizeof *got);
            for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++) {
                const unsigned flags = flag_sets[f];
                for (int64_t b = 0; b < nseg; b++) {
                    int64_t m = seg_keys(v, seg, b, flags);
                    if (m == 0) fail_msg("test data: segment %lld has no key", (long long)b);
                    seg_ranks(m, b, ranks + b * SEL_NR);
                }
                qk_clear_error(sim);
                qk_status st = ifc(sim)->seg_select(sim->backend, &tx, seg, flags, ranks, SEL_NR, got);
                if (seg > cap) {
                    expect_unsupported_quietly(st, "seg_select past the cap");
                    continue;
                }
                if (st != QK_OK) fail_msg("seg_select %lld: %s", (long long)seg, qk_context_message(sim));
                for (int64_t b = 0; b < nseg; b++) {
                    double want[SEL_NR];
                    qk_tensor vh = seg_view(&th, seg, b);
                    cpu_select_ranks(&vh, flags, ranks + b * SEL_NR, SEL_NR, want);
                    for (int j = 0; j < SEL_NR; j++) {
                        if (!bits_eq(got[b * SEL_NR + j], want[j]))
                            fail_msg("seg %lld %s flags %u segment %lld rank %lld: %.17g, reference %.17g",
                                     (long long)seg, qk_dtype_name(dts[d]), flags, (long long)b,
                                     (long long)ranks[b * SEL_NR + j], got[b * SEL_NR + j], want[j]);
                    }
                }
                /* -0 orders before +0: segment 3's smallest key is -0, its largest +0 */
                if (nseg > 3 && !(flags & QK_ABS) && seg > 1) {
                    assert_true(signbit(got[3 * SEL_NR]) && !signbit(got[3 * SEL_NR + 5]));
                }
            }
            free(ranks);
            free(got);
            qk_buffer_destroy(sim, buf);
            free(h);
        }
        free(v);
    }
    no_sim_errors();
}

/* A rank at or past a segment's key count is an error with a message. */
static void test_seg_select_bad_rank(void **state)
{
    enum { SEG = 16, NSEG = 5 };
    float x[SEG * NSEG];
    ref_fill(x, SEG * NSEG, REF_NORMAL, 9);
    x[2 * SEG + 5] = NAN; /* segment 2 has 15 finite keys */
    qk_buffer *buf;
    qk_tensor t = to_device(sim, QK_F32, x, SEG * NSEG, 0, &buf);
    int64_t ranks[NSEG];
    double vals[NSEG];
    for (int b = 0; b < NSEG; b++) ranks[b] = 15;
    assert_int_equal(ifc(sim)->seg_select(sim->backend, &t, SEG, 0, ranks, 1, vals), QK_OK);
    assert_int_equal(ifc(sim)->seg_select(sim->backend, &t, SEG, QK_IGNORE_NONFINITE, ranks, 1, vals),
                     QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(sim), "segment 2"));
    qk_buffer_destroy(sim, buf);
    no_sim_errors();
}

/* The sort's cap and the device's shared memory: past either, UNSUPPORTED
 * without a message; the fallback does those. */
static void test_seg_select_limits(void **state)
{
    const int64_t n = 2 * (QK_CU_SEG_SORT_CAP32 + 1);
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_NORMAL, 10);
    double *d = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    int64_t ranks[4] = {0, 5, 1, 2};
    double vals[4];
    qk_buffer *bf, *bd;
    qk_tensor tf = to_device(sim, QK_F32, x, n, 0, &bf), td = to_device(sim, QK_F64, d, n, 0, &bd);
    qk_clear_error(sim);
    expect_unsupported_quietly(ifc(sim)->seg_select(sim->backend, &tf, QK_CU_SEG_SORT_CAP32 + 1, 0, ranks, 1, vals),
                               "f32 past the cap");
    tf.n = 2 * QK_CU_SEG_SORT_CAP32;
    assert_int_equal(ifc(sim)->seg_select(sim->backend, &tf, QK_CU_SEG_SORT_CAP32, 0, ranks, 1, vals), QK_OK);
    td.n = 2 * (QK_CU_SEG_SORT_CAP64 + 1);
    expect_unsupported_quietly(ifc(sim)->seg_select(sim->backend, &td, QK_CU_SEG_SORT_CAP64 + 1, 0, ranks, 1, vals),
                               "f64 past the cap");
    td.n = 2 * QK_CU_SEG_SORT_CAP64;
    assert_int_equal(ifc(sim)->seg_select(sim->backend, &td, QK_CU_SEG_SORT_CAP64, 0, ranks, 1, vals), QK_OK);
    /* a host tensor is the fallback's too */
    qk_tensor th = qk_tensor_host(QK_F32, x, 64);
    expect_unsupported_quietly(ifc(sim)->seg_select(sim->backend, &th, 32, 0, ranks, 1, vals), "host tensor");
    qk_buffer_destroy(sim, bf);
    qk_buffer_destroy(sim, bd);

    /* a device that allows only the default 48 KiB of shared memory per block */
    sim_smem_optin = 48 * 1024;
    qk_context *small = open_sim(NULL);
    sim_smem_optin = 232448;
    qk_tensor t1 = to_device(small, QK_F32, x, 2 * QK_CU_SEG_SORT_CAP32, 0, &bf);
    qk_clear_error(small);
    assert_int_equal(ifc(small)->seg_select(small->backend, &t1, QK_CU_SEG_SORT_CAP32, 0, ranks, 1, vals),
                     QK_ERR_UNSUPPORTED);
    assert_string_equal(qk_context_message(small), "");
    assert_int_equal(ifc(small)->seg_select(small->backend, &t1, 8192, 0, ranks, 1, vals), QK_OK);
    qk_buffer_destroy(small, bf);
    qk_context_destroy(small);
    free(x);
    free(d);
    no_sim_errors();
}

/* per-segment parameters for a code dtype, from each segment's finite range, shrunk by (1 - shrink) */
static void seg_params(const double *v, int64_t seg, int64_t nseg, qk_dtype ct, double shrink, int variant,
                       qk_qparams *out)
{
    for (int64_t b = 0; b < nseg; b++) {
        double lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < seg; i++) {
            double x = v[b * seg + i];
            if (!isfinite(x)) continue;
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        if (!(lo <= hi)) lo = -1, hi = 1;
        lo *= 1 - shrink;
        hi *= 1 - shrink;
        double c = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
        qk_status st;
        switch (ct) {
        case QK_U8: st = qk_qparams_from_range(cpu, QK_ASYMMETRIC, 8 - variant % 5, 0, variant & 1, lo, hi, &out[b]); break;
        case QK_I8: st = qk_qparams_from_range(cpu, QK_SYMMETRIC, 8, (int)(b & 1), 0, -c, c, &out[b]); break;
        case QK_U16: st = qk_qparams_from_range(cpu, QK_ASYMMETRIC, 16, 0, 0, lo, hi, &out[b]); break;
        case QK_I16: st = qk_qparams_from_range(cpu, QK_SYMMETRIC, 12, 0, 0, -c, c, &out[b]); break;
        default: st = qk_qparams_from_range(cpu, QK_SYMMETRIC, 16, 1, 0, -c, c, &out[b]); break;
        }
        assert_int_equal(st, QK_OK);
    }
}

static void test_seg_quantize(void **state)
{
    static const qk_dtype xts[] = {QK_F32, QK_F64};
    static const qk_dtype cts[] = {QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
    for (size_t ci = 0; ci < N_SEG_CASES; ci++) {
        const int64_t seg = seg_cases[ci].seg, nseg = seg_cases[ci].nseg, n = seg * nseg;
        double *v = seg_values(seg, nseg, 1, 31 + ci);
        for (int d = 0; d < 2; d++) {
            void *h = as_dtype(v, n, xts[d]);
            qk_buffer *bx, *bc, *bo;
            qk_tensor tx = to_device(sim, xts[d], h, n, (int64_t)qk_dtype_size(xts[d]), &bx);
            qk_tensor th = qk_tensor_host(xts[d], h, n);
            assert_int_equal(qk_buffer_create(sim, (size_t)n * 4 + 4, &bc), QK_OK);
            assert_int_equal(qk_buffer_create(sim, (size_t)n * 4 + 4, &bo), QK_OK);
            void *codes = malloc((size_t)n * 4), *want = malloc((size_t)n * 4);
            float *fo = malloc((size_t)n * 4), *fw = malloc((size_t)n * 4);
            qk_qparams *qp = malloc((size_t)nseg * sizeof *qp);
            for (size_t c = 0; c < sizeof cts / sizeof cts[0]; c++) {
                const qk_dtype ct = cts[c];
                const size_t ces = qk_dtype_size(ct);
                seg_params(v, seg, nseg, ct, 0.1, (int)(c + ci), qp);
                /* codes one element in: unaligned for the vector stores */
                qk_tensor tc = qk_tensor_buffer(ct, bc, (int64_t)ces, n), to = qk_tensor_buffer(QK_F32, bo, 4, n);
                assert_int_equal(ifc(sim)->seg_quantize(sim->backend, &tx, seg, qp, &tc), QK_OK);
                assert_int_equal(qk_buffer_read(sim, bc, ces, codes, (size_t)n * ces), QK_OK);
                qk_tensor wh = qk_tensor_host(ct, want, n);
                for (int64_t b = 0; b < nseg; b++) {
                    qk_tensor vx = seg_view(&th, seg, b), vc = seg_view(&wh, seg, b);
                    assert_int_equal(ifc(cpu)->quantize(cpu->backend, &vx, &qp[b], &vc), QK_OK);
                }
                if (memcmp(codes, want, (size_t)n * ces))
                    fail_msg("seg %lld: %s codes from %s differ", (long long)seg, qk_dtype_name(ct), qk_dtype_name(xts[d]));
                assert_int_equal(ifc(sim)->seg_dequantize(sim->backend, &tc, seg, qp, &to), QK_OK);
                assert_int_equal(qk_buffer_read(sim, bo, 4, fo, (size_t)n * 4), QK_OK);
                qk_tensor fh = qk_tensor_host(QK_F32, fw, n);
                for (int64_t b = 0; b < nseg; b++) {
                    qk_tensor vc = seg_view(&wh, seg, b), vo = seg_view(&fh, seg, b);
                    assert_int_equal(ifc(cpu)->dequantize(cpu->backend, &vc, &qp[b], &vo), QK_OK);
                }
                if (memcmp(fo, fw, (size_t)n * 4))
                    fail_msg("seg %lld: dequantized %s differ", (long long)seg, qk_dtype_name(ct));
            }
            free(codes);
            free(want);
            free(fo);
            free(fw);
            free(qp);
            qk_buffer_destroy(sim, bx);
            qk_buffer_destroy(sim, bc);
            qk_buffer_destroy(sim, bo);
            free(h);
        }
        free(v);
    }
    no_sim_errors();
}

/* k candidates per segment and per-segment fences for values v */
static void seg_error_inputs(const double *v, int64_t seg, int64_t nseg, size_t k, qk_qparams *qp, double *fences)
{
    static const qk_dtype cts[] = {QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
    qk_qparams *one = malloc((size_t)nseg * sizeof *one);
    for (size_t c = 0; c < k; c++) {
        seg_params(v, seg, nseg, cts[c % 5], 0.07 * (double)c, (int)c, one);
        for (int64_t b = 0; b < nseg; b++) qp[b * (int64_t)k + (int64_t)c] = one[b];
    }
    for (int64_t b = 0; b < nseg; b++) {
        fences[2 * b] = -0.02 - 0.01 * (double)(b % 5);
        fences[2 * b + 1] = 0.03 + 0.02 * (double)(b % 3);
    }
    free(one);
}

static void test_seg_error(void **state)
{
    static const qk_dtype dts[] = {QK_F32, QK_F64};
    static const size_t ks[] = {1, 9};
    for (size_t ci = 0; ci < N_SEG_CASES; ci++) {
        const int64_t seg = seg_cases[ci].seg, nseg = seg_cases[ci].nseg, n = seg * nseg;
        double *v = seg_values(seg, nseg, 1, 41 + ci);
        for (int d = 0; d < 2; d++) {
            void *h = as_dtype(v, n, dts[d]);
            qk_buffer *buf;
            qk_tensor tx = to_device(sim, dts[d], h, n, (int64_t)qk_dtype_size(dts[d]), &buf);
            qk_tensor th = qk_tensor_host(dts[d], h, n);
            for (size_t ki = 0; ki < 2; ki++) {
                const size_t k = ks[ki];
                qk_qparams *qp = malloc((size_t)nseg * k * sizeof *qp);
                double *fences = malloc((size_t)nseg * 2 * sizeof *fences);
                qk_error_sums *sums = malloc((size_t)nseg * k * sizeof *sums), pt[9], ref[9];
                qk_error_counts *counts = malloc((size_t)nseg * sizeof *counts), pc, rc;
                seg_error_inputs(v, seg, nseg, k, qp, fences);
                memset(sums, 0x5a, (size_t)nseg * k * sizeof *sums);
                qk_status st = ifc(sim)->seg_error(sim->backend, &tx, seg, qp, k, fences, sums, counts);
                if (st != QK_OK) fail_msg("seg_error: %s", qk_context_message(sim));
                for (int64_t b = 0; b < nseg; b++) {
                    const qk_qparams *pb = qp + b * (int64_t)k;
                    qk_tensor vd = seg_view(&tx, seg, b), vh = seg_view(&th, seg, b);
                    /* the per-tensor CUDA member on the segment: the same bits */
                    assert_int_equal(ifc(sim)->error(sim->backend, &vd, pb, k, fences[2 * b], fences[2 * b + 1], pt, &pc),
                                     QK_OK);
                    assert_int_equal(ifc(cpu)->error(cpu->backend, &vh, pb, k, fences[2 * b], fences[2 * b + 1], ref,
                                                     &rc), QK_OK);
                    const qk_error_counts *gc = &counts[b];
                    assert_memory_equal(gc, &pc, sizeof pc);
                    assert_memory_equal(gc, &rc, sizeof rc);
                    for (size_t c = 0; c < k; c++) {
                        const qk_error_sums *g = &sums[b * (int64_t)k + (int64_t)c];
                        if (!bits_eq(g->sse, pt[c].sse) || !bits_eq(g->sse_inliers, pt[c].sse_inliers) ||
                            g->clipped != pt[c].clipped)
                            fail_msg("seg %lld %s k=%zu segment %lld set %zu: sse %.17g/%.17g clipped %lld, per-tensor "
                                     "%.17g/%.17g %lld", (long long)seg, qk_dtype_name(dts[d]), k, (long long)b, c,
                                     g->sse, g->sse_inliers, (long long)g->clipped, pt[c].sse, pt[c].sse_inliers,
                                     (long long)pt[c].clipped);
                        assert_int_equal(g->clipped, ref[c].clipped);
                        if (!(fabs(g->sse - ref[c].sse) <= 1e-12 * ref[c].sse) ||
                            !(fabs(g->sse_inliers - ref[c].sse_inliers) <= 1e-12 * ref[c].sse_inliers))
                            fail_msg("seg %lld segment %lld set %zu: sse %.17g, CPU %.17g", (long long)seg, (long long)b,
                                     c, g->sse, ref[c].sse);
                    }
                }
                if (nseg > 5) { /* first_nonfinite is relative to the segment */
                    assert_int_equal(counts[1].first_nonfinite, seg > 3 ? 3 : 0);
                    assert_int_equal(counts[4].n_finite, 0);
                    assert_int_equal(counts[0].first_nonfinite, -1);
                }
                free(qp);
                free(fences);
                free(sums);
                free(counts);
            }
            /* k == 0: nothing counted, as the per-tensor member */
            qk_error_counts *counts = malloc((size_t)nseg * sizeof *counts);
            assert_int_equal(ifc(sim)->seg_error(sim->backend, &tx, seg, NULL, 0, NULL, NULL, counts), QK_OK);
            for (int64_t b = 0; b < nseg; b++) {
                assert_int_equal(counts[b].n_finite, 0);
                assert_int_equal(counts[b].first_nonfinite, -1);
            }
            free(counts);
            qk_buffer_destroy(sim, buf);
            free(h);
        }
        free(v);
    }
    no_sim_errors();
}

/* Under a memory limit the calls take several batches (launches): the same
 * bits as one batch. When not even one segment's scratch fits, UNSUPPORTED
 * without a message. */
static void test_seg_batches(void **state)
{
    qk_context *lim = open_sim("8M");
    const int64_t n = (int64_t)1 << 20;
    double *v = seg_values(128, n / 128, 0, 51);
    float *x = as_dtype(v, n, QK_F32);
    qk_buffer *bl, *bs;
    qk_tensor tl = to_device(lim, QK_F32, x, n, 0, &bl), ts = to_device(sim, QK_F32, x, n, 0, &bs);

    /* error pass, 9 sets: ~550 bytes a segment, a 1 MiB batch */
    const int64_t seg = 128, nseg = n / seg;
    const size_t k = 9;
    qk_qparams *qp = malloc((size_t)nseg * k * sizeof *qp);
    double *fences = malloc((size_t)nseg * 2 * sizeof *fences);
    seg_error_inputs(v, seg, nseg, k, qp, fences);
    qk_error_sums *s1 = malloc((size_t)nseg * k * sizeof *s1), *s2 = malloc((size_t)nseg * k * sizeof *s2);
    qk_error_counts *c1 = malloc((size_t)nseg * sizeof *c1), *c2 = malloc((size_t)nseg * sizeof *c2);
    sim_seg_launches = 0;
    assert_int_equal(ifc(lim)->seg_error(lim->backend, &tl, seg, qp, k, fences, s1, c1), QK_OK);
    assert_true(sim_seg_launches > 1);
    sim_seg_launches = 0;
    assert_int_equal(ifc(sim)->seg_error(sim->backend, &ts, seg, qp, k, fences, s2, c2), QK_OK);
    assert_int_equal(sim_seg_launches, 1);
    assert_memory_equal(s1, s2, (size_t)nseg * k * sizeof *s1);
    assert_memory_equal(c1, c2, (size_t)nseg * sizeof *c1);

    /* select, 60 ranks a segment */
    enum { NR = 60 };
    int64_t *ranks = malloc((size_t)nseg * NR * sizeof *ranks);
    double *v1 = malloc((size_t)nseg * NR * sizeof *v1), *v2 = malloc((size_t)nseg * NR * sizeof *v2);
    for (int64_t i = 0; i < nseg * NR; i++) ranks[i] = (i % NR) * 2;
    sim_seg_launches = 0;
    assert_int_equal(ifc(lim)->seg_select(lim->backend, &tl, seg, QK_ABS, ranks, NR, v1), QK_OK);
    assert_true(sim_seg_launches > 1);
    assert_int_equal(ifc(sim)->seg_select(sim->backend, &ts, seg, QK_ABS, ranks, NR, v2), QK_OK);
    assert_memory_equal(v1, v2, (size_t)nseg * NR * sizeof *v1);

    /* minmax and quantize of 4-element segments: 2^18 parameter sets */
    const int64_t tiny = 4, ntiny = n / tiny;
    qk_minmax_result *m1 = malloc((size_t)ntiny * sizeof *m1), *m2 = malloc((size_t)ntiny * sizeof *m2);
    sim_seg_launches = 0;
    assert_int_equal(ifc(lim)->seg_minmax(lim->backend, &tl, tiny, m1), QK_OK);
    assert_true(sim_seg_launches > 1);
    assert_int_equal(ifc(sim)->seg_minmax(sim->backend, &ts, tiny, m2), QK_OK);
    assert_memory_equal(m1, m2, (size_t)ntiny * sizeof *m1);
    qk_qparams *tp = malloc((size_t)ntiny * sizeof *tp);
    seg_params(v, tiny, ntiny, QK_U8, 0.2, 0, tp);
    uint8_t *q1 = malloc((size_t)n), *q2 = malloc((size_t)n);
    qk_buffer *cl, *cs;
    assert_int_equal(qk_buffer_create(lim, (size_t)n, &cl), QK_OK);
    assert_int_equal(qk_buffer_create(sim, (size_t)n, &cs), QK_OK);
    qk_tensor ql = qk_tensor_buffer(QK_U8, cl, 0, n), qs = qk_tensor_buffer(QK_U8, cs, 0, n);
    sim_seg_launches = 0;
    assert_int_equal(ifc(lim)->seg_quantize(lim->backend, &tl, tiny, tp, &ql), QK_OK);
    assert_true(sim_seg_launches > 1);
    assert_int_equal(ifc(sim)->seg_quantize(sim->backend, &ts, tiny, tp, &qs), QK_OK);
    assert_int_equal(qk_buffer_read(lim, cl, 0, q1, (size_t)n), QK_OK);
    assert_int_equal(qk_buffer_read(sim, cs, 0, q2, (size_t)n), QK_OK);
    assert_memory_equal(q1, q2, (size_t)n);

    /* 100000 sets a segment: one segment's scratch is past what the limit leaves */
    const size_t kbig = 100000;
    qk_qparams *big = malloc(kbig * 2 * sizeof *big);
    for (size_t i = 0; i < kbig * 2; i++) big[i] = qp[i % k];
    qk_error_sums *sb = malloc(kbig * 2 * sizeof *sb);
    qk_error_counts cb[2];
    qk_tensor two = tl;
    two.n = 2 * seg;
    qk_clear_error(lim);
    assert_int_equal(ifc(lim)->seg_error(lim->backend, &two, seg, big, kbig, fences, sb, cb), QK_ERR_UNSUPPORTED);
    assert_string_equal(qk_context_message(lim), "");

    qk_buffer_destroy(lim, cl);
    qk_buffer_destroy(sim, cs);
    qk_buffer_destroy(lim, bl);
    qk_buffer_destroy(sim, bs);
    qk_context_destroy(lim);
    free(big);
    free(sb);
    free(q1);
    free(q2);
    free(tp);
    free(m1);
    free(m2);
    free(ranks);
    free(v1);
    free(v2);
    free(qp);
    free(fences);
    free(s1);
    free(s2);
    free(c1);
    free(c2);
    free(x);
    free(v);
    no_sim_errors();
}

static float bf16_ref(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Every float16 and bfloat16 pattern widens to host/stage.c's float32 bits:
 * NaN payloads, infinities, subnormals and -0 included. */
static void test_widen(void **state)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h);
    float *got = malloc(N * sizeof *got);
    for (int i = 0; i < N; i++) h[i] = (uint16_t)i;
    static const qk_dtype dts[] = {QK_F16, QK_BF16};
    for (int d = 0; d < 2; d++) {
        for (int off = 0; off < 2; off++) { /* aligned, and one element in */
            qk_buffer *bx, *bo;
            qk_tensor tx = to_device(sim, dts[d], h, N, 2 * off, &bx);
            assert_int_equal(qk_buffer_create(sim, N * 4 + 4, &bo), QK_OK);
            qk_tensor to = qk_tensor_buffer(QK_F32, bo, 4 * off, N);
            assert_int_equal(ifc(sim)->widen(sim->backend, &tx, &to), QK_OK);
            assert_int_equal(qk_buffer_read(sim, bo, (size_t)(4 * off), got, N * 4), QK_OK);
            for (int i = 0; i < N; i++) {
                float want = dts[d] == QK_F16 ? qk_half_to_float(h[i]) : bf16_ref(h[i]);
                if (memcmp(&got[i], &want, 4)) fail_msg("%s 0x%04x: %a, reference %a", qk_dtype_name(dts[d]), i, got[i], want);
            }
            qk_buffer_destroy(sim, bx);
            qk_buffer_destroy(sim, bo);
        }
    }
    /* the kernel's own bit function, on every half pattern */
    for (int i = 0; i < N; i++) {
        float want = qk_half_to_float((uint16_t)i);
        uint32_t wb;
        memcpy(&wb, &want, 4);
        if (qk_cu_half_bits((uint32_t)i) != wb) fail_msg("qk_cu_half_bits(0x%04x)", i);
    }
    /* not F16/BF16 in, F32 out, on the device: the fallback's */
    qk_tensor hx = qk_tensor_host(QK_F16, h, N), ho = qk_tensor_host(QK_F32, got, N);
    qk_clear_error(sim);
    expect_unsupported_quietly(ifc(sim)->widen(sim->backend, &hx, &ho), "widen of host tensors");
    free(h);
    free(got);
    no_sim_errors();
}

/* ==== the stricter runtime: the library's reaction to what a GPU does ================== */

/* a little of everything on ctx: host and device tensors, select, error pass, quantize */
static void some_work(qk_context *c)
{
    enum { N = 70001 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_LAPLACE_OUTLIERS, 77);
    qk_tensor th = qk_tensor_host(QK_F32, x, N);
    same_stats(c, &th, &th, 0, "some work");
    qk_buffer *b;
    assert_int_equal(qk_buffer_create(c, N * 4, &b), QK_OK);
    assert_int_equal(qk_buffer_write(c, b, 0, x, N * 4), QK_OK);
    qk_tensor td = qk_tensor_buffer(QK_F32, b, 0, N);
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(cpu, QK_ASYMMETRIC, 8, 0, 0, -0.5, 0.7, &qp), QK_OK);
    qk_error_result e;
    assert_int_equal(qk_quant_error(c, &td, &qp, 0, &e), QK_OK);
    uint8_t *q = malloc(N);
    qk_tensor tq = qk_tensor_host(QK_U8, q, N);
    assert_int_equal(qk_quantize(c, &td, &qp, &tq), QK_OK);
    qk_buffer_destroy(c, b);
    free(q);
    free(x);
}

/* An error the application has not read yet survives every qkern call. */
static void test_last_error_untouched(void **state)
{
    last_error = cudaErrorInvalidValue; /* the application's own failed call, unread */
    some_work(sim);
    assert_int_equal(last_error, cudaErrorInvalidValue);
    last_error = cudaSuccess;
    no_sim_errors(); /* and cudaGetLastError() was never called (the simulator fails it) */
}

/* The caller's current device and driver context are as found after every
 * call; the backend's streams are only used with its own context current
 * (the simulator checks each use). */
static void test_current_device_restored(void **state)
{
    sim_device_count = 2;
    assert_int_equal(cudaSetDevice(1), cudaSuccess); /* the application works on device 1 */
    some_work(sim);
    int d = -1;
    assert_int_equal(cudaGetDevice(&d), cudaSuccess);
    assert_int_equal(d, 1);
    assert_ptr_equal(current_ctx, &sim_primary[1]);
    /* a context of the application's own on the backend's device */
    current_ctx = &sim_foreign;
    some_work(sim);
    assert_ptr_equal(current_ctx, &sim_foreign);
    /* no context current at all (a fresh thread) */
    current_ctx = NULL;
    some_work(sim);
    assert_null(current_ctx);
    /* a new context made while device 1 is current leaves it current */
    assert_int_equal(cudaSetDevice(1), cudaSuccess);
    qk_context *c = open_sim(NULL);
    assert_ptr_equal(current_ctx, &sim_primary[1]);
    qk_context_destroy(c);
    assert_ptr_equal(current_ctx, &sim_primary[1]);
    /* without the driver's context calls: by device */
    sim_no_entry_points = 1;
    c = open_sim(NULL);
    some_work(c);
    assert_int_equal(cudaGetDevice(&d), cudaSuccess);
    assert_int_equal(d, 1);
    qk_context_destroy(c);
    sim_no_entry_points = 0;
    assert_int_equal(cudaSetDevice(0), cudaSuccess);
    sim_device_count = 1;
    no_sim_errors();
}

/* A device the fat binary has no code for (a T4, 7.5) is refused, with the
 * reason, and AUTO goes on to another backend; 8.6 runs sm_80 code and 10.0
 * the compute_90 PTX. */
static void test_old_device(void **state)
{
    sim_cc_major = 7;
    sim_cc_minor = 5;
    qk_context *c = NULL;
    char msg[512];
    assert_int_equal(qk_context_create(QK_BACKEND_CUDA, &c, msg, sizeof msg), QK_ERR_NO_DEVICE);
    assert_null(c);
    assert_non_null(strstr(msg, "7.5"));
    assert_non_null(strstr(msg, "sm_75"));
    qk_backend_info info;
    assert_int_equal(qk_backend_query(QK_BACKEND_CUDA, &info), QK_OK);
    assert_false(info.available);
    assert_non_null(strstr(info.reason, "sm_75"));
    assert_int_equal(info.n_devices, 1);
    assert_non_null(strstr(info.devices[0].version, "unsupported"));
    unsetenv("QKERN_BACKEND");
    assert_int_equal(qk_context_create(QK_BACKEND_AUTO, &c, msg, sizeof msg), QK_OK);
    assert_int_not_equal(qk_context_backend(c), QK_BACKEND_CUDA);
    qk_context_destroy(c);
    static const int ok[][2] = {{8, 0}, {8, 6}, {8, 9}, {9, 0}, {10, 0}, {12, 0}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        sim_cc_major = ok[i][0];
        sim_cc_minor = ok[i][1];
        c = open_sim(NULL);
        qk_context_destroy(c);
    }
    sim_cc_major = 9;
    sim_cc_minor = 0;
    no_sim_errors();
}

/* A launch that fails (resources, no kernel image) is an error naming the
 * kernel and the CUDA error, not sticky: the next call works. */
static void test_launch_errors(void **state)
{
    enum { N = 4096 };
    float x[N];
    ref_fill(x, N, REF_NORMAL, 5);
    qk_tensor t = qk_tensor_host(QK_F32, x, N);
    qk_minmax_result r;
    static const cudaError_t errs[] = {cudaErrorLaunchOutOfResources, cudaErrorNoKernelImageForDevice};
    for (int i = 0; i < 2; i++) {
        sim_next_launch_error = errs[i];
        assert_int_equal(qk_minmax(sim, &t, 0, &r), QK_ERR_BACKEND);
        assert_non_null(strstr(qk_context_message(sim), "minmax kernel"));
        assert_non_null(strstr(qk_context_message(sim), cudaGetErrorName(errs[i])));
        assert_int_equal(qk_minmax(sim, &t, 0, &r), QK_OK);
    }
    sim_next_launch_error = cudaErrorLaunchOutOfResources;
    qk_error_result e;
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(cpu, QK_SYMMETRIC, 8, 0, 0, -1, 1, &qp), QK_OK);
    assert_int_equal(qk_quant_error(sim, &t, &qp, 0, &e), QK_ERR_BACKEND);
    assert_non_null(strstr(qk_context_message(sim), "error kernel"));
    assert_int_equal(qk_quant_error(sim, &t, &qp, 0, &e), QK_OK);
    no_sim_errors();
}

/* A kernel fault (sticky) names the kernel, says the context is unusable, and
 * every later call on that qkern context fails with the same words, launching
 * nothing. */
static void test_sticky_fault(void **state)
{
    enum { N = 200000 };
    float *x = malloc(N * 4);
    ref_fill(x, N, REF_NORMAL, 8);
    qk_context *c = open_sim(NULL);
    qk_tensor t = qk_tensor_host(QK_F32, x, N);
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(cpu, QK_SYMMETRIC, 8, 0, 0, -1, 1, &qp), QK_OK);
    qk_error_result e;
    sim_fault_next_kernel = cudaErrorIllegalAddress;
    assert_int_equal(qk_quant_error(c, &t, &qp, 0, &e), QK_ERR_BACKEND);
    char first[1024];
    snprintf(first, sizeof first, "%s", qk_context_message(c));
    assert_non_null(strstr(first, "error kernel"));
    assert_non_null(strstr(first, "cudaErrorIllegalAddress"));
    assert_non_null(strstr(first, "unusable"));
    unsigned long long before = sim_launches;
    qk_minmax_result r;
    assert_int_equal(qk_minmax(c, &t, 0, &r), QK_ERR_BACKEND);
    assert_string_equal(qk_context_message(c), first);
    qk_buffer *b;
    assert_int_equal(qk_buffer_create(c, 1024, &b), QK_ERR_BACKEND);
    assert_string_equal(qk_context_message(c), first);
    assert_int_equal(sim_launches, before);
    qk_context_destroy(c); /* still releases what it can */
    sim_sticky = cudaSuccess; /* a new process */
    last_error = cudaSuccess;
    free(x);
    no_sim_errors();
}

/* Wrapped memory at an address not aligned for the dtype is refused before
 * any kernel sees it, on the CUDA and the CPU backend alike; an aligned
 * offset into it is fine. */
static void test_misaligned_wrap(void **state)
{
    enum { N = 1024 };
    float x[N];
    ref_fill(x, N, REF_NORMAL, 12);
    void *dev = NULL;
    assert_int_equal(cudaMalloc(&dev, N * 4 + 16), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync((char *)dev + 4, x, N * 4, cudaMemcpyHostToDevice, NULL), cudaSuccess);
    qk_buffer *w, *wa;
    assert_int_equal(qk_buffer_wrap(sim, (char *)dev + 2, N * 4 + 8, &w), QK_OK); /* d_ptr + 2 */
    assert_int_equal(qk_buffer_wrap(sim, (char *)dev + 4, N * 4, &wa), QK_OK);
    qk_tensor bad = qk_tensor_buffer(QK_F32, w, 0, N), good = qk_tensor_buffer(QK_F32, wa, 0, N);
    qk_minmax_result r, ref;
    assert_int_equal(qk_minmax(sim, &bad, 0, &r), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(sim), "not aligned"));
    double p = 50, v;
    assert_int_equal(qk_percentiles(sim, &bad, &p, 1, 0, &v), QK_ERR_INVALID_ARG);
    qk_tensor bad64 = qk_tensor_buffer(QK_F64, wa, 0, N / 2); /* 4-aligned is not enough for float64 */
    assert_int_equal(qk_minmax(sim, &bad64, 0, &r), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_minmax(sim, &good, 0, &r), QK_OK);
    qk_tensor th = qk_tensor_host(QK_F32, x, N);
    assert_int_equal(qk_minmax(cpu, &th, 0, &ref), QK_OK);
    assert_true(bits_eq(r.min, ref.min) && bits_eq(r.max, ref.max));
    /* int16 codes two bytes in are fine, int32 codes there are not */
    qk_qparams qp;
    assert_int_equal(qk_qparams_from_range(cpu, QK_SYMMETRIC, 12, 0, 0, -4, 4, &qp), QK_OK);
    void *dc = NULL;
    assert_int_equal(cudaMalloc(&dc, N * 4 + 16), cudaSuccess);
    qk_buffer *wc;
    assert_int_equal(qk_buffer_wrap(sim, (char *)dc + 2, N * 4 + 8, &wc), QK_OK);
    qk_tensor codes = qk_tensor_buffer(QK_I16, wc, 0, N), codes32 = qk_tensor_buffer(QK_I32, wc, 0, N);
    assert_int_equal(qk_quantize(sim, &good, &qp, &codes), QK_OK);
    assert_int_equal(qk_quantize(sim, &good, &qp, &codes32), QK_ERR_INVALID_ARG);
    qk_buffer_destroy(sim, wc);
    qk_buffer_destroy(sim, wa);
    qk_buffer_destroy(sim, w);
    assert_int_equal(cudaFree(dc), cudaSuccess);
    assert_int_equal(cudaFree(dev), cudaSuccess);
    /* the CPU backend wraps host memory: the same rule */
    char *host = malloc(N * 4 + 16);
    memcpy(host + 4, x, N * 4);
    qk_buffer *hw, *hwa;
    assert_int_equal(qk_buffer_wrap(cpu, host + 2, N * 4 + 8, &hw), QK_OK);
    assert_int_equal(qk_buffer_wrap(cpu, host + 4, N * 4, &hwa), QK_OK);
    qk_tensor hb = qk_tensor_buffer(QK_F32, hw, 0, N), hg = qk_tensor_buffer(QK_F32, hwa, 0, N);
    assert_int_equal(qk_minmax(cpu, &hb, 0, &r), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(qk_context_message(cpu), "not aligned"));
    assert_int_equal(qk_minmax(cpu, &hg, 0, &r), QK_OK);
    assert_true(bits_eq(r.min, ref.min));
    qk_buffer_destroy(cpu, hw);
    qk_buffer_destroy(cpu, hwa);
    free(host);
    no_sim_errors();
}

/* The backend allocates scratch from a pool of its own whose release
 * threshold keeps memory mapped between calls (none under a memory limit,
 * which caps what it holds); the application's default pool is left alone. */
static void test_memory_pool(void **state)
{
    const int live = sim_pools_live, def = sim_default_pool_allocs;
    qk_context *c = open_sim(NULL);
    assert_int_equal(sim_pools_live, live + 1);
    assert_true(sim_pool_threshold == ((uint64_t)1 << 30) / 16); /* a sixteenth of the 1 GiB device */
    const int before = sim_pool_allocs;
    some_work(c);
    assert_true(sim_pool_allocs > before);
    assert_int_equal(sim_default_pool_allocs, def);
    qk_context_destroy(c);
    assert_int_equal(sim_pools_live, live);
    c = open_sim("8M");
    assert_true(sim_pool_threshold == 0);
    qk_context_destroy(c);
    device_capacity = (size_t)16 << 30; /* a large device: 256 MiB kept at most */
    c = open_sim(NULL);
    assert_true(sim_pool_threshold == (uint64_t)256 << 20);
    qk_context_destroy(c);
    device_capacity = (size_t)1 << 30;
    no_sim_errors();
}

/* A shared device (other processes hold most of it, no limit set): the
 * optional resident-key buffer and the staging are sized from cudaMemGetInfo
 * and leave the reserve (a sixteenth of the device) free; results unchanged. */
static void test_shared_device(void **state)
{
    const size_t mib = (size_t)1 << 20;
    sim_other_use = device_capacity - 150 * mib;
    qk_context *c = open_sim(NULL);
    const int64_t n = (int64_t)1 << 24; /* 64 MiB of float32: resident keys would take 64 MiB */
    float *x = malloc((size_t)n * 4);
    ref_fill(x, n, REF_LAPLACE_OUTLIERS, 31);
    qk_tensor t = qk_tensor_host(QK_F32, x, n);
    static const double p[] = {0.1, 50, 99.9};
    double got[3], want[3];
    sim_low_free = SIZE_MAX;
    assert_int_equal(qk_percentiles(c, &t, p, 3, 0, got), QK_OK);
    assert_int_equal(qk_percentiles(cpu, &t, p, 3, 0, want), QK_OK);
    for (int i = 0; i < 3; i++) assert_true(bits_eq(got[i], want[i]));
    if (sim_low_free < 63 * mib) fail_msg("free device memory went down to %zu MiB (reserve 64 MiB)", sim_low_free / mib);
    /* almost nothing free: the smallest pieces still work */
    sim_other_use = device_capacity - 40 * mib;
    assert_int_equal(qk_percentiles(c, &t, p, 3, 0, got), QK_OK);
    for (int i = 0; i < 3; i++) assert_true(bits_eq(got[i], want[i]));
    qk_context_destroy(c);
    sim_other_use = 0;
    free(x);
    no_sim_errors();
}

/* The versions qkern info shows: the runtime's, the driver's (0 without one),
 * and the oldest driver this build needs. */
static void test_versions(void **state)
{
    qk_backend_info info;
    assert_int_equal(qk_backend_query(QK_BACKEND_CUDA, &info), QK_OK);
    assert_int_equal(info.runtime_version, 13000);
    assert_int_equal(info.driver_version, 13000);
    assert_string_equal(info.driver_needed, CUDART_VERSION >= 13000 ? "580.65.06" : "525.60.13");
    sim_driver_version = 0;
    assert_int_equal(qk_backend_query(QK_BACKEND_CUDA, &info), QK_OK);
    assert_int_equal(info.driver_version, 0);
    sim_driver_version = 13000;
    assert_int_equal(qk_backend_query(QK_BACKEND_CPU, &info), QK_OK);
    assert_int_equal(info.runtime_version, 0);
    assert_string_equal(info.driver_needed, "");
}

/* The ggml block formats through the CUDA host side: host tensors staged in
 * pieces (a 1 MiB budget), device tensors at odd byte offsets, every type. */
static void test_ggml(void **state)
{
    enum { N = 256 * 48 };
    static const qk_ggml_type types[] = {QK_GGML_F32, QK_GGML_F16, QK_GGML_BF16, QK_GGML_Q4_0, QK_GGML_Q4_1,
                                         QK_GGML_Q5_0, QK_GGML_Q5_1, QK_GGML_Q8_0, QK_GGML_Q2_K, QK_GGML_Q3_K,
                                         QK_GGML_Q4_K, QK_GGML_Q5_K, QK_GGML_Q6_K};
    float *x = malloc(N * sizeof *x), *back = malloc(N * sizeof *back), *want_back = malloc(N * sizeof *x);
    unsigned char *want = malloc(N * 4), *got = malloc(N * 4 + 1);
    uint64_t r = 16;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((int64_t)(r >> 33) - (1LL << 30)) / (float)(1 << 28);
    }
    setenv("QKERN_DEVICE_MEMORY_LIMIT", "1M", 1);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        size_t bytes;
        assert_int_equal(qk_ggml_size(types[t], N, &bytes), QK_OK);
        qk_tensor tx = qk_tensor_host(QK_F32, x, N), tw = qk_tensor_host(QK_U8, want, (int64_t)bytes);
        assert_int_equal(qk_ggml_quantize(cpu, &tx, types[t], &tw), QK_OK);
        memset(got, 0xAA, bytes);
        qk_tensor tg = qk_tensor_host(QK_U8, got, (int64_t)bytes);
        assert_int_equal(qk_ggml_quantize(sim, &tx, types[t], &tg), QK_OK);
        assert_memory_equal(got, want, bytes);
        /* device tensors, the blocks one byte into their buffer */
        qk_buffer *bx, *bb;
        qk_tensor dx = to_device(sim, QK_F32, x, N, 4, &bx);
        assert_int_equal(qk_buffer_create(sim, bytes + 1, &bb), QK_OK);
        qk_tensor db = qk_tensor_buffer(QK_U8, bb, 1, (int64_t)bytes);
        assert_int_equal(qk_ggml_quantize(sim, &dx, types[t], &db), QK_OK);
        assert_int_equal(qk_buffer_read(sim, bb, 1, got, bytes), QK_OK);
        assert_memory_equal(got, want, bytes);
        /* and back: host, then device */
        qk_tensor tb = qk_tensor_host(QK_F32, want_back, N);
        assert_int_equal(qk_ggml_dequantize(cpu, &tw, types[t], &tb), QK_OK);
        qk_tensor hb = qk_tensor_host(QK_F32, back, N);
        assert_int_equal(qk_ggml_dequantize(sim, &tw, types[t], &hb), QK_OK);
        assert_memory_equal(back, want_back, N * 4);
        memset(back, 0, N * 4);
        assert_int_equal(qk_ggml_dequantize(sim, &db, types[t], &dx), QK_OK);
        assert_int_equal(qk_buffer_read(sim, bx, 4, back, N * 4), QK_OK);
        assert_memory_equal(back, want_back, N * 4);
        qk_buffer_destroy(sim, bx);
        qk_buffer_destroy(sim, bb);
    }
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    free(x);
    free(back);
    free(want_back);
    free(want);
    free(got);
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
        cmocka_unit_test(test_seg_minmax),
        cmocka_unit_test(test_seg_select),
        cmocka_unit_test(test_seg_select_bad_rank),
        cmocka_unit_test(test_seg_select_limits),
        cmocka_unit_test(test_seg_quantize),
        cmocka_unit_test(test_seg_error),
        cmocka_unit_test(test_seg_batches),
        cmocka_unit_test(test_widen),
        cmocka_unit_test(test_last_error_untouched),
        cmocka_unit_test(test_current_device_restored),
        cmocka_unit_test(test_old_device),
        cmocka_unit_test(test_launch_errors),
        cmocka_unit_test(test_sticky_fault),
        cmocka_unit_test(test_misaligned_wrap),
        cmocka_unit_test(test_memory_pool),
        cmocka_unit_test(test_shared_device),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_ggml),
    };
    return cmocka_run_group_tests_name("cuda_hostsim", tests, setup, teardown) ? 1 : 0;
}

#endif /* QK_SIM_NO_MAIN */

#endif
