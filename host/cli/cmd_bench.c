/* qkern bench: time every operation on every backend, on device-resident data,
 * against the device's own copy bandwidth measured in the same run.
 *
 * What is timed is only the call: the input is generated and uploaded once,
 * buffers are allocated and touched before the clock starts, and each library
 * call has finished on the device when it returns (qkern.h), so no extra
 * synchronisation is needed around it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "bench_data.h"
#include "bench_out.h"
#include "big_alloc.h"
#include "cli.h"
#include "input.h"
#include "options.h"
#include "qkern.h"
#include "report.h"

#define DEFAULT_ELEMENTS ((int64_t)1 << 26)
#define DEFAULT_REPS 5
#define DEFAULT_WARMUP 1
#define DEFAULT_SEED 1
#define PERCENTILE_P 99.99

/* Options of bench alone (the shared ones come from options.h). */
enum { OPT_ELEMENTS = 100, OPT_OPS, OPT_REPS, OPT_WARMUP, OPT_CSV, OPT_SEED };

void cmd_bench_usage(void)
{
    fputs("Usage: qkern bench [--backend B|all] [--elements N] [--ops LIST] [--reps R]\n"
          "                   [--warmup W] [--seed S] [--json] [--csv FILE]\n"
          "\n"
          "Time each operation on a synthetic float32 tensor (Laplace(0, 1) with a few\n"
          "outliers of |x| in [40, 80), reproducible from --seed) and report GB/s and the\n"
          "fraction of the device's own copy bandwidth measured in the same run.\n"
          "\n"
          "The tensor is generated and uploaded once into a device buffer (qk_buffer).\n"
          "The ops and the copy run in rounds, each once per round: W untimed rounds,\n"
          "then R timed ones (a slow spell on a shared machine hits every op alike); the\n"
          "median and minimum of each op's R times are reported. Excluded from them:\n"
          "context creation, kernel compilation, allocation, the upload, and first-touch\n"
          "page faults (every output buffer is written once before timing). Each call\n"
          "has finished on the device when it returns, so a time is the whole work.\n"
          "\n"
          "Ops and the traffic (bytes read + written, n elements) GB/s is computed from:\n"
          "  minmax        qk_minmax                                          4n\n"
          "  percentile    qk_percentiles, p = 99.99 (several passes inside)  4n\n"
          "  quantize      float32 -> uint8 codes, 8-bit asymmetric, minmax   5n\n"
          "                range, into a device buffer\n"
          "  dequantize    uint8 codes -> float32, device buffers             5n\n"
          "  mse           qk_quant_error of those parameters                 4n\n"
          "  gridsearch    qk_calibrate, grid 99:100:0.01 (101 candidates),   4n (nominal)\n"
          "                objective mse; also reported as a multiple of one\n"
          "                minmax pass (x_minmax)\n"
          "  quantize_e2e  qk_quantize from host float32 to host uint8 codes,  5n\n"
          "                transfers included\n"
          "  minmax_e2e    qk_minmax on the host float32 array, transfers     4n\n"
          "                included\n"
          "The e2e host buffers are mapped with huge pages (qk_big_alloc) and touched\n"
          "once before timing: the e2e figures exclude first-touch page faults.\n"
          "\n"
          "copy_gbps is qk_buffer_copy of the 4n-byte input into another device buffer\n"
          "(memcpy on the cpu backend): 2 x 4n bytes (read + write) over its median time.\n"
          "gbps = bytes / median seconds / 1e9; fraction_of_copy = gbps / copy_gbps.\n"
          "\n"
          "Options:\n"
          "  --backend B      auto|cpu|opencl|cuda, or all: every available backend\n"
          "                   (unavailable ones are skipped with a note on stderr);\n"
          "                   default auto\n"
          "  --elements N     tensor size: an integer, 2^K, or with a K/M/G suffix\n"
          "                   (powers of 1024, so 64M = 2^26); default 2^26\n"
          "  --ops LIST       comma-separated ops from the list above, or all (default)\n"
          "  --reps R         timed runs per op, >= 1 (default 5)\n"
          "  --warmup W       untimed runs before them, >= 0 (default 1)\n"
          "  --seed S         seed of the synthetic tensor, >= 0 (default 1)\n"
          "  --json           print one JSON object:\n"
          "                   {\"device\",\"backend\",\"elements\",\"reps\",\"warmup\",\"seed\",\n"
          "                   \"copy_gbps\",\"copy_bytes\",\"copy_seconds\",\"copy_seconds_min\",\n"
          "                   \"results\":[{\"op\",\"elements\",\"bytes\",\"seconds\",\"seconds_min\",\n"
          "                   \"gbps\",\"fraction_of_copy\"}]} (gridsearch adds \"x_minmax\");\n"
          "                   with --backend all: {\"runs\":[ those objects ]}\n"
          "  --csv FILE       append one row per op and backend to FILE, after a header\n"
          "                   line when FILE is new or empty: device,backend,op,elements,\n"
          "                   seconds,seconds_min,gbps,copy_gbps,fraction_of_copy,date,host\n"
          "                   (date in UTC, ISO 8601); written in one piece at the end\n"
          "  -h, --help       show this help\n"
          "\n"
          "Progress goes to stderr when it is a terminal. Exit status: 0 success,\n"
          "1 runtime error (no device, out of memory, library error), 2 usage error.\n",
          stdout);
}

typedef struct bench_args {
    qk_backend_kind backend;
    int all;
    int64_t n;
    int ops[BENCH_N_OPS];
    size_t n_ops;
    long reps, warmup;
    uint64_t seed;
    int json;
    const char *csv;
} bench_args;

static int parse_ops(const char *s, bench_args *a)
{
    int seen[BENCH_N_OPS] = {0};
    a->n_ops = 0;
    if (strcmp(s, "all") == 0) {
        for (int k = 0; k < BENCH_N_OPS; k++)
            a->ops[a->n_ops++] = k;
        return 0;
    }
    const char *p = s;
    for (;;) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int k = 0; k < BENCH_N_OPS; k++)
            if (strlen(bench_op_names[k]) == len && strncmp(bench_op_names[k], p, len) == 0)
                found = k;
        if (found < 0)
            return cli_usage_error("bench",
                                   "invalid value '%s' for --ops: unknown op '%.*s' (expected a comma list of "
                                   "minmax, percentile, quantize, dequantize, mse, gridsearch, quantize_e2e, "
                                   "minmax_e2e, or all)",
                                   s, (int)len, p);
        if (!seen[found]) {
            seen[found] = 1;
            a->ops[a->n_ops++] = found;
        }
        if (p[len] == '\0')
            return 0;
        p += len + 1;
    }
}

/* Returns 0 to go on, CLI_EXIT_USAGE, or -1 when --help was printed. */
static int parse(int argc, char **argv, bench_args *a)
{
    static const cli_option opts[] = {
        CLI_OPT_BACKEND,
        CLI_OPT_JSON,
        {"--elements", NULL, 1, OPT_ELEMENTS},
        {"--ops", NULL, 1, OPT_OPS},
        {"--reps", NULL, 1, OPT_REPS},
        {"--warmup", NULL, 1, OPT_WARMUP},
        {"--csv", NULL, 1, OPT_CSV},
        {"--seed", NULL, 1, OPT_SEED},
    };
    cli_parser p;
    cli_parser_init(&p, "bench", argc, argv, opts, CLI_N_OPTS(opts));
    const char *value;
    int rc;
    long v;
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        switch (id) {
        case CLI_ARG_HELP:
            cmd_bench_usage();
            return -1;
        case CLI_ARG_ERROR:
            return CLI_EXIT_USAGE;
        case CLI_ARG_POSITIONAL:
            return cli_usage_error("bench", "unexpected argument '%s'", value);
        case OPT_BACKEND:
            if (strcmp(value, "all") == 0) {
                a->all = 1;
            } else {
                a->all = 0;
                if ((rc = cli_parse_backend("bench", value, &a->backend)) != 0)
                    return rc;
            }
            break;
        case OPT_JSON:
            a->json = 1;
            break;
        case OPT_ELEMENTS:
            if (bench_parse_count(value, &a->n) != 0)
                return cli_usage_error("bench",
                                       "invalid value '%s' for --elements: expected a count in [1, 2^40] "
                                       "(an integer, 2^K, or with a K/M/G suffix)",
                                       value);
            break;
        case OPT_OPS:
            if ((rc = parse_ops(value, a)) != 0)
                return rc;
            break;
        case OPT_REPS:
            if ((rc = cli_parse_long("bench", "--reps", value, 1, 1000000, &a->reps)) != 0)
                return rc;
            break;
        case OPT_WARMUP:
            if ((rc = cli_parse_long("bench", "--warmup", value, 0, 1000000, &a->warmup)) != 0)
                return rc;
            break;
        case OPT_SEED:
            if ((rc = cli_parse_long("bench", "--seed", value, 0, 9007199254740992L, &v)) != 0)
                return rc;
            a->seed = (uint64_t)v;
            break;
        case OPT_CSV:
            if (value[0] == '\0')
                return cli_usage_error("bench", "invalid value '' for --csv: expected a file name");
            a->csv = value;
            break;
        }
    }
    return 0;
}

/* ---- one backend ---------------------------------------------------------------- */

enum { OP_COPY = -1 }; /* the yardstick, timed like an op */

typedef struct bench_state {
    qk_context *ctx;
    int64_t n;
    float *host_x;         /* the generated tensor (already touched) */
    uint8_t *host_codes;   /* quantize_e2e output, touched before timing */
    qk_buffer *x, *copy, *codes, *deq;
    qk_qparams params;     /* 8-bit asymmetric from the tensor's min/max */
    qk_calib_options grid;
} bench_state;

static uint64_t op_bytes(int op, int64_t n)
{
    uint64_t u = (uint64_t)n;
    switch (op) {
    case OP_COPY: return 8 * u;
    case BENCH_QUANTIZE:
    case BENCH_DEQUANTIZE:
    case BENCH_QUANTIZE_E2E: return 5 * u;
    default: return 4 * u;
    }
}

static const char *op_name(int op)
{
    return op == OP_COPY ? "copy" : bench_op_names[op];
}

static qk_status run_op(bench_state *s, int op)
{
    qk_tensor x = qk_tensor_buffer(QK_F32, s->x, 0, s->n);
    qk_tensor hx = qk_tensor_host(QK_F32, s->host_x, s->n);
    qk_minmax_result mm;
    switch (op) {
    case OP_COPY:
        return qk_buffer_copy(s->ctx, s->copy, 0, s->x, 0, 4 * (size_t)s->n);
    case BENCH_MINMAX:
        return qk_minmax(s->ctx, &x, 0, &mm);
    case BENCH_PERCENTILE: {
        static const double p = PERCENTILE_P;
        double v;
        return qk_percentiles(s->ctx, &x, &p, 1, 0, &v);
    }
    case BENCH_QUANTIZE: {
        qk_tensor c = qk_tensor_buffer(QK_U8, s->codes, 0, s->n);
        return qk_quantize(s->ctx, &x, &s->params, &c);
    }
    case BENCH_DEQUANTIZE: {
        qk_tensor c = qk_tensor_buffer(QK_U8, s->codes, 0, s->n);
        qk_tensor d = qk_tensor_buffer(QK_F32, s->deq, 0, s->n);
        return qk_dequantize(s->ctx, &c, &s->params, &d);
    }
    case BENCH_MSE: {
        qk_error_result er;
        return qk_quant_error(s->ctx, &x, &s->params, 0, &er);
    }
    case BENCH_GRIDSEARCH: {
        qk_calib_result res;
        qk_status st = qk_calibrate(s->ctx, &x, &s->grid, &res);
        if (st == QK_OK)
            qk_calib_result_release(&res);
        return st;
    }
    case BENCH_QUANTIZE_E2E: {
        qk_tensor c = qk_tensor_host(QK_U8, s->host_codes, s->n);
        return qk_quantize(s->ctx, &hx, &s->params, &c);
    }
    case BENCH_MINMAX_E2E:
        return qk_minmax(s->ctx, &hx, 0, &mm);
    }
    return QK_ERR_INVALID_ARG;
}

/* Every op once per round, the copy included: W untimed rounds, then R timed
 * ones; times[k * R + r] is op k's time in timed round r. On a shared machine a
 * slow spell then slows every op alike rather than all the runs of one op, and
 * fraction_of_copy compares times taken side by side. */
static int time_rounds(bench_state *s, const bench_args *a, const char *backend, const int *ops, size_t n_ops,
                       double *times)
{
    for (long round = 0; round < a->warmup + a->reps; round++) {
        int timed = round >= a->warmup;
        if (isatty(STDERR_FILENO))
            fprintf(stderr, "qkern bench: %s: %s %ld of %ld\n", backend, timed ? "timed round" : "warm-up round",
                    timed ? round - a->warmup + 1 : round + 1, timed ? a->reps : a->warmup);
        for (size_t k = 0; k < n_ops; k++) {
            double t0 = bench_now();
            qk_status st = run_op(s, ops[k]);
            double t1 = bench_now();
            if (st != QK_OK)
                return cli_lib_error(s->ctx, st, "bench %s on %s", op_name(ops[k]), backend);
            /* A clock step below its resolution must not give an infinite GB/s. */
            if (timed)
                times[k * (size_t)a->reps + (size_t)(round - a->warmup)] = t1 - t0 > 1e-9 ? t1 - t0 : 1e-9;
        }
    }
    return 0;
}

/* Write zeros over the whole buffer: allocation and first-touch costs are paid
 * here, not in the first timed run. */
static qk_status touch_buffer(qk_context *ctx, qk_buffer *buf, const void *zeros, size_t zeros_len)
{
    size_t size = qk_buffer_size(buf);
    qk_status st = QK_OK;
    for (size_t off = 0; off < size && st == QK_OK; off += zeros_len)
        st = qk_buffer_write(ctx, buf, off, zeros, size - off < zeros_len ? size - off : zeros_len);
    return st;
}

static int uses(const bench_args *a, int op)
{
    for (size_t k = 0; k < a->n_ops; k++)
        if (a->ops[k] == op)
            return 1;
    return 0;
}

/* zeros NULL: the caller fills the buffer itself before timing. */
static int make_buffer(bench_state *s, size_t bytes, const void *zeros, size_t zeros_len, const char *what,
                       qk_buffer **out)
{
    qk_status st = qk_buffer_create(s->ctx, bytes, out);
    if (st != QK_OK)
        return cli_lib_error(s->ctx, st, "bench: allocating the %s buffer (%zu bytes)", what, bytes);
    if (zeros)
        st = touch_buffer(s->ctx, *out, zeros, zeros_len);
    if (st != QK_OK)
        return cli_lib_error(s->ctx, st, "bench: writing the %s buffer", what);
    return 0;
}

/* Allocate, upload and prepare everything the chosen ops use. */
static int setup(bench_state *s, const bench_args *a, const char *backend)
{
    enum { ZEROS = 4 << 20 };
    size_t n = (size_t)a->n;
    void *zeros = calloc(1, ZEROS);
    if (!zeros)
        return cli_error("bench: out of memory");
    int rc = 0;
    qk_status st;
    if ((rc = make_buffer(s, 4 * n, NULL, 0, "input", &s->x)) != 0)
        goto done;
    if ((st = qk_buffer_write(s->ctx, s->x, 0, s->host_x, 4 * n)) != QK_OK) {
        rc = cli_lib_error(s->ctx, st, "bench: uploading the input to %s", backend);
        goto done;
    }
    if ((rc = make_buffer(s, 4 * n, zeros, ZEROS, "copy", &s->copy)) != 0)
        goto done;
    if ((uses(a, BENCH_QUANTIZE) || uses(a, BENCH_DEQUANTIZE)) &&
        (rc = make_buffer(s, n, zeros, ZEROS, "codes", &s->codes)) != 0)
        goto done;
    if (uses(a, BENCH_DEQUANTIZE) && (rc = make_buffer(s, 4 * n, zeros, ZEROS, "dequantized", &s->deq)) != 0)
        goto done;
    if (uses(a, BENCH_QUANTIZE_E2E)) {
        s->host_codes = qk_big_alloc(n);
        if (!s->host_codes) {
            rc = cli_status_error(QK_ERR_NO_MEMORY, NULL, "bench: allocating %zu bytes of host codes", n);
            goto done;
        }
        memset(s->host_codes, 0, n); /* first touch, before the clock */
    }

    qk_tensor x = qk_tensor_buffer(QK_F32, s->x, 0, s->n);
    qk_minmax_result mm;
    if ((st = qk_minmax(s->ctx, &x, 0, &mm)) != QK_OK ||
        (st = qk_qparams_from_range(s->ctx, QK_ASYMMETRIC, 8, 0, 0, mm.min, mm.max, &s->params)) != QK_OK) {
        rc = cli_lib_error(s->ctx, st, "bench: parameters of the input on %s", backend);
        goto done;
    }
    qk_calib_options_default(&s->grid);
    s->grid.method = QK_CALIB_GRIDSEARCH;
    s->grid.grid_start = 99.0;
    s->grid.grid_stop = 100.0;
    s->grid.grid_step = 0.01;
    if (uses(a, BENCH_DEQUANTIZE)) {
        /* Real codes to dequantize, whether or not quantize itself is timed. */
        qk_tensor c = qk_tensor_buffer(QK_U8, s->codes, 0, s->n);
        if ((st = qk_quantize(s->ctx, &x, &s->params, &c)) != QK_OK) {
            rc = cli_lib_error(s->ctx, st, "bench: codes for dequantize on %s", backend);
            goto done;
        }
    }
done:
    free(zeros);
    return rc;
}

static void teardown(bench_state *s)
{
    qk_buffer *bufs[] = {s->x, s->copy, s->codes, s->deq};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        if (bufs[k])
            qk_buffer_destroy(s->ctx, bufs[k]);
    qk_big_free(s->host_codes, (size_t)s->n);
    if (s->ctx)
        qk_context_destroy(s->ctx);
    memset(s, 0, sizeof *s);
}

static int bench_backend(const bench_args *a, qk_backend_kind kind, float *host_x, bench_run *run)
{
    bench_state s = {0};
    s.n = a->n;
    s.host_x = host_x;
    double *times = NULL;
    int rc = cli_context_open(kind, &s.ctx);
    if (rc)
        return rc;
    const char *backend = qk_backend_name(qk_context_backend(s.ctx));
    memset(run, 0, sizeof *run);
    run->backend = backend;
    run->elements = a->n;
    run->reps = a->reps;
    run->warmup = a->warmup;
    run->seed = a->seed;
    qk_device_info dev;
    if (qk_context_device(s.ctx, &dev) == QK_OK)
        snprintf(run->device, sizeof run->device, "%s", dev.name);
    else
        snprintf(run->device, sizeof run->device, "unknown");

    /* The copy, the ops asked for, and minmax for gridsearch's x_minmax. */
    int timed_ops[BENCH_N_OPS + 2];
    size_t n_timed = 0;
    timed_ops[n_timed++] = OP_COPY;
    for (size_t k = 0; k < a->n_ops; k++)
        timed_ops[n_timed++] = a->ops[k];
    int extra_minmax = uses(a, BENCH_GRIDSEARCH) && !uses(a, BENCH_MINMAX);
    if (extra_minmax)
        timed_ops[n_timed++] = BENCH_MINMAX;

    times = malloc(n_timed * (size_t)a->reps * sizeof *times);
    if (!times) {
        rc = cli_error("bench: out of memory");
        goto done;
    }
    if ((rc = setup(&s, a, backend)) != 0)
        goto done;
    if ((rc = time_rounds(&s, a, backend, timed_ops, n_timed, times)) != 0)
        goto done;

    double median[BENCH_N_OPS + 2], minimum[BENCH_N_OPS + 2], minmax_seconds = NAN;
    for (size_t k = 0; k < n_timed; k++) {
        bench_summarise(times + k * (size_t)a->reps, (size_t)a->reps, &median[k], &minimum[k]);
        if (timed_ops[k] == BENCH_MINMAX)
            minmax_seconds = median[k];
    }
    run->copy_bytes = op_bytes(OP_COPY, a->n);
    run->copy_seconds = median[0];
    run->copy_seconds_min = minimum[0];
    run->copy_gbps = (double)run->copy_bytes / run->copy_seconds / 1e9;
    for (size_t k = 1; k < n_timed - (size_t)extra_minmax; k++) {
        int op = timed_ops[k];
        bench_result *r = &run->results[run->n_results++];
        r->op = op;
        r->elements = a->n;
        r->bytes = op_bytes(op, a->n);
        r->seconds = median[k];
        r->seconds_min = minimum[k];
        r->gbps = (double)r->bytes / r->seconds / 1e9;
        r->fraction_of_copy = r->gbps / run->copy_gbps;
        /* The grid search's cost in minmax passes. */
        r->x_minmax = op == BENCH_GRIDSEARCH ? r->seconds / minmax_seconds : NAN;
    }
done:
    free(times);
    teardown(&s);
    return rc;
}

/* ---- the command ------------------------------------------------------------------ */

int cmd_bench(int argc, char **argv)
{
    bench_args a = {0};
    a.backend = QK_BACKEND_AUTO;
    a.n = DEFAULT_ELEMENTS;
    a.reps = DEFAULT_REPS;
    a.warmup = DEFAULT_WARMUP;
    a.seed = DEFAULT_SEED;
    for (int k = 0; k < BENCH_N_OPS; k++)
        a.ops[a.n_ops++] = k;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;

    if (a.csv && (rc = bench_check_csv(a.csv)) != 0)
        return rc; /* before minutes of benchmarking, not after */

    /* Which backends: all that answer, or the one asked for. */
    qk_backend_kind kinds[3];
    size_t n_kinds = 0;
    if (a.all) {
        static const qk_backend_kind every[] = {QK_BACKEND_CPU, QK_BACKEND_OPENCL, QK_BACKEND_CUDA};
        for (size_t k = 0; k < 3; k++) {
            qk_backend_info info;
            qk_status st = qk_backend_query(every[k], &info);
            if (st != QK_OK)
                return cli_status_error(st, NULL, "querying backend %s", qk_backend_name(every[k]));
            if (info.available)
                kinds[n_kinds++] = every[k];
            else
                fprintf(stderr, "qkern bench: skipping %s: %s%s%s\n", info.name,
                        info.compiled ? "not available" : "not compiled", info.reason[0] ? ": " : "", info.reason);
        }
        if (n_kinds == 0)
            return cli_status_error(QK_ERR_NO_DEVICE, NULL, "bench: no backend is available");
    } else {
        kinds[n_kinds++] = a.backend;
    }

    size_t bytes = 4 * (size_t)a.n;
    float *host_x = qk_big_alloc(bytes);
    if (!host_x)
        return cli_status_error(QK_ERR_NO_MEMORY, NULL, "bench: allocating %zu bytes for the input", bytes);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "qkern bench: generating %lld elements (seed %llu)\n", (long long)a.n,
                (unsigned long long)a.seed);
    bench_fill_laplace(host_x, a.n, a.seed);

    bench_run runs[3];
    size_t n_runs = 0;
    for (size_t k = 0; k < n_kinds && rc == 0; k++) {
        rc = bench_backend(&a, kinds[k], host_x, &runs[n_runs]);
        if (rc == 0) {
            if (!a.json)
                bench_print_table(&runs[n_runs]);
            n_runs++;
        }
    }
    qk_big_free(host_x, bytes);
    if (rc)
        return rc;

    if (a.json && (rc = bench_emit_json(runs, n_runs, a.all)) != 0)
        return rc;
    if (a.csv && (rc = bench_append_csv(a.csv, runs, n_runs)) != 0)
        return rc;
    return CLI_EXIT_OK;
}
