/* .npy reader and writer.
 *
 * The header is a Python dict literal. Rather than evaluate Python, a small
 * strict tokenizer accepts exactly the subset numpy writes (three keys, a
 * string, a bool and a tuple of ints, in any order, either quote style,
 * trailing commas, any whitespace) and rejects everything else with a reason.
 * Every length and count read from the file is checked before it is used: the
 * file is untrusted input. */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "map_file.h"
#include "big_alloc.h"

/* Data is used in place (mmap) as host-order numbers; "<" means little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "qkern's .npy I/O assumes a little-endian host"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64                 /* numpy pads headers so data starts on 64 bytes */
#define NPY_GROWTH_AXIS_MAX_DIGITS 21 /* numpy >= 1.23 leaves room to grow shape[0] in place */


/* ---- dtypes -------------------------------------------------------------- */

typedef struct npy_type {
    const char *descr;
    qk_dtype dtype;
    size_t size;
} npy_type;

/* The first entry for a dtype is the one written (numpy's own spelling). */
static const npy_type npy_types[] = {
    {"<f4", QK_F32, 4}, {"<f8", QK_F64, 8}, {"<f2", QK_F16, 2}, {"|u1", QK_U8, 1},  {"<u1", QK_U8, 1},
    {"|i1", QK_I8, 1},  {"<i1", QK_I8, 1},  {"<u2", QK_U16, 2}, {"<i2", QK_I16, 2}, {"<i4", QK_I32, 4},
};
#define N_NPY_TYPES (sizeof npy_types / sizeof npy_types[0])

static const npy_type *type_by_descr(const char *s, size_t len)
{
    for (size_t i = 0; i < N_NPY_TYPES; i++)
        if (strlen(npy_types[i].descr) == len && memcmp(npy_types[i].descr, s, len) == 0)
            return &npy_types[i];
    return NULL;
}

static const npy_type *type_by_dtype(qk_dtype dtype)
{
    for (size_t i = 0; i < N_NPY_TYPES; i++)
        if (npy_types[i].dtype == dtype)
            return &npy_types[i];
    return NULL;
}

/* Copy file text into a message safely: printable ASCII only, bounded length. */
static const char *excerpt(char *out, size_t out_len, const char *s, size_t len)
{
    size_t max = out_len - 4, j = 0;
    for (size_t i = 0; i < len && j < max; i++)
        out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (len > max)
        memcpy(out + j, "...", 3), j += 3;
    out[j] = '\0';
    return out;
}

/* ---- tokenizer ------------------------------------------------------------ */

typedef enum tok_kind { TOK_END, TOK_PUNCT, TOK_STRING, TOK_INT, TOK_NAME, TOK_ERROR } tok_kind;

typedef struct token {
    tok_kind kind;
    char punct;        /* TOK_PUNCT */
    const char *text;  /* TOK_STRING (without quotes), TOK_NAME, TOK_INT */
    size_t len;
    int64_t value;     /* TOK_INT: magnitude, valid unless too_big */
    int negative, too_big;
} token;

typedef struct lexer {
    const char *p, *end;
    const char *start; /* for offsets in messages */
    char *err;
    size_t err_len;
} lexer;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

static token lex_error(lexer *lx, const char *what)
{
    qk_io_error(lx->err, lx->err_len, "bad header: %s", what);
    return (token){.kind = TOK_ERROR};
}

static token lex_string(lexer *lx)
{
    char quote = *lx->p++;
    const char *start = lx->p;
    while (lx->p < lx->end && *lx->p != quote) {
        /* numpy never writes escapes or multi-line strings; refusing them keeps
         * the token text equal to the value. */
        if (*lx->p == '\\' || *lx->p == '\n')
            return lex_error(lx, "escape sequences and line breaks in strings are not supported");
        lx->p++;
    }
    if (lx->p == lx->end)
        return lex_error(lx, "unterminated string");
    token t = {.kind = TOK_STRING, .text = start, .len = (size_t)(lx->p - start)};
    lx->p++;
    return t;
}

static token lex_int(lexer *lx)
{
    token t = {.kind = TOK_INT, .text = lx->p};
    if (*lx->p == '-') {
        t.negative = 1;
        lx->p++;
    }
    const char *digits = lx->p;
    uint64_t v = 0;
    while (lx->p < lx->end && is_digit(*lx->p)) {
        unsigned d = (unsigned)(*lx->p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            t.too_big = 1;
        else
            v = v * 10 + d;
        lx->p++;
    }
    size_t n_digits = (size_t)(lx->p - digits);
    if (n_digits == 0)
        return lex_error(lx, "'-' not followed by a number");
    /* Python 2 wrote "010" as octal; refuse rather than guess. */
    if (n_digits > 1 && digits[0] == '0')
        return lex_error(lx, "integer with a leading zero");
    /* Python 2 numpy wrote longs as "3L" (numpy's own reader drops the L). */
    if (lx->p < lx->end && (*lx->p == 'L' || *lx->p == 'l'))
        lx->p++;
    if (lx->p < lx->end && (is_alpha(*lx->p) || is_digit(*lx->p) || *lx->p == '.'))
        return lex_error(lx, "'shape' entries must be plain integers");
    t.value = (int64_t)v;
    t.len = (size_t)(lx->p - t.text);
    return t;
}

static token next_token(lexer *lx)
{
    while (lx->p < lx->end && is_space(*lx->p))
        lx->p++;
    if (lx->p == lx->end)
        return (token){.kind = TOK_END};
    char c = *lx->p;
    if (strchr("{}()[]:,", c) != NULL && c != '\0') {
        lx->p++;
        return (token){.kind = TOK_PUNCT, .punct = c, .text = lx->p - 1, .len = 1};
    }
    if (c == '\'' || c == '"')
        return lex_string(lx);
    if (c == '-' || is_digit(c))
        return lex_int(lx);
    if (is_alpha(c)) {
        const char *start = lx->p;
        while (lx->p < lx->end && (is_alpha(*lx->p) || is_digit(*lx->p)))
            lx->p++;
        return (token){.kind = TOK_NAME, .text = start, .len = (size_t)(lx->p - start)};
    }
    qk_io_error(lx->err, lx->err_len, "bad header: unexpected byte 0x%02x at offset %zu of the header text",
            (unsigned char)c, (size_t)(lx->p - lx->start));
    return (token){.kind = TOK_ERROR};
}

static int is_punct(token t, char c) { return t.kind == TOK_PUNCT && t.punct == c; }

static int name_is(token t, const char *s)
{
    return t.kind == TOK_NAME && strlen(s) == t.len && memcmp(t.text, s, t.len) == 0;
}

/* ---- header dictionary ------------------------------------------------------ */

typedef struct header_fields {
    const npy_type *type;
    int ndim;
    int64_t shape[QK_NPY_MAX_DIMS];
} header_fields;

static qk_status parse_descr(lexer *lx, header_fields *h)
{
    token t = next_token(lx);
    if (t.kind == TOK_ERROR)
        return QK_ERR_FORMAT;
    if (is_punct(t, '[')) {
        qk_io_error(lx->err, lx->err_len, "structured dtypes (a 'descr' list) are not supported");
        return QK_ERR_FORMAT;
    }
    if (t.kind != TOK_STRING) {
        qk_io_error(lx->err, lx->err_len, "bad header: 'descr' must be a string such as '<f4'");
        return QK_ERR_FORMAT;
    }
    h->type = type_by_descr(t.text, t.len);
    if (h->type != NULL)
        return QK_OK;

    char shown[48];
    excerpt(shown, sizeof shown, t.text, t.len);
    if (t.len >= 2 && t.text[0] == '>')
        qk_io_error(lx->err, lx->err_len, "big-endian dtype '%s' is not supported: save with .astype('<%s')", shown,
                shown + 1);
    else if (t.len >= 2 && t.text[1] == 'O')
        qk_io_error(lx->err, lx->err_len, "object arrays (dtype '%s', pickled Python objects) are not supported",
                shown);
    else
        qk_io_error(lx->err, lx->err_len,
                "unsupported dtype '%s' (supported: <f4, <f8, <f2, |u1, |i1, <u2, <i2, <i4)", shown);
    return QK_ERR_FORMAT;
}

static qk_status parse_fortran_order(lexer *lx)
{
    token t = next_token(lx);
    if (t.kind == TOK_ERROR)
        return QK_ERR_FORMAT;
    if (name_is(t, "False"))
        return QK_OK;
    if (name_is(t, "True"))
        qk_io_error(lx->err, lx->err_len, "Fortran order is not supported: save with np.ascontiguousarray");
    else
        qk_io_error(lx->err, lx->err_len, "bad header: 'fortran_order' must be True or False");
    return QK_ERR_FORMAT;
}

static qk_status parse_dim(lexer *lx, token t, header_fields *h)
{
    char shown[32];
    if (t.kind == TOK_END) {
        qk_io_error(lx->err, lx->err_len, "bad header: unterminated 'shape' tuple");
        return QK_ERR_FORMAT;
    }
    if (t.kind != TOK_INT) {
        qk_io_error(lx->err, lx->err_len, "bad header: 'shape' entries must be integers");
        return QK_ERR_FORMAT;
    }
    excerpt(shown, sizeof shown, t.text, t.len);
    if (t.negative) {
        qk_io_error(lx->err, lx->err_len, "bad header: negative dimension %s in 'shape'", shown);
        return QK_ERR_FORMAT;
    }
    if (t.too_big) {
        qk_io_error(lx->err, lx->err_len, "bad header: dimension %s in 'shape' does not fit in 64 bits", shown);
        return QK_ERR_FORMAT;
    }
    if (h->ndim == QK_NPY_MAX_DIMS) {
        qk_io_error(lx->err, lx->err_len, "'shape' has more than %d dimensions", QK_NPY_MAX_DIMS);
        return QK_ERR_FORMAT;
    }
    h->shape[h->ndim++] = t.value;
    return QK_OK;
}

/* A Python tuple: "()", "(5,)", "(2, 3)", "(2, 3,)". "(5)" is an int, not a tuple. */
static qk_status parse_shape(lexer *lx, header_fields *h)
{
    token t = next_token(lx);
    if (t.kind == TOK_ERROR)
        return QK_ERR_FORMAT;
    if (!is_punct(t, '(')) {
        qk_io_error(lx->err, lx->err_len, "bad header: 'shape' must be a tuple such as (3, 4)");
        return QK_ERR_FORMAT;
    }
    h->ndim = 0;
    t = next_token(lx);
    if (is_punct(t, ')'))
        return QK_OK;
    for (;;) {
        if (t.kind == TOK_ERROR || parse_dim(lx, t, h) != QK_OK)
            return QK_ERR_FORMAT;
        t = next_token(lx);
        if (is_punct(t, ')')) {
            if (h->ndim == 1) {
                qk_io_error(lx->err, lx->err_len, "bad header: 'shape' (n) is not a tuple: numpy writes (n,)");
                return QK_ERR_FORMAT;
            }
            return QK_OK;
        }
        if (!is_punct(t, ',')) {
            if (t.kind != TOK_ERROR)
                qk_io_error(lx->err, lx->err_len, "bad header: expected ',' or ')' in 'shape'");
            return QK_ERR_FORMAT;
        }
        t = next_token(lx);
        if (is_punct(t, ')'))
            return QK_OK;
    }
}

enum { KEY_DESCR, KEY_FORTRAN, KEY_SHAPE, N_KEYS };
static const char *const key_names[N_KEYS] = {"descr", "fortran_order", "shape"};

static qk_status parse_entry(lexer *lx, token key, int seen[N_KEYS], header_fields *h)
{
    int k = 0;
    while (k < N_KEYS && !(strlen(key_names[k]) == key.len && memcmp(key_names[k], key.text, key.len) == 0))
        k++;
    if (k == N_KEYS) {
        char shown[48];
        qk_io_error(lx->err, lx->err_len, "bad header: unknown key '%s'", excerpt(shown, sizeof shown, key.text, key.len));
        return QK_ERR_FORMAT;
    }
    if (seen[k]) {
        qk_io_error(lx->err, lx->err_len, "bad header: duplicate key '%s'", key_names[k]);
        return QK_ERR_FORMAT;
    }
    seen[k] = 1;
    token colon = next_token(lx);
    if (!is_punct(colon, ':')) {
        if (colon.kind != TOK_ERROR)
            qk_io_error(lx->err, lx->err_len, "bad header: expected ':' after key '%s'", key_names[k]);
        return QK_ERR_FORMAT;
    }
    switch (k) {
    case KEY_DESCR:
        return parse_descr(lx, h);
    case KEY_FORTRAN:
        return parse_fortran_order(lx);
    default:
        return parse_shape(lx, h);
    }
}

static qk_status parse_dict(lexer *lx, header_fields *h)
{
    int seen[N_KEYS] = {0};
    token t = next_token(lx);
    if (!is_punct(t, '{')) {
        if (t.kind != TOK_ERROR)
            qk_io_error(lx->err, lx->err_len, "bad header: expected a dictionary starting with '{'");
        return QK_ERR_FORMAT;
    }
    for (;;) {
        t = next_token(lx);
        if (is_punct(t, '}'))
            break;
        if (t.kind == TOK_ERROR)
            return QK_ERR_FORMAT;
        if (t.kind == TOK_END) {
            qk_io_error(lx->err, lx->err_len, "bad header: unterminated dictionary (no closing '}')");
            return QK_ERR_FORMAT;
        }
        if (t.kind != TOK_STRING) {
            qk_io_error(lx->err, lx->err_len, "bad header: expected a quoted key in the dictionary");
            return QK_ERR_FORMAT;
        }
        if (parse_entry(lx, t, seen, h) != QK_OK)
            return QK_ERR_FORMAT;
        t = next_token(lx);
        if (is_punct(t, '}'))
            break;
        if (t.kind == TOK_ERROR)
            return QK_ERR_FORMAT;
        if (t.kind == TOK_END) {
            qk_io_error(lx->err, lx->err_len, "bad header: unterminated dictionary (no closing '}')");
            return QK_ERR_FORMAT;
        }
        if (!is_punct(t, ',')) {
            qk_io_error(lx->err, lx->err_len, "bad header: expected ',' or '}' after a value");
            return QK_ERR_FORMAT;
        }
    }
    for (int k = 0; k < N_KEYS; k++) {
        if (!seen[k]) {
            qk_io_error(lx->err, lx->err_len, "bad header: missing key '%s'", key_names[k]);
            return QK_ERR_FORMAT;
        }
    }
    /* Only padding may follow the dictionary. */
    t = next_token(lx);
    if (t.kind != TOK_END) {
        if (t.kind != TOK_ERROR)
            qk_io_error(lx->err, lx->err_len, "bad header: unexpected text after the dictionary");
        return QK_ERR_FORMAT;
    }
    return QK_OK;
}

/* n = product of the shape, and n * element size, both within int64. */
static qk_status count_elements(const header_fields *h, int64_t *n_out, char *err, size_t err_len)
{
    int64_t n = 1;
    for (int i = 0; i < h->ndim; i++)
        if (h->shape[i] == 0)
            n = 0;
    for (int i = 0; i < h->ndim && n != 0; i++) {
        if (n > INT64_MAX / h->shape[i]) {
            qk_io_error(err, err_len, "bad header: the shape's element count overflows 64 bits");
            return QK_ERR_FORMAT;
        }
        n *= h->shape[i];
    }
    if (n > INT64_MAX / (int64_t)h->type->size) {
        qk_io_error(err, err_len, "bad header: the data size (%lld elements of %zu bytes) overflows 64 bits",
                (long long)n, h->type->size);
        return QK_ERR_FORMAT;
    }
    *n_out = n;
    return QK_OK;
}

static uint32_t read_le(const unsigned char *p, int bytes)
{
    uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Magic, version and header length; on success the dictionary text is
 * buf[*dict_start, *dict_start + *dict_len). */
static qk_status parse_preamble(const unsigned char *buf, size_t len, size_t *dict_start, size_t *dict_len,
                                char *err, size_t err_len)
{
    if (len == 0) {
        qk_io_error(err, err_len, "empty file: not a .npy file");
        return QK_ERR_FORMAT;
    }
    size_t cmp = len < NPY_MAGIC_LEN ? len : NPY_MAGIC_LEN;
    if (memcmp(buf, NPY_MAGIC, cmp) != 0) {
        qk_io_error(err, err_len, "not a .npy file: bad magic (expected \\x93NUMPY)");
        return QK_ERR_FORMAT;
    }
    if (len < NPY_MAGIC_LEN + 2) {
        qk_io_error(err, err_len, "truncated: only %zu bytes, the .npy preamble needs at least %d", len,
                NPY_MAGIC_LEN + 2);
        return QK_ERR_FORMAT;
    }
    int major = buf[6], minor = buf[7];
    if (major < 1 || major > 3 || minor != 0) {
        qk_io_error(err, err_len, "unsupported .npy format version %d.%d (supported: 1.0, 2.0, 3.0)", major, minor);
        return QK_ERR_FORMAT;
    }
    int len_bytes = major == 1 ? 2 : 4;
    size_t prefix = NPY_MAGIC_LEN + 2 + (size_t)len_bytes;
    if (len < prefix) {
        qk_io_error(err, err_len, "truncated: the header length field is cut off (%zu bytes)", len);
        return QK_ERR_FORMAT;
    }
    uint32_t hlen = read_le(buf + NPY_MAGIC_LEN + 2, len_bytes);
    if (hlen > len - prefix) {
        qk_io_error(err, err_len, "truncated: header length %lu runs past the end of the input (%zu bytes)",
                (unsigned long)hlen, len);
        return QK_ERR_FORMAT;
    }
    *dict_start = prefix;
    *dict_len = hlen;
    return QK_OK;
}

qk_status qk_npy_parse_header(const unsigned char *buf, size_t len, qk_npy *out, size_t *data_offset, char *err,
                              size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if ((buf == NULL && len != 0) || out == NULL || data_offset == NULL) {
        qk_io_error(err, err_len, "qk_npy_parse_header: NULL argument");
        return QK_ERR_INVALID_ARG;
    }
    memset(out, 0, sizeof *out);
    size_t start = 0, dict_len = 0;
    qk_status st = parse_preamble(buf, len, &start, &dict_len, err, err_len);
    if (st != QK_OK)
        return st;

    header_fields h = {0};
    const char *text = (const char *)buf + start;
    lexer lx = {text, text + dict_len, text, err, err_len};
    if (parse_dict(&lx, &h) != QK_OK)
        return QK_ERR_FORMAT;
    int64_t n = 0;
    if (count_elements(&h, &n, err, err_len) != QK_OK)
        return QK_ERR_FORMAT;

    out->dtype = h.type->dtype;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    out->n = n;
    *data_offset = start + dict_len;
    return QK_OK;
}

/* ---- reader --------------------------------------------------------------------- */

static size_t dtype_size(qk_dtype dtype)
{
    const npy_type *t = type_by_dtype(dtype);
    return t ? t->size : 0;
}

static qk_status check_data_size(const qk_npy *npy, size_t file_size, size_t offset, char *err, size_t err_len)
{
    uint64_t want = (uint64_t)npy->n * dtype_size(npy->dtype);
    uint64_t have = file_size - offset;
    if (have < want) {
        qk_io_error(err, err_len, "truncated: expected %llu bytes of data, file has %llu", (unsigned long long)want,
                (unsigned long long)have);
        return QK_ERR_FORMAT;
    }
    if (have > want) {
        qk_io_error(err, err_len, "longer than its shape says: expected %llu bytes of data, file has %llu",
                (unsigned long long)want, (unsigned long long)have);
        return QK_ERR_FORMAT;
    }
    return QK_OK;
}

qk_status qk_npy_open(const char *path, qk_npy *out, char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    if (out == NULL || path == NULL) {
        qk_io_error(err, err_len, "qk_npy_open: NULL %s", out == NULL ? "output" : "path");
        if (out != NULL)
            memset(out, 0, sizeof *out);
        return QK_ERR_INVALID_ARG;
    }
    memset(out, 0, sizeof *out);
    void *map = NULL;
    size_t size = 0;
    qk_status st = qk_map_file(path, "a .npy file", MADV_WILLNEED, &map, &size, err, err_len);
    if (st != QK_OK)
        return st;

    char why[256];
    size_t offset = 0;
    st = qk_npy_parse_header(map, size, out, &offset, why, sizeof why);
    if (st == QK_OK)
        st = check_data_size(out, size, offset, why, sizeof why);
    if (st != QK_OK) {
        munmap(map, size);
        memset(out, 0, sizeof *out);
        qk_io_error(err, err_len, "%s: %s", path, why);
        return st;
    }

    size_t bytes = (size_t)out->n * dtype_size(out->dtype);
    const unsigned char *data = (const unsigned char *)map + offset;
    out->map_ = map;
    out->map_len_ = size;
    /* The map is page-aligned, so the data is aligned exactly when its offset is
     * (numpy pads to 64; old or foreign writers may not). An empty array can
     * point anywhere aligned. */
    if (bytes == 0) {
        out->data = map;
        return QK_OK;
    }
    if (offset % dtype_size(out->dtype) != 0) {
        out->copy_ = qk_big_alloc(bytes);
        if (out->copy_ == NULL) {
            munmap(map, size);
            memset(out, 0, sizeof *out);
            qk_io_error(err, err_len, "%s: out of memory copying %zu misaligned bytes", path, bytes);
            return QK_ERR_NO_MEMORY;
        }
        memcpy(out->copy_, data, bytes);
        munmap(map, size); /* the copy is all we need */
        out->map_ = NULL;
        out->map_len_ = 0;
        out->data = out->copy_;
        return QK_OK;
    }
    out->data = data;
    return QK_OK;
}

void qk_npy_close(qk_npy *npy)
{
    if (npy == NULL)
        return;
    if (npy->map_ != NULL)
        munmap(npy->map_, npy->map_len_);
    if (npy->copy_ != NULL)
        qk_big_free(npy->copy_, (size_t)npy->n * dtype_size(npy->dtype));
    memset(npy, 0, sizeof *npy);
}

/* ---- writer --------------------------------------------------------------------- */

/* numpy pads with 1..64 spaces (never 0) before the newline so that the data
 * starts on a multiple of 64. */
static size_t padded_header_len(size_t prefix, size_t dict_len)
{
    return (prefix + dict_len + 1) / NPY_ALIGN * NPY_ALIGN + NPY_ALIGN;
}

/* The header bytes np.save (numpy 1.24) writes: sorted keys, repr() of the shape
 * tuple, room for shape[0] to grow, space padding to 64 bytes, final newline.
 * Returns the header length, or 0 if it does not fit cap. */
static size_t format_header(char *buf, size_t cap, const char *descr, int ndim, const int64_t *shape)
{
    /* At most 54 + 32 * 21 (", 9223372036854775807") + 4 + 21 bytes. */
    char dict[1024];
    size_t d = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++)
        d += (size_t)snprintf(dict + d, sizeof dict - d, i ? ", %lld" : "%lld", (long long)shape[i]);
    d += (size_t)snprintf(dict + d, sizeof dict - d, "%s), }", ndim == 1 ? "," : "");
    if (ndim > 0) {
        int digits = snprintf(NULL, 0, "%lld", (long long)shape[0]);
        for (int i = digits; i < NPY_GROWTH_AXIS_MAX_DIGITS; i++)
            dict[d++] = ' ';
    }

    /* Version 1.0 has a 16-bit header length; 2.0 only when that is too small
     * (unreachable for 32 dims, kept so the writer follows numpy's rule). */
    int major = 1;
    size_t prefix = NPY_MAGIC_LEN + 2 + 2;
    size_t total = padded_header_len(prefix, d);
    if (total - prefix > 65535) {
        major = 2;
        prefix += 2;
        total = padded_header_len(prefix, d);
    }
    if (total > cap)
        return 0;
    size_t hlen = total - prefix;
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = (char)major;
    buf[7] = 0;
    for (size_t i = 0; i < prefix - 8; i++)
        buf[8 + i] = (char)((hlen >> (8 * i)) & 0xff);
    memcpy(buf + prefix, dict, d);
    memset(buf + prefix + d, ' ', total - prefix - d - 1);
    buf[total - 1] = '\n';
    return total;
}

static qk_status check_write_args(const char *path, qk_dtype dtype, int ndim, const int64_t *shape,
                                  const void *data, size_t *bytes, char *err, size_t err_len)
{
    if (path == NULL || *path == '\0') {
        qk_io_error(err, err_len, "qk_npy_write: empty or NULL path");
        return QK_ERR_INVALID_ARG;
    }
    if ((int)dtype < 0 || dtype >= QK_DTYPE_COUNT) {
        qk_io_error(err, err_len, "qk_npy_write: invalid dtype %d", (int)dtype);
        return QK_ERR_INVALID_ARG;
    }
    const npy_type *type = type_by_dtype(dtype);
    if (type == NULL) {
        qk_io_error(err, err_len, "qk_npy_write: dtype %d (bfloat16) has no .npy equivalent", (int)dtype);
        return QK_ERR_UNSUPPORTED;
    }
    if (ndim < 0 || ndim > QK_NPY_MAX_DIMS) {
        qk_io_error(err, err_len, "qk_npy_write: ndim %d is outside 0..%d", ndim, QK_NPY_MAX_DIMS);
        return QK_ERR_INVALID_ARG;
    }
    if (ndim > 0 && shape == NULL) {
        qk_io_error(err, err_len, "qk_npy_write: NULL shape for ndim %d", ndim);
        return QK_ERR_INVALID_ARG;
    }
    header_fields h = {.type = type, .ndim = ndim};
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            qk_io_error(err, err_len, "qk_npy_write: shape[%d] = %lld is negative", i, (long long)shape[i]);
            return QK_ERR_INVALID_ARG;
        }
        h.shape[i] = shape[i];
    }
    int64_t n = 0;
    if (count_elements(&h, &n, NULL, 0) != QK_OK || (uint64_t)n > SIZE_MAX / type->size) {
        qk_io_error(err, err_len, "qk_npy_write: the shape's byte count overflows");
        return QK_ERR_INVALID_ARG;
    }
    *bytes = (size_t)n * type->size;
    if (data == NULL && *bytes > 0) {
        qk_io_error(err, err_len, "qk_npy_write: NULL data for %lld elements", (long long)n);
        return QK_ERR_INVALID_ARG;
    }
    return QK_OK;
}

qk_status qk_npy_write(const char *path, qk_dtype dtype, int ndim, const int64_t *shape, const void *data,
                       char *err, size_t err_len)
{
    qk_io_error(err, err_len, "%s", "");
    size_t bytes = 0;
    qk_status st = check_write_args(path, dtype, ndim, shape, data, &bytes, err, err_len);
    if (st != QK_OK)
        return st;
    char header[2048];
    size_t header_len = format_header(header, sizeof header, type_by_dtype(dtype)->descr, ndim, shape);
    if (header_len == 0) {
        qk_io_error(err, err_len, "qk_npy_write: header too long");
        return QK_ERR_INVALID_ARG;
    }

    qk_atomic_file f;
    st = qk_atomic_open(&f, path, err, err_len);
    if (st != QK_OK)
        return st;
    st = qk_atomic_write(&f, header, header_len, err, err_len);
    if (st == QK_OK && bytes > 0)
        st = qk_atomic_write(&f, data, bytes, err, err_len);
    if (st == QK_OK)
        st = qk_atomic_commit(&f, err, err_len);
    qk_atomic_abort(&f); /* no-op after a commit; removes the temporary otherwise */
    return st;
}
