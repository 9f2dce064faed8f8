/* Error messages of the qkern command. Everything goes to stderr so that
 * stdout carries only results (one JSON object with --json). */
#include "report.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "cli.h"
#include "messages.h"

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "qkern%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'qkern%s%s --help' for more information.\n", cmd ? " " : "", cmd ? cmd : "");
    return CLI_EXIT_USAGE;
}

static void vreport(qk_status status, const char *detail, const char *fmt, va_list ap)
{
    fputs("qkern: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, ": %s", qk_status_string(status));
    if (detail && detail[0])
        fprintf(stderr, ": %s", detail);
    fputc('\n', stderr);
}

int cli_status_error(qk_status status, const char *detail, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(status, detail, fmt, ap);
    va_end(ap);
    return CLI_EXIT_RUNTIME;
}

int cli_lib_error(const qk_context *ctx, qk_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(status, ctx ? qk_context_message(ctx) : NULL, fmt, ap);
    va_end(ap);
    if (status == QK_ERR_NONFINITE && ctx && !cli_ignoring_nonfinite()) {
        int64_t count = 0, first = -1;
        if (qk_context_nonfinite(ctx, &count, &first) == QK_OK && count > 0)
            fprintf(stderr, "qkern: hint: pass --ignore-nonfinite to skip the %" PRId64 " NaN/Inf value%s\n", count,
                    count == 1 ? "" : "s");
        else
            fputs("qkern: hint: pass --ignore-nonfinite to skip NaN/Inf values\n", stderr);
    }
    return CLI_EXIT_RUNTIME;
}

int cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("qkern: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_EXIT_RUNTIME;
}
