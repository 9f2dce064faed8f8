/* qkern quantize-model: quantize the weight tensors of a safetensors model
 * file, tensor by tensor, into integer codes plus per-block scales and zero
 * points, and write a new safetensors file that `qkern dequantize-model`
 * turns back into floats (the format: docs/model-format.md).
 *
 * Order of work: read and validate the whole input (the reader checks every
 * offset), decide the selection and every tensor's block layout (so a bad
 * option fails before any computing), check that the output can be created,
 * then quantize each selected tensor, holding only its codes, scales and zero
 * points; kept tensors are written straight from the input's mapping. The
 * output is written at the end through the safetensors writer (temporary +
 * rename), so nothing appears at OUT unless everything succeeded. */
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "big_alloc.h"
#include "calib_args.h"
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

#define CMD "quantize-model"
#define MAX_PATTERNS 64
#define GROUP_MIN 32
#define GROUP_MAX 4096

void cmd_quantize_model_usage(void)
{
    fputs("Usage: qkern quantize-model MODEL.safetensors -o OUT.safetensors [OPTIONS]\n"
          "\n"
          "Quantize the weights of a safetensors model. Every selected float tensor NAME\n"
          "(F32, F64, F16, BF16) is replaced by its codes under NAME (uint8/int8 up to 8\n"
          "bits, uint16/int16 up to 16; with --pack4 two 4-bit codes per byte, U8 of shape\n"
          "[ceil(n/2)]), NAME.qscale (F32, one per block) and NAME.qzero (I32, one per\n"
          "block); a \"qkern\" metadata entry describes every quantized tensor (see\n"
          "docs/model-format.md). All other tensors and metadata are copied byte for byte.\n"
          "`qkern dequantize-model` restores the float tensors.\n"
          "\n"
          "Selection: float tensors with at least 2 dimensions (weight matrices, embeddings,\n"
          "convolution kernels); 1-D biases and norms, scalars and non-float tensors are\n"
          "kept. --include adds the float tensors whose name matches (whatever their\n"
          "dimensions), then --exclude removes matching tensors: exclude wins. Patterns are\n"
          "POSIX extended regular expressions, matched anywhere in the name (anchor with ^$);\n"
          "each option may be repeated (a name matching any of them counts). Empty tensors\n"
          "are always kept. The rule used is printed in the report.\n"
          "\n"
          "Granularity: channel:AXIS gives each index along AXIS its own scale (channel:0 =\n"
          "one per output row of an [out, in] weight; negative AXIS counts from the end);\n"
          "tensors with fewer than 2 dimensions (added by --include) get one scale.\n"
          "group:G gives each run of G consecutive elements along the last dimension its\n"
          "own scale (G in 32..4096); a selected tensor whose last dimension G does not\n"
          "divide is an error that names it (exclude it, or pick another G).\n"
          "\n"
          "The output is written to a temporary file beside OUT (.OUT.tmp.XXXXXX) and\n"
          "renamed into place, so a failure never leaves a partial OUT and an existing OUT\n"
          "stays untouched. Interrupts (Ctrl-C, SIGTERM) that arrive while the file is\n"
          "being written take effect once it is complete.\n"
          "\n"
          "While one tensor is quantized, a second thread reads the next ones from disk\n"
          "(at most 2 tensors or 1 GiB ahead); QKERN_PREFETCH=0 in the environment turns\n"
          "that off.\n"
          "\n"
          "Options:\n"
          "  -o, --output OUT       where to write the quantized model (required)\n"
          "  --bits B               bit width, 2..16 (default 8)\n"
          "  --scheme S             asymmetric (unsigned codes, zero point; default)\n"
          "                         or symmetric (signed codes, zero point 0)\n"
          "  --granularity G        tensor | channel[:AXIS] | group:G (default channel:0)\n"
          "  --calib METHOD         minmax (default) | percentile:P |\n"
          "                         gridsearch[:START:STOP:STEP] (per block)\n"
          "  --objective O          gridsearch score: mse (default) or mse-inliers\n"
          "  --fence-k K            k of Tukey's fences for mse-inliers (default 3)\n"
          "  --include REGEX        also quantize float tensors whose name matches\n"
          "  --exclude REGEX        never quantize tensors whose name matches\n"
          "  --narrow-range         symmetric codes -(2^(B-1)-1)..2^(B-1)-1\n"
          "  --include-zero         widen each asymmetric range to contain 0\n"
          "  --ignore-nonfinite     skip NaN/Inf when calibrating instead of failing\n"
          "  --pack4                store 4-bit codes two per byte (needs --bits <= 4)\n"
          "  --backend B            auto|cpu|opencl|cuda (default auto)\n"
          "  --json                 print one JSON object: {\"backend\",\"input\",\"output\",\n"
          "                         \"bits\",\"scheme\",\"granularity\",\"calib\",\"objective\",\n"
          "                         \"selection\",\"tensors\":[{\"name\",\"shape\",\"dtype\",\n"
          "                         \"quantized\",\"blocks\",\"percentile_min\",\n"
          "                         \"percentile_median\",\"percentile_max\",\"mse\",\"sqnr_db\",\n"
          "                         \"clipped\",...}],\"totals\":{...}} (SQNR of a lossless\n"
          "                         tensor: null)\n"
          "  -h, --help             show this help\n"
          "\n"
          "Report: per quantized tensor its blocks, the chosen percentile (min/median/max\n"
          "over blocks; 100 for minmax), MSE and SQNR = 10*log10(sum x^2 / sum (x - x')^2)\n"
          "in dB over the tensor, and how many values were clipped; then totals. A progress\n"
          "bar is shown on stderr when it is a terminal.\n",
          stdout);
}

enum { OPT_GRANULARITY = 1000, OPT_INCLUDE, OPT_EXCLUDE, OPT_PACK4 };

typedef struct patterns {
    regex_t re[MAX_PATTERNS];
    const char *src[MAX_PATTERNS];
    size_t n;
} patterns;

typedef struct qm_args {
    const char *input, *output;
    qk_calib_options calib;
    qk_granularity granularity;
    int axis;
    int64_t group;
    patterns include, exclude;
    int pack4, json;
    qk_backend_kind backend;
} qm_args;

static void free_patterns(patterns *p)
{
    for (size_t i = 0; i < p->n; i++)
        regfree(&p->re[i]);
    p->n = 0;
}

static int add_pattern(patterns *p, const char *opt, const char *value)
{
    if (p->n == MAX_PATTERNS)
        return cli_usage_error(CMD, "too many %s patterns (at most %d)", opt, MAX_PATTERNS);
    int rc = regcomp(&p->re[p->n], value, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[256];
        regerror(rc, &p->re[p->n], why, sizeof why);
        regfree(&p->re[p->n]);
        return cli_usage_error(CMD, "invalid %s pattern '%s': %s", opt, value, why);
    }
    p->src[p->n++] = value;
    return 0;
}

static int matches(const patterns *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (regexec(&p->re[i], name, 0, NULL, 0) == 0)
            return 1;
    return 0;
}

static int parse_granularity(const char *value, qm_args *a)
{
    long l;
    if (strcmp(value, "tensor") == 0) {
        a->granularity = QK_PER_TENSOR;
        return 0;
    }
    if (strcmp(value, "channel") == 0) {
        a->granularity = QK_PER_CHANNEL;
        a->axis = 0;
        return 0;
    }
    if (strncmp(value, "channel:", 8) == 0) {
        int rc = cli_parse_long(CMD, "--granularity channel:AXIS", value + 8, -QK_MAX_DIMS, QK_MAX_DIMS - 1, &l);
        if (rc)
            return rc;
        a->granularity = QK_PER_CHANNEL;
        a->axis = (int)l;
        return 0;
    }
    if (strncmp(value, "group:", 6) == 0) {
        int rc = cli_parse_long(CMD, "--granularity group:G", value + 6, GROUP_MIN, GROUP_MAX, &l);
        if (rc)
            return rc;
        a->granularity = QK_PER_GROUP;
        a->group = l;
        return 0;
    }
    return cli_usage_error(CMD, "invalid --granularity '%s': expected tensor, channel[:AXIS] or group:G", value);
}

/* Returns 0 to go on, CLI_EXIT_USAGE, or -1 when --help was printed. */
static int parse(int argc, char **argv, qm_args *a)
{
    static const cli_option opts[] = {
        CLI_OPT_OUTPUT,       CLI_OPT_BITS,
        CLI_OPT_SCHEME,       CLI_OPT_CALIB,
        CLI_OPT_OBJECTIVE,    CLI_OPT_FENCE_K,
        CLI_OPT_INCLUDE_ZERO, CLI_OPT_NARROW_RANGE,
        CLI_OPT_IGNORE_NONFINITE, CLI_OPT_BACKEND,
        CLI_OPT_JSON,         {"--granularity", NULL, 1, OPT_GRANULARITY},
        {"--include", NULL, 1, OPT_INCLUDE}, {"--exclude", NULL, 1, OPT_EXCLUDE},
        {"--pack4", NULL, 0, OPT_PACK4},
    };
    cli_parser p;
    cli_parser_init(&p, CMD, argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    int rc;
    const cli_common_args common_args = {CMD, cmd_quantize_model_usage, &a->input, &a->output, &a->backend, &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int common = cli_common_option(&common_args, id, value);
        if (common == CLI_COMMON_HANDLED)
            continue;
        if (common != CLI_COMMON_NOT_MINE)
            return common;
        switch (id) {
        case OPT_CALIB:
            if ((rc = cli_parse_calib(CMD, value, &a->calib)) != 0)
                return rc;
            break;
        case OPT_GRANULARITY:
            if ((rc = parse_granularity(value, a)) != 0)
                return rc;
            break;
        case OPT_INCLUDE:
            if ((rc = add_pattern(&a->include, "--include", value)) != 0)
                return rc;
            break;
        case OPT_EXCLUDE:
            if ((rc = add_pattern(&a->exclude, "--exclude", value)) != 0)
                return rc;
            break;
        case OPT_PACK4:
            a->pack4 = 1;
            break;
        default:
            rc = cli_calib_option(CMD, id, value, &a->calib);
            if (rc == CLI_CALIB_NOT_MINE)
                return cli_usage_error(CMD, "option %s is not implemented", p.opt_name);
            if (rc)
                return rc;
            break;
        }
    }
    if (!a->input)
        return cli_usage_error(CMD, "missing input file");
    if (!a->output)
        return cli_usage_error(CMD, "missing -o OUT.safetensors");
    if (a->pack4 && a->calib.bits > 4)
        return cli_usage_error(CMD, "--pack4 needs --bits 4 or fewer (got %d)", a->calib.bits);
    return cli_calib_check(CMD, &a->calib);
}

/* ---- the plan: what happens to each tensor ------------------------------------ */

typedef struct job {
    const qk_st_tensor *t;
    int quantize;
    const char *reason;       /* why a tensor is kept */
    qm_entry e;               /* the format entry (name and calib borrowed) */
    char granularity[32];
    /* outputs, held until the file is written */
    void *codes;
    size_t codes_bytes;
    float *scales;
    int32_t *zeros;
    int64_t packed_shape[1], blocks_shape[1];
    /* report */
    double p_min, p_median, p_max;
    double mse, sse, sumsq;
    int64_t clipped, counted;
} job;

typedef struct run {
    const qm_args *a;
    qk_st_file *f;
    qk_context *ctx;
    job *jobs;
    size_t n_jobs;
    prefetcher *pf;           /* reads the next tensors while one is quantized; may be NULL */
    cli_progress prog;
    char calib_text[128];
    char gran_text[32];
    char rule[1024];
} run;

static int is_float(qk_dtype d)
{
    return d == QK_F32 || d == QK_F64 || d == QK_F16 || d == QK_BF16;
}

static void describe_rule(run *r)
{
    const qm_args *a = r->a;
    size_t used = (size_t)snprintf(r->rule, sizeof r->rule, "float tensors with >= 2 dims");
    for (size_t i = 0; i < a->include.n && used < sizeof r->rule; i++)
        used += (size_t)snprintf(r->rule + used, sizeof r->rule - used, "%s/%s/", i ? " or " : ", plus float tensors matching ",
                                 a->include.src[i]);
    for (size_t i = 0; i < a->exclude.n && used < sizeof r->rule; i++)
        used += (size_t)snprintf(r->rule + used, sizeof r->rule - used, "%s/%s/", i ? " or " : ", minus tensors matching ",
                                 a->exclude.src[i]);
}

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

/* Decide every tensor's fate and layout; every failure here is before any work. */
static int plan(run *r)
{
    const qm_args *a = r->a;
    int rc = cli_check_includes(CMD, a->include.re, a->include.src, a->include.n, r->f);
    if (rc)
        return rc;
    r->n_jobs = qk_st_count(r->f);
    r->jobs = calloc(r->n_jobs ? r->n_jobs : 1, sizeof *r->jobs);
    if (!r->jobs)
        return cli_status_error(QK_ERR_NO_MEMORY, "", "planning %s", a->input);
    for (size_t i = 0; i < r->n_jobs; i++) {
        job *j = &r->jobs[i];
        const qk_st_tensor *t = j->t = qk_st_get(r->f, i);
        if (!is_float(t->dtype)) {
            j->reason = "not a float tensor";
            continue;
        }
        int sel = t->ndim >= 2;
        j->reason = "fewer than 2 dimensions";
        if (matches(&a->include, t->name))
            sel = 1;
        if (sel && matches(&a->exclude, t->name)) {
            sel = 0;
            j->reason = "excluded by --exclude";
        }
        if (sel && t->n == 0) {
            sel = 0;
            j->reason = "empty";
        }
        if (!sel)
            continue;

        j->quantize = 1;
        j->reason = NULL;
        qm_entry *e = &j->e;
        e->name = (char *)t->name;
        e->dtype = t->dtype;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
        e->n = t->n;
        e->scheme = a->calib.scheme;
        e->bits = a->calib.bits;
        e->narrow_range = a->calib.narrow_range;
        e->packed = a->pack4;
        e->calib = r->calib_text;
        e->granularity = a->granularity;
        if (a->granularity == QK_PER_CHANNEL && t->ndim < 2) {
            e->granularity = QK_PER_TENSOR; /* a scale per element would store more than it saves */
        } else if (a->granularity == QK_PER_CHANNEL) {
            int axis = a->axis < 0 ? a->axis + t->ndim : a->axis;
            if (axis < 0 || axis >= t->ndim)
                return cli_status_error(QK_ERR_INVALID_ARG, "", "tensor '%s' (%d-D) has no axis %d for --granularity channel:%d",
                                        t->name, t->ndim, a->axis, a->axis);
            e->axis = axis;
        } else if (a->granularity == QK_PER_GROUP) {
            int64_t last = t->ndim ? t->shape[t->ndim - 1] : 0;
            if (t->ndim == 0 || last % a->group != 0) {
                char shape[160];
                model_format_shape(t->ndim, t->shape, shape, sizeof shape);
                return cli_status_error(QK_ERR_INVALID_ARG, "exclude it with --exclude or choose a G that divides it",
                                        "tensor '%s' %s: group size %" PRId64 " does not divide its last dimension",
                                        t->name, shape, a->group);
            }
            e->group_size = a->group;
        }
        qk_layout layout;
        qm_entry_layout(e, &layout);
        if (qk_layout_blocks(&layout, &e->blocks) != QK_OK)
            return cli_status_error(QK_ERR_INVALID_ARG, "", "tensor '%s': invalid block layout", t->name);
        qm_granularity_describe(e->granularity, e->axis, e->group_size, j->granularity, sizeof j->granularity);
        e->scale_name = concat(t->name, QM_SCALE_SUFFIX);
        e->zero_name = concat(t->name, QM_ZERO_SUFFIX);
        if (!e->scale_name || !e->zero_name)
            return cli_status_error(QK_ERR_NO_MEMORY, "", "planning %s", a->input);
        const char *clash = qk_st_find(r->f, e->scale_name, NULL) ? e->scale_name
                            : qk_st_find(r->f, e->zero_name, NULL) ? e->zero_name : NULL;
        if (clash)
            return cli_status_error(QK_ERR_INVALID_ARG, "exclude it with --exclude",
                                    "cannot quantize tensor '%s': the file already has a tensor '%s'", t->name, clash);
    }
    return 0;
}

static void free_jobs(run *r)
{
    for (size_t i = 0; r->jobs && i < r->n_jobs; i++) {
        job *j = &r->jobs[i];
        qk_big_free(j->codes, j->codes_bytes);
        free(j->scales);
        free(j->zeros);
        free(j->e.scale_name);
        free(j->e.zero_name);
    }
    free(r->jobs);
    r->jobs = NULL;
}

/* ---- quantizing one tensor ----------------------------------------------------- */

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* min, median (numpy's: the mean of the middle two for an even count), max. */
static int percentile_stats(const qk_block_calib_result *res, job *j)
{
    double *p = malloc((size_t)res->count * sizeof *p);
    if (!p)
        return -1;
    for (int64_t b = 0; b < res->count; b++)
        p[b] = res->chosen[b].percentile;
    qsort(p, (size_t)res->count, sizeof *p, cmp_double);
    size_t n = (size_t)res->count;
    j->p_min = p[0];
    j->p_max = p[n - 1];
    j->p_median = n % 2 ? p[n / 2] : p[n / 2 - 1] + (p[n / 2] - p[n / 2 - 1]) / 2.0;
    free(p);
    return 0;
}

static int lib_fail(run *r, qk_status st, const char *what, const char *name)
{
    cli_progress_clear(&r->prog);
    return cli_lib_error(r->ctx, st, "%s tensor '%s' of %s", what, name, r->a->input);
}

static int quantize_one(run *r, job *j)
{
    const qk_st_tensor *t = j->t;
    char err[512] = "";
    const void *data = NULL;
    void *copy = NULL;
    qk_status st = qk_st_tensor_aligned(t, &data, &copy, err, sizeof err);
    if (st != QK_OK) {
        cli_progress_clear(&r->prog);
        return cli_status_error(st, err, "reading tensor '%s' of %s", t->name, r->a->input);
    }
    j->sumsq = model_sum_squares(t->dtype, data, t->n);

    int rc = 0;
    qk_tensor x = qk_tensor_host(t->dtype, data, t->n);
    qk_layout layout;
    qm_entry_layout(&j->e, &layout);
    qk_block_calib_result res;
    memset(&res, 0, sizeof res);
    void *codes = NULL;
    size_t codes_bytes = 0;
    /* the code type follows from bits and scheme alone, so the codes can be
     * written in the same pass as the calibration (the tensor crosses to a GPU once) */
    const qk_calib_options *o = &r->a->calib;
    qk_qparams kind;
    memset(&kind, 0, sizeof kind);
    kind.bits = o->bits;
    kind.scheme = o->scheme;
    if ((st = qk_code_dtype(&kind, &j->e.codes_dtype)) != QK_OK) {
        rc = lib_fail(r, st, "code type of", t->name);
        goto done;
    }
    codes_bytes = (size_t)t->n * qk_dtype_size(j->e.codes_dtype);
    if (!(codes = qk_big_alloc(codes_bytes))) {
        cli_progress_clear(&r->prog);
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "allocating %zu bytes of codes for tensor '%s'", codes_bytes,
                              t->name);
        goto done;
    }
    qk_tensor ct = qk_tensor_host(j->e.codes_dtype, codes, t->n);
    if ((st = qk_calibrate_quantize_blocks(r->ctx, &x, &layout, o, &res, &ct)) != QK_OK) {
        rc = lib_fail(r, st, "calibrating and quantizing", t->name);
        goto done;
    }
    if (j->e.packed) {
        size_t packed_bytes = ((size_t)t->n + 1) / 2;
        uint8_t *packed = qk_big_alloc(packed_bytes);
        if (!packed) {
            cli_progress_clear(&r->prog);
            rc = cli_status_error(QK_ERR_NO_MEMORY, "", "allocating packed codes for tensor '%s'", t->name);
            goto done;
        }
        if ((st = qk_pack_int4(r->ctx, &ct, packed)) != QK_OK) {
            qk_big_free(packed, packed_bytes);
            rc = lib_fail(r, st, "packing the codes of", t->name);
            goto done;
        }
        qk_big_free(codes, codes_bytes);
        codes = packed;
        codes_bytes = packed_bytes;
        j->packed_shape[0] = (int64_t)packed_bytes;
    }
    j->scales = malloc((size_t)res.count * sizeof *j->scales);
    j->zeros = malloc((size_t)res.count * sizeof *j->zeros);
    if (!j->scales || !j->zeros || percentile_stats(&res, j) != 0) {
        cli_progress_clear(&r->prog);
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "parameters of tensor '%s'", t->name);
        goto done;
    }
    j->clipped = 0;
    for (int64_t b = 0; b < res.count; b++) {
        j->scales[b] = res.params[b].scale;
        j->zeros[b] = res.params[b].zero_point;
        j->clipped += res.chosen[b].clipped;
    }
    j->blocks_shape[0] = res.count;
    j->counted = res.n;
    j->mse = res.mse;
    j->sse = res.mse * (double)res.n;
    j->codes = codes;
    j->codes_bytes = codes_bytes;
    codes = NULL;
done:
    qk_big_free(codes, codes_bytes);
    qk_block_calib_result_release(&res);
    if (copy)
        qk_st_free_copy(copy, t->nbytes);
    return rc;
}

/* ---- writing ----------------------------------------------------------------------- */

static int write_output(run *r, uint64_t *bytes_out)
{
    const qm_args *a = r->a;
    model_out out;
    memset(&out, 0, sizeof out);
    size_t n_entries = 0;
    for (size_t i = 0; i < r->n_jobs; i++)
        n_entries += r->jobs[i].quantize;
    qm_entry *entries = calloc(n_entries ? n_entries : 1, sizeof *entries);
    size_t n_meta = qk_st_metadata_count(r->f);
    const char **keys = calloc(n_meta + 1, sizeof *keys), **values = calloc(n_meta + 1, sizeof *values);
    char *meta = NULL;
    int rc = 0, oom = !entries || !keys || !values;

    size_t k = 0;
    for (size_t i = 0; !oom && i < r->n_jobs; i++) {
        job *j = &r->jobs[i];
        const qk_st_tensor *t = j->t;
        if (!j->quantize) {
            oom = model_out_add(&out, t->name, t->st_dtype, t->ndim, t->shape, t->data) != 0;
            continue;
        }
        entries[k++] = j->e;
        oom = (j->e.packed ? model_out_add(&out, t->name, "U8", 1, j->packed_shape, j->codes)
                           : model_out_add(&out, t->name, qk_st_dtype_string(j->e.codes_dtype), t->ndim, t->shape,
                                           j->codes)) != 0 ||
              model_out_add(&out, j->e.scale_name, "F32", 1, j->blocks_shape, j->scales) != 0 ||
              model_out_add(&out, j->e.zero_name, "I32", 1, j->blocks_shape, j->zeros) != 0;
    }
    for (size_t i = 0; !oom && i < n_meta; i++)
        qk_st_metadata_at(r->f, i, &keys[i], &values[i]);
    if (!oom) {
        meta = qm_format_build(entries, n_entries, cli_objective_name(a->calib.objective));
        oom = meta == NULL;
        keys[n_meta] = QM_METADATA_KEY;
        values[n_meta] = meta;
    }
    if (oom) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "preparing %s", a->output);
    } else {
        char note[300];
        snprintf(note, sizeof note, "writing %.200s ...", a->output);
        cli_progress_note(&r->prog, note);
        rc = model_write(a->output, &out, keys, values, n_meta + 1, bytes_out);
        cli_progress_clear(&r->prog);
    }
    free(meta);
    free(keys);
    free(values);
    free(entries);
    model_out_free(&out);
    return rc;
}

/* ---- report -------------------------------------------------------------------------- */

static double sqnr_db(double sumsq, double sse)
{
    return sse > 0.0 ? 10.0 * log10(sumsq / sse) : INFINITY;
}

static void json_shape(cli_json *js, cJSON *parent, const qk_st_tensor *t)
{
    cJSON *s = cli_json_array(js, parent, "shape");
    for (int d = 0; d < t->ndim; d++)
        cli_json_int(js, s, NULL, t->shape[d]);
}

typedef struct totals {
    size_t quantized, kept;
    int64_t elements, clipped;
    double sse, sumsq;
    uint64_t bytes_in, bytes_out;
} totals;

static int report_json(const run *r, const totals *tot)
{
    const qm_args *a = r->a;
    cli_json js;
    cli_json_init(&js);
    cJSON *root = js.root;
    cli_json_string(&js, root, "backend", qk_backend_name(qk_context_backend(r->ctx)));
    cli_json_string(&js, root, "input", a->input);
    cli_json_string(&js, root, "output", a->output);
    cli_json_int(&js, root, "bits", a->calib.bits);
    cli_json_string(&js, root, "scheme", cli_scheme_name(a->calib.scheme));
    cli_json_bool(&js, root, "narrow_range", a->calib.narrow_range);
    cli_json_bool(&js, root, "include_zero", a->calib.include_zero);
    cli_json_bool(&js, root, "pack4", a->pack4);
    cli_json_string(&js, root, "granularity", r->gran_text);
    cli_json_string(&js, root, "calib", r->calib_text);
    cli_json_string(&js, root, "objective", cli_objective_name(a->calib.objective));
    cJSON *sel = cli_json_object(&js, root, "selection");
    cli_json_string(&js, sel, "rule", r->rule);
    cJSON *inc = cli_json_array(&js, sel, "include"), *exc = cli_json_array(&js, sel, "exclude");
    for (size_t i = 0; i < a->include.n; i++)
        cli_json_string(&js, inc, NULL, a->include.src[i]);
    for (size_t i = 0; i < a->exclude.n; i++)
        cli_json_string(&js, exc, NULL, a->exclude.src[i]);

    cJSON *arr = cli_json_array(&js, root, "tensors");
    for (size_t i = 0; i < r->n_jobs; i++) {
        const job *j = &r->jobs[i];
        cJSON *o = cli_json_object(&js, arr, NULL);
        cli_json_string(&js, o, "name", j->t->name);
        json_shape(&js, o, j->t);
        cli_json_string(&js, o, "dtype", j->t->st_dtype);
        cli_json_bool(&js, o, "quantized", j->quantize);
        if (!j->quantize) {
            cli_json_string(&js, o, "reason", j->reason);
            static const char *const nulls[] = {"granularity", "method", "blocks", "percentile_min",
                                                "percentile_median", "percentile_max", "mse", "sqnr_db", "clipped"};
            for (size_t k = 0; k < sizeof nulls / sizeof nulls[0]; k++)
                cli_json_null(&js, o, nulls[k]);
            continue;
        }
        cli_json_string(&js, o, "granularity", j->granularity);
        cli_json_string(&js, o, "method", r->calib_text);
        cli_json_int(&js, o, "blocks", j->e.blocks);
        cli_json_double(&js, o, "percentile_min", j->p_min);
        cli_json_double(&js, o, "percentile_median", j->p_median);
        cli_json_double(&js, o, "percentile_max", j->p_max);
        cli_json_double(&js, o, "mse", j->mse);
        cli_json_double(&js, o, "sqnr_db", sqnr_db(j->sumsq, j->sse)); /* lossless: null */
        cli_json_int(&js, o, "clipped", j->clipped);
        cli_json_int(&js, o, "elements", j->counted);
        cli_json_string(&js, o, "codes_dtype", j->e.packed ? "U8" : qk_st_dtype_string(j->e.codes_dtype));
        cli_json_bool(&js, o, "packed", j->e.packed);
        cli_json_double(&js, o, "sum_squares", j->sumsq);
    }
    cJSON *t = cli_json_object(&js, root, "totals");
    cli_json_uint(&js, t, "tensors", r->n_jobs);
    cli_json_uint(&js, t, "tensors_quantized", tot->quantized);
    cli_json_uint(&js, t, "tensors_kept", tot->kept);
    cli_json_int(&js, t, "elements_quantized", tot->elements);
    cli_json_uint(&js, t, "bytes_in", tot->bytes_in);
    cli_json_uint(&js, t, "bytes_out", tot->bytes_out);
    cli_json_double(&js, t, "mse", tot->elements ? tot->sse / (double)tot->elements : NAN);
    cli_json_double(&js, t, "sqnr_db", tot->elements ? sqnr_db(tot->sumsq, tot->sse) : NAN); /* inf, none: null */
    cli_json_int(&js, t, "clipped", tot->clipped);
    int rc = cli_json_emit(&js);
    cli_json_free(&js);
    return rc;
}

static void format_sqnr(char *buf, size_t len, double db)
{
    if (isinf(db))
        snprintf(buf, len, "inf");
    else
        snprintf(buf, len, "%.2f", db);
}

static void report_text(const run *r, const totals *tot)
{
    const qm_args *a = r->a;
    printf("%s -> %s: %zu of %zu tensors quantized, backend %s\n", a->input, a->output, tot->quantized, r->n_jobs,
           qk_backend_name(qk_context_backend(r->ctx)));
    printf("  %d-bit %s%s%s, granularity %s, calib %s%s%s\n", a->calib.bits, cli_scheme_name(a->calib.scheme),
           a->calib.narrow_range ? " narrow-range" : "", a->calib.include_zero ? " include-zero" : "", r->gran_text,
           r->calib_text, a->pack4 ? ", 4-bit codes packed" : "",
           a->calib.method == QK_CALIB_GRIDSEARCH ? (a->calib.objective == QK_OBJECTIVE_MSE_INLIERS
                                                         ? " (objective mse-inliers)"
                                                         : " (objective mse)")
                                                  : "");
    printf("  selection: %s\n", r->rule);
    if (tot->quantized) {
        size_t w = 4;
        for (size_t i = 0; i < r->n_jobs; i++)
            if (r->jobs[i].quantize && strlen(r->jobs[i].t->name) > w)
                w = strlen(r->jobs[i].t->name);
        if (w > 60)
            w = 60;
        printf("\n  %-*s %-14s %-5s %-11s %7s %22s %12s %8s %9s\n", (int)w, "name", "shape", "dtype", "granularity",
               "blocks", "percentile min/med/max", "mse", "sqnr_db", "clipped");
        for (size_t i = 0; i < r->n_jobs; i++) {
            const job *j = &r->jobs[i];
            if (!j->quantize)
                continue;
            char shape[64], pct[64], sq[16];
            model_format_shape(j->t->ndim, j->t->shape, shape, sizeof shape);
            snprintf(pct, sizeof pct, "%g/%g/%g", j->p_min, j->p_median, j->p_max);
            format_sqnr(sq, sizeof sq, sqnr_db(j->sumsq, j->sse));
            printf("  %-*s %-14s %-5s %-11s %7" PRId64 " %22s %12.5g %8s %9" PRId64 "\n", (int)w, j->t->name, shape,
                   j->t->st_dtype, j->granularity, j->e.blocks, pct, j->mse, sq, j->clipped);
        }
        printf("\n");
    }
    /* Kept tensors, summed up by reason. */
    static const char *const reasons[] = {"fewer than 2 dimensions", "not a float tensor", "excluded by --exclude",
                                          "empty"};
    printf("  kept byte for byte: %zu tensor%s", tot->kept, tot->kept == 1 ? "" : "s");
    const char *sep = " (";
    for (size_t k = 0; k < sizeof reasons / sizeof reasons[0]; k++) {
        size_t c = 0;
        for (size_t i = 0; i < r->n_jobs; i++)
            c += !r->jobs[i].quantize && strcmp(r->jobs[i].reason, reasons[k]) == 0;
        if (c) {
            printf("%s%zu %s", sep, c, reasons[k]);
            sep = ", ";
        }
    }
    printf("%s\n", sep[0] == ',' ? ")" : "");
    char sq[16];
    format_sqnr(sq, sizeof sq, sqnr_db(tot->sumsq, tot->sse));
    if (tot->elements)
        printf("  total: %" PRId64 " values quantized, mse %.6g, sqnr %s dB, clipped %" PRId64 "\n", tot->elements,
               tot->sse / (double)tot->elements, sq, tot->clipped);
    else
        printf("  total: nothing quantized\n");
    char in[16], out[16];
    cli_format_size(tot->bytes_in, in, sizeof in);
    cli_format_size(tot->bytes_out, out, sizeof out);
    printf("  size: %s -> %s (%.1f%%)\n", in, out,
           tot->bytes_in ? 100.0 * (double)tot->bytes_out / (double)tot->bytes_in : 0.0);
}

/* ---- the command ------------------------------------------------------------------------ */

/* Every tensor, kept ones too (the writer copies them from the mapping), in
 * the order the loop visits them: file order. */
static prefetcher *start_prefetch(const run *r)
{
    prefetch_range *ranges = malloc((r->n_jobs ? r->n_jobs : 1) * sizeof *ranges);
    if (!ranges)
        return NULL; /* no read-ahead, no harm */
    for (size_t i = 0; i < r->n_jobs; i++)
        ranges[i] = (prefetch_range){r->jobs[i].t->data, r->jobs[i].t->nbytes};
    prefetcher *p = prefetch_start(ranges, r->n_jobs);
    free(ranges);
    return p;
}

static int run_model(run *r)
{
    const qm_args *a = r->a;
    char err[512] = "";
    qk_status st = qk_st_open(a->input, &r->f, err, sizeof err);
    if (st != QK_OK)
        return cli_status_error(st, err, "reading %s", a->input);
    if (qk_st_metadata_get(r->f, QM_METADATA_KEY))
        return cli_status_error(QK_ERR_INVALID_ARG, "run qkern dequantize-model on it first",
                                "%s already holds qkern-quantized tensors (metadata \"%s\")", a->input,
                                QM_METADATA_KEY);
    int rc = plan(r);
    if (rc == 0)
        rc = model_probe_output(a->output);
    if (rc == 0)
        rc = cli_context_open(a->backend, &r->ctx);
    if (rc)
        return rc;

    uint64_t total_bytes = 0, done_bytes = 0;
    for (size_t i = 0; i < r->n_jobs; i++)
        total_bytes += r->jobs[i].t->nbytes;
    cli_progress_start(&r->prog, "tensors", r->n_jobs, total_bytes);
    cli_progress_update(&r->prog, 0, 0, 1);
    totals tot;
    memset(&tot, 0, sizeof tot);
    r->pf = start_prefetch(r);
    for (size_t i = 0; i < r->n_jobs; i++) {
        job *j = &r->jobs[i];
        prefetch_advance(r->pf, i);
        if (j->quantize) {
            if ((rc = quantize_one(r, j)) != 0)
                return rc;
            tot.quantized++;
            tot.elements += j->counted;
            tot.clipped += j->clipped;
            tot.sse += j->sse;
            tot.sumsq += j->sumsq;
        } else {
            tot.kept++;
        }
        done_bytes += j->t->nbytes;
        cli_progress_update(&r->prog, i + 1, done_bytes, i + 1 == r->n_jobs);
    }
    prefetch_stop(r->pf); /* done: it has nothing left to read ahead of */
    r->pf = NULL;
    if ((rc = write_output(r, &tot.bytes_out)) != 0)
        return rc;
    tot.bytes_in = model_file_size(a->input);
    if (a->json)
        return report_json(r, &tot);
    report_text(r, &tot);
    return CLI_EXIT_OK;
}

int cmd_quantize_model(int argc, char **argv)
{
    qm_args a;
    memset(&a, 0, sizeof a);
    qk_calib_options_default(&a.calib);
    a.backend = QK_BACKEND_AUTO;
    a.granularity = QK_PER_CHANNEL;
    a.axis = 0;
    int rc = parse(argc, argv, &a);
    if (rc == 0)
        rc = cli_check_output(CMD, &a.output, &a.input, 1);
    if (rc == 0) {
        run r;
        memset(&r, 0, sizeof r);
        r.a = &a;
        cli_calib_describe(&a.calib, r.calib_text, sizeof r.calib_text);
        qm_granularity_describe(a.granularity, a.axis, a.group, r.gran_text, sizeof r.gran_text);
        describe_rule(&r);
        rc = run_model(&r);
        prefetch_stop(r.pf); /* still running when a tensor failed */
        cli_progress_clear(&r.prog);
        free_jobs(&r);
        if (r.ctx)
            qk_context_destroy(r.ctx);
        qk_st_close(r.f);
    }
    free_patterns(&a.include);
    free_patterns(&a.exclude);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
