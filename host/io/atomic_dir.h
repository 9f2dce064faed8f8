/* An output directory that appears whole or not at all: files are written into
 * a temporary directory beside the destination (".<name>.tmp.XXXXXX"), which is
 * renamed into place at the end. The destination must not exist or be an empty
 * directory (rename(2) replaces an empty one). */
#ifndef QK_IO_ATOMIC_DIR_H
#define QK_IO_ATOMIC_DIR_H

#include <stddef.h>

#include "qkern.h"

typedef struct qk_atomic_dir {
    char *tmp_path;   /* the directory being filled */
    char *final_path;
} qk_atomic_dir;

/* Check the destination and create the temporary directory. QK_ERR_IO with a
 * message when the destination is a non-empty directory or not a directory,
 * or its parent is missing or not writable. */
qk_status qk_atomic_dir_open(qk_atomic_dir *d, const char *path, char *err, size_t err_len);
/* "<tmp_path>/<name>", to release with free(); NULL when out of memory. */
char *qk_atomic_dir_file(const qk_atomic_dir *d, const char *name);
/* fsync the directory, rename it into place, fsync the parent. On failure the
 * temporary directory is removed. */
qk_status qk_atomic_dir_commit(qk_atomic_dir *d, char *err, size_t err_len);
/* Remove the temporary directory and everything in it (safe to call twice). */
void qk_atomic_dir_abort(qk_atomic_dir *d);

#endif
