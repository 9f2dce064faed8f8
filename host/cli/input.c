/* Inputs of the subcommands. The .npy reader accepts every dtype the format
 * helper knows; each subcommand takes only some, and says so plainly. */
#include "input.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "report.h"

void cli_format_shape(const qk_npy *npy, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < npy->ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, d ? ", " : "", npy->shape[d]);
    if (used < len)
        snprintf(buf + used, len - used, npy->ndim == 1 ? ",)" : ")");
}

static int open_checked(const char *path, qk_npy *npy, const qk_dtype *allowed, size_t n_allowed,
                        const char *expected)
{
    char err[256] = "";
    memset(npy, 0, sizeof *npy);
    qk_status st = qk_npy_open(path, npy, err, sizeof err);
    if (st != QK_OK)
        return cli_status_error(st, err, "reading %s", path);

    int ok = 0;
    for (size_t k = 0; k < n_allowed; k++)
        ok |= npy->dtype == allowed[k];
    if (!ok) {
        snprintf(err, sizeof err, "dtype %s is not accepted here (expected %s)", qk_dtype_name(npy->dtype),
                 expected);
        qk_npy_close(npy);
        return cli_status_error(QK_ERR_UNSUPPORTED, err, "reading %s", path);
    }
    if (npy->n == 0) {
        char shape[128];
        cli_format_shape(npy, shape, sizeof shape);
        snprintf(err, sizeof err, "the array is empty (shape %s)", shape);
        qk_npy_close(npy);
        return cli_status_error(QK_ERR_INVALID_ARG, err, "reading %s", path);
    }
    return 0;
}

int cli_open_float_input(const char *path, qk_npy *npy)
{
    static const qk_dtype allowed[] = {QK_F32, QK_F64, QK_F16};
    return open_checked(path, npy, allowed, 3, "float32, float64 or float16");
}

int cli_open_code_input(const char *path, qk_npy *npy)
{
    static const qk_dtype allowed[] = {QK_U8, QK_I8, QK_U16, QK_I16, QK_I32};
    return open_checked(path, npy, allowed, 5, "uint8, int8, uint16, int16 or int32");
}

int cli_parse_backend(const char *cmd, const char *name, qk_backend_kind *out)
{
    if (qk_backend_parse(name, out) != QK_OK)
        return cli_usage_error(cmd, "unknown backend '%s': expected auto, cpu, opencl or cuda", name);
    return 0;
}

int cli_context_open(qk_backend_kind kind, qk_context **ctx)
{
    char msg[512] = "";
    qk_status st = qk_context_create(kind, ctx, msg, sizeof msg);
    if (st != QK_OK) {
        *ctx = NULL;
        return cli_status_error(st, msg, "cannot use backend %s", qk_backend_name(kind));
    }
    return 0;
}
