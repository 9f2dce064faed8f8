/* libFuzzer target for the GGUF reader: any input either parses or is refused
 * with QK_ERR_FORMAT and a message; nothing else, and never a read outside the
 * input (libFuzzer hands over an exact-size copy, ASan watches). On success
 * every value, string and tensor byte is touched and the invariants checked.
 * Built and run by run_fuzz.sh gguf. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gguf.h"

#define CHECK(cond)                \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned g_sum;

static void walk(const qk_gguf_value *v, int depth)
{
    CHECK(depth < QK_GGUF_MAX_DEPTH);
    CHECK(v->enc != NULL && v->enc_size > 0);
    for (size_t k = 0; k < v->enc_size; k++)
        g_sum += v->enc[k];
    if (v->type == QK_GGUF_ARRAY && v->elem_type == QK_GGUF_STRING) {
        for (uint64_t i = 0; i < v->count; i++) {
            const char *s;
            uint64_t n;
            CHECK(qk_gguf_array_string(v, i, &s, &n) == QK_OK);
            for (uint64_t k = 0; k < n; k++)
                g_sum += (unsigned char)s[k];
        }
    } else if (v->type == QK_GGUF_ARRAY && v->elem_type == QK_GGUF_ARRAY) {
        for (uint64_t i = 0; i < v->count; i++)
            walk(&v->items[i], depth + 1);
    } else if (v->type == QK_GGUF_ARRAY) {
        CHECK(v->count * qk_gguf_type_size(v->elem_type) + 12 == v->enc_size);
    } else if (v->type == QK_GGUF_STRING) {
        CHECK(v->count + 8 == v->enc_size);
    } else {
        CHECK(qk_gguf_type_size(v->type) == v->enc_size);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qk_gguf_file *f = NULL;
    char err[512];
    qk_status st = qk_gguf_parse(data, size, &f, err, sizeof err);
    CHECK(st == QK_OK || st == QK_ERR_FORMAT);
    if (st != QK_OK) {
        CHECK(f == NULL);
        CHECK(err[0] != '\0');
        return 0;
    }
    CHECK(qk_gguf_version(f) == 2 || qk_gguf_version(f) == 3);
    uint32_t a = qk_gguf_alignment(f);
    CHECK(a != 0 && (a & (a - 1)) == 0);
    for (size_t i = 0; i < qk_gguf_kv_count(f); i++) {
        const qk_gguf_kv *kv = qk_gguf_kv_at(f, i);
        CHECK(kv != NULL && kv->key[0] != '\0');
        CHECK(qk_gguf_kv_find(f, kv->key) == kv);
        walk(&kv->value, 0);
    }
    for (size_t i = 0; i < qk_gguf_tensor_count(f); i++) {
        const qk_gguf_tensor *t = qk_gguf_tensor_at(f, i);
        CHECK(t != NULL && qk_gguf_tensor_find(f, t->name) == t);
        CHECK(t->n_dims <= QK_GGUF_MAX_DIMS);
        const qk_ggml_type_traits *tt = qk_ggml_type_get(t->type);
        CHECK(tt != NULL);
        CHECK(t->offset % a == 0);
        const unsigned char *p = t->data;
        CHECK(p >= data && (size_t)(p - data) + t->nbytes <= size);
        for (uint64_t k = 0; k < t->nbytes; k++)
            g_sum += p[k];
    }
    qk_gguf_close(f);
    return 0;
}
