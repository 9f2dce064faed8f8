/* The progress line: redrawn in place with "\r" and erased with "\r\033[K".
 * Every draw is one fputs of a line built in a buffer, so a slow terminal
 * never shows half a bar. */
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 24
#define REDRAW_S 0.1

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_start(cli_progress *p, const char *unit, size_t total_items, uint64_t total_bytes)
{
    memset(p, 0, sizeof *p);
    p->on = isatty(STDERR_FILENO);
    p->unit = unit;
    p->total_items = total_items;
    p->total_bytes = total_bytes;
    p->start = now_s();
    p->last = -1.0;
}

static void format_eta(char *buf, size_t len, double s)
{
    if (!(s >= 0.0) || s > 359999.0) {
        snprintf(buf, len, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

void cli_progress_update(cli_progress *p, size_t items_done, uint64_t bytes_done, int force)
{
    if (!p->on)
        return;
    double t = now_s();
    if (!force && p->last >= 0.0 && t - p->last < REDRAW_S)
        return;
    p->last = t;
    double frac = p->total_bytes ? (double)bytes_done / (double)p->total_bytes
                                 : p->total_items ? (double)items_done / (double)p->total_items : 1.0;
    if (frac > 1.0)
        frac = 1.0;
    char bar[BAR_WIDTH + 1];
    int full = (int)(frac * BAR_WIDTH);
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < full ? '#' : '-';
    bar[BAR_WIDTH] = '\0';
    double el = t - p->start, mb = (double)bytes_done / 1e6;
    double rate = el > 0.0 ? mb / el : 0.0;
    char eta[24];
    format_eta(eta, sizeof eta, rate > 0.0 ? ((double)p->total_bytes / 1e6 - mb) / rate : -1.0);
    char line[200];
    snprintf(line, sizeof line, "\r[%s] %zu/%zu %s  %.1f/%.1f MB  %.1f MB/s  ETA %s\033[K", bar, items_done,
             p->total_items, p->unit, mb, (double)p->total_bytes / 1e6, rate, eta);
    fputs(line, stderr);
    fflush(stderr);
    p->drawn = 1;
}

void cli_progress_note(cli_progress *p, const char *text)
{
    if (!p->on)
        return;
    char line[300];
    snprintf(line, sizeof line, "\r%.200s\033[K", text);
    fputs(line, stderr);
    fflush(stderr);
    p->drawn = 1;
}

void cli_progress_clear(cli_progress *p)
{
    if (!p->on || !p->drawn)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->drawn = 0;
}
