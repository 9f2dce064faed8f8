/* A one-line progress bar on stderr for long commands: items done of total,
 * bytes processed, throughput and ETA. It draws only when stderr is a
 * terminal (scripts and tests see nothing), at most about ten times a second,
 * and is cleared when done, so error messages and results start on a clean line. */
#ifndef QK_CLI_PROGRESS_H
#define QK_CLI_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct cli_progress {
    int on;                /* stderr is a terminal */
    int drawn;             /* a line is on screen */
    const char *unit;      /* what the items are ("tensors") */
    size_t total_items;
    uint64_t total_bytes;
    double start, last;    /* monotonic seconds */
} cli_progress;

void cli_progress_start(cli_progress *p, const char *unit, size_t total_items, uint64_t total_bytes);
/* Redraw if ~0.1 s passed since the last draw (or force). */
void cli_progress_update(cli_progress *p, size_t items_done, uint64_t bytes_done, int force);
/* Replace the bar by a short status ("writing OUT ...") until the next update or clear. */
void cli_progress_note(cli_progress *p, const char *text);
/* Erase the line (safe to call repeatedly, or when nothing was drawn). */
void cli_progress_clear(cli_progress *p);

#endif
