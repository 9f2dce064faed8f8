/* Exact order statistics on the GPU by multi-target radix select.
 *
 * Keys are float bits mapped to order-preserving unsigned integers (32 bits for
 * float32, 64 for float64), split into digits: 11+11+10 bits, or
 * 11+11+11+11+10+10. A node is a distinct prefix of the higher digits that
 * holds at least one target rank. One pass counts, per node, the next digit of
 * every key in the node (kernels/cuda/select.cu); here the host walks each
 * node's histogram to find which child holds each rank, and those children are
 * the next pass's nodes. After the last digit a node is a whole key: the value.
 *
 * Passes over the data: the first (the root histogram) and the second read the
 * tensor; the second also compacts the keys of its nodes into a candidate
 * buffer, so later passes read only those. A host tensor is streamed for each
 * pass it is read in; when its keys fit the device they are kept there from
 * the first pass on. When a candidate buffer does not fit (the memory limit, a
 * tensor larger than the device), the pass reads the tensor again and filters
 * by prefix: slower, never wrong. Ranks are handled in batches of at most
 * QK_CU_SELECT_MAX_NODES; the root histogram and kept keys serve every batch.
 * Float32: 3 passes, 2 over the tensor. */
#include <stdlib.h>
#include <string.h>

#include "../cpu/cpu_keys.h"
#include "cuda_internal.h"

static const int digits32[] = {11, 11, 10};
static const int digits64[] = {11, 11, 11, 11, 10, 10};

typedef struct sel_ctx {
    qk_backend *be;
    const qk_tensor *x;
    unsigned flags;
    int key_bytes, key_bits;
    /* device scratch */
    unsigned long long *hist;   /* QK_CU_SELECT_MAX_NODES << 11 counters */
    size_t hist_bytes;
    void *prefixes;             /* QK_CU_SELECT_MAX_NODES keys */
    unsigned long long *cursor; /* compaction write cursor */
    /* host copies */
    uint64_t *hhist;
    uint64_t *hpre;
    int max_nodes; /* ranks (so nodes) per batch */
} sel_ctx;

/* A pass over the raw tensor: its chunks go to the pass kernel one by one. */
static qk_status raw_chunk(qk_backend *be, void *user, const void *din, void *dout, int64_t base, int64_t count)
{
    qk_cu_pass p = *(const qk_cu_pass *)user;
    cu_state *cu = cu_of(be);
    (void)dout;
    (void)base;
    p.src = din;
    p.count = count;
    cudaError_t e = qk_cu_select_pass(cu->compute, cu->sms, &p);
    return e == cudaSuccess ? QK_OK : cu_fail(be, "select pass kernel launch", e);
}

/* Run one pass: src NULL reads the tensor, else src_count keys on the device.
 * Histogram (nnodes << bits counters) into s->hhist; *kept = keys appended to out. */
static qk_status run_pass(sel_ctx *s, const void *src, int64_t src_count, int filter_shift, int nnodes, int bits,
                          void *out, uint64_t out_cap, uint64_t *kept)
{
    qk_backend *be = s->be;
    cu_state *cu = cu_of(be);
    qk_status st = QK_OK;
    const size_t hbytes = ((size_t)nnodes << bits) * sizeof(unsigned long long);
    CU_CHECK(be, st, cudaMemsetAsync(s->hist, 0, hbytes, cu->compute));
    CU_CHECK(be, st, cudaMemsetAsync(s->cursor, 0, sizeof *s->cursor, cu->compute));
    if (filter_shift < s->key_bits) {
        /* node prefixes, narrowed to the key width */
        if (s->key_bytes == 4) {
            uint32_t *p32 = (uint32_t *)s->hpre;
            for (int j = 0; j < nnodes; j++) p32[j] = (uint32_t)s->hpre[QK_CU_SELECT_MAX_NODES + j];
        } else {
            memcpy(s->hpre, s->hpre + QK_CU_SELECT_MAX_NODES, (size_t)nnodes * sizeof(uint64_t));
        }
        CU_CHECK(be, st, cudaMemcpyAsync(s->prefixes, s->hpre, (size_t)nnodes * (size_t)s->key_bytes,
                                         cudaMemcpyHostToDevice, cu->compute));
    }
    qk_cu_pass p;
    memset(&p, 0, sizeof p);
    p.flags = s->flags;
    p.filter_shift = filter_shift;
    p.nnodes = nnodes;
    p.prefixes = s->prefixes;
    p.digit_bits = bits;
    p.hist = s->hist;
    p.out = out;
    p.out_count = s->cursor;
    p.out_cap = out_cap;
    if (!src) {
        p.src_kind = s->key_bytes == 4 ? QK_CU_SRC_F32 : QK_CU_SRC_F64;
        st = cu_for_chunks(be, s->x, NULL, 64, QK_CU_MAX_LAUNCH, raw_chunk, &p);
        if (st != QK_OK) return st;
    } else {
        p.src_kind = s->key_bytes == 4 ? QK_CU_SRC_KEY32 : QK_CU_SRC_KEY64;
        for (int64_t start = 0; start < src_count; start += QK_CU_MAX_LAUNCH) {
            p.src = (const char *)src + (size_t)start * (size_t)s->key_bytes;
            p.count = src_count - start < QK_CU_MAX_LAUNCH ? src_count - start : QK_CU_MAX_LAUNCH;
            cudaError_t e = qk_cu_select_pass(cu->compute, cu->sms, &p);
            if (e != cudaSuccess) return cu_fail(be, "select pass kernel launch", e);
        }
    }
    unsigned long long cursor = 0;
    CU_CHECK(be, st, cudaMemcpyAsync(s->hhist, s->hist, hbytes, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaMemcpyAsync(&cursor, s->cursor, sizeof cursor, cudaMemcpyDeviceToHost, cu->compute));
    CU_CHECK(be, st, cudaStreamSynchronize(cu->compute));
    *kept = cursor;
done:
    return st;
}

/* The current level: nodes (sorted distinct prefixes with their key counts),
 * and for each rank of the batch its node and its rank inside the node. */
typedef struct sel_level {
    int n;
    uint64_t prefix[QK_CU_SELECT_MAX_NODES];
    uint64_t count[QK_CU_SELECT_MAX_NODES];
} sel_level;

/* Children of the level's nodes from their histograms of the next bits-wide
 * digit (s->hhist); checks that each histogram adds up to its node. */
static qk_status descend(sel_ctx *s, sel_level *lv, int bits, int nr, int *node, uint64_t *local)
{
    const size_t nb = (size_t)1 << bits;
    for (int j = 0; j < lv->n; j++) {
        uint64_t sum = 0;
        for (size_t b = 0; b < nb; b++) sum += s->hhist[(size_t)j * nb + b];
        if (sum != lv->count[j]) {
            return qk_set_error(s->be->ctx, QK_ERR_BACKEND,
                                "cuda: select: node %d counted %llu keys, expected %llu (internal error)", j,
                                (unsigned long long)sum, (unsigned long long)lv->count[j]);
        }
    }
    sel_level next;
    next.n = 0;
    for (int i = 0; i < nr; i++) {
        const uint64_t *h = s->hhist + (size_t)node[i] * nb;
        uint64_t r = local[i], cum = 0;
        size_t b = 0;
        while (b + 1 < nb && r >= cum + h[b]) cum += h[b++];
        const uint64_t pre = (lv->prefix[node[i]] << bits) | (uint64_t)b;
        if (next.n == 0 || next.prefix[next.n - 1] != pre) {
            next.prefix[next.n] = pre;
            next.count[next.n] = h[b];
            next.n++;
        }
        node[i] = next.n - 1;
        local[i] = r - cum;
    }
    *lv = next;
    return QK_OK;
}

qk_status qk_cu_op_select(qk_backend *be, const qk_tensor *x, unsigned flags, const int64_t *ranks, size_t nranks,
                          double *values)
{
    if (nranks == 0) return QK_OK;
    sel_ctx s;
    memset(&s, 0, sizeof s);
    s.be = be;
    s.x = x;
    s.flags = flags & (QK_ABS | QK_IGNORE_NONFINITE);
    s.key_bytes = x->dtype == QK_F64 ? 8 : 4;
    s.key_bits = 8 * s.key_bytes;
    const int *digits = s.key_bytes == 4 ? digits32 : digits64;
    const int ndigits = s.key_bytes == 4 ? (int)(sizeof digits32 / sizeof *digits32)
                                         : (int)(sizeof digits64 / sizeof *digits64);

    void *resident = NULL, *cand[2] = {NULL, NULL};
    size_t resident_bytes = 0, cand_bytes[2] = {0, 0};
    sel_level *lv = malloc(sizeof *lv);
    int *node = malloc(QK_CU_SELECT_MAX_NODES * sizeof *node);
    uint64_t *local = malloc(QK_CU_SELECT_MAX_NODES * sizeof *local);
    uint64_t *root_hist = malloc(((size_t)1 << QK_CU_SELECT_ROOT_BITS) * sizeof *root_hist);
    /* ranks per batch: every node of a pass has its histogram of 2^11 counters */
    size_t batch = nranks < QK_CU_SELECT_MAX_NODES ? nranks : QK_CU_SELECT_MAX_NODES;
    const size_t per_node = ((size_t)1 << QK_CU_SELECT_ROOT_BITS) * sizeof(unsigned long long);
    const uint64_t budget = cu_budget(be); /* the limit, and the device's free memory */
    if (batch > budget / 4 / per_node) {
        batch = budget / 4 / per_node;
        if (batch < 1) batch = 1;
    }
    s.max_nodes = (int)batch;
    s.hist_bytes = batch * per_node;
    s.hhist = malloc(s.hist_bytes);
    s.hpre = malloc(2 * QK_CU_SELECT_MAX_NODES * sizeof(uint64_t));
    qk_status st = QK_OK;
    if (!lv || !node || !local || !root_hist || !s.hhist || !s.hpre) {
        st = qk_set_error(be->ctx, QK_ERR_NO_MEMORY, "cuda: select: out of host memory");
        goto done;
    }
    if ((st = cu_alloc(be, s.hist_bytes, CU_REQUIRED, (void **)&s.hist)) != QK_OK) goto done;
    if ((st = cu_alloc(be, QK_CU_SELECT_MAX_NODES * sizeof(uint64_t), CU_REQUIRED, &s.prefixes)) != QK_OK) goto done;
    if ((st = cu_alloc(be, sizeof(unsigned long long), CU_REQUIRED, (void **)&s.cursor)) != QK_OK) goto done;

    /* Pass 1: the root histogram of the first digit. A host tensor's keys are
     * kept on the device when they fit, so no later pass streams it again. */
    const int64_t n = x->n;
    uint64_t m = 0, kept = 0;
    if (x->host) {
        resident_bytes = (size_t)n * (size_t)s.key_bytes;
        if (cu_alloc(be, resident_bytes, CU_OPTIONAL, &resident) != QK_OK) {
            resident = NULL;
            resident_bytes = 0;
        }
    }
    st = run_pass(&s, NULL, n, s.key_bits, 1, digits[0], resident, resident ? (uint64_t)n : 0, &kept);
    if (st != QK_OK) goto done;
    for (size_t b = 0; b < ((size_t)1 << digits[0]); b++) {
        root_hist[b] = s.hhist[b];
        m += s.hhist[b];
    }
    if (resident && kept != m) {
        st = qk_set_error(be->ctx, QK_ERR_BACKEND, "cuda: select: kept %llu of %llu keys (internal error)",
                          (unsigned long long)kept, (unsigned long long)m);
        goto done;
    }
    for (size_t i = 0; i < nranks; i++) {
        if (ranks[i] < 0 || (uint64_t)ranks[i] >= m || (i && ranks[i] < ranks[i - 1])) {
            st = qk_set_error(be->ctx, QK_ERR_INVALID_ARG, "cuda: rank %lld of %llu keys (ranks must ascend)",
                              (long long)ranks[i], (unsigned long long)m);
            goto done;
        }
    }

    for (size_t r0 = 0; r0 < nranks; r0 += batch) {
        const int nr = (int)(nranks - r0 < batch ? nranks - r0 : batch);
        lv->n = 1;
        lv->prefix[0] = 0;
        lv->count[0] = m;
        for (int i = 0; i < nr; i++) {
            node[i] = 0;
            local[i] = (uint64_t)ranks[r0 + (size_t)i];
        }
        memcpy(s.hhist, root_hist, ((size_t)1 << digits[0]) * sizeof *root_hist);
        if ((st = descend(&s, lv, digits[0], nr, node, local)) != QK_OK) goto done;

        /* the source of the next pass: the kept keys, else the tensor */
        const void *src = resident;
        int64_t src_count = resident ? (int64_t)m : n;
        int cur = -1; /* which cand[] src is, -1: not a candidate buffer */
        int shift = s.key_bits - digits[0];
        for (int d = 1; d < ndigits; d++) {
            uint64_t want = 0;
            for (int j = 0; j < lv->n; j++) want += lv->count[j];
            /* compact when a later pass will read the result and it is smaller */
            void *out = NULL;
            int slot = cur == 0 ? 1 : 0;
            if (d + 1 < ndigits && (int64_t)want < src_count) {
                cand_bytes[slot] = (size_t)want * (size_t)s.key_bytes;
                if (cu_alloc(be, cand_bytes[slot], CU_OPTIONAL, &cand[slot]) == QK_OK) {
                    out = cand[slot];
                } else {
                    cand[slot] = NULL;
                    cand_bytes[slot] = 0;
                }
            }
            for (int j = 0; j < lv->n; j++) s.hpre[QK_CU_SELECT_MAX_NODES + j] = lv->prefix[j];
            st = run_pass(&s, src, src_count, shift, lv->n, digits[d], out, out ? want : 0, &kept);
            if (st != QK_OK) goto done;
            if (out && kept != want) {
                st = qk_set_error(be->ctx, QK_ERR_BACKEND, "cuda: select: compacted %llu of %llu keys (internal error)",
                                  (unsigned long long)kept, (unsigned long long)want);
                goto done;
            }
            if ((st = descend(&s, lv, digits[d], nr, node, local)) != QK_OK) goto done;
            if (out) {
                if (cur >= 0) {
                    cu_free(be, cand[cur], cand_bytes[cur]);
                    cand[cur] = NULL;
                    cand_bytes[cur] = 0;
                }
                cur = slot;
                src = out;
                src_count = (int64_t)want;
            }
            shift -= digits[d];
        }
        for (int i = 0; i < nr; i++) values[r0 + (size_t)i] = qk_key_value(lv->prefix[node[i]], s.key_bytes == 8);
        for (int c = 0; c < 2; c++) {
            cu_free(be, cand[c], cand_bytes[c]);
            cand[c] = NULL;
            cand_bytes[c] = 0;
        }
    }

done:;
    qk_status s2 = cu_sync(be);
    if (st == QK_OK) st = s2;
    for (int c = 0; c < 2; c++) cu_free(be, cand[c], cand_bytes[c]);
    cu_free(be, resident, resident_bytes);
    cu_free(be, s.cursor, sizeof(unsigned long long));
    cu_free(be, s.prefixes, QK_CU_SELECT_MAX_NODES * sizeof(uint64_t));
    cu_free(be, s.hist, s.hist_bytes);
    free(lv);
    free(node);
    free(local);
    free(root_hist);
    free(s.hhist);
    free(s.hpre);
    return st;
}
