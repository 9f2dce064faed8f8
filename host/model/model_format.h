/* The "qkern" metadata entry of a quantized safetensors model (written by
 * `qkern quantize-model`, read back by `qkern dequantize-model`). The format
 * is documented in docs/model-format.md; this is its only implementation.
 *
 * The entry's value is a JSON string (safetensors metadata values are strings)
 * describing, for every quantized tensor, how to rebuild it: its original
 * dtype and shape, the scheme, the block layout and the names of the tensors
 * that hold its codes, scales and zero points. Reading treats it as untrusted:
 * every field is type- and range-checked, and unknown fields are ignored so a
 * later minor addition does not break older readers. */
#ifndef QK_MODEL_FORMAT_H
#define QK_MODEL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"
#include "safetensors.h"

#define QM_METADATA_KEY "qkern"
#define QM_FORMAT_NAME "qkern-quantized-safetensors"
#define QM_FORMAT_VERSION 1
#define QM_SCALE_SUFFIX ".qscale"
#define QM_ZERO_SUFFIX ".qzero"

/* One quantized tensor. */
typedef struct qm_entry {
    char *name;               /* the original name; the codes are stored under it */
    qk_dtype dtype;           /* original dtype: QK_F32, QK_F64, QK_F16 or QK_BF16 */
    int ndim;                 /* original shape */
    int64_t shape[QK_ST_MAX_DIMS];
    int64_t n;                /* elements (product of shape, >= 1) */
    qk_scheme scheme;
    int bits;                 /* 2..16 */
    int narrow_range;
    qk_granularity granularity;
    int axis;                 /* QK_PER_CHANNEL: 0 .. ndim-1 */
    int64_t group_size;       /* QK_PER_GROUP */
    int64_t blocks;           /* parameter sets: elements of the scale and zero-point tensors */
    qk_dtype codes_dtype;     /* the codes' integer type (U8/I8/U16/I16), as unpacked */
    int packed;               /* codes stored two per byte (bits <= 4) as U8 [ceil(n/2)] */
    char *scale_name;         /* F32 [blocks] */
    char *zero_name;          /* I32 [blocks] */
    char *calib;              /* informational: the --calib spec used ("minmax", ...) */
} qm_entry;

/* The layout of an entry's blocks, for qk_{quantize,dequantize}_blocks. */
void qm_entry_layout(const qm_entry *e, qk_layout *layout);

/* The calibration as text: "minmax", "percentile:P", "gridsearch:A:B:S",
 * "gridsearch:list(N)" (recorded in the metadata; the CLI prints it). */
void qm_calib_describe(const qk_calib_options *opts, char *buf, size_t len);

/* Granularity as text: "tensor", "channel:AXIS", "group:G". buf needs 32 bytes. */
void qm_granularity_describe(qk_granularity g, int axis, int64_t group_size, char *buf, size_t len);

/* Build the metadata value: {"format", "version", "tensors": [...]}, with
 * objective and other run settings as informational fields. Returns a string
 * to release with free(), or NULL when out of memory. */
char *qm_format_build(const qm_entry *entries, size_t n, const char *objective);

/* Parse and validate a metadata value. On success *entries (n of them) is an
 * array to release with qm_entries_free(). Malformed content is QK_ERR_FORMAT
 * with err naming the field (and tensor); out of memory QK_ERR_NO_MEMORY.
 * Cross-checks against the file's tensors are the reader's job
 * (qm_entry_check). */
qk_status qm_format_parse(const char *text, qm_entry **entries, size_t *n, char *err, size_t err_len);
void qm_entries_free(qm_entry *entries, size_t n);

/* Check an entry against the file: its codes, scale and zero-point tensors
 * exist with the dtype and element count the entry implies. The tensors found
 * are returned through codes/scale/zero. QK_ERR_FORMAT with a message otherwise. */
qk_status qm_entry_check(const qk_st_file *f, const qm_entry *e, const qk_st_tensor **codes,
                         const qk_st_tensor **scale, const qk_st_tensor **zero, char *err, size_t err_len);

#endif
