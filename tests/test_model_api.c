/* qk_model_quantize / qk_model_dequantize through the public API, as an engine
 * calls them: defaults, the report, a cancel from the progress callback (nothing
 * written), pieces under a small memory limit giving the same file, planned
 * headers equal to the in-memory writer's, bad arguments; GGUF out and in
 * (ggml types: bytes equal to qk_ggml_quantize's, restored values equal to
 * qk_ggml_dequantize's). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "file_fixture.h"
#include "gguf.h"
#include "qkern.h"
#include "safetensors.h"

#define ROWS 300
#define COLS 96

static float g_w[ROWS * COLS];
static float g_b[COLS];

static int setup(void **state)
{
    (void)state;
    uint32_t s = 12345u;
    for (size_t i = 0; i < ROWS * COLS; i++) {
        s = s * 1664525u + 1013904223u;
        g_w[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (1.0f + (float)(i % 7));
    }
    for (size_t i = 0; i < COLS; i++)
        g_b[i] = (float)i * 0.01f;
    if (fixture_setup("qkern-model-api") != 0)
        return -1;
    char err[256];
    qk_st_writer *w = NULL;
    int64_t ws[2] = {ROWS, COLS}, bs[1] = {COLS};
    if (qk_st_writer_begin(path_in("m.safetensors"), &w, err, sizeof err) != QK_OK ||
        qk_st_writer_add(w, "w", QK_F32, 2, ws, g_w, err, sizeof err) != QK_OK ||
        qk_st_writer_add(w, "b", QK_F32, 1, bs, g_b, err, sizeof err) != QK_OK ||
        qk_st_writer_set_metadata(w, "format", "pt", err, sizeof err) != QK_OK ||
        qk_st_writer_commit(w, err, sizeof err) != QK_OK)
        return -1;
    return 0;
}

static qk_model_options options(void)
{
    qk_model_options o;
    assert_int_equal(qk_model_options_default(&o), QK_OK);
    static const qk_backend_kind cpu = QK_BACKEND_CPU;
    o.backends = &cpu;
    o.n_backends = 1;
    return o;
}

static void defaults(void **state)
{
    (void)state;
    qk_model_options o;
    assert_int_equal(qk_model_options_default(&o), QK_OK);
    assert_int_equal(o.jobs, 1);
    assert_int_equal(o.granularity, QK_PER_CHANNEL);
    assert_int_equal(o.calib.bits, 8);
    assert_int_equal(o.memory_limit, 0);
    assert_int_equal(qk_model_options_default(NULL), QK_ERR_INVALID_ARG);
    assert_non_null(qk_status_string(QK_ERR_CANCELLED));
}

static void quantize_reports_every_tensor(void **state)
{
    (void)state;
    qk_model_options o = options();
    qk_model_report rep;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("q.safetensors"), &o, &rep), QK_OK);
    assert_int_equal(rep.n_tensors, 2);
    assert_string_equal(rep.tensors[0].name, "w");
    assert_true(rep.tensors[0].converted);
    assert_int_equal(rep.tensors[0].blocks, ROWS);
    assert_int_equal(rep.tensors[0].elements, ROWS * COLS);
    assert_false(rep.tensors[1].converted);
    assert_string_equal(rep.tensors[1].reason, "fewer than 2 dimensions");
    assert_int_equal(rep.backend, QK_BACKEND_CPU);
    assert_true(rep.peak_rss > 0);
    assert_true(rep.bytes_out > 0 && rep.bytes_out < rep.bytes_in);
    qk_model_report_release(&rep);

    /* 64 KiB of buffers: the rows go through a few at a time, the file is the same */
    o.memory_limit = 64 << 10;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("q2.safetensors"), &o, &rep), QK_OK);
    qk_model_report_release(&rep);
    size_t n1, n2;
    unsigned char *a = read_bytes(path_in("q.safetensors"), &n1), *b = read_bytes(path_in("q2.safetensors"), &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a);
    free(b);

    assert_int_equal(qk_model_dequantize(path_in("q.safetensors"), path_in("d.safetensors"), &o, &rep), QK_OK);
    assert_int_equal(rep.n_tensors, 2);
    /* in the quantized file's order: b (F32) before w's 8-bit codes */
    assert_string_equal(rep.tensors[1].name, "w");
    assert_true(rep.tensors[1].converted);
    assert_false(rep.tensors[0].converted);
    assert_string_equal(rep.tensors[1].st_dtype, "F32");
    qk_model_report_release(&rep);
    assert_int_equal(count_temp_files(g_dir), 0);
}

static int calls;

static int cancel_at_third(void *user, const qk_model_progress *p)
{
    (void)user;
    assert_true(p->bytes_done <= p->bytes_total);
    return ++calls >= 3;
}

static void cancel_leaves_nothing(void **state)
{
    (void)state;
    qk_model_options o = options();
    o.memory_limit = 64 << 10; /* several pieces: the callback runs between them */
    o.progress = cancel_at_third;
    qk_model_report rep;
    calls = 0;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("c.safetensors"), &o, &rep),
                     QK_ERR_CANCELLED);
    assert_true(strstr(rep.detail, "cancelled") != NULL);
    qk_model_report_release(&rep);
    assert_false(file_exists(path_in("c.safetensors")));
    assert_int_equal(count_temp_files(g_dir), 0);
    /* a directory output too */
    calls = 0;
    o.max_shard_size = 4096;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("cdir"), &o, &rep), QK_ERR_CANCELLED);
    qk_model_report_release(&rep);
    assert_false(file_exists(path_in("cdir")));
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void bad_arguments(void **state)
{
    (void)state;
    qk_model_options o = options();
    qk_model_report rep;
    assert_int_equal(qk_model_quantize(NULL, path_in("x.safetensors"), &o, &rep), QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("x.safetensors"), &o, NULL),
                     QK_ERR_INVALID_ARG);
    assert_int_equal(qk_model_quantize(path_in("nope.safetensors"), path_in("x.safetensors"), &o, &rep), QK_ERR_IO);
    assert_true(strstr(rep.what, "nope.safetensors") != NULL);
    qk_model_report_release(&rep);
    o.pack4 = 1; /* with 8 bits */
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("x.safetensors"), &o, &rep),
                     QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    o = options();
    static const char *const bad[] = {"("};
    o.include = bad;
    o.n_include = 1;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("x.safetensors"), &o, &rep),
                     QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    /* not a quantized model */
    o = options();
    assert_int_equal(qk_model_dequantize(path_in("m.safetensors"), path_in("x.safetensors"), &o, &rep),
                     QK_ERR_FORMAT);
    qk_model_report_release(&rep);
    assert_false(file_exists(path_in("x.safetensors")));
}

/* GGUF through the API: Q8_0 (rows of 96: three blocks), bytes as
 * qk_ggml_quantize writes them, in pieces the same file, restored as
 * qk_ggml_dequantize gives them; the format checks. */
static void gguf_out_and_in(void **state)
{
    (void)state;
    qk_model_options o = options();
    o.ggml = 1;
    o.ggml_type = QK_GGML_Q8_0;
    qk_model_report rep;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("q.gguf"), &o, &rep), QK_OK);
    assert_int_equal(rep.n_tensors, 2);
    assert_true(rep.tensors[0].converted);
    assert_int_equal(rep.tensors[0].ggml_type, QK_GGML_Q8_0);
    assert_int_equal(rep.tensors[0].blocks, ROWS * COLS / 32);
    assert_true(rep.tensors[0].sse > 0.0 && rep.tensors[0].sum_squares > rep.tensors[0].sse * 1000.0);
    assert_false(rep.tensors[1].converted);
    assert_int_equal(rep.tensors[1].ggml_type, QK_GGML_F32);
    qk_model_report_release(&rep);

    char err[256];
    qk_context *ctx = NULL;
    assert_int_equal(qk_context_create(QK_BACKEND_CPU, &ctx, err, sizeof err), QK_OK);
    size_t nq = 0;
    assert_int_equal(qk_ggml_size(QK_GGML_Q8_0, ROWS * COLS, &nq), QK_OK);
    uint8_t *want = malloc(nq);
    float *back = malloc(sizeof g_w);
    qk_tensor x = qk_tensor_host(QK_F32, g_w, ROWS * COLS), q = qk_tensor_host(QK_U8, want, (int64_t)nq),
              bt = qk_tensor_host(QK_F32, back, ROWS * COLS);
    assert_int_equal(qk_ggml_quantize(ctx, &x, QK_GGML_Q8_0, &q), QK_OK);
    assert_int_equal(qk_ggml_dequantize(ctx, &q, QK_GGML_Q8_0, &bt), QK_OK);
    qk_gguf_file *f = NULL;
    assert_int_equal(qk_gguf_open(path_in("q.gguf"), &f, err, sizeof err), QK_OK);
    const qk_gguf_tensor *w = qk_gguf_tensor_find(f, "w");
    assert_non_null(w);
    assert_int_equal(w->type, QK_GGML_Q8_0);
    assert_int_equal(w->ne[0], COLS); /* ne reversed: the row first */
    assert_int_equal(w->ne[1], ROWS);
    assert_int_equal(w->nbytes, nq);
    assert_memory_equal(w->data, want, nq);
    const qk_gguf_kv *ft = qk_gguf_kv_find(f, "general.file_type"), *fmt = qk_gguf_kv_find(f, "format");
    uint64_t v = 0;
    assert_non_null(ft);
    assert_int_equal(qk_gguf_value_u64(&ft->value, &v), QK_OK);
    assert_int_equal(v, 7); /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    assert_non_null(fmt); /* the safetensors metadata, as a string key */
    assert_int_equal(fmt->value.type, QK_GGUF_STRING);
    assert_memory_equal(fmt->value.data, "pt", 2);
    qk_gguf_close(f);

    /* in pieces of a few rows: the same file */
    o.memory_limit = 64 << 10;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("q2.gguf"), &o, &rep), QK_OK);
    qk_model_report_release(&rep);
    size_t n1, n2;
    unsigned char *a = read_bytes(path_in("q.gguf"), &n1), *b = read_bytes(path_in("q2.gguf"), &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a);
    free(b);

    /* restored: qk_ggml_dequantize's values, shapes row-major again */
    o = options();
    assert_int_equal(qk_model_dequantize(path_in("q.gguf"), path_in("d.safetensors"), &o, &rep), QK_OK);
    assert_true(rep.tensors[0].converted);
    assert_int_equal(rep.tensors[0].ggml_type, QK_GGML_Q8_0);
    assert_string_equal(rep.tensors[0].st_dtype, "F32");
    qk_model_report_release(&rep);
    qk_st_file *sf = NULL;
    assert_int_equal(qk_st_open(path_in("d.safetensors"), &sf, err, sizeof err), QK_OK);
    const qk_st_tensor *dw = NULL;
    for (size_t i = 0; i < qk_st_count(sf); i++)
        if (strcmp(qk_st_get(sf, i)->name, "w") == 0)
            dw = qk_st_get(sf, i);
    assert_non_null(dw);
    assert_int_equal(dw->ndim, 2);
    assert_int_equal(dw->shape[0], ROWS);
    assert_int_equal(dw->nbytes, sizeof g_w);
    const void *dd = NULL;
    void *copy = NULL;
    assert_int_equal(qk_st_tensor_aligned(dw, &dd, &copy, err, sizeof err), QK_OK);
    assert_memory_equal(dd, back, sizeof g_w);
    qk_st_free_copy(copy, dw->nbytes);
    qk_st_close(sf);
    o.out_dtype = QK_BF16;
    assert_int_equal(qk_model_dequantize(path_in("q.gguf"), path_in("d.gguf"), &o, &rep), QK_OK);
    qk_model_report_release(&rep);
    assert_int_equal(qk_gguf_open(path_in("d.gguf"), &f, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_tensor_find(f, "w")->type, QK_GGML_BF16);
    qk_gguf_close(f);

    /* the format rules */
    o = options();
    o.ggml = 1;
    o.ggml_type = QK_GGML_Q4_0;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("x.safetensors"), &o, &rep),
                     QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    o.max_shard_size = 4096;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("x.gguf"), &o, &rep), QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    o = options();
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("x.gguf"), &o, &rep), QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    assert_int_equal(qk_model_quantize(path_in("q.gguf"), path_in("x.safetensors"), &o, &rep), QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    o.out_dtype = QK_I32;
    assert_int_equal(qk_model_dequantize(path_in("q.gguf"), path_in("x.gguf"), &o, &rep), QK_ERR_INVALID_ARG);
    qk_model_report_release(&rep);
    /* a cancel leaves nothing */
    o = options();
    o.ggml = 1;
    o.ggml_type = QK_GGML_Q8_0;
    o.memory_limit = 64 << 10;
    o.progress = cancel_at_third;
    calls = 0;
    assert_int_equal(qk_model_quantize(path_in("m.safetensors"), path_in("c.gguf"), &o, &rep), QK_ERR_CANCELLED);
    qk_model_report_release(&rep);
    assert_false(file_exists(path_in("x.safetensors")));
    assert_false(file_exists(path_in("x.gguf")));
    assert_false(file_exists(path_in("c.gguf")));
    assert_int_equal(count_temp_files(g_dir), 0);
    free(want);
    free(back);
    qk_context_destroy(ctx);
}

/* The planned header is byte for byte the writer's. */
static void planned_header_matches_the_writer(void **state)
{
    (void)state;
    int64_t s2[2] = {3, 5}, s1[1] = {7};
    static const float x[15] = {0};
    static const uint8_t y[7] = {0};
    char err[256];
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path_in("p.safetensors"), &w, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_add(w, "x", QK_F32, 2, s2, x, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_add_raw(w, "y", "U8", 1, s1, y, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_set_metadata(w, "k", "v", err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_commit(w, err, sizeof err), QK_OK);
    size_t n;
    unsigned char *file = read_bytes(path_in("p.safetensors"), &n);
    qk_st_planned t[2] = {{"x", "F32", 2, s2, 60}, {"y", "U8", 1, s1, 7}};
    const char *k[1] = {"k"}, *v[1] = {"v"};
    unsigned char *head = NULL;
    size_t len = 0;
    assert_int_equal(qk_st_plan_header(t, 2, k, v, 1, &head, &len, err, sizeof err), QK_OK);
    assert_int_equal(len + 67, n);
    assert_memory_equal(head, file, len);
    free(head);
    free(file);
    t[1].nbytes = 8; /* a size the shape does not hold */
    assert_int_equal(qk_st_plan_header(t, 2, k, v, 1, &head, &len, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_null(head);
}

int main(void)
{
    (void)write_bytes; /* the fixture's, unused here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(quantize_reports_every_tensor),
        cmocka_unit_test(cancel_leaves_nothing),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(planned_header_matches_the_writer),
        cmocka_unit_test(gguf_out_and_in),
    };
    return cmocka_run_group_tests(tests, setup, fixture_teardown);
}
