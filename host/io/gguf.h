/* GGUF reader and writer (the file format of ggml, llama.cpp, whisper.cpp).
 * Used by the CLI and tests, not by the core library.
 *
 * The format (little-endian throughout): "GGUF", uint32 version (3; 2 is read
 * too: it has the same layout), uint64 tensor count, uint64 key/value count;
 * the key/value pairs (a string key, a uint32 value type, the value); the
 * tensor infos (a string name, uint32 n_dims, n_dims uint64 dimensions
 * ne[0] (fastest varying) first, uint32 ggml type, uint64 offset); padding to
 * general.alignment (a uint32 power of two, 32 by default); the data section.
 * Tensor offsets are relative to the data section and multiples of the
 * alignment. A string is a uint64 byte length and the bytes (no NUL). An array
 * is a uint32 element type, a uint64 count and the elements, which may be
 * arrays themselves.
 *
 * Every file is hostile until validated; qk_gguf_parse() checks, before
 * anything is allocated or read from it:
 *   - the magic; version 2 or 3 (a byte-swapped version: a big-endian file,
 *     refused; version 1 used 32-bit counts and is refused);
 *   - every count against the bytes left (a key/value needs at least 13 bytes,
 *     a tensor info at least 24, an array element at least its own size), so a
 *     huge count is an error, never a huge allocation;
 *   - every string length against the bytes left; keys and tensor names are
 *     1..65535 bytes without NUL; keys and tensor names are unique;
 *   - value types (0..12) and array element types; array nesting at most
 *     QK_GGUF_MAX_DEPTH deep;
 *   - general.alignment: a uint32 power of two;
 *   - tensor infos: 1..4 dimensions (ggml's GGML_MAX_DIMS), each 0..2^62, their
 *     product without int64 overflow, a known ggml type, ne[0] a multiple of
 *     its block size, the byte size without overflow; the offset a multiple of
 *     the alignment, the tensor inside the file, no two tensors overlapping.
 * Every failure in a file's content is QK_ERR_FORMAT with a message naming the
 * field (and the key or tensor) and its byte position; QK_ERR_IO for a file that
 * cannot be opened. Memory used is bounded by a small multiple of the file
 * size. */
#ifndef QK_IO_GGUF_H
#define QK_IO_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"

#define QK_GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian uint32 */
#define QK_GGUF_VERSION 3
#define QK_GGUF_DEFAULT_ALIGNMENT 32
#define QK_GGUF_MAX_DIMS 4
#define QK_GGUF_MAX_DEPTH 8       /* arrays of arrays, nested at most this deep */
#define QK_GGUF_MAX_NAME 65535    /* bytes in a key or a tensor name */

/* Metadata value types (gguf_type). */
typedef enum qk_gguf_type {
    QK_GGUF_UINT8 = 0,
    QK_GGUF_INT8 = 1,
    QK_GGUF_UINT16 = 2,
    QK_GGUF_INT16 = 3,
    QK_GGUF_UINT32 = 4,
    QK_GGUF_INT32 = 5,
    QK_GGUF_FLOAT32 = 6,
    QK_GGUF_BOOL = 7,
    QK_GGUF_STRING = 8,
    QK_GGUF_ARRAY = 9,
    QK_GGUF_UINT64 = 10,
    QK_GGUF_INT64 = 11,
    QK_GGUF_FLOAT64 = 12,
    QK_GGUF_TYPE_COUNT
} qk_gguf_type;

/* Size in bytes of a fixed-size value type, 0 for STRING and ARRAY (and invalid types). */
size_t qk_gguf_type_size(uint32_t type);
/* "uint8", ..., "float64", or NULL. */
const char *qk_gguf_type_name(uint32_t type);

/* ggml tensor types, as numbered in ggml.h (the ones qkern knows the size of;
 * every type a current GGUF may hold). */
typedef struct qk_ggml_type_traits {
    const char *name;  /* ggml's spelling: "f32", "q4_K", ... */
    int64_t blck_size; /* elements per block */
    size_t type_size;  /* bytes per block */
} qk_ggml_type_traits;
/* The traits of ggml type id, or NULL when unknown (removed ids 4, 5, 31-33, 36-38 included). */
const qk_ggml_type_traits *qk_ggml_type_get(uint32_t type);

/* A metadata value. Pointers point into the file image (or the writer's copy)
 * and stay valid while the file is open. */
typedef struct qk_gguf_value {
    uint32_t type;              /* qk_gguf_type */
    uint32_t elem_type;         /* ARRAY: the elements' type */
    uint64_t count;             /* ARRAY: elements; STRING: bytes */
    const unsigned char *data;  /* scalar: its little-endian bytes; STRING: the bytes (no NUL);
                                   ARRAY of fixed-size elements: count little-endian elements */
    const uint64_t *str_off;    /* ARRAY of STRING: element i's length field is at data + str_off[i] */
    const struct qk_gguf_value *items; /* ARRAY of ARRAY: count values */
    const unsigned char *enc;   /* the value's encoding (after its type tag), enc_size bytes */
    size_t enc_size;
} qk_gguf_value;

/* Scalar accessors: QK_ERR_INVALID_ARG when the value is not of a fitting type
 * (integers of any width into u64/i64 when the value fits; float32/64 into f64). */
qk_status qk_gguf_value_u64(const qk_gguf_value *v, uint64_t *out);
qk_status qk_gguf_value_i64(const qk_gguf_value *v, int64_t *out);
qk_status qk_gguf_value_f64(const qk_gguf_value *v, double *out);
/* Element i of an ARRAY of STRING: its bytes and length. */
qk_status qk_gguf_array_string(const qk_gguf_value *v, uint64_t i, const char **s, uint64_t *len);

typedef struct qk_gguf_kv {
    const char *key;       /* NUL-terminated (keys hold no NUL) */
    qk_gguf_value value;
} qk_gguf_kv;

typedef struct qk_gguf_tensor {
    const char *name;      /* NUL-terminated */
    uint32_t n_dims;       /* 1..4 */
    int64_t ne[QK_GGUF_MAX_DIMS]; /* ne[0] varies fastest; unused entries are 1 */
    int64_t n;             /* product of ne */
    uint32_t type;         /* ggml type id */
    uint64_t offset;       /* in the data section */
    uint64_t nbytes;       /* ne[0] / blck_size * type_size * ne[1] * ne[2] * ne[3] */
    const void *data;      /* nbytes bytes in the file image, aligned to the alignment
                              relative to the image's start */
} qk_gguf_tensor;

typedef struct qk_gguf_file qk_gguf_file; /* opaque */

/* Map PATH read-only and validate it all (see above). */
qk_status qk_gguf_open(const char *path, qk_gguf_file **out, char *err, size_t err_len);
/* Validate a whole file image buf[0, len); the result points into buf, which
 * must outlive it. What qk_gguf_open() runs on its mapping; exposed for tests
 * and fuzzing. */
qk_status qk_gguf_parse(const unsigned char *buf, size_t len, qk_gguf_file **out, char *err, size_t err_len);
void qk_gguf_close(qk_gguf_file *f);

uint32_t qk_gguf_version(const qk_gguf_file *f);
uint32_t qk_gguf_alignment(const qk_gguf_file *f);
/* Where the data section starts in the file. */
uint64_t qk_gguf_data_offset(const qk_gguf_file *f);

/* Key/value pairs, in file order. */
size_t qk_gguf_kv_count(const qk_gguf_file *f);
const qk_gguf_kv *qk_gguf_kv_at(const qk_gguf_file *f, size_t i);   /* NULL when out of range */
const qk_gguf_kv *qk_gguf_kv_find(const qk_gguf_file *f, const char *key);

/* Tensor infos, in file order. */
size_t qk_gguf_tensor_count(const qk_gguf_file *f);
const qk_gguf_tensor *qk_gguf_tensor_at(const qk_gguf_file *f, size_t i); /* NULL when out of range */
const qk_gguf_tensor *qk_gguf_tensor_find(const qk_gguf_file *f, const char *name);

/* ---- writing --------------------------------------------------------------------- */

typedef struct qk_gguf_writer qk_gguf_writer; /* opaque */

/* A writer without a file, for a header built in memory (qk_gguf_writer_header)
 * by a caller that writes the tensors itself at the planned offsets (the
 * model pipeline); tensors may then be added with data NULL. Release with
 * qk_gguf_writer_free. */
qk_status qk_gguf_writer_new(qk_gguf_writer **out, char *err, size_t err_len);
void qk_gguf_writer_free(qk_gguf_writer *w);
/* The header as commit would write it: the file's bytes up to the data section
 * (padding included), malloc'ed into *head; offsets (one per tensor added, or
 * NULL) receive each tensor's absolute byte offset in the file, in add order.
 * Tensor bytes between tensors are alignment padding (zeros). */
qk_status qk_gguf_writer_header(const qk_gguf_writer *w, unsigned char **head, size_t *head_len, uint64_t *offsets,
                                char *err, size_t err_len);
/* The alignment in force (32, or general.alignment as set). */
uint32_t qk_gguf_writer_alignment(const qk_gguf_writer *w);

/* Start writing PATH (a temporary beside it; nothing appears at PATH until
 * commit succeeds). Version 3, little-endian. */
qk_status qk_gguf_writer_begin(const char *path, qk_gguf_writer **out, char *err, size_t err_len);

/* Set a key (1..65535 bytes, no NUL) to a value; setting a key again replaces
 * its value in place. Values are copied. "general.alignment" must be a uint32
 * power of two and sets the file's alignment. */
qk_status qk_gguf_writer_set_scalar(qk_gguf_writer *w, const char *key, qk_gguf_type type, const void *value,
                                    char *err, size_t err_len);   /* value: one element of type, host order */
qk_status qk_gguf_writer_set_string(qk_gguf_writer *w, const char *key, const char *s, size_t len, char *err,
                                    size_t err_len);
/* An array of count fixed-size elements (host order). */
qk_status qk_gguf_writer_set_array(qk_gguf_writer *w, const char *key, qk_gguf_type elem_type, const void *elems,
                                   uint64_t count, char *err, size_t err_len);
qk_status qk_gguf_writer_set_string_array(qk_gguf_writer *w, const char *key, const char *const *strs,
                                          uint64_t count, char *err, size_t err_len);
/* Any value by its encoding (e.g. a value read from another file: v->type,
 * v->enc, v->enc_size); the encoding is validated. Arrays of arrays go this way. */
qk_status qk_gguf_writer_set_encoded(qk_gguf_writer *w, const char *key, uint32_t type, const void *enc,
                                     size_t enc_size, char *err, size_t err_len);

/* Add a tensor: ne[0] first, 1..4 dimensions, ne[0] a multiple of the type's
 * block size; nbytes must be the type's size for that shape. The data is NOT
 * copied: it must stay valid until commit or abort. Laid out in add order,
 * each at a multiple of the alignment. */
qk_status qk_gguf_writer_add_tensor(qk_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                                    uint32_t ggml_type, const void *data, uint64_t nbytes, char *err,
                                    size_t err_len);

/* Write everything, fsync and rename into place; frees the writer either way. */
qk_status qk_gguf_writer_commit(qk_gguf_writer *w, char *err, size_t err_len);
/* Drop everything (the temporary is removed). NULL is fine. */
void qk_gguf_writer_abort(qk_gguf_writer *w);

#endif
