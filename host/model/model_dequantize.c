/* qk_model_dequantize: restore the float tensors of a model written by
 * qk_model_quantize (a GGUF input: model_ggml_dequantize.c) from each shard's
 * "qkern" metadata, piece by piece: x = (q - zero_point) * scale in float32
 * per the contract, then widened to float64 or rounded (to nearest, ties to
 * even) to float16/bfloat16. The scale and zero-point tensors are dropped;
 * every other tensor and metadata entry is copied byte for byte, except the
 * "qkern" entry itself. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_convert.h"
#include "model_format.h"
#include "model_run.h"
#include "safetensors.h"

#define BACKEND_BYTES 8.0

typedef struct dq_shard {
    qm_entry *entries;
    size_t n;
} dq_shard;

/* Read and check every shard's entries; mark each tensor's role. */
static qk_status plan_items(mr_run *r, dq_shard *ds, unsigned char *role, size_t **entry_of)
{
    char err[512] = "";
    size_t total = 0;
    for (size_t k = 0; k < r->in.n_shards; k++) {
        const mi_shard *s = &r->in.shards[k];
        const char *name = r->in.sharded ? s->path : r->input;
        const char *meta = r->in.fmt->meta_get(s->file, QM_METADATA_KEY);
        if (!meta)
            return mr_fail(r, QK_ERR_FORMAT, "it was not written by qkern quantize-model",
                           "%s has no \"%s\" metadata entry", name, QM_METADATA_KEY);
        qk_status st = qm_format_parse(meta, &ds[k].entries, &ds[k].n, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "reading the \"%s\" metadata of %s", QM_METADATA_KEY, name);
        total += ds[k].n;
    }
    *entry_of = calloc(r->in.n + 1, sizeof **entry_of);
    if (!*entry_of)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "reading %s", r->input);
    r->items = calloc(r->in.n + 1, sizeof *r->items);
    if (!r->items)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "reading %s", r->input);
    /* entries in order over all shards: entry g is restored from the codes at role index */
    size_t g = 0;
    for (size_t k = 0; k < r->in.n_shards; k++) {
        const char *name = r->in.sharded ? r->in.shards[k].path : r->input;
        for (size_t i = 0; i < ds[k].n; i++, g++) {
            const qm_entry *e = &ds[k].entries[i];
            const qk_st_tensor *c, *sc, *z;
            qk_status st = qm_entry_check(r->in.shards[k].file, e, &c, &sc, &z, err, sizeof err);
            if (st != QK_OK)
                return mr_fail(r, st, err, "reading the \"%s\" metadata of %s", QM_METADATA_KEY, name);
            size_t ci, si, zi;
            mi_find(&r->in, c->name, &ci);
            mi_find(&r->in, sc->name, &si);
            mi_find(&r->in, z->name, &zi);
            role[ci] = 1;
            role[si] = role[zi] = 2;
            (*entry_of)[ci] = g;
            mr_item *it = &r->items[ci]; /* placed by codes index for now, compacted below */
            it->kind = MR_DEQ;
            it->de = e;
            it->scale_src = si;
            it->zero_src = zi;
            it->entry = g;
        }
    }
    /* Restored tensors take their codes' place in the file order. */
    size_t n = 0;
    for (size_t i = 0; i < r->in.n; i++) {
        if (role[i] == 2)
            continue;
        mr_item it = r->items[i];
        if (role[i] == 0) {
            memset(&it, 0, sizeof it);
            it.kind = MR_COPY;
        }
        it.src = i;
        r->items[n++] = it;
    }
    r->n_items = n;
    for (size_t i = 0; i < n; i++) {
        mr_item *it = &r->items[i];
        if (it->kind != MR_DEQ)
            continue;
        const qm_entry *e = it->de;
        qk_layout layout;
        qm_entry_layout(e, &layout);
        double code_in = e->packed ? 0.5 : (double)qk_dtype_size(e->codes_dtype);
        double per_elem = code_in + (e->packed ? 1.0 : 0.0) + (e->dtype == QK_F64 ? 8.0 : 4.0) +
                          (e->dtype == QK_F16 || e->dtype == QK_BF16 ? 2.0 : 0.0) + BACKEND_BYTES;
        /* per block: its stored scale and zero point, its parameters, and the library's
         * own per-block work (about 4x, as for quantize) */
        qk_status st = mr_pieces(r, it, &layout, e->blocks, e->n, per_elem, 8.0 + 4.0 * (double)sizeof(qk_qparams), e->packed);
        if (st != QK_OK)
            return st;
    }
    return QK_OK;
}

static qk_status plan_output(mr_run *r, const dq_shard *ds)
{
    uint64_t *bytes = calloc(r->n_items ? r->n_items : 1, sizeof *bytes);
    if (!bytes)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        bytes[i] = it->kind == MR_COPY ? r->in.t[it->src].nbytes
                                       : (uint64_t)it->de->n * qk_dtype_size(it->de->dtype);
    }
    qk_status st = mr_assign_shards(r, bytes);
    free(bytes);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[it->src];
        it->out[0] = it->kind == MR_COPY
                         ? mo_add(&r->out, it->out_shard, t->name, t->st_dtype, t->ndim, t->shape, MO_COPY, i)
                         : mo_add(&r->out, it->out_shard, it->de->name, qk_st_dtype_string(it->de->dtype), it->de->ndim,
                                  it->de->shape, MO_DEQ, i);
        if (it->out[0] == (size_t)-1)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    }
    (void)ds;
    for (size_t k = 0; k < r->out.n_shards; k++) {
        size_t first = (size_t)-1;
        for (size_t i = 0; i < r->n_items && first == (size_t)-1; i++)
            if (r->items[i].out_shard == k)
                first = i;
        const mi_shard *src = &r->in.shards[first == (size_t)-1 ? 0 : r->in.t[r->items[first].src].shard];
        size_t n_meta = r->in.fmt->meta_count(src->file), m = 0;
        const char **keys = calloc(n_meta + 1, sizeof *keys), **values = calloc(n_meta + 1, sizeof *values);
        char err[512] = "";
        st = keys && values ? QK_OK : QK_ERR_NO_MEMORY;
        for (size_t i = 0; st == QK_OK && i < n_meta; i++) {
            const char *key, *value;
            r->in.fmt->meta_at(src->file, i, &key, &value);
            if (strcmp(key, QM_METADATA_KEY) != 0) {
                keys[m] = key;
                values[m++] = value;
            }
        }
        if (st == QK_OK)
            st = mo_plan(&r->out, k, keys, values, m, err, sizeof err);
        free(keys);
        free(values);
        if (st != QK_OK)
            return mr_fail(r, st, err, "preparing %s", r->output);
    }
    return QK_OK;
}

static qk_status deq_item(mr_worker *w, mr_item *it, unsigned emit)
{
    (void)emit;
    mr_run *r = w->r;
    if (it->kind == MR_COPY)
        return mr_copy_item(w, it, 0);
    const qm_entry *e = it->de;
    const mi_tensor *ct = &r->in.t[it->src], *st_scale = &r->in.t[it->scale_src], *st_zero = &r->in.t[it->zero_src];
    size_t es_codes = qk_dtype_size(e->codes_dtype), es_out = qk_dtype_size(e->dtype);
    qk_layout whole;
    qm_entry_layout(e, &whole);
    char err[512] = "";
    for (int64_t b0 = 0; b0 < e->blocks; b0 += it->piece_blocks) {
        if (r->stop)
            return QK_ERR_CANCELLED;
        int64_t m = e->blocks - b0 < it->piece_blocks ? e->blocks - b0 : it->piece_blocks;
        int64_t first = b0 * it->seg, elems = m * it->seg;
        size_t code_bytes = e->packed ? ((size_t)elems + 1) / 2 : (size_t)elems * es_codes;
        uint64_t code_off = e->packed ? (uint64_t)first / 2 : (uint64_t)first * es_codes;
        void *raw = mr_scratch(w, 0, code_bytes);
        void *codes = raw && e->packed ? mr_scratch(w, 1, (size_t)elems) : raw;
        void *f32 = codes ? mr_scratch(w, 2, (size_t)elems * (e->dtype == QK_F64 ? 8 : 4) +
                                                   (e->dtype == QK_F16 || e->dtype == QK_BF16 ? (size_t)elems * 2 : 0))
                          : NULL;
        void *pbuf = f32 ? mr_scratch(w, 3, (size_t)m * (8 + sizeof(qk_qparams))) : NULL;
        if (!pbuf)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "allocating tensor '%s'", e->name);
        float *scales = pbuf;
        int32_t *zeros = (int32_t *)(scales + m);
        qk_qparams *params = (qk_qparams *)((char *)pbuf + (size_t)m * 8);
        qk_status st = mi_read(&r->in, st_scale, (uint64_t)b0 * 4, scales, (size_t)m * 4, err, sizeof err);
        if (st == QK_OK)
            st = mi_read(&r->in, st_zero, (uint64_t)b0 * 4, zeros, (size_t)m * 4, err, sizeof err);
        if (st == QK_OK) {
            mi_willneed(&r->in, ct, code_off + code_bytes, code_bytes);
            st = mi_read(&r->in, ct, code_off, raw, code_bytes, err, sizeof err);
        }
        if (st != QK_OK)
            return mr_fail(r, st, err, "reading tensor '%s' of %s", e->name, r->input);
        /* Every stored scale finite and > 0, every symmetric zero point 0. */
        for (int64_t b = 0; b < m; b++)
            if (!(scales[b] > 0.0f) || !isfinite(scales[b]) || (e->scheme == QK_SYMMETRIC && zeros[b] != 0)) {
                snprintf(err, sizeof err,
                         "tensor '%.200s': block %" PRId64 " has scale %g and zero point %" PRId32
                         " (the scale must be finite and > 0%s)",
                         e->name, b0 + b, (double)scales[b], zeros[b], e->scheme == QK_SYMMETRIC ? ", the zero point 0" : "");
                return mr_fail(r, QK_ERR_FORMAT, err, "reading %s", r->input);
            }
        for (int64_t b = 0; b < m; b++) {
            st = qk_qparams_from_scale(w->ctx, e->scheme, e->bits, e->narrow_range, scales[b], zeros[b], &params[b]);
            if (st != QK_OK)
                return mr_lib_fail(r, w->ctx, st, "block %" PRId64 " of tensor '%s' of %s", b0 + b, e->name, r->input);
        }
        qk_tensor cq = qk_tensor_host(e->codes_dtype, codes, elems);
        if (e->packed && (st = qk_unpack_int4(w->ctx, raw, &cq)) != QK_OK)
            return mr_lib_fail(r, w->ctx, st, "unpacking tensor '%s' of %s", e->name, r->input);
        qk_layout lay;
        mr_piece_layout(it, &whole, b0, m, &lay);
        qk_tensor xt = qk_tensor_host(QK_F32, f32, elems);
        if ((st = qk_dequantize_blocks(w->ctx, &cq, &lay, params, m, &xt)) != QK_OK)
            return mr_lib_fail(r, w->ctx, st, "dequantizing tensor '%s' of %s", e->name, r->input);
        const float *v = f32;
        void *out = f32;
        if (e->dtype == QK_F64) {
            double *d = f32;
            for (int64_t i = elems; i-- > 0;) /* d[i] overwrites v[2i], v[2i+1]: already read */
                d[i] = (double)v[i];
        } else if (e->dtype == QK_F16 || e->dtype == QK_BF16) {
            uint16_t *h = (uint16_t *)((float *)f32 + elems);
            for (int64_t i = 0; i < elems; i++)
                h[i] = e->dtype == QK_F16 ? model_float_to_half(v[i]) : model_float_to_bf16(v[i]);
            out = h;
        }
        if ((st = mo_write(&r->out, it->out[0], (uint64_t)first * es_out, out, (size_t)elems * es_out, err,
                           sizeof err)) != QK_OK)
            return mr_fail(r, st, err, "writing %s", r->output);
        if (mr_piece_done(w, code_bytes))
            return QK_ERR_CANCELLED;
    }
    return QK_OK;
}

static qk_status fill_report(mr_run *r)
{
    qk_model_report *rep = r->rep;
    qk_status st = mr_report_tensors(r);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        qk_model_tensor_report *x = &rep->tensors[i];
        x->entry = it->kind == MR_DEQ ? it->entry : (size_t)-1;
        if (!x->converted)
            continue; /* as the input holds it */
        const qm_entry *e = it->de;
        snprintf(x->st_dtype, sizeof x->st_dtype, "%s", qk_st_dtype_string(e->dtype));
        x->ndim = e->ndim;
        memcpy(x->shape, e->shape, (size_t)e->ndim * sizeof *e->shape);
        x->granularity = e->granularity;
        x->axis = e->axis;
        x->group_size = e->group_size;
        x->blocks = e->blocks;
        x->bits = e->bits;
        x->scheme = e->scheme;
        x->packed = e->packed;
        x->codes_dtype = e->codes_dtype;
        x->elements = e->n;
    }
    return QK_OK;
}

QK_API qk_status qk_model_dequantize(const char *input, const char *output, const qk_model_options *opts,
                                     qk_model_report *report)
{
    mr_run r;
    qk_status st = mr_begin(&r, input, output, opts, report, 0);
    dq_shard *ds = NULL;
    unsigned char *role = NULL;
    size_t *entry_of = NULL;
    if (st == QK_OK && r.in.fmt == &mi_gguf) {
        st = mg_dequantize(&r);
        mr_end(&r);
        free(r.items);
        return st;
    }
    if (st == QK_OK && mr_is_gguf(output))
        st = mr_fail(&r, QK_ERR_INVALID_ARG, "a GGUF output needs a GGUF input",
                     "%s is a qkern-quantized safetensors model; it is restored to safetensors, not %s", input, output);
    if (st == QK_OK) {
        ds = calloc(r.in.n_shards ? r.in.n_shards : 1, sizeof *ds);
        role = calloc(r.in.n + 1, 1);
        if (!ds || !role)
            st = mr_fail(&r, QK_ERR_NO_MEMORY, "", "reading %s", input);
    }
    if (st == QK_OK)
        st = plan_items(&r, ds, role, &entry_of);
    if (st == QK_OK)
        st = plan_output(&r, ds);
    if (st == QK_OK) {
        for (size_t i = 0; i < r.n_items; i++)
            if (r.items[i].kind == MR_DEQ)
                r.prog.bytes_total += r.in.t[r.items[i].src].nbytes;
        st = mr_execute(&r, deq_item);
    }
    if (st == QK_OK)
        st = fill_report(&r);
    size_t n_shards = r.in.n_shards;
    mr_end(&r);
    free(r.items);
    for (size_t k = 0; ds && k < n_shards; k++)
        qm_entries_free(ds[k].entries, ds[k].n);
    free(ds);
    free(role);
    free(entry_of);
    return st;
}
