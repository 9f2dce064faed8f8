/* The fused error pass: for k parameter sets at once, over finite elements,
 *   sse     = sum of (x - dequant(quant(x)))^2          (double)
 *   sse_in  = the same over fence_lo <= x <= fence_hi   (double)
 *   clipped = count of x outside [clip_lo, clip_hi]
 * plus, once, the finite / inlier / non-finite counts and the first non-finite.
 *
 * A FIXED reduction structure, defined on the element index within the launch
 * (launches start at multiples of a super-block, so this is the tensor's global
 * index), makes the sums independent of launch shape, chunking and runs:
 *   - a super-block is 65536 elements, split into 16 blocks of 4096;
 *   - in a block, lane j (0..7) sums e^2 of elements b0 + 8r + j for r = 0..511
 *     in order, starting from +0 (a skipped element adds nothing, like +0);
 *   - block sum = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7));
 *   - super-block sum = ((0 + block0) + block1) + ... + block15;
 *   - the host adds the super-block sums in index order.
 * The CPU kernels (QK_WG == 1) keep the eight lanes in a double8 and loop over
 * the k parameter sets per block, so each block is read from memory once and
 * then from cache; the GPU kernels give each super-block a work-group of 128
 * work-items (one per block lane) and reduce in local memory. Both do the same
 * IEEE operations in the same order: the same bits.
 *
 * Per-element arithmetic, equal to host/quant_math.h: r = rint(x / scale) (float
 * division for float32 input, QK_DIV_float, double for float64); q - zp = clamp(r, qmin - zp,
 * qmax - zp). For float32 the clamp runs in float against RTE-rounded bounds,
 * which commutes with the rounding of (float)(q - zp) because rounding is
 * monotonic; xhat = (float)(q - zp) * scale; e = (double)x - (double)xhat.
 * Comparisons of float32 x with the double clip/fence values use float bounds
 * rounded outward by the host, which give the same answers.
 *
 * Per candidate c: prm[8c + 0..4] = scale, lo, hi, clip_lo, clip_hi as floats;
 * float64 input reads prmd[4c + 0..3] = lo, hi, clip_lo, clip_hi as doubles.
 * Outputs per super-block s of the launch: sse[s*k + c], sse_in[s*k + c],
 * clip[s*k + c], cnt[4s + 0..3] = finite, inliers, non-finite, and the offset of the
 * first non-finite within the super-block (or QK_NONE). */

#if QK_FP64

#define QK_SB 65536UL
#define QK_BLK 4096UL

inline long qk_hsum_i8(int8 v)
{
    int4 a = v.lo + v.hi;
    return (long)a.s0 + a.s1 + a.s2 + a.s3;
}

inline long qk_hsum_l8(long8 v)
{
    long4 a = v.lo + v.hi;
    return a.s0 + a.s1 + a.s2 + a.s3;
}

inline double qk_tree8(double8 a)
{
    return ((a.s0 + a.s1) + (a.s2 + a.s3)) + ((a.s4 + a.s5) + (a.s6 + a.s7));
}

inline double qk_tree8l(__local const double *a)
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* ---- per-type plumbing (P = QK_F32 or QK_F64) ----------------------------------- */

#define QK_F32_T float
#define QK_F32_V float8
#define QK_F32_M int8
#define QK_F32_HSUM(M) qk_hsum_i8(M)
#define QK_F32_LANES ((int8)(0, 1, 2, 3, 4, 5, 6, 7))
#define QK_F32_TOLONG(M) convert_long8(M)
#define QK_F32_NONFIN8(V) ((as_uint8(V) & (uint8)(0x7f800000u)) == (uint8)(0x7f800000u))
#define QK_F32_NONFIN(V) qk_nonfinite32(as_uint(V))
#define QK_F32_PARAMS                                                                   \
    float s = prm[8 * c], lo = prm[8 * c + 1], hi = prm[8 * c + 2];                     \
    float clo = prm[8 * c + 3], chi = prm[8 * c + 4]
#define QK_F32_FENCES float flo = fence_lo_f, fhi = fence_hi_f
#define QK_F32_ERR1(V) qk_err1_f32((V), s, lo, hi)

#define QK_F64_T double
#define QK_F64_V double8
#define QK_F64_M long8
#define QK_F64_HSUM(M) qk_hsum_l8(M)
#define QK_F64_LANES ((long8)(0, 1, 2, 3, 4, 5, 6, 7))
#define QK_F64_TOLONG(M) (M)
#define QK_F64_NONFIN8(V) ((as_ulong8(V) & (ulong8)(0x7ff0000000000000UL)) == (ulong8)(0x7ff0000000000000UL))
#define QK_F64_NONFIN(V) qk_nonfinite64(as_ulong(V))
#define QK_F64_PARAMS                                                                   \
    float s = prm[8 * c];                                                               \
    double lo = prmd[4 * c], hi = prmd[4 * c + 1], clo = prmd[4 * c + 2], chi = prmd[4 * c + 3]
#define QK_F64_FENCES double flo = fence_lo_d, fhi = fence_hi_d
#define QK_F64_ERR1(V) qk_err1_f64((V), s, lo, hi)

inline double8 qk_err8_f32(float8 v, float s, float lo, float hi)
{
    float8 r = QK_RINT(QK_DIV_float8(v, s));
    r = select(r, (float8)(lo), r < lo);
    r = select(r, (float8)(hi), r > hi);
    return convert_double8(v) - convert_double8(r * s);
}

inline double8 qk_err8_f64(double8 v, float s, double lo, double hi)
{
    double8 r = QK_RINT(v / (double)s);
    r = select(r, (double8)(lo), r < lo);
    r = select(r, (double8)(hi), r > hi);
    return v - convert_double8(convert_float8(r) * s);
}

inline double qk_err1_f32(float v, float s, float lo, float hi)
{
    float r = QK_RINT(QK_DIV_float(v, s));
    r = r < lo ? lo : r;
    r = r > hi ? hi : r;
    return (double)v - (double)(r * s);
}

inline double qk_err1_f64(double v, float s, double lo, double hi)
{
    double r = QK_RINT(v / (double)s);
    r = r < lo ? lo : r;
    r = r > hi ? hi : r;
    return v - (double)((float)r * s);
}

#define QK_F32_E8(V) qk_err8_f32((V), s, lo, hi)
#define QK_F64_E8(V) qk_err8_f64((V), s, lo, hi)

#define QK_ERROR_ARGS(T)                                                                \
    __global const T *x, ulong off, ulong n, __global const float *prm,                \
        __global const double *prmd, uint k, float fence_lo_f, float fence_hi_f,       \
        double fence_lo_d, double fence_hi_d, int fences, __global double *o_sse,      \
        __global double *o_in, __global uint *o_clip, __global ulong *o_cnt

/* One row of eight elements V for one candidate. The general form: MASK (P##_M)
 * marks the lanes that count, and a masked lane adds +0, which changes no sum. */
#define QK_ERR_ROW(P, V, MASK)                                                          \
    do {                                                                                \
        double8 e_ = P##_E8(V);                                                         \
        double8 e2_ = select((double8)(0.0), e_ * e_, P##_TOLONG(MASK));                \
        a += e2_;                                                                       \
        if (fences) ai += select((double8)(0.0), e2_, P##_TOLONG(((V) >= flo) & ((V) <= fhi))); \
        cl += (((V) < clo) | ((V) > chi)) & (MASK);                                     \
    } while (0)

/* The common cases, without loop-invariant tests: every element finite, and
 * either no element of the block outside the fences (then sse_in's lanes are
 * sse's, bit for bit) or some. */
#define QK_ERR_ROW_PLAIN(P, V)                                                          \
    do {                                                                                \
        double8 e_ = P##_E8(V);                                                         \
        a += e_ * e_;                                                                   \
        cl += ((V) < clo) | ((V) > chi);                                                \
    } while (0)

#define QK_ERR_ROW_FENCED(P, V)                                                         \
    do {                                                                                \
        double8 e_ = P##_E8(V);                                                         \
        double8 e2_ = e_ * e_;                                                          \
        a += e2_;                                                                       \
        ai += select((double8)(0.0), e2_, P##_TOLONG(((V) >= flo) & ((V) <= fhi)));     \
        cl += ((V) < clo) | ((V) > chi);                                                \
    } while (0)

/* One super-block [S0, S1) of XS (indices relative to XS) for the k
 * candidates: the sums into PS[c], PI[c], PC[c], the counts into CNT[0..4)
 * (finite, inliers, non-finite, first non-finite relative to S0). The caller
 * has flo, fhi, fences, k and what P##_PARAMS reads in scope. The per-tensor
 * CPU-style kernel and the segmented kernel (segment.cl, either style) both
 * expand it, so a segment's sums are the per-tensor sums by construction. */
#define QK_ERROR_SUPERBLOCK(P, XS, S0, S1, PS, PI, PC, CNT)                                \
    do {                                                                                   \
        __global const P##_T *xs_ = (XS);                                                  \
        ulong sbeg_ = (S0), send_ = (S1);                                                  \
        __global double *ps = (PS), *pi = (PI);                                            \
        __global uint *pc = (PC);                                                          \
        __global ulong *cnt_ = (CNT);                                                      \
        for (uint c = 0; c < k; c++) {                                                     \
            ps[c] = 0.0;                                                                   \
            pi[c] = 0.0;                                                                   \
            pc[c] = 0u;                                                                    \
        }                                                                                  \
        ulong fin = 0, inl = 0, bad = 0, first = QK_NONE;                                  \
        for (ulong b0 = sbeg_; b0 < send_; b0 += QK_BLK) {                                 \
            uint m = (uint)min(QK_BLK, send_ - b0), rows = m / 8, rem = m % 8;             \
            __global const P##_T *xb = xs_ + b0;                                           \
            /* the block's counts, the same for every candidate */                         \
            P##_M vbad = (P##_M)(0), vinl = (P##_M)(0);                                    \
            for (uint r = 0; r < rows; r++) {                                              \
                P##_V v = vload8(r, xb);                                                   \
                P##_M nf = P##_NONFIN8(v);                                                 \
                vbad += nf;                                                                \
                vinl += (v >= flo) & (v <= fhi) & ~nf;                                     \
            }                                                                              \
            ulong nb = (ulong)(-P##_HSUM(vbad)), ni = (ulong)(-P##_HSUM(vinl));            \
            /* the last row of a short block, padded; its lanes past m masked */           \
            P##_T t_[8];                                                                   \
            for (uint j = 0; j < 8; j++) t_[j] = j < rem ? xb[8 * rows + j] : (P##_T)0;    \
            P##_V tail = vload8(0, t_);                                                    \
            P##_M tmask = ~P##_NONFIN8(tail) & (P##_LANES < (P##_M)(rem));                 \
            for (uint j = 0; j < rem; j++) {                                               \
                P##_T v = xb[8 * rows + j];                                                \
                if (P##_NONFIN(v)) nb++;                                                   \
                else ni += v >= flo && v <= fhi;                                           \
            }                                                                              \
            if (nb && first == QK_NONE) {                                                  \
                for (uint j = 0; j < m; j++) {                                             \
                    if (P##_NONFIN(xb[j])) {                                               \
                        first = b0 - sbeg_ + j;                                            \
                        break;                                                             \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            fin += m - nb;                                                                 \
            inl += ni;                                                                     \
            bad += nb;                                                                     \
            /* sse_in needs its own lanes only where an element lies outside the fences */ \
            int outl = fences && ni + nb < m;                                              \
            for (uint c = 0; c < k; c++) {                                                 \
                P##_PARAMS;                                                                \
                double8 a = (double8)(0.0), ai = (double8)(0.0);                           \
                P##_M cl = (P##_M)(0);                                                     \
                if (nb == 0 && !outl) {                                                    \
                    for (uint r = 0; r < rows; r++) {                                      \
                        P##_V v = vload8(r, xb);                                           \
                        QK_ERR_ROW_PLAIN(P, v);                                            \
                    }                                                                      \
                } else if (nb == 0) {                                                      \
                    for (uint r = 0; r < rows; r++) {                                      \
                        P##_V v = vload8(r, xb);                                           \
                        QK_ERR_ROW_FENCED(P, v);                                           \
                    }                                                                      \
                } else {                                                                   \
                    for (uint r = 0; r < rows; r++) {                                      \
                        P##_V v = vload8(r, xb);                                           \
                        QK_ERR_ROW(P, v, ~P##_NONFIN8(v));                                 \
                    }                                                                      \
                }                                                                          \
                if (rem) QK_ERR_ROW(P, tail, tmask);                                       \
                ps[c] += qk_tree8(a);                                                      \
                pi[c] += outl ? qk_tree8(ai) : qk_tree8(a);                                \
                pc[c] += (uint)(-P##_HSUM(cl));                                            \
            }                                                                              \
        }                                                                                  \
        cnt_[0] = fin;                                                                     \
        cnt_[1] = inl;                                                                     \
        cnt_[2] = bad;                                                                     \
        cnt_[3] = first;                                                                   \
    } while (0)

#if QK_WG == 1

/* Work-group g takes a contiguous range of super-blocks. */
#define QK_DEFINE_ERROR(NAME, P)                                                              \
    __kernel void qk_error_##NAME(QK_ERROR_ARGS(P##_T))                                       \
    {                                                                                         \
        P##_FENCES;                                                                           \
        x += off;                                                                             \
        ulong nsb = (n + QK_SB - 1) / QK_SB;                                                  \
        ulong groups = get_num_groups(0), per = (nsb + groups - 1) / groups;                  \
        ulong sb0 = min(nsb, per * get_group_id(0)), sb1 = min(nsb, sb0 + per);               \
        for (ulong sb = sb0; sb < sb1; sb++) {                                                \
            QK_ERROR_SUPERBLOCK(P, x, sb * QK_SB, min(n, sb * QK_SB + QK_SB), o_sse + sb * k, \
                                o_in + sb * k, o_clip + sb * k, o_cnt + 4 * sb);              \
        }                                                                                     \
    }

#else /* QK_WG > 1: a work-group of QK_ERR_WG work-items per super-block */

/* The 128 lanes of a super-block (16 blocks x 8) are fixed by the reduction
 * structure; a work-group of QK_ERR_WG = min(QK_WG, 128) work-items runs them,
 * work-item t taking lanes t, t + QK_ERR_WG, ... Each lane's sum is the same
 * sequence of operations whatever the group size: the same bits. */
#define QK_ERR_WG (QK_WG < 128 ? QK_WG : 128)
#define QK_ERR_LANES(V) for (uint V = get_local_id(0); V < 128u; V += QK_ERR_WG)

#define QK_DEFINE_ERROR(NAME, P)                                                              \
    __kernel void qk_error_##NAME(QK_ERROR_ARGS(P##_T))                                       \
    {                                                                                         \
        __local double l1[128], l2[128], bs[16], bi[16];                                      \
        __local ulong lu[4][128];                                                             \
        P##_FENCES;                                                                           \
        x += off;                                                                             \
        ulong sb = get_group_id(0);                                                           \
        ulong s0 = sb * QK_SB, s1 = min(n, s0 + QK_SB);                                       \
        QK_ERR_LANES(t) {                                                                     \
            ulong b0 = s0 + (t >> 3) * QK_BLK;                                                \
            ulong fin = 0, inl = 0, bad = 0, first = QK_NONE;                                 \
            for (ulong i = b0 + (t & 7); i < min(s1, b0 + QK_BLK); i += 8) {                  \
                P##_T v = x[i];                                                               \
                if (P##_NONFIN(v)) {                                                          \
                    bad++;                                                                    \
                    first = min(first, i - s0);                                               \
                } else {                                                                      \
                    fin++;                                                                    \
                    inl += v >= flo && v <= fhi;                                              \
                }                                                                             \
            }                                                                                 \
            lu[0][t] = fin;                                                                   \
            lu[1][t] = inl;                                                                   \
            lu[2][t] = bad;                                                                   \
            lu[3][t] = first;                                                                 \
        }                                                                                     \
        barrier(CLK_LOCAL_MEM_FENCE);                                                         \
        for (uint h = 64; h > 0; h >>= 1) {                                                   \
            QK_ERR_LANES(t) {                                                                 \
                if (t < h) {                                                                  \
                    lu[0][t] += lu[0][t + h];                                                 \
                    lu[1][t] += lu[1][t + h];                                                 \
                    lu[2][t] += lu[2][t + h];                                                 \
                    lu[3][t] = min(lu[3][t], lu[3][t + h]);                                   \
                }                                                                             \
            }                                                                                 \
            barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        }                                                                                     \
        if (get_local_id(0) == 0) {                                                           \
            o_cnt[4 * sb] = lu[0][0];                                                         \
            o_cnt[4 * sb + 1] = lu[1][0];                                                     \
            o_cnt[4 * sb + 2] = lu[2][0];                                                     \
            o_cnt[4 * sb + 3] = lu[3][0];                                                     \
        }                                                                                     \
        barrier(CLK_LOCAL_MEM_FENCE);                                                         \
        for (uint c = 0; c < k; c++) {                                                        \
            P##_PARAMS;                                                                       \
            QK_ERR_LANES(t) {                                                                 \
                ulong b0 = s0 + (t >> 3) * QK_BLK;                                            \
                double a = 0.0, ai = 0.0;                                                     \
                ulong cl = 0;                                                                 \
                for (ulong i = b0 + (t & 7); i < min(s1, b0 + QK_BLK); i += 8) {              \
                    P##_T v = x[i];                                                           \
                    if (P##_NONFIN(v)) continue;                                              \
                    double e = P##_ERR1(v);                                                   \
                    double e2 = e * e;                                                        \
                    a += e2;                                                                  \
                    if (fences && v >= flo && v <= fhi) ai += e2;                             \
                    cl += v < clo || v > chi;                                                 \
                }                                                                             \
                l1[t] = a;                                                                    \
                l2[t] = fences ? ai : a;                                                      \
                lu[0][t] = cl;                                                                \
            }                                                                                 \
            barrier(CLK_LOCAL_MEM_FENCE);                                                     \
            QK_ERR_LANES(t) {                                                                 \
                if ((t & 7) == 0) {                                                           \
                    bs[t >> 3] = qk_tree8l(l1 + t);                                           \
                    bi[t >> 3] = qk_tree8l(l2 + t);                                           \
                    ulong cs = 0;                                                             \
                    for (uint j = 0; j < 8; j++) cs += lu[0][t + j];                          \
                    lu[1][t >> 3] = cs;                                                       \
                }                                                                             \
            }                                                                                 \
            barrier(CLK_LOCAL_MEM_FENCE);                                                     \
            if (get_local_id(0) == 0) {                                                       \
                double ss = 0.0, si = 0.0;                                                    \
                ulong cs = 0;                                                                 \
                for (uint j = 0; j < 16; j++) {                                               \
                    ss += bs[j];                                                              \
                    si += bi[j];                                                              \
                    cs += lu[1][j];                                                           \
                }                                                                             \
                o_sse[sb * k + c] = ss;                                                       \
                o_in[sb * k + c] = si;                                                        \
                o_clip[sb * k + c] = (uint)cs;                                                \
            }                                                                                 \
            barrier(CLK_LOCAL_MEM_FENCE);                                                     \
        }                                                                                     \
    }

#endif /* QK_WG */

QK_DEFINE_ERROR(f32, QK_F32)
QK_DEFINE_ERROR(f64, QK_F64)

#endif /* QK_FP64 */

#if !QK_FP64
/* ==== the float32 error pass on a device without cl_khr_fp64 ====================
 * The sums are defined in double (docs/numerics.md), so they are computed in double
 * here too, in software: IEEE binary64 bit patterns in ulongs, rounded to
 * nearest even exactly as a double unit would (after Berkeley SoftFloat 3's
 * f64 add, sub and mul). Only what the pass needs: magnitudes (e^2 and its
 * sums are >= 0, and |e| suffices to square), finite normal values (a float
 * difference is >= 2^-149 and its square >= 2^-298: no subnormal, no
 * overflow). The reduction structure is the GPU kernel's, lane for lane, at
 * any work-group size (one work-item runs all 128 lanes in CPU style): the
 * same bits as the fp64 kernels and the CPU reference. */

#define QK_SB 65536UL
#define QK_BLK 4096UL

inline ulong qk_sd_jam(ulong a, uint dist)
{
    return dist < 63 ? (a >> dist) | (ulong)((a << (-dist & 63)) != 0) : (ulong)(a != 0);
}

/* sig has its leading bit at bit 62; round to 53 bits, nearest even */
inline ulong qk_sd_round_pack(int exp, ulong sig)
{
    uint round_bits = (uint)(sig & 0x3ff);
    sig = (sig + 0x200) >> 10;
    sig &= ~(ulong)(round_bits == 0x200);
    if (!sig) exp = 0;
    return ((ulong)exp << 52) + sig;
}

inline ulong qk_sd_norm_round_pack(int exp, ulong sig)
{
    int shift = (int)clz(sig) - 1;
    exp -= shift;
    if (shift >= 10) return sig ? ((ulong)exp << 52) + (sig << (shift - 10)) : 0;
    return qk_sd_round_pack(exp, sig << shift);
}

/* |a| + |b| for positive doubles (bits) */
inline ulong qk_sd_add(ulong a, ulong b)
{
    if (a == 0) return b;
    if (b == 0) return a;
    int ea = (int)(a >> 52), eb = (int)(b >> 52), d = ea - eb, ez;
    ulong sa = a & 0xfffffffffffffUL, sb = b & 0xfffffffffffffUL, sz;
    if (d == 0) {
        ez = ea;
        sz = (0x0020000000000000UL + sa + sb) << 9;
    } else {
        sa <<= 9;
        sb <<= 9;
        if (d < 0) {
            ez = eb;
            sa = qk_sd_jam(sa + 0x2000000000000000UL, (uint)-d);
        } else {
            ez = ea;
            sb = qk_sd_jam(sb + 0x2000000000000000UL, (uint)d);
        }
        sz = 0x2000000000000000UL + sa + sb;
        if (sz < 0x4000000000000000UL) {
            ez--;
            sz <<= 1;
        }
    }
    return qk_sd_round_pack(ez, sz);
}

/* ||a| - |b|| for positive doubles (bits) */
inline ulong qk_sd_absdiff(ulong a, ulong b)
{
    if (a == 0) return b;
    if (b == 0) return a;
    int ea = (int)(a >> 52), eb = (int)(b >> 52), d = ea - eb;
    ulong sa = a & 0xfffffffffffffUL, sb = b & 0xfffffffffffffUL;
    if (d == 0) {
        long diff = (long)sa - (long)sb;
        if (diff == 0) return 0;
        ea--;
        ulong m = (ulong)(diff < 0 ? -diff : diff);
        int shift = (int)clz(m) - 11;
        return ((ulong)(ea - shift) << 52) + (m << shift);
    }
    sa <<= 10;
    sb <<= 10;
    if (d < 0) {
        sa = qk_sd_jam(sa + 0x4000000000000000UL, (uint)-d);
        sb |= 0x4000000000000000UL;
        return qk_sd_norm_round_pack(eb - 1, sb - sa);
    }
    sb = qk_sd_jam(sb + 0x4000000000000000UL, (uint)d);
    sa |= 0x4000000000000000UL;
    return qk_sd_norm_round_pack(ea - 1, sa - sb);
}

/* a * a for a positive double (bits) */
inline ulong qk_sd_square(ulong a)
{
    if (a == 0) return 0;
    int e = (int)(a >> 52);
    ulong s = a & 0xfffffffffffffUL;
    int ez = e + e - 0x3ff;
    ulong sa = (s | 0x0010000000000000UL) << 10, sb = (s | 0x0010000000000000UL) << 11;
    ulong hi = mul_hi(sa, sb), lo = sa * sb;
    ulong sz = hi | (ulong)(lo != 0);
    if (sz < 0x4000000000000000UL) {
        ez--;
        sz <<= 1;
    }
    return qk_sd_round_pack(ez, sz);
}

/* |f| as double bits (exact) */
inline ulong qk_sd_from_float(float f)
{
    uint u = as_uint(f) & 0x7fffffffu;
    if (u == 0) return 0;
    uint e = u >> 23, m = u & 0x7fffffu;
    if (e == 0) { /* subnormal: m * 2^-149, normalised */
        uint p = 31 - clz(m);
        return ((ulong)(p - 149 + 1023) << 52) | ((ulong)((m << (23 - p)) & 0x7fffffu) << 29);
    }
    return ((ulong)(e + 896) << 52) | ((ulong)m << 29);
}

/* e^2 of one element, as double bits: qk_err1_f32 of the fp64 build, in software */
inline ulong qk_sd_err2_f32(float v, float s, float lo, float hi)
{
    float r = QK_RINT(QK_DIV_float(v, s));
    r = r < lo ? lo : r;
    r = r > hi ? hi : r;
    float xh = r * s;
    ulong a = qk_sd_from_float(v), b = qk_sd_from_float(xh);
    ulong e = (as_uint(v) ^ as_uint(xh)) >> 31 ? qk_sd_add(a, b) : qk_sd_absdiff(a, b);
    return qk_sd_square(e);
}

inline ulong qk_sd_tree8l(__local const ulong *a)
{
    return qk_sd_add(qk_sd_add(qk_sd_add(a[0], a[1]), qk_sd_add(a[2], a[3])),
                     qk_sd_add(qk_sd_add(a[4], a[5]), qk_sd_add(a[6], a[7])));
}

#define QK_ERR_WG (QK_WG < 128 ? QK_WG : 128)
#define QK_ERR_LANES(V) for (uint V = get_local_id(0); V < 128u; V += QK_ERR_WG)

__kernel void qk_error_f32(__global const float *x, ulong off, ulong n, __global const float *prm,
                           __global const ulong *prmd, uint k, float flo, float fhi, ulong fence_lo_d,
                           ulong fence_hi_d, int fences, __global ulong *o_sse, __global ulong *o_in,
                           __global uint *o_clip, __global ulong *o_cnt)
{
    __local ulong l1[128], l2[128], bs[16], bi[16];
    __local ulong lu[4][128];
    x += off;
    ulong sb = get_group_id(0);
    ulong s0 = sb * QK_SB, s1 = min(n, s0 + QK_SB);
    QK_ERR_LANES(t) {
        ulong b0 = s0 + (t >> 3) * QK_BLK;
        ulong fin = 0, inl = 0, bad = 0, first = QK_NONE;
        for (ulong i = b0 + (t & 7); i < min(s1, b0 + QK_BLK); i += 8) {
            float v = x[i];
            if (qk_nonfinite32(as_uint(v))) {
                bad++;
                first = min(first, i - s0);
            } else {
                fin++;
                inl += v >= flo && v <= fhi;
            }
        }
        lu[0][t] = fin;
        lu[1][t] = inl;
        lu[2][t] = bad;
        lu[3][t] = first;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint h = 64; h > 0; h >>= 1) {
        QK_ERR_LANES(t) {
            if (t < h) {
                lu[0][t] += lu[0][t + h];
                lu[1][t] += lu[1][t + h];
                lu[2][t] += lu[2][t + h];
                lu[3][t] = min(lu[3][t], lu[3][t + h]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (get_local_id(0) == 0) {
        o_cnt[4 * sb] = lu[0][0];
        o_cnt[4 * sb + 1] = lu[1][0];
        o_cnt[4 * sb + 2] = lu[2][0];
        o_cnt[4 * sb + 3] = lu[3][0];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint c = 0; c < k; c++) {
        float s = prm[8 * c], lo = prm[8 * c + 1], hi = prm[8 * c + 2];
        float clo = prm[8 * c + 3], chi = prm[8 * c + 4];
        QK_ERR_LANES(t) {
            ulong b0 = s0 + (t >> 3) * QK_BLK;
            ulong a = 0, ai = 0, cl = 0;
            for (ulong i = b0 + (t & 7); i < min(s1, b0 + QK_BLK); i += 8) {
                float v = x[i];
                if (qk_nonfinite32(as_uint(v))) continue;
                ulong e2 = qk_sd_err2_f32(v, s, lo, hi);
                a = qk_sd_add(a, e2);
                if (fences && v >= flo && v <= fhi) ai = qk_sd_add(ai, e2);
                cl += v < clo || v > chi;
            }
            l1[t] = a;
            l2[t] = fences ? ai : a;
            lu[0][t] = cl;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        QK_ERR_LANES(t) {
            if ((t & 7) == 0) {
                bs[t >> 3] = qk_sd_tree8l(l1 + t);
                bi[t >> 3] = qk_sd_tree8l(l2 + t);
                ulong cs = 0;
                for (uint j = 0; j < 8; j++) cs += lu[0][t + j];
                lu[1][t >> 3] = cs;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (get_local_id(0) == 0) {
            ulong ss = 0, si = 0, cs = 0;
            for (uint j = 0; j < 16; j++) {
                ss = qk_sd_add(ss, bs[j]);
                si = qk_sd_add(si, bi[j]);
                cs += lu[1][j];
            }
            o_sse[sb * k + c] = ss;
            o_in[sb * k + c] = si;
            o_clip[sb * k + c] = (uint)cs;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
#endif /* !QK_FP64 */
