// Quantize and dequantize: elementwise grid-stride kernels, four elements per
// thread step (one vector load/store when both sides are aligned, scalars at
// the tail). The arithmetic is host/quant_math.h's, step for step.
#include "common.cuh"

namespace {

using qkcu::kThreads;

template <typename TX, typename TC>
__global__ void __launch_bounds__(kThreads) quantize_kernel(const TX *__restrict__ x, TC *__restrict__ codes, int64_t n,
                                                            bool vec, qk_cu_qparam p)
{
    const int64_t groups = (n + 3) / 4;
    const int64_t stride = (int64_t)gridDim.x * kThreads;
    for (int64_t g = (int64_t)blockIdx.x * kThreads + threadIdx.x; g < groups; g += stride) {
        TX v[4];
        qkcu::load4(x, g, n, vec, v);
        TC c[4];
#pragma unroll
        for (int j = 0; j < 4; j++) c[j] = (TC)qkcu::quant_one(v[j], p.scale, p.zero_point, p.qmin, p.qmax);
        qkcu::store4(codes, g, n, vec, c);
    }
}

template <typename TC>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const TC *__restrict__ codes, float *__restrict__ out,
                                                              int64_t n, bool vec, float scale, int32_t zp)
{
    const int64_t groups = (n + 3) / 4;
    const int64_t stride = (int64_t)gridDim.x * kThreads;
    for (int64_t g = (int64_t)blockIdx.x * kThreads + threadIdx.x; g < groups; g += stride) {
        TC c[4];
        qkcu::load4(codes, g, n, vec, c);
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = qkcu::dequant_one((int64_t)c[j], scale, zp);
        qkcu::store4(out, g, n, vec, v);
    }
}

template <typename TX, typename TC>
cudaError_t launch_quantize(cudaStream_t s, unsigned grid, const void *x, void *codes, int64_t n, qk_cu_qparam p)
{
    // four codes are 4 * sizeof(TC) bytes: the vector store needs that alignment
    const bool vec = qkcu::aligned16(x) && ((uintptr_t)codes % (4 * sizeof(TC))) == 0;
    return qkcu::launch(quantize_kernel<TX, TC>, grid, kThreads, 0, s, (const TX *)x, (TC *)codes, n, vec, p);
}

template <typename TX>
cudaError_t quantize_to(cudaStream_t s, unsigned grid, const void *x, qk_dtype ct, void *codes, int64_t n,
                        qk_cu_qparam p)
{
    switch (ct) {
    case QK_U8: return launch_quantize<TX, uint8_t>(s, grid, x, codes, n, p);
    case QK_I8: return launch_quantize<TX, int8_t>(s, grid, x, codes, n, p);
    case QK_U16: return launch_quantize<TX, uint16_t>(s, grid, x, codes, n, p);
    case QK_I16: return launch_quantize<TX, int16_t>(s, grid, x, codes, n, p);
    case QK_I32: return launch_quantize<TX, int32_t>(s, grid, x, codes, n, p);
    default: return cudaErrorInvalidValue;
    }
}

template <typename TC>
cudaError_t launch_dequantize(cudaStream_t s, unsigned grid, const void *codes, float *out, int64_t n, float scale,
                              int32_t zp)
{
    const bool vec = ((uintptr_t)codes % (4 * sizeof(TC))) == 0 && qkcu::aligned16(out);
    return qkcu::launch(dequantize_kernel<TC>, grid, kThreads, 0, s, (const TC *)codes, out, n, vec, scale, zp);
}

} // namespace

extern "C" cudaError_t qk_cu_quantize(cudaStream_t s, int sms, qk_dtype xt, const void *x, qk_dtype ct, void *codes,
                                      int64_t n, qk_cu_qparam p)
{
    const unsigned grid = qkcu::grid_for((n + 3) / 4, sms, 8);
    if (xt == QK_F32) return quantize_to<float>(s, grid, x, ct, codes, n, p);
    if (xt == QK_F64) return quantize_to<double>(s, grid, x, ct, codes, n, p);
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t qk_cu_dequantize(cudaStream_t s, int sms, qk_dtype ct, const void *codes, float *out, int64_t n,
                                        float scale, int32_t zero_point)
{
    const unsigned grid = qkcu::grid_for((n + 3) / 4, sms, 8);
    switch (ct) {
    case QK_U8: return launch_dequantize<uint8_t>(s, grid, codes, out, n, scale, zero_point);
    case QK_I8: return launch_dequantize<int8_t>(s, grid, codes, out, n, scale, zero_point);
    case QK_U16: return launch_dequantize<uint16_t>(s, grid, codes, out, n, scale, zero_point);
    case QK_I16: return launch_dequantize<int16_t>(s, grid, codes, out, n, scale, zero_point);
    case QK_I32: return launch_dequantize<int32_t>(s, grid, codes, out, n, scale, zero_point);
    default: return cudaErrorInvalidValue;
    }
}
