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
 * Exactness (DESIGN.md): no contraction into fma anywhere, correctly rounded
 * float division (the host builds with -cl-fp32-correctly-rounded-divide-sqrt),
 * rint for round-half-even, clamps before any float -> int conversion. */
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

/* Round half to even. rint() is exactly that in the default rounding mode, but
 * PoCL implements the vector rint in ~25 instructions; clang's roundeven builtin
 * becomes one vroundps (2.4x faster error pass on PoCL). Same results for every
 * input (NaN, +-Inf and -0 included). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_elementwise_roundeven)
#define QK_RINT(v) __builtin_elementwise_roundeven(v)
#endif
#endif
#ifndef QK_RINT
#define QK_RINT(v) rint(v)
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
