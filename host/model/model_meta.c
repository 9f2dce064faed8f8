/* Metadata of a GGUF run (quantize-model --type, dequantize-model of GGUF);
 * see model_meta.h. */
#include "model_meta.h"

#include <stdlib.h>
#include <string.h>

#include "gguf.h"

qk_status mr_meta_gather(mr_run *r, mr_meta *m)
{
    memset(m, 0, sizeof *m);
    const qk_gguf_file *g = r->gguf_out ? mi_gguf_handle(&r->in, 0) : NULL;
    size_t n_kv = g ? qk_gguf_kv_count(g) : 0, n_str = 0;
    for (size_t k = 0; !g && k < r->in.n_shards; k++)
        n_str += r->in.fmt->meta_count(r->in.shards[k].file);
    m->kv = calloc(n_kv + MR_META_SET_MAX, sizeof *m->kv);
    m->keys = calloc(n_str + 1, sizeof *m->keys);
    m->values = calloc(n_str + 1, sizeof *m->values);
    if (!m->kv || !m->keys || !m->values) {
        mr_meta_free(m);
        return mr_fail(r, QK_ERR_NO_MEMORY, "", "preparing %s", r->output);
    }
    for (size_t i = 0; i < n_kv; i++) {
        const qk_gguf_kv *x = qk_gguf_kv_at(g, i);
        m->kv[i] = (mo_kv){x->key, x->value.type, x->value.enc, x->value.enc_size};
    }
    m->n_kv = n_kv;
    for (size_t k = 0; !g && k < r->in.n_shards; k++) {
        void *f = r->in.shards[k].file;
        for (size_t i = 0; i < r->in.fmt->meta_count(f); i++) {
            const char *key, *value;
            r->in.fmt->meta_at(f, i, &key, &value);
            int seen = 0;
            for (size_t j = 0; j < m->n_str && !seen; j++)
                seen = strcmp(m->keys[j], key) == 0;
            if (!seen) {
                m->keys[m->n_str] = key;
                m->values[m->n_str++] = value;
            }
        }
    }
    return QK_OK;
}

void mr_meta_set_u32(mr_meta *m, const char *key, uint32_t v)
{
    if (m->n_set >= MR_META_SET_MAX)
        return;
    unsigned char *p = m->set[m->n_set++];
    for (int k = 0; k < 4; k++) /* GGUF is little-endian */
        p[k] = (unsigned char)(v >> (8 * k));
    m->kv[m->n_kv++] = (mo_kv){key, QK_GGUF_UINT32, p, 4};
}

qk_status mr_meta_plan(mr_run *r, const mr_meta *m, size_t k)
{
    char err[512] = "";
    r->out.kv = m->kv;
    r->out.n_kv = m->n_kv;
    qk_status st = mo_plan(&r->out, k, m->keys, m->values, m->n_str, err, sizeof err);
    r->out.kv = NULL;
    r->out.n_kv = 0;
    return st == QK_OK ? QK_OK : mr_fail(r, st, err, "preparing %s", r->output);
}

void mr_meta_free(mr_meta *m)
{
    free(m->kv);
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}
