/* ggml's block formats, one block at a time: the single definition compiled
 * as C for the CPU backend (host/cpu/cpu_ggml.c), as OpenCL C (embedded after
 * common.cl, before ggml.cl) and as CUDA (kernels/cuda/ggml.cu).
 *
 * The spec is ggml's reference quantizer without an importance matrix
 * (ggml_quantize_chunk -> quantize_row_*_ref in ggml-quants.c), compiled for
 * baseline x86-64: every function here follows it operation for operation, in
 * float, in the same order, with no contraction into fma (C: -ffp-contract=off;
 * OpenCL: FP_CONTRACT OFF in common.cl; CUDA: -fmad=false), correctly rounded
 * division and sqrt. ggml's own roundings are kept: roundf (half away from
 * zero) for Q8_0, truncation of x + 8.5 / + 16.5 / + 0.5 for Q4_0/Q5_0/Q4_1/
 * Q5_1, nearest_int's magic-number addition for the K-quants, round to nearest
 * even for float16 scales. Where ggml converts a float to an integer type, it
 * is done as x86-64's cvttss2si does (truncation; NaN or out of range gives
 * INT32_MIN) and then narrowed modulo 2^8, so the rare degenerate inputs
 * (sums overflowing to Inf) give ggml's x86 bytes on every backend.
 *
 * Blocks: QKG_QK = 32 elements (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), QKG_QK_K = 256
 * (Q2_K .. Q6_K); byte layouts as ggml-common.h (scales little-endian). */
#ifndef QK_GGML_BLOCKS_H
#define QK_GGML_BLOCKS_H

#if defined(__OPENCL_VERSION__)
#define QKG_FN inline
typedef uchar qkg_u8;
typedef char qkg_i8;
typedef ushort qkg_u16;
typedef uint qkg_u32;
#define QKG_F2U(f) as_uint(f)
#define QKG_U2F(u) as_float(u)
#define QKG_FABS(v) fabs(v)
/* Division and sqrt correctly rounded whatever the device promises: common.cl's
 * QK_DIV_MODE (a / b where the program is built with
 * -cl-fp32-correctly-rounded-divide-sqrt; in double; or corrected). OpenCL's
 * plain / and sqrt are 2.5 and 3 ulp without that option (Mesa llvmpipe, many
 * GPUs without fp64). */
#define QKG_DIV(a, b) QK_DIV_float((float)(a), (float)(b))
#define QKG_DIV8(a, b) QK_DIV_float8(a, b)
#define QKG_SQRT(v) QK_SQRT_float(v)
/* round(): half away from zero. PoCL's round() is a slow library call; this is
 * the same function exactly (x - trunc(x) is exact in float). */
inline float qkg_round(float v)
{
    float t = trunc(v);
    return fabs(v - t) >= 0.5f ? t + copysign(1.0f, v) : t;
}
#define QKG_ROUND(v) qkg_round(v)
#elif defined(__CUDACC__)
#define QKG_FN static __device__ __forceinline__
typedef unsigned char qkg_u8;
typedef signed char qkg_i8;
typedef unsigned short qkg_u16;
typedef unsigned int qkg_u32;
#define QKG_F2U(f) __float_as_uint(f)
#define QKG_U2F(u) __uint_as_float(u)
#define QKG_FABS(v) fabsf(v)
#define QKG_SQRT(v) __fsqrt_rn(v)
#define QKG_DIV(a, b) __fdiv_rn((float)(a), (float)(b))
#define QKG_ROUND(v) roundf(v)
#else
#include <math.h>
#include <stdint.h>
#include <string.h>
#define QKG_FN static inline
typedef uint8_t qkg_u8;
typedef int8_t qkg_i8;
typedef uint16_t qkg_u16;
typedef uint32_t qkg_u32;
static inline qkg_u32 qkg_f2u(float f)
{
    qkg_u32 u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float qkg_u2f(qkg_u32 u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
#define QKG_F2U(f) qkg_f2u(f)
#define QKG_U2F(u) qkg_u2f(u)
#define QKG_FABS(v) fabsf(v)
#define QKG_SQRT(v) sqrtf(v)
#define QKG_DIV(a, b) ((float)(a) / (float)(b))
#define QKG_ROUND(v) roundf(v)
#endif

#define QKG_QK 32
#define QKG_QK_K 256
#define QKG_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QKG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QKG_GROUP_MAX_EPS 1e-15f

/* ggml's type ids (also qk_ggml_type's values) and bytes per block. */
#define QKG_F32 0
#define QKG_F16 1
#define QKG_Q4_0 2
#define QKG_Q4_1 3
#define QKG_Q5_0 6
#define QKG_Q5_1 7
#define QKG_Q8_0 8
#define QKG_Q2_K 10
#define QKG_Q3_K 11
#define QKG_Q4_K 12
#define QKG_Q5_K 13
#define QKG_Q6_K 14
#define QKG_BF16 30
#define QKG_BYTES_Q4_0 18
#define QKG_BYTES_Q4_1 20
#define QKG_BYTES_Q5_0 22
#define QKG_BYTES_Q5_1 24
#define QKG_BYTES_Q8_0 34
#define QKG_BYTES_Q2_K 84
#define QKG_BYTES_Q3_K 110
#define QKG_BYTES_Q4_K 144
#define QKG_BYTES_Q5_K 176
#define QKG_BYTES_Q6_K 210

/* ---- conversions --------------------------------------------------------------- */

/* A float to int as x86-64's cvttss2si: truncation toward zero, INT32_MIN for
 * NaN and values outside int32 (C leaves those undefined). */
QKG_FN int qkg_cvt(float f)
{
    if (!(f >= -2147483648.0f && f < 2147483648.0f))
        return -2147483647 - 1;
    return (int)f;
}

/* The nearest integer by adding 1.5 * 2^23 and reading the mantissa bits: round
 * half to even for |v| <= 2^22, ggml's bits beyond. */
QKG_FN int qkg_nearest_int(float v)
{
    float t = v + 12582912.0f;
    return (int)(QKG_F2U(t) & 0x007fffffu) - 0x00400000;
}

/* float32 -> float16, round to nearest even; overflow to Inf, NaN -> 0x7e00
 * (the sign kept), as ggml_compute_fp32_to_fp16. */
QKG_FN qkg_u16 qkg_f32_to_f16(float f)
{
    qkg_u32 u = QKG_F2U(f);
    qkg_u32 sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (qkg_u16)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* 65520 and up round to Inf */
        return (qkg_u16)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* a normal half */
        qkg_u32 q = ((a >> 23) - 112u) << 10 | ((a & 0x7fffffu) >> 13);
        qkg_u32 rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
            q++;
        return (qkg_u16)(sign | q);
    }
    qkg_u32 e = a >> 23, shift = 126u - e; /* a subnormal half: m * 2^(e-126) units of 2^-24 */
    if (e == 0 || shift > 24u)
        return (qkg_u16)sign;
    qkg_u32 m = (a & 0x7fffffu) | 0x800000u;
    qkg_u32 q = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u)))
        q++;
    return (qkg_u16)(sign | q);
}

QKG_FN float qkg_f16_to_f32(qkg_u16 h)
{
    qkg_u32 sign = ((qkg_u32)h & 0x8000u) << 16, e = ((qkg_u32)h >> 10) & 0x1fu, m = (qkg_u32)h & 0x3ffu;
    if (e == 0x1fu)
        return QKG_U2F(sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u));
    if (e == 0) /* subnormal (or zero): m * 2^-24, exact */
        return QKG_U2F(sign | QKG_F2U((float)m * 5.9604644775390625e-8f));
    return QKG_U2F(sign | ((e + 112u) << 23) | (m << 13));
}

/* float32 -> bfloat16 as ggml_compute_fp32_to_bf16 (round to nearest even, NaN quieted). */
QKG_FN qkg_u16 qkg_f32_to_bf16(float f)
{
    qkg_u32 u = QKG_F2U(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (qkg_u16)((u >> 16) | 64u);
    return (qkg_u16)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

QKG_FN float qkg_bf16_to_f32(qkg_u16 h) { return QKG_U2F((qkg_u32)h << 16); }

QKG_FN void qkg_put_f16(qkg_u8 *p, float f)
{
    qkg_u16 h = qkg_f32_to_f16(f);
    p[0] = (qkg_u8)(h & 0xffu);
    p[1] = (qkg_u8)(h >> 8);
}

QKG_FN float qkg_get_f16(const qkg_u8 *p) { return qkg_f16_to_f32((qkg_u16)(p[0] | (p[1] << 8))); }

/* ---- 32-element blocks ------------------------------------------------------------ */

/* Q8_0: d (f16), 32 int8. */
QKG_FN void qkg_quantize_q8_0(const float *x, qkg_u8 *y)
{
    float amax = 0.0f;
    for (int j = 0; j < QKG_QK; j++)
        amax = QKG_MAX(amax, QKG_FABS(x[j]));
    const float d = QKG_DIV(amax, (1 << 7) - 1);
    const float id = d != 0.0f ? QKG_DIV(1.0f, d) : 0.0f;
    qkg_put_f16(y, d);
    for (int j = 0; j < QKG_QK; j++) {
        const float x0 = x[j] * id;
        y[2 + j] = (qkg_u8)qkg_cvt(QKG_ROUND(x0));
    }
}

QKG_FN void qkg_dequantize_q8_0(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y);
    for (int j = 0; j < QKG_QK; j++)
        x[j] = (qkg_i8)y[2 + j] * d;
}

/* Q4_0: d (f16), 16 bytes of nibbles (element j low, j + 16 high). */
QKG_FN void qkg_quantize_q4_0(const float *x, qkg_u8 *y)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QKG_QK; j++) {
        const float v = x[j];
        if (amax < QKG_FABS(v)) {
            amax = QKG_FABS(v);
            max = v;
        }
    }
    const float d = QKG_DIV(max, -8);
    const float id = d != 0.0f ? QKG_DIV(1.0f, d) : 0.0f;
    qkg_put_f16(y, d);
    for (int j = 0; j < QKG_QK / 2; j++) {
        const float x0 = x[j] * id;
        const float x1 = x[QKG_QK / 2 + j] * id;
        const qkg_u8 xi0 = (qkg_u8)QKG_MIN(15, (qkg_i8)qkg_cvt(x0 + 8.5f));
        const qkg_u8 xi1 = (qkg_u8)QKG_MIN(15, (qkg_i8)qkg_cvt(x1 + 8.5f));
        y[2 + j] = (qkg_u8)(xi0 | (xi1 << 4));
    }
}

QKG_FN void qkg_dequantize_q4_0(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y);
    for (int j = 0; j < QKG_QK / 2; j++) {
        const int x0 = (y[2 + j] & 0x0F) - 8;
        const int x1 = (y[2 + j] >> 4) - 8;
        x[j] = x0 * d;
        x[j + QKG_QK / 2] = x1 * d;
    }
}

/* Q4_1: d, m (f16), 16 bytes of nibbles. */
QKG_FN void qkg_quantize_q4_1(const float *x, qkg_u8 *y)
{
    float min = 3.402823466e+38f, max = -3.402823466e+38f;
    for (int j = 0; j < QKG_QK; j++) {
        const float v = x[j];
        if (v < min)
            min = v;
        if (v > max)
            max = v;
    }
    const float d = QKG_DIV(max - min, (1 << 4) - 1);
    const float id = d != 0.0f ? QKG_DIV(1.0f, d) : 0.0f;
    qkg_put_f16(y, d);
    qkg_put_f16(y + 2, min);
    for (int j = 0; j < QKG_QK / 2; j++) {
        const float x0 = (x[j] - min) * id;
        const float x1 = (x[QKG_QK / 2 + j] - min) * id;
        const qkg_u8 xi0 = (qkg_u8)QKG_MIN(15, (qkg_i8)qkg_cvt(x0 + 0.5f));
        const qkg_u8 xi1 = (qkg_u8)QKG_MIN(15, (qkg_i8)qkg_cvt(x1 + 0.5f));
        y[4 + j] = (qkg_u8)(xi0 | (xi1 << 4));
    }
}

QKG_FN void qkg_dequantize_q4_1(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y), m = qkg_get_f16(y + 2);
    for (int j = 0; j < QKG_QK / 2; j++) {
        const int x0 = y[4 + j] & 0x0F;
        const int x1 = y[4 + j] >> 4;
        x[j] = x0 * d + m;
        x[j + QKG_QK / 2] = x1 * d + m;
    }
}

QKG_FN void qkg_put_u32(qkg_u8 *p, qkg_u32 v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (qkg_u8)(v >> (8 * i));
}

QKG_FN qkg_u32 qkg_get_u32(const qkg_u8 *p)
{
    return (qkg_u32)p[0] | ((qkg_u32)p[1] << 8) | ((qkg_u32)p[2] << 16) | ((qkg_u32)p[3] << 24);
}

/* Q5_0: d (f16), qh (32 fifth bits), 16 bytes of nibbles. */
QKG_FN void qkg_quantize_q5_0(const float *x, qkg_u8 *y)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QKG_QK; j++) {
        const float v = x[j];
        if (amax < QKG_FABS(v)) {
            amax = QKG_FABS(v);
            max = v;
        }
    }
    const float d = QKG_DIV(max, -16);
    const float id = d != 0.0f ? QKG_DIV(1.0f, d) : 0.0f;
    qkg_put_f16(y, d);
    qkg_u32 qh = 0;
    for (int j = 0; j < QKG_QK / 2; j++) {
        const float x0 = x[j] * id;
        const float x1 = x[QKG_QK / 2 + j] * id;
        const qkg_u8 xi0 = (qkg_u8)QKG_MIN(31, (qkg_i8)qkg_cvt(x0 + 16.5f));
        const qkg_u8 xi1 = (qkg_u8)QKG_MIN(31, (qkg_i8)qkg_cvt(x1 + 16.5f));
        y[6 + j] = (qkg_u8)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= (((qkg_u32)xi0 & 0x10u) >> 4) << j;
        qh |= (((qkg_u32)xi1 & 0x10u) >> 4) << (j + QKG_QK / 2);
    }
    qkg_put_u32(y + 2, qh);
}

QKG_FN void qkg_dequantize_q5_0(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y);
    const qkg_u32 qh = qkg_get_u32(y + 2);
    for (int j = 0; j < QKG_QK / 2; j++) {
        const qkg_u8 xh_0 = (qkg_u8)(((qh >> j) << 4) & 0x10u);
        const qkg_u8 xh_1 = (qkg_u8)((qh >> (j + 12)) & 0x10u);
        const int x0 = ((y[6 + j] & 0x0F) | xh_0) - 16;
        const int x1 = ((y[6 + j] >> 4) | xh_1) - 16;
        x[j] = x0 * d;
        x[j + QKG_QK / 2] = x1 * d;
    }
}

/* Q5_1: d, m (f16), qh, 16 bytes of nibbles. */
QKG_FN void qkg_quantize_q5_1(const float *x, qkg_u8 *y)
{
    float min = 3.402823466e+38f, max = -3.402823466e+38f;
    for (int j = 0; j < QKG_QK; j++) {
        const float v = x[j];
        if (v < min)
            min = v;
        if (v > max)
            max = v;
    }
    const float d = QKG_DIV(max - min, (1 << 5) - 1);
    const float id = d != 0.0f ? QKG_DIV(1.0f, d) : 0.0f;
    qkg_put_f16(y, d);
    qkg_put_f16(y + 2, min);
    qkg_u32 qh = 0;
    for (int j = 0; j < QKG_QK / 2; j++) {
        const float x0 = (x[j] - min) * id;
        const float x1 = (x[QKG_QK / 2 + j] - min) * id;
        const qkg_u8 xi0 = (qkg_u8)qkg_cvt(x0 + 0.5f);
        const qkg_u8 xi1 = (qkg_u8)qkg_cvt(x1 + 0.5f);
        y[8 + j] = (qkg_u8)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= (((qkg_u32)xi0 & 0x10u) >> 4) << j;
        qh |= (((qkg_u32)xi1 & 0x10u) >> 4) << (j + QKG_QK / 2);
    }
    qkg_put_u32(y + 4, qh);
}

QKG_FN void qkg_dequantize_q5_1(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y), m = qkg_get_f16(y + 2);
    const qkg_u32 qh = qkg_get_u32(y + 4);
    for (int j = 0; j < QKG_QK / 2; j++) {
        const qkg_u8 xh_0 = (qkg_u8)(((qh >> j) << 4) & 0x10u);
        const qkg_u8 xh_1 = (qkg_u8)((qh >> (j + 12)) & 0x10u);
        const int x0 = (y[8 + j] & 0x0F) | xh_0;
        const int x1 = (y[8 + j] >> 4) | xh_1;
        x[j] = x0 * d + m;
        x[j + QKG_QK / 2] = x1 * d + m;
    }
}

/* ---- the K-quants' searches ---------------------------------------------------------- */

/* The start make_qx_quants and make_q3_quants share (and so the scalar
 * searches and OpenCL's vector ones): *max, the first element of the largest
 * |x|; where that magnitude is below GROUP_MAX_EPS the levels are all 0 and 0
 * is returned. Otherwise the levels of iscale = -nmax / max, clamped to
 * -nmax..nmax-1 and stored + off, and their sums over w = x^2 of w x l and
 * w l^2; 1 is returned. The caller's sums and levels are what ggml's own
 * first pass leaves. */
QKG_FN int qkg_qx_start(int n, int nmax, int off, const float *x, qkg_i8 *L, float *the_max, float *the_sumlx,
                        float *the_suml2)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = QKG_FABS(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    *the_max = max;
    if (amax < QKG_GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0;
    }
    float iscale = QKG_DIV(-nmax, max);
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = qkg_nearest_int(iscale * x[i]);
        l = QKG_MAX(-nmax, QKG_MIN(nmax - 1, l));
        L[i] = (qkg_i8)(l + off);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    *the_sumlx = sumlx;
    *the_suml2 = suml2;
    return 1;
}

/* make_qx_quants' first candidate (levels + nmax), for the scalar search and
 * the vector one: *max, the scale it gives and the figure later candidates
 * must beat (scale * sumlx); 0 where the levels are all 0. */
QKG_FN int qkg_qx_first(int n, int nmax, const float *x, qkg_i8 *L, float *max, float *scale, float *best)
{
    float sumlx, suml2;
    if (!qkg_qx_start(n, nmax, nmax, x, L, max, &sumlx, &suml2))
        return 0;
    *scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    *best = *scale * sumlx;
    return 1;
}

/* make_qx_quants (symmetric, signed levels -nmax..nmax-1 stored + nmax) with
 * rmse_type 1 (weights x^2) and no importance matrix: Q6_K. */
QKG_FN float qkg_make_qx_quants(int n, int nmax, const float *x, qkg_i8 *L)
{
    float max, scale, best;
    if (!qkg_qx_first(n, nmax, x, L, &max, &scale, &best))
        return 0.0f;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        float iscale = QKG_DIV(-(nmax + 0.1f * is), max);
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = qkg_nearest_int(iscale * x[i]);
            l = QKG_MAX(-nmax, QKG_MIN(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = qkg_nearest_int(iscale * x[i]);
                L[i] = (qkg_i8)(nmax + QKG_MAX(-nmax, QKG_MIN(nmax - 1, l)));
            }
            scale = QKG_DIV(sumlx, suml2);
            best = scale * sumlx;
        }
    }
    return scale;
}

/* make_q3_quants with do_rmse: Q3_K (levels -nmax..nmax-1 stored + nmax). */
QKG_FN float qkg_make_q3_quants(int n, int nmax, const float *x, qkg_i8 *L)
{
    float max, sumlx, suml2;
    if (!qkg_qx_start(n, nmax, 0, x, L, &max, &sumlx, &suml2))
        return 0.0f;
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = qkg_nearest_int(QKG_DIV(x[i] * sl2, slx));
                new_l = QKG_MAX(-nmax, QKG_MIN(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (qkg_i8)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (qkg_i8)(L[i] + nmax);
    return suml2 > 0.0f ? QKG_DIV(sumlx, suml2) : 0.0f;
}

/* The start of make_qkx2_quants (the scalar search and OpenCL's vector one):
 * the weighted sums sum_w and sum_x, min (at most 0) and max; where max ==
 * min the levels are all 0 and 0 is returned. Otherwise the levels of the
 * first scale, (max - min) / nmax, and their weighted error; 1 is returned. */
QKG_FN int qkg_qkx2_start(int n, int nmax, const float *x, const float *weights, qkg_u8 *L, float *the_min,
                          float *the_max, float *the_sum_w, float *the_sum_x, float *the_scale, float *the_error,
                          int use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    *the_min = min;
    *the_max = max;
    *the_sum_w = sum_w;
    *the_sum_x = sum_x;
    if (max == min) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0;
    }
    float iscale = QKG_DIV(nmax, max - min);
    float scale = QKG_DIV(1, iscale);
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = qkg_nearest_int(iscale * (x[i] - min));
        L[i] = (qkg_u8)QKG_MAX(0, QKG_MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? QKG_FABS(diff) : diff * diff;
        float w = weights[i];
        best_error += w * diff;
    }
    *the_scale = scale;
    *the_error = best_error;
    return 1;
}

/* make_qkx2_quants: asymmetric levels 0..nmax, scale and min searched over
 * nstep + 1 candidate inverse scales, weighted squared (or absolute) error. */
QKG_FN float qkg_make_qkx2_quants(int n, int nmax, const float *x, const float *weights, qkg_u8 *L,
                                  float *the_min, qkg_u8 *Laux, float rmin, float rdelta, int nstep, int use_mad)
{
    float min, max, sum_w, sum_x, scale, best_error;
    if (!qkg_qkx2_start(n, nmax, x, weights, L, &min, &max, &sum_w, &sum_x, &scale, &best_error, use_mad)) {
        *the_min = -min;
        return 0.0f;
    }
    for (int is = 0; is <= nstep; is++) {
        float iscale = QKG_DIV(rmin + rdelta * is + nmax, max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = qkg_nearest_int(iscale * (x[i] - min));
            l = QKG_MAX(0, QKG_MIN(nmax, l));
            Laux[i] = (qkg_u8)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = QKG_DIV(sum_w * sum_xl - sum_x * sum_l, D);
            float this_min = QKG_DIV(sum_l2 * sum_x - sum_l * sum_xl, D);
            if (this_min > 0) {
                this_min = 0;
                this_scale = QKG_DIV(sum_xl, sum_l2);
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? QKG_FABS(diff) : diff * diff;
                float w = weights[i];
                cur_error += w * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; i++)
                    L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

#if defined(__OPENCL_VERSION__)
/* qkg_make_qkx2_quants (n <= 32) with the candidates evaluated eight at a
 * time, one per float8 lane: each lane's sums run over i in order with the same
 * operations as the scalar loop, so every candidate's figures are the scalar
 * ones bit for bit. ggml's loop moves min whenever a candidate wins, and the
 * later candidates use the new min: the lanes are speculative. The candidates
 * of a batch are scanned in order; after the first that wins, the next batch
 * starts just behind it with the new min (a batch without a winner is final).
 * Lanes past nstep are computed and ignored. (max(min()) rather than clamp():
 * oclgrind 21.10 gets clamp(int8, int, int) wrong for Q2_K's levels.) */
inline int8 qkg_nearest_int8(float8 v)
{
    float8 t = v + (float8)(12582912.0f);
    return (as_int8(t) & (int8)(0x007fffff)) - (int8)(0x00400000);
}

inline float qkg_make_qkx2_quants_v8(int n, int nmax, const float *x, const float *weights, qkg_u8 *L,
                                     float *the_min, float rmin, float rdelta, int nstep, int use_mad)
{
    float mn, mx, sum_w, sum_x, scale, best_error;
    if (!qkg_qkx2_start(n, nmax, x, weights, L, &mn, &mx, &sum_w, &sum_x, &scale, &best_error, use_mad)) {
        *the_min = -mn;
        return 0.0f;
    }
    const float8 lane = (float8)(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f);
    qkg_u8 lv[32 * 8];
    float Dv[8], ev[8], sv[8], mv[8];
    int is = 0;
    while (is <= nstep) {
        const float8 isc = QKG_DIV8(rmin + rdelta * (lane + (float)is) + (float)nmax, mx - mn);
        float8 sum_l = (float8)(0.0f), sum_l2 = (float8)(0.0f), sum_xl = (float8)(0.0f);
        for (int i = 0; i < n; i++) {
            const int8 l = max((int8)(0), min((int8)(nmax), qkg_nearest_int8(isc * (x[i] - mn))));
            vstore8(convert_uchar8(l), i, lv);
            const float8 fl = convert_float8(l);
            const float w = weights[i];
            sum_l += w * fl;
            sum_l2 += w * fl * fl;
            sum_xl += w * fl * x[i];
        }
        const float8 D = sum_w * sum_l2 - sum_l * sum_l;
        float8 this_scale = QKG_DIV8(sum_w * sum_xl - sum_x * sum_l, D);
        float8 this_min = QKG_DIV8(sum_l2 * sum_x - sum_l * sum_xl, D);
        const int8 pos = this_min > (float8)(0.0f);
        this_min = select(this_min, (float8)(0.0f), pos);
        this_scale = select(this_scale, QKG_DIV8(sum_xl, sum_l2), pos);
        float8 cur_error = (float8)(0.0f);
        for (int i = 0; i < n; i++) {
            float8 diff = this_scale * convert_float8(vload8(i, lv)) + this_min - x[i];
            if (use_mad)
                diff = fabs(diff);
            else
                diff = diff * diff;
            cur_error += weights[i] * diff;
        }
        vstore8(D, 0, Dv);
        vstore8(cur_error, 0, ev);
        vstore8(this_scale, 0, sv);
        vstore8(this_min, 0, mv);
        int next = is + 8;
        for (int k = 0; k < 8 && is + k <= nstep; k++) {
            if (Dv[k] > 0 && ev[k] < best_error) {
                for (int i = 0; i < n; i++)
                    L[i] = lv[8 * i + k];
                best_error = ev[k];
                scale = sv[k];
                mn = mv[k];
                next = is + k + 1;
                break;
            }
        }
        is = next;
    }
    *the_min = -mn;
    return scale;
}
/* qkg_make_qx_quants (n <= 16) with its 18 candidates (is = -9..-1, 1..9)
 * evaluated eight at a time, one per float8 lane, each lane's sums in the
 * scalar order with the scalar operations. The candidates do not depend on one
 * another (only the comparison with best does), so they are all evaluated
 * first and then scanned in ggml's order. */
inline float qkg_make_qx_quants_v8(int n, int nmax, const float *x, qkg_i8 *L)
{
    float mx, scale, best;
    if (!qkg_qx_first(n, nmax, x, L, &mx, &scale, &best))
        return 0.0f;
    float lx[24], l2[24];
    qkg_i8 lv[16 * 24];
    for (int batch = 0; batch < 3; batch++) {
        const int8 c = (int8)(0, 1, 2, 3, 4, 5, 6, 7) + 8 * batch;
        const float8 fis = convert_float8(select(c - 8, c - 9, c < 9));
        const float8 isc = QKG_DIV8(-((float)nmax + 0.1f * fis), mx);
        float8 slx = (float8)(0.0f), sl2 = (float8)(0.0f);
        for (int i = 0; i < n; i++) {
            const int8 l = max((int8)(-nmax), min((int8)(nmax - 1), qkg_nearest_int8(isc * x[i])));
            vstore8(convert_char8(l + nmax), 0, lv + 24 * i + 8 * batch);
            const float8 fl = convert_float8(l);
            const float w = x[i] * x[i];
            slx += w * x[i] * fl;
            sl2 += w * fl * fl;
        }
        vstore8(slx, batch, lx);
        vstore8(sl2, batch, l2);
    }
    for (int c = 0; c < 18; c++) {
        if (l2[c] > 0 && lx[c] * lx[c] > best * l2[c]) {
            for (int i = 0; i < n; i++)
                L[i] = lv[24 * i + c];
            scale = QKG_DIV(lx[c], l2[c]);
            best = scale * lx[c];
        }
    }
    return scale;
}
#define QKG_QX qkg_make_qx_quants_v8

/* qkg_make_q3_quants (n 16, nmax 4) for eight sub-blocks at once, sub-block
 * sb0 + k in lane k: Q3_K's searches are sequential within a sub-block but
 * independent across sub-blocks. Every lane follows the scalar code operation
 * for operation, its branches turned into masks; a lane whose pass changed
 * nothing (where the scalar loop stops) may run further passes, which change
 * nothing either: a pass is a function of the state it starts from. */
inline void qkg_make_q3_quants_x8(const float *x, int sb0, qkg_i8 *L, float *scales)
{
    const int nmax = 4;
    float8 xv[16];
    int8 lv[16];
    float8 mx = (float8)(0.0f), amax = (float8)(0.0f);
    for (int i = 0; i < 16; i++) {
        const float *p = x + 16 * sb0 + i;
        xv[i] = (float8)(p[0], p[16], p[32], p[48], p[64], p[80], p[96], p[112]);
        const float8 ax = fabs(xv[i]);
        const int8 up = ax > amax;
        amax = select(amax, ax, up);
        mx = select(mx, xv[i], up);
    }
    const int8 live = !(amax < (float8)(QKG_GROUP_MAX_EPS));
    const float8 iscale = QKG_DIV8((float8)(-nmax), mx);
    float8 sumlx = (float8)(0.0f), suml2 = (float8)(0.0f);
    for (int i = 0; i < 16; i++) {
        lv[i] = max((int8)(-nmax), min((int8)(nmax - 1), qkg_nearest_int8(iscale * xv[i])));
        const float8 fl = convert_float8(lv[i]);
        const float8 w = xv[i] * xv[i];
        sumlx += w * xv[i] * fl;
        suml2 += w * fl * fl;
    }
    for (int itry = 0; itry < 5; itry++) {
        int8 changed = (int8)(0);
        for (int i = 0; i < 16; i++) {
            const float8 w = xv[i] * xv[i];
            const float8 fL = convert_float8(lv[i]);
            float8 slx = sumlx - w * xv[i] * fL;
            const int8 c1 = slx > (float8)(0.0f);
            float8 sl2 = suml2 - w * fL * fL;
            const int8 new_l = max((int8)(-nmax), min((int8)(nmax - 1), qkg_nearest_int8(QKG_DIV8(xv[i] * sl2, slx))));
            const int8 c2 = c1 & (new_l != lv[i]);
            const float8 fn = convert_float8(new_l);
            slx += w * xv[i] * fn;
            sl2 += w * fn * fn;
            const int8 c3 = c2 & (sl2 > (float8)(0.0f)) & (slx * slx * suml2 > sumlx * sumlx * sl2);
            lv[i] = select(lv[i], new_l, c3);
            sumlx = select(sumlx, slx, c3);
            suml2 = select(suml2, sl2, c3);
            changed |= c3;
        }
        if (!any(changed & live))
            break;
    }
    const float8 scale = select((float8)(0.0f), QKG_DIV8(sumlx, suml2), live & (suml2 > (float8)(0.0f)));
    vstore8(scale, 0, scales + sb0);
    for (int i = 0; i < 16; i++) {
        char lb[8];
        vstore8(convert_char8(select((int8)(0), lv[i] + nmax, live)), 0, lb);
        for (int k = 0; k < 8; k++)
            L[16 * (sb0 + k) + i] = lb[k];
    }
}
#define QKG_Q3_X8(x, L, scales) (qkg_make_q3_quants_x8(x, 0, L, scales), qkg_make_q3_quants_x8(x, 8, L, scales))
#define QKG_QKX2(n, nmax, x, w, L, the_min, Laux, rmin, rdelta, nstep, use_mad)                                 \
    ((void)(Laux), qkg_make_qkx2_quants_v8(n, nmax, x, w, L, the_min, rmin, rdelta, nstep, use_mad))
#else
#define QKG_QKX2 qkg_make_qkx2_quants
#define QKG_QX qkg_make_qx_quants
#endif

/* The 6-bit scale and min of sub-block j packed in 12 bytes (Q4_K, Q5_K). */
QKG_FN void qkg_get_scale_min_k4(int j, const qkg_u8 *q, qkg_u8 *d, qkg_u8 *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (qkg_u8)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (qkg_u8)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* ---- 256-element super-blocks ----------------------------------------------------------- */

/* Q2_K: scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin. */
QKG_FN void qkg_quantize_q2_k(const float *x, qkg_u8 *y)
{
    qkg_u8 L[QKG_QK_K], Laux[16];
    float weights[16], mins[QKG_QK_K / 16], scales[QKG_QK_K / 16];
    const float q4scale = 15.f;
    qkg_u8 *ysc = y, *qs = y + 16, *yd = y + 80, *ydmin = y + 82;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QKG_QK_K / 16; j++) {
        for (int l = 0; l < 16; l++)
            weights[l] = QKG_FABS(x[16 * j + l]);
        scales[j] = QKG_QKX2(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
        float scale = scales[j];
        if (scale > max_scale)
            max_scale = scale;
        float min = mins[j];
        if (min > max_min)
            max_min = min;
    }
    if (max_scale > 0) {
        float iscale = QKG_DIV(q4scale, max_scale);
        for (int j = 0; j < QKG_QK_K / 16; j++)
            ysc[j] = (qkg_u8)qkg_nearest_int(iscale * scales[j]);
        qkg_put_f16(yd, QKG_DIV(max_scale, q4scale));
    } else {
        for (int j = 0; j < QKG_QK_K / 16; j++)
            ysc[j] = 0;
        qkg_put_f16(yd, 0.f);
    }
    if (max_min > 0) {
        float iscale = QKG_DIV(q4scale, max_min);
        for (int j = 0; j < QKG_QK_K / 16; j++) {
            int l = qkg_nearest_int(iscale * mins[j]);
            ysc[j] = (qkg_u8)(ysc[j] | ((qkg_u32)l << 4)); /* l < 0 possible: shifted as two's complement */
        }
        qkg_put_f16(ydmin, QKG_DIV(max_min, q4scale));
    } else {
        qkg_put_f16(ydmin, 0.f);
    }
    for (int j = 0; j < QKG_QK_K / 16; j++) {
        const float d = qkg_get_f16(yd) * (ysc[j] & 0xF);
        if (d == 0.0f)
            continue;
        const float dm = qkg_get_f16(ydmin) * (ysc[j] >> 4);
        for (int ii = 0; ii < 16; ii++) {
            int l = qkg_nearest_int(QKG_DIV(x[16 * j + ii] + dm, d));
            l = QKG_MAX(0, QKG_MIN(3, l));
            L[16 * j + ii] = (qkg_u8)l;
        }
    }
    for (int j = 0; j < QKG_QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (qkg_u8)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

QKG_FN void qkg_dequantize_q2_k(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y + 80), min = qkg_get_f16(y + 82);
    const qkg_u8 *q = y + 16;
    int is = 0;
    for (int n = 0; n < QKG_QK_K; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; j++) {
            qkg_u8 sc = y[is++];
            float dl = d * (sc & 0xF), ml = min * (sc >> 4);
            for (int l = 0; l < 16; l++)
                *x++ = dl * ((qkg_i8)((q[l] >> shift) & 3)) - ml;
            sc = y[is++];
            dl = d * (sc & 0xF);
            ml = min * (sc >> 4);
            for (int l = 0; l < 16; l++)
                *x++ = dl * ((qkg_i8)((q[l + 16] >> shift) & 3)) - ml;
            shift += 2;
        }
        q += 32;
    }
}

/* The signed 6-bit scale j of a Q3_K block (low 4 bits in scales[0..7], high 2 in scales[8..11]). */
QKG_FN int qkg_q3_k_scale(const qkg_u8 *sc12, int j)
{
    qkg_i8 sc = (qkg_i8)(j < 8 ? sc12[j] & 0xF : sc12[j - 8] >> 4);
    sc = (qkg_i8)((sc | (((sc12[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    return sc;
}

/* Q3_K: hmask[32], qs[64], scales[12], d. */
QKG_FN void qkg_quantize_q3_k(const float *x, qkg_u8 *y)
{
    qkg_i8 L[QKG_QK_K];
    float scales[QKG_QK_K / 16];
    qkg_u8 *hmask = y, *qs = y + 32, *ysc = y + 96, *yd = y + 108;
    float max_scale = 0, amax = 0;
#ifdef QKG_Q3_X8
    QKG_Q3_X8(x, L, scales);
#endif
    for (int j = 0; j < QKG_QK_K / 16; j++) {
#ifndef QKG_Q3_X8
        scales[j] = qkg_make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
#endif
        float scale = QKG_FABS(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    for (int j = 0; j < 12; j++)
        ysc[j] = 0;
    if (max_scale != 0.0f) {
        float iscale = QKG_DIV(-32.f, max_scale);
        for (int j = 0; j < QKG_QK_K / 16; j++) {
            /* ggml narrows to int8_t before clamping; |iscale * scales[j]| <= 32
             * (max_scale has the largest magnitude), so the int clamps alike. And
             * Mesa 25's llvmpipe miscompiles the clamp of an 8-bit value
             * ((char)32 clamped to 31 gave -32: Q3_K's bytes on rusticl). */
            const int li = qkg_nearest_int(iscale * scales[j]);
            qkg_i8 l = (qkg_i8)(QKG_MAX(-32, QKG_MIN(31, li)) + 32);
            if (j < 8)
                ysc[j] = (qkg_u8)(l & 0xF);
            else
                ysc[j - 8] = (qkg_u8)(ysc[j - 8] | ((l & 0xF) << 4));
            l = (qkg_i8)(l >> 4);
            ysc[j % 4 + 8] = (qkg_u8)(ysc[j % 4 + 8] | (l << (2 * (j / 4))));
        }
        qkg_put_f16(yd, QKG_DIV(1, iscale));
    } else {
        qkg_put_f16(yd, 0.f);
    }
    for (int j = 0; j < QKG_QK_K / 16; j++) {
        const int sc = qkg_q3_k_scale(ysc, j);
        const float d = qkg_get_f16(yd) * sc;
        if (d == 0.0f)
            continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = qkg_nearest_int(QKG_DIV(x[16 * j + ii], d));
            l = QKG_MAX(-4, QKG_MIN(3, l));
            L[16 * j + ii] = (qkg_i8)(l + 4);
        }
    }
    for (int j = 0; j < QKG_QK_K / 8; j++)
        hmask[j] = 0;
    int m = 0;
    qkg_u8 hm = 1;
    for (int j = 0; j < QKG_QK_K; j++) {
        if (L[j] > 3) {
            hmask[m] = (qkg_u8)(hmask[m] | hm);
            L[j] = (qkg_i8)(L[j] - 4);
        }
        if (++m == QKG_QK_K / 8) {
            m = 0;
            hm = (qkg_u8)(hm << 1);
        }
    }
    for (int j = 0; j < QKG_QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (qkg_u8)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

QKG_FN void qkg_dequantize_q3_k(const qkg_u8 *y, float *x)
{
    const qkg_u8 *hm = y, *q = y + 32, *sc12 = y + 96;
    const float d_all = qkg_get_f16(y + 108);
    qkg_u8 m = 1;
    int is = 0;
    for (int n = 0; n < QKG_QK_K; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; j++) {
            float dl = d_all * qkg_q3_k_scale(sc12, is++);
            for (int l = 0; l < 16; l++)
                *x++ = dl * ((qkg_i8)((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
            dl = d_all * qkg_q3_k_scale(sc12, is++);
            for (int l = 0; l < 16; l++)
                *x++ = dl * ((qkg_i8)((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
            shift += 2;
            m = (qkg_u8)(m << 1);
        }
        q += 32;
    }
}

/* Q4_K and Q5_K share the scale search: 8 sub-blocks of 32, 6-bit scales and
 * mins under f16 d and dmin; nmax 15 (Q4_K) or 31 (Q5_K). Fills the header
 * (d, dmin, scales[12] at y) and the levels L. */
QKG_FN void qkg_k_scales_mins(const float *x, qkg_u8 *y, qkg_u8 *L, int nmax, float rmin, int nstep)
{
    qkg_u8 Laux[32];
    float weights[32], mins[QKG_QK_K / 32], scales[QKG_QK_K / 32];
    qkg_u8 *ysc = y + 4;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QKG_QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = QKG_SQRT(QKG_DIV(sum_x2, 32));
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + QKG_FABS(x[32 * j + l]);
        scales[j] = QKG_QKX2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f,
                                         nstep, 0);
        float scale = scales[j];
        if (scale > max_scale)
            max_scale = scale;
        float min = mins[j];
        if (min > max_min)
            max_min = min;
    }
    float inv_scale = max_scale > 0 ? QKG_DIV(63.f, max_scale) : 0.f;
    float inv_min = max_min > 0 ? QKG_DIV(63.f, max_min) : 0.f;
    for (int j = 0; j < QKG_QK_K / 32; j++) {
        qkg_u8 ls = (qkg_u8)qkg_nearest_int(inv_scale * scales[j]);
        qkg_u8 lm = (qkg_u8)qkg_nearest_int(inv_min * mins[j]);
        ls = QKG_MIN(63, ls);
        lm = QKG_MIN(63, lm);
        if (j < 4) {
            ysc[j] = ls;
            ysc[j + 4] = lm;
        } else {
            ysc[j + 4] = (qkg_u8)((ls & 0xF) | ((lm & 0xF) << 4));
            ysc[j - 4] = (qkg_u8)(ysc[j - 4] | ((ls >> 4) << 6));
            ysc[j - 0] = (qkg_u8)(ysc[j - 0] | ((lm >> 4) << 6));
        }
    }
    qkg_put_f16(y, QKG_DIV(max_scale, 63.f));
    qkg_put_f16(y + 2, QKG_DIV(max_min, 63.f));
    for (int j = 0; j < QKG_QK_K / 32; j++) {
        qkg_u8 sc, m;
        qkg_get_scale_min_k4(j, ysc, &sc, &m);
        const float d = qkg_get_f16(y) * sc;
        if (d == 0.0f)
            continue;
        const float dm = qkg_get_f16(y + 2) * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = qkg_nearest_int(QKG_DIV(x[32 * j + ii] + dm, d));
            l = QKG_MAX(0, QKG_MIN(nmax, l));
            L[32 * j + ii] = (qkg_u8)l;
        }
    }
}

/* Q4_K: d, dmin, scales[12], qs[128] (elements j..j+31 low nibbles, j+32.. high, per 64). */
QKG_FN void qkg_quantize_q4_k(const float *x, qkg_u8 *y)
{
    qkg_u8 L[QKG_QK_K];
    qkg_k_scales_mins(x, y, L, 15, -1.f, 20);
    qkg_u8 *q = y + 16;
    for (int j = 0; j < QKG_QK_K; j += 64) {
        for (int l = 0; l < 32; l++)
            q[l] = (qkg_u8)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

QKG_FN void qkg_dequantize_q4_k(const qkg_u8 *y, float *x)
{
    const qkg_u8 *q = y + 16, *sc12 = y + 4;
    const float d = qkg_get_f16(y), min = qkg_get_f16(y + 2);
    int is = 0;
    for (int j = 0; j < QKG_QK_K; j += 64) {
        qkg_u8 sc, m;
        qkg_get_scale_min_k4(is + 0, sc12, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        qkg_get_scale_min_k4(is + 1, sc12, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; l++)
            *x++ = d1 * (q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++)
            *x++ = d2 * (q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

/* Q5_K: d, dmin, scales[12], qh[32], qs[128]. */
QKG_FN void qkg_quantize_q5_k(const float *x, qkg_u8 *y)
{
    qkg_u8 L[QKG_QK_K];
    qkg_k_scales_mins(x, y, L, 31, -0.5f, 15);
    qkg_u8 *qh = y + 16, *ql = y + 48;
    for (int j = 0; j < QKG_QK_K / 8; j++)
        qh[j] = 0;
    qkg_u8 m1 = 1, m2 = 2;
    for (int n = 0; n < QKG_QK_K; n += 64) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] = (qkg_u8)(qh[j] | m1);
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                qh[j] = (qkg_u8)(qh[j] | m2);
            }
            ql[j] = (qkg_u8)(l1 | (l2 << 4));
        }
        m1 = (qkg_u8)(m1 << 2);
        m2 = (qkg_u8)(m2 << 2);
        ql += 32;
    }
}

QKG_FN void qkg_dequantize_q5_k(const qkg_u8 *y, float *x)
{
    const qkg_u8 *ql = y + 48, *qh = y + 16, *sc12 = y + 4;
    const float d = qkg_get_f16(y), min = qkg_get_f16(y + 2);
    int is = 0;
    qkg_u8 u1 = 1, u2 = 2;
    for (int j = 0; j < QKG_QK_K; j += 64) {
        qkg_u8 sc, m;
        qkg_get_scale_min_k4(is + 0, sc12, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        qkg_get_scale_min_k4(is + 1, sc12, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; l++)
            *x++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *x++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 = (qkg_u8)(u1 << 2);
        u2 = (qkg_u8)(u2 << 2);
    }
}

/* Q6_K: ql[128], qh[64], scales[16] (int8), d. */
QKG_FN void qkg_quantize_q6_k(const float *x, qkg_u8 *y)
{
    qkg_i8 L[QKG_QK_K];
    float scales[QKG_QK_K / 16];
    qkg_u8 *ql = y, *qh = y + 128, *ysc = y + 192, *yd = y + 208;
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QKG_QK_K / 16; ib++) {
        const float scale = QKG_QX(16, 32, x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        const float abs_scale = QKG_FABS(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < QKG_GROUP_MAX_EPS) {
        for (int j = 0; j < QKG_BYTES_Q6_K; j++)
            y[j] = 0;
        return;
    }
    float iscale = QKG_DIV(-128.f, max_scale);
    qkg_put_f16(yd, QKG_DIV(1, iscale));
    for (int ib = 0; ib < QKG_QK_K / 16; ib++)
        ysc[ib] = (qkg_u8)(qkg_i8)QKG_MIN(127, qkg_nearest_int(iscale * scales[ib]));
    for (int j = 0; j < QKG_QK_K / 16; j++) {
        float d = qkg_get_f16(yd) * (qkg_i8)ysc[j];
        if (d == 0.0f)
            continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = qkg_nearest_int(QKG_DIV(x[16 * j + ii], d));
            l = QKG_MAX(-32, QKG_MIN(31, l));
            L[16 * j + ii] = (qkg_i8)(l + 32);
        }
    }
    for (int j = 0; j < QKG_QK_K; j += 128) {
        for (int l = 0; l < 32; l++) {
            const qkg_u8 q1 = L[j + l + 0] & 0xF;
            const qkg_u8 q2 = L[j + l + 32] & 0xF;
            const qkg_u8 q3 = L[j + l + 64] & 0xF;
            const qkg_u8 q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (qkg_u8)(q1 | (q3 << 4));
            ql[l + 32] = (qkg_u8)(q2 | (q4 << 4));
            qh[l] = (qkg_u8)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                             ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

QKG_FN void qkg_dequantize_q6_k(const qkg_u8 *y, float *x)
{
    const float d = qkg_get_f16(y + 208);
    const qkg_u8 *ql = y, *qh = y + 128, *sc = y + 192;
    for (int n = 0; n < QKG_QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            const qkg_i8 q1 = (qkg_i8)(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            const qkg_i8 q2 = (qkg_i8)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            const qkg_i8 q3 = (qkg_i8)(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            const qkg_i8 q4 = (qkg_i8)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            x[l + 0] = d * (qkg_i8)sc[is + 0] * q1;
            x[l + 32] = d * (qkg_i8)sc[is + 2] * q2;
            x[l + 64] = d * (qkg_i8)sc[is + 4] * q3;
            x[l + 96] = d * (qkg_i8)sc[is + 6] * q4;
        }
        x += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

#endif
