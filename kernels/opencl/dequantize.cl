/* out = (float)(q - zero_point) * scale: q - zp exact in 64-bit, rounded to float
 * to nearest even, then one float multiplication (host/quant_math.h). When the
 * codes are at most 16 bits wide and |zp| <= 2^23 (the host checks), q - zp fits
 * in 24 bits: an int and an exact int -> float conversion do the same, faster.
 * The row and element forms are shared with the segmented kernels (segment.cl). */

#define QK_DEQUANT8_FAST(Q, OUT, I, S, ZP)                                                         \
    vstore8(convert_float8(convert_int8(vload8(0, (Q) + (I))) - (ZP)) * (S), 0, (OUT) + (I))
#define QK_DEQUANT8(Q, OUT, I, S, ZP)                                                              \
    vstore8(convert_float8_rte(convert_long8(vload8(0, (Q) + (I))) - (long)(ZP)) * (S), 0, (OUT) + (I))
#define QK_DEQUANT1(Q, OUT, I, S, ZP) ((OUT)[I] = convert_float_rte((long)(Q)[I] - (long)(ZP)) * (S))

#define QK_DEFINE_DEQUANT(NAME, IT)                                                               \
    __kernel void qk_dequantize_##NAME(__global const IT *q, ulong qoff, ulong n,                  \
                                       __global float *out, ulong ooff, float scale, int zp,       \
                                       int fast)                                                   \
    {                                                                                              \
        q += qoff;                                                                                 \
        out += ooff;                                                                               \
        ulong b, e;                                                                                \
        qk_part(n, &b, &e);                                                                        \
        uint lid = get_local_id(0);                                                                \
        ulong vend = b + ((e - b) & ~(ulong)7);                                                    \
        if (fast) {                                                                                \
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG)                    \
                QK_DEQUANT8_FAST(q, out, i, scale, zp);                                            \
        } else {                                                                                   \
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG)                    \
                QK_DEQUANT8(q, out, i, scale, zp);                                                 \
        }                                                                                          \
        for (ulong i = vend + lid; i < e; i += QK_WG) QK_DEQUANT1(q, out, i, scale, zp);          \
    }

QK_DEFINE_DEQUANT(u8, uchar)
QK_DEFINE_DEQUANT(i8, char)
QK_DEFINE_DEQUANT(u16, ushort)
QK_DEFINE_DEQUANT(i16, short)
QK_DEFINE_DEQUANT(i32, int)
