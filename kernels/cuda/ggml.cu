// ggml's block formats on CUDA: the block functions of kernels/common/ggml_blocks.h
// (shared with the CPU and OpenCL backends), one thread per block, threads
// striding over the blocks. Built with -fmad=false and IEEE division and square
// root (cmake/cuda.cmake), as the functions require.
#include <stdint.h>

#include "common.cuh"
#include "../common/ggml_blocks.h"

namespace {

typedef void (*quant_fn)(const float *, qkg_u8 *);
typedef void (*dequant_fn)(const qkg_u8 *, float *);

template <int TYPE> struct block_kind;
#define QKCU_KIND(TYPE, NAME, ELEMS, BYTES)                                                                 \
    template <> struct block_kind<TYPE> {                                                                    \
        static constexpr int elems = ELEMS, bytes = BYTES;                                                   \
        static __device__ void quantize(const float *x, qkg_u8 *y) { qkg_quantize_##NAME(x, y); }           \
        static __device__ void dequantize(const qkg_u8 *y, float *x) { qkg_dequantize_##NAME(y, x); }       \
    };
QKCU_KIND(QKG_Q4_0, q4_0, QKG_QK, QKG_BYTES_Q4_0)
QKCU_KIND(QKG_Q4_1, q4_1, QKG_QK, QKG_BYTES_Q4_1)
QKCU_KIND(QKG_Q5_0, q5_0, QKG_QK, QKG_BYTES_Q5_0)
QKCU_KIND(QKG_Q5_1, q5_1, QKG_QK, QKG_BYTES_Q5_1)
QKCU_KIND(QKG_Q8_0, q8_0, QKG_QK, QKG_BYTES_Q8_0)
QKCU_KIND(QKG_Q2_K, q2_k, QKG_QK_K, QKG_BYTES_Q2_K)
QKCU_KIND(QKG_Q3_K, q3_k, QKG_QK_K, QKG_BYTES_Q3_K)
QKCU_KIND(QKG_Q4_K, q4_k, QKG_QK_K, QKG_BYTES_Q4_K)
QKCU_KIND(QKG_Q5_K, q5_k, QKG_QK_K, QKG_BYTES_Q5_K)
QKCU_KIND(QKG_Q6_K, q6_k, QKG_QK_K, QKG_BYTES_Q6_K)
#undef QKCU_KIND

// Blocks are copied to thread-local arrays first: the shared functions read
// their input many times and write their output bytes piecewise.
template <int TYPE>
__global__ void quantize_kernel(const float *__restrict__ x, qkg_u8 *__restrict__ y, int64_t nblocks)
{
    typedef block_kind<TYPE> K;
    float xb[K::elems];
    qkg_u8 yb[K::bytes];
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nblocks;
         b += (int64_t)gridDim.x * blockDim.x) {
        for (int i = 0; i < K::elems; i++) xb[i] = x[b * K::elems + i];
        K::quantize(xb, yb);
        for (int i = 0; i < K::bytes; i++) y[b * K::bytes + i] = yb[i];
    }
}

template <int TYPE>
__global__ void dequantize_kernel(const qkg_u8 *__restrict__ y, float *__restrict__ x, int64_t nblocks)
{
    typedef block_kind<TYPE> K;
    float xb[K::elems];
    qkg_u8 yb[K::bytes];
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nblocks;
         b += (int64_t)gridDim.x * blockDim.x) {
        for (int i = 0; i < K::bytes; i++) yb[i] = y[b * K::bytes + i];
        K::dequantize(yb, xb);
        for (int i = 0; i < K::elems; i++) x[b * K::elems + i] = xb[i];
    }
}

// F32 -> F16 / BF16 / F32 (kind 1, 2, 0) and back, bytes little-endian at any offset.
__global__ void from_f32_kernel(const float *__restrict__ x, qkg_u8 *__restrict__ y, int64_t n, int kind)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        if (kind == 0) {
            const qkg_u32 u = QKG_F2U(v);
            for (int k = 0; k < 4; k++) y[4 * i + k] = (qkg_u8)(u >> (8 * k));
        } else {
            const qkg_u16 h = kind == 1 ? qkg_f32_to_f16(v) : qkg_f32_to_bf16(v);
            y[2 * i] = (qkg_u8)(h & 0xffu);
            y[2 * i + 1] = (qkg_u8)(h >> 8);
        }
    }
}

__global__ void to_f32_kernel(const qkg_u8 *__restrict__ y, float *__restrict__ x, int64_t n, int kind)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (kind == 0) {
            qkg_u32 u = 0;
            for (int k = 0; k < 4; k++) u |= (qkg_u32)y[4 * i + k] << (8 * k);
            x[i] = QKG_U2F(u);
        } else {
            const qkg_u16 h = (qkg_u16)(y[2 * i] | (y[2 * i + 1] << 8));
            x[i] = kind == 1 ? qkg_f16_to_f32(h) : qkg_bf16_to_f32(h);
        }
    }
}

template <int TYPE>
cudaError_t run(cudaStream_t s, int sms, int quantize, const float *x, qkg_u8 *y, int64_t n)
{
    typedef block_kind<TYPE> K;
    const int64_t nblocks = n / K::elems;
    const unsigned grid = qkcu::grid_for(nblocks, sms, 16);
    if (quantize) return qkcu::launch(quantize_kernel<TYPE>, grid, qkcu::kThreads, 0, s, x, y, nblocks);
    return qkcu::launch(dequantize_kernel<TYPE>, grid, qkcu::kThreads, 0, s, (const qkg_u8 *)y,
                        const_cast<float *>(x), nblocks);
}

cudaError_t dispatch(cudaStream_t s, int sms, int type, int quantize, const float *x, qkg_u8 *y, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    switch (type) {
    case QKG_F32:
    case QKG_F16:
    case QKG_BF16: {
        const int kind = type == QKG_F32 ? 0 : type == QKG_F16 ? 1 : 2;
        const unsigned grid = qkcu::grid_for(n, sms, 16);
        if (quantize) return qkcu::launch(from_f32_kernel, grid, qkcu::kThreads, 0, s, x, y, n, kind);
        return qkcu::launch(to_f32_kernel, grid, qkcu::kThreads, 0, s, (const qkg_u8 *)y, const_cast<float *>(x),
                            n, kind);
    }
    case QKG_Q4_0: return run<QKG_Q4_0>(s, sms, quantize, x, y, n);
    case QKG_Q4_1: return run<QKG_Q4_1>(s, sms, quantize, x, y, n);
    case QKG_Q5_0: return run<QKG_Q5_0>(s, sms, quantize, x, y, n);
    case QKG_Q5_1: return run<QKG_Q5_1>(s, sms, quantize, x, y, n);
    case QKG_Q8_0: return run<QKG_Q8_0>(s, sms, quantize, x, y, n);
    case QKG_Q2_K: return run<QKG_Q2_K>(s, sms, quantize, x, y, n);
    case QKG_Q3_K: return run<QKG_Q3_K>(s, sms, quantize, x, y, n);
    case QKG_Q4_K: return run<QKG_Q4_K>(s, sms, quantize, x, y, n);
    case QKG_Q5_K: return run<QKG_Q5_K>(s, sms, quantize, x, y, n);
    case QKG_Q6_K: return run<QKG_Q6_K>(s, sms, quantize, x, y, n);
    default: return cudaErrorInvalidValue;
    }
}

} // namespace

extern "C" cudaError_t qk_cu_ggml_quantize(cudaStream_t s, int sms, int type, const float *x, unsigned char *y,
                                           int64_t n)
{
    return dispatch(s, sms, type, 1, x, y, n);
}

extern "C" cudaError_t qk_cu_ggml_dequantize(cudaStream_t s, int sms, int type, const unsigned char *y, float *x,
                                             int64_t n)
{
    return dispatch(s, sms, type, 0, x, const_cast<qkg_u8 *>(y), n);
}
