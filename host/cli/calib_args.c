/* Parsing of the shared calibration options. The library validates everything
 * again; checking here as well turns a mistyped command line into a usage
 * error (exit 2) before any file is read. */
#include "calib_args.h"
#include "model_format.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "messages.h"
#include "json_out.h"
#include "options.h"
#include "report.h"

const char *cli_scheme_name(qk_scheme scheme)
{
    return scheme == QK_SYMMETRIC ? "symmetric" : "asymmetric";
}

const char *cli_objective_name(qk_objective objective)
{
    return objective == QK_OBJECTIVE_MSE_INLIERS ? "mse-inliers" : "mse";
}

int cli_calib_option(const char *cmd, int id, const char *value, qk_calib_options *opts)
{
    long l;
    int rc;
    switch (id) {
    case OPT_BITS:
        if ((rc = cli_parse_long(cmd, "--bits", value, 2, 16, &l)) != 0)
            return rc;
        opts->bits = (int)l;
        return 0;
    case OPT_SCHEME:
        if (strcmp(value, "asymmetric") == 0)
            opts->scheme = QK_ASYMMETRIC;
        else if (strcmp(value, "symmetric") == 0)
            opts->scheme = QK_SYMMETRIC;
        else
            return cli_usage_error(cmd, "invalid value '%s' for --scheme: expected asymmetric or symmetric", value);
        return 0;
    case OPT_OBJECTIVE:
        if (strcmp(value, "mse") == 0)
            opts->objective = QK_OBJECTIVE_MSE;
        else if (strcmp(value, "mse-inliers") == 0)
            opts->objective = QK_OBJECTIVE_MSE_INLIERS;
        else
            return cli_usage_error(cmd, "invalid value '%s' for --objective: expected mse or mse-inliers", value);
        return 0;
    case OPT_FENCE_K:
        return cli_parse_double(cmd, "--fence-k", value, 0.0, 1e6, &opts->fence_k);
    case OPT_INCLUDE_ZERO:
        opts->include_zero = 1;
        return 0;
    case OPT_NARROW_RANGE:
        opts->narrow_range = 1;
        return 0;
    case OPT_IGNORE_NONFINITE:
        opts->ignore_nonfinite = 1;
        cli_set_ignoring_nonfinite();
        return 0;
    default:
        return CLI_CALIB_NOT_MINE;
    }
}

/* Parse exactly "START:STOP:STEP" from s. */
static int scan_grid(const char *s, double *start, double *stop, double *step)
{
    if (cli_scan_double(&s, start) != 0 || *s++ != ':')
        return -1;
    if (cli_scan_double(&s, stop) != 0 || *s++ != ':')
        return -1;
    if (cli_scan_double(&s, step) != 0 || *s != '\0')
        return -1;
    return 0;
}

static int check_grid_shape(const char *cmd, const char *what, double start, double stop, double step)
{
    if (!(start >= 0.0 && stop <= 100.0 && start <= stop && step > 0.0))
        return cli_usage_error(cmd, "invalid grid in %s: need 0 <= START <= STOP <= 100 and STEP > 0", what);
    /* Same count as qk_grid_expand, in double so a tiny step cannot overflow. */
    if (floor((stop - start) / step + 1e-9) + 1.0 > (double)CLI_MAX_GRID_POINTS)
        return cli_usage_error(cmd, "grid in %s has more than %d points; use a larger STEP", what,
                               CLI_MAX_GRID_POINTS);
    return 0;
}

int cli_parse_grid(const char *cmd, const char *opt, const char *value, qk_calib_options *opts)
{
    double start, stop, step;
    if (scan_grid(value, &start, &stop, &step) != 0)
        return cli_usage_error(cmd, "invalid value '%s' for %s: expected START:STOP:STEP", value, opt);
    int rc = check_grid_shape(cmd, opt, start, stop, step);
    if (rc)
        return rc;
    opts->grid_start = start;
    opts->grid_stop = stop;
    opts->grid_step = step;
    return 0;
}

int cli_parse_calib(const char *cmd, const char *value, qk_calib_options *opts)
{
    static const char pct[] = "percentile:", grid[] = "gridsearch";
    if (strcmp(value, "minmax") == 0) {
        opts->method = QK_CALIB_MINMAX;
        return 0;
    }
    if (strncmp(value, pct, sizeof pct - 1) == 0) {
        const char *s = value + sizeof pct - 1;
        double p;
        if (cli_scan_double(&s, &p) != 0 || *s != '\0' || p < 0.0 || p > 100.0)
            return cli_usage_error(cmd, "invalid --calib '%s': the percentile must be a number in [0, 100]", value);
        opts->method = QK_CALIB_PERCENTILE;
        opts->percentile = p;
        return 0;
    }
    if (strncmp(value, grid, sizeof grid - 1) == 0) {
        const char *s = value + sizeof grid - 1;
        opts->method = QK_CALIB_GRIDSEARCH;
        if (*s == '\0')
            return 0; /* the library's default grid */
        double start, stop, step;
        if (*s != ':' || scan_grid(s + 1, &start, &stop, &step) != 0)
            return cli_usage_error(cmd, "invalid --calib '%s': expected gridsearch or gridsearch:START:STOP:STEP",
                                   value);
        int rc = check_grid_shape(cmd, "--calib", start, stop, step);
        if (rc)
            return rc;
        opts->grid_start = start;
        opts->grid_stop = stop;
        opts->grid_step = step;
        return 0;
    }
    return cli_usage_error(cmd, "invalid --calib '%s': expected minmax, percentile:P or gridsearch[:START:STOP:STEP]",
                           value);
}

/* Whether percentile p makes a range for the scheme: asymmetric clips both
 * tails at p and 100-p, so p < 50 would put lo above hi; symmetric clips |x|
 * at p, and p = 0 would give c = min|x|, usually 0. */
static int percentile_ok(qk_scheme scheme, double p)
{
    return scheme == QK_SYMMETRIC ? (p > 0.0 && p <= 100.0) : (p >= 50.0 && p <= 100.0);
}

static const char *percentile_range(qk_scheme scheme)
{
    return scheme == QK_SYMMETRIC ? "(0, 100]" : "[50, 100]";
}

int cli_calib_check(const char *cmd, const qk_calib_options *opts)
{
    if (opts->narrow_range && opts->scheme != QK_SYMMETRIC)
        return cli_usage_error(cmd, "--narrow-range applies only to --scheme symmetric");
    if (opts->method == QK_CALIB_PERCENTILE && !percentile_ok(opts->scheme, opts->percentile))
        return cli_usage_error(cmd, "percentile %g is outside %s for the %s scheme", opts->percentile,
                               percentile_range(opts->scheme), cli_scheme_name(opts->scheme));
    if (opts->method == QK_CALIB_GRIDSEARCH) {
        if (opts->grid) {
            for (size_t k = 0; k < opts->grid_len; k++)
                if (!percentile_ok(opts->scheme, opts->grid[k]))
                    return cli_usage_error(cmd, "grid point %g is outside %s for the %s scheme", opts->grid[k],
                                           percentile_range(opts->scheme), cli_scheme_name(opts->scheme));
        } else if (!percentile_ok(opts->scheme, opts->grid_start) || !percentile_ok(opts->scheme, opts->grid_stop)) {
            return cli_usage_error(cmd, "grid %g:%g is outside %s for the %s scheme", opts->grid_start,
                                   opts->grid_stop, percentile_range(opts->scheme), cli_scheme_name(opts->scheme));
        }
    }
    return 0;
}

void cli_calib_describe(const qk_calib_options *opts, char *buf, size_t len)
{
    qm_calib_describe(opts, buf, len); /* the words the model files record */
}
