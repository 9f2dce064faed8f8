/* Small formatting helpers of the model commands' reports. */
#ifndef QK_CLI_MODEL_IO_H
#define QK_CLI_MODEL_IO_H

#include <stddef.h>
#include <stdint.h>

/* "[384, 1536]"; "[]" for a scalar. */
void model_format_shape(int ndim, const int64_t *shape, char *buf, size_t len);

#endif
