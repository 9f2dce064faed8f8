/* Write-to-temporary-then-rename.
 *
 * The temporary is created with open(O_CREAT | O_EXCL, 0666) under a random
 * name rather than mkstemp(): mkstemp makes 0600 files, and widening them with
 * fchmod needs the umask, which can only be read by setting it (a race with
 * other threads) and which would also override a directory's default ACL.
 * Letting the kernel apply the umask gives the mode any other tool would
 * (0644 under the usual umask 022). O_EXCL keeps it as safe as mkstemp. */
#include "atomic_file.h"
#include "map_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SUFFIX_LEN 6
#define MAX_TRIES 100
#define MAX_BASE_IN_TMP 200          /* keep ".<base>.tmp.XXXXXX" within NAME_MAX (255) */
#define MAX_WRITE ((size_t)1 << 30) /* per write() call; Linux caps one call near 2 GiB anyway */


static void reset(qk_atomic_file *f)
{
    f->fd = -1;
    f->tmp_path = NULL;
    f->final_path = NULL;
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
}

/* "<dir>/.<base>.tmp.XXXXXX" with the X's still to fill; NULL when out of memory. */
static char *temp_template(const char *path, size_t *dir_len_out)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    size_t base_len = strlen(base);
    if (base_len > MAX_BASE_IN_TMP)
        base_len = MAX_BASE_IN_TMP;
    char *tmp = malloc(dir_len + 1 + base_len + 5 + SUFFIX_LEN + 1);
    if (tmp == NULL)
        return NULL;
    sprintf(tmp, "%.*s.%.*s.tmp.XXXXXX", (int)dir_len, path, (int)base_len, base);
    *dir_len_out = dir_len;
    return tmp;
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
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    struct stat st;
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
        (stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
        qk_io_error(err, err_len, "%s: is a directory, not a file name", path);
        return QK_ERR_IO;
    }

    size_t dir_len = 0;
    f->final_path = strdup(path);
    char *tmp = temp_template(path, &dir_len);
    if (f->final_path == NULL || tmp == NULL) {
        free(tmp);
        qk_atomic_abort(f);
        qk_io_error(err, err_len, "%s: out of memory", path);
        return QK_ERR_NO_MEMORY;
    }
    char *suffix = tmp + strlen(tmp) - SUFFIX_LEN;
    for (unsigned attempt = 0; attempt < MAX_TRIES; attempt++) {
        random_suffix(suffix, attempt);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            f->fd = fd;
            f->tmp_path = tmp;
            return QK_OK;
        }
        if (errno != EEXIST)
            break;
    }
    qk_io_error(err, err_len, "%s: cannot create a temporary file in %.*s: %s", path, dir_len ? (int)dir_len : 1,
            dir_len ? path : ".", strerror(errno));
    free(tmp); /* nothing was created, so nothing to unlink */
    qk_atomic_abort(f);
    return QK_ERR_IO;
}

qk_status qk_atomic_write(qk_atomic_file *f, const void *data, size_t len, char *err, size_t err_len)
{
    if (f == NULL || f->tmp_path == NULL || f->fd < 0) {
        qk_io_error(err, err_len, "qk_atomic_write: file is not open");
        return QK_ERR_INVALID_ARG;
    }
    if (data == NULL && len > 0) {
        qk_io_error(err, err_len, "qk_atomic_write: NULL data");
        return QK_ERR_INVALID_ARG;
    }
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len < MAX_WRITE ? len : MAX_WRITE);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            /* write() returning 0 for a non-empty request would loop forever. */
            qk_io_error(err, err_len, "%s: write failed: %s", f->final_path, w < 0 ? strerror(errno) : "no progress");
            return QK_ERR_IO;
        }
        p += w;
        len -= (size_t)w;
    }
    return QK_OK;
}

qk_status qk_atomic_pwrite(qk_atomic_file *f, const void *data, size_t len, uint64_t offset, char *err,
                           size_t err_len)
{
    if (f == NULL || f->tmp_path == NULL || f->fd < 0) {
        qk_io_error(err, err_len, "qk_atomic_pwrite: file is not open");
        return QK_ERR_INVALID_ARG;
    }
    if (data == NULL && len > 0) {
        qk_io_error(err, err_len, "qk_atomic_pwrite: NULL data");
        return QK_ERR_INVALID_ARG;
    }
    if (offset > (uint64_t)INT64_MAX - len) {
        qk_io_error(err, err_len, "%s: write offset out of range", f->final_path);
        return QK_ERR_INVALID_ARG;
    }
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t w = pwrite(f->fd, p, len < MAX_WRITE ? len : MAX_WRITE, (off_t)offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            qk_io_error(err, err_len, "%s: write failed: %s", f->final_path, w < 0 ? strerror(errno) : "no progress");
            return QK_ERR_IO;
        }
        p += w;
        len -= (size_t)w;
        offset += (uint64_t)w;
    }
    return QK_OK;
}

/* The temporary is always a regular file today. */
int qk_atomic_seekable(const qk_atomic_file *f)
{
    return f != NULL && f->tmp_path != NULL && f->fd >= 0;
}

int qk_atomic_fd(const qk_atomic_file *f)
{
    return f != NULL && f->tmp_path != NULL ? f->fd : -1;
}

/* Make the rename itself durable; a failure here loses nothing already written,
 * and some filesystems refuse fsync on directories, so it is best effort. */
static void sync_parent_dir(const char *tmp_path)
{
    const char *slash = strrchr(tmp_path, '/');
    char *dir = slash ? strndup(tmp_path, (size_t)(slash - tmp_path) + 1) : strdup(".");
    if (dir == NULL)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

qk_status qk_atomic_commit(qk_atomic_file *f, char *err, size_t err_len)
{
    if (f == NULL || f->tmp_path == NULL || f->fd < 0) {
        qk_io_error(err, err_len, "qk_atomic_commit: file is not open (already committed or aborted)");
        return QK_ERR_INVALID_ARG;
    }
    /* EINVAL: the file does not support syncing; the data is still written. */
    if (fsync(f->fd) != 0 && errno != EINVAL) {
        qk_io_error(err, err_len, "%s: fsync failed: %s", f->final_path, strerror(errno));
        qk_atomic_abort(f);
        return QK_ERR_IO;
    }
    int fd = f->fd;
    f->fd = -1;
    /* Linux releases the descriptor even when close() reports EINTR. */
    if (close(fd) != 0 && errno != EINTR) {
        qk_io_error(err, err_len, "%s: close failed: %s", f->final_path, strerror(errno));
        qk_atomic_abort(f);
        return QK_ERR_IO;
    }
    if (rename(f->tmp_path, f->final_path) != 0) {
        qk_io_error(err, err_len, "%s: cannot rename the temporary file into place: %s", f->final_path,
                strerror(errno));
        qk_atomic_abort(f);
        return QK_ERR_IO;
    }
    sync_parent_dir(f->tmp_path);
    free(f->tmp_path);
    free(f->final_path);
    reset(f);
    return QK_OK;
}

/* tmp_path is set exactly while a temporary exists, so a zeroed struct (fd 0)
 * that was never opened does not close stdin. */
void qk_atomic_abort(qk_atomic_file *f)
{
    if (f == NULL)
        return;
    if (f->tmp_path != NULL) {
        if (f->fd >= 0)
            close(f->fd);
        unlink(f->tmp_path);
        free(f->tmp_path);
    }
    free(f->final_path);
    reset(f);
}
