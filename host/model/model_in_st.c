/* mi_format for safetensors files (host/io/safetensors.c does the checking). */
#include "model_in.h"
#include "safetensors.h"

static qk_status st_open(const char *path, void **file, char *err, size_t err_len)
{
    qk_st_file *f = NULL;
    qk_status st = qk_st_open(path, &f, err, err_len);
    *file = f;
    return st;
}

static void st_close(void *file)
{
    qk_st_close(file);
}

static size_t st_count(void *file)
{
    return qk_st_count(file);
}

static void st_tensor(void *file, size_t i, mi_tensor *out)
{
    const qk_st_tensor *t = qk_st_get(file, i);
    out->name = t->name;
    out->st_dtype = t->st_dtype;
    out->dtype = t->dtype;
    out->elem_bits = t->elem_bits;
    out->ndim = t->ndim;
    out->shape = t->shape;
    out->n = t->n;
    out->nbytes = t->nbytes;
    out->file_offset = 8 + (uint64_t)qk_st_header_len(file) + t->offset;
    out->ggml_type = -1;
}

static size_t st_meta_count(void *file)
{
    return qk_st_metadata_count(file);
}

static void st_meta_at(void *file, size_t i, const char **key, const char **value)
{
    qk_st_metadata_at(file, i, key, value);
}

static const char *st_meta_get(void *file, const char *key)
{
    return qk_st_metadata_get(file, key);
}

const mi_format mi_safetensors = {".safetensors", st_open, st_close, st_count, st_tensor,
                                  st_meta_count, st_meta_at, st_meta_get};
