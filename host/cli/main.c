/* qkern: the command-line front end. main() only dispatches to a subcommand
 * and checks that stdout was really written (a full disk or a closed pipe must
 * not look like success to a script). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "interrupt.h"
#include "qkern.h"
#include "report.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*usage)(void);
    const char *summary;
} command;

static const command commands[] = {
    {"info", cmd_info, cmd_info_usage, "list backends and devices"},
    {"stats", cmd_stats, cmd_stats_usage, "min, max and exact percentiles of a tensor"},
    {"quantize", cmd_quantize, cmd_quantize_usage, "calibrate and quantize a tensor to integer codes"},
    {"dequantize", cmd_dequantize, cmd_dequantize_usage, "turn integer codes back into float32"},
    {"gridsearch", cmd_gridsearch, cmd_gridsearch_usage, "compare clipping percentiles by quantization error"},
    {"bench", cmd_bench, cmd_bench_usage, "time every op on every backend (GB/s, fraction of copy)"},
    {"quantize-model", cmd_quantize_model, cmd_quantize_model_usage, "quantize the weights of a safetensors model"},
    {"dequantize-model", cmd_dequantize_model, cmd_dequantize_model_usage, "restore a model written by quantize-model"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: qkern COMMAND [OPTIONS]\n"
            "       qkern help COMMAND | --help | --version\n"
            "\n"
            "Quantize tensors (.npy) and whole models (.safetensors) on a GPU (CUDA, OpenCL) or the CPU reference.\n"
            "\n"
            "Commands:\n");
    for (size_t k = 0; k < N_COMMANDS; k++)
        fprintf(f, "  %-17s %s\n", commands[k].name, commands[k].summary);
    fprintf(f,
            "\n"
            "Run 'qkern COMMAND --help' for a command's options.\n"
            "Environment: QKERN_BACKEND=cpu|opencl|cuda picks the backend for --backend auto,\n"
            "QKERN_DEVICE=N the device.\n"
            "Exit status: 0 success, 1 runtime error (I/O, bad file, library error), 2 usage error.\n");
}

static const command *find_command(const char *name)
{
    for (size_t k = 0; k < N_COMMANDS; k++)
        if (strcmp(commands[k].name, name) == 0)
            return &commands[k];
    return NULL;
}

/* Results that never reached stdout are a failure (a full disk, a closed
 * pipe); reported here unless the command already failed and said why. */
static int finish(int rc)
{
    int bad = fflush(stdout) == EOF || ferror(stdout);
    if (bad && rc == CLI_EXIT_OK)
        rc = cli_error("writing to stdout failed");
    return cli_interrupt_exit(rc);
}

int main(int argc, char **argv)
{
    /* First, before any thread exists: signals go to one thread, which drops
     * temporaries (see interrupt.h). */
    if (cli_interrupt_init() != 0)
        fputs("qkern: warning: cannot start the signal thread; an interrupt may leave no cleanup\n", stderr);
    if (argc < 2)
        return cli_usage_error(NULL, "missing command");

    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        usage(stdout);
        return finish(CLI_EXIT_OK);
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("qkern %d.%d.%d\n", QKERN_VERSION_MAJOR, QKERN_VERSION_MINOR, QKERN_VERSION_PATCH);
        return finish(CLI_EXIT_OK);
    }
    if (strcmp(name, "help") == 0) {
        if (argc == 2) {
            usage(stdout);
            return finish(CLI_EXIT_OK);
        }
        const command *c = find_command(argv[2]);
        if (!c)
            return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
        if (argc > 3)
            return cli_usage_error(NULL, "help takes one command");
        c->usage();
        return finish(CLI_EXIT_OK);
    }
    if (name[0] == '-')
        return cli_usage_error(NULL, "unknown option '%s' (options go after the command)", name);

    const command *c = find_command(name);
    if (!c)
        return cli_usage_error(NULL, "unknown command '%s'", name);
    return finish(c->run(argc - 2, argv + 2));
}
