/* qkern quantize: calibrate (or take given parameters), quantize into codes of
 * the narrowest dtype that holds them, and write them atomically with the
 * input's shape. Nothing is written unless every step succeeded. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "big_alloc.h"
#include "calib_args.h"
#include "cli.h"
#include "common_opts.h"
#include "input.h"
#include "json_out.h"
#include "model_format.h"
#include "messages.h"
#include "npy.h"
#include "options.h"
#include "outputs.h"
#include "qkern.h"
#include "report.h"
#include "tensor_st.h"

void cmd_quantize_usage(void)
{
    fputs("Usage: qkern quantize IN.npy -o OUT.npy|OUT.safetensors [OPTIONS]\n"
          "\n"
          "Quantize a float32/float64/float16 .npy. OUT.npy holds only the codes, with IN's\n"
          "shape: uint8/int8 up to 8 bits, uint16/int16 up to 16. OUT.safetensors holds the\n"
          "codes with their scales and zero points (docs/model-format.md; a one-tensor model\n"
          "named after IN), per tensor or, with --granularity, per channel or group; qkern\n"
          "dequantize reads it back without --scale. The output is replaced atomically\n"
          "(README, \"Outputs\"): a failure or an interrupt leaves it as it was.\n"
          "\n"
          "Options:\n"
          "  -o, --output OUT       where to write (required; - for stdout, not a terminal)\n"
          "  --granularity G        OUT.safetensors only: tensor (default), channel[:AXIS]\n"
          "                         (a scale per index along AXIS, default 0) or group:G\n"
          "                         (per G consecutive elements of the last dimension)\n"
          "  --bits B               bit width, 2..16 (default 8)\n"
          "  --scheme S             asymmetric (unsigned codes, zero point; default)\n"
          "                         or symmetric (signed codes, zero point 0)\n"
          "  --calib METHOD         minmax (default)\n"
          "                         percentile:P    clip at the P-th percentile (asymmetric:\n"
          "                                         [100-P, P] with P in [50, 100];\n"
          "                                         symmetric: |x| at P with P in (0, 100])\n"
          "                         gridsearch[:START:STOP:STEP]  best P of a grid\n"
          "                                         (default 99:100:0.01)\n"
          "  --objective O          gridsearch score: mse (default) or mse-inliers (MSE\n"
          "                         inside Tukey's fences [Q1-k*IQR, Q3+k*IQR])\n"
          "  --fence-k K            k of the fences (default 3)\n"
          "  --include-zero         widen the asymmetric range to contain 0\n"
          "  --narrow-range         symmetric codes -(2^(B-1)-1)..2^(B-1)-1\n"
          "  --scale S              quantize with this scale instead of calibrating\n"
          "  --zero-point Z         with --scale: the zero point, within the codes' range\n"
          "                         [0, 2^B-1] (default 0; symmetric: 0)\n"
          "  --ignore-nonfinite     skip NaN/Inf when calibrating (NaN is coded as the\n"
          "                         zero point, +-Inf as qmax/qmin) instead of failing\n"
          "  --backend B            auto|cpu|opencl|cuda (default auto)\n"
          "  --json                 print {\"backend\",\"n\",\"bits\",\"scheme\",\"dtype\",\"scale\",\n"
          "                         \"zero_point\",\"clip_lo\",\"clip_hi\",\"qmin\",\"qmax\",\"mse\",\n"
          "                         \"percentile\",\"clipped\",\"calib\",\"output\"}\n"
          "  -h, --help             show this help\n",
          stdout);
}

typedef struct quantize_args {
    const char *input, *output;
    qk_calib_options calib;
    const char *calib_only;  /* first calibration-only option given, for the --scale conflict */
    int have_calib, have_scale, have_zero_point;
    float scale;
    int32_t zero_point;
    qk_backend_kind backend;
    int json;
    qk_granularity granularity; /* OUT.safetensors only */
    int axis, have_granularity;
    int64_t group;
} quantize_args;

enum { OPT_Q_GRANULARITY = 1000 };

static int parse_scale(const char *value, float *out)
{
    double s;
    int rc = cli_parse_double("quantize", "--scale", value, 0.0, FLT_MAX, &s);
    if (rc)
        return rc;
    /* The library stores scales as float: a value that rounds to 0 is no scale. */
    if (!((float)s > 0.0f))
        return cli_usage_error("quantize", "invalid value '%s' for --scale: must be > 0 as a float32", value);
    *out = (float)s;
    return 0;
}

/* Returns 0 to go on, CLI_EXIT_USAGE, or -1 when --help was printed. */
static int parse(int argc, char **argv, quantize_args *a)
{
    static const cli_option opts[] = {
        CLI_OPT_OUTPUT, CLI_OPT_BITS, CLI_OPT_SCHEME, CLI_OPT_CALIB, CLI_OPT_OBJECTIVE, CLI_OPT_FENCE_K,
        CLI_OPT_INCLUDE_ZERO, CLI_OPT_NARROW_RANGE, CLI_OPT_SCALE, CLI_OPT_ZERO_POINT,
        CLI_OPT_IGNORE_NONFINITE, CLI_OPT_BACKEND, CLI_OPT_JSON, {"--granularity", NULL, 1, OPT_Q_GRANULARITY},
    };
    cli_parser p;
    cli_parser_init(&p, "quantize", argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    long l;
    int rc;
    const cli_common_args common_args = {"quantize", cmd_quantize_usage, &a->input,
                                         &a->output, &a->backend, &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int common = cli_common_option(&common_args, id, value);
        if (common == CLI_COMMON_HANDLED)
            continue;
        if (common != CLI_COMMON_NOT_MINE)
            return common;
        switch (id) {
        case OPT_CALIB:
            if ((rc = cli_parse_calib("quantize", value, &a->calib)) != 0)
                return rc;
            a->have_calib = 1;
            break;
        case OPT_SCALE:
            if ((rc = parse_scale(value, &a->scale)) != 0)
                return rc;
            a->have_scale = 1;
            break;
        case OPT_Q_GRANULARITY:
            if ((rc = cli_parse_granularity("quantize", value, &a->granularity, &a->axis, &a->group)) != 0)
                return rc;
            a->have_granularity = 1;
            break;
        case OPT_ZERO_POINT:
            if ((rc = cli_parse_long("quantize", "--zero-point", value, INT32_MIN, INT32_MAX, &l)) != 0)
                return rc;
            a->zero_point = (int32_t)l;
            a->have_zero_point = 1;
            break;
        default:
            if (id == OPT_OBJECTIVE || id == OPT_FENCE_K || id == OPT_INCLUDE_ZERO)
                a->calib_only = a->calib_only ? a->calib_only : p.opt_name;
            rc = cli_calib_option("quantize", id, value, &a->calib);
            if (rc == CLI_CALIB_NOT_MINE) /* an option in the table without a case: a bug here */
                return cli_usage_error("quantize", "option %s is not implemented", p.opt_name);
            if (rc)
                return rc;
            break;
        }
    }
    if (!a->input)
        return cli_usage_error("quantize", "missing input file");
    if (!a->output)
        return cli_usage_error("quantize", "missing -o OUT.npy");
    if (a->have_granularity && !cli_is_safetensors_path(a->output))
        return cli_usage_error("quantize", "--granularity needs a .safetensors output (a .npy holds codes only)");
    if (a->granularity != QK_PER_TENSOR && a->have_scale)
        return cli_usage_error("quantize", "--scale gives one parameter set: it needs --granularity tensor");
    if (a->have_zero_point && !a->have_scale)
        return cli_usage_error("quantize", "--zero-point needs --scale");
    if (a->have_scale) {
        if (a->have_calib)
            return cli_usage_error("quantize", "--scale and --calib exclude each other");
        if (a->calib_only)
            return cli_usage_error("quantize", "%s applies to calibration, not to a given --scale", a->calib_only);
        if (a->calib.scheme == QK_SYMMETRIC && a->zero_point != 0)
            return cli_usage_error("quantize", "the symmetric scheme has zero point 0 (got %" PRId32 ")",
                                   a->zero_point);
        if (a->calib.scheme == QK_ASYMMETRIC &&
            (a->zero_point < 0 || (int64_t)a->zero_point > ((int64_t)1 << a->calib.bits) - 1))
            return cli_usage_error("quantize",
                                   "--zero-point %" PRId32 " is outside the %d-bit codes' range [0, %" PRId64 "]",
                                   a->zero_point, a->calib.bits, ((int64_t)1 << a->calib.bits) - 1);
        if (a->calib.narrow_range && a->calib.scheme != QK_SYMMETRIC)
            return cli_usage_error("quantize", "--narrow-range applies only to --scheme symmetric");
        return 0;
    }
    return cli_calib_check("quantize", &a->calib);
}

/* What the report needs, from either path. */
typedef struct quantize_outcome {
    qk_qparams params;
    double mse;
    double mse_inliers; /* NaN when parameters were given */
    double fence_lo, fence_hi;
    int64_t clipped;
    double percentile; /* NaN when parameters were given */
    int grid_edge;     /* gridsearch: the best percentile on a grid edge (cli_grid_edge) */
} quantize_outcome;

static int calibrate(const quantize_args *a, qk_context *ctx, const qk_tensor *x, quantize_outcome *out)
{
    qk_calib_result res;
    memset(&res, 0, sizeof res);
    qk_status st = qk_calibrate(ctx, x, &a->calib, &res);
    if (st != QK_OK) {
        qk_calib_result_release(&res);
        return cli_lib_error(ctx, st, "calibrating %s", a->input);
    }
    if (res.best >= res.n_candidates) {
        qk_calib_result_release(&res);
        return cli_status_error(QK_ERR_BACKEND, "no candidate row for the chosen parameters",
                                "calibrating %s", a->input);
    }
    const qk_candidate *c = &res.candidates[res.best];
    out->params = res.params;
    out->mse = c->mse;
    out->mse_inliers = c->mse_inliers;
    out->fence_lo = res.fence_lo;
    out->fence_hi = res.fence_hi;
    out->clipped = c->clipped;
    out->percentile = c->percentile;
    if (a->calib.method == QK_CALIB_GRIDSEARCH) {
        out->grid_edge = cli_grid_edge(&res, res.params.scheme);
        cli_grid_edge_warn(out->grid_edge, &res);
    }
    qk_calib_result_release(&res);
    return 0;
}

static int given_params(const quantize_args *a, qk_context *ctx, const qk_tensor *x, quantize_outcome *out)
{
    qk_status st = qk_qparams_from_scale(ctx, a->calib.scheme, a->calib.bits, a->calib.narrow_range, a->scale,
                                         a->zero_point, &out->params);
    if (st != QK_OK)
        return cli_lib_error(ctx, st, "parameters --scale/--zero-point");
    qk_error_result err;
    st = qk_quant_error(ctx, x, &out->params, a->calib.ignore_nonfinite ? QK_IGNORE_NONFINITE : 0u, &err);
    if (st != QK_OK)
        return cli_lib_error(ctx, st, "quantization error of %s", a->input);
    out->mse = err.mse;
    out->mse_inliers = NAN;
    out->fence_lo = -INFINITY;
    out->fence_hi = INFINITY;
    out->clipped = err.clipped;
    out->percentile = NAN;
    return 0;
}

/* Quantize into a fresh buffer and write it; the buffer is freed either way. */
static int write_codes(const quantize_args *a, qk_context *ctx, const qk_npy *npy, const qk_tensor *x,
                       const qk_qparams *params, qk_dtype *code_dtype)
{
    qk_status st = qk_code_dtype(params, code_dtype);
    if (st != QK_OK)
        return cli_lib_error(ctx, st, "code dtype");
    size_t elem = qk_dtype_size(*code_dtype);
    if (elem == 0 || (uint64_t)npy->n > SIZE_MAX / elem)
        return cli_status_error(QK_ERR_NO_MEMORY, "the code array does not fit in memory", "quantizing %s",
                                a->input);
    size_t bytes = (size_t)npy->n * elem;
    void *codes = qk_big_alloc(bytes);
    if (!codes)
        return cli_status_error(QK_ERR_NO_MEMORY, "", "allocating %zu bytes of codes", bytes);

    int rc = 0;
    qk_tensor ct = qk_tensor_host(*code_dtype, codes, npy->n);
    st = qk_quantize(ctx, x, params, &ct);
    if (st != QK_OK) {
        rc = cli_lib_error(ctx, st, "quantizing %s", a->input);
    } else {
        char err[512] = "";
        if (cli_is_safetensors_path(a->output)) {
            rc = cli_write_tensor_st(a->input, npy, &a->calib, params, *code_dtype, codes, a->output);
        } else {
            st = qk_npy_write(a->output, *code_dtype, npy->ndim, npy->shape, codes, err, sizeof err);
            if (st != QK_OK)
                rc = cli_status_error(st, err, "writing %s", a->output);
        }
    }
    qk_big_free(codes, bytes);
    return rc;
}

static int report(const quantize_args *a, const qk_context *ctx, const qk_npy *npy, const quantize_outcome *o,
                  qk_dtype code_dtype)
{
    const qk_qparams *q = &o->params;
    char calib[128];
    if (a->have_scale)
        snprintf(calib, sizeof calib, "scale");
    else
        cli_calib_describe(&a->calib, calib, sizeof calib);

    if (a->json) {
        cli_json j;
        cli_json_init(&j);
        cli_json_string(&j, j.root, "backend", qk_backend_name(qk_context_backend(ctx)));
        cli_json_int(&j, j.root, "n", npy->n);
        cli_json_int(&j, j.root, "bits", q->bits);
        cli_json_string(&j, j.root, "scheme", cli_scheme_name(q->scheme));
        cli_json_string(&j, j.root, "dtype", qk_dtype_name(code_dtype));
        cli_json_double(&j, j.root, "scale", (double)q->scale);
        cli_json_int(&j, j.root, "zero_point", q->zero_point);
        cli_json_double(&j, j.root, "clip_lo", q->clip_lo);
        cli_json_double(&j, j.root, "clip_hi", q->clip_hi);
        cli_json_int(&j, j.root, "qmin", q->qmin);
        cli_json_int(&j, j.root, "qmax", q->qmax);
        cli_json_double(&j, j.root, "mse", o->mse);
        /* over the elements inside Tukey's fences; equal to mse when no fences were needed */
        cli_json_double(&j, j.root, "mse_inliers", o->mse_inliers);
        cli_json_double(&j, j.root, "percentile", o->percentile); /* null for a given scale */
        cli_json_int(&j, j.root, "clipped", o->clipped);
        if (a->calib.method == QK_CALIB_GRIDSEARCH && !a->have_scale)
            cli_json_bool(&j, j.root, "at_grid_edge", o->grid_edge != 0);
        cli_json_string(&j, j.root, "calib", calib);
        cli_json_string(&j, j.root, "output", a->output);
        int rc = cli_json_emit(&j);
        cli_json_free(&j);
        return rc;
    }
    char shape[128], scale[32], lo[32], hi[32], mse[32];
    cli_format_shape(npy, shape, sizeof shape);
    cli_format_double(scale, (double)q->scale);
    cli_format_double(lo, q->clip_lo);
    cli_format_double(hi, q->clip_hi);
    snprintf(mse, sizeof mse, "%.6g", o->mse);
    printf("%s -> %s: %s %s, backend %s\n", a->input, a->output, qk_dtype_name(code_dtype), shape,
           qk_backend_name(qk_context_backend(ctx)));
    printf("  calib       %s, %d-bit %s\n", calib, q->bits, cli_scheme_name(q->scheme));
    printf("  scale       %s\n", scale);
    printf("  zero_point  %" PRId32 "\n", q->zero_point);
    printf("  range       [%s, %s], codes [%" PRId32 ", %" PRId32 "]\n", lo, hi, q->qmin, q->qmax);
    printf("  mse         %s\n", mse);
    if (isfinite(o->fence_lo) || isfinite(o->fence_hi))
        printf("  mse inliers %.6g (inside Tukey's fences [%.9g, %.9g])\n", o->mse_inliers, o->fence_lo,
               o->fence_hi);
    printf("  clipped     %" PRId64 " of %" PRId64 "\n", o->clipped, npy->n);
    return CLI_EXIT_OK;
}

/* Per channel or group, into OUT.safetensors. */
static int quantize_blocks(const quantize_args *a, qk_context *ctx, const qk_npy *npy)
{
    cli_st_written w;
    memset(&w, 0, sizeof w);
    int rc = cli_quantize_blocks_to_st(ctx, a->input, npy, &a->calib, a->granularity, a->axis, a->group, a->output, &w);
    if (rc)
        return rc;
    char calib[128], gran[32], shape[128];
    cli_calib_describe(&a->calib, calib, sizeof calib);
    qm_granularity_describe(a->granularity, a->axis, a->group, gran, sizeof gran);
    if (a->json) {
        cli_json j;
        cli_json_init(&j);
        cli_json_string(&j, j.root, "backend", qk_backend_name(qk_context_backend(ctx)));
        cli_json_int(&j, j.root, "n", npy->n);
        cli_json_int(&j, j.root, "bits", a->calib.bits);
        cli_json_string(&j, j.root, "scheme", cli_scheme_name(a->calib.scheme));
        cli_json_string(&j, j.root, "dtype", qk_dtype_name(w.codes_dtype));
        cli_json_string(&j, j.root, "granularity", gran);
        cli_json_int(&j, j.root, "blocks", w.blocks);
        cli_json_double(&j, j.root, "mse", w.mse);
        cli_json_int(&j, j.root, "clipped", w.clipped);
        cli_json_string(&j, j.root, "calib", calib);
        cli_json_string(&j, j.root, "output", a->output);
        rc = cli_json_emit(&j);
        cli_json_free(&j);
        return rc;
    }
    cli_format_shape(npy, shape, sizeof shape);
    printf("%s -> %s: %s %s, backend %s\n", a->input, a->output, qk_dtype_name(w.codes_dtype), shape,
           qk_backend_name(qk_context_backend(ctx)));
    printf("  calib       %s, %d-bit %s\n", calib, a->calib.bits, cli_scheme_name(a->calib.scheme));
    printf("  blocks      %" PRId64 " (%s), scales and zero points stored with the codes\n", w.blocks, gran);
    printf("  mse         %.6g\n", w.mse);
    printf("  clipped     %" PRId64 " of %" PRId64 "\n", w.clipped, npy->n);
    return CLI_EXIT_OK;
}

int cmd_quantize(int argc, char **argv)
{
    quantize_args a;
    memset(&a, 0, sizeof a);
    qk_calib_options_default(&a.calib);
    a.backend = QK_BACKEND_AUTO;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    if ((rc = cli_check_output("quantize", &a.output, &a.input, 1)) != 0)
        return rc;

    qk_npy npy;
    if ((rc = cli_open_float_input(a.input, &npy)) != 0)
        return rc;
    qk_context *ctx = NULL;
    if ((rc = cli_context_open(a.backend, &ctx)) != 0) {
        qk_npy_close(&npy);
        return rc;
    }

    if (a.granularity != QK_PER_TENSOR) {
        rc = quantize_blocks(&a, ctx, &npy);
        qk_context_destroy(ctx);
        qk_npy_close(&npy);
        return rc;
    }
    qk_tensor x = qk_tensor_host(npy.dtype, npy.data, npy.n);
    quantize_outcome o;
    memset(&o, 0, sizeof o);
    qk_dtype code_dtype = QK_U8;
    rc = a.have_scale ? given_params(&a, ctx, &x, &o) : calibrate(&a, ctx, &x, &o);
    if (rc == 0)
        rc = write_codes(&a, ctx, &npy, &x, &o.params, &code_dtype);
    if (rc == 0)
        rc = report(&a, ctx, &npy, &o, code_dtype);

    qk_context_destroy(ctx);
    qk_npy_close(&npy);
    return rc;
}
