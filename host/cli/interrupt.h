/* SIGINT, SIGTERM, SIGHUP and SIGQUIT for the whole CLI. main() blocks them
 * before any thread exists (backends' threads inherit the mask) and a
 * sigwait() thread takes them: it cancels every atomic output (the unnamed or
 * named temporaries are dropped, no commit can follow), and the run ends with
 * 128 + the signal (130 for SIGINT, 143 for SIGTERM) and every target as it
 * was. A signal that arrives once the output is committed is ignored: the run
 * finishes and reports success, so a non-zero exit always means nothing changed.
 *
 * Long loops should poll cli_interrupted() and stop early; a run that does not
 * stop by itself within a short grace period is ended by the signal thread. */
#ifndef QK_CLI_INTERRUPT_H
#define QK_CLI_INTERRUPT_H

/* Block the signals, ignore SIGXFSZ (a file-size limit becomes a write error)
 * and start the thread. 0, or -1 when the thread cannot start (the signals
 * then keep their default action). */
int cli_interrupt_init(void);

/* How long the signal thread waits, after cancelling the outputs, for the run
 * to unwind by itself before it ends the process (default 300 ms). A command
 * whose library call cleans up on cancel (an output directory) sets it longer. */
void cli_interrupt_grace_ms(int ms);

/* 0, or the signal that interrupted the run. Safe from any thread. */
int cli_interrupted(void);

/* What main() returns when interrupted: prints the message once and gives
 * 128 + signal; returns rc unchanged when not interrupted. */
int cli_interrupt_exit(int rc);

#endif
