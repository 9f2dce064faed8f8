/* The model pipeline's engine, shared by qk_model_quantize and
 * qk_model_dequantize: work items (one per input tensor to copy, quantize or
 * restore), their pieces (whole blocks, sized to the memory budget), the
 * workers (one context each) and the first error of a run. */
#ifndef QK_MODEL_RUN_H
#define QK_MODEL_RUN_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "model_format.h"
#include "model_in.h"
#include "model_out.h"
#include "qkern.h"

typedef enum mr_kind { MR_COPY, MR_QUANT, MR_DEQ } mr_kind;

/* Distinct chosen percentiles and how many blocks chose each (few: one per
 * grid candidate at most), for the report's min/median/max. */
typedef struct mr_pct {
    double *v;
    int64_t *count;
    size_t n, cap;
    int64_t total;
} mr_pct;

typedef struct mr_item {
    mr_kind kind;
    size_t src;                /* input tensor (the codes, for MR_DEQ) */
    size_t out_shard;
    /* MR_QUANT: the format entry (name and calib borrowed); MR_DEQ: the entry read */
    qm_entry e;
    const qm_entry *de;
    size_t scale_src, zero_src;
    int64_t packed_shape[1], blocks_shape[1];
    size_t out[3];             /* output tensors: copy/deq: [0]; quant: codes, scale, zero */
    const char *reason;        /* MR_COPY of a quantize run: why */
    size_t entry;              /* MR_DEQ: its index among the metadata entries of all shards */
    /* pieces */
    int64_t seg;               /* elements per block */
    int64_t piece_blocks;
    /* report (MR_QUANT) */
    mr_pct pct;
    double mse, sse, sumsq;
    int64_t clipped, counted, pieces;
    char gran[32];
    /* GGUF: the ggml type the item writes (quantize) or reads (dequantize); rows of row elements */
    int ggml;
    int64_t row, rows;
    int64_t overflow;          /* dequantize to float16: values beyond its range */
} mr_item;

typedef struct mr_worker {
    struct mr_run *r;
    qk_context *ctx;
    pthread_t thread;
    void *buf[4];
    size_t cap[4];
} mr_worker;

typedef struct mr_run {
    const char *input, *output;
    const qk_model_options *o;
    qk_model_report *rep;
    model_in in;
    model_out out;
    mr_item *items;
    size_t n_items;
    int quantize;
    int gguf_out;              /* the output is one GGUF file (mo_gguf) */
    uint64_t limit, budget;    /* the memory limit, and each worker's share for its pieces */
    int jobs;
    mr_worker *w;
    pthread_mutex_t lock;
    size_t next;               /* next item to start */
    int stop;                  /* failed or cancelled: workers stop at the next piece */
    qk_status status;
    qk_model_progress prog;
    char calib_text[128];
} mr_run;

/* Record the first failure of a run: what was being done, and the detail. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
qk_status mr_fail(mr_run *r, qk_status st, const char *detail, const char *fmt, ...);
/* A failure of a library call on ctx: the context's message is the detail. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
qk_status mr_lib_fail(mr_run *r, qk_context *ctx, qk_status st, const char *fmt, ...);
/* QK_ERR_NONFINITE found by the caller, which knows where in the tensor it is:
 * count goes into the report (when it is the run's first failure). */
qk_status mr_nonfinite_fail(mr_run *r, int64_t count, const char *detail, const char *fmt, ...);

/* The report's tensors, one per item (rep->tensors, n_tensors): the input
 * tensor's name, dtype and shape, converted (any kind but MR_COPY), reason,
 * entry = the item's index and ggml_type -1; the callers add or replace the
 * rest. mr_fail on no memory. */
qk_status mr_report_tensors(mr_run *r);

/* Set up r (options, limit, input opened): st with the report filled on failure. */
qk_status mr_begin(mr_run *r, const char *input, const char *output, const qk_model_options *o,
                   qk_model_report *rep, int quantize);
/* Pieces of an item of n elements in blocks of the layout, for a cost in bytes
 * per element and per block; fails (reported) when one piece cannot fit. */
qk_status mr_pieces(mr_run *r, mr_item *it, const qk_layout *layout, int64_t blocks, int64_t n, double per_elem,
                    double per_block, int pack);
/* Pieces of whole rows (it->row elements each, it->rows of them) for a cost
 * in bytes per element; fails (reported) when one row cannot fit. */
qk_status mr_row_pieces(mr_run *r, mr_item *it, double per_elem);
/* The layout of blocks [b0, b0 + m) of an item as a tensor of its own. */
void mr_piece_layout(const mr_item *it, const qk_layout *whole, int64_t b0, int64_t m, qk_layout *out);
/* Output shards: like the input's, or max_shard_size bytes; items' out_shard set. */
qk_status mr_assign_shards(mr_run *r, const uint64_t *item_bytes);
/* Create contexts, open the output, run every item, commit. */
qk_status mr_execute(mr_run *r, qk_status (*run_item)(mr_worker *w, mr_item *it, unsigned emit));
void mr_end(mr_run *r);

/* The GGUF side of qk_model_quantize (model_ggml_quantize.c): reasons[i] is
 * why input tensor i is kept by the general selection, or NULL when it is a
 * candidate. Plans, runs and reports. */
qk_status mg_quantize(mr_run *r, const char *const *reasons);
/* qk_model_dequantize of a GGUF input (model_ggml_dequantize.c). */
qk_status mg_dequantize(mr_run *r);
/* Whether path ends in ".gguf". */
int mr_is_gguf(const char *path);

/* A worker's scratch buffer k of at least bytes (kept between pieces). NULL when out of memory. */
void *mr_scratch(mr_worker *w, int k, size_t bytes);
/* An item copied byte for byte (MR_COPY) from its input tensor to its first
 * output, in pieces of at most 8 MiB within the budget. count_bytes: whether
 * the copied bytes count toward the progress callback's bytes_done (as they do
 * where bytes_total includes copied tensors). */
qk_status mr_copy_item(mr_worker *w, mr_item *it, int count_bytes);
/* A piece of bytes is done (for the progress callback); 1 when the run must stop. */
int mr_piece_done(mr_worker *w, uint64_t bytes);
void mr_pct_add(mr_pct *p, double v, int64_t count);
void mr_pct_stats(const mr_pct *p, double *min, double *median, double *max);

/* Emit masks: which of an item's outputs a pass writes (all on a seekable output). */
#define MR_EMIT_ALL 7u
#define MR_EMIT(k) (1u << (k))

#endif
