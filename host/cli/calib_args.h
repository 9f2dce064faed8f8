/* The calibration options quantize and gridsearch share: bit width, scheme,
 * objective, range flags, the --calib spec and the percentile grid. */
#ifndef QK_CLI_CALIB_ARGS_H
#define QK_CLI_CALIB_ARGS_H

#include <stddef.h>

#include "qkern.h"

/* Most grid points accepted: a mistyped step (1e-9) must be a usage error, not
 * a multi-gigabyte candidate table. */
#define CLI_MAX_GRID_POINTS 1000000

#define CLI_CALIB_NOT_MINE (-1)

/* Apply option `id` with `value` to opts when it is one of the shared ones
 * (--bits --scheme --objective --include-zero --narrow-range --fence-k
 * --ignore-nonfinite). Returns 0 when applied, CLI_EXIT_USAGE for a bad value
 * (reported), CLI_CALIB_NOT_MINE for any other id. */
int cli_calib_option(const char *cmd, int id, const char *value, qk_calib_options *opts);

/* "minmax" | "percentile:P" | "gridsearch" | "gridsearch:START:STOP:STEP". */
int cli_parse_calib(const char *cmd, const char *value, qk_calib_options *opts);
/* "START:STOP:STEP" into opts->grid_start/stop/step. */
int cli_parse_grid(const char *cmd, const char *opt, const char *value, qk_calib_options *opts);

/* Checks that need every option: percentile and grid ranges for the scheme,
 * narrow range only with symmetric. 0 or CLI_EXIT_USAGE (reported). */
int cli_calib_check(const char *cmd, const qk_calib_options *opts);

/* The --calib spec that reproduces opts ("percentile:99.9", ...). */
void cli_calib_describe(const qk_calib_options *opts, char *buf, size_t len);

const char *cli_scheme_name(qk_scheme scheme);
const char *cli_objective_name(qk_objective objective);

#endif
