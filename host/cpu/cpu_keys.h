/* Order-preserving integer keys for floats: the unsigned order of the keys is
 * the numeric order of the values, with -0 before +0 (a total order, so min, max
 * and order statistics are single, exact values on every backend). Shared by
 * the CPU backend and the host sides of the OpenCL and CUDA backends. */
#ifndef QK_CPU_KEYS_H
#define QK_CPU_KEYS_H

#include <stdint.h>
#include <string.h>

static inline uint32_t qk_key_f32(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float qk_unkey_f32(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static inline uint64_t qk_key_f64(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

static inline double qk_unkey_f64(uint64_t k)
{
    uint64_t u = (k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k;
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* The exact value of a key, as a double: a float32 key (the low 32 bits) when
 * wide is 0, a float64 key otherwise. Every backend's host side uses this. */
static inline double qk_key_value(uint64_t k, int wide)
{
    return wide ? qk_unkey_f64(k) : (double)qk_unkey_f32((uint32_t)k);
}

#endif
