// Segmented operations: one launch for every segment of a tensor (per-channel
// and per-group quantization cut a tensor into up to millions of segments).
// Segment b of a launch is elements [b * seg, (b + 1) * seg) of x. Each kernel
// gives, for every segment, exactly what the per-tensor kernels give for that
// segment as a tensor of its own:
//
// - min/max: a group of W lanes (W a power of two <= 32, about seg / 4) per
//   segment, or per piece of a long segment; keys and accumulator as
//   minmax.cu. Integer min/max/add: nothing depends on the order.
// - select: the segment's keys sorted in shared memory, one thread block per
//   segment (cub::BlockRadixSort, a tier of threads x items per size up to
//   QK_CU_SEG_SORT_CAP32/64), or one warp per segment of <= 32 keys (ranks by
//   counting). Keys exactly as select.cu's; values are the keys' own values.
// - quantize/dequantize: elementwise grid-stride loops with common.cuh's
//   quant_one/dequant_one, the segment (and its parameters) found once per
//   four elements by a 64-bit division.
// - error pass: the sums must be bit-identical to error.cu's for the segment,
//   so the reduction structure is reproduced relative to the segment's first
//   element: fixed blocks of QK_CU_ERROR_BLOCK elements; in a block, "thread"
//   t = 32w + l adds the elements of groups t, t + 256, ... (four consecutive
//   elements a group) in order; lane sums are reduced by the same
//   __shfl_down_sync tree; the 8 warp sums are added in warp order; the block
//   sums are added to +0 in block order. Segments of <= QK_CU_SEG_WARP_ERROR
//   elements (one block) take one warp that plays the 8 warps one after the
//   other (a warp with no elements contributes +0, and s + (+0) == s for the
//   non-negative, never-NaN sums, so it is skipped); longer segments take a
//   256-thread block per fixed block, as error.cu, and a fold kernel.
// - widen: float16/bfloat16 bits to float32 bits by integer operations.
//
// Built with -fmad=false like the other kernels: nothing is contracted.
#include <cub/block/block_radix_sort.cuh>

#include "common.cuh"

namespace {

using qkcu::kFullMask;
using qkcu::kThreads;

constexpr int kWarps = kThreads / 32;
constexpr int64_t kBlock = QK_CU_ERROR_BLOCK; // elements per fixed error block
constexpr int64_t kPiece = 4096;              // min/max: shortest piece of a long segment one lane group takes

// common.cuh's aligned16 is host-only: the per-segment pointers are known on the device.
__device__ __forceinline__ bool dev_aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

__device__ __forceinline__ double unkey64(unsigned long long k)
{
    const unsigned long long u = (k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k;
    return __longlong_as_double((long long)u);
}

__device__ __forceinline__ double unkey32(uint32_t k)
{
    const uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return (double)__uint_as_float(u);
}

// ---- min/max -------------------------------------------------------------------------

// Reduce over the W lanes of a group (xor butterfly: every lane ends with the result).
__device__ __forceinline__ unsigned long long group_min(unsigned long long v, int w)
{
    for (int off = w >> 1; off > 0; off >>= 1) {
        const unsigned long long o = __shfl_xor_sync(kFullMask, v, off, w);
        v = o < v ? o : v;
    }
    return v;
}

__device__ __forceinline__ unsigned long long group_max(unsigned long long v, int w)
{
    for (int off = w >> 1; off > 0; off >>= 1) {
        const unsigned long long o = __shfl_xor_sync(kFullMask, v, off, w);
        v = o > v ? o : v;
    }
    return v;
}

__device__ __forceinline__ unsigned long long group_sum(unsigned long long v, int w)
{
    for (int off = w >> 1; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off, w);
    return v;
}

// The result record of qk_cu_op_minmax (host/cuda/cuda_ops.c), expression for expression.
__device__ __forceinline__ void minmax_result(unsigned long long kmin, unsigned long long kmax, unsigned long long fin,
                                             unsigned long long bad, unsigned long long first, qk_minmax_result *r)
{
    qk_minmax_result o;
    o.min = 0.0;
    o.max = 0.0;
    o.absmax = 0.0;
    o.n_finite = (int64_t)fin;
    o.nonfinite_count = (int64_t)bad;
    o.first_nonfinite = bad ? (int64_t)first : -1;
    if (fin) {
        o.min = unkey64(kmin);
        o.max = unkey64(kmax);
        o.absmax = fmax(fabs(o.min), fabs(o.max)); /* +0, never -0, as the CPU reference */
    }
    *r = o;
}

// One group of w lanes per (segment, piece). pieces == 1: the group owns the
// segment and writes its result; else it adds to acc[segment].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    seg_minmax_kernel(const T *__restrict__ x, int64_t seg, int64_t nseg, int w, int64_t piece, int64_t pieces,
                      qk_cu_minmax_acc *__restrict__ acc, qk_minmax_result *__restrict__ out)
{
    const int64_t gid = ((int64_t)blockIdx.x * kThreads + threadIdx.x) / w;
    const int sub = (int)(threadIdx.x & (unsigned)(w - 1));
    const bool active = gid < nseg * pieces; // inactive lanes still take part in the shuffles
    const int64_t b = active ? gid / pieces : 0;
    const int64_t e0 = active ? (gid - b * pieces) * piece : 0;
    const int64_t e1 = active ? (seg - e0 < piece ? seg : e0 + piece) : 0;
    const T *__restrict__ xs = x + b * seg;

    unsigned long long kmin = ~0ull, kmax = 0, fin = 0, bad = 0, first = ~0ull;
    int64_t e = e0 + sub;
    // four loads in flight per lane, then the rest
    for (; e + 3 * (int64_t)w < e1; e += 4 * (int64_t)w) {
        T v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = xs[e + j * (int64_t)w];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (!qkcu::is_finite(v[j])) {
                if (bad++ == 0) first = (unsigned long long)(e + j * (int64_t)w);
                continue;
            }
            const unsigned long long k = qkcu::key_bits64((uint64_t)__double_as_longlong((double)v[j]));
            kmin = k < kmin ? k : kmin;
            kmax = k > kmax ? k : kmax;
            fin++;
        }
    }
    for (; e < e1; e += w) {
        const T v = xs[e];
        if (!qkcu::is_finite(v)) {
            if (bad++ == 0) first = (unsigned long long)e;
            continue;
        }
        const unsigned long long k = qkcu::key_bits64((uint64_t)__double_as_longlong((double)v));
        kmin = k < kmin ? k : kmin;
        kmax = k > kmax ? k : kmax;
        fin++;
    }
    kmin = group_min(kmin, w);
    kmax = group_max(kmax, w);
    fin = group_sum(fin, w);
    bad = group_sum(bad, w);
    first = group_min(first, w);
    if (!active || sub != 0) return;
    if (pieces == 1) {
        minmax_result(kmin, kmax, fin, bad, first, &out[b]);
        return;
    }
    if (fin) {
        atomicMin(&acc[b].kmin, kmin);
        atomicMax(&acc[b].kmax, kmax);
        atomicAdd(&acc[b].n_finite, fin);
    }
    if (bad) {
        atomicAdd(&acc[b].nonfinite, bad);
        atomicMin(&acc[b].first, first);
    }
}

__global__ void __launch_bounds__(kThreads) seg_minmax_init(qk_cu_minmax_acc *__restrict__ acc, int64_t nseg)
{
    const int64_t b = (int64_t)blockIdx.x * kThreads + threadIdx.x;
    if (b >= nseg) return;
    qk_cu_minmax_acc a;
    a.kmin = ~0ull;
    a.first = ~0ull;
    a.kmax = 0;
    a.n_finite = 0;
    a.nonfinite = 0;
    acc[b] = a;
}

__global__ void __launch_bounds__(kThreads)
    seg_minmax_finish(const qk_cu_minmax_acc *__restrict__ acc, int64_t nseg, qk_minmax_result *__restrict__ out)
{
    const int64_t b = (int64_t)blockIdx.x * kThreads + threadIdx.x;
    if (b >= nseg) return;
    const qk_cu_minmax_acc a = acc[b];
    minmax_result(a.kmin, a.kmax, a.n_finite, a.nonfinite, a.first, &out[b]);
}

inline unsigned blocks_for(int64_t threads)
{
    const int64_t b = (threads + kThreads - 1) / kThreads;
    return (unsigned)(b > 0 ? b : 1);
}

// ---- select ----------------------------------------------------------------------------

// The key of raw value bits u, or false when the element is dropped (select.cu's).
__device__ __forceinline__ bool make_key(uint32_t u, unsigned flags, uint32_t &key)
{
    if ((flags & QK_IGNORE_NONFINITE) && !qkcu::finite_bits32(u)) return false;
    if (flags & QK_ABS) u &= 0x7fffffffu;
    key = qkcu::key_bits32(u);
    return true;
}

__device__ __forceinline__ bool make_key(unsigned long long u, unsigned flags, unsigned long long &key)
{
    if ((flags & QK_IGNORE_NONFINITE) && !qkcu::finite_bits64(u)) return false;
    if (flags & QK_ABS) u &= 0x7fffffffffffffffull;
    key = qkcu::key_bits64(u);
    return true;
}

__device__ __forceinline__ double key_value(uint32_t k)
{
    return unkey32(k);
}

__device__ __forceinline__ double key_value(unsigned long long k)
{
    return unkey64(k);
}

// Looks up the ranks of segment b in its sorted keys sk[0..m): threads
// first, first + step, ... of the segment's nranks.
template <typename K>
__device__ __forceinline__ void emit_ranks(const K *sk, int64_t m, const int64_t *__restrict__ ranks, int64_t nranks,
                                          double *__restrict__ values, int64_t b, int first, int step,
                                          int64_t seg_base, unsigned long long *bad)
{
    for (int64_t j = first; j < nranks; j += step) {
        const int64_t r = ranks[b * nranks + j];
        double v = 0.0;
        if (r < 0 || r >= m) atomicMin(bad, (unsigned long long)(seg_base + b));
        else v = key_value(sk[r]);
        values[b * nranks + j] = v;
    }
}

// Segments of at most 32 keys: one warp each, lane l holds key l; its rank is
// the number of keys before it in (key, lane) order, so the keys land sorted.
// Dropped and missing keys are ~0, the largest: they sort after every kept key.
template <typename K>
__global__ void __launch_bounds__(kThreads)
    seg_select_warp(const K *__restrict__ x, int64_t seg, int64_t nseg, unsigned flags,
                    const int64_t *__restrict__ ranks, int64_t nranks, double *__restrict__ values, int64_t seg_base,
                    unsigned long long *bad)
{
    __shared__ K s_keys[kWarps][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = (int64_t)blockIdx.x * kWarps + warp;
    if (b >= nseg) return; // the whole warp
    K key = ~K(0);
    const bool kept = lane < seg && make_key(x[b * seg + lane], flags, key);
    if (!kept) key = ~K(0);
    int rank = 0;
    for (int j = 0; j < 32; j++) {
        const K o = __shfl_sync(kFullMask, key, j);
        rank += (o < key || (o == key && j < lane)) ? 1 : 0;
    }
    s_keys[warp][rank] = key;
    const int64_t m = __popc(__ballot_sync(kFullMask, kept));
    __syncwarp();
    emit_ranks<K>(s_keys[warp], m, ranks, nranks, values, b, lane, 32, seg_base, bad);
}

// One thread block per segment of at most THREADS * ITEMS keys: loaded
// striped (coalesced), padded with ~0, sorted, stored blocked in shared memory
// (reusing the sort's storage), then the ranks looked up.
template <typename K, int THREADS, int ITEMS> struct SortTier {
    typedef cub::BlockRadixSort<K, THREADS, ITEMS> Sort;
    static constexpr int kCap = THREADS * ITEMS;
    static constexpr size_t kTemp = sizeof(typename Sort::TempStorage);
    static constexpr size_t kSmem = kTemp > kCap * sizeof(K) ? kTemp : kCap * sizeof(K);
};

template <typename K, int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS)
    seg_select_block(const K *__restrict__ x, int64_t seg, unsigned flags, const int64_t *__restrict__ ranks,
                     int64_t nranks, double *__restrict__ values, int64_t seg_base, unsigned long long *bad)
{
    typedef SortTier<K, THREADS, ITEMS> Tier;
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int s_m;
    typename Tier::Sort::TempStorage &tmp = *reinterpret_cast<typename Tier::Sort::TempStorage *>(smem);
    const int64_t b = blockIdx.x;
    const K *__restrict__ xs = x + b * seg;
    if (threadIdx.x == 0) s_m = 0;
    K keys[ITEMS];
    int mine = 0;
#pragma unroll
    for (int i = 0; i < ITEMS; i++) {
        const int64_t e = (int64_t)i * THREADS + threadIdx.x;
        K k = ~K(0);
        if (e < seg && make_key(xs[e], flags, k)) mine++;
        else k = ~K(0);
        keys[i] = k;
    }
    __syncthreads(); // s_m is 0
    if (mine) atomicAdd(&s_m, mine);
    typename Tier::Sort(tmp).Sort(keys);
    __syncthreads(); // the sort's storage becomes the sorted keys
    K *sk = reinterpret_cast<K *>(smem);
#pragma unroll
    for (int i = 0; i < ITEMS; i++) sk[threadIdx.x * ITEMS + i] = keys[i];
    __syncthreads();
    emit_ranks<K>(sk, (int64_t)s_m, ranks, nranks, values, b, (int)threadIdx.x, THREADS, seg_base, bad);
}

// The tiers: the smallest that holds the segment. 64-bit keys stop at 8192
// (16384 would need 132 KiB of shared memory).
#define QK_SEG_TIERS(X)                                                                                                \
    X(128, 1)                                                                                                          \
    X(128, 4)                                                                                                          \
    X(256, 8)                                                                                                          \
    X(512, 8)                                                                                                          \
    X(512, 16)                                                                                                         \
    X(512, 32)

template <typename K> struct SortCap {
    static constexpr int64_t value = sizeof(K) == 4 ? QK_CU_SEG_SORT_CAP32 : QK_CU_SEG_SORT_CAP64;
};

template <typename K> size_t select_smem(int64_t seg)
{
    if (seg <= 32) return sizeof(K) * 32 * kWarps;
    if (seg > SortCap<K>::value) return 0;
#define QK_SEG_SMEM(T, I)                                                                                             \
    if constexpr ((int64_t)(T) * (I) <= SortCap<K>::value) {                                                          \
        if (seg <= (int64_t)(T) * (I)) return SortTier<K, T, I>::kSmem + sizeof(int);                                 \
    }
    QK_SEG_TIERS(QK_SEG_SMEM)
#undef QK_SEG_SMEM
    return 0;
}

template <typename K, int THREADS, int ITEMS>
cudaError_t launch_sort(cudaStream_t s, const K *x, int64_t seg, int64_t nseg, unsigned flags, const int64_t *ranks,
                        int64_t nranks, double *values, int64_t seg_base, unsigned long long *bad)
{
    typedef SortTier<K, THREADS, ITEMS> Tier;
    const size_t smem = Tier::kSmem;
    if (smem > 48 * 1024) { // above the default: opt in (per kernel, cheap, idempotent)
        cudaError_t e = cudaFuncSetAttribute(seg_select_block<K, THREADS, ITEMS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    return qkcu::launch(seg_select_block<K, THREADS, ITEMS>, (unsigned)nseg, THREADS, smem, s, x, seg, flags, ranks,
                        nranks, values, seg_base, bad);
}

template <typename K>
cudaError_t select_keys(cudaStream_t s, const K *x, int64_t seg, int64_t nseg, unsigned flags, const int64_t *ranks,
                        int64_t nranks, double *values, int64_t seg_base, unsigned long long *bad)
{
    if (seg <= 32) {
        return qkcu::launch(seg_select_warp<K>, (unsigned)((nseg + kWarps - 1) / kWarps), kThreads, 0, s, x, seg, nseg,
                            flags, ranks, nranks, values, seg_base, bad);
    }
    if (seg > SortCap<K>::value) return cudaErrorInvalidValue;
    // tiers above the key type's cap are not even compiled
#define QK_SEG_LAUNCH(T, I)                                                                                           \
    if constexpr ((int64_t)(T) * (I) <= SortCap<K>::value) {                                                          \
        if (seg <= (int64_t)(T) * (I))                                                                                \
            return launch_sort<K, T, I>(s, x, seg, nseg, flags, ranks, nranks, values, seg_base, bad);                \
    }
    QK_SEG_TIERS(QK_SEG_LAUNCH)
#undef QK_SEG_LAUNCH
    return cudaErrorInvalidValue;
}

// ---- quantize / dequantize ---------------------------------------------------------------

template <typename TX, typename TC>
__global__ void __launch_bounds__(kThreads)
    seg_quantize_kernel(const TX *__restrict__ x, TC *__restrict__ codes, int64_t n, int64_t seg, int64_t off,
                        const qk_cu_qparam *__restrict__ params, bool vec)
{
    const int64_t groups = (n + 3) / 4;
    const int64_t stride = (int64_t)gridDim.x * kThreads;
    for (int64_t g = (int64_t)blockIdx.x * kThreads + threadIdx.x; g < groups; g += stride) {
        TX v[4];
        const int cnt = qkcu::load4(x, g, n, vec, v);
        int64_t b = (off + 4 * g) / seg, r = off + 4 * g - b * seg;
        qk_cu_qparam p = params[b];
        TC c[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            c[j] = TC(0);
            if (j < cnt) {
                c[j] = (TC)qkcu::quant_one(v[j], p.scale, p.zero_point, p.qmin, p.qmax);
                if (++r == seg && j + 1 < cnt) {
                    r = 0;
                    p = params[++b];
                }
            }
        }
        qkcu::store4(codes, g, n, vec, c);
    }
}

template <typename TC>
__global__ void __launch_bounds__(kThreads)
    seg_dequantize_kernel(const TC *__restrict__ codes, float *__restrict__ out, int64_t n, int64_t seg, int64_t off,
                          const qk_cu_qparam *__restrict__ params, bool vec)
{
    const int64_t groups = (n + 3) / 4;
    const int64_t stride = (int64_t)gridDim.x * kThreads;
    for (int64_t g = (int64_t)blockIdx.x * kThreads + threadIdx.x; g < groups; g += stride) {
        TC c[4];
        const int cnt = qkcu::load4(codes, g, n, vec, c);
        int64_t b = (off + 4 * g) / seg, r = off + 4 * g - b * seg;
        float scale = params[b].scale;
        int32_t zp = params[b].zero_point;
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            v[j] = 0.0f;
            if (j < cnt) {
                v[j] = qkcu::dequant_one((int64_t)c[j], scale, zp);
                if (++r == seg && j + 1 < cnt) {
                    r = 0;
                    ++b;
                    scale = params[b].scale;
                    zp = params[b].zero_point;
                }
            }
        }
        qkcu::store4(out, g, n, vec, v);
    }
}

template <typename TX, typename TC>
cudaError_t launch_seg_quantize(cudaStream_t s, unsigned grid, const void *x, void *codes, int64_t n, int64_t seg,
                                int64_t off, const qk_cu_qparam *params)
{
    const bool vec = qkcu::aligned16(x) && ((uintptr_t)codes % (4 * sizeof(TC))) == 0;
    return qkcu::launch(seg_quantize_kernel<TX, TC>, grid, kThreads, 0, s, (const TX *)x, (TC *)codes, n, seg, off,
                        params, vec);
}

template <typename TX>
cudaError_t seg_quantize_to(cudaStream_t s, unsigned grid, const void *x, qk_dtype ct, void *codes, int64_t n,
                            int64_t seg, int64_t off, const qk_cu_qparam *params)
{
    switch (ct) {
    case QK_U8: return launch_seg_quantize<TX, uint8_t>(s, grid, x, codes, n, seg, off, params);
    case QK_I8: return launch_seg_quantize<TX, int8_t>(s, grid, x, codes, n, seg, off, params);
    case QK_U16: return launch_seg_quantize<TX, uint16_t>(s, grid, x, codes, n, seg, off, params);
    case QK_I16: return launch_seg_quantize<TX, int16_t>(s, grid, x, codes, n, seg, off, params);
    case QK_I32: return launch_seg_quantize<TX, int32_t>(s, grid, x, codes, n, seg, off, params);
    default: return cudaErrorInvalidValue;
    }
}

template <typename TC>
cudaError_t launch_seg_dequantize(cudaStream_t s, unsigned grid, const void *codes, float *out, int64_t n, int64_t seg,
                                  int64_t off, const qk_cu_qparam *params)
{
    const bool vec = ((uintptr_t)codes % (4 * sizeof(TC))) == 0 && qkcu::aligned16(out);
    return qkcu::launch(seg_dequantize_kernel<TC>, grid, kThreads, 0, s, (const TC *)codes, out, n, seg, off, params,
                        vec);
}

// ---- the error pass -------------------------------------------------------------------------

// error.cu's trees: the same functions (common.cuh).
using qkcu::warp_min;
using qkcu::warp_sum;

// Up to G parameter sets (qkcu::ErrShape<T>::kGroup), in shared memory (as
// error.cu keeps them: fewer registers).
template <int G> struct ParamGroup {
    float scale[G];
    int32_t zp[G], qmin[G], qmax[G];
    double lo[G], hi[G];
    int nc;
};

// Set c of the group, by thread c (c < G); sets past nc repeat set 0 (never used).
template <int G>
__device__ __forceinline__ void load_group(const qk_cu_qparam *__restrict__ params, int nc, int c, ParamGroup<G> &pg)
{
    if (c == 0) pg.nc = nc;
    const qk_cu_qparam p = params[c < nc ? c : 0];
    pg.scale[c] = p.scale;
    pg.zp[c] = p.zero_point;
    pg.qmin[c] = p.qmin;
    pg.qmax[c] = p.qmax;
    pg.lo[c] = p.clip_lo;
    pg.hi[c] = p.clip_hi;
}

// Per-lane sums and counts over the elements one error.cu thread would take.
template <int G> struct LaneAcc {
    double sse[G], ssi[G];
    unsigned clip[G];
    unsigned fin, inl, bad;
    unsigned long long first;
};

template <int G> __device__ __forceinline__ void lane_reset_sums(LaneAcc<G> &a)
{
#pragma unroll
    for (int c = 0; c < G; c++) {
        a.sse[c] = 0.0;
        a.ssi[c] = 0.0;
    }
}

// Groups g0, g0 + 256, ... of xs[0..end) (four elements a group), in that
// order, exactly error_kernel's per-thread loop; first is relative to xs.
template <typename T, int G>
__device__ __forceinline__ void lane_pass(const T *__restrict__ xs, int64_t g0, int64_t end, bool vec,
                                          const ParamGroup<G> &pg, double flo, double fhi, LaneAcc<G> &a)
{
    for (int64_t g = g0; 4 * g < end; g += kThreads) {
        T v[4];
        const int cnt = qkcu::load4(xs, g, end, vec, v);
        for (int j = 0; j < cnt; j++) {
            const T xv = v[j];
            if (!qkcu::is_finite(xv)) {
                if (a.bad++ == 0) a.first = (unsigned long long)(4 * g + j);
                continue;
            }
            const double xd = (double)xv;
            const bool inside = xd >= flo && xd <= fhi;
            a.fin++;
            a.inl += inside;
#pragma unroll
            for (int c = 0; c < G; c++) {
                if (c < pg.nc) {
                    const float sc = pg.scale[c];
                    const int32_t zp = pg.zp[c];
                    const int32_t q = qkcu::quant_one(xv, sc, zp, pg.qmin[c], pg.qmax[c]);
                    const double e = __dsub_rn(xd, (double)qkcu::dequant_one(q, sc, zp));
                    const double e2 = __dmul_rn(e, e);
                    a.sse[c] = __dadd_rn(a.sse[c], e2);
                    if (inside) a.ssi[c] = __dadd_rn(a.ssi[c], e2);
                    a.clip[c] += (xd < pg.lo[c] || xd > pg.hi[c]) ? 1u : 0u;
                }
            }
        }
    }
}

// Segments of <= QK_CU_SEG_WARP_ERROR elements (one fixed block): one warp per
// (segment, group of kGroup parameter sets), playing error_kernel's 8 warps
// one after the other; the counts come from the group-0 warp.
template <typename T>
__global__ void __launch_bounds__(kThreads, qkcu::ErrShape<T>::kWarpMinBlocks)
    seg_error_warp(const T *__restrict__ x, int64_t seg, int64_t nseg, const qk_cu_qparam *__restrict__ params, int k,
                   int ncg, const double *__restrict__ fences, qk_cu_seg_sums *__restrict__ sums,
                   qk_cu_seg_counts *__restrict__ counts)
{
    constexpr int kGroup = qkcu::ErrShape<T>::kGroup; // as error_kernel<T> (common.cuh)
    const int lane = threadIdx.x & 31;
    const int64_t wid = ((int64_t)blockIdx.x * kThreads + threadIdx.x) >> 5;
    if (wid >= nseg * ncg) return; // the whole warp
    const int64_t b = wid / ncg;
    const int cg = (int)(wid - b * ncg);
    const int c0 = cg * kGroup;
    const T *__restrict__ xs = x + b * seg;
    const bool vec = dev_aligned16(xs);
    const double flo = fences[2 * b], fhi = fences[2 * b + 1];
    __shared__ ParamGroup<kGroup> s_pg[kWarps];
    ParamGroup<kGroup> &pg = s_pg[threadIdx.x >> 5];
    if (lane < kGroup) load_group(params + b * k + c0, k - c0 < kGroup ? k - c0 : kGroup, lane, pg);
    __syncwarp();

    LaneAcc<kGroup> a;
#pragma unroll
    for (int c = 0; c < kGroup; c++) a.clip[c] = 0;
    a.fin = a.inl = a.bad = 0;
    a.first = ~0ull;
    double s[kGroup], si[kGroup];
#pragma unroll
    for (int c = 0; c < kGroup; c++) s[c] = si[c] = 0.0; // (set by w == 0 below)
    const int64_t ngroups = (seg + 3) / 4;
    const int nw = (int)((ngroups + 31) / 32 < kWarps ? (ngroups + 31) / 32 : kWarps);
    for (int w = 0; w < nw; w++) {
        lane_reset_sums(a);
        lane_pass(xs, (int64_t)(32 * w + lane), seg, vec, pg, flo, fhi, a);
#pragma unroll
        for (int c = 0; c < kGroup; c++) {
            const double ws = warp_sum(a.sse[c]);
            const double wi = warp_sum(a.ssi[c]);
            // error_kernel: s = warp 0's sum, then + warp 1's, ... in order
            s[c] = w == 0 ? ws : __dadd_rn(s[c], ws);
            si[c] = w == 0 ? wi : __dadd_rn(si[c], wi);
        }
    }
    unsigned long long clip[kGroup];
#pragma unroll
    for (int c = 0; c < kGroup; c++) clip[c] = warp_sum((unsigned long long)a.clip[c]);
    const unsigned long long fin = warp_sum((unsigned long long)a.fin);
    const unsigned long long inl = warp_sum((unsigned long long)a.inl);
    const unsigned long long bad = warp_sum((unsigned long long)a.bad);
    const unsigned long long first = warp_min(a.first);
    if (lane != 0) return;
#pragma unroll
    for (int c = 0; c < kGroup; c++) {
        if (c < pg.nc) {
            qk_cu_seg_sums r;
            r.sse = __dadd_rn(0.0, s[c]); // the fold: +0, then the one block sum
            r.sse_inliers = __dadd_rn(0.0, si[c]);
            r.clipped = (long long)clip[c];
            sums[b * k + c0 + c] = r;
        }
    }
    if (cg == 0) {
        qk_cu_seg_counts r;
        r.n_finite = (long long)fin;
        r.n_inliers = (long long)inl;
        r.nonfinite_count = (long long)bad;
        r.first_nonfinite = bad ? (long long)first : -1;
        counts[b] = r;
    }
}

// Longer segments: one 256-thread block per (fixed block of a segment, group
// of kGroup sets): error_kernel with indices relative to the segment. Block
// sums and counts go to scratch; seg_error_fold adds them up per segment.
template <typename T>
__global__ void __launch_bounds__(kThreads, qkcu::ErrShape<T>::kMinBlocks)
    seg_error_block(const T *__restrict__ x, int64_t seg, int64_t per, const qk_cu_qparam *__restrict__ params, int k,
                    int ncg, const double *__restrict__ fences, qk_cu_seg_sums *__restrict__ part,
                    qk_cu_seg_counts *__restrict__ cpart)
{
    constexpr int kGroup = qkcu::ErrShape<T>::kGroup; // as error_kernel<T> (common.cuh)
    __shared__ double s_sum[kWarps][2 * kGroup];
    __shared__ unsigned long long s_cnt[kWarps][kGroup + 4];
    const int64_t wb = blockIdx.x / ncg; // work block: segment b, its fixed block j
    const int cg = (int)(blockIdx.x - wb * ncg);
    const int c0 = cg * kGroup;
    const int64_t b = wb / per, j = wb - b * per;
    const T *__restrict__ xs = x + b * seg;
    const int64_t b0 = j * kBlock, b1 = seg - b0 < kBlock ? seg : b0 + kBlock;
    __shared__ ParamGroup<kGroup> pg;
    if (threadIdx.x < kGroup) load_group(params + b * k + c0, k - c0 < kGroup ? k - c0 : kGroup, threadIdx.x, pg);
    __syncthreads();

    LaneAcc<kGroup> a;
    lane_reset_sums(a);
#pragma unroll
    for (int c = 0; c < kGroup; c++) a.clip[c] = 0;
    a.fin = a.inl = a.bad = 0;
    a.first = ~0ull;
    lane_pass(xs, b0 / 4 + threadIdx.x, b1, dev_aligned16(xs), pg, fences[2 * b], fences[2 * b + 1], a);

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int c = 0; c < kGroup; c++) {
        const double s = warp_sum(a.sse[c]);
        const double si = warp_sum(a.ssi[c]);
        const unsigned long long m = warp_sum((unsigned long long)a.clip[c]);
        if (lane == 0) {
            s_sum[warp][2 * c] = s;
            s_sum[warp][2 * c + 1] = si;
            s_cnt[warp][c] = m;
        }
    }
    {
        const unsigned long long f = warp_sum((unsigned long long)a.fin);
        const unsigned long long i = warp_sum((unsigned long long)a.inl);
        const unsigned long long z = warp_sum((unsigned long long)a.bad);
        const unsigned long long m = warp_min(a.first);
        if (lane == 0) {
            s_cnt[warp][kGroup + 0] = f;
            s_cnt[warp][kGroup + 1] = i;
            s_cnt[warp][kGroup + 2] = z;
            s_cnt[warp][kGroup + 3] = m;
        }
    }
    __syncthreads();
    const int t = threadIdx.x;
    if (t < kGroup) {
        const int c = t;
        if (c < pg.nc) {
            double s = s_sum[0][2 * c], si = s_sum[0][2 * c + 1];
            unsigned long long m = s_cnt[0][c];
            for (int w = 1; w < kWarps; w++) {
                s = __dadd_rn(s, s_sum[w][2 * c]);
                si = __dadd_rn(si, s_sum[w][2 * c + 1]);
                m += s_cnt[w][c];
            }
            qk_cu_seg_sums r;
            r.sse = s;
            r.sse_inliers = si;
            r.clipped = (long long)m;
            part[wb * k + c0 + c] = r;
        }
    } else if (t == 32 && cg == 0) {
        unsigned long long f = 0, i = 0, z = 0, m = ~0ull;
        for (int w = 0; w < kWarps; w++) {
            f += s_cnt[w][kGroup + 0];
            i += s_cnt[w][kGroup + 1];
            z += s_cnt[w][kGroup + 2];
            m = s_cnt[w][kGroup + 3] < m ? s_cnt[w][kGroup + 3] : m;
        }
        qk_cu_seg_counts r;
        r.n_finite = (long long)f;
        r.n_inliers = (long long)i;
        r.nonfinite_count = (long long)z;
        r.first_nonfinite = z ? (long long)m : -1; // already relative to the segment
        cpart[wb] = r;
    }
}

// sums[b * k + c] = +0 + block 0 + block 1 + ... of segment b, in block order
// (error.cu's fold_kernel on a run that starts at 0); counts[b] from c == 0.
__global__ void __launch_bounds__(kThreads)
    seg_error_fold(const qk_cu_seg_sums *__restrict__ part, const qk_cu_seg_counts *__restrict__ cpart, int64_t nseg,
                   int64_t per, int k, qk_cu_seg_sums *__restrict__ sums, qk_cu_seg_counts *__restrict__ counts)
{
    const int64_t id = (int64_t)blockIdx.x * kThreads + threadIdx.x;
    if (id >= nseg * k) return;
    const int64_t b = id / k;
    const int c = (int)(id - b * k);
    double s = 0.0, si = 0.0;
    long long m = 0;
    for (int64_t j = 0; j < per; j++) {
        const qk_cu_seg_sums p = part[(b * per + j) * k + c];
        s = __dadd_rn(s, p.sse);
        si = __dadd_rn(si, p.sse_inliers);
        m += p.clipped;
    }
    qk_cu_seg_sums r;
    r.sse = s;
    r.sse_inliers = si;
    r.clipped = m;
    sums[id] = r;
    if (c != 0) return;
    qk_cu_seg_counts t;
    t.n_finite = t.n_inliers = t.nonfinite_count = 0;
    t.first_nonfinite = -1;
    for (int64_t j = 0; j < per; j++) {
        const qk_cu_seg_counts p = cpart[b * per + j];
        t.n_finite += p.n_finite;
        t.n_inliers += p.n_inliers;
        t.nonfinite_count += p.nonfinite_count;
        // relative to the segment already; the earliest block that has one holds the first
        if (t.first_nonfinite < 0 && p.first_nonfinite >= 0) t.first_nonfinite = p.first_nonfinite;
    }
    counts[b] = t;
}

// ---- widen ---------------------------------------------------------------------------------

template <bool HALF>
__global__ void __launch_bounds__(kThreads)
    widen_kernel(const uint16_t *__restrict__ x, float *__restrict__ out, int64_t n, bool vec)
{
    const int64_t groups = (n + 3) / 4;
    const int64_t stride = (int64_t)gridDim.x * kThreads;
    for (int64_t g = (int64_t)blockIdx.x * kThreads + threadIdx.x; g < groups; g += stride) {
        uint16_t h[4];
        qkcu::load4(x, g, n, vec, h);
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = __uint_as_float(HALF ? qk_cu_half_bits(h[j]) : (uint32_t)h[j] << 16);
        qkcu::store4(out, g, n, vec, v);
    }
}

} // namespace

// ---- launchers ----------------------------------------------------------------------------------

extern "C" cudaError_t qk_cu_seg_minmax(cudaStream_t s, int sms, int is_f64, const void *x, int64_t seg, int64_t nseg,
                                        qk_cu_minmax_acc *acc, qk_minmax_result *out)
{
    if (nseg <= 0 || seg <= 0) return cudaSuccess;
    // lanes per segment: about one per four elements, a power of two <= 32
    int w = 1;
    while (w < 32 && 4 * (int64_t)w < seg) w *= 2;
    // a long segment is cut into pieces so the device has enough lane groups
    // (about 128 warps per multiprocessor), each piece at least kPiece elements
    int64_t piece = seg, pieces = 1;
    if (seg > kPiece) {
        const int64_t want = (int64_t)(sms > 0 ? sms : 1) * 128;
        piece = (nseg * seg + want - 1) / want;
        piece = (piece + kPiece - 1) / kPiece * kPiece;
        if (piece < kPiece) piece = kPiece;
        if (piece > seg) piece = seg;
        pieces = (seg + piece - 1) / piece;
    }
    const int64_t threads = nseg * pieces * w;
    if (pieces > 1) {
        cudaError_t e = qkcu::launch(seg_minmax_init, blocks_for(nseg), kThreads, 0, s, acc, nseg);
        if (e != cudaSuccess) return e;
    }
    cudaError_t e;
    if (is_f64)
        e = qkcu::launch(seg_minmax_kernel<double>, blocks_for(threads), kThreads, 0, s, (const double *)x, seg, nseg,
                         w, piece, pieces, acc, out);
    else
        e = qkcu::launch(seg_minmax_kernel<float>, blocks_for(threads), kThreads, 0, s, (const float *)x, seg, nseg, w,
                         piece, pieces, acc, out);
    if (e != cudaSuccess || pieces == 1) return e;
    return qkcu::launch(seg_minmax_finish, blocks_for(nseg), kThreads, 0, s, acc, nseg, out);
}

extern "C" size_t qk_cu_seg_select_smem(int is_f64, int64_t seg)
{
    return is_f64 ? select_smem<unsigned long long>(seg) : select_smem<uint32_t>(seg);
}

extern "C" cudaError_t qk_cu_seg_select(cudaStream_t s, int is_f64, const void *x, int64_t seg, int64_t nseg,
                                        unsigned flags, const int64_t *ranks, int64_t nranks, double *values,
                                        int64_t seg_base, unsigned long long *bad)
{
    if (nseg <= 0 || nranks <= 0) return cudaSuccess;
    if (nseg > 0x7fffffff) return cudaErrorInvalidValue; // one block per segment
    flags &= QK_ABS | QK_IGNORE_NONFINITE;
    if (is_f64)
        return select_keys<unsigned long long>(s, (const unsigned long long *)x, seg, nseg, flags, ranks, nranks,
                                               values, seg_base, bad);
    return select_keys<uint32_t>(s, (const uint32_t *)x, seg, nseg, flags, ranks, nranks, values, seg_base, bad);
}

extern "C" cudaError_t qk_cu_seg_quantize(cudaStream_t s, int sms, qk_dtype xt, const void *x, qk_dtype ct,
                                          void *codes, int64_t n, int64_t seg, int64_t off,
                                          const qk_cu_qparam *params)
{
    if (n <= 0) return cudaSuccess;
    const unsigned grid = qkcu::grid_for((n + 3) / 4, sms, 8);
    if (xt == QK_F32) return seg_quantize_to<float>(s, grid, x, ct, codes, n, seg, off, params);
    if (xt == QK_F64) return seg_quantize_to<double>(s, grid, x, ct, codes, n, seg, off, params);
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t qk_cu_seg_dequantize(cudaStream_t s, int sms, qk_dtype ct, const void *codes, float *out,
                                            int64_t n, int64_t seg, int64_t off, const qk_cu_qparam *params)
{
    if (n <= 0) return cudaSuccess;
    const unsigned grid = qkcu::grid_for((n + 3) / 4, sms, 8);
    switch (ct) {
    case QK_U8: return launch_seg_dequantize<uint8_t>(s, grid, codes, out, n, seg, off, params);
    case QK_I8: return launch_seg_dequantize<int8_t>(s, grid, codes, out, n, seg, off, params);
    case QK_U16: return launch_seg_dequantize<uint16_t>(s, grid, codes, out, n, seg, off, params);
    case QK_I16: return launch_seg_dequantize<int16_t>(s, grid, codes, out, n, seg, off, params);
    case QK_I32: return launch_seg_dequantize<int32_t>(s, grid, codes, out, n, seg, off, params);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t qk_cu_seg_error(cudaStream_t s, int sms, int is_f64, const void *x, int64_t seg, int64_t nseg,
                                       const qk_cu_qparam *params, int k, const double *fences, void *scratch,
                                       qk_cu_seg_sums *sums, qk_cu_seg_counts *counts)
{
    (void)sms;
    if (nseg <= 0 || k <= 0) return cudaSuccess;
    const int group = is_f64 ? qkcu::ErrShape<double>::kGroup : qkcu::ErrShape<float>::kGroup;
    const int ncg = (k + group - 1) / group;
    if (seg <= QK_CU_SEG_WARP_ERROR) {
        const int64_t threads = nseg * ncg * 32;
        if (is_f64)
            return qkcu::launch(seg_error_warp<double>, blocks_for(threads), kThreads, 0, s, (const double *)x, seg,
                                nseg, params, k, ncg, fences, sums, counts);
        return qkcu::launch(seg_error_warp<float>, blocks_for(threads), kThreads, 0, s, (const float *)x, seg, nseg,
                            params, k, ncg, fences, sums, counts);
    }
    const int64_t per = (seg + kBlock - 1) / kBlock;
    const int64_t grid = nseg * per * ncg;
    if (grid > 0x7fffffff) return cudaErrorInvalidValue; // the host keeps launches smaller
    qk_cu_seg_sums *part = (qk_cu_seg_sums *)scratch;
    qk_cu_seg_counts *cpart = (qk_cu_seg_counts *)(part + nseg * per * k);
    cudaError_t e;
    if (is_f64)
        e = qkcu::launch(seg_error_block<double>, (unsigned)grid, kThreads, 0, s, (const double *)x, seg, per, params,
                         k, ncg, fences, part, cpart);
    else
        e = qkcu::launch(seg_error_block<float>, (unsigned)grid, kThreads, 0, s, (const float *)x, seg, per, params, k,
                         ncg, fences, part, cpart);
    if (e != cudaSuccess) return e;
    return qkcu::launch(seg_error_fold, blocks_for(nseg * k), kThreads, 0, s, part, cpart, nseg, per, k, sums, counts);
}

extern "C" cudaError_t qk_cu_widen(cudaStream_t s, int sms, qk_dtype xt, const uint16_t *x, float *out, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    const unsigned grid = qkcu::grid_for((n + 3) / 4, sms, 8);
    const bool vec = ((uintptr_t)x % 8) == 0 && qkcu::aligned16(out);
    if (xt == QK_F16) return qkcu::launch(widen_kernel<true>, grid, kThreads, 0, s, x, out, n, vec);
    if (xt == QK_BF16) return qkcu::launch(widen_kernel<false>, grid, kThreads, 0, s, x, out, n, vec);
    return cudaErrorInvalidValue;
}
