/* ggml's block formats: the block functions of kernels/common/ggml_blocks.h
 * (embedded just before this file) run one work-item per block, each block's
 * floats and bytes copied to private memory first so the shared functions see
 * plain pointers. Each work-item takes a contiguous run of blocks (one block
 * when the launch covers them all), so any launch size covers any count and a
 * CPU device's work-items stream through memory. Offsets: x and out in their
 * element units, blocks in bytes. */

/* [*b, *e): this work-item's run of n blocks. */
inline void qk_ggml_run(ulong n, ulong *b, ulong *e)
{
    ulong items = get_global_size(0), per = (n + items - 1) / items, lo = per * get_global_id(0);
    *b = lo < n ? lo : n;
    *e = lo + per < n ? lo + per : n;
}

#define QK_GGML_KERNELS(NAME, ELEMS, BYTES)                                                                    \
    __kernel void qk_ggml_quantize_##NAME(__global const float *restrict x, ulong xoff,                      \
                                          __global uchar *restrict y, ulong yoff, ulong nblocks)             \
    {                                                                                                          \
        float xb[ELEMS];                                                                                       \
        qkg_u8 yb[BYTES];                                                                                      \
        ulong b, e;                                                                                            \
        qk_ggml_run(nblocks, &b, &e);                                                                          \
        for (; b < e; b++) {                                                                                   \
            __global const float *src = x + xoff + b * ELEMS;                                                  \
            for (int i = 0; i < ELEMS; i++)                                                                    \
                xb[i] = src[i];                                                                                \
            qkg_quantize_##NAME(xb, yb);                                                                       \
            __global uchar *dst = y + yoff + b * BYTES;                                                        \
            for (int i = 0; i < BYTES; i++)                                                                    \
                dst[i] = yb[i];                                                                                \
        }                                                                                                      \
    }                                                                                                          \
    __kernel void qk_ggml_dequantize_##NAME(__global const uchar *restrict y, ulong yoff,                    \
                                            __global float *restrict x, ulong xoff, ulong nblocks)           \
    {                                                                                                          \
        float xb[ELEMS];                                                                                       \
        qkg_u8 yb[BYTES];                                                                                      \
        ulong b, e;                                                                                            \
        qk_ggml_run(nblocks, &b, &e);                                                                          \
        for (; b < e; b++) {                                                                                   \
            __global const uchar *src = y + yoff + b * BYTES;                                                  \
            for (int i = 0; i < BYTES; i++)                                                                    \
                yb[i] = src[i];                                                                                \
            qkg_dequantize_##NAME(yb, xb);                                                                     \
            __global float *dst = x + xoff + b * ELEMS;                                                        \
            for (int i = 0; i < ELEMS; i++)                                                                    \
                dst[i] = xb[i];                                                                                \
        }                                                                                                      \
    }

QK_GGML_KERNELS(q4_0, QKG_QK, QKG_BYTES_Q4_0)
QK_GGML_KERNELS(q4_1, QKG_QK, QKG_BYTES_Q4_1)
QK_GGML_KERNELS(q5_0, QKG_QK, QKG_BYTES_Q5_0)
QK_GGML_KERNELS(q5_1, QKG_QK, QKG_BYTES_Q5_1)
QK_GGML_KERNELS(q8_0, QKG_QK, QKG_BYTES_Q8_0)
QK_GGML_KERNELS(q2_k, QKG_QK_K, QKG_BYTES_Q2_K)
QK_GGML_KERNELS(q3_k, QKG_QK_K, QKG_BYTES_Q3_K)
QK_GGML_KERNELS(q4_k, QKG_QK_K, QKG_BYTES_Q4_K)
QK_GGML_KERNELS(q5_k, QKG_QK_K, QKG_BYTES_Q5_K)
QK_GGML_KERNELS(q6_k, QKG_QK_K, QKG_BYTES_Q6_K)

/* F32 -> F16 / BF16 / F32 (kind 1, 2, 0), two or four little-endian bytes an
 * element at any byte offset. */
__kernel void qk_ggml_from_f32(__global const float *restrict x, ulong xoff, __global uchar *restrict y, ulong yoff,
                               ulong n, int kind)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) {
        float v = x[xoff + i];
        if (kind == 0) {
            uint u = as_uint(v);
            for (int k = 0; k < 4; k++)
                y[yoff + 4 * i + k] = (uchar)(u >> (8 * k));
        } else {
            qkg_u16 h = kind == 1 ? qkg_f32_to_f16(v) : qkg_f32_to_bf16(v);
            y[yoff + 2 * i] = (uchar)(h & 0xffu);
            y[yoff + 2 * i + 1] = (uchar)(h >> 8);
        }
    }
}

__kernel void qk_ggml_to_f32(__global const uchar *restrict y, ulong yoff, __global float *restrict x, ulong xoff,
                             ulong n, int kind)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) {
        if (kind == 0) {
            uint u = 0;
            for (int k = 0; k < 4; k++)
                u |= (uint)y[yoff + 4 * i + k] << (8 * k);
            x[xoff + i] = as_float(u);
        } else {
            qkg_u16 h = (qkg_u16)(y[yoff + 2 * i] | (y[yoff + 2 * i + 1] << 8));
            x[xoff + i] = kind == 1 ? qkg_f16_to_f32(h) : qkg_bf16_to_f32(h);
        }
    }
}
