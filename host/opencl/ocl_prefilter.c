/* The select's sampled first pass (prefilter.cl). A fixed, strided sample of
 * the keys predicts where each target rank lies; a window of a few standard
 * deviations of the sample quantile around it, merged with its neighbours,
 * becomes a key range. One pass over the tensor counts the keys below and
 * above every range and copies the keys inside into a candidate buffer. With
 * the exact counts the host checks that each rank fell inside its range and
 * maps it to a rank among the candidates, which the radix levels then finish.
 * A miss (unlucky sample, too many candidates) leaves *used = 0 and the radix
 * select runs on the whole tensor: the answer is exact either way, and the
 * sample is the same every run, so so is the path taken. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

#define PF_MAX 8                      /* ranges per pass (prefilter.cl) */
#define PF_REC (1 + 2 * PF_MAX)
#define PF_SAMPLES 65536              /* sample size */
#define PF_Z 6.0                      /* window half-width in standard deviations */

typedef struct pf_range {
    uint64_t lo, hi; /* keys, inclusive */
    double weight;   /* sample keys inside */
} pf_range;

static uint64_t key_of(uint64_t bits, int wide, unsigned mode, int *ok)
{
    if (wide) {
        if (mode & QK_OCL_MODE_ABS) bits &= 0x7fffffffffffffffull;
        *ok = !(mode & QK_OCL_MODE_SKIP_NONFINITE) || (bits & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
        return (bits & 0x8000000000000000ull) ? ~bits : bits | 0x8000000000000000ull;
    }
    uint32_t u = (uint32_t)bits;
    if (mode & QK_OCL_MODE_ABS) u &= 0x7fffffffu;
    *ok = !(mode & QK_OCL_MODE_SKIP_NONFINITE) || (u & 0x7f800000u) != 0x7f800000u;
    return (u & 0x80000000u) ? (uint32_t)~u : (u | 0x80000000u);
}

/* LSD radix sort, 16 bits a pass: the sample is small, the sort is cheap. */
static int sort_keys(uint64_t *a, size_t n, int wide)
{
    uint64_t *b = malloc(n * sizeof *b);
    size_t *count = malloc(65537 * sizeof *count);
    if (!b || !count) {
        free(b);
        free(count);
        return -1;
    }
    for (int shift = 0; shift < (wide ? 64 : 32); shift += 16) {
        memset(count, 0, 65537 * sizeof *count);
        for (size_t i = 0; i < n; i++) count[((a[i] >> shift) & 0xffff) + 1]++;
        for (size_t d = 0; d < 65536; d++) count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++) b[count[(a[i] >> shift) & 0xffff]++] = a[i];
        memcpy(a, b, n * sizeof *a);
    }
    free(b);
    free(count);
    return 0;
}

/* Element j of the sample: floor(j * n / count), in 64-bit arithmetic that
 * cannot overflow (j < 2^16, n % count < 2^16). */
static uint64_t sample_index(uint64_t j, uint64_t n, uint64_t count)
{
    return j * (n / count) + j * (n % count) / count;
}

/* Raw bits of the sampled elements: read in place from host memory, or
 * gathered by a kernel from a device buffer. */
static qk_status take_sample(ocl_backend *be, const qk_tensor *x, size_t count, uint64_t *bits)
{
    size_t es = qk_dtype_size(x->dtype);
    if (x->host) {
        for (size_t j = 0; j < count; j++) {
            uint64_t i = sample_index(j, (uint64_t)x->n, count);
            uint32_t u;
            if (es == 8) {
                memcpy(&bits[j], (const char *)x->host + i * 8, 8);
            } else {
                memcpy(&u, (const char *)x->host + i * 4, 4);
                bits[j] = u;
            }
        }
        return QK_OK;
    }
    cl_mem out = NULL;
    cl_mem src = ocl_tensor_mem(x);
    cl_ulong off = (cl_ulong)x->offset / es, n = (cl_ulong)x->n, cnt = count;
    qk_status st = ocl_alloc(be, count * sizeof(uint64_t), CL_MEM_WRITE_ONLY, &out);
    ocl_arg args[] = {OCL_ARG(src), OCL_ARG(off), OCL_ARG(n), OCL_ARG(cnt), OCL_ARG(out)};
    size_t local = ocl_local_size(be);
    if (st == QK_OK) {
        st = ocl_launch(be, es == 8 ? OCL_K_GATHER64 : OCL_K_GATHER32, args, 5, (count + local - 1) / local, local, 0,
                        NULL, NULL);
    }
    if (st == QK_OK) st = ocl_read(be, out, 0, bits, count * sizeof(uint64_t));
    ocl_release_mem(&out);
    return st;
}

/* Key windows for the ranks, merged, at most PF_MAX; 0 when the sample says the
 * prefilter would not pay (too few keys, or candidates over a quarter of them).
 * Window bounds are sample keys PF_Z standard deviations of the sample quantile
 * (plus two positions) either side of the rank's expected sample position. */
static size_t plan_ranges(const uint64_t *keys, size_t s, uint64_t n, const int64_t *ranks, size_t nranks,
                          int wide, pf_range *out, double *frac)
{
    enum { MAXW = 64 };
    double start[MAXW], end[MAXW]; /* sample positions each range covers */
    if (s < 1024) return 0;
    uint64_t kmax = wide ? UINT64_MAX : UINT32_MAX;
    size_t nr = 0;
    double per_key = (double)s / (double)n; /* sample positions per key (n keys estimated) */
    for (size_t r = 0; r < nranks; r++) {
        double sp = (double)ranks[r] * per_key, q = fmin(sp / (double)s, 1.0);
        double w = PF_Z * sqrt((double)s * q * (1.0 - q)) + 2.0;
        double a = fmax(floor(sp - w), 0.0), b = fmin(ceil(sp + w), (double)s);
        uint64_t lo = a <= 0 ? 0 : keys[(size_t)a], hi = b >= (double)s ? kmax : keys[(size_t)b];
        if (nr && lo <= out[nr - 1].hi) { /* overlaps the previous window: extend it */
            if (hi > out[nr - 1].hi) out[nr - 1].hi = hi;
            end[nr - 1] = fmax(end[nr - 1], b);
            continue;
        }
        if (nr == MAXW) return 0;
        out[nr] = (pf_range){lo, hi, 0};
        start[nr] = a;
        end[nr] = b;
        nr++;
    }
    /* too many ranges: merge the two with the fewest sample keys between them */
    while (nr > PF_MAX) {
        size_t best = 0;
        for (size_t j = 1; j + 1 < nr; j++) {
            if (start[j + 1] - end[j] < start[best + 1] - end[best]) best = j;
        }
        out[best].hi = out[best + 1].hi;
        end[best] = end[best + 1];
        memmove(&out[best + 1], &out[best + 2], (nr - best - 2) * sizeof *out);
        memmove(&start[best + 1], &start[best + 2], (nr - best - 2) * sizeof *start);
        memmove(&end[best + 1], &end[best + 2], (nr - best - 2) * sizeof *end);
        nr--;
    }
    double total = 0;
    for (size_t j = 0; j < nr; j++) {
        out[j].weight = end[j] - start[j];
        total += out[j].weight;
    }
    *frac = total / (double)s;
    return *frac <= 0.25 ? nr : 0;
}

typedef struct pf_job {
    int wide;
    cl_uint mode, nr, cap;
    cl_mem bounds, cand, counter, counts;
    size_t max_parts;
    uint64_t *host_counts; /* per span, max_parts records */
    int *parts;
} pf_job;

static qk_status pf_span(ocl_backend *be, ocl_span *sp, void *user)
{
    pf_job *j = user;
    size_t parts = ocl_parts(be, (uint64_t)sp->n);
    cl_ulong off = sp->in_off, n = (cl_ulong)sp->n;
    ocl_arg args[] = {OCL_ARG(sp->in), OCL_ARG(off),   OCL_ARG(n),    OCL_ARG(j->mode),    OCL_ARG(j->nr),
                      OCL_ARG(j->bounds), OCL_ARG(j->cand), OCL_ARG(j->cap), OCL_ARG(j->counter), OCL_ARG(j->counts)};
    cl_event ran = NULL;
    int v = j->nr <= 2 ? 0 : j->nr <= 4 ? 1 : 2; /* the instance with the fewest ranges that fit */
    ocl_kernel_id k = (ocl_kernel_id)((j->wide ? OCL_K_PREFILTER64_2 : OCL_K_PREFILTER32_2) + v);
    qk_status st = ocl_launch(be, k, args, 10, parts,
                              ocl_local_size(be), sp->nwait, sp->wait, &ran);
    if (st != QK_OK) return st;
    j->parts[sp->index] = (int)parts;
    cl_int err = clEnqueueReadBuffer(be->queue, j->counts, CL_FALSE, 0, parts * PF_REC * sizeof(uint64_t),
                                     j->host_counts + (size_t)sp->index * j->max_parts * PF_REC, 1, &ran, &sp->done);
    clReleaseEvent(ran);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueReadBuffer(prefilter counts)");
    return QK_OK;
}

qk_status ocl_prefilter(ocl_backend *be, const qk_tensor *x, unsigned mode, const int64_t *ranks, size_t nranks,
                        uint64_t room, cl_mem *cand, int64_t *ncand, int64_t *mapped, int *used)
{
    *used = 0;
    *cand = NULL;
    *ncand = 0;
    int wide = x->dtype == QK_F64;
    size_t ks = wide ? 8 : 4;
    size_t s = x->n < PF_SAMPLES * 8 ? 0 : PF_SAMPLES;
    if (s == 0) return QK_OK;
    uint64_t *keys = malloc(s * sizeof *keys);
    if (!keys) return qk_set_error(be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory for a sample");
    qk_status st = take_sample(be, x, s, keys);
    size_t valid = 0;
    for (size_t j = 0; st == QK_OK && j < s; j++) {
        int ok;
        uint64_t k = key_of(keys[j], wide, mode, &ok);
        if (ok) keys[valid++] = k;
    }
    pf_range ranges[64];
    size_t nr = 0;
    double frac = 1;
    if (st == QK_OK && valid >= 1024 && sort_keys(keys, valid, wide) == 0) {
        uint64_t nkeys_est = (uint64_t)((double)x->n * (double)valid / (double)s);
        nr = plan_ranges(keys, valid, nkeys_est ? nkeys_est : 1, ranks, nranks, wide, ranges, &frac);
    }
    free(keys);
    /* room for twice the expected candidates (the sample is only a sample) */
    uint64_t want = (uint64_t)(2.0 * frac * (double)x->n) + 65536;
    if (st != QK_OK || nr == 0 || want > UINT32_MAX || want * ks > room) return st;

    pf_job j;
    memset(&j, 0, sizeof j);
    j.wide = wide;
    j.mode = mode;
    j.nr = (cl_uint)nr;
    j.cap = (cl_uint)want;
    int64_t span = ocl_stream_span_length(be, x, NULL);
    size_t nspans = (size_t)((x->n + span - 1) / span);
    j.max_parts = ocl_parts(be, (uint64_t)(span < x->n ? span : x->n));
    j.host_counts = calloc(nspans * j.max_parts * PF_REC, sizeof *j.host_counts);
    j.parts = calloc(nspans, sizeof *j.parts);
    if (!j.host_counts || !j.parts) st = qk_set_error(be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    /* window bounds as the kernel compares them: key ^ sign bit, signed */
    int64_t b64[2 * PF_MAX];
    int32_t b32[2 * PF_MAX];
    for (size_t r = 0; r < nr; r++) {
        uint64_t sign = wide ? 0x8000000000000000ull : 0x80000000u;
        b64[2 * r] = (int64_t)(ranges[r].lo ^ sign);
        b64[2 * r + 1] = (int64_t)(ranges[r].hi ^ sign);
        b32[2 * r] = (int32_t)(uint32_t)(ranges[r].lo ^ sign);
        b32[2 * r + 1] = (int32_t)(uint32_t)(ranges[r].hi ^ sign);
    }
    if (st == QK_OK) st = ocl_alloc(be, 2 * nr * (wide ? 8 : 4), CL_MEM_READ_ONLY, &j.bounds);
    if (st == QK_OK) st = ocl_write(be, j.bounds, 0, wide ? (void *)b64 : (void *)b32, 2 * nr * (wide ? 8 : 4));
    if (st == QK_OK) st = ocl_alloc(be, (size_t)want * ks, CL_MEM_READ_WRITE, &j.cand);
    if (st == QK_OK) st = ocl_alloc(be, sizeof(cl_uint), CL_MEM_READ_WRITE, &j.counter);
    if (st == QK_OK) st = ocl_fill_zero(be, j.counter, sizeof(cl_uint), 0, NULL, NULL);
    if (st == QK_OK) st = ocl_alloc(be, j.max_parts * PF_REC * sizeof(uint64_t), CL_MEM_READ_WRITE, &j.counts);
    if (st == QK_OK) st = ocl_stream(be, x, NULL, pf_span, &j);
    cl_uint got = 0;
    if (st == QK_OK) st = ocl_read(be, j.counter, 0, &got, sizeof got);
    if (st == QK_OK) {
        uint64_t total = 0, below[PF_MAX] = {0}, above[PF_MAX] = {0};
        for (size_t sp = 0; sp < nspans; sp++) {
            for (int p = 0; p < j.parts[sp]; p++) {
                const uint64_t *rec = j.host_counts + (sp * j.max_parts + (size_t)p) * PF_REC;
                total += rec[0];
                for (size_t r = 0; r < nr; r++) {
                    below[r] += rec[1 + r];
                    above[r] += rec[1 + PF_MAX + r];
                }
            }
        }
        if (ranks[nranks - 1] >= (int64_t)total) {
            st = qk_set_error(be->base.ctx, QK_ERR_INVALID_ARG, "opencl: rank %lld of %llu keys",
                              (long long)ranks[nranks - 1], (unsigned long long)total);
        }
        /* every rank inside a range, and every candidate stored? */
        int ok = st == QK_OK && got <= j.cap;
        uint64_t offset = 0, inside_sum = 0;
        size_t r = 0;
        for (size_t q = 0; ok && q < nr; q++) {
            uint64_t inside = total - below[q] - above[q];
            while (r < nranks && (uint64_t)ranks[r] < below[q] + inside) {
                if ((uint64_t)ranks[r] < below[q]) {
                    ok = 0;
                    break;
                }
                mapped[r] = (int64_t)(offset + (uint64_t)ranks[r] - below[q]);
                r++;
            }
            offset += inside;
            inside_sum += inside;
        }
        if (ok && r == nranks && inside_sum == got) {
            *used = 1;
            *cand = j.cand;
            *ncand = (int64_t)got;
            j.cand = NULL;
        }
    }
    ocl_release_mem(&j.bounds);
    ocl_release_mem(&j.cand);
    ocl_release_mem(&j.counter);
    ocl_release_mem(&j.counts);
    free(j.host_counts);
    free(j.parts);
    return st;
}
