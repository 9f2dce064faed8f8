/* What `qkern bench` measured and the three ways it reports it: a table for
 * people, one JSON document for scripts, CSV rows appended to a file. */
#ifndef QK_CLI_BENCH_OUT_H
#define QK_CLI_BENCH_OUT_H

#include <stddef.h>
#include <stdint.h>

/* The operations, in their default order. The _e2e ones start and end in host
 * memory (transfers included); the others work on device-resident buffers. */
enum bench_op {
    BENCH_MINMAX,
    BENCH_PERCENTILE,
    BENCH_QUANTIZE,
    BENCH_DEQUANTIZE,
    BENCH_MSE,
    BENCH_GRIDSEARCH,
    BENCH_QUANTIZE_E2E,
    BENCH_MINMAX_E2E,
    BENCH_N_OPS
};

extern const char *const bench_op_names[BENCH_N_OPS];

typedef struct bench_result {
    int op;               /* enum bench_op */
    int64_t elements;
    uint64_t bytes;       /* minimal traffic: bytes read + written */
    double seconds;       /* median */
    double seconds_min;
    double gbps;          /* bytes / seconds / 1e9 */
    double fraction_of_copy; /* gbps / copy_gbps */
    double x_minmax;      /* gridsearch: seconds / minmax's seconds; NaN otherwise */
} bench_result;

typedef struct bench_run {
    char device[128];
    const char *backend;  /* static name */
    int64_t elements;
    long reps, warmup;
    uint64_t seed;
    uint64_t copy_bytes;  /* 2 x 4n: read + write */
    double copy_seconds, copy_seconds_min, copy_gbps;
    bench_result results[BENCH_N_OPS];
    size_t n_results;
} bench_run;

/* Print the run as a table on stdout. */
void bench_print_table(const bench_run *run);

/* One JSON document on stdout: the run itself when as_list is 0 (n == 1),
 * else {"runs":[...]}. Returns 0 or CLI_EXIT_RUNTIME (reported). */
int bench_emit_json(const bench_run *runs, size_t n, int as_list);

/* Before any work: an existing CSV at path starts with the header and the file
 * may be written. Returns 0 or CLI_EXIT_RUNTIME (reported). */
int bench_check_csv(const char *path);
/* Append one row per result of every run to the CSV file at path, with a header
 * line first when the file is new or empty ("-": to standard output). The file
 * is rewritten through the atomic output: it changes only when complete, so it
 * never ends in a partial row. Returns 0 or CLI_EXIT_RUNTIME (reported). */
int bench_append_csv(const char *path, const bench_run *runs, size_t n);

/* The CSV header line, without the newline. */
extern const char bench_csv_header[];

#endif
