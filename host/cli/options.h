/* The options the subcommands share, spelled once so every subcommand that
 * takes --bits (say) takes it under the same name with the same meaning. Each
 * subcommand lists the ones it accepts in its own table. */
#ifndef QK_CLI_OPTIONS_H
#define QK_CLI_OPTIONS_H

#include "args.h"

enum cli_opt_id {
    OPT_OUTPUT,
    OPT_JSON,
    OPT_BACKEND,
    OPT_BITS,
    OPT_SCHEME,
    OPT_CALIB,
    OPT_OBJECTIVE,
    OPT_INCLUDE_ZERO,
    OPT_NARROW_RANGE,
    OPT_FENCE_K,
    OPT_IGNORE_NONFINITE,
    OPT_SCALE,
    OPT_ZERO_POINT,
    OPT_GRID,
    OPT_GRID_LIST,
    OPT_PERCENTILE
};

#define CLI_OPT_OUTPUT           {"--output", "-o", 1, OPT_OUTPUT}
#define CLI_OPT_JSON             {"--json", NULL, 0, OPT_JSON}
#define CLI_OPT_BACKEND          {"--backend", NULL, 1, OPT_BACKEND}
#define CLI_OPT_BITS             {"--bits", NULL, 1, OPT_BITS}
#define CLI_OPT_SCHEME           {"--scheme", NULL, 1, OPT_SCHEME}
#define CLI_OPT_CALIB            {"--calib", NULL, 1, OPT_CALIB}
#define CLI_OPT_OBJECTIVE        {"--objective", NULL, 1, OPT_OBJECTIVE}
#define CLI_OPT_INCLUDE_ZERO     {"--include-zero", NULL, 0, OPT_INCLUDE_ZERO}
#define CLI_OPT_NARROW_RANGE     {"--narrow-range", NULL, 0, OPT_NARROW_RANGE}
#define CLI_OPT_FENCE_K          {"--fence-k", NULL, 1, OPT_FENCE_K}
#define CLI_OPT_IGNORE_NONFINITE {"--ignore-nonfinite", NULL, 0, OPT_IGNORE_NONFINITE}
#define CLI_OPT_SCALE            {"--scale", NULL, 1, OPT_SCALE}
#define CLI_OPT_ZERO_POINT       {"--zero-point", NULL, 1, OPT_ZERO_POINT}
#define CLI_OPT_GRID             {"--grid", NULL, 1, OPT_GRID}
#define CLI_OPT_GRID_LIST        {"--grid-list", NULL, 1, OPT_GRID_LIST}
#define CLI_OPT_PERCENTILE       {"--percentile", "-p", 1, OPT_PERCENTILE}

#define CLI_N_OPTS(table) (sizeof(table) / sizeof((table)[0]))

#endif
