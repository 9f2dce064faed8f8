/* qk_context: backend choice, the per-context error message, buffers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

qk_status qk_set_error(qk_context *ctx, qk_status status, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

void qk_clear_error(qk_context *ctx)
{
    if (ctx) {
        ctx->message[0] = '\0';
        ctx->nonfinite_count = 0;
        ctx->nonfinite_first = -1;
    }
}

qk_status qk_fail_nonfinite(qk_context *ctx, const char *what, int64_t count, int64_t first)
{
    if (ctx) {
        ctx->nonfinite_count = count;
        ctx->nonfinite_first = first;
    }
    return qk_set_error(ctx, QK_ERR_NONFINITE,
                        "%s: %lld non-finite value%s (NaN or Inf), the first at index %lld; "
                        "clean the input or ask to ignore non-finite values",
                        what, (long long)count, count == 1 ? "" : "s", (long long)first);
}

typedef qk_status (*backend_create_fn)(qk_context *, int, qk_backend **);

static backend_create_fn create_fn(qk_backend_kind kind)
{
    switch (kind) {
    case QK_BACKEND_CPU: return qk_cpu_backend_create;
    case QK_BACKEND_OPENCL: return qk_opencl_backend_create;
    case QK_BACKEND_CUDA: return qk_cuda_backend_create;
    default: return NULL;
    }
}

/* QKERN_DEVICE=N: a non-negative decimal index; anything else is an error. */
static qk_status device_from_env(qk_context *ctx, int *device)
{
    const char *s = getenv("QKERN_DEVICE");
    *device = 0;
    if (!s || !*s) return QK_OK;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 1024) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "QKERN_DEVICE=\"%s\" is not a device index (0, 1, ...)", s);
    }
    *device = (int)v;
    return QK_OK;
}

static qk_status try_create(qk_context *ctx, qk_backend_kind kind, int device)
{
    qk_backend *be = NULL;
    qk_status st = create_fn(kind)(ctx, device, &be);
    if (st != QK_OK) return st;
    ctx->backend = be;
    ctx->kind = kind;
    return QK_OK;
}

/* AUTO: CUDA if a device answers, else OpenCL, else the CPU reference. The
 * reasons the GPU backends were passed over are dropped on success. */
static qk_status create_auto(qk_context *ctx, int device)
{
    static const qk_backend_kind order[] = {QK_BACKEND_CUDA, QK_BACKEND_OPENCL, QK_BACKEND_CPU};
    qk_status st = QK_ERR_NO_DEVICE;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        st = try_create(ctx, order[i], device);
        if (st == QK_OK) {
            ctx->message[0] = '\0';
            return QK_OK;
        }
    }
    return st;
}

qk_status qk_context_create(qk_backend_kind kind, qk_context **out, char *message, size_t message_len)
{
    if (message && message_len) message[0] = '\0';
    if (!out) return QK_ERR_INVALID_ARG;
    *out = NULL;
    if ((unsigned)kind >= QK_BACKEND_COUNT) {
        if (message && message_len) snprintf(message, message_len, "unknown backend kind %d", (int)kind);
        return QK_ERR_INVALID_ARG;
    }
    qk_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return QK_ERR_NO_MEMORY;
    qk_clear_error(ctx);

    qk_status st = QK_OK;
    const char *env = getenv("QKERN_BACKEND");
    if (kind == QK_BACKEND_AUTO && env && *env) {
        if (qk_backend_parse(env, &kind) != QK_OK) {
            st = qk_set_error(ctx, QK_ERR_INVALID_ARG,
                              "QKERN_BACKEND=\"%s\" is not a backend (auto, cpu, opencl, cuda)", env);
        }
    }
    int device = 0;
    if (st == QK_OK) st = device_from_env(ctx, &device);
    if (st == QK_OK) st = kind == QK_BACKEND_AUTO ? create_auto(ctx, device) : try_create(ctx, kind, device);
    if (st != QK_OK) {
        if (message && message_len) snprintf(message, message_len, "%s", ctx->message);
        free(ctx);
        return st;
    }
    *out = ctx;
    return QK_OK;
}

qk_status qk_context_destroy(qk_context *ctx)
{
    if (!ctx) return QK_OK;
    if (ctx->backend) ctx->backend->iface->destroy(ctx->backend);
    free(ctx);
    return QK_OK;
}

const char *qk_context_message(const qk_context *ctx)
{
    return ctx ? ctx->message : "no context";
}

qk_backend_kind qk_context_backend(const qk_context *ctx)
{
    return ctx ? ctx->kind : QK_BACKEND_AUTO;
}

qk_status qk_context_device(const qk_context *ctx, qk_device_info *out)
{
    if (!ctx || !out) return QK_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    return ctx->backend->iface->device_info(ctx->backend, out);
}

qk_status qk_context_native(const qk_context *ctx, qk_native_handles *out)
{
    if (!ctx || !out) return QK_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->cuda_device = -1;
    if (!ctx->backend->iface->native) return QK_OK; /* the CPU backend: host memory only */
    return ctx->backend->iface->native(ctx->backend, out);
}

qk_status qk_context_nonfinite(const qk_context *ctx, int64_t *count, int64_t *first_index)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    if (count) *count = ctx->nonfinite_count;
    if (first_index) *first_index = ctx->nonfinite_first;
    return QK_OK;
}

qk_status qk_backend_query(qk_backend_kind kind, qk_backend_info *out)
{
    if (!out) return QK_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->name = qk_backend_name(kind);
    switch (kind) {
    case QK_BACKEND_CPU: qk_cpu_backend_query(out); break;
    case QK_BACKEND_OPENCL: qk_opencl_backend_query(out); break;
    case QK_BACKEND_CUDA: qk_cuda_backend_query(out); break;
    default: return QK_ERR_INVALID_ARG;
    }
    return QK_OK;
}

/* ---- buffers ---------------------------------------------------------------- */

qk_status qk_buffer_create(qk_context *ctx, size_t bytes, qk_buffer **out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!out) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_buffer_create: out is NULL");
    *out = NULL;
    if (bytes == 0) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_buffer_create: size is 0");
    qk_buffer *b = calloc(1, sizeof *b);
    if (!b) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "qk_buffer_create: out of host memory");
    qk_status st = ctx->backend->iface->buffer_alloc(ctx->backend, bytes, &b->handle);
    if (st != QK_OK) {
        free(b);
        return st;
    }
    b->ctx = ctx;
    b->bytes = bytes;
    b->owned = 1;
    *out = b;
    return QK_OK;
}

qk_status qk_buffer_wrap(qk_context *ctx, void *native, size_t bytes, qk_buffer **out)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!out || !native || bytes == 0) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_buffer_wrap: native memory and a size > 0 are required");
    }
    *out = NULL;
    if (!ctx->backend->iface->buffer_wrap) {
        return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "qk_buffer_wrap: the %s backend cannot wrap memory",
                            qk_backend_name(ctx->kind));
    }
    qk_buffer *b = calloc(1, sizeof *b);
    if (!b) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "qk_buffer_wrap: out of host memory");
    qk_status st = ctx->backend->iface->buffer_wrap(ctx->backend, native, bytes, &b->handle);
    if (st != QK_OK) {
        free(b);
        return st;
    }
    b->ctx = ctx;
    b->bytes = bytes;
    b->owned = 0;
    /* CPU and CUDA wrap an address, which may be anything (d_ptr + 2); an
     * OpenCL cl_mem's storage is aligned by the implementation
     * (CL_DEVICE_MEM_BASE_ADDR_ALIGN, sub-buffers included). */
    b->misalign = ctx->kind == QK_BACKEND_OPENCL ? 0 : (size_t)((uintptr_t)native % 16);
    *out = b;
    return QK_OK;
}

qk_status qk_buffer_destroy(qk_context *ctx, qk_buffer *buf)
{
    if (!buf) return QK_OK;
    if (!ctx || buf->ctx != ctx) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_buffer_destroy: the buffer belongs to another context");
    }
    ctx->backend->iface->buffer_free(ctx->backend, buf->handle, buf->owned);
    free(buf);
    return QK_OK;
}

static qk_status check_span(qk_context *ctx, const qk_buffer *buf, size_t offset, size_t bytes, const void *host,
                            const char *fn)
{
    if (!ctx) return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    if (!buf || buf->ctx != ctx) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: the buffer is NULL or belongs to another context", fn);
    }
    if (!host && bytes) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: host pointer is NULL", fn);
    if (offset > buf->bytes || bytes > buf->bytes - offset) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: range [%zu, %zu + %zu) is outside the %zu-byte buffer", fn,
                            offset, offset, bytes, buf->bytes);
    }
    return QK_OK;
}

qk_status qk_buffer_write(qk_context *ctx, qk_buffer *buf, size_t offset, const void *src, size_t bytes)
{
    qk_status st = check_span(ctx, buf, offset, bytes, src, "qk_buffer_write");
    if (st != QK_OK || bytes == 0) return st;
    return ctx->backend->iface->buffer_write(ctx->backend, buf->handle, offset, src, bytes);
}

qk_status qk_buffer_read(qk_context *ctx, const qk_buffer *buf, size_t offset, void *dst, size_t bytes)
{
    qk_status st = check_span(ctx, buf, offset, bytes, dst, "qk_buffer_read");
    if (st != QK_OK || bytes == 0) return st;
    return ctx->backend->iface->buffer_read(ctx->backend, buf->handle, offset, dst, bytes);
}

qk_status qk_buffer_copy(qk_context *ctx, qk_buffer *dst, size_t dst_offset, const qk_buffer *src,
                         size_t src_offset, size_t bytes)
{
    qk_status st = check_span(ctx, dst, dst_offset, bytes, dst, "qk_buffer_copy: dst");
    if (st == QK_OK) st = check_span(ctx, src, src_offset, bytes, src, "qk_buffer_copy: src");
    if (st != QK_OK || bytes == 0) return st;
    if (src == dst && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "qk_buffer_copy: source and destination ranges overlap");
    }
    const qk_backend_iface *f = ctx->backend->iface;
    if (f->buffer_copy) return f->buffer_copy(ctx->backend, dst->handle, dst_offset, src->handle, src_offset, bytes);
    /* Through the host, in slices, for a backend without a device copy. */
    enum { SLICE = 16 << 20 };
    char *tmp = malloc(bytes < SLICE ? bytes : SLICE);
    if (!tmp) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "qk_buffer_copy: no host memory for staging");
    for (size_t done = 0; done < bytes && st == QK_OK;) {
        size_t len = bytes - done < SLICE ? bytes - done : SLICE;
        st = f->buffer_read(ctx->backend, src->handle, src_offset + done, tmp, len);
        if (st == QK_OK) st = f->buffer_write(ctx->backend, dst->handle, dst_offset + done, tmp, len);
        done += len;
    }
    free(tmp);
    return st;
}

size_t qk_buffer_size(const qk_buffer *buf)
{
    return buf ? buf->bytes : 0;
}

qk_tensor qk_tensor_host(qk_dtype dtype, const void *data, int64_t n)
{
    qk_tensor t = {dtype, n, (void *)data, NULL, 0};
    return t;
}

qk_tensor qk_tensor_buffer(qk_dtype dtype, qk_buffer *buf, int64_t offset, int64_t n)
{
    qk_tensor t = {dtype, n, NULL, buf, offset};
    return t;
}

/* Every tensor argument: exactly one of host/buffer, n >= 1, the span inside the
 * buffer, the offset aligned for the element type. */
qk_status qk_check_tensor(qk_context *ctx, const qk_tensor *t, const char *name)
{
    if (!t) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: tensor is NULL", name);
    if ((unsigned)t->dtype >= QK_DTYPE_COUNT) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: unknown dtype %d", name, (int)t->dtype);
    }
    if (t->n <= 0) return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: %lld elements (need at least 1)", name,
                                       (long long)t->n);
    if (!t->host == !t->buffer) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: set exactly one of host and buffer", name);
    }
    size_t es = qk_dtype_size(t->dtype);
    if ((uint64_t)t->n > (uint64_t)INT64_MAX / es) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: %lld elements overflow a 64-bit byte count", name,
                            (long long)t->n);
    }
    if (t->host) {
        if ((uintptr_t)t->host % es) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: host pointer not aligned for %s", name,
                                qk_dtype_name(t->dtype));
        }
        return QK_OK;
    }
    if (t->buffer->ctx != ctx) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: buffer belongs to another context", name);
    }
    uint64_t bytes = (uint64_t)t->n * es;
    if (t->offset < 0 || (uint64_t)t->offset > t->buffer->bytes || bytes > t->buffer->bytes - (uint64_t)t->offset) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "%s: %lld %s elements at offset %lld do not fit in the %zu-byte buffer", name,
                            (long long)t->n, qk_dtype_name(t->dtype), (long long)t->offset, t->buffer->bytes);
    }
    if (t->offset % (int64_t)es) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: offset %lld not aligned for %s", name,
                            (long long)t->offset, qk_dtype_name(t->dtype));
    }
    /* a misaligned load is a crash on the CPU and a sticky error on a GPU
     * (cudaErrorMisalignedAddress, the application's whole CUDA context lost) */
    if ((t->buffer->misalign + (size_t)t->offset % 16) % es) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "%s: element 0 (wrapped memory + %lld bytes) is not aligned for %s: its address must be a "
                            "multiple of %zu bytes", name, (long long)t->offset, qk_dtype_name(t->dtype), es);
    }
    return QK_OK;
}
