/* Shared pieces of the model commands (see model_io.h). */
#include "model_io.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "cli.h"
#include "report.h"

int model_out_add(model_out *o, const char *name, const char *st_dtype, int ndim, const int64_t *shape,
                  const void *data)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        model_out_tensor *t = realloc(o->t, cap * sizeof *t);
        if (!t)
            return -1;
        o->t = t;
        o->cap = cap;
    }
    qk_dtype dt;
    int bits = 8;
    if (qk_st_dtype_parse(st_dtype, &dt, &bits) != QK_OK)
        bits = 8;
    o->t[o->n] = (model_out_tensor){name, st_dtype, ndim, shape, data, bits, o->n};
    o->n++;
    return 0;
}

void model_out_free(model_out *o)
{
    free(o->t);
    memset(o, 0, sizeof *o);
}

/* Wider elements first; sub-byte types (F4, F6_*) last, as their tensors may
 * end at odd bytes. */
static int by_width(const void *a, const void *b)
{
    const model_out_tensor *x = a, *y = b;
    if (x->elem_bits != y->elem_bits)
        return x->elem_bits > y->elem_bits ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

int model_write(const char *path, model_out *o, const char *const *meta_keys, const char *const *meta_values,
                size_t n_meta, uint64_t *bytes_out)
{
    if (o->n > 1)
        qsort(o->t, o->n, sizeof *o->t, by_width);

    /* Signals and SIGXFSZ are the CLI's (interrupt.c): an interrupt cancels
     * the writer's temporary, a file-size limit is a write error. */
    char err[512] = "";
    qk_st_writer *w = NULL;
    qk_status st = qk_st_writer_begin(path, &w, err, sizeof err);
    for (size_t i = 0; st == QK_OK && i < o->n; i++) {
        const model_out_tensor *t = &o->t[i];
        st = qk_st_writer_add_raw(w, t->name, t->st_dtype, t->ndim, t->shape, t->data, err, sizeof err);
    }
    for (size_t i = 0; st == QK_OK && i < n_meta; i++)
        st = qk_st_writer_set_metadata(w, meta_keys[i], meta_values[i], err, sizeof err);
    if (st == QK_OK) {
        st = qk_st_writer_commit(w, err, sizeof err); /* frees w either way */
        w = NULL;
    }
    qk_st_writer_abort(w);

    if (st != QK_OK)
        return cli_status_error(st, err, "writing %s", path);
    *bytes_out = model_file_size(path);
    return 0;
}

void model_format_shape(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

uint64_t model_file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}
