/* qk_model_quantize / qk_model_dequantize through the public API, as an engine
 * calls them: defaults, the report, a cancel from the progress callback (nothing
 * written), pieces under a small memory limit giving the same file, planned
 * headers equal to the in-memory writer's, bad arguments. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "file_fixture.h"
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
    };
    return cmocka_run_group_tests(tests, setup, fixture_teardown);
}
