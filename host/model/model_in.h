/* The input side of the model pipeline: a model path (one file, an index
 * *.safetensors.index.json, or a directory holding one) opened as shards and
 * one list of tensors, read piece by piece with pread (so what is resident is
 * the caller's buffer, not a mapping) and dropped from the page cache behind.
 *
 * Formats sit behind mi_format (safetensors; GGUF, one file, no index):
 * opening a file, listing its tensors and metadata. Everything else here is
 * format-neutral. */
#ifndef QK_MODEL_IN_H
#define QK_MODEL_IN_H

#include <stddef.h>
#include <stdint.h>

#include "qkern.h"

/* One tensor of the model. Pointers are owned by its shard's file. */
typedef struct mi_tensor {
    const char *name;
    const char *st_dtype;   /* safetensors spelling ("F32", "I64" ...): the model's own for other formats */
    qk_dtype dtype;         /* or QK_DTYPE_COUNT for types qkern does not compute on */
    int elem_bits;
    int ndim;
    const int64_t *shape;
    int64_t n;
    uint64_t nbytes;
    uint64_t file_offset;   /* where its bytes start in its shard's file */
    size_t shard;
    int ggml_type;          /* GGUF: its ggml type id (shape row-major: ne reversed); -1 for safetensors */
} mi_tensor;

/* One input format. */
typedef struct mi_format {
    const char *suffix;                                                            /* ".safetensors" */
    qk_status (*open)(const char *path, void **file, char *err, size_t err_len);  /* validate all of it */
    void (*close)(void *file);
    size_t (*count)(void *file);                                                   /* tensors, in data order */
    void (*tensor)(void *file, size_t i, mi_tensor *out);                          /* all but shard */
    size_t (*meta_count)(void *file);
    void (*meta_at)(void *file, size_t i, const char **key, const char **value);
    const char *(*meta_get)(void *file, const char *key);
} mi_format;

extern const mi_format mi_safetensors;
extern const mi_format mi_gguf;   /* meta_*: the string-valued keys; typed values through mi_gguf_handle */

/* The safetensors spelling of a plain ggml type ("F32", "I64" ...), NULL for
 * block types; and back (-1 for a dtype GGUF cannot hold: U8, BOOL, F8 ...). */
const char *mi_ggml_st_dtype(uint32_t type);
int mi_st_dtype_ggml(const char *st_dtype);

typedef struct mi_shard {
    char *path;
    const char *base;      /* file name within the directory */
    void *file;            /* the format's handle */
    int fd;                /* for pread and posix_fadvise */
    size_t first, count;   /* its tensors in model_in.t */
    uint64_t size;
} mi_shard;

typedef struct model_in {
    const mi_format *fmt;
    int sharded;           /* an index or a directory: the output is a directory */
    char *dir;             /* the directory of the shards ("." for a bare file name) */
    char *index_base;      /* the index's file name, or NULL */
    mi_shard *shards;
    size_t n_shards;
    mi_tensor *t;
    size_t n;
    char **extra;          /* other regular files of the directory (names), copied to the output */
    size_t n_extra;
    const char **sorted;   /* tensor names, sorted, for mi_find */
    size_t *sorted_idx;
    int readahead;         /* posix_fadvise WILLNEED ahead of the reads (QKERN_PREFETCH=0: off) */
} model_in;

/* QK_ERR_IO / QK_ERR_FORMAT / QK_ERR_NO_MEMORY with err set. */
qk_status mi_open(model_in *m, const char *path, char *err, size_t err_len);
void mi_close(model_in *m);
/* The tensor called name anywhere in the model, or NULL. */
const mi_tensor *mi_find(const model_in *m, const char *name, size_t *index);
/* len bytes of t from byte off into dst; the pages read are dropped from the
 * page cache. QK_ERR_IO on a short read. */
qk_status mi_read(const model_in *m, const mi_tensor *t, uint64_t off, void *dst, size_t len, char *err,
                  size_t err_len);
/* Hint that these bytes (and at least 64 MiB of the shard from there) come next. */
void mi_willneed(const model_in *m, const mi_tensor *t, uint64_t off, uint64_t len);
uint64_t mi_bytes(const model_in *m);
/* A GGUF input's parsed file (shard k), or NULL for safetensors. */
const struct qk_gguf_file *mi_gguf_handle(const model_in *m, size_t shard);

#endif
