/* The ggml oracle: ggml's own quantizer (ggml_quantize_chunk, no importance
 * matrix) and dequantizer (the type traits' to_float), from llama-cpp-python's
 * source distribution, built by build_ggml_oracle.sh. Never part of qkern.
 *
 *   ggml_driver quantize TYPE N_PER_ROW IN.f32 OUT.bin   (IN: float32 rows)
 *   ggml_driver dequantize TYPE N IN.bin OUT.f32
 *   ggml_driver info TYPE                                 (prints "blck_size type_size")
 *   ggml_driver bench TYPE N_PER_ROW IN.f32 REPEATS       (prints seconds per pass, 1 thread) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ggml_driver quantize|dequantize|info|bench TYPE ...\n");
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
            int reps = atoi(argv[5]);
            ggml_quantize_chunk(type, x, y, 0, nrows, per_row, NULL); /* warm: pages touched */
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            for (int r = 0; r < reps; r++)
                ggml_quantize_chunk(type, x, y, 0, nrows, per_row, NULL);
            clock_gettime(CLOCK_MONOTONIC, &b);
            printf("%.6f\n", ((b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec)) / reps);
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
