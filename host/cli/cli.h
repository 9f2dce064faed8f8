/* Shared declarations of the `qkern` command: exit codes and the subcommands.
 * Exit codes follow the usual Unix split so scripts can tell a mistake in the
 * command line (2) from a failure while running it (1). */
#ifndef QK_CLI_H
#define QK_CLI_H

#define CLI_EXIT_OK 0
#define CLI_EXIT_RUNTIME 1
#define CLI_EXIT_USAGE 2

/* Each subcommand gets argv after its own name (argv[0] is the first option)
 * and returns the process exit code. */
int cmd_info(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_dequantize(int argc, char **argv);
int cmd_gridsearch(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_quantize_model(int argc, char **argv);
int cmd_dequantize_model(int argc, char **argv);

/* The --help text of each subcommand, printed to stdout. */
void cmd_info_usage(void);
void cmd_stats_usage(void);
void cmd_quantize_usage(void);
void cmd_dequantize_usage(void);
void cmd_gridsearch_usage(void);
void cmd_bench_usage(void);
void cmd_quantize_model_usage(void);
void cmd_dequantize_model_usage(void);

#endif
