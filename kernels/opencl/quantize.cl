/* codes = clamp(rint(x / scale) + zero_point, qmin, qmax), exactly as
 * host/quant_math.h:
 *  - x / scale is one IEEE division in the input's precision, correctly rounded
 *    (QK_DIV_float / QK_DIV_double, common.cl), then round half to even (QK_RINT);
 *  - NaN gives the code of 0: r is replaced by 0, so the code is clamp(zp);
 *  - the clamp happens before any conversion to an integer.
 * Two exact ways to do the "+ zp, clamp":
 *  - fast (float32 input, |qmin - zp| and |qmax - zp| <= 2^24, which the host
 *    checks): clamp r to [qmin - zp, qmax - zp] in float, where both bounds and
 *    every integer in between are exact, convert, add zp;
 *  - general: clamp r to +-2^33 (beyond every code after adding an int32 zp),
 *    convert to long, add zp, clamp in long. */

#define QK_BIG 8589934592.0f /* 2^33 */

/* The per-element arithmetic, shared by the per-tensor kernels here and the
 * segmented ones (segment.cl): a row of 8 codes at X + I -> Q + I, or one.
 * VT/ST: float8/float or double8/double; S is the scale in that precision. */
#define QK_QUANT8_FAST(X, Q, I, S, ZP, LO, HI, CONV8)                                             \
    do {                                                                                          \
        float8 r_ = QK_RINT(QK_DIV_float8(vload8(0, (X) + (I)), (S)));                            \
        r_ = select(r_, (float8)(0.0f), isnan(r_));                                               \
        r_ = select(r_, (float8)(LO), r_ < (LO));                                                 \
        r_ = select(r_, (float8)(HI), r_ > (HI));                                                 \
        vstore8(CONV8(convert_int8(r_) + (ZP)), 0, (Q) + (I));                                    \
    } while (0)

#define QK_QUANT8(VT, X, Q, I, S, ZP, QMIN, QMAX, CONV8)                                          \
    do {                                                                                          \
        VT r_ = QK_RINT(QK_DIV_##VT(vload8(0, (X) + (I)), (S)));                                  \
        r_ = select(r_, (VT)(0), isnan(r_));                                                      \
        r_ = select(r_, (VT)(-QK_BIG), r_ < (VT)(-QK_BIG));                                       \
        r_ = select(r_, (VT)(QK_BIG), r_ > (VT)(QK_BIG));                                         \
        long8 t_ = convert_long8(r_) + (long)(ZP);                                                \
        t_ = select(t_, (long8)((long)(QMIN)), t_ < (long)(QMIN));                                \
        t_ = select(t_, (long8)((long)(QMAX)), t_ > (long)(QMAX));                                \
        vstore8(CONV8(convert_int8(t_)), 0, (Q) + (I));                                           \
    } while (0)

#define QK_QUANT1(ST, X, Q, I, S, ZP, QMIN, QMAX, CONV1)                                          \
    do {                                                                                          \
        ST r_ = QK_RINT(QK_DIV_##ST((X)[I], (S)));                                                \
        if (isnan(r_)) r_ = (ST)0;                                                                \
        r_ = clamp(r_, (ST)-QK_BIG, (ST)QK_BIG);                                                  \
        long t_ = clamp((long)r_ + (long)(ZP), (long)(QMIN), (long)(QMAX));                       \
        (Q)[I] = CONV1((int)t_);                                                                  \
    } while (0)

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
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG)                   \
                QK_QUANT8_FAST(x, q, i, scale, zp, lo, hi, CONV8);                                \
        } else {                                                                                  \
            for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG)                   \
                QK_QUANT8(float8, x, q, i, scale, zp, qmin, qmax, CONV8);                  \
        }                                                                                         \
        for (ulong i = vend + lid; i < e; i += QK_WG)                                             \
            QK_QUANT1(float, x, q, i, scale, zp, qmin, qmax, CONV1);                              \
    }

QK_DEFINE_QUANT_F32(u8, uchar, convert_uchar8, convert_uchar)
QK_DEFINE_QUANT_F32(i8, char, convert_char8, convert_char)
QK_DEFINE_QUANT_F32(u16, ushort, convert_ushort8, convert_ushort)
QK_DEFINE_QUANT_F32(i16, short, convert_short8, convert_short)
QK_DEFINE_QUANT_F32(i32, int, convert_int8, convert_int)

#if QK_FP64
/* float64 input: the division is in double (docs/numerics.md: the input's precision). */
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
        for (ulong i = b + 8 * (ulong)lid; i < vend; i += 8 * (ulong)QK_WG)                       \
            QK_QUANT8(double8, x, q, i, s, zp, qmin, qmax, CONV8);                         \
        for (ulong i = vend + lid; i < e; i += QK_WG)                                             \
            QK_QUANT1(double, x, q, i, s, zp, qmin, qmax, CONV1);                                 \
    }

QK_DEFINE_QUANT_F64(u8, uchar, convert_uchar8, convert_uchar)
QK_DEFINE_QUANT_F64(i8, char, convert_char8, convert_char)
QK_DEFINE_QUANT_F64(u16, ushort, convert_ushort8, convert_ushort)
QK_DEFINE_QUANT_F64(i16, short, convert_short8, convert_short)
QK_DEFINE_QUANT_F64(i32, int, convert_int8, convert_int)
#endif
