/* One tensor in qkern's quantized safetensors format (docs/model-format.md):
 * `qkern quantize x.npy -o q.safetensors` writes the codes with their scales
 * and zero points (per tensor, channel or group), and `qkern dequantize
 * q.safetensors` reads them back without --scale. The file is a one-tensor
 * quantized model: dequantize-model reads it too. */
#ifndef QK_CLI_TENSOR_ST_H
#define QK_CLI_TENSOR_ST_H

#include <stddef.h>
#include <stdint.h>

#include "npy.h"
#include "qkern.h"

/* 1 when path names a .safetensors file (by its suffix). */
int cli_is_safetensors_path(const char *path);

/* --granularity tensor|channel[:AXIS]|group:G. 0 or CLI_EXIT_USAGE (reported). */
int cli_parse_granularity(const char *cmd, const char *value, qk_granularity *g, int *axis, int64_t *group);

/* What was written, for the report. */
typedef struct cli_st_written {
    int64_t blocks;
    double mse;
    int64_t clipped;
    qk_dtype codes_dtype;
    const char *name; /* the tensor's name in the file (static storage of the caller's input path) */
} cli_st_written;

/* Calibrate per block, quantize and write output in the model format. The
 * tensor is named after the input file ("x" for x.npy). 0, or a reported
 * exit code. */
int cli_quantize_blocks_to_st(qk_context *ctx, const char *input, const qk_npy *npy, const qk_calib_options *calib,
                              qk_granularity g, int axis, int64_t group, const char *output, cli_st_written *w);

/* Write codes quantized with one parameter set (the per-tensor path). */
int cli_write_tensor_st(const char *input, const qk_npy *npy, const qk_calib_options *calib, const qk_qparams *params,
                        qk_dtype codes_dtype, const void *codes, const char *output);

/* `qkern dequantize IN.safetensors -o OUT.npy`: the file's one quantized
 * tensor, restored to float32 with its stored parameters. 0 or an exit code. */
int cli_dequantize_st(const char *input, const char *output, qk_backend_kind backend, int json);

#endif
