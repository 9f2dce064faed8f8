/* The output side of the model pipeline: every output tensor planned (name,
 * dtype, shape, file, byte offset) before any is computed, each file's header
 * written first, then each tensor's bytes written at their offset as they are
 * computed (pwrite; in file order when the output cannot seek), and everything
 * linked into place only at the end: one file through the atomic output, or a
 * directory of shards, a new index and copies of the input's other files
 * through an atomic directory.
 *
 * The file layout is the format writer's (mo_format): safetensors orders
 * tensors by element width, widest first (every tensor aligned), otherwise in
 * the order added, and writes the header exactly as qk_st_writer does, so a
 * planned file is byte for byte what the in-memory writer gave. GGUF keeps
 * tensors in the order added, each at a multiple of the alignment, with the
 * header built by host/io/gguf.c's writer (qk_gguf_writer_header). */
#ifndef QK_MODEL_OUT_H
#define QK_MODEL_OUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "atomic_dir.h"
#include "atomic_file.h"
#include "model_in.h"
#include "qkern.h"

typedef enum mo_kind { MO_COPY, MO_CODES, MO_SCALE, MO_ZERO, MO_DEQ } mo_kind;

typedef struct mo_tensor {
    const char *name;        /* borrowed: must outlive the output */
    const char *st_dtype;
    int ndim;
    const int64_t *shape;    /* borrowed: must outlive the output */
    uint64_t nbytes;
    int elem_bits;
    mo_kind kind;
    size_t item;             /* the work item that produces it */
    size_t shard;
    uint64_t offset;         /* in its shard's file, once planned */
    int ggml_type;           /* GGUF: its ggml type; -1: the one of st_dtype */
} mo_tensor;

/* A typed GGUF key/value by its encoding (qk_gguf_value.enc), for mo_gguf. */
typedef struct mo_kv {
    const char *key;
    uint32_t type;
    const void *enc;
    size_t enc_size;
} mo_kv;

typedef struct mo_shard {
    char *base;              /* file name in the output directory */
    qk_atomic_file f;
    int open, seekable;
    size_t *order;           /* its tensors (indices into model_out.t), in file order */
    size_t n;
    unsigned char *head;
    size_t head_len;
    uint64_t size;
    uint64_t next;           /* not seekable: the next byte to write */
    uint64_t unsynced;       /* bytes written since the last wait for writeback */
    pthread_mutex_t lock;
} mo_shard;

struct model_out;

/* One output format. */
typedef struct mo_format {
    /* Order tensors[0..n) (indices into o->t) as the file holds them and build
     * the header; sets each tensor's offset. */
    qk_status (*plan)(const struct model_out *o, struct mo_tensor *t, size_t *order, size_t n, const char *const *keys,
                      const char *const *values, size_t n_meta, unsigned char **head, size_t *head_len, char *err,
                      size_t err_len);
} mo_format;

extern const mo_format mo_safetensors;
/* String metadata become string keys; then o->kv (typed, by encoding; a key
 * set again replaces the earlier value in place). Fails for a tensor type GGUF
 * cannot hold or more than 4 dimensions. */
extern const mo_format mo_gguf;

typedef struct model_out {
    const mo_format *fmt;
    const char *path;
    int dir_mode;
    qk_atomic_dir dir;
    mo_shard *shards;
    size_t n_shards;
    mo_tensor *t;
    size_t n, cap;
    uint64_t bytes_out;
    size_t files_copied;
    const mo_kv *kv;         /* GGUF: typed keys for mo_plan, borrowed */
    size_t n_kv;
} model_out;

/* n_shards shards named base[i] (NULL entries, or dir_mode 0: a single file). */
qk_status mo_init(model_out *o, const char *path, int dir_mode, size_t n_shards, char *const *base, char *err,
                  size_t err_len);
/* Add a tensor to shard k; returns its index, or (size_t)-1 when out of memory. */
size_t mo_add(model_out *o, size_t shard, const char *name, const char *st_dtype, int ndim, const int64_t *shape,
              mo_kind kind, size_t item);
/* A GGUF tensor of ggml type (shape row-major; nbytes from the type's blocks). */
size_t mo_add_ggml(model_out *o, size_t shard, const char *name, int ggml_type, int ndim, const int64_t *shape,
                   mo_kind kind, size_t item);
/* Plan shard k with these metadata entries. */
qk_status mo_plan(model_out *o, size_t k, const char *const *keys, const char *const *values, size_t n_meta,
                  char *err, size_t err_len);
/* Create the output (the directory, every file) and write the headers. */
qk_status mo_open(model_out *o, char *err, size_t err_len);
/* Bytes [off, off + len) of tensor i. */
qk_status mo_write(model_out *o, size_t i, uint64_t off, const void *data, size_t len, char *err, size_t err_len);
/* 1 when every file can be written out of order. */
int mo_seekable(const model_out *o);
/* Link everything into place: the files, then (directory) the index, the
 * copies of in's other files, the directory. */
qk_status mo_commit(model_out *o, const model_in *in, char *err, size_t err_len);
/* Remove everything written; safe after a failed commit. */
void mo_close(model_out *o);

#endif
