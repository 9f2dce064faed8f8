/* Command-line scanning and strict number parsing. Hand-written rather than
 * getopt_long so that every subcommand rejects options it does not take, the
 * same way, with the same messages, and so numbers are checked strictly. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

void cli_parser_init(cli_parser *p, const char *cmd, int argc, char **argv, const cli_option *opts, size_t n_opts)
{
    memset(p, 0, sizeof *p);
    p->cmd = cmd;
    p->argc = argc;
    p->argv = argv;
    p->opts = opts;
    p->n_opts = n_opts;
}

/* The option whose long name is the first len chars of arg, or whose short
 * alias is arg. Long names are matched in full: no abbreviations, so adding an
 * option later never changes what an existing command line means. */
static const cli_option *find_option(const cli_parser *p, const char *arg, size_t len)
{
    for (size_t k = 0; k < p->n_opts; k++) {
        const cli_option *o = &p->opts[k];
        if (strlen(o->long_name) == len && strncmp(o->long_name, arg, len) == 0)
            return o;
        if (o->short_name && strcmp(o->short_name, arg) == 0)
            return o;
    }
    return NULL;
}

int cli_next(cli_parser *p, const char **value)
{
    *value = NULL;
    while (p->i < p->argc) {
        const char *arg = p->argv[p->i++];
        if (p->options_done || arg[0] != '-' || arg[1] == '\0') {
            *value = arg; /* "-" alone is a positional (a file named "-") */
            return CLI_ARG_POSITIONAL;
        }
        if (strcmp(arg, "--") == 0) {
            p->options_done = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            return CLI_ARG_HELP;

        const char *eq = (arg[1] == '-') ? strchr(arg, '=') : NULL;
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const cli_option *o = find_option(p, arg, len);
        if (!o) {
            cli_usage_error(p->cmd, "unknown option '%.*s'", (int)len, arg);
            return CLI_ARG_ERROR;
        }
        p->opt_name = o->long_name;
        if (!o->takes_value) {
            if (eq) {
                cli_usage_error(p->cmd, "option %s takes no value", o->long_name);
                return CLI_ARG_ERROR;
            }
            return o->id;
        }
        if (eq) {
            *value = eq + 1;
        } else if (p->i < p->argc) {
            /* The next word is the value even if it starts with '-', so
             * "--zero-point -3" works. */
            *value = p->argv[p->i++];
        } else {
            cli_usage_error(p->cmd, "option %s needs a value", o->long_name);
            return CLI_ARG_ERROR;
        }
        return o->id;
    }
    return CLI_ARG_END;
}

int cli_doubles_push(cli_doubles *d, double x)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 16;
        double *v = realloc(d->v, cap * sizeof *v);
        if (!v)
            return -1;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    return 0;
}

void cli_doubles_free(cli_doubles *d)
{
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

int cli_scan_double(const char **s, double *out)
{
    const char *p = *s;
    /* strtod would skip blanks and accept an empty field as 0 via end == p. */
    if (*p == '\0' || isspace((unsigned char)*p))
        return -1;
    char *end;
    errno = 0;
    double x = strtod(p, &end);
    if (end == p || !isfinite(x))
        return -1;
    /* Overflow is caught by isfinite; an underflow to a tiny value is harmless. */
    *out = x;
    *s = end;
    return 0;
}

int cli_parse_long(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return cli_usage_error(cmd, "invalid value '%s' for %s: expected an integer in [%ld, %ld]", s, opt, lo, hi);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || errno == ERANGE || v < lo || v > hi)
        return cli_usage_error(cmd, "invalid value '%s' for %s: expected an integer in [%ld, %ld]", s, opt, lo, hi);
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    const char *p = s;
    double v;
    if (cli_scan_double(&p, &v) != 0 || *p != '\0' || v < lo || v > hi)
        return cli_usage_error(cmd, "invalid value '%s' for %s: expected a number in [%g, %g]", s, opt, lo, hi);
    *out = v;
    return 0;
}

int cli_parse_double_list(const char *cmd, const char *opt, const char *s, double lo, double hi, cli_doubles *d)
{
    const char *p = s;
    for (;;) {
        double v;
        if (cli_scan_double(&p, &v) != 0 || (*p != ',' && *p != '\0') || v < lo || v > hi)
            return cli_usage_error(cmd, "invalid value '%s' for %s: expected comma-separated numbers in [%g, %g]",
                                   s, opt, lo, hi);
        if (cli_doubles_push(d, v) != 0)
            return cli_error("%s: out of memory", opt);
        if (*p == '\0')
            return 0;
        p++; /* past ',' ; a trailing comma fails on the empty field */
    }
}
