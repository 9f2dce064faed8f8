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

/* ---- the vector kernels' shared steps ---------------------------------------------
 * Each 32-element type's kernel is qk_ggml_run's loop over blocks around a
 * block function of its own (QK_GGML_VQUANT_KERNEL / QK_GGML_VDEQUANT_KERNEL);
 * the steps two or more types share are the functions just below. They take
 * private pointers for their several results and are always inlined, so a
 * kernel compiles to the code it had when each spelled them out: the same
 * operations in the same order (ggml's bytes), the same vector widths.
 * (Plain inline is a hint: PoCL's LLVM left qk_ggml_minmax32, with its two
 * qk_ggml_first_equal, as a call with float16 arguments, and Q4_1/Q5_1
 * quantization ran at half speed.) */
#define QK_GGML_STEP inline __attribute__((always_inline))

/* A block's 32 floats as two halves: the lanes that are NaN or infinite OR'd
 * into *nonfinite, and zeroed (such a block's bytes are zeroed by the host:
 * zeros keep its lanes finite, so the arithmetic below stays well defined). */
QK_GGML_STEP void qk_ggml_load32(__global const float *src, float16 *v0, float16 *v1, int16 *nonfinite)
{
    const float16 a = vload16(0, src), b = vload16(1, src);
    const int16 bad0 = qk_ggml_bad16(a), bad1 = qk_ggml_bad16(b);
    *nonfinite |= bad0 | bad1;
    *v0 = select(a, (float16)(0.0f), bad0);
    *v1 = select(b, (float16)(0.0f), bad1);
}

/* Q4_1/Q5_1's min and max of a block (.x, .y): a scalar loop keeping the
 * first of equal values, so a zero takes the sign of the first zero. */
QK_GGML_STEP float2 qk_ggml_minmax32(float16 v0, float16 v1)
{
    float mn = qk_ggml_fmin16(fmin(v0, v1)), mx = qk_ggml_fmax16(fmax(v0, v1));
    if (mn == 0.0f)
        mn = qk_ggml_first_equal(v0, v1, mn);
    if (mx == 0.0f)
        mx = qk_ggml_first_equal(v0, v1, mx);
    return (float2)(mn, mx);
}

/* ggml's id = d ? 1 / d : 0. */
QK_GGML_STEP float qk_ggml_inv(float d)
{
    return d != 0.0f ? QK_DIV_float(1.0f, d) : 0.0f;
}

/* Q4_0/Q4_1/Q5_0's level of a scaled lane s: min(top, (i8)cvt(s)), as the
 * uchar ggml stores it. */
QK_GGML_STEP int16 qk_ggml_level16(float16 s, int top, int bounded)
{
    return min((int16)(top), qk_ggml_sext8(qk_ggml_cvt16b(s, bounded))) & 0xff;
}

/* Q4_0/Q4_1's nibbles: element j's level low, element j + 16's high (ORed
 * whole, as ggml does: an out-of-range level keeps its high bits). */
QK_GGML_STEP void qk_ggml_put_q4(__global uchar *qs, int16 q0, int16 q1)
{
    vstore16(convert_uchar16((q0 | (q1 << 4)) & 0xff), 0, qs);
}

/* Q5_0/Q5_1's qh (fifth bits) at p, then the low nibbles packed after it. */
QK_GGML_STEP void qk_ggml_put_q5(__global uchar *p, int16 q0, int16 q1)
{
    qk_ggml_put_qh(p, q0, q1);
    vstore16(convert_uchar16((q0 & 0x0f) | ((q1 & 0x0f) << 4)), 0, p + 4);
}

/* The fifth bits of qh for elements 0..15 (lo) and 16..31 (hi), as 0 or 0x10. */
inline int16 qk_ggml_get_qh(__global const uchar *p, int hi)
{
    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const uint qh = (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
    return (((int16)((int)(qh >> (hi ? 16 : 0)) & 0xffff)) >> lane & 1) << 4;
}

/* Q4_K/Q5_K's scales: the 12 packed bytes and d, dmin of block src. */
QK_GGML_STEP void qk_ggml_k4_head(__global const uchar *src, qkg_u8 *sc12, float *d, float *min)
{
    for (int i = 0; i < 12; i++)
        sc12[i] = src[4 + i];
    *d = qk_ggml_get_f16(src);
    *min = qk_ggml_get_f16(src + 2);
}

/* Sub-blocks 2j and 2j + 1's scale and min (d * sc, dmin * m), as
 * qkg_dequantize_q4_k unpacks them. */
QK_GGML_STEP void qk_ggml_k4_pair(const qkg_u8 *sc12, int j, float d, float min, float *d1, float *m1, float *d2,
                            float *m2)
{
    qkg_u8 sc, m;
    qkg_get_scale_min_k4(2 * j, sc12, &sc, &m);
    *d1 = d * sc;
    *m1 = min * m;
    qkg_get_scale_min_k4(2 * j + 1, sc12, &sc, &m);
    *d2 = d * sc;
    *m2 = min * m;
}

/* A kernel over this work-item's run of blocks, block function
 * qk_ggml_vquantize_NAME(src, dst, &nonfinite); *bad set once at the end. */
#define QK_GGML_VQUANT_KERNEL(NAME, ELEMS, BYTES)                                                                      \
    __kernel void qk_ggml_quantize_##NAME(__global const float *restrict x, ulong xoff,                                \
                                          __global uchar *restrict y, ulong yoff, ulong nblocks,                       \
                                          __global int *bad)                                                           \
    {                                                                                                                  \
        ulong b, e;                                                                                                    \
        int16 nonfinite = (int16)(0);                                                                                  \
        qk_ggml_run(nblocks, &b, &e);                                                                                  \
        for (; b < e; b++)                                                                                             \
            qk_ggml_vquantize_##NAME(x + xoff + b * ELEMS, y + yoff + b * BYTES, &nonfinite);                          \
        if (any(nonfinite))                                                                                            \
            atomic_or(bad, 1);                                                                                         \
    }

#define QK_GGML_VDEQUANT_KERNEL(NAME, ELEMS, BYTES)                                                                    \
    __kernel void qk_ggml_dequantize_##NAME(__global const uchar *restrict y, ulong yoff,                              \
                                            __global float *restrict x, ulong xoff, ulong nblocks)                     \
    {                                                                                                                  \
        ulong b, e;                                                                                                    \
        qk_ggml_run(nblocks, &b, &e);                                                                                  \
        for (; b < e; b++)                                                                                             \
            qk_ggml_vdequantize_##NAME(y + yoff + b * BYTES, x + xoff + b * ELEMS);                                    \
    }

/* Q4_K and Q5_K dequantization as qkg_dequantize_q4_k/_q5_k, 16 lanes at a
 * time: d1 * level - m1 per 32 elements, each sub-block's scale and min as
 * qkg_get_scale_min_k4 unpacks them. */
QK_GGML_STEP void qk_ggml_vdequantize_q4_k(__global const uchar *src, __global float *dst)
{
    qkg_u8 sc12[12];
    float d, min;
    qk_ggml_k4_head(src, sc12, &d, &min);
    for (int j = 0; j < 4; j++) {
        float d1, m1, d2, m2;
        qk_ggml_k4_pair(sc12, j, d, min, &d1, &m1, &d2, &m2);
        __global const uchar *q = src + 16 + 32 * j;
        const int16 qa = convert_int16(vload16(0, q)), qb = convert_int16(vload16(1, q));
        __global float *o = dst + 64 * j;
        vstore16(d1 * convert_float16(qa & 0x0f) - m1, 0, o);
        vstore16(d1 * convert_float16(qb & 0x0f) - m1, 1, o);
        vstore16(d2 * convert_float16(qa >> 4) - m2, 2, o);
        vstore16(d2 * convert_float16(qb >> 4) - m2, 3, o);
    }
}
QK_GGML_VDEQUANT_KERNEL(q4_k, QKG_QK_K, QKG_BYTES_Q4_K)

/* Q5_K: Q4_K's levels plus 16 where the sub-block's bit of qh is set. */
QK_GGML_STEP void qk_ggml_vdequantize_q5_k(__global const uchar *src, __global float *dst)
{
    qkg_u8 sc12[12];
    float d, min;
    qk_ggml_k4_head(src, sc12, &d, &min);
    const int16 ha = convert_int16(vload16(0, src + 16)), hb = convert_int16(vload16(1, src + 16));
    for (int j = 0; j < 4; j++) {
        float d1, m1, d2, m2;
        qk_ggml_k4_pair(sc12, j, d, min, &d1, &m1, &d2, &m2);
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
QK_GGML_VDEQUANT_KERNEL(q5_k, QKG_QK_K, QKG_BYTES_Q5_K)

/* Q8_0 as qkg_quantize_q8_0, 16 lanes at a time: amax (the largest |x|, in
 * any order: max is exact), d = amax / 127, id = 1 / d, then each element's
 * roundf(x * id) (qkg_round: half away from zero) converted as qkg_cvt and
 * narrowed modulo 2^8. */
QK_GGML_STEP void qk_ggml_vquantize_q8_0(__global const float *src, __global uchar *dst, int16 *nonfinite)
{
    float16 v0, v1;
    qk_ggml_load32(src, &v0, &v1, nonfinite);
    const float amax = qk_ggml_fmax16(fmax(fabs(v0), fabs(v1)));
    const float d = QK_DIV_float(amax, 127.0f);
    const float id = qk_ggml_inv(d);
    qk_ggml_put_f16(dst, d);
    float16 s0 = v0 * id, s1 = v1 * id;
    float16 t0 = trunc(s0), t1 = trunc(s1);
    s0 = select(t0, t0 + copysign((float16)(1.0f), s0), fabs(s0 - t0) >= (float16)(0.5f));
    s1 = select(t1, t1 + copysign((float16)(1.0f), s1), fabs(s1 - t1) >= (float16)(0.5f));
    const int bounded = isfinite(id);
    vstore16(convert_uchar16(qk_ggml_cvt16b(s0, bounded) & 0xff), 0, dst + 2);
    vstore16(convert_uchar16(qk_ggml_cvt16b(s1, bounded) & 0xff), 0, dst + 18);
}
QK_GGML_VQUANT_KERNEL(q8_0, QKG_QK, QKG_BYTES_Q8_0)

QK_GGML_STEP void qk_ggml_vdequantize_q8_0(__global const uchar *src, __global float *dst)
{
    const float d = qk_ggml_get_f16(src);
    vstore16(convert_float16(as_char16(vload16(0, src + 2))) * d, 0, dst);
    vstore16(convert_float16(as_char16(vload16(0, src + 18))) * d, 1, dst);
}
QK_GGML_VDEQUANT_KERNEL(q8_0, QKG_QK, QKG_BYTES_Q8_0)

/* Q4_0/Q5_0 as qkg_quantize_q4_0/_q5_0: max is the first element (in index
 * order) whose |x| is amax, so it is +amax or -amax (0 when amax is 0) as that
 * element's sign says; d = max / dneg stored, id = 1 / d; element j's level
 * min(top, (i8)cvt(x * id + off)) in *q0 (j < 16) or *q1. */
QK_GGML_STEP void qk_ggml_sym_levels(__global const float *src, __global uchar *dst, int16 *nonfinite, float dneg,
                                     float off, int top, int16 *q0, int16 *q1)
{
    float16 v0, v1;
    qk_ggml_load32(src, &v0, &v1, nonfinite);
    const float d = QK_DIV_float(qk_ggml_signed_amax(v0, v1), dneg);
    const float id = qk_ggml_inv(d);
    qk_ggml_put_f16(dst, d);
    const int bounded = isfinite(id);
    *q0 = qk_ggml_level16(v0 * id + (float16)(off), top, bounded);
    *q1 = qk_ggml_level16(v1 * id + (float16)(off), top, bounded);
}

/* Q4_1/Q5_1 as qkg_quantize_q4_1/_q5_1: min and max (qk_ggml_minmax32),
 * d = (max - min) / nmax and min stored, id = 1 / d; the lanes (x - min) * id
 * + 0.5 in *s0, *s1 (the levels before conversion); returns whether they are
 * bounded (qk_ggml_cvt16b). */
QK_GGML_STEP int qk_ggml_asym_scaled(__global const float *src, __global uchar *dst, int16 *nonfinite, float nmax,
                                     float16 *s0, float16 *s1)
{
    float16 v0, v1;
    qk_ggml_load32(src, &v0, &v1, nonfinite);
    const float2 range = qk_ggml_minmax32(v0, v1);
    const float mn = range.x, mx = range.y;
    const float d = QK_DIV_float(mx - mn, nmax);
    const float id = qk_ggml_inv(d);
    qk_ggml_put_f16(dst, d);
    qk_ggml_put_f16(dst + 2, mn);
    *s0 = (v0 - mn) * id + (float16)(0.5f);
    *s1 = (v1 - mn) * id + (float16)(0.5f);
    return isfinite(d) && isfinite(id);
}

/* Q4_0: d = max / -8, levels min(15, (i8)cvt(x * id + 8.5)), element j's
 * nibble low, element j + 16's high. */
QK_GGML_STEP void qk_ggml_vquantize_q4_0(__global const float *src, __global uchar *dst, int16 *nonfinite)
{
    int16 q0, q1;
    qk_ggml_sym_levels(src, dst, nonfinite, -8.0f, 8.5f, 15, &q0, &q1);
    qk_ggml_put_q4(dst + 2, q0, q1);
}
QK_GGML_VQUANT_KERNEL(q4_0, QKG_QK, QKG_BYTES_Q4_0)

QK_GGML_STEP void qk_ggml_vdequantize_q4_0(__global const uchar *src, __global float *dst)
{
    const float d = qk_ggml_get_f16(src);
    const int16 q = convert_int16(vload16(0, src + 2));
    vstore16(convert_float16((q & 0x0f) - 8) * d, 0, dst);
    vstore16(convert_float16((q >> 4) - 8) * d, 1, dst);
}
QK_GGML_VDEQUANT_KERNEL(q4_0, QKG_QK, QKG_BYTES_Q4_0)

/* Q4_1: d = (max - min) / 15, nibbles min(15, (i8)cvt((x - min) * id + 0.5)). */
QK_GGML_STEP void qk_ggml_vquantize_q4_1(__global const float *src, __global uchar *dst, int16 *nonfinite)
{
    float16 s0, s1;
    const int bounded = qk_ggml_asym_scaled(src, dst, nonfinite, 15.0f, &s0, &s1);
    qk_ggml_put_q4(dst + 4, qk_ggml_level16(s0, 15, bounded), qk_ggml_level16(s1, 15, bounded));
}
QK_GGML_VQUANT_KERNEL(q4_1, QKG_QK, QKG_BYTES_Q4_1)

QK_GGML_STEP void qk_ggml_vdequantize_q4_1(__global const uchar *src, __global float *dst)
{
    const float d = qk_ggml_get_f16(src), m = qk_ggml_get_f16(src + 2);
    const int16 q = convert_int16(vload16(0, src + 4));
    vstore16(convert_float16(q & 0x0f) * d + m, 0, dst);
    vstore16(convert_float16(q >> 4) * d + m, 1, dst);
}
QK_GGML_VDEQUANT_KERNEL(q4_1, QKG_QK, QKG_BYTES_Q4_1)

/* Q5_0: d = max / -16, levels min(31, (i8)cvt(x * id + 16.5)): fifth bits
 * in qh, low nibbles packed. */
QK_GGML_STEP void qk_ggml_vquantize_q5_0(__global const float *src, __global uchar *dst, int16 *nonfinite)
{
    int16 q0, q1;
    qk_ggml_sym_levels(src, dst, nonfinite, -16.0f, 16.5f, 31, &q0, &q1);
    qk_ggml_put_q5(dst + 2, q0, q1);
}
QK_GGML_VQUANT_KERNEL(q5_0, QKG_QK, QKG_BYTES_Q5_0)

QK_GGML_STEP void qk_ggml_vdequantize_q5_0(__global const uchar *src, __global float *dst)
{
    const float d = qk_ggml_get_f16(src);
    const int16 q = convert_int16(vload16(0, src + 6));
    vstore16(convert_float16(((q & 0x0f) | qk_ggml_get_qh(src + 2, 0)) - 16) * d, 0, dst);
    vstore16(convert_float16(((q >> 4) | qk_ggml_get_qh(src + 2, 1)) - 16) * d, 1, dst);
}
QK_GGML_VDEQUANT_KERNEL(q5_0, QKG_QK, QKG_BYTES_Q5_0)

/* Q5_1: d = (max - min) / 31, levels (u8)cvt((x - min) * id + 0.5) (no
 * clamp, as ggml). */
QK_GGML_STEP void qk_ggml_vquantize_q5_1(__global const float *src, __global uchar *dst, int16 *nonfinite)
{
    float16 s0, s1;
    const int bounded = qk_ggml_asym_scaled(src, dst, nonfinite, 31.0f, &s0, &s1);
    qk_ggml_put_q5(dst + 4, qk_ggml_cvt16b(s0, bounded) & 0xff, qk_ggml_cvt16b(s1, bounded) & 0xff);
}
QK_GGML_VQUANT_KERNEL(q5_1, QKG_QK, QKG_BYTES_Q5_1)

QK_GGML_STEP void qk_ggml_vdequantize_q5_1(__global const uchar *src, __global float *dst)
{
    const float d = qk_ggml_get_f16(src), m = qk_ggml_get_f16(src + 2);
    const int16 q = convert_int16(vload16(0, src + 8));
    vstore16(convert_float16((q & 0x0f) | qk_ggml_get_qh(src + 4, 0)) * d + m, 0, dst);
    vstore16(convert_float16((q >> 4) | qk_ggml_get_qh(src + 4, 1)) * d + m, 1, dst);
}
QK_GGML_VDEQUANT_KERNEL(q5_1, QKG_QK, QKG_BYTES_Q5_1)

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
