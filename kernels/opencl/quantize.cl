/* codes = clamp(rint(x / scale) + zero_point, qmin, qmax), exactly as
 * host/quant_math.h:
 *  - x / scale is one IEEE division in the input's precision (correctly rounded),
 *    then rint (round half to even);
 *  - NaN gives the code of 0: r is replaced by 0, so the code is clamp(zp);
 *  - the clamp happens before any conversion to an integer.
 * Two exact ways to do the "+ zp, clamp":
 *  - fast (float32 input, |qmin - zp| and |qmax - zp| <= 2^24, which the host
 *    checks): clamp r to [qmin - zp, qmax - zp] in float, where both bounds and
 *    every integer in between are exact, convert, add zp;
 *  - general: clamp r to +-2^33 (beyond every code after adding an int32 zp),
 *    convert to long, add zp, clamp in long. */

#define QK_BIG 8589934592.0f /* 2^33 */

#define QK_DEFINE_QUANT_F32(NAME, OT, CONV8, CONV1)                                              \
    __kernel void qk_quantize_f32_##NAME(__global const float *x, ulong xoff, ulong n,           \
                                         __global OT *q, ulong qoff, float scale, int zp,         \
                                         int qmin, int qmax, float lo, float hi, int fast)        \
    {                                                                                             \
        x += xoff;                                                                                \
        q += qoff;                                                                                \
        ulong b, e;                                                                               \
        qk_part(n, &b, &e);                                                                       \
        uint lid = get_local_id(0);                                                               \
        ulong vend = b + ((e - b) & ~(ulong)7);                                                   \
        if (fast) {                                                                               \
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG) {                 \
                float8 r = QK_RINT(vload8(0, x + i) / scale);                                        \
                r = select(r, (float8)(0.0f), isnan(r));                                          \
                r = select(r, (float8)(lo), r < lo);                                              \
                r = select(r, (float8)(hi), r > hi);                                              \
                vstore8(CONV8(convert_int8(r) + zp), 0, q + i);                                   \
            }                                                                                     \
        } else {                                                                                  \
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG) {                 \
                float8 r = QK_RINT(vload8(0, x + i) / scale);                                        \
                r = select(r, (float8)(0.0f), isnan(r));                                          \
                r = select(r, (float8)(-QK_BIG), r < -QK_BIG);                                    \
                r = select(r, (float8)(QK_BIG), r > QK_BIG);                                      \
                long8 t = convert_long8(r) + (long)zp;                                            \
                t = select(t, (long8)((long)qmin), t < (long)qmin);                               \
                t = select(t, (long8)((long)qmax), t > (long)qmax);                               \
                vstore8(CONV8(convert_int8(t)), 0, q + i);                                        \
            }                                                                                     \
        }                                                                                         \
        for (ulong i = vend + lid; i < e; i += QK_WG) {                                           \
            float r = rint(x[i] / scale);                                                         \
            if (isnan(r)) r = 0.0f;                                                               \
            r = clamp(r, -QK_BIG, QK_BIG);                                                        \
            long t = clamp((long)r + (long)zp, (long)qmin, (long)qmax);                           \
            q[i] = CONV1((int)t);                                                                 \
        }                                                                                         \
    }

QK_DEFINE_QUANT_F32(u8, uchar, convert_uchar8, convert_uchar)
QK_DEFINE_QUANT_F32(i8, char, convert_char8, convert_char)
QK_DEFINE_QUANT_F32(u16, ushort, convert_ushort8, convert_ushort)
QK_DEFINE_QUANT_F32(i16, short, convert_short8, convert_short)
QK_DEFINE_QUANT_F32(i32, int, convert_int8, convert_int)

#if QK_FP64
/* float64 input: the division is in double (DESIGN: the input's precision). */
#define QK_DEFINE_QUANT_F64(NAME, OT, CONV8, CONV1)                                              \
    __kernel void qk_quantize_f64_##NAME(__global const double *x, ulong xoff, ulong n,          \
                                         __global OT *q, ulong qoff, float scale, int zp,         \
                                         int qmin, int qmax, float lo, float hi, int fast)        \
    {                                                                                             \
        x += xoff;                                                                                \
        q += qoff;                                                                                \
        ulong b, e;                                                                               \
        qk_part(n, &b, &e);                                                                       \
        uint lid = get_local_id(0);                                                               \
        double s = (double)scale;                                                                 \
        ulong vend = b + ((e - b) & ~(ulong)7);                                                   \
        for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG) {                     \
            double8 r = QK_RINT(vload8(0, x + i) / s);                                               \
            r = select(r, (double8)(0.0), isnan(r));                                              \
            r = select(r, (double8)(-(double)QK_BIG), r < -(double)QK_BIG);                       \
            r = select(r, (double8)((double)QK_BIG), r > (double)QK_BIG);                         \
            long8 t = convert_long8(r) + (long)zp;                                                \
            t = select(t, (long8)((long)qmin), t < (long)qmin);                                   \
            t = select(t, (long8)((long)qmax), t > (long)qmax);                                   \
            vstore8(CONV8(convert_int8(t)), 0, q + i);                                            \
        }                                                                                         \
        for (ulong i = vend + lid; i < e; i += QK_WG) {                                           \
            double r = rint(x[i] / s);                                                            \
            if (isnan(r)) r = 0.0;                                                                \
            r = clamp(r, -(double)QK_BIG, (double)QK_BIG);                                        \
            long t = clamp((long)r + (long)zp, (long)qmin, (long)qmax);                           \
            q[i] = CONV1((int)t);                                                                 \
        }                                                                                         \
    }

QK_DEFINE_QUANT_F64(u8, uchar, convert_uchar8, convert_uchar)
QK_DEFINE_QUANT_F64(i8, char, convert_char8, convert_char)
QK_DEFINE_QUANT_F64(u16, ushort, convert_ushort8, convert_ushort)
QK_DEFINE_QUANT_F64(i16, short, convert_short8, convert_short)
QK_DEFINE_QUANT_F64(i32, int, convert_int8, convert_int)
#endif
