/* qkern dequantize: integer codes back to float32, x = (q - zero_point) * scale.
 * The codes may come from any tool: the parameters are given, and any zero
 * point the codes' dtype can hold is accepted, for signed codes too. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "big_alloc.h"
#include "cli.h"
#include "common_opts.h"
#include "input.h"
#include "json_out.h"
#include "npy.h"
#include "options.h"
#include "outputs.h"
#include "qkern.h"
#include "report.h"
#include "tensor_st.h"

void cmd_dequantize_usage(void)
{
    fputs("Usage: qkern dequantize Q.npy -o OUT.npy --scale S --zero-point Z [--backend B] [--json]\n"
          "       qkern dequantize Q.safetensors -o OUT.npy [--backend B] [--json]\n"
          "\n"
          "Dequantize integer codes (uint8, int8, uint16, int16 or int32 .npy) into a float32\n"
          ".npy of the same shape: OUT = (Q - Z) * S, computed in float32. A .safetensors\n"
          "written by qkern quantize holds its codes with their scales and zero points (per\n"
          "tensor, channel or group): no --scale is needed. A result that overflows float32\n"
          "is an error. OUT.npy is replaced atomically (README, \"Outputs\"): a failure or an\n"
          "interrupt leaves it as it was.\n"
          "\n"
          "Options:\n"
          "  -o, --output OUT.npy   where to write the values (required; - for stdout)\n"
          "  --scale S              the scale, a finite float32 > 0 (required for .npy codes)\n"
          "  --zero-point Z         the zero point, within the codes' dtype range (required\n"
          "                         for .npy codes; 0 for symmetric codes)\n"
          "  --backend B            auto|cpu|opencl|cuda (default auto)\n"
          "  --json                 print {\"backend\",\"n\",\"scale\",\"zero_point\",\"output\"}\n"
          "  -h, --help             show this help\n",
          stdout);
}

typedef struct dequantize_args {
    const char *input, *output;
    int have_scale, have_zero_point;
    float scale;
    int32_t zero_point;
    qk_backend_kind backend;
    int json;
} dequantize_args;

/* Returns 0 to go on, CLI_EXIT_USAGE, or -1 when --help was printed. */
static int parse(int argc, char **argv, dequantize_args *a)
{
    static const cli_option opts[] = {CLI_OPT_OUTPUT, CLI_OPT_SCALE, CLI_OPT_ZERO_POINT, CLI_OPT_BACKEND,
                                      CLI_OPT_JSON};
    cli_parser p;
    cli_parser_init(&p, "dequantize", argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    double s;
    long l;
    int rc;
    const cli_common_args common_args = {"dequantize", cmd_dequantize_usage, &a->input,
                                         &a->output, &a->backend, &a->json};
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        int common = cli_common_option(&common_args, id, value);
        if (common == CLI_COMMON_HANDLED)
            continue;
        if (common != CLI_COMMON_NOT_MINE)
            return common;
        switch (id) {
        case OPT_SCALE:
            if ((rc = cli_parse_double("dequantize", "--scale", value, 0.0, FLT_MAX, &s)) != 0)
                return rc;
            if (!((float)s > 0.0f))
                return cli_usage_error("dequantize", "invalid value '%s' for --scale: must be > 0 as a float32",
                                       value);
            a->scale = (float)s;
            a->have_scale = 1;
            break;
        case OPT_ZERO_POINT:
            if ((rc = cli_parse_long("dequantize", "--zero-point", value, INT32_MIN, INT32_MAX, &l)) != 0)
                return rc;
            a->zero_point = (int32_t)l;
            a->have_zero_point = 1;
            break;
        }
    }
    if (!a->input)
        return cli_usage_error("dequantize", "missing input file");
    if (!a->output)
        return cli_usage_error("dequantize", "missing -o OUT.npy");
    if (cli_is_safetensors_path(a->input)) {
        if (a->have_scale || a->have_zero_point)
            return cli_usage_error("dequantize",
                                   "%s holds its own scales and zero points: drop --scale and --zero-point", a->input);
        return 0;
    }
    if (!a->have_scale)
        return cli_usage_error("dequantize", "missing --scale");
    if (!a->have_zero_point)
        return cli_usage_error("dequantize", "missing --zero-point");
    return 0;
}

/* A zero point the codes cannot hold is a mistake on the command line. */
static int check_zero_point(const dequantize_args *a, qk_dtype dtype)
{
    int64_t lo = INT32_MIN, hi = INT32_MAX;
    switch (dtype) {
    case QK_U8:  lo = 0;         hi = UINT8_MAX; break;
    case QK_U16: lo = 0;         hi = UINT16_MAX; break;
    case QK_I8:  lo = INT8_MIN;  hi = INT8_MAX; break;
    case QK_I16: lo = INT16_MIN; hi = INT16_MAX; break;
    default: break;
    }
    if (a->zero_point < lo || a->zero_point > hi)
        return cli_usage_error("dequantize", "--zero-point %" PRId32 " is outside the range [%" PRId64 ", %" PRId64
                               "] of %s's %s codes", a->zero_point, lo, hi, a->input, qk_dtype_name(dtype));
    return 0;
}

/* qk_dequantize reads only scale and zero_point; the rest describes the code
 * dtype so the parameters are self-consistent (the dtype's whole range). */
static void params_for(qk_dtype dtype, float scale, int32_t zero_point, qk_qparams *q)
{
    memset(q, 0, sizeof *q);
    q->scale = scale;
    q->zero_point = zero_point;
    switch (dtype) {
    case QK_U8:  q->scheme = QK_ASYMMETRIC; q->bits = 8;  q->qmin = 0;         q->qmax = UINT8_MAX; break;
    case QK_U16: q->scheme = QK_ASYMMETRIC; q->bits = 16; q->qmin = 0;         q->qmax = UINT16_MAX; break;
    case QK_I8:  q->scheme = QK_SYMMETRIC;  q->bits = 8;  q->qmin = INT8_MIN;  q->qmax = INT8_MAX; break;
    case QK_I16: q->scheme = QK_SYMMETRIC;  q->bits = 16; q->qmin = INT16_MIN; q->qmax = INT16_MAX; break;
    default:     q->scheme = QK_SYMMETRIC;  q->bits = 16; q->qmin = INT32_MIN; q->qmax = INT32_MAX; break;
    }
    q->clip_lo = ((double)q->qmin - zero_point) * scale;
    q->clip_hi = ((double)q->qmax - zero_point) * scale;
}

int cmd_dequantize(int argc, char **argv)
{
    dequantize_args a;
    memset(&a, 0, sizeof a);
    a.backend = QK_BACKEND_AUTO;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    if ((rc = cli_check_output("dequantize", &a.output, &a.input, 1)) != 0)
        return rc;
    if (cli_is_safetensors_path(a.input))
        return cli_dequantize_st(a.input, a.output, a.backend, a.json);

    qk_npy npy;
    if ((rc = cli_open_code_input(a.input, &npy)) != 0)
        return rc;
    qk_context *ctx = NULL;
    void *out = NULL;
    size_t bytes = 0;
    if ((rc = check_zero_point(&a, npy.dtype)) != 0 || (rc = cli_context_open(a.backend, &ctx)) != 0)
        goto done;

    if ((uint64_t)npy.n > SIZE_MAX / sizeof(float)) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "the output does not fit in memory", "dequantizing %s", a.input);
        goto done;
    }
    bytes = (size_t)npy.n * sizeof(float);
    out = qk_big_alloc(bytes);
    if (!out) {
        rc = cli_status_error(QK_ERR_NO_MEMORY, "", "allocating %zu bytes of output", bytes);
        goto done;
    }

    qk_qparams q;
    params_for(npy.dtype, a.scale, a.zero_point, &q);
    qk_tensor codes = qk_tensor_host(npy.dtype, npy.data, npy.n);
    qk_tensor x = qk_tensor_host(QK_F32, out, npy.n);
    qk_status st = qk_dequantize(ctx, &codes, &q, &x);
    if (st != QK_OK) {
        rc = cli_lib_error(ctx, st, "dequantizing %s", a.input);
        goto done;
    }
    int64_t overflow = 0;
    for (int64_t i = 0; i < npy.n; i++)
        overflow += !isfinite(((const float *)out)[i]);
    if (overflow) {
        char why[160];
        snprintf(why, sizeof why, "%" PRId64 " of %" PRId64 " values overflow float32: |(q - zero_point) * scale| "
                 "exceeds %.9g; nothing was written", overflow, npy.n, (double)FLT_MAX);
        rc = cli_status_error(QK_ERR_RANGE, why, "dequantizing %s", a.input);
        goto done;
    }
    char err[512] = "";
    st = qk_npy_write(a.output, QK_F32, npy.ndim, npy.shape, out, err, sizeof err);
    if (st != QK_OK) {
        rc = cli_status_error(st, err, "writing %s", a.output);
        goto done;
    }

    if (a.json) {
        cli_json j;
        cli_json_init(&j);
        cli_json_string(&j, j.root, "backend", qk_backend_name(qk_context_backend(ctx)));
        cli_json_int(&j, j.root, "n", npy.n);
        cli_json_double(&j, j.root, "scale", (double)a.scale);
        cli_json_int(&j, j.root, "zero_point", a.zero_point);
        cli_json_string(&j, j.root, "output", a.output);
        rc = cli_json_emit(&j);
        cli_json_free(&j);
    } else {
        char shape[128], scale[32];
        cli_format_shape(&npy, shape, sizeof shape);
        cli_format_double(scale, (double)a.scale);
        printf("%s -> %s: float32 %s from %s, backend %s\n", a.input, a.output, shape, qk_dtype_name(npy.dtype),
               qk_backend_name(qk_context_backend(ctx)));
        printf("  scale       %s\n", scale);
        printf("  zero_point  %" PRId32 "\n", a.zero_point);
    }

done:
    if (out)
        qk_big_free(out, bytes);
    if (ctx)
        qk_context_destroy(ctx);
    qk_npy_close(&npy);
    return rc;
}
