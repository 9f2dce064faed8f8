/* GGUF reader and writer: see gguf.h for the format and what is validated. */
#include "gguf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "atomic_file.h"
#include "map_file.h"

/* ---- type tables ------------------------------------------------------------------- */

static const size_t k_value_size[QK_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const k_value_name[QK_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool",  "string", "array", "uint64", "int64", "float64"};

size_t qk_gguf_type_size(uint32_t type) { return type < QK_GGUF_TYPE_COUNT ? k_value_size[type] : 0; }
const char *qk_gguf_type_name(uint32_t type) { return type < QK_GGUF_TYPE_COUNT ? k_value_name[type] : NULL; }

/* ggml.h's numbering and ggml.c's type_traits (block size, bytes per block). */
static const qk_ggml_type_traits k_ggml[] = {
    [0] = {"f32", 1, 4},          [1] = {"f16", 1, 2},          [2] = {"q4_0", 32, 18},
    [3] = {"q4_1", 32, 20},       [6] = {"q5_0", 32, 22},       [7] = {"q5_1", 32, 24},
    [8] = {"q8_0", 32, 34},       [9] = {"q8_1", 32, 36},       [10] = {"q2_K", 256, 84},
    [11] = {"q3_K", 256, 110},    [12] = {"q4_K", 256, 144},    [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210},    [15] = {"q8_K", 256, 292},    [16] = {"iq2_xxs", 256, 66},
    [17] = {"iq2_xs", 256, 74},   [18] = {"iq3_xxs", 256, 98},  [19] = {"iq1_s", 256, 50},
    [20] = {"iq4_nl", 32, 18},    [21] = {"iq3_s", 256, 110},   [22] = {"iq2_s", 256, 82},
    [23] = {"iq4_xs", 256, 136},  [24] = {"i8", 1, 1},          [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},         [27] = {"i64", 1, 8},         [28] = {"f64", 1, 8},
    [29] = {"iq1_m", 256, 56},    [30] = {"bf16", 1, 2},        [34] = {"tq1_0", 256, 54},
    [35] = {"tq2_0", 256, 66},    [39] = {"mxfp4", 32, 17},     [40] = {"nvfp4", 64, 36},
    [41] = {"q1_0", 128, 18},     [42] = {"q2_0", 64, 18},
};

const qk_ggml_type_traits *qk_ggml_type_get(uint32_t type)
{
    if (type >= sizeof k_ggml / sizeof k_ggml[0] || k_ggml[type].blck_size == 0)
        return NULL;
    return &k_ggml[type];
}

/* ---- little-endian helpers ------------------------------------------------------------- */

static uint64_t le_get(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void le_put(unsigned char *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* ---- value accessors -------------------------------------------------------------------- */

static int is_signed_int(uint32_t t)
{
    return t == QK_GGUF_INT8 || t == QK_GGUF_INT16 || t == QK_GGUF_INT32 || t == QK_GGUF_INT64;
}
static int is_unsigned_int(uint32_t t)
{
    return t == QK_GGUF_UINT8 || t == QK_GGUF_UINT16 || t == QK_GGUF_UINT32 || t == QK_GGUF_UINT64 ||
           t == QK_GGUF_BOOL;
}

static int64_t sign_extend(uint64_t v, size_t n)
{
    if (n < 8 && (v >> (8 * n - 1)) & 1)
        v |= ~(uint64_t)0 << (8 * n);
    int64_t s;
    memcpy(&s, &v, sizeof s);
    return s;
}

qk_status qk_gguf_value_u64(const qk_gguf_value *v, uint64_t *out)
{
    if (!v || !out)
        return QK_ERR_INVALID_ARG;
    size_t n = qk_gguf_type_size(v->type);
    if (is_unsigned_int(v->type)) {
        *out = le_get(v->data, n);
        return QK_OK;
    }
    if (is_signed_int(v->type)) {
        int64_t s = sign_extend(le_get(v->data, n), n);
        if (s < 0)
            return QK_ERR_INVALID_ARG;
        *out = (uint64_t)s;
        return QK_OK;
    }
    return QK_ERR_INVALID_ARG;
}

qk_status qk_gguf_value_i64(const qk_gguf_value *v, int64_t *out)
{
    if (!v || !out)
        return QK_ERR_INVALID_ARG;
    size_t n = qk_gguf_type_size(v->type);
    if (is_signed_int(v->type)) {
        *out = sign_extend(le_get(v->data, n), n);
        return QK_OK;
    }
    if (is_unsigned_int(v->type)) {
        uint64_t u = le_get(v->data, n);
        if (u > (uint64_t)INT64_MAX)
            return QK_ERR_INVALID_ARG;
        *out = (int64_t)u;
        return QK_OK;
    }
    return QK_ERR_INVALID_ARG;
}

qk_status qk_gguf_value_f64(const qk_gguf_value *v, double *out)
{
    if (!v || !out)
        return QK_ERR_INVALID_ARG;
    if (v->type == QK_GGUF_FLOAT32) {
        uint32_t b = (uint32_t)le_get(v->data, 4);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
        return QK_OK;
    }
    if (v->type == QK_GGUF_FLOAT64) {
        uint64_t b = le_get(v->data, 8);
        memcpy(out, &b, 8);
        return QK_OK;
    }
    return QK_ERR_INVALID_ARG;
}

qk_status qk_gguf_array_string(const qk_gguf_value *v, uint64_t i, const char **s, uint64_t *len)
{
    if (!v || !s || !len || v->type != QK_GGUF_ARRAY || v->elem_type != QK_GGUF_STRING || i >= v->count)
        return QK_ERR_INVALID_ARG;
    const unsigned char *p = v->data + v->str_off[i];
    *len = le_get(p, 8);
    *s = (const char *)(p + 8);
    return QK_OK;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Every allocation of a parsed file, freed together. */
typedef struct arena_block {
    struct arena_block *next;
    max_align_t data[];
} arena_block;

struct qk_gguf_file {
    void *map;              /* the mapping when opened from a path */
    size_t map_size;
    uint32_t version, alignment;
    uint64_t data_offset;
    size_t n_kv, n_tensors;
    qk_gguf_kv *kv;
    qk_gguf_tensor *tensors;
    size_t *kv_sorted, *tensor_sorted; /* indices by name, for lookups and the duplicate check */
    arena_block *arena;
};

typedef struct reader {
    const unsigned char *buf;
    size_t len, pos;
    qk_gguf_file *f;
    char *err;
    size_t err_len;
    qk_status st; /* set with the first error */
} reader;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(reader *r, qk_status st, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    qk_io_error(r->err, r->err_len, "GGUF: %s", msg);
    r->st = st;
    return 0;
}

static void *arena_alloc(reader *r, uint64_t count, size_t size)
{
    if (count > (SIZE_MAX - sizeof(arena_block)) / (size ? size : 1)) {
        fail(r, QK_ERR_NO_MEMORY, "allocation of %" PRIu64 " x %" PRIu64 " bytes overflows",
                (uint64_t)(count), (uint64_t)(size));
        return NULL;
    }
    arena_block *b = malloc(sizeof *b + (size_t)count * size + 1);
    if (!b) {
        fail(r, QK_ERR_NO_MEMORY, "out of memory (%" PRIu64 " x %" PRIu64 " bytes)",
                (uint64_t)(count), (uint64_t)(size));
        return NULL;
    }
    b->next = r->f->arena;
    r->f->arena = b;
    return b->data;
}

static size_t left(const reader *r) { return r->len - r->pos; }

static int need(reader *r, uint64_t n, const char *what, const char *name)
{
    if (n > left(r))
        return fail(r, QK_ERR_FORMAT, "truncated file: %s%s needs %" PRIu64 " bytes at byte %" PRIu64,
                    what, name, (uint64_t)(n), (uint64_t)(r->pos));
    return 1;
}

static int get_u32(reader *r, uint32_t *v, const char *what, const char *name)
{
    if (!need(r, 4, what, name))
        return 0;
    *v = (uint32_t)le_get(r->buf + r->pos, 4);
    r->pos += 4;
    return 1;
}

static int get_u64(reader *r, uint64_t *v, const char *what, const char *name)
{
    if (!need(r, 8, what, name))
        return 0;
    *v = le_get(r->buf + r->pos, 8);
    r->pos += 8;
    return 1;
}

/* A string: its length checked against the bytes left before anything else. */
static int get_str(reader *r, const unsigned char **s, uint64_t *len, const char *what, const char *name)
{
    if (!get_u64(r, len, what, name))
        return 0;
    if (*len > left(r))
        return fail(r, QK_ERR_FORMAT, "%s%s: string length %" PRIu64 " runs past the end of the file "
                "(%" PRIu64 " bytes left)",
                what, name, (uint64_t)(*len), (uint64_t)(left(r)));
    *s = r->buf + r->pos;
    r->pos += (size_t)*len;
    return 1;
}

/* A key or tensor name: 1..65535 bytes, no NUL; returned as a C string. */
static int get_name(reader *r, const char **out, const char *what)
{
    const unsigned char *s = NULL;
    uint64_t n = 0;
    size_t at = r->pos;
    if (!get_str(r, &s, &n, what, ""))
        return 0;
    if (n == 0 || n > QK_GGUF_MAX_NAME)
        return fail(r, QK_ERR_FORMAT, "%s at byte %" PRIu64 " has length %" PRIu64 " (must be 1..65535)",
                what, (uint64_t)(at), (uint64_t)(n));
    if (memchr(s, 0, (size_t)n))
        return fail(r, QK_ERR_FORMAT, "%s at byte %" PRIu64 " contains a NUL byte", what, (uint64_t)(at));
    char *c = arena_alloc(r, n + 1, 1);
    if (!c)
        return 0;
    memcpy(c, s, (size_t)n);
    c[n] = '\0';
    *out = c;
    return 1;
}

static int parse_value(reader *r, uint32_t type, int depth, qk_gguf_value *v, const char *key)
{
    memset(v, 0, sizeof *v);
    v->type = type;
    v->enc = r->buf + r->pos;
    size_t start = r->pos;
    size_t sz = qk_gguf_type_size(type);
    if (sz) {
        if (!need(r, sz, "the value of key ", key))
            return 0;
        v->data = r->buf + r->pos;
        r->pos += sz;
    } else if (type == QK_GGUF_STRING) {
        if (!get_str(r, &v->data, &v->count, "the string value of key ", key))
            return 0;
    } else if (type == QK_GGUF_ARRAY) {
        uint32_t et;
        if (!get_u32(r, &et, "the array element type of key ", key) ||
            !get_u64(r, &v->count, "the array length of key ", key))
            return 0;
        if (et >= QK_GGUF_TYPE_COUNT)
            return fail(r, QK_ERR_FORMAT, "key %s: unknown array element type %" PRIu64 " at byte %" PRIu64,
                        key, (uint64_t)(et), (uint64_t)(r->pos - 12));
        if (et == QK_GGUF_ARRAY && depth + 1 >= QK_GGUF_MAX_DEPTH)
            return fail(r, QK_ERR_FORMAT, "key %s: arrays nested more than %" PRIu64 " deep",
                    key, (uint64_t)(QK_GGUF_MAX_DEPTH));
        v->elem_type = et;
        /* The smallest encoding of one element bounds the count by the bytes left. */
        size_t esz = qk_gguf_type_size(et);
        size_t min_elem = esz ? esz : et == QK_GGUF_STRING ? 8 : 12;
        if (v->count > left(r) / min_elem)
            return fail(r, QK_ERR_FORMAT, "key %s: array length %" PRIu64 " runs past the end of the file "
                    "(%" PRIu64 " bytes left)",
                    key, (uint64_t)(v->count), (uint64_t)(left(r)));
        v->data = r->buf + r->pos;
        if (esz) {
            r->pos += (size_t)v->count * esz;
        } else if (et == QK_GGUF_STRING) {
            uint64_t *off = arena_alloc(r, v->count, sizeof *off);
            if (!off)
                return 0;
            for (uint64_t i = 0; i < v->count; i++) {
                const unsigned char *s;
                uint64_t n;
                off[i] = (uint64_t)(r->pos - (size_t)(v->data - r->buf));
                if (!get_str(r, &s, &n, "a string element of key ", key))
                    return 0;
            }
            v->str_off = off;
        } else {
            qk_gguf_value *items = arena_alloc(r, v->count, sizeof *items);
            if (!items)
                return 0;
            for (uint64_t i = 0; i < v->count; i++) {
                uint32_t it;
                if (!get_u32(r, &it, "a nested array's element type of key ", key))
                    return 0;
                r->pos -= 4; /* the nested array parses its own element type */
                if (!parse_value(r, QK_GGUF_ARRAY, depth + 1, &items[i], key))
                    return 0;
            }
            v->items = items;
        }
    } else {
        return fail(r, QK_ERR_FORMAT, "key %s: unknown value type %" PRIu64 " at byte %" PRIu64,
                    key, (uint64_t)(type), (uint64_t)(r->pos - 4));
    }
    v->enc_size = r->pos - start;
    return 1;
}

static const qk_gguf_file *g_sort_file; /* qsort has no context argument in C11 */
static int cmp_kv(const void *a, const void *b)
{
    return strcmp(g_sort_file->kv[*(const size_t *)a].key, g_sort_file->kv[*(const size_t *)b].key);
}
static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(g_sort_file->tensors[*(const size_t *)a].name, g_sort_file->tensors[*(const size_t *)b].name);
}
static int cmp_tensor_offset(const void *a, const void *b)
{
    const qk_gguf_tensor *x = &g_sort_file->tensors[*(const size_t *)a];
    const qk_gguf_tensor *y = &g_sort_file->tensors[*(const size_t *)b];
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : 0;
}

static int parse_tensor_info(reader *r, qk_gguf_tensor *t)
{
    if (!get_name(r, &t->name, "a tensor name"))
        return 0;
    if (!get_u32(r, &t->n_dims, "the dimension count of tensor ", t->name))
        return 0;
    if (t->n_dims > QK_GGUF_MAX_DIMS)
        return fail(r, QK_ERR_FORMAT, "tensor %s has %" PRIu64 " dimensions (at most %" PRIu64 ")",
                t->name, (uint64_t)(t->n_dims), (uint64_t)(QK_GGUF_MAX_DIMS));
    int64_t n = 1;
    int overflow = 0;
    for (int d = 0; d < QK_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if (!get_u64(r, &v, "a dimension of tensor ", t->name))
            return 0;
        if (v > ((uint64_t)1 << 62))
            return fail(r, QK_ERR_FORMAT, "tensor %s: dimension %" PRIu64 " is %" PRIu64 " (too large)",
                    t->name, (uint64_t)(d), (uint64_t)(v));
        t->ne[d] = (int64_t)v;
    }
    for (int d = 0; d < QK_GGUF_MAX_DIMS; d++) {
        if (t->ne[d] == 0) {
            n = 0;
            overflow = 0;
            break;
        }
        if (!overflow && n > INT64_MAX / t->ne[d])
            overflow = 1;
        else if (!overflow)
            n *= t->ne[d];
    }
    if (overflow)
        return fail(r, QK_ERR_FORMAT, "tensor %s: the product of its dimensions overflows int64", t->name);
    t->n = n;
    if (!get_u32(r, &t->type, "the type of tensor ", t->name))
        return 0;
    const qk_ggml_type_traits *tt = qk_ggml_type_get(t->type);
    if (!tt)
        return fail(r, QK_ERR_FORMAT, "tensor %s: unknown ggml type %" PRIu64, t->name, (uint64_t)(t->type));
    if (t->ne[0] % tt->blck_size != 0)
        return fail(r, QK_ERR_FORMAT, "tensor %s: row length %" PRIu64 " is not a multiple of the block size %" PRIu64,
                    t->name, (uint64_t)t->ne[0], (uint64_t)tt->blck_size);
    /* Bytes: rows of ne[0] / blck_size blocks, checked for overflow. */
    uint64_t bytes = (uint64_t)(t->ne[0] / tt->blck_size);
    if (bytes > UINT64_MAX / tt->type_size)
        overflow = 1;
    else
        bytes *= tt->type_size;
    for (int d = 1; d < QK_GGUF_MAX_DIMS && !overflow; d++) {
        if (t->ne[d] != 0 && bytes > UINT64_MAX / (uint64_t)t->ne[d])
            overflow = 1;
        else
            bytes *= (uint64_t)t->ne[d];
    }
    if (overflow || bytes > (uint64_t)SIZE_MAX)
        return fail(r, QK_ERR_FORMAT, "tensor %s: its byte size overflows", t->name);
    t->nbytes = bytes;
    if (!get_u64(r, &t->offset, "the offset of tensor ", t->name))
        return 0;
    return 1;
}

static int parse_all(reader *r)
{
    qk_gguf_file *f = r->f;
    uint32_t magic;
    if (r->len < 4 || (magic = (uint32_t)le_get(r->buf, 4)) != QK_GGUF_MAGIC)
        return fail(r, QK_ERR_FORMAT, "not a GGUF file (no \"GGUF\" magic)");
    r->pos = 4;
    if (!get_u32(r, &f->version, "the version", ""))
        return 0;
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xFFFF) == 0 && f->version != 0)
            return fail(r, QK_ERR_FORMAT, "a big-endian GGUF file (version bytes %" PRIu64 "): only"
                    " little-endian files are supported",
                    (uint64_t)(f->version));
        return fail(r, QK_ERR_FORMAT, "unsupported GGUF version %" PRIu64 " (2 and 3 are read)",
                (uint64_t)(f->version));
    }
    uint64_t nt, nkv;
    if (!get_u64(r, &nt, "the tensor count", "") || !get_u64(r, &nkv, "the key/value count", ""))
        return 0;
    /* A key/value takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 4 + 8. */
    if (nkv > left(r) / 14)
        return fail(r, QK_ERR_FORMAT, "key/value count %" PRIu64 " cannot fit in the %" PRIu64 " bytes left",
                (uint64_t)(nkv), (uint64_t)(left(r)));
    if (nt > left(r) / 25)
        return fail(r, QK_ERR_FORMAT, "tensor count %" PRIu64 " cannot fit in the %" PRIu64 " bytes left",
                (uint64_t)(nt), (uint64_t)(left(r)));
    f->n_kv = (size_t)nkv;
    f->n_tensors = (size_t)nt;
    f->kv = arena_alloc(r, nkv, sizeof *f->kv);
    f->kv_sorted = f->kv ? arena_alloc(r, nkv, sizeof(size_t)) : NULL;
    if (!f->kv || !f->kv_sorted)
        return 0;
    f->alignment = QK_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < f->n_kv; i++) {
        qk_gguf_kv *kv = &f->kv[i];
        uint32_t type;
        if (!get_name(r, &kv->key, "a key") || !get_u32(r, &type, "the value type of key ", kv->key))
            return 0;
        if (!parse_value(r, type, 0, &kv->value, kv->key))
            return 0;
        f->kv_sorted[i] = i;
        if (strcmp(kv->key, "general.alignment") == 0) {
            uint64_t a = 0;
            if (type != QK_GGUF_UINT32)
                return fail(r, QK_ERR_FORMAT, "general.alignment has type %s (must be uint32)",
                        qk_gguf_type_name(type) ? qk_gguf_type_name(type) : "unknown");
            qk_gguf_value_u64(&kv->value, &a);
            if (a == 0 || (a & (a - 1)) != 0)
                return fail(r, QK_ERR_FORMAT, "general.alignment is %" PRIu64 " (must be a power of two)",
                        (uint64_t)(a));
            f->alignment = (uint32_t)a;
        }
    }
    g_sort_file = f;
    qsort(f->kv_sorted, f->n_kv, sizeof(size_t), cmp_kv);
    for (size_t i = 1; i < f->n_kv; i++)
        if (strcmp(f->kv[f->kv_sorted[i - 1]].key, f->kv[f->kv_sorted[i]].key) == 0)
            return fail(r, QK_ERR_FORMAT, "duplicate key %s", f->kv[f->kv_sorted[i]].key);

    f->tensors = arena_alloc(r, nt, sizeof *f->tensors);
    f->tensor_sorted = f->tensors ? arena_alloc(r, nt, sizeof(size_t)) : NULL;
    if (!f->tensors || !f->tensor_sorted)
        return 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        if (!parse_tensor_info(r, &f->tensors[i]))
            return 0;
        if (f->tensors[i].offset % f->alignment != 0)
            return fail(r, QK_ERR_FORMAT, "tensor %s: offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                        f->tensors[i].name, (uint64_t)(f->tensors[i].offset), (uint64_t)(f->alignment));
        f->tensor_sorted[i] = i;
    }
    g_sort_file = f;
    qsort(f->tensor_sorted, f->n_tensors, sizeof(size_t), cmp_tensor_name);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[f->tensor_sorted[i - 1]].name, f->tensors[f->tensor_sorted[i]].name) == 0)
            return fail(r, QK_ERR_FORMAT, "duplicate tensor name %s", f->tensors[f->tensor_sorted[i]].name);

    /* The data section starts at the next multiple of the alignment. */
    uint64_t pad = (f->alignment - r->pos % f->alignment) % f->alignment;
    f->data_offset = (uint64_t)r->pos + pad;
    if (f->n_tensors == 0)
        return 1;
    uint64_t room = f->data_offset <= r->len ? r->len - f->data_offset : 0;
    if (f->data_offset > r->len)
        return fail(r, QK_ERR_FORMAT, "truncated file: the data section starts at byte %" PRIu64 " but the"
                " file has %" PRIu64 " bytes",
                (uint64_t)(f->data_offset), (uint64_t)(r->len));
    for (size_t i = 0; i < f->n_tensors; i++) {
        qk_gguf_tensor *t = &f->tensors[i];
        if (t->offset > room || t->nbytes > room - t->offset)
            return fail(r, QK_ERR_FORMAT, "tensor %s: bytes %" PRIu64 "+%" PRIu64 " of the data section lie"
                    " past the end of the file",
                    t->name, (uint64_t)(t->offset), (uint64_t)(t->nbytes));
        t->data = r->buf + f->data_offset + t->offset;
    }
    /* No two tensors share a byte (the index is reused: lookups by name sort it again). */
    size_t *order = arena_alloc(r, nt, sizeof(size_t));
    if (!order)
        return 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        order[i] = i;
    qsort(order, f->n_tensors, sizeof(size_t), cmp_tensor_offset);
    for (size_t i = 1; i < f->n_tensors; i++) {
        const qk_gguf_tensor *a = &f->tensors[order[i - 1]], *b = &f->tensors[order[i]];
        if (a->offset + a->nbytes > b->offset)
            return fail(r, QK_ERR_FORMAT, "tensors %s and %s overlap in the data section (offsets %" PRIu64 ""
                    " and %" PRIu64 ")",
                    a->name, b->name, (uint64_t)(a->offset), (uint64_t)(b->offset));
    }
    return 1;
}

void qk_gguf_close(qk_gguf_file *f)
{
    if (!f)
        return;
    while (f->arena) {
        arena_block *b = f->arena;
        f->arena = b->next;
        free(b);
    }
    if (f->map)
        munmap(f->map, f->map_size);
    free(f);
}

qk_status qk_gguf_parse(const unsigned char *buf, size_t len, qk_gguf_file **out, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    if (!out || (!buf && len)) {
        qk_io_error(err, err_len, "GGUF: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    qk_gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        qk_io_error(err, err_len, "GGUF: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    reader r = {buf, len, 0, f, err, err_len, QK_OK};
    if (!parse_all(&r)) {
        qk_gguf_close(f);
        return r.st;
    }
    *out = f;
    return QK_OK;
}

qk_status qk_gguf_open(const char *path, qk_gguf_file **out, char *err, size_t err_len)
{
    if (!path || !out) {
        qk_io_error(err, err_len, "GGUF: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    void *map = NULL;
    size_t size = 0;
    qk_status st = qk_map_file(path, "a GGUF file", MADV_NORMAL, &map, &size, err, err_len);
    if (st != QK_OK)
        return st;
    char inner[400];
    st = qk_gguf_parse(map, size, out, inner, sizeof inner);
    if (st != QK_OK) {
        qk_io_error(err, err_len, "%s: %s", path, inner);
        munmap(map, size);
        return st;
    }
    (*out)->map = map;
    (*out)->map_size = size;
    return QK_OK;
}

uint32_t qk_gguf_version(const qk_gguf_file *f) { return f ? f->version : 0; }
uint32_t qk_gguf_alignment(const qk_gguf_file *f) { return f ? f->alignment : 0; }
uint64_t qk_gguf_data_offset(const qk_gguf_file *f) { return f ? f->data_offset : 0; }
size_t qk_gguf_kv_count(const qk_gguf_file *f) { return f ? f->n_kv : 0; }
size_t qk_gguf_tensor_count(const qk_gguf_file *f) { return f ? f->n_tensors : 0; }

const qk_gguf_kv *qk_gguf_kv_at(const qk_gguf_file *f, size_t i)
{
    return f && i < f->n_kv ? &f->kv[i] : NULL;
}

const qk_gguf_tensor *qk_gguf_tensor_at(const qk_gguf_file *f, size_t i)
{
    return f && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const qk_gguf_kv *qk_gguf_kv_find(const qk_gguf_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    size_t lo = 0, hi = f->n_kv;
    while (lo < hi) { /* binary search in the sorted index */
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->kv[f->kv_sorted[mid]].key, key);
        if (c == 0)
            return &f->kv[f->kv_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const qk_gguf_tensor *qk_gguf_tensor_find(const qk_gguf_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[f->tensor_sorted[mid]].name, name);
        if (c == 0)
            return &f->tensors[f->tensor_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct wkv {
    char *key;
    uint32_t type;
    unsigned char *enc;
    size_t enc_size;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims, type;
    int64_t ne[QK_GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} wtensor;

struct qk_gguf_writer {
    qk_atomic_file out;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
    int has_file;          /* begun with a path (commit writes it); 0: qk_gguf_writer_new, header only */
};

qk_status qk_gguf_writer_new(qk_gguf_writer **out, char *err, size_t err_len)
{
    if (!out) {
        qk_io_error(err, err_len, "GGUF writer: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    *out = calloc(1, sizeof **out);
    if (!*out) {
        qk_io_error(err, err_len, "GGUF writer: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    (*out)->out.fd = -1;
    (*out)->alignment = QK_GGUF_DEFAULT_ALIGNMENT;
    return QK_OK;
}

void qk_gguf_writer_free(qk_gguf_writer *w)
{
    qk_gguf_writer_abort(w);
}

qk_status qk_gguf_writer_begin(const char *path, qk_gguf_writer **out, char *err, size_t err_len)
{
    if (!path || !out) {
        qk_io_error(err, err_len, "GGUF writer: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    qk_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        qk_io_error(err, err_len, "GGUF writer: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    w->alignment = QK_GGUF_DEFAULT_ALIGNMENT;
    w->has_file = 1;
    qk_status st = qk_atomic_open(&w->out, path, err, err_len);
    if (st != QK_OK) {
        free(w);
        return st;
    }
    *out = w;
    return QK_OK;
}

void qk_gguf_writer_abort(qk_gguf_writer *w)
{
    if (!w)
        return;
    if (w->has_file)
        qk_atomic_abort(&w->out);
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].enc);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static qk_status check_name(const char *name, const char *what, char *err, size_t err_len)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > QK_GGUF_MAX_NAME) {
        qk_io_error(err, err_len, "GGUF writer: %s must be 1..65535 bytes", what);
        return QK_ERR_INVALID_ARG;
    }
    return QK_OK;
}

/* Validate an encoding by parsing it as a value of a one-key file's reader. */
static qk_status check_encoding(const char *key, uint32_t type, const void *enc, size_t enc_size, char *err,
                                size_t err_len)
{
    qk_gguf_file tmp = {0};
    reader r = {enc, enc_size, 0, &tmp, err, err_len, QK_OK};
    qk_gguf_value v;
    int ok = enc != NULL && parse_value(&r, type, 0, &v, key) && r.pos == enc_size;
    while (tmp.arena) {
        arena_block *b = tmp.arena;
        tmp.arena = b->next;
        free(b);
    }
    if (!ok) {
        if (r.st == QK_OK)
            qk_io_error(err, err_len, "GGUF writer: key %s: %zu bytes follow the value's encoding", key,
                        enc_size - r.pos);
        return r.st == QK_ERR_NO_MEMORY ? QK_ERR_NO_MEMORY : QK_ERR_INVALID_ARG;
    }
    return QK_OK;
}

/* Store key = (type, enc); takes ownership of enc. */
static qk_status put_kv(qk_gguf_writer *w, const char *key, uint32_t type, unsigned char *enc, size_t enc_size,
                        char *err, size_t err_len)
{
    qk_status st = check_name(key, "a key", err, err_len);
    if (st == QK_OK && strcmp(key, "general.alignment") == 0) {
        uint32_t a = type == QK_GGUF_UINT32 ? (uint32_t)le_get(enc, 4) : 0;
        if (a == 0 || (a & (a - 1)) != 0) {
            qk_io_error(err, err_len, "GGUF writer: general.alignment must be a uint32 power of two");
            st = QK_ERR_INVALID_ARG;
        } else {
            w->alignment = a;
        }
    }
    if (st != QK_OK) {
        free(enc);
        return st;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].enc);
            w->kv[i].type = type;
            w->kv[i].enc = enc;
            w->kv[i].enc_size = enc_size;
            return QK_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *n = realloc(w->kv, cap * sizeof *n);
        if (!n) {
            free(enc);
            qk_io_error(err, err_len, "GGUF writer: out of memory");
            return QK_ERR_NO_MEMORY;
        }
        w->kv = n;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(enc);
        qk_io_error(err, err_len, "GGUF writer: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    w->kv[w->n_kv++] = (wkv){k, type, enc, enc_size};
    return QK_OK;
}

/* One fixed-size element in host order -> little-endian bytes. */
static void put_elem(unsigned char *p, uint32_t type, const void *v)
{
    size_t n = qk_gguf_type_size(type);
    uint64_t bits = 0;
    switch (n) {
    case 1: bits = *(const uint8_t *)v; break;
    case 2: { uint16_t x; memcpy(&x, v, 2); bits = x; break; }
    case 4: { uint32_t x; memcpy(&x, v, 4); bits = x; break; }
    default: memcpy(&bits, v, 8); break;
    }
    le_put(p, bits, n);
}

qk_status qk_gguf_writer_set_scalar(qk_gguf_writer *w, const char *key, qk_gguf_type type, const void *value,
                                    char *err, size_t err_len)
{
    size_t n = qk_gguf_type_size(type);
    if (!w || !value || n == 0) {
        qk_io_error(err, err_len, "GGUF writer: set_scalar needs a fixed-size type and a value");
        return QK_ERR_INVALID_ARG;
    }
    unsigned char *enc = malloc(n);
    if (!enc)
        return QK_ERR_NO_MEMORY;
    put_elem(enc, type, value);
    return put_kv(w, key, type, enc, n, err, err_len);
}

qk_status qk_gguf_writer_set_string(qk_gguf_writer *w, const char *key, const char *s, size_t len, char *err,
                                    size_t err_len)
{
    if (!w || (!s && len)) {
        qk_io_error(err, err_len, "GGUF writer: set_string: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    unsigned char *enc = malloc(8 + len);
    if (!enc)
        return QK_ERR_NO_MEMORY;
    le_put(enc, len, 8);
    if (len)
        memcpy(enc + 8, s, len);
    return put_kv(w, key, QK_GGUF_STRING, enc, 8 + len, err, err_len);
}

qk_status qk_gguf_writer_set_array(qk_gguf_writer *w, const char *key, qk_gguf_type elem_type, const void *elems,
                                   uint64_t count, char *err, size_t err_len)
{
    size_t n = qk_gguf_type_size(elem_type);
    if (!w || n == 0 || (!elems && count) || count > (SIZE_MAX - 12) / n) {
        qk_io_error(err, err_len, "GGUF writer: set_array needs a fixed-size element type and elements");
        return QK_ERR_INVALID_ARG;
    }
    unsigned char *enc = malloc(12 + (size_t)count * n);
    if (!enc)
        return QK_ERR_NO_MEMORY;
    le_put(enc, elem_type, 4);
    le_put(enc + 4, count, 8);
    for (uint64_t i = 0; i < count; i++)
        put_elem(enc + 12 + i * n, elem_type, (const unsigned char *)elems + i * n);
    return put_kv(w, key, QK_GGUF_ARRAY, enc, 12 + (size_t)count * n, err, err_len);
}

qk_status qk_gguf_writer_set_string_array(qk_gguf_writer *w, const char *key, const char *const *strs,
                                          uint64_t count, char *err, size_t err_len)
{
    if (!w || (!strs && count)) {
        qk_io_error(err, err_len, "GGUF writer: set_string_array: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    size_t total = 12;
    for (uint64_t i = 0; i < count; i++) {
        if (!strs[i]) {
            qk_io_error(err, err_len, "GGUF writer: key %s: string %" PRIu64 " is NULL", key ? key : "", i);
            return QK_ERR_INVALID_ARG;
        }
        total += 8 + strlen(strs[i]);
    }
    unsigned char *enc = malloc(total), *p = enc + 12;
    if (!enc)
        return QK_ERR_NO_MEMORY;
    le_put(enc, QK_GGUF_STRING, 4);
    le_put(enc + 4, count, 8);
    for (uint64_t i = 0; i < count; i++) {
        size_t l = strlen(strs[i]);
        le_put(p, l, 8);
        memcpy(p + 8, strs[i], l);
        p += 8 + l;
    }
    return put_kv(w, key, QK_GGUF_ARRAY, enc, total, err, err_len);
}

qk_status qk_gguf_writer_set_encoded(qk_gguf_writer *w, const char *key, uint32_t type, const void *enc,
                                     size_t enc_size, char *err, size_t err_len)
{
    if (!w || check_name(key, "a key", err, err_len) != QK_OK)
        return QK_ERR_INVALID_ARG;
    qk_status st = check_encoding(key, type, enc, enc_size, err, err_len);
    if (st != QK_OK)
        return st;
    unsigned char *copy = malloc(enc_size ? enc_size : 1);
    if (!copy)
        return QK_ERR_NO_MEMORY;
    memcpy(copy, enc, enc_size);
    return put_kv(w, key, type, copy, enc_size, err, err_len);
}

qk_status qk_gguf_writer_add_tensor(qk_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                                    uint32_t ggml_type, const void *data, uint64_t nbytes, char *err,
                                    size_t err_len)
{
    if (!w || check_name(name, "a tensor name", err, err_len) != QK_OK)
        return QK_ERR_INVALID_ARG;
    const qk_ggml_type_traits *tt = qk_ggml_type_get(ggml_type);
    if (!tt || n_dims > QK_GGUF_MAX_DIMS || (n_dims && !ne) || (w->has_file && !data && nbytes)) {
        qk_io_error(err, err_len, "GGUF writer: tensor %s: bad type, dimensions or data", name);
        return QK_ERR_INVALID_ARG;
    }
    wtensor t = {0};
    t.n_dims = n_dims;
    t.type = ggml_type;
    t.data = data;
    t.nbytes = nbytes;
    uint64_t bytes = 0;
    for (int d = 0; d < QK_GGUF_MAX_DIMS; d++)
        t.ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    int bad = t.ne[0] < 0 || t.ne[0] % tt->blck_size != 0;
    if (!bad) {
        bytes = (uint64_t)(t.ne[0] / tt->blck_size) * tt->type_size; /* ne[0] <= 2^62 checked below */
        for (int d = 0; d < QK_GGUF_MAX_DIMS && !bad; d++)
            bad = t.ne[d] < 0 || t.ne[d] > ((int64_t)1 << 62);
        for (int d = 1; d < QK_GGUF_MAX_DIMS && !bad; d++) {
            if (t.ne[d] != 0 && bytes > UINT64_MAX / (uint64_t)t.ne[d])
                bad = 1;
            else
                bytes *= (uint64_t)t.ne[d];
        }
    }
    if (bad || bytes != nbytes) {
        qk_io_error(err, err_len, "GGUF writer: tensor %s: shape does not fit type %s or %" PRIu64
                    " bytes (expected %" PRIu64 ")", name, tt->name, nbytes, bytes);
        return QK_ERR_INVALID_ARG;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            qk_io_error(err, err_len, "GGUF writer: duplicate tensor name %s", name);
            return QK_ERR_INVALID_ARG;
        }
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *n = realloc(w->t, cap * sizeof *n);
        if (!n)
            return QK_ERR_NO_MEMORY;
        w->t = n;
        w->cap_t = cap;
    }
    t.name = strdup(name);
    if (!t.name)
        return QK_ERR_NO_MEMORY;
    w->t[w->n_t++] = t;
    return QK_OK;
}

typedef struct growbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} growbuf;

static unsigned char *gb_take(growbuf *b, size_t n)
{
    if (b->oom)
        return NULL;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    unsigned char *at = b->p + b->n;
    b->n += n;
    return at;
}

static void gb_le(growbuf *b, uint64_t v, size_t n)
{
    unsigned char *p = gb_take(b, n);
    if (p)
        le_put(p, v, n);
}

static void gb_bytes(growbuf *b, const void *s, size_t n)
{
    unsigned char *p = gb_take(b, n);
    if (p && n)
        memcpy(p, s, n);
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* The header (through the padding before the data section) and each tensor's
 * offset in the data section. */
static qk_status build_header(const qk_gguf_writer *w, growbuf *h, uint64_t *offsets, char *err, size_t err_len)
{
    gb_le(h, QK_GGUF_MAGIC, 4);
    gb_le(h, QK_GGUF_VERSION, 4);
    gb_le(h, w->n_t, 8);
    gb_le(h, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        size_t kl = strlen(w->kv[i].key);
        gb_le(h, kl, 8);
        gb_bytes(h, w->kv[i].key, kl);
        gb_le(h, w->kv[i].type, 4);
        gb_bytes(h, w->kv[i].enc, w->kv[i].enc_size);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        gb_le(h, nl, 8);
        gb_bytes(h, t->name, nl);
        gb_le(h, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            gb_le(h, (uint64_t)t->ne[d], 8);
        gb_le(h, t->type, 4);
        gb_le(h, off, 8);
        if (offsets)
            offsets[i] = off;
        off = align_up(off + t->nbytes, w->alignment);
    }
    size_t hdr = h->n;
    unsigned char *pad = gb_take(h, (size_t)(align_up(hdr, w->alignment) - hdr));
    if (pad)
        memset(pad, 0, h->p + h->n - pad);
    if (h->oom) {
        free(h->p);
        memset(h, 0, sizeof *h);
        qk_io_error(err, err_len, "GGUF writer: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    return QK_OK;
}

qk_status qk_gguf_writer_header(const qk_gguf_writer *w, unsigned char **head, size_t *head_len, uint64_t *offsets,
                                char *err, size_t err_len)
{
    if (!w || !head || !head_len) {
        qk_io_error(err, err_len, "GGUF writer: invalid arguments");
        return QK_ERR_INVALID_ARG;
    }
    growbuf h = {0};
    qk_status st = build_header(w, &h, offsets, err, err_len);
    if (st == QK_OK && offsets)
        for (size_t i = 0; i < w->n_t; i++)
            offsets[i] += h.n;
    *head = h.p;
    *head_len = h.n;
    return st;
}

uint32_t qk_gguf_writer_alignment(const qk_gguf_writer *w) { return w ? w->alignment : 0; }

qk_status qk_gguf_writer_commit(qk_gguf_writer *w, char *err, size_t err_len)
{
    if (!w)
        return QK_ERR_INVALID_ARG;
    if (!w->has_file) {
        qk_io_error(err, err_len, "GGUF writer: commit of a writer made by qk_gguf_writer_new (no file)");
        qk_gguf_writer_abort(w);
        return QK_ERR_INVALID_ARG;
    }
    growbuf h = {0};
    qk_status st = build_header(w, &h, NULL, err, err_len);
    if (st == QK_OK)
        st = qk_atomic_write(&w->out, h.p, h.n, err, err_len);
    static const unsigned char zeros[64] = {0};
    for (size_t i = 0; i < w->n_t && st == QK_OK; i++) {
        const wtensor *t = &w->t[i];
        st = qk_atomic_write(&w->out, t->data, (size_t)t->nbytes, err, err_len);
        uint64_t p = align_up(t->nbytes, w->alignment) - t->nbytes;
        while (p > 0 && st == QK_OK) { /* padding between tensors (gguf-py pads after the last one too) */
            size_t c = p < sizeof zeros ? (size_t)p : sizeof zeros;
            st = qk_atomic_write(&w->out, zeros, c, err, err_len);
            p -= c;
        }
    }
    free(h.p);
    if (st == QK_OK) {
        st = qk_atomic_commit(&w->out, err, err_len);
    }
    qk_gguf_writer_abort(w);
    return st;
}
