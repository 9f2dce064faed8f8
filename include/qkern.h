/* qkern — tensor quantization on the GPU (CUDA, OpenCL) with an exact CPU reference.
 *
 * One public header. Every entry point returns a qk_status; qk_status_string()
 * names it and qk_context_message() holds a one-line detail of the last failure
 * in that context. All sizes and indices are 64-bit. The library never prints,
 * never exits and never aborts.
 *
 * The numeric contract (formulas, rounding, percentile definition, degenerate
 * ranges) is docs/numerics.md's; every backend returns the same codes, min, max and
 * percentiles bit for bit, and the same MSE within 1e-6 relative.
 */
#ifndef QKERN_H
#define QKERN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(QKERN_SHARED_BUILD)
#define QK_API __declspec(dllexport)
#elif defined(__GNUC__)
#define QK_API __attribute__((visibility("default")))
#else
#define QK_API
#endif

#define QKERN_VERSION_MAJOR 0
#define QKERN_VERSION_MINOR 1
#define QKERN_VERSION_PATCH 0

/* ---- status ----------------------------------------------------------- */

typedef enum qk_status {
    QK_OK = 0,
    QK_ERR_INVALID_ARG,  /* a bad argument: the message names it */
    QK_ERR_NO_MEMORY,    /* host or device allocation failed */
    QK_ERR_UNSUPPORTED,  /* backend not built in, dtype or option not supported there */
    QK_ERR_NO_DEVICE,    /* backend built in but no usable device (no driver, no platform) */
    QK_ERR_NONFINITE,    /* input holds NaN/Inf: qk_context_nonfinite() gives count and first index */
    QK_ERR_RANGE,        /* parameters not representable (zero point outside int32, scale overflow) */
    QK_ERR_BACKEND,      /* a CUDA/OpenCL call failed: the message names the call and its code */
    QK_ERR_IO,           /* file I/O failed (used by the I/O helpers and the CLI) */
    QK_ERR_FORMAT,       /* a malformed or hostile file (bad header, truncated data, overflow) */
    QK_ERR_CANCELLED,    /* a progress callback asked to stop: nothing was written */
    QK_STATUS_COUNT
} qk_status;

/* A static English name for a status ("QK_ERR_RANGE: value out of range ..."). */
QK_API const char *qk_status_string(qk_status status);

/* ---- types ------------------------------------------------------------- */

typedef enum qk_backend_kind {
    QK_BACKEND_AUTO = 0, /* CUDA if a device answers, else OpenCL (GPU, then CPU), else CPU */
    QK_BACKEND_CPU,      /* the single-threaded reference: the oracle for the others */
    QK_BACKEND_OPENCL,
    QK_BACKEND_CUDA,
    QK_BACKEND_COUNT
} qk_backend_kind;

typedef enum qk_dtype {
    QK_F32 = 0,
    QK_F64,
    QK_F16,   /* IEEE half: converted exactly to float32; percentile differences rounded to half, as numpy */
    QK_BF16,  /* bfloat16: converted exactly to float32; percentile differences in float32 */
    QK_U8,
    QK_I8,
    QK_U16,
    QK_I16,
    QK_I32,
    QK_DTYPE_COUNT
} qk_dtype;

typedef enum qk_scheme {
    QK_ASYMMETRIC = 0, /* unsigned codes 0 .. 2^b-1, range [lo, hi], zero point */
    QK_SYMMETRIC       /* signed codes, clip c, zero point 0 */
} qk_scheme;

typedef enum qk_calib_method {
    QK_CALIB_MINMAX = 0,
    QK_CALIB_PERCENTILE,
    QK_CALIB_GRIDSEARCH
} qk_calib_method;

typedef enum qk_objective {
    QK_OBJECTIVE_MSE = 0,     /* mean squared error over all elements */
    QK_OBJECTIVE_MSE_INLIERS  /* over elements inside Tukey's fences [Q1-k*IQR, Q3+k*IQR] */
} qk_objective;

/* Flags for qk_minmax() and qk_percentiles(). */
#define QK_IGNORE_NONFINITE 1u /* skip NaN/Inf instead of failing with QK_ERR_NONFINITE */
#define QK_ABS              2u /* percentiles of |x| instead of x (qk_percentiles only) */

typedef struct qk_context qk_context; /* opaque: one backend, one device */
typedef struct qk_buffer qk_buffer;   /* opaque: memory owned by (or wrapped into) a context's device */

/* A tensor argument: n elements of dtype, either in host memory (host != NULL)
 * or in a context's buffer (buffer != NULL, starting offset bytes in). Exactly
 * one of host/buffer is set. The shape does not matter to per-tensor operations. */
typedef struct qk_tensor {
    qk_dtype dtype;
    int64_t n;
    void *host;
    qk_buffer *buffer;
    int64_t offset;
} qk_tensor;

/* Quantization parameters. Build them with qk_qparams_from_range(),
 * qk_qparams_from_scale() or qk_calibrate(); they are plain data. */
typedef struct qk_qparams {
    qk_scheme scheme;
    int bits;           /* 2..16 */
    int narrow_range;   /* symmetric only: qmin = -(2^(b-1)-1) */
    float scale;        /* > 0, finite */
    int32_t zero_point; /* 0 for symmetric */
    int32_t qmin, qmax;
    double clip_lo, clip_hi; /* the calibrated range the parameters came from */
} qk_qparams;

typedef struct qk_minmax_result {
    double min, max;          /* exact values of the input (-0 orders before +0) */
    double absmax;            /* max(|min|, |max|) */
    int64_t n_finite;         /* elements that were counted */
    int64_t nonfinite_count;  /* NaN and +-Inf elements */
    int64_t first_nonfinite;  /* index of the first, or -1 */
} qk_minmax_result;

/* Per-call calibration settings. Start from qk_calib_options_default(). */
typedef struct qk_calib_options {
    qk_scheme scheme;          /* default asymmetric */
    int bits;                  /* default 8 */
    int narrow_range;          /* default 0 */
    int include_zero;          /* default 0: asymmetric range widened to contain 0 */
    int ignore_nonfinite;      /* default 0: NaN/Inf are QK_ERR_NONFINITE */
    qk_calib_method method;    /* default minmax */
    double percentile;         /* QK_CALIB_PERCENTILE: p in [50,100] (asym), (0,100] (sym) */
    const double *grid;        /* QK_CALIB_GRIDSEARCH: explicit candidate list, or NULL ... */
    size_t grid_len;
    double grid_start, grid_stop, grid_step; /* ... else p_i = start + i*step up to stop; default 99:100:0.01 */
    qk_objective objective;    /* default mse */
    double fence_k;            /* default 3 (Tukey's far-out fences) */
} qk_calib_options;

/* One grid-search candidate (also filled for minmax/percentile, as a 1-row table). */
typedef struct qk_candidate {
    double percentile;  /* 100 for minmax */
    double clip_lo, clip_hi;
    float scale;
    int32_t zero_point;
    int64_t clipped;    /* elements outside [clip_lo, clip_hi] */
    double mse;         /* over all counted elements */
    double mse_inliers; /* over elements inside the fences */
} qk_candidate;

typedef struct qk_calib_result {
    qk_qparams params;        /* the chosen parameters */
    size_t best;              /* index of the chosen row in candidates */
    qk_candidate *candidates; /* owned: release with qk_calib_result_release() */
    size_t n_candidates;
    double fence_lo, fence_hi; /* Tukey's fences used by mse_inliers */
    int64_t n;                 /* elements counted (finite ones) */
    int64_t n_inliers;
} qk_calib_result;

typedef struct qk_error_result {
    double mse;         /* mean of (x - dequant(quant(x)))^2, accumulated in double */
    double sse;         /* the sum */
    int64_t n;          /* elements counted */
    int64_t clipped;    /* elements outside [clip_lo, clip_hi] of the params */
} qk_error_result;

#define QK_MAX_DEVICES 16

typedef struct qk_device_info {
    char name[128];
    char vendor[64];
    char type[16];         /* "cpu", "gpu", "accelerator" */
    char version[64];      /* driver / platform version */
    uint64_t global_mem;   /* bytes, 0 if unknown */
    char check[192];       /* OpenCL: the known-answer self-test's verdict ("self-test passed",
                              "refused by the self-test: ..."); empty where none is run */
} qk_device_info;

typedef struct qk_backend_info {
    qk_backend_kind kind;
    const char *name;      /* "cpu", "opencl", "cuda" */
    int compiled;          /* built into this library */
    int available;         /* compiled and at least one device answers */
    char reason[256];      /* why not available, empty if available */
    int n_devices;
    qk_device_info devices[QK_MAX_DEVICES];
    /* CUDA only (0 / "" elsewhere), as CUDA numbers versions (13000 = 13.0): */
    int runtime_version;     /* the CUDA runtime built in */
    int driver_version;      /* the CUDA version the installed driver supports; 0: no driver */
    char driver_needed[32];  /* the oldest NVIDIA driver this build runs on ("580.65.06") */
} qk_backend_info;

/* ---- context ------------------------------------------------------------ */

/* Create a context on one backend. AUTO honours QKERN_BACKEND=cpu|opencl|cuda;
 * QKERN_DEVICE=N picks the device index. On failure *out is NULL and, when
 * message/message_len are given, the reason is copied there. */
QK_API qk_status qk_context_create(qk_backend_kind kind, qk_context **out, char *message, size_t message_len);
QK_API qk_status qk_context_destroy(qk_context *ctx);
/* The detail of the last failure in this context ("" if none). */
QK_API const char *qk_context_message(const qk_context *ctx);
QK_API qk_backend_kind qk_context_backend(const qk_context *ctx);
/* Device description of the context's device. */
QK_API qk_status qk_context_device(const qk_context *ctx, qk_device_info *out);
/* The backend's native handles, for an engine that shares memory with qkern:
 * wrap a cl_mem made in cl_context, or a CUDA pointer of cuda_device. Fields a
 * backend does not have are NULL / -1. qkern's calls are complete on return, so
 * the queue/stream only matters for ordering the caller's own work. */
typedef struct qk_native_handles {
    void *cl_context;  /* OpenCL: cl_context */
    void *cl_device;   /* OpenCL: cl_device_id */
    void *cl_queue;    /* OpenCL: cl_command_queue the kernels run on */
    int cuda_device;   /* CUDA: device ordinal */
    void *cuda_stream; /* CUDA: cudaStream_t the kernels run on */
} qk_native_handles;
QK_API qk_status qk_context_native(const qk_context *ctx, qk_native_handles *out);

/* After QK_ERR_NONFINITE: how many non-finite elements and the first index. */
QK_API qk_status qk_context_nonfinite(const qk_context *ctx, int64_t *count, int64_t *first_index);

QK_API const char *qk_backend_name(qk_backend_kind kind);
/* Parse "auto", "cpu", "opencl", "cuda". */
QK_API qk_status qk_backend_parse(const char *name, qk_backend_kind *out);
/* Whether a backend is compiled in and which devices it sees; never fails for a valid kind. */
QK_API qk_status qk_backend_query(qk_backend_kind kind, qk_backend_info *out);

QK_API const char *qk_dtype_name(qk_dtype dtype);
QK_API size_t qk_dtype_size(qk_dtype dtype);

/* ---- buffers (device-resident data) ------------------------------------- */

QK_API qk_status qk_buffer_create(qk_context *ctx, size_t bytes, qk_buffer **out);
/* Wrap caller memory of the context's backend: a CUDA device pointer, a cl_mem,
 * or a host pointer for the CPU backend. The caller keeps ownership. */
QK_API qk_status qk_buffer_wrap(qk_context *ctx, void *native, size_t bytes, qk_buffer **out);
QK_API qk_status qk_buffer_destroy(qk_context *ctx, qk_buffer *buf);
QK_API qk_status qk_buffer_write(qk_context *ctx, qk_buffer *buf, size_t offset, const void *src, size_t bytes);
QK_API qk_status qk_buffer_read(qk_context *ctx, const qk_buffer *buf, size_t offset, void *dst, size_t bytes);
/* Device-to-device copy within the context (src and dst may be the same buffer
 * if the ranges do not overlap). */
QK_API qk_status qk_buffer_copy(qk_context *ctx, qk_buffer *dst, size_t dst_offset, const qk_buffer *src,
                                size_t src_offset, size_t bytes);
QK_API size_t qk_buffer_size(const qk_buffer *buf);

/* Tensor helpers. */
QK_API qk_tensor qk_tensor_host(qk_dtype dtype, const void *data, int64_t n);
QK_API qk_tensor qk_tensor_buffer(qk_dtype dtype, qk_buffer *buf, int64_t offset, int64_t n);

/* ---- parameters --------------------------------------------------------- */

QK_API qk_status qk_calib_options_default(qk_calib_options *opts);

/* qmin/qmax of a scheme: asymmetric 0..2^b-1; symmetric -2^(b-1)..2^(b-1)-1
 * (narrow: -(2^(b-1)-1)). */
QK_API qk_status qk_code_range(qk_scheme scheme, int bits, int narrow_range, int32_t *qmin, int32_t *qmax);

/* Parameters from a range by docs/numerics.md's formulas: asymmetric uses [lo, hi]
 * (widened to 0 when include_zero, or when lo == hi), symmetric uses
 * c = max(|lo|, |hi|). ctx may be NULL (no message then). */
QK_API qk_status qk_qparams_from_range(qk_context *ctx, qk_scheme scheme, int bits, int narrow_range,
                                       int include_zero, double lo, double hi, qk_qparams *out);
/* Parameters given by the caller (stored scales). scale must be finite and > 0,
 * zero_point must be 0 for symmetric. */
QK_API qk_status qk_qparams_from_scale(qk_context *ctx, qk_scheme scheme, int bits, int narrow_range,
                                       float scale, int32_t zero_point, qk_qparams *out);
/* The code dtype that holds a scheme/bit width: U8/I8 up to 8 bits, U16/I16 up to 16. */
QK_API qk_status qk_code_dtype(const qk_qparams *params, qk_dtype *out);

/* ---- operations ---------------------------------------------------------- */
/* Every operation has finished, on the device too, when it returns: timing a
 * call times the work. */

/* Exact min and max of a float tensor; flags: QK_IGNORE_NONFINITE. Fills *out
 * even when it returns QK_ERR_NONFINITE. */
QK_API qk_status qk_minmax(qk_context *ctx, const qk_tensor *x, unsigned flags, qk_minmax_result *out);

/* numpy.percentile(x, p) (method "linear", numpy 1.24) for each of np values of
 * p in [0, 100], bit for bit, by selection (no sort). flags: QK_IGNORE_NONFINITE
 * (like nanpercentile), QK_ABS (percentiles of |x|). */
QK_API qk_status qk_percentiles(qk_context *ctx, const qk_tensor *x, const double *p, size_t np,
                                unsigned flags, double *out);

/* Calibrate parameters by opts->method and report the table. Release the result. */
QK_API qk_status qk_calibrate(qk_context *ctx, const qk_tensor *x, const qk_calib_options *opts,
                              qk_calib_result *out);
QK_API qk_status qk_calib_result_release(qk_calib_result *res);

/* The grid of a start:stop:step range: p_i = start + i*step, i = 0..floor((stop-start)/step + 1e-9),
 * never past stop. Call with p == NULL to get the count. */
QK_API qk_status qk_grid_expand(double start, double stop, double step, double *p, size_t cap, size_t *count);

/* codes = clamp(rint(x / scale) + zero_point, qmin, qmax) into a U8/I8/U16/I16/I32
 * tensor of the same n that can hold [qmin, qmax]. NaN gives the code of 0
 * (the zero point, clamped); +Inf qmax; -Inf qmin. */
QK_API qk_status qk_quantize(qk_context *ctx, const qk_tensor *x, const qk_qparams *params, qk_tensor *codes);

/* out (F32) = (codes - zero_point) * scale, in float. codes: U8/I8/U16/I16/I32. */
QK_API qk_status qk_dequantize(qk_context *ctx, const qk_tensor *codes, const qk_qparams *params, qk_tensor *out);

/* MSE of the quantize -> dequantize round trip without materialising codes.
 * flags: QK_IGNORE_NONFINITE (otherwise non-finite input is QK_ERR_NONFINITE). */
QK_API qk_status qk_quant_error(qk_context *ctx, const qk_tensor *x, const qk_qparams *params, unsigned flags,
                                qk_error_result *out);

/* ---- granularity: per channel, per group -------------------------------- */

#define QK_MAX_DIMS 32

typedef enum qk_granularity {
    QK_PER_TENSOR = 0,
    QK_PER_CHANNEL, /* one parameter set per index along an axis (rows of an [out, in] weight for axis 0) */
    QK_PER_GROUP    /* one per group of group_size consecutive elements along the last axis */
} qk_granularity;

/* How a tensor of n elements is split into blocks that each get their own
 * parameters. The shape's product must equal the tensor's n. */
typedef struct qk_layout {
    qk_granularity granularity;
    int ndim;
    int64_t shape[QK_MAX_DIMS];
    int axis;           /* per channel; negative counts from the end */
    int64_t group_size; /* per group; must divide the last dimension */
} qk_layout;

/* Number of blocks (parameter sets) of a layout: 1, shape[axis] or n / group_size. */
QK_API qk_status qk_layout_blocks(const qk_layout *layout, int64_t *count);

typedef struct qk_block_calib_result {
    int64_t count;         /* blocks */
    qk_qparams *params;    /* count entries, owned */
    qk_candidate *chosen;  /* each block's chosen row of its own calibration table, owned */
    int64_t n;             /* elements counted over all blocks */
    double mse;            /* over all counted elements */
} qk_block_calib_result;

/* Calibrate every block on its own (any method, any backend): block b's
 * parameters are exactly what qk_calibrate returns for that block alone. */
QK_API qk_status qk_calibrate_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                                     const qk_calib_options *opts, qk_block_calib_result *out);
QK_API qk_status qk_block_calib_result_release(qk_block_calib_result *res);
/* qk_calibrate_blocks, then qk_quantize_blocks with the parameters found, in
 * one pass: on a GPU backend x crosses to the device once, not twice. codes
 * (n elements) must hold the code range of opts (qk_code_range). The codes
 * equal what the two calls give. */
QK_API qk_status qk_calibrate_quantize_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                                              const qk_calib_options *opts, qk_block_calib_result *out,
                                              qk_tensor *codes);
/* Quantize / dequantize with one parameter set per block (count must match the layout). */
QK_API qk_status qk_quantize_blocks(qk_context *ctx, const qk_tensor *x, const qk_layout *layout,
                                    const qk_qparams *params, int64_t count, qk_tensor *codes);
QK_API qk_status qk_dequantize_blocks(qk_context *ctx, const qk_tensor *codes, const qk_layout *layout,
                                      const qk_qparams *params, int64_t count, qk_tensor *out);

/* ---- packed 4-bit codes ----------------------------------------------------- */

/* Two codes per byte, element 2i in the low nibble and 2i+1 in the high one; an
 * odd count leaves the last high nibble 0. Signed codes (I8 input, -8..7) are
 * stored as 4-bit two's complement. packed holds (n + 1) / 2 bytes. Host memory. */
QK_API qk_status qk_pack_int4(qk_context *ctx, const qk_tensor *codes, uint8_t *packed);
/* The inverse: fills codes (U8 or I8, n elements) from (n + 1) / 2 packed bytes. */
QK_API qk_status qk_unpack_int4(qk_context *ctx, const uint8_t *packed, qk_tensor *codes);

/* ---- ggml block formats -------------------------------------------------------
 * The block types of ggml / llama.cpp (what GGUF files hold), defined by ggml's
 * reference quantizer without an importance matrix (ggml_quantize_chunk ->
 * quantize_row_*_ref): every backend writes the same bytes as ggml built for
 * baseline x86-64 (no FMA). ggml's own roundings apply to these formats, not
 * the formulas of qkern's integer codes (docs/numerics.md; docs/ggml-formats.md). The
 * values are ggml's type ids, as GGUF tensor infos store them. */
typedef enum qk_ggml_type {
    QK_GGML_F32 = 0,   /* pass-through */
    QK_GGML_F16 = 1,   /* round to nearest even */
    QK_GGML_Q4_0 = 2,  /* 32 elements in 18 bytes */
    QK_GGML_Q4_1 = 3,  /* 32 in 20 */
    QK_GGML_Q5_0 = 6,  /* 32 in 22 */
    QK_GGML_Q5_1 = 7,  /* 32 in 24 */
    QK_GGML_Q8_0 = 8,  /* 32 in 34 */
    QK_GGML_Q2_K = 10, /* 256 in 84 */
    QK_GGML_Q3_K = 11, /* 256 in 110 */
    QK_GGML_Q4_K = 12, /* 256 in 144 */
    QK_GGML_Q5_K = 13, /* 256 in 176 */
    QK_GGML_Q6_K = 14, /* 256 in 210 */
    QK_GGML_BF16 = 30  /* round to nearest even, as ggml */
} qk_ggml_type;

/* ggml's name ("q4_K"), elements per block and bytes per block of a type;
 * QK_ERR_INVALID_ARG for a type qkern does not quantize. Any pointer may be NULL. */
QK_API qk_status qk_ggml_type_info(qk_ggml_type type, const char **name, int64_t *block_elems,
                                   size_t *block_bytes);
/* Parse ggml's name of a type, case-insensitively ("Q4_K", "q8_0", "bf16"). */
QK_API qk_status qk_ggml_type_parse(const char *name, qk_ggml_type *out);
/* Bytes of n elements of type (n a multiple of the block size). */
QK_API qk_status qk_ggml_size(qk_ggml_type type, int64_t n, size_t *bytes);
/* Quantize x (F32, n a multiple of the type's block size) into out: a U8
 * tensor of qk_ggml_size(type, n) bytes, host or device, blocks in order (as
 * ggml_quantize_chunk writes rows of blocks). For the block types x must be
 * finite: on QK_ERR_NONFINITE (the count and first index in the message and
 * qk_context_nonfinite) out holds all zero bytes, on every backend (the check
 * runs in the quantizing pass itself where the backend can, so out is
 * overwritten either way). F32, F16 and BF16 take any value. */
QK_API qk_status qk_ggml_quantize(qk_context *ctx, const qk_tensor *x, qk_ggml_type type, qk_tensor *out);
/* The inverse, as ggml's dequantize_row_*: in (U8, qk_ggml_size bytes) to out
 * (F32, n elements). */
QK_API qk_status qk_ggml_dequantize(qk_context *ctx, const qk_tensor *in, qk_ggml_type type, qk_tensor *out);

/* ---- whole models: checkpoints of any size ------------------------------------ */
/* A model is a .safetensors file, a *.safetensors.index.json (HF sharded
 * checkpoint: its weight_map names each tensor's shard) or a directory holding
 * one. Tensors are read, converted and written one piece at a time: peak
 * resident memory stays near memory_limit (plus a fixed overhead: the process,
 * the backend's runtime) whatever the model's size. Output: a file for a
 * single-file input (unless max_shard_size is set), else a directory (which
 * must not exist or be empty) holding the shards, a new
 * model.safetensors.index.json and a byte-for-byte copy of every other file of
 * the input's directory (config.json, tokenizer files ...). Files and the
 * directory are written under temporary names and renamed into place when
 * everything succeeded: a failure or a cancel leaves nothing. The format of a
 * quantized model: docs/model-format.md. */

typedef struct qk_model_progress {
    size_t tensors_done, tensors_total;   /* input tensors finished */
    uint64_t bytes_done, bytes_total;     /* input bytes finished */
} qk_model_progress;
/* Called from the library's threads (one at a time). Return non-zero to cancel:
 * the call then ends with QK_ERR_CANCELLED and nothing is written. */
typedef int (*qk_model_progress_fn)(void *user, const qk_model_progress *p);

typedef struct qk_model_options {
    const qk_backend_kind *backends; /* contexts' backends, used round robin by the jobs; NULL: AUTO */
    size_t n_backends;
    int jobs;                     /* contexts working on different tensors at once; default 1 */
    uint64_t memory_limit;        /* bytes; 0: min(4 GiB, RAM / 2) */
    uint64_t max_shard_size;      /* bytes of tensor data per output shard; 0: shard like the input */
    /* quantize only */
    qk_calib_options calib;
    qk_granularity granularity;   /* default per channel, axis 0 */
    int axis;
    int64_t group_size;
    int pack4;                    /* two 4-bit codes per byte (bits <= 4) */
    const char *const *include;   /* POSIX extended regexes: also quantize matching float tensors */
    size_t n_include;
    const char *const *exclude;   /* never quantize matching tensors (exclude wins) */
    size_t n_exclude;
    qk_model_progress_fn progress; /* optional */
    void *progress_user;
    /* GGUF (docs/model-format.md, "GGUF models"). quantize: a qk_ggml_type
     * makes the output a GGUF file (its path must end in .gguf; one file, no
     * max_shard_size): every selected float tensor (the selection above, plus
     * its row length, the last dimension, a multiple of the type's block size)
     * becomes that type through qk_ggml_quantize; calib, granularity, axis,
     * group_size and pack4 are not used. ggml 0 (the default, and what a
     * zeroed struct means): qkern's integer codes into safetensors. */
    int ggml;                     /* 1: quantize to ggml_type, into GGUF */
    qk_ggml_type ggml_type;
    /* dequantize of a GGUF input: the type of the restored tensors, QK_F32
     * (the default, 0), QK_F16 or QK_BF16. */
    qk_dtype out_dtype;
} qk_model_options;

QK_API qk_status qk_model_options_default(qk_model_options *opts);

/* One input tensor's fate (quantize) or one output tensor (dequantize). */
typedef struct qk_model_tensor_report {
    char *name;
    char st_dtype[8];             /* the tensor's safetensors dtype ("F32", "BF16", "I64" ...) */
    int ndim;
    int64_t shape[QK_MAX_DIMS];
    int converted;                /* quantized / dequantized; 0: copied byte for byte */
    const char *reason;           /* why it was copied (quantize), static text; NULL when converted */
    qk_granularity granularity;
    int axis;
    int64_t group_size;
    int64_t blocks;
    int bits;
    qk_scheme scheme;
    int packed;
    qk_dtype codes_dtype;
    double p_min, p_median, p_max; /* chosen percentile over blocks (quantize) */
    double mse, sse, sum_squares;  /* sum_squares: of the finite input values, in index order
                                     (GGUF: in 8 interleaved partial sums, then in order) */
    int64_t clipped, elements;
    size_t entry;                 /* dequantize: its place among the quantized model's metadata entries
                                     (all shards, in order); quantize: its index */
    int ggml_type;                /* GGUF: the tensor's ggml type in the output (quantize) or in the
                                     input (dequantize); -1 for safetensors tensors */
} qk_model_tensor_report;

typedef struct qk_model_report {
    qk_backend_kind backend;      /* the first context's */
    size_t n_tensors;
    qk_model_tensor_report *tensors;
    size_t shards_in, shards_out, files_copied;
    uint64_t bytes_in, bytes_out; /* files' sizes (shards, index and copied files) */
    uint64_t memory_limit;        /* the limit used */
    uint64_t peak_rss;            /* VmHWM of the process when the call ended, bytes (0: unknown) */
    int jobs;
    /* on failure: what was being done, and the detail (as "WHAT: STATUS: DETAIL") */
    char what[512];
    char detail[768];
    int64_t nonfinite_count;      /* after QK_ERR_NONFINITE, else 0 */
} qk_model_report;

/* Quantize every selected float tensor of a model (see qk_model_options). The
 * report is filled on success and on failure (what/detail); release it. With
 * opts->ggml the output is one GGUF file (a *.gguf path, or "-" for stdout;
 * input: safetensors as above, or a *.gguf file) whose selected tensors are in
 * opts->ggml_type: the GGUF layout, what is copied and general.file_type are in
 * docs/model-format.md. */
QK_API qk_status qk_model_quantize(const char *input, const char *output, const qk_model_options *opts,
                                   qk_model_report *report);
/* Restore the float tensors of a model written by qk_model_quantize. Options
 * used: backends, jobs, memory_limit, max_shard_size, progress. A GGUF input
 * (*.gguf): every tensor in a ggml block type is restored (qk_ggml_dequantize)
 * as out_dtype into OUTPUT, a .gguf or a .safetensors file; everything else is
 * copied byte for byte. Float16 overflow is an error naming the tensor. */
QK_API qk_status qk_model_dequantize(const char *input, const char *output, const qk_model_options *opts,
                                     qk_model_report *report);
QK_API void qk_model_report_release(qk_model_report *report);

#ifdef __cplusplus
}
#endif

#endif /* QKERN_H */
