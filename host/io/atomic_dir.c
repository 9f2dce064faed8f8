/* Write a directory under a temporary name, rename it into place (atomic_dir.h). */
#include "atomic_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "map_file.h"

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (s) {
        memcpy(s, a, la);
        s[la] = '/';
        memcpy(s + la + 1, b, lb + 1);
    }
    return s;
}

/* 1 empty, 0 holds something, -1 cannot be read. */
static int dir_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int empty = 1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

static void sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

qk_status qk_atomic_dir_open(qk_atomic_dir *d, const char *path, char *err, size_t err_len)
{
    memset(d, 0, sizeof *d);
    qk_io_error(err, err_len, "%s", "");
    if (path == NULL || *path == '\0') {
        qk_io_error(err, err_len, "empty output directory name");
        return QK_ERR_INVALID_ARG;
    }
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    struct stat sb;
    char *final = strndup(path, len);
    if (!final) {
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    if (stat(final, &sb) == 0) {
        int empty = S_ISDIR(sb.st_mode) ? dir_empty(final) : -2;
        if (empty != 1) {
            qk_io_error(err, err_len, "%s %s", final,
                        empty == -2  ? "exists and is not a directory"
                        : empty == 0 ? "is a directory that is not empty (the output directory must not exist or be empty)"
                                     : "cannot be read");
            free(final);
            return QK_ERR_IO;
        }
    } else if (errno != ENOENT) {
        qk_io_error(err, err_len, "%s: %s", final, strerror(errno));
        free(final);
        return QK_ERR_IO;
    }
    const char *slash = strrchr(final, '/');
    const char *base = slash ? slash + 1 : final;
    size_t dir_len = slash ? (size_t)(slash - final) : 0;
    size_t tlen = dir_len + strlen(base) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(final);
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    if (slash)
        snprintf(tmp, tlen, "%.*s/.%s.tmp.XXXXXX", (int)(dir_len ? dir_len : 1), dir_len ? final : "/", base);
    else
        snprintf(tmp, tlen, ".%s.tmp.XXXXXX", base);
    if (mkdtemp(tmp) == NULL) {
        qk_io_error(err, err_len, "cannot create a temporary directory beside %s: %s", final, strerror(errno));
        free(tmp);
        free(final);
        return QK_ERR_IO;
    }
    mode_t mask = umask(0); /* mkdtemp's 0700 would surprise whoever reads the output */
    umask(mask);
    (void)chmod(tmp, 0777 & ~mask);
    d->tmp_path = tmp;
    d->final_path = final;
    return QK_OK;
}

char *qk_atomic_dir_file(const qk_atomic_dir *d, const char *name)
{
    return join(d->tmp_path, name);
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *p = join(path, e->d_name);
            if (!p)
                continue;
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                remove_tree(p);
            else
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(path);
}

void qk_atomic_dir_abort(qk_atomic_dir *d)
{
    if (d->tmp_path)
        remove_tree(d->tmp_path);
    free(d->tmp_path);
    free(d->final_path);
    d->tmp_path = d->final_path = NULL;
}

qk_status qk_atomic_dir_commit(qk_atomic_dir *d, char *err, size_t err_len)
{
    if (!d->tmp_path) {
        qk_io_error(err, err_len, "qk_atomic_dir_commit: nothing open");
        return QK_ERR_INVALID_ARG;
    }
    sync_dir(d->tmp_path);
    if (rename(d->tmp_path, d->final_path) != 0) {
        qk_io_error(err, err_len, "cannot rename %s to %s: %s", d->tmp_path, d->final_path, strerror(errno));
        qk_atomic_dir_abort(d);
        return QK_ERR_IO;
    }
    char *parent = strdup(d->final_path);
    if (parent) {
        char *slash = strrchr(parent, '/');
        if (slash)
            *(slash == parent ? slash + 1 : slash) = '\0';
        sync_dir(slash ? parent : ".");
        free(parent);
    }
    free(d->tmp_path);
    free(d->final_path);
    d->tmp_path = d->final_path = NULL;
    return QK_OK;
}
