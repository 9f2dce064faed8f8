// Exact min/max by order-preserving integer keys: a grid-stride pass with
// vector loads, a per-block cub::BlockReduce, then one integer atomic per value
// per block. Integer min/max/add commute, so the result never depends on the
// order blocks finish in.
#include <cub/block/block_reduce.cuh>

#include "common.cuh"

namespace {

using qkcu::kThreads;

struct MinU64 {
    __device__ __forceinline__ unsigned long long operator()(unsigned long long a, unsigned long long b) const
    {
        return b < a ? b : a;
    }
};

struct MaxU64 {
    __device__ __forceinline__ unsigned long long operator()(unsigned long long a, unsigned long long b) const
    {
        return b > a ? b : a;
    }
};

struct SumU64 {
    __device__ __forceinline__ unsigned long long operator()(unsigned long long a, unsigned long long b) const
    {
        return a + b;
    }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) minmax_kernel(const T *__restrict__ x, int64_t n, int64_t base, bool vec,
                                                          qk_cu_minmax_acc *__restrict__ acc)
{
    unsigned long long kmin = ~0ull, kmax = 0, fin = 0, bad = 0, first = ~0ull;
    const int64_t groups = (n + 3) / 4;
    const int64_t stride = (int64_t)gridDim.x * kThreads;
    for (int64_t g = (int64_t)blockIdx.x * kThreads + threadIdx.x; g < groups; g += stride) {
        T v[4];
        const int c = qkcu::load4(x, g, n, vec, v);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (j >= c) break;
            if (!qkcu::is_finite(v[j])) {
                if (bad++ == 0) first = (unsigned long long)(base + 4 * g + j);
                continue;
            }
            // float -> double is exact and keeps the order (-0 included): one key space.
            const unsigned long long k = qkcu::key_bits64((uint64_t)__double_as_longlong((double)v[j]));
            kmin = k < kmin ? k : kmin;
            kmax = k > kmax ? k : kmax;
            fin++;
        }
    }

    typedef cub::BlockReduce<unsigned long long, kThreads> Reduce;
    __shared__ typename Reduce::TempStorage tmp;
    __shared__ unsigned long long s_fin;
    unsigned long long r;

    r = Reduce(tmp).Reduce(fin, SumU64());
    if (threadIdx.x == 0) s_fin = r;
    __syncthreads();
    const unsigned long long block_fin = s_fin;
    if (block_fin) {
        r = Reduce(tmp).Reduce(kmin, MinU64());
        if (threadIdx.x == 0) atomicMin(&acc->kmin, r);
        __syncthreads();
        r = Reduce(tmp).Reduce(kmax, MaxU64());
        if (threadIdx.x == 0) {
            atomicMax(&acc->kmax, r);
            atomicAdd(&acc->n_finite, block_fin);
        }
        __syncthreads();
    }
    r = Reduce(tmp).Reduce(bad, SumU64());
    __syncthreads();
    const unsigned long long block_first = Reduce(tmp).Reduce(first, MinU64());
    if (threadIdx.x == 0 && r) {
        atomicAdd(&acc->nonfinite, r);
        atomicMin(&acc->first, block_first);
    }
}

} // namespace

extern "C" cudaError_t qk_cu_minmax(cudaStream_t s, int sms, int is_f64, const void *x, int64_t n, int64_t base,
                                    qk_cu_minmax_acc *acc)
{
    const unsigned grid = qkcu::grid_for((n + 3) / 4, sms, 8);
    const bool vec = qkcu::aligned16(x);
    if (is_f64) return qkcu::launch(minmax_kernel<double>, grid, kThreads, 0, s, (const double *)x, n, base, vec, acc);
    return qkcu::launch(minmax_kernel<float>, grid, kThreads, 0, s, (const float *)x, n, base, vec, acc);
}
