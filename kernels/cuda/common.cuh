// Helpers shared by the CUDA kernels: order-preserving keys (the same maps as
// host/cpu/cpu_keys.h), vector loads with scalar tails, the exact scalar
// formulas of host/quant_math.h written with explicitly rounded intrinsics, and
// launch shapes. Built with -fmad=false: nothing is contracted into an FMA.
#ifndef QK_CUDA_COMMON_CUH
#define QK_CUDA_COMMON_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#include "cuda_launch.h"

namespace qkcu {

constexpr int kThreads = 256; // every kernel's block size (the reductions assume it)
constexpr unsigned kFullMask = 0xffffffffu;

// ---- keys: unsigned order == numeric order, -0 before +0 --------------------

__device__ __forceinline__ uint32_t key_bits32(uint32_t u)
{
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint64_t key_bits64(uint64_t u)
{
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

__device__ __forceinline__ bool finite_bits32(uint32_t u)
{
    return (u & 0x7f800000u) != 0x7f800000u;
}

__device__ __forceinline__ bool finite_bits64(uint64_t u)
{
    return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

__device__ __forceinline__ bool is_finite(float v)
{
    return finite_bits32(__float_as_uint(v));
}

__device__ __forceinline__ bool is_finite(double v)
{
    return finite_bits64((uint64_t)__double_as_longlong(v));
}

// ---- four consecutive elements: one vector load when aligned, else scalars ----

// Loads x[4g .. 4g+3] (those below n); returns how many. vec: x is 16-byte aligned.
__device__ __forceinline__ int load4(const float *__restrict__ x, int64_t g, int64_t n, bool vec, float (&v)[4])
{
    const int64_t i = 4 * g;
    if (vec && i + 4 <= n) {
        const float4 q = reinterpret_cast<const float4 *>(x)[g];
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
        return 4;
    }
    int c = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (i + j < n) {
            v[j] = x[i + j];
            c++;
        } else {
            v[j] = 0.0f;
        }
    }
    return c;
}

__device__ __forceinline__ int load4(const double *__restrict__ x, int64_t g, int64_t n, bool vec, double (&v)[4])
{
    const int64_t i = 4 * g;
    if (vec && i + 4 <= n) {
        const double2 a = reinterpret_cast<const double2 *>(x)[2 * g];
        const double2 b = reinterpret_cast<const double2 *>(x)[2 * g + 1];
        v[0] = a.x;
        v[1] = a.y;
        v[2] = b.x;
        v[3] = b.y;
        return 4;
    }
    int c = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (i + j < n) {
            v[j] = x[i + j];
            c++;
        } else {
            v[j] = 0.0;
        }
    }
    return c;
}

// Four integer codes as one naturally aligned vector (4, 8 or 16 bytes).
template <typename T> struct alignas(4 * sizeof(T)) Vec4 {
    T v[4];
};

template <typename T>
__device__ __forceinline__ int load4(const T *__restrict__ x, int64_t g, int64_t n, bool vec, T (&v)[4])
{
    const int64_t i = 4 * g;
    if (vec && i + 4 <= n) {
        const Vec4<T> q = reinterpret_cast<const Vec4<T> *>(x)[g];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = q.v[j];
        return 4;
    }
    int c = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (i + j < n) {
            v[j] = x[i + j];
            c++;
        } else {
            v[j] = T(0);
        }
    }
    return c;
}

template <typename T> __device__ __forceinline__ void store4(T *__restrict__ y, int64_t g, int64_t n, bool vec, const T (&v)[4])
{
    const int64_t i = 4 * g;
    if (vec && i + 4 <= n) {
        Vec4<T> q;
#pragma unroll
        for (int j = 0; j < 4; j++) q.v[j] = v[j];
        reinterpret_cast<Vec4<T> *>(y)[g] = q;
        return;
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (i + j < n) y[i + j] = v[j];
    }
}

__device__ __forceinline__ void store4(float *__restrict__ y, int64_t g, int64_t n, bool vec, const float (&v)[4])
{
    const int64_t i = 4 * g;
    if (vec && i + 4 <= n) {
        reinterpret_cast<float4 *>(y)[g] = make_float4(v[0], v[1], v[2], v[3]);
        return;
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        if (i + j < n) y[i + j] = v[j];
    }
}

// ---- the numeric contract (host/quant_math.h) ------------------------------

// r = rint(x / scale), already rounded: the zero point is added in double and
// the clamp comes before any conversion to an integer. NaN -> clamp(zp).
__device__ __forceinline__ int32_t code_from_rounded(double r, int32_t zp, int32_t qmin, int32_t qmax)
{
    if (r != r) return zp < qmin ? qmin : (zp > qmax ? qmax : zp);
    const double t = __dadd_rn(r, (double)zp);
    if (t <= (double)qmin) return qmin;
    if (t >= (double)qmax) return qmax;
    return (int32_t)t;
}

// float32 input: a correctly rounded float division, then rintf.
__device__ __forceinline__ int32_t quant_one(float x, float scale, int32_t zp, int32_t qmin, int32_t qmax)
{
    const float r = rintf(__fdiv_rn(x, scale));
    return code_from_rounded((double)r, zp, qmin, qmax);
}

// float64 input: the division in double.
__device__ __forceinline__ int32_t quant_one(double x, float scale, int32_t zp, int32_t qmin, int32_t qmax)
{
    const double r = rint(__ddiv_rn(x, (double)scale));
    return code_from_rounded(r, zp, qmin, qmax);
}

// x^ = (q - zp) * scale: the difference exact in int64, rounded once to float.
__device__ __forceinline__ float dequant_one(int64_t q, float scale, int32_t zp)
{
    return __fmul_rn(__ll2float_rn(q - (int64_t)zp), scale);
}

// ---- launch shapes -----------------------------------------------------------

// Blocks for a grid-stride loop over `items` work items of kThreads per block:
// enough to fill the device a few times over, never more than the work.
inline unsigned grid_for(int64_t items, int sms, int per_sm)
{
    int64_t want = (items + kThreads - 1) / kThreads;
    int64_t cap = (int64_t)(sms > 0 ? sms : 1) * per_sm;
    if (want > cap) want = cap;
    if (want < 1) want = 1;
    return (unsigned)want;
}

// Every launch goes through here: the launch error is the return value of
// cudaLaunchKernelEx, so no launcher reads (and so resets) the thread's last
// error, which belongs to the application (a library that calls
// cudaGetLastError() swallows an error the host program has not read yet).
// The arguments are converted to the kernel's parameter types as <<<>>> does.
template <typename... Params, typename... Args>
inline cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                          Args &&...args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = nullptr;
    cfg.numAttrs = 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<Args &&>(args)...);
}

inline bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

// Shape of the error pass (error.cu, segment.cu), where grid search spends its
// time: kGroup parameter sets per CUDA block (per warp in the warp kernel), and
// kMinBlocks, the blocks of 256 threads __launch_bounds__ asks to fit on one
// SM (register cap 65536 / (256 * kMinBlocks)). The group size decides only
// which sets share a block: each set's sums are formed by the same threads
// over the same elements in the same order, through the same warp tree and
// the same walk over the warps, so results are bit-identical whatever the
// group (and the counters come from group 0 either way). Checked with
// `-Xptxas -v` for sm_80 and sm_90: no spills (kernels/cuda/README.md).
#ifndef QK_CU_ERR_GROUP_F32
#define QK_CU_ERR_GROUP_F32 4
#endif
#ifndef QK_CU_ERR_GROUP_F64
#define QK_CU_ERR_GROUP_F64 2
#endif
#ifndef QK_CU_ERR_MINB_F32
#define QK_CU_ERR_MINB_F32 2
#endif
#ifndef QK_CU_ERR_MINB_F64
#define QK_CU_ERR_MINB_F64 2
#endif
// segment.cu's warp-per-segment error kernel holds less per thread (no block
// reduction): it fits three blocks (<= 80 registers) for both types.
template <typename T> struct ErrShape {
    static constexpr int kGroup = QK_CU_ERR_GROUP_F32;
    static constexpr int kMinBlocks = QK_CU_ERR_MINB_F32;
    static constexpr int kWarpMinBlocks = 3;
};
template <> struct ErrShape<double> {
    static constexpr int kGroup = QK_CU_ERR_GROUP_F64;
    static constexpr int kMinBlocks = QK_CU_ERR_MINB_F64;
    static constexpr int kWarpMinBlocks = 3;
};

// Warp trees of the error pass (error.cu, segment.cu): a fixed shuffle-down
// order, so a sum's bits depend only on the 32 lanes' values.
__device__ __forceinline__ double warp_sum(double v)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = __dadd_rn(v, __shfl_down_sync(kFullMask, v, off));
    return v;
}

__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFullMask, v, off);
    return v;
}

__device__ __forceinline__ unsigned long long warp_min(unsigned long long v)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const unsigned long long o = __shfl_down_sync(kFullMask, v, off);
        v = o < v ? o : v;
    }
    return v;
}

} // namespace qkcu

#endif
