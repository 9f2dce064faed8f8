/* JSON output through cJSON with numbers that round-trip exactly.
 * cJSON's own printer uses %1.15g and accepts it when it is off by an ulp, and
 * prints -0.0 as 0; a script comparing our values with numpy's bit for bit
 * needs the shortest %.15g/%.16g/%.17g that strtod maps back to the same bits. */
#ifndef QK_CLI_JSON_OUT_H
#define QK_CLI_JSON_OUT_H

#include <stdint.h>

#include <cjson/cJSON.h>

/* A document under construction. Any failed allocation sets `failed`, so the
 * adders need no checks at each call and cli_json_emit() reports it once. */
typedef struct cli_json {
    cJSON *root;
    int failed;
} cli_json;

void cli_json_init(cli_json *j);          /* root = a new object */
void cli_json_free(cli_json *j);

/* New values (NULL on failure, which also sets j->failed). */
cJSON *cli_json_object(cli_json *j, cJSON *parent, const char *name); /* name NULL: append to array parent */
cJSON *cli_json_array(cli_json *j, cJSON *parent, const char *name);

/* Add a member (parent an object) or, with name NULL, an element (parent an array). */
void cli_json_double(cli_json *j, cJSON *parent, const char *name, double v); /* NaN/Inf -> null */
void cli_json_int(cli_json *j, cJSON *parent, const char *name, int64_t v);
void cli_json_uint(cli_json *j, cJSON *parent, const char *name, uint64_t v);
void cli_json_string(cli_json *j, cJSON *parent, const char *name, const char *s);
void cli_json_bool(cli_json *j, cJSON *parent, const char *name, int v);
void cli_json_null(cli_json *j, cJSON *parent, const char *name);

/* Print the document unformatted plus a newline to stdout. Returns 0, or
 * CLI_EXIT_RUNTIME after reporting an allocation or write failure. */
int cli_json_emit(cli_json *j);

/* The shortest of %.15g/%.16g/%.17g that strtod turns back into exactly v
 * (bits compared, so -0 stays "-0"). buf needs 32 bytes. v must be finite. */
void cli_format_double(char *buf, double v);

#endif
