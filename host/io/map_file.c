#include "map_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void qk_io_error(char *err, size_t err_len, const char *fmt, ...)
{
    if (err == NULL || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* O_NONBLOCK keeps a FIFO from blocking the open before fstat refuses it. */
qk_status qk_map_file(const char *path, const char *what, int advice, void **map, size_t *size, char *err,
                      size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        qk_io_error(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return QK_ERR_IO;
    }
    struct stat st;
    qk_status status = QK_OK;
    if (fstat(fd, &st) != 0) {
        qk_io_error(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        status = QK_ERR_IO;
    } else if (S_ISDIR(st.st_mode)) {
        qk_io_error(err, err_len, "%s: is a directory, not %s", path, what);
        status = QK_ERR_IO;
    } else if (!S_ISREG(st.st_mode)) {
        qk_io_error(err, err_len, "%s: not a regular file", path);
        status = QK_ERR_IO;
    } else if (st.st_size == 0) {
        qk_io_error(err, err_len, "%s: empty file (0 bytes), not %s", path, what);
        status = QK_ERR_FORMAT;
    } else if ((uint64_t)st.st_size > SIZE_MAX) {
        qk_io_error(err, err_len, "%s: file too large to map", path);
        status = QK_ERR_IO;
    } else {
        *size = (size_t)st.st_size;
        *map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (*map == MAP_FAILED) {
            qk_io_error(err, err_len, "%s: cannot map %zu bytes: %s", path, *size, strerror(errno));
            *map = NULL;
            status = QK_ERR_IO;
        } else {
            (void)madvise(*map, *size, advice); /* only a hint */
        }
    }
    close(fd); /* the mapping stays valid */
    return status;
}
