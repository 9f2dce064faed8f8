/* JSON output helpers: exact numbers (see json_out.h) and one sticky failure
 * flag instead of a check after every cJSON call. */
#include "json_out.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

void cli_format_double(char *buf, double v)
{
    static const char *const formats[] = {"%.15g", "%.16g", "%.17g"};
    for (size_t k = 0; k < 3; k++) {
        snprintf(buf, 32, formats[k], v);
        double back = strtod(buf, NULL);
        if (memcmp(&back, &v, sizeof v) == 0)
            return;
    }
    /* %.17g always round-trips a finite double; buf holds it. */
}

void cli_json_init(cli_json *j)
{
    j->root = cJSON_CreateObject();
    j->failed = j->root == NULL;
}

void cli_json_free(cli_json *j)
{
    cJSON_Delete(j->root);
    j->root = NULL;
}

/* Attach item to parent (by name for an object, appended for an array); a
 * failure anywhere marks the document and frees the orphan. */
static cJSON *attach(cli_json *j, cJSON *parent, const char *name, cJSON *item)
{
    if (!item || !parent) {
        cJSON_Delete(item);
        j->failed = 1;
        return NULL;
    }
    cJSON_bool ok = name ? cJSON_AddItemToObject(parent, name, item) : cJSON_AddItemToArray(parent, item);
    if (!ok) {
        cJSON_Delete(item);
        j->failed = 1;
        return NULL;
    }
    return item;
}

cJSON *cli_json_object(cli_json *j, cJSON *parent, const char *name)
{
    return attach(j, parent, name, cJSON_CreateObject());
}

cJSON *cli_json_array(cli_json *j, cJSON *parent, const char *name)
{
    return attach(j, parent, name, cJSON_CreateArray());
}

void cli_json_double(cli_json *j, cJSON *parent, const char *name, double v)
{
    if (!isfinite(v)) {
        attach(j, parent, name, cJSON_CreateNull()); /* JSON has no NaN/Inf */
        return;
    }
    char buf[32];
    cli_format_double(buf, v);
    attach(j, parent, name, cJSON_CreateRaw(buf));
}

void cli_json_int(cli_json *j, cJSON *parent, const char *name, int64_t v)
{
    /* Raw text: a double cannot hold every int64 count exactly. */
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    attach(j, parent, name, cJSON_CreateRaw(buf));
}

void cli_json_uint(cli_json *j, cJSON *parent, const char *name, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    attach(j, parent, name, cJSON_CreateRaw(buf));
}

void cli_json_string(cli_json *j, cJSON *parent, const char *name, const char *s)
{
    attach(j, parent, name, cJSON_CreateString(s ? s : ""));
}

void cli_json_bool(cli_json *j, cJSON *parent, const char *name, int v)
{
    attach(j, parent, name, cJSON_CreateBool(v ? 1 : 0));
}

void cli_json_null(cli_json *j, cJSON *parent, const char *name)
{
    attach(j, parent, name, cJSON_CreateNull());
}

int cli_json_emit(cli_json *j)
{
    if (j->failed)
        return cli_error("building the JSON output: out of memory");
    char *text = cJSON_PrintUnformatted(j->root);
    if (!text)
        return cli_error("printing the JSON output: out of memory");
    int bad = fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF;
    cJSON_free(text);
    if (bad)
        return cli_error("writing the JSON output to stdout failed");
    return CLI_EXIT_OK;
}
