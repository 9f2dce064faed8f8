/* safetensors reader and writer (whole model files). Used by the CLI and tests,
 * not by the core library.
 *
 * The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * (an object mapping tensor names to {"dtype", "shape", "data_offsets"}, plus
 * an optional "__metadata__" object of string -> string), then the data
 * section, which is the rest of the file. Offsets are relative to the start
 * of the data section. Data is little-endian, C order.
 *
 * Reading follows the official (Rust) safetensors crate's validation and is
 * stricter where it has to be for C:
 *   - N <= 100,000,000 (the crate's MAX_HEADER_SIZE) and N <= file size - 8;
 *   - the header is valid UTF-8 and one JSON object, with only JSON
 *     whitespace around it (writers pad with spaces);
 *   - every tensor entry has exactly the keys dtype, shape and data_offsets;
 *     the dtype is a known safetensors dtype; shape has at most
 *     QK_ST_MAX_DIMS non-negative integers; data_offsets is [begin, end];
 *     numbers must be plain non-negative integers (no fraction, exponent or
 *     leading zero) no larger than 2^53, the largest a JSON double holds exactly;
 *   - end - begin equals the shape's byte count (computed with overflow checks);
 *   - duplicate tensor names (and duplicate metadata keys) are rejected,
 *     although JSON parsers usually keep the last one silently;
 *   - "__metadata__" is an object whose values are all strings;
 *   - strings may not contain NUL (\u0000), as names and values are C strings;
 *   - COVERAGE RULE, as the crate's MetadataIncompleteBuffer/InvalidOffset:
 *     sorted by (begin, end), the tensors tile the data section exactly: the
 *     first begins at 0, each begins where the previous ends, and the last
 *     ends at the end of the file. Overlaps, gaps and trailing bytes are all
 *     QK_ERR_FORMAT. (So data pointers never alias, and a file is exactly
 *     the bytes its header accounts for.)
 * Stricter than the official reader (safetensors 0.8), deliberately: unknown
 * keys in a tensor entry (it ignores them), more than 32 dimensions and
 * \u0000 in strings are refused. Where cJSON alone is laxer than JSON (raw
 * control bytes, trailing text) the official reader's answer is kept.
 * Every failure in the file's content is QK_ERR_FORMAT with a message that names
 * the problem (and the tensor); I/O failures are QK_ERR_IO.
 *
 * ALIGNMENT: safetensors does not pad between tensors, so a tensor's data in
 * the file is aligned only as far as the writer ordered tensors for it (the
 * official writer puts larger elements first; the header is padded to 8
 * bytes). qk_st_tensor.data may therefore be misaligned for its dtype: read it
 * with memcpy, or use qk_st_tensor_aligned() to get an aligned pointer (a copy
 * only when needed).
 *
 * The file is memory-mapped read-only (MAP_PRIVATE): if another process
 * truncates it while it is open, touching the lost pages raises SIGBUS, as for
 * any mapped file. cJSON records its last parse error in a global, so parsing
 * in several threads at once is not supported. */
#ifndef QK_IO_SAFETENSORS_H
#define QK_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"

#define QK_ST_MAX_DIMS 32
#define QK_ST_MAX_HEADER ((uint64_t)100000000) /* bytes, as the official crate */

/* The qk_dtype of a tensor whose safetensors dtype qkern does not compute on
 * (I64, U64, U32, BOOL, C64, F8_*, F4, F6_*): its bytes are still readable and
 * writable unchanged, so a model can be passed through. Not a valid argument
 * to the qkern operations (they reject it as an invalid dtype). */
#define QK_ST_OTHER QK_DTYPE_COUNT

/* One tensor of an open file. All pointers are owned by the file and stay
 * valid until qk_st_close(). */
typedef struct qk_st_tensor {
    const char *name;      /* UTF-8, NUL-terminated */
    qk_dtype dtype;        /* QK_F32, QK_F64, QK_F16, QK_BF16, QK_U8, QK_I8, QK_U16, QK_I16, QK_I32 or QK_ST_OTHER */
    const char *st_dtype;  /* the safetensors spelling: "F32", "BF16", "I64", "BOOL", ... (static) */
    int elem_bits;         /* bits per element: 8, 16, 32, 64, or 4/6 for F4/F6_* */
    size_t elem_size;      /* bytes per element (elem_bits / 8), 0 for the sub-byte F4/F6_* */
    int ndim;              /* 0 for a scalar (one element) */
    const int64_t *shape;  /* ndim entries (a valid pointer even when ndim is 0) */
    int64_t n;             /* product of shape */
    size_t offset;         /* data_offsets[0]: where the bytes start in the data section */
    size_t nbytes;         /* data_offsets[1] - data_offsets[0] */
    const void *data;      /* nbytes bytes, little-endian, MAY BE MISALIGNED (see above);
                              a valid pointer even when nbytes is 0 */
} qk_st_tensor;

typedef struct qk_st_file qk_st_file; /* opaque */

/* ---- reading ----------------------------------------------------------------- */

/* Map PATH read-only and validate all of it (see above) before returning. On
 * failure *out is NULL and err says why: QK_ERR_FORMAT for a malformed file
 * (an empty file included), QK_ERR_IO for a file that cannot be opened or mapped
 * (missing, a directory, not a regular file), QK_ERR_NO_MEMORY,
 * QK_ERR_INVALID_ARG for NULL arguments. */
qk_status qk_st_open(const char *path, qk_st_file **out, char *err, size_t err_len);

/* Parse and validate a whole file image buf[0, len) (header and data). The
 * tensors' data pointers point into buf, which must outlive the result; the
 * result does not own buf. This is what qk_st_open() runs on the mapping;
 * exposed for tests and fuzzing. */
qk_status qk_st_parse(const unsigned char *buf, size_t len, qk_st_file **out, char *err, size_t err_len);

/* Release a file (and its mapping when it came from qk_st_open). NULL is fine. */
void qk_st_close(qk_st_file *f);

/* Tensors, in the order of their data (by data_offsets). */
size_t qk_st_count(const qk_st_file *f);
/* Tensor i (0 <= i < count), or NULL when i is out of range. */
const qk_st_tensor *qk_st_get(const qk_st_file *f, size_t i);
/* The tensor called name, or NULL; *index (if not NULL) gets its position. */
const qk_st_tensor *qk_st_find(const qk_st_file *f, const char *name, size_t *index);

/* "__metadata__" entries, in byte order of their keys. */
size_t qk_st_metadata_count(const qk_st_file *f);
/* Entry i: returns QK_ERR_INVALID_ARG when i is out of range. */
qk_status qk_st_metadata_at(const qk_st_file *f, size_t i, const char **key, const char **value);
/* The value for key, or NULL when absent. */
const char *qk_st_metadata_get(const qk_st_file *f, const char *key);

/* Header length N (as stored, padding included) and data section size. */
size_t qk_st_header_len(const qk_st_file *f);
size_t qk_st_data_size(const qk_st_file *f);

/* t's data aligned for its element type (alignment = element size, at most 8).
 * When t->data already is aligned: *data = t->data and *copy = NULL (nothing
 * to free). Otherwise the bytes are copied into a new aligned buffer: *data =
 * *copy, to be released with qk_st_free_copy(*copy, t->nbytes). */
qk_status qk_st_tensor_aligned(const qk_st_tensor *t, const void **data, void **copy, char *err, size_t err_len);
void qk_st_free_copy(void *copy, size_t nbytes);

/* The safetensors spelling of a qkern dtype ("F32", ..., "BF16"), or NULL for
 * an invalid one. */
const char *qk_st_dtype_string(qk_dtype dtype);
/* Look up a safetensors dtype string: its qkern dtype (or QK_ST_OTHER) and its
 * element size in bits. QK_ERR_UNSUPPORTED if unknown. */
qk_status qk_st_dtype_parse(const char *st_dtype, qk_dtype *dtype, int *elem_bits);

/* ---- writing ------------------------------------------------------------------- */

typedef struct qk_st_writer qk_st_writer; /* opaque */

/* Start writing PATH. A temporary file beside it is created now (so a missing
 * directory is reported before any work is done); nothing appears at PATH
 * until qk_st_writer_commit() succeeds, and an existing file there stays
 * untouched on any failure. */
qk_status qk_st_writer_begin(const char *path, qk_st_writer **out, char *err, size_t err_len);

/* Add a tensor. The data is NOT copied: it must stay valid and unchanged until
 * commit or abort. The name must be non-empty valid UTF-8, unique, and not
 * "__metadata__"; shape entries 0 .. 2^53. Data is laid out in add order
 * (callers who want every tensor aligned add larger element types first). */
qk_status qk_st_writer_add(qk_st_writer *w, const char *name, qk_dtype dtype, int ndim, const int64_t *shape,
                           const void *data, char *err, size_t err_len);
/* The same for any safetensors dtype by its string ("I64", "BOOL", ...), to
 * pass tensors through byte for byte (e.g. t->st_dtype of a tensor read). */
qk_status qk_st_writer_add_raw(qk_st_writer *w, const char *name, const char *st_dtype, int ndim,
                               const int64_t *shape, const void *data, char *err, size_t err_len);

/* Set a "__metadata__" entry (valid UTF-8 key and value, both copied); setting
 * a key again replaces its value. Entries are written in the order first set. */
qk_status qk_st_writer_set_metadata(qk_st_writer *w, const char *key, const char *value, char *err,
                                    size_t err_len);

/* Build the header (cJSON: "__metadata__" first if any, then the tensors in
 * add order; padded with spaces to a multiple of 8 bytes as the official
 * writer does), write header and data to the temporary, fsync and rename into
 * place. Frees the writer whether it succeeds or not. */
qk_status qk_st_writer_commit(qk_st_writer *w, char *err, size_t err_len);

/* Drop everything: remove the temporary, free the writer. NULL is fine. */
void qk_st_writer_abort(qk_st_writer *w);

/* ---- planned files ------------------------------------------------------------------- */

/* A tensor of a file whose header is written before its data exists. */
typedef struct qk_st_planned {
    const char *name;
    const char *st_dtype;  /* "F32", "U8", ... */
    int ndim;
    const int64_t *shape;
    uint64_t nbytes;       /* must match shape and dtype */
} qk_st_planned;

/* The first bytes of a file holding these tensors, in this order, and these
 * metadata entries: the 8-byte length, the header JSON exactly as
 * qk_st_writer_commit writes it (same checks, same bytes), the padding. Tensor
 * i's data then starts at *out_len plus the sum of nbytes before it. *out is
 * released with free(). */
qk_status qk_st_plan_header(const qk_st_planned *t, size_t n, const char *const *keys, const char *const *values,
                            size_t n_meta, unsigned char **out, size_t *out_len, char *err, size_t err_len);

#endif
