/* The select's first pass when the host could predict, from a strided sample,
 * a key window [lo_j, hi_j] around each target rank (ocl_prefilter.c): one pass
 * that counts, per window, the keys below and above it, and copies the keys
 * inside the windows into a candidate buffer. Only vector compares and counts
 * per element, no histogram increments, so it runs at memory speed; the host
 * then checks with the exact counts that every rank fell in its window (else
 * it falls back to the plain radix passes) and radix-selects the candidates.
 *
 * Keys are compared as signed integers: ks = key ^ sign bit, which for a float
 * is its bits with the magnitude flipped when negative (the host passes the
 * window bounds in the same form). Per work-group record (QK_PF_REC ulongs):
 * [0] keys counted, [1 + j] keys below window j, [1 + QK_PF_MAX + j] keys above.
 * At most cap candidates are written; the counter counts them all, so the host
 * sees an overflow. */

#define QK_PF_MAX 8
#define QK_PF_REC (1 + 2 * QK_PF_MAX)
#define QK_PF_TILE (QK_WG == 1 ? 1024u : 4u * QK_WG)

#if QK_WG == 1
/* Write the tile's kept keys (c of them) at space reserved from the counter. */
#define QK_PF_FLUSH(UT)                                                                       \
    do {                                                                                      \
        if (c) {                                                                              \
            uint base_ = atomic_add(counter, c);                                              \
            for (uint j_ = 0; j_ < c && base_ + j_ < cap; j_++) out[base_ + j_] = lbuf[j_];   \
        }                                                                                     \
    } while (0)

#define QK_DEFINE_PREFILTER(W, NR, UT, ST, V8, SV8, UV8, SHIFT, MAGMASK, EXPMASK, SIGNBIT)        \
    __kernel void qk_prefilter##W##_##NR(__global const UT *restrict x, ulong off, ulong n,        \
                                         uint mode, uint nr, __global const ST *restrict bnd,     \
                                         __global UT *restrict out, uint cap,                     \
                                         __global uint *counter, __global ulong *counts)          \
    {                                                                                             \
        __local UT lbuf[QK_PF_TILE + 8];                                                          \
        ST lo[QK_PF_MAX], hi[QK_PF_MAX];                                                          \
        SV8 clt[QK_PF_MAX], cgt[QK_PF_MAX];                                                       \
        /* ranges past nr are empty (lo > hi): they never keep a key */                          \
        for (uint j = 0; j < QK_PF_MAX; j++) {                                                    \
            lo[j] = j < nr ? bnd[2 * j] : (ST)1;                                                  \
            hi[j] = j < nr ? bnd[2 * j + 1] : (ST)0;                                              \
            clt[j] = (SV8)(0);                                                                    \
            cgt[j] = (SV8)(0);                                                                    \
        }                                                                                         \
        UT absmask = (mode & QK_MODE_ABS) ? (UT)MAGMASK : (UT)~(UT)0;                             \
        int skip = (mode & QK_MODE_SKIP_NONFINITE) != 0;                                          \
        ulong sl[QK_PF_MAX], sg[QK_PF_MAX], valid = 0;                                            \
        for (uint j = 0; j < QK_PF_MAX; j++) sl[j] = sg[j] = 0;                                   \
        SV8 cval = (SV8)(0);                                                                      \
        x += off;                                                                                 \
        ulong b, e;                                                                               \
        qk_part(n, &b, &e);                                                                       \
        for (ulong t = b; t < e; t += QK_PF_TILE) {                                               \
            ulong te = min(e, t + QK_PF_TILE), i = t;                                             \
            uint c = 0;                                                                           \
            for (; i + 8 <= te; i += 8) {                                                         \
                SV8 s = as_##SV8(vload8(0, x + i) & absmask);                                     \
                SV8 ok = skip ? ((s & (ST)EXPMASK) != (SV8)((ST)EXPMASK)) : (SV8)(-1);            \
                SV8 ks = s ^ ((s >> SHIFT) & (ST)MAGMASK);                                        \
                SV8 keep = (SV8)(0);                                                              \
                for (uint j = 0; j < NR; j++) {                                                   \
                    SV8 l = ks < lo[j], g = ks > hi[j];                                           \
                    clt[j] += l & ok;                                                             \
                    cgt[j] += g & ok;                                                             \
                    keep |= ~(l | g);                                                             \
                }                                                                                 \
                keep &= ok;                                                                       \
                cval += ok;                                                                       \
                if (any(keep)) {                                                                  \
                    UV8 k = as_##UV8(ks) ^ (UT)SIGNBIT;                                           \
                    lbuf[c] = k.s0; c -= (uint)keep.s0;                                           \
                    lbuf[c] = k.s1; c -= (uint)keep.s1;                                           \
                    lbuf[c] = k.s2; c -= (uint)keep.s2;                                           \
                    lbuf[c] = k.s3; c -= (uint)keep.s3;                                           \
                    lbuf[c] = k.s4; c -= (uint)keep.s4;                                           \
                    lbuf[c] = k.s5; c -= (uint)keep.s5;                                           \
                    lbuf[c] = k.s6; c -= (uint)keep.s6;                                           \
                    lbuf[c] = k.s7; c -= (uint)keep.s7;                                           \
                }                                                                                 \
            }                                                                                     \
            for (; i < te; i++) {                                                                 \
                ST s = (ST)(x[i] & absmask);                                                      \
                if (skip && (s & (ST)EXPMASK) == (ST)EXPMASK) continue;                           \
                ST ks = s ^ ((s >> SHIFT) & (ST)MAGMASK);                                         \
                int kept = 0;                                                                     \
                for (uint j = 0; j < NR; j++) {                                                   \
                    sl[j] += ks < lo[j];                                                          \
                    sg[j] += ks > hi[j];                                                          \
                    kept |= ks >= lo[j] && ks <= hi[j];                                           \
                }                                                                                 \
                valid++;                                                                          \
                lbuf[c] = (UT)ks ^ (UT)SIGNBIT;                                                   \
                c += (uint)kept;                                                                  \
            }                                                                                     \
            QK_PF_FLUSH(UT);                                                                      \
        }                                                                                         \
        __global ulong *rec = counts + QK_PF_REC * (ulong)get_group_id(0);                        \
        rec[0] = valid + (ulong)(-qk_hsum_##W(cval));                                             \
        for (uint j = 0; j < QK_PF_MAX; j++) {                                                    \
            rec[1 + j] = sl[j] + (ulong)(-qk_hsum_##W(clt[j]));                                   \
            rec[1 + QK_PF_MAX + j] = sg[j] + (ulong)(-qk_hsum_##W(cgt[j]));                       \
        }                                                                                         \
    }

inline long qk_hsum_32(int8 v)
{
    int4 a = v.lo + v.hi;
    return (long)a.s0 + a.s1 + a.s2 + a.s3;
}

inline long qk_hsum_64(long8 v)
{
    long4 a = v.lo + v.hi;
    return a.s0 + a.s1 + a.s2 + a.s3;
}

#else /* GPU style: scalar per work-item, local-memory compaction and count tree */

#define QK_DEFINE_PREFILTER(W, NR, UT, ST, V8, SV8, UV8, SHIFT, MAGMASK, EXPMASK, SIGNBIT)        \
    __kernel void qk_prefilter##W##_##NR(__global const UT *restrict x, ulong off, ulong n,        \
                                         uint mode, uint nr, __global const ST *restrict bnd,     \
                                         __global UT *restrict out, uint cap,                     \
                                         __global uint *counter, __global ulong *counts)          \
    {                                                                                             \
        __local UT lbuf[QK_PF_TILE];                                                              \
        __local uint lcount, lbase;                                                               \
        __local ulong lred[QK_WG];                                                                \
        uint lid = get_local_id(0);                                                               \
        ST lo[QK_PF_MAX], hi[QK_PF_MAX];                                                          \
        uint sl[QK_PF_MAX], sg[QK_PF_MAX], valid = 0;                                             \
        for (uint j = 0; j < QK_PF_MAX; j++) {                                                    \
            lo[j] = j < nr ? bnd[2 * j] : 0;                                                      \
            hi[j] = j < nr ? bnd[2 * j + 1] : 0;                                                  \
            sl[j] = sg[j] = 0;                                                                    \
        }                                                                                         \
        UT absmask = (mode & QK_MODE_ABS) ? (UT)MAGMASK : (UT)~(UT)0;                             \
        int skip = (mode & QK_MODE_SKIP_NONFINITE) != 0;                                          \
        x += off;                                                                                 \
        ulong b, e;                                                                               \
        qk_part(n, &b, &e);                                                                       \
        for (ulong t = b; t < e; t += QK_PF_TILE) {                                               \
            ulong te = min(e, t + QK_PF_TILE);                                                    \
            if (lid == 0) lcount = 0;                                                             \
            barrier(CLK_LOCAL_MEM_FENCE);                                                         \
            for (ulong i = t + lid; i < te; i += QK_WG) {                                         \
                ST s = (ST)(x[i] & absmask);                                                      \
                if (skip && (s & (ST)EXPMASK) == (ST)EXPMASK) continue;                           \
                ST ks = s ^ ((s >> SHIFT) & (ST)MAGMASK);                                         \
                int kept = 0;                                                                     \
                for (uint j = 0; j < nr; j++) {                                                   \
                    sl[j] += ks < lo[j];                                                          \
                    sg[j] += ks > hi[j];                                                          \
                    kept |= ks >= lo[j] && ks <= hi[j];                                           \
                }                                                                                 \
                valid++;                                                                          \
                if (kept) lbuf[atomic_inc(&lcount)] = (UT)ks ^ (UT)SIGNBIT;                       \
            }                                                                                     \
            barrier(CLK_LOCAL_MEM_FENCE);                                                         \
            if (lid == 0) lbase = lcount ? atomic_add(counter, lcount) : 0u;                      \
            barrier(CLK_LOCAL_MEM_FENCE);                                                         \
            for (uint j = lid; j < lcount; j += QK_WG) {                                          \
                if (lbase + j < cap) out[lbase + j] = lbuf[j];                                    \
            }                                                                                     \
            barrier(CLK_LOCAL_MEM_FENCE);                                                         \
        }                                                                                         \
        __global ulong *rec = counts + QK_PF_REC * (ulong)get_group_id(0);                        \
        for (uint r = 0; r < QK_PF_REC; r++) {                                                    \
            lred[lid] = r == 0 ? valid : r <= QK_PF_MAX ? sl[r - 1] : sg[r - 1 - QK_PF_MAX];      \
            barrier(CLK_LOCAL_MEM_FENCE);                                                         \
            for (uint h = QK_WG / 2; h > 0; h >>= 1) {                                            \
                if (lid < h) lred[lid] += lred[lid + h];                                          \
                barrier(CLK_LOCAL_MEM_FENCE);                                                     \
            }                                                                                     \
            if (lid == 0) rec[r] = lred[0];                                                       \
            barrier(CLK_LOCAL_MEM_FENCE);                                                         \
        }                                                                                         \
    }

#endif

/* Three instances per key width: up to 2 ranges (the common case: a few
 * percentiles), 4 and QK_PF_MAX, so the range loops unroll and the
 * counters stay in registers. */
QK_DEFINE_PREFILTER(32, 2, uint, int, uint8, int8, uint8, 31, 0x7fffffff, 0x7f800000, 0x80000000u)
QK_DEFINE_PREFILTER(32, 4, uint, int, uint8, int8, uint8, 31, 0x7fffffff, 0x7f800000, 0x80000000u)
QK_DEFINE_PREFILTER(32, 8, uint, int, uint8, int8, uint8, 31, 0x7fffffff, 0x7f800000, 0x80000000u)
QK_DEFINE_PREFILTER(64, 2, ulong, long, ulong8, long8, ulong8, 63, 0x7fffffffffffffffL, 0x7ff0000000000000L,
                    0x8000000000000000UL)
QK_DEFINE_PREFILTER(64, 4, ulong, long, ulong8, long8, ulong8, 63, 0x7fffffffffffffffL, 0x7ff0000000000000L,
                    0x8000000000000000UL)
QK_DEFINE_PREFILTER(64, 8, ulong, long, ulong8, long8, ulong8, 63, 0x7fffffffffffffffL, 0x7ff0000000000000L,
                    0x8000000000000000UL)

/* The sample: out[j] = the bits of element floor(j * n / count) (ulong each). */
__kernel void qk_gather32(__global const uint *x, ulong off, ulong n, ulong count, __global ulong *out)
{
    ulong j = get_global_id(0);
    if (j < count) out[j] = x[off + j * (n / count) + j * (n % count) / count];
}

__kernel void qk_gather64(__global const ulong *x, ulong off, ulong n, ulong count, __global ulong *out)
{
    ulong j = get_global_id(0);
    if (j < count) out[j] = x[off + j * (n / count) + j * (n % count) / count];
}
