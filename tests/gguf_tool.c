/* A test helper around host/io/gguf.c, for tests/test_gguf_py.py:
 *
 *   gguf_tool dump FILE        one JSON object: version, alignment, data offset,
 *                              every key/value (type, value; strings as hex,
 *                              floats as their bit patterns) and tensor info
 *                              (name, ne, type, offset, size, data as hex)
 *   gguf_tool copy IN OUT      read IN, write every key/value (by its encoding)
 *                              and tensor through the writer to OUT
 *   gguf_tool quantize IN.f32 TYPE OUT.gguf
 *                              quantize a float32 file (one row) with qk_ggml_quantize
 *                              on QKERN_BACKEND and write it as tensor "t" of ggml type TYPE
 *
 * Errors go to stderr with exit status 1 (2 for usage). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "qkern.h"

static char *hex(const unsigned char *p, uint64_t n)
{
    char *s = malloc(2 * n + 1);
    if (!s)
        return NULL;
    for (uint64_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, "%02x", p[i]);
    s[2 * n] = '\0';
    return s;
}

static void add_hex(cJSON *o, const char *k, const unsigned char *p, uint64_t n)
{
    char *h = hex(p, n);
    cJSON_AddStringToObject(o, k, h ? h : "");
    free(h);
}

/* A scalar as JSON: integers as decimal strings (64-bit safe), floats as the
 * hex of their little-endian bytes (exact), bools as 0/1. */
static cJSON *scalar_json(uint32_t type, const unsigned char *p)
{
    char buf[32];
    qk_gguf_value v = {0};
    v.type = type;
    v.data = p;
    if (type == QK_GGUF_FLOAT32 || type == QK_GGUF_FLOAT64) {
        char *h = hex(p, qk_gguf_type_size(type));
        cJSON *j = cJSON_CreateString(h ? h : "");
        free(h);
        return j;
    }
    int64_t i;
    uint64_t u;
    if (qk_gguf_value_i64(&v, &i) == QK_OK)
        snprintf(buf, sizeof buf, "%" PRId64, i);
    else if (qk_gguf_value_u64(&v, &u) == QK_OK)
        snprintf(buf, sizeof buf, "%" PRIu64, u);
    else
        snprintf(buf, sizeof buf, "?");
    return cJSON_CreateString(buf);
}

static cJSON *value_json(const qk_gguf_value *v)
{
    if (v->type == QK_GGUF_STRING) {
        char *h = hex(v->data, v->count);
        cJSON *j = cJSON_CreateString(h ? h : "");
        free(h);
        return j;
    }
    if (v->type != QK_GGUF_ARRAY)
        return scalar_json(v->type, v->data);
    cJSON *arr = cJSON_CreateArray();
    for (uint64_t i = 0; i < v->count; i++) {
        if (v->elem_type == QK_GGUF_STRING) {
            const char *s;
            uint64_t n;
            qk_gguf_array_string(v, i, &s, &n);
            char *h = hex((const unsigned char *)s, n);
            cJSON_AddItemToArray(arr, cJSON_CreateString(h ? h : ""));
            free(h);
        } else if (v->elem_type == QK_GGUF_ARRAY) {
            cJSON_AddItemToArray(arr, value_json(&v->items[i]));
        } else {
            cJSON_AddItemToArray(arr, scalar_json(v->elem_type, v->data + i * qk_gguf_type_size(v->elem_type)));
        }
    }
    return arr;
}

static int dump(const char *path)
{
    qk_gguf_file *f;
    char err[512];
    if (qk_gguf_open(path, &f, err, sizeof err) != QK_OK) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "version", qk_gguf_version(f));
    cJSON_AddNumberToObject(o, "alignment", qk_gguf_alignment(f));
    cJSON_AddNumberToObject(o, "data_offset", (double)qk_gguf_data_offset(f));
    cJSON *kvs = cJSON_AddArrayToObject(o, "kv");
    for (size_t i = 0; i < qk_gguf_kv_count(f); i++) {
        const qk_gguf_kv *kv = qk_gguf_kv_at(f, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "key", kv->key);
        cJSON_AddNumberToObject(e, "type", kv->value.type);
        if (kv->value.type == QK_GGUF_ARRAY)
            cJSON_AddNumberToObject(e, "elem_type", kv->value.elem_type);
        cJSON_AddItemToObject(e, "value", value_json(&kv->value));
        cJSON_AddItemToArray(kvs, e);
    }
    cJSON *ts = cJSON_AddArrayToObject(o, "tensors");
    for (size_t i = 0; i < qk_gguf_tensor_count(f); i++) {
        const qk_gguf_tensor *t = qk_gguf_tensor_at(f, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON *ne = cJSON_AddArrayToObject(e, "ne");
        for (uint32_t d = 0; d < t->n_dims; d++)
            cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)t->ne[d]));
        cJSON_AddNumberToObject(e, "type", t->type);
        cJSON_AddNumberToObject(e, "offset", (double)t->offset);
        cJSON_AddNumberToObject(e, "nbytes", (double)t->nbytes);
        add_hex(e, "data", t->data, t->nbytes);
        cJSON_AddItemToArray(ts, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    int rc = s && puts(s) >= 0 ? 0 : 1;
    free(s);
    cJSON_Delete(o);
    qk_gguf_close(f);
    return rc;
}

static int copy(const char *in, const char *out)
{
    qk_gguf_file *f;
    qk_gguf_writer *w = NULL;
    char err[512];
    qk_status st = qk_gguf_open(in, &f, err, sizeof err);
    if (st == QK_OK)
        st = qk_gguf_writer_begin(out, &w, err, sizeof err);
    for (size_t i = 0; st == QK_OK && i < qk_gguf_kv_count(f); i++) {
        const qk_gguf_kv *kv = qk_gguf_kv_at(f, i);
        st = qk_gguf_writer_set_encoded(w, kv->key, kv->value.type, kv->value.enc, kv->value.enc_size, err,
                                        sizeof err);
    }
    for (size_t i = 0; st == QK_OK && i < qk_gguf_tensor_count(f); i++) {
        const qk_gguf_tensor *t = qk_gguf_tensor_at(f, i);
        st = qk_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, t->type, t->data, t->nbytes, err, sizeof err);
    }
    if (st == QK_OK) {
        st = qk_gguf_writer_commit(w, err, sizeof err);
        w = NULL;
    }
    qk_gguf_writer_abort(w);
    qk_gguf_close(f);
    if (st != QK_OK) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    return 0;
}

static int quantize(const char *in, const char *type_name, const char *out)
{
    FILE *fi = fopen(in, "rb");
    if (!fi) {
        perror(in);
        return 1;
    }
    fseek(fi, 0, SEEK_END);
    long len = ftell(fi);
    fseek(fi, 0, SEEK_SET);
    int64_t n = len / 4;
    float *x = malloc((size_t)len + 4);
    if (!x || fread(x, 1, (size_t)len, fi) != (size_t)len) {
        fprintf(stderr, "gguf_tool: cannot read %s\n", in);
        return 1;
    }
    fclose(fi);
    qk_ggml_type type;
    size_t bytes;
    if (qk_ggml_type_parse(type_name, &type) != QK_OK || qk_ggml_size(type, n, &bytes) != QK_OK) {
        fprintf(stderr, "gguf_tool: bad type %s for %" PRId64 " elements\n", type_name, n);
        return 1;
    }
    unsigned char *y = malloc(bytes + 1);
    qk_context *ctx;
    char msg[256];
    if (!y || qk_context_create(QK_BACKEND_AUTO, &ctx, msg, sizeof msg) != QK_OK) {
        fprintf(stderr, "gguf_tool: no context: %s\n", msg);
        return 1;
    }
    qk_tensor tx = qk_tensor_host(QK_F32, x, n), ty = qk_tensor_host(QK_U8, y, (int64_t)bytes);
    if (qk_ggml_quantize(ctx, &tx, type, &ty) != QK_OK) {
        fprintf(stderr, "gguf_tool: %s\n", qk_context_message(ctx));
        return 1;
    }
    qk_context_destroy(ctx);
    qk_gguf_writer *w;
    char err[512];
    const int64_t ne[1] = {n};
    qk_status st = qk_gguf_writer_begin(out, &w, err, sizeof err);
    if (st == QK_OK)
        st = qk_gguf_writer_add_tensor(w, "t", 1, ne, (uint32_t)type, y, bytes, err, sizeof err);
    if (st == QK_OK)
        st = qk_gguf_writer_commit(w, err, sizeof err);
    else
        qk_gguf_writer_abort(w);
    free(x);
    free(y);
    if (st != QK_OK) {
        fprintf(stderr, "gguf_tool: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "dump") == 0)
        return dump(argv[2]);
    if (argc == 4 && strcmp(argv[1], "copy") == 0)
        return copy(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "quantize") == 0)
        return quantize(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: gguf_tool dump FILE | copy IN OUT | quantize IN.f32 TYPE OUT.gguf\n");
    return 2;
}
