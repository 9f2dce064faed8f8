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
    size_t misalign; /* wrapped memory: its address modulo 16 (tensors on it must be aligned) */
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
 * exactly to float32, on the device (a buffer, buf) when the backend can and
 * it fits, else in a host copy (temp). interp keeps the original dtype. */
typedef struct qk_staged {
    qk_tensor t;
    qk_dtype interp;
    float *temp;
    qk_buffer *buf;
} qk_staged;
qk_status qk_stage_float(qk_context *ctx, const qk_tensor *x, const char *name, qk_staged *out);
/* The same, and then on the device for the segmented members when the backend
 * has them and the copy fits with extra more bytes; else as qk_stage_float. */
qk_status qk_stage_float_device(qk_context *ctx, const qk_tensor *x, const char *name, uint64_t extra,
                                qk_staged *out);
/* Device memory that staged copies may use at once (0 on the CPU backend;
 * else within QKERN_DEVICE_MEMORY_LIMIT and half the device memory), and
 * whether bytes fit it. */
uint64_t qk_device_budget(qk_context *ctx);
int qk_device_room(qk_context *ctx, uint64_t bytes);
/* x itself when on the device, else a new device buffer of its size (*buf,
 * the caller's to destroy) holding its data when load is set. */
qk_status qk_device_copy(qk_context *ctx, const qk_tensor *x, int load, qk_tensor *dev, qk_buffer **buf);
void qk_staged_release(qk_staged *s);
float qk_half_to_float(uint16_t h);
uint16_t qk_float_to_half(float f);

/* QKERN_DEVICE_MEMORY_LIMIT in bytes (UINT64_MAX when unset); a malformed
 * value is QK_ERR_INVALID_ARG with the message set. */
qk_status qk_device_memory_limit(qk_context *ctx, uint64_t *bytes);

/* ---- segmented operations (host/segments.c) ----------------------------------
 * x is cut into x->n / seg segments of seg contiguous elements (seg divides
 * x->n); arrays are per segment, as in host/backend.h's seg_* members. Each runs
 * the backend's segmented member when it has one and every tensor is on the
 * device, else the per-tensor member segment by segment: the results are the
 * same either way. */
/* Elements [first, first + n) of t as a tensor of their own (a view). */
qk_tensor qk_tensor_range(const qk_tensor *t, int64_t first, int64_t n);
qk_status qk_seg_minmax(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_minmax_result *out);
qk_status qk_seg_select(qk_context *ctx, const qk_tensor *x, int64_t seg, unsigned flags, const int64_t *ranks,
                        size_t nranks, double *values);
qk_status qk_seg_quantize(qk_context *ctx, const qk_tensor *x, int64_t seg, const qk_qparams *params,
                          qk_tensor *codes);
qk_status qk_seg_dequantize(qk_context *ctx, const qk_tensor *codes, int64_t seg, const qk_qparams *params,
                            qk_tensor *out);
qk_status qk_seg_error(qk_context *ctx, const qk_tensor *x, int64_t seg, const qk_qparams *params, size_t k,
                       const double *fences, qk_error_sums *sums, qk_error_counts *counts);
/* out[b * np + i] = numpy's percentile p[i] of segment b, which has nkeys[b]
 * keys (its finite count, with QK_IGNORE_NONFINITE). */
qk_status qk_seg_percentiles(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_dtype interp, unsigned flags,
                             const int64_t *nkeys, const double *p, size_t np, double *out);

/* Whether every code in [qmin, qmax] fits the integer dtype. */
int qk_code_fits(qk_dtype dt, int32_t qmin, int32_t qmax);

/* A segment's calibration outcome (host/calibrate.c). */
typedef struct qk_seg_calib {
    qk_qparams params; /* the chosen candidate's */
    size_t best;
    int64_t n, n_inliers;
    double fence_lo, fence_hi;
} qk_seg_calib;

/* The checked options' candidate percentiles (*p malloc'd, *k of them). */
qk_status qk_calib_plan(qk_context *ctx, const qk_calib_options *opts, double **p, size_t *k);
/* Calibrate every segment of a staged float tensor (F32/F64) with the
 * candidates p[0..k) of qk_calib_plan: cand[b * k + i] is candidate i of
 * segment b, res[b] its outcome. A failure tied to one segment sets *failed to
 * it (else -1). Segment b's results equal qk_calibrate's on it alone. */
qk_status qk_calibrate_segments(qk_context *ctx, const qk_tensor *x, int64_t seg, qk_dtype interp,
                                const qk_calib_options *opts, const double *p, size_t k, qk_candidate *cand,
                                qk_seg_calib *res, int64_t *failed);

/* Calibration of an already staged float tensor (F32/F64). */
qk_status qk_calibrate_staged(qk_context *ctx, const qk_tensor *x, qk_dtype interp, const qk_calib_options *opts,
                              qk_calib_result *out);

#endif
