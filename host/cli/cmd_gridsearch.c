/* qkern gridsearch: score every clipping percentile of a grid and show the
 * table, so the choice qkern quantize --calib gridsearch makes can be seen and
 * checked. One qk_calibrate call: one selection, one fused error pass. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "calib_args.h"
#include "cli.h"
#include "messages.h"
#include "common_opts.h"
#include "input.h"
#include "json_out.h"
#include "options.h"
#include "qkern.h"
#include "report.h"

void cmd_gridsearch_usage(void)
{
    fputs("Usage: qkern gridsearch IN.npy [OPTIONS]\n"
          "\n"
          "Evaluate clipping at each percentile P of a grid (asymmetric: range\n"
          "[pct(100-P), pct(P)], P in [50, 100]; symmetric: |x| at pct(P), P in (0, 100])\n"
          "and report every candidate and the best. Candidates within 1e-9 relative of the\n"
          "best score tie; ties go to the larger P.\n"
          "\n"
          "Options:\n"
          "  --grid START:STOP:STEP  P = START, START+STEP, ... up to STOP (default 99:100:0.01)\n"
          "  --grid-list P1,P2,...   an explicit list of P instead of --grid\n"
          "  --objective O           mse (over all values; default) or mse-inliers (over the\n"
          "                          values inside Tukey's fences [Q1-k*IQR, Q3+k*IQR])\n"
          "  --fence-k K             k of the fences (default 3)\n"
          "  --bits B                bit width, 2..16 (default 8)\n"
          "  --scheme S              asymmetric (default) or symmetric\n"
          "  --include-zero          widen the asymmetric range to contain 0\n"
          "  --narrow-range          symmetric codes -(2^(B-1)-1)..2^(B-1)-1\n"
          "  --ignore-nonfinite      skip NaN/Inf instead of failing\n"
          "  --backend B             auto|cpu|opencl|cuda (default auto)\n"
          "  --json                  print {\"best\":{\"percentile\",\"mse\",\"mse_inliers\",\"scale\",\n"
          "                          \"zero_point\",\"clip_lo\",\"clip_hi\",\"clipped\"},\"objective\",\n"
          "                          \"fence_lo\",\"fence_hi\",\"n\",\"n_inliers\",\"candidates\":[{\"percentile\",\n"
          "                          \"clip_lo\",\"clip_hi\",\"scale\",\"zero_point\",\"clipped\",\"mse\",\n"
          "                          \"mse_inliers\"}]}\n"
          "  -h, --help              show this help\n",
          stdout);
}

typedef struct gridsearch_args {
    const char *input;
    qk_calib_options calib;
    cli_doubles list;
    int have_grid;
    qk_backend_kind backend;
    int json;
} gridsearch_args;

/* Returns 0 to go on, CLI_EXIT_USAGE, or -1 when --help was printed. */
static int parse(int argc, char **argv, gridsearch_args *a)
{
    static const cli_option opts[] = {
        CLI_OPT_GRID, CLI_OPT_GRID_LIST, CLI_OPT_OBJECTIVE, CLI_OPT_FENCE_K, CLI_OPT_BITS, CLI_OPT_SCHEME,
        CLI_OPT_INCLUDE_ZERO, CLI_OPT_NARROW_RANGE, CLI_OPT_IGNORE_NONFINITE, CLI_OPT_BACKEND, CLI_OPT_JSON,
    };
    cli_parser p;
    cli_parser_init(&p, "gridsearch", argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    int rc;
    const cli_common_args common_args = {"gridsearch", cmd_gridsearch_usage, &a->input, NULL, &a->backend, &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int common = cli_common_option(&common_args, id, value);
        if (common == CLI_COMMON_HANDLED)
            continue;
        if (common != CLI_COMMON_NOT_MINE)
            return common;
        switch (id) {
        case OPT_GRID:
            if ((rc = cli_parse_grid("gridsearch", "--grid", value, &a->calib)) != 0)
                return rc;
            a->have_grid = 1;
            break;
        case OPT_GRID_LIST:
            if ((rc = cli_parse_double_list("gridsearch", "--grid-list", value, 0.0, 100.0, &a->list)) != 0)
                return rc;
            if (a->list.n > CLI_MAX_GRID_POINTS)
                return cli_usage_error("gridsearch", "--grid-list has more than %d points", CLI_MAX_GRID_POINTS);
            break;
        default:
            rc = cli_calib_option("gridsearch", id, value, &a->calib);
            if (rc == CLI_CALIB_NOT_MINE) /* an option in the table without a case: a bug here */
                return cli_usage_error("gridsearch", "option %s is not implemented", p.opt_name);
            if (rc)
                return rc;
            break;
        }
    }
    if (!a->input)
        return cli_usage_error("gridsearch", "missing input file");
    if (a->have_grid && a->list.n)
        return cli_usage_error("gridsearch", "--grid and --grid-list exclude each other");
    a->calib.method = QK_CALIB_GRIDSEARCH;
    if (a->list.n) {
        a->calib.grid = a->list.v;
        a->calib.grid_len = a->list.n;
    }
    return cli_calib_check("gridsearch", &a->calib);
}

static void add_candidate(cli_json *j, cJSON *o, const qk_candidate *c)
{
    cli_json_double(j, o, "percentile", c->percentile);
    cli_json_double(j, o, "clip_lo", c->clip_lo);
    cli_json_double(j, o, "clip_hi", c->clip_hi);
    cli_json_double(j, o, "scale", (double)c->scale);
    cli_json_int(j, o, "zero_point", c->zero_point);
    cli_json_int(j, o, "clipped", c->clipped);
    cli_json_double(j, o, "mse", c->mse);
    cli_json_double(j, o, "mse_inliers", c->mse_inliers);
}

static int report_json(const gridsearch_args *a, const qk_context *ctx, const qk_calib_result *r)
{
    cli_json j;
    cli_json_init(&j);
    cJSON *best = cli_json_object(&j, j.root, "best");
    add_candidate(&j, best, &r->candidates[r->best]);
    cli_json_string(&j, j.root, "backend", qk_backend_name(qk_context_backend(ctx)));
    cli_json_int(&j, j.root, "bits", r->params.bits);
    cli_json_string(&j, j.root, "scheme", cli_scheme_name(r->params.scheme));
    cli_json_string(&j, j.root, "objective", cli_objective_name(a->calib.objective));
    cli_json_double(&j, j.root, "fence_lo", r->fence_lo);
    cli_json_double(&j, j.root, "fence_hi", r->fence_hi);
    cli_json_int(&j, j.root, "n", r->n);
    cli_json_int(&j, j.root, "n_inliers", r->n_inliers);
    cli_json_bool(&j, j.root, "at_grid_edge", cli_grid_edge(r, r->params.scheme) != 0);
    cJSON *list = cli_json_array(&j, j.root, "candidates");
    for (size_t k = 0; k < r->n_candidates; k++)
        add_candidate(&j, cli_json_object(&j, list, NULL), &r->candidates[k]);
    int rc = cli_json_emit(&j);
    cli_json_free(&j);
    return rc;
}

static void report_text(const gridsearch_args *a, const qk_context *ctx, const qk_calib_result *r)
{
    char lo[32], hi[32];
    cli_format_double(lo, r->fence_lo);
    cli_format_double(hi, r->fence_hi);
    printf("%s: %" PRId64 " values, %d-bit %s, objective %s, backend %s\n", a->input, r->n, r->params.bits,
           cli_scheme_name(r->params.scheme), cli_objective_name(a->calib.objective),
           qk_backend_name(qk_context_backend(ctx)));
    printf("fences [%s, %s] (k = %g): %" PRId64 " inliers\n\n", lo, hi, a->calib.fence_k, r->n_inliers);
    printf("  %12s %14s %14s %13s %11s %10s %13s %13s\n", "percentile", "clip_lo", "clip_hi", "scale",
           "zero_point", "clipped", "mse", "mse_inliers");
    for (size_t k = 0; k < r->n_candidates; k++) {
        const qk_candidate *c = &r->candidates[k];
        printf("%c %12.8g %14.7g %14.7g %13.7g %11" PRId32 " %10" PRId64 " %13.6g %13.6g\n", k == r->best ? '*' : ' ',
               c->percentile, c->clip_lo, c->clip_hi, (double)c->scale, c->zero_point, c->clipped, c->mse,
               c->mse_inliers);
    }
    printf("\n* best: percentile %.8g\n", r->candidates[r->best].percentile);
}

int cmd_gridsearch(int argc, char **argv)
{
    gridsearch_args a;
    memset(&a, 0, sizeof a);
    qk_calib_options_default(&a.calib);
    a.backend = QK_BACKEND_AUTO;
    qk_npy npy;
    int mapped = 0;
    qk_context *ctx = NULL;
    qk_calib_result res;
    memset(&res, 0, sizeof res);

    int rc = parse(argc, argv, &a);
    if (rc)
        goto done;
    if ((rc = cli_open_float_input(a.input, &npy)) != 0)
        goto done;
    mapped = 1;
    if ((rc = cli_context_open(a.backend, &ctx)) != 0)
        goto done;

    qk_tensor x = qk_tensor_host(npy.dtype, npy.data, npy.n);
    qk_status st = qk_calibrate(ctx, &x, &a.calib, &res);
    if (st != QK_OK) {
        rc = cli_lib_error(ctx, st, "grid search on %s", a.input);
        goto done;
    }
    if (res.best >= res.n_candidates) {
        rc = cli_status_error(QK_ERR_BACKEND, "no candidate row for the chosen parameters", "grid search on %s",
                              a.input);
        goto done;
    }
    cli_grid_edge_warn(cli_grid_edge(&res, res.params.scheme), &res);
    if (a.json)
        rc = report_json(&a, ctx, &res);
    else
        report_text(&a, ctx, &res);

done:
    qk_calib_result_release(&res);
    if (ctx)
        qk_context_destroy(ctx);
    if (mapped)
        qk_npy_close(&npy);
    cli_doubles_free(&a.list);
    return rc < 0 ? CLI_EXIT_OK : rc;
}
