/* Large buffers as anonymous mappings aligned to 2 MiB, so that transparent huge
 * pages can back the whole range (the kernel only uses a huge page for an
 * aligned 2 MiB extent, and older kernels do not align large mappings). */
#include "big_alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE_SIZE ((size_t)2 << 20)
#define BIG_THRESHOLD HUGE_SIZE

static size_t page_round(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (bytes + page - 1) / page * page;
}

void *qk_big_alloc(size_t bytes)
{
    if (bytes < BIG_THRESHOLD)
        return malloc(bytes ? bytes : 1); /* a real pointer even for 0 bytes */
    if (bytes > SIZE_MAX - 2 * HUGE_SIZE)
        return NULL;
    size_t keep = page_round(bytes);
    /* Map one huge page more than needed and trim to an aligned start. */
    size_t span = keep + HUGE_SIZE;
    unsigned char *base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    uintptr_t addr = (uintptr_t)base;
    unsigned char *p = base + ((HUGE_SIZE - addr % HUGE_SIZE) % HUGE_SIZE);
    size_t head = (size_t)(p - base);
    size_t tail = span - head - keep;
    if (head > 0)
        munmap(base, head);
    if (tail > 0)
        munmap(p + keep, tail);
#ifdef MADV_HUGEPAGE
    (void)madvise(p, keep, MADV_HUGEPAGE); /* a hint: fine if THP is off */
#endif
    return p;
}

void qk_big_free(void *p, size_t bytes)
{
    if (p == NULL)
        return;
    if (bytes < BIG_THRESHOLD)
        free(p);
    else
        munmap(p, page_round(bytes));
}
