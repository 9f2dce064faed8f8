/* The "qkern" metadata of a quantized model file: building it with cJSON and
 * reading it back with every field checked (the file may come from anywhere). */
#include "model_format.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define QM_MAX_INT ((int64_t)1 << 53) /* the largest integer a JSON double holds exactly */

static void set_err(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

void qm_entry_layout(const qm_entry *e, qk_layout *layout)
{
    memset(layout, 0, sizeof *layout);
    layout->granularity = e->granularity;
    layout->ndim = e->ndim;
    memcpy(layout->shape, e->shape, (size_t)e->ndim * sizeof e->shape[0]);
    layout->axis = e->axis;
    layout->group_size = e->group_size;
}

/* The shortest of %.15g, %.16g, %.17g that reads back as v. */
static void format_double(char *buf, double v)
{
    static const char *const formats[] = {"%.15g", "%.16g", "%.17g"};
    for (size_t k = 0; k < 3; k++) {
        snprintf(buf, 32, formats[k], v);
        double back = strtod(buf, NULL);
        if (memcmp(&back, &v, sizeof v) == 0)
            return;
    }
}

void qm_calib_describe(const qk_calib_options *opts, char *buf, size_t len)
{
    char a[32], b[32], c[32];
    switch (opts->method) {
    case QK_CALIB_PERCENTILE:
        format_double(a, opts->percentile);
        snprintf(buf, len, "percentile:%s", a);
        break;
    case QK_CALIB_GRIDSEARCH:
        if (opts->grid) {
            snprintf(buf, len, "gridsearch:list(%zu)", opts->grid_len);
        } else {
            format_double(a, opts->grid_start);
            format_double(b, opts->grid_stop);
            format_double(c, opts->grid_step);
            snprintf(buf, len, "gridsearch:%s:%s:%s", a, b, c);
        }
        break;
    default:
        snprintf(buf, len, "minmax");
        break;
    }
}

void qm_granularity_describe(qk_granularity g, int axis, int64_t group_size, char *buf, size_t len)
{
    if (g == QK_PER_CHANNEL)
        snprintf(buf, len, "channel:%d", axis);
    else if (g == QK_PER_GROUP)
        snprintf(buf, len, "group:%" PRId64, group_size);
    else
        snprintf(buf, len, "tensor");
}

static const char *granularity_word(qk_granularity g)
{
    return g == QK_PER_CHANNEL ? "channel" : g == QK_PER_GROUP ? "group" : "tensor";
}

/* ---- building ---------------------------------------------------------------- */

/* Integers as raw text: cJSON prints doubles with %1.15g ("1e+15"). */
static int add_int(cJSON *obj, const char *key, int64_t v)
{
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, v);
    return cJSON_AddRawToObject(obj, key, text) != NULL;
}

static int add_entry(cJSON *arr, const qm_entry *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return 0;
    if (!cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        return 0;
    }
    int32_t qmin = 0, qmax = 0;
    qk_code_range(e->scheme, e->bits, e->narrow_range, &qmin, &qmax);
    int ok = cJSON_AddStringToObject(o, "name", e->name) != NULL &&
             cJSON_AddStringToObject(o, "dtype", qk_st_dtype_string(e->dtype)) != NULL;
    cJSON *shape = ok ? cJSON_AddArrayToObject(o, "shape") : NULL;
    ok = ok && shape;
    for (int d = 0; ok && d < e->ndim; d++) {
        char text[32];
        snprintf(text, sizeof text, "%" PRId64, e->shape[d]);
        cJSON *v = cJSON_CreateRaw(text);
        ok = v && cJSON_AddItemToArray(shape, v);
        if (!ok)
            cJSON_Delete(v);
    }
    ok = ok && cJSON_AddStringToObject(o, "scheme", e->scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric") &&
         add_int(o, "bits", e->bits) && cJSON_AddBoolToObject(o, "narrow_range", e->narrow_range) &&
         add_int(o, "qmin", qmin) && add_int(o, "qmax", qmax) &&
         cJSON_AddStringToObject(o, "granularity", granularity_word(e->granularity));
    if (ok && e->granularity == QK_PER_CHANNEL)
        ok = add_int(o, "axis", e->axis);
    if (ok && e->granularity == QK_PER_GROUP)
        ok = add_int(o, "group_size", e->group_size);
    ok = ok && add_int(o, "blocks", e->blocks) &&
         cJSON_AddStringToObject(o, "codes_dtype", qk_st_dtype_string(e->codes_dtype)) &&
         cJSON_AddBoolToObject(o, "packed", e->packed) && cJSON_AddStringToObject(o, "scale", e->scale_name) &&
         cJSON_AddStringToObject(o, "zero_point", e->zero_name) &&
         cJSON_AddStringToObject(o, "calib", e->calib ? e->calib : "");
    return ok;
}

char *qm_format_build(const qm_entry *entries, size_t n, const char *objective)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root && cJSON_AddStringToObject(root, "format", QM_FORMAT_NAME) &&
             add_int(root, "version", QM_FORMAT_VERSION) &&
             cJSON_AddStringToObject(root, "objective", objective ? objective : "mse");
    cJSON *arr = ok ? cJSON_AddArrayToObject(root, "tensors") : NULL;
    ok = ok && arr;
    for (size_t i = 0; ok && i < n; i++)
        ok = add_entry(arr, &entries[i]);
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return NULL;
    /* cJSON's allocator is malloc unless hooks were installed (qkern installs none). */
    return text;
}

/* ---- reading ----------------------------------------------------------------- */

void qm_entries_free(qm_entry *entries, size_t n)
{
    if (!entries)
        return;
    for (size_t i = 0; i < n; i++) {
        free(entries[i].name);
        free(entries[i].scale_name);
        free(entries[i].zero_name);
        free(entries[i].calib);
    }
    free(entries);
}

/* An exact integer in [lo, hi]. */
static int get_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < -(double)QM_MAX_INT || d > (double)QM_MAX_INT)
        return 0;
    int64_t i = (int64_t)d;
    if (i < lo || i > hi)
        return 0;
    *out = i;
    return 1;
}

static const char *get_string(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

/* A bounded, printable copy of an untrusted name for messages. */
static const char *shown(const char *s, char *buf, size_t len)
{
    size_t k = 0;
    for (; s && *s && k + 4 < len; s++)
        buf[k++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    if (s && *s && len >= 4) {
        buf[k++] = '.';
        buf[k++] = '.';
        buf[k++] = '.';
    }
    buf[k] = '\0';
    return buf;
}

static qk_status parse_entry(const cJSON *o, size_t idx, qm_entry *e, char *err, size_t err_len)
{
    char nm[80];
    int64_t v;
    if (!cJSON_IsObject(o)) {
        set_err(err, err_len, "tensors[%zu] is not an object", idx);
        return QK_ERR_FORMAT;
    }
    const char *name = get_string(o, "name");
    if (!name || !name[0]) {
        set_err(err, err_len, "tensors[%zu]: \"name\" is missing or not a non-empty string", idx);
        return QK_ERR_FORMAT;
    }
    shown(name, nm, sizeof nm);
#define BAD(...)                                                                                                   \
    do {                                                                                                           \
        char why_[200];                                                                                            \
        snprintf(why_, sizeof why_, __VA_ARGS__);                                                                  \
        set_err(err, err_len, "tensor '%s': %s", nm, why_);                                                       \
        return QK_ERR_FORMAT;                                                                                      \
    } while (0)

    const char *dtype = get_string(o, "dtype");
    int bits_unused;
    if (!dtype || qk_st_dtype_parse(dtype, &e->dtype, &bits_unused) != QK_OK ||
        (e->dtype != QK_F32 && e->dtype != QK_F64 && e->dtype != QK_F16 && e->dtype != QK_BF16))
        BAD("\"dtype\" must be one of F32, F64, F16, BF16");

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
    if (!cJSON_IsArray(shape))
        BAD("\"shape\" is missing or not an array");
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > QK_ST_MAX_DIMS)
        BAD("\"shape\" has %d dimensions, more than %d", ndim, QK_ST_MAX_DIMS);
    e->ndim = ndim;
    e->n = 1;
    int d = 0;
    for (const cJSON *s = shape->child; s; s = s->next, d++) {
        if (!get_int(s, 0, QM_MAX_INT, &e->shape[d]))
            BAD("shape[%d] is not an integer in [0, 2^53]", d);
        if (e->shape[d] != 0 && e->n > INT64_MAX / e->shape[d])
            BAD("the shape's element count overflows");
        e->n *= e->shape[d];
    }
    if (e->n == 0)
        BAD("the shape has no elements (empty tensors are never quantized)");

    const char *scheme = get_string(o, "scheme");
    if (scheme && strcmp(scheme, "asymmetric") == 0)
        e->scheme = QK_ASYMMETRIC;
    else if (scheme && strcmp(scheme, "symmetric") == 0)
        e->scheme = QK_SYMMETRIC;
    else
        BAD("\"scheme\" must be asymmetric or symmetric");
    if (!get_int(cJSON_GetObjectItemCaseSensitive(o, "bits"), 2, 16, &v))
        BAD("\"bits\" must be an integer in [2, 16]");
    e->bits = (int)v;
    const cJSON *narrow = cJSON_GetObjectItemCaseSensitive(o, "narrow_range");
    if (!cJSON_IsBool(narrow))
        BAD("\"narrow_range\" must be true or false");
    e->narrow_range = cJSON_IsTrue(narrow);
    if (e->narrow_range && e->scheme != QK_SYMMETRIC)
        BAD("\"narrow_range\" applies only to the symmetric scheme");

    const char *gran = get_string(o, "granularity");
    if (gran && strcmp(gran, "tensor") == 0) {
        e->granularity = QK_PER_TENSOR;
    } else if (gran && strcmp(gran, "channel") == 0) {
        e->granularity = QK_PER_CHANNEL;
        if (e->ndim == 0 || !get_int(cJSON_GetObjectItemCaseSensitive(o, "axis"), 0, e->ndim - 1, &v))
            BAD("\"axis\" must be an axis of the shape (0 .. ndim-1)");
        e->axis = (int)v;
    } else if (gran && strcmp(gran, "group") == 0) {
        e->granularity = QK_PER_GROUP;
        if (e->ndim == 0 || !get_int(cJSON_GetObjectItemCaseSensitive(o, "group_size"), 1, QM_MAX_INT, &v) ||
            e->shape[e->ndim - 1] % v != 0)
            BAD("\"group_size\" must be an integer >= 1 that divides the last dimension");
        e->group_size = v;
    } else {
        BAD("\"granularity\" must be tensor, channel or group");
    }
    qk_layout layout;
    qm_entry_layout(e, &layout);
    int64_t blocks = 0;
    if (qk_layout_blocks(&layout, &blocks) != QK_OK)
        BAD("the block layout is invalid");
    if (!get_int(cJSON_GetObjectItemCaseSensitive(o, "blocks"), 0, QM_MAX_INT, &v) || v != blocks)
        BAD("\"blocks\" must be %" PRId64 " for this shape and granularity", blocks);
    e->blocks = blocks;

    qk_qparams probe;
    qk_dtype want;
    if (qk_qparams_from_scale(NULL, e->scheme, e->bits, e->narrow_range, 1.0f, 0, &probe) != QK_OK ||
        qk_code_dtype(&probe, &want) != QK_OK)
        BAD("no code type for %d-bit %s", e->bits, scheme);
    const char *cd = get_string(o, "codes_dtype");
    if (!cd || strcmp(cd, qk_st_dtype_string(want)) != 0)
        BAD("\"codes_dtype\" must be %s for %d-bit %s codes", qk_st_dtype_string(want), e->bits, scheme);
    e->codes_dtype = want;
    const cJSON *packed = cJSON_GetObjectItemCaseSensitive(o, "packed");
    if (!cJSON_IsBool(packed))
        BAD("\"packed\" must be true or false");
    e->packed = cJSON_IsTrue(packed);
    if (e->packed && e->bits > 4)
        BAD("\"packed\" needs bits <= 4 (got %d)", e->bits);

    const char *scale = get_string(o, "scale"), *zero = get_string(o, "zero_point");
    if (!scale || !scale[0] || !zero || !zero[0])
        BAD("\"scale\" and \"zero_point\" must name tensors");
    const char *calib = get_string(o, "calib");
    e->name = strdup(name);
    e->scale_name = strdup(scale);
    e->zero_name = strdup(zero);
    e->calib = strdup(calib ? calib : "");
    if (!e->name || !e->scale_name || !e->zero_name || !e->calib) {
        set_err(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    return QK_OK;
#undef BAD
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every tensor name the entries refer to is used once: two entries writing
 * the same tensor would make the restored file depend on their order. */
static qk_status check_unique(const qm_entry *e, size_t n, char *err, size_t err_len)
{
    const char **names = malloc((3 * n + 1) * sizeof *names);
    if (!names) {
        set_err(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        names[3 * i] = e[i].name;
        names[3 * i + 1] = e[i].scale_name;
        names[3 * i + 2] = e[i].zero_name;
    }
    qsort(names, 3 * n, sizeof *names, cmp_str);
    qk_status st = QK_OK;
    for (size_t i = 1; i < 3 * n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            char nm[80];
            set_err(err, err_len, "tensor name '%s' is used twice by the quantized entries",
                    shown(names[i], nm, sizeof nm));
            st = QK_ERR_FORMAT;
            break;
        }
    }
    free(names);
    return st;
}

qk_status qm_format_parse(const char *text, qm_entry **entries, size_t *n, char *err, size_t err_len)
{
    *entries = NULL;
    *n = 0;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        set_err(err, err_len, "the \"%s\" metadata is not valid JSON", QM_METADATA_KEY);
        return QK_ERR_FORMAT;
    }
    qk_status st = QK_OK;
    const char *format = get_string(root, "format");
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(root, "tensors");
    int64_t version = 0;
    if (!cJSON_IsObject(root) || !format || strcmp(format, QM_FORMAT_NAME) != 0) {
        set_err(err, err_len, "the \"%s\" metadata is not an object with \"format\": \"%s\"", QM_METADATA_KEY,
                QM_FORMAT_NAME);
        st = QK_ERR_FORMAT;
    } else if (!get_int(cJSON_GetObjectItemCaseSensitive(root, "version"), 0, QM_MAX_INT, &version)) {
        set_err(err, err_len, "the \"%s\" metadata has no integer \"version\"", QM_METADATA_KEY);
        st = QK_ERR_FORMAT;
    } else if (version != QM_FORMAT_VERSION) {
        set_err(err, err_len, "format version %" PRId64 " is not supported (this qkern reads version %d)", version,
                QM_FORMAT_VERSION);
        st = QK_ERR_FORMAT;
    } else if (!cJSON_IsArray(tensors)) {
        set_err(err, err_len, "the \"%s\" metadata has no \"tensors\" array", QM_METADATA_KEY);
        st = QK_ERR_FORMAT;
    }
    size_t count = st == QK_OK ? (size_t)cJSON_GetArraySize(tensors) : 0;
    qm_entry *e = NULL;
    if (st == QK_OK && !(e = calloc(count ? count : 1, sizeof *e))) {
        set_err(err, err_len, "out of memory");
        st = QK_ERR_NO_MEMORY;
    }
    size_t i = 0;
    for (const cJSON *t = st == QK_OK ? tensors->child : NULL; t && st == QK_OK; t = t->next, i++)
        st = parse_entry(t, i, &e[i], err, err_len);
    if (st == QK_OK)
        st = check_unique(e, count, err, err_len);
    cJSON_Delete(root);
    if (st != QK_OK) {
        qm_entries_free(e, count);
        return st;
    }
    *entries = e;
    *n = count;
    return QK_OK;
}

static qk_status need(const qk_st_file *f, const qm_entry *e, const char *what, const char *name, qk_dtype dtype,
                      int64_t count, const qk_st_tensor **out, char *err, size_t err_len)
{
    char nm[80], tn[80];
    const qk_st_tensor *t = qk_st_find(f, name, NULL);
    if (!t) {
        set_err(err, err_len, "tensor '%s': its %s tensor '%s' is not in the file", shown(e->name, nm, sizeof nm),
                what, shown(name, tn, sizeof tn));
        return QK_ERR_FORMAT;
    }
    if (t->dtype != dtype || t->n != count) {
        set_err(err, err_len, "tensor '%s': its %s tensor '%s' is %s with %" PRId64 " elements, expected %s with %" PRId64,
                shown(e->name, nm, sizeof nm), what, shown(name, tn, sizeof tn), t->st_dtype, t->n,
                qk_st_dtype_string(dtype), count);
        return QK_ERR_FORMAT;
    }
    *out = t;
    return QK_OK;
}

qk_status qm_entry_check(const qk_st_file *f, const qm_entry *e, const qk_st_tensor **codes,
                         const qk_st_tensor **scale, const qk_st_tensor **zero, char *err, size_t err_len)
{
    qk_status st = e->packed ? need(f, e, "packed codes", e->name, QK_U8, (e->n + 1) / 2, codes, err, err_len)
                             : need(f, e, "codes", e->name, e->codes_dtype, e->n, codes, err, err_len);
    if (st == QK_OK)
        st = need(f, e, "scale", e->scale_name, QK_F32, e->blocks, scale, err, err_len);
    if (st == QK_OK)
        st = need(f, e, "zero-point", e->zero_name, QK_I32, e->blocks, zero, err, err_len);
    return st;
}
