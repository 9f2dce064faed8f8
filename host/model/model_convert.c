/* Float conversions of the model pipeline (model_convert.h). */
#include "model_convert.h"

#include <math.h>
#include <string.h>

uint16_t model_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf stays Inf, NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* rounds past 65504 */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below the smallest normal half */
        if (ax <= 0x33000000u) /* at most half the smallest subnormal: ties to even 0 */
            return sign;
        uint32_t e = ax >> 23, man = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (ax >> 13) - (112u << 10), rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the right result */
    return (uint16_t)(sign | h);
}

uint16_t model_float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* NaN: keep it a NaN after truncation */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float f;
    if (exp == 0x1f) {
        uint32_t bits = sign | 0x7f800000u | (man << 13);
        memcpy(&f, &bits, 4);
        return f;
    }
    if (exp == 0) /* subnormal or zero: man * 2^-24, exact */
        f = ldexpf((float)man, -24);
    else
        f = ldexpf((float)(man | 0x400u), (int)exp - 25);
    return sign ? -f : f;
}

static float bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

double model_sum_squares(double s, qk_dtype dtype, const void *data, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (dtype) {
        case QK_F32:
            v = ((const float *)data)[i];
            break;
        case QK_F64:
            v = ((const double *)data)[i];
            break;
        case QK_F16:
            v = half_to_float(((const uint16_t *)data)[i]);
            break;
        case QK_BF16:
            v = bf16_to_float(((const uint16_t *)data)[i]);
            break;
        default:
            return NAN;
        }
        if (isfinite(v))
            s += v * v;
    }
    return s;
}

double model_value(qk_dtype dtype, const void *data, int64_t i)
{
    switch (dtype) {
    case QK_F32:
        return ((const float *)data)[i];
    case QK_F64:
        return ((const double *)data)[i];
    case QK_F16:
        return half_to_float(((const uint16_t *)data)[i]);
    case QK_BF16:
        return bf16_to_float(((const uint16_t *)data)[i]);
    default:
        return NAN;
    }
}

void model_to_f32(qk_dtype dtype, const void *data, int64_t n, float *out)
{
    if (dtype == QK_F32) {
        if ((const void *)out != data)
            memcpy(out, data, (size_t)n * sizeof *out);
        return;
    }
    for (int64_t i = 0; i < n; i++) /* F64: rounded to nearest; F16, BF16: exact */
        out[i] = (float)model_value(dtype, data, i);
}
