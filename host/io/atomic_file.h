/* Write-to-temporary-then-rename, so a failed or interrupted write never leaves
 * a partial file at the destination. */
#ifndef QK_IO_ATOMIC_FILE_H
#define QK_IO_ATOMIC_FILE_H

#include <stddef.h>

#include "qkern.h"

typedef struct qk_atomic_file {
    int fd;
    char *tmp_path;   /* "<dir>/.<name>.tmp.XXXXXX" */
    char *final_path;
} qk_atomic_file;

qk_status qk_atomic_open(qk_atomic_file *f, const char *path, char *err, size_t err_len);
/* Write all bytes (retrying short writes); ENOSPC and friends are QK_ERR_IO. */
qk_status qk_atomic_write(qk_atomic_file *f, const void *data, size_t len, char *err, size_t err_len);
/* fsync, close and rename into place. On failure the temporary is removed. */
qk_status qk_atomic_commit(qk_atomic_file *f, char *err, size_t err_len);
/* Close and remove the temporary (safe to call after a failed commit or twice). */
void qk_atomic_abort(qk_atomic_file *f);

#endif
