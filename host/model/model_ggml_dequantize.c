/* qk_model_dequantize of a GGUF input: every tensor in a ggml block type
 * (Q4_0, Q4_K ...) is restored with qk_ggml_dequantize (ggml's
 * dequantize_row_*) as float32, then rounded (to nearest, ties to even) to
 * float16 or bfloat16 when asked; every other tensor is copied byte for byte.
 * Into GGUF every key and value is copied byte for byte, general.file_type
 * set to the restored type's (0, 1 or 32); into safetensors the string-valued
 * keys become its metadata (other values have no place there). A float16
 * overflow is counted over the whole tensor, then fails the run. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model_convert.h"
#include "model_meta.h"
#include "model_run.h"

#define BACKEND_BYTES 8.0

static int out_ggml(qk_dtype d)
{
    return d == QK_F16 ? QK_GGML_F16 : d == QK_BF16 ? QK_GGML_BF16 : QK_GGML_F32;
}

static qk_status plan_items(mr_run *r)
{
    r->n_items = r->in.n;
    r->items = calloc(r->n_items ? r->n_items : 1, sizeof *r->items);
    if (!r->items)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "reading %s", r->input);
    for (size_t i = 0; i < r->n_items; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[i];
        const qk_ggml_type_traits *tt = qk_ggml_type_get((uint32_t)t->ggml_type);
        it->src = i;
        it->kind = MR_COPY;
        it->ggml = t->ggml_type;
        if (!tt || tt->blck_size == 1)
            continue;
        if (qk_ggml_type_info((qk_ggml_type)t->ggml_type, NULL, NULL, NULL) != QK_OK)
            return mr_fail(r, QK_ERR_UNSUPPORTED, "qkern restores F32/F16/BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and "
                           "Q2_K .. Q6_K", "tensor '%s' is in ggml type %s", t->name, tt->name);
        it->kind = MR_DEQ;
        it->row = t->ndim ? t->shape[t->ndim - 1] : 1;
        it->rows = it->row ? t->n / it->row : 0;
        double per_elem = (double)tt->type_size / (double)tt->blck_size + 4.0 + 2.0 + BACKEND_BYTES;
        qk_status st = mr_row_pieces(r, it, per_elem);
        if (st != QK_OK)
            return st;
    }
    return QK_OK;
}

static qk_status plan_output(mr_run *r, int any)
{
    qk_dtype od = r->o->out_dtype;
    const char *st_out = od == QK_F16 ? "F16" : od == QK_BF16 ? "BF16" : "F32";
    uint64_t *bytes = calloc(r->n_items ? r->n_items : 1, sizeof *bytes);
    if (!bytes)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    for (size_t i = 0; i < r->n_items; i++)
        bytes[i] = r->items[i].kind == MR_COPY ? r->in.t[i].nbytes
                                               : (uint64_t)r->in.t[i].n * (od == QK_F32 ? 4u : 2u);
    qk_status st = mr_assign_shards(r, bytes);
    free(bytes);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[i];
        size_t k = it->out_shard;
        if (r->gguf_out)
            it->out[0] = mo_add_ggml(&r->out, k, t->name, it->kind == MR_DEQ ? out_ggml(od) : t->ggml_type, t->ndim,
                                     t->shape, it->kind == MR_DEQ ? MO_DEQ : MO_COPY, i);
        else
            it->out[0] = mo_add(&r->out, k, t->name, it->kind == MR_DEQ ? st_out : t->st_dtype, t->ndim, t->shape,
                                it->kind == MR_DEQ ? MO_DEQ : MO_COPY, i);
        if (it->out[0] == (size_t)-1)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    }
    mr_meta m;
    if ((st = mr_meta_gather(r, &m)) != QK_OK)
        return st;
    if (r->gguf_out && any)
        mr_meta_set_u32(&m, "general.file_type", od == QK_F16 ? 1 : od == QK_BF16 ? 32 : 0);
    for (size_t k = 0; st == QK_OK && k < r->out.n_shards; k++)
        st = mr_meta_plan(r, &m, k);
    mr_meta_free(&m);
    return st;
}

static qk_status deq_item(mr_worker *w, mr_item *it, unsigned emit)
{
    (void)emit;
    mr_run *r = w->r;
    if (it->kind == MR_COPY)
        return mr_copy_item(w, it, 0);
    const mi_tensor *t = &r->in.t[it->src];
    qk_ggml_type type = (qk_ggml_type)it->ggml;
    qk_dtype od = r->o->out_dtype;
    size_t row_bytes = 0, es_out = od == QK_F32 ? 4 : 2;
    qk_ggml_size(type, it->row, &row_bytes);
    char err[512] = "";
    it->overflow = 0;
    for (int64_t r0 = 0; r0 < it->rows; r0 += it->piece_blocks) {
        if (r->stop)
            return QK_ERR_CANCELLED;
        int64_t m = it->rows - r0 < it->piece_blocks ? it->rows - r0 : it->piece_blocks;
        int64_t elems = m * it->row;
        size_t in_bytes = (size_t)m * row_bytes;
        void *q = mr_scratch(w, 0, in_bytes);
        float *x = q ? mr_scratch(w, 1, (size_t)elems * 4) : NULL;
        uint16_t *h = x && od != QK_F32 ? mr_scratch(w, 2, (size_t)elems * 2) : NULL;
        if (!x || (od != QK_F32 && !h))
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "allocating tensor '%s'", t->name);
        uint64_t off = (uint64_t)r0 * row_bytes;
        mi_willneed(&r->in, t, off + in_bytes, in_bytes);
        qk_status st = mi_read(&r->in, t, off, q, in_bytes, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "reading tensor '%s' of %s", t->name, r->input);
        qk_tensor qt = qk_tensor_host(QK_U8, q, (int64_t)in_bytes), xt = qk_tensor_host(QK_F32, x, elems);
        if ((st = qk_ggml_dequantize(w->ctx, &qt, type, &xt)) != QK_OK)
            return mr_lib_fail(r, w->ctx, st, "dequantizing tensor '%s' of %s", t->name, r->input);
        const void *out = x;
        if (od != QK_F32) {
            for (int64_t i = 0; i < elems; i++) {
                h[i] = od == QK_F16 ? model_float_to_half(x[i]) : model_float_to_bf16(x[i]);
                /* a finite value rounded to an infinity: beyond the type's range */
                it->overflow += isfinite(x[i]) && (h[i] & 0x7fffu) == (od == QK_F16 ? 0x7c00u : 0x7f80u);
            }
            out = h;
        }
        if (!it->overflow &&
            (st = mo_write(&r->out, it->out[0], (uint64_t)r0 * (uint64_t)it->row * es_out, out, (size_t)elems * es_out,
                           err, sizeof err)) != QK_OK)
            return mr_fail(r, st, err, "writing %s", r->output);
        if (mr_piece_done(w, in_bytes))
            return QK_ERR_CANCELLED;
    }
    if (it->overflow)
        return mr_fail(r, QK_ERR_INVALID_ARG, "choose --dtype f32 or bf16, whose range holds them",
                       "tensor '%s': %" PRId64 " value%s beyond the range of %s (largest finite %s)", t->name,
                       it->overflow, it->overflow == 1 ? " is" : "s are", od == QK_F16 ? "float16" : "bfloat16",
                       od == QK_F16 ? "65504" : "3.39e38");
    return QK_OK;
}

static qk_status fill_report(mr_run *r)
{
    qk_model_report *rep = r->rep;
    qk_dtype od = r->o->out_dtype;
    qk_status st = mr_report_tensors(r);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[it->src];
        qk_model_tensor_report *x = &rep->tensors[i];
        x->ggml_type = t->ggml_type;
        if (!x->converted)
            continue;
        snprintf(x->st_dtype, sizeof x->st_dtype, "%s", od == QK_F16 ? "F16" : od == QK_BF16 ? "BF16" : "F32");
        const qk_ggml_type_traits *tt = qk_ggml_type_get((uint32_t)t->ggml_type);
        x->granularity = QK_PER_GROUP;
        x->group_size = tt->blck_size;
        x->blocks = t->n / tt->blck_size;
        x->elements = t->n;
    }
    return QK_OK;
}

qk_status mg_dequantize(mr_run *r)
{
    qk_dtype od = r->o->out_dtype;
    if (od != QK_F32 && od != QK_F16 && od != QK_BF16)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "out_dtype %d: GGUF tensors are restored as F32, F16 or BF16",
                       (int)od);
    r->gguf_out = mr_is_gguf(r->output);
    if (r->gguf_out && r->o->max_shard_size)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "sharded GGUF output is not supported");
    qk_status st = plan_items(r);
    int any = 0;
    for (size_t i = 0; st == QK_OK && i < r->n_items; i++)
        any |= r->items[i].kind == MR_DEQ;
    if (st == QK_OK)
        st = plan_output(r, any);
    if (st == QK_OK) {
        for (size_t i = 0; i < r->n_items; i++)
            if (r->items[i].kind == MR_DEQ)
                r->prog.bytes_total += r->in.t[i].nbytes;
        st = mr_execute(r, deq_item);
    }
    if (st == QK_OK)
        st = fill_report(r);
    return st;
}
