/* Shared parts of the model commands (model_cli.h). */
#include "model_cli.h"

#include "gguf.h"
#include "interrupt.h"
#include "outputs.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "input.h"
#include "options.h"
#include "progress.h"
#include "report.h"

/* "4G", "64M", "1500000", "512k": bytes, or -1. */
static int parse_size(const char *s, uint64_t *out)
{
    errno = 0;
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    unsigned shift = 0;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case 'T': shift = 40; break;
        default: return -1;
        }
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
        if (*end)
            return -1;
    }
    if (v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int model_cli_option(const char *cmd, int id, const char *value, model_cli_args *m)
{
    long l;
    int rc;
    switch (id) {
    case OPT_BACKEND: {
        m->n_backends = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", value);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (m->n_backends == MODEL_CLI_MAX_BACKENDS)
                return cli_usage_error(cmd, "too many backends in --backend (at most %d)", MODEL_CLI_MAX_BACKENDS);
            if ((rc = cli_parse_backend(cmd, tok, &m->backends[m->n_backends])) != 0)
                return rc;
            m->n_backends++;
        }
        if (m->n_backends == 0)
            return cli_parse_backend(cmd, value, &m->backends[0]);
        return 0;
    }
    case OPT_JOBS:
        if ((rc = cli_parse_long(cmd, "--jobs", value, 1, 64, &l)) != 0)
            return rc;
        m->jobs = (int)l;
        return 0;
    case OPT_MEMORY_LIMIT:
        if (parse_size(value, &m->memory_limit) != 0 || m->memory_limit < ((uint64_t)1 << 20))
            return cli_usage_error(cmd, "invalid --memory-limit '%s': expected a size of at least 1M (K, M, G suffixes)",
                                   value);
        return 0;
    case OPT_MAX_SHARD_SIZE:
        if (parse_size(value, &m->max_shard_size) != 0 || m->max_shard_size == 0)
            return cli_usage_error(cmd, "invalid --max-shard-size '%s': expected a size (K, M, G suffixes)", value);
        return 0;
    default:
        return 1;
    }
}

void model_cli_apply(const model_cli_args *m, qk_model_options *o)
{
    o->backends = m->n_backends ? m->backends : NULL;
    o->n_backends = m->n_backends;
    o->jobs = m->jobs ? m->jobs : m->n_backends > 1 ? (int)m->n_backends : 1;
    o->memory_limit = m->memory_limit;
    o->max_shard_size = m->max_shard_size;
}

/* ---- interrupts and progress ----------------------------------------------------------- */

typedef struct bar {
    cli_progress prog;
    int started;
} bar;

static int on_progress(void *user, const qk_model_progress *p)
{
    bar *b = user;
    if (!b->started) {
        cli_progress_start(&b->prog, "tensors", p->tensors_total, p->bytes_total);
        b->started = 1;
    }
    cli_progress_update(&b->prog, p->tensors_done, p->bytes_done, p->tensors_done == p->tensors_total);
    return cli_interrupted() != 0; /* an interrupt cancels: the library drops everything */
}

int model_cli_run(model_cli_fn fn, const char *input, const char *output, qk_model_options *opts,
                  qk_model_report *report)
{
    /* Signals are the CLI's signal thread's (interrupt.h): it cancels the
     * atomic outputs at once, the progress callback stops the library between
     * pieces, and the library removes the output directory itself. A sharded
     * run must be allowed to get there, hence the longer grace. */
    cli_interrupt_grace_ms(10000);
    bar b;
    memset(&b, 0, sizeof b);
    opts->progress = on_progress;
    opts->progress_user = &b;
    qk_status st = fn(input, output, opts, report);
    cli_progress_clear(&b.prog);

    if (cli_interrupted())
        return CLI_EXIT_RUNTIME; /* main() turns it into 128 + the signal and says so */
    if (st == QK_OK)
        return 0;
    if (st == QK_ERR_INVALID_ARG && strncmp(report->what, "--include ", 10) == 0)
        return cli_usage_error("quantize-model", "%s", report->what);
    cli_status_error(st, report->detail, "%s", report->what);
    if (st == QK_ERR_NONFINITE && opts->ggml) {
        fputs("qkern: hint: ggml's block formats hold finite values only; exclude the tensor with --exclude\n",
              stderr);
    } else if (st == QK_ERR_NONFINITE) {
        if (report->nonfinite_count > 0)
            fprintf(stderr, "qkern: hint: pass --ignore-nonfinite to skip the %" PRId64 " NaN/Inf value%s\n",
                    report->nonfinite_count, report->nonfinite_count == 1 ? "" : "s");
        else
            fputs("qkern: hint: pass --ignore-nonfinite to skip NaN/Inf values\n", stderr);
    }
    return CLI_EXIT_RUNTIME;
}

/* A directory output (a sharded input, or --max-shard-size) is checked by the
 * library (it must not exist or be empty); a file output goes through the
 * CLI's output rules (devices, links, modes, output = input). */
int model_cli_check_output(const char *cmd, const char **output, const char *input, uint64_t max_shard_size)
{
    struct stat st;
    size_t n = strlen(input);
    static const char idx[] = ".index.json";
    size_t on = strlen(*output);
    int gguf_out = on >= 5 && strcmp(*output + on - 5, ".gguf") == 0; /* one file, whatever the input */
    int dir_out = !gguf_out && (max_shard_size > 0 || (stat(input, &st) == 0 && S_ISDIR(st.st_mode)) ||
                  (n >= sizeof idx - 1 && strcmp(input + n - (sizeof idx - 1), idx) == 0));
    if (!dir_out)
        return cli_check_output(cmd, output, &input, 1);
    struct stat o;
    if (stat(*output, &o) == 0 && stat(input, &st) == 0 && o.st_dev == st.st_dev && o.st_ino == st.st_ino)
        return cli_usage_error(cmd, "the output %s is the input %s: choose another output directory", *output,
                               input);
    return 0;
}

int model_cli_has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

void model_cli_type_name(int type, char *buf, size_t len)
{
    const qk_ggml_type_traits *tt = type >= 0 ? qk_ggml_type_get((uint32_t)type) : NULL;
    const char *n = tt ? tt->name : "?";
    size_t k = 0;
    for (; n[k] && k + 1 < len; k++)
        buf[k] = (char)toupper((unsigned char)n[k]);
    buf[k] = '\0';
}
