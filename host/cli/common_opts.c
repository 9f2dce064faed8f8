#include "common_opts.h"

#include "cli.h"
#include "input.h"
#include "options.h"
#include "report.h"

int cli_common_option(const cli_common_args *c, int id, const char *value)
{
    switch (id) {
    case CLI_ARG_HELP:
        c->usage();
        return -1;
    case CLI_ARG_ERROR:
        return CLI_EXIT_USAGE;
    case CLI_ARG_POSITIONAL:
        if (*c->input)
            return cli_usage_error(c->cmd, "unexpected argument '%s' (one input file)", value);
        *c->input = value;
        return CLI_COMMON_HANDLED;
    case OPT_OUTPUT:
        if (!c->output)
            return CLI_COMMON_NOT_MINE;
        if (!value[0])
            return cli_usage_error(c->cmd, "empty output path");
        *c->output = value;
        return CLI_COMMON_HANDLED;
    case OPT_BACKEND: {
        int rc = cli_parse_backend(c->cmd, value, c->backend);
        return rc ? rc : CLI_COMMON_HANDLED;
    }
    case OPT_JSON:
        *c->json = 1;
        return CLI_COMMON_HANDLED;
    default:
        return CLI_COMMON_NOT_MINE;
    }
}
