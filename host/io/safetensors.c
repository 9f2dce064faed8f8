/* safetensors reader and writer.
 *
 * The header is parsed with cJSON. cJSON is lenient where the format is not,
 * so a lexical pass over the raw header bytes comes first (scan_header): it
 * checks UTF-8, control characters and the "\u0000" escape (names are C
 * strings), and that every number is a plain integer no larger than 2^53 (JSON
 * numbers reach cJSON as doubles; these are exactly the integers a double
 * holds, so the values cJSON hands back are exact). Everything cJSON builds is
 * then checked field by field before any tensor is exposed. Every length and
 * offset read from the file is untrusted and checked before it is used. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "atomic_file.h"
#include "map_file.h"
#include "big_alloc.h"

/* Tensor bytes are exposed in place as host-order numbers; safetensors is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "qkern's safetensors I/O assumes a little-endian host"
#endif

#define ST_PREFIX 8
#define ST_ALIGN 8                          /* the official writer pads the header to 8 bytes */
#define ST_MAX_INT ((uint64_t)1 << 53)      /* largest integer every JSON reader holds exactly */
#define ST_METADATA_KEY "__metadata__"


/* ---- dtypes ------------------------------------------------------------------ */

typedef struct st_type {
    const char *name;
    qk_dtype dtype; /* QK_ST_OTHER where qkern does not compute on it */
    int bits;
} st_type;

/* Every dtype of the official format (safetensors 0.6); the first nine are qkern's. */
static const st_type st_types[] = {
    {"F32", QK_F32, 32},          {"F64", QK_F64, 64},          {"F16", QK_F16, 16},
    {"BF16", QK_BF16, 16},        {"U8", QK_U8, 8},             {"I8", QK_I8, 8},
    {"U16", QK_U16, 16},          {"I16", QK_I16, 16},          {"I32", QK_I32, 32},
    {"BOOL", QK_ST_OTHER, 8},     {"U32", QK_ST_OTHER, 32},     {"I64", QK_ST_OTHER, 64},
    {"U64", QK_ST_OTHER, 64},     {"C64", QK_ST_OTHER, 64},     {"F8_E4M3", QK_ST_OTHER, 8},
    {"F8_E5M2", QK_ST_OTHER, 8},  {"F8_E8M0", QK_ST_OTHER, 8},  {"F4", QK_ST_OTHER, 4},
    {"F6_E2M3", QK_ST_OTHER, 6},  {"F6_E3M2", QK_ST_OTHER, 6},
};
#define N_ST_TYPES (sizeof st_types / sizeof st_types[0])

static const st_type *type_by_name(const char *s)
{
    for (size_t i = 0; i < N_ST_TYPES; i++)
        if (strcmp(st_types[i].name, s) == 0)
            return &st_types[i];
    return NULL;
}

static const st_type *type_by_dtype(qk_dtype dtype)
{
    if ((int)dtype < 0 || dtype >= QK_DTYPE_COUNT)
        return NULL;
    for (size_t i = 0; i < N_ST_TYPES; i++)
        if (st_types[i].dtype == dtype)
            return &st_types[i];
    return NULL;
}

const char *qk_st_dtype_string(qk_dtype dtype)
{
    const st_type *t = type_by_dtype(dtype);
    return t ? t->name : NULL;
}

qk_status qk_st_dtype_parse(const char *st_dtype, qk_dtype *dtype, int *elem_bits)
{
    const st_type *t = st_dtype ? type_by_name(st_dtype) : NULL;
    if (t == NULL)
        return QK_ERR_UNSUPPORTED;
    if (dtype != NULL)
        *dtype = t->dtype;
    if (elem_bits != NULL)
        *elem_bits = t->bits;
    return QK_OK;
}

/* ---- text helpers -------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one
 * (bad lead byte, truncated, overlong, surrogate, above U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1fu;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0fu;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07u;
    else
        return 0;
    if (avail < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
        return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
        return 0;
    return len;
}

static int valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t avail = strlen(s);
    while (avail > 0) {
        size_t l = utf8_len(p, avail);
        if (l == 0)
            return 0;
        p += l;
        avail -= l;
    }
    return 1;
}

/* A name or file text for a message: control bytes become '?', UTF-8 passes,
 * cut (on a character boundary) with "..." when long. */
static const char *shown(char *out, size_t out_len, const char *s, size_t len)
{
    size_t max = out_len - 4, j = 0, i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : utf8_len((const unsigned char *)s + i, len - i);
        if (l == 0)
            l = 1, c = '?';
        if (j + l > max)
            break;
        if (l == 1)
            out[j++] = (c >= 0x20 && c != 0x7f) ? (char)c : '?';
        else
            memcpy(out + j, s + i, l), j += l;
        i += l;
    }
    if (i < len)
        memcpy(out + j, "...", 3), j += 3;
    out[j] = '\0';
    return out;
}

#define SHOWN_LEN 72
#define SHOW(buf, s) shown(buf, sizeof buf, s, strlen(s))

/* ---- lexical checks on the raw header ---------------------------------------------- */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* A number token outside strings starts at h[i] ('-' or digit). Accept only
 * -?(0|[1-9][0-9]*) with magnitude <= 2^53; *next is where it ends. */
static qk_status scan_number(const unsigned char *h, size_t n, size_t i, size_t *next, char *err, size_t err_len)
{
    size_t j = i;
    if (h[j] == '-')
        j++;
    size_t digits = j;
    uint64_t v = 0;
    int too_big = 0;
    while (j < n && is_digit(h[j])) {
        if (v > ST_MAX_INT)
            too_big = 1;
        else
            v = v * 10 + (uint64_t)(h[j] - '0');
        j++;
    }
    size_t end = j;
    while (end < n && (is_digit(h[end]) || h[end] == '.' || h[end] == 'e' || h[end] == 'E' || h[end] == '+' ||
                       h[end] == '-'))
        end++;
    char text[40];
    shown(text, sizeof text, (const char *)h + i, end - i);
    if (j == digits) { /* a lone '-': not JSON, cJSON says so */
        *next = j;
        return QK_OK;
    }
    if (end != j) {
        qk_io_error(err, err_len,
                "bad header: number %s at header byte %zu is not an integer (shape and data_offsets hold "
                "non-negative integers)",
                text, i);
        return QK_ERR_FORMAT;
    }
    if (j - digits > 1 && h[digits] == '0') {
        qk_io_error(err, err_len, "bad header: number %s at header byte %zu has a leading zero", text, i);
        return QK_ERR_FORMAT;
    }
    if (too_big || v > ST_MAX_INT) {
        qk_io_error(err, err_len, "bad header: integer %s at header byte %zu is larger than 2^53", text, i);
        return QK_ERR_FORMAT;
    }
    *next = j;
    return QK_OK;
}

/* UTF-8 throughout; no raw control bytes in strings; only JSON whitespace
 * among the control bytes outside them; no \u0000; integers only. */
static qk_status scan_header(const unsigned char *h, size_t n, char *err, size_t err_len)
{
    size_t first = 0; /* JSON whitespace may come first, as the official reader allows */
    while (first < n && (h[first] == ' ' || h[first] == '\t' || h[first] == '\n' || h[first] == '\r'))
        first++;
    if (first == n || h[first] != '{') {
        qk_io_error(err, err_len, "bad header: it must be a JSON object starting with '{' (found byte 0x%02x at %zu)",
                first < n ? h[first] : 0u, first);
        return QK_ERR_FORMAT;
    }
    int in_string = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = h[i];
        if (c >= 0x80) {
            size_t l = utf8_len(h + i, n - i);
            if (l == 0) {
                qk_io_error(err, err_len, "bad header: invalid UTF-8 at header byte %zu", i);
                return QK_ERR_FORMAT;
            }
            i += l;
            continue;
        }
        if (in_string) {
            if (c == '"') {
                in_string = 0;
            } else if (c == '\\') {
                if (n - i >= 6 && memcmp(h + i + 1, "u0000", 5) == 0) {
                    qk_io_error(err, err_len,
                            "bad header: \\u0000 (a NUL character) in a string at header byte %zu is not supported",
                            i);
                    return QK_ERR_FORMAT;
                }
                if (i + 1 < n && h[i + 1] < 0x80)
                    i++; /* the escaped character; anything else is cJSON's to refuse */
            } else if (c < 0x20) {
                qk_io_error(err, err_len, "bad header: unescaped control byte 0x%02x in a string at header byte %zu", c,
                        i);
                return QK_ERR_FORMAT;
            }
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '-' || is_digit(c)) {
            size_t next = i;
            qk_status st = scan_number(h, n, i, &next, err, err_len);
            if (st != QK_OK)
                return st;
            i = next;
            continue;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            qk_io_error(err, err_len, "bad header: control byte 0x%02x at header byte %zu", c, i);
            return QK_ERR_FORMAT;
        }
        i++;
    }
    return QK_OK;
}

/* ---- the file ------------------------------------------------------------------------- */

typedef struct st_meta {
    const char *key, *value;
} st_meta;

struct qk_st_file {
    qk_st_tensor *tensors; /* by data offset */
    size_t n_tensors;
    size_t *by_name;       /* indices into tensors, sorted by name */
    st_meta *meta;         /* sorted by key */
    size_t n_meta;
    char *strings;         /* names, metadata keys and values */
    int64_t *shapes;
    size_t header_len, data_size;
    void *map; /* qk_st_open's mapping, or NULL */
    size_t map_len;
};

static void free_file(qk_st_file *f)
{
    if (f == NULL)
        return;
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f->shapes);
    if (f->map != NULL)
        munmap(f->map, f->map_len);
    free(f);
}

void qk_st_close(qk_st_file *f) { free_file(f); }

/* One tensor entry while parsing. */
typedef struct entry {
    const char *name; /* cJSON's copy */
    const st_type *type;
    const cJSON *shape;
    int ndim;
    int64_t n;
    uint64_t begin, end;
    size_t order; /* position in the header */
} entry;

/* A JSON number known (after scan_header) to be an integer of magnitude <= 2^53. */
static int get_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || signbit(d))
        return -2;
    if (d != floor(d) || d > (double)ST_MAX_INT)
        return -3; /* unreachable after scan_header; kept as a second line */
    *out = (uint64_t)d;
    return 0;
}

static qk_status check_shape(const cJSON *shape, entry *e, const char *name, char *err, size_t err_len)
{
    char nm[SHOWN_LEN];
    if (!cJSON_IsArray(shape)) {
        qk_io_error(err, err_len, "tensor '%s': 'shape' must be an array of integers", SHOW(nm, name));
        return QK_ERR_FORMAT;
    }
    int ndim = 0;
    int64_t n = 1;
    int zero = 0;
    for (const cJSON *d = shape->child; d != NULL; d = d->next) {
        if (ndim == QK_ST_MAX_DIMS) {
            qk_io_error(err, err_len, "tensor '%s': 'shape' has more than %d dimensions", SHOW(nm, name),
                    QK_ST_MAX_DIMS);
            return QK_ERR_FORMAT;
        }
        uint64_t v = 0;
        int r = get_uint(d, &v);
        if (r == -1) {
            qk_io_error(err, err_len, "tensor '%s': shape[%d] is not a number", SHOW(nm, name), ndim);
            return QK_ERR_FORMAT;
        }
        if (r == -2) {
            qk_io_error(err, err_len, "tensor '%s': shape[%d] is negative", SHOW(nm, name), ndim);
            return QK_ERR_FORMAT;
        }
        if (r != 0) {
            qk_io_error(err, err_len, "tensor '%s': shape[%d] is not an integer of at most 2^53", SHOW(nm, name), ndim);
            return QK_ERR_FORMAT;
        }
        if (v == 0)
            zero = 1;
        ndim++;
    }
    /* The product, unless a zero makes it 0 (then it cannot overflow). */
    if (zero) {
        n = 0;
    } else {
        for (const cJSON *d = shape->child; d != NULL; d = d->next) {
            int64_t v = (int64_t)d->valuedouble;
            if (n > INT64_MAX / v) {
                qk_io_error(err, err_len, "tensor '%s': the shape's element count overflows 64 bits", SHOW(nm, name));
                return QK_ERR_FORMAT;
            }
            n *= v;
        }
    }
    e->ndim = ndim;
    e->n = n;
    return QK_OK;
}

/* Bytes of n elements of type (sub-byte types must fill whole bytes). */
static qk_status tensor_bytes(const st_type *type, int64_t n, uint64_t *bytes, const char *name, char *err,
                              size_t err_len)
{
    char nm[SHOWN_LEN];
    if ((uint64_t)n > UINT64_MAX / (uint64_t)type->bits) {
        qk_io_error(err, err_len, "tensor '%s': %lld elements of %s overflow 64 bits of bytes", SHOW(nm, name),
                (long long)n, type->name);
        return QK_ERR_FORMAT;
    }
    uint64_t bits = (uint64_t)n * (uint64_t)type->bits;
    if (bits % 8 != 0) {
        qk_io_error(err, err_len, "tensor '%s': %lld elements of %s are %llu bits, not a whole number of bytes",
                SHOW(nm, name), (long long)n, type->name, (unsigned long long)bits);
        return QK_ERR_FORMAT;
    }
    *bytes = bits / 8;
    return QK_OK;
}

static qk_status check_tensor(const cJSON *obj, size_t data_size, entry *e, char *err, size_t err_len)
{
    char nm[SHOWN_LEN];
    const char *name = obj->string;
    e->name = name;
    if (!cJSON_IsObject(obj)) {
        qk_io_error(err, err_len, "tensor '%s': its entry must be an object with dtype, shape and data_offsets",
                SHOW(nm, name));
        return QK_ERR_FORMAT;
    }
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *k = obj->child; k != NULL; k = k->next) {
        const cJSON **slot = NULL;
        if (strcmp(k->string, "dtype") == 0)
            slot = &dtype;
        else if (strcmp(k->string, "shape") == 0)
            slot = &shape;
        else if (strcmp(k->string, "data_offsets") == 0)
            slot = &offsets;
        if (slot == NULL) {
            char key[SHOWN_LEN];
            qk_io_error(err, err_len, "tensor '%s': unknown key '%s' (expected dtype, shape, data_offsets)",
                    SHOW(nm, name), SHOW(key, k->string));
            return QK_ERR_FORMAT;
        }
        if (*slot != NULL) {
            qk_io_error(err, err_len, "tensor '%s': duplicate key '%s'", SHOW(nm, name), k->string);
            return QK_ERR_FORMAT;
        }
        *slot = k;
    }
    if (dtype == NULL || shape == NULL || offsets == NULL) {
        qk_io_error(err, err_len, "tensor '%s': missing key '%s'", SHOW(nm, name),
                dtype == NULL ? "dtype" : shape == NULL ? "shape" : "data_offsets");
        return QK_ERR_FORMAT;
    }

    if (!cJSON_IsString(dtype)) {
        qk_io_error(err, err_len, "tensor '%s': 'dtype' must be a string such as \"F32\"", SHOW(nm, name));
        return QK_ERR_FORMAT;
    }
    e->type = type_by_name(dtype->valuestring);
    if (e->type == NULL) {
        char dt[40];
        qk_io_error(err, err_len,
                "tensor '%s': unknown dtype '%s' (known: F32 F64 F16 BF16 U8 I8 U16 I16 I32 U32 I64 U64 BOOL C64 "
                "F8_E4M3 F8_E5M2 F8_E8M0 F4 F6_E2M3 F6_E3M2)",
                SHOW(nm, name), SHOW(dt, dtype->valuestring));
        return QK_ERR_FORMAT;
    }

    qk_status st = check_shape(shape, e, name, err, err_len);
    if (st != QK_OK)
        return st;
    e->shape = shape;
    uint64_t bytes = 0;
    st = tensor_bytes(e->type, e->n, &bytes, name, err, err_len);
    if (st != QK_OK)
        return st;

    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2) {
        qk_io_error(err, err_len, "tensor '%s': 'data_offsets' must be an array [begin, end]", SHOW(nm, name));
        return QK_ERR_FORMAT;
    }
    uint64_t begin = 0, end = 0;
    int rb = get_uint(offsets->child, &begin), re = get_uint(offsets->child->next, &end);
    if (rb != 0 || re != 0) {
        qk_io_error(err, err_len, "tensor '%s': data_offsets must be two non-negative integers", SHOW(nm, name));
        return QK_ERR_FORMAT;
    }
    if (end < begin) {
        qk_io_error(err, err_len, "tensor '%s': data_offsets end %llu is before begin %llu", SHOW(nm, name),
                (unsigned long long)end, (unsigned long long)begin);
        return QK_ERR_FORMAT;
    }
    if (end > data_size) {
        qk_io_error(err, err_len,
                "tensor '%s': data_offsets [%llu, %llu] run past the end of the data section (%zu bytes): "
                "truncated file?",
                SHOW(nm, name), (unsigned long long)begin, (unsigned long long)end, data_size);
        return QK_ERR_FORMAT;
    }
    if (end - begin != bytes) {
        qk_io_error(err, err_len,
                "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %lld elements of %s take %llu",
                SHOW(nm, name), (unsigned long long)begin, (unsigned long long)end,
                (unsigned long long)(end - begin), (long long)e->n, e->type->name, (unsigned long long)bytes);
        return QK_ERR_FORMAT;
    }
    e->begin = begin;
    e->end = end;
    return QK_OK;
}

static qk_status check_metadata(const cJSON *meta, size_t *count, size_t *string_bytes, char *err, size_t err_len)
{
    if (!cJSON_IsObject(meta)) {
        qk_io_error(err, err_len, "bad header: '__metadata__' must be an object of strings");
        return QK_ERR_FORMAT;
    }
    for (const cJSON *m = meta->child; m != NULL; m = m->next) {
        if (!cJSON_IsString(m) || m->valuestring == NULL) {
            char key[SHOWN_LEN];
            qk_io_error(err, err_len, "bad header: '__metadata__' value for key '%s' is not a string",
                    SHOW(key, m->string));
            return QK_ERR_FORMAT;
        }
        if (!valid_utf8(m->string) || !valid_utf8(m->valuestring)) {
            qk_io_error(err, err_len, "bad header: '__metadata__' holds a string that is not valid UTF-8");
            return QK_ERR_FORMAT;
        }
        (*count)++;
        *string_bytes += strlen(m->string) + 1 + strlen(m->valuestring) + 1;
    }
    return QK_OK;
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

typedef struct name_ref {
    const char *name;
    size_t index;
} name_ref;

static int cmp_name_ref(const void *a, const void *b)
{
    const name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_meta(const void *a, const void *b)
{
    const st_meta *x = a, *y = b;
    return strcmp(x->key, y->key);
}

/* The coverage rule: sorted by (begin, end), the tensors tile [0, data_size). */
static qk_status check_coverage(const entry *e, size_t n, size_t data_size, char *err, size_t err_len)
{
    char nm[SHOWN_LEN], nm2[SHOWN_LEN];
    uint64_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].begin < pos) {
            qk_io_error(err, err_len, "tensor '%s' (bytes [%llu, %llu)) overlaps tensor '%s' (bytes [%llu, %llu))",
                    SHOW(nm, e[i].name), (unsigned long long)e[i].begin, (unsigned long long)e[i].end,
                    SHOW(nm2, e[i - 1].name), (unsigned long long)e[i - 1].begin, (unsigned long long)e[i - 1].end);
            return QK_ERR_FORMAT;
        }
        if (e[i].begin > pos) {
            qk_io_error(err, err_len,
                    "bytes [%llu, %llu) of the data section belong to no tensor (a gap before tensor '%s'); "
                    "safetensors requires the tensors to cover the data section exactly",
                    (unsigned long long)pos, (unsigned long long)e[i].begin, SHOW(nm, e[i].name));
            return QK_ERR_FORMAT;
        }
        pos = e[i].end;
    }
    if (pos != data_size) {
        qk_io_error(err, err_len,
                "the last %llu bytes of the data section (%zu bytes) belong to no tensor (tensors end at %llu); "
                "safetensors requires the tensors to cover the data section exactly",
                (unsigned long long)(data_size - pos), data_size, (unsigned long long)pos);
        return QK_ERR_FORMAT;
    }
    return QK_OK;
}

/* Validate the parsed header against the data section and build the file. */
static qk_status build(const cJSON *root, const unsigned char *data, size_t data_size, qk_st_file *f, char *err,
                       size_t err_len)
{
    char nm[SHOWN_LEN];
    size_t n_children = 0;
    for (const cJSON *c = root->child; c != NULL; c = c->next)
        n_children++;
    entry *entries = calloc(n_children ? n_children : 1, sizeof *entries);
    name_ref *names = calloc(n_children ? n_children : 1, sizeof *names);
    if (entries == NULL || names == NULL) {
        free(entries);
        free(names);
        qk_io_error(err, err_len, "out of memory for %zu header entries", n_children);
        return QK_ERR_NO_MEMORY;
    }

    qk_status st = QK_OK;
    const cJSON *meta = NULL;
    size_t n_tensors = 0, n_meta = 0, string_bytes = 0, total_dims = 0;
    for (const cJSON *c = root->child; c != NULL && st == QK_OK; c = c->next) {
        if (strcmp(c->string, ST_METADATA_KEY) == 0) {
            if (meta != NULL) {
                qk_io_error(err, err_len, "bad header: duplicate key '__metadata__'");
                st = QK_ERR_FORMAT;
                break;
            }
            meta = c;
            st = check_metadata(c, &n_meta, &string_bytes, err, err_len);
            continue;
        }
        if (!valid_utf8(c->string)) {
            qk_io_error(err, err_len, "bad header: tensor name '%s' is not valid UTF-8", SHOW(nm, c->string));
            st = QK_ERR_FORMAT;
            break;
        }
        entry *e = &entries[n_tensors];
        e->order = n_tensors;
        st = check_tensor(c, data_size, e, err, err_len);
        if (st == QK_OK) {
            names[n_tensors] = (name_ref){e->name, n_tensors};
            string_bytes += strlen(e->name) + 1;
            total_dims += (size_t)e->ndim;
            n_tensors++;
        }
    }

    /* Duplicate names: JSON parsers commonly keep one silently; a file that
     * says two things about a tensor is refused. */
    if (st == QK_OK && n_tensors > 1) {
        qsort(names, n_tensors, sizeof *names, cmp_name_ref);
        for (size_t i = 1; i < n_tensors; i++) {
            if (strcmp(names[i - 1].name, names[i].name) == 0) {
                qk_io_error(err, err_len, "bad header: duplicate tensor name '%s'", SHOW(nm, names[i].name));
                st = QK_ERR_FORMAT;
                break;
            }
        }
    }
    if (st == QK_OK) {
        qsort(entries, n_tensors, sizeof *entries, cmp_entry_offset);
        st = check_coverage(entries, n_tensors, data_size, err, err_len);
    }

    if (st == QK_OK) {
        f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
        f->by_name = calloc(n_tensors ? n_tensors : 1, sizeof *f->by_name);
        f->meta = calloc(n_meta ? n_meta : 1, sizeof *f->meta);
        f->strings = malloc(string_bytes ? string_bytes : 1);
        f->shapes = calloc(total_dims ? total_dims : 1, sizeof *f->shapes);
        if (f->tensors == NULL || f->by_name == NULL || f->meta == NULL || f->strings == NULL || f->shapes == NULL) {
            qk_io_error(err, err_len, "out of memory for %zu tensors", n_tensors);
            st = QK_ERR_NO_MEMORY;
        }
    }
    if (st == QK_OK) {
        char *s = f->strings;
        int64_t *dims = f->shapes;
        size_t *rank = calloc(n_tensors ? n_tensors : 1, sizeof *rank);
        if (rank == NULL) {
            qk_io_error(err, err_len, "out of memory for %zu tensors", n_tensors);
            st = QK_ERR_NO_MEMORY;
        } else {
            for (size_t i = 0; i < n_tensors; i++) {
                const entry *e = &entries[i];
                qk_st_tensor *t = &f->tensors[i];
                size_t len = strlen(e->name) + 1;
                memcpy(s, e->name, len);
                t->name = s;
                s += len;
                t->dtype = e->type->dtype;
                t->st_dtype = e->type->name;
                t->elem_bits = e->type->bits;
                t->elem_size = (size_t)e->type->bits % 8 == 0 ? (size_t)e->type->bits / 8 : 0;
                t->ndim = e->ndim;
                t->shape = dims;
                for (const cJSON *d = e->shape->child; d != NULL; d = d->next)
                    *dims++ = (int64_t)d->valuedouble;
                t->n = e->n;
                t->offset = (size_t)e->begin;
                t->nbytes = (size_t)(e->end - e->begin);
                t->data = data + e->begin;
                rank[e->order] = i; /* header position -> data position */
            }
            for (size_t i = 0; i < n_tensors; i++)
                f->by_name[i] = rank[names[i].index];
            free(rank);
            f->n_tensors = n_tensors;
        }
        if (st == QK_OK && meta != NULL) {
            size_t i = 0;
            for (const cJSON *m = meta->child; m != NULL; m = m->next, i++) {
                size_t kl = strlen(m->string) + 1, vl = strlen(m->valuestring) + 1;
                memcpy(s, m->string, kl);
                f->meta[i].key = s;
                s += kl;
                memcpy(s, m->valuestring, vl);
                f->meta[i].value = s;
                s += vl;
            }
            f->n_meta = n_meta;
            qsort(f->meta, n_meta, sizeof *f->meta, cmp_meta);
            for (i = 1; i < n_meta; i++) {
                if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0) {
                    qk_io_error(err, err_len, "bad header: duplicate key '%s' in '__metadata__'", SHOW(nm, f->meta[i].key));
                    st = QK_ERR_FORMAT;
                    break;
                }
            }
        }
    }
    free(entries);
    free(names);
    return st;
}

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

qk_status qk_st_parse(const unsigned char *buf, size_t len, qk_st_file **out, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (out == NULL || (buf == NULL && len != 0)) {
        qk_io_error(err, err_len, "qk_st_parse: NULL argument");
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    if (len < ST_PREFIX) {
        if (len == 0)
            qk_io_error(err, err_len, "empty file (0 bytes): not a safetensors file");
        else
            qk_io_error(err, err_len, "truncated: only %zu bytes, a safetensors file starts with an 8-byte header length",
                    len);
        return QK_ERR_FORMAT;
    }
    uint64_t hlen = read_le64(buf);
    if (hlen > len - ST_PREFIX) {
        qk_io_error(err, err_len,
                "header length %llu runs past the end of the file (%zu bytes): truncated, or not a safetensors file",
                (unsigned long long)hlen, len);
        return QK_ERR_FORMAT;
    }
    if (hlen > QK_ST_MAX_HEADER) {
        qk_io_error(err, err_len, "header length %llu is over the %llu-byte limit", (unsigned long long)hlen,
                (unsigned long long)QK_ST_MAX_HEADER);
        return QK_ERR_FORMAT;
    }
    if (hlen < 2) {
        qk_io_error(err, err_len, "header length %llu is too small for a JSON object (at least '{}')",
                (unsigned long long)hlen);
        return QK_ERR_FORMAT;
    }
    const unsigned char *h = buf + ST_PREFIX;
    qk_status st = scan_header(h, (size_t)hlen, err, err_len);
    if (st != QK_OK)
        return st;

    /* cJSON gets a NUL-terminated copy, so that nothing it does can read past
     * the header even if it overshot the length it was given. */
    char *text = malloc((size_t)hlen + 1);
    qk_st_file *f = calloc(1, sizeof *f);
    if (text == NULL || f == NULL) {
        free(text);
        free(f);
        qk_io_error(err, err_len, "out of memory for a %llu-byte header", (unsigned long long)hlen);
        return QK_ERR_NO_MEMORY;
    }
    memcpy(text, h, (size_t)hlen);
    text[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    if (root == NULL) {
        size_t pos = (end != NULL && end >= text && end <= text + hlen) ? (size_t)(end - text) : 0;
        char near[40];
        shown(near, sizeof near, text + pos, (size_t)hlen - pos < 24 ? (size_t)hlen - pos : 24);
        qk_io_error(err, err_len, "bad header: not valid JSON (at header byte %zu: '%s')", pos, near);
        st = QK_ERR_FORMAT;
    } else if (!cJSON_IsObject(root)) {
        qk_io_error(err, err_len, "bad header: not a JSON object");
        st = QK_ERR_FORMAT;
    } else {
        /* Only JSON whitespace may follow the object (writers pad with spaces). */
        size_t pos = (size_t)(end - text);
        while (pos < hlen && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r'))
            pos++;
        if (pos != hlen) {
            qk_io_error(err, err_len, "bad header: unexpected text after the JSON object at header byte %zu", pos);
            st = QK_ERR_FORMAT;
        }
    }
    if (st == QK_OK) {
        f->header_len = (size_t)hlen;
        f->data_size = len - ST_PREFIX - (size_t)hlen;
        st = build(root, buf + ST_PREFIX + hlen, f->data_size, f, err, err_len);
    }
    cJSON_Delete(root);
    free(text);
    if (st != QK_OK) {
        free_file(f);
        return st;
    }
    *out = f;
    return QK_OK;
}

qk_status qk_st_open(const char *path, qk_st_file **out, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (out == NULL || path == NULL) {
        qk_io_error(err, err_len, "qk_st_open: NULL %s", out == NULL ? "output" : "path");
        if (out != NULL)
            *out = NULL;
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    void *map = NULL;
    size_t size = 0;
    qk_status st = qk_map_file(path, "a safetensors file", MADV_SEQUENTIAL, &map, &size, err, err_len);
    if (st != QK_OK)
        return st;
    char why[512];
    qk_st_file *f = NULL;
    st = qk_st_parse(map, size, &f, why, sizeof why);
    if (st != QK_OK) {
        munmap(map, size);
        qk_io_error(err, err_len, "%s: %s", path, why);
        return st;
    }
    f->map = map;
    f->map_len = size;
    *out = f;
    return QK_OK;
}

size_t qk_st_count(const qk_st_file *f) { return f ? f->n_tensors : 0; }

const qk_st_tensor *qk_st_get(const qk_st_file *f, size_t i)
{
    return (f != NULL && i < f->n_tensors) ? &f->tensors[i] : NULL;
}

const qk_st_tensor *qk_st_find(const qk_st_file *f, const char *name, size_t *index)
{
    if (f == NULL || name == NULL)
        return NULL;
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[f->by_name[mid]].name, name);
        if (c == 0) {
            if (index != NULL)
                *index = f->by_name[mid];
            return &f->tensors[f->by_name[mid]];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t qk_st_metadata_count(const qk_st_file *f) { return f ? f->n_meta : 0; }

qk_status qk_st_metadata_at(const qk_st_file *f, size_t i, const char **key, const char **value)
{
    if (f == NULL || i >= f->n_meta)
        return QK_ERR_INVALID_ARG;
    if (key != NULL)
        *key = f->meta[i].key;
    if (value != NULL)
        *value = f->meta[i].value;
    return QK_OK;
}

const char *qk_st_metadata_get(const qk_st_file *f, const char *key)
{
    if (f == NULL || key == NULL)
        return NULL;
    size_t lo = 0, hi = f->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->meta[mid].key, key);
        if (c == 0)
            return f->meta[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t qk_st_header_len(const qk_st_file *f) { return f ? f->header_len : 0; }
size_t qk_st_data_size(const qk_st_file *f) { return f ? f->data_size : 0; }

qk_status qk_st_tensor_aligned(const qk_st_tensor *t, const void **data, void **copy, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (t == NULL || data == NULL || copy == NULL) {
        qk_io_error(err, err_len, "qk_st_tensor_aligned: NULL argument");
        return QK_ERR_INVALID_ARG;
    }
    *copy = NULL;
    size_t align = t->elem_size;
    if (align == 0 || align > 8 || (align & (align - 1)) != 0)
        align = align > 8 ? 8 : 1;
    if (t->nbytes == 0 || (uintptr_t)t->data % align == 0) {
        *data = t->data;
        return QK_OK;
    }
    void *p = qk_big_alloc(t->nbytes); /* malloc (16-aligned) or a page-aligned mapping */
    if (p == NULL) {
        char nm[SHOWN_LEN];
        qk_io_error(err, err_len, "tensor '%s': out of memory copying %zu misaligned bytes", SHOW(nm, t->name),
                t->nbytes);
        return QK_ERR_NO_MEMORY;
    }
    memcpy(p, t->data, t->nbytes);
    *copy = p;
    *data = p;
    return QK_OK;
}

void qk_st_free_copy(void *copy, size_t nbytes) { qk_big_free(copy, nbytes); }

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct wr_tensor {
    char *name;
    const st_type *type;
    int ndim;
    int64_t *shape; /* NULL when ndim is 0 */
    size_t nbytes;
    const void *data;
} wr_tensor;

typedef struct wr_meta {
    char *key, *value;
} wr_meta;

struct qk_st_writer {
    qk_atomic_file file;
    wr_tensor *t;
    size_t n, cap;
    size_t *slots; /* open-addressing set of names: tensor index + 1, 0 = empty */
    size_t n_slots;
    wr_meta *meta;
    size_t n_meta, cap_meta;
    uint64_t data_size;
};

static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3u;
    return h;
}

/* The slot holding name, or the empty slot where it would go. */
static size_t *find_slot(size_t *slots, size_t n_slots, const wr_tensor *t, const char *name)
{
    size_t i = (size_t)hash_name(name) & (n_slots - 1);
    while (slots[i] != 0 && strcmp(t[slots[i] - 1].name, name) != 0)
        i = (i + 1) & (n_slots - 1);
    return &slots[i];
}

/* Keep the name set under half full. */
static int grow_slots(qk_st_writer *w)
{
    if (w->n_slots != 0 && (w->n + 1) * 2 <= w->n_slots)
        return 0;
    size_t n_slots = w->n_slots ? w->n_slots * 2 : 64;
    size_t *slots = calloc(n_slots, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < w->n; i++)
        *find_slot(slots, n_slots, w->t, w->t[i].name) = i + 1;
    free(w->slots);
    w->slots = slots;
    w->n_slots = n_slots;
    return 0;
}

static void free_writer(qk_st_writer *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].shape);
    }
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->slots);
    free(w->meta);
    free(w);
}

void qk_st_writer_abort(qk_st_writer *w)
{
    if (w == NULL)
        return;
    qk_atomic_abort(&w->file);
    free_writer(w);
}

qk_status qk_st_writer_begin(const char *path, qk_st_writer **out, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (out == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_begin: NULL output");
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    if (path == NULL || *path == '\0') {
        qk_io_error(err, err_len, "qk_st_writer_begin: empty or NULL path");
        return QK_ERR_INVALID_ARG;
    }
    qk_st_writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        qk_io_error(err, err_len, "%s: out of memory", path);
        return QK_ERR_NO_MEMORY;
    }
    qk_status st = qk_atomic_open(&w->file, path, err, err_len);
    if (st != QK_OK) {
        free(w);
        return st;
    }
    *out = w;
    return QK_OK;
}

static qk_status add_tensor(qk_st_writer *w, const char *name, const st_type *type, int ndim, const int64_t *shape,
                            const void *data, char *err, size_t err_len)
{
    char nm[SHOWN_LEN];
    if (name == NULL || *name == '\0') {
        qk_io_error(err, err_len, "qk_st_writer_add: empty or NULL tensor name");
        return QK_ERR_INVALID_ARG;
    }
    if (!valid_utf8(name)) {
        qk_io_error(err, err_len, "qk_st_writer_add: tensor name '%s' is not valid UTF-8", SHOW(nm, name));
        return QK_ERR_INVALID_ARG;
    }
    if (strcmp(name, ST_METADATA_KEY) == 0) {
        qk_io_error(err, err_len, "qk_st_writer_add: '__metadata__' is reserved, not a tensor name");
        return QK_ERR_INVALID_ARG;
    }
    if (ndim < 0 || ndim > QK_ST_MAX_DIMS) {
        qk_io_error(err, err_len, "qk_st_writer_add: tensor '%s': ndim %d is outside 0..%d", SHOW(nm, name), ndim,
                QK_ST_MAX_DIMS);
        return QK_ERR_INVALID_ARG;
    }
    if (ndim > 0 && shape == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_add: tensor '%s': NULL shape for ndim %d", SHOW(nm, name), ndim);
        return QK_ERR_INVALID_ARG;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > ST_MAX_INT) {
            qk_io_error(err, err_len, "qk_st_writer_add: tensor '%s': shape[%d] = %lld is outside 0..2^53",
                    SHOW(nm, name), i, (long long)shape[i]);
            return QK_ERR_INVALID_ARG;
        }
        if (shape[i] == 0)
            n = 0;
    }
    for (int i = 0; i < ndim && n != 0; i++) {
        if (n > INT64_MAX / shape[i]) {
            qk_io_error(err, err_len, "qk_st_writer_add: tensor '%s': the shape's element count overflows",
                    SHOW(nm, name));
            return QK_ERR_INVALID_ARG;
        }
        n *= shape[i];
    }
    uint64_t bytes = 0;
    char why[200];
    if (tensor_bytes(type, n, &bytes, name, why, sizeof why) != QK_OK) {
        qk_io_error(err, err_len, "qk_st_writer_add: %s", why);
        return QK_ERR_INVALID_ARG;
    }
    if (bytes > ST_MAX_INT - w->data_size || bytes > SIZE_MAX) {
        qk_io_error(err, err_len,
                "qk_st_writer_add: tensor '%s': %llu more bytes would take the file's data past 2^53 bytes",
                SHOW(nm, name), (unsigned long long)bytes);
        return QK_ERR_INVALID_ARG;
    }
    if (data == NULL && bytes > 0) {
        qk_io_error(err, err_len, "qk_st_writer_add: tensor '%s': NULL data for %llu bytes", SHOW(nm, name),
                (unsigned long long)bytes);
        return QK_ERR_INVALID_ARG;
    }
    if (grow_slots(w) != 0) {
        qk_io_error(err, err_len, "qk_st_writer_add: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    size_t *slot = find_slot(w->slots, w->n_slots, w->t, name);
    if (*slot != 0) {
        qk_io_error(err, err_len, "qk_st_writer_add: duplicate tensor name '%s'", SHOW(nm, name));
        return QK_ERR_INVALID_ARG;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        wr_tensor *t = realloc(w->t, cap * sizeof *t);
        if (t == NULL) {
            qk_io_error(err, err_len, "qk_st_writer_add: out of memory");
            return QK_ERR_NO_MEMORY;
        }
        w->t = t;
        w->cap = cap;
    }
    wr_tensor *t = &w->t[w->n];
    *t = (wr_tensor){.type = type, .ndim = ndim, .nbytes = (size_t)bytes, .data = data};
    t->name = strdup(name);
    if (ndim > 0) {
        t->shape = malloc((size_t)ndim * sizeof *t->shape);
        if (t->shape != NULL)
            memcpy(t->shape, shape, (size_t)ndim * sizeof *t->shape);
    }
    if (t->name == NULL || (ndim > 0 && t->shape == NULL)) {
        free(t->name);
        free(t->shape);
        qk_io_error(err, err_len, "qk_st_writer_add: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    *slot = ++w->n;
    w->data_size += bytes;
    return QK_OK;
}

qk_status qk_st_writer_add(qk_st_writer *w, const char *name, qk_dtype dtype, int ndim, const int64_t *shape,
                           const void *data, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (w == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_add: NULL writer");
        return QK_ERR_INVALID_ARG;
    }
    const st_type *type = type_by_dtype(dtype);
    if (type == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_add: invalid dtype %d (use qk_st_writer_add_raw for other types)",
                (int)dtype);
        return QK_ERR_INVALID_ARG;
    }
    return add_tensor(w, name, type, ndim, shape, data, err, err_len);
}

qk_status qk_st_writer_add_raw(qk_st_writer *w, const char *name, const char *st_dtype, int ndim,
                               const int64_t *shape, const void *data, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (w == NULL || st_dtype == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_add_raw: NULL %s", w == NULL ? "writer" : "dtype");
        return QK_ERR_INVALID_ARG;
    }
    const st_type *type = type_by_name(st_dtype);
    if (type == NULL) {
        char dt[40];
        qk_io_error(err, err_len, "qk_st_writer_add_raw: unknown safetensors dtype '%s'", SHOW(dt, st_dtype));
        return QK_ERR_INVALID_ARG;
    }
    return add_tensor(w, name, type, ndim, shape, data, err, err_len);
}

qk_status qk_st_writer_set_metadata(qk_st_writer *w, const char *key, const char *value, char *err,
                                    size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (w == NULL || key == NULL || value == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_set_metadata: NULL %s",
                w == NULL ? "writer" : key == NULL ? "key" : "value");
        return QK_ERR_INVALID_ARG;
    }
    if (!valid_utf8(key) || !valid_utf8(value)) {
        qk_io_error(err, err_len, "qk_st_writer_set_metadata: key or value is not valid UTF-8");
        return QK_ERR_INVALID_ARG;
    }
    char *v = strdup(value);
    if (v == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_set_metadata: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return QK_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? w->cap_meta * 2 : 8;
        wr_meta *m = realloc(w->meta, cap * sizeof *m);
        if (m == NULL) {
            free(v);
            qk_io_error(err, err_len, "qk_st_writer_set_metadata: out of memory");
            return QK_ERR_NO_MEMORY;
        }
        w->meta = m;
        w->cap_meta = cap;
    }
    char *k = strdup(key);
    if (k == NULL) {
        free(v);
        qk_io_error(err, err_len, "qk_st_writer_set_metadata: out of memory");
        return QK_ERR_NO_MEMORY;
    }
    w->meta[w->n_meta++] = (wr_meta){k, v};
    return QK_OK;
}

/* An exact integer for the header: cJSON would print doubles, and "%.15g"
 * turns 10^15 into "1e+15", which no safetensors reader takes. */
static cJSON *json_uint(uint64_t v)
{
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(text);
}

static int add_to_array(cJSON *array, cJSON *item)
{
    if (item == NULL)
        return -1;
    if (!cJSON_AddItemToArray(array, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

/* The header JSON: "__metadata__" first, then tensors in add (= data) order. */
static char *build_header(const qk_st_writer *w)
{
    cJSON *root = cJSON_CreateObject();
    int fail = root == NULL;
    if (!fail && w->n_meta > 0) {
        cJSON *m = cJSON_CreateObject();
        fail = m == NULL || !cJSON_AddItemToObject(root, ST_METADATA_KEY, m);
        if (fail)
            cJSON_Delete(m);
        for (size_t i = 0; !fail && i < w->n_meta; i++)
            fail = cJSON_AddStringToObject(m, w->meta[i].key, w->meta[i].value) == NULL;
    }
    uint64_t offset = 0;
    for (size_t i = 0; !fail && i < w->n; i++) {
        const wr_tensor *t = &w->t[i];
        cJSON *obj = cJSON_CreateObject();
        if (obj == NULL || !cJSON_AddItemToObject(root, t->name, obj)) {
            cJSON_Delete(obj);
            fail = 1;
            break;
        }
        cJSON *shape = NULL, *offsets = NULL;
        fail = cJSON_AddStringToObject(obj, "dtype", t->type->name) == NULL ||
               (shape = cJSON_AddArrayToObject(obj, "shape")) == NULL;
        for (int d = 0; !fail && d < t->ndim; d++)
            fail = add_to_array(shape, json_uint((uint64_t)t->shape[d])) != 0;
        fail = fail || (offsets = cJSON_AddArrayToObject(obj, "data_offsets")) == NULL ||
               add_to_array(offsets, json_uint(offset)) != 0 ||
               add_to_array(offsets, json_uint(offset + t->nbytes)) != 0;
        offset += t->nbytes;
    }
    char *text = fail ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

qk_status qk_st_writer_commit(qk_st_writer *w, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (w == NULL) {
        qk_io_error(err, err_len, "qk_st_writer_commit: NULL writer");
        return QK_ERR_INVALID_ARG;
    }
    qk_status st = QK_OK;
    char *text = build_header(w);
    if (text == NULL) {
        qk_io_error(err, err_len, "%s: out of memory building the header", w->file.final_path);
        st = QK_ERR_NO_MEMORY;
    }
    size_t len = text ? strlen(text) : 0;
    size_t padded = (len + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    if (st == QK_OK && padded > QK_ST_MAX_HEADER) {
        qk_io_error(err, err_len, "%s: the header would be %zu bytes, over the %llu-byte limit readers accept",
                w->file.final_path, padded, (unsigned long long)QK_ST_MAX_HEADER);
        st = QK_ERR_INVALID_ARG;
    }
    if (st == QK_OK) {
        unsigned char prefix[ST_PREFIX];
        for (int i = 0; i < ST_PREFIX; i++)
            prefix[i] = (unsigned char)((uint64_t)padded >> (8 * i));
        static const char spaces[ST_ALIGN] = "        ";
        st = qk_atomic_write(&w->file, prefix, sizeof prefix, err, err_len);
        if (st == QK_OK)
            st = qk_atomic_write(&w->file, text, len, err, err_len);
        if (st == QK_OK)
            st = qk_atomic_write(&w->file, spaces, padded - len, err, err_len);
        for (size_t i = 0; st == QK_OK && i < w->n; i++)
            st = qk_atomic_write(&w->file, w->t[i].data, w->t[i].nbytes, err, err_len);
        if (st == QK_OK)
            st = qk_atomic_commit(&w->file, err, err_len);
    }
    free(text);
    qk_st_writer_abort(w); /* after a commit only frees; otherwise also removes the temporary */
    return st;
}

/* ---- planned files ---------------------------------------------------------------------- */

qk_status qk_st_plan_header(const qk_st_planned *t, size_t n, const char *const *keys, const char *const *values,
                            size_t n_meta, unsigned char **out, size_t *out_len, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (out == NULL || out_len == NULL || (n > 0 && t == NULL) || (n_meta > 0 && (keys == NULL || values == NULL))) {
        qk_io_error(err, err_len, "qk_st_plan_header: NULL argument");
        return QK_ERR_INVALID_ARG;
    }
    *out = NULL;
    *out_len = 0;
    qk_st_writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        qk_io_error(err, err_len, "out of memory planning a header");
        return QK_ERR_NO_MEMORY;
    }
    w->file.fd = -1;
    qk_status st = QK_OK;
    /* The writer's checks without data: a non-NULL placeholder, never read. */
    for (size_t i = 0; st == QK_OK && i < n; i++)
        st = qk_st_writer_add_raw(w, t[i].name, t[i].st_dtype, t[i].ndim, t[i].shape, w, err, err_len);
    for (size_t i = 0; st == QK_OK && i < n_meta; i++)
        st = qk_st_writer_set_metadata(w, keys[i], values[i], err, err_len);
    for (size_t i = 0; st == QK_OK && i < n; i++)
        if (w->t[i].nbytes != t[i].nbytes) {
            qk_io_error(err, err_len, "qk_st_plan_header: tensor '%s': %llu bytes planned, its shape holds %zu",
                        t[i].name, (unsigned long long)t[i].nbytes, w->t[i].nbytes);
            st = QK_ERR_INVALID_ARG;
        }
    char *text = st == QK_OK ? build_header(w) : NULL;
    if (st == QK_OK && text == NULL) {
        qk_io_error(err, err_len, "out of memory building a header");
        st = QK_ERR_NO_MEMORY;
    }
    size_t len = text ? strlen(text) : 0;
    size_t padded = (len + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    if (st == QK_OK && padded > QK_ST_MAX_HEADER) {
        qk_io_error(err, err_len, "the header would be %zu bytes, over the %llu-byte limit readers accept", padded,
                    (unsigned long long)QK_ST_MAX_HEADER);
        st = QK_ERR_INVALID_ARG;
    }
    unsigned char *buf = st == QK_OK ? malloc(ST_PREFIX + padded) : NULL;
    if (st == QK_OK && buf == NULL) {
        qk_io_error(err, err_len, "out of memory building a header");
        st = QK_ERR_NO_MEMORY;
    }
    if (st == QK_OK) {
        for (int i = 0; i < ST_PREFIX; i++)
            buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
        memcpy(buf + ST_PREFIX, text, len);
        memset(buf + ST_PREFIX + len, ' ', padded - len);
        *out = buf;
        *out_len = ST_PREFIX + padded;
    }
    free(text);
    free_writer(w);
    return st;
}
