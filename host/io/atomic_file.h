/* Outputs that never hurt the user. Every command writes through this module:
 *   - no file, or a regular file: replaced atomically. The data goes to an
 *     unnamed O_TMPFILE in the target's directory, linked in only when whole,
 *     so a killed run leaves no name behind. Where the file system refuses
 *     O_TMPFILE (or QKERN_ATOMIC_NAMED=1 is set), a named temporary
 *     ".NAME.qkern-PID@HOST.XXXXXX" is used instead: removed on every exit a
 *     process can catch, and by the next run into that directory when the
 *     process that made it is gone. An existing file keeps its permission bits
 *     (and owner and group when run as root); a file the caller may not write
 *     (access(W_OK)) is refused and left as it is.
 *   - a symbolic link: the file it leads to is replaced, in its own directory;
 *     the link stays a link.
 *   - an existing character device, FIFO or socket: written in place, in order
 *     (never renamed, removed or recreated). Block devices are refused.
 *   - "-": standard output, in order (see qk_atomic_set_stdout_fd).
 * A failure or qk_atomic_abort leaves the target exactly as it was (for the
 * in-place kinds, whatever was already streamed stays streamed). */
#ifndef QK_IO_ATOMIC_FILE_H
#define QK_IO_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"

typedef struct qk_atomic_file {
    int fd;
    char *tmp_path;   /* a named temporary (full path) while one exists, else NULL */
    char *final_path; /* the file written: symbolic links resolved; "-" for stdout */
    /* private */
    int kind_;        /* 0 closed; see atomic_file.c */
    int dir_fd_;
    char *base_;      /* final_path's last component */
    int replace_;     /* the target existed when opened (commit renames over it) */
} qk_atomic_file;

qk_status qk_atomic_open(qk_atomic_file *f, const char *path, char *err, size_t err_len);
/* Write all bytes (retrying short writes); ENOSPC, EFBIG and friends are QK_ERR_IO.
 * After qk_atomic_cancel_all, QK_ERR_IO "interrupted". */
qk_status qk_atomic_write(qk_atomic_file *f, const void *data, size_t len, char *err, size_t err_len);
/* Write all bytes at a byte offset of the output, for outputs written out of
 * order (a planned file: header first, then each tensor at its offset).
 * QK_ERR_UNSUPPORTED when the output is not seekable (see qk_atomic_seekable):
 * the caller must then write in order with qk_atomic_write. */
qk_status qk_atomic_pwrite(qk_atomic_file *f, const void *data, size_t len, uint64_t offset, char *err,
                           size_t err_len);
/* 1 when qk_atomic_pwrite may be used (a temporary regular file is being
 * written), 0 for devices, FIFOs, sockets and stdout. */
int qk_atomic_seekable(const qk_atomic_file *f);
/* The descriptor being written (for posix_fadvise, sync_file_range, ftruncate
 * on seekable outputs); -1 when not open. Never close it. */
int qk_atomic_fd(const qk_atomic_file *f);
/* fsync, then link the file into place (or, in place, just finish). On
 * failure the temporary is removed and the target is as it was. */
qk_status qk_atomic_commit(qk_atomic_file *f, char *err, size_t err_len);
/* Drop the temporary (safe on a zeroed struct, after a failed commit or twice). */
void qk_atomic_abort(qk_atomic_file *f);

/* ---- checks before any work ---- */

/* Would qk_atomic_open(path) be allowed? Resolves links and checks: not a
 * directory or block device, an existing file writable by the caller
 * (access(W_OK)), the directory of a file to create writable. Opens nothing
 * (a FIFO would block). QK_OK or QK_ERR_IO with err set. */
qk_status qk_atomic_check(const char *path, char *err, size_t err_len);
/* 1 when both paths name the same file (same device and inode once links are
 * followed: a symbolic or a hard link to it counts), 0 otherwise (or when
 * either does not exist). "-" is never the same as a file. */
int qk_atomic_same_file(const char *a, const char *b);

/* ---- process-wide ---- */

/* The descriptor "-" writes to (default 1), so a caller can move its own
 * reports off stdout when stdout carries the data. Not closed by commit. */
void qk_atomic_set_stdout_fd(int fd);
/* For a thread that handles SIGINT/SIGTERM (not async-signal-safe): every open
 * and later atomic output is cancelled (writes and commits fail, nothing more is
 * linked in) and named temporaries are removed now. Returns how many outputs were
 * committed before, so the caller knows whether any target already changed. */
unsigned qk_atomic_cancel_all(void);

#endif
