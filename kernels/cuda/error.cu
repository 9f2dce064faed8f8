// The fused error pass: for k parameter sets at once, the sum of squared
// round-trip errors (all finite elements, and those inside the fences), the
// clipped counts, and the shared counters.
//
// Determinism: the tensor is cut into fixed blocks of QK_CU_ERROR_BLOCK
// elements of its global index. A CUDA block owns one such block and a group
// of kGroup parameter sets; thread t adds the elements 4t..4t+3, 4(t+256).., in
// that order, in double; a fixed shuffle tree and a fixed walk over the warps
// reduce the block. The block sums are then added to the running sums in block
// order by one thread per parameter set. Nothing depends on scheduling, on
// alignment (vector and scalar loads add in the same order) or on how the host
// cuts the tensor into launches (launch bases are multiples of the block size).
// Counts are integers: atomics are exact.
#include "common.cuh"

namespace {

using qkcu::kFullMask;
using qkcu::kThreads;

constexpr int kWarps = kThreads / 32;
constexpr int64_t kBlock = QK_CU_ERROR_BLOCK; // elements per fixed block

using qkcu::warp_min;
using qkcu::warp_sum;

template <typename T>
__global__ void __launch_bounds__(kThreads, qkcu::ErrShape<T>::kMinBlocks)
    error_kernel(const T *__restrict__ x, int64_t n, int64_t base, bool vec, const qk_cu_qparam *__restrict__ params,
                 int k, double fence_lo, double fence_hi, double *__restrict__ partial,
                 unsigned long long *__restrict__ clipped, unsigned long long *__restrict__ counts)
{
    constexpr int kGroup = qkcu::ErrShape<T>::kGroup; // parameter sets of a block (common.cuh)
    __shared__ float s_scale[kGroup];
    __shared__ int32_t s_zp[kGroup], s_qmin[kGroup], s_qmax[kGroup];
    __shared__ double s_lo[kGroup], s_hi[kGroup];
    __shared__ double s_sum[kWarps][2 * kGroup];
    __shared__ unsigned long long s_cnt[kWarps][kGroup + 4];

    const int c0 = (int)blockIdx.x * kGroup;
    const int nc = k - c0 < kGroup ? k - c0 : kGroup; // parameter sets of this block
    const int64_t blk = blockIdx.y;
    const int64_t b0 = blk * kBlock;
    const int64_t b1 = n - b0 < kBlock ? n : b0 + kBlock;
    const bool counter = blockIdx.x == 0; // one group counts the shared counters

    if (threadIdx.x < kGroup) {
        const int c = threadIdx.x;
        qk_cu_qparam p = params[c0 + (c < nc ? c : 0)];
        s_scale[c] = p.scale;
        s_zp[c] = p.zero_point;
        s_qmin[c] = p.qmin;
        s_qmax[c] = p.qmax;
        s_lo[c] = p.clip_lo;
        s_hi[c] = p.clip_hi;
    }
    __syncthreads();

    double sse[kGroup], ssi[kGroup];
    unsigned clip[kGroup];
#pragma unroll
    for (int c = 0; c < kGroup; c++) {
        sse[c] = 0.0;
        ssi[c] = 0.0;
        clip[c] = 0;
    }
    unsigned fin = 0, inl = 0, bad = 0;
    unsigned long long first = ~0ull;

    for (int64_t g = b0 / 4 + threadIdx.x; 4 * g < b1; g += kThreads) {
        T v[4];
        const int cnt = qkcu::load4(x, g, b1, vec, v);
        for (int j = 0; j < cnt; j++) {
            const T xv = v[j];
            if (!qkcu::is_finite(xv)) {
                if (bad++ == 0) first = (unsigned long long)(base + 4 * g + j);
                continue;
            }
            const double xd = (double)xv;
            const bool inside = xd >= fence_lo && xd <= fence_hi;
            fin++;
            inl += inside;
#pragma unroll
            for (int c = 0; c < kGroup; c++) {
                if (c < nc) {
                    const float sc = s_scale[c];
                    const int32_t zp = s_zp[c];
                    const int32_t q = qkcu::quant_one(xv, sc, zp, s_qmin[c], s_qmax[c]);
                    const double e = __dsub_rn(xd, (double)qkcu::dequant_one(q, sc, zp));
                    const double e2 = __dmul_rn(e, e);
                    sse[c] = __dadd_rn(sse[c], e2);
                    if (inside) ssi[c] = __dadd_rn(ssi[c], e2);
                    clip[c] += (xd < s_lo[c] || xd > s_hi[c]) ? 1u : 0u;
                }
            }
        }
    }

    // Block reduction: a fixed shuffle tree per warp, then the warps in order.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int c = 0; c < kGroup; c++) {
        const double a = warp_sum(sse[c]);
        const double b = warp_sum(ssi[c]);
        const unsigned long long m = warp_sum((unsigned long long)clip[c]);
        if (lane == 0) {
            s_sum[warp][2 * c] = a;
            s_sum[warp][2 * c + 1] = b;
            s_cnt[warp][c] = m;
        }
    }
    {
        const unsigned long long f = warp_sum((unsigned long long)fin);
        const unsigned long long i = warp_sum((unsigned long long)inl);
        const unsigned long long z = warp_sum((unsigned long long)bad);
        const unsigned long long m = warp_min(first);
        if (lane == 0) {
            s_cnt[warp][kGroup + 0] = f;
            s_cnt[warp][kGroup + 1] = i;
            s_cnt[warp][kGroup + 2] = z;
            s_cnt[warp][kGroup + 3] = m;
        }
    }
    __syncthreads();

    const int t = threadIdx.x;
    if (t < 2 * kGroup) {
        const int c = t >> 1;
        if (c < nc) {
            double s = s_sum[0][t];
            for (int w = 1; w < kWarps; w++) s = __dadd_rn(s, s_sum[w][t]);
            partial[(blk * k + c0 + c) * 2 + (t & 1)] = s;
        }
    } else if (t >= 32 && t < 32 + kGroup) {
        const int c = t - 32;
        if (c < nc) {
            unsigned long long m = 0;
            for (int w = 0; w < kWarps; w++) m += s_cnt[w][c];
            if (m) atomicAdd(&clipped[c0 + c], m);
        }
    } else if (t == 64 && counter) {
        unsigned long long f = 0, i = 0, z = 0, m = ~0ull;
        for (int w = 0; w < kWarps; w++) {
            f += s_cnt[w][kGroup + 0];
            i += s_cnt[w][kGroup + 1];
            z += s_cnt[w][kGroup + 2];
            m = s_cnt[w][kGroup + 3] < m ? s_cnt[w][kGroup + 3] : m;
        }
        if (f) atomicAdd(&counts[QK_CU_CNT_FINITE], f);
        if (i) atomicAdd(&counts[QK_CU_CNT_INLIERS], i);
        if (z) {
            atomicAdd(&counts[QK_CU_CNT_NONFINITE], z);
            atomicMin(&counts[QK_CU_CNT_FIRST], m);
        }
    }
}

// run[c] += block sums in block order: one thread per parameter set.
__global__ void __launch_bounds__(kThreads) fold_kernel(const double *__restrict__ partial, int64_t nblk, int k,
                                                        double *__restrict__ run)
{
    const int c = (int)(blockIdx.x * kThreads + threadIdx.x);
    if (c >= k) return;
    const double2 *__restrict__ pp = reinterpret_cast<const double2 *>(partial);
    double s = run[2 * c], si = run[2 * c + 1];
    int64_t b = 0;
    // the loads of 16 blocks are issued together (one latency per 16, not per
    // block); the additions keep block order
    for (; b + 16 <= nblk; b += 16) {
        double2 p[16];
#pragma unroll
        for (int u = 0; u < 16; u++) p[u] = pp[(b + u) * k + c];
#pragma unroll
        for (int u = 0; u < 16; u++) {
            s = __dadd_rn(s, p[u].x);
            si = __dadd_rn(si, p[u].y);
        }
    }
    for (; b < nblk; b++) {
        const double2 p = pp[b * k + c];
        s = __dadd_rn(s, p.x);
        si = __dadd_rn(si, p.y);
    }
    run[2 * c] = s;
    run[2 * c + 1] = si;
}

} // namespace

extern "C" cudaError_t qk_cu_error(cudaStream_t s, int is_f64, const void *x, int64_t n, int64_t base,
                                   const qk_cu_qparam *params, int k, double fence_lo, double fence_hi, double *partial,
                                   unsigned long long *clipped, unsigned long long *counts, double *run)
{
    if (n <= 0 || k <= 0) return cudaSuccess;
    const int64_t nblk = (n + kBlock - 1) / kBlock;
    if (nblk > 65535) return cudaErrorInvalidValue; // grid y limit: the host keeps launches below 2^30 elements
    const int group = is_f64 ? qkcu::ErrShape<double>::kGroup : qkcu::ErrShape<float>::kGroup;
    const dim3 grid((unsigned)((k + group - 1) / group), (unsigned)nblk);
    const bool vec = qkcu::aligned16(x);
    cudaError_t e;
    if (is_f64) {
        e = qkcu::launch(error_kernel<double>, grid, kThreads, 0, s, (const double *)x, n, base, vec, params, k,
                         fence_lo, fence_hi, partial, clipped, counts);
    } else {
        e = qkcu::launch(error_kernel<float>, grid, kThreads, 0, s, (const float *)x, n, base, vec, params, k, fence_lo,
                         fence_hi, partial, clipped, counts);
    }
    if (e != cudaSuccess) return e;
    return qkcu::launch(fold_kernel, (unsigned)((k + kThreads - 1) / kThreads), kThreads, 0, s, partial, nblk, k, run);
}
