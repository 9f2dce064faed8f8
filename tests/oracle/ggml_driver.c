/* The ggml oracle: ggml's own quantizer (ggml_quantize_chunk, no importance
 * matrix) and dequantizer (the type traits' to_float), from llama-cpp-python's
 * source distribution, built by build_ggml_oracle.sh. Never part of qkern.
 *
 *   ggml_driver quantize TYPE N_PER_ROW IN.f32 OUT.bin   (IN: float32 rows)
 *   ggml_driver dequantize TYPE N IN.bin OUT.f32
 *   ggml_driver info TYPE                                 (prints "blck_size type_size")
 *   ggml_driver bench TYPE N_PER_ROW IN.f32 REPEATS [THREADS]
 *                      seconds per pass (the best of REPEATS), rows split over THREADS
 *                      threads as llama-quantize does (default 1)
 *   ggml_driver read IN.f32 REPEATS [THREADS]   seconds per plain read pass over the same bytes
 *   ggml_driver benchdq TYPE N_PER_ROW IN.bin REPEATS [THREADS]
 *                      seconds per dequantizing pass (to_float) over IN's rows of blocks, the best of REPEATS
 *   ggml_driver model IN.safetensors LIST TYPE THREADS OUT.bin
 *                      llama-quantize's work on a safetensors file, for bench/gguf-model-speed.sh: each
 *                      line of LIST ("OFFSET ROWS COLS DTYPE Q", OFFSET absolute, DTYPE F32|F16|BF16, Q 1
 *                      to quantize) is a tensor read from IN, widened to float32 (F16/BF16) and, when Q,
 *                      quantized to TYPE with its rows split over THREADS threads; every tensor's bytes
 *                      (quantized, or as read) are written to OUT in order. Prints the seconds taken. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "ggml.h"

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: read failed\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "%s: write failed\n", path);
        exit(1);
    }
}

typedef struct job {
    enum ggml_type type;
    const float *x;
    void *y;
    int64_t row0, nrows, per_row;
    const uint64_t *words;
    size_t nwords;
    uint64_t sum;
} job;

static void *dequant_job(void *p)
{
    job *j = p;
    const struct ggml_type_traits *tt = ggml_get_type_traits(j->type);
    size_t rs = ggml_row_size(j->type, j->per_row);
    if (j->nrows > 0)
        tt->to_float((const char *)j->words + (size_t)j->row0 * rs, (float *)j->y + j->row0 * j->per_row,
                     j->nrows * j->per_row);
    return NULL;
}

static void *quant_job(void *p)
{
    job *j = p;
    if (j->nrows > 0)
        ggml_quantize_chunk(j->type, j->x, j->y, j->row0 * j->per_row, j->nrows, j->per_row, NULL);
    return NULL;
}

static void *read_job(void *p)
{
    job *j = p;
    uint64_t s = 0;
    for (size_t i = 0; i < j->nwords; i++)
        s += j->words[i];
    j->sum = s;
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The best of reps passes of fn over the jobs, one thread each. */
static double best_of(int reps, int nthreads, job *jobs, void *(*fn)(void *))
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        pthread_t th[64];
        double a = now();
        for (int t = 0; t < nthreads; t++)
            pthread_create(&th[t], NULL, fn, &jobs[t]);
        for (int t = 0; t < nthreads; t++)
            pthread_join(th[t], NULL);
        double e = now() - a;
        if (e < best)
            best = e;
    }
    return best;
}

/* The model mode: see the top of the file. */
static int model(const char *in, const char *list, enum ggml_type type, int nt, const char *out)
{
    double t0 = now();
    FILE *fi = fopen(in, "rb"), *fl = fopen(list, "r"), *fo = fopen(out, "wb");
    if (!fi || !fl || !fo) {
        fprintf(stderr, "model: cannot open %s, %s or %s\n", in, list, out);
        return 1;
    }
    if (nt < 1 || nt > 64)
        nt = 1;
    long long off, rows, cols;
    char dt[8];
    int q;
    void *raw = NULL, *y = NULL;
    float *x = NULL;
    size_t raw_cap = 0, x_cap = 0, y_cap = 0;
    while (fscanf(fl, "%lld %lld %lld %7s %d", &off, &rows, &cols, dt, &q) == 5) {
        size_t n = (size_t)rows * (size_t)cols, es = strcmp(dt, "F32") == 0 ? 4 : 2;
        if (n * es > raw_cap) {
            free(raw);
            raw_cap = n * es;
            raw = malloc(raw_cap);
        }
        if (!raw || fseeko(fi, (off_t)off, SEEK_SET) != 0 || fread(raw, 1, n * es, fi) != n * es) {
            fprintf(stderr, "model: cannot read %zu bytes at %lld\n", n * es, off);
            return 1;
        }
        if (!q) {
            if (fwrite(raw, 1, n * es, fo) != n * es)
                return 1;
            continue;
        }
        const float *xf = raw;
        if (es == 2) {
            if (n * 4 > x_cap) {
                free(x);
                x_cap = n * 4;
                x = malloc(x_cap);
            }
            if (strcmp(dt, "F16") == 0)
                ggml_fp16_to_fp32_row(raw, x, (int64_t)n);
            else
                ggml_bf16_to_fp32_row(raw, x, (int64_t)n);
            xf = x;
        }
        size_t ob = ggml_row_size(type, cols) * (size_t)rows;
        if (ob > y_cap) {
            free(y);
            y_cap = ob;
            y = malloc(y_cap);
        }
        job jobs[64];
        int64_t per = (rows + nt - 1) / nt;
        for (int t = 0; t < nt; t++) {
            int64_t r0 = t * per < rows ? t * per : rows, r1 = r0 + per < rows ? r0 + per : rows;
            jobs[t] = (job){.type = type, .x = xf, .y = y, .row0 = r0, .nrows = r1 - r0, .per_row = cols};
        }
        best_of(1, nt, jobs, quant_job);
        if (fwrite(y, 1, ob, fo) != ob)
            return 1;
    }
    if (fclose(fo) != 0)
        return 1;
    fclose(fi);
    fclose(fl);
    printf("%.6f\n", now() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "read") == 0) {
        size_t len;
        uint64_t *w = slurp(argv[2], &len);
        int reps = atoi(argv[3]), nt = argc > 4 ? atoi(argv[4]) : 1;
        if (nt < 1 || nt > 64)
            nt = 1;
        job jobs[64];
        size_t nw = len / 8, per = (nw + (size_t)nt - 1) / (size_t)nt;
        uint64_t total = 0;
        for (int t = 0; t < nt; t++) {
            size_t b = (size_t)t * per < nw ? (size_t)t * per : nw, e = b + per < nw ? b + per : nw;
            jobs[t] = (job){.words = w + b, .nwords = e - b};
        }
        double s = best_of(reps, nt, jobs, read_job);
        for (int t = 0; t < nt; t++)
            total += jobs[t].sum;
        printf("%.6f %llu\n", s, (unsigned long long)(total & 1));
        return 0;
    }
    if (argc >= 7 && strcmp(argv[1], "model") == 0)
        return model(argv[2], argv[3], (enum ggml_type)atoi(argv[4]), atoi(argv[5]), argv[6]);
    if (argc >= 6 && strcmp(argv[1], "benchdq") == 0) {
        enum ggml_type type = (enum ggml_type)atoi(argv[2]);
        int64_t per_row = atoll(argv[3]);
        size_t len;
        void *y = slurp(argv[4], &len);
        size_t rs = ggml_row_size(type, per_row);
        int64_t nrows = (int64_t)(len / rs);
        int reps = atoi(argv[5]), nt = argc > 6 ? atoi(argv[6]) : 1;
        if (nt < 1 || nt > 64)
            nt = 1;
        float *x = malloc((size_t)(nrows * per_row) * 4 + 4);
        job jobs[64];
        int64_t per = (nrows + nt - 1) / nt;
        for (int t = 0; t < nt; t++) {
            int64_t r0 = t * per < nrows ? t * per : nrows, r1 = r0 + per < nrows ? r0 + per : nrows;
            jobs[t] = (job){.type = type, .y = x, .words = y, .row0 = r0, .nrows = r1 - r0, .per_row = per_row};
        }
        best_of(1, nt, jobs, dequant_job); /* warm: pages touched */
        printf("%.6f\n", best_of(reps, nt, jobs, dequant_job));
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: ggml_driver quantize|dequantize|info|bench|benchdq|read|model TYPE ...\n");
        return 2;
    }
    enum ggml_type type = (enum ggml_type)atoi(argv[2]);
    if (strcmp(argv[1], "info") == 0) {
        printf("%lld %zu\n", (long long)ggml_blck_size(type), ggml_type_size(type));
        return 0;
    }
    if (argc < 6)
        return 2;
    if (strcmp(argv[1], "quantize") == 0 || strcmp(argv[1], "bench") == 0) {
        int64_t per_row = atoll(argv[3]);
        size_t len;
        float *x = slurp(argv[4], &len);
        int64_t n = (int64_t)(len / 4), nrows = n / per_row;
        size_t out_bytes = ggml_row_size(type, per_row) * (size_t)nrows;
        void *y = malloc(out_bytes ? out_bytes : 1);
        if (strcmp(argv[1], "bench") == 0) {
            int reps = atoi(argv[5]), nt = argc > 6 ? atoi(argv[6]) : 1;
            if (nt < 1 || nt > 64)
                nt = 1;
            ggml_quantize_chunk(type, x, y, 0, nrows, per_row, NULL); /* warm: pages touched */
            job jobs[64];
            int64_t per = (nrows + nt - 1) / nt;
            for (int t = 0; t < nt; t++) {
                int64_t r0 = t * per < nrows ? t * per : nrows, r1 = r0 + per < nrows ? r0 + per : nrows;
                jobs[t] = (job){.type = type, .x = x, .y = y, .row0 = r0, .nrows = r1 - r0, .per_row = per_row};
            }
            printf("%.6f\n", best_of(reps, nt, jobs, quant_job));
            return 0;
        }
        size_t got = ggml_quantize_chunk(type, x, y, 0, nrows, per_row, NULL);
        if (got != out_bytes) {
            fprintf(stderr, "ggml_quantize_chunk wrote %zu bytes, expected %zu\n", got, out_bytes);
            return 1;
        }
        spit(argv[5], y, out_bytes);
        return 0;
    }
    if (strcmp(argv[1], "dequantize") == 0) {
        int64_t n = atoll(argv[3]);
        size_t len;
        void *y = slurp(argv[4], &len);
        float *x = malloc((size_t)n * 4 + 4);
        const struct ggml_type_traits *tt = ggml_get_type_traits(type);
        if (type == GGML_TYPE_F32) { /* no to_float: it is a copy */
            memcpy(x, y, (size_t)n * 4);
        } else if (!tt->to_float) {
            fprintf(stderr, "type %d has no to_float\n", (int)type);
            return 1;
        } else {
            tt->to_float(y, x, n);
        }
        spit(argv[5], x, (size_t)n * 4);
        return 0;
    }
    return 2;
}
