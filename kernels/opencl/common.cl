/* Shared by every qkern OpenCL kernel (the files are concatenated in the order
 * cmake/opencl.cmake lists them, this one first).
 *
 * Build-time configuration, set by the host (host/opencl/ocl_program.c):
 *   QK_WG    work-group size the kernels are written for. 1 on CPU devices: one
 *            work-item walks a contiguous range with plain vector loops (PoCL runs
 *            those at memory speed; a GPU-style strided kernel there reached
 *            ~2 GB/s). 256 on GPUs: coalesced strided loads, local-memory
 *            reductions and histograms.
 *   QK_FP64  1 when the device has cl_khr_fp64 (the error pass accumulates in
 *            double; float64 input needs it for its division).
 *
 *   QK_DIV_MODE     how float division is made correctly rounded (QK_DIV_float below).
 *   QK_NO_ROUNDEVEN QK_RINT uses rint() rather than clang's roundeven builtin.
 *
 * Exactness (docs/numerics.md): no contraction into fma anywhere, correctly rounded
 * float division (QK_DIV_float), round-half-even (QK_RINT), clamps before any
 * float -> int conversion. */
#pragma OPENCL FP_CONTRACT OFF

#ifndef QK_WG
#define QK_WG 1
#endif
#ifndef QK_FP64
#define QK_FP64 0
#endif
#if QK_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#define QK_NONE ((ulong)0xffffffffffffffffUL)

/* Round half to even: QK_RINT(v), for float, double and their vectors; every
 * kernel rounds through it (and nothing else). rint() is exactly that in the
 * default rounding mode, but PoCL implements the vector rint in ~25
 * instructions; clang's roundeven builtin becomes one vroundps (2.4x faster
 * error pass on PoCL). Same results for every input (NaN, +-Inf and -0
 * included). __has_builtin asks only the compiler's front end: a back end may
 * still fail to build or create a kernel that uses it (oclgrind 21.10), so the
 * host builds again with -DQK_NO_ROUNDEVEN when that happens
 * (host/opencl/ocl_program.c). */
#if !defined(QK_NO_ROUNDEVEN) && defined(__has_builtin)
#if __has_builtin(__builtin_elementwise_roundeven)
#define QK_RINT(v) __builtin_elementwise_roundeven(v)
#endif
#endif
#ifndef QK_RINT
#define QK_RINT(v) rint(v)
#endif

/* Correctly rounded float division: QK_DIV_float(a, b), QK_DIV_float8(a, b)
 * (and QK_DIV_double, QK_DIV_double8: double division is correctly rounded on
 * every fp64 device by the spec), so a macro that takes the type name can
 * paste it: QK_DIV_##T(a, b). How, set by the host from
 * CL_DEVICE_SINGLE_FP_CONFIG (QKERN_OPENCL_DIVIDE forces one):
 *   QK_DIV_MODE 0  the device promises CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT and
 *                  the program is built with -cl-fp32-correctly-rounded-divide-sqrt:
 *                  a / b;
 *   QK_DIV_MODE 1  in double (cl_khr_fp64): the double quotient is correctly
 *                  rounded, and rounding it to float is too (53 >= 2 * 24 + 2
 *                  bits: double rounding is innocuous for division);
 *   QK_DIV_MODE 2  no promise and no fp64: the device's own quotient (2.5 ulp in
 *                  OpenCL 1.2) corrected with exact fma remainders, below. */
#ifndef QK_DIV_MODE
#define QK_DIV_MODE 0
#endif

/* Mode 2. With both operands scaled to [0.5, 1) by frexp (exact), the quotient
 * lies in (0.5, 2) and no remainder below can underflow. r = fma(-q, b, a) is
 * the remainder a - q*b rounded once, so its sign is exact: it says on which side
 * of q the true quotient lies. q then steps one ulp at a time toward it while
 * that brings |r| down (|a - q*b| = b * |a/b - q|); next to the quotient the
 * remainders are exact, so the last q is the nearest float (a tie cannot occur:
 * a quotient of two 24-bit significands is never a 25-bit midpoint). Three steps
 * cover the 2.5 ulp the spec allows. ldexp puts the exponent back: exact for a
 * normal result; a subnormal one is rounded again there and corrected after
 * (ggml's Q4_0 of subnormal input divides to subnormals). Zeros, infinities and NaN
 * keep the device's own quotient, which IEEE fixes exactly. */
/* frexp of |v| from its bits, subnormals scaled by 2^24 first: a device without
 * denormal support (Mesa's llvmpipe) need not give frexp of a subnormal. Zeros,
 * infinities and NaN give nonsense here; the division keeps its own quotient
 * for them. */
#define QK_DEFINE_FREXP(T, IT, UT)                                                      \
    inline T qk_frexp_##T(T v, IT *e)                                                   \
    {                                                                                   \
        const T av = fabs(v);                                                           \
        const IT sub = av < (T)(FLT_MIN);                                               \
        const T sv = select(av, av * 16777216.0f, sub);                                 \
        const UT bits = as_##UT(sv);                                                    \
        *e = convert_##IT((bits >> 23) & (UT)(0xffu)) - 126 - select((IT)(0), (IT)(24), sub); \
        return as_##T((bits & (UT)(0x007fffffu)) | (UT)(0x3f000000u));                 \
    }
QK_DEFINE_FREXP(float, int, uint)
QK_DEFINE_FREXP(float8, int8, uint8)

#define QK_DEFINE_DIVF_FIX(NAME, T, IT, UT)                                             \
    inline T NAME(T a, T b)                                                             \
    {                                                                                   \
        IT ea, eb;                                                                      \
        T x = qk_frexp_##T(a, &ea), y = qk_frexp_##T(b, &eb);                           \
        T q = x / y;                                                                    \
        T r = fma(-q, y, x);                                                            \
        for (int i = 0; i < 3; i++) {                                                   \
            T qn = select(nextafter(q, (T)(0.0f)), nextafter(q, (T)(INFINITY)), r > (T)(0.0f)); \
            T rn = fma(-qn, y, x);                                                      \
            IT move = (r != (T)(0.0f)) & (fabs(rn) < fabs(r));                          \
            q = select(q, qn, move);                                                    \
            r = select(r, rn, move);                                                    \
        }                                                                               \
        const IT e = ea - eb;                                                           \
        T m = ldexp(q, e);                                                              \
        /* A subnormal quotient: ldexp rounded q's 24 bits a second time, which can be   \
         * one unit (2^-149) off. Scaled by 2^-e, the candidate mp, the unit up and each   \
         * midpoint mp +- up/2 are exact floats (a subnormal has at most 23 bits), so      \
         * fma(-mid, y, x) says exactly on which side of a midpoint x/y lies; 0 is a tie,  \
         * which goes to the even multiple of the unit. */                               \
        const T up = ldexp((T)(1.0f), -149 - e), per = ldexp((T)(1.0f), 149 + e);      \
        T mp = trunc(q * per) * up;                                                     \
        for (int i = 0; i < 2; i++) {                                                   \
            const T rh = fma(-(mp + up * 0.5f), y, x), rl = fma(-(mp - up * 0.5f), y, x);  \
            const IT odd = (convert_##IT(mp * per) & 1) != 0;                             \
            const IT inc = (rh > (T)(0.0f)) | ((rh == (T)(0.0f)) & odd);                  \
            const IT dec = !inc & (mp > (T)(0.0f)) & ((rl < (T)(0.0f)) | ((rl == (T)(0.0f)) & odd)); \
            mp = select(mp, mp + up, inc);                                              \
            mp = select(mp, mp - up, dec);                                              \
        }                                                                               \
        /* mp / up units of 2^-149: the bits of the subnormal (or of FLT_MIN) */         \
        m = select(m, as_##T(convert_##UT(mp * per)), (m <= (T)(FLT_MIN)) & (e >= -152)); \
        m = as_##T(as_##UT(m) | ((as_##UT(a) ^ as_##UT(b)) & (UT)(0x80000000u)));       \
        IT special = (a == (T)(0.0f)) | (b == (T)(0.0f)) | isinf(a) | isinf(b) | isnan(a) | isnan(b); \
        return select(m, a / b, special);                                               \
    }
QK_DEFINE_DIVF_FIX(qk_divf_fix, float, int, uint)
QK_DEFINE_DIVF_FIX(qk_divf_fix8, float8, int8, uint8)

#if QK_DIV_MODE == 0
#define QK_DIV_float(a, b) ((a) / (b))
#define QK_DIV_float8(a, b) ((a) / (b))
#elif QK_DIV_MODE == 1
#define QK_DIV_float(a, b) ((float)((double)(a) / (double)(b)))
/* b may be a float or a float8: -0.0f + b broadcasts without changing any b */
#define QK_DIV_float8(a, b) convert_float8(convert_double8(a) / convert_double8((float8)(-0.0f) + (b)))
#else
#define QK_DIV_float(a, b) qk_divf_fix((a), (b))
#define QK_DIV_float8(a, b) qk_divf_fix8((a), (float8)(-0.0f) + (b))
#endif
#define QK_DIV_double(a, b) ((a) / (b))
#define QK_DIV_double8(a, b) ((a) / (b))

/* Square root by the same modes (ggml's Q4_K/Q5_K weights): mode 0 the device's
 * sqrt under -cl-fp32-correctly-rounded-divide-sqrt; mode 1 in double (the
 * double sqrt is correctly rounded, and 53 >= 2 * 24 + 2 makes rounding it to
 * float innocuous); mode 2 the device's sqrt (3 ulp) corrected by Tuckerman's
 * test: s is the nearest float to sqrt(f) iff s * s- < f <= s * s+ (s-, s+ its
 * neighbours), each product's sign against f exact from one fma. f is x
 * scaled by an even power of two into [0.5, 2), so nothing overflows or
 * underflows there and the scaling back is exact. Zeros, negatives, infinities
 * and NaN keep the device's sqrt, which IEEE fixes exactly. */
inline float qk_sqrtf_fix(float x)
{
    if (!(x > 0.0f) || isinf(x))
        return sqrt(x);
    int e;
    float f = frexp(x, &e);
    if (e & 1) {
        f *= 2.0f;
        e -= 1;
    }
    float s = sqrt(f);
    for (int i = 0; i < 3; i++) {
        const float lo = nextafter(s, 0.0f), hi = nextafter(s, INFINITY);
        if (fma(s, lo, -f) >= 0.0f)
            s = lo;
        else if (fma(s, hi, -f) < 0.0f)
            s = hi;
    }
    return ldexp(s, e / 2);
}
#if QK_DIV_MODE == 0
#define QK_SQRT_float(v) sqrt(v)
#elif QK_DIV_MODE == 1
#define QK_SQRT_float(v) ((float)sqrt((double)(v)))
#else
#define QK_SQRT_float(v) qk_sqrtf_fix(v)
#endif

/* Source modes of the order-statistics kernels (mirrored in host/opencl/ocl.h). */
#define QK_MODE_SKIP_NONFINITE 1u /* leave NaN/Inf out */
#define QK_MODE_ABS            2u /* keys of |x| */
#define QK_MODE_KEYS           4u /* the source already holds keys (a candidate buffer) */

/* [*b, *e): this work-group's contiguous part of n elements. Parts start at
 * multiples of 64 elements so the vector loops stay whole inside a part. */
inline void qk_part(ulong n, ulong *b, ulong *e)
{
    ulong groups = get_num_groups(0), g = get_group_id(0);
    ulong per = ((n + groups - 1) / groups + 63) & ~(ulong)63;
    ulong lo = per * g, hi = lo + per;
    *b = lo < n ? lo : n;
    *e = hi < n ? hi : n;
}

/* Order-preserving keys (host/cpu/cpu_keys.h): negative floats are bit-flipped,
 * positive ones get the sign bit set, so -0 < +0 and unsigned order is numeric. */
inline uint qk_key32(uint u)
{
    return u ^ ((uint)(as_int(u) >> 31) | 0x80000000u);
}

inline ulong qk_key64(ulong u)
{
    return u ^ ((ulong)(as_long(u) >> 63) | 0x8000000000000000UL);
}

inline uint8 qk_key32x8(uint8 u)
{
    return u ^ (as_uint8(as_int8(u) >> 31) | (uint8)(0x80000000u));
}

inline ulong8 qk_key64x8(ulong8 u)
{
    return u ^ (as_ulong8(as_long8(u) >> 63) | (ulong8)(0x8000000000000000UL));
}

inline int qk_nonfinite32(uint u)
{
    return (u & 0x7f800000u) == 0x7f800000u;
}

inline int qk_nonfinite64(ulong u)
{
    return (u & 0x7ff0000000000000UL) == 0x7ff0000000000000UL;
}

/* Index of the first set lane of a comparison mask (one lane is known set). */
inline uint qk_first_lane8(int8 m)
{
    return m.s0 ? 0u : m.s1 ? 1u : m.s2 ? 2u : m.s3 ? 3u : m.s4 ? 4u : m.s5 ? 5u : m.s6 ? 6u : 7u;
}

inline uint qk_first_lane8l(long8 m)
{
    return m.s0 ? 0u : m.s1 ? 1u : m.s2 ? 2u : m.s3 ? 3u : m.s4 ? 4u : m.s5 ? 5u : m.s6 ? 6u : 7u;
}
