/* The options most subcommands share (the one input, -o, --backend, --json,
 * --help and scan errors), handled in one place so they behave the same. */
#ifndef QK_CLI_COMMON_OPTS_H
#define QK_CLI_COMMON_OPTS_H

#include "qkern.h"

typedef struct cli_common_args {
    const char *cmd;          /* for messages */
    void (*usage)(void);      /* --help */
    const char **input;       /* the one positional argument */
    const char **output;      /* -o PATH, or NULL when the subcommand has none */
    qk_backend_kind *backend; /* --backend NAME */
    int *json;                /* --json */
} cli_common_args;

/* Not one of the shared options: the caller handles id. */
#define CLI_COMMON_NOT_MINE (-100)
/* Handled: go on with the next option. */
#define CLI_COMMON_HANDLED (-101)

/* Otherwise the value to return from the caller's parser as it is (-1 after
 * --help, CLI_EXIT_USAGE after a reported usage error). */
int cli_common_option(const cli_common_args *c, int id, const char *value);

#endif
