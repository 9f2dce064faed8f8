/* ggml block formats on the CPU: the shared block functions
 * (kernels/common/ggml_blocks.h) run block after block. */
#include "cpu_ggml.h"

#include "../../kernels/common/ggml_blocks.h"
#include "../internal.h"

typedef void (*qkg_quant_fn)(const float *x, qkg_u8 *y);
typedef void (*qkg_dequant_fn)(const qkg_u8 *y, float *x);

typedef struct qkg_kind {
    int type;
    int elems;
    int bytes;
    qkg_quant_fn quant;
    qkg_dequant_fn dequant;
} qkg_kind;

static const qkg_kind k_kinds[] = {
    {QKG_Q4_0, QKG_QK, QKG_BYTES_Q4_0, qkg_quantize_q4_0, qkg_dequantize_q4_0},
    {QKG_Q4_1, QKG_QK, QKG_BYTES_Q4_1, qkg_quantize_q4_1, qkg_dequantize_q4_1},
    {QKG_Q5_0, QKG_QK, QKG_BYTES_Q5_0, qkg_quantize_q5_0, qkg_dequantize_q5_0},
    {QKG_Q5_1, QKG_QK, QKG_BYTES_Q5_1, qkg_quantize_q5_1, qkg_dequantize_q5_1},
    {QKG_Q8_0, QKG_QK, QKG_BYTES_Q8_0, qkg_quantize_q8_0, qkg_dequantize_q8_0},
    {QKG_Q2_K, QKG_QK_K, QKG_BYTES_Q2_K, qkg_quantize_q2_k, qkg_dequantize_q2_k},
    {QKG_Q3_K, QKG_QK_K, QKG_BYTES_Q3_K, qkg_quantize_q3_k, qkg_dequantize_q3_k},
    {QKG_Q4_K, QKG_QK_K, QKG_BYTES_Q4_K, qkg_quantize_q4_k, qkg_dequantize_q4_k},
    {QKG_Q5_K, QKG_QK_K, QKG_BYTES_Q5_K, qkg_quantize_q5_k, qkg_dequantize_q5_k},
    {QKG_Q6_K, QKG_QK_K, QKG_BYTES_Q6_K, qkg_quantize_q6_k, qkg_dequantize_q6_k},
};

static const qkg_kind *find_kind(int type)
{
    for (size_t i = 0; i < sizeof k_kinds / sizeof k_kinds[0]; i++)
        if (k_kinds[i].type == type)
            return &k_kinds[i];
    return NULL;
}

static void *tensor_ptr(const qk_tensor *t)
{
    return t->host ? t->host : (char *)t->buffer->handle + t->offset;
}

/* Nonzero when any of x[0..n) is NaN or infinite (all exponent bits set). */
static int any_nonfinite(const float *x, int n)
{
    qkg_u32 bad = 0;
    for (int i = 0; i < n; i++)
        bad |= (qkg_f2u(x[i]) & 0x7f800000u) == 0x7f800000u;
    return bad != 0;
}

/* F32/F16/BF16 pass through (any value); the block types block by block, the
 * finiteness check done while the block is in cache: one pass over x. */
qk_status qk_cpu_ggml_quantize(qk_backend *be, const qk_tensor *x, int type, qk_tensor *out, int *nonfinite)
{
    const float *src = tensor_ptr(x);
    qkg_u8 *dst = tensor_ptr(out);
    int64_t n = x->n;
    *nonfinite = 0;
    if (type == QKG_F32) {
        memcpy(dst, src, (size_t)n * 4);
        return QK_OK;
    }
    if (type == QKG_F16 || type == QKG_BF16) {
        for (int64_t i = 0; i < n; i++) {
            qkg_u16 h = type == QKG_F16 ? qkg_f32_to_f16(src[i]) : qkg_f32_to_bf16(src[i]);
            dst[2 * i] = (qkg_u8)(h & 0xff);
            dst[2 * i + 1] = (qkg_u8)(h >> 8);
        }
        return QK_OK;
    }
    const qkg_kind *k = find_kind(type);
    if (!k)
        return qk_set_error(be->ctx, QK_ERR_UNSUPPORTED, "cpu: ggml type %d is not supported", type);
    int bad = 0;
    for (int64_t b = 0; b < n / k->elems; b++) {
        bad |= any_nonfinite(src + b * k->elems, k->elems);
        k->quant(src + b * k->elems, dst + b * k->bytes);
    }
    *nonfinite = bad;
    return QK_OK;
}

qk_status qk_cpu_ggml_dequantize(qk_backend *be, const qk_tensor *in, int type, qk_tensor *out)
{
    const qkg_u8 *src = tensor_ptr(in);
    float *dst = tensor_ptr(out);
    int64_t n = out->n;
    if (type == QKG_F32) {
        memcpy(dst, src, (size_t)n * 4);
        return QK_OK;
    }
    if (type == QKG_F16 || type == QKG_BF16) {
        for (int64_t i = 0; i < n; i++) {
            qkg_u16 h = (qkg_u16)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = type == QKG_F16 ? qkg_f16_to_f32(h) : qkg_bf16_to_f32(h);
        }
        return QK_OK;
    }
    const qkg_kind *k = find_kind(type);
    if (!k)
        return qk_set_error(be->ctx, QK_ERR_UNSUPPORTED, "cpu: ggml type %d is not supported", type);
    for (int64_t b = 0; b < n / k->elems; b++)
        k->dequant(src + b * k->bytes, dst + b * k->elems);
    return QK_OK;
}
