/* qkern quantize-model: quantize the weight tensors of a safetensors model
 * (one file, or a sharded checkpoint), tensor by tensor, into integer codes
 * plus per-block scales and zero points, and write a new model that `qkern
 * dequantize-model` turns back into floats (the format: docs/model-format.md).
 *
 * The work is the library's (qk_model_quantize, host/model/): this file parses
 * the options and prints the report. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "calib_args.h"
#include "cli.h"
#include "common_opts.h"
#include "gguf.h"
#include "json_out.h"
#include "model_cli.h"
#include "model_format.h"
#include "messages.h"
#include "model_io.h"
#include "outputs.h"
#include "options.h"
#include "qkern.h"
#include "report.h"

#define CMD "quantize-model"
#define MAX_PATTERNS 64
#define GROUP_MIN 32
#define GROUP_MAX 4096

void cmd_quantize_model_usage(void)
{
    fputs("Usage: qkern quantize-model MODEL.safetensors -o OUT.safetensors [OPTIONS]\n"
          "       qkern quantize-model MODEL.safetensors.index.json|MODEL_DIR -o OUT_DIR [OPTIONS]\n"
          "       qkern quantize-model MODEL.gguf|MODEL.safetensors|INDEX.json|DIR -o OUT.gguf --type T\n"
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
          "Sharded checkpoints: give the index (*.safetensors.index.json) or its directory;\n"
          "OUT_DIR gets the shards (same names and tensors per shard, or --max-shard-size),\n"
          "a new index whose weight_map lists the .qscale/.qzero tensors too, and a byte-\n"
          "for-byte copy of every other file of the input directory (config.json,\n"
          "tokenizer files ...; hidden files are skipped). OUT_DIR must not exist or be\n"
          "empty.\n"
          "\n"
          "Every tensor is streamed: the output's header is written first, then each piece\n"
          "of codes at its place as soon as it is computed, so memory stays near\n"
          "--memory-limit whatever the model's size. The output is written under a\n"
          "temporary name beside OUT (.OUT.tmp.XXXXXX) and renamed into place, so a failure\n"
          "never leaves a partial OUT and an existing OUT file stays untouched. Interrupts\n"
          "(Ctrl-C, SIGTERM) stop the run and remove everything it wrote, or take effect\n"
          "once the output is complete. The input is read ahead with posix_fadvise;\n"
          "QKERN_PREFETCH=0 in the environment turns that off.\n"
          "\n"
          "GGUF (--type T; T one of Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K\n"
          "F16 BF16 F32, any case): the output is one GGUF file (its name must end in\n"
          ".gguf, or - for stdout) for llama.cpp and the other ggml engines. Every selected float tensor\n"
          "(F32, F16, BF16, F64; the selection above) whose row length (last dimension) is\n"
          "a multiple of T's block size (32, 256 for the K-quants) becomes T, byte for byte\n"
          "what ggml's reference quantizer writes; all others keep their type (as\n"
          "llama-quantize --pure). From a GGUF input every key and value and every kept\n"
          "tensor is copied byte for byte; general.file_type is set to llama.cpp's\n"
          "LLAMA_FTYPE for T (K-quants: the _M value) and general.quantization_version to\n"
          "2. From safetensors, the tensor names are kept, the __metadata__ entries become\n"
          "string keys, F64/I8/I16/I32/I64 tensors keep their GGUF types and other\n"
          "integer or 8-bit float tensors (U8, BOOL, F8_*) are an error. A sharded input\n"
          "gives one GGUF file. --bits, --scheme, --granularity, --calib, --objective,\n"
          "--fence-k, --narrow-range, --include-zero, --ignore-nonfinite and --pack4\n"
          "do not apply.\n"
          "\n"
          "Options:\n"
          "  -o, --output OUT       where to write the quantized model (required)\n"
          "  --type T               write GGUF with ggml type T (see above)\n"
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
          MODEL_CLI_HELP
          "  --json                 print one JSON object: {\"backend\",\"input\",\"output\",\n"
          "                         \"bits\",\"scheme\",\"granularity\",\"calib\",\"objective\",\n"
          "                         \"selection\",\"tensors\":[{\"name\",\"shape\",\"dtype\",\n"
          "                         \"quantized\",\"blocks\",\"percentile_min\",\n"
          "                         \"percentile_median\",\"percentile_max\",\"mse\",\"sqnr_db\",\n"
          "                         \"clipped\",...}],\"totals\":{...},\"memory_limit\",\"jobs\",\n"
          "                         \"peak_rss\"} (SQNR of a lossless tensor: null;\n"
          "                         peak_rss: the process's VmHWM in bytes)\n"
          "  -h, --help             show this help\n"
          "\n"
          "With --type, --json has \"type\" and per tensor \"ggml_type\" (its type in the\n"
          "output), \"blocks\", \"mse\", \"sqnr_db\" (measured by dequantizing the written\n"
          "blocks on the same backend).\n"
          "\n"
          "Report: per quantized tensor its blocks, the chosen percentile (min/median/max\n"
          "over blocks; 100 for minmax), MSE and SQNR = 10*log10(sum x^2 / sum (x - x')^2)\n"
          "in dB over the tensor, and how many values were clipped; then totals. A progress\n"
          "bar is shown on stderr when it is a terminal.\n",
          stdout);
}

enum { OPT_GRANULARITY = 1000, OPT_INCLUDE, OPT_EXCLUDE, OPT_PACK4, OPT_TYPE };

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
    model_cli_args model;
    int ggml;                 /* --type given */
    qk_ggml_type type;
    const char *int_opt;      /* the first option of the integer codes given (none with --type) */
} qm_args;

static int parse_type(const char *value, qm_args *a)
{
    if (qk_ggml_type_parse(value, &a->type) != QK_OK || qk_ggml_type_info(a->type, NULL, NULL, NULL) != QK_OK)
        return cli_usage_error(CMD, "invalid --type '%s': expected one of Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K "
                               "Q5_K Q6_K F16 BF16 F32", value);
    a->ggml = 1;
    return 0;
}

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
        {"--pack4", NULL, 0, OPT_PACK4}, CLI_OPT_MEMORY_LIMIT, CLI_OPT_JOBS, CLI_OPT_MAX_SHARD_SIZE,
        {"--type", NULL, 1, OPT_TYPE},
    };
    cli_parser p;
    cli_parser_init(&p, CMD, argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    int rc;
    const cli_common_args common_args = {CMD, cmd_quantize_model_usage, &a->input, &a->output, &a->backend, &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        if ((rc = model_cli_option(CMD, id, value, &a->model)) != 1) {
            if (rc)
                return rc;
            continue;
        }
        int common = cli_common_option(&common_args, id, value);
        if (common == CLI_COMMON_HANDLED)
            continue;
        if (common != CLI_COMMON_NOT_MINE)
            return common;
        if (id != OPT_INCLUDE && id != OPT_EXCLUDE && id != OPT_TYPE && !a->int_opt)
            a->int_opt = p.opt_name; /* every other option here is one of the integer codes' */
        switch (id) {
        case OPT_TYPE:
            if ((rc = parse_type(value, a)) != 0)
                return rc;
            break;
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
    if (a->ggml && a->int_opt)
        return cli_usage_error(CMD, "%s is an option of qkern's integer codes; it does not apply with --type", a->int_opt);
    if (a->ggml && strcmp(a->output, "-") != 0 && !model_cli_has_suffix(a->output, ".gguf"))
        return cli_usage_error(CMD, "--type writes GGUF: the output %s must end in .gguf", a->output);
    if (a->ggml && a->model.max_shard_size)
        return cli_usage_error(CMD, "--max-shard-size: sharded GGUF output is not supported (one .gguf is written)");
    if (!a->ggml && model_cli_has_suffix(a->output, ".gguf"))
        return cli_usage_error(CMD, "the output %s is GGUF: choose its ggml type with --type (e.g. --type Q4_K)",
                               a->output);
    if (!a->ggml && model_cli_has_suffix(a->input, ".gguf"))
        return cli_usage_error(CMD, "the input %s is GGUF: quantize it with --type into a .gguf output", a->input);
    if (a->pack4 && a->calib.bits > 4)
        return cli_usage_error(CMD, "--pack4 needs --bits 4 or fewer (got %d)", a->calib.bits);
    return cli_calib_check(CMD, &a->calib);
}

typedef struct run {
    const qm_args *a;
    qk_model_report rep;
    char calib_text[128];
    char gran_text[32];
    char rule[1024];
} run;

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

/* ---- report -------------------------------------------------------------------------- */

static double sqnr_db(double sumsq, double sse)
{
    return sse > 0.0 ? 10.0 * log10(sumsq / sse) : INFINITY;
}

typedef struct totals {
    size_t quantized, kept;
    int64_t elements, clipped;
    double sse, sumsq;
} totals;

/* "  LABEL: N tensors (n1 reason1, n2 reason2)": the kept tensors by reason. */
static void print_kept(const qk_model_report *rep, const char *label, size_t kept, const char *const *reasons,
                       size_t n_reasons)
{
    printf("  %s: %zu tensor%s", label, kept, kept == 1 ? "" : "s");
    const char *sep = " (";
    for (size_t k = 0; k < n_reasons; k++) {
        size_t c = 0;
        for (size_t i = 0; i < rep->n_tensors; i++)
            c += !rep->tensors[i].converted && strcmp(rep->tensors[i].reason, reasons[k]) == 0;
        if (c) {
            printf("%s%zu %s", sep, c, reasons[k]);
            sep = ", ";
        }
    }
    printf("%s\n", sep[0] == ',' ? ")" : "");
}

/* The selection rule and the --include/--exclude patterns. */
static void json_selection(cli_json *js, cJSON *root, const char *rule, const qm_args *a)
{
    cJSON *sel = cli_json_object(js, root, "selection");
    cli_json_string(js, sel, "rule", rule);
    cJSON *inc = cli_json_array(js, sel, "include"), *exc = cli_json_array(js, sel, "exclude");
    for (size_t i = 0; i < a->include.n; i++)
        cli_json_string(js, inc, NULL, a->include.src[i]);
    for (size_t i = 0; i < a->exclude.n; i++)
        cli_json_string(js, exc, NULL, a->exclude.src[i]);
}

/* A tensor's entry: name, shape, dtype, whether quantized; the caller adds the rest. */
static cJSON *json_tensor(cli_json *js, cJSON *arr, const qk_model_tensor_report *t)
{
    cJSON *o = cli_json_object(js, arr, NULL);
    cli_json_string(js, o, "name", t->name);
    cJSON *shape = cli_json_array(js, o, "shape");
    for (int d = 0; d < t->ndim; d++)
        cli_json_int(js, shape, NULL, t->shape[d]);
    cli_json_string(js, o, "dtype", t->st_dtype);
    cli_json_bool(js, o, "quantized", t->converted);
    return o;
}

static void json_run(cli_json *js, const qk_model_report *rep)
{
    cli_json_uint(js, js->root, "memory_limit", rep->memory_limit);
    cli_json_int(js, js->root, "jobs", rep->jobs);
    cli_json_uint(js, js->root, "peak_rss", rep->peak_rss);
}

static int report_json(const run *r, const totals *tot)
{
    const qm_args *a = r->a;
    const qk_model_report *rep = &r->rep;
    cli_json js;
    cli_json_init(&js);
    cJSON *root = js.root;
    cli_json_string(&js, root, "backend", qk_backend_name(rep->backend));
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
    json_selection(&js, root, r->rule, a);

    cJSON *arr = cli_json_array(&js, root, "tensors");
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const qk_model_tensor_report *t = &rep->tensors[i];
        cJSON *o = json_tensor(&js, arr, t);
        if (!t->converted) {
            cli_json_string(&js, o, "reason", t->reason);
            static const char *const nulls[] = {"granularity", "method", "blocks", "percentile_min",
                                                "percentile_median", "percentile_max", "mse", "sqnr_db", "clipped"};
            for (size_t k = 0; k < sizeof nulls / sizeof nulls[0]; k++)
                cli_json_null(&js, o, nulls[k]);
            continue;
        }
        char gran[32];
        qm_granularity_describe(t->granularity, t->axis, t->group_size, gran, sizeof gran);
        cli_json_string(&js, o, "granularity", gran);
        cli_json_string(&js, o, "method", r->calib_text);
        cli_json_int(&js, o, "blocks", t->blocks);
        cli_json_double(&js, o, "percentile_min", t->p_min);
        cli_json_double(&js, o, "percentile_median", t->p_median);
        cli_json_double(&js, o, "percentile_max", t->p_max);
        cli_json_double(&js, o, "mse", t->mse);
        cli_json_double(&js, o, "sqnr_db", sqnr_db(t->sum_squares, t->sse)); /* lossless: null */
        cli_json_int(&js, o, "clipped", t->clipped);
        cli_json_int(&js, o, "elements", t->elements);
        cli_json_string(&js, o, "codes_dtype", t->packed ? "U8" : qk_st_dtype_string(t->codes_dtype));
        cli_json_bool(&js, o, "packed", t->packed);
        cli_json_double(&js, o, "sum_squares", t->sum_squares);
    }
    cJSON *tj = cli_json_object(&js, root, "totals");
    cli_json_uint(&js, tj, "tensors", rep->n_tensors);
    cli_json_uint(&js, tj, "tensors_quantized", tot->quantized);
    cli_json_uint(&js, tj, "tensors_kept", tot->kept);
    cli_json_int(&js, tj, "elements_quantized", tot->elements);
    cli_json_uint(&js, tj, "bytes_in", rep->bytes_in);
    cli_json_uint(&js, tj, "bytes_out", rep->bytes_out);
    cli_json_double(&js, tj, "mse", tot->elements ? tot->sse / (double)tot->elements : NAN);
    cli_json_double(&js, tj, "sqnr_db", tot->elements ? sqnr_db(tot->sumsq, tot->sse) : NAN); /* inf, none: null */
    cli_json_int(&js, tj, "clipped", tot->clipped);
    cli_json_uint(&js, tj, "shards_in", rep->shards_in);
    cli_json_uint(&js, tj, "shards_out", rep->shards_out);
    cli_json_uint(&js, tj, "files_copied", rep->files_copied);
    json_run(&js, rep);
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
    const qk_model_report *rep = &r->rep;
    printf("%s -> %s: %zu of %zu tensors quantized, backend %s\n", a->input, a->output, tot->quantized, rep->n_tensors,
           qk_backend_name(rep->backend));
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
        for (size_t i = 0; i < rep->n_tensors; i++)
            if (rep->tensors[i].converted && strlen(rep->tensors[i].name) > w)
                w = strlen(rep->tensors[i].name);
        if (w > 60)
            w = 60;
        printf("\n  %-*s %-14s %-5s %-11s %7s %22s %12s %8s %9s\n", (int)w, "name", "shape", "dtype", "granularity",
               "blocks", "percentile min/med/max", "mse", "sqnr_db", "clipped");
        for (size_t i = 0; i < rep->n_tensors; i++) {
            const qk_model_tensor_report *t = &rep->tensors[i];
            if (!t->converted)
                continue;
            char shape[64], pct[64], sq[16], gran[32];
            model_format_shape(t->ndim, t->shape, shape, sizeof shape);
            snprintf(pct, sizeof pct, "%g/%g/%g", t->p_min, t->p_median, t->p_max);
            format_sqnr(sq, sizeof sq, sqnr_db(t->sum_squares, t->sse));
            qm_granularity_describe(t->granularity, t->axis, t->group_size, gran, sizeof gran);
            printf("  %-*s %-14s %-5s %-11s %7" PRId64 " %22s %12.5g %8s %9" PRId64 "\n", (int)w, t->name, shape,
                   t->st_dtype, gran, t->blocks, pct, t->mse, sq, t->clipped);
        }
        printf("\n");
    }
    /* Kept tensors, summed up by reason. */
    static const char *const reasons[] = {"fewer than 2 dimensions", "not a float tensor", "excluded by --exclude",
                                          "empty"};
    print_kept(rep, "kept byte for byte", tot->kept, reasons, sizeof reasons / sizeof reasons[0]);
    char sq[16];
    format_sqnr(sq, sizeof sq, sqnr_db(tot->sumsq, tot->sse));
    if (tot->elements)
        printf("  total: %" PRId64 " values quantized, mse %.6g, sqnr %s dB, clipped %" PRId64 "\n", tot->elements,
               tot->sse / (double)tot->elements, sq, tot->clipped);
    else
        printf("  total: nothing quantized\n");
    char in[16], out[16];
    cli_format_size(rep->bytes_in, in, sizeof in);
    cli_format_size(rep->bytes_out, out, sizeof out);
    printf("  size: %s -> %s (%.1f%%)\n", in, out,
           rep->bytes_in ? 100.0 * (double)rep->bytes_out / (double)rep->bytes_in : 0.0);
    if (rep->shards_out > 1 || rep->files_copied)
        printf("  shards: %zu -> %zu, %zu other file%s copied\n", rep->shards_in, rep->shards_out, rep->files_copied,
               rep->files_copied == 1 ? "" : "s");
}

/* ---- the GGUF report (--type) ---------------------------------------------------------- */

static int report_ggml_json(const run *r, const totals *tot)
{
    const qm_args *a = r->a;
    const qk_model_report *rep = &r->rep;
    cli_json js;
    cli_json_init(&js);
    cJSON *root = js.root;
    char tn[16];
    cli_json_string(&js, root, "backend", qk_backend_name(rep->backend));
    cli_json_string(&js, root, "input", a->input);
    cli_json_string(&js, root, "output", a->output);
    cli_json_string(&js, root, "format", "gguf");
    model_cli_type_name((int)a->type, tn, sizeof tn);
    cli_json_string(&js, root, "type", tn);
    json_selection(&js, root, r->rule, a);
    cJSON *arr = cli_json_array(&js, root, "tensors");
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const qk_model_tensor_report *t = &rep->tensors[i];
        cJSON *o = json_tensor(&js, arr, t);
        model_cli_type_name(t->ggml_type, tn, sizeof tn);
        cli_json_string(&js, o, "ggml_type", tn);
        if (!t->converted) {
            cli_json_string(&js, o, "reason", t->reason);
            static const char *const nulls[] = {"blocks", "mse", "sqnr_db"};
            for (size_t k = 0; k < sizeof nulls / sizeof nulls[0]; k++)
                cli_json_null(&js, o, nulls[k]);
            continue;
        }
        cli_json_int(&js, o, "blocks", t->blocks);
        cli_json_double(&js, o, "mse", t->mse);
        cli_json_double(&js, o, "sqnr_db", sqnr_db(t->sum_squares, t->sse)); /* lossless: null */
        cli_json_int(&js, o, "elements", t->elements);
        cli_json_double(&js, o, "sum_squares", t->sum_squares);
    }
    cJSON *tj = cli_json_object(&js, root, "totals");
    cli_json_uint(&js, tj, "tensors", rep->n_tensors);
    cli_json_uint(&js, tj, "tensors_quantized", tot->quantized);
    cli_json_uint(&js, tj, "tensors_kept", tot->kept);
    cli_json_int(&js, tj, "elements_quantized", tot->elements);
    cli_json_uint(&js, tj, "bytes_in", rep->bytes_in);
    cli_json_uint(&js, tj, "bytes_out", rep->bytes_out);
    cli_json_double(&js, tj, "mse", tot->elements ? tot->sse / (double)tot->elements : NAN);
    cli_json_double(&js, tj, "sqnr_db", tot->elements ? sqnr_db(tot->sumsq, tot->sse) : NAN);
    cli_json_uint(&js, tj, "shards_in", rep->shards_in);
    cli_json_uint(&js, tj, "shards_out", rep->shards_out);
    json_run(&js, rep);
    int rc = cli_json_emit(&js);
    cli_json_free(&js);
    return rc;
}

static void report_ggml_text(const run *r, const totals *tot)
{
    const qm_args *a = r->a;
    const qk_model_report *rep = &r->rep;
    char tn[16];
    model_cli_type_name((int)a->type, tn, sizeof tn);
    printf("%s -> %s: %zu of %zu tensors quantized to %s (GGUF), backend %s\n", a->input, a->output, tot->quantized,
           rep->n_tensors, tn, qk_backend_name(rep->backend));
    printf("  selection: %s, rows a multiple of the block size\n", r->rule);
    if (tot->quantized) {
        size_t w = 4;
        for (size_t i = 0; i < rep->n_tensors; i++)
            if (rep->tensors[i].converted && strlen(rep->tensors[i].name) > w)
                w = strlen(rep->tensors[i].name);
        if (w > 60)
            w = 60;
        printf("\n  %-*s %-14s %-5s %-5s %9s %12s %8s\n", (int)w, "name", "shape", "dtype", "type", "blocks", "mse",
               "sqnr_db");
        for (size_t i = 0; i < rep->n_tensors; i++) {
            const qk_model_tensor_report *t = &rep->tensors[i];
            if (!t->converted)
                continue;
            char shape[64], sq[16];
            model_format_shape(t->ndim, t->shape, shape, sizeof shape);
            format_sqnr(sq, sizeof sq, sqnr_db(t->sum_squares, t->sse));
            printf("  %-*s %-14s %-5s %-5s %9" PRId64 " %12.5g %8s\n", (int)w, t->name, shape, t->st_dtype, tn,
                   t->blocks, t->mse, sq);
        }
        printf("\n");
    }
    static const char *const reasons[] = {"fewer than 2 dimensions", "not a float tensor",
                                          "already in a ggml block type",
                                          "row length not a multiple of the block size", "excluded by --exclude",
                                          "empty"};
    print_kept(rep, "kept in their type", tot->kept, reasons, sizeof reasons / sizeof reasons[0]);
    char sq[16];
    format_sqnr(sq, sizeof sq, sqnr_db(tot->sumsq, tot->sse));
    if (tot->elements)
        printf("  total: %" PRId64 " values quantized, mse %.6g, sqnr %s dB\n", tot->elements,
               tot->sse / (double)tot->elements, sq);
    else
        printf("  total: nothing quantized\n");
    char in[16], out[16];
    cli_format_size(rep->bytes_in, in, sizeof in);
    cli_format_size(rep->bytes_out, out, sizeof out);
    printf("  size: %s -> %s (%.1f%%)\n", in, out,
           rep->bytes_in ? 100.0 * (double)rep->bytes_out / (double)rep->bytes_in : 0.0);
}

/* Tensors an --include pattern asked for that are not floating point: said,
 * so that a pattern that only matches integer tensors is not silently void. */
static void list_skipped_includes(const patterns *inc, const qk_model_report *rep)
{
    for (size_t p = 0; p < inc->n; p++) {
        size_t skipped = 0;
        for (size_t i = 0; i < rep->n_tensors; i++) {
            const qk_model_tensor_report *t = &rep->tensors[i];
            if (t->converted || t->reason == NULL || strcmp(t->reason, "not a float tensor") != 0 ||
                regexec(&inc->re[p], t->name, 0, NULL, 0) != 0)
                continue;
            if (skipped++ == 0)
                fprintf(stderr, "qkern %s: --include /%s/ matches tensors that are not floating point; skipped:", CMD,
                        inc->src[p]);
            fprintf(stderr, " %s (%s)", t->name, t->st_dtype);
        }
        if (skipped)
            fputc('\n', stderr);
    }
}

/* ---- the command ------------------------------------------------------------------------ */

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
        rc = model_cli_check_output(CMD, &a.output, a.input, a.model.max_shard_size);
    if (rc == 0) {
        run r;
        memset(&r, 0, sizeof r);
        r.a = &a;
        cli_calib_describe(&a.calib, r.calib_text, sizeof r.calib_text);
        qm_granularity_describe(a.granularity, a.axis, a.group, r.gran_text, sizeof r.gran_text);
        describe_rule(&r);
        qk_model_options o;
        qk_model_options_default(&o);
        model_cli_apply(&a.model, &o);
        o.calib = a.calib;
        o.granularity = a.granularity;
        o.axis = a.axis;
        o.group_size = a.group;
        o.pack4 = a.pack4;
        o.include = a.include.src;
        o.n_include = a.include.n;
        o.exclude = a.exclude.src;
        o.n_exclude = a.exclude.n;
        o.ggml = a.ggml;
        o.ggml_type = a.type;
        rc = model_cli_run(qk_model_quantize, a.input, a.output, &o, &r.rep);
        if (rc == 0)
            list_skipped_includes(&a.include, &r.rep);
        if (rc == 0) {
            totals tot;
            memset(&tot, 0, sizeof tot);
            for (size_t i = 0; i < r.rep.n_tensors; i++) {
                const qk_model_tensor_report *t = &r.rep.tensors[i];
                if (!t->converted) {
                    tot.kept++;
                    continue;
                }
                tot.quantized++;
                tot.elements += t->elements;
                tot.clipped += t->clipped;
                tot.sse += t->sse;
                tot.sumsq += t->sum_squares;
            }
            if (a.ggml && a.json)
                rc = report_ggml_json(&r, &tot);
            else if (a.ggml)
                report_ggml_text(&r, &tot);
            else if (a.json)
                rc = report_json(&r, &tot);
            else
                report_text(&r, &tot);
        }
        qk_model_report_release(&r.rep);
    }
    free_patterns(&a.include);
    free_patterns(&a.exclude);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
