/* qk_model_quantize: plan every tensor of a model, then quantize the selected
 * ones piece by piece, each piece's codes, scales and zero points written at
 * their planned place (the format: docs/model-format.md). With opts->ggml the
 * selection made here goes to model_ggml_quantize.c, which writes GGUF. */
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "model_convert.h"
#include "model_format.h"
#include "model_run.h"

#define BACKEND_BYTES 8.0 /* per element: what a backend may hold beside the caller's buffers (device copy, keys) */

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

typedef struct patterns {
    regex_t *re;
    size_t n;
} patterns;

static qk_status compile(mr_run *r, patterns *p, const char *const *src, size_t n, const char *what)
{
    p->re = calloc(n ? n : 1, sizeof *p->re);
    if (!p->re)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "compiling %s patterns", what);
    for (; p->n < n; p->n++) {
        int rc = src[p->n] ? regcomp(&p->re[p->n], src[p->n], REG_EXTENDED | REG_NOSUB) : REG_BADPAT;
        if (rc != 0) {
            char why[256] = "NULL pattern";
            if (src[p->n])
                regerror(rc, &p->re[p->n], why, sizeof why);
            return mr_fail(r, QK_ERR_INVALID_ARG, why, "invalid %s pattern '%s'", what, src[p->n] ? src[p->n] : "");
        }
    }
    return QK_OK;
}

static void free_patterns(patterns *p)
{
    for (size_t i = 0; i < p->n; i++)
        regfree(&p->re[i]);
    free(p->re);
}

static int matches(const patterns *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (regexec(&p->re[i], name, 0, NULL, 0) == 0)
            return 1;
    return 0;
}

/* Every --include pattern must match some tensor of the input: a pattern that
 * matches nothing is a typo, and quantizing without it would silently ignore it. */
static qk_status check_includes(mr_run *r, const patterns *inc, const char *const *src)
{
    for (size_t p = 0; p < inc->n; p++) {
        size_t matched = 0;
        for (size_t i = 0; i < r->in.n && !matched; i++)
            matched = regexec(&inc->re[p], r->in.t[i].name, 0, NULL, 0) == 0;
        if (!matched)
            return mr_fail(r, QK_ERR_INVALID_ARG, "", "--include /%s/ matches no tensor of the input (%zu tensors)",
                           src[p], r->in.n);
    }
    return QK_OK;
}

/* Decide every tensor's fate and layout; every failure here is before any work. */
static qk_status plan_items(mr_run *r, const patterns *inc, const patterns *exc)
{
    const qk_model_options *o = r->o;
    r->n_items = r->in.n;
    r->items = calloc(r->n_items ? r->n_items : 1, sizeof *r->items);
    if (!r->items)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "planning %s", r->input);
    qk_qparams kind;
    memset(&kind, 0, sizeof kind);
    kind.bits = o->calib.bits;
    kind.scheme = o->calib.scheme;
    qk_dtype codes_dtype = QK_U8;
    if (qk_code_dtype(&kind, &codes_dtype) != QK_OK)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "%d-bit %s codes", o->calib.bits,
                       o->calib.scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric");
    for (size_t i = 0; i < r->n_items; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[i];
        it->kind = MR_COPY;
        it->src = i;
        if (!qk_dtype_is_float(t->dtype)) {
            it->reason = "not a float tensor";
            continue;
        }
        int sel = t->ndim >= 2;
        it->reason = "fewer than 2 dimensions";
        if (matches(inc, t->name))
            sel = 1;
        if (sel && matches(exc, t->name)) {
            sel = 0;
            it->reason = "excluded by --exclude";
        }
        if (sel && t->n == 0) {
            sel = 0;
            it->reason = "empty";
        }
        if (!sel)
            continue;
        it->kind = MR_QUANT;
        it->reason = NULL;
        qm_entry *e = &it->e;
        e->name = (char *)t->name;
        e->dtype = t->dtype;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
        e->n = t->n;
        e->scheme = o->calib.scheme;
        e->bits = o->calib.bits;
        e->narrow_range = o->calib.narrow_range;
        e->packed = o->pack4;
        e->calib = r->calib_text;
        e->codes_dtype = codes_dtype;
        e->granularity = o->granularity;
        if (o->granularity == QK_PER_CHANNEL && t->ndim < 2) {
            e->granularity = QK_PER_TENSOR; /* a scale per element would store more than it saves */
        } else if (o->granularity == QK_PER_CHANNEL) {
            int axis = o->axis < 0 ? o->axis + t->ndim : o->axis;
            if (axis < 0 || axis >= t->ndim)
                return mr_fail(r, QK_ERR_INVALID_ARG, "", "tensor '%s' (%d-D) has no axis %d for --granularity channel:%d",
                               t->name, t->ndim, o->axis, o->axis);
            e->axis = axis;
        } else if (o->granularity == QK_PER_GROUP) {
            int64_t last = t->ndim ? t->shape[t->ndim - 1] : 0;
            if (t->ndim == 0 || o->group_size <= 0 || last % o->group_size != 0) {
                char shape[160];
                size_t used = (size_t)snprintf(shape, sizeof shape, "[");
                for (int d = 0; d < t->ndim && used < sizeof shape; d++)
                    used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%" PRId64, d ? ", " : "", t->shape[d]);
                if (used < sizeof shape)
                    snprintf(shape + used, sizeof shape - used, "]");
                return mr_fail(r, QK_ERR_INVALID_ARG, "exclude it with --exclude or choose a G that divides it",
                               "tensor '%s' %s: group size %" PRId64 " does not divide its last dimension", t->name,
                               shape, o->group_size);
            }
            e->group_size = o->group_size;
        }
        qk_layout layout;
        qm_entry_layout(e, &layout);
        if (qk_layout_blocks(&layout, &e->blocks) != QK_OK)
            return mr_fail(r, QK_ERR_INVALID_ARG, "", "tensor '%s': invalid block layout", t->name);
        qm_granularity_describe(e->granularity, e->axis, e->group_size, it->gran, sizeof it->gran);
        e->scale_name = concat(t->name, QM_SCALE_SUFFIX);
        e->zero_name = concat(t->name, QM_ZERO_SUFFIX);
        if (!e->scale_name || !e->zero_name)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "planning %s", r->input);
        const char *clash = mi_find(&r->in, e->scale_name, NULL) ? e->scale_name
                            : mi_find(&r->in, e->zero_name, NULL) ? e->zero_name : NULL;
        if (clash)
            return mr_fail(r, QK_ERR_INVALID_ARG, "exclude it with --exclude",
                           "cannot quantize tensor '%s': the file already has a tensor '%s'", t->name, clash);
        double es_in = (double)qk_dtype_size(t->dtype), es_codes = (double)qk_dtype_size(codes_dtype);
        /* per block: its result (parameters, chosen row) and the library's own per-block
         * work, about 4x that as measured with 32-element groups */
        double per_block = 4.0 * (double)(sizeof(qk_qparams) + sizeof(qk_candidate)) + 8.0;
        qk_status st = mr_pieces(r, it, &layout, e->blocks, t->n, es_in + es_codes + (e->packed ? 0.5 : 0.0) + BACKEND_BYTES,
                                 per_block, e->packed);
        if (st != QK_OK)
            return st;
        it->packed_shape[0] = (t->n + 1) / 2;
        it->blocks_shape[0] = e->blocks;
    }
    return QK_OK;
}

/* Output tensors in the order the in-memory writer had them (each input
 * tensor, or its codes, scales, zero points), then the metadata per shard. */
static qk_status plan_output(mr_run *r)
{
    uint64_t *bytes = calloc(r->n_items ? r->n_items : 1, sizeof *bytes);
    if (!bytes)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "planning %s", r->output);
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[it->src];
        bytes[i] = it->kind == MR_COPY ? t->nbytes
                   : (it->e.packed ? (uint64_t)it->packed_shape[0] : (uint64_t)t->n * qk_dtype_size(it->e.codes_dtype)) +
                         8 * (uint64_t)it->e.blocks;
    }
    qk_status st = mr_assign_shards(r, bytes);
    free(bytes);
    if (st != QK_OK)
        return st;
    int oom = 0;
    for (size_t i = 0; i < r->n_items && !oom; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[it->src];
        size_t k = it->out_shard;
        if (it->kind == MR_COPY) {
            it->out[0] = mo_add(&r->out, k, t->name, t->st_dtype, t->ndim, t->shape, MO_COPY, i);
            oom = it->out[0] == (size_t)-1;
            continue;
        }
        it->out[0] = it->e.packed ? mo_add(&r->out, k, t->name, "U8", 1, it->packed_shape, MO_CODES, i)
                                  : mo_add(&r->out, k, t->name, qk_st_dtype_string(it->e.codes_dtype), t->ndim,
                                           t->shape, MO_CODES, i);
        it->out[1] = mo_add(&r->out, k, it->e.scale_name, "F32", 1, it->blocks_shape, MO_SCALE, i);
        it->out[2] = mo_add(&r->out, k, it->e.zero_name, "I32", 1, it->blocks_shape, MO_ZERO, i);
        oom = it->out[0] == (size_t)-1 || it->out[1] == (size_t)-1 || it->out[2] == (size_t)-1;
    }
    if (oom)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    for (size_t k = 0; k < r->out.n_shards; k++) {
        /* the metadata of the input shard of the shard's first tensor, then "qkern" */
        size_t first = (size_t)-1, n_entries = 0;
        for (size_t i = 0; i < r->n_items; i++)
            if (r->items[i].out_shard == k) {
                if (first == (size_t)-1)
                    first = i;
                n_entries += r->items[i].kind == MR_QUANT;
            }
        const mi_shard *src = &r->in.shards[first == (size_t)-1 ? 0 : r->in.t[r->items[first].src].shard];
        size_t n_meta = r->in.fmt->meta_count(src->file);
        const char **keys = calloc(n_meta + 1, sizeof *keys), **values = calloc(n_meta + 1, sizeof *values);
        qm_entry *entries = calloc(n_entries ? n_entries : 1, sizeof *entries);
        char *meta = NULL;
        if (keys && values && entries) {
            for (size_t i = 0; i < n_meta; i++)
                r->in.fmt->meta_at(src->file, i, &keys[i], &values[i]);
            size_t e = 0;
            for (size_t i = 0; i < r->n_items; i++)
                if (r->items[i].out_shard == k && r->items[i].kind == MR_QUANT)
                    entries[e++] = r->items[i].e;
            const char *objective = r->o->calib.objective == QK_OBJECTIVE_MSE_INLIERS ? "mse-inliers" : "mse";
            meta = qm_format_build(entries, n_entries, objective);
            keys[n_meta] = QM_METADATA_KEY;
            values[n_meta] = meta;
        }
        char err[512] = "";
        st = meta ? mo_plan(&r->out, k, keys, values, n_meta + 1, err, sizeof err) : QK_ERR_NO_MEMORY;
        free(meta);
        free(keys);
        free(values);
        free(entries);
        if (st != QK_OK)
            return mr_fail(r, st, meta ? err : "", "preparing %s", r->output);
    }
    return QK_OK;
}

/* ---- the work ------------------------------------------------------------------------ */

static qk_status quant_item(mr_worker *w, mr_item *it, unsigned emit)
{
    mr_run *r = w->r;
    if (it->kind == MR_COPY)
        return mr_copy_item(w, it, 1);
    const mi_tensor *t = &r->in.t[it->src];
    const qm_entry *e = &it->e;
    size_t es_in = qk_dtype_size(t->dtype), es_codes = qk_dtype_size(e->codes_dtype);
    int report = (emit & MR_EMIT(0)) != 0; /* statistics once, in the pass that writes the codes */
    qk_layout whole;
    qm_entry_layout(e, &whole);
    char err[512] = "";
    if (report) {
        it->sumsq = 0.0;
        it->sse = 0.0;
        it->clipped = it->counted = it->pieces = 0;
    }
    for (int64_t b0 = 0; b0 < e->blocks; b0 += it->piece_blocks) {
        if (r->stop)
            return QK_ERR_CANCELLED;
        int64_t m = e->blocks - b0 < it->piece_blocks ? e->blocks - b0 : it->piece_blocks;
        int64_t first = b0 * it->seg, elems = m * it->seg;
        size_t in_bytes = (size_t)elems * es_in;
        void *in = mr_scratch(w, 0, in_bytes);
        void *codes = in ? mr_scratch(w, 1, (size_t)elems * es_codes) : NULL;
        void *packed = codes && e->packed ? mr_scratch(w, 2, ((size_t)elems + 1) / 2) : codes;
        void *sz = packed ? mr_scratch(w, 3, (size_t)m * 8) : NULL;
        if (!sz)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "allocating %zu bytes of codes for tensor '%s'",
                           (size_t)elems * es_codes, t->name);
        mi_willneed(&r->in, t, (uint64_t)(first + elems) * es_in, in_bytes);
        qk_status st = mi_read(&r->in, t, (uint64_t)first * es_in, in, in_bytes, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "reading tensor '%s' of %s", t->name, r->input);
        if (report)
            it->sumsq = model_sum_squares(it->sumsq, t->dtype, in, elems);
        qk_layout lay;
        mr_piece_layout(it, &whole, b0, m, &lay);
        qk_tensor x = qk_tensor_host(t->dtype, in, elems), ct = qk_tensor_host(e->codes_dtype, codes, elems);
        qk_block_calib_result res;
        memset(&res, 0, sizeof res);
        st = qk_calibrate_quantize_blocks(w->ctx, &x, &lay, &r->o->calib, &res, &ct);
        if (st != QK_OK) {
            qk_block_calib_result_release(&res);
            return mr_lib_fail(r, w->ctx, st, "calibrating and quantizing tensor '%s' of %s", t->name, r->input);
        }
        if (e->packed && (st = qk_pack_int4(w->ctx, &ct, packed)) != QK_OK) {
            qk_block_calib_result_release(&res);
            return mr_lib_fail(r, w->ctx, st, "packing the codes of tensor '%s' of %s", t->name, r->input);
        }
        float *scales = sz;
        int32_t *zeros = (int32_t *)(scales + m);
        for (int64_t b = 0; b < m; b++) {
            scales[b] = res.params[b].scale;
            zeros[b] = res.params[b].zero_point;
            if (report) {
                it->clipped += res.chosen[b].clipped;
                mr_pct_add(&it->pct, res.chosen[b].percentile, 1);
            }
        }
        if (report) {
            it->mse = res.mse; /* one piece: exactly the library's figure */
            it->sse += res.mse * (double)res.n;
            it->counted += res.n;
            it->pieces++;
        }
        qk_block_calib_result_release(&res);
        if (emit & MR_EMIT(0))
            st = e->packed ? mo_write(&r->out, it->out[0], (uint64_t)first / 2, packed, ((size_t)elems + 1) / 2, err,
                                      sizeof err)
                           : mo_write(&r->out, it->out[0], (uint64_t)first * es_codes, codes, (size_t)elems * es_codes,
                                      err, sizeof err);
        if (st == QK_OK && (emit & MR_EMIT(1)))
            st = mo_write(&r->out, it->out[1], (uint64_t)b0 * 4, scales, (size_t)m * 4, err, sizeof err);
        if (st == QK_OK && (emit & MR_EMIT(2)))
            st = mo_write(&r->out, it->out[2], (uint64_t)b0 * 4, zeros, (size_t)m * 4, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "writing %s", r->output);
        if (mr_piece_done(w, report ? in_bytes : 0))
            return QK_ERR_CANCELLED;
    }
    if (report && it->pieces > 1)
        it->mse = it->counted ? it->sse / (double)it->counted : 0.0;
    else if (report)
        it->sse = it->mse * (double)it->counted;
    return QK_OK;
}

/* ---- the report ----------------------------------------------------------------------- */

static qk_status fill_report(mr_run *r)
{
    qk_model_report *rep = r->rep;
    qk_status st = mr_report_tensors(r);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        qk_model_tensor_report *x = &rep->tensors[i];
        if (!x->converted)
            continue;
        x->granularity = it->e.granularity;
        x->axis = it->e.axis;
        x->group_size = it->e.group_size;
        x->blocks = it->e.blocks;
        x->bits = it->e.bits;
        x->scheme = it->e.scheme;
        x->packed = it->e.packed;
        x->codes_dtype = it->e.codes_dtype;
        mr_pct_stats(&it->pct, &x->p_min, &x->p_median, &x->p_max);
        x->mse = it->mse;
        x->sse = it->sse;
        x->sum_squares = it->sumsq;
        x->clipped = it->clipped;
        x->elements = it->counted;
    }
    return QK_OK;
}

/* GGUF output iff a ggml type; a GGUF input only into GGUF (its block types
 * have no place in qkern's safetensors format). */
static qk_status check_formats(mr_run *r)
{
    const qk_model_options *o = r->o;
    if (o->ggml && strcmp(r->output, "-") != 0 && !mr_is_gguf(r->output)) /* "-": stdout */
        return mr_fail(r, QK_ERR_INVALID_ARG, "a ggml type is written as GGUF", "output %s does not end in .gguf",
                       r->output);
    if (o->ggml && o->max_shard_size)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "sharded GGUF output is not supported (max_shard_size %" PRIu64 ")",
                       o->max_shard_size);
    if (!o->ggml && mr_is_gguf(r->output))
        return mr_fail(r, QK_ERR_INVALID_ARG, "choose a ggml type (--type) to write GGUF",
                       "output %s is GGUF, which holds ggml's block types, not qkern's integer codes", r->output);
    if (!o->ggml && r->in.fmt == &mi_gguf)
        return mr_fail(r, QK_ERR_INVALID_ARG, "choose a ggml type (--type) and a .gguf output",
                       "input %s is GGUF: qkern's integer codes are written from safetensors models only", r->input);
    return QK_OK;
}

/* The general selection (dimensions, --include, --exclude, empty) for a GGUF run. */
static qk_status ggml_run(mr_run *r, const patterns *inc, const patterns *exc)
{
    const char **reasons = calloc(r->in.n ? r->in.n : 1, sizeof *reasons);
    if (!reasons)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "planning %s", r->input);
    for (size_t i = 0; i < r->in.n; i++) {
        const mi_tensor *t = &r->in.t[i];
        const char *why = t->ndim >= 2 || matches(inc, t->name) ? NULL : "fewer than 2 dimensions";
        if (!why && matches(exc, t->name))
            why = "excluded by --exclude";
        if (!why && t->n == 0)
            why = "empty";
        reasons[i] = why;
    }
    qk_status st = mg_quantize(r, reasons);
    free(reasons);
    return st;
}

QK_API qk_status qk_model_quantize(const char *input, const char *output, const qk_model_options *opts,
                                   qk_model_report *report)
{
    mr_run r;
    qk_status st = mr_begin(&r, input, output, opts, report, 1);
    patterns inc = {0}, exc = {0};
    if (st == QK_OK)
        st = check_formats(&r);
    if (st == QK_OK && opts->pack4 && opts->calib.bits > 4)
        st = mr_fail(&r, QK_ERR_INVALID_ARG, "", "4-bit packing needs 4 bits or fewer (got %d)", opts->calib.bits);
    if (st == QK_OK) {
        qm_calib_describe(&opts->calib, r.calib_text, sizeof r.calib_text);
        for (size_t k = 0; k < r.in.n_shards && st == QK_OK; k++)
            if (r.in.fmt->meta_get(r.in.shards[k].file, QM_METADATA_KEY))
                st = mr_fail(&r, QK_ERR_INVALID_ARG, "run qkern dequantize-model on it first",
                             "%s already holds qkern-quantized tensors (metadata \"%s\")",
                             r.in.sharded ? r.in.shards[k].path : input, QM_METADATA_KEY);
    }
    if (st == QK_OK)
        st = compile(&r, &inc, opts->include, opts->n_include, "--include");
    if (st == QK_OK)
        st = check_includes(&r, &inc, opts->include);
    if (st == QK_OK)
        st = compile(&r, &exc, opts->exclude, opts->n_exclude, "--exclude");
    if (st == QK_OK && opts->ggml) {
        st = ggml_run(&r, &inc, &exc);
        free_patterns(&inc);
        free_patterns(&exc);
        mr_end(&r);
        free(r.items);
        return st;
    }
    if (st == QK_OK)
        st = plan_items(&r, &inc, &exc);
    if (st == QK_OK)
        st = plan_output(&r);
    if (st == QK_OK) {
        for (size_t i = 0; i < r.n_items; i++)
            r.prog.bytes_total += r.in.t[r.items[i].src].nbytes;
        st = mr_execute(&r, quant_item);
    }
    if (st == QK_OK)
        st = fill_report(&r);
    free_patterns(&inc);
    free_patterns(&exc);
    for (size_t i = 0; r.items && i < r.n_items; i++) {
        free(r.items[i].e.scale_name);
        free(r.items[i].e.zero_name);
    }
    mr_end(&r);
    free(r.items);
    return st;
}
