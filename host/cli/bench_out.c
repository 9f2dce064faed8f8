/* Output of `qkern bench`: table, JSON, CSV. Numbers in JSON and CSV are the
 * shortest text that reads back to the same double, so a script recomputing
 * gbps from bytes and seconds gets exactly the value printed. */
#include "bench_out.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "cli.h"
#include "json_out.h"
#include "report.h"

const char *const bench_op_names[BENCH_N_OPS] = {
    "minmax", "percentile", "quantize", "dequantize", "mse", "gridsearch", "quantize_e2e", "minmax_e2e",
};

const char bench_csv_header[] =
    "device,backend,op,elements,seconds,seconds_min,gbps,copy_gbps,fraction_of_copy,date,host";

/* ---- table ----------------------------------------------------------------- */

void bench_print_table(const bench_run *run)
{
    double mib = 4.0 * (double)run->elements / (1024.0 * 1024.0);
    printf("backend %s, device %s\n", run->backend, run->device);
    printf("%" PRId64 " float32 elements (%.4g MiB), seed %" PRIu64 "; median and minimum of %ld run%s after %ld "
           "warm-up%s\n",
           run->elements, mib, run->seed, run->reps, run->reps == 1 ? "" : "s", run->warmup,
           run->warmup == 1 ? "" : "s");
    printf("copy (qk_buffer_copy, read + write %" PRIu64 " bytes): median %.6g s, min %.6g s -> %.3f GB/s\n",
           run->copy_bytes, run->copy_seconds, run->copy_seconds_min, run->copy_gbps);
    printf("\n%-13s %14s %12s %12s %10s %8s\n", "op", "bytes", "median s", "min s", "GB/s", "of copy");
    for (size_t k = 0; k < run->n_results; k++) {
        const bench_result *r = &run->results[k];
        printf("%-13s %14" PRIu64 " %12.6g %12.6g %10.3f %8.3f", bench_op_names[r->op], r->bytes, r->seconds,
               r->seconds_min, r->gbps, r->fraction_of_copy);
        if (isfinite(r->x_minmax))
            printf("  = %.1f x minmax", r->x_minmax);
        putchar('\n');
    }
    putchar('\n');
}

/* ---- JSON ------------------------------------------------------------------- */

static void add_run(cli_json *j, cJSON *o, const bench_run *run)
{
    cli_json_string(j, o, "device", run->device);
    cli_json_string(j, o, "backend", run->backend);
    cli_json_int(j, o, "elements", run->elements);
    cli_json_int(j, o, "reps", run->reps);
    cli_json_int(j, o, "warmup", run->warmup);
    cli_json_uint(j, o, "seed", run->seed);
    cli_json_double(j, o, "copy_gbps", run->copy_gbps);
    cli_json_uint(j, o, "copy_bytes", run->copy_bytes);
    cli_json_double(j, o, "copy_seconds", run->copy_seconds);
    cli_json_double(j, o, "copy_seconds_min", run->copy_seconds_min);
    cJSON *list = cli_json_array(j, o, "results");
    for (size_t k = 0; k < run->n_results; k++) {
        const bench_result *r = &run->results[k];
        cJSON *jr = cli_json_object(j, list, NULL);
        cli_json_string(j, jr, "op", bench_op_names[r->op]);
        cli_json_int(j, jr, "elements", r->elements);
        cli_json_uint(j, jr, "bytes", r->bytes);
        cli_json_double(j, jr, "seconds", r->seconds);
        cli_json_double(j, jr, "seconds_min", r->seconds_min);
        cli_json_double(j, jr, "gbps", r->gbps);
        cli_json_double(j, jr, "fraction_of_copy", r->fraction_of_copy);
        if (isfinite(r->x_minmax))
            cli_json_double(j, jr, "x_minmax", r->x_minmax);
    }
}

int bench_emit_json(const bench_run *runs, size_t n, int as_list)
{
    cli_json j;
    cli_json_init(&j);
    if (as_list) {
        cJSON *list = cli_json_array(&j, j.root, "runs");
        for (size_t k = 0; k < n; k++)
            add_run(&j, cli_json_object(&j, list, NULL), &runs[k]);
    } else {
        add_run(&j, j.root, &runs[0]);
    }
    int rc = cli_json_emit(&j);
    cli_json_free(&j);
    return rc;
}

/* ---- CSV -------------------------------------------------------------------- */

typedef struct text {
    char *s;
    size_t len, cap;
    int failed;
} text;

static void text_add(text *t, const char *fmt, ...) CLI_PRINTF(2, 3);
static void text_add(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int need = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (need < 0) {
            t->failed = 1;
            return;
        }
        if (t->s && t->len + (size_t)need < t->cap) {
            t->len += (size_t)need;
            return;
        }
        size_t cap = t->cap ? t->cap : 1024;
        while (cap <= t->len + (size_t)need)
            cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->failed = 1;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
}

/* RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled. */
static void text_field(text *t, const char *v)
{
    if (strpbrk(v, ",\"\r\n") == NULL) {
        text_add(t, "%s", v);
        return;
    }
    text_add(t, "\"");
    for (const char *p = v; *p; p++) {
        if (*p == '"')
            text_add(t, "\"\"");
        else
            text_add(t, "%c", *p);
    }
    text_add(t, "\"");
}

static void text_number(text *t, double v)
{
    char buf[32];
    if (!isfinite(v)) {
        text_add(t, ","); /* an empty field: no value */
        return;
    }
    cli_format_double(buf, v);
    text_add(t, ",%s", buf);
}

static void build_rows(text *t, const bench_run *runs, size_t n)
{
    char date[32] = "", host[256] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    for (size_t k = 0; k < n; k++) {
        const bench_run *run = &runs[k];
        for (size_t i = 0; i < run->n_results; i++) {
            const bench_result *r = &run->results[i];
            text_field(t, run->device);
            text_add(t, ",");
            text_field(t, run->backend);
            text_add(t, ",%s,%" PRId64, bench_op_names[r->op], r->elements);
            text_number(t, r->seconds);
            text_number(t, r->seconds_min);
            text_number(t, r->gbps);
            text_number(t, run->copy_gbps);
            text_number(t, r->fraction_of_copy);
            text_add(t, ",%s,", date);
            text_field(t, host);
            text_add(t, "\n");
        }
    }
}

/* 0 when text (the file's contents) starts with our header line; -1 (with why) otherwise. */
static int header_matches(const char *buf, size_t len, char *why, size_t why_len)
{
    size_t hlen = strlen(bench_csv_header);
    int ok = len >= hlen && memcmp(buf, bench_csv_header, hlen) == 0 &&
             (len == hlen || buf[hlen] == '\n' || buf[hlen] == '\r');
    if (!ok) {
        snprintf(why, why_len, "its first line is not the bench header (%s)", bench_csv_header);
        return -1;
    }
    return 0;
}

/* The whole of an existing CSV (regular file, at most 1 GiB), or size 0 when
 * there is none yet. */
static int read_existing(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? CLI_EXIT_OK : cli_status_error(QK_ERR_IO, strerror(errno), "opening %s", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cli_status_error(QK_ERR_IO, strerror(e), "reading %s", path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return cli_status_error(QK_ERR_IO, "not a regular file", "appending to %s", path);
    }
    if ((uint64_t)sb.st_size > ((uint64_t)1 << 30)) {
        close(fd);
        return cli_status_error(QK_ERR_IO, "larger than 1 GiB: start a new file", "appending to %s", path);
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t done = 0;
    while (buf && done < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + done, (size_t)sb.st_size - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return cli_status_error(QK_ERR_IO, r < 0 ? strerror(e) : "it shrank while being read", "reading %s", path);
        }
        done += (size_t)r;
    }
    close(fd);
    if (!buf)
        return cli_error("reading %s: out of memory", path);
    *data = buf;
    *len = done;
    return CLI_EXIT_OK;
}

/* Appending is a rewrite through the atomic output (host/io/atomic_file.h):
 * the old rows and the new ones go to a temporary that replaces the file only
 * when complete, so a full disk, a signal or a crash never leaves half a row,
 * and the file keeps its mode, owner and links. */
int bench_check_csv(const char *path)
{
    char *old = NULL, err[512], why[256];
    size_t old_len = 0;
    int rc = strcmp(path, "-") == 0 ? CLI_EXIT_OK : read_existing(path, &old, &old_len);
    if (rc == CLI_EXIT_OK && old_len > 0 && header_matches(old, old_len, why, sizeof why) != 0)
        rc = cli_status_error(QK_ERR_FORMAT, why, "appending to %s", path);
    free(old);
    if (rc == CLI_EXIT_OK && qk_atomic_check(path, err, sizeof err) != QK_OK)
        rc = cli_status_error(QK_ERR_IO, err, "cannot write --csv %s", path);
    return rc;
}

int bench_append_csv(const char *path, const bench_run *runs, size_t n)
{
    char *old = NULL;
    size_t old_len = 0;
    /* "-": the header and rows to standard output */
    int rc = strcmp(path, "-") == 0 ? CLI_EXIT_OK : read_existing(path, &old, &old_len);
    if (rc)
        return rc;
    text t = {0};
    if (old_len > 0) {
        char why[256];
        if (header_matches(old, old_len, why, sizeof why) != 0) {
            free(old);
            return cli_status_error(QK_ERR_FORMAT, why, "appending to %s", path);
        }
        if (old[old_len - 1] != '\n')
            text_add(&t, "\n"); /* a file edited by hand without a final newline */
    } else {
        text_add(&t, "%s\n", bench_csv_header);
    }
    build_rows(&t, runs, n);
    if (t.failed) {
        free(t.s);
        free(old);
        return cli_error("building the CSV rows: out of memory");
    }
    char err[512];
    qk_atomic_file f;
    qk_status st = qk_atomic_open(&f, path, err, sizeof err);
    if (st == QK_OK && old_len > 0)
        st = qk_atomic_write(&f, old, old_len, err, sizeof err);
    if (st == QK_OK)
        st = qk_atomic_write(&f, t.s, t.len, err, sizeof err);
    if (st == QK_OK)
        st = qk_atomic_commit(&f, err, sizeof err);
    else
        qk_atomic_abort(&f);
    free(t.s);
    free(old);
    if (st != QK_OK)
        return cli_status_error(st, err, "appending to %s", path);
    return CLI_EXIT_OK;
}
