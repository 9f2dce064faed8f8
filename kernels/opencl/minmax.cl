/* Exact min/max by order-preserving integer keys (-0 orders before +0), with the
 * non-finite count and the first non-finite index. One record per work-group:
 *   out[5g + 0] smallest key of the finite elements (all ones if none)
 *   out[5g + 1] largest key (0 if none)
 *   out[5g + 2] non-finite elements
 *   out[5g + 3] index (within this launch) of the first non-finite, or QK_NONE
 *   out[5g + 4] elements of the part
 * The host combines the records in work-group order, so the first non-finite
 * index is the lowest one whatever the launch shape. */

#define QK_MM_REC 5

#define QK_MINMAX_REDUCE_AND_STORE(OUT, KMIN, KMAX, BAD, FIRST, COUNT)                     \
    do {                                                                                   \
        QK_MINMAX_WG_REDUCE(KMIN, KMAX, BAD, FIRST);                                       \
        if (get_local_id(0) == 0) {                                                        \
            __global ulong *r_ = (OUT) + QK_MM_REC * (ulong)get_group_id(0);               \
            r_[0] = (KMIN);                                                                \
            r_[1] = (KMAX);                                                                \
            r_[2] = (BAD);                                                                 \
            r_[3] = (FIRST);                                                               \
            r_[4] = (COUNT);                                                               \
        }                                                                                  \
    } while (0)

#if QK_WG > 1
/* Tree over the work-group in local memory (no work-group collectives: PoCL
 * and OpenCL 1.2 have none). */
#define QK_MINMAX_WG_REDUCE(KMIN, KMAX, BAD, FIRST)                                        \
    do {                                                                                   \
        uint l_ = get_local_id(0);                                                         \
        lmin[l_] = (KMIN);                                                                 \
        lmax[l_] = (KMAX);                                                                 \
        lbad[l_] = (BAD);                                                                  \
        lfirst[l_] = (FIRST);                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                      \
        for (uint s_ = QK_WG / 2; s_ > 0; s_ >>= 1) {                                      \
            if (l_ < s_) {                                                                 \
                lmin[l_] = min(lmin[l_], lmin[l_ + s_]);                                   \
                lmax[l_] = max(lmax[l_], lmax[l_ + s_]);                                   \
                lbad[l_] += lbad[l_ + s_];                                                 \
                lfirst[l_] = min(lfirst[l_], lfirst[l_ + s_]);                             \
            }                                                                              \
            barrier(CLK_LOCAL_MEM_FENCE);                                                  \
        }                                                                                  \
        KMIN = lmin[0];                                                                    \
        KMAX = lmax[0];                                                                    \
        BAD = lbad[0];                                                                     \
        FIRST = lfirst[0];                                                                 \
    } while (0)
#define QK_MINMAX_LOCALS __local ulong lmin[QK_WG], lmax[QK_WG], lbad[QK_WG], lfirst[QK_WG]
#else
#define QK_MINMAX_WG_REDUCE(KMIN, KMAX, BAD, FIRST) do { } while (0)
#define QK_MINMAX_LOCALS
#endif

/* Each work-item reads rows of 16 elements (two vectors, for ILP): rows
 * b + 16*(lid + WG*t) that fit in [b, e), then the tail one by one. The loop
 * only counts non-finite values (a test per row for the first one costs ~30%
 * on PoCL); a work-item that saw any walks its own elements again, in the same
 * order, for the first index, which is rare. */
#define QK_MINMAX_SCAN_FIRST(NONFIN)                                                           \
    do {                                                                                       \
        for (ulong i = b + 16 * (ulong)lid; i + 16 <= e && first == QK_NONE;                   \
             i += 16 * (ulong)QK_WG) {                                                         \
            for (uint j = 0; j < 16; j++) {                                                    \
                if (NONFIN(x[i + j])) {                                                        \
                    first = i + j;                                                             \
                    break;                                                                     \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (ulong i = vend + lid; i < e && first == QK_NONE; i += QK_WG) {                     \
            if (NONFIN(x[i])) first = i;                                                       \
        }                                                                                      \
    } while (0)

/* The keys' min and max and the non-finite count of x[b, e) as one work-item
 * of step reads them: rows of 16 elements (two vectors, for ILP) starting at
 * b + 16*lid, every 16*step, that fit in [b, e), then the tail one by one from
 * vend + lid. Non-finite lanes are neutral (all ones for min, 0 for max). The
 * per-tensor kernels call it with (lid, QK_WG); a single work-item walking a
 * piece of a segment (segment.cl) with (0, 1). */
inline void qk_minmax32_range(__global const uint *restrict x, ulong b, ulong e, uint lid, uint step, uint *kmin_out,
                              uint *kmax_out, ulong *bad_out)
{
    uint8 vmin0 = (uint8)(0xffffffffu), vmax0 = (uint8)(0u), vmin1 = vmin0, vmax1 = vmax0;
    int8 vbad0 = (int8)(0), vbad1 = vbad0;
    ulong vend = b + ((e - b) & ~(ulong)15);
    for (ulong i = b + 16 * (ulong)lid; i < vend; i += 16 * (ulong)step) {
        uint8 u0 = vload8(0, x + i), u1 = vload8(1, x + i);
        int8 nf0 = (u0 & (uint8)(0x7f800000u)) == (uint8)(0x7f800000u);
        int8 nf1 = (u1 & (uint8)(0x7f800000u)) == (uint8)(0x7f800000u);
        uint8 k0 = qk_key32x8(u0), k1 = qk_key32x8(u1);
        vmin0 = min(vmin0, k0 | as_uint8(nf0));
        vmax0 = max(vmax0, k0 & ~as_uint8(nf0));
        vmin1 = min(vmin1, k1 | as_uint8(nf1));
        vmax1 = max(vmax1, k1 & ~as_uint8(nf1));
        vbad0 += nf0;
        vbad1 += nf1;
    }
    vmin0 = min(vmin0, vmin1);
    vmax0 = max(vmax0, vmax1);
    vbad0 += vbad1;
    uint4 m4 = min(vmin0.lo, vmin0.hi), x4 = max(vmax0.lo, vmax0.hi);
    uint kmin = min(min(m4.s0, m4.s1), min(m4.s2, m4.s3));
    uint kmax = max(max(x4.s0, x4.s1), max(x4.s2, x4.s3));
    int4 b4 = vbad0.lo + vbad0.hi;
    ulong bad = (ulong)(-(long)(b4.s0 + b4.s1 + b4.s2 + b4.s3));
    for (ulong i = vend + lid; i < e; i += step) {
        uint u = x[i];
        if (qk_nonfinite32(u)) {
            bad++;
        } else {
            uint k = qk_key32(u);
            kmin = min(kmin, k);
            kmax = max(kmax, k);
        }
    }
    *kmin_out = kmin;
    *kmax_out = kmax;
    *bad_out = bad;
}

/* The same for float64 bit patterns (no fp64 needed). */
inline void qk_minmax64_range(__global const ulong *restrict x, ulong b, ulong e, uint lid, uint step,
                              ulong *kmin_out, ulong *kmax_out, ulong *bad_out)
{
    ulong8 vmin0 = (ulong8)(QK_NONE), vmax0 = (ulong8)(0UL), vmin1 = vmin0, vmax1 = vmax0;
    long8 vbad0 = (long8)(0L), vbad1 = vbad0;
    ulong vend = b + ((e - b) & ~(ulong)15);
    for (ulong i = b + 16 * (ulong)lid; i < vend; i += 16 * (ulong)step) {
        ulong8 u0 = vload8(0, x + i), u1 = vload8(1, x + i);
        long8 nf0 = (u0 & (ulong8)(0x7ff0000000000000UL)) == (ulong8)(0x7ff0000000000000UL);
        long8 nf1 = (u1 & (ulong8)(0x7ff0000000000000UL)) == (ulong8)(0x7ff0000000000000UL);
        ulong8 k0 = qk_key64x8(u0), k1 = qk_key64x8(u1);
        vmin0 = min(vmin0, k0 | as_ulong8(nf0));
        vmax0 = max(vmax0, k0 & ~as_ulong8(nf0));
        vmin1 = min(vmin1, k1 | as_ulong8(nf1));
        vmax1 = max(vmax1, k1 & ~as_ulong8(nf1));
        vbad0 += nf0;
        vbad1 += nf1;
    }
    vmin0 = min(vmin0, vmin1);
    vmax0 = max(vmax0, vmax1);
    vbad0 += vbad1;
    ulong4 m4 = min(vmin0.lo, vmin0.hi), x4 = max(vmax0.lo, vmax0.hi);
    ulong kmin = min(min(m4.s0, m4.s1), min(m4.s2, m4.s3));
    ulong kmax = max(max(x4.s0, x4.s1), max(x4.s2, x4.s3));
    long4 b4 = vbad0.lo + vbad0.hi;
    ulong bad = (ulong)(-(b4.s0 + b4.s1 + b4.s2 + b4.s3));
    for (ulong i = vend + lid; i < e; i += step) {
        ulong u = x[i];
        if (qk_nonfinite64(u)) {
            bad++;
        } else {
            ulong k = qk_key64(u);
            kmin = min(kmin, k);
            kmax = max(kmax, k);
        }
    }
    *kmin_out = kmin;
    *kmax_out = kmax;
    *bad_out = bad;
}

/* float32 data, read as its bit patterns. */
__kernel void qk_minmax32(__global const uint *restrict x, ulong off, ulong n, __global ulong *out)
{
    QK_MINMAX_LOCALS;
    x += off;
    ulong b, e;
    qk_part(n, &b, &e);
    uint lid = get_local_id(0);
    ulong vend = b + ((e - b) & ~(ulong)15), bad;
    uint kmin, kmax;
    qk_minmax32_range(x, b, e, lid, QK_WG, &kmin, &kmax, &bad);
    ulong first = QK_NONE;
    if (bad) QK_MINMAX_SCAN_FIRST(qk_nonfinite32);
    ulong lo = kmin, hi = kmax;
    QK_MINMAX_REDUCE_AND_STORE(out, lo, hi, bad, first, e - b);
}

/* float64 data, read as its bit patterns (no fp64 needed). */
__kernel void qk_minmax64(__global const ulong *restrict x, ulong off, ulong n, __global ulong *out)
{
    QK_MINMAX_LOCALS;
    x += off;
    ulong b, e;
    qk_part(n, &b, &e);
    uint lid = get_local_id(0);
    ulong vend = b + ((e - b) & ~(ulong)15), kmin, kmax, bad;
    qk_minmax64_range(x, b, e, lid, QK_WG, &kmin, &kmax, &bad);
    ulong first = QK_NONE;
    if (bad) QK_MINMAX_SCAN_FIRST(qk_nonfinite64);
    QK_MINMAX_REDUCE_AND_STORE(out, kmin, kmax, bad, first, e - b);
}
