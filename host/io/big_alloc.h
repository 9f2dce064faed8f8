/* Large host buffers (outputs, staging). A fresh 4 KiB-page mapping costs ~0.7 s
 * per 256 MiB in page faults on the CI machines; huge pages cut that to ~15 ms. */
#ifndef QK_IO_BIG_ALLOC_H
#define QK_IO_BIG_ALLOC_H

#include <stddef.h>

/* Anonymous mapping with MADV_HUGEPAGE for large sizes, malloc for small ones.
 * Returns NULL on failure. Free with qk_big_free(p, bytes). */
void *qk_big_alloc(size_t bytes);
void qk_big_free(void *p, size_t bytes);

#endif
