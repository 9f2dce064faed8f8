/* Command-line scanning and strict number parsing for the qkern subcommands.
 * Options are "--name VALUE", "--name=VALUE" or a short alias "-o VALUE";
 * "--" ends the options; -h/--help is recognised everywhere. Numbers must be
 * consumed entirely ("8x", "", " 8" are rejected) and be finite. */
#ifndef QK_CLI_ARGS_H
#define QK_CLI_ARGS_H

#include <stddef.h>

typedef struct cli_option {
    const char *long_name;  /* "--bits" */
    const char *short_name; /* "-o", or NULL */
    int takes_value;        /* 1: needs a value; 0: a flag */
    int id;                 /* what cli_next() returns for it (>= 0) */
} cli_option;

/* cli_next() results besides an option's id. */
enum {
    CLI_ARG_END = -1,        /* no more arguments */
    CLI_ARG_POSITIONAL = -2, /* *value is the argument */
    CLI_ARG_HELP = -3,       /* -h or --help */
    CLI_ARG_ERROR = -4       /* usage error, already reported */
};

typedef struct cli_parser {
    const char *cmd;         /* subcommand name, for messages */
    int argc;
    char **argv;
    int i;                   /* next argument to look at */
    int options_done;        /* after "--" everything is positional */
    const cli_option *opts;
    size_t n_opts;
    const char *opt_name;    /* the option just returned, as its long name (for messages) */
} cli_parser;

void cli_parser_init(cli_parser *p, const char *cmd, int argc, char **argv, const cli_option *opts, size_t n_opts);
/* The next option id, or one of the CLI_ARG_* values. *value is the option's
 * value (NULL for flags) or the positional argument. */
int cli_next(cli_parser *p, const char **value);

/* A growable list of doubles (percentiles, grid points). */
typedef struct cli_doubles {
    double *v;
    size_t n, cap;
} cli_doubles;
int cli_doubles_push(cli_doubles *d, double x); /* 0, or -1 when out of memory */
void cli_doubles_free(cli_doubles *d);

/* Read one finite number at *s and advance *s past it. No leading blanks, no
 * empty field. Returns 0 or -1. */
int cli_scan_double(const char **s, double *out);

/* Parse the whole string as an integer in [lo, hi] / a finite double in [lo, hi].
 * On failure report "invalid value for OPT" as a usage error and return
 * CLI_EXIT_USAGE; 0 on success. */
int cli_parse_long(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_double(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* A comma-separated list of finite doubles in [lo, hi], appended to d. */
int cli_parse_double_list(const char *cmd, const char *opt, const char *s, double lo, double hi, cli_doubles *d);

#endif
