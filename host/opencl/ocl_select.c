/* Exact order statistics by multi-target radix select (select.cl), never a sort.
 *
 * Keys (order-preserving unsigned ints of x or |x|) are decided digit by digit,
 * most significant first. A "group" is a set of keys sharing the digits decided
 * so far that holds at least one target rank; level L histograms digit L of
 * every group's keys in one pass, and the host walks each group's ranks
 * through the cumulative counts to find the sub-bucket of each rank. Only the
 * target sub-buckets stay: their keys are compacted into a candidate buffer
 * once that is at most half of what the pass read (and fits the budget), so
 * later levels read little. A tensor whose candidates would not fit (a constant
 * tensor: everything in one bucket) is simply read again at the next level;
 * after the last digit every rank's key is known exactly.
 *
 * On large tensors a sampled prefilter pass (ocl_prefilter.c) usually replaces
 * the first level and its compaction: the levels then run on its candidates. */
#include <stdlib.h>
#include <string.h>

#include "../cpu/cpu_keys.h"
#include "ocl.h"

#define SEL_MAX_RANKS 1024            /* ranks per selection; more are done in batches */
#define SEL_HIST_MAX ((size_t)1 << 20) /* counters per histogram pass; more groups take more passes */
#define SEL_HIST_GPU_LOCAL 2048u      /* bins of select.cl's local histogram */

static const unsigned shift32[] = {21, 10, 0}, bits32[] = {11, 11, 10};
static const unsigned shift64[] = {53, 42, 31, 20, 10, 0}, bits64[] = {11, 11, 11, 11, 10, 10};

typedef struct sel_group {
    uint64_t prefix; /* the key bits decided so far, in place */
    int64_t base;    /* keys below this group */
    size_t r0, r1;   /* its target ranks: ranks[r0..r1) */
} sel_group;

typedef struct sel_state {
    ocl_backend *be;
    int wide, levels;
    const unsigned *shift, *bits;
    unsigned mode;            /* QK_OCL_MODE_* of the tensor source */
    const qk_tensor *x;       /* the tensor (possibly an uploaded copy) */
    cl_mem cand;              /* keys of the target buckets, or NULL: read the tensor */
    int64_t ncand;
    int64_t src_count;        /* elements the next pass reads */
    /* group tables: host copy (8 offsets then tables) and device copy */
    int *tabs;
    size_t tabs_len, tabs_cap;
    cl_mem d_tabs;
    /* the pass being run */
    int level;
    cl_int g0, gcount;
    cl_uint nsub;
    size_t hsize, parts_cap;
    cl_mem partials, totals, counter, out;
} sel_state;

/* ---- the two passes: histogram and compaction ---------------------------------------- */

static size_t hist_parts(const sel_state *s, int64_t n)
{
    size_t p = ocl_parts(s->be, (uint64_t)n);
    if (s->be->gpu_style) return s->hsize <= SEL_HIST_GPU_LOCAL ? p : 1;
    /* CPU: past level 0 the histograms are large; one part per core is enough */
    if (s->level > 0 && p > s->be->compute_units) p = s->be->compute_units ? s->be->compute_units : 1;
    return p;
}

static qk_status hist_launch(sel_state *s, cl_mem src, uint64_t off, int64_t n, cl_uint mode, cl_uint nwait,
                             const cl_event *wait, cl_event *done)
{
    ocl_backend *be = s->be;
    size_t parts = hist_parts(s, n);
    /* the GPU kernel's global-atomic mode shares one slice among all groups */
    size_t slices = be->gpu_style ? (s->hsize <= SEL_HIST_GPU_LOCAL ? parts : 1) : parts * s->nsub;
    cl_ulong o = off, nn = (cl_ulong)n;
    cl_int level = s->level;
    cl_event zeroed = NULL, counted = NULL;
    qk_status st = ocl_fill_zero(be, s->partials, slices * s->hsize * sizeof(cl_uint), nwait, wait, &zeroed);
    if (st != QK_OK) return st;
    ocl_arg hargs[] = {OCL_ARG(src),     OCL_ARG(o),         OCL_ARG(nn),        OCL_ARG(mode),  OCL_ARG(level),
                       OCL_ARG(s->d_tabs), OCL_ARG(s->g0), OCL_ARG(s->gcount), OCL_ARG(s->nsub), OCL_ARG(s->partials)};
    st = ocl_launch(be, s->wide ? OCL_K_HIST64 : OCL_K_HIST32, hargs, 10, parts, ocl_local_size(be), 1, &zeroed,
                    &counted);
    ocl_release_event(&zeroed);
    if (st != QK_OK) return st;
    cl_uint nslices = (cl_uint)slices, hs = (cl_uint)s->hsize;
    ocl_arg rargs[] = {OCL_ARG(s->partials), OCL_ARG(nslices), OCL_ARG(hs), OCL_ARG(s->totals)};
    st = ocl_launch(be, OCL_K_HIST_REDUCE, rargs, 4, ocl_parts(be, s->hsize), ocl_local_size(be), 1, &counted, done);
    ocl_release_event(&counted);
    return st;
}

static qk_status compact_launch(sel_state *s, cl_mem src, uint64_t off, int64_t n, cl_uint mode, cl_uint nwait,
                                const cl_event *wait, cl_event *done)
{
    cl_ulong o = off, nn = (cl_ulong)n;
    cl_int levels = s->level + 1;
    ocl_arg args[] = {OCL_ARG(src),     OCL_ARG(o),      OCL_ARG(nn),        OCL_ARG(mode),
                      OCL_ARG(levels), OCL_ARG(s->d_tabs), OCL_ARG(s->out), OCL_ARG(s->counter)};
    return ocl_launch(s->be, s->wide ? OCL_K_COMPACT64 : OCL_K_COMPACT32, args, 8, ocl_parts(s->be, (uint64_t)n),
                      ocl_local_size(s->be), nwait, wait, done);
}

typedef qk_status (*sel_launch_fn)(sel_state *, cl_mem, uint64_t, int64_t, cl_uint, cl_uint, const cl_event *,
                                   cl_event *);

typedef struct sel_pass {
    sel_state *s;
    sel_launch_fn fn;
} sel_pass;

static qk_status tensor_span(ocl_backend *be, ocl_span *sp, void *user)
{
    sel_pass *p = user;
    return p->fn(p->s, sp->in, sp->in_off, sp->n, p->s->mode, sp->nwait, sp->wait, &sp->done);
}

/* Run one pass over the current source: the candidate buffer, else the tensor. */
static qk_status run_pass(sel_state *s, sel_launch_fn fn)
{
    if (s->cand) {
        qk_status st = fn(s, s->cand, 0, s->ncand, QK_OCL_MODE_KEYS, 0, NULL, NULL);
        return st == QK_OK ? ocl_finish(s->be) : st;
    }
    sel_pass p = {s, fn};
    return ocl_stream(s->be, s->x, NULL, tensor_span, &p);
}

/* ---- host side: tables and groups -------------------------------------------------------- */

static int *tabs_grow(sel_state *s, size_t add)
{
    if (s->tabs_len + add > s->tabs_cap) {
        size_t cap = s->tabs_cap ? s->tabs_cap : 4096;
        while (cap < s->tabs_len + add) cap *= 2;
        int *t = realloc(s->tabs, cap * sizeof *t);
        if (!t) return NULL;
        s->tabs = t;
        s->tabs_cap = cap;
    }
    int *at = s->tabs + s->tabs_len;
    s->tabs_len += add;
    return at;
}

static qk_status tabs_upload(sel_state *s)
{
    ocl_release_mem(&s->d_tabs);
    qk_status st = ocl_alloc(s->be, s->tabs_len * sizeof(int), CL_MEM_READ_ONLY, &s->d_tabs);
    if (st == QK_OK) st = ocl_write(s->be, s->d_tabs, 0, s->tabs, s->tabs_len * sizeof(int));
    return st;
}

/* Histogram the current level for all groups (in batches of groups that fit a
 * pass) into host counts[g << bits | d]. */
static qk_status level_histogram(sel_state *s, size_t ngroups, uint64_t *counts)
{
    ocl_backend *be = s->be;
    unsigned bits = s->bits[s->level];
    size_t per = SEL_HIST_MAX >> bits; /* groups per pass */
    qk_status st = QK_OK;
    for (size_t g0 = 0; st == QK_OK && g0 < ngroups; g0 += per) {
        size_t gc = ngroups - g0 < per ? ngroups - g0 : per;
        s->g0 = (cl_int)g0;
        s->gcount = (cl_int)gc;
        s->hsize = gc << bits;
        s->nsub = (!be->gpu_style && s->level == 0) ? 4 : 1;
        size_t slices = be->gpu_style ? (s->hsize <= SEL_HIST_GPU_LOCAL ? s->parts_cap : 1) : s->parts_cap * s->nsub;
        ocl_release_mem(&s->partials);
        ocl_release_mem(&s->totals);
        st = ocl_alloc(be, slices * s->hsize * sizeof(cl_uint), CL_MEM_READ_WRITE, &s->partials);
        if (st == QK_OK) st = ocl_alloc(be, s->hsize * sizeof(cl_ulong), CL_MEM_READ_WRITE, &s->totals);
        if (st == QK_OK) st = ocl_fill_zero(be, s->totals, s->hsize * sizeof(cl_ulong), 0, NULL, NULL);
        if (st == QK_OK) st = run_pass(s, hist_launch);
        if (st == QK_OK) st = ocl_read(be, s->totals, 0, counts + (g0 << bits), s->hsize * sizeof(cl_ulong));
    }
    ocl_release_mem(&s->partials);
    ocl_release_mem(&s->totals);
    return st;
}

/* Split every group by its digit at the current level: the new groups, and the
 * level's table mapping (group, digit) to a new group or -1. */
static qk_status split_groups(sel_state *s, const sel_group *groups, size_t ngroups, const uint64_t *counts,
                              const int64_t *ranks, sel_group *next, size_t *nnext, uint64_t *targeted)
{
    unsigned bits = s->bits[s->level], shift = s->shift[s->level];
    size_t bins = (size_t)1 << bits;
    int *tab = tabs_grow(s, ngroups * bins);
    if (!tab) return qk_set_error(s->be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory for select tables");
    s->tabs[s->level] = (int)(tab - s->tabs);
    size_t nn = 0;
    uint64_t tgt = 0;
    for (size_t g = 0; g < ngroups; g++) {
        const sel_group *gr = &groups[g];
        int64_t cum = gr->base;
        size_t r = gr->r0;
        for (size_t d = 0; d < bins; d++) {
            int64_t c = (int64_t)counts[(g << bits) + d];
            tab[(g << bits) + d] = -1;
            if (r < gr->r1 && ranks[r] < cum + c) {
                sel_group *ng = &next[nn];
                ng->prefix = gr->prefix | ((uint64_t)d << shift);
                ng->base = cum;
                ng->r0 = r;
                while (r < gr->r1 && ranks[r] < cum + c) r++;
                ng->r1 = r;
                tab[(g << bits) + d] = (int)nn++;
                tgt += (uint64_t)c;
            }
            cum += c;
        }
        if (r != gr->r1) {
            return qk_set_error(s->be->base.ctx, QK_ERR_BACKEND,
                                "opencl: select lost count of its keys (rank %lld past the group's %lld keys)",
                                (long long)ranks[r], (long long)(cum - gr->base));
        }
    }
    *nnext = nn;
    *targeted = tgt;
    return QK_OK;
}

/* Replace the source by the keys of the target groups (exactly `targeted` keys). */
static qk_status compact(sel_state *s, uint64_t targeted)
{
    ocl_backend *be = s->be;
    size_t ks = s->wide ? 8 : 4;
    qk_status st = ocl_alloc(be, (size_t)targeted * ks, CL_MEM_READ_WRITE, &s->out);
    if (st == QK_OK) st = ocl_alloc(be, sizeof(cl_uint), CL_MEM_READ_WRITE, &s->counter);
    if (st == QK_OK) st = ocl_fill_zero(be, s->counter, sizeof(cl_uint), 0, NULL, NULL);
    if (st == QK_OK) st = run_pass(s, compact_launch);
    cl_uint got = 0;
    if (st == QK_OK) st = ocl_read(be, s->counter, 0, &got, sizeof got);
    if (st == QK_OK && got != targeted) {
        st = qk_set_error(be->base.ctx, QK_ERR_BACKEND, "opencl: select compacted %u keys, expected %llu", got,
                          (unsigned long long)targeted);
    }
    ocl_release_mem(&s->counter);
    if (st != QK_OK) {
        ocl_release_mem(&s->out);
        return st;
    }
    ocl_release_mem(&s->cand);
    s->cand = s->out;
    s->out = NULL;
    s->ncand = (int64_t)targeted;
    s->src_count = s->ncand;
    return QK_OK;
}

/* One selection of nranks (<= SEL_MAX_RANKS) sorted ranks. */
static qk_status select_batch(sel_state *s, const int64_t *ranks, size_t nranks, double *values)
{
    ocl_backend *be = s->be;
    size_t max_bins = (size_t)1 << 11;
    sel_group *groups = malloc(nranks * sizeof *groups), *next = malloc(nranks * sizeof *next);
    uint64_t *counts = malloc(nranks * max_bins * sizeof *counts);
    qk_status st = QK_OK;
    if (!groups || !next || !counts) {
        st = qk_set_error(be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory for %zu ranks", nranks);
    }
    size_t ngroups = 1;
    if (st == QK_OK) groups[0] = (sel_group){0, 0, 0, nranks};
    s->tabs_len = 0;
    if (st == QK_OK && !tabs_grow(s, 8)) st = qk_set_error(be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    if (st == QK_OK) memset(s->tabs, 0, 8 * sizeof *s->tabs);
    s->src_count = s->cand ? s->ncand : s->x->n;
    s->parts_cap = ocl_parts(be, (uint64_t)s->src_count);

    for (s->level = 0; st == QK_OK && s->level < s->levels; s->level++) {
        if (st == QK_OK) st = tabs_upload(s);
        if (st == QK_OK) st = level_histogram(s, ngroups, counts);
        if (st != QK_OK) break;
        if (s->level == 0) {
            uint64_t m = 0;
            for (size_t d = 0; d < max_bins; d++) m += counts[d];
            if ((uint64_t)ranks[nranks - 1] >= m) {
                st = qk_set_error(be->base.ctx, QK_ERR_INVALID_ARG, "opencl: rank %lld of %llu keys",
                                  (long long)ranks[nranks - 1], (unsigned long long)m);
                break;
            }
        }
        size_t nnext = 0;
        uint64_t targeted = 0;
        st = split_groups(s, groups, ngroups, counts, ranks, next, &nnext, &targeted);
        if (st != QK_OK) break;
        sel_group *t = groups;
        groups = next;
        next = t;
        ngroups = nnext;
        if (s->level + 1 == s->levels) break;
        /* compact when that at least halves what the next level reads and the
         * candidates fit next to the current ones in the working budget */
        size_t ks = s->wide ? 8 : 4;
        uint64_t room = be->budget / 2, held = (uint64_t)s->ncand * ks;
        if (targeted * 2 <= (uint64_t)s->src_count && targeted <= UINT32_MAX && held < room &&
            targeted * ks <= room - held) {
            st = tabs_upload(s);
            if (st == QK_OK) st = compact(s, targeted);
        }
    }
    if (st == QK_OK) {
        for (size_t g = 0; g < ngroups; g++) {
            for (size_t r = groups[g].r0; r < groups[g].r1; r++) values[r] = qk_key_value(groups[g].prefix, s->wide);
        }
    }
    ocl_release_mem(&s->cand);
    s->ncand = 0;
    free(groups);
    free(next);
    free(counts);
    return st;
}

qk_status ocl_select(qk_backend *base, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                     double *values)
{
    ocl_backend *be = ocl_of(base);
    if (nranks == 0) return QK_OK;
    sel_state s;
    memset(&s, 0, sizeof s);
    s.be = be;
    s.wide = x->dtype == QK_F64;
    s.levels = s.wide ? 6 : 3;
    s.shift = s.wide ? shift64 : shift32;
    s.bits = s.wide ? bits64 : bits32;
    s.mode = ((flags & QK_IGNORE_NONFINITE) ? QK_OCL_MODE_SKIP_NONFINITE : 0) | ((flags & QK_ABS) ? QK_OCL_MODE_ABS : 0);
    s.x = x;

    /* A host tensor the device cannot wrap but that fits half the budget is
     * uploaded once: the levels then read device memory, not the bus. */
    qk_status st = QK_OK;
    size_t bytes = (size_t)x->n * qk_dtype_size(x->dtype);
    cl_mem copy = NULL;
    qk_buffer copy_buf;
    qk_tensor copy_t;
    if (x->host && !ocl_host_fits(be, bytes) && bytes <= be->budget / 2) {
        st = ocl_alloc(be, bytes, CL_MEM_READ_ONLY, &copy);
        if (st == QK_OK) st = ocl_write(be, copy, 0, x->host, bytes);
        copy_buf = (qk_buffer){base->ctx, copy, bytes, 0, 0};
        copy_t = qk_tensor_buffer(x->dtype, &copy_buf, 0, x->n);
        s.x = &copy_t;
    }
    int64_t *mapped = malloc((nranks < SEL_MAX_RANKS ? nranks : SEL_MAX_RANKS) * sizeof *mapped);
    if (!mapped && st == QK_OK) st = qk_set_error(base->ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    for (size_t r0 = 0; st == QK_OK && r0 < nranks; r0 += SEL_MAX_RANKS) {
        size_t nr = nranks - r0 < SEL_MAX_RANKS ? nranks - r0 : SEL_MAX_RANKS;
        int used = 0;
        if (be->prefilter) {
            st = ocl_prefilter(be, s.x, s.mode, ranks + r0, nr, be->budget / 2, &s.cand, &s.ncand, mapped, &used);
        }
        if (st == QK_OK) st = select_batch(&s, used ? mapped : ranks + r0, nr, values + r0);
    }
    free(mapped);
    ocl_release_mem(&s.d_tabs);
    ocl_release_mem(&copy);
    free(s.tabs);
    return st;
}
