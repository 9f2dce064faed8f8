/* The CPU backend's ggml block formats (backend.h: ggml_quantize_checked, ggml_dequantize). */
#ifndef QK_CPU_GGML_H
#define QK_CPU_GGML_H

#include "../backend.h"

/* backend.h's ggml_quantize_checked: *nonfinite set when a block type's input
 * holds NaN or an infinity. */
qk_status qk_cpu_ggml_quantize(qk_backend *be, const qk_tensor *x, int type, qk_tensor *out, int *nonfinite);
qk_status qk_cpu_ggml_dequantize(qk_backend *be, const qk_tensor *in, int type, qk_tensor *out);

#endif
