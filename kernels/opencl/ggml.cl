/* ggml's block formats: the block functions of kernels/common/ggml_blocks.h
 * (embedded just before this file) run one work-item per block, each block's
 * floats and bytes copied to private memory first so the shared functions see
 * plain pointers; the 32-element types have vector kernels of their own
 * (below), the same operations lane by lane. Each work-item takes a contiguous run of
 * blocks (one block when the launch covers them all), so any launch size
 * covers any count and a CPU device's work-items stream through memory.
 * Offsets: x and out in their element units, blocks in bytes.
 *
 * Quantize kernels check finiteness in the same pass: a work-item that met a
 * NaN or an infinity sets *bad (atomic_or; *bad starts at 0). The bytes it
 * wrote for such blocks are meaningless; the host zeroes the output then. */

/* [*b, *e): this work-item's run of n blocks. */
inline void qk_ggml_run(ulong n, ulong *b, ulong *e)
{
    ulong items = get_global_size(0), per = (n + items - 1) / items, lo = per * get_global_id(0);
    *b = lo < n ? lo : n;
    *e = lo + per < n ? lo + per : n;
}

/* The lanes that are NaN or infinite (all exponent bits set), as -1. Kernels
 * OR these into a vector across their blocks and reduce it once at the end
 * (any() per block costs PoCL more than the rest of a Q4_0 block). */
inline int16 qk_ggml_bad16(float16 v)
{
    return as_int16((as_uint16(v) & (uint16)(0x7f800000u)) == (uint16)(0x7f800000u));
}

/* qkg_cvt lane by lane: truncation, INT32_MIN for NaN and values outside int32
 * (the conversion itself only sees values in range). */
inline int16 qk_ggml_cvt16(float16 f)
{
    int16 ok = (f >= (float16)(-2147483648.0f)) & (f < (float16)(2147483648.0f));
    return select((int16)(-2147483647 - 1), convert_int16_rtz(select((float16)(0.0f), f, ok)), ok);
}

/* qk_ggml_cvt16 where the caller knows every lane is finite and well inside
 * int32 (bounded: the block's finite reciprocal scale bounds them): the plain
 * conversion, the same values. */
inline int16 qk_ggml_cvt16b(float16 f, int bounded)
{
    if (bounded)
        return convert_int16_rtz(f);
    return qk_ggml_cvt16(f);
}

/* (qkg_i8)v: the low byte, sign-extended. */
inline int16 qk_ggml_sext8(int16 v)
{
    return ((v & 0xff) ^ 0x80) - 0x80;
}

/* The largest lane. */
inline float qk_ggml_fmax16(float16 m)
{
    float8 a = fmax(m.lo, m.hi);
    float4 b = fmax(a.lo, a.hi);
    float2 c = fmax(b.lo, b.hi);
    return fmax(c.x, c.y);
}

inline int qk_ggml_imin16(int16 m)
{
    int8 a = min(m.lo, m.hi);
    int4 b = min(a.lo, a.hi);
    int2 c = min(b.lo, b.hi);
    return min(c.x, c.y);
}

inline int qk_ggml_ior16(int16 m)
{
    int8 a = m.lo | m.hi;
    int4 b = a.lo | a.hi;
    int2 c = b.lo | b.hi;
    return c.x | c.y;
}

inline float qk_ggml_fmin16(float16 m)
{
    float8 a = fmin(m.lo, m.hi);
    float4 b = fmin(a.lo, a.hi);
    float2 c = fmin(b.lo, b.hi);
    return fmin(c.x, c.y);
}

/* val (a value some lane of v0:v1 equals) with the sign of the first such
 * lane in index order: what a scalar loop that keeps the first of equal values
 * ends with; only +0 and -0 are equal with different signs. */
inline float qk_ggml_first_equal(float16 v0, float16 v1, float val)
{
    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int16 s0 = signbit(v0), s1 = signbit(v1);
    const int16 e0 = v0 == (float16)(val), e1 = v1 == (float16)(val);
    const int first_neg = qk_ggml_imin16(min(select((int16)(64), lane, e0 & s0), select((int16)(64), lane + 16, e1 & s1)));
    const int first_pos = qk_ggml_imin16(min(select((int16)(64), lane, e0 & ~s0), select((int16)(64), lane + 16, e1 & ~s1)));
    return first_neg < first_pos ? -fabs(val) : fabs(val);
}

/* The fifth bits (0x10) of the levels q0 (elements 0..15) and q1 (16..31) as
 * Q5_0/Q5_1's qh, little-endian at p. */
inline void qk_ggml_put_qh(__global uchar *p, int16 q0, int16 q1)
{
    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const uint qh = (uint)qk_ggml_ior16(((q0 & 0x10) >> 4) << lane) | ((uint)qk_ggml_ior16(((q1 & 0x10) >> 4) << lane) << 16);
    vstore4((uchar4)((uchar)(qh & 0xffu), (uchar)((qh >> 8) & 0xffu), (uchar)((qh >> 16) & 0xffu), (uchar)(qh >> 24)), 0, p);
}

/* The first element (index order) of the largest magnitude among 16 lanes:
 * pairs of neighbours (.even earlier than .odd) combined level by level, the
 * earlier one kept on equal magnitudes, so every lane of every level holds the
 * first largest of a contiguous run. */
inline float qk_ggml_first_absmax16(float16 v)
{
    float8 a = select(v.odd, v.even, fabs(v.even) >= fabs(v.odd));
    float4 b = select(a.odd, a.even, fabs(a.even) >= fabs(a.odd));
    float2 c = select(b.odd, b.even, fabs(b.even) >= fabs(b.odd));
    return fabs(c.x) >= fabs(c.y) ? c.x : c.y;
}

/* Q4_0/Q5_0's max: the first element (index order) of the largest |x| of a
 * block, +0 when that is 0 (the scalar loop never updates max then). */
inline float qk_ggml_signed_amax(float16 v0, float16 v1)
{
    const float a = qk_ggml_first_absmax16(v0), b = qk_ggml_first_absmax16(v1);
    const float m = fabs(a) >= fabs(b) ? a : b;
    return m == 0.0f ? 0.0f : m;
}

inline void qk_ggml_put_f16(__global uchar *p, float f)
{
    qkg_u16 h = qkg_f32_to_f16(f);
    p[0] = (uchar)(h & 0xffu);
    p[1] = (uchar)(h >> 8);
}

inline float qk_ggml_get_f16(__global const uchar *p)
{
    return qkg_f16_to_f32((qkg_u16)(p[0] | (p[1] << 8)));
}

#define QK_GGML_QUANT_KERNEL(NAME, ELEMS, BYTES)                                                                       \
    __kernel void qk_ggml_quantize_##NAME(__global const float *restrict x, ulong xoff,                                \
                                          __global uchar *restrict y, ulong yoff, ulong nblocks,                       \
                                          __global int *bad)                                                           \
    {                                                                                                                  \
        float xb[ELEMS];                                                                                               \
        qkg_u8 yb[BYTES];                                                                                              \
        ulong b, e;                                                                                                    \
        int16 nonfinite = (int16)(0);                                                                                  \
        qk_ggml_run(nblocks, &b, &e);                                                                                  \
        for (; b < e; b++) {                                                                                           \
            __global const float *src = x + xoff + b * ELEMS;                                                          \
            for (int i = 0; i < ELEMS / 16; i++) {                                                                     \
                float16 v = vload16(i, src);                                                                           \
                nonfinite |= qk_ggml_bad16(v);                                                                         \
                vstore16(v, i, xb);                                                                                    \
            }                                                                                                          \
            qkg_quantize_##NAME(xb, yb);                                                                               \
            __global uchar *dst = y + yoff + b * BYTES;                                                                \
            for (int i = 0; i < BYTES; i++)                                                                            \
                dst[i] = yb[i];                                                                                        \
        }                                                                                                              \
        if (any(nonfinite))                                                                                            \
            atomic_or(bad, 1);                                                                                         \
    }

#define QK_GGML_DEQUANT_KERNEL(NAME, ELEMS, BYTES)                                                                     \
    __kernel void qk_ggml_dequantize_##NAME(__global const uchar *restrict y, ulong yoff,                              \
                                            __global float *restrict x, ulong xoff, ulong nblocks)                     \
    {                                                                                                                  \
        float xb[ELEMS];                                                                                               \
        qkg_u8 yb[BYTES];                                                                                              \
        ulong b, e;                                                                                                    \
        qk_ggml_run(nblocks, &b, &e);                                                                                  \
        for (; b < e; b++) {                                                                                           \
            __global const uchar *src = y + yoff + b * BYTES;                                                          \
            for (int i = 0; i < BYTES; i++)                                                                            \
                yb[i] = src[i];                                                                                        \
            qkg_dequantize_##NAME(yb, xb);                                                                             \
            __global float *dst = x + xoff + b * ELEMS;                                                                \
            for (int i = 0; i < ELEMS / 16; i++)                                                                       \
                vstore16(vload16(i, xb), i, dst);                                                                      \
        }                                                                                                              \
    }

#define QK_GGML_KERNELS(NAME, ELEMS, BYTES)                                                                            \
    QK_GGML_QUANT_KERNEL(NAME, ELEMS, BYTES)                                                                           \
    QK_GGML_DEQUANT_KERNEL(NAME, ELEMS, BYTES)

QK_GGML_KERNELS(q2_k, QKG_QK_K, QKG_BYTES_Q2_K)
QK_GGML_KERNELS(q3_k, QKG_QK_K, QKG_BYTES_Q3_K)
QK_GGML_QUANT_KERNEL(q4_k, QKG_QK_K, QKG_BYTES_Q4_K)
QK_GGML_QUANT_KERNEL(q5_k, QKG_QK_K, QKG_BYTES_Q5_K)
QK_GGML_KERNELS(q6_k, QKG_QK_K, QKG_BYTES_Q6_K)

/* Q4_K and Q5_K dequantization as qkg_dequantize_q4_k/_q5_k, 16 lanes at a
 * time: d1 * level - m1 per 32 elements, each sub-block's scale and min as
 * qkg_get_scale_min_k4 unpacks them. */
__kernel void qk_ggml_dequantize_q4_k(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q4_K;
        qkg_u8 sc12[12];
        for (int i = 0; i < 12; i++)
            sc12[i] = src[4 + i];
        const float d = qk_ggml_get_f16(src), min = qk_ggml_get_f16(src + 2);
        __global float *dst = x + xoff + b * QKG_QK_K;
        for (int j = 0; j < 4; j++) {
            qkg_u8 sc, m;
            qkg_get_scale_min_k4(2 * j, sc12, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            qkg_get_scale_min_k4(2 * j + 1, sc12, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            __global const uchar *q = src + 16 + 32 * j;
            const int16 qa = convert_int16(vload16(0, q)), qb = convert_int16(vload16(1, q));
            __global float *o = dst + 64 * j;
            vstore16(d1 * convert_float16(qa & 0x0f) - m1, 0, o);
            vstore16(d1 * convert_float16(qb & 0x0f) - m1, 1, o);
            vstore16(d2 * convert_float16(qa >> 4) - m2, 2, o);
            vstore16(d2 * convert_float16(qb >> 4) - m2, 3, o);
        }
    }
}

__kernel void qk_ggml_dequantize_q5_k(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q5_K;
        qkg_u8 sc12[12];
        for (int i = 0; i < 12; i++)
            sc12[i] = src[4 + i];
        const float d = qk_ggml_get_f16(src), min = qk_ggml_get_f16(src + 2);
        const int16 ha = convert_int16(vload16(0, src + 16)), hb = convert_int16(vload16(1, src + 16));
        __global float *dst = x + xoff + b * QKG_QK_K;
        for (int j = 0; j < 4; j++) {
            qkg_u8 sc, m;
            qkg_get_scale_min_k4(2 * j, sc12, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            qkg_get_scale_min_k4(2 * j + 1, sc12, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            const int u1 = 1 << (2 * j), u2 = 2 << (2 * j);
            __global const uchar *q = src + 48 + 32 * j;
            const int16 qa = convert_int16(vload16(0, q)), qb = convert_int16(vload16(1, q));
            __global float *o = dst + 64 * j;
            vstore16(d1 * convert_float16((qa & 0x0f) + select((int16)(0), (int16)(16), (ha & u1) != 0)) - m1, 0, o);
            vstore16(d1 * convert_float16((qb & 0x0f) + select((int16)(0), (int16)(16), (hb & u1) != 0)) - m1, 1, o);
            vstore16(d2 * convert_float16((qa >> 4) + select((int16)(0), (int16)(16), (ha & u2) != 0)) - m2, 2, o);
            vstore16(d2 * convert_float16((qb >> 4) + select((int16)(0), (int16)(16), (hb & u2) != 0)) - m2, 3, o);
        }
    }
}

/* Q8_0 as qkg_quantize_q8_0, 16 lanes at a time: amax (the largest |x|, in
 * any order: max is exact), d = amax / 127, id = 1 / d, then each element's
 * roundf(x * id) (qkg_round: half away from zero) converted as qkg_cvt and
 * narrowed modulo 2^8. */
__kernel void qk_ggml_quantize_q8_0(__global const float *restrict x, ulong xoff, __global uchar *restrict y,
                                    ulong yoff, ulong nblocks, __global int *bad)
{
    ulong b, e;
    int16 nonfinite = (int16)(0);
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const float *src = x + xoff + b * QKG_QK;
        float16 v0 = vload16(0, src), v1 = vload16(1, src);
        const int16 bad0 = qk_ggml_bad16(v0), bad1 = qk_ggml_bad16(v1);
        nonfinite |= bad0 | bad1;
        /* such a block's bytes are zeroed by the host: zeros keep its lanes finite */
        v0 = select(v0, (float16)(0.0f), bad0);
        v1 = select(v1, (float16)(0.0f), bad1);
        const float amax = qk_ggml_fmax16(fmax(fabs(v0), fabs(v1)));
        const float d = QK_DIV_float(amax, 127.0f);
        const float id = d != 0.0f ? QK_DIV_float(1.0f, d) : 0.0f;
        __global uchar *dst = y + yoff + b * QKG_BYTES_Q8_0;
        qk_ggml_put_f16(dst, d);
        float16 s0 = v0 * id, s1 = v1 * id;
        float16 t0 = trunc(s0), t1 = trunc(s1);
        s0 = select(t0, t0 + copysign((float16)(1.0f), s0), fabs(s0 - t0) >= (float16)(0.5f));
        s1 = select(t1, t1 + copysign((float16)(1.0f), s1), fabs(s1 - t1) >= (float16)(0.5f));
        const int bounded = isfinite(id);
        vstore16(convert_uchar16(qk_ggml_cvt16b(s0, bounded) & 0xff), 0, dst + 2);
        vstore16(convert_uchar16(qk_ggml_cvt16b(s1, bounded) & 0xff), 0, dst + 18);
    }
    if (any(nonfinite))
        atomic_or(bad, 1);
}

__kernel void qk_ggml_dequantize_q8_0(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q8_0;
        const float d = qk_ggml_get_f16(src);
        __global float *dst = x + xoff + b * QKG_QK;
        vstore16(convert_float16(as_char16(vload16(0, src + 2))) * d, 0, dst);
        vstore16(convert_float16(as_char16(vload16(0, src + 18))) * d, 1, dst);
    }
}

/* Q4_0 as qkg_quantize_q4_0: max is the first element (in index order) whose
 * |x| is amax, so it is +amax or -amax (0 when amax is 0) as that element's
 * sign says; d = max / -8, id = 1 / d; element j's nibble min(15, (i8)cvt(x *
 * id + 8.5)) low, element j + 16's high. */
__kernel void qk_ggml_quantize_q4_0(__global const float *restrict x, ulong xoff, __global uchar *restrict y,
                                    ulong yoff, ulong nblocks, __global int *bad)
{
    ulong b, e;
    int16 nonfinite = (int16)(0);
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const float *src = x + xoff + b * QKG_QK;
        float16 v0 = vload16(0, src), v1 = vload16(1, src);
        const int16 bad0 = qk_ggml_bad16(v0), bad1 = qk_ggml_bad16(v1);
        nonfinite |= bad0 | bad1;
        /* such a block's bytes are zeroed by the host: zeros keep its lanes finite */
        v0 = select(v0, (float16)(0.0f), bad0);
        v1 = select(v1, (float16)(0.0f), bad1);
        const float max = qk_ggml_signed_amax(v0, v1);
        const float d = QK_DIV_float(max, -8.0f);
        const float id = d != 0.0f ? QK_DIV_float(1.0f, d) : 0.0f;
        __global uchar *dst = y + yoff + b * QKG_BYTES_Q4_0;
        qk_ggml_put_f16(dst, d);
        const int bounded = isfinite(id);
        int16 q0 = min((int16)(15), qk_ggml_sext8(qk_ggml_cvt16b(v0 * id + (float16)(8.5f), bounded))) & 0xff;
        int16 q1 = min((int16)(15), qk_ggml_sext8(qk_ggml_cvt16b(v1 * id + (float16)(8.5f), bounded))) & 0xff;
        vstore16(convert_uchar16((q0 | (q1 << 4)) & 0xff), 0, dst + 2);
    }
    if (any(nonfinite))
        atomic_or(bad, 1);
}

__kernel void qk_ggml_dequantize_q4_0(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q4_0;
        const float d = qk_ggml_get_f16(src);
        const int16 q = convert_int16(vload16(0, src + 2));
        __global float *dst = x + xoff + b * QKG_QK;
        vstore16(convert_float16((q & 0x0f) - 8) * d, 0, dst);
        vstore16(convert_float16((q >> 4) - 8) * d, 1, dst);
    }
}
/* Q4_1 as qkg_quantize_q4_1: min and max (the first of equal values, so a
 * zero keeps the sign of the first zero), d = (max - min) / 15, id = 1 / d,
 * nibbles min(15, (i8)cvt((x - min) * id + 0.5)). */
__kernel void qk_ggml_quantize_q4_1(__global const float *restrict x, ulong xoff, __global uchar *restrict y,
                                    ulong yoff, ulong nblocks, __global int *bad)
{
    ulong b, e;
    int16 nonfinite = (int16)(0);
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const float *src = x + xoff + b * QKG_QK;
        float16 v0 = vload16(0, src), v1 = vload16(1, src);
        const int16 bad0 = qk_ggml_bad16(v0), bad1 = qk_ggml_bad16(v1);
        nonfinite |= bad0 | bad1;
        /* such a block's bytes are zeroed by the host: zeros keep its lanes finite */
        v0 = select(v0, (float16)(0.0f), bad0);
        v1 = select(v1, (float16)(0.0f), bad1);
        float mn = qk_ggml_fmin16(fmin(v0, v1)), mx = qk_ggml_fmax16(fmax(v0, v1));
        if (mn == 0.0f)
            mn = qk_ggml_first_equal(v0, v1, mn);
        if (mx == 0.0f)
            mx = qk_ggml_first_equal(v0, v1, mx);
        const float d = QK_DIV_float(mx - mn, 15.0f);
        const float id = d != 0.0f ? QK_DIV_float(1.0f, d) : 0.0f;
        __global uchar *dst = y + yoff + b * QKG_BYTES_Q4_1;
        qk_ggml_put_f16(dst, d);
        qk_ggml_put_f16(dst + 2, mn);
        const int bounded = isfinite(d) && isfinite(id);
        int16 q0 = min((int16)(15), qk_ggml_sext8(qk_ggml_cvt16b((v0 - mn) * id + (float16)(0.5f), bounded))) & 0xff;
        int16 q1 = min((int16)(15), qk_ggml_sext8(qk_ggml_cvt16b((v1 - mn) * id + (float16)(0.5f), bounded))) & 0xff;
        vstore16(convert_uchar16((q0 | (q1 << 4)) & 0xff), 0, dst + 4);
    }
    if (any(nonfinite))
        atomic_or(bad, 1);
}

__kernel void qk_ggml_dequantize_q4_1(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q4_1;
        const float d = qk_ggml_get_f16(src), m = qk_ggml_get_f16(src + 2);
        const int16 q = convert_int16(vload16(0, src + 4));
        __global float *dst = x + xoff + b * QKG_QK;
        vstore16(convert_float16(q & 0x0f) * d + m, 0, dst);
        vstore16(convert_float16(q >> 4) * d + m, 1, dst);
    }
}

/* Q5_0 as qkg_quantize_q5_0: d = max / -16 (max as Q4_0's), levels
 * min(31, (i8)cvt(x * id + 16.5)): low nibbles packed, fifth bits in qh. */
__kernel void qk_ggml_quantize_q5_0(__global const float *restrict x, ulong xoff, __global uchar *restrict y,
                                    ulong yoff, ulong nblocks, __global int *bad)
{
    ulong b, e;
    int16 nonfinite = (int16)(0);
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const float *src = x + xoff + b * QKG_QK;
        float16 v0 = vload16(0, src), v1 = vload16(1, src);
        const int16 bad0 = qk_ggml_bad16(v0), bad1 = qk_ggml_bad16(v1);
        nonfinite |= bad0 | bad1;
        /* such a block's bytes are zeroed by the host: zeros keep its lanes finite */
        v0 = select(v0, (float16)(0.0f), bad0);
        v1 = select(v1, (float16)(0.0f), bad1);
        const float max = qk_ggml_signed_amax(v0, v1);
        const float d = QK_DIV_float(max, -16.0f);
        const float id = d != 0.0f ? QK_DIV_float(1.0f, d) : 0.0f;
        __global uchar *dst = y + yoff + b * QKG_BYTES_Q5_0;
        qk_ggml_put_f16(dst, d);
        const int bounded = isfinite(id);
        int16 q0 = min((int16)(31), qk_ggml_sext8(qk_ggml_cvt16b(v0 * id + (float16)(16.5f), bounded))) & 0xff;
        int16 q1 = min((int16)(31), qk_ggml_sext8(qk_ggml_cvt16b(v1 * id + (float16)(16.5f), bounded))) & 0xff;
        qk_ggml_put_qh(dst + 2, q0, q1);
        vstore16(convert_uchar16((q0 & 0x0f) | ((q1 & 0x0f) << 4)), 0, dst + 6);
    }
    if (any(nonfinite))
        atomic_or(bad, 1);
}

/* The fifth bits of qh for elements 0..15 (lo) and 16..31 (hi), as 0 or 0x10. */
inline int16 qk_ggml_get_qh(__global const uchar *p, int hi)
{
    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const uint qh = (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
    return (((int16)((int)(qh >> (hi ? 16 : 0)) & 0xffff)) >> lane & 1) << 4;
}

__kernel void qk_ggml_dequantize_q5_0(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q5_0;
        const float d = qk_ggml_get_f16(src);
        const int16 q = convert_int16(vload16(0, src + 6));
        __global float *dst = x + xoff + b * QKG_QK;
        vstore16(convert_float16(((q & 0x0f) | qk_ggml_get_qh(src + 2, 0)) - 16) * d, 0, dst);
        vstore16(convert_float16(((q >> 4) | qk_ggml_get_qh(src + 2, 1)) - 16) * d, 1, dst);
    }
}

/* Q5_1 as qkg_quantize_q5_1: min and max as Q4_1's, d = (max - min) / 31,
 * levels (u8)cvt((x - min) * id + 0.5) (no clamp, as ggml). */
__kernel void qk_ggml_quantize_q5_1(__global const float *restrict x, ulong xoff, __global uchar *restrict y,
                                    ulong yoff, ulong nblocks, __global int *bad)
{
    ulong b, e;
    int16 nonfinite = (int16)(0);
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const float *src = x + xoff + b * QKG_QK;
        float16 v0 = vload16(0, src), v1 = vload16(1, src);
        const int16 bad0 = qk_ggml_bad16(v0), bad1 = qk_ggml_bad16(v1);
        nonfinite |= bad0 | bad1;
        /* such a block's bytes are zeroed by the host: zeros keep its lanes finite */
        v0 = select(v0, (float16)(0.0f), bad0);
        v1 = select(v1, (float16)(0.0f), bad1);
        float mn = qk_ggml_fmin16(fmin(v0, v1)), mx = qk_ggml_fmax16(fmax(v0, v1));
        if (mn == 0.0f)
            mn = qk_ggml_first_equal(v0, v1, mn);
        if (mx == 0.0f)
            mx = qk_ggml_first_equal(v0, v1, mx);
        const float d = QK_DIV_float(mx - mn, 31.0f);
        const float id = d != 0.0f ? QK_DIV_float(1.0f, d) : 0.0f;
        __global uchar *dst = y + yoff + b * QKG_BYTES_Q5_1;
        qk_ggml_put_f16(dst, d);
        qk_ggml_put_f16(dst + 2, mn);
        const int bounded = isfinite(d) && isfinite(id);
        int16 q0 = qk_ggml_cvt16b((v0 - mn) * id + (float16)(0.5f), bounded) & 0xff;
        int16 q1 = qk_ggml_cvt16b((v1 - mn) * id + (float16)(0.5f), bounded) & 0xff;
        qk_ggml_put_qh(dst + 4, q0, q1);
        vstore16(convert_uchar16((q0 & 0x0f) | ((q1 & 0x0f) << 4)), 0, dst + 8);
    }
    if (any(nonfinite))
        atomic_or(bad, 1);
}

__kernel void qk_ggml_dequantize_q5_1(__global const uchar *restrict y, ulong yoff, __global float *restrict x,
                                      ulong xoff, ulong nblocks)
{
    ulong b, e;
    qk_ggml_run(nblocks, &b, &e);
    for (; b < e; b++) {
        __global const uchar *src = y + yoff + b * QKG_BYTES_Q5_1;
        const float d = qk_ggml_get_f16(src), m = qk_ggml_get_f16(src + 2);
        const int16 q = convert_int16(vload16(0, src + 8));
        __global float *dst = x + xoff + b * QKG_QK;
        vstore16(convert_float16((q & 0x0f) | qk_ggml_get_qh(src + 4, 0)) * d + m, 0, dst);
        vstore16(convert_float16((q >> 4) | qk_ggml_get_qh(src + 4, 1)) * d + m, 1, dst);
    }
}

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
