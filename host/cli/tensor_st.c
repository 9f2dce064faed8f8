/* A single tensor in qkern's quantized safetensors format (see tensor_st.h). */
#include "tensor_st.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "big_alloc.h"
#include "calib_args.h"
#include "cli.h"
#include "input.h"
#include "json_out.h"
#include "model_format.h"
#include "model_io.h"
#include "report.h"
#include "safetensors.h"

#define GROUP_MAX ((int64_t)1 << 40)

int cli_is_safetensors_path(const char *path)
{
    static const char ext[] = ".safetensors";
    size_t n = strlen(path), e = sizeof ext - 1;
    return n > e && strcmp(path + n - e, ext) == 0;
}

int cli_parse_granularity(const char *cmd, const char *value, qk_granularity *g, int *axis, int64_t *group)
{
    long l;
    int rc;
    if (strcmp(value, "tensor") == 0) {
        *g = QK_PER_TENSOR;
    } else if (strcmp(value, "channel") == 0) {
        *g = QK_PER_CHANNEL;
        *axis = 0;
    } else if (strncmp(value, "channel:", 8) == 0) {
        if ((rc = cli_parse_long(cmd, "--granularity channel:AXIS", value + 8, -QK_MAX_DIMS, QK_MAX_DIMS - 1, &l)))
            return rc;
        *g = QK_PER_CHANNEL;
        *axis = (int)l;
    } else if (strncmp(value, "group:", 6) == 0) {
        if ((rc = cli_parse_long(cmd, "--granularity group:G", value + 6, 1, (long)GROUP_MAX, &l)))
            return rc;
        *g = QK_PER_GROUP;
        *group = l;
    } else {
        return cli_usage_error(cmd, "invalid --granularity '%s': expected tensor, channel[:AXIS] or group:G", value);
    }
    return 0;
}

/* "x" for "dir/x.npy"; the part after the last '/' otherwise; "tensor" if empty. */
static void tensor_name(const char *input, char *buf, size_t len)
{
    const char *slash = strrchr(input, '/');
    const char *base = slash ? slash + 1 : input;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".npy") == 0)
        n -= 4;
    if (n == 0)
        snprintf(buf, len, "tensor");
    else
        snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), base);
}

typedef struct st_tensor {
    char name[256], scale_name[272], zero_name[272], calib_text[128];
    qm_entry e;
} st_tensor;

static void entry_init(st_tensor *s, const char *input, const qk_npy *npy, const qk_calib_options *calib,
                       qk_granularity g, int axis, int64_t group, qk_dtype codes_dtype, int64_t blocks)
{
    memset(s, 0, sizeof *s);
    tensor_name(input, s->name, sizeof s->name);
    snprintf(s->scale_name, sizeof s->scale_name, "%s%s", s->name, QM_SCALE_SUFFIX);
    snprintf(s->zero_name, sizeof s->zero_name, "%s%s", s->name, QM_ZERO_SUFFIX);
    cli_calib_describe(calib, s->calib_text, sizeof s->calib_text);
    qm_entry *e = &s->e;
    e->name = s->name;
    e->dtype = npy->dtype;
    e->ndim = npy->ndim;
    memcpy(e->shape, npy->shape, (size_t)npy->ndim * sizeof npy->shape[0]);
    e->n = npy->n;
    e->scheme = calib->scheme;
    e->bits = calib->bits;
    e->narrow_range = calib->narrow_range;
    e->granularity = g;
    e->axis = axis;
    e->group_size = group;
    e->blocks = blocks;
    e->codes_dtype = codes_dtype;
    e->scale_name = s->scale_name;
    e->zero_name = s->zero_name;
    e->calib = s->calib_text;
}

static int write_entry(const st_tensor *s, const qk_calib_options *calib, const void *codes, const float *scales,
                       const int32_t *zeros, const char *output)
{
    const qm_entry *e = &s->e;
    model_out out;
    memset(&out, 0, sizeof out);
    int64_t blocks_shape[1] = {e->blocks};
    char *meta = qm_format_build(e, 1, cli_objective_name(calib->objective));
    int oom = meta == NULL ||
              model_out_add(&out, e->name, qk_st_dtype_string(e->codes_dtype), e->ndim, e->shape, codes) != 0 ||
              model_out_add(&out, e->scale_name, "F32", 1, blocks_shape, scales) != 0 ||
              model_out_add(&out, e->zero_name, "I32", 1, blocks_shape, zeros) != 0;
    int rc;
    if (oom) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "preparing %s", output);
    } else {
        const char *key = QM_METADATA_KEY, *value = meta;
        uint64_t bytes = 0;
        rc = model_write(output, &out, &key, &value, 1, &bytes);
    }
    model_out_free(&out);
    free(meta);
    return rc;
}

int cli_write_tensor_st(const char *input, const qk_npy *npy, const qk_calib_options *calib, const qk_qparams *params,
                        qk_dtype codes_dtype, const void *codes, const char *output)
{
    st_tensor *s = malloc(sizeof *s);
    if (s == NULL)
        return cli_status_error(QK_ERR_NO_MEMORY, "", "preparing %s", output);
    qk_calib_options c = *calib;
    c.scheme = params->scheme;
    c.bits = params->bits;
    entry_init(s, input, npy, &c, QK_PER_TENSOR, 0, 0, codes_dtype, 1);
    float scale = params->scale;
    int32_t zero = params->zero_point;
    int rc = write_entry(s, &c, codes, &scale, &zero, output);
    free(s);
    return rc;
}

int cli_quantize_blocks_to_st(qk_context *ctx, const char *input, const qk_npy *npy, const qk_calib_options *calib,
                              qk_granularity g, int axis, int64_t group, const char *output, cli_st_written *w)
{
    qk_layout layout;
    memset(&layout, 0, sizeof layout);
    layout.granularity = g;
    layout.ndim = npy->ndim;
    memcpy(layout.shape, npy->shape, (size_t)npy->ndim * sizeof npy->shape[0]);
    layout.axis = g == QK_PER_CHANNEL && axis < 0 ? axis + npy->ndim : axis;
    layout.group_size = group;
    int64_t blocks = 0;
    if (g == QK_PER_CHANNEL && (layout.axis < 0 || layout.axis >= npy->ndim))
        return cli_status_error(QK_ERR_INVALID_ARG, "", "%s (%d-D) has no axis %d for --granularity channel:%d",
                                input, npy->ndim, axis, axis);
    if (g == QK_PER_GROUP && (npy->ndim == 0 || npy->shape[npy->ndim - 1] % group != 0))
        return cli_status_error(QK_ERR_INVALID_ARG, "choose a G that divides it",
                                "%s: group size %" PRId64 " does not divide the last dimension (%" PRId64 ")", input,
                                group, npy->ndim ? npy->shape[npy->ndim - 1] : 1);
    if (qk_layout_blocks(&layout, &blocks) != QK_OK)
        return cli_status_error(QK_ERR_INVALID_ARG, "", "%s: invalid block layout", input);

    qk_qparams kind;
    memset(&kind, 0, sizeof kind);
    kind.bits = calib->bits;
    kind.scheme = calib->scheme;
    qk_status st = qk_code_dtype(&kind, &w->codes_dtype);
    if (st != QK_OK)
        return cli_lib_error(ctx, st, "code type");
    size_t codes_bytes = (size_t)npy->n * qk_dtype_size(w->codes_dtype);
    void *codes = qk_big_alloc(codes_bytes);
    float *scales = malloc((size_t)blocks * sizeof *scales);
    int32_t *zeros = malloc((size_t)blocks * sizeof *zeros);
    st_tensor *s = malloc(sizeof *s);
    qk_block_calib_result res;
    memset(&res, 0, sizeof res);
    int rc = 0;
    if (!codes || !scales || !zeros || !s) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "quantizing %s", input);
        goto done;
    }
    qk_tensor x = qk_tensor_host(npy->dtype, npy->data, npy->n);
    qk_tensor ct = qk_tensor_host(w->codes_dtype, codes, npy->n);
    if ((st = qk_calibrate_quantize_blocks(ctx, &x, &layout, calib, &res, &ct)) != QK_OK) {
        rc = cli_lib_error(ctx, st, "calibrating and quantizing %s", input);
        goto done;
    }
    w->clipped = 0;
    for (int64_t b = 0; b < res.count; b++) {
        scales[b] = res.params[b].scale;
        zeros[b] = res.params[b].zero_point;
        w->clipped += res.chosen[b].clipped;
    }
    w->blocks = res.count;
    w->mse = res.mse;
    entry_init(s, input, npy, calib, g, layout.axis, group, w->codes_dtype, blocks);
    rc = write_entry(s, calib, codes, scales, zeros, output);
done:
    qk_block_calib_result_release(&res);
    qk_big_free(codes, codes_bytes);
    free(scales);
    free(zeros);
    free(s);
    return rc;
}

/* ---- reading back ------------------------------------------------------------------------ */

typedef struct view {
    const void *data;
    void *copy;
    size_t nbytes;
} view;

static qk_status view_open(const qk_st_tensor *t, view *v, char *err, size_t err_len)
{
    v->nbytes = t->nbytes;
    return qk_st_tensor_aligned(t, &v->data, &v->copy, err, err_len);
}

static void view_close(view *v)
{
    if (v->copy)
        qk_st_free_copy(v->copy, v->nbytes);
    memset(v, 0, sizeof *v);
}

static int dequantize_entry(qk_context *ctx, const char *input, const qm_entry *e, const qk_st_tensor *tc,
                            const qk_st_tensor *ts, const qk_st_tensor *tz, float *out)
{
    char err[512] = "";
    view vc = {0}, vs = {0}, vz = {0};
    void *unpacked = NULL;
    qk_qparams *params = malloc((size_t)e->blocks * sizeof *params);
    int rc = 0;
    qk_status st = view_open(tc, &vc, err, sizeof err);
    if (st == QK_OK)
        st = view_open(ts, &vs, err, sizeof err);
    if (st == QK_OK)
        st = view_open(tz, &vz, err, sizeof err);
    if (st != QK_OK) {
        rc = cli_status_error(st, err, "reading tensor '%s' of %s", e->name, input);
        goto done;
    }
    if (!params) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "parameters of %s", input);
        goto done;
    }
    const float *scales = vs.data;
    const int32_t *zeros = vz.data;
    for (int64_t b = 0; b < e->blocks; b++)
        if ((st = qk_qparams_from_scale(ctx, e->scheme, e->bits, e->narrow_range, scales[b], zeros[b], &params[b])) !=
            QK_OK) {
            rc = cli_lib_error(ctx, st, "block %" PRId64 " of tensor '%s' of %s", b, e->name, input);
            goto done;
        }
    qk_tensor codes = qk_tensor_host(e->codes_dtype, vc.data, e->n);
    if (e->packed) {
        if (!(unpacked = qk_big_alloc((size_t)e->n))) {
            rc = cli_status_error(QK_ERR_NO_MEMORY, "", "unpacking tensor '%s'", e->name);
            goto done;
        }
        codes = qk_tensor_host(e->codes_dtype, unpacked, e->n);
        if ((st = qk_unpack_int4(ctx, vc.data, &codes)) != QK_OK) {
            rc = cli_lib_error(ctx, st, "unpacking tensor '%s' of %s", e->name, input);
            goto done;
        }
    }
    qk_layout layout;
    qm_entry_layout(e, &layout);
    qk_tensor xt = qk_tensor_host(QK_F32, out, e->n);
    if ((st = qk_dequantize_blocks(ctx, &codes, &layout, params, e->blocks, &xt)) != QK_OK)
        rc = cli_lib_error(ctx, st, "dequantizing tensor '%s' of %s", e->name, input);
done:
    if (unpacked)
        qk_big_free(unpacked, (size_t)e->n);
    free(params);
    view_close(&vc);
    view_close(&vs);
    view_close(&vz);
    return rc;
}

static int report(const char *input, const char *output, const qk_context *ctx, const qm_entry *e, int json)
{
    char gran[32];
    qm_granularity_describe(e->granularity, e->axis, e->group_size, gran, sizeof gran);
    if (json) {
        cli_json j;
        cli_json_init(&j);
        cli_json_string(&j, j.root, "backend", qk_backend_name(qk_context_backend(ctx)));
        cli_json_string(&j, j.root, "tensor", e->name);
        cli_json_int(&j, j.root, "n", e->n);
        cli_json_int(&j, j.root, "bits", e->bits);
        cli_json_string(&j, j.root, "scheme", cli_scheme_name(e->scheme));
        cli_json_string(&j, j.root, "granularity", gran);
        cli_json_int(&j, j.root, "blocks", e->blocks);
        cli_json_string(&j, j.root, "output", output);
        int rc = cli_json_emit(&j);
        cli_json_free(&j);
        return rc;
    }
    char shape[160];
    model_format_shape(e->ndim, e->shape, shape, sizeof shape);
    printf("%s -> %s: float32 %s from tensor '%s' (%s codes), backend %s\n", input, output, shape, e->name,
           qk_dtype_name(e->codes_dtype), qk_backend_name(qk_context_backend(ctx)));
    printf("  params      %d-bit %s, %s, %" PRId64 " block%s (stored in the file)\n", e->bits,
           cli_scheme_name(e->scheme), gran, e->blocks, e->blocks == 1 ? "" : "s");
    return CLI_EXIT_OK;
}

int cli_dequantize_st(const char *input, const char *output, qk_backend_kind backend, int json)
{
    char err[512] = "";
    qk_st_file *f = NULL;
    qm_entry *entries = NULL;
    size_t n = 0;
    qk_context *ctx = NULL;
    float *out = NULL;
    size_t bytes = 0;
    int rc = 0;
    qk_status st = qk_st_open(input, &f, err, sizeof err);
    if (st != QK_OK)
        return cli_status_error(st, err, "reading %s", input);
    const char *meta = qk_st_metadata_get(f, QM_METADATA_KEY);
    if (!meta) {
        rc = cli_status_error(QK_ERR_FORMAT, "it was not written by qkern quantize or quantize-model",
                              "%s has no \"%s\" metadata entry", input, QM_METADATA_KEY);
        goto done;
    }
    if ((st = qm_format_parse(meta, &entries, &n, err, sizeof err)) != QK_OK) {
        rc = cli_status_error(st, err, "reading the \"%s\" metadata of %s", QM_METADATA_KEY, input);
        goto done;
    }
    if (n != 1) {
        rc = cli_status_error(QK_ERR_UNSUPPORTED, "use qkern dequantize-model for a whole model",
                              "%s holds %zu quantized tensors, not one", input, n);
        goto done;
    }
    const qm_entry *e = &entries[0];
    const qk_st_tensor *tc, *ts, *tz;
    if ((st = qm_entry_check(f, e, &tc, &ts, &tz, err, sizeof err)) != QK_OK) {
        rc = cli_status_error(st, err, "reading %s", input);
        goto done;
    }
    if ((rc = cli_context_open(backend, &ctx)) != 0)
        goto done;
    bytes = (size_t)e->n * sizeof *out;
    if (!(out = qk_big_alloc(bytes))) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "allocating %zu bytes of output", bytes);
        goto done;
    }
    if ((rc = dequantize_entry(ctx, input, e, tc, ts, tz, out)) != 0)
        goto done;
    int64_t overflow = 0;
    for (int64_t i = 0; i < e->n; i++)
        overflow += !isfinite(out[i]);
    if (overflow) {
        char why[160];
        snprintf(why, sizeof why, "%" PRId64 " of %" PRId64 " values overflow float32; nothing was written", overflow,
                 e->n);
        rc = cli_status_error(QK_ERR_RANGE, why, "dequantizing %s", input);
        goto done;
    }
    if ((st = qk_npy_write(output, QK_F32, e->ndim, e->shape, out, err, sizeof err)) != QK_OK) {
        rc = cli_status_error(st, err, "writing %s", output);
        goto done;
    }
    rc = report(input, output, ctx, e, json);
done:
    if (out)
        qk_big_free(out, bytes);
    if (ctx)
        qk_context_destroy(ctx);
    qm_entries_free(entries, n);
    qk_st_close(f);
    return rc;
}
