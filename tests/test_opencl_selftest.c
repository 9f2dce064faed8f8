/* The OpenCL known-answer self-test (host/opencl/ocl_selftest.c).
 *
 * QKERN_TEST_SELFTEST=pass (default): the device under test (QKERN_TEST_DEVICE)
 *   passes, its verdict is cached (a second context reads it), qk_backend_query
 *   reports it, and QKERN_OPENCL_SELFTEST=nocache/0 behave.
 * QKERN_TEST_SELFTEST=refused: the only OpenCL device here is Debian 12's Mesa
 *   22.3 rusticl (tests/CMakeLists.txt sets OCL_ICD_VENDORS=rusticl.icd and
 *   RUSTICL_ENABLE=llvmpipe): it must be refused with QK_ERR_NO_DEVICE naming
 *   the failed check, qk_backend_query must say so, and AUTO must fall back to
 *   the CPU backend. Skipped (77) when no Mesa 22 rusticl device is enumerated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ref.h"

#ifdef QKERN_HAVE_OPENCL

static qk_context *open_opencl(qk_status *st, char *msg, size_t cap)
{
    qk_context *ctx = NULL;
    const char *dev = getenv("QKERN_TEST_DEVICE");
    if (dev && *dev) setenv("QKERN_DEVICE", dev, 1);
    *st = qk_context_create(QK_BACKEND_OPENCL, &ctx, msg, cap);
    if (dev && *dev) unsetenv("QKERN_DEVICE");
    return ctx;
}

static void test_passes_and_caches(void **state)
{
    (void)state;
    char msg[1024];
    qk_status st;
    setenv("QKERN_OPENCL_SELFTEST", "nocache", 1);
    qk_context *ctx = open_opencl(&st, msg, sizeof msg);
    if (st != QK_OK) fail_msg("opencl context: %s (%s)", msg, qk_status_string(st));
    qk_device_info info;
    assert_int_equal(qk_context_device(ctx, &info), QK_OK);
    printf("device: %s: %s\n", info.name, info.check);
    assert_string_equal(info.check, "self-test passed");
    qk_context_destroy(ctx);
    unsetenv("QKERN_OPENCL_SELFTEST");

    /* the first cached run stores the verdict, the next one reads it */
    ctx = open_opencl(&st, msg, sizeof msg);
    assert_int_equal(st, QK_OK);
    qk_context_destroy(ctx);
    ctx = open_opencl(&st, msg, sizeof msg);
    assert_int_equal(st, QK_OK);
    assert_int_equal(qk_context_device(ctx, &info), QK_OK);
    assert_string_equal(info.check, "self-test passed (cached)");
    qk_context_destroy(ctx);

    setenv("QKERN_OPENCL_SELFTEST", "0", 1);
    ctx = open_opencl(&st, msg, sizeof msg);
    assert_int_equal(st, QK_OK);
    assert_int_equal(qk_context_device(ctx, &info), QK_OK);
    assert_non_null(strstr(info.check, "skipped"));
    qk_context_destroy(ctx);
    unsetenv("QKERN_OPENCL_SELFTEST");

    qk_backend_info b;
    assert_int_equal(qk_backend_query(QK_BACKEND_OPENCL, &b), QK_OK);
    assert_true(b.n_devices >= 1);
    for (int d = 0; d < b.n_devices; d++) printf("  [%d] %s: %s\n", d, b.devices[d].name, b.devices[d].check);
    assert_non_null(strstr(b.devices[0].check, "self-test passed"));
}

static void test_refused_and_auto_falls_back(void **state)
{
    (void)state;
    char msg[1024];
    qk_status st;
    qk_context *ctx = open_opencl(&st, msg, sizeof msg);
    printf("opencl: %s (%s)\n", msg, qk_status_string(st));
    assert_null(ctx);
    assert_int_equal(st, QK_ERR_NO_DEVICE);
    assert_non_null(strstr(msg, "failed qkern's self-test"));
    assert_true(strstr(msg, "loop:") || strstr(msg, "finish:") || strstr(msg, "reduce:") || strstr(msg, "divide:"));

    qk_backend_info b;
    assert_int_equal(qk_backend_query(QK_BACKEND_OPENCL, &b), QK_OK);
    assert_int_equal(b.n_devices, 1);
    printf("qk_backend_query: %s\n", b.devices[0].check);
    assert_non_null(strstr(b.devices[0].check, "refused by the self-test"));

    unsetenv("QKERN_BACKEND");
    assert_int_equal(qk_context_create(QK_BACKEND_AUTO, &ctx, msg, sizeof msg), QK_OK);
    assert_int_equal(qk_context_backend(ctx), QK_BACKEND_CPU);
    qk_context_destroy(ctx);
}

int main(void)
{
    const char *mode = getenv("QKERN_TEST_SELFTEST");
    int refused = mode && strcmp(mode, "refused") == 0;
    qk_backend_info info;
    qk_backend_query(QK_BACKEND_OPENCL, &info);
    if (info.n_devices == 0) {
        fprintf(stderr, "SKIPPED: no OpenCL device: %s\n", info.reason);
        return 77;
    }
    if (refused && (info.n_devices != 1 || strncmp(info.devices[0].version + strcspn(info.devices[0].version, ","),
                                                   ", driver 22.", 12) != 0)) {
        fprintf(stderr, "SKIPPED: no Mesa 22 rusticl device alone here (found %d device%s, [0] %s, %s): "
                        "install mesa-opencl-icd (Debian 12)\n",
                info.n_devices, info.n_devices == 1 ? "" : "s", info.devices[0].name, info.devices[0].version);
        return 77;
    }
    const struct CMUnitTest pass[] = {cmocka_unit_test(test_passes_and_caches)};
    const struct CMUnitTest refuse[] = {cmocka_unit_test(test_refused_and_auto_falls_back)};
    return refused ? cmocka_run_group_tests(refuse, NULL, NULL) : cmocka_run_group_tests(pass, NULL, NULL);
}

#else

int main(void)
{
    fprintf(stderr, "SKIPPED: this build has no OpenCL backend\n");
    return 77;
}

#endif
