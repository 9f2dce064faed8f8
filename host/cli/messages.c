#include "messages.h"

#include <inttypes.h>
#include <stdio.h>

#include "cli.h"
#include "report.h"

void cli_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"kB", "MB", "GB", "TB", "PB", "EB"};
    if (bytes < 1000) {
        snprintf(buf, len, "%" PRIu64 " B", bytes);
        return;
    }
    double v = (double)bytes / 1000.0;
    size_t u = 0;
    while (v >= 999.95 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, len, v < 9.995 ? "%.2f %s" : "%.1f %s", v, units[u]);
}

static int ignoring_nonfinite;

void cli_set_ignoring_nonfinite(void)
{
    ignoring_nonfinite = 1;
}

int cli_ignoring_nonfinite(void)
{
    return ignoring_nonfinite;
}

int cli_grid_edge(const qk_calib_result *r, qk_scheme scheme)
{
    if (r == NULL || r->n_candidates < 2 || r->best >= r->n_candidates)
        return 0;
    double lo = r->candidates[0].percentile, hi = lo;
    for (size_t k = 1; k < r->n_candidates; k++) {
        double p = r->candidates[k].percentile;
        lo = p < lo ? p : lo;
        hi = p > hi ? p : hi;
    }
    if (lo == hi)
        return 0;
    double best = r->candidates[r->best].percentile;
    if (best == hi && hi < 100.0)
        return 1;
    if (best == lo && lo > (scheme == QK_ASYMMETRIC ? 50.0 : 0.0))
        return -1;
    return 0;
}

void cli_grid_edge_warn(int edge, const qk_calib_result *r)
{
    if (edge == 0)
        return;
    fprintf(stderr,
            "qkern: warning: the best percentile %.8g lies on the grid's %s edge; a grid reaching %s may do better\n",
            r->candidates[r->best].percentile, edge > 0 ? "upper" : "lower", edge > 0 ? "higher" : "lower");
}
