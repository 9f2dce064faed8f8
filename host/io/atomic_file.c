/* Atomic outputs (the rules are in atomic_file.h).
 *
 * Regular files: the data goes to an O_TMPFILE in the target's directory and is
 * linked in by linkat() when complete. A file that did not exist is linked
 * straight to its name; an existing one is linked under a short-lived name and
 * renamed over the target (linkat cannot replace), a window of two system
 * calls whose name follows the stale pattern, so a later run removes it even
 * after kill -9. The fallback, a named temporary, is created with
 * open(O_CREAT | O_EXCL, 0666) so the kernel applies the umask as for any
 * other new file (mkstemp's 0600 would need the umask read back, a race). */
#define _GNU_SOURCE /* O_TMPFILE, AT_EMPTY_PATH */
#include "atomic_file.h"
#include "atomic_internal.h"
#include "map_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { KIND_CLOSED, KIND_TMPFILE, KIND_NAMED, KIND_INPLACE, KIND_STDOUT };

#define SUFFIX_LEN 6
#define MAX_TRIES 100
#define MAX_WRITE ((size_t)64 << 20) /* per write() call: a cancel is seen between calls */

static int stdout_fd = 1;

void qk_atomic_set_stdout_fd(int fd)
{
    stdout_fd = fd;
}

static void reset(qk_atomic_file *f)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->dir_fd_ = -1;
}

/* splitmix64: spreads a weak seed when getrandom() is unavailable. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static void random_suffix(char *out, unsigned attempt)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 16) ^ attempt ^
                  (uint64_t)(uintptr_t)out);
    }
    for (int i = 0; i < SUFFIX_LEN; i++) {
        out[i] = alphabet[r % (sizeof alphabet - 1)];
        r /= sizeof alphabet - 1;
    }
    out[SUFFIX_LEN] = '\0';
}

/* "<dir>/<name>" for the registry (malloc'ed), NULL when out of memory. */
static char *dir_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_special(mode_t m)
{
    return S_ISCHR(m) || S_ISFIFO(m) || S_ISSOCK(m);
}

static qk_status check_target(const char *path, const qk_atomic_target *t, char *err, size_t err_len)
{
    if (t->exists) {
        if (S_ISBLK(t->st.st_mode)) {
            qk_io_error(err, err_len, "%s: is a block device; qkern does not write to block devices", path);
            return QK_ERR_IO;
        }
        if (!S_ISREG(t->st.st_mode) && !is_special(t->st.st_mode)) {
            qk_io_error(err, err_len, "%s: not a regular file, device, FIFO or socket", path);
            return QK_ERR_IO;
        }
        if (access(t->path, W_OK) != 0) {
            qk_io_error(err, err_len, "%s: may not be written by this user (%s); left as it is", path,
                        strerror(errno));
            return QK_ERR_IO;
        }
        if (is_special(t->st.st_mode))
            return QK_OK;
    }
    if (access(t->dir, W_OK | X_OK) != 0) {
        qk_io_error(err, err_len, "%s: cannot create files in %s: %s", path, t->dir, strerror(errno));
        return QK_ERR_IO;
    }
    return QK_OK;
}

static qk_status open_stdout(qk_atomic_file *f, char *err, size_t err_len)
{
    if (isatty(stdout_fd)) {
        qk_io_error(err, err_len, "-: standard output is a terminal; refusing to write binary data to it "
                                  "(redirect it to a file or a pipe)");
        return QK_ERR_INVALID_ARG;
    }
    if ((f->final_path = strdup("-")) == NULL) {
        qk_io_error(err, err_len, "-: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    f->fd = stdout_fd;
    f->kind_ = KIND_STDOUT;
    return QK_OK;
}

static int connect_socket(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    static const int types[] = {SOCK_STREAM, SOCK_SEQPACKET};
    int e = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int s = socket(AF_UNIX, types[k] | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -1;
        if (connect(s, (const struct sockaddr *)&sa, sizeof sa) == 0)
            return s;
        e = errno;
        close(s);
        if (e != EPROTOTYPE)
            break;
    }
    errno = e;
    return -1;
}

static qk_status open_in_place(qk_atomic_file *f, const qk_atomic_target *t, char *err, size_t err_len)
{
    int fd = S_ISSOCK(t->st.st_mode) ? connect_socket(t->path) : open(t->path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        qk_io_error(err, err_len, "%s: cannot open for writing: %s", t->path, strerror(errno));
        return QK_ERR_IO;
    }
    f->fd = fd;
    f->kind_ = KIND_INPLACE;
    return QK_OK;
}

static int use_tmpfile(void)
{
    const char *e = getenv("QKERN_ATOMIC_NAMED");
    if (e && strcmp(e, "1") == 0)
        return 0;
    return access("/proc/self/fd", X_OK) == 0; /* linkat of an unnamed file goes through /proc */
}

static qk_status open_named(qk_atomic_file *f, const qk_atomic_target *t, char *err, size_t err_len)
{
    char suffix[SUFFIX_LEN + 1], name[256];
    for (unsigned attempt = 0; attempt < MAX_TRIES; attempt++) {
        random_suffix(suffix, attempt);
        if (qk_atomic_temp_name(t->base, suffix, name, sizeof name) != 0)
            break;
        char *full = dir_join(t->dir, name);
        if (full == NULL || qk_atomic_reg_add(full) != 0) {
            free(full);
            qk_io_error(err, err_len, "%s: out of memory (or too many temporaries)", t->path);
            return QK_ERR_NO_MEMORY;
        }
        int fd = openat(f->dir_fd_, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 && qk_atomic_reg_cancelled()) {
            /* a cancel between registering the name and creating it missed it */
            close(fd);
            qk_atomic_reg_remove(full, 1);
            free(full);
            qk_io_error(err, err_len, "%s: interrupted", t->path);
            return QK_ERR_IO;
        }
        if (fd >= 0) {
            f->fd = fd;
            f->tmp_path = full;
            f->kind_ = KIND_NAMED;
            return QK_OK;
        }
        int e = errno;
        qk_atomic_reg_remove(full, 0);
        free(full);
        if (e != EEXIST) {
            errno = e;
            break;
        }
    }
    qk_io_error(err, err_len, "%s: cannot create a temporary file in %s: %s", t->path, t->dir, strerror(errno));
    return QK_ERR_IO;
}

static qk_status open_temporary(qk_atomic_file *f, const qk_atomic_target *t, char *err, size_t err_len)
{
    f->dir_fd_ = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->dir_fd_ < 0) {
        qk_io_error(err, err_len, "%s: cannot open the directory %s: %s", t->path, t->dir, strerror(errno));
        return QK_ERR_IO;
    }
    qk_atomic_remove_stale(f->dir_fd_, t->base);
    qk_status st = QK_OK;
    if (use_tmpfile()) {
        f->fd = openat(f->dir_fd_, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
        if (f->fd >= 0)
            f->kind_ = KIND_TMPFILE;
        else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
            qk_io_error(err, err_len, "%s: cannot create a temporary file in %s: %s", t->path, t->dir,
                        strerror(errno));
            return QK_ERR_IO;
        }
    }
    if (f->kind_ == KIND_CLOSED && (st = open_named(f, t, err, err_len)) != QK_OK)
        return st;
    if (t->exists) {
        /* The replacement keeps the target's owner, group and mode; chown
         * first, as it clears set-id bits. Only root may give a file away;
         * anyone may keep a group they belong to. */
        if (geteuid() == 0)
            (void)fchown(f->fd, t->st.st_uid, t->st.st_gid);
        else if (t->st.st_gid != getegid())
            (void)fchown(f->fd, (uid_t)-1, t->st.st_gid);
        if (fchmod(f->fd, t->st.st_mode & 07777) != 0) {
            qk_io_error(err, err_len, "%s: cannot give the new file the old one's mode: %s", t->path,
                        strerror(errno));
            return QK_ERR_IO;
        }
        f->replace_ = 1;
    }
    return QK_OK;
}

qk_status qk_atomic_open(qk_atomic_file *f, const char *path, char *err, size_t err_len)
{
    if (f == NULL) {
        qk_io_error(err, err_len, "qk_atomic_open: NULL file");
        return QK_ERR_INVALID_ARG;
    }
    reset(f);
    if (path == NULL || *path == '\0') {
        qk_io_error(err, err_len, "empty or NULL output path");
        return QK_ERR_INVALID_ARG;
    }
    if (qk_atomic_reg_cancelled()) {
        qk_io_error(err, err_len, "%s: interrupted", path);
        return QK_ERR_IO;
    }
    if (strcmp(path, "-") == 0)
        return open_stdout(f, err, err_len);

    qk_atomic_target t;
    qk_status st = qk_atomic_target_resolve(path, &t, err, err_len);
    if (st != QK_OK)
        return st;
    st = check_target(path, &t, err, err_len);
    if (st == QK_OK && (f->final_path = strdup(t.path)) == NULL) {
        qk_io_error(err, err_len, "%s: out of memory", path);
        st = QK_ERR_NO_MEMORY;
    }
    if (st == QK_OK) {
        f->base_ = strrchr(f->final_path, '/') ? strrchr(f->final_path, '/') + 1 : f->final_path;
        st = t.exists && is_special(t.st.st_mode) ? open_in_place(f, &t, err, err_len)
                                                   : open_temporary(f, &t, err, err_len);
    }
    qk_atomic_target_free(&t);
    if (st != QK_OK)
        qk_atomic_abort(f);
    return st;
}

static qk_status check_open(const qk_atomic_file *f, const void *data, size_t len, const char *fn, char *err,
                            size_t err_len)
{
    if (f == NULL || f->kind_ == KIND_CLOSED || f->fd < 0) {
        qk_io_error(err, err_len, "%s: file is not open", fn);
        return QK_ERR_INVALID_ARG;
    }
    if (data == NULL && len > 0) {
        qk_io_error(err, err_len, "%s: NULL data", fn);
        return QK_ERR_INVALID_ARG;
    }
    return QK_OK;
}

static qk_status write_error(const qk_atomic_file *f, ssize_t w, char *err, size_t err_len)
{
    if (w < 0 && errno == EFBIG)
        qk_io_error(err, err_len, "%s: write failed: the file size limit (ulimit -f) was reached", f->final_path);
    else
        qk_io_error(err, err_len, "%s: write failed: %s", f->final_path, w < 0 ? strerror(errno) : "no progress");
    return QK_ERR_IO;
}

static qk_status interrupted(const qk_atomic_file *f, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s: interrupted", f->final_path);
    return QK_ERR_IO;
}

qk_status qk_atomic_write(qk_atomic_file *f, const void *data, size_t len, char *err, size_t err_len)
{
    qk_status st = check_open(f, data, len, "qk_atomic_write", err, err_len);
    if (st != QK_OK)
        return st;
    const unsigned char *p = data;
    while (len > 0) {
        if (qk_atomic_reg_cancelled())
            return interrupted(f, err, err_len);
        ssize_t w = write(f->fd, p, len < MAX_WRITE ? len : MAX_WRITE);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) /* write() returning 0 for a non-empty request would loop forever */
            return write_error(f, w, err, err_len);
        p += w;
        len -= (size_t)w;
    }
    return QK_OK;
}

qk_status qk_atomic_pwrite(qk_atomic_file *f, const void *data, size_t len, uint64_t offset, char *err,
                           size_t err_len)
{
    qk_status st = check_open(f, data, len, "qk_atomic_pwrite", err, err_len);
    if (st != QK_OK)
        return st;
    if (!qk_atomic_seekable(f)) {
        qk_io_error(err, err_len, "%s: not seekable (a device, FIFO, socket or stdout): write in order",
                    f->final_path);
        return QK_ERR_UNSUPPORTED;
    }
    if (offset > (uint64_t)INT64_MAX - len) {
        qk_io_error(err, err_len, "%s: write offset out of range", f->final_path);
        return QK_ERR_INVALID_ARG;
    }
    const unsigned char *p = data;
    while (len > 0) {
        if (qk_atomic_reg_cancelled())
            return interrupted(f, err, err_len);
        ssize_t w = pwrite(f->fd, p, len < MAX_WRITE ? len : MAX_WRITE, (off_t)offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return write_error(f, w, err, err_len);
        p += w;
        len -= (size_t)w;
        offset += (uint64_t)w;
    }
    return QK_OK;
}

int qk_atomic_seekable(const qk_atomic_file *f)
{
    return f != NULL && f->fd >= 0 && (f->kind_ == KIND_TMPFILE || f->kind_ == KIND_NAMED);
}

int qk_atomic_fd(const qk_atomic_file *f)
{
    return f != NULL && f->kind_ != KIND_CLOSED ? f->fd : -1;
}

/* Link the unnamed file to name in dir_fd. */
static int link_tmpfile(const qk_atomic_file *f, const char *name)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", f->fd);
    if (linkat(AT_FDCWD, proc, f->dir_fd_, name, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    if (errno != ENOENT)
        return -1;
    return linkat(f->fd, "", f->dir_fd_, name, AT_EMPTY_PATH);
}

/* Called with the commit lock held. 0 when the file is at its name. */
static int link_in(qk_atomic_file *f, char *err, size_t err_len)
{
    if (f->kind_ == KIND_NAMED) {
        const char *tmp = strrchr(f->tmp_path, '/') + 1;
        if (renameat(f->dir_fd_, tmp, f->dir_fd_, f->base_) != 0) {
            qk_io_error(err, err_len, "%s: cannot rename the temporary file into place: %s", f->final_path,
                        strerror(errno));
            return -1;
        }
        qk_atomic_reg_remove(f->tmp_path, 0);
        free(f->tmp_path);
        f->tmp_path = NULL;
        return 0;
    }
    if (!f->replace_) {
        if (link_tmpfile(f, f->base_) == 0)
            return 0;
        if (errno != EEXIST) {
            qk_io_error(err, err_len, "%s: cannot link the new file into place: %s", f->final_path,
                        strerror(errno));
            return -1;
        }
        /* created meanwhile by someone else: replace it like any old file */
    }
    char suffix[SUFFIX_LEN + 1], name[256];
    random_suffix(suffix, 0);
    /* registered under the path final_path's directory part + name */
    size_t dlen = (size_t)(f->base_ - f->final_path);
    char *full = qk_atomic_temp_name(f->base_, suffix, name, sizeof name) == 0 ? malloc(dlen + strlen(name) + 1)
                                                                               : NULL;
    if (full != NULL) {
        memcpy(full, f->final_path, dlen);
        strcpy(full + dlen, name);
    }
    if (full == NULL || qk_atomic_reg_add(full) != 0) {
        free(full);
        qk_io_error(err, err_len, "%s: out of memory", f->final_path);
        return -1;
    }
    int rc = -1;
    if (link_tmpfile(f, name) != 0)
        qk_io_error(err, err_len, "%s: cannot link the new file into %s: %s", f->final_path, name, strerror(errno));
    else if (renameat(f->dir_fd_, name, f->dir_fd_, f->base_) != 0)
        qk_io_error(err, err_len, "%s: cannot rename the new file into place: %s", f->final_path, strerror(errno));
    else
        rc = 0;
    qk_atomic_reg_remove(full, rc != 0); /* a failed rename leaves the link: remove it */
    free(full);
    return rc;
}

qk_status qk_atomic_commit(qk_atomic_file *f, char *err, size_t err_len)
{
    if (f == NULL || f->kind_ == KIND_CLOSED || f->fd < 0) {
        qk_io_error(err, err_len, "qk_atomic_commit: file is not open (already committed or aborted)");
        return QK_ERR_INVALID_ARG;
    }
    if (f->kind_ == KIND_STDOUT || f->kind_ == KIND_INPLACE) {
        /* Nothing to link: devices, FIFOs and sockets have no sync to wait for. */
        if (qk_atomic_reg_begin_commit() != 0) {
            qk_atomic_abort(f);
            return interrupted(f, err, err_len);
        }
        qk_atomic_reg_end_commit(1);
        if (f->kind_ == KIND_INPLACE) {
            int fd = f->fd;
            f->fd = -1;
            if (close(fd) != 0 && errno != EINTR) {
                qk_io_error(err, err_len, "%s: close failed: %s", f->final_path, strerror(errno));
                qk_atomic_abort(f);
                return QK_ERR_IO;
            }
        }
        qk_atomic_abort(f); /* frees; nothing left to remove */
        return QK_OK;
    }
    /* EINVAL: the file does not support syncing; the data is still written. */
    if (fsync(f->fd) != 0 && errno != EINVAL) {
        qk_io_error(err, err_len, "%s: fsync failed: %s", f->final_path, strerror(errno));
        qk_atomic_abort(f);
        return QK_ERR_IO;
    }
    if (qk_atomic_reg_begin_commit() != 0) {
        qk_status st = interrupted(f, err, err_len);
        qk_atomic_abort(f);
        return st;
    }
    int rc = link_in(f, err, err_len);
    qk_atomic_reg_end_commit(rc == 0);
    if (rc != 0) {
        qk_atomic_abort(f);
        return QK_ERR_IO;
    }
    (void)fsync(f->dir_fd_); /* the new name durable; some file systems refuse: best effort */
    qk_atomic_abort(f);      /* closes and frees; the file is in place */
    return QK_OK;
}

void qk_atomic_abort(qk_atomic_file *f)
{
    if (f == NULL || f->kind_ == KIND_CLOSED) {
        if (f != NULL && f->final_path != NULL) {
            free(f->final_path);
            f->final_path = NULL;
        }
        return;
    }
    if (f->kind_ != KIND_STDOUT && f->fd >= 0)
        close(f->fd);
    if (f->tmp_path != NULL) {
        qk_atomic_reg_remove(f->tmp_path, 1);
        free(f->tmp_path);
    }
    if (f->dir_fd_ >= 0)
        close(f->dir_fd_);
    free(f->final_path);
    reset(f);
}

qk_status qk_atomic_check(const char *path, char *err, size_t err_len)
{
    if (path == NULL || *path == '\0') {
        qk_io_error(err, err_len, "empty or NULL output path");
        return QK_ERR_INVALID_ARG;
    }
    if (strcmp(path, "-") == 0) {
        if (isatty(stdout_fd)) {
            qk_io_error(err, err_len, "-: standard output is a terminal; refusing to write binary data to it");
            return QK_ERR_INVALID_ARG;
        }
        return QK_OK;
    }
    qk_atomic_target t;
    qk_status st = qk_atomic_target_resolve(path, &t, err, err_len);
    if (st != QK_OK)
        return st;
    st = check_target(path, &t, err, err_len);
    qk_atomic_target_free(&t);
    return st;
}

int qk_atomic_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (a == NULL || b == NULL || strcmp(a, "-") == 0 || strcmp(b, "-") == 0)
        return 0;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
