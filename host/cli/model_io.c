/* Shared pieces of the model commands (see model_io.h). */
#include "model_io.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "cli.h"
#include "report.h"

int model_out_add(model_out *o, const char *name, const char *st_dtype, int ndim, const int64_t *shape,
                  const void *data)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        model_out_tensor *t = realloc(o->t, cap * sizeof *t);
        if (!t)
            return -1;
        o->t = t;
        o->cap = cap;
    }
    qk_dtype dt;
    int bits = 8;
    if (qk_st_dtype_parse(st_dtype, &dt, &bits) != QK_OK)
        bits = 8;
    o->t[o->n] = (model_out_tensor){name, st_dtype, ndim, shape, data, bits, o->n};
    o->n++;
    return 0;
}

void model_out_free(model_out *o)
{
    free(o->t);
    memset(o, 0, sizeof *o);
}

/* Wider elements first; sub-byte types (F4, F6_*) last, as their tensors may
 * end at odd bytes. */
static int by_width(const void *a, const void *b)
{
    const model_out_tensor *x = a, *y = b;
    if (x->elem_bits != y->elem_bits)
        return x->elem_bits > y->elem_bits ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

int model_probe_output(const char *path)
{
    char err[512] = "";
    qk_status st = qk_atomic_check(path, err, sizeof err); /* opens nothing: a FIFO would block */
    if (st != QK_OK)
        return cli_status_error(st, err, "cannot write %s", path);
    return 0;
}

int model_write(const char *path, model_out *o, const char *const *meta_keys, const char *const *meta_values,
                size_t n_meta, uint64_t *bytes_out)
{
    if (o->n > 1)
        qsort(o->t, o->n, sizeof *o->t, by_width);

    /* Signals and SIGXFSZ are the CLI's (interrupt.c): an interrupt cancels
     * the writer's temporary, a file-size limit is a write error. */
    char err[512] = "";
    qk_st_writer *w = NULL;
    qk_status st = qk_st_writer_begin(path, &w, err, sizeof err);
    for (size_t i = 0; st == QK_OK && i < o->n; i++) {
        const model_out_tensor *t = &o->t[i];
        st = qk_st_writer_add_raw(w, t->name, t->st_dtype, t->ndim, t->shape, t->data, err, sizeof err);
    }
    for (size_t i = 0; st == QK_OK && i < n_meta; i++)
        st = qk_st_writer_set_metadata(w, meta_keys[i], meta_values[i], err, sizeof err);
    if (st == QK_OK) {
        st = qk_st_writer_commit(w, err, sizeof err); /* frees w either way */
        w = NULL;
    }
    qk_st_writer_abort(w);

    if (st != QK_OK)
        return cli_status_error(st, err, "writing %s", path);
    *bytes_out = model_file_size(path);
    return 0;
}

uint16_t model_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf stays Inf, NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* rounds past 65504 */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below the smallest normal half */
        if (ax <= 0x33000000u) /* at most half the smallest subnormal: ties to even 0 */
            return sign;
        uint32_t e = ax >> 23, man = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (ax >> 13) - (112u << 10), rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the right result */
    return (uint16_t)(sign | h);
}

uint16_t model_float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* NaN: keep it a NaN after truncation */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float f;
    if (exp == 0x1f) {
        uint32_t bits = sign | 0x7f800000u | (man << 13);
        memcpy(&f, &bits, 4);
        return f;
    }
    if (exp == 0) /* subnormal or zero: man * 2^-24, exact */
        f = ldexpf((float)man, -24);
    else
        f = ldexpf((float)(man | 0x400u), (int)exp - 25);
    return sign ? -f : f;
}

static float bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

double model_sum_squares(qk_dtype dtype, const void *data, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (dtype) {
        case QK_F32:
            v = ((const float *)data)[i];
            break;
        case QK_F64:
            v = ((const double *)data)[i];
            break;
        case QK_F16:
            v = half_to_float(((const uint16_t *)data)[i]);
            break;
        case QK_BF16:
            v = bf16_to_float(((const uint16_t *)data)[i]);
            break;
        default:
            return NAN;
        }
        if (isfinite(v))
            s += v * v;
    }
    return s;
}

void model_format_shape(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

uint64_t model_file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}
