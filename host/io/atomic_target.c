/* Resolving an output path: the file a chain of symbolic links leads to is the
 * one replaced (in its own directory), so the links stay links. A dangling
 * link's target is created. A link the kernel resolves without a path
 * (/proc/self/fd/N of a pipe or socket) is kept as given. */
#include "atomic_internal.h"
#include "map_file.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINKS 40 /* the kernel's own limit (ELOOP) */

static char *join_dir(const char *link_path, const char *target)
{
    if (target[0] == '/')
        return strdup(target);
    const char *slash = strrchr(link_path, '/');
    size_t dlen = slash ? (size_t)(slash - link_path) + 1 : 0;
    char *out = malloc(dlen + strlen(target) + 1);
    if (out) {
        memcpy(out, link_path, dlen);
        strcpy(out + dlen, target);
    }
    return out;
}

qk_status qk_atomic_target_resolve(const char *path, qk_atomic_target *t, char *err, size_t err_len)
{
    memset(t, 0, sizeof *t);
    char *cur = strdup(path);
    if (cur == NULL) {
        qk_io_error(err, err_len, "%s: out of memory", path);
        return QK_ERR_NO_MEMORY;
    }
    for (int hops = 0;; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0) {
            if (errno != ENOENT) {
                qk_io_error(err, err_len, "%s: %s", cur, strerror(errno));
                free(cur);
                return QK_ERR_IO;
            }
            /* A "magic" link (/dev/stdout -> /proc/self/fd/1 -> "pipe:[N]")
             * names no path, yet the kernel follows it: use it as given. */
            struct stat via;
            if (hops > 0 && stat(path, &via) == 0) {
                free(cur);
                if ((cur = strdup(path)) == NULL) {
                    qk_io_error(err, err_len, "%s: out of memory", path);
                    return QK_ERR_NO_MEMORY;
                }
                t->exists = 1;
                t->st = via;
            }
            break; /* a new file (or a dangling link's target) */
        }
        if (!S_ISLNK(st.st_mode)) {
            t->exists = 1;
            t->st = st;
            break;
        }
        if (hops == MAX_LINKS) {
            qk_io_error(err, err_len, "%s: too many levels of symbolic links", path);
            free(cur);
            return QK_ERR_IO;
        }
        char buf[PATH_MAX];
        ssize_t n = readlink(cur, buf, sizeof buf - 1);
        if (n < 0) {
            qk_io_error(err, err_len, "%s: cannot read the symbolic link: %s", cur, strerror(errno));
            free(cur);
            return QK_ERR_IO;
        }
        buf[n] = '\0';
        char *next = join_dir(cur, buf);
        free(cur);
        if ((cur = next) == NULL) {
            qk_io_error(err, err_len, "%s: out of memory", path);
            return QK_ERR_NO_MEMORY;
        }
    }
    const char *slash = strrchr(cur, '/');
    t->path = cur;
    t->base = slash ? slash + 1 : cur;
    t->dir = slash ? strndup(cur, slash == cur ? 1 : (size_t)(slash - cur)) : strdup(".");
    if (t->dir == NULL) {
        qk_atomic_target_free(t);
        qk_io_error(err, err_len, "%s: out of memory", path);
        return QK_ERR_NO_MEMORY;
    }
    if (*t->base == '\0' || strcmp(t->base, ".") == 0 || strcmp(t->base, "..") == 0 ||
        (t->exists && S_ISDIR(t->st.st_mode))) {
        qk_io_error(err, err_len, "%s: is a directory, not a file name", path);
        qk_atomic_target_free(t);
        return QK_ERR_IO;
    }
    return QK_OK;
}

void qk_atomic_target_free(qk_atomic_target *t)
{
    free(t->path);
    free(t->dir);
    memset(t, 0, sizeof *t);
}
