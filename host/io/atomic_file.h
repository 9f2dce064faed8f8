/* Write-to-temporary-then-rename, so a failed or interrupted write never leaves
 * a partial file at the destination. */
#ifndef QK_IO_ATOMIC_FILE_H
#define QK_IO_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"

typedef struct qk_atomic_file {
    int fd;
    char *tmp_path;   /* "<dir>/.<name>.tmp.XXXXXX" */
    char *final_path;
} qk_atomic_file;

qk_status qk_atomic_open(qk_atomic_file *f, const char *path, char *err, size_t err_len);
/* Write all bytes (retrying short writes); ENOSPC and friends are QK_ERR_IO. */
qk_status qk_atomic_write(qk_atomic_file *f, const void *data, size_t len, char *err, size_t err_len);
/* Write all bytes at a byte offset of the output, for outputs written out of
 * order (a planned file: header first, then each tensor at its offset).
 * QK_ERR_UNSUPPORTED when the output is not seekable (see qk_atomic_seekable):
 * the caller must then write in order with qk_atomic_write. */
qk_status qk_atomic_pwrite(qk_atomic_file *f, const void *data, size_t len, uint64_t offset, char *err,
                           size_t err_len);
/* 1 when qk_atomic_pwrite may be used (a regular file is being written), else 0. */
int qk_atomic_seekable(const qk_atomic_file *f);
/* The descriptor being written (for posix_fadvise, sync_file_range, ftruncate
 * on seekable outputs); -1 when not open. Never close it. */
int qk_atomic_fd(const qk_atomic_file *f);
/* fsync, close and rename into place. On failure the temporary is removed. */
qk_status qk_atomic_commit(qk_atomic_file *f, char *err, size_t err_len);
/* Close and remove the temporary (safe to call after a failed commit or twice). */
void qk_atomic_abort(qk_atomic_file *f);

#endif
