/* The CPU reference backend: single-threaded, plain loops, obviously right.
 * It is the oracle every other backend is tested against; it is not tuned. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../internal.h"
#include "../quant_math.h"
#include "cpu_keys.h"
#include "cpu_select.h"
#include "cpu_ggml.h"

/* Error sums are accumulated per block, then the block sums in order: a fixed
 * order (same bits every run) and a smaller rounding error than one long sum. */
#define QK_CPU_BLOCK 4096

static void *tensor_ptr(const qk_tensor *t)
{
    return t->host ? t->host : (char *)t->buffer->handle + t->offset;
}

/* ---- device and memory ------------------------------------------------------- */

static void cpu_device(qk_device_info *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "host CPU");
    snprintf(d->type, sizeof d->type, "cpu");
    snprintf(d->version, sizeof d->version, "reference, single-threaded");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (!colon) continue;
            if (strncmp(line, "model name", 10) == 0 || strncmp(line, "vendor_id", 9) == 0) {
                char *v = colon + 1;
                while (*v == ' ' || *v == '\t') v++;
                v[strcspn(v, "\n")] = '\0';
                if (line[0] == 'm') snprintf(d->name, sizeof d->name, "%s", v);
                else snprintf(d->vendor, sizeof d->vendor, "%s", v);
            }
            if (d->name[0] != 'h' && d->vendor[0]) break;
        }
        fclose(f);
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) d->global_mem = (uint64_t)pages * (uint64_t)page;
}

static void cpu_destroy(qk_backend *be)
{
    free(be);
}

static qk_status cpu_device_info(qk_backend *be, qk_device_info *out)
{
    cpu_device(out);
    return QK_OK;
}

static qk_status cpu_buffer_alloc(qk_backend *be, size_t bytes, void **handle)
{
    /* 64-byte alignment: any element type, and whole cache lines. */
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = rounded >= bytes ? aligned_alloc(64, rounded) : NULL;
    if (!p) return qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cpu: cannot allocate a %zu-byte buffer", bytes);
    *handle = p;
    return QK_OK;
}

static qk_status cpu_buffer_wrap(qk_backend *be, void *native, size_t bytes, void **handle)
{
    *handle = native;
    return QK_OK;
}

static void cpu_buffer_free(qk_backend *be, void *handle, int owned)
{
    if (owned) free(handle);
}

static qk_status cpu_buffer_write(qk_backend *be, void *handle, size_t offset, const void *src, size_t bytes)
{
    memcpy((char *)handle + offset, src, bytes);
    return QK_OK;
}

static qk_status cpu_buffer_read(qk_backend *be, void *handle, size_t offset, void *dst, size_t bytes)
{
    memcpy(dst, (const char *)handle + offset, bytes);
    return QK_OK;
}

static qk_status cpu_buffer_copy(qk_backend *be, void *dst, size_t dst_offset, void *src, size_t src_offset,
                                size_t bytes)
{
    memcpy((char *)dst + dst_offset, (const char *)src + src_offset, bytes);
    return QK_OK;
}

/* ---- min/max ------------------------------------------------------------------ */

static qk_status cpu_minmax(qk_backend *be, const qk_tensor *x, qk_minmax_result *out)
{
    const void *p = tensor_ptr(x);
    uint64_t kmin = UINT64_MAX, kmax = 0;
    int64_t finite = 0, bad = 0, first = -1;
    for (int64_t i = 0; i < x->n; i++) {
        double v = x->dtype == QK_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
        if (!isfinite(v)) {
            if (bad++ == 0) first = i;
            continue;
        }
        uint64_t k = qk_key_f64(v); /* float32 -> double keeps the order, -0 included */
        if (k < kmin) kmin = k;
        if (k > kmax) kmax = k;
        finite++;
    }
    memset(out, 0, sizeof *out);
    out->n_finite = finite;
    out->nonfinite_count = bad;
    out->first_nonfinite = first;
    if (finite) {
        out->min = qk_unkey_f64(kmin);
        out->max = qk_unkey_f64(kmax);
        out->absmax = fmax(fabs(out->min), fabs(out->max));
    }
    return QK_OK;
}

/* ---- order statistics ----------------------------------------------------------- */

static qk_status cpu_select(qk_backend *be, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                            double *values)
{
    int skip = (flags & QK_IGNORE_NONFINITE) != 0, absval = (flags & QK_ABS) != 0;
    int64_t m = 0;
    if (x->dtype == QK_F32) {
        const float *p = tensor_ptr(x);
        uint32_t *keys = malloc((size_t)x->n * sizeof *keys);
        if (!keys) return qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cpu: no memory for %lld keys", (long long)x->n);
        for (int64_t i = 0; i < x->n; i++) {
            float v = p[i];
            if (skip && !isfinite(v)) continue;
            keys[m++] = qk_key_f32(absval ? fabsf(v) : v);
        }
        if (nranks && ranks[nranks - 1] >= m) {
            free(keys);
            return qk_set_error(be->ctx, QK_ERR_INVALID_ARG, "cpu: rank %lld of %lld keys",
                                (long long)ranks[nranks - 1], (long long)m);
        }
        qk_cpu_select_u32(keys, m, ranks, nranks);
        for (size_t j = 0; j < nranks; j++) values[j] = (double)qk_unkey_f32(keys[ranks[j]]);
        free(keys);
    } else {
        const double *p = tensor_ptr(x);
        uint64_t *keys = malloc((size_t)x->n * sizeof *keys);
        if (!keys) return qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cpu: no memory for %lld keys", (long long)x->n);
        for (int64_t i = 0; i < x->n; i++) {
            double v = p[i];
            if (skip && !isfinite(v)) continue;
            keys[m++] = qk_key_f64(absval ? fabs(v) : v);
        }
        if (nranks && ranks[nranks - 1] >= m) {
            free(keys);
            return qk_set_error(be->ctx, QK_ERR_INVALID_ARG, "cpu: rank %lld of %lld keys",
                                (long long)ranks[nranks - 1], (long long)m);
        }
        qk_cpu_select_u64(keys, m, ranks, nranks);
        for (size_t j = 0; j < nranks; j++) values[j] = qk_unkey_f64(keys[ranks[j]]);
        free(keys);
    }
    return QK_OK;
}

/* ---- quantize / dequantize ------------------------------------------------------- */

static int32_t quant_at(const qk_tensor *x, const void *p, int64_t i, const qk_qparams *q)
{
    if (x->dtype == QK_F32) return qk_quant_f32(((const float *)p)[i], q->scale, q->zero_point, q->qmin, q->qmax);
    return qk_quant_f64(((const double *)p)[i], q->scale, q->zero_point, q->qmin, q->qmax);
}

static qk_status cpu_quantize(qk_backend *be, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes)
{
    const void *p = tensor_ptr(x);
    void *c = tensor_ptr(codes);
    for (int64_t i = 0; i < x->n; i++) {
        int32_t q = quant_at(x, p, i, params);
        switch (codes->dtype) {
        case QK_U8: ((uint8_t *)c)[i] = (uint8_t)q; break;
        case QK_I8: ((int8_t *)c)[i] = (int8_t)q; break;
        case QK_U16: ((uint16_t *)c)[i] = (uint16_t)q; break;
        case QK_I16: ((int16_t *)c)[i] = (int16_t)q; break;
        default: ((int32_t *)c)[i] = q; break;
        }
    }
    return QK_OK;
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

static qk_status cpu_dequantize(qk_backend *be, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out)
{
    const void *c = tensor_ptr(codes);
    float *o = tensor_ptr(out);
    for (int64_t i = 0; i < codes->n; i++) o[i] = qk_dequant(code_at(codes->dtype, c, i), params->scale,
                                                             params->zero_point);
    return QK_OK;
}

/* ---- fused error ------------------------------------------------------------------ */

static double value_at(const qk_tensor *x, const void *p, int64_t i)
{
    return x->dtype == QK_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static qk_status cpu_error(qk_backend *be, const qk_tensor *x, const qk_qparams *params, size_t k, double fence_lo,
                           double fence_hi, qk_error_sums *sums, qk_error_counts *counts)
{
    const void *p = tensor_ptr(x);
    memset(sums, 0, k * sizeof *sums);
    memset(counts, 0, sizeof *counts);
    counts->first_nonfinite = -1;
    for (int64_t b0 = 0; b0 < x->n; b0 += QK_CPU_BLOCK) {
        int64_t b1 = x->n - b0 < QK_CPU_BLOCK ? x->n : b0 + QK_CPU_BLOCK;
        for (int64_t i = b0; i < b1; i++) {
            double v = value_at(x, p, i);
            if (!isfinite(v)) {
                if (counts->nonfinite_count++ == 0) counts->first_nonfinite = i;
                continue;
            }
            counts->n_finite++;
            counts->n_inliers += v >= fence_lo && v <= fence_hi;
        }
        for (size_t c = 0; c < k; c++) {
            const qk_qparams *q = &params[c];
            double sse = 0.0, sse_in = 0.0;
            int64_t clipped = 0;
            for (int64_t i = b0; i < b1; i++) {
                double v = value_at(x, p, i);
                if (!isfinite(v)) continue;
                double e = v - (double)qk_dequant(quant_at(x, p, i, q), q->scale, q->zero_point);
                sse += e * e;
                if (v >= fence_lo && v <= fence_hi) sse_in += e * e;
                clipped += v < q->clip_lo || v > q->clip_hi;
            }
            sums[c].sse += sse;
            sums[c].sse_inliers += sse_in;
            sums[c].clipped += clipped;
        }
    }
    return QK_OK;
}

static const qk_backend_iface cpu_iface = {
    .destroy = cpu_destroy,
    .device_info = cpu_device_info,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_wrap = cpu_buffer_wrap,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .buffer_copy = cpu_buffer_copy,
    .minmax = cpu_minmax,
    .select = cpu_select,
    .quantize = cpu_quantize,
    .dequantize = cpu_dequantize,
    .error = cpu_error,
    .ggml_dequantize = qk_cpu_ggml_dequantize,
    .ggml_quantize_checked = qk_cpu_ggml_quantize,
};

qk_status qk_cpu_backend_create(qk_context *ctx, int device, qk_backend **out)
{
    if (device != 0) {
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "cpu: device %d does not exist (the CPU backend has device 0)",
                            device);
    }
    qk_backend *be = calloc(1, sizeof *be);
    if (!be) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "cpu: out of host memory");
    be->iface = &cpu_iface;
    be->ctx = ctx;
    *out = be;
    return QK_OK;
}

void qk_cpu_backend_query(qk_backend_info *out)
{
    out->compiled = 1;
    out->available = 1;
    out->n_devices = 1;
    cpu_device(&out->devices[0]);
}
