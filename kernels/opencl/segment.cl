/* Segmented operations (host/opencl/ocl_segment.c): x is cut into segments of
 * seg contiguous elements, and every segment gets, bit for bit, what the
 * per-tensor kernel gives for it as a tensor of its own. One launch covers a
 * whole batch of segments, so per-channel and per-group work (millions of
 * 128-element groups) costs a few launches instead of millions.
 *
 * Work is cut into "pieces": a piece is a run of at most plen elements inside
 * one segment (segment b owns pieces [b * ppseg, (b + 1) * ppseg), piece j of
 * it starting j * plen in), so a huge segment still spreads over many
 * work-items and a tiny one costs one. A piece yields one record; the host
 * folds a segment's records in order, as the per-tensor host code folds its
 * per-work-group / per-super-block records.
 *
 * CPU style (QK_WG == 1): work-group g takes a contiguous range of pieces, with
 * the same vector loops as the per-tensor kernels. GPU style: work-item i takes
 * pieces i, i + global size, ... (no barriers, so pieces of any length mix).
 * The select sorts each segment in local memory instead: CPU style one
 * work-item per segment, GPU style one work-group per one or more segments. */

#define QK_SEG_NONE ((ulong)0xffffffffffffffffUL)

#if QK_WG == 1
#define QK_SEG_PIECES(P, NP)                                                                   \
    ulong per_##P = ((NP) + get_num_groups(0) - 1) / get_num_groups(0);                        \
    ulong end_##P = min((ulong)(NP), per_##P * get_group_id(0) + per_##P);                    \
    for (ulong P = min((ulong)(NP), per_##P * get_group_id(0)); P < end_##P; P++)
#else
#define QK_SEG_PIECES(P, NP) for (ulong P = get_global_id(0); P < (ulong)(NP); P += get_global_size(0))
#endif

/* ==== min/max ================================================================
 * One record of four ulongs per piece, as minmax.cl's records: smallest and
 * largest key of the finite elements (all ones / 0 if none), the non-finite
 * count and the offset of the first non-finite within the piece (or NONE). */

inline void qk_seg_minmax32_piece(__global const uint *restrict x, uint m, __global ulong *rec)
{
    uint kmin, kmax;
    ulong bad, first = QK_SEG_NONE;
    qk_minmax32_range(x, 0, m, 0, 1, &kmin, &kmax, &bad);
    for (uint i = 0; bad && i < m; i++) { /* rare: only pieces with a non-finite value */
        if (qk_nonfinite32(x[i])) {
            first = i;
            break;
        }
    }
    rec[0] = kmin;
    rec[1] = kmax;
    rec[2] = bad;
    rec[3] = first;
}

inline void qk_seg_minmax64_piece(__global const ulong *restrict x, uint m, __global ulong *rec)
{
    ulong kmin, kmax, bad, first = QK_SEG_NONE;
    qk_minmax64_range(x, 0, m, 0, 1, &kmin, &kmax, &bad);
    for (uint i = 0; bad && i < m; i++) {
        if (qk_nonfinite64(x[i])) {
            first = i;
            break;
        }
    }
    rec[0] = kmin;
    rec[1] = kmax;
    rec[2] = bad;
    rec[3] = first;
}

#define QK_DEFINE_SEG_MINMAX(W, UT)                                                              \
    __kernel void qk_seg_minmax##W(__global const UT *restrict x, ulong off, ulong seg,          \
                                   ulong plen, ulong ppseg, ulong npieces, __global ulong *out)  \
    {                                                                                            \
        x += off;                                                                                \
        QK_SEG_PIECES(p, npieces) {                                                              \
            ulong b = p / ppseg, j = p - b * ppseg, s = j * plen;                                \
            qk_seg_minmax##W##_piece(x + b * seg + s, (uint)min(plen, seg - s), out + 4 * p);    \
        }                                                                                        \
    }

QK_DEFINE_SEG_MINMAX(32, uint)
QK_DEFINE_SEG_MINMAX(64, ulong)

/* ==== order statistics: a sort per segment ===================================
 * out[b * nranks + r] = the ranks[b * nranks + r]-th smallest key of segment b
 * (keys as select.cl's: |x| with QK_MODE_ABS, non-finite left out with
 * QK_MODE_SKIP_NONFINITE). buf is local memory sized by the host. */

#if QK_WG == 1
/* One work-item per segment: a bitonic network on 8-wide vectors over the
 * segment's kept keys in buf, padded to P = 2^logp >= 8 keys with the largest
 * key (no rank reaches the padding). The network is
 * the variant whose comparators all point up (a "flip" step compares i with
 * i ^ (k - 1), the others i with i ^ j). Steps across vectors are whole-vector
 * min/max; steps inside a vector (j < 8) are a swizzle and a lane select,
 * and run back to back while the vector is in registers. Branch-free, so a
 * CPU runs it near its vector throughput: a scalar LSD radix sort (8-bit
 * digits), latency-bound on its counters, took 0.7 s on PoCL for 22M keys in
 * segments of 128, this 0.08 s. */

/* compare-exchange of lane i with lane PERM(i); lanes in LO keep the minimum */
#define QK_SORT_CX(V, PERM, LO, VT, MT)                                                          \
    do {                                                                                         \
        VT p_ = (V).PERM;                                                                        \
        (V) = select(max((V), p_), min((V), p_), LO(MT));                                        \
    } while (0)
#define QK_LO1(MT) ((MT)(-1, 0, -1, 0, -1, 0, -1, 0))
#define QK_LO2(MT) ((MT)(-1, -1, 0, 0, -1, -1, 0, 0))
#define QK_LO4(MT) ((MT)(-1, -1, -1, -1, 0, 0, 0, 0))

/* the steps j = 4, 2, 1 of a merge, inside one vector */
#define QK_SORT_TAIL(V, VT, MT)                                                                  \
    do {                                                                                         \
        QK_SORT_CX(V, s45670123, QK_LO4, VT, MT);                                                \
        QK_SORT_CX(V, s23016745, QK_LO2, VT, MT);                                                \
        QK_SORT_CX(V, s10325476, QK_LO1, VT, MT);                                                \
    } while (0)

#define QK_DEFINE_SEG_SORT(W, UT, VT, MT)                                                        \
    inline void qk_seg_sort##W(__local UT *buf, uint nv)                                         \
    {                                                                                            \
        /* blocks of 2, 4 and 8 keys: inside each vector */                                      \
        for (uint a = 0; a < nv; a++) {                                                          \
            VT v = vload8(a, buf);                                                               \
            QK_SORT_CX(v, s10325476, QK_LO1, VT, MT);                                            \
            QK_SORT_CX(v, s32107654, QK_LO2, VT, MT);                                            \
            QK_SORT_CX(v, s10325476, QK_LO1, VT, MT);                                            \
            QK_SORT_CX(v, s76543210, QK_LO4, VT, MT);                                            \
            QK_SORT_CX(v, s23016745, QK_LO2, VT, MT);                                            \
            QK_SORT_CX(v, s10325476, QK_LO1, VT, MT);                                            \
            vstore8(v, a, buf);                                                                  \
        }                                                                                        \
        /* blocks of kv = 2, 4, ... vectors */                                                   \
        for (uint kv = 2; kv <= nv; kv <<= 1) {                                                  \
            uint h = kv >> 1;                                                                    \
            for (uint t = 0; t < nv / 2; t++) { /* flip: vector a against b = a ^ (kv - 1), reversed */ \
                uint a = ((t & ~(h - 1u)) << 1) | (t & (h - 1u)), b = a ^ (kv - 1u);             \
                VT va = vload8(a, buf), vb = vload8(b, buf).s76543210;                           \
                vstore8(min(va, vb), a, buf);                                                    \
                vstore8(max(va, vb).s76543210, b, buf);                                          \
            }                                                                                    \
            for (uint jv = h >> 1; jv > 0; jv >>= 1) { /* j = 8 jv: vector a against a + jv */   \
                for (uint t = 0; t < nv / 2; t++) {                                              \
                    uint a = ((t & ~(jv - 1u)) << 1) | (t & (jv - 1u));                          \
                    VT va = vload8(a, buf), vb = vload8(a + jv, buf);                            \
                    vstore8(min(va, vb), a, buf);                                                \
                    vstore8(max(va, vb), a + jv, buf);                                           \
                }                                                                                \
            }                                                                                    \
            for (uint a = 0; a < nv; a++) {                                                      \
                VT v = vload8(a, buf);                                                           \
                QK_SORT_TAIL(v, VT, MT);                                                             \
                vstore8(v, a, buf);                                                              \
            }                                                                                    \
        }                                                                                        \
    }

QK_DEFINE_SEG_SORT(32, uint, uint8, int8)
QK_DEFINE_SEG_SORT(64, ulong, ulong8, long8)

#define QK_DEFINE_SEG_SELECT(W, UT)                                                        \
    __kernel void qk_seg_select##W(__global const UT *restrict x, ulong off, ulong seg,          \
                                   ulong nseg, uint mode, uint nranks,                           \
                                   __global const uint *restrict ranks, __global UT *restrict out, \
                                   __local UT *buf, uint logp, uint spw)                         \
    {                                                                                            \
        UT absmask = (mode & QK_MODE_ABS) ? (UT)(~(UT)0 >> 1) : (UT)~(UT)0;                      \
        int skip = (mode & QK_MODE_SKIP_NONFINITE) != 0;                                         \
        uint pw = max(1u << logp, 8u);                                                           \
        x += off;                                                                                \
        QK_SEG_PIECES(b, nseg) {                                                                 \
            __global const UT *xs = x + b * seg;                                                 \
            uint m = 0;                                                                          \
            for (uint i = 0; i < (uint)seg; i++) {                                               \
                UT u = xs[i] & absmask;                                                          \
                buf[m] = qk_key##W(u); /* branch-free: written always, kept when counted */      \
                m += !skip || !qk_nonfinite##W(u);                                               \
            }                                                                                    \
            for (uint i = m; i < pw; i++) buf[i] = ~(UT)0;                                       \
            qk_seg_sort##W(buf, pw / 8);                                                         \
            __global const uint *rk = ranks + b * nranks;                                        \
            __global UT *o = out + b * nranks;                                                   \
            for (uint r = 0; r < nranks; r++) o[r] = buf[rk[r]];                                 \
        }                                                                                        \
    }
#else
/* A work-group sorts spw segments at once: each is padded to P = 2^logp keys
 * (padding, and skipped non-finite values, become the largest key, which no
 * rank reaches) and the bitonic network of size P, in the variant whose
 * comparators all point up, sorts every P-block of buf independently. */
#define QK_DEFINE_SEG_SELECT(W, UT)                                                        \
    __kernel void qk_seg_select##W(__global const UT *restrict x, ulong off, ulong seg,          \
                                   ulong nseg, uint mode, uint nranks,                           \
                                   __global const uint *restrict ranks, __global UT *restrict out, \
                                   __local UT *buf, uint logp, uint spw)                         \
    {                                                                                            \
        UT absmask = (mode & QK_MODE_ABS) ? (UT)(~(UT)0 >> 1) : (UT)~(UT)0;                      \
        int skip = (mode & QK_MODE_SKIP_NONFINITE) != 0;                                         \
        uint lid = get_local_id(0), pw = 1u << logp, kw = spw << logp;                           \
        ulong b0 = (ulong)get_group_id(0) * spw;                                                 \
        x += off;                                                                                \
        for (uint i = lid; i < kw; i += QK_WG) {                                                 \
            ulong b = b0 + (i >> logp);                                                          \
            uint idx = i & (pw - 1u);                                                            \
            UT key = ~(UT)0;                                                                     \
            if (b < nseg && idx < seg) {                                                         \
                UT u = x[b * seg + idx] & absmask;                                               \
                if (!skip || !qk_nonfinite##W(u)) key = qk_key##W(u);                            \
            }                                                                                    \
            buf[i] = key;                                                                        \
        }                                                                                        \
        for (uint k = 2; k <= pw; k <<= 1) {                                                     \
            for (uint j = k >> 1; j > 0; j >>= 1) {                                              \
                barrier(CLK_LOCAL_MEM_FENCE);                                                    \
                for (uint t = lid; t < kw / 2; t += QK_WG) {                                     \
                    uint i = ((t & ~(j - 1u)) << 1) | (t & (j - 1u));                            \
                    uint l = j == (k >> 1) ? (i ^ (k - 1u)) : (i + j);                           \
                    UT p = buf[i], q = buf[l];                                                   \
                    buf[i] = min(p, q);                                                          \
                    buf[l] = max(p, q);                                                          \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        barrier(CLK_LOCAL_MEM_FENCE);                                                            \
        for (uint t = lid; t < spw * nranks; t += QK_WG) {                                       \
            uint q = t / nranks, r = t - q * nranks;                                             \
            ulong b = b0 + q;                                                                    \
            if (b < nseg) out[b * nranks + r] = buf[(q << logp) + ranks[b * nranks + r]];        \
        }                                                                                        \
    }
#endif

QK_DEFINE_SEG_SELECT(32, uint)
QK_DEFINE_SEG_SELECT(64, ulong)

/* ==== quantize and dequantize ================================================
 * Segment b's parameters: prm[2b] = the scale's bits, prm[2b + 1] = the zero
 * point. Each element gets exactly quantize.cl's / dequantize.cl's arithmetic,
 * with the same choice of exact fast path per segment as the per-tensor host
 * makes per tensor. A range [i, e) of elements is walked segment by segment,
 * so the parameters are read once per segment, not per element. */

#if QK_WG == 1
/* CPU: a contiguous part per work-group */
#define QK_SEG_RANGES(N, FN)                                                                     \
    do {                                                                                         \
        ulong b_, e_;                                                                            \
        qk_part((N), &b_, &e_);                                                                  \
        if (b_ < e_) FN(b_, e_);                                                                 \
    } while (0)
#else
/* GPU: rows of 8 elements, strided over the work-items */
#define QK_SEG_RANGES(N, FN)                                                                     \
    do {                                                                                         \
        for (ulong i_ = 8 * get_global_id(0); i_ < (N); i_ += 8 * get_global_size(0)) {          \
            FN(i_, min((ulong)(N), i_ + 8));                                                     \
        }                                                                                        \
    } while (0)
#endif

#define QK_DEFINE_SEG_QUANT_F32(NAME, OT, CONV8, CONV1)                                          \
    inline void qk_seg_quant_f32_##NAME##_range(__global const float *restrict x,               \
                                                __global OT *restrict q, ulong seg,              \
                                                __global const int *restrict prm, int qmin,      \
                                                int qmax, ulong i, ulong e)                      \
    {                                                                                            \
        for (ulong b = i / seg; i < e; b++) {                                                    \
            ulong se = min(e, (b + 1) * seg);                                                    \
            float scale = as_float(prm[2 * b]);                                                  \
            int zp = prm[2 * b + 1];                                                             \
            long lo_l = (long)qmin - zp, hi_l = (long)qmax - zp;                                 \
            int fast = abs(lo_l) <= (ulong)(1 << 24) && abs(hi_l) <= (ulong)(1 << 24);            \
            float lo = (float)lo_l, hi = (float)hi_l; /* exact whenever fast */                  \
            ulong vend = i + ((se - i) & ~(ulong)7);                                             \
            if (fast) {                                                                          \
                for (; i < vend; i += 8) QK_QUANT8_FAST(x, q, i, scale, zp, lo, hi, CONV8);      \
            } else {                                                                             \
                for (; i < vend; i += 8)                                                         \
                    QK_QUANT8(float8, x, q, i, scale, zp, qmin, qmax, CONV8);             \
            }                                                                                    \
            for (; i < se; i++) QK_QUANT1(float, x, q, i, scale, zp, qmin, qmax, CONV1);         \
        }                                                                                        \
    }                                                                                            \
    __kernel void qk_seg_quantize_f32_##NAME(__global const float *restrict x, ulong xoff,      \
                                             ulong n, __global OT *restrict q, ulong qoff,       \
                                             ulong seg, __global const int *restrict prm,        \
                                             int qmin, int qmax)                                 \
    {                                                                                            \
        x += xoff;                                                                               \
        q += qoff;                                                                               \
        QK_SEG_RANGES(n, QK_SEG_QF32_##NAME);                                                    \
    }

#define QK_SEG_QF32_u8(B, E) qk_seg_quant_f32_u8_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF32_i8(B, E) qk_seg_quant_f32_i8_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF32_u16(B, E) qk_seg_quant_f32_u16_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF32_i16(B, E) qk_seg_quant_f32_i16_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF32_i32(B, E) qk_seg_quant_f32_i32_range(x, q, seg, prm, qmin, qmax, (B), (E))

QK_DEFINE_SEG_QUANT_F32(u8, uchar, convert_uchar8, convert_uchar)
QK_DEFINE_SEG_QUANT_F32(i8, char, convert_char8, convert_char)
QK_DEFINE_SEG_QUANT_F32(u16, ushort, convert_ushort8, convert_ushort)
QK_DEFINE_SEG_QUANT_F32(i16, short, convert_short8, convert_short)
QK_DEFINE_SEG_QUANT_F32(i32, int, convert_int8, convert_int)

#if QK_FP64
#define QK_DEFINE_SEG_QUANT_F64(NAME, OT, CONV8, CONV1)                                          \
    inline void qk_seg_quant_f64_##NAME##_range(__global const double *restrict x,              \
                                                __global OT *restrict q, ulong seg,              \
                                                __global const int *restrict prm, int qmin,      \
                                                int qmax, ulong i, ulong e)                      \
    {                                                                                            \
        for (ulong b = i / seg; i < e; b++) {                                                    \
            ulong se = min(e, (b + 1) * seg);                                                    \
            double s = (double)as_float(prm[2 * b]);                                             \
            int zp = prm[2 * b + 1];                                                             \
            ulong vend = i + ((se - i) & ~(ulong)7);                                             \
            for (; i < vend; i += 8) QK_QUANT8(double8, x, q, i, s, zp, qmin, qmax, CONV8); \
            for (; i < se; i++) QK_QUANT1(double, x, q, i, s, zp, qmin, qmax, CONV1);            \
        }                                                                                        \
    }                                                                                            \
    __kernel void qk_seg_quantize_f64_##NAME(__global const double *restrict x, ulong xoff,     \
                                             ulong n, __global OT *restrict q, ulong qoff,       \
                                             ulong seg, __global const int *restrict prm,        \
                                             int qmin, int qmax)                                 \
    {                                                                                            \
        x += xoff;                                                                               \
        q += qoff;                                                                               \
        QK_SEG_RANGES(n, QK_SEG_QF64_##NAME);                                                    \
    }

#define QK_SEG_QF64_u8(B, E) qk_seg_quant_f64_u8_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF64_i8(B, E) qk_seg_quant_f64_i8_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF64_u16(B, E) qk_seg_quant_f64_u16_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF64_i16(B, E) qk_seg_quant_f64_i16_range(x, q, seg, prm, qmin, qmax, (B), (E))
#define QK_SEG_QF64_i32(B, E) qk_seg_quant_f64_i32_range(x, q, seg, prm, qmin, qmax, (B), (E))

QK_DEFINE_SEG_QUANT_F64(u8, uchar, convert_uchar8, convert_uchar)
QK_DEFINE_SEG_QUANT_F64(i8, char, convert_char8, convert_char)
QK_DEFINE_SEG_QUANT_F64(u16, ushort, convert_ushort8, convert_ushort)
QK_DEFINE_SEG_QUANT_F64(i16, short, convert_short8, convert_short)
QK_DEFINE_SEG_QUANT_F64(i32, int, convert_int8, convert_int)
#endif

/* WIDE: the codes may be 32-bit (no int fast path, as dequantize.cl's host). */
#define QK_DEFINE_SEG_DEQUANT(NAME, IT, WIDE)                                                    \
    inline void qk_seg_dequant_##NAME##_range(__global const IT *restrict q,                    \
                                              __global float *restrict out, ulong seg,           \
                                              __global const int *restrict prm, ulong i,         \
                                              ulong e)                                           \
    {                                                                                            \
        for (ulong b = i / seg; i < e; b++) {                                                    \
            ulong se = min(e, (b + 1) * seg);                                                    \
            float scale = as_float(prm[2 * b]);                                                  \
            int zp = prm[2 * b + 1];                                                             \
            int fast = !(WIDE) && abs(zp) <= (uint)(1 << 23);                                    \
            ulong vend = i + ((se - i) & ~(ulong)7);                                             \
            if (fast) {                                                                          \
                for (; i < vend; i += 8) QK_DEQUANT8_FAST(q, out, i, scale, zp);                 \
            } else {                                                                             \
                for (; i < vend; i += 8) QK_DEQUANT8(q, out, i, scale, zp);                      \
            }                                                                                    \
            for (; i < se; i++) QK_DEQUANT1(q, out, i, scale, zp);                               \
        }                                                                                        \
    }                                                                                            \
    __kernel void qk_seg_dequantize_##NAME(__global const IT *restrict q, ulong qoff, ulong n,  \
                                           __global float *restrict out, ulong ooff, ulong seg,  \
                                           __global const int *restrict prm)                     \
    {                                                                                            \
        q += qoff;                                                                               \
        out += ooff;                                                                             \
        QK_SEG_RANGES(n, QK_SEG_DQ_##NAME);                                                      \
    }

#define QK_SEG_DQ_u8(B, E) qk_seg_dequant_u8_range(q, out, seg, prm, (B), (E))
#define QK_SEG_DQ_i8(B, E) qk_seg_dequant_i8_range(q, out, seg, prm, (B), (E))
#define QK_SEG_DQ_u16(B, E) qk_seg_dequant_u16_range(q, out, seg, prm, (B), (E))
#define QK_SEG_DQ_i16(B, E) qk_seg_dequant_i16_range(q, out, seg, prm, (B), (E))
#define QK_SEG_DQ_i32(B, E) qk_seg_dequant_i32_range(q, out, seg, prm, (B), (E))

QK_DEFINE_SEG_DEQUANT(u8, uchar, 0)
QK_DEFINE_SEG_DEQUANT(i8, char, 0)
QK_DEFINE_SEG_DEQUANT(u16, ushort, 0)
QK_DEFINE_SEG_DEQUANT(i16, short, 0)
QK_DEFINE_SEG_DEQUANT(i32, int, 1)

/* ==== widen: float16 / bfloat16 -> float32, exactly =========================
 * Integer bit operations only (vload_half's handling of NaN payloads and
 * signalling NaNs is the implementation's), the same bits as
 * host/stage.c's qk_half_to_float: Inf/NaN keep their payload, a subnormal
 * half m * 2^-24 becomes the normal float with exponent p + 103 and mantissa
 * m << (23 - p), p the position of m's top bit. */

inline uint8 qk_half_bits8(uint8 h)
{
    uint8 sign = (h & (uint8)(0x8000u)) << 16;
    uint8 e = (h >> 10) & (uint8)(0x1fu), man = h & (uint8)(0x3ffu);
    uint8 v = sign | ((e + (uint8)(112u)) << 23) | (man << 13);
    v = select(v, sign | (uint8)(0x7f800000u) | (man << 13), e == (uint8)(31u));
    uint8 p = (uint8)(31u) - clz(man); /* garbage for man == 0, which takes the zero branch */
    uint8 sub = sign | ((p + (uint8)(103u)) << 23) | ((man << ((uint8)(23u) - p)) & (uint8)(0x7fffffu));
    v = select(v, sub, e == (uint8)(0u) && man != (uint8)(0u));
    return select(v, sign, e == (uint8)(0u) && man == (uint8)(0u));
}

inline uint qk_half_bits(uint h)
{
    uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (e == 31u) return sign | 0x7f800000u | (man << 13);
    if (e) return sign | ((e + 112u) << 23) | (man << 13);
    if (!man) return sign;
    uint p = 31u - clz(man);
    return sign | ((p + 103u) << 23) | ((man << (23u - p)) & 0x7fffffu);
}

inline void qk_widen_range(__global const ushort *restrict x, __global uint *restrict out, int bf16, ulong i,
                           ulong e)
{
    ulong vend = i + ((e - i) & ~(ulong)7);
    if (bf16) {
        for (; i < vend; i += 8) vstore8(convert_uint8(vload8(0, x + i)) << 16, 0, out + i);
        for (; i < e; i++) out[i] = (uint)x[i] << 16;
    } else {
        for (; i < vend; i += 8) vstore8(qk_half_bits8(convert_uint8(vload8(0, x + i))), 0, out + i);
        for (; i < e; i++) out[i] = qk_half_bits(x[i]);
    }
}

#define QK_SEG_WIDEN(B, E) qk_widen_range(x, out, bf16, (B), (E))

__kernel void qk_widen(__global const ushort *restrict x, ulong xoff, ulong n, __global uint *restrict out,
                       ulong ooff, int bf16)
{
    x += xoff;
    out += ooff;
    QK_SEG_RANGES(n, QK_SEG_WIDEN);
}

/* ==== the fused error pass per segment ======================================
 * error.cl's structure, restarted at every segment: a piece is one super-block
 * of a segment (65536 elements from the segment's start, the last one
 * shorter), summed by error.cl's QK_ERROR_SUPERBLOCK, the very code of the
 * per-tensor CPU kernel (with its per-type plumbing QK_F32_*, QK_F64_*). Per
 * segment g of the batch: candidate c's parameters at prm[8 (g k + c)] (and
 * prmd[4 (g k + c)] for float64), the fences at fen_f[2g] (float bounds
 * rounded outward) or fen_d[2g]. Outputs per piece p as error.cl's per
 * super-block: sse[p k + c], in[p k + c], clip[p k + c], cnt[4p + 0..3]. */

#if QK_FP64

/* Segment G's candidates and fences, under the names error.cl's P##_PARAMS use. */
#define QK_F32_SEG_SETUP(G)                                                                      \
    __global const float *prm = prm_all + (G) * k * 8;                                           \
    float flo = fen_f[2 * (G)], fhi = fen_f[2 * (G) + 1];                                        \
    int fences = !(flo == -INFINITY && fhi == INFINITY)
#define QK_F64_SEG_SETUP(G)                                                                      \
    __global const float *prm = prm_all + (G) * k * 8;                                           \
    __global const double *prmd = prmd_all + (G) * k * 4;                                        \
    double flo = fen_d[2 * (G)], fhi = fen_d[2 * (G) + 1];                                       \
    int fences = !(flo == -INFINITY && fhi == INFINITY)

#define QK_DEFINE_SEG_ERROR(NAME, P)                                                             \
    __kernel void qk_seg_error_##NAME(__global const P##_T *x, ulong off, ulong seg, ulong ppseg,  \
                                      ulong npieces, __global const float *prm_all,              \
                                      __global const double *prmd_all, uint k,                   \
                                      __global const float *fen_f, __global const double *fen_d, \
                                      __global double *o_sse, __global double *o_in,             \
                                      __global uint *o_clip, __global ulong *o_cnt)              \
    {                                                                                            \
        x += off;                                                                                \
        QK_SEG_PIECES(p, npieces) {                                                              \
            ulong g = p / ppseg, s0 = (p - g * ppseg) * QK_SB;                                   \
            P##_SEG_SETUP(g);                                                                    \
            QK_ERROR_SUPERBLOCK(P, x + g * seg, s0, min(seg, s0 + QK_SB), o_sse + p * k,         \
                                o_in + p * k, o_clip + p * k, o_cnt + 4 * p);                    \
        }                                                                                        \
    }

QK_DEFINE_SEG_ERROR(f32, QK_F32)
QK_DEFINE_SEG_ERROR(f64, QK_F64)

#endif /* QK_FP64 */
