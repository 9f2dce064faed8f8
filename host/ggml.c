/* The ggml block formats' entry points (qk_ggml_*): argument checks, the
 * finiteness check, and the staging of host tensors through device memory in
 * pieces of whole blocks for the GPU backends. Blocks are independent, so the
 * bytes do not depend on how the tensor is cut. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

typedef struct ggml_type_row {
    qk_ggml_type type;
    const char *name;
    int64_t elems;
    size_t bytes;
} ggml_type_row;

static const ggml_type_row k_types[] = {
    {QK_GGML_F32, "f32", 1, 4},          {QK_GGML_F16, "f16", 1, 2},        {QK_GGML_BF16, "bf16", 1, 2},
    {QK_GGML_Q4_0, "q4_0", 32, 18},      {QK_GGML_Q4_1, "q4_1", 32, 20},    {QK_GGML_Q5_0, "q5_0", 32, 22},
    {QK_GGML_Q5_1, "q5_1", 32, 24},      {QK_GGML_Q8_0, "q8_0", 32, 34},    {QK_GGML_Q2_K, "q2_K", 256, 84},
    {QK_GGML_Q3_K, "q3_K", 256, 110},    {QK_GGML_Q4_K, "q4_K", 256, 144},  {QK_GGML_Q5_K, "q5_K", 256, 176},
    {QK_GGML_Q6_K, "q6_K", 256, 210},
};

static const ggml_type_row *find_type(qk_ggml_type type)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].type == type)
            return &k_types[i];
    return NULL;
}

qk_status qk_ggml_type_info(qk_ggml_type type, const char **name, int64_t *block_elems, size_t *block_bytes)
{
    const ggml_type_row *r = find_type(type);
    if (!r)
        return QK_ERR_INVALID_ARG;
    if (name)
        *name = r->name;
    if (block_elems)
        *block_elems = r->elems;
    if (block_bytes)
        *block_bytes = r->bytes;
    return QK_OK;
}

qk_status qk_ggml_type_parse(const char *name, qk_ggml_type *out)
{
    if (!name || !out)
        return QK_ERR_INVALID_ARG;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
        if (strcasecmp(name, k_types[i].name) == 0) {
            *out = k_types[i].type;
            return QK_OK;
        }
    }
    return QK_ERR_INVALID_ARG;
}

qk_status qk_ggml_size(qk_ggml_type type, int64_t n, size_t *bytes)
{
    const ggml_type_row *r = find_type(type);
    if (!r || !bytes || n < 0 || n % r->elems != 0 || (uint64_t)(n / r->elems) > SIZE_MAX / r->bytes)
        return QK_ERR_INVALID_ARG;
    *bytes = (size_t)(n / r->elems) * r->bytes;
    return QK_OK;
}

/* Common checks: f (F32, the float side) has n elements, a multiple of the
 * block; b (U8, the block side) has exactly their bytes. */
static qk_status check_args(qk_context *ctx, const char *fn, const qk_tensor *f, const qk_tensor *b,
                            qk_ggml_type type, const ggml_type_row **row)
{
    char what[96];
    snprintf(what, sizeof what, "%s: %s", fn, "the float tensor");
    qk_status st = qk_check_tensor(ctx, f, what);
    snprintf(what, sizeof what, "%s: %s", fn, "the block tensor");
    if (st == QK_OK)
        st = qk_check_tensor(ctx, b, what);
    if (st != QK_OK)
        return st;
    const ggml_type_row *r = find_type(type);
    if (!r)
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: unknown or unsupported ggml type %d", fn, (int)type);
    if (f->dtype != QK_F32)
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: the float tensor must be float32, not %s", fn,
                            qk_dtype_name(f->dtype));
    if (b->dtype != QK_U8)
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: the block tensor must be U8 (bytes), not %s", fn,
                            qk_dtype_name(b->dtype));
    if (f->n % r->elems != 0)
        return qk_set_error(ctx, QK_ERR_INVALID_ARG, "%s: %lld elements are not a whole number of %s blocks of %lld",
                            fn, (long long)f->n, r->name, (long long)r->elems);
    size_t bytes;
    if (qk_ggml_size(type, f->n, &bytes) != QK_OK || (uint64_t)b->n != (uint64_t)bytes)
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "%s: %lld elements of %s take %zu bytes, the block tensor has %lld", fn,
                            (long long)f->n, r->name, bytes, (long long)b->n);
    if ((!ctx->backend->iface->ggml_quantize && !ctx->backend->iface->ggml_quantize_checked) ||
        !ctx->backend->iface->ggml_dequantize)
        return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "%s: the %s backend has no ggml block formats", fn,
                            qk_backend_name(ctx->kind));
    *row = r;
    return QK_OK;
}

/* Zero bytes over a tensor (the output of a refused quantization): host
 * memory directly, a device buffer through a zeroed host block. */
static void zero_tensor(qk_context *ctx, const qk_tensor *t)
{
    size_t bytes = (size_t)t->n * qk_dtype_size(t->dtype);
    if (t->host) {
        memset(t->host, 0, bytes);
        return;
    }
    static const unsigned char zeros[1 << 16];
    for (size_t at = 0; at < bytes; at += sizeof zeros) {
        size_t len = bytes - at < sizeof zeros ? bytes - at : sizeof zeros;
        if (qk_buffer_write(ctx, t->buffer, (size_t)t->offset + at, zeros, len) != QK_OK)
            return;
    }
}

/* One call of the backend: quantize (with the finiteness check folded in
 * where the backend has it; *bad set when it found a non-finite value) or
 * dequantize. */
static qk_status call(qk_context *ctx, int quantize, qk_tensor *f, qk_tensor *b, qk_ggml_type type, int *bad)
{
    const qk_backend_iface *fn = ctx->backend->iface;
    if (!quantize)
        return fn->ggml_dequantize(ctx->backend, b, (int)type, f);
    if (fn->ggml_quantize_checked) {
        int nf = 0;
        qk_status st = fn->ggml_quantize_checked(ctx->backend, f, (int)type, b, &nf);
        *bad |= nf;
        return st;
    }
    return fn->ggml_quantize(ctx->backend, f, (int)type, b);
}

/* Run the backend on host or device tensors in pieces of whole blocks: the
 * CPU backend, device tensors, and host tensors that the backend takes
 * directly (ggml_host: zero copy) go as they are, in pieces of at most 2^28
 * elements; other host data is staged through device buffers in pieces of at
 * most 64 MiB of floats, within the device budget. */
static qk_status run(qk_context *ctx, int quantize, const qk_tensor *f, const qk_tensor *b, qk_ggml_type type,
                     const ggml_type_row *r, int *bad)
{
    qk_backend *be = ctx->backend;
    int64_t blocks = f->n / r->elems;
    int direct = ctx->kind == QK_BACKEND_CPU || (!f->host && !b->host);
    int64_t piece = blocks;
    if (!direct && be->iface->ggml_host) {
        piece = ((int64_t)1 << 28) / r->elems;
        int64_t nb = blocks < piece ? blocks : piece;
        direct = be->iface->ggml_host(be, (uint64_t)nb * (uint64_t)r->elems * 4);
    }
    if (!direct) {
        uint64_t per_block = (uint64_t)r->elems * 4 + r->bytes;
        uint64_t budget = qk_device_budget(ctx);
        if (budget > ((uint64_t)64 << 20))
            budget = (uint64_t)64 << 20;
        piece = (int64_t)(budget / per_block);
    }
    if (piece < 1)
        piece = 1;
    qk_status st = QK_OK;
    for (int64_t first = 0; first < blocks && st == QK_OK; first += piece) {
        int64_t nb = blocks - first < piece ? blocks - first : piece;
        qk_tensor fv = qk_tensor_range(f, first * r->elems, nb * r->elems);
        qk_tensor bv = qk_tensor_range(b, first * (int64_t)r->bytes, nb * (int64_t)r->bytes);
        if (direct) {
            st = call(ctx, quantize, &fv, &bv, type, bad);
            continue;
        }
        qk_tensor fd, bd;
        qk_buffer *fbuf = NULL, *bbuf = NULL;
        st = qk_device_copy(ctx, &fv, quantize, &fd, &fbuf);
        if (st == QK_OK)
            st = qk_device_copy(ctx, &bv, !quantize, &bd, &bbuf);
        if (st == QK_OK)
            st = call(ctx, quantize, &fd, &bd, type, bad);
        if (st == QK_OK && quantize && bbuf)
            st = qk_buffer_read(ctx, bbuf, 0, bv.host, (size_t)bv.n);
        if (st == QK_OK && !quantize && fbuf)
            st = qk_buffer_read(ctx, fbuf, 0, fv.host, (size_t)fv.n * 4);
        qk_buffer_destroy(ctx, fbuf);
        qk_buffer_destroy(ctx, bbuf);
    }
    return st;
}

qk_status qk_ggml_quantize(qk_context *ctx, const qk_tensor *x, qk_ggml_type type, qk_tensor *out)
{
    if (!ctx)
        return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    const ggml_type_row *r = NULL;
    qk_status st = check_args(ctx, "qk_ggml_quantize", x, out, type, &r);
    if (st != QK_OK)
        return st;
    /* ggml converts NaN/Inf to integers, which C leaves undefined: refused, and
     * the output left all zero bytes. The check is folded into the quantizing
     * pass where the backend can (ggml_quantize_checked); a separate pass
     * otherwise, and to count and locate the values for the message. */
    int checked = ctx->backend->iface->ggml_quantize_checked != NULL, bad = 0;
    qk_minmax_result mm;
    if (r->elems > 1 && !checked) {
        st = qk_minmax(ctx, x, 0, &mm);
        if (st == QK_ERR_NONFINITE) {
            zero_tensor(ctx, out);
            return qk_fail_nonfinite(ctx, "qk_ggml_quantize: x", mm.nonfinite_count, mm.first_nonfinite);
        }
        if (st != QK_OK)
            return st;
    }
    st = run(ctx, 1, x, out, type, r, &bad);
    if (st == QK_OK && bad && r->elems > 1) {
        zero_tensor(ctx, out);
        st = qk_minmax(ctx, x, 0, &mm);
        if (st == QK_ERR_NONFINITE)
            return qk_fail_nonfinite(ctx, "qk_ggml_quantize: x", mm.nonfinite_count, mm.first_nonfinite);
        return st == QK_OK ? qk_set_error(ctx, QK_ERR_BACKEND, "qk_ggml_quantize: the backend saw a non-finite "
                                                                "value that the finiteness check did not")
                           : st;
    }
    return st;
}

qk_status qk_ggml_dequantize(qk_context *ctx, const qk_tensor *in, qk_ggml_type type, qk_tensor *out)
{
    if (!ctx)
        return QK_ERR_INVALID_ARG;
    qk_clear_error(ctx);
    const ggml_type_row *r = NULL;
    qk_status st = check_args(ctx, "qk_ggml_dequantize", out, in, type, &r);
    if (st != QK_OK)
        return st;
    int bad = 0;
    return run(ctx, 0, out, in, type, r, &bad);
}
