/* mi_format for GGUF files (host/io/gguf.c does the checking: every count,
 * length, dimension, type and offset of the file is validated at open).
 *
 * GGUF lists a tensor's dimensions fastest-varying first (ne[0] is the row
 * length); the pipeline speaks row-major shapes, so they are reversed here. A
 * tensor's type is its ggml type: the plain ones get their safetensors
 * spelling ("F32", "I64" ...) and qkern dtype, block types ("Q4_K") none.
 * The metadata the pipeline sees through meta_* is the string-valued keys;
 * typed values are read through mi_gguf_handle(). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "map_file.h"
#include "model_in.h"
#include "safetensors.h"

typedef struct gg_file {
    qk_gguf_file *g;
    int64_t (*shape)[QK_GGUF_MAX_DIMS]; /* per tensor, row-major */
    char (*st_dtype)[8];
    char **skey, **sval;                /* string-valued keys, NUL-terminated copies */
    size_t n_str;
} gg_file;

const char *mi_ggml_st_dtype(uint32_t type)
{
    switch (type) {
    case 0: return "F32";
    case 1: return "F16";
    case 24: return "I8";
    case 25: return "I16";
    case 26: return "I32";
    case 27: return "I64";
    case 28: return "F64";
    case 30: return "BF16";
    default: return NULL;
    }
}

int mi_st_dtype_ggml(const char *st_dtype)
{
    static const uint32_t types[] = {0, 1, 24, 25, 26, 27, 28, 30};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(mi_ggml_st_dtype(types[i]), st_dtype) == 0)
            return (int)types[i];
    return -1;
}

static void gg_close(void *file)
{
    gg_file *f = file;
    if (!f)
        return;
    for (size_t i = 0; i < f->n_str; i++) {
        free(f->skey[i]);
        free(f->sval[i]);
    }
    free(f->skey);
    free(f->sval);
    free(f->shape);
    free(f->st_dtype);
    qk_gguf_close(f->g);
    free(f);
}

static qk_status gg_open(const char *path, void **file, char *err, size_t err_len)
{
    *file = NULL;
    gg_file *f = calloc(1, sizeof *f);
    if (!f) {
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    qk_status st = qk_gguf_open(path, &f->g, err, err_len);
    if (st != QK_OK) {
        free(f);
        return st;
    }
    size_t nt = qk_gguf_tensor_count(f->g), nkv = qk_gguf_kv_count(f->g);
    f->shape = calloc(nt ? nt : 1, sizeof *f->shape);
    f->st_dtype = calloc(nt ? nt : 1, sizeof *f->st_dtype);
    f->skey = calloc(nkv ? nkv : 1, sizeof *f->skey);
    f->sval = calloc(nkv ? nkv : 1, sizeof *f->sval);
    int oom = !f->shape || !f->st_dtype || !f->skey || !f->sval;
    for (size_t i = 0; !oom && i < nt; i++) {
        const qk_gguf_tensor *t = qk_gguf_tensor_at(f->g, i);
        for (uint32_t d = 0; d < t->n_dims; d++)
            f->shape[i][d] = t->ne[t->n_dims - 1 - d];
        const char *s = mi_ggml_st_dtype(t->type);
        if (s) {
            snprintf(f->st_dtype[i], sizeof f->st_dtype[i], "%s", s);
        } else { /* ggml's name in capitals: "Q4_K", "IQ2_XXS" */
            const char *name = qk_ggml_type_get(t->type)->name;
            size_t k = 0;
            for (; name[k] && k + 1 < sizeof f->st_dtype[i]; k++)
                f->st_dtype[i][k] = (char)toupper((unsigned char)name[k]);
            f->st_dtype[i][k] = '\0';
        }
    }
    for (size_t i = 0; !oom && i < nkv; i++) {
        const qk_gguf_kv *kv = qk_gguf_kv_at(f->g, i);
        if (kv->value.type != QK_GGUF_STRING || memchr(kv->value.data, '\0', (size_t)kv->value.count))
            continue; /* safetensors metadata cannot hold a NUL */
        f->skey[f->n_str] = strdup(kv->key);
        f->sval[f->n_str] = malloc((size_t)kv->value.count + 1);
        oom = !f->skey[f->n_str] || !f->sval[f->n_str];
        if (f->sval[f->n_str]) {
            memcpy(f->sval[f->n_str], kv->value.data, (size_t)kv->value.count);
            f->sval[f->n_str][kv->value.count] = '\0';
        }
        f->n_str++;
    }
    if (oom) {
        gg_close(f);
        qk_io_error(err, err_len, "out of memory reading %s", path);
        return QK_ERR_NO_MEMORY;
    }
    *file = f;
    return QK_OK;
}

static size_t gg_count(void *file)
{
    return qk_gguf_tensor_count(((gg_file *)file)->g);
}

static void gg_tensor(void *file, size_t i, mi_tensor *out)
{
    gg_file *f = file;
    const qk_gguf_tensor *t = qk_gguf_tensor_at(f->g, i);
    out->name = t->name;
    out->st_dtype = f->st_dtype[i];
    out->dtype = QK_DTYPE_COUNT;
    out->elem_bits = 8;
    if (mi_ggml_st_dtype(t->type) && qk_st_dtype_parse(out->st_dtype, &out->dtype, &out->elem_bits) != QK_OK)
        out->dtype = QK_DTYPE_COUNT;
    if (out->dtype == QK_ST_OTHER)
        out->dtype = QK_DTYPE_COUNT;
    out->ggml_type = (int)t->type;
    out->ndim = (int)t->n_dims;
    out->shape = f->shape[i];
    out->n = t->n;
    out->nbytes = t->nbytes;
    out->file_offset = qk_gguf_data_offset(f->g) + t->offset;
}

static size_t gg_meta_count(void *file)
{
    return ((gg_file *)file)->n_str;
}

static void gg_meta_at(void *file, size_t i, const char **key, const char **value)
{
    gg_file *f = file;
    *key = f->skey[i];
    *value = f->sval[i];
}

static const char *gg_meta_get(void *file, const char *key)
{
    gg_file *f = file;
    for (size_t i = 0; i < f->n_str; i++)
        if (strcmp(f->skey[i], key) == 0)
            return f->sval[i];
    return NULL;
}

const qk_gguf_file *mi_gguf_handle(const model_in *m, size_t shard)
{
    return m->fmt == &mi_gguf ? ((const gg_file *)m->shards[shard].file)->g : NULL;
}

const mi_format mi_gguf = {".gguf", gg_open, gg_close, gg_count, gg_tensor, gg_meta_count, gg_meta_at, gg_meta_get};
