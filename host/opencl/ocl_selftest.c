/* The known-answer self-test, run when a context is created on a device (the
 * kernels are kernels/opencl/selftest.cl, built into the program with the
 * same options as every other kernel). A device that gets any answer wrong is
 * refused with QK_ERR_NO_DEVICE naming the check, so AUTO moves on to another
 * device or the CPU backend: an exact library must not turn a driver bug into
 * a wrong answer. The checks:
 *   loop      one work-item, 100000 iterations (Mesa 22.3's llvmpipe ends any
 *             loop after 65535);
 *   reduce    a sum across work-groups: local memory and barriers, then a
 *             second launch reading the first one's output;
 *   finish    a non-blocking read after clFlush must be complete once clFinish
 *             returns (Mesa 22.3's rusticl returns with it still queued);
 *   divide    4096 float quotients, scalar and vector, bit for bit the host's
 *             IEEE ones (a division off by one ulp shows), and their rint.
 *
 * The verdict is cached per device, driver version and build options in
 * $QKERN_CACHE_DIR, else $XDG_CACHE_HOME/qkern, else ~/.cache/qkern (file
 * opencl-selftest, one line per device), so it costs nothing after the first
 * run. QKERN_OPENCL_SELFTEST=nocache runs it without the cache; =0 skips it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocl.h"

#define ST_VERSION 1 /* bump when the checks change: old verdicts are ignored */
#define ST_LOOP_N 100000u
#define ST_RED_N 100003u
#define ST_DIV_N 4096u

/* ---- the cache ------------------------------------------------------------------- */

static int cache_path(char *dst, size_t cap)
{
    const char *dir = getenv("QKERN_CACHE_DIR");
    if (dir && *dir) return snprintf(dst, cap, "%s/opencl-selftest", dir) < (int)cap;
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && *xdg) return snprintf(dst, cap, "%s/qkern/opencl-selftest", xdg) < (int)cap;
    const char *home = getenv("HOME");
    if (home && *home) return snprintf(dst, cap, "%s/.cache/qkern/opencl-selftest", home) < (int)cap;
    return 0;
}

/* mkdir -p of the directory part of path */
static void make_parent(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(tmp, 0755);
        *p = '/';
    }
}

static void platform_string(cl_platform_id p, cl_platform_info what, char *dst, size_t cap)
{
    dst[0] = '\0';
    if (clGetPlatformInfo(p, what, cap, dst, NULL) != CL_SUCCESS) dst[0] = '\0';
    dst[cap - 1] = '\0';
}

static void device_string(cl_device_id d, cl_device_info what, char *dst, size_t cap)
{
    dst[0] = '\0';
    if (clGetDeviceInfo(d, what, cap, dst, NULL) != CL_SUCCESS) dst[0] = '\0';
    dst[cap - 1] = '\0';
}

/* Tabs and newlines would break the file's format. */
static void sanitize(char *s)
{
    for (; *s; s++) {
        if (*s == '\t' || *s == '\n' || *s == '\r') *s = ' ';
    }
}

static void cache_key(const ocl_backend *be, char *key, size_t cap)
{
    char plat[128], pver[128], dev[128], dver[128], drv[128];
    platform_string(be->platform, CL_PLATFORM_NAME, plat, sizeof plat);
    platform_string(be->platform, CL_PLATFORM_VERSION, pver, sizeof pver);
    device_string(be->device, CL_DEVICE_NAME, dev, sizeof dev);
    device_string(be->device, CL_DEVICE_VERSION, dver, sizeof dver);
    device_string(be->device, CL_DRIVER_VERSION, drv, sizeof drv);
    /* what the build will be made of, known before it is made (so a refused
     * device costs no build): the work-group size it starts from, not the one
     * it may settle on */
    snprintf(key, cap, "v%d|%s|%s|%s|%s|%s|style=%s|wg=%zu|div=%d|fp64=%d|roundeven=%d", ST_VERSION, plat, pver, dev,
             dver, drv, be->gpu_style ? "gpu" : "cpu", be->gpu_style ? (be->wg_forced ? be->wg_forced : be->max_wg) : 1,
             be->div_mode, be->fp64, be->roundeven);
    sanitize(key);
}

/* The cached verdict for key: 1 passed, 0 failed (detail copied), -1 none. */
static int cache_lookup(const char *path, const char *key, char *detail, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[2048];
    int found = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) != 0 || line[klen] != '\t') continue;
        char *v = line + klen + 1;
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(v, '\t');
        if (tab) *tab++ = '\0';
        if (strcmp(v, "pass") == 0) found = 1;
        else if (strcmp(v, "fail") == 0) found = 0;
        if (found == 0) snprintf(detail, cap, "%s", tab ? tab : "");
    }
    fclose(f);
    return found;
}

/* Add (or replace) key's line: the other lines kept, written to a temporary
 * file renamed into place. A cache that cannot be written is no error. */
static void cache_store(const char *path, const char *key, int pass, const char *detail)
{
    make_parent(path);
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof tmp) return;
    FILE *out = fopen(tmp, "w");
    if (!out) return;
    FILE *in = fopen(path, "r");
    size_t klen = strlen(key);
    if (in) {
        char line[2048];
        while (fgets(line, sizeof line, in)) {
            if (strncmp(line, key, klen) == 0 && line[klen] == '\t') continue;
            fputs(line, out);
        }
        fclose(in);
    }
    char d[512];
    snprintf(d, sizeof d, "%s", detail);
    sanitize(d);
    fprintf(out, "%s\t%s\t%s\n", key, pass ? "pass" : "fail", d);
    if (fclose(out) != 0 || rename(tmp, path) != 0) unlink(tmp);
}

/* ---- the checks -------------------------------------------------------------------- */

typedef struct st_run {
    ocl_backend *be;
    cl_kernel k[4];
    cl_mem mem[8];
    char why[400]; /* the failed check */
} st_run;

/* An OpenCL call failed during the test: the device is refused with the call. */
static int st_cl(st_run *r, cl_int err, const char *what)
{
    if (err == CL_SUCCESS) return 0;
    snprintf(r->why, sizeof r->why, "%s failed: %s (%d)", what, ocl_error_name(err), (int)err);
    return 1;
}

static int st_buffer(st_run *r, int slot, size_t bytes, void *init)
{
    cl_int err;
    r->mem[slot] = clCreateBuffer(r->be->context, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0), bytes, init,
                                  &err);
    return st_cl(r, err, "clCreateBuffer");
}

static int st_launch(st_run *r, int kernel, size_t groups, size_t local, cl_event *done)
{
    size_t global = groups * local;
    return st_cl(r, clEnqueueNDRangeKernel(r->be->queue, r->k[kernel], 1, NULL, &global, &local, 0, NULL, done),
                 "clEnqueueNDRangeKernel");
}

/* A blocking read, its status checked. */
static int st_read(st_run *r, int slot, void *dst, size_t bytes)
{
    cl_event ev = NULL;
    if (st_cl(r, clEnqueueReadBuffer(r->be->queue, r->mem[slot], CL_FALSE, 0, bytes, dst, 0, NULL, &ev),
              "clEnqueueReadBuffer")) {
        return 1;
    }
    qk_status st = ocl_wait(r->be, 1, &ev, "a self-test read");
    clReleaseEvent(ev);
    if (st != QK_OK) {
        snprintf(r->why, sizeof r->why, "%s", qk_context_message(r->be->base.ctx));
        return 1;
    }
    return 0;
}

static int check_loop(st_run *r)
{
    cl_uint n = ST_LOOP_N, out[2] = {0, 0};
    if (st_buffer(r, 0, sizeof out, out)) return 1;
    if (st_cl(r, clSetKernelArg(r->k[0], 0, sizeof(cl_mem), &r->mem[0]), "clSetKernelArg") ||
        st_cl(r, clSetKernelArg(r->k[0], 1, sizeof n, &n), "clSetKernelArg") || st_launch(r, 0, 1, 1, NULL) ||
        st_read(r, 0, out, sizeof out)) {
        return 1;
    }
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++) h = (h ^ i) * 16777619u;
    if (out[0] != h || out[1] != n) {
        snprintf(r->why, sizeof r->why, "loop: one work-item ran %u of %u iterations (hash %08x, expected %08x)",
                 out[1], n, out[0], h);
        return 1;
    }
    return 0;
}

/* The reduction, read back without blocking after a clFlush: the read must be
 * complete when clFinish returns. */
static int check_reduce_finish(st_run *r)
{
    cl_uint n = ST_RED_N, groups = 64;
    size_t local = ocl_local_size(r->be);
    uint32_t *x = malloc((size_t)n * sizeof *x);
    if (!x) {
        snprintf(r->why, sizeof r->why, "out of host memory");
        return 1;
    }
    uint64_t want = 0;
    for (cl_uint i = 0; i < n; i++) {
        x[i] = (uint32_t)((i * 2654435761u) >> 7);
        want += x[i];
    }
    int bad = st_buffer(r, 1, (size_t)n * sizeof *x, x);
    free(x);
    if (bad || st_buffer(r, 2, groups * sizeof(cl_ulong), NULL) || st_buffer(r, 3, sizeof(cl_ulong), NULL)) return 1;
    if (st_cl(r, clSetKernelArg(r->k[1], 0, sizeof(cl_mem), &r->mem[1]), "clSetKernelArg") ||
        st_cl(r, clSetKernelArg(r->k[1], 1, sizeof n, &n), "clSetKernelArg") ||
        st_cl(r, clSetKernelArg(r->k[1], 2, sizeof(cl_mem), &r->mem[2]), "clSetKernelArg") ||
        st_cl(r, clSetKernelArg(r->k[2], 0, sizeof(cl_mem), &r->mem[2]), "clSetKernelArg") ||
        st_cl(r, clSetKernelArg(r->k[2], 1, sizeof groups, &groups), "clSetKernelArg") ||
        st_cl(r, clSetKernelArg(r->k[2], 2, sizeof(cl_mem), &r->mem[3]), "clSetKernelArg") ||
        st_launch(r, 1, groups, local, NULL) || st_launch(r, 2, 1, 1, NULL)) {
        return 1;
    }
    /* the host memory the read lands in stays allocated until the read is
     * known complete (ocl_wait below), whatever clFinish says */
    uint64_t *got = calloc(1, sizeof *got);
    if (!got) {
        clFinish(r->be->queue);
        snprintf(r->why, sizeof r->why, "out of host memory");
        return 1;
    }
    cl_event ev = NULL;
    cl_int err = clEnqueueReadBuffer(r->be->queue, r->mem[3], CL_FALSE, 0, sizeof *got, got, 0, NULL, &ev);
    if (err != CL_SUCCESS) {
        clFinish(r->be->queue);
        free(got);
        return st_cl(r, err, "clEnqueueReadBuffer");
    }
    clFlush(r->be->queue);
    cl_int ferr = clFinish(r->be->queue);
    cl_int s = CL_QUEUED;
    cl_int ierr = clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof s, &s, NULL);
    qk_status wst = ocl_wait(r->be, 1, &ev, "the self-test's read");
    int rc = 0;
    if (ferr != CL_SUCCESS || ierr != CL_SUCCESS) {
        rc = st_cl(r, ferr != CL_SUCCESS ? ferr : ierr, ferr != CL_SUCCESS ? "clFinish" : "clGetEventInfo");
    } else if (s != CL_COMPLETE) {
        snprintf(r->why, sizeof r->why,
                 "finish: clFinish returned with a non-blocking read still %s (execution status %d)",
                 s == CL_QUEUED ? "queued" : s == CL_SUBMITTED ? "submitted" : s == CL_RUNNING ? "running" : "failed",
                 (int)s);
        rc = 1;
    } else if (wst != QK_OK) {
        snprintf(r->why, sizeof r->why, "%s", qk_context_message(r->be->base.ctx));
        rc = 1;
    } else if (*got != want) {
        snprintf(r->why, sizeof r->why, "reduce: a sum over %u work-groups gave %llu, expected %llu", groups,
                 (unsigned long long)*got, (unsigned long long)want);
        rc = 1;
    }
    clReleaseEvent(ev);
    if (wst == QK_OK) free(got); /* else the read may still land: better a leak than a write into freed memory */
    return rc;
}

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int check_divide(st_run *r)
{
    cl_uint n = ST_DIV_N;
    float *a = malloc(n * sizeof *a * 6);
    if (!a) {
        snprintf(r->why, sizeof r->why, "out of host memory");
        return 1;
    }
    float *b = a + n, *q = a + 2 * n, *rr = a + 3 * n, *q8 = a + 4 * n, *r8 = a + 5 * n;
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (cl_uint i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t u = (uint32_t)(s >> 32), v = (uint32_t)s;
        /* random significands, exponents within +-2^20: quotients in the normal range */
        a[i] = bits_f((u & 0x807fffffu) | ((uint32_t)(127 + (int)((u >> 23) % 41) - 20) << 23));
        b[i] = bits_f((v & 0x007fffffu) | ((uint32_t)(127 + (int)((v >> 23) % 41) - 20) << 23));
    }
    /* halves for the rounding: q = 0.5, 1.5, 2.5, -0.5, -2.5 exactly */
    const float halves[] = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 3.5f, -3.5f, 8388607.5f};
    for (unsigned i = 0; i < sizeof halves / sizeof halves[0]; i++) {
        a[i] = halves[i] * 4.0f;
        b[i] = 4.0f;
    }
    int rc = st_buffer(r, 4, n * sizeof *a, a) || st_buffer(r, 5, n * sizeof *b, b) ||
             st_buffer(r, 6, n * 4 * sizeof *a, NULL);
    cl_mem out = r->mem[6];
    cl_buffer_region reg[4];
    cl_mem sub[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; !rc && i < 4; i++) {
        reg[i].origin = (size_t)i * n * sizeof *a;
        reg[i].size = n * sizeof *a;
        cl_int err;
        sub[i] = clCreateSubBuffer(out, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &reg[i], &err);
        rc = st_cl(r, err, "clCreateSubBuffer");
    }
    for (cl_uint i = 0; !rc && i < 2; i++) {
        rc = st_cl(r, clSetKernelArg(r->k[3], i, sizeof(cl_mem), &r->mem[4 + i]), "clSetKernelArg");
    }
    for (cl_uint i = 0; !rc && i < 4; i++) rc = st_cl(r, clSetKernelArg(r->k[3], 2 + i, sizeof(cl_mem), &sub[i]), "clSetKernelArg");
    if (!rc) rc = st_cl(r, clSetKernelArg(r->k[3], 6, sizeof n, &n), "clSetKernelArg");
    size_t local = ocl_local_size(r->be);
    if (!rc) rc = st_launch(r, 3, (n + local - 1) / local, local, NULL);
    if (!rc) rc = st_read(r, 6, q, n * 4 * sizeof *a);
    for (int i = 0; i < 4; i++) {
        if (sub[i]) clReleaseMemObject(sub[i]);
    }
    for (cl_uint i = 0; !rc && i < n; i++) {
        volatile float want = a[i] / b[i]; /* the host's IEEE division */
        float wr = rintf(want);
        const char *path = NULL;
        float got = 0;
        if (f_bits(q[i]) != f_bits(want)) path = "scalar", got = q[i];
        else if (f_bits(q8[i]) != f_bits(want)) path = "vector", got = q8[i];
        else if (f_bits(rr[i]) != f_bits(wr)) path = "scalar rint", got = rr[i];
        else if (f_bits(r8[i]) != f_bits(wr)) path = "vector rint", got = r8[i];
        if (path) {
            snprintf(r->why, sizeof r->why, "divide: %a / %a gave %a (%s), correctly rounded %a", a[i], b[i],
                     got, path, strstr(path, "rint") ? wr : want);
            rc = 1;
        }
    }
    free(a);
    return rc;
}

static int run_checks(ocl_backend *be, char *why, size_t cap)
{
    static const char *const names[4] = {"qk_selftest_loop", "qk_selftest_partial", "qk_selftest_total",
                                         "qk_selftest_div"};
    st_run r;
    memset(&r, 0, sizeof r);
    r.be = be;
    int rc = 0;
    for (int i = 0; i < 4 && !rc; i++) {
        cl_int err;
        r.k[i] = clCreateKernel(be->program, names[i], &err);
        rc = st_cl(&r, err, "clCreateKernel(self-test)");
    }
    if (!rc) rc = check_loop(&r);
    if (!rc) rc = check_reduce_finish(&r);
    if (!rc) rc = check_divide(&r);
    clFinish(be->queue);
    for (int i = 0; i < 8; i++) {
        if (r.mem[i]) clReleaseMemObject(r.mem[i]);
    }
    for (int i = 0; i < 4; i++) {
        if (r.k[i]) clReleaseKernel(r.k[i]);
    }
    snprintf(why, cap, "%s", r.why);
    return rc;
}

static qk_status refuse(ocl_backend *be, const char *why, int cached)
{
    snprintf(be->info.check, sizeof be->info.check, "refused by the self-test%s: %.150s", cached ? " (cached)" : "",
             why);
    return qk_set_error(be->base.ctx, QK_ERR_NO_DEVICE,
                        "opencl: device \"%s\" (driver %s) failed qkern's self-test, so it is not used: %s%s",
                        be->info.name, be->driver, why, cached ? " (cached verdict)" : "");
}

qk_status ocl_selftest_cached(ocl_backend *be)
{
    const char *mode = getenv("QKERN_OPENCL_SELFTEST");
    be->st_state = 0;
    if (mode && strcmp(mode, "0") == 0) {
        snprintf(be->info.check, sizeof be->info.check, "self-test skipped (QKERN_OPENCL_SELFTEST=0)");
        be->st_state = 1;
        return QK_OK;
    }
    char path[1024], key[1024], why[400] = "";
    if ((mode && strcmp(mode, "nocache") == 0) || !cache_path(path, sizeof path)) return QK_OK;
    cache_key(be, key, sizeof key);
    int cached = cache_lookup(path, key, why, sizeof why);
    if (cached == 1) {
        snprintf(be->info.check, sizeof be->info.check, "self-test passed (cached)");
        be->st_state = 1;
    } else if (cached == 0) {
        return refuse(be, why, 1);
    }
    return QK_OK;
}

qk_status ocl_selftest(ocl_backend *be)
{
    if (be->st_state) return QK_OK;
    const char *mode = getenv("QKERN_OPENCL_SELFTEST");
    int use_cache = !(mode && strcmp(mode, "nocache") == 0);
    char path[1024], key[1024], why[400] = "";
    if (use_cache && !cache_path(path, sizeof path)) use_cache = 0;
    int pass = run_checks(be, why, sizeof why) == 0;
    if (use_cache) {
        cache_key(be, key, sizeof key);
        cache_store(path, key, pass, why);
    }
    if (!pass) return refuse(be, why, 0);
    snprintf(be->info.check, sizeof be->info.check, "self-test passed");
    return QK_OK;
}
