/* Names of statuses, backends and dtypes. */
#include <string.h>

#include "internal.h"

const char *qk_status_string(qk_status status)
{
    switch (status) {
    case QK_OK: return "QK_OK: success";
    case QK_ERR_INVALID_ARG: return "QK_ERR_INVALID_ARG: invalid argument";
    case QK_ERR_NO_MEMORY: return "QK_ERR_NO_MEMORY: out of memory";
    case QK_ERR_UNSUPPORTED: return "QK_ERR_UNSUPPORTED: not supported";
    case QK_ERR_NO_DEVICE: return "QK_ERR_NO_DEVICE: no usable device";
    case QK_ERR_NONFINITE: return "QK_ERR_NONFINITE: input has NaN or Inf values";
    case QK_ERR_RANGE: return "QK_ERR_RANGE: value out of representable range";
    case QK_ERR_BACKEND: return "QK_ERR_BACKEND: a device API call failed";
    case QK_ERR_IO: return "QK_ERR_IO: input/output error";
    case QK_ERR_FORMAT: return "QK_ERR_FORMAT: malformed file";
    case QK_ERR_CANCELLED: return "QK_ERR_CANCELLED: cancelled";
    case QK_STATUS_COUNT: break;
    }
    return "QK_ERR_UNKNOWN: unknown status code";
}

static const char *const backend_names[QK_BACKEND_COUNT] = {"auto", "cpu", "opencl", "cuda"};

const char *qk_backend_name(qk_backend_kind kind)
{
    return (unsigned)kind < QK_BACKEND_COUNT ? backend_names[kind] : "unknown";
}

qk_status qk_backend_parse(const char *name, qk_backend_kind *out)
{
    if (!name || !out) return QK_ERR_INVALID_ARG;
    for (int k = 0; k < QK_BACKEND_COUNT; k++) {
        if (strcmp(name, backend_names[k]) == 0) {
            *out = (qk_backend_kind)k;
            return QK_OK;
        }
    }
    return QK_ERR_INVALID_ARG;
}

static const struct {
    const char *name;
    size_t size;
} dtypes[QK_DTYPE_COUNT] = {
    [QK_F32] = {"float32", 4}, [QK_F64] = {"float64", 8}, [QK_F16] = {"float16", 2},
    [QK_BF16] = {"bfloat16", 2}, [QK_U8] = {"uint8", 1},   [QK_I8] = {"int8", 1},
    [QK_U16] = {"uint16", 2},   [QK_I16] = {"int16", 2},  [QK_I32] = {"int32", 4},
};

const char *qk_dtype_name(qk_dtype dtype)
{
    return (unsigned)dtype < QK_DTYPE_COUNT ? dtypes[dtype].name : "unknown";
}

size_t qk_dtype_size(qk_dtype dtype)
{
    return (unsigned)dtype < QK_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

int qk_dtype_is_float(qk_dtype dtype)
{
    return dtype == QK_F32 || dtype == QK_F64 || dtype == QK_F16 || dtype == QK_BF16;
}

int qk_dtype_is_code(qk_dtype dtype)
{
    return dtype == QK_U8 || dtype == QK_I8 || dtype == QK_U16 || dtype == QK_I16 || dtype == QK_I32;
}
