/* The model pipeline's engine (model_run.h). */
#define _GNU_SOURCE
#include "model_run.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "big_alloc.h"

#define DEFAULT_LIMIT ((uint64_t)4 << 30)

/* ---- errors ------------------------------------------------------------------------ */

static qk_status vfail(mr_run *r, qk_status st, const char *detail, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&r->lock);
    if (r->status == QK_OK) {
        r->status = st;
        vsnprintf(r->rep->what, sizeof r->rep->what, fmt, ap);
        snprintf(r->rep->detail, sizeof r->rep->detail, "%s", detail ? detail : "");
    }
    r->stop = 1;
    pthread_mutex_unlock(&r->lock);
    return st;
}

qk_status mr_fail(mr_run *r, qk_status st, const char *detail, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(r, st, detail, fmt, ap);
    va_end(ap);
    return st;
}

qk_status mr_lib_fail(mr_run *r, qk_context *ctx, qk_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&r->lock);
    int first = r->status == QK_OK;
    pthread_mutex_unlock(&r->lock);
    if (first && st == QK_ERR_NONFINITE) {
        int64_t count = 0, idx = -1;
        if (qk_context_nonfinite(ctx, &count, &idx) == QK_OK)
            r->rep->nonfinite_count = count;
    }
    vfail(r, st, qk_context_message(ctx), fmt, ap);
    va_end(ap);
    return st;
}

qk_status mr_nonfinite_fail(mr_run *r, int64_t count, const char *detail, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&r->lock);
    int first = r->status == QK_OK;
    pthread_mutex_unlock(&r->lock);
    if (first)
        r->rep->nonfinite_count = count;
    vfail(r, QK_ERR_NONFINITE, detail, fmt, ap);
    va_end(ap);
    return QK_ERR_NONFINITE;
}

qk_status mr_report_tensors(mr_run *r)
{
    qk_model_report *rep = r->rep;
    rep->tensors = calloc(r->n_items ? r->n_items : 1, sizeof *rep->tensors);
    if (!rep->tensors)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "reporting on %s", r->input);
    rep->n_tensors = r->n_items;
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[it->src];
        qk_model_tensor_report *x = &rep->tensors[i];
        x->name = strdup(t->name);
        if (!x->name)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "reporting on %s", r->input);
        snprintf(x->st_dtype, sizeof x->st_dtype, "%s", t->st_dtype);
        x->ndim = t->ndim;
        memcpy(x->shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
        x->converted = it->kind != MR_COPY;
        x->reason = it->reason;
        x->entry = i;
        x->ggml_type = -1;
    }
    return QK_OK;
}

/* ---- setting up -------------------------------------------------------------------- */

static uint64_t ram_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

qk_status mr_begin(mr_run *r, const char *input, const char *output, const qk_model_options *o,
                   qk_model_report *rep, int quantize)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->input = input;
    r->output = output;
    r->o = o;
    r->rep = rep;
    r->quantize = quantize;
    if (!rep)
        return QK_ERR_INVALID_ARG;
    memset(rep, 0, sizeof *rep);
    if (!input || !output || !o)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "qk_model_%s: NULL %s", quantize ? "quantize" : "dequantize",
                       !input ? "input" : !output ? "output" : "options");
    if (o->jobs < 0 || o->jobs > 256)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "jobs %d is outside 1..256", o->jobs);
    r->jobs = o->jobs ? o->jobs : 1;
    uint64_t ram = ram_bytes();
    r->limit = o->memory_limit;
    if (r->limit == 0) {
        r->limit = DEFAULT_LIMIT;
        if (ram && r->limit > ram / 2)
            r->limit = ram / 2;
    }
    r->budget = r->limit / (uint64_t)r->jobs;
    rep->memory_limit = r->limit;
    rep->jobs = r->jobs;
    char err[512] = "";
    qk_status st = mi_open(&r->in, input, err, sizeof err);
    if (st != QK_OK)
        return mr_fail(r, st, err, "reading %s", input);
    rep->shards_in = r->in.n_shards;
    rep->bytes_in = mi_bytes(&r->in);
    return QK_OK;
}

void mr_end(mr_run *r)
{
    for (size_t i = 0; r->items && i < r->n_items; i++) {
        free(r->items[i].pct.v);
        free(r->items[i].pct.count);
    }
    mo_close(&r->out);
    mi_close(&r->in);
    pthread_mutex_destroy(&r->lock);
}

/* ---- pieces ------------------------------------------------------------------------- */

/* Blocks are runs of consecutive elements: per group, per tensor, or per
 * channel along an axis with only size-1 dimensions before it. */
static int contiguous(const qk_layout *l)
{
    if (l->granularity != QK_PER_CHANNEL)
        return 1;
    int axis = l->axis < 0 ? l->axis + l->ndim : l->axis;
    for (int d = 0; d < axis; d++)
        if (l->shape[d] != 1)
            return 0;
    return 1;
}

qk_status mr_pieces(mr_run *r, mr_item *it, const qk_layout *layout, int64_t blocks, int64_t n, double per_elem,
                    double per_block, int pack)
{
    it->seg = blocks > 0 ? n / blocks : n;
    double block_cost = (double)it->seg * per_elem + per_block;
    int64_t pb = blocks;
    if (contiguous(layout) && blocks > 1) {
        double fit = (double)r->budget / block_cost;
        pb = fit < 1.0 ? 1 : fit >= (double)blocks ? blocks : (int64_t)fit;
        /* packed codes: every piece but the last holds an even number of elements */
        if (pack && pb < blocks && (it->seg % 2) && (pb % 2))
            pb = pb > 1 ? pb - 1 : 2 < blocks ? 2 : blocks;
    }
    it->piece_blocks = pb > 0 ? pb : 1;
    double need = (double)it->piece_blocks * block_cost;
    if (need > (double)r->budget) {
        char shape[160];
        size_t used = (size_t)snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < layout->ndim && used < sizeof shape; d++)
            used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%" PRId64, d ? ", " : "", layout->shape[d]);
        if (used < sizeof shape)
            snprintf(shape + used, sizeof shape - used, "]");
        char detail[256];
        snprintf(detail, sizeof detail,
                 "raise the memory limit, or use per-channel (axis 0) or per-group scales, whose blocks can be "
                 "computed a few at a time");
        return mr_fail(r, QK_ERR_NO_MEMORY, detail,
                       "tensor '%s' %s: its %s computed at once need about %.0f MiB, over the %.0f MiB each job may use "
                       "(memory limit %.0f MiB / %d job%s)",
                       r->in.t[it->src].name, shape, it->piece_blocks > 1 ? "blocks are" : "block is",
                       need / 1048576.0, (double)r->budget / 1048576.0, (double)r->limit / 1048576.0, r->jobs,
                       r->jobs == 1 ? "" : "s");
    }
    return QK_OK;
}

qk_status mr_row_pieces(mr_run *r, mr_item *it, double per_elem)
{
    double row_cost = (double)it->row * per_elem;
    double fit = row_cost > 0 ? (double)r->budget / row_cost : (double)it->rows;
    it->piece_blocks = fit >= (double)it->rows ? it->rows : fit < 1.0 ? 1 : (int64_t)fit;
    if (it->piece_blocks < 1)
        it->piece_blocks = 1;
    it->seg = it->row;
    if (row_cost > (double)r->budget)
        return mr_fail(r, QK_ERR_NO_MEMORY, "raise the memory limit",
                       "tensor '%s': one row of %" PRId64 " elements needs about %.0f MiB, over the %.0f MiB each job "
                       "may use (memory limit %.0f MiB / %d job%s)",
                       r->in.t[it->src].name, it->row, row_cost / 1048576.0, (double)r->budget / 1048576.0,
                       (double)r->limit / 1048576.0, r->jobs, r->jobs == 1 ? "" : "s");
    return QK_OK;
}

int mr_is_gguf(const char *path)
{
    size_t n = path ? strlen(path) : 0;
    return n >= 5 && strcmp(path + n - 5, ".gguf") == 0;
}

void mr_piece_layout(const mr_item *it, const qk_layout *whole, int64_t b0, int64_t m, qk_layout *out)
{
    (void)b0;
    int64_t blocks = 0;
    qk_layout_blocks(whole, &blocks);
    if (m == blocks) {
        *out = *whole;
        return;
    }
    memset(out, 0, sizeof *out);
    out->granularity = whole->granularity;
    if (whole->granularity == QK_PER_GROUP) {
        out->ndim = 1;
        out->shape[0] = m * it->seg;
        out->group_size = whole->group_size;
    } else { /* per channel along a leading axis */
        out->ndim = 2;
        out->shape[0] = m;
        out->shape[1] = it->seg;
        out->axis = 0;
    }
}

/* ---- output shards ------------------------------------------------------------------ */

qk_status mr_assign_shards(mr_run *r, const uint64_t *item_bytes)
{
    char err[512] = "";
    uint64_t max = r->o->max_shard_size;
    int dir_mode = !r->gguf_out && (r->in.sharded || max > 0);
    size_t n_shards = 1;
    char **names = NULL;
    if (r->gguf_out) { /* one file, whatever the input's shards */
        for (size_t i = 0; i < r->n_items; i++)
            r->items[i].out_shard = 0;
    } else if (max > 0) {
        uint64_t cur = 0;
        size_t k = 0;
        for (size_t i = 0; i < r->n_items; i++) {
            if (cur > 0 && cur + item_bytes[i] > max) {
                k++;
                cur = 0;
            }
            cur += item_bytes[i];
            r->items[i].out_shard = k;
        }
        n_shards = k + 1;
        names = calloc(n_shards, sizeof *names);
        for (size_t s = 0; names && s < n_shards; s++) {
            names[s] = malloc(64);
            if (names[s])
                snprintf(names[s], 64, "model-%05zu-of-%05zu.safetensors", s + 1, n_shards);
        }
    } else if (dir_mode) {
        n_shards = r->in.n_shards;
        for (size_t i = 0; i < r->n_items; i++)
            r->items[i].out_shard = r->in.t[r->items[i].src].shard;
        names = calloc(n_shards, sizeof *names);
        for (size_t s = 0; names && s < n_shards; s++)
            names[s] = strdup(r->in.shards[s].base);
    }
    int oom = dir_mode && !names;
    for (size_t s = 0; !oom && dir_mode && s < n_shards; s++)
        oom = names[s] == NULL;
    qk_status st = oom ? QK_ERR_NO_MEMORY : mo_init(&r->out, r->output, dir_mode, n_shards, names, err, sizeof err);
    for (size_t s = 0; names && s < n_shards; s++)
        free(names[s]);
    free(names);
    if (st != QK_OK)
        return mr_fail(r, st, oom ? "out of memory" : err, "preparing %s", r->output);
    if (r->gguf_out)
        r->out.fmt = &mo_gguf;
    r->rep->shards_out = n_shards;
    return QK_OK;
}

/* ---- workers ------------------------------------------------------------------------ */

void *mr_scratch(mr_worker *w, int k, size_t bytes)
{
    if (bytes == 0)
        bytes = 1;
    if (w->cap[k] < bytes) {
        qk_big_free(w->buf[k], w->cap[k]);
        w->buf[k] = qk_big_alloc(bytes);
        w->cap[k] = w->buf[k] ? bytes : 0;
    }
    return w->buf[k];
}

static int report_progress(mr_run *r)
{
    /* called with r->lock held */
    if (r->o->progress && !r->stop && r->o->progress(r->o->progress_user, &r->prog) != 0) {
        r->stop = 1;
        if (r->status == QK_OK) {
            r->status = QK_ERR_CANCELLED;
            snprintf(r->rep->what, sizeof r->rep->what, "%s %s", r->quantize ? "quantizing" : "dequantizing",
                     r->input);
            snprintf(r->rep->detail, sizeof r->rep->detail, "cancelled: nothing written");
        }
    }
    return r->stop;
}

int mr_piece_done(mr_worker *w, uint64_t bytes)
{
    mr_run *r = w->r;
    pthread_mutex_lock(&r->lock);
    r->prog.bytes_done += bytes;
    int stop = report_progress(r);
    pthread_mutex_unlock(&r->lock);
    return stop;
}

typedef qk_status (*run_fn)(mr_worker *w, mr_item *it, unsigned emit);

typedef struct worker_arg {
    mr_worker *w;
    run_fn fn;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg *a = arg;
    mr_run *r = a->w->r;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        size_t i = r->next;
        int stop = r->stop || i >= r->n_items;
        if (!stop)
            r->next++;
        pthread_mutex_unlock(&r->lock);
        if (stop)
            break;
        if (a->fn(a->w, &r->items[i], MR_EMIT_ALL) != QK_OK)
            break;
        pthread_mutex_lock(&r->lock);
        r->prog.tensors_done++;
        report_progress(r);
        pthread_mutex_unlock(&r->lock);
    }
    return NULL;
}

/* An output that cannot seek is written in file order, one output tensor at a
 * time: an item with several outputs (a quantized tensor's codes, scales and
 * zero points) is computed once per output it still owes. */
static void run_in_file_order(mr_run *r, mr_worker *w, run_fn fn)
{
    size_t left = r->n_items;
    for (size_t k = 0; k < r->out.n_shards && !r->stop; k++) {
        const mo_shard *s = &r->out.shards[k];
        for (size_t j = 0; j < s->n && !r->stop; j++) {
            const mo_tensor *t = &r->out.t[s->order[j]];
            mr_item *it = &r->items[t->item];
            unsigned emit = 0;
            for (unsigned q = 0; q < 3; q++)
                if (it->out[q] == s->order[j])
                    emit = MR_EMIT(q);
            if (fn(w, it, emit) != QK_OK)
                return;
            /* an item is done with its last output: codes, or its only one */
            if (it->kind != MR_QUANT || emit == MR_EMIT(0)) {
                pthread_mutex_lock(&r->lock);
                r->prog.tensors_done++;
                left--;
                report_progress(r);
                pthread_mutex_unlock(&r->lock);
            }
        }
    }
    (void)left;
}

static uint64_t vm_hwm(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %" SCNu64 " kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

qk_status mr_execute(mr_run *r, run_fn fn)
{
    char err[512] = "";
    r->w = calloc((size_t)r->jobs, sizeof *r->w);
    if (!r->w)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "starting %d jobs", r->jobs);
    qk_status st = QK_OK;
    for (int j = 0; j < r->jobs && st == QK_OK; j++) {
        r->w[j].r = r;
        qk_backend_kind kind = r->o->n_backends ? r->o->backends[(size_t)j % r->o->n_backends] : QK_BACKEND_AUTO;
        char msg[512] = "";
        st = qk_context_create(kind, &r->w[j].ctx, msg, sizeof msg);
        if (st != QK_OK) {
            r->w[j].ctx = NULL;
            mr_fail(r, st, msg, "cannot use backend %s", qk_backend_name(kind));
        }
    }
    if (st == QK_OK) {
        r->rep->backend = qk_context_backend(r->w[0].ctx);
        st = mo_open(&r->out, err, sizeof err);
        if (st != QK_OK)
            mr_fail(r, st, err, "cannot write %s", r->output);
    }
    if (st == QK_OK) {
        r->prog.tensors_total = r->n_items;
        pthread_mutex_lock(&r->lock);
        report_progress(r);
        pthread_mutex_unlock(&r->lock);
        worker_arg *args = calloc((size_t)r->jobs, sizeof *args);
        if (!args) {
            mr_fail(r, QK_ERR_NO_MEMORY, "", "starting %d jobs", r->jobs);
        } else if (!mo_seekable(&r->out)) {
            run_in_file_order(r, &r->w[0], fn);
        } else if (r->jobs == 1) {
            args[0] = (worker_arg){&r->w[0], fn};
            worker_main(&args[0]);
        } else {
            int started = 0;
            for (int j = 0; j < r->jobs; j++) {
                args[j] = (worker_arg){&r->w[j], fn};
                if (pthread_create(&r->w[j].thread, NULL, worker_main, &args[j]) != 0) {
                    mr_fail(r, QK_ERR_NO_MEMORY, "", "starting job %d of %d", j + 1, r->jobs);
                    break;
                }
                started++;
            }
            for (int j = 0; j < started; j++)
                pthread_join(r->w[j].thread, NULL);
        }
        free(args);
        st = r->status;
    }
    if (st == QK_OK) {
        st = mo_commit(&r->out, &r->in, err, sizeof err);
        if (st != QK_OK)
            mr_fail(r, st, err, "writing %s", r->output);
        r->rep->bytes_out = r->out.bytes_out;
        r->rep->files_copied = r->out.files_copied;
    }
    for (int j = 0; j < r->jobs; j++) {
        for (int k = 0; k < 4; k++)
            qk_big_free(r->w[j].buf[k], r->w[j].cap[k]);
        if (r->w[j].ctx)
            qk_context_destroy(r->w[j].ctx);
    }
    free(r->w);
    r->w = NULL;
    r->rep->peak_rss = vm_hwm();
    return r->status;
}

/* ---- report helpers ----------------------------------------------------------------- */

void mr_pct_add(mr_pct *p, double v, int64_t count)
{
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->v[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    p->total += count;
    if (lo < p->n && p->v[lo] == v) {
        p->count[lo] += count;
        return;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        double *nv = realloc(p->v, cap * sizeof *nv);
        if (nv)
            p->v = nv;
        int64_t *nc = nv ? realloc(p->count, cap * sizeof *nc) : NULL;
        if (nc)
            p->count = nc;
        if (!nv || !nc)
            return; /* the report's percentile summary is the only loss */
        p->cap = cap;
    }
    memmove(p->v + lo + 1, p->v + lo, (p->n - lo) * sizeof *p->v);
    memmove(p->count + lo + 1, p->count + lo, (p->n - lo) * sizeof *p->count);
    p->v[lo] = v;
    p->count[lo] = count;
    p->n++;
}

static double kth(const mr_pct *p, int64_t k)
{
    for (size_t i = 0; i < p->n; i++) {
        if (k < p->count[i])
            return p->v[i];
        k -= p->count[i];
    }
    return p->n ? p->v[p->n - 1] : 0.0;
}

/* min, median (numpy's: the mean of the middle two for an even count), max. */
void mr_pct_stats(const mr_pct *p, double *min, double *median, double *max)
{
    int64_t n = p->total;
    *min = kth(p, 0);
    *max = kth(p, n - 1);
    if (n % 2)
        *median = kth(p, n / 2);
    else {
        double a = kth(p, n / 2 - 1), b = kth(p, n / 2);
        *median = a + (b - a) / 2.0;
    }
}

qk_status mr_copy_item(mr_worker *w, mr_item *it, int count_bytes)
{
    mr_run *r = w->r;
    const mi_tensor *t = &r->in.t[it->src];
    size_t chunk = r->budget > ((uint64_t)8 << 20) ? (size_t)8 << 20 : (size_t)r->budget;
    if (chunk < 4096)
        chunk = 4096;
    void *buf = mr_scratch(w, 0, chunk);
    if (!buf)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "copying tensor '%s'", t->name);
    char err[512] = "";
    for (uint64_t off = 0; off < t->nbytes;) {
        size_t len = t->nbytes - off < chunk ? (size_t)(t->nbytes - off) : chunk;
        mi_willneed(&r->in, t, off + len, len);
        qk_status st = mi_read(&r->in, t, off, buf, len, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "reading tensor '%s' of %s", t->name, r->input);
        st = mo_write(&r->out, it->out[0], off, buf, len, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "writing %s", r->output);
        off += len;
        if (mr_piece_done(w, count_bytes ? len : 0))
            return QK_ERR_CANCELLED;
    }
    return QK_OK;
}
