/* Exact order statistics by radix select (never a sort).
 *
 * Keys are the order-preserving unsigned ints of common.cl (uint for float32,
 * ulong for float64), or |x|'s keys with QK_MODE_ABS. They are split into
 * digits, most significant first:
 *   32-bit keys: 11, 11, 10 bits          64-bit keys: 11, 11, 11, 11, 10, 10 bits
 * Level L histograms digit L of the keys that are still wanted. A key is wanted
 * at level L when its digits 0..L-1 lead, through the host's group tables, to a
 * group: tabs[tabs[j] + (g << bits_j) + digit_j] is the group at level j+1 of a
 * key in group g at level j (-1: no target rank there). tabs[0..7] hold the
 * tables' offsets. Every group of a level is histogrammed in the same pass, so
 * many ranks (a grid search asks for ~400) cost the same passes as one.
 *
 * Kernels:
 *   qk_hist32/64     per-work-group partial histograms of one level
 *   qk_hist_reduce   totals += the sum of the partials (64-bit totals)
 *   qk_compact32/64  copy the wanted keys into a candidate buffer, so the later
 *                    levels read little; the order of the candidates is free
 *                    (an atomic counter hands out space) since a histogram does
 *                    not depend on order. */

#define QK_LHIST 2048u                  /* local histogram bins (GPU kernels) */
#define QK_TILE (QK_WG == 1 ? 1024u : 4u * QK_WG)

__constant uint qk_shift32[3] = {21u, 10u, 0u};
__constant uint qk_bits32[3] = {11u, 11u, 10u};
__constant uint qk_shift64[6] = {53u, 42u, 31u, 20u, 10u, 0u};
__constant uint qk_bits64[6] = {11u, 11u, 11u, 11u, 10u, 10u};

/* The group of key at level `levels` (walking tables 0..levels-1), -1 if none. */
inline int qk_walk32(uint key, int levels, __global const int *tabs)
{
    int g = 0;
    for (int j = 0; j < levels && g >= 0; j++) {
        uint d = (key >> qk_shift32[j]) & ((1u << qk_bits32[j]) - 1u);
        g = tabs[tabs[j] + (int)(((uint)g << qk_bits32[j]) + d)];
    }
    return g;
}

inline int qk_walk64(ulong key, int levels, __global const int *tabs)
{
    int g = 0;
    for (int j = 0; j < levels && g >= 0; j++) {
        uint d = (uint)(key >> qk_shift64[j]) & ((1u << qk_bits64[j]) - 1u);
        g = tabs[tabs[j] + (int)(((uint)g << qk_bits64[j]) + d)];
    }
    return g;
}

/* The same walks with the tables' offsets read once per work-item (offs). A
 * 32-bit key walks at most tables 0 and 1: the last level is never walked. */
inline int qk_walk32o(uint key, int levels, __global const int *restrict tabs, const int *offs)
{
    int g = 0;
    if (levels > 0) g = tabs[offs[0] + (int)(key >> 21)];
    if (levels > 1 && g >= 0) g = tabs[offs[1] + (g << 11) + (int)((key >> 10) & 2047u)];
    return g;
}

inline int qk_walk64o(ulong key, int levels, __global const int *restrict tabs, const int *offs)
{
    int g = 0;
    for (int j = 0; j < levels && g >= 0; j++) {
        uint d = (uint)(key >> qk_shift64[j]) & ((1u << qk_bits64[j]) - 1u);
        g = tabs[offs[j] + (int)(((uint)g << qk_bits64[j]) + d)];
    }
    return g;
}

#define QK_LOAD_OFFS(OFFS, TABS, LEVELS)                                                        \
    int OFFS[6];                                                                                \
    for (int j_ = 0; j_ < 6; j_++) OFFS[j_] = j_ < (LEVELS) ? (TABS)[j_] : 0

/* The key of element i and whether it counts. */
inline int qk_load_key32(__global const uint *x, ulong i, uint mode, uint *key)
{
    uint u = x[i];
    if (mode & QK_MODE_KEYS) {
        *key = u;
        return 1;
    }
    if (mode & QK_MODE_ABS) u &= 0x7fffffffu;
    *key = qk_key32(u);
    return !(mode & QK_MODE_SKIP_NONFINITE) || !qk_nonfinite32(u);
}

inline int qk_load_key64(__global const ulong *x, ulong i, uint mode, ulong *key)
{
    ulong u = x[i];
    if (mode & QK_MODE_KEYS) {
        *key = u;
        return 1;
    }
    if (mode & QK_MODE_ABS) u &= 0x7fffffffffffffffUL;
    *key = qk_key64(u);
    return !(mode & QK_MODE_SKIP_NONFINITE) || !qk_nonfinite64(u);
}

/* Bin of a key at `level` within groups [g0, g0 + gcount), or -1. */
#define QK_BIN(W, KEY, LEVEL, TABS, G0, GCOUNT, OUTBIN)                                         \
    do {                                                                                        \
        int g_ = (LEVEL) ? qk_walk##W((KEY), (LEVEL), (TABS)) : 0;                              \
        uint r_ = (uint)(g_ - (G0));                                                            \
        OUTBIN = (g_ >= 0 && r_ < (uint)(GCOUNT))                                               \
            ? (int)((r_ << qk_bits##W[LEVEL]) + ((uint)((KEY) >> qk_shift##W[LEVEL]) &          \
                                                  ((1u << qk_bits##W[LEVEL]) - 1u)))            \
            : -1;                                                                               \
    } while (0)

#if QK_WG == 1
/* CPU devices: each work-group (one work-item) counts its contiguous part into
 * its own slice of partials, nsub interleaved sub-histograms deep so runs of
 * equal digits do not serialise on one counter. The host zeroes partials. */
#define QK_DEFINE_HIST(W, UT)                                                                   \
    __kernel void qk_hist##W(__global const UT *restrict x, ulong off, ulong n, uint mode,      \
                             int level, __global const int *restrict tabs, int g0, int gcount,  \
                             uint nsub, __global uint *restrict partials)                       \
    {                                                                                           \
        uint hsize = (uint)gcount << qk_bits##W[level];                                         \
        __global uint *h = partials + (ulong)get_group_id(0) * nsub * hsize;                    \
        x += off;                                                                               \
        ulong b, e;                                                                             \
        qk_part(n, &b, &e);                                                                     \
        ulong i = b;                                                                            \
        if (level == 0 && nsub == 4) {                                                          \
            /* the first digit of every key: no tables, four interleaved counters */            \
            UT absmask = (mode & QK_MODE_ABS) ? (UT)(~(UT)0 >> 1) : (UT)~(UT)0;                   \
            int keys = (mode & QK_MODE_KEYS) != 0, skip = (mode & QK_MODE_SKIP_NONFINITE) != 0;   \
            uint sh = qk_shift##W[0];                                                           \
            __global uint *h1 = h + hsize, *h2 = h + 2 * hsize, *h3 = h + 3 * hsize;            \
            for (; i + 4 <= e; i += 4) {                                                        \
                UT u0 = x[i] & absmask, u1 = x[i + 1] & absmask;                                \
                UT u2 = x[i + 2] & absmask, u3 = x[i + 3] & absmask;                            \
                UT k0 = keys ? u0 : qk_key##W(u0), k1 = keys ? u1 : qk_key##W(u1);              \
                UT k2 = keys ? u2 : qk_key##W(u2), k3 = keys ? u3 : qk_key##W(u3);              \
                h[(uint)(k0 >> sh)] += !skip || !qk_nonfinite##W(u0);                           \
                h1[(uint)(k1 >> sh)] += !skip || !qk_nonfinite##W(u1);                          \
                h2[(uint)(k2 >> sh)] += !skip || !qk_nonfinite##W(u2);                          \
                h3[(uint)(k3 >> sh)] += !skip || !qk_nonfinite##W(u3);                          \
            }                                                                                   \
        }                                                                                       \
        if (mode & QK_MODE_KEYS) {                                                              \
            /* candidates: keys already, walked through tables read once */                     \
            QK_LOAD_OFFS(offs, tabs, level);                                                    \
            uint sh = qk_shift##W[level], bits = qk_bits##W[level], mask = (1u << bits) - 1u;   \
            for (; i < e; i++) {                                                                \
                UT k = x[i];                                                                    \
                int g = qk_walk##W##o(k, level, tabs, offs);                                    \
                uint r = (uint)(g - g0);                                                        \
                if (g >= 0 && r < (uint)gcount) h[(r << bits) + ((uint)(k >> sh) & mask)]++;   \
            }                                                                                   \
        }                                                                                       \
        for (; i < e; i++) {                                                                    \
            UT key;                                                                             \
            int bin = -1;                                                                       \
            if (qk_load_key##W(x, i, mode, &key)) QK_BIN(W, key, level, tabs, g0, gcount, bin); \
            if (bin >= 0) h[bin]++;                                                             \
        }                                                                                       \
    }

#define QK_DEFINE_COMPACT(W, UT)                                                                \
    __kernel void qk_compact##W(__global const UT *restrict x, ulong off, ulong n, uint mode,   \
                                int levels, __global const int *restrict tabs,                  \
                                __global UT *restrict out, __global uint *counter)              \
    {                                                                                           \
        __local UT lbuf[QK_TILE];                                                               \
        QK_LOAD_OFFS(offs, tabs, levels);                                                       \
        UT absmask = (mode & QK_MODE_ABS) ? (UT)(~(UT)0 >> 1) : (UT)~(UT)0;                       \
        int keys = (mode & QK_MODE_KEYS) != 0, skip = (mode & QK_MODE_SKIP_NONFINITE) != 0;       \
        x += off;                                                                               \
        ulong b, e;                                                                             \
        qk_part(n, &b, &e);                                                                     \
        for (ulong t = b; t < e; t += QK_TILE) {                                                \
            ulong te = min(e, t + QK_TILE);                                                     \
            uint c = 0;                                                                         \
            /* branch-free: write every key, advance only over kept ones */                     \
            for (ulong i = t; i < te; i++) {                                                    \
                UT u = x[i] & absmask;                                                          \
                UT key = keys ? u : qk_key##W(u);                                               \
                int ok = (!skip || !qk_nonfinite##W(u)) && qk_walk##W##o(key, levels, tabs, offs) >= 0; \
                lbuf[c] = key;                                                                  \
                c += (uint)ok;                                                                  \
            }                                                                                   \
            if (c) {                                                                            \
                uint base = atomic_add(counter, c);                                             \
                for (uint j = 0; j < c; j++) out[base + j] = lbuf[j];                           \
            }                                                                                   \
        }                                                                                       \
    }
#else
/* GPUs: a local-memory histogram per work-group (integer atomics) when the
 * level's bins fit, written to the work-group's slice of partials; otherwise
 * global atomics into slice 0 (the host zeroes it and reduces one slice). */
#define QK_DEFINE_HIST(W, UT)                                                                   \
    __kernel void qk_hist##W(__global const UT *x, ulong off, ulong n, uint mode, int level,    \
                             __global const int *tabs, int g0, int gcount, uint nsub,           \
                             __global uint *partials)                                           \
    {                                                                                           \
        __local uint lh[QK_LHIST];                                                              \
        uint lid = get_local_id(0);                                                             \
        uint hsize = (uint)gcount << qk_bits##W[level];                                         \
        int uselocal = hsize <= QK_LHIST;                                                       \
        if (uselocal) {                                                                         \
            for (uint j = lid; j < hsize; j += QK_WG) lh[j] = 0;                                \
        }                                                                                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                           \
        x += off;                                                                               \
        ulong b, e;                                                                             \
        qk_part(n, &b, &e);                                                                     \
        for (ulong i = b + lid; i < e; i += QK_WG) {                                            \
            UT key;                                                                             \
            int bin = -1;                                                                       \
            if (qk_load_key##W(x, i, mode, &key)) QK_BIN(W, key, level, tabs, g0, gcount, bin); \
            if (bin >= 0) {                                                                     \
                if (uselocal) atomic_inc(&lh[bin]);                                             \
                else atomic_inc(&partials[bin]);                                                \
            }                                                                                   \
        }                                                                                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                           \
        if (uselocal) {                                                                         \
            __global uint *h = partials + (ulong)get_group_id(0) * hsize;                       \
            for (uint j = lid; j < hsize; j += QK_WG) h[j] = lh[j];                             \
        }                                                                                       \
    }

#define QK_DEFINE_COMPACT(W, UT)                                                                \
    __kernel void qk_compact##W(__global const UT *x, ulong off, ulong n, uint mode, int levels, \
                                __global const int *tabs, __global UT *out,                     \
                                __global uint *counter)                                         \
    {                                                                                           \
        __local UT lbuf[QK_TILE];                                                               \
        __local uint lcount, lbase;                                                             \
        uint lid = get_local_id(0);                                                             \
        x += off;                                                                               \
        ulong b, e;                                                                             \
        qk_part(n, &b, &e);                                                                     \
        for (ulong t = b; t < e; t += QK_TILE) {                                                \
            ulong te = min(e, t + QK_TILE);                                                     \
            if (lid == 0) lcount = 0;                                                           \
            barrier(CLK_LOCAL_MEM_FENCE);                                                       \
            for (ulong i = t + lid; i < te; i += QK_WG) {                                       \
                UT key;                                                                         \
                if (qk_load_key##W(x, i, mode, &key) && qk_walk##W(key, levels, tabs) >= 0) {   \
                    lbuf[atomic_inc(&lcount)] = key;                                            \
                }                                                                               \
            }                                                                                   \
            barrier(CLK_LOCAL_MEM_FENCE);                                                       \
            if (lid == 0) lbase = lcount ? atomic_add(counter, lcount) : 0u;                    \
            barrier(CLK_LOCAL_MEM_FENCE);                                                       \
            for (uint j = lid; j < lcount; j += QK_WG) out[lbase + j] = lbuf[j];                \
            barrier(CLK_LOCAL_MEM_FENCE);                                                       \
        }                                                                                       \
    }
#endif

QK_DEFINE_HIST(32, uint)
QK_DEFINE_HIST(64, ulong)
QK_DEFINE_COMPACT(32, uint)
QK_DEFINE_COMPACT(64, ulong)

/* totals[j] += sum over the nparts slices of partials[j]; 64-bit totals so a
 * pass over any number of launches cannot overflow. */
__kernel void qk_hist_reduce(__global const uint *partials, uint nparts, uint hsize, __global ulong *totals)
{
    ulong b, e;
    qk_part(hsize, &b, &e);
    for (ulong j = b + get_local_id(0); j < e; j += QK_WG) {
        ulong s = 0;
        for (uint p = 0; p < nparts; p++) s += partials[(ulong)p * hsize + j];
        totals[j] += s;
    }
}
