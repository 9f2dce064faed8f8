/* The scalar formulas of docs/numerics.md's numeric contract, shared by the CPU
 * backend. Built with -ffp-contract=off: no FMA may change a result. */
#ifndef QK_QUANT_MATH_H
#define QK_QUANT_MATH_H

#include <math.h>
#include <stdint.h>

/* r is rint(x / scale), already rounded. The zero-point addition is done in
 * double (exact: |r| < 2^52 or far outside any code range), and the clamp comes
 * before any conversion to an integer, since converting Inf/NaN is UB. NaN maps
 * to the code of 0. */
static inline int32_t qk_code_from_rounded(double r, int32_t zp, int32_t qmin, int32_t qmax)
{
    if (r != r) {
        return zp < qmin ? qmin : zp > qmax ? qmax : zp;
    }
    double t = r + (double)zp;
    if (t <= (double)qmin) return qmin;
    if (t >= (double)qmax) return qmax;
    return (int32_t)t;
}

/* float32 input: the division is a float division, correctly rounded. */
static inline int32_t qk_quant_f32(float x, float scale, int32_t zp, int32_t qmin, int32_t qmax)
{
    float r = rintf(x / scale);
    return qk_code_from_rounded((double)r, zp, qmin, qmax);
}

/* float64 input: the division is in double. */
static inline int32_t qk_quant_f64(double x, float scale, int32_t zp, int32_t qmin, int32_t qmax)
{
    double r = rint(x / (double)scale);
    return qk_code_from_rounded(r, zp, qmin, qmax);
}

/* x^ = (q - zp) * scale in float; q - zp is exact in int64, then rounded to float. */
static inline float qk_dequant(int64_t q, float scale, int32_t zp)
{
    return (float)(q - (int64_t)zp) * scale;
}

#endif
