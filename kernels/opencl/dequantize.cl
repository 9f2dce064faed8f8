/* out = (float)(q - zero_point) * scale: q - zp exact in 64-bit, rounded to float
 * to nearest even, then one float multiplication (host/quant_math.h). When the
 * codes are at most 16 bits wide and |zp| <= 2^23 (the host checks), q - zp fits
 * in 24 bits: an int and an exact int -> float conversion do the same, faster. */

#define QK_DEFINE_DEQUANT(NAME, IT, CONVI8, CONVL8)                                               \
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
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG) {                  \
                int8 d = CONVI8(vload8(0, q + i)) - zp;                                            \
                vstore8(convert_float8(d) * scale, 0, out + i);                                    \
            }                                                                                      \
        } else {                                                                                   \
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG) {                  \
                long8 d = CONVL8(vload8(0, q + i)) - (long)zp;                                     \
                vstore8(convert_float8_rte(d) * scale, 0, out + i);                                \
            }                                                                                      \
        }                                                                                          \
        for (ulong i = vend + lid; i < e; i += QK_WG) {                                            \
            out[i] = convert_float_rte((long)q[i] - (long)zp) * scale;                             \
        }                                                                                          \
    }

QK_DEFINE_DEQUANT(u8, uchar, convert_int8, convert_long8)
QK_DEFINE_DEQUANT(i8, char, convert_int8, convert_long8)
QK_DEFINE_DEQUANT(u16, ushort, convert_int8, convert_long8)
QK_DEFINE_DEQUANT(i16, short, convert_int8, convert_long8)
QK_DEFINE_DEQUANT(i32, int, convert_int8, convert_long8)
