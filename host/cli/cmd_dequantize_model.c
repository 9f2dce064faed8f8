/* qkern dequantize-model: rebuild the float tensors of a model written by
 * `qkern quantize-model` from its "qkern" metadata (docs/model-format.md).
 * The work is the library's (qk_model_dequantize, host/model/): this file
 * parses the options and prints the report. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "args.h"
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
#include "safetensors.h"

#define CMD "dequantize-model"

void cmd_dequantize_model_usage(void)
{
    fputs("Usage: qkern dequantize-model IN.safetensors -o OUT.safetensors [OPTIONS]\n"
          "       qkern dequantize-model IN.safetensors.index.json|IN_DIR -o OUT_DIR [OPTIONS]\n"
          "       qkern dequantize-model IN.gguf -o OUT.gguf|OUT.safetensors [--dtype f32|f16|bf16]\n"
          "\n"
          "Restore a model written by `qkern quantize-model`: every quantized tensor comes\n"
          "back under its original name, shape and dtype, x = (q - zero_point) * scale\n"
          "computed in float32 (float64 weights: widened from that float; float16 and\n"
          "bfloat16: rounded to nearest, ties to even). The .qscale/.qzero tensors and the\n"
          "\"qkern\" metadata entry are dropped; all other tensors and metadata are copied\n"
          "byte for byte. A file without \"qkern\" metadata is an error.\n"
          "\n"
          "A sharded model (an index or its directory) is restored into OUT_DIR, which\n"
          "must not exist or be empty: shards like the input's (or --max-shard-size), a\n"
          "new index and a copy of every other file of the input directory.\n"
          "\n"
          "Every tensor is streamed piece by piece to its place in the output, so memory\n"
          "stays near --memory-limit whatever the model's size. The output is written\n"
          "under a temporary name beside OUT (.OUT.tmp.XXXXXX) and renamed into place, so\n"
          "a failure or an interrupt never leaves a partial OUT. The input is read ahead\n"
          "with posix_fadvise; QKERN_PREFETCH=0 in the environment turns that off.\n"
          "\n"
          "GGUF input: every tensor in a ggml block type (Q4_0 ... Q8_0, Q2_K ... Q6_K)\n"
          "is restored as ggml's dequantize_row_* does, in float32, then rounded to --dtype\n"
          "(to nearest, ties to even); a float16 overflow is an error naming the tensor and\n"
          "the count of values beyond 65504, and nothing is written. Other tensors are\n"
          "copied byte for byte. Into OUT.gguf every key and value is copied byte for byte\n"
          "(general.file_type set to 0, 1 or 32 for f32, f16, bf16); into OUT.safetensors\n"
          "the string-valued keys become its metadata (other values are dropped) and the\n"
          "shapes are row-major (GGUF's dimensions reversed).\n"
          "\n"
          "Options:\n"
          "  -o, --output OUT       where to write the restored model (required)\n"
          "  --dtype D              GGUF input: f32 (default), f16 or bf16\n"
          MODEL_CLI_HELP
          "  --json                 print {\"backend\",\"input\",\"output\",\"tensors\":[{\"name\",\n"
          "                         \"shape\",\"dtype\",\"dequantized\",\"granularity\",\"blocks\",\n"
          "                         \"bits\",\"scheme\",\"packed\"}],\"totals\":{...},\n"
          "                         \"memory_limit\",\"jobs\",\"peak_rss\"} (VmHWM, bytes)\n"
          "  -h, --help             show this help\n",
          stdout);
}

typedef struct dm_args {
    const char *input, *output;
    qk_backend_kind backend;
    int json;
    model_cli_args model;
    const char *dtype_opt;    /* --dtype as given, or NULL */
    qk_dtype dtype;
} dm_args;

enum { OPT_DTYPE = 1200 };

static int parse(int argc, char **argv, dm_args *a)
{
    static const cli_option opts[] = {CLI_OPT_OUTPUT, CLI_OPT_BACKEND, CLI_OPT_JSON, CLI_OPT_MEMORY_LIMIT, CLI_OPT_JOBS,
                                      CLI_OPT_MAX_SHARD_SIZE, {"--dtype", NULL, 1, OPT_DTYPE}};
    cli_parser p;
    cli_parser_init(&p, CMD, argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    const cli_common_args common_args = {CMD, cmd_dequantize_model_usage, &a->input, &a->output, &a->backend,
                                         &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int rc = model_cli_option(CMD, id, value, &a->model);
        if (rc != 1) {
            if (rc)
                return rc;
            continue;
        }
        if (id == OPT_DTYPE) {
            if (strcasecmp(value, "f32") == 0 || strcasecmp(value, "float32") == 0)
                a->dtype = QK_F32;
            else if (strcasecmp(value, "f16") == 0 || strcasecmp(value, "float16") == 0)
                a->dtype = QK_F16;
            else if (strcasecmp(value, "bf16") == 0 || strcasecmp(value, "bfloat16") == 0)
                a->dtype = QK_BF16;
            else
                return cli_usage_error(CMD, "invalid --dtype '%s': expected f32, f16 or bf16", value);
            a->dtype_opt = value;
            continue;
        }
        rc = cli_common_option(&common_args, id, value);
        if (rc == CLI_COMMON_NOT_MINE) /* every option of the table is a shared one */
            return cli_usage_error(CMD, "option %s is not implemented", p.opt_name);
        if (rc != CLI_COMMON_HANDLED)
            return rc;
    }
    if (!a->input)
        return cli_usage_error(CMD, "missing input file");
    if (!a->output)
        return cli_usage_error(CMD, "missing -o OUT.safetensors");
    int gguf_in = model_cli_has_suffix(a->input, ".gguf");
    if (a->dtype_opt && !gguf_in)
        return cli_usage_error(CMD, "--dtype applies to a GGUF input (a qkern-quantized model gets its original dtypes)");
    if (model_cli_has_suffix(a->output, ".gguf") && !gguf_in)
        return cli_usage_error(CMD, "the output %s is GGUF: only a GGUF input is restored into GGUF", a->output);
    if (gguf_in && !model_cli_has_suffix(a->output, ".gguf") && !model_cli_has_suffix(a->output, ".safetensors"))
        return cli_usage_error(CMD, "the output %s of a GGUF input must end in .gguf or .safetensors", a->output);
    if (gguf_in && a->model.max_shard_size && model_cli_has_suffix(a->output, ".gguf"))
        return cli_usage_error(CMD, "--max-shard-size: sharded GGUF output is not supported");
    return 0;
}

static int cmp_entry(const void *x, const void *y)
{
    size_t a = (*(const qk_model_tensor_report *const *)x)->entry, b = (*(const qk_model_tensor_report *const *)y)->entry;
    return a < b ? -1 : a > b;
}

static int report(const dm_args *a, const qk_model_report *rep)
{
    size_t restored = 0, copied = 0;
    for (size_t i = 0; i < rep->n_tensors; i++) {
        restored += rep->tensors[i].converted;
        copied += !rep->tensors[i].converted;
    }
    if (!a->json) {
        printf("%s -> %s: %zu tensors dequantized, %zu copied byte for byte, backend %s\n", a->input, a->output,
               restored, copied, qk_backend_name(rep->backend));
        /* in the order of the metadata entries */
        const qk_model_tensor_report **v = malloc((restored ? restored : 1) * sizeof *v);
        if (!v)
            return cli_status_error(QK_ERR_NO_MEMORY, "", "printing the report");
        size_t k = 0;
        for (size_t i = 0; i < rep->n_tensors; i++)
            if (rep->tensors[i].converted)
                v[k++] = &rep->tensors[i];
        qsort(v, k, sizeof *v, cmp_entry);
        for (size_t i = 0; i < k; i++) {
            const qk_model_tensor_report *e = v[i];
            char shape[160], gran[32];
            model_format_shape(e->ndim, e->shape, shape, sizeof shape);
            if (e->ggml_type >= 0) {
                char tn[16];
                model_cli_type_name(e->ggml_type, tn, sizeof tn);
                printf("  %s %s %s <- %s, %" PRId64 " blocks\n", e->name, shape, e->st_dtype, tn, e->blocks);
                continue;
            }
            qm_granularity_describe(e->granularity, e->axis, e->group_size, gran, sizeof gran);
            printf("  %s %s %s <- %d-bit %s, %s, %" PRId64 " blocks%s\n", e->name, shape, e->st_dtype, e->bits,
                   e->scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric", gran, e->blocks, e->packed ? ", packed" : "");
        }
        free(v);
        char in[16], out[16];
        cli_format_size(rep->bytes_in, in, sizeof in);
        cli_format_size(rep->bytes_out, out, sizeof out);
        printf("  size: %s -> %s\n", in, out);
        if (rep->shards_out > 1 || rep->files_copied)
            printf("  shards: %zu -> %zu, %zu other file%s copied\n", rep->shards_in, rep->shards_out,
                   rep->files_copied, rep->files_copied == 1 ? "" : "s");
        return CLI_EXIT_OK;
    }
    cli_json js;
    cli_json_init(&js);
    cli_json_string(&js, js.root, "backend", qk_backend_name(rep->backend));
    cli_json_string(&js, js.root, "input", a->input);
    cli_json_string(&js, js.root, "output", a->output);
    cJSON *arr = cli_json_array(&js, js.root, "tensors");
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const qk_model_tensor_report *t = &rep->tensors[i];
        cJSON *o = cli_json_object(&js, arr, NULL);
        cli_json_string(&js, o, "name", t->name);
        cJSON *s = cli_json_array(&js, o, "shape");
        for (int d = 0; d < t->ndim; d++)
            cli_json_int(&js, s, NULL, t->shape[d]);
        cli_json_string(&js, o, "dtype", t->st_dtype);
        cli_json_bool(&js, o, "dequantized", t->converted);
        if (t->ggml_type >= 0) { /* a GGUF input: the tensor's type there */
            char tn[16];
            model_cli_type_name(t->ggml_type, tn, sizeof tn);
            cli_json_string(&js, o, "ggml_type", tn);
            if (t->converted)
                cli_json_int(&js, o, "blocks", t->blocks);
        } else if (t->converted) {
            char gran[32];
            qm_granularity_describe(t->granularity, t->axis, t->group_size, gran, sizeof gran);
            cli_json_string(&js, o, "granularity", gran);
            cli_json_int(&js, o, "blocks", t->blocks);
            cli_json_int(&js, o, "bits", t->bits);
            cli_json_string(&js, o, "scheme", t->scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric");
            cli_json_bool(&js, o, "packed", t->packed);
        }
    }
    cJSON *tot = cli_json_object(&js, js.root, "totals");
    cli_json_uint(&js, tot, "tensors", restored + copied);
    cli_json_uint(&js, tot, "tensors_dequantized", restored);
    cli_json_uint(&js, tot, "tensors_copied", copied);
    cli_json_uint(&js, tot, "bytes_in", rep->bytes_in);
    cli_json_uint(&js, tot, "bytes_out", rep->bytes_out);
    cli_json_uint(&js, tot, "shards_in", rep->shards_in);
    cli_json_uint(&js, tot, "shards_out", rep->shards_out);
    cli_json_uint(&js, tot, "files_copied", rep->files_copied);
    cli_json_uint(&js, js.root, "memory_limit", rep->memory_limit);
    cli_json_int(&js, js.root, "jobs", rep->jobs);
    cli_json_uint(&js, js.root, "peak_rss", rep->peak_rss);
    int rc = cli_json_emit(&js);
    cli_json_free(&js);
    return rc;
}

int cmd_dequantize_model(int argc, char **argv)
{
    dm_args a;
    memset(&a, 0, sizeof a);
    a.backend = QK_BACKEND_AUTO;
    int rc = parse(argc, argv, &a);
    if (rc == 0)
        rc = model_cli_check_output(CMD, &a.output, a.input, a.model.max_shard_size);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    qk_model_options o;
    qk_model_options_default(&o);
    model_cli_apply(&a.model, &o);
    o.out_dtype = a.dtype;
    qk_model_report rep;
    rc = model_cli_run(qk_model_dequantize, a.input, a.output, &o, &rep);
    if (rc == 0)
        rc = report(&a, &rep);
    qk_model_report_release(&rep);
    return rc;
}
