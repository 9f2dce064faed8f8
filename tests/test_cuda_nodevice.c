/* The CUDA backend without a usable device (no driver, no GPU): it reports
 * itself compiled but unavailable with a reason, creating it is
 * QK_ERR_NO_DEVICE with a message (never a crash), and AUTO still gives a
 * working context. On a machine with a CUDA device the same test checks the
 * other side: query lists devices and create succeeds. In a build without CUDA
 * it checks that CUDA reports "not built in". Meaningful everywhere, so it
 * never skips. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "ref.h"

static qk_backend_info info;

static void test_query(void **state)
{
    assert_int_equal(qk_backend_query(QK_BACKEND_CUDA, &info), QK_OK);
    assert_string_equal(info.name, "cuda");
    if (!info.compiled) {
        assert_false(info.available);
        assert_non_null(strstr(info.reason, "not built in"));
        return;
    }
    if (info.available) {
        assert_true(info.n_devices >= 1);
        assert_true(strlen(info.devices[0].name) > 0);
        assert_string_equal(info.devices[0].type, "gpu");
        assert_true(info.devices[0].global_mem > 0);
    } else {
        assert_int_equal(info.n_devices, 0);
        assert_true(strlen(info.reason) > 0);
        assert_non_null(strstr(info.reason, "no CUDA device"));
    }
}

static void test_create(void **state)
{
    qk_context *ctx = NULL;
    char msg[512];
    qk_status st = qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg);
    if (!info.compiled) {
        assert_int_equal(st, QK_ERR_UNSUPPORTED);
        assert_null(ctx);
        return;
    }
    if (info.available) {
        if (st != QK_OK) fail_msg("a CUDA device is listed but create failed: %s (%s)", msg, qk_status_string(st));
        assert_int_equal(qk_context_backend(ctx), QK_BACKEND_CUDA);
        qk_device_info d;
        assert_int_equal(qk_context_device(ctx, &d), QK_OK);
        assert_string_equal(d.name, info.devices[0].name);
        /* a device index past the last one is QK_ERR_NO_DEVICE */
        qk_context_destroy(ctx);
        char idx[16];
        snprintf(idx, sizeof idx, "%d", info.n_devices);
        setenv("QKERN_DEVICE", idx, 1);
        ctx = NULL;
        assert_int_equal(qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg), QK_ERR_NO_DEVICE);
        assert_null(ctx);
        assert_non_null(strstr(msg, "does not exist"));
        unsetenv("QKERN_DEVICE");
        return;
    }
    assert_int_equal(st, QK_ERR_NO_DEVICE);
    assert_null(ctx);
    assert_true(strlen(msg) > 0);
    assert_non_null(strstr(msg, "cuda"));
    assert_non_null(strstr(msg, "cudaGetDeviceCount"));
    /* again: a failed first try leaves nothing behind that breaks a second */
    assert_int_equal(qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg), QK_ERR_NO_DEVICE);
    assert_null(ctx);
}

/* QKERN_DEVICE_MEMORY_LIMIT is read before any device is looked for, so a
 * malformed value is reported the same way on every machine. */
static void test_memory_limit_syntax(void **state)
{
    if (!info.compiled) return;
    /* the grammar the OpenCL backend reads too: <bytes>[K|M|G][i][B], at least 1M */
    static const char *bad[] = {"", "abc", "12X", "-5", "0", "1.5G", "64K", "1048575", "3MX", "99999999999999999999",
                                "17179869184G"};
    static const char *good[] = {"1048576", "1024K", "3M", "3m", "48MiB", "64MB", "1G", "2g"};
    qk_context *ctx = NULL;
    char msg[512];
    for (size_t i = 1; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("QKERN_DEVICE_MEMORY_LIMIT", bad[i], 1);
        qk_status st = qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg);
        if (st != QK_ERR_INVALID_ARG) fail_msg("QKERN_DEVICE_MEMORY_LIMIT=\"%s\": %s", bad[i], qk_status_string(st));
        assert_non_null(strstr(msg, "QKERN_DEVICE_MEMORY_LIMIT"));
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("QKERN_DEVICE_MEMORY_LIMIT", good[i], 1);
        qk_status st = qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg);
        if (info.available) {
            if (st != QK_OK) fail_msg("QKERN_DEVICE_MEMORY_LIMIT=%s: %s (%s)", good[i], msg, qk_status_string(st));
            qk_context_destroy(ctx);
        } else {
            if (st != QK_ERR_NO_DEVICE) fail_msg("QKERN_DEVICE_MEMORY_LIMIT=%s: %s", good[i], qk_status_string(st));
        }
        ctx = NULL;
    }
    /* empty means unset */
    setenv("QKERN_DEVICE_MEMORY_LIMIT", bad[0], 1);
    qk_status st = qk_context_create(QK_BACKEND_CUDA, &ctx, msg, sizeof msg);
    assert_int_equal(st, info.available ? QK_OK : QK_ERR_NO_DEVICE);
    qk_context_destroy(ctx);
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
}

/* AUTO falls back past an unavailable CUDA and still computes. */
static void test_auto_fallback(void **state)
{
    const char *saved = getenv("QKERN_BACKEND");
    unsetenv("QKERN_BACKEND");
    qk_context *ctx = NULL;
    char msg[512];
    assert_int_equal(qk_context_create(QK_BACKEND_AUTO, &ctx, msg, sizeof msg), QK_OK);
    qk_backend_kind kind = qk_context_backend(ctx);
    if (info.available) assert_int_equal(kind, QK_BACKEND_CUDA);
    else assert_true(kind != QK_BACKEND_CUDA);
    assert_string_equal(qk_context_message(ctx), "");
    float x[] = {3.0f, -1.5f, 0.25f, 7.0f};
    qk_tensor t = qk_tensor_host(QK_F32, x, 4);
    qk_minmax_result r;
    assert_int_equal(qk_minmax(ctx, &t, 0, &r), QK_OK);
    assert_true(r.min == -1.5 && r.max == 7.0);
    double p = 50, v;
    assert_int_equal(qk_percentiles(ctx, &t, &p, 1, 0, &v), QK_OK);
    assert_true(v == 1.625);
    qk_context_destroy(ctx);
    if (saved) setenv("QKERN_BACKEND", saved, 1);
}

int main(void)
{
    /* the test decides itself which backends it creates */
    unsetenv("QKERN_DEVICE");
    unsetenv("QKERN_DEVICE_MEMORY_LIMIT");
    assert_int_equal(qk_backend_query(QK_BACKEND_CUDA, &info), QK_OK);
    printf("cuda: compiled %d, available %d, %d device(s)%s%s\n", info.compiled, info.available, info.n_devices,
           info.reason[0] ? ", reason: " : "", info.reason);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_memory_limit_syntax),
        cmocka_unit_test(test_auto_fallback),
    };
    return cmocka_run_group_tests_name("cuda_nodevice", tests, NULL, NULL) ? 1 : 0;
}
