/* safetensors reader and writer: round trips, the official writer's exact
 * bytes, hostile headers and files, the atomic writer's failure paths, a
 * deterministic mutation loop, and (with QKERN_TEST_MODEL=path) a real model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* ---- fixtures ----------------------------------------------------------------- */

#include "file_fixture.h"

static int group_setup(void **state)
{
    (void)state;
    return fixture_setup("qk_test_st");
}

static void show(const char *what, const char *err)
{
    if (getenv("QK_TEST_VERBOSE") != NULL)
        print_message("  %-34s -> %s\n", what, err);
}

/* A file image: 8-byte little-endian length of the header text, the text,
 * then data_len data bytes (0x00, 0x01, ... unless data is given). */
static unsigned char *make_file(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++)
        b[8 + h + i] = data ? ((const unsigned char *)data)[i] : (unsigned char)i;
    return b;
}

/* Parse from an exact-size heap copy (ASan sees any read past it); a file
 * that parses is closed at once, the callers only want the status. */
static qk_status parse_status(const unsigned char *buf, size_t len, char *err, size_t err_len)
{
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, buf, len);
    qk_st_file *f = (qk_st_file *)1;
    qk_status st = qk_st_parse(len ? copy : NULL, len, &f, err, err_len);
    if (st == QK_OK)
        qk_st_close(f);
    else
        assert_null(f);
    free(copy);
    return st;
}

/* A header must fail with QK_ERR_FORMAT and a message containing want. */
static void expect_bad(const char *header, size_t data_len, const char *want)
{
    size_t len;
    unsigned char *b = make_file(header, NULL, data_len, &len);
    char err[512] = "unset";
    assert_int_equal(parse_status(b, len, err, sizeof err), QK_ERR_FORMAT);
    show(header, err);
    if (strstr(err, want) == NULL)
        fail_msg("header %s: message '%s' does not mention '%s'", header, err, want);
    /* Also without an error buffer. */
    qk_st_file *f = (qk_st_file *)1;
    assert_int_equal(qk_st_parse(b, len, &f, NULL, 0), QK_ERR_FORMAT);
    assert_null(f);
    free(b);
}

static void expect_bad_bytes(const unsigned char *b, size_t len, const char *what, const char *want)
{
    char err[512] = "unset";
    assert_int_equal(parse_status(b, len, err, sizeof err), QK_ERR_FORMAT);
    show(what, err);
    if (strstr(err, want) == NULL)
        fail_msg("%s: message '%s' does not mention '%s'", what, err, want);
}

static void expect_open_fails(const char *path, qk_status want, const char *what)
{
    qk_st_file *f = (qk_st_file *)1;
    char err[512] = "";
    assert_int_equal(qk_st_open(path, &f, err, sizeof err), want);
    assert_null(f);
    assert_true(strlen(err) > 0);
    show(what, err);
}

/* ---- round trips ------------------------------------------------------------------ */

typedef struct spec {
    const char *name;
    const char *st_dtype; /* written with add_raw when dtype is QK_ST_OTHER */
    qk_dtype dtype;
    int ndim;
    int64_t shape[4];
    size_t esize_bits;
} spec;

static size_t spec_bytes(const spec *s)
{
    uint64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= (uint64_t)s->shape[i];
    return (size_t)(n * s->esize_bits / 8);
}

static void test_roundtrip(void **state)
{
    (void)state;
    static const spec specs[] = {
        {"f32", NULL, QK_F32, 2, {3, 5}, 32},
        {"f64.scalar", NULL, QK_F64, 0, {0}, 64},
        {"f16", NULL, QK_F16, 1, {7}, 16},
        {"bf16", NULL, QK_BF16, 3, {2, 1, 3}, 16},
        {"u8", NULL, QK_U8, 1, {5}, 8},
        {"i8", NULL, QK_I8, 1, {3}, 8},
        {"u16", NULL, QK_U16, 1, {3}, 16},
        {"i16", NULL, QK_I16, 2, {1, 1}, 16},
        {"i32", NULL, QK_I32, 1, {4}, 32},
        {"empty", NULL, QK_F32, 1, {0}, 32},
        {"empty.mid", NULL, QK_I16, 3, {4, 0, 9}, 16},
        {"position_ids", "I64", QK_ST_OTHER, 2, {1, 6}, 64},
        {"mask", "BOOL", QK_ST_OTHER, 1, {5}, 8},
        {"u32", "U32", QK_ST_OTHER, 1, {2}, 32},
        {"u64", "U64", QK_ST_OTHER, 1, {2}, 64},
        {"c64", "C64", QK_ST_OTHER, 1, {2}, 64},
        {"fp8", "F8_E4M3", QK_ST_OTHER, 1, {3}, 8},
        {"fp4", "F4", QK_ST_OTHER, 1, {6}, 4},
        {"fp6", "F6_E2M3", QK_ST_OTHER, 1, {4}, 6},
        {"\xe6\xa8\xa1\xe5\x9e\x8b.w \"q\" \\ \n\t\x01", NULL, QK_U8, 1, {2}, 8}, /* UTF-8, escapes */
    };
    enum { N = sizeof specs / sizeof specs[0] };
    unsigned char *data[N];
    const char *path = path_in("rt.safetensors");
    char err[512] = "unset";
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path, &w, err, sizeof err), QK_OK);
    assert_string_equal(err, "");
    assert_non_null(w);
    for (size_t i = 0; i < N; i++) {
        size_t bytes = spec_bytes(&specs[i]);
        data[i] = malloc(bytes ? bytes : 1);
        assert_non_null(data[i]);
        for (size_t k = 0; k < bytes; k++)
            data[i][k] = (unsigned char)(k * 37u + i * 11u + 5u);
        qk_status st = specs[i].st_dtype
                           ? qk_st_writer_add_raw(w, specs[i].name, specs[i].st_dtype, specs[i].ndim, specs[i].shape,
                                                  data[i], err, sizeof err)
                           : qk_st_writer_add(w, specs[i].name, specs[i].dtype, specs[i].ndim, specs[i].shape,
                                              data[i], err, sizeof err);
        if (st != QK_OK)
            fail_msg("add %s: %s", specs[i].name, err);
    }
    assert_int_equal(qk_st_writer_set_metadata(w, "format", "pt", err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_set_metadata(w, "note", "first", err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_set_metadata(w, "note", "caf\xc3\xa9 \"quoted\"\n", err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_set_metadata(w, "", "empty key", err, sizeof err), QK_OK);
    assert_int_equal(count_temp_files(g_dir), named_temporaries()); /* the temporary exists from begin */
    assert_false(file_exists(path));
    assert_int_equal(qk_st_writer_commit(w, err, sizeof err), QK_OK);
    assert_string_equal(err, "");
    assert_int_equal(count_temp_files(g_dir), 0);

    qk_st_file *f = NULL;
    assert_int_equal(qk_st_open(path, &f, err, sizeof err), QK_OK);
    assert_string_equal(err, "");
    assert_int_equal(qk_st_count(f), N);
    assert_int_equal(qk_st_header_len(f) % 8, 0);
    size_t total = 0;
    for (size_t i = 0; i < N; i++) {
        const qk_st_tensor *t = qk_st_get(f, i); /* data order = add order */
        assert_non_null(t);
        assert_string_equal(t->name, specs[i].name);
        assert_int_equal(t->dtype, specs[i].dtype);
        assert_string_equal(t->st_dtype, specs[i].st_dtype ? specs[i].st_dtype : qk_st_dtype_string(specs[i].dtype));
        assert_int_equal(t->elem_bits, specs[i].esize_bits);
        assert_int_equal(t->elem_size, specs[i].esize_bits % 8 ? 0 : specs[i].esize_bits / 8);
        assert_int_equal(t->ndim, specs[i].ndim);
        assert_non_null(t->shape);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_int_equal(t->shape[d], specs[i].shape[d]);
            n *= specs[i].shape[d];
        }
        assert_int_equal(t->n, n);
        size_t bytes = spec_bytes(&specs[i]);
        assert_int_equal(t->nbytes, bytes);
        assert_int_equal(t->offset, total);
        assert_non_null(t->data);
        if (bytes > 0)
            assert_memory_equal(t->data, data[i], bytes);
        total += bytes;
        size_t idx = 99;
        assert_ptr_equal(qk_st_find(f, specs[i].name, &idx), t);
        assert_int_equal(idx, i);
    }
    assert_int_equal(qk_st_data_size(f), total);
    assert_null(qk_st_get(f, N));
    assert_null(qk_st_find(f, "nope", NULL));
    assert_null(qk_st_find(f, "", NULL));
    assert_null(qk_st_find(f, NULL, NULL));

    assert_int_equal(qk_st_metadata_count(f), 3);
    assert_string_equal(qk_st_metadata_get(f, "format"), "pt");
    assert_string_equal(qk_st_metadata_get(f, "note"), "caf\xc3\xa9 \"quoted\"\n");
    assert_string_equal(qk_st_metadata_get(f, ""), "empty key");
    assert_null(qk_st_metadata_get(f, "absent"));
    const char *k = NULL, *v = NULL;
    assert_int_equal(qk_st_metadata_at(f, 0, &k, &v), QK_OK); /* key order */
    assert_string_equal(k, "");
    assert_int_equal(qk_st_metadata_at(f, 1, &k, &v), QK_OK);
    assert_string_equal(k, "format");
    assert_int_equal(qk_st_metadata_at(f, 3, &k, &v), QK_ERR_INVALID_ARG);
    qk_st_close(f);
    qk_st_close(NULL);
    for (size_t i = 0; i < N; i++)
        free(data[i]);

    /* The file is what any safetensors reader expects: header text as cJSON
     * prints it, padded with spaces to 8 bytes. */
    size_t len;
    unsigned char *raw = read_bytes(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | raw[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(len, 8 + hlen + total);
    static const char head[] = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\xc3\xa9 \\\"quoted\\\"\\n\","
                               "\"\":\"empty key\"},"
                               "\"f32\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60]},";
    assert_memory_equal(raw + 8, head, sizeof head - 1);
    free(raw);
}

/* Zero tensors: "{}" padded, as the official writer's own test expects. */
static void test_empty_file_roundtrip(void **state)
{
    (void)state;
    const char *path = path_in("none.safetensors");
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path, &w, NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_commit(w, NULL, 0), QK_OK);
    size_t len;
    unsigned char *raw = read_bytes(path, &len);
    static const unsigned char want[] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    assert_int_equal(len, sizeof want);
    assert_memory_equal(raw, want, sizeof want);
    free(raw);
    qk_st_file *f = NULL;
    assert_int_equal(qk_st_open(path, &f, NULL, 0), QK_OK);
    assert_int_equal(qk_st_count(f), 0);
    assert_int_equal(qk_st_metadata_count(f), 0);
    assert_int_equal(qk_st_data_size(f), 0);
    qk_st_close(f);
}

/* Many tensors: the writer's name set grows, lookups stay right. */
static void test_many_tensors(void **state)
{
    (void)state;
    enum { N = 3000 };
    const char *path = path_in("many.safetensors");
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path, &w, NULL, 0), QK_OK);
    static int32_t vals[N];
    char name[64];
    for (int i = 0; i < N; i++) {
        vals[i] = i * 7 - 5;
        snprintf(name, sizeof name, "layer.%d.w", (i * 7919) % N);
        assert_int_equal(qk_st_writer_add(w, name, QK_I32, 1, (int64_t[]){1}, &vals[i], NULL, 0), QK_OK);
    }
    char err[256] = "";
    snprintf(name, sizeof name, "layer.%d.w", 1234);
    assert_int_equal(qk_st_writer_add(w, name, QK_I32, 1, (int64_t[]){1}, vals, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "duplicate"));
    assert_int_equal(qk_st_writer_commit(w, NULL, 0), QK_OK);
    qk_st_file *f = NULL;
    assert_int_equal(qk_st_open(path, &f, NULL, 0), QK_OK);
    assert_int_equal(qk_st_count(f), N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "layer.%d.w", (i * 7919) % N);
        size_t idx;
        const qk_st_tensor *t = qk_st_find(f, name, &idx);
        assert_non_null(t);
        assert_int_equal(idx, i);
        int32_t v;
        memcpy(&v, t->data, 4);
        assert_int_equal(v, vals[i]);
    }
    qk_st_close(f);
}

/* ---- the official format's exact bytes -------------------------------------------- */

static void write_and_compare(const char *name, const char *meta_key, const char *meta_value, int ndim,
                              const int64_t *shape, const float *x, const unsigned char *want, size_t want_len)
{
    const char *path = path_in("official.safetensors");
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path, &w, NULL, 0), QK_OK);
    if (meta_key)
        assert_int_equal(qk_st_writer_set_metadata(w, meta_key, meta_value, NULL, 0), QK_OK);
    if (name)
        assert_int_equal(qk_st_writer_add(w, name, QK_F32, ndim, shape, x, NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_commit(w, NULL, 0), QK_OK);
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);

    qk_st_file *f = NULL;
    assert_int_equal(qk_st_parse(want, want_len, &f, NULL, 0), QK_OK);
    if (name) {
        const qk_st_tensor *t = qk_st_find(f, name, NULL);
        assert_non_null(t);
        assert_int_equal(t->dtype, QK_F32);
        assert_int_equal(t->n, 6);
        assert_memory_equal(t->data, x, 24);
        assert_int_equal((uintptr_t)((const unsigned char *)t->data - want) % 8, 0);
    }
    if (meta_key)
        assert_string_equal(qk_st_metadata_get(f, meta_key), meta_value);
    qk_st_close(f);
}

/* Byte vectors from the official crate's own serialization tests
 * (safetensors/src/tensor.rs: test_serialization,
 * test_serialization_forced_alignement, test_empty): our writer produces
 * the same bytes and our reader takes them. */
static void test_official_vectors(void **state)
{
    (void)state;
    static const float x[6] = {0, 1, 2, 3, 4, 5};
    static const unsigned char ser[] = {
        64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101,
        34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34,
        100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0,
        0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
    write_and_compare("attn.0", NULL, NULL, 3, (int64_t[]){1, 2, 3}, x, ser, sizeof ser);

    static const unsigned char aligned[] = {
        72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34,
        58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44,
        34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125,
        32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
        160, 64};
    write_and_compare("attn0", NULL, NULL, 4, (int64_t[]){1, 1, 2, 3}, x, aligned, sizeof aligned);

    static const unsigned char meta[] = {40,  0,  0,   0,   0,   0,   0,   0,   123, 34,  95,  95,  109, 101,
                                         116, 97, 100, 97,  116, 97,  95,  95,  34,  58,  123, 34,  102, 114,
                                         97,  109, 101, 119, 111, 114, 107, 34,  58,  34,  112, 116, 34,  125,
                                         125, 32,  32,  32,  32,  32};
    write_and_compare(NULL, "framework", "pt", 0, NULL, NULL, meta, sizeof meta);
}

/* Headers as other writers lay them out: spaces, key order, tensors listed
 * in any order (the reader orders them by offset), unaligned data. */
static void test_foreign_layouts(void **state)
{
    (void)state;
    static const unsigned char data[] = {1, 2, 3, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 9, 9};
    size_t len;
    unsigned char *b = make_file(
        " \r\n\t{ \"z\" : {\"data_offsets\": [3, 11], \"shape\": [2], \"dtype\": \"F32\"},\n"
        "  \"__metadata__\": {\"b\": \"2\", \"a\": \"1\"},\n"
        "  \"a\": {\"shape\": [3], \"dtype\": \"U8\", \"data_offsets\": [0, 3]},\r\n"
        "\t\"e\": {\"dtype\": \"BF16\", \"data_offsets\": [11, 11], \"shape\": [0, 4]},"
        "  \"s\": {\"dtype\": \"I16\", \"shape\": [], \"data_offsets\": [11, 13]}}  \n\t ",
        data, sizeof data, &len);
    qk_st_file *f = NULL;
    char err[256];
    assert_int_equal(qk_st_parse(b, len, &f, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_count(f), 4);
    assert_string_equal(qk_st_get(f, 0)->name, "a");
    assert_string_equal(qk_st_get(f, 1)->name, "z");
    assert_string_equal(qk_st_get(f, 2)->name, "e");
    assert_string_equal(qk_st_get(f, 3)->name, "s");
    const qk_st_tensor *z = qk_st_get(f, 1);
    assert_int_equal(z->dtype, QK_F32);
    assert_int_equal(z->n, 2);
    float v[2];
    memcpy(v, z->data, sizeof v); /* offset 3: misaligned */
    assert_true(v[0] == 1.0f && v[1] == 2.0f);

    /* The aligned-copy helper. */
    const void *p = NULL;
    void *copy = NULL;
    assert_int_equal(qk_st_tensor_aligned(z, &p, &copy, err, sizeof err), QK_OK);
    if (((uintptr_t)z->data) % 4 != 0) {
        assert_non_null(copy);
        assert_ptr_equal(p, copy);
    }
    assert_int_equal((uintptr_t)p % 4, 0);
    assert_true(((const float *)p)[0] == 1.0f && ((const float *)p)[1] == 2.0f);
    qk_st_free_copy(copy, z->nbytes);
    const qk_st_tensor *a = qk_st_get(f, 0); /* one-byte elements are never copied */
    assert_int_equal(qk_st_tensor_aligned(a, &p, &copy, NULL, 0), QK_OK);
    assert_null(copy);
    assert_ptr_equal(p, a->data);
    const qk_st_tensor *e = qk_st_get(f, 2); /* empty: no copy */
    assert_int_equal(e->n, 0);
    assert_int_equal(e->nbytes, 0);
    assert_int_equal(qk_st_tensor_aligned(e, &p, &copy, NULL, 0), QK_OK);
    assert_null(copy);
    const qk_st_tensor *s = qk_st_get(f, 3); /* scalar */
    assert_int_equal(s->ndim, 0);
    assert_int_equal(s->n, 1);
    assert_int_equal(s->nbytes, 2);
    assert_int_equal(qk_st_tensor_aligned(NULL, &p, &copy, NULL, 0), QK_ERR_INVALID_ARG);

    assert_string_equal(qk_st_metadata_get(f, "a"), "1");
    assert_string_equal(qk_st_metadata_get(f, "b"), "2");
    qk_st_close(f);
    free(b);

    /* A misaligned F64 scalar, copied to an aligned buffer. */
    double d = -2.5;
    unsigned char dbytes[9] = {7};
    memcpy(dbytes + 1, &d, 8);
    b = make_file("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"y\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[1,9]}}   ",
                  dbytes, sizeof dbytes, &len);
    assert_int_equal(qk_st_parse(b, len, &f, err, sizeof err), QK_OK);
    const qk_st_tensor *y = qk_st_find(f, "y", NULL);
    assert_non_null(y);
    assert_int_equal(qk_st_tensor_aligned(y, &p, &copy, NULL, 0), QK_OK);
    assert_int_equal((uintptr_t)p % 8, 0);
    assert_true(*(const double *)p == -2.5);
    qk_st_free_copy(copy, y->nbytes);
    qk_st_close(f);
    free(b);
}

static void test_dtype_mapping(void **state)
{
    (void)state;
    static const qk_dtype q[] = {QK_F32, QK_F64, QK_F16, QK_BF16, QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
    static const char *const s[] = {"F32", "F64", "F16", "BF16", "U8", "I8", "U16", "I16", "I32"};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        assert_string_equal(qk_st_dtype_string(q[i]), s[i]);
        qk_dtype d;
        int bits;
        assert_int_equal(qk_st_dtype_parse(s[i], &d, &bits), QK_OK);
        assert_int_equal(d, q[i]);
        assert_int_equal((size_t)bits, 8 * qk_dtype_size(q[i]));
    }
    assert_null(qk_st_dtype_string(QK_ST_OTHER));
    assert_null(qk_st_dtype_string((qk_dtype)-1));
    qk_dtype d;
    int bits;
    assert_int_equal(qk_st_dtype_parse("I64", &d, &bits), QK_OK);
    assert_int_equal(d, QK_ST_OTHER);
    assert_int_equal(bits, 64);
    assert_int_equal(qk_st_dtype_parse("F4", &d, &bits), QK_OK);
    assert_int_equal(bits, 4);
    assert_int_equal(qk_st_dtype_parse("f32", &d, &bits), QK_ERR_UNSUPPORTED);
    assert_int_equal(qk_st_dtype_parse(NULL, &d, &bits), QK_ERR_UNSUPPORTED);
}

/* ---- hostile headers ---------------------------------------------------------------- */

#define T(dtype, shape, off) "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" off "}"

static void test_bad_offsets(void **state)
{
    (void)state;
    expect_bad("{\"a\":" T("F32", "[2]", "[0,8]") "}", 4, "run past the end");
    expect_bad("{\"a\":" T("F32", "[2]", "[4,12]") "}", 8, "run past the end");
    expect_bad("{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[4,12]") "}", 12, "overlaps");
    expect_bad("{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[0,8]") "}", 8, "overlaps");
    expect_bad("{\"a\":" T("F32", "[1]", "[0,4]") ",\"b\":" T("F32", "[1]", "[8,12]") "}", 12, "belong to no tensor");
    expect_bad("{\"a\":" T("F32", "[1]", "[4,8]") "}", 8, "belong to no tensor"); /* gap at the start */
    expect_bad("{\"a\":" T("F32", "[1]", "[0,4]") "}", 8, "belong to no tensor"); /* trailing bytes */
    expect_bad("{}", 1, "belong to no tensor");
    expect_bad("{\"a\":" T("F32", "[1]", "[8,4]") "}", 8, "before begin");
    expect_bad("{\"a\":" T("F32", "[3]", "[0,8]") "}", 8, "hold 8 bytes but");
    expect_bad("{\"a\":" T("F32", "[0]", "[0,4]") "}", 4, "hold 4 bytes but");
    expect_bad("{\"a\":" T("F32", "[2]", "[0]") "}", 8, "[begin, end]");
    expect_bad("{\"a\":" T("F32", "[2]", "[0,8,8]") "}", 8, "[begin, end]");
    expect_bad("{\"a\":" T("F32", "[2]", "{\"a\":0}") "}", 8, "[begin, end]");
    expect_bad("{\"a\":" T("F32", "[2]", "[0,\"8\"]") "}", 8, "two non-negative integers");
    expect_bad("{\"a\":" T("F32", "[2]", "[-0,8]") "}", 8, "two non-negative integers");
    expect_bad("{\"a\":" T("F32", "[2]", "[0,8.0]") "}", 8, "not an integer");
    expect_bad("{\"a\":" T("F32", "[2]", "[0,18446744073709551624]") "}", 8, "larger than 2^53");
    expect_bad("{\"a\":" T("F4", "[3]", "[0,1]") "}", 1, "not a whole number of bytes");
    /* the tensor is named in the message */
    expect_bad("{\"layer.7.w\":" T("F32", "[3]", "[0,8]") "}", 8, "layer.7.w");
}

static void test_bad_shapes(void **state)
{
    (void)state;
    expect_bad("{\"a\":" T("F32", "[4294967296,4294967296,4]", "[0,8]") "}", 8, "overflows");
    expect_bad("{\"a\":" T("F32", "[2147483648,2147483648]", "[0,8]") "}", 8, "overflow");
    expect_bad("{\"a\":" T("F32", "[9007199254740992,1024]", "[0,8]") "}", 8, "overflow");
    expect_bad("{\"a\":" T("F32", "[9007199254740993]", "[0,8]") "}", 8, "larger than 2^53");
    expect_bad("{\"a\":" T("F32", "[99999999999999999999999999]", "[0,8]") "}", 8, "larger than 2^53");
    expect_bad("{\"a\":" T("F32", "[2.5]", "[0,8]") "}", 8, "not an integer");
    expect_bad("{\"a\":" T("F32", "[2.0]", "[0,8]") "}", 8, "not an integer");
    expect_bad("{\"a\":" T("F32", "[2e0]", "[0,8]") "}", 8, "not an integer");
    expect_bad("{\"a\":" T("F32", "[1E1]", "[0,40]") "}", 40, "not an integer");
    expect_bad("{\"a\":" T("F32", "[02]", "[0,8]") "}", 8, "leading zero");
    expect_bad("{\"a\":" T("F32", "[-2]", "[0,8]") "}", 8, "negative");
    expect_bad("{\"a\":" T("F32", "[2,-1]", "[0,8]") "}", 8, "negative");
    expect_bad("{\"a\":" T("F32", "[\"2\"]", "[0,8]") "}", 8, "not a number");
    expect_bad("{\"a\":" T("F32", "[[2]]", "[0,8]") "}", 8, "not a number");
    expect_bad("{\"a\":" T("F32", "[true]", "[0,8]") "}", 8, "not a number");
    expect_bad("{\"a\":" T("F32", "[null]", "[0,8]") "}", 8, "not a number");
    expect_bad("{\"a\":" T("F32", "2", "[0,8]") "}", 8, "'shape' must be an array");
    expect_bad("{\"a\":" T("F32", "{}", "[0,8]") "}", 8, "'shape' must be an array");
    /* 32 dims are fine, 33 are not */
    {
        char h[1024];
        snprintf(h, sizeof h, "{\"a\":" T("U8", "[%s1]", "[0,1]") "}",
                 "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,");
        size_t len;
        unsigned char *b = make_file(h, NULL, 1, &len);
        qk_st_file *f = NULL;
        assert_int_equal(qk_st_parse(b, len, &f, NULL, 0), QK_OK);
        assert_int_equal(qk_st_get(f, 0)->ndim, 32);
        qk_st_close(f);
        free(b);
        snprintf(h, sizeof h, "{\"a\":" T("U8", "[%s1]", "[0,1]") "}",
                 "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,");
        expect_bad(h, 1, "more than 32 dimensions");
    }
    /* A zero makes the product 0 however large the rest. */
    {
        size_t len;
        unsigned char *b = make_file("{\"a\":" T("F64", "[9007199254740992,9007199254740992,0]", "[0,0]") "}",
                                     NULL, 0, &len);
        qk_st_file *f = NULL;
        assert_int_equal(qk_st_parse(b, len, &f, NULL, 0), QK_OK);
        assert_int_equal(qk_st_get(f, 0)->n, 0);
        qk_st_close(f);
        free(b);
    }
}

static void test_bad_entries(void **state)
{
    (void)state;
    expect_bad("{\"a\":" T("F128", "[2]", "[0,8]") "}", 8, "unknown dtype 'F128'");
    expect_bad("{\"my.tensor\":" T("f32", "[2]", "[0,8]") "}", 8, "my.tensor");
    expect_bad("{\"a\":" T("", "[2]", "[0,8]") "}", 8, "unknown dtype");
    expect_bad("{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'dtype' must be a string");
    expect_bad("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing key 'dtype'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing key 'shape'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "missing key 'data_offsets'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8,
               "unknown key 'extra'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               "duplicate key 'dtype'");
    expect_bad("{\"a\":[0,8]}", 8, "must be an object");
    expect_bad("{\"a\":\"F32\"}", 8, "must be an object");
    expect_bad("{\"a\":null}", 8, "must be an object");
    /* duplicate tensor names (cJSON keeps both) */
    expect_bad("{\"a\":" T("F32", "[1]", "[0,4]") ",\"a\":" T("F32", "[1]", "[4,8]") "}", 8,
               "duplicate tensor name 'a'");
    expect_bad("{\"w\":" T("U8", "[1]", "[0,1]") ",\"x\":" T("U8", "[1]", "[1,2]") ",\"w\":" T("U8", "[1]", "[2,3]")
               "}",
               3, "duplicate tensor name 'w'");
    /* __metadata__ */
    expect_bad("{\"__metadata__\":{\"a\":1}}", 0, "not a string");
    expect_bad("{\"__metadata__\":{\"a\":\"x\",\"b\":null}}", 0, "not a string");
    expect_bad("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0, "not a string");
    expect_bad("{\"__metadata__\":{\"a\":[\"b\"]}}", 0, "not a string");
    expect_bad("{\"__metadata__\":\"x\"}", 0, "must be an object");
    expect_bad("{\"__metadata__\":[]}", 0, "must be an object");
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key '__metadata__'");
    expect_bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "duplicate key 'k'");
}

static void test_bad_json(void **state)
{
    (void)state;
    expect_bad("{\"a\":", 0, "not valid JSON");
    expect_bad("{\"a\"}", 0, "not valid JSON");
    expect_bad("{'a':{}}", 0, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1]", "[0,4]") ",}", 4, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1,]", "[0,4]") "}", 4, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1]", "[0,4]"), 4, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1]", "[0, +4]") "}", 4, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1]", "[0, 0x4]") "}", 4, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1]", "[0, NaN]") "}", 4, "not valid JSON");
    expect_bad("{\"a\":" T("F32", "[1]", "[0, -]") "}", 4, "not valid JSON");
    expect_bad("{\"\\x41\":{}}", 0, "not valid JSON");
    expect_bad("{\"\\ud800\":{}}", 0, "not valid JSON"); /* lone surrogate escape */
    expect_bad("[1,2]", 0, "JSON object");
    expect_bad("\"abc\"", 0, "JSON object");
    expect_bad("42", 0, "JSON object");
    expect_bad("x{}", 0, "JSON object");
    expect_bad("   ", 0, "JSON object");
    expect_bad(" \x01{}", 0, "JSON object");
    expect_bad("{} x", 0, "unexpected text after");
    expect_bad("{}{}", 0, "unexpected text after");
    expect_bad("{\"a\":\"b\nc\"}", 0, "control byte");
    expect_bad("{\"a\\u0000b\":" T("F32", "[1]", "[0,4]") "}", 4, "NUL");
    expect_bad("{\"__metadata__\":{\"k\":\"v\\u0000\"}}", 0, "NUL");
    expect_bad("{\"a\":\"\xff\"}", 0, "UTF-8");
    expect_bad("{\"a\":\"\xc0\xaf\"}", 0, "UTF-8");     /* overlong */
    expect_bad("{\"a\":\"\xed\xa0\x80\"}", 0, "UTF-8"); /* surrogate */
    expect_bad("{\"a\":\"\xe6\xa8\"}", 0, "UTF-8");     /* truncated */
    expect_bad("{\"a\":" T("F32", "[1]", "[0,4]") "}\x01", 4, "control byte");
    /* deep nesting is cJSON's limit, not a stack overflow */
    {
        char *h = malloc(200010);
        assert_non_null(h);
        strcpy(h, "{\"a\":");
        size_t n = 5;
        for (int i = 0; i < 100000; i++)
            h[n++] = '[';
        for (int i = 0; i < 100000; i++)
            h[n++] = ']';
        h[n++] = '}';
        h[n] = '\0';
        expect_bad(h, 0, "not valid JSON");
        free(h);
    }
    /* escapes decode to the same names the writer would produce */
    {
        size_t len;
        unsigned char *b = make_file("{\"\\u00e9\\n\\\"\\/\":" T("U8", "[1]", "[0,1]") "}", NULL, 1, &len);
        qk_st_file *f = NULL;
        assert_int_equal(qk_st_parse(b, len, &f, NULL, 0), QK_OK);
        assert_string_equal(qk_st_get(f, 0)->name, "\xc3\xa9\n\"/");
        qk_st_close(f);
        free(b);
    }
}

static void test_bad_prefix(void **state)
{
    (void)state;
    static const unsigned char zero8[8] = {0};
    unsigned char b[32] = {0};
    expect_bad_bytes(b, 0, "empty buffer", "empty");
    expect_bad_bytes(b, 5, "5 bytes", "truncated");
    expect_bad_bytes(zero8, 7, "7 bytes", "truncated");
    expect_bad_bytes(zero8, 8, "header length 0", "too small");
    b[0] = 1;
    b[8] = '{';
    expect_bad_bytes(b, 9, "header length 1", "too small");
    /* header length larger than the file */
    size_t len;
    unsigned char *f = make_file("{}", NULL, 0, &len);
    f[0] = 3;
    expect_bad_bytes(f, len, "header length 3 of 2", "runs past the end of the file");
    f[0] = 0xff;
    f[7] = 0xff;
    expect_bad_bytes(f, len, "header length 2^64-ish", "runs past the end of the file");
    f[0] = 2;
    f[7] = 0;
    f[4] = 1; /* 2^32 + 2 */
    expect_bad_bytes(f, len, "header length 2^32+2", "runs past the end of the file");
    free(f);
    /* a text file */
    static const char text[] = "hello, world: this is not a safetensors file\n";
    expect_bad_bytes((const unsigned char *)text, sizeof text - 1, "text file", "runs past the end of the file");

    qk_st_file *out = NULL;
    assert_int_equal(qk_st_parse(NULL, 8, &out, NULL, 0), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_parse(zero8, 8, NULL, NULL, 0), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_parse(NULL, 0, &out, NULL, 0), QK_ERR_FORMAT);
}

/* ---- hostile files on disk ---------------------------------------------------------- */

static void test_open_hostile_files(void **state)
{
    (void)state;
    write_bytes(path_in("empty.st"), "", 0);
    expect_open_fails(path_in("empty.st"), QK_ERR_FORMAT, "empty file");
    write_bytes(path_in("short.st"), "\x02\x00\x00", 3);
    expect_open_fails(path_in("short.st"), QK_ERR_FORMAT, "truncated prefix");
    size_t len;
    unsigned char *b = make_file("{\"a\":" T("F32", "[4]", "[0,16]") "}", NULL, 16, &len);
    write_bytes(path_in("trunc.st"), b, len - 1);
    expect_open_fails(path_in("trunc.st"), QK_ERR_FORMAT, "truncated data");
    write_bytes(path_in("hdrcut.st"), b, 20);
    expect_open_fails(path_in("hdrcut.st"), QK_ERR_FORMAT, "truncated header");
    write_bytes(path_in("good.st"), b, len);
    qk_st_file *f = NULL;
    char err[512];
    assert_int_equal(qk_st_open(path_in("good.st"), &f, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_count(f), 1);
    qk_st_close(f);
    free(b);

    /* Over the header cap but within the file: a sparse file, never read. */
    int fd = open(path_in("huge.st"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    uint64_t h = QK_ST_MAX_HEADER + 1;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)(h >> (8 * i));
    assert_int_equal(write(fd, prefix, 8), 8);
    assert_int_equal(ftruncate(fd, (off_t)(QK_ST_MAX_HEADER + 64)), 0);
    close(fd);
    expect_open_fails(path_in("huge.st"), QK_ERR_FORMAT, "header over the cap");
    qk_st_open(path_in("huge.st"), &f, err, sizeof err);
    assert_non_null(strstr(err, "limit"));
    unlink(path_in("huge.st"));

    mkdir(path_in("adir.safetensors"), 0755);
    expect_open_fails(path_in("adir.safetensors"), QK_ERR_IO, "directory");
    expect_open_fails(path_in("does-not-exist.safetensors"), QK_ERR_IO, "nonexistent");
    mkfifo(path_in("fifo.st"), 0600);
    expect_open_fails(path_in("fifo.st"), QK_ERR_IO, "FIFO (must not block)");

    assert_int_equal(qk_st_open(NULL, &f, NULL, 0), QK_ERR_INVALID_ARG);
    assert_null(f);
    assert_int_equal(qk_st_open(path_in("good.st"), NULL, NULL, 0), QK_ERR_INVALID_ARG);
    /* The path is in the message. */
    qk_st_open(path_in("trunc.st"), &f, err, sizeof err);
    assert_non_null(strstr(err, "trunc.st"));
}

/* A character device (a null device made in the test's directory, never
 * /dev/null itself) is refused, not read. */
static void test_open_character_device(void **state)
{
    (void)state;
    char dev[PATH_MAX];
    if (qk_test_null_device(g_dir, "null.st", dev, sizeof dev) != 0)
        skip();
    expect_open_fails(dev, QK_ERR_IO, "character device");
    unlink(dev);
}

/* ---- writer: arguments and failures ------------------------------------------------- */

static void test_writer_bad_args(void **state)
{
    (void)state;
    const char *path = path_in("args.safetensors");
    qk_st_writer *w = NULL;
    char err[512];
    assert_int_equal(qk_st_writer_begin(NULL, &w, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_null(w);
    assert_int_equal(qk_st_writer_begin("", &w, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_begin(path, NULL, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_begin(g_dir, &w, err, sizeof err), QK_ERR_IO);
    assert_null(w);
    assert_int_equal(qk_st_writer_begin(path, &w, err, sizeof err), QK_OK);

    float x[4] = {1, 2, 3, 4};
    int64_t s4[] = {4}, neg[] = {-1}, big[] = {(int64_t)1 << 53, 2}, huge[] = {((int64_t)1 << 53) + 1},
            ovf[] = {(int64_t)1 << 40, (int64_t)1 << 40};
#define EXPECT_ADD(status, ...)                                                   \
    do {                                                                          \
        err[0] = '\0';                                                            \
        assert_int_equal(qk_st_writer_add(__VA_ARGS__, err, sizeof err), status); \
        assert_true(strlen(err) > 0);                                             \
        show("add", err);                                                         \
    } while (0)
    EXPECT_ADD(QK_ERR_INVALID_ARG, NULL, "x", QK_F32, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, NULL, QK_F32, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "", QK_F32, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "__metadata__", QK_F32, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "bad\xff", QK_F32, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "bad\xc3", QK_F32, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", (qk_dtype)99, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", (qk_dtype)-1, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_ST_OTHER, 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, -1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, QK_ST_MAX_DIMS + 1, s4, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, 1, NULL, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, 1, neg, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, 1, huge, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, 2, big, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, 2, ovf, x);
    EXPECT_ADD(QK_ERR_INVALID_ARG, w, "x", QK_F32, 1, s4, NULL);
#undef EXPECT_ADD
    assert_int_equal(qk_st_writer_add_raw(w, "x", "Q4_K", 1, s4, x, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "Q4_K"));
    assert_int_equal(qk_st_writer_add_raw(w, "x", NULL, 1, s4, x, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_add_raw(w, "x", "F4", 1, (int64_t[]){3}, x, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_set_metadata(w, "k\xff", "v", err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_set_metadata(w, "k", "v\xc0\x80", err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_set_metadata(w, NULL, "v", err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_set_metadata(w, "k", NULL, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_st_writer_set_metadata(NULL, "k", "v", err, sizeof err), QK_ERR_INVALID_ARG);

    /* After refused adds the writer still works; empty tensors need no data. */
    assert_int_equal(qk_st_writer_add(w, "x", QK_F32, 1, s4, x, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_add(w, "x", QK_F32, 1, s4, x, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "duplicate"));
    assert_int_equal(qk_st_writer_add(w, "e", QK_F32, 1, (int64_t[]){0}, NULL, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_add_raw(w, "i64", "I64", 0, NULL, "01234567", err, sizeof err), QK_OK);
    assert_false(file_exists(path));
    assert_int_equal(qk_st_writer_commit(w, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_writer_commit(NULL, err, sizeof err), QK_ERR_INVALID_ARG);
    qk_st_writer_abort(NULL);
    qk_st_file *f = NULL;
    assert_int_equal(qk_st_open(path, &f, err, sizeof err), QK_OK);
    assert_int_equal(qk_st_count(f), 3);
    assert_memory_equal(qk_st_find(f, "x", NULL)->data, x, sizeof x);
    assert_memory_equal(qk_st_find(f, "i64", NULL)->data, "01234567", 8);
    qk_st_close(f);
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_writer_missing_dir(void **state)
{
    (void)state;
    const char *path = path_in("no/such/dir/x.safetensors");
    qk_st_writer *w = NULL;
    char err[512] = "";
    assert_int_equal(qk_st_writer_begin(path, &w, err, sizeof err), QK_ERR_IO);
    assert_null(w);
    assert_non_null(strstr(err, "x.safetensors"));
    show("missing dir", err);
    assert_false(file_exists(path));
    assert_false(file_exists(path_in("no")));
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_writer_abort_keeps_old_file(void **state)
{
    (void)state;
    const char *path = path_in("abort.safetensors");
    write_bytes(path, "precious", 8);
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path, &w, NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_add(w, "a", QK_U8, 1, (int64_t[]){3}, "abc", NULL, 0), QK_OK);
    assert_int_equal(count_temp_files(g_dir), named_temporaries());
    qk_st_writer_abort(w);
    assert_int_equal(count_temp_files(g_dir), 0);
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(got, "precious", 8);
    free(got);

    /* A successful commit replaces it. */
    assert_int_equal(qk_st_writer_begin(path, &w, NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_add(w, "a", QK_U8, 1, (int64_t[]){3}, "abc", NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_commit(w, NULL, 0), QK_OK);
    qk_st_file *f = NULL;
    assert_int_equal(qk_st_open(path, &f, NULL, 0), QK_OK);
    assert_memory_equal(qk_st_get(f, 0)->data, "abc", 3);
    qk_st_close(f);
}

/* A write that fails midway (file size limit: EFBIG) leaves the old file as it
 * was and no temporary. */
static void test_writer_failure_keeps_old_file(void **state)
{
    (void)state;
    const char *path = path_in("keep.safetensors");
    write_bytes(path, "precious", 8);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 4096) {
        skip();
    }
    static float x[4096];
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(path, &w, NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_add(w, "x", QK_F32, 1, (int64_t[]){4096}, x, NULL, 0), QK_OK);

    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {4096, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    char err[512] = "";
    qk_status st = qk_st_writer_commit(w, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);

    assert_int_equal(st, QK_ERR_IO);
    assert_true(strlen(err) > 0);
    show("file size limit", err);
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(got, "precious", 8);
    free(got);
    assert_int_equal(count_temp_files(g_dir), 0);

    /* The same with no file there before: nothing appears. */
    const char *fresh = path_in("fresh.safetensors");
    assert_int_equal(qk_st_writer_begin(fresh, &w, NULL, 0), QK_OK);
    assert_int_equal(qk_st_writer_add(w, "x", QK_F32, 1, (int64_t[]){4096}, x, NULL, 0), QK_OK);
    old_handler = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    st = qk_st_writer_commit(w, NULL, 0);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(st, QK_ERR_IO);
    assert_false(file_exists(fresh));
    assert_int_equal(count_temp_files(g_dir), 0);
}

/* ---- deterministic mutations --------------------------------------------------------- */

/* Parse an exact-size copy; only OK or QK_ERR_FORMAT, never a crash. On
 * success every tensor's bytes are read (ASan catches a pointer out of the
 * buffer) and the invariants hold. Returns 1 when it parsed. */
static int parse_mutant(const unsigned char *src, size_t len)
{
    unsigned char *b = malloc(len ? len : 1);
    assert_non_null(b);
    if (len)
        memcpy(b, src, len);
    qk_st_file *f = NULL;
    char err[256];
    qk_status st = qk_st_parse(len ? b : NULL, len, &f, err, sizeof err);
    assert_true(st == QK_OK || st == QK_ERR_FORMAT);
    int ok = st == QK_OK;
    if (ok) {
        size_t data_size = qk_st_data_size(f), sum = 0;
        assert_true(8 + qk_st_header_len(f) + data_size == len);
        unsigned acc = 0;
        for (size_t i = 0; i < qk_st_count(f); i++) {
            const qk_st_tensor *t = qk_st_get(f, i);
            assert_true(t->ndim >= 0 && t->ndim <= QK_ST_MAX_DIMS);
            assert_true(t->offset == sum);
            sum += t->nbytes;
            assert_true(sum <= data_size);
            const unsigned char *p = t->data;
            for (size_t k = 0; k < t->nbytes; k++)
                acc += p[k];
            assert_ptr_equal(qk_st_find(f, t->name, NULL), t);
        }
        assert_true(sum == data_size);
        for (size_t i = 0; i < qk_st_metadata_count(f); i++) {
            const char *k, *v;
            assert_int_equal(qk_st_metadata_at(f, i, &k, &v), QK_OK);
            assert_ptr_equal(qk_st_metadata_get(f, k), v);
        }
        (void)acc;
        qk_st_close(f);
    } else {
        assert_null(f);
        assert_true(strlen(err) > 0);
    }
    free(b);
    return ok;
}

static void test_mutations(void **state)
{
    (void)state;
    static const unsigned char subst[] = {0x00, 0x01, 0x7f, 0x80, 0xc3, 0xff, '{', '}', '[', ']', ',', ':', '"',
                                          '\\', '-', '0', '1', '9', '.', 'e', ' ', '\n', 'u', 'F', 'n'};
    size_t len;
    unsigned char *good = make_file("{\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"},"
                                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[4,12]},"
                                    "\"a\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                                    "\"c\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[12,12]},"
                                    "\"d\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[12,13]}}",
                                    NULL, 13, &len);
    assert_true(parse_mutant(good, len));
    unsigned long ok = 0, bad = 0;

    for (size_t cut = 0; cut <= len; cut++)
        parse_mutant(good, cut) ? ok++ : bad++;
    unsigned char *b = malloc(len);
    assert_non_null(b);
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t s = 0; s < sizeof subst + 8; s++) {
            memcpy(b, good, len);
            b[pos] = s < sizeof subst ? subst[s] : (unsigned char)(b[pos] ^ (1u << (s - sizeof subst)));
            parse_mutant(b, len) ? ok++ : bad++;
        }
    }
    /* Multi-byte mutations and cuts from a fixed seed (xorshift). */
    uint32_t r = 20240611u;
    for (int iter = 0; iter < 30000; iter++) {
        memcpy(b, good, len);
        int flips = 1 + (int)(r % 5);
        for (int k = 0; k < flips; k++) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            size_t pos = r % len;
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            b[pos] = (r & 1) ? subst[(r >> 1) % sizeof subst] : (unsigned char)(r >> 8);
        }
        r ^= r << 13, r ^= r >> 17, r ^= r << 5;
        size_t cut = len - (r % 8 == 0 ? r % len : 0);
        parse_mutant(b, cut) ? ok++ : bad++;
    }
    free(b);
    free(good);
    assert_true(ok > 0 && bad > 0);
    if (getenv("QK_TEST_VERBOSE") != NULL)
        print_message("  mutations: %lu parsed, %lu refused\n", ok, bad);
}

/* ---- a real model (QKERN_TEST_MODEL=path/to/model.safetensors) ------------------------- */

static void test_real_model(void **state)
{
    (void)state;
    const char *model = getenv("QKERN_TEST_MODEL");
    if (model == NULL || *model == '\0') {
        print_message("  skipped: set QKERN_TEST_MODEL to a .safetensors file to run this check\n");
        skip();
    }
    char err[1024];
    qk_st_file *in = NULL;
    if (qk_st_open(model, &in, err, sizeof err) != QK_OK)
        fail_msg("%s", err);
    size_t n = qk_st_count(in);
    print_message("  %s: %zu tensors, %zu-byte header, %zu data bytes\n", model, n, qk_st_header_len(in),
                  qk_st_data_size(in));
    const char *out_path = path_in("model_copy.safetensors");
    qk_st_writer *w = NULL;
    assert_int_equal(qk_st_writer_begin(out_path, &w, err, sizeof err), QK_OK);
    for (size_t i = 0; i < qk_st_metadata_count(in); i++) {
        const char *k, *v;
        assert_int_equal(qk_st_metadata_at(in, i, &k, &v), QK_OK);
        assert_int_equal(qk_st_writer_set_metadata(w, k, v, err, sizeof err), QK_OK);
    }
    for (size_t i = 0; i < n; i++) {
        const qk_st_tensor *t = qk_st_get(in, i);
        if (qk_st_writer_add_raw(w, t->name, t->st_dtype, t->ndim, t->shape, t->data, err, sizeof err) != QK_OK)
            fail_msg("%s", err);
    }
    if (qk_st_writer_commit(w, err, sizeof err) != QK_OK)
        fail_msg("%s", err);

    qk_st_file *back = NULL;
    if (qk_st_open(out_path, &back, err, sizeof err) != QK_OK)
        fail_msg("%s", err);
    assert_int_equal(qk_st_count(back), n);
    assert_int_equal(qk_st_data_size(back), qk_st_data_size(in));
    for (size_t i = 0; i < n; i++) {
        const qk_st_tensor *a = qk_st_get(in, i);
        const qk_st_tensor *b = qk_st_find(back, a->name, NULL);
        assert_non_null(b);
        assert_string_equal(a->st_dtype, b->st_dtype);
        assert_int_equal(a->dtype, b->dtype);
        assert_int_equal(a->ndim, b->ndim);
        for (int d = 0; d < a->ndim; d++)
            assert_int_equal(a->shape[d], b->shape[d]);
        assert_int_equal(a->nbytes, b->nbytes);
        if (a->nbytes > 0 && memcmp(a->data, b->data, a->nbytes) != 0)
            fail_msg("tensor %s differs after the round trip", a->name);
    }
    assert_int_equal(qk_st_metadata_count(back), qk_st_metadata_count(in));
    for (size_t i = 0; i < qk_st_metadata_count(in); i++) {
        const char *k, *v;
        qk_st_metadata_at(in, i, &k, &v);
        assert_string_equal(qk_st_metadata_get(back, k), v);
    }
    qk_st_close(back);
    qk_st_close(in);
    unlink(out_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_empty_file_roundtrip),
        cmocka_unit_test(test_many_tensors),
        cmocka_unit_test(test_official_vectors),
        cmocka_unit_test(test_foreign_layouts),
        cmocka_unit_test(test_dtype_mapping),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_prefix),
        cmocka_unit_test(test_open_hostile_files),
        cmocka_unit_test(test_open_character_device),
        cmocka_unit_test(test_writer_bad_args),
        cmocka_unit_test(test_writer_missing_dir),
        cmocka_unit_test(test_writer_abort_keeps_old_file),
        cmocka_unit_test(test_writer_failure_keeps_old_file),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_real_model),
    };
    return cmocka_run_group_tests(tests, group_setup, fixture_teardown);
}
