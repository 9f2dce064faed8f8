/* qk_model_quantize into GGUF (o->ggml): every selected float tensor whose
 * row length is a multiple of the type's block size becomes that ggml type
 * (qk_ggml_quantize, rows of blocks as ggml_quantize_chunk writes them); the
 * rest keep their type, byte for byte. A GGUF input keeps every key and value
 * byte for byte, general.file_type and general.quantization_version set as
 * llama-quantize sets them; a safetensors input's metadata become string keys.
 * The report's error is measured by dequantizing each piece back on the same
 * context (qk_ggml_dequantize) against the input values. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "internal.h"
#include "model_convert.h"
#include "model_meta.h"
#include "model_run.h"

#define BACKEND_BYTES 8.0

/* llama.cpp's LLAMA_FTYPE for a file of that type (the K-quants: their _M mixes,
 * which llama-quantize names Q3_K, Q4_K, Q5_K by default). */
static uint32_t file_type(qk_ggml_type t)
{
    switch (t) {
    case QK_GGML_F32: return 0;
    case QK_GGML_F16: return 1;
    case QK_GGML_Q4_0: return 2;
    case QK_GGML_Q4_1: return 3;
    case QK_GGML_Q8_0: return 7;
    case QK_GGML_Q5_0: return 8;
    case QK_GGML_Q5_1: return 9;
    case QK_GGML_Q2_K: return 10;
    case QK_GGML_Q3_K: return 12;
    case QK_GGML_Q4_K: return 15;
    case QK_GGML_Q5_K: return 17;
    case QK_GGML_Q6_K: return 18;
    case QK_GGML_BF16: return 32;
    }
    return 0;
}

static qk_status plan_items(mr_run *r, const char *const *reasons, int64_t blck, size_t out_bytes_per_block)
{
    r->n_items = r->in.n;
    r->items = calloc(r->n_items ? r->n_items : 1, sizeof *r->items);
    if (!r->items)
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "planning %s", r->input);
    for (size_t i = 0; i < r->n_items; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[i];
        it->kind = MR_COPY;
        it->src = i;
        it->ggml = t->ggml_type;
        if (!qk_dtype_is_float(t->dtype)) {
            const qk_ggml_type_traits *tt = t->ggml_type >= 0 ? qk_ggml_type_get((uint32_t)t->ggml_type) : NULL;
            it->reason = tt && tt->blck_size > 1 ? "already in a ggml block type" : "not a float tensor";
            continue;
        }
        if ((it->reason = reasons[i]) != NULL)
            continue;
        int64_t row = t->ndim ? t->shape[t->ndim - 1] : 1;
        if (row % blck != 0) {
            it->reason = "row length not a multiple of the block size";
            continue;
        }
        it->kind = MR_QUANT;
        it->ggml = (int)r->o->ggml_type;
        it->row = row;
        it->rows = t->n / row;
        /* per element: the input, its float32 copy, the blocks, the float32 read back,
         * and what a backend holds beside the caller's buffers */
        double per_elem = (double)qk_dtype_size(t->dtype) + 4.0 + (double)out_bytes_per_block / (double)blck + 4.0 +
                          BACKEND_BYTES;
        qk_status st = mr_row_pieces(r, it, per_elem);
        if (st != QK_OK)
            return st;
    }
    return QK_OK;
}

/* Metadata: a GGUF input's keys in order (typed, by encoding), or the union
 * of a safetensors input's string metadata over its shards (first wins); then,
 * when some tensor got the type, general.file_type and (a block type)
 * general.quantization_version, which replace the input's values in place. */
static qk_status plan_output(mr_run *r, int any, int block_type)
{
    qk_status st = mr_assign_shards(r, NULL);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[i];
        it->out[0] = it->ggml >= 0 ? mo_add_ggml(&r->out, 0, t->name, it->ggml, t->ndim, t->shape,
                                                 it->kind == MR_QUANT ? MO_CODES : MO_COPY, i)
                                   : mo_add(&r->out, 0, t->name, t->st_dtype, t->ndim, t->shape, MO_COPY, i);
        if (it->out[0] == (size_t)-1)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    }
    mr_meta m;
    if ((st = mr_meta_gather(r, &m)) != QK_OK)
        return st;
    if (any) /* a file where nothing got the type keeps the input's file_type */
        mr_meta_set_u32(&m, "general.file_type", file_type(r->o->ggml_type));
    if (any && block_type)
        mr_meta_set_u32(&m, "general.quantization_version", 2);
    st = mr_meta_plan(r, &m, 0);
    mr_meta_free(&m);
    return st;
}

/* The report's sums of squares (input, and error of the restored values) in
 * ERR_LANES interleaved partial sums (element i into lane i % ERR_LANES, lanes
 * added in order at the end): independent chains the compiler can vectorise,
 * where one running sum was half the run time of a Q8_0 model. Pieces start
 * at whole rows (multiples of 32 elements), so the lanes and the result do not
 * depend on how the tensor was cut. */
enum { ERR_LANES = 8 };
typedef struct err_acc {
    double sumsq[ERR_LANES], sse[ERR_LANES];
} err_acc;

static void add_error(err_acc *a, const float *x, const double *x64, const float *back, int64_t n)
{
    int64_t i = 0;
    if (x64) {
        for (; i + ERR_LANES <= n; i += ERR_LANES)
            for (int j = 0; j < ERR_LANES; j++) {
                double v = x64[i + j], d = (double)back[i + j] - v;
                a->sumsq[j] += v * v;
                a->sse[j] += d * d;
            }
    } else {
        for (; i + ERR_LANES <= n; i += ERR_LANES)
            for (int j = 0; j < ERR_LANES; j++) {
                double v = (double)x[i + j], d = (double)back[i + j] - v;
                a->sumsq[j] += v * v;
                a->sse[j] += d * d;
            }
    }
    for (; i < n; i++) { /* not reached for block types (n is whole blocks); kept for safety */
        double v = x64 ? x64[i] : (double)x[i], d = (double)back[i] - v;
        a->sumsq[i % ERR_LANES] += v * v;
        a->sse[i % ERR_LANES] += d * d;
    }
}

static qk_status quant_item(mr_worker *w, mr_item *it, unsigned emit)
{
    (void)emit; /* one output per item */
    mr_run *r = w->r;
    if (it->kind == MR_COPY)
        return mr_copy_item(w, it, 1);
    const mi_tensor *t = &r->in.t[it->src];
    qk_ggml_type type = (qk_ggml_type)it->ggml;
    size_t es_in = qk_dtype_size(t->dtype), row_bytes = 0;
    qk_ggml_size(type, it->row, &row_bytes);
    char err[512] = "";
    err_acc acc;
    memset(&acc, 0, sizeof acc);
    it->counted = 0;
    for (int64_t r0 = 0; r0 < it->rows; r0 += it->piece_blocks) {
        if (r->stop)
            return QK_ERR_CANCELLED;
        int64_t m = it->rows - r0 < it->piece_blocks ? it->rows - r0 : it->piece_blocks;
        int64_t elems = m * it->row;
        size_t in_bytes = (size_t)elems * es_in, out_bytes = (size_t)m * row_bytes;
        void *in = mr_scratch(w, 0, in_bytes);
        float *x = in ? (t->dtype == QK_F32 ? in : mr_scratch(w, 1, (size_t)elems * 4)) : NULL;
        void *q = x ? mr_scratch(w, 2, out_bytes) : NULL;
        float *back = q ? mr_scratch(w, 3, (size_t)elems * 4) : NULL;
        if (!back)
            return mr_fail(r, QK_ERR_NO_MEMORY, "", "allocating %zu bytes for tensor '%s'", in_bytes, t->name);
        uint64_t off = (uint64_t)r0 * (uint64_t)it->row * es_in;
        mi_willneed(&r->in, t, off + in_bytes, in_bytes);
        qk_status st = mi_read(&r->in, t, off, in, in_bytes, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "reading tensor '%s' of %s", t->name, r->input);
        model_to_f32(t->dtype, in, elems, x);
        qk_tensor xt = qk_tensor_host(QK_F32, x, elems), qt = qk_tensor_host(QK_U8, q, (int64_t)out_bytes),
                  bt = qk_tensor_host(QK_F32, back, elems);
        if ((st = qk_ggml_quantize(w->ctx, &xt, type, &qt)) == QK_ERR_NONFINITE) {
            /* The context counts within this piece: name the element of the whole tensor. */
            int64_t count = 0, idx = -1;
            qk_context_nonfinite(w->ctx, &count, &idx);
            char detail[160];
            snprintf(detail, sizeof detail,
                     "%" PRId64 " NaN/Inf value%s in rows %" PRId64 "..%" PRId64 ", the first at element %" PRId64,
                     count, count == 1 ? "" : "s", r0, r0 + m - 1, r0 * it->row + idx);
            return mr_nonfinite_fail(r, count, detail, "quantizing tensor '%s' of %s", t->name, r->input);
        }
        if (st != QK_OK)
            return mr_lib_fail(r, w->ctx, st, "quantizing tensor '%s' of %s", t->name, r->input);
        if ((st = qk_ggml_dequantize(w->ctx, &qt, type, &bt)) != QK_OK)
            return mr_lib_fail(r, w->ctx, st, "dequantizing tensor '%s' back for the report", t->name);
        /* the error against the input's own values (float64 ones included; x
         * holds F16/BF16 values exactly) */
        add_error(&acc, t->dtype == QK_F64 ? NULL : x, t->dtype == QK_F64 ? (const double *)in : NULL, back, elems);
        it->counted += elems;
        st = mo_write(&r->out, it->out[0], (uint64_t)r0 * row_bytes, q, out_bytes, err, sizeof err);
        if (st != QK_OK)
            return mr_fail(r, st, err, "writing %s", r->output);
        if (mr_piece_done(w, in_bytes))
            return QK_ERR_CANCELLED;
    }
    it->sumsq = it->sse = 0.0;
    for (int j = 0; j < ERR_LANES; j++) {
        it->sumsq += acc.sumsq[j];
        it->sse += acc.sse[j];
    }
    it->mse = it->counted ? it->sse / (double)it->counted : 0.0;
    return QK_OK;
}

static qk_status fill_report(mr_run *r, int64_t blck)
{
    qk_model_report *rep = r->rep;
    qk_status st = mr_report_tensors(r);
    if (st != QK_OK)
        return st;
    for (size_t i = 0; i < r->n_items; i++) {
        const mr_item *it = &r->items[i];
        const mi_tensor *t = &r->in.t[it->src];
        qk_model_tensor_report *x = &rep->tensors[i];
        /* kept tensors: the GGUF type they are written in */
        x->ggml_type = it->ggml >= 0 ? it->ggml : mi_st_dtype_ggml(t->st_dtype);
        if (!x->converted)
            continue;
        x->granularity = QK_PER_GROUP;
        x->group_size = blck;
        x->blocks = t->n / blck;
        x->mse = it->mse;
        x->sse = it->sse;
        x->sum_squares = it->sumsq;
        x->elements = it->counted;
        x->p_min = x->p_median = x->p_max = 100.0;
    }
    return QK_OK;
}

qk_status mg_quantize(mr_run *r, const char *const *reasons)
{
    const char *name = NULL;
    int64_t blck = 0;
    size_t block_bytes = 0;
    if (qk_ggml_type_info(r->o->ggml_type, &name, &blck, &block_bytes) != QK_OK)
        return mr_fail(r, QK_ERR_INVALID_ARG, "", "ggml type %d is not one qkern quantizes to", (int)r->o->ggml_type);
    r->gguf_out = 1;
    qk_status st = plan_items(r, reasons, blck, block_bytes);
    int any = 0;
    for (size_t i = 0; st == QK_OK && i < r->n_items; i++)
        any |= r->items[i].kind == MR_QUANT;
    int block_type = blck > 1;
    if (st == QK_OK)
        st = plan_output(r, any, block_type);
    if (st == QK_OK) {
        for (size_t i = 0; i < r->n_items; i++)
            r->prog.bytes_total += r->in.t[r->items[i].src].nbytes;
        st = mr_execute(r, quant_item);
    }
    if (st == QK_OK)
        st = fill_report(r, blck);
    return st;
}
