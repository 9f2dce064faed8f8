/* .npy reader/writer, atomic writer and big allocator: round trips, numpy's
 * exact bytes, hostile headers and files, and failure paths that must leave
 * nothing behind. */
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

#include "atomic_file.h"
#include "big_alloc.h"
#include "npy.h"

/* ---- fixtures ----------------------------------------------------------------- */

#include "file_fixture.h"

static int group_setup(void **state)
{
    (void)state;
    return fixture_setup("qk_test_npy");
}

/* A header as numpy frames it: magic, version, little-endian length, the dict
 * text, space padding to 64 bytes and a newline. Returns its length. */
static size_t make_header(unsigned char *out, size_t cap, int major, const char *dict)
{
    size_t prefix = major == 1 ? 10 : 12;
    size_t d = strlen(dict);
    size_t total = (prefix + d + 1 + 63) / 64 * 64;
    assert_true(total <= cap);
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major;
    out[7] = 0;
    size_t hlen = total - prefix;
    for (size_t i = 0; i < prefix - 8; i++)
        out[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(out + prefix, dict, d);
    memset(out + prefix + d, ' ', total - prefix - d - 1);
    out[total - 1] = '\n';
    return total;
}

#define GOOD_DICT "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"

static void show(const char *what, const char *err)
{
    if (getenv("QK_TEST_VERBOSE") != NULL)
        print_message("  %-28s -> %s\n", what, err);
}

static qk_status parse(const unsigned char *buf, size_t len, qk_npy *out, size_t *offset, const char *what)
{
    char err[256] = "unset";
    qk_status st = qk_npy_parse_header(buf, len, out, offset, err, sizeof err);
    if (st == QK_OK) {
        assert_string_equal(err, "");
    } else {
        assert_true(strlen(err) > 0);
        show(what, err);
    }
    return st;
}

static void expect_bad_dict(const char *dict)
{
    unsigned char buf[4096];
    size_t len = make_header(buf, sizeof buf, 1, dict);
    qk_npy npy;
    size_t off;
    assert_int_equal(parse(buf, len, &npy, &off, dict), QK_ERR_FORMAT);
    /* Also without an error buffer. */
    assert_int_equal(qk_npy_parse_header(buf, len, &npy, &off, NULL, 0), QK_ERR_FORMAT);
}

static void expect_good_dict(const char *dict, qk_dtype dtype, int ndim, const int64_t *shape)
{
    unsigned char buf[4096];
    size_t len = make_header(buf, sizeof buf, 1, dict);
    qk_npy npy;
    size_t off = 0;
    assert_int_equal(parse(buf, len, &npy, &off, dict), QK_OK);
    assert_int_equal(off, len);
    assert_int_equal(npy.dtype, dtype);
    assert_int_equal(npy.ndim, ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        assert_int_equal(npy.shape[i], shape[i]);
        n = shape[i] == 0 ? 0 : n; /* so the product below cannot overflow */
    }
    for (int i = 0; i < ndim && n != 0; i++)
        n *= shape[i];
    assert_int_equal(npy.n, n);
}

static void expect_open_fails(const char *path, qk_status want, const char *what)
{
    qk_npy npy;
    char err[512] = "";
    assert_int_equal(qk_npy_open(path, &npy, err, sizeof err), want);
    assert_true(strlen(err) > 0);
    show(what, err);
    assert_null(npy.data);
    qk_npy_close(&npy); /* safe after a failed open */
}

/* ---- round trips ------------------------------------------------------------------ */

static const qk_dtype all_dtypes[] = {QK_F32, QK_F64, QK_F16, QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
static const size_t all_sizes[] = {4, 8, 2, 1, 1, 2, 2, 4};

static void roundtrip(qk_dtype dtype, size_t esize, int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    size_t bytes = (size_t)n * esize;
    unsigned char *data = malloc(bytes ? bytes : 1);
    assert_non_null(data);
    for (size_t i = 0; i < bytes; i++)
        data[i] = (unsigned char)(i * 37u + 11u);

    const char *path = path_in("rt.npy");
    char err[256] = "unset";
    assert_int_equal(qk_npy_write(path, dtype, ndim, shape, data, err, sizeof err), QK_OK);
    assert_string_equal(err, "");

    qk_npy npy;
    assert_int_equal(qk_npy_open(path, &npy, err, sizeof err), QK_OK);
    assert_int_equal(npy.dtype, dtype);
    assert_int_equal(npy.ndim, ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(npy.shape[i], shape[i]);
    assert_int_equal(npy.n, n);
    assert_non_null(npy.data);
    assert_int_equal((uintptr_t)npy.data % esize, 0);
    if (bytes > 0)
        assert_memory_equal(npy.data, data, bytes);
    qk_npy_close(&npy);
    qk_npy_close(&npy); /* idempotent */
    assert_null(npy.data);
    free(data);
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_roundtrip_every_dtype_and_shape(void **state)
{
    (void)state;
    static const int64_t s1[] = {1}, s0[] = {0}, s234[] = {2, 3, 4}, s_zero_mid[] = {5, 0, 7};
    for (size_t t = 0; t < sizeof all_dtypes / sizeof all_dtypes[0]; t++) {
        roundtrip(all_dtypes[t], all_sizes[t], 0, NULL);
        roundtrip(all_dtypes[t], all_sizes[t], 1, s1);
        roundtrip(all_dtypes[t], all_sizes[t], 1, s0);
        roundtrip(all_dtypes[t], all_sizes[t], 3, s234);
        roundtrip(all_dtypes[t], all_sizes[t], 3, s_zero_mid);
    }
}

static void test_roundtrip_large_f32(void **state)
{
    (void)state;
    enum { N = 100000 };
    float *x = malloc(N * sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < N; i++)
        x[i] = (float)i * 0.25f - 1000.0f;
    int64_t shape[1] = {N};
    const char *path = path_in("big.npy");
    assert_int_equal(qk_npy_write(path, QK_F32, 1, shape, x, NULL, 0), QK_OK);
    qk_npy npy;
    assert_int_equal(qk_npy_open(path, &npy, NULL, 0), QK_OK);
    assert_int_equal(npy.n, N);
    assert_memory_equal(npy.data, x, N * sizeof *x);
    qk_npy_close(&npy);
    free(x);
}

static void test_roundtrip_32_dims(void **state)
{
    (void)state;
    int64_t shape[QK_NPY_MAX_DIMS];
    for (int i = 0; i < QK_NPY_MAX_DIMS; i++)
        shape[i] = (i % 3 == 0) ? 2 : 1;
    roundtrip(QK_I16, 2, QK_NPY_MAX_DIMS, shape);
}

/* ---- numpy's exact bytes ------------------------------------------------------------ */

static void expect_header_bytes(qk_dtype dtype, int ndim, const int64_t *shape, const char *dict, size_t total)
{
    unsigned char zeros[64] = {0};
    const char *path = path_in("hdr.npy");
    assert_int_equal(qk_npy_write(path, dtype, ndim, shape, zeros, NULL, 0), QK_OK);
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(total % 64, 0);
    assert_true(total >= 10 + strlen(dict) + 1);
    unsigned char *want = malloc(total);
    assert_non_null(want);
    memcpy(want, "\x93NUMPY\x01\x00", 8);
    want[8] = (unsigned char)((total - 10) & 0xff);
    want[9] = (unsigned char)((total - 10) >> 8);
    memcpy(want + 10, dict, strlen(dict));
    memset(want + 10 + strlen(dict), ' ', total - 11 - strlen(dict));
    want[total - 1] = '\n';
    assert_true(len >= total);
    assert_memory_equal(got, want, total);
    free(want);
    free(got);
}

/* Byte for byte what np.save (numpy 1.24) writes; the header length and total
 * were taken from np.save output. */
static void test_header_matches_numpy(void **state)
{
    (void)state;
    static const int64_t s3[] = {3}, s23[] = {2, 3};
    expect_header_bytes(QK_F32, 1, s3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 128);
    expect_header_bytes(QK_F64, 2, s23, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 128);
    expect_header_bytes(QK_U8, 0, NULL, "{'descr': '|u1', 'fortran_order': False, 'shape': (), }", 128);
    expect_header_bytes(QK_I8, 1, s3, "{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }", 128);

    /* The literal prefix, spelled out once. */
    size_t len;
    assert_int_equal(qk_npy_write(path_in("f.npy"), QK_F32, 1, s3, (float[3]){1, 2, 3}, NULL, 0), QK_OK);
    unsigned char *got = read_bytes(path_in("f.npy"), &len);
    assert_int_equal(len, 128 + 12);
    assert_memory_equal(got, "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                        10 + 57);
    assert_int_equal(got[127], '\n');
    for (size_t i = 10 + 57; i < 127; i++)
        assert_int_equal(got[i], ' ');
    free(got);
}

/* ---- header parser: accepted variations ------------------------------------------------ */

static void test_parse_accepts_variants(void **state)
{
    (void)state;
    static const int64_t s34[] = {3, 4}, s5[] = {5}, s12[] = {1, 2};
    expect_good_dict(GOOD_DICT, QK_F32, 2, s34);
    expect_good_dict("{'shape': (3, 4), 'fortran_order': False, 'descr': '<f4'}", QK_F32, 2, s34);
    expect_good_dict("{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (5,)}", QK_F64, 1, s5);
    expect_good_dict("{ 'descr' : '<f2' ,\n\t'fortran_order':False,'shape':(1,2,) , }", QK_F16, 2, s12);
    expect_good_dict("{'descr': '<u1', 'fortran_order': False, 'shape': ()}", QK_U8, 0, NULL);
    expect_good_dict("{'descr': '<i1', 'fortran_order': False, 'shape': (5L,)}", QK_I8, 1, s5);
    expect_good_dict("{'descr': '<u2', 'fortran_order': False, 'shape': (0,)}", QK_U16, 1, (int64_t[]){0});
    expect_good_dict("{'descr': '<i2', 'fortran_order': False, 'shape': (1, 2)}", QK_I16, 2, s12);
    expect_good_dict("{'descr': '<i4', 'fortran_order': False, 'shape': (5,),}", QK_I32, 1, s5);
    expect_good_dict("{'descr':'|u1','fortran_order':False,'shape':(5,)}\n", QK_U8, 1, s5);
}

static void test_parse_versions_2_and_3(void **state)
{
    (void)state;
    for (int major = 2; major <= 3; major++) {
        unsigned char buf[256];
        size_t len = make_header(buf, sizeof buf, major, GOOD_DICT);
        qk_npy npy;
        size_t off;
        assert_int_equal(parse(buf, len, &npy, &off, "v2/v3"), QK_OK);
        assert_int_equal(off, len);
        assert_int_equal(npy.n, 12);
    }
}

/* A shape whose byte count still fits in int64 is the parser's to accept; the
 * file size check is qk_npy_open's. */
static void test_parse_huge_but_representable(void **state)
{
    (void)state;
    unsigned char buf[256];
    size_t len = make_header(buf, sizeof buf, 1,
                             "{'descr': '|u1', 'fortran_order': False, 'shape': (9223372036854775807,)}");
    qk_npy npy;
    size_t off;
    assert_int_equal(parse(buf, len, &npy, &off, "int64 max"), QK_OK);
    assert_int_equal(npy.n, INT64_MAX);
    /* Two bytes each no longer fits. */
    expect_bad_dict("{'descr': '<i2', 'fortran_order': False, 'shape': (9223372036854775807,)}");
    /* A zero anywhere makes the product 0 without overflowing. */
    static const int64_t s[] = {4294967296, 4294967296, 0};
    expect_good_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 0)}", QK_F32, 3, s);
}

/* ---- header parser: hostile input ---------------------------------------------------------- */

static void test_parse_bad_preamble(void **state)
{
    (void)state;
    unsigned char buf[256];
    size_t len = make_header(buf, sizeof buf, 1, GOOD_DICT);
    qk_npy npy;
    size_t off;

    unsigned char bad[256];
    memcpy(bad, buf, len);
    bad[1] = 'M';
    assert_int_equal(parse(bad, len, &npy, &off, "bad magic"), QK_ERR_FORMAT);
    assert_int_equal(parse(buf, 0, &npy, &off, "empty"), QK_ERR_FORMAT);
    assert_int_equal(parse(buf, 3, &npy, &off, "truncated magic"), QK_ERR_FORMAT);
    assert_int_equal(parse(buf, 7, &npy, &off, "truncated version"), QK_ERR_FORMAT);
    assert_int_equal(parse(buf, 9, &npy, &off, "truncated header length"), QK_ERR_FORMAT);
    assert_int_equal(parse(buf, len - 1, &npy, &off, "header past end"), QK_ERR_FORMAT);
    assert_int_equal(parse(buf, 40, &npy, &off, "header past end (40)"), QK_ERR_FORMAT);

    memcpy(bad, buf, len);
    bad[6] = 4;
    assert_int_equal(parse(bad, len, &npy, &off, "version 4.0"), QK_ERR_FORMAT);
    bad[6] = 0;
    assert_int_equal(parse(bad, len, &npy, &off, "version 0.0"), QK_ERR_FORMAT);
    bad[6] = 1;
    bad[7] = 1;
    assert_int_equal(parse(bad, len, &npy, &off, "version 1.1"), QK_ERR_FORMAT);

    memcpy(bad, buf, len);
    bad[8] = 0xff;
    bad[9] = 0xff;
    assert_int_equal(parse(bad, len, &npy, &off, "header len 65535"), QK_ERR_FORMAT);

    assert_int_equal(qk_npy_parse_header(NULL, 10, &npy, &off, NULL, 0), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_npy_parse_header(buf, len, NULL, &off, NULL, 0), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_npy_parse_header(buf, len, &npy, NULL, NULL, 0), QK_ERR_INVALID_ARG);
}

static void test_parse_bad_dicts(void **state)
{
    (void)state;
    /* structure */
    expect_bad_dict("");
    expect_bad_dict("[]");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), ");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4");
    expect_bad_dict("{'descr': '<f4, 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4' 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr' '<f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4',, 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{, 'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{descr: '<f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict(GOOD_DICT " x");
    expect_bad_dict(GOOD_DICT " {}");
    expect_bad_dict("{'descr': '<\\x66\\x34', 'fortran_order': False, 'shape': (3, 4)}");
    /* keys */
    expect_bad_dict("{}");
    expect_bad_dict("{'descr': '<f4', 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False}");
    expect_bad_dict("{'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'extra': 1}");
    expect_bad_dict("{'Descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}");
    /* fortran_order */
    expect_bad_dict("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': 0, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': false, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': 'False', 'shape': (3, 4)}");
    /* descr */
    expect_bad_dict("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '>f8', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '|b1', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<c8', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<c16', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '|O', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<U8', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<u4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '=f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': 'f4', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3, 4)}");
    expect_bad_dict("{'descr': 4, 'fortran_order': False, 'shape': (3, 4)}");
    /* shape */
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, -4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775808,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': [3, 4]}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': 12}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3.0, 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3e2,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (010,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (-,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3,,)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3 4)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': ('3',)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': ((3,),)}");
    expect_bad_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4}");
}

static void build_ndim_dict(char *dict, size_t cap, int ndim)
{
    size_t d = (size_t)snprintf(dict, cap, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        d += (size_t)snprintf(dict + d, cap - d, "1, ");
    snprintf(dict + d, cap - d, "), }");
}

static void test_parse_dim_limit(void **state)
{
    (void)state;
    char dict[512];
    int64_t ones[QK_NPY_MAX_DIMS];
    for (int i = 0; i < QK_NPY_MAX_DIMS; i++)
        ones[i] = 1;
    build_ndim_dict(dict, sizeof dict, QK_NPY_MAX_DIMS);
    expect_good_dict(dict, QK_F32, QK_NPY_MAX_DIMS, ones);
    build_ndim_dict(dict, sizeof dict, QK_NPY_MAX_DIMS + 1);
    expect_bad_dict(dict);
    build_ndim_dict(dict, sizeof dict, 100);
    expect_bad_dict(dict);
}

static void test_parse_bad_bytes(void **state)
{
    (void)state;
    unsigned char buf[256];
    qk_npy npy;
    size_t off;
    size_t len = make_header(buf, sizeof buf, 1, GOOD_DICT);
    buf[len - 2] = '\0'; /* a NUL in the padding */
    assert_int_equal(parse(buf, len, &npy, &off, "NUL in padding"), QK_ERR_FORMAT);
    len = make_header(buf, sizeof buf, 1, GOOD_DICT);
    buf[len - 5] = 0xe9; /* non-ASCII */
    assert_int_equal(parse(buf, len, &npy, &off, "non-ASCII in padding"), QK_ERR_FORMAT);
    len = make_header(buf, sizeof buf, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), '\xc3\xa9': 1}");
    assert_int_equal(parse(buf, len, &npy, &off, "UTF-8 key (v3)"), QK_ERR_FORMAT);
}

/* Every single-byte change and every truncation of a valid header parses or
 * fails cleanly; ASan sees any read outside the exact-size copy. */
static void test_parse_fuzz(void **state)
{
    (void)state;
    static const unsigned char subst[] = {0x00, 0x01, 0x80, 0xff, '{', '}', '(', ')', ',', ':', '\'', '"',
                                          '-', '0', '9', ' ', '\n', 'L', 'T', '[', '\\', '>', '|'};
    unsigned char good[256];
    size_t len = make_header(good, sizeof good, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4,), }");
    qk_npy npy;
    size_t off;
    char err[128];
    unsigned long ok = 0, bad = 0;

    for (size_t cut = 0; cut <= len; cut++) {
        unsigned char *b = malloc(cut ? cut : 1);
        memcpy(b, good, cut);
        qk_status st = qk_npy_parse_header(cut ? b : NULL, cut, &npy, &off, err, sizeof err);
        assert_true(st == QK_OK || st == QK_ERR_FORMAT);
        if (st == QK_OK)
            assert_true(off <= cut);
        free(b);
    }
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t s = 0; s < sizeof subst + 8; s++) {
            unsigned char *b = malloc(len);
            memcpy(b, good, len);
            b[pos] = s < sizeof subst ? subst[s] : (unsigned char)(b[pos] ^ (1u << (s - sizeof subst)));
            qk_status st = qk_npy_parse_header(b, len, &npy, &off, err, sizeof err);
            assert_true(st == QK_OK || st == QK_ERR_FORMAT);
            if (st == QK_OK) {
                assert_true(off <= len);
                assert_true(npy.ndim >= 0 && npy.ndim <= QK_NPY_MAX_DIMS);
                ok++;
            } else {
                assert_true(strlen(err) > 0);
                bad++;
            }
            free(b);
        }
    }
    /* Deterministic multi-byte mutations (xorshift). */
    uint32_t r = 12345;
    for (int iter = 0; iter < 20000; iter++) {
        unsigned char *b = malloc(len);
        memcpy(b, good, len);
        int flips = 1 + (int)(r % 4);
        for (int k = 0; k < flips; k++) {
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            size_t pos = r % len;
            r ^= r << 13, r ^= r >> 17, r ^= r << 5;
            b[pos] = (r & 1) ? subst[(r >> 1) % sizeof subst] : (unsigned char)(r >> 8);
        }
        r ^= r << 13, r ^= r >> 17, r ^= r << 5;
        size_t cut = len - (r % 8 == 0 ? r % len : 0);
        qk_status st = qk_npy_parse_header(b, cut, &npy, &off, err, sizeof err);
        assert_true(st == QK_OK || st == QK_ERR_FORMAT);
        if (st == QK_OK)
            assert_true(off <= cut);
        free(b);
    }
    assert_true(ok > 0 && bad > 0);
}

/* ---- reader: hostile files ------------------------------------------------------------------ */

static void write_npy_raw(const char *name, const char *dict, size_t data_bytes)
{
    unsigned char buf[8192];
    size_t len = make_header(buf, sizeof buf, 1, dict);
    assert_true(len + data_bytes <= sizeof buf);
    memset(buf + len, 0x5a, data_bytes);
    write_bytes(path_in(name), buf, len + data_bytes);
}

static void test_open_hostile_files(void **state)
{
    (void)state;
    write_bytes(path_in("empty.npy"), "", 0);
    expect_open_fails(path_in("empty.npy"), QK_ERR_FORMAT, "empty file");
    write_bytes(path_in("magic.npy"), "\x93NUMPX\x01\x00\x00\x00", 10);
    expect_open_fails(path_in("magic.npy"), QK_ERR_FORMAT, "bad magic");
    write_bytes(path_in("short.npy"), "\x93NUM", 4);
    expect_open_fails(path_in("short.npy"), QK_ERR_FORMAT, "truncated magic");
    write_bytes(path_in("text.npy"), "hello, world\n", 13);
    expect_open_fails(path_in("text.npy"), QK_ERR_FORMAT, "text file");

    unsigned char buf[256];
    size_t len = make_header(buf, sizeof buf, 1, GOOD_DICT);
    write_bytes(path_in("hdrcut.npy"), buf, len - 10);
    expect_open_fails(path_in("hdrcut.npy"), QK_ERR_FORMAT, "header past end");

    write_npy_raw("trunc.npy", GOOD_DICT, 47);
    expect_open_fails(path_in("trunc.npy"), QK_ERR_FORMAT, "truncated data");
    write_npy_raw("nodata.npy", GOOD_DICT, 0);
    expect_open_fails(path_in("nodata.npy"), QK_ERR_FORMAT, "header only");
    write_npy_raw("long.npy", GOOD_DICT, 49);
    expect_open_fails(path_in("long.npy"), QK_ERR_FORMAT, "trailing data");
    write_npy_raw("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }", 48);
    expect_open_fails(path_in("fortran.npy"), QK_ERR_FORMAT, "Fortran order");
    write_npy_raw("be.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4), }", 48);
    expect_open_fails(path_in("be.npy"), QK_ERR_FORMAT, "big-endian");
    write_npy_raw("overflow.npy",
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }", 64);
    expect_open_fails(path_in("overflow.npy"), QK_ERR_FORMAT, "shape overflow");
    /* Claims 2^62 bytes: must fail on size, not try to read them. */
    write_npy_raw("huge.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387904,), }", 16);
    expect_open_fails(path_in("huge.npy"), QK_ERR_FORMAT, "huge shape, small file");

    mkdir(path_in("adir.npy"), 0755);
    expect_open_fails(path_in("adir.npy"), QK_ERR_IO, "directory");
    expect_open_fails(path_in("does-not-exist.npy"), QK_ERR_IO, "nonexistent");
    mkfifo(path_in("fifo.npy"), 0600);
    expect_open_fails(path_in("fifo.npy"), QK_ERR_IO, "FIFO (must not block)");

    qk_npy npy;
    assert_int_equal(qk_npy_open(NULL, &npy, NULL, 0), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_npy_open(path_in("trunc.npy"), NULL, NULL, 0), QK_ERR_INVALID_ARG);
    assert_int_equal(qk_npy_open(path_in("trunc.npy"), &npy, NULL, 0), QK_ERR_FORMAT);
}

/* A character device (a null device made in the test's directory, never
 * /dev/null itself) is refused, not read. */
static void test_open_character_device(void **state)
{
    (void)state;
    char dev[PATH_MAX];
    if (qk_test_null_device(g_dir, "null.npy", dev, sizeof dev) != 0)
        skip();
    expect_open_fails(dev, QK_ERR_IO, "character device");
    unlink(dev);
}

/* A file whose data starts at an odd offset (10 + hlen odd), as a foreign
 * writer might produce. */
static void write_odd_offset(const char *name, const char *dict, const void *data, size_t bytes)
{
    size_t d = strlen(dict);
    unsigned char buf[512];
    size_t hlen = d + 1 + ((d + 1 + 10) % 2 == 0 ? 1 : 0);
    assert_true((10 + hlen) % 2 == 1 && 10 + hlen + bytes <= sizeof buf);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)hlen;
    buf[9] = 0;
    memcpy(buf + 10, dict, d);
    memset(buf + 10 + d, ' ', hlen - d - 1);
    buf[10 + hlen - 1] = '\n';
    if (bytes > 0)
        memcpy(buf + 10 + hlen, data, bytes);
    write_bytes(path_in(name), buf, 10 + hlen + bytes);
}

/* Misaligned data is copied so the caller still gets aligned numbers. */
static void test_open_misaligned_data(void **state)
{
    (void)state;
    double vals[3] = {1.5, -2.25, 1e300};
    write_odd_offset("odd.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (3,)}", vals, sizeof vals);
    qk_npy npy;
    char err[256];
    assert_int_equal(qk_npy_open(path_in("odd.npy"), &npy, err, sizeof err), QK_OK);
    assert_int_equal(npy.n, 3);
    assert_int_equal((uintptr_t)npy.data % 8, 0);
    assert_memory_equal(npy.data, vals, sizeof vals);
    qk_npy_close(&npy);

    write_odd_offset("odd0.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (0,)}", NULL, 0);
    assert_int_equal(qk_npy_open(path_in("odd0.npy"), &npy, err, sizeof err), QK_OK);
    assert_int_equal(npy.n, 0);
    assert_non_null(npy.data);
    assert_int_equal((uintptr_t)npy.data % 8, 0);
    qk_npy_close(&npy);

    uint8_t bytes[5] = {1, 2, 3, 4, 5}; /* one-byte elements are never misaligned */
    write_odd_offset("odd1.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (5,)}", bytes, sizeof bytes);
    assert_int_equal(qk_npy_open(path_in("odd1.npy"), &npy, err, sizeof err), QK_OK);
    assert_memory_equal(npy.data, bytes, sizeof bytes);
    qk_npy_close(&npy);
}

/* ---- writer: arguments and failures ---------------------------------------------------------- */

static void test_write_bad_args(void **state)
{
    (void)state;
    const char *path = path_in("args.npy");
    float x[4] = {0};
    int64_t s4[] = {4}, neg[] = {-1}, ovf[] = {INT64_MAX, 2}, big[] = {INT64_MAX / 2};
    char err[256];
#define EXPECT_WRITE(status, ...)                                     \
    do {                                                              \
        err[0] = '\0';                                                \
        assert_int_equal(qk_npy_write(__VA_ARGS__, err, sizeof err), status); \
        assert_true(strlen(err) > 0);                                 \
        show("write", err);                                           \
    } while (0)
    EXPECT_WRITE(QK_ERR_INVALID_ARG, NULL, QK_F32, 1, s4, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, "", QK_F32, 1, s4, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, (qk_dtype)99, 1, s4, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, (qk_dtype)-1, 1, s4, x);
    EXPECT_WRITE(QK_ERR_UNSUPPORTED, path, QK_BF16, 1, s4, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, -1, s4, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, QK_NPY_MAX_DIMS + 1, s4, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, 1, NULL, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, 1, neg, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, 2, ovf, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, 1, big, x);
    EXPECT_WRITE(QK_ERR_INVALID_ARG, path, QK_F32, 1, s4, NULL);
    EXPECT_WRITE(QK_ERR_IO, g_dir, QK_F32, 1, s4, x);
#undef EXPECT_WRITE
    assert_false(file_exists(path));
    /* Empty arrays need no data pointer. */
    assert_int_equal(qk_npy_write(path, QK_F32, 1, (int64_t[]){0}, NULL, NULL, 0), QK_OK);
    assert_true(file_exists(path));
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_write_into_missing_dir(void **state)
{
    (void)state;
    const char *path = path_in("no/such/dir/x.npy");
    char err[512] = "";
    assert_int_equal(qk_npy_write(path, QK_U8, 1, (int64_t[]){3}, "abc", err, sizeof err), QK_ERR_IO);
    assert_non_null(strstr(err, "x.npy"));
    show("missing dir", err);
    assert_false(file_exists(path));
    assert_false(file_exists(path_in("no")));
}

static void test_write_replaces_existing(void **state)
{
    (void)state;
    const char *path = path_in("replace.npy");
    write_bytes(path, "old contents", 12);
    int32_t v[2] = {7, -7};
    assert_int_equal(qk_npy_write(path, QK_I32, 1, (int64_t[]){2}, v, NULL, 0), QK_OK);
    qk_npy npy;
    assert_int_equal(qk_npy_open(path, &npy, NULL, 0), QK_OK);
    assert_int_equal(npy.dtype, QK_I32);
    assert_memory_equal(npy.data, v, sizeof v);
    qk_npy_close(&npy);
    assert_int_equal(count_temp_files(g_dir), 0);

    /* The mode is what any tool would create: 0666 less the umask. */
    mode_t mask = umask(022);
    umask(mask);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0666 & ~mask);
}

/* A write that fails midway (file size limit: EFBIG) leaves the old file as it
 * was and no temporary. Works as root, unlike a read-only directory. */
static void test_write_failure_keeps_old_file(void **state)
{
    (void)state;
    const char *path = path_in("keep.npy");
    write_bytes(path, "precious", 8);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 4096) {
        skip();
    }
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {4096, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

    static float x[4096];
    char err[512] = "";
    qk_status st = qk_npy_write(path, QK_F32, 1, (int64_t[]){4096}, x, err, sizeof err);

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
}

static void test_write_read_only_dir(void **state)
{
    (void)state;
    if (geteuid() == 0) {
        print_message("  skipped: running as root, which ignores directory permissions\n");
        skip();
    }
    const char *dir = path_in("ro");
    assert_int_equal(mkdir(dir, 0555), 0);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/x.npy", dir);
    char err[512] = "";
    assert_int_equal(qk_npy_write(path, QK_U8, 1, (int64_t[]){1}, "a", err, sizeof err), QK_ERR_IO);
    assert_true(strlen(err) > 0);
    show("read-only dir", err);
    assert_false(file_exists(path));
    assert_int_equal(count_temp_files(dir), 0);
}

/* ---- atomic file ------------------------------------------------------------------------------ */

static void test_atomic_abort_leaves_nothing(void **state)
{
    (void)state;
    const char *path = path_in("aborted.bin");
    qk_atomic_file f;
    assert_int_equal(qk_atomic_open(&f, path, NULL, 0), QK_OK);
    assert_int_equal(count_temp_files(g_dir), named_temporaries());
    assert_int_equal(qk_atomic_write(&f, "partial", 7, NULL, 0), QK_OK);
    qk_atomic_abort(&f);
    qk_atomic_abort(&f); /* twice is fine */
    assert_int_equal(count_temp_files(g_dir), 0);
    assert_false(file_exists(path));
    char err[256] = "";
    assert_int_equal(qk_atomic_commit(&f, err, sizeof err), QK_ERR_INVALID_ARG);
    assert_true(strlen(err) > 0);
    assert_int_equal(qk_atomic_write(&f, "x", 1, NULL, 0), QK_ERR_INVALID_ARG);

    /* A zeroed, never-opened struct: abort must not close fd 0. */
    qk_atomic_file z;
    memset(&z, 0, sizeof z);
    int stdin_open = fcntl(0, F_GETFD) != -1;
    qk_atomic_abort(&z);
    assert_int_equal(fcntl(0, F_GETFD) != -1, stdin_open);
    qk_atomic_abort(NULL);
}

static void test_atomic_commit_twice_and_relative_path(void **state)
{
    (void)state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    qk_atomic_file f;
    qk_status st = qk_atomic_open(&f, "relative.bin", NULL, 0);
    if (st == QK_OK)
        st = qk_atomic_write(&f, "0123456789", 10, NULL, 0);
    if (st == QK_OK)
        st = qk_atomic_commit(&f, NULL, 0);
    qk_status again = qk_atomic_commit(&f, NULL, 0);
    qk_atomic_abort(&f);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(st, QK_OK);
    assert_int_equal(again, QK_ERR_INVALID_ARG);
    struct stat sb;
    assert_int_equal(stat(path_in("relative.bin"), &sb), 0);
    assert_int_equal(sb.st_size, 10);
    assert_int_equal(count_temp_files(g_dir), 0);
}

static void test_atomic_long_name(void **state)
{
    (void)state;
    char name[256];
    memset(name, 'n', 250);
    strcpy(name + 250, ".npy"); /* 254 bytes: the temporary name must be shortened */
    const char *path = path_in(name);
    assert_int_equal(qk_npy_write(path, QK_U8, 1, (int64_t[]){2}, "ab", NULL, 0), QK_OK);
    assert_true(file_exists(path));
    assert_int_equal(count_temp_files(g_dir), 0);
    unlink(path);
}

/* ---- big allocations ---------------------------------------------------------------------------- */

static void test_big_alloc(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 4096, ((size_t)2 << 20) - 1, (size_t)2 << 20, ((size_t)3 << 20) + 17};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = qk_big_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        if (sizes[i] >= ((size_t)2 << 20))
            assert_int_equal((uintptr_t)p % ((size_t)2 << 20), 0);
        if (sizes[i] > 0) {
            memset(p, 0xab, sizes[i]);
            assert_int_equal(p[sizes[i] - 1], 0xab);
        }
        qk_big_free(p, sizes[i]);
    }
    qk_big_free(NULL, 123);
    assert_null(qk_big_alloc(SIZE_MAX));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_dtype_and_shape),
        cmocka_unit_test(test_roundtrip_large_f32),
        cmocka_unit_test(test_roundtrip_32_dims),
        cmocka_unit_test(test_header_matches_numpy),
        cmocka_unit_test(test_parse_accepts_variants),
        cmocka_unit_test(test_parse_versions_2_and_3),
        cmocka_unit_test(test_parse_huge_but_representable),
        cmocka_unit_test(test_parse_bad_preamble),
        cmocka_unit_test(test_parse_bad_dicts),
        cmocka_unit_test(test_parse_dim_limit),
        cmocka_unit_test(test_parse_bad_bytes),
        cmocka_unit_test(test_parse_fuzz),
        cmocka_unit_test(test_open_hostile_files),
        cmocka_unit_test(test_open_character_device),
        cmocka_unit_test(test_open_misaligned_data),
        cmocka_unit_test(test_write_bad_args),
        cmocka_unit_test(test_write_into_missing_dir),
        cmocka_unit_test(test_write_replaces_existing),
        cmocka_unit_test(test_write_failure_keeps_old_file),
        cmocka_unit_test(test_write_read_only_dir),
        cmocka_unit_test(test_atomic_abort_leaves_nothing),
        cmocka_unit_test(test_atomic_commit_twice_and_relative_path),
        cmocka_unit_test(test_atomic_long_name),
        cmocka_unit_test(test_big_alloc),
    };
    return cmocka_run_group_tests(tests, group_setup, fixture_teardown);
}
