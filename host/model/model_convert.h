/* Float conversions of the model pipeline: float32 to float16/bfloat16 for
 * restored tensors, and the sum of squares behind the SQNR of a report. */
#ifndef QK_MODEL_CONVERT_H
#define QK_MODEL_CONVERT_H

#include <stdint.h>

#include "qkern.h"

/* Round to nearest, ties to even (numpy's astype(float16); torch's .to(bfloat16)). */
uint16_t model_float_to_half(float f);
uint16_t model_float_to_bf16(float f);

/* s plus x^2 over the finite elements, in double, in index order: a tensor
 * summed piece by piece (s carried over) gives the same bits as in one go. */
double model_sum_squares(double s, qk_dtype dtype, const void *data, int64_t n);

/* Element i of a float tensor of dtype, as a double (NaN for other dtypes). */
double model_value(qk_dtype dtype, const void *data, int64_t i);
/* n floats of dtype (F32, F64, F16, BF16) as float32: F64 rounded to nearest,
 * the others exact (ggml quantizes float32 rows). */
void model_to_f32(qk_dtype dtype, const void *data, int64_t n, float *out);

#endif
