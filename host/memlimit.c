/* QKERN_DEVICE_MEMORY_LIMIT, read the same way by every GPU backend: a cap on
 * the device memory a backend uses, so the chunked path can be forced (and
 * tested) on any device. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* "<bytes>[K|M|G]": binary multiples, either case, an optional "i" after the
 * multiple and an optional trailing "B". */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    default: break;
    }
    if (shift && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v == 0 || v > (UINT64_MAX >> shift)) return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

qk_status qk_device_memory_limit(qk_context *ctx, uint64_t *bytes)
{
    *bytes = UINT64_MAX;
    const char *s = getenv("QKERN_DEVICE_MEMORY_LIMIT");
    if (!s || !*s) return QK_OK;
    uint64_t v;
    if (parse_size(s, &v) != 0 || v < ((uint64_t)1 << 20)) {
        return qk_set_error(ctx, QK_ERR_INVALID_ARG,
                            "QKERN_DEVICE_MEMORY_LIMIT=\"%s\" is not a size of at least 1M (bytes, or with a "
                            "K/M/G suffix)", s);
    }
    *bytes = v;
    return QK_OK;
}
