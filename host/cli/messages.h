/* Small message helpers shared by the commands: readable sizes, the checks
 * and whether --ignore-nonfinite was
 * given (so its hint is not shown to someone who already passed it). */
#ifndef QK_CLI_MESSAGES_H
#define QK_CLI_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

/* "512 B", "1.1 kB", "90.9 MB", "2.68 GB" (decimal units, 3 significant
 * digits at least). buf needs 16 bytes. */
void cli_format_size(uint64_t bytes, char *buf, size_t len);

/* Set by the option parsers when --ignore-nonfinite is given. */
void cli_set_ignoring_nonfinite(void);
int cli_ignoring_nonfinite(void);


#include "qkern.h"

/* Where a grid search's best candidate lies: -1 on the grid's low edge, +1 on
 * its high edge, 0 inside (or on an edge that is the percentile's own limit:
 * 100, or 50 for the asymmetric scheme, where no wider grid exists). */
int cli_grid_edge(const qk_calib_result *r, qk_scheme scheme);
/* The warning for a non-zero edge, on stderr. */
void cli_grid_edge_warn(int edge, const qk_calib_result *r);

#endif
