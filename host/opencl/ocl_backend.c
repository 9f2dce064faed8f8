/* The OpenCL backend object: device choice, context and queues, the settings
 * read from the environment, and the interface table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

static void ocl_destroy(qk_backend *base)
{
    ocl_backend *be = ocl_of(base);
    /* every operation has waited for its own commands (ocl_wait); this only
     * settles what an error path left queued, without touching the message */
    cl_command_queue queues[3] = {be->upload, be->queue, be->download};
    for (int i = 0; i < 3; i++) {
        if (queues[i]) clFinish(queues[i]);
    }
    for (int i = 0; i < 2; i++) {
        ocl_release_mem(&be->stage[i][0]);
        ocl_release_mem(&be->stage[i][1]);
    }
    ocl_seg_release(be);
    ocl_program_release(be);
    if (be->upload) clReleaseCommandQueue(be->upload);
    if (be->download) clReleaseCommandQueue(be->download);
    if (be->queue) clReleaseCommandQueue(be->queue);
    if (be->context) clReleaseContext(be->context);
    free(be);
}

static qk_status ocl_device_info(qk_backend *base, qk_device_info *out)
{
    *out = ocl_of(base)->info;
    return QK_OK;
}

static qk_status ocl_native(qk_backend *base, qk_native_handles *out)
{
    ocl_backend *be = ocl_of(base);
    out->cl_context = (void *)be->context;
    out->cl_device = (void *)be->device;
    out->cl_queue = (void *)be->queue;
    return QK_OK;
}

static const qk_backend_iface ocl_iface = {
    .destroy = ocl_destroy,
    .device_info = ocl_device_info,
    .buffer_alloc = ocl_buffer_alloc,
    .buffer_wrap = ocl_buffer_wrap,
    .buffer_free = ocl_buffer_free,
    .buffer_write = ocl_buffer_write,
    .buffer_read = ocl_buffer_read,
    .buffer_copy = ocl_buffer_copy,
    .minmax = ocl_minmax,
    .select = ocl_select,
    .quantize = ocl_quantize,
    .dequantize = ocl_dequantize,
    .error = ocl_error,
    .native = ocl_native,
    .seg_minmax = ocl_seg_minmax,
    .seg_select = ocl_seg_select,
    .seg_quantize = ocl_seg_quantize,
    .seg_dequantize = ocl_seg_dequantize,
    .seg_error = ocl_seg_error,
    .widen = ocl_widen,
    .ggml_dequantize = ocl_ggml_dequantize,
    .ggml_quantize_checked = ocl_ggml_quantize,
    .ggml_host = ocl_ggml_host,
};

/* Settings from the environment; see ocl.h. */
static qk_status read_environment(ocl_backend *be, int *style)
{
    qk_context *ctx = be->base.ctx;
    uint64_t bytes;
    qk_status st = qk_device_memory_limit(ctx, &bytes);
    if (st != QK_OK) return st;
    if (bytes != UINT64_MAX) {
        be->budget = bytes;
        be->budget_explicit = 1;
    }
    const char *sty = getenv("QKERN_OPENCL_STYLE");
    *style = -1;
    if (sty && *sty) {
        if (strcmp(sty, "cpu") == 0) *style = 0;
        else if (strcmp(sty, "gpu") == 0) *style = 1;
        else return qk_set_error(ctx, QK_ERR_INVALID_ARG, "QKERN_OPENCL_STYLE=\"%s\" is not cpu or gpu", sty);
    }
    const char *zc = getenv("QKERN_OPENCL_ZERO_COPY");
    if (zc && strcmp(zc, "0") == 0) be->zero_copy = -1; /* vetoed */
    const char *pf = getenv("QKERN_OPENCL_PREFILTER");
    be->prefilter = !(pf && strcmp(pf, "0") == 0);
    const char *wg = getenv("QKERN_OPENCL_WG");
    if (wg && *wg) {
        char *end;
        unsigned long v = strtoul(wg, &end, 10);
        if (*end || v < QK_OCL_GPU_WG_MIN || v > QK_OCL_GPU_WG || (v & (v - 1))) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "QKERN_OPENCL_WG=\"%s\" is not 32, 64, 128 or 256", wg);
        }
        be->wg_forced = v;
    }
    const char *div = getenv("QKERN_OPENCL_DIVIDE");
    be->div_mode = -1;
    if (div && *div) {
        static const char *const modes[] = {"native", "double", "fma"};
        for (int i = 0; i < 3; i++) {
            if (strcmp(div, modes[i]) == 0) be->div_mode = i;
        }
        if (be->div_mode < 0) {
            return qk_set_error(ctx, QK_ERR_INVALID_ARG, "QKERN_OPENCL_DIVIDE=\"%s\" is not native, double or fma",
                                div);
        }
        be->div_forced = 1;
    }
    const char *f64 = getenv("QKERN_OPENCL_FP64");
    be->fp64_veto = f64 && strcmp(f64, "0") == 0;
    const char *re = getenv("QKERN_OPENCL_ROUNDEVEN");
    be->roundeven = !(re && strcmp(re, "0") == 0);
    return QK_OK;
}

/* OpenCL C 1.2 or later ("OpenCL C 1.2 ...", "OpenCL C 3.0 ..."). */
static int has_opencl_c_12(cl_device_id dev)
{
    char v[128] = "";
    if (clGetDeviceInfo(dev, CL_DEVICE_OPENCL_C_VERSION, sizeof v, v, NULL) != CL_SUCCESS) return 0;
    v[sizeof v - 1] = '\0';
    int major = 0, minor = 0;
    if (sscanf(v, "OpenCL C %d.%d", &major, &minor) != 2) return 0;
    return major > 1 || (major == 1 && minor >= 2);
}

static qk_status setup_device(ocl_backend *be, const ocl_device_ref *ref, int style)
{
    qk_context *ctx = be->base.ctx;
    be->platform = ref->platform;
    be->device = ref->device;
    ocl_describe_device(ref, &be->info);
    cl_device_id dev = ref->device;
    if (clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof be->driver, be->driver, NULL) != CL_SUCCESS) be->driver[0] = '\0';
    be->driver[sizeof be->driver - 1] = '\0';
    cl_bool avail = CL_FALSE, compiler = CL_FALSE;
    clGetDeviceInfo(dev, CL_DEVICE_AVAILABLE, sizeof avail, &avail, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_COMPILER_AVAILABLE, sizeof compiler, &compiler, NULL);
    if (!avail || !compiler) {
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "opencl: device \"%s\" is %s", be->info.name,
                            !avail ? "not available" : "without an OpenCL C compiler");
    }
    if (!has_opencl_c_12(dev)) {
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "opencl: device \"%s\" does not support OpenCL C 1.2",
                            be->info.name);
    }
    cl_device_type type = 0;
    cl_bool unified = CL_FALSE;
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof be->compute_units, &be->compute_units, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    cl_ulong local_mem = 0;
    clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local_mem, &local_mem, NULL);
    be->local_mem = local_mem;
    if (be->compute_units == 0) be->compute_units = 1;
    be->global_mem = be->info.global_mem;
    be->max_alloc = max_alloc ? max_alloc : ((uint64_t)128 << 20);
    be->gpu_style = style >= 0 ? style : (type & CL_DEVICE_TYPE_GPU) != 0;
    be->fp64 = !be->fp64_veto && ocl_device_has_extension(dev, "cl_khr_fp64");
    cl_device_fp_config fp = 0;
    clGetDeviceInfo(dev, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    int cr_div = (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    if (!be->div_forced) be->div_mode = cr_div ? 0 : be->fp64 ? 1 : 2;
    if ((be->div_mode == 0 && !cr_div) || (be->div_mode == 1 && !be->fp64)) {
        return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "opencl: QKERN_OPENCL_DIVIDE=%s on \"%s\", which has %s",
                            be->div_mode == 0 ? "native" : "double", be->info.name,
                            be->div_mode == 0 ? "no correctly rounded float division" : "no cl_khr_fp64");
    }
    be->zero_copy = be->zero_copy == 0 && ((type & CL_DEVICE_TYPE_CPU) || unified);
    if (!be->budget_explicit) be->budget = be->global_mem ? be->global_mem / 2 : ((uint64_t)256 << 20);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof be->max_wg, &be->max_wg, NULL);

    cl_int err;
    be->context = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clCreateContext(\"%s\")", be->info.name);
    cl_command_queue *queues[3] = {&be->queue, &be->upload, &be->download};
    for (int i = 0; i < 3; i++) {
        *queues[i] = clCreateCommandQueue(be->context, dev, 0, &err);
        if (err != CL_SUCCESS) return ocl_fail(be, err, "clCreateCommandQueue");
    }
    qk_status st = ocl_selftest_cached(be);
    if (st != QK_OK || (be->query_only && be->st_state)) return st;
    st = ocl_program_build(be);
    if (st != QK_OK) return st;
    return ocl_selftest(be);
}

/* A backend on one device: settings, context, program, self-test. */
static qk_status open_device(qk_context *ctx, const ocl_device_ref *ref, int query_only, qk_backend **out)
{
    *out = NULL;
    ocl_backend *be = calloc(1, sizeof *be);
    if (!be) return qk_set_error(ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    be->base.iface = &ocl_iface;
    be->base.impl = be;
    be->base.ctx = ctx;
    be->query_only = query_only;
    int style = -1;
    qk_status st = read_environment(be, &style);
    if (st != QK_OK) {
        free(be);
        return st;
    }
    st = setup_device(be, ref, style);
    if (st != QK_OK) {
        ocl_destroy(&be->base);
        return st;
    }
    *out = &be->base;
    return QK_OK;
}

/* Device N when QKERN_DEVICE names one; otherwise the first device, in
 * ocl_list_devices' order, that can be used and passes the self-test (a
 * refused device is passed over, so AUTO still ends on a device that gives
 * exact answers, or on the CPU backend). */
qk_status qk_opencl_backend_create(qk_context *ctx, int device, qk_backend **out)
{
    *out = NULL;
    char reason[256];
    ocl_device_ref *devs = NULL;
    int ndev = ocl_list_devices(&devs, reason, sizeof reason);
    if (ndev == 0) return qk_set_error(ctx, QK_ERR_NO_DEVICE, "opencl: %s", reason);
    if (device >= ndev) {
        free(devs);
        return qk_set_error(ctx, QK_ERR_NO_DEVICE, "opencl: device %d does not exist (%d device%s: 0..%d)", device,
                            ndev, ndev == 1 ? "" : "s", ndev - 1);
    }
    const char *named = getenv("QKERN_DEVICE");
    int any = device == 0 && !(named && *named);
    qk_status st = open_device(ctx, &devs[device], 0, out);
    if (st == QK_ERR_NO_DEVICE && any && ndev > 1) {
        char first[QK_MESSAGE_LEN];
        snprintf(first, sizeof first, "%s", qk_context_message(ctx));
        for (int d = 1; d < ndev && st != QK_OK; d++) {
            qk_status s2 = open_device(ctx, &devs[d], 0, out);
            if (s2 == QK_OK || s2 != QK_ERR_NO_DEVICE) st = s2;
        }
        if (st == QK_ERR_NO_DEVICE) qk_set_error(ctx, st, "%s (and no other OpenCL device is usable)", first);
    }
    free(devs);
    return st;
}

/* The devices, each with its self-test verdict: a backend is opened on each
 * (the verdict is cached, so after the first run this builds the program only;
 * on a device that cannot be opened the reason is the verdict). */
void qk_opencl_backend_query(qk_backend_info *out)
{
    out->compiled = 1;
    char reason[256];
    ocl_device_ref *devs = NULL;
    int ndev = ocl_list_devices(&devs, reason, sizeof reason);
    if (ndev == 0) {
        snprintf(out->reason, sizeof out->reason, "%s", reason);
        return;
    }
    out->available = 1;
    out->n_devices = ndev < QK_MAX_DEVICES ? ndev : QK_MAX_DEVICES;
    for (int i = 0; i < out->n_devices; i++) {
        ocl_describe_device(&devs[i], &out->devices[i]);
        qk_context *tmp = calloc(1, sizeof *tmp);
        if (!tmp) continue;
        qk_backend *be = NULL;
        if (open_device(tmp, &devs[i], 1, &be) == QK_OK) {
            snprintf(out->devices[i].check, sizeof out->devices[i].check, "%s", ocl_of(be)->info.check);
            be->iface->destroy(be);
        } else {
            const char *m = qk_context_message(tmp), *refused = strstr(m, "so it is not used: ");
            if (strncmp(m, "opencl: ", 8) == 0) m += 8;
            if (refused) {
                snprintf(out->devices[i].check, sizeof out->devices[i].check, "refused by the self-test: %s",
                         refused + strlen("so it is not used: "));
            } else {
                snprintf(out->devices[i].check, sizeof out->devices[i].check, "not usable: %s", m);
            }
        }
        free(tmp);
    }
    free(devs);
}
