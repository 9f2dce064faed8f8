/* The metadata a GGUF run writes, gathered once for quantize and dequantize:
 * a GGUF input's keys and values in order (typed, by their encoding, copied
 * byte for byte) when the output is GGUF; otherwise the input's string
 * metadata, the union over its shards (the first value of a key wins). Keys
 * the run sets (general.file_type ...) are added with mr_meta_set_u32, which
 * replaces the input's value in place. */
#ifndef QK_MODEL_META_H
#define QK_MODEL_META_H

#include <stddef.h>
#include <stdint.h>

#include "model_run.h"

#define MR_META_SET_MAX 2

typedef struct mr_meta {
    mo_kv *kv;                 /* typed keys (GGUF input into GGUF) */
    size_t n_kv;
    const char **keys, **values; /* string metadata otherwise */
    size_t n_str;
    unsigned char set[MR_META_SET_MAX][4]; /* the encodings of the keys set */
    size_t n_set;
} mr_meta;

/* QK_OK, or QK_ERR_NO_MEMORY through mr_fail. */
qk_status mr_meta_gather(mr_run *r, mr_meta *m);
/* Add key as a UINT32 (at most MR_META_SET_MAX keys), typed output only. */
void mr_meta_set_u32(mr_meta *m, const char *key, uint32_t v);
/* Plan output shard k with this metadata (mo_plan); mr_fail on error. */
qk_status mr_meta_plan(mr_run *r, const mr_meta *m, size_t k);
void mr_meta_free(mr_meta *m);

#endif
