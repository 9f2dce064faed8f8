/* Opening the command's inputs: a .npy of the right dtype and a backend context. */
#ifndef QK_CLI_INPUT_H
#define QK_CLI_INPUT_H

#include "npy.h"
#include "qkern.h"

/* Map PATH as a float32/float64/float16 array with at least one element. Returns 0, or
 * CLI_EXIT_RUNTIME after reporting (npy is then closed). */
int cli_open_float_input(const char *path, qk_npy *npy);
/* Map PATH as an array of integer codes (uint8/int8/uint16/int16/int32). */
int cli_open_code_input(const char *path, qk_npy *npy);

/* --backend NAME: 0, or CLI_EXIT_USAGE (reported) for an unknown name. */
int cli_parse_backend(const char *cmd, const char *name, qk_backend_kind *out);
/* Create the context; 0, or CLI_EXIT_RUNTIME with the library's reason. */
int cli_context_open(qk_backend_kind kind, qk_context **ctx);

/* "(3, 5, 7)" like numpy prints a shape. */
void cli_format_shape(const qk_npy *npy, char *buf, size_t len);

#endif
