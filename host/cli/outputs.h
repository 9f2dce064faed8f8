/* The checks every writing command makes before any work (the rules of
 * host/io/atomic_file.h): the output is none of the inputs, it may be
 * written, and "-" (standard output) is not a terminal. */
#ifndef QK_CLI_OUTPUTS_H
#define QK_CLI_OUTPUTS_H

#include <stddef.h>

/* 0 to go on; CLI_EXIT_USAGE when output is one of the n inputs (the same
 * file through any link) or "-" is a terminal; CLI_EXIT_RUNTIME when it may
 * not be written. Reported either way. For "-" (or another name of the file
 * stdout writes to, such as /dev/stdout, which *output becomes "-"), the
 * command's own reports move to stderr: stdout carries the data. */
int cli_check_output(const char *cmd, const char **output, const char *const *inputs, size_t n);

#endif
