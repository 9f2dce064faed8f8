/* Shared by the file readers: error text into a caller's buffer, and a
 * read-only mapping of a whole regular file. */
#ifndef QK_IO_MAP_FILE_H
#define QK_IO_MAP_FILE_H

#include <stddef.h>

#include "qkern.h"

/* printf into err (NUL-terminated; err may be NULL). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void qk_io_error(char *err, size_t err_len, const char *fmt, ...);

/* Map path read-only in full. Directories, FIFOs and devices are refused
 * (QK_ERR_IO) without blocking, an empty file is QK_ERR_FORMAT; what names the
 * expected format in messages ("a .npy file"); advice goes to madvise. */
qk_status qk_map_file(const char *path, const char *what, int advice, void **map, size_t *size, char *err,
                      size_t err_len);

#endif
