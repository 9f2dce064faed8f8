/* The read-ahead thread of the model commands (see prefetch.h). */
#include "prefetch.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Bytes read between two looks at the compute's position: small enough that
 * stopping is quick, large enough that the lock is not taken per page. */
#define PREFETCH_CHUNK ((size_t)4 << 20)

struct prefetcher {
    prefetch_range *ranges;
    uint64_t *start;      /* start[i]: bytes in ranges before i (start[n] = total) */
    size_t n;
    size_t page;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* the compute advanced, or stop was asked */
    size_t current;       /* the range being computed (under lock) */
    int stop;             /* under lock */
};

int prefetch_enabled(void)
{
    const char *v = getenv("QKERN_PREFETCH");
    return !(v && strcmp(v, "0") == 0);
}

/* Whether byte off of range j may be read now: not past PREFETCH_AHEAD ranges
 * nor PREFETCH_WINDOW bytes ahead of the start of the current range. */
static int within_window(const prefetcher *p, size_t j, size_t off)
{
    return j <= p->current + PREFETCH_AHEAD && p->start[j] + off - p->start[p->current] < PREFETCH_WINDOW;
}

/* Ask for the pages of [ptr, ptr + len), then read one byte of each: the
 * madvise starts the I/O for the whole chunk at once, the reads wait for it and
 * map the pages so the compute takes no faults there. */
static void touch(const prefetcher *p, const unsigned char *ptr, size_t len)
{
    uintptr_t a = (uintptr_t)ptr & ~(uintptr_t)(p->page - 1);
    (void)madvise((void *)a, (uintptr_t)ptr + len - a, MADV_WILLNEED); /* only a hint */
    volatile unsigned char sink = 0;
    for (uintptr_t q = a; q < (uintptr_t)ptr + len; q += p->page)
        sink ^= *(const volatile unsigned char *)(q < (uintptr_t)ptr ? (uintptr_t)ptr : q);
    (void)sink;
}

static void *run(void *arg)
{
    prefetcher *p = arg;
    size_t j = 0, off = 0;
    pthread_mutex_lock(&p->lock);
    while (!p->stop && j < p->n) {
        if (j < p->current) { /* the compute overtook us: no use reading behind it */
            j = p->current;
            off = 0;
            continue;
        }
        if (off >= p->ranges[j].len) {
            j++;
            off = 0;
            continue;
        }
        if (!within_window(p, j, off)) {
            pthread_cond_wait(&p->moved, &p->lock);
            continue;
        }
        size_t step = p->ranges[j].len - off;
        if (step > PREFETCH_CHUNK)
            step = PREFETCH_CHUNK;
        pthread_mutex_unlock(&p->lock);
        touch(p, (const unsigned char *)p->ranges[j].ptr + off, step);
        pthread_mutex_lock(&p->lock);
        off += step;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void free_prefetcher(prefetcher *p)
{
    free(p->ranges);
    free(p->start);
    free(p);
}

/* The thread starts with every signal blocked (the mask is inherited), so
 * asynchronous signals go to the CLI's signal thread (interrupt.c). */
static int spawn(prefetcher *p)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->thread, NULL, run, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

prefetcher *prefetch_start(const prefetch_range *ranges, size_t n)
{
    if (n == 0 || !prefetch_enabled())
        return NULL;
    prefetcher *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->ranges = malloc(n * sizeof *p->ranges);
    p->start = malloc((n + 1) * sizeof *p->start);
    if (!p->ranges || !p->start) {
        free_prefetcher(p);
        return NULL;
    }
    memcpy(p->ranges, ranges, n * sizeof *ranges);
    p->start[0] = 0;
    for (size_t i = 0; i < n; i++)
        p->start[i + 1] = p->start[i] + ranges[i].len;
    p->n = n;
    long page = sysconf(_SC_PAGESIZE);
    p->page = page > 0 ? (size_t)page : 4096;
    int locks = pthread_mutex_init(&p->lock, NULL) == 0;
    int conds = locks && pthread_cond_init(&p->moved, NULL) == 0;
    if (conds && spawn(p) == 0)
        return p;
    if (conds)
        pthread_cond_destroy(&p->moved);
    if (locks)
        pthread_mutex_destroy(&p->lock);
    free_prefetcher(p);
    return NULL;
}

void prefetch_advance(prefetcher *p, size_t i)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    if (i > p->current) {
        p->current = i < p->n ? i : p->n;
        pthread_cond_signal(&p->moved);
    }
    pthread_mutex_unlock(&p->lock);
}

void prefetch_stop(prefetcher *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_signal(&p->moved);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->moved);
    pthread_mutex_destroy(&p->lock);
    free_prefetcher(p);
}
