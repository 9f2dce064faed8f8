/* GGUF reader and writer (host/io/gguf.c): a round trip of every value type,
 * arrays of arrays and tensors, and hostile files that must each be refused
 * with QK_ERR_FORMAT and a message. gguf-py's side (files it writes read here
 * and the reverse) is tests/test_gguf_py.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "file_fixture.h"
#include "gguf.h"

static int group_setup(void **state)
{
    (void)state;
    return fixture_setup("qk_test_gguf");
}

/* ---- a byte builder for hand-made (and hostile) files ------------------------- */

typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
}
/* n little-endian bytes of v (zeros past the eighth: put_le(b, 0, 64) pads). */
static void put_le(bytes *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = i < 8 ? (unsigned char)(v >> (8 * i)) : 0;
        put(b, &c, 1);
    }
}
static void put_str(bytes *b, const char *s)
{
    put_le(b, strlen(s), 8);
    put(b, s, strlen(s));
}
static void put_header(bytes *b, uint64_t nt, uint64_t nkv)
{
    put(b, "GGUF", 4);
    put_le(b, 3, 4);
    put_le(b, nt, 8);
    put_le(b, nkv, 8);
}
static void pad_to(bytes *b, size_t a)
{
    while (b->n % a)
        put_le(b, 0, 1);
}
/* A tensor info: name, dims, type, offset. */
static void put_tensor(bytes *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off)
{
    put_str(b, name);
    put_le(b, nd, 4);
    for (uint32_t d = 0; d < nd; d++)
        put_le(b, ne[d], 8);
    put_le(b, type, 4);
    put_le(b, off, 8);
}

/* Parse must fail with FORMAT, a message containing what, and no result. */
static void expect_format(const bytes *b, const char *what)
{
    qk_gguf_file *f = (qk_gguf_file *)1;
    char err[512] = "";
    qk_status st = qk_gguf_parse(b->p, b->n, &f, err, sizeof err);
    if (st != QK_ERR_FORMAT || f != NULL || strstr(err, what) == NULL)
        fail_msg("expected QK_ERR_FORMAT mentioning \"%s\", got %d: \"%s\"", what, (int)st, err);
}

static qk_gguf_file *expect_ok(const bytes *b)
{
    qk_gguf_file *f = NULL;
    char err[512] = "";
    qk_status st = qk_gguf_parse(b->p, b->n, &f, err, sizeof err);
    if (st != QK_OK)
        fail_msg("parse failed: %s", err);
    return f;
}

/* ---- round trip ---------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
    (void)state;
    char err[512];
    qk_gguf_writer *w = NULL;
    const char *path = path_in("rt.gguf");
    assert_int_equal(qk_gguf_writer_begin(path, &w, err, sizeof err), QK_OK);
    uint8_t u8 = 250;
    int8_t i8 = -7;
    uint16_t u16 = 65000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u, align = 64;
    int32_t i32 = -2000000000;
    float f32 = 1.5f;
    uint8_t bl = 1;
    uint64_t u64 = UINT64_MAX - 3;
    int64_t i64 = INT64_MIN + 5;
    double f64 = -0.1;
    assert_int_equal(qk_gguf_writer_set_scalar(w, "general.alignment", QK_GGUF_UINT32, &align, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.u8", QK_GGUF_UINT8, &u8, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.i8", QK_GGUF_INT8, &i8, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.u16", QK_GGUF_UINT16, &u16, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.i16", QK_GGUF_INT16, &i16, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.u32", QK_GGUF_UINT32, &u32, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.i32", QK_GGUF_INT32, &i32, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.f32", QK_GGUF_FLOAT32, &f32, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.bool", QK_GGUF_BOOL, &bl, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.u64", QK_GGUF_UINT64, &u64, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.i64", QK_GGUF_INT64, &i64, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.f64", QK_GGUF_FLOAT64, &f64, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_string(w, "t.str", "h\0llo", 5, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_string(w, "t.empty", "", 0, err, sizeof err), QK_OK);
    const int32_t arr[3] = {1, -2, 3};
    assert_int_equal(qk_gguf_writer_set_array(w, "t.arr", QK_GGUF_INT32, arr, 3, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_array(w, "t.arr0", QK_GGUF_FLOAT64, NULL, 0, err, sizeof err), QK_OK);
    const char *strs[3] = {"a", "", "tok\xc3\xa9"};
    assert_int_equal(qk_gguf_writer_set_string_array(w, "t.strs", strs, 3, err, sizeof err), QK_OK);
    /* [[1, 2], [], [["x"]]]: an array of arrays (the last nested twice). */
    bytes e = {0};
    put_le(&e, QK_GGUF_ARRAY, 4);
    put_le(&e, 3, 8);
    put_le(&e, QK_GGUF_UINT16, 4), put_le(&e, 2, 8), put_le(&e, 1, 2), put_le(&e, 2, 2);
    put_le(&e, QK_GGUF_UINT8, 4), put_le(&e, 0, 8);
    put_le(&e, QK_GGUF_ARRAY, 4), put_le(&e, 1, 8), put_le(&e, QK_GGUF_STRING, 4), put_le(&e, 1, 8), put_str(&e, "x");
    assert_int_equal(qk_gguf_writer_set_encoded(w, "t.nested", QK_GGUF_ARRAY, e.p, e.n, err, sizeof err), QK_OK);
    /* A bad encoding is refused (and the key not set). */
    assert_int_equal(qk_gguf_writer_set_encoded(w, "t.bad", QK_GGUF_ARRAY, e.p, e.n - 1, err, sizeof err),
                     QK_ERR_INVALID_ARG);
    /* Setting a key again replaces it in place. */
    u8 = 251;
    assert_int_equal(qk_gguf_writer_set_scalar(w, "t.u8", QK_GGUF_UINT8, &u8, err, sizeof err), QK_OK);

    float a[6] = {1, 2, 3, 4, 5, 6};
    unsigned char q8[2 * 34], q4k[2 * 144];
    for (size_t i = 0; i < sizeof q8; i++)
        q8[i] = (unsigned char)(i * 7);
    for (size_t i = 0; i < sizeof q4k; i++)
        q4k[i] = (unsigned char)(i * 13);
    const int64_t ne_a[2] = {3, 2}, ne_q8[1] = {64}, ne_q4k[2] = {256, 2};
    assert_int_equal(qk_gguf_writer_add_tensor(w, "a", 2, ne_a, 0, a, sizeof a, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_add_tensor(w, "q8", 1, ne_q8, 8, q8, sizeof q8, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_add_tensor(w, "blk.0.q4k", 2, ne_q4k, 12, q4k, sizeof q4k, err, sizeof err), QK_OK);
    /* Wrong sizes, shapes, types and duplicate names are refused. */
    assert_int_equal(qk_gguf_writer_add_tensor(w, "x", 2, ne_a, 0, a, 20, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_writer_add_tensor(w, "x", 1, ne_a, 8, q8, 34, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_writer_add_tensor(w, "x", 1, ne_q8, 4, q8, 34, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_writer_add_tensor(w, "a", 2, ne_a, 0, a, sizeof a, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_writer_commit(w, err, sizeof err), QK_OK);
    assert_int_equal(count_temp_files(g_dir), 0);
    assert_true(file_exists(path));

    qk_gguf_file *f = NULL;
    assert_int_equal(qk_gguf_open(path, &f, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_version(f), 3);
    assert_int_equal(qk_gguf_alignment(f), 64);
    assert_int_equal(qk_gguf_data_offset(f) % 64, 0);
    assert_int_equal(qk_gguf_kv_count(f), 18);
    assert_string_equal(qk_gguf_kv_at(f, 0)->key, "general.alignment");
    assert_string_equal(qk_gguf_kv_at(f, 1)->key, "t.u8");
    uint64_t u;
    int64_t s;
    double d;
    assert_int_equal(qk_gguf_value_u64(&qk_gguf_kv_find(f, "t.u8")->value, &u), QK_OK);
    assert_int_equal(u, 251);
    assert_int_equal(qk_gguf_value_i64(&qk_gguf_kv_find(f, "t.i8")->value, &s), QK_OK);
    assert_int_equal(s, -7);
    assert_int_equal(qk_gguf_value_u64(&qk_gguf_kv_find(f, "t.u16")->value, &u), QK_OK);
    assert_int_equal(u, 65000);
    assert_int_equal(qk_gguf_value_i64(&qk_gguf_kv_find(f, "t.i16")->value, &s), QK_OK);
    assert_int_equal(s, -30000);
    assert_int_equal(qk_gguf_value_u64(&qk_gguf_kv_find(f, "t.u32")->value, &u), QK_OK);
    assert_int_equal(u, 4000000000u);
    assert_int_equal(qk_gguf_value_i64(&qk_gguf_kv_find(f, "t.i32")->value, &s), QK_OK);
    assert_int_equal(s, -2000000000);
    assert_int_equal(qk_gguf_value_f64(&qk_gguf_kv_find(f, "t.f32")->value, &d), QK_OK);
    assert_true(d == 1.5);
    assert_int_equal(qk_gguf_value_u64(&qk_gguf_kv_find(f, "t.bool")->value, &u), QK_OK);
    assert_int_equal(u, 1);
    assert_int_equal(qk_gguf_value_u64(&qk_gguf_kv_find(f, "t.u64")->value, &u), QK_OK);
    assert_true(u == UINT64_MAX - 3);
    assert_int_equal(qk_gguf_value_i64(&qk_gguf_kv_find(f, "t.u64")->value, &s), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_value_i64(&qk_gguf_kv_find(f, "t.i64")->value, &s), QK_OK);
    assert_true(s == INT64_MIN + 5);
    assert_int_equal(qk_gguf_value_u64(&qk_gguf_kv_find(f, "t.i64")->value, &u), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_value_f64(&qk_gguf_kv_find(f, "t.f64")->value, &d), QK_OK);
    assert_true(d == -0.1);
    const qk_gguf_value *v = &qk_gguf_kv_find(f, "t.str")->value;
    assert_int_equal(v->type, QK_GGUF_STRING);
    assert_int_equal(v->count, 5);
    assert_memory_equal(v->data, "h\0llo", 5);
    assert_int_equal(qk_gguf_kv_find(f, "t.empty")->value.count, 0);
    v = &qk_gguf_kv_find(f, "t.arr")->value;
    assert_int_equal(v->elem_type, QK_GGUF_INT32);
    assert_int_equal(v->count, 3);
    int32_t back[3];
    memcpy(back, v->data, sizeof back); /* little-endian host */
    assert_memory_equal(back, arr, sizeof arr);
    assert_int_equal(qk_gguf_kv_find(f, "t.arr0")->value.count, 0);
    v = &qk_gguf_kv_find(f, "t.strs")->value;
    for (int i = 0; i < 3; i++) {
        const char *p;
        uint64_t n;
        assert_int_equal(qk_gguf_array_string(v, (uint64_t)i, &p, &n), QK_OK);
        assert_int_equal(n, strlen(strs[i]));
        assert_memory_equal(p, strs[i], n);
    }
    const char *p;
    uint64_t n;
    assert_int_equal(qk_gguf_array_string(v, 3, &p, &n), QK_ERR_INVALID_ARG);
    v = &qk_gguf_kv_find(f, "t.nested")->value;
    assert_int_equal(v->elem_type, QK_GGUF_ARRAY);
    assert_int_equal(v->count, 3);
    assert_int_equal(v->items[0].elem_type, QK_GGUF_UINT16);
    assert_int_equal(v->items[0].count, 2);
    assert_int_equal(v->items[1].count, 0);
    assert_int_equal(v->items[2].items[0].elem_type, QK_GGUF_STRING);
    assert_int_equal(qk_gguf_array_string(&v->items[2].items[0], 0, &p, &n), QK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(p[0], 'x');
    assert_int_equal(v->enc_size, e.n);
    assert_memory_equal(v->enc, e.p, e.n);
    assert_null(qk_gguf_kv_find(f, "t.bad"));

    assert_int_equal(qk_gguf_tensor_count(f), 3);
    const qk_gguf_tensor *t = qk_gguf_tensor_find(f, "a");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 3);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->n, 6);
    assert_int_equal(t->nbytes, sizeof a);
    assert_memory_equal(t->data, a, sizeof a);
    t = qk_gguf_tensor_find(f, "q8");
    assert_int_equal(t->type, 8);
    assert_int_equal(t->offset % 64, 0);
    assert_memory_equal(t->data, q8, sizeof q8);
    t = qk_gguf_tensor_find(f, "blk.0.q4k");
    assert_int_equal(t->nbytes, sizeof q4k);
    assert_memory_equal(t->data, q4k, sizeof q4k);
    assert_ptr_equal(qk_gguf_tensor_at(f, 2), t);
    assert_null(qk_gguf_tensor_find(f, "nope"));
    assert_null(qk_gguf_tensor_at(f, 3));
    qk_gguf_close(f);
    free(e.p);
}

/* Every prefix of a valid file that cuts into its header or a tensor is refused. */
static void test_truncated_anywhere(void **state)
{
    (void)state;
    char err[512];
    qk_gguf_writer *w = NULL;
    const char *path = path_in("trunc.gguf");
    assert_int_equal(qk_gguf_writer_begin(path, &w, err, sizeof err), QK_OK);
    const char *strs[2] = {"x", "yz"};
    float val = 2.0f;
    assert_int_equal(qk_gguf_writer_set_string_array(w, "tok", strs, 2, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "v", QK_GGUF_FLOAT32, &val, err, sizeof err), QK_OK);
    float a[8] = {0};
    const int64_t ne[1] = {8};
    assert_int_equal(qk_gguf_writer_add_tensor(w, "a", 1, ne, 0, a, sizeof a, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_add_tensor(w, "b", 1, ne, 0, a, sizeof a, err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_commit(w, err, sizeof err), QK_OK);
    size_t len;
    unsigned char *buf = read_bytes(path, &len);
    qk_gguf_file *f = NULL;
    assert_int_equal(qk_gguf_parse(buf, len, &f, err, sizeof err), QK_OK);
    const qk_gguf_tensor *b = qk_gguf_tensor_find(f, "b");
    size_t need = (size_t)(qk_gguf_data_offset(f) + b->offset + b->nbytes);
    qk_gguf_close(f);
    for (size_t cut = 0; cut < need; cut++) {
        unsigned char *c = malloc(cut ? cut : 1); /* an exact-size copy: ASan sees any overread */
        memcpy(c, buf, cut);
        f = (qk_gguf_file *)1;
        err[0] = '\0';
        qk_status st = qk_gguf_parse(c, cut, &f, err, sizeof err);
        if (st != QK_ERR_FORMAT || f != NULL || err[0] == '\0')
            fail_msg("a file cut to %zu bytes: status %d, \"%s\"", cut, (int)st, err);
        free(c);
    }
    /* The file itself on disk, cut: qk_gguf_open names the path. */
    write_bytes(path_in("cut.gguf"), buf, need - 1);
    assert_int_equal(qk_gguf_open(path_in("cut.gguf"), &f, err, sizeof err), QK_ERR_FORMAT);
    assert_non_null(strstr(err, "cut.gguf"));
    assert_non_null(strstr(err, "past the end"));
    free(buf);
}

static void test_hostile_header(void **state)
{
    (void)state;
    bytes b = {0};
    put(&b, "GGUX", 4), put_le(&b, 3, 4), put_le(&b, 0, 16);
    expect_format(&b, "magic");
    b.n = 0;
    put(&b, "GGUF", 4), put_le(&b, 1, 4), put_le(&b, 0, 16);
    expect_format(&b, "version 1");
    b.n = 0;
    put(&b, "GGUF", 4), put_le(&b, 3u << 24, 4), put_le(&b, 0, 16);
    expect_format(&b, "big-endian");
    b.n = 0;
    put_header(&b, 0, 0);
    qk_gguf_close(expect_ok(&b)); /* an empty model is a valid file */
    b.n = 0;
    put(&b, "GGUF", 4), put_le(&b, 2, 4), put_le(&b, 0, 16);
    qk_gguf_file *f = expect_ok(&b);
    assert_int_equal(qk_gguf_version(f), 2);
    qk_gguf_close(f);
    /* Huge counts: refused before any allocation. */
    b.n = 0;
    put_header(&b, 0, UINT64_MAX);
    expect_format(&b, "key/value count");
    b.n = 0;
    put_header(&b, (uint64_t)1 << 40, 0);
    expect_format(&b, "tensor count");
    b.n = 0;
    put_header(&b, 0, 1);
    put_le(&b, (uint64_t)1 << 62, 8), put_le(&b, 0, 16);
    expect_format(&b, "string length");
    free(b.p);
}

static void test_hostile_values(void **state)
{
    (void)state;
    bytes b = {0};
    /* a key with a string value whose length runs past the end */
    put_header(&b, 0, 1), put_str(&b, "k"), put_le(&b, QK_GGUF_STRING, 4), put_le(&b, 100, 8), put(&b, "abc", 3);
    expect_format(&b, "string length 100");
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "k"), put_le(&b, 13, 4), put_le(&b, 0, 8);
    expect_format(&b, "unknown value type 13");
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "k"), put_le(&b, QK_GGUF_ARRAY, 4), put_le(&b, 77, 4), put_le(&b, 1, 8);
    put_le(&b, 0, 8);
    expect_format(&b, "unknown array element type 77");
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "k"), put_le(&b, QK_GGUF_ARRAY, 4), put_le(&b, QK_GGUF_UINT64, 4);
    put_le(&b, (uint64_t)1 << 61, 8), put_le(&b, 0, 16);
    expect_format(&b, "array length");
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "k"), put_le(&b, QK_GGUF_ARRAY, 4), put_le(&b, QK_GGUF_STRING, 4);
    put_le(&b, UINT64_MAX, 8), put_le(&b, 0, 16);
    expect_format(&b, "array length");
    /* arrays nested too deep */
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "k"), put_le(&b, QK_GGUF_ARRAY, 4);
    for (int i = 0; i < QK_GGUF_MAX_DEPTH + 1; i++)
        put_le(&b, QK_GGUF_ARRAY, 4), put_le(&b, 1, 8);
    put_le(&b, 0, 64);
    expect_format(&b, "nested");
    /* keys: empty, with a NUL, duplicated */
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, ""), put_le(&b, QK_GGUF_UINT8, 4), put_le(&b, 0, 8);
    expect_format(&b, "length 0");
    b.n = 0;
    put_header(&b, 0, 1), put_le(&b, 3, 8), put(&b, "a\0b", 3), put_le(&b, QK_GGUF_UINT8, 4), put_le(&b, 0, 1);
    expect_format(&b, "NUL");
    b.n = 0;
    put_header(&b, 0, 2);
    put_str(&b, "k"), put_le(&b, QK_GGUF_UINT8, 4), put_le(&b, 0, 1);
    put_str(&b, "k"), put_le(&b, QK_GGUF_UINT8, 4), put_le(&b, 0, 1);
    expect_format(&b, "duplicate key k");
    /* general.alignment: not a power of two, not a uint32 */
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "general.alignment"), put_le(&b, QK_GGUF_UINT32, 4), put_le(&b, 48, 4);
    expect_format(&b, "power of two");
    b.n = 0;
    put_header(&b, 0, 1), put_str(&b, "general.alignment"), put_le(&b, QK_GGUF_UINT64, 4), put_le(&b, 32, 8);
    expect_format(&b, "must be uint32");
    free(b.p);
}

static void test_hostile_tensors(void **state)
{
    (void)state;
    bytes b = {0};
    const uint64_t ne8[1] = {8};
    /* A valid one-tensor file first, to show the cases below differ only in one field. */
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 0, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    qk_gguf_close(expect_ok(&b));
    b.n = 0;
    const uint64_t ne5[5] = {1, 1, 1, 1, 1};
    put_header(&b, 1, 0), put_tensor(&b, "t", 5, ne5, 0, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "5 dimensions");
    b.n = 0;
    const uint64_t big[4] = {(uint64_t)1 << 31, (uint64_t)1 << 31, (uint64_t)1 << 31, 4};
    put_header(&b, 1, 0), put_tensor(&b, "t", 4, big, 0, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "overflows int64");
    b.n = 0;
    const uint64_t huge[2] = {UINT64_MAX, 1};
    put_header(&b, 1, 0), put_tensor(&b, "t", 2, huge, 0, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "too large");
    b.n = 0;
    const uint64_t bytes_ovf[2] = {(uint64_t)1 << 61, 2}; /* elements fit int64, bytes (x4) do not */
    put_header(&b, 1, 0), put_tensor(&b, "t", 2, bytes_ovf, 0, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "byte size overflows");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 4, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "unknown ggml type 4");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 1000, 0), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "unknown ggml type 1000");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 8, 0), pad_to(&b, 32), put_le(&b, 0, 64);
    expect_format(&b, "not a multiple of the block size");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 0, 4), pad_to(&b, 32), put_le(&b, 0, 64);
    expect_format(&b, "not a multiple of the alignment");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 0, 32), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "past the end");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 0, UINT64_MAX - 31), pad_to(&b, 32), put_le(&b, 0, 32);
    expect_format(&b, "past the end");
    b.n = 0;
    put_header(&b, 1, 0), put_tensor(&b, "t", 1, ne8, 0, 0); /* no data section at all */
    expect_format(&b, "data section");
    b.n = 0;
    const uint64_t ne16[1] = {16};
    put_header(&b, 2, 0), put_tensor(&b, "t", 1, ne16, 0, 0), put_tensor(&b, "u", 1, ne8, 0, 32), pad_to(&b, 32);
    put_le(&b, 0, 64), put_le(&b, 0, 64);
    expect_format(&b, "overlap");
    b.n = 0;
    put_header(&b, 2, 0), put_tensor(&b, "t", 1, ne8, 0, 0), put_tensor(&b, "t", 1, ne8, 0, 32), pad_to(&b, 32);
    put_le(&b, 0, 64);
    expect_format(&b, "duplicate tensor name t");
    b.n = 0;
    const uint64_t ne0[2] = {0, 7}; /* an empty tensor is fine, wherever its offset */
    put_header(&b, 1, 0), put_tensor(&b, "t", 2, ne0, 0, 0), pad_to(&b, 32);
    qk_gguf_file *f = expect_ok(&b);
    assert_int_equal(qk_gguf_tensor_at(f, 0)->n, 0);
    assert_int_equal(qk_gguf_tensor_at(f, 0)->nbytes, 0);
    qk_gguf_close(f);
    free(b.p);
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[512];
    qk_gguf_file *f = (qk_gguf_file *)1;
    assert_int_equal(qk_gguf_open(path_in("missing.gguf"), &f, err, sizeof err), QK_ERR_IO);
    assert_null(f);
    write_bytes(path_in("empty.gguf"), "", 0);
    assert_int_equal(qk_gguf_open(path_in("empty.gguf"), &f, err, sizeof err), QK_ERR_FORMAT);
    assert_int_equal(qk_gguf_open(g_dir, &f, err, sizeof err), QK_ERR_IO);
    /* A writer that is aborted leaves nothing behind, and an old file untouched. */
    write_bytes(path_in("keep.gguf"), "old", 3);
    qk_gguf_writer *w = NULL;
    assert_int_equal(qk_gguf_writer_begin(path_in("keep.gguf"), &w, err, sizeof err), QK_OK);
    qk_gguf_writer_abort(w);
    size_t len;
    unsigned char *old = read_bytes(path_in("keep.gguf"), &len);
    assert_int_equal(len, 3);
    free(old);
    assert_int_equal(count_temp_files(g_dir), 0);
    assert_int_equal(qk_gguf_writer_begin(path_in("no/such/dir.gguf"), &w, err, sizeof err), QK_ERR_IO);
    /* The writer refuses a bad alignment and keys it cannot write. */
    assert_int_equal(qk_gguf_writer_begin(path_in("w.gguf"), &w, err, sizeof err), QK_OK);
    uint32_t a = 24;
    assert_int_equal(qk_gguf_writer_set_scalar(w, "general.alignment", QK_GGUF_UINT32, &a, err, sizeof err),
                     QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "", QK_GGUF_UINT32, &a, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_gguf_writer_set_scalar(w, "k", QK_GGUF_STRING, &a, err, sizeof err), QK_ERR_INVALID_ARG);
    qk_gguf_writer_abort(w);
}

/* The in-memory header (qk_gguf_writer_new/_header) is the committed file's
 * header, byte for byte, and its offsets are where the tensors lie. */
static void test_header_builder(void **state)
{
    (void)state;
    char err[512];
    float a[64], c[8];
    for (int i = 0; i < 64; i++)
        a[i] = (float)i;
    for (int i = 0; i < 8; i++)
        c[i] = -(float)i;
    const int64_t ne_a[2] = {32, 2}, ne_c[1] = {8};
    uint32_t al = 64;
    qk_gguf_writer *w[2] = {NULL, NULL};
    const char *path = path_in("hdr.gguf");
    assert_int_equal(qk_gguf_writer_begin(path, &w[0], err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_new(&w[1], err, sizeof err), QK_OK);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(qk_gguf_writer_set_scalar(w[k], "general.alignment", QK_GGUF_UINT32, &al, err, sizeof err),
                         QK_OK);
        assert_int_equal(qk_gguf_writer_set_string(w[k], "general.name", "h", 1, err, sizeof err), QK_OK);
        /* the header-only writer takes tensors without data */
        assert_int_equal(qk_gguf_writer_add_tensor(w[k], "c", 1, ne_c, 0, k ? NULL : c, sizeof c, err, sizeof err),
                         QK_OK);
        assert_int_equal(qk_gguf_writer_add_tensor(w[k], "a", 2, ne_a, 0, k ? NULL : a, sizeof a, err, sizeof err),
                         QK_OK);
    }
    assert_int_equal(qk_gguf_writer_alignment(w[1]), 64);
    unsigned char *head = NULL;
    size_t head_len = 0;
    uint64_t off[2];
    assert_int_equal(qk_gguf_writer_header(w[1], &head, &head_len, off, err, sizeof err), QK_OK);
    qk_gguf_writer_free(w[1]);
    assert_int_equal(qk_gguf_writer_commit(w[0], err, sizeof err), QK_OK);
    size_t len;
    unsigned char *buf = read_bytes(path, &len);
    assert_true(len >= head_len);
    assert_memory_equal(buf, head, head_len);
    assert_int_equal(head_len % 64, 0);
    assert_int_equal(off[0], head_len);
    assert_int_equal(off[1], head_len + 64);
    assert_memory_equal(buf + off[0], c, sizeof c);
    assert_memory_equal(buf + off[1], a, sizeof a);
    /* a header-only writer cannot commit */
    assert_int_equal(qk_gguf_writer_new(&w[1], err, sizeof err), QK_OK);
    assert_int_equal(qk_gguf_writer_commit(w[1], err, sizeof err), QK_ERR_INVALID_ARG);
    free(head);
    free(buf);
}

static void test_type_tables(void **state)
{
    (void)state;
    assert_int_equal(qk_ggml_type_get(12)->blck_size, 256);
    assert_int_equal(qk_ggml_type_get(12)->type_size, 144);
    assert_string_equal(qk_ggml_type_get(14)->name, "q6_K");
    assert_null(qk_ggml_type_get(4));
    assert_null(qk_ggml_type_get(31));
    assert_null(qk_ggml_type_get(43));
    assert_int_equal(qk_gguf_type_size(QK_GGUF_FLOAT64), 8);
    assert_int_equal(qk_gguf_type_size(QK_GGUF_STRING), 0);
    assert_int_equal(qk_gguf_type_size(99), 0);
    assert_null(qk_gguf_type_name(13));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),       cmocka_unit_test(test_truncated_anywhere),
        cmocka_unit_test(test_hostile_header),  cmocka_unit_test(test_hostile_values),
        cmocka_unit_test(test_hostile_tensors), cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_type_tables),     cmocka_unit_test(test_header_builder),
    };
    return cmocka_run_group_tests(tests, group_setup, fixture_teardown);
}
