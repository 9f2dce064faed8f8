/* float16 and bfloat16 inputs: converted exactly to float32 before a backend
 * sees them (every half and bfloat16 value is a float32 value), so the
 * backends keep two input types. GPU backends convert on the device (their
 * widen member) when the float32 copy fits there; otherwise, and on the CPU
 * backend, the conversion is a host loop. The original dtype is kept for the one place
 * numpy's result depends on it: the percentile's d = b - a. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

float qk_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* Inf, NaN (payload kept) */
    } else if (exp) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man) { /* subnormal half: normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round a float to the nearest half (ties to even), as numpy's npy_float_to_half. */
uint16_t qk_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0)); /* Inf/NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504: Inf */
    if (ax < 0x38800000u) { /* below the smallest normal half: a subnormal or 0 */
        if (ax < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint32_t e = ax >> 23, man = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((ax >> 13) - (112u << 10)), rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static float bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Device memory staged copies may take: none on the CPU backend (it works on
 * host memory in place); elsewhere QKERN_DEVICE_MEMORY_LIMIT and half the
 * device's memory bound it. Larger work goes in pieces, or through the
 * per-tensor members' own streaming (chunked, bounded memory). */
uint64_t qk_device_budget(qk_context *ctx)
{
    if (ctx->kind == QK_BACKEND_CPU) return 0;
    uint64_t limit;
    if (qk_device_memory_limit(NULL, &limit) != QK_OK) return 0;
    qk_device_info info;
    if (ctx->backend->iface->device_info(ctx->backend, &info) == QK_OK && info.global_mem) {
        if (info.global_mem / 2 < limit) limit = info.global_mem / 2;
    }
    return limit;
}

int qk_device_room(qk_context *ctx, uint64_t bytes)
{
    return bytes <= qk_device_budget(ctx);
}

qk_status qk_device_copy(qk_context *ctx, const qk_tensor *x, int load, qk_tensor *dev, qk_buffer **buf)
{
    *buf = NULL;
    if (!x->host) {
        *dev = *x;
        return QK_OK;
    }
    size_t bytes = (size_t)x->n * qk_dtype_size(x->dtype);
    qk_status st = qk_buffer_create(ctx, bytes, buf);
    if (st == QK_OK && load) st = qk_buffer_write(ctx, *buf, 0, x->host, bytes);
    if (st != QK_OK) {
        qk_buffer_destroy(ctx, *buf);
        *buf = NULL;
        return st;
    }
    *dev = qk_tensor_buffer(x->dtype, *buf, 0, x->n);
    return QK_OK;
}

/* float16/bfloat16 widened on the device: 2 bytes an element cross the bus. */
static qk_status widen_on_device(qk_context *ctx, const qk_tensor *x, qk_staged *out)
{
    qk_tensor raw;
    qk_buffer *rawbuf = NULL;
    qk_status st = qk_device_copy(ctx, x, 1, &raw, &rawbuf);
    if (st == QK_OK) st = qk_buffer_create(ctx, (size_t)x->n * 4, &out->buf);
    if (st == QK_OK) {
        out->t = qk_tensor_buffer(QK_F32, out->buf, 0, x->n);
        st = ctx->backend->iface->widen(ctx->backend, &raw, &out->t);
    }
    qk_buffer_destroy(ctx, rawbuf);
    if (st != QK_OK) {
        qk_buffer_destroy(ctx, out->buf);
        out->buf = NULL;
    }
    return st;
}

qk_status qk_stage_float(qk_context *ctx, const qk_tensor *x, const char *name, qk_staged *out)
{
    memset(out, 0, sizeof *out);
    out->t = *x;
    out->interp = x->dtype;
    if (x->dtype == QK_F32 || x->dtype == QK_F64) return QK_OK;
    if (x->dtype != QK_F16 && x->dtype != QK_BF16) {
        return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "%s: dtype %s is not a float input (float32, float64, "
                            "float16, bfloat16)", name, qk_dtype_name(x->dtype));
    }
    if (ctx->backend->iface->widen && qk_device_room(ctx, (uint64_t)x->n * (x->host ? 6 : 4))) {
        return widen_on_device(ctx, x, out);
    }
    size_t n = (size_t)x->n;
    float *f = malloc(n * sizeof *f);
    const uint16_t *src = x->host;
    uint16_t *copy = NULL;
    if (!f) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "%s: no host memory to convert %zu %s values", name, n,
                                qk_dtype_name(x->dtype));
    if (!src) { /* device-resident half data: read it back once */
        copy = malloc(n * 2);
        qk_status st = copy ? qk_buffer_read(ctx, x->buffer, (size_t)x->offset, copy, n * 2) : QK_ERR_NO_MEMORY;
        if (st != QK_OK) {
            free(f);
            free(copy);
            return st == QK_ERR_NO_MEMORY ? qk_set_error(ctx, st, "%s: no host memory for staging", name) : st;
        }
        src = copy;
    }
    if (x->dtype == QK_F16) {
        for (size_t i = 0; i < n; i++) f[i] = qk_half_to_float(src[i]);
    } else {
        for (size_t i = 0; i < n; i++) f[i] = bf16_to_float(src[i]);
    }
    free(copy);
    out->temp = f;
    out->t = qk_tensor_host(QK_F32, f, x->n);
    return QK_OK;
}

qk_status qk_stage_float_device(qk_context *ctx, const qk_tensor *x, const char *name, uint64_t extra,
                                qk_staged *out)
{
    qk_status st = qk_stage_float(ctx, x, name, out);
    if (st != QK_OK || !out->t.host) return st;
    uint64_t bytes = (uint64_t)out->t.n * qk_dtype_size(out->t.dtype);
    if (!ctx->backend->iface->seg_minmax || !qk_device_room(ctx, bytes + extra)) return QK_OK;
    qk_tensor dev;
    qk_buffer *buf;
    if ((st = qk_device_copy(ctx, &out->t, 1, &dev, &buf)) != QK_OK) {
        qk_staged_release(out);
        return st;
    }
    free(out->temp); /* the host conversion, if any, now lives on the device */
    out->temp = NULL;
    out->buf = buf;
    out->t = dev;
    return QK_OK;
}

void qk_staged_release(qk_staged *s)
{
    free(s->temp);
    s->temp = NULL;
    if (s->buf) qk_buffer_destroy(s->buf->ctx, s->buf);
    s->buf = NULL;
}
