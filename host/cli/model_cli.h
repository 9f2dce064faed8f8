/* What quantize-model and dequantize-model share around the library's
 * qk_model_* calls: the options of whole-model runs (--memory-limit, --jobs,
 * --max-shard-size, a --backend list), the progress bar, interrupts, and
 * turning a failed run's report into the error message. */
#ifndef QK_CLI_MODEL_CLI_H
#define QK_CLI_MODEL_CLI_H

#include <stdint.h>

#include "args.h"
#include "qkern.h"

enum { OPT_MEMORY_LIMIT = 1100, OPT_JOBS, OPT_MAX_SHARD_SIZE };

#define CLI_OPT_MEMORY_LIMIT   {"--memory-limit", NULL, 1, OPT_MEMORY_LIMIT}
#define CLI_OPT_JOBS           {"--jobs", "-j", 1, OPT_JOBS}
#define CLI_OPT_MAX_SHARD_SIZE {"--max-shard-size", NULL, 1, OPT_MAX_SHARD_SIZE}

#define MODEL_CLI_MAX_BACKENDS 16

typedef struct model_cli_args {
    qk_backend_kind backends[MODEL_CLI_MAX_BACKENDS];
    size_t n_backends;
    int jobs;                 /* 0: as many as backends listed */
    uint64_t memory_limit, max_shard_size;
} model_cli_args;

/* The --help lines of these options. */
#define MODEL_CLI_HELP                                                                                         \
    "  --backend B[,B...]     auto|cpu|opencl|cuda (default auto); a list gives the jobs\n"                     \
    "                         their backends in turn (e.g. opencl,cpu): the output is the same\n"              \
    "  -j, --jobs N           work on N tensors at once, each job with its own context\n"                      \
    "                         (default 1, or one per backend listed); one memory limit for all\n"              \
    "  --memory-limit SIZE    bytes of buffers the run may hold (K, M, G suffixes; default\n"                   \
    "                         4G, at most half of the RAM): tensors go through in pieces of\n"                  \
    "                         whole blocks that fit; per-tensor or channel:AXIS>0 scales\n"                    \
    "                         need a whole tensor at once\n"                                                   \
    "  --max-shard-size SIZE  write a directory of shards of at most SIZE bytes of tensors\n"                  \
    "                         each (default: a file for a file, shards like the input's)\n"

/* 0 when the option was one of these (value parsed), 1 when it is not, else
 * CLI_EXIT_USAGE (reported). OPT_BACKEND is handled here too. */
int model_cli_option(const char *cmd, int id, const char *value, model_cli_args *m);
/* Fill the options' backends, jobs, memory limit and shard size. */
void model_cli_apply(const model_cli_args *m, qk_model_options *o);

typedef qk_status (*model_cli_fn)(const char *input, const char *output, const qk_model_options *opts,
                                  qk_model_report *report);
/* Run fn with a progress bar on a terminal and interrupts turned into a
 * cancel: SIGINT, SIGTERM, SIGHUP and SIGQUIT stop the run (nothing is left
 * behind) and are raised again once it has returned, so the exit status says
 * which signal it was; SIGXFSZ is ignored so a file-size limit is a write error.
 * Prints the error when fn fails: returns 0 or CLI_EXIT_RUNTIME. */
int model_cli_run(model_cli_fn fn, const char *input, const char *output, qk_model_options *opts,
                  qk_model_report *report);

/* The model commands' output check, after parsing: a file output follows the
 * CLI's output rules (outputs.h); a directory output (sharded input or
 * --max-shard-size) must only not be the input. 0, or the exit status. */
int model_cli_check_output(const char *cmd, const char **output, const char *input, uint64_t max_shard_size);

/* Whether s ends in suffix (".gguf", ".safetensors"). */
int model_cli_has_suffix(const char *s, const char *suffix);
/* ggml's name of a type in capitals ("Q4_K", "BF16"), or "?". */
void model_cli_type_name(int type, char *buf, size_t len);

#endif
