/* .npy reader and writer (format versions 1.0, 2.0 and 3.0).
 * Used by the CLI and tests, not by the core library. */
#ifndef QK_IO_NPY_H
#define QK_IO_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"

#define QK_NPY_MAX_DIMS 32

typedef struct qk_npy {
    qk_dtype dtype;                 /* F32, F64, F16, U8, I8, U16, I16, I32 */
    int ndim;                       /* 0 for a scalar array (one element) */
    int64_t shape[QK_NPY_MAX_DIMS];
    int64_t n;                      /* product of shape, checked for overflow */
    const void *data;               /* n elements, aligned for dtype, read-only */
    /* private */
    void *map_;                     /* mmap of the whole file, or NULL */
    size_t map_len_;
    void *copy_;                    /* heap copy when the mapped data is misaligned */
} qk_npy;

/* Map and validate IN. Accepts little-endian (or byte-order '|' where it does not
 * matter) C-order arrays of the dtypes above. Anything else is QK_ERR_FORMAT with
 * the reason in err: bad magic, bad or truncated header, unsupported dtype,
 * big-endian, Fortran order, negative or overflowing shape, data shorter or
 * longer than the shape says. I/O failures are QK_ERR_IO. */
qk_status qk_npy_open(const char *path, qk_npy *out, char *err, size_t err_len);
void qk_npy_close(qk_npy *npy);

/* Parse a header from the first len bytes of a file (magic included); on success
 * fills dtype/ndim/shape/n and *data_offset. Exposed for tests and fuzzing. */
qk_status qk_npy_parse_header(const unsigned char *buf, size_t len, qk_npy *out, size_t *data_offset,
                              char *err, size_t err_len);

/* Write an array atomically: a temporary file beside path, then rename over it.
 * On any failure nothing is left at path (an old file there stays untouched). */
qk_status qk_npy_write(const char *path, qk_dtype dtype, int ndim, const int64_t *shape, const void *data,
                       char *err, size_t err_len);

#endif
