/* Device choice: every device of every platform, GPUs first (they are why one
 * asks for OpenCL), then CPU devices such as PoCL and accelerators. The order is
 * stable (platforms sorted by name, then each platform's own order), so
 * QKERN_DEVICE=N names the same device from run to run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

/* All devices of one platform of the given type class (gpu or not gpu). */
static int append_devices(cl_platform_id platform, int want_gpu, ocl_device_ref **list, int *count, int *cap)
{
    cl_uint n = 0;
    if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, NULL, &n) != CL_SUCCESS || n == 0) return 0;
    cl_device_id *ids = malloc(n * sizeof *ids);
    if (!ids) return -1;
    if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, n, ids, NULL) != CL_SUCCESS) {
        free(ids);
        return 0;
    }
    for (cl_uint i = 0; i < n; i++) {
        cl_device_type type = 0;
        if (clGetDeviceInfo(ids[i], CL_DEVICE_TYPE, sizeof type, &type, NULL) != CL_SUCCESS) continue;
        int is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
        if (is_gpu != want_gpu) continue;
        if (*count == *cap) {
            int ncap = *cap ? 2 * *cap : 8;
            ocl_device_ref *nl = realloc(*list, (size_t)ncap * sizeof *nl);
            if (!nl) {
                free(ids);
                return -1;
            }
            *list = nl;
            *cap = ncap;
        }
        (*list)[(*count)++] = (ocl_device_ref){platform, ids[i]};
    }
    free(ids);
    return 0;
}

/* Platforms by name (insertion sort: stable, a handful of entries). The ICD
 * loader lists them in the order it finds /etc/OpenCL/vendors/ *.icd files,
 * which is the directory's order, not a stable one. */
static void sort_platforms(cl_platform_id *plats, cl_uint np)
{
    char(*names)[128] = calloc(np, sizeof *names);
    if (!names) return;
    for (cl_uint i = 0; i < np; i++) {
        if (clGetPlatformInfo(plats[i], CL_PLATFORM_NAME, sizeof names[i], names[i], NULL) != CL_SUCCESS) {
            names[i][0] = '\0';
        }
        names[i][sizeof names[i] - 1] = '\0';
    }
    for (cl_uint i = 1; i < np; i++) {
        for (cl_uint j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[128];
            memcpy(t, names[j], sizeof t);
            memcpy(names[j], names[j - 1], sizeof t);
            memcpy(names[j - 1], t, sizeof t);
            cl_platform_id p = plats[j];
            plats[j] = plats[j - 1];
            plats[j - 1] = p;
        }
    }
    free(names);
}

int ocl_list_devices(ocl_device_ref **out, char *reason, size_t reason_len)
{
    *out = NULL;
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &np);
    if (err != CL_SUCCESS || np == 0) {
        if (err != CL_SUCCESS) {
            snprintf(reason, reason_len, "no OpenCL platform (clGetPlatformIDs returned %d, %s)", (int)err,
                     ocl_error_name(err));
        } else {
            snprintf(reason, reason_len, "no OpenCL platform (no installable client driver is registered)");
        }
        return 0;
    }
    cl_platform_id *plats = malloc(np * sizeof *plats);
    if (!plats) {
        snprintf(reason, reason_len, "out of host memory listing OpenCL platforms");
        return 0;
    }
    err = clGetPlatformIDs(np, plats, NULL);
    if (err != CL_SUCCESS) {
        snprintf(reason, reason_len, "no OpenCL platform (clGetPlatformIDs returned %d, %s)", (int)err,
                 ocl_error_name(err));
        free(plats);
        return 0;
    }
    sort_platforms(plats, np);
    ocl_device_ref *list = NULL;
    int count = 0, cap = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (cl_uint p = 0; p < np; p++) {
            if (append_devices(plats[p], pass == 0, &list, &count, &cap) != 0) {
                snprintf(reason, reason_len, "out of host memory listing OpenCL devices");
                free(plats);
                free(list);
                return 0;
            }
        }
    }
    free(plats);
    if (count == 0) {
        snprintf(reason, reason_len, "%u OpenCL platform%s but no device", np, np == 1 ? "" : "s");
        free(list);
        return 0;
    }
    *out = list;
    return count;
}

static void info_string(cl_device_id dev, cl_device_info what, char *dst, size_t cap)
{
    size_t got = 0;
    dst[0] = '\0';
    if (clGetDeviceInfo(dev, what, cap, dst, &got) != CL_SUCCESS) {
        /* the value may be longer than cap: fetch it whole, keep the head */
        size_t need = 0;
        if (clGetDeviceInfo(dev, what, 0, NULL, &need) != CL_SUCCESS || need == 0) return;
        char *tmp = malloc(need);
        if (!tmp) return;
        if (clGetDeviceInfo(dev, what, need, tmp, NULL) == CL_SUCCESS) snprintf(dst, cap, "%s", tmp);
        free(tmp);
        return;
    }
    dst[cap - 1] = '\0';
}

void ocl_describe_device(const ocl_device_ref *ref, qk_device_info *info)
{
    memset(info, 0, sizeof *info);
    info_string(ref->device, CL_DEVICE_NAME, info->name, sizeof info->name);
    info_string(ref->device, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    cl_device_type type = 0;
    clGetDeviceInfo(ref->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    snprintf(info->type, sizeof info->type, "%s",
             (type & CL_DEVICE_TYPE_GPU) ? "gpu" : (type & CL_DEVICE_TYPE_CPU) ? "cpu" : "accelerator");
    char dev_version[48] = "", driver[48] = "";
    info_string(ref->device, CL_DEVICE_VERSION, dev_version, sizeof dev_version);
    info_string(ref->device, CL_DRIVER_VERSION, driver, sizeof driver);
    snprintf(info->version, sizeof info->version, "%.36s, driver %.16s", dev_version, driver);
    cl_ulong mem = 0;
    if (clGetDeviceInfo(ref->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL) == CL_SUCCESS) {
        info->global_mem = mem;
    }
}

int ocl_device_has_extension(cl_device_id dev, const char *ext)
{
    size_t need = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &need) != CL_SUCCESS || need == 0) return 0;
    char *s = malloc(need + 1);
    if (!s) return 0;
    int found = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, need, s, NULL) == CL_SUCCESS) {
        s[need] = '\0';
        size_t len = strlen(ext);
        for (const char *p = strstr(s, ext); p; p = strstr(p + 1, ext)) {
            if ((p == s || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0')) {
                found = 1;
                break;
            }
        }
    }
    free(s);
    return found;
}
