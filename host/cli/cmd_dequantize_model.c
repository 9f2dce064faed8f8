/* qkern dequantize-model: rebuild the float tensors of a file written by
 * `qkern quantize-model` from its "qkern" metadata (docs/model-format.md).
 * Each quantized tensor comes back under its own name, shape and dtype:
 * x = (q - zero_point) * scale in float32 per the contract, then widened to
 * float64 or rounded (to nearest, ties to even) to float16/bfloat16 when that
 * was the original dtype. The scale and zero-point tensors are dropped; every
 * other tensor and metadata entry is copied byte for byte, except the "qkern"
 * entry itself. The metadata is checked against the file before any work. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "big_alloc.h"
#include "cli.h"
#include "messages.h"
#include "common_opts.h"
#include "input.h"
#include "json_out.h"
#include "model_format.h"
#include "model_io.h"
#include "outputs.h"
#include "options.h"
#include "prefetch.h"
#include "progress.h"
#include "qkern.h"
#include "report.h"
#include "safetensors.h"

#define CMD "dequantize-model"

void cmd_dequantize_model_usage(void)
{
    fputs("Usage: qkern dequantize-model IN.safetensors -o OUT.safetensors [--backend B] [--json]\n"
          "\n"
          "Restore a model written by `qkern quantize-model`: every quantized tensor comes\n"
          "back under its original name, shape and dtype, x = (q - zero_point) * scale\n"
          "computed in float32 (float64 weights: widened from that float; float16 and\n"
          "bfloat16: rounded to nearest, ties to even). The .qscale/.qzero tensors and the\n"
          "\"qkern\" metadata entry are dropped; all other tensors and metadata are copied\n"
          "byte for byte. A file without \"qkern\" metadata is an error.\n"
          "\n"
          "The output is written to a temporary file beside OUT (.OUT.tmp.XXXXXX) and\n"
          "renamed into place, so a failure never leaves a partial OUT.\n"
          "\n"
          "While one tensor is restored, a second thread reads the next ones' codes from\n"
          "disk (at most 2 tensors or 1 GiB ahead); QKERN_PREFETCH=0 in the environment\n"
          "turns that off.\n"
          "\n"
          "Options:\n"
          "  -o, --output OUT       where to write the restored model (required)\n"
          "  --backend B            auto|cpu|opencl|cuda (default auto)\n"
          "  --json                 print {\"backend\",\"input\",\"output\",\"tensors\":[{\"name\",\n"
          "                         \"shape\",\"dtype\",\"dequantized\",\"granularity\",\"blocks\",\n"
          "                         \"bits\",\"scheme\",\"packed\"}],\"totals\":{...}}\n"
          "  -h, --help             show this help\n",
          stdout);
}

typedef struct dm_args {
    const char *input, *output;
    qk_backend_kind backend;
    int json;
} dm_args;

static int parse(int argc, char **argv, dm_args *a)
{
    static const cli_option opts[] = {CLI_OPT_OUTPUT, CLI_OPT_BACKEND, CLI_OPT_JSON};
    cli_parser p;
    cli_parser_init(&p, CMD, argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    const cli_common_args common_args = {CMD, cmd_dequantize_model_usage, &a->input, &a->output, &a->backend,
                                         &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int rc = cli_common_option(&common_args, id, value);
        if (rc == CLI_COMMON_NOT_MINE) /* every option of the table is a shared one */
            return cli_usage_error(CMD, "option %s is not implemented", p.opt_name);
        if (rc != CLI_COMMON_HANDLED)
            return rc;
    }
    if (!a->input)
        return cli_usage_error(CMD, "missing input file");
    if (!a->output)
        return cli_usage_error(CMD, "missing -o OUT.safetensors");
    return 0;
}

/* One quantized tensor being restored. */
typedef struct restore {
    const qm_entry *e;
    const qk_st_tensor *codes, *scale, *zero;
    void *out;          /* the restored values in the original dtype */
    size_t out_bytes;
} restore;

typedef struct dm_run {
    const dm_args *a;
    qk_st_file *f;
    qk_context *ctx;
    qm_entry *entries;
    size_t n_entries;
    restore *rs;
    unsigned char *role; /* per file tensor: 0 copied, 1 codes, 2 scale or zero point */
    prefetcher *pf;      /* reads the next codes while a tensor is restored; may be NULL */
    cli_progress prog;
} dm_run;

/* Every stored scale finite and > 0, every symmetric zero point 0: checked for
 * all tensors before any is computed (the data may be misaligned: memcpy). */
static qk_status check_params(const restore *x, char *err, size_t err_len)
{
    const unsigned char *s = x->scale->data, *z = x->zero->data;
    for (int64_t b = 0; b < x->e->blocks; b++) {
        float scale;
        int32_t zero;
        memcpy(&scale, s + 4 * b, 4);
        memcpy(&zero, z + 4 * b, 4);
        if (!(scale > 0.0f) || !isfinite(scale) || (x->e->scheme == QK_SYMMETRIC && zero != 0)) {
            snprintf(err, err_len, "tensor '%.200s': block %" PRId64 " has scale %g and zero point %" PRId32
                     " (the scale must be finite and > 0%s)", x->e->name, b, (double)scale, zero,
                     x->e->scheme == QK_SYMMETRIC ? ", the zero point 0" : "");
            return QK_ERR_FORMAT;
        }
    }
    return QK_OK;
}

static int check_entries(dm_run *r)
{
    char err[512] = "";
    r->rs = calloc(r->n_entries ? r->n_entries : 1, sizeof *r->rs);
    r->role = calloc(qk_st_count(r->f) + 1, 1);
    if (!r->rs || !r->role)
        return cli_status_error(QK_ERR_NO_MEMORY, "", "reading %s", r->a->input);
    for (size_t i = 0; i < r->n_entries; i++) {
        restore *x = &r->rs[i];
        x->e = &r->entries[i];
        qk_status st = qm_entry_check(r->f, x->e, &x->codes, &x->scale, &x->zero, err, sizeof err);
        if (st != QK_OK)
            return cli_status_error(st, err, "reading the \"%s\" metadata of %s", QM_METADATA_KEY, r->a->input);
        if ((st = check_params(x, err, sizeof err)) != QK_OK)
            return cli_status_error(st, err, "reading %s", r->a->input);
        size_t k;
        qk_st_find(r->f, x->codes->name, &k);
        r->role[k] = 1;
        qk_st_find(r->f, x->scale->name, &k);
        r->role[k] = 2;
        qk_st_find(r->f, x->zero->name, &k);
        r->role[k] = 2;
    }
    return 0;
}

static int lib_fail(dm_run *r, qk_status st, const char *what, const char *name)
{
    cli_progress_clear(&r->prog);
    return cli_lib_error(r->ctx, st, "%s tensor '%s' of %s", what, name, r->a->input);
}

/* Aligned views of a tensor's data (copies only for misaligned data). */
typedef struct view {
    const void *data;
    void *copy;
    size_t bytes;
} view;

static qk_status view_open(const qk_st_tensor *t, view *v, char *err, size_t err_len)
{
    v->bytes = t->nbytes;
    return qk_st_tensor_aligned(t, &v->data, &v->copy, err, err_len);
}

static void view_close(view *v)
{
    if (v->copy)
        qk_st_free_copy(v->copy, v->bytes);
    v->copy = NULL;
}

static int restore_one(dm_run *r, restore *x)
{
    const qm_entry *e = x->e;
    char err[512] = "";
    int rc = 0;
    view vc = {0}, vs = {0}, vz = {0};
    void *unpacked = NULL, *f32 = NULL;
    size_t unpacked_bytes = 0, f32_bytes = (size_t)e->n * sizeof(float);
    qk_qparams *params = NULL;
    qk_status st = view_open(x->codes, &vc, err, sizeof err);
    if (st == QK_OK)
        st = view_open(x->scale, &vs, err, sizeof err);
    if (st == QK_OK)
        st = view_open(x->zero, &vz, err, sizeof err);
    if (st != QK_OK) {
        cli_progress_clear(&r->prog);
        rc = cli_status_error(st, err, "reading tensor '%s' of %s", e->name, r->a->input);
        goto done;
    }
    /* Parameters: a bad stored scale (0, negative, NaN) is reported by the library. */
    params = malloc((size_t)e->blocks * sizeof *params);
    if (!params) {
        cli_progress_clear(&r->prog);
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "parameters of tensor '%s'", e->name);
        goto done;
    }
    const float *scales = vs.data;
    const int32_t *zeros = vz.data;
    for (int64_t b = 0; b < e->blocks; b++) {
        st = qk_qparams_from_scale(r->ctx, e->scheme, e->bits, e->narrow_range, scales[b], zeros[b], &params[b]);
        if (st != QK_OK) {
            cli_progress_clear(&r->prog);
            rc = cli_lib_error(r->ctx, st, "block %" PRId64 " of tensor '%s' of %s", b, e->name, r->a->input);
            goto done;
        }
    }
    qk_tensor codes = qk_tensor_host(e->codes_dtype, vc.data, e->n);
    if (e->packed) {
        unpacked_bytes = (size_t)e->n;
        if (!(unpacked = qk_big_alloc(unpacked_bytes))) {
            cli_progress_clear(&r->prog);
            rc = cli_status_error(QK_ERR_NO_MEMORY, "", "unpacking tensor '%s'", e->name);
            goto done;
        }
        codes = qk_tensor_host(e->codes_dtype, unpacked, e->n);
        if ((st = qk_unpack_int4(r->ctx, vc.data, &codes)) != QK_OK) {
            rc = lib_fail(r, st, "unpacking", e->name);
            goto done;
        }
    }
    /* float64 output: dequantize into the front half of its own buffer, then
     * widen in place from the back. Others: a float32 buffer. */
    size_t out_bytes = (size_t)e->n * (e->dtype == QK_F64 ? 8u : e->dtype == QK_F32 ? 4u : 2u);
    int own = e->dtype == QK_F32 || e->dtype == QK_F64;
    f32 = qk_big_alloc(own ? out_bytes : f32_bytes);
    if (!f32) {
        cli_progress_clear(&r->prog);
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "allocating tensor '%s'", e->name);
        goto done;
    }
    if (own)
        f32_bytes = out_bytes;
    qk_tensor xt = qk_tensor_host(QK_F32, f32, e->n);
    qk_layout layout;
    qm_entry_layout(e, &layout);
    if ((st = qk_dequantize_blocks(r->ctx, &codes, &layout, params, e->blocks, &xt)) != QK_OK) {
        rc = lib_fail(r, st, "dequantizing", e->name);
        goto done;
    }
    const float *v = f32;
    if (e->dtype == QK_F64) {
        double *d = f32;
        for (int64_t i = e->n; i-- > 0;) /* d[i] overwrites v[2i], v[2i+1]: already read */
            d[i] = (double)v[i];
    } else if (e->dtype == QK_F16 || e->dtype == QK_BF16) {
        uint16_t *h = qk_big_alloc(out_bytes);
        if (!h) {
            cli_progress_clear(&r->prog);
            rc = cli_status_error(QK_ERR_NO_MEMORY, "", "allocating tensor '%s'", e->name);
            goto done;
        }
        for (int64_t i = 0; i < e->n; i++)
            h[i] = e->dtype == QK_F16 ? model_float_to_half(v[i]) : model_float_to_bf16(v[i]);
        x->out = h;
        x->out_bytes = out_bytes;
    }
    if (own) {
        x->out = f32;
        x->out_bytes = out_bytes;
        f32 = NULL;
    }
done:
    free(params);
    qk_big_free(unpacked, unpacked_bytes);
    qk_big_free(f32, f32_bytes);
    view_close(&vc);
    view_close(&vs);
    view_close(&vz);
    return rc;
}

static int write_output(dm_run *r, uint64_t *bytes_out)
{
    model_out out;
    memset(&out, 0, sizeof out);
    size_t n = qk_st_count(r->f), n_meta = qk_st_metadata_count(r->f), k = 0;
    const char **keys = calloc(n_meta + 1, sizeof *keys), **values = calloc(n_meta + 1, sizeof *values);
    int oom = !keys || !values;
    /* Restored tensors take their codes' place in the file order. */
    for (size_t i = 0; !oom && i < n; i++) {
        const qk_st_tensor *t = qk_st_get(r->f, i);
        if (r->role[i] == 0) {
            oom = model_out_add(&out, t->name, t->st_dtype, t->ndim, t->shape, t->data) != 0;
        } else if (r->role[i] == 1) {
            const restore *x = NULL;
            for (size_t j = 0; j < r->n_entries && !x; j++)
                if (r->rs[j].codes == t)
                    x = &r->rs[j];
            oom = model_out_add(&out, x->e->name, qk_st_dtype_string(x->e->dtype), x->e->ndim, x->e->shape,
                                x->out) != 0;
        }
    }
    for (size_t i = 0; !oom && i < n_meta; i++) {
        const char *key, *value;
        qk_st_metadata_at(r->f, i, &key, &value);
        if (strcmp(key, QM_METADATA_KEY) != 0) {
            keys[k] = key;
            values[k++] = value;
        }
    }
    int rc;
    if (oom) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "preparing %s", r->a->output);
    } else {
        char note[300];
        snprintf(note, sizeof note, "writing %.200s ...", r->a->output);
        cli_progress_note(&r->prog, note);
        rc = model_write(r->a->output, &out, keys, values, k, bytes_out);
        cli_progress_clear(&r->prog);
    }
    free(keys);
    free(values);
    model_out_free(&out);
    return rc;
}

static int report(const dm_run *r, uint64_t bytes_in, uint64_t bytes_out)
{
    const dm_args *a = r->a;
    size_t n = qk_st_count(r->f), copied = 0;
    for (size_t i = 0; i < n; i++)
        copied += r->role[i] == 0;
    if (!a->json) {
        printf("%s -> %s: %zu tensors dequantized, %zu copied byte for byte, backend %s\n", a->input, a->output,
               r->n_entries, copied, qk_backend_name(qk_context_backend(r->ctx)));
        for (size_t i = 0; i < r->n_entries; i++) {
            const qm_entry *e = &r->entries[i];
            char shape[160], gran[32];
            model_format_shape(e->ndim, e->shape, shape, sizeof shape);
            qm_granularity_describe(e->granularity, e->axis, e->group_size, gran, sizeof gran);
            printf("  %s %s %s <- %d-bit %s, %s, %" PRId64 " blocks%s\n", e->name, shape,
                   qk_st_dtype_string(e->dtype), e->bits, e->scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric",
                   gran, e->blocks, e->packed ? ", packed" : "");
        }
        char in[16], out[16];
        cli_format_size(bytes_in, in, sizeof in);
        cli_format_size(bytes_out, out, sizeof out);
        printf("  size: %s -> %s\n", in, out);
        return CLI_EXIT_OK;
    }
    cli_json js;
    cli_json_init(&js);
    cli_json_string(&js, js.root, "backend", qk_backend_name(qk_context_backend(r->ctx)));
    cli_json_string(&js, js.root, "input", a->input);
    cli_json_string(&js, js.root, "output", a->output);
    cJSON *arr = cli_json_array(&js, js.root, "tensors");
    for (size_t i = 0; i < n; i++) {
        const qk_st_tensor *t = qk_st_get(r->f, i);
        if (r->role[i] == 2)
            continue;
        const qm_entry *e = NULL;
        for (size_t j = 0; r->role[i] == 1 && j < r->n_entries && !e; j++)
            if (r->rs[j].codes == t)
                e = r->rs[j].e;
        cJSON *o = cli_json_object(&js, arr, NULL);
        cli_json_string(&js, o, "name", t->name);
        cJSON *s = cli_json_array(&js, o, "shape");
        int ndim = e ? e->ndim : t->ndim;
        for (int d = 0; d < ndim; d++)
            cli_json_int(&js, s, NULL, e ? e->shape[d] : t->shape[d]);
        cli_json_string(&js, o, "dtype", e ? qk_st_dtype_string(e->dtype) : t->st_dtype);
        cli_json_bool(&js, o, "dequantized", e != NULL);
        if (e) {
            char gran[32];
            qm_granularity_describe(e->granularity, e->axis, e->group_size, gran, sizeof gran);
            cli_json_string(&js, o, "granularity", gran);
            cli_json_int(&js, o, "blocks", e->blocks);
            cli_json_int(&js, o, "bits", e->bits);
            cli_json_string(&js, o, "scheme", e->scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric");
            cli_json_bool(&js, o, "packed", e->packed);
        }
    }
    cJSON *tot = cli_json_object(&js, js.root, "totals");
    cli_json_uint(&js, tot, "tensors", r->n_entries + copied);
    cli_json_uint(&js, tot, "tensors_dequantized", r->n_entries);
    cli_json_uint(&js, tot, "tensors_copied", copied);
    cli_json_uint(&js, tot, "bytes_in", bytes_in);
    cli_json_uint(&js, tot, "bytes_out", bytes_out);
    int rc = cli_json_emit(&js);
    cli_json_free(&js);
    return rc;
}

/* The codes, in the order the loop restores them (the scales and zero points
 * were read already, by check_params). */
static prefetcher *start_prefetch(const dm_run *r)
{
    prefetch_range *ranges = malloc((r->n_entries ? r->n_entries : 1) * sizeof *ranges);
    if (!ranges)
        return NULL; /* no read-ahead, no harm */
    for (size_t i = 0; i < r->n_entries; i++)
        ranges[i] = (prefetch_range){r->rs[i].codes->data, r->rs[i].codes->nbytes};
    prefetcher *p = prefetch_start(ranges, r->n_entries);
    free(ranges);
    return p;
}

static int run_model(dm_run *r)
{
    const dm_args *a = r->a;
    char err[512] = "";
    qk_status st = qk_st_open(a->input, &r->f, err, sizeof err);
    if (st != QK_OK)
        return cli_status_error(st, err, "reading %s", a->input);
    const char *meta = qk_st_metadata_get(r->f, QM_METADATA_KEY);
    if (!meta)
        return cli_status_error(QK_ERR_FORMAT, "it was not written by qkern quantize-model",
                                "%s has no \"%s\" metadata entry", a->input, QM_METADATA_KEY);
    st = qm_format_parse(meta, &r->entries, &r->n_entries, err, sizeof err);
    if (st != QK_OK)
        return cli_status_error(st, err, "reading the \"%s\" metadata of %s", QM_METADATA_KEY, a->input);
    int rc = check_entries(r);
    if (rc == 0)
        rc = model_probe_output(a->output);
    if (rc == 0)
        rc = cli_context_open(a->backend, &r->ctx);
    if (rc)
        return rc;

    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < r->n_entries; i++)
        total += (uint64_t)r->rs[i].codes->nbytes;
    cli_progress_start(&r->prog, "tensors", r->n_entries, total);
    cli_progress_update(&r->prog, 0, 0, 1);
    r->pf = start_prefetch(r);
    for (size_t i = 0; i < r->n_entries; i++) {
        prefetch_advance(r->pf, i);
        if ((rc = restore_one(r, &r->rs[i])) != 0)
            return rc;
        done += r->rs[i].codes->nbytes;
        cli_progress_update(&r->prog, i + 1, done, i + 1 == r->n_entries);
    }
    prefetch_stop(r->pf); /* done: it has nothing left to read ahead of */
    r->pf = NULL;
    uint64_t bytes_out = 0;
    if ((rc = write_output(r, &bytes_out)) != 0)
        return rc;
    return report(r, model_file_size(a->input), bytes_out);
}

int cmd_dequantize_model(int argc, char **argv)
{
    dm_args a;
    memset(&a, 0, sizeof a);
    a.backend = QK_BACKEND_AUTO;
    int rc = parse(argc, argv, &a);
    if (rc == 0)
        rc = cli_check_output(CMD, &a.output, &a.input, 1);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    dm_run r;
    memset(&r, 0, sizeof r);
    r.a = &a;
    rc = run_model(&r);
    prefetch_stop(r.pf); /* still running when a tensor failed */
    cli_progress_clear(&r.prog);
    for (size_t i = 0; r.rs && i < r.n_entries; i++)
        qk_big_free(r.rs[i].out, r.rs[i].out_bytes);
    free(r.rs);
    free(r.role);
    qm_entries_free(r.entries, r.n_entries);
    if (r.ctx)
        qk_context_destroy(r.ctx);
    qk_st_close(r.f);
    return rc;
}
