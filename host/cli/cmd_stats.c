/* qkern stats: exact min, max and percentiles (numpy's "linear" method) of a
 * tensor, all percentiles from one qk_percentiles call (one selection pass). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"
#include "cli.h"
#include "messages.h"
#include "common_opts.h"
#include "input.h"
#include "json_out.h"
#include "options.h"
#include "qkern.h"
#include "report.h"

/* Shown when no --percentile is given: the quartiles and the usual clip points. */
static const double default_percentiles[] = {1.0, 25.0, 50.0, 75.0, 99.0};

void cmd_stats_usage(void)
{
    fputs("Usage: qkern stats IN.npy [--percentile P]... [--ignore-nonfinite] [--backend B] [--json]\n"
          "\n"
          "Exact min, max and percentiles of a float32/float64 .npy, equal to\n"
          "numpy.min/max/percentile (method \"linear\") bit for bit.\n"
          "\n"
          "Options:\n"
          "  -p, --percentile P    a percentile in [0, 100]; repeat it or give a comma list\n"
          "                        (default 1,25,50,75,99)\n"
          "  --ignore-nonfinite    skip NaN/Inf (like numpy.nanpercentile) instead of failing\n"
          "  --backend B           auto|cpu|opencl|cuda (default auto)\n"
          "  --json                print {\"backend\",\"n\",\"nonfinite\",\"min\",\"max\",\n"
          "                        \"percentiles\":[{\"p\",\"value\"}]}; n counts the values used\n"
          "  -h, --help            show this help\n",
          stdout);
}

typedef struct stats_args {
    const char *input;
    cli_doubles p;
    unsigned flags;
    qk_backend_kind backend;
    int json;
} stats_args;

/* Returns 0 to go on, CLI_EXIT_USAGE, or -1 when --help was printed. */
static int parse(int argc, char **argv, stats_args *a)
{
    static const cli_option opts[] = {CLI_OPT_PERCENTILE, CLI_OPT_IGNORE_NONFINITE, CLI_OPT_BACKEND, CLI_OPT_JSON};
    cli_parser p;
    cli_parser_init(&p, "stats", argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    int rc;
    const cli_common_args common_args = {"stats", cmd_stats_usage, &a->input, NULL, &a->backend, &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int common = cli_common_option(&common_args, id, value);
        if (common == CLI_COMMON_HANDLED)
            continue;
        if (common != CLI_COMMON_NOT_MINE)
            return common;
        switch (id) {
        case OPT_PERCENTILE:
            if ((rc = cli_parse_double_list("stats", "--percentile", value, 0.0, 100.0, &a->p)) != 0)
                return rc;
            break;
        case OPT_IGNORE_NONFINITE:
            a->flags |= QK_IGNORE_NONFINITE;
            cli_set_ignoring_nonfinite();
            break;
        }
    }
    if (!a->input)
        return cli_usage_error("stats", "missing input file");
    return 0;
}

static int report(const stats_args *a, const qk_context *ctx, const qk_npy *npy, const qk_minmax_result *mm,
                  const double *p, const double *values, size_t np)
{
    if (a->json) {
        cli_json j;
        cli_json_init(&j);
        cli_json_string(&j, j.root, "backend", qk_backend_name(qk_context_backend(ctx)));
        cli_json_int(&j, j.root, "n", mm->n_finite);
        cli_json_int(&j, j.root, "nonfinite", mm->nonfinite_count);
        cli_json_double(&j, j.root, "min", mm->min);
        cli_json_double(&j, j.root, "max", mm->max);
        cJSON *list = cli_json_array(&j, j.root, "percentiles");
        for (size_t k = 0; k < np; k++) {
            cJSON *o = cli_json_object(&j, list, NULL);
            cli_json_double(&j, o, "p", p[k]);
            cli_json_double(&j, o, "value", values[k]);
        }
        int rc = cli_json_emit(&j);
        cli_json_free(&j);
        return rc;
    }
    char shape[128], num[32], pnum[32];
    cli_format_shape(npy, shape, sizeof shape);
    printf("%s: %s %s, backend %s\n", a->input, qk_dtype_name(npy->dtype), shape,
           qk_backend_name(qk_context_backend(ctx)));
    printf("  n          %" PRId64 "\n", mm->n_finite);
    if (mm->nonfinite_count)
        printf("  nonfinite  %" PRId64 " (skipped)\n", mm->nonfinite_count);
    cli_format_double(num, mm->min);
    printf("  min        %s\n", num);
    cli_format_double(num, mm->max);
    printf("  max        %s\n", num);
    for (size_t k = 0; k < np; k++) {
        char label[40];
        cli_format_double(pnum, p[k]);
        snprintf(label, sizeof label, "p%s", pnum);
        cli_format_double(num, values[k]);
        printf("  %-10s %s\n", label, num);
    }
    return CLI_EXIT_OK;
}

int cmd_stats(int argc, char **argv)
{
    stats_args a = {0};
    a.backend = QK_BACKEND_AUTO;
    qk_npy npy = {0};
    int mapped = 0;
    qk_context *ctx = NULL;
    double *values = NULL;
    int rc = parse(argc, argv, &a);
    if (rc)
        goto done;
    if ((rc = cli_open_float_input(a.input, &npy)) != 0)
        goto done;
    mapped = 1;
    if ((rc = cli_context_open(a.backend, &ctx)) != 0)
        goto done;

    const double *p = a.p.n ? a.p.v : default_percentiles;
    size_t np = a.p.n ? a.p.n : sizeof default_percentiles / sizeof default_percentiles[0];
    values = calloc(np, sizeof *values);
    if (!values) {
        rc = cli_error("out of memory");
        goto done;
    }

    qk_tensor x = qk_tensor_host(npy.dtype, npy.data, npy.n);
    qk_minmax_result mm;
    qk_status st = qk_minmax(ctx, &x, a.flags, &mm);
    if (st != QK_OK) {
        rc = cli_lib_error(ctx, st, "min/max of %s", a.input);
        goto done;
    }
    if (mm.n_finite == 0) {
        rc = cli_status_error(QK_ERR_INVALID_ARG, "every value is NaN or Inf", "statistics of %s", a.input);
        goto done;
    }
    st = qk_percentiles(ctx, &x, p, np, a.flags, values);
    if (st != QK_OK) {
        rc = cli_lib_error(ctx, st, "percentiles of %s", a.input);
        goto done;
    }
    rc = report(&a, ctx, &npy, &mm, p, values, np);

done:
    if (mapped)
        qk_npy_close(&npy);
    if (ctx)
        qk_context_destroy(ctx);
    free(values);
    cli_doubles_free(&a.p);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
