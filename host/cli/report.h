/* Error messages on stderr, in the two shapes scripts and people rely on:
 *   usage:   "qkern CMD: <what>" + a hint to use --help       (exit 2)
 *   runtime: "qkern: error: <what>: <status>: <detail>"       (exit 1) */
#ifndef QK_CLI_REPORT_H
#define QK_CLI_REPORT_H

#include "qkern.h"

#if defined(__GNUC__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* cmd is the subcommand name, or NULL for the top level. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);

/* A failure with a status and a detail string (an I/O helper's err buffer, or
 * NULL/"" for none). Returns CLI_EXIT_RUNTIME. */
int cli_status_error(qk_status status, const char *detail, const char *fmt, ...) CLI_PRINTF(3, 4);

/* A failed library call: the detail is the context's message; after
 * QK_ERR_NONFINITE a second line says how many values and how to skip them.
 * Returns CLI_EXIT_RUNTIME. */
int cli_lib_error(const qk_context *ctx, qk_status status, const char *fmt, ...) CLI_PRINTF(3, 4);

/* A plain failure without a status. Returns CLI_EXIT_RUNTIME. */
int cli_error(const char *fmt, ...) CLI_PRINTF(1, 2);

#endif
