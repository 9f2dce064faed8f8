/* Internal declarations shared by the host-side files of the library. */
#ifndef QK_INTERNAL_H
#define QK_INTERNAL_H

#include <stdarg.h>

#include "backend.h"
#include "qkern.h"

#define QK_MESSAGE_LEN 1024

struct qk_context {
    qk_backend_kind kind;
    qk_backend *backend;
    char message[QK_MESSAGE_LEN];
    int64_t nonfinite_count;   /* from the last QK_ERR_NONFINITE */
    int64_t nonfinite_first;
};

struct qk_buffer {
    qk_context *ctx;
    void *handle;  /* the backend's */
    size_t bytes;
    int owned;
};

/* Record a one-line message for status in ctx (ctx may be NULL) and return status. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
qk_status qk_set_error(qk_context *ctx, qk_status status, const char *fmt, ...);
void qk_clear_error(qk_context *ctx);

/* Record a non-finite failure (count, first index) and return QK_ERR_NONFINITE. */
qk_status qk_fail_nonfinite(qk_context *ctx, const char *what, int64_t count, int64_t first);

/* Argument checks shared by the operations. */
qk_status qk_check_tensor(qk_context *ctx, const qk_tensor *t, const char *name);
int qk_dtype_is_float(qk_dtype dtype);
int qk_dtype_is_code(qk_dtype dtype);
qk_status qk_check_qparams(qk_context *ctx, const qk_qparams *p);

/* Percentiles of a tensor whose finite-element count n is already known (the
 * caller ran minmax): one selection for all np values. interp is the dtype
 * numpy would subtract neighbours in (the input's original dtype). */
qk_status qk_percentiles_known_n(qk_context *ctx, const qk_tensor *x, qk_dtype interp, unsigned flags, int64_t n,
                                 const double *p, size_t np, double *out);

/* A float input as a backend takes it: F32/F64 as they are; F16/BF16 converted
 * exactly to a float32 host copy (temp). interp keeps the original dtype. */
typedef struct qk_staged {
    qk_tensor t;
    qk_dtype interp;
    float *temp;
} qk_staged;
qk_status qk_stage_float(qk_context *ctx, const qk_tensor *x, const char *name, qk_staged *out);
void qk_staged_release(qk_staged *s);
float qk_half_to_float(uint16_t h);
uint16_t qk_float_to_half(float f);

/* QKERN_DEVICE_MEMORY_LIMIT in bytes (UINT64_MAX when unset); a malformed
 * value is QK_ERR_INVALID_ARG with the message set. */
qk_status qk_device_memory_limit(qk_context *ctx, uint64_t *bytes);

/* Calibration of an already staged float tensor (F32/F64). */
qk_status qk_calibrate_staged(qk_context *ctx, const qk_tensor *x, qk_dtype interp, const qk_calib_options *opts,
                              qk_calib_result *out);

#endif
