#include "outputs.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "cli.h"
#include "report.h"

/* The data keeps the original stdout; printf goes to stderr from now on. */
static int move_reports_to_stderr(void)
{
    fflush(stdout);
    int data_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (data_fd < 0 || dup2(2, 1) < 0)
        return cli_error("cannot set up standard output for the data");
    qk_atomic_set_stdout_fd(data_fd);
    return 0;
}

/* -o /dev/stdout (or any other name of the file stdout writes to). */
static int is_stdout(const char *output)
{
    struct stat a, b;
    return fstat(1, &a) == 0 && stat(output, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int cli_check_output(const char *cmd, const char **output_path, const char *const *inputs, size_t n)
{
    const char *output = *output_path;
    for (size_t k = 0; k < n; k++)
        if (inputs[k] && qk_atomic_same_file(output, inputs[k]))
            return cli_usage_error(cmd, "the output %s is the input %s (the same file): writing it would destroy "
                                        "the input; choose another output", output, inputs[k]);
    char err[512] = "";
    qk_status st = qk_atomic_check(output, err, sizeof err);
    if (st == QK_ERR_INVALID_ARG)
        return cli_usage_error(cmd, "%s", err);
    if (st != QK_OK)
        return cli_status_error(st, err, "cannot write %s", output);
    if (strcmp(output, "-") != 0 && !is_stdout(output))
        return 0;
    *output_path = "-"; /* stdout itself: its other names (/proc/self/fd/1) change meaning below */
    return move_reports_to_stderr();
}
