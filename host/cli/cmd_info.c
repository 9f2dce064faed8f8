/* qkern info: which backends are built in, which answer, and their devices.
 * With --backend it doubles as a probe for scripts: exit 0 only when that
 * backend can be used. */
#include <inttypes.h>
#include <stdio.h>

#include "args.h"
#include "cli.h"
#include "input.h"
#include "json_out.h"
#include "options.h"
#include "qkern.h"
#include "report.h"

void cmd_info_usage(void)
{
    fputs("Usage: qkern info [--json] [--backend NAME]\n"
          "\n"
          "List the backends (cpu, opencl, cuda): compiled in, available, devices.\n"
          "\n"
          "Options:\n"
          "  --json           print one JSON object:\n"
          "                   {\"backends\":[{\"name\",\"compiled\",\"available\",\"reason\",\n"
          "                   \"devices\":[{\"name\",\"vendor\",\"type\",\"version\",\"global_mem\",\n"
          "                   \"self_test\"}]}]} (\"reason\" only when not available; \"self_test\",\n"
          "                   the OpenCL known-answer self-test's verdict, only for OpenCL; cuda,\n"
          "                   when compiled, also has \"runtime_version\", \"driver_version\" (null\n"
          "                   without a driver) and \"driver_needed\", the oldest NVIDIA driver\n"
          "                   the build runs on)\n"
          "  --backend NAME   only this backend (auto|cpu|opencl|cuda; auto shows the one\n"
          "                   that would be picked); exit 0 if available, 1 if not\n"
          "  -h, --help       show this help\n",
          stdout);
}

/* CUDA numbers versions 1000 * major + 10 * minor. */
static void cuda_version(char *buf, size_t len, int v)
{
    snprintf(buf, len, "%d.%d", v / 1000, (v % 1000) / 10);
}

static void print_text(const qk_backend_info *b)
{
    if (b->available)
        printf("%-7s available, %d device%s\n", b->name, b->n_devices, b->n_devices == 1 ? "" : "s");
    else
        printf("%-7s %s: %s\n", b->name, b->compiled ? "not available" : "not compiled",
               b->reason[0] ? b->reason : "(no reason given)");
    if (b->kind == QK_BACKEND_CUDA && b->compiled) {
        char rt[32], drv[32] = "none found";
        cuda_version(rt, sizeof rt, b->runtime_version);
        if (b->driver_version) cuda_version(drv, sizeof drv, b->driver_version);
        printf("        CUDA runtime %s, driver %s (this build needs NVIDIA driver %s or newer)\n", rt, drv,
               b->driver_needed);
    }
    for (int d = 0; d < b->n_devices && d < QK_MAX_DEVICES; d++) {
        const qk_device_info *dev = &b->devices[d];
        printf("  [%d] %s (%s, %s", d, dev->name, dev->vendor[0] ? dev->vendor : "unknown vendor",
               dev->type[0] ? dev->type : "unknown type");
        if (dev->version[0])
            printf(", %s", dev->version);
        if (dev->global_mem)
            printf(", %.1f GiB", (double)dev->global_mem / (1024.0 * 1024.0 * 1024.0));
        printf(")\n");
        if (dev->check[0])
            printf("      %s\n", dev->check);
    }
}

static void add_json(cli_json *j, cJSON *list, const qk_backend_info *b)
{
    cJSON *o = cli_json_object(j, list, NULL);
    cli_json_string(j, o, "name", b->name);
    cli_json_bool(j, o, "compiled", b->compiled);
    cli_json_bool(j, o, "available", b->available);
    if (!b->available)
        cli_json_string(j, o, "reason", b->reason);
    if (b->kind == QK_BACKEND_CUDA && b->compiled) {
        char v[32];
        cuda_version(v, sizeof v, b->runtime_version);
        cli_json_string(j, o, "runtime_version", v);
        if (b->driver_version) {
            cuda_version(v, sizeof v, b->driver_version);
            cli_json_string(j, o, "driver_version", v);
        } else {
            cli_json_null(j, o, "driver_version");
        }
        cli_json_string(j, o, "driver_needed", b->driver_needed);
    }
    cJSON *devs = cli_json_array(j, o, "devices");
    for (int d = 0; d < b->n_devices && d < QK_MAX_DEVICES; d++) {
        const qk_device_info *dev = &b->devices[d];
        cJSON *jd = cli_json_object(j, devs, NULL);
        cli_json_string(j, jd, "name", dev->name);
        cli_json_string(j, jd, "vendor", dev->vendor);
        cli_json_string(j, jd, "type", dev->type);
        cli_json_string(j, jd, "version", dev->version);
        cli_json_uint(j, jd, "global_mem", dev->global_mem);
        if (dev->check[0])
            cli_json_string(j, jd, "self_test", dev->check);
    }
}

/* AUTO is not a backend of its own: ask the library which one it picks. */
static int resolve_auto(qk_backend_kind *kind)
{
    qk_context *ctx;
    int rc = cli_context_open(QK_BACKEND_AUTO, &ctx);
    if (rc)
        return rc;
    *kind = qk_context_backend(ctx);
    qk_context_destroy(ctx);
    return 0;
}

int cmd_info(int argc, char **argv)
{
    static const cli_option opts[] = {CLI_OPT_JSON, CLI_OPT_BACKEND};
    cli_parser p;
    cli_parser_init(&p, "info", argc, argv, opts, CLI_N_OPTS(opts));
    int json = 0, rc, one = 0;
    qk_backend_kind only = QK_BACKEND_AUTO;
    const char *value;
    for (int id; (id = cli_next(&p, &value)) != CLI_ARG_END;) {
        switch (id) {
        case CLI_ARG_HELP:
            cmd_info_usage();
            return CLI_EXIT_OK;
        case CLI_ARG_ERROR:
            return CLI_EXIT_USAGE;
        case CLI_ARG_POSITIONAL:
            return cli_usage_error("info", "unexpected argument '%s'", value);
        case OPT_JSON:
            json = 1;
            break;
        case OPT_BACKEND:
            if ((rc = cli_parse_backend("info", value, &only)) != 0)
                return rc;
            one = 1;
            break;
        }
    }
    if (one && only == QK_BACKEND_AUTO && (rc = resolve_auto(&only)) != 0)
        return rc;

    static const qk_backend_kind all[] = {QK_BACKEND_CPU, QK_BACKEND_OPENCL, QK_BACKEND_CUDA};
    const qk_backend_kind *kinds = one ? &only : all;
    size_t n_kinds = one ? 1 : 3;

    cli_json j = {0};
    cJSON *list = NULL;
    if (json) {
        cli_json_init(&j);
        list = cli_json_array(&j, j.root, "backends");
    }
    int all_available = 1;
    for (size_t k = 0; k < n_kinds; k++) {
        qk_backend_info info;
        qk_status st = qk_backend_query(kinds[k], &info);
        if (st != QK_OK) {
            cli_json_free(&j);
            return cli_status_error(st, NULL, "querying backend %s", qk_backend_name(kinds[k]));
        }
        all_available &= info.available != 0;
        if (json)
            add_json(&j, list, &info);
        else
            print_text(&info);
        if (one && !info.available)
            fprintf(stderr, "qkern: backend %s is not available%s%s\n", info.name, info.reason[0] ? ": " : "",
                    info.reason);
    }
    if (json) {
        rc = cli_json_emit(&j);
        cli_json_free(&j);
        if (rc)
            return rc;
    }
    return one && !all_available ? CLI_EXIT_RUNTIME : CLI_EXIT_OK;
}
