/* Read-ahead for the model commands. The input is memory-mapped and its
 * tensors are processed one after another; without help, every first touch of
 * a tensor waits for the disk on the computing thread. A prefetcher is one
 * thread that walks the tensors' bytes ahead of the compute (madvise
 * MADV_WILLNEED, then one read per page, so the pages are in the page cache and
 * mapped when the compute gets there), at most PREFETCH_AHEAD ranges and
 * PREFETCH_WINDOW bytes ahead of the start of the range being computed, so it
 * never floods the page cache with a whole model.
 *
 * It is only an optimisation: every failure to start one just means no
 * prefetching. QKERN_PREFETCH=0 in the environment turns it off (to measure
 * what it buys). The thread blocks every signal, so SIGINT and SIGTERM reach the
 * main thread as before. */
#ifndef QK_CLI_PREFETCH_H
#define QK_CLI_PREFETCH_H

#include <stddef.h>

#define PREFETCH_WINDOW ((size_t)1 << 30) /* bytes ahead of the range being computed */
#define PREFETCH_AHEAD 2                   /* ranges ahead of the one being computed */

/* One region of a read-only mapping (a tensor's data); len may be 0. */
typedef struct prefetch_range {
    const void *ptr;
    size_t len;
} prefetch_range;

typedef struct prefetcher prefetcher; /* opaque */

/* 0 when QKERN_PREFETCH is "0", else 1. */
int prefetch_enabled(void);

/* Start reading ranges[0..n) ahead of the compute, which is at range 0. The
 * array is copied; the memory it describes must stay mapped until
 * prefetch_stop(). NULL when disabled, when n is 0 or when the thread cannot be
 * started: all calls below accept NULL. */
prefetcher *prefetch_start(const prefetch_range *ranges, size_t n);

/* The compute has moved on to range i: everything before it is done with. */
void prefetch_advance(prefetcher *p, size_t i);

/* Stop the thread (it finishes at most one chunk of a few MiB), join it and
 * free everything. */
void prefetch_stop(prefetcher *p);

#endif
