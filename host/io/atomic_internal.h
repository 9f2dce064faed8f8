/* Shared by the atomic_*.c files; not for callers of atomic_file.h. */
#ifndef QK_IO_ATOMIC_INTERNAL_H
#define QK_IO_ATOMIC_INTERNAL_H

#include <stddef.h>
#include <sys/stat.h>

#include "atomic_file.h"

/* Temporary names: ".<base>.qkern-<pid>@<host>.<suffix>" within NAME_MAX. */
#define QK_ATOMIC_MAX_BASE 150
#define QK_ATOMIC_MAX_HOST 64

/* Named temporaries that exist now: removed at exit() and by qk_atomic_cancel_all.
 * add: 0, or -1 when the table is full or out of memory. */
int qk_atomic_reg_add(const char *path);
void qk_atomic_reg_remove(const char *path, int do_unlink);
/* begin: 0 with the commit lock held, -1 (lock not held) after a cancel.
 * end: releases it; linked says the output is now in place. */
int qk_atomic_reg_begin_commit(void);
void qk_atomic_reg_end_commit(int linked);
int qk_atomic_reg_cancelled(void);

int qk_atomic_temp_name(const char *base, const char *suffix, char *out, size_t len);
void qk_atomic_remove_stale(int dir_fd, const char *base);

/* Where an output path leads. */
typedef struct qk_atomic_target {
    char *path;      /* the file to write: symbolic links resolved (malloc'ed) */
    char *dir;       /* its directory ("." when none) */
    const char *base;/* its last component, inside path */
    int exists;
    struct stat st;  /* valid when exists */
} qk_atomic_target;

/* Resolve path (following a chain of symbolic links, dangling ones included)
 * and stat the result. QK_OK, or an error with err set. */
qk_status qk_atomic_target_resolve(const char *path, qk_atomic_target *t, char *err, size_t err_len);
void qk_atomic_target_free(qk_atomic_target *t);

#endif
