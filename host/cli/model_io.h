/* A small safetensors output assembled in memory (quantize's one-tensor
 * .safetensors output: codes, scales, zero points), written through the
 * atomic writer, and the reports' formatting helpers. Whole models go through
 * the streaming pipeline in host/model instead. */
#ifndef QK_CLI_MODEL_IO_H
#define QK_CLI_MODEL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"
#include "safetensors.h"

/* One tensor of the output. Nothing is owned: name, shape and data must stay
 * valid until model_write() returns. */
typedef struct model_out_tensor {
    const char *name;
    const char *st_dtype; /* safetensors spelling: "F32", "I64", ... */
    int ndim;
    const int64_t *shape;
    const void *data;
    int elem_bits;        /* orders the data: wider elements first keeps every tensor aligned */
    size_t order;         /* insertion order, the tie-break */
} model_out_tensor;

typedef struct model_out {
    model_out_tensor *t;
    size_t n, cap;
} model_out;

/* 0, or -1 when out of memory. */
int model_out_add(model_out *o, const char *name, const char *st_dtype, int ndim, const int64_t *shape,
                  const void *data);
void model_out_free(model_out *o);

/* Write the tensors (wider element types first, otherwise in insertion order)
 * and the metadata entries to path, atomically (host/io/atomic_file.h). An
 * interrupt (interrupt.h) cancels the write and the output stays as it was.
 * On success *bytes_out is the file's size. 0 or CLI_EXIT_RUNTIME (reported). */
int model_write(const char *path, model_out *o, const char *const *meta_keys, const char *const *meta_values,
                size_t n_meta, uint64_t *bytes_out);

/* "[384, 1536]"; "[]" for a scalar. */
void model_format_shape(int ndim, const int64_t *shape, char *buf, size_t len);

/* Size of a file, or 0 when it cannot be read. */
uint64_t model_file_size(const char *path);

#endif
