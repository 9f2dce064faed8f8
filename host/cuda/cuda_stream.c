/* Chunked execution of one operation over a tensor: device-resident tensors
 * are used in place (no copies); host tensors are streamed through two slots
 * (pinned host staging + device staging). Chunk i goes to slot i % 2:
 *
 *   host:    wait slot free -> copy user data into pinned -> enqueue H2D (h2d stream)
 *   compute: wait H2D -> kernels -> (output) event
 *   d2h:     wait kernels -> D2H into pinned          -> slot free event
 *   host:    (when the slot is next needed, or at the end) pinned -> user output
 *
 * so the host copy of chunk i+1, the transfers and the kernels of chunk i
 * overlap. Kernels all run on the compute stream, in chunk order: reductions
 * that carry state from chunk to chunk (the error pass's running sums) see the
 * chunks in index order. */
#include <string.h>

#include "cuda_internal.h"

#define QK_CU_ALIGN_BYTES 256

static size_t round_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

/* Pinned host staging of two slots of at least slot bytes each (kept for the
 * backend's life, grown on demand: pinning is slow, reuse is free). */
static qk_status ensure_pinned(qk_backend *be, size_t slot)
{
    cu_state *cu = cu_of(be);
    if (cu->pin && cu->pin_slot >= slot) return QK_OK;
    cu_host_free(cu->pin, cu->pin_pageable);
    cu->pin = NULL;
    cu->pin_slot = 0;
    qk_status st = cu_host_alloc(be, 2 * slot, &cu->pin, &cu->pin_pageable);
    if (st == QK_OK) cu->pin_slot = slot;
    return st;
}

typedef struct pending_out {
    int busy;
    int64_t base, count;
} pending_out;

qk_status cu_for_chunks(qk_backend *be, const qk_tensor *in, const qk_tensor *out, int64_t align, int64_t max_chunk,
                        cu_chunk_fn fn, void *user)
{
    cu_state *cu = cu_of(be);
    const int64_t n = in->n;
    const size_t ies = qk_dtype_size(in->dtype), oes = out ? qk_dtype_size(out->dtype) : 0;
    const int in_host = in->host != NULL, out_host = out && out->host != NULL;
    if (align < 1) align = 1;
    int64_t chunk = max_chunk < QK_CU_MAX_LAUNCH ? max_chunk : QK_CU_MAX_LAUNCH;
    chunk = chunk / align * align;
    if (chunk < align) chunk = align;

    qk_status st = QK_OK;
    if (!in_host && !out_host) {
        const char *din = cu_tensor_ptr(in);
        char *dout = out ? cu_tensor_ptr(out) : NULL;
        for (int64_t start = 0; start < n && st == QK_OK; start += chunk) {
            int64_t cnt = n - start < chunk ? n - start : chunk;
            st = fn(be, user, din + (size_t)start * ies, dout ? dout + (size_t)start * oes : NULL, start, cnt);
        }
        qk_status s2 = cu_sync(be);
        return st != QK_OK ? st : s2;
    }

    /* Slot size: QK_CU_SLOT_BYTES, or half of what the memory limit and the
     * device's free memory leave. */
    const size_t per = (in_host ? ies : 0) + (out_host ? oes : 0);
    uint64_t room = cu_budget(be) / 2;
    size_t want = room < QK_CU_SLOT_BYTES ? (size_t)room : QK_CU_SLOT_BYTES;
    int64_t slot_elems = (int64_t)((want > 2 * QK_CU_ALIGN_BYTES ? want - 2 * QK_CU_ALIGN_BYTES : 0) / per);
    slot_elems = slot_elems / align * align;
    if (slot_elems > chunk) slot_elems = chunk;
    if (n <= slot_elems || (n <= chunk && (size_t)n * per + 2 * QK_CU_ALIGN_BYTES <= want)) {
        slot_elems = n; /* one chunk: no alignment needed */
    }
    if (slot_elems < 1 && cu_limit_room(be) / 2 >= (uint64_t)align * per + 2 * QK_CU_ALIGN_BYTES) {
        slot_elems = align; /* the device is short, not the limit: try the smallest chunk */
    }
    if (slot_elems < 1) {
        return qk_set_error(be->ctx, QK_ERR_NO_MEMORY,
                            "cuda: QKERN_DEVICE_MEMORY_LIMIT (%llu bytes, %llu in use) leaves no room for staging "
                            "%lld-element chunks", (unsigned long long)cu->limit, (unsigned long long)cu->in_use,
                            (long long)align);
    }
    /* The device may hold less than the limit allows (other users of it):
     * halve the slots until they fit, down to one align-sized chunk. */
    size_t in_part, slot_bytes;
    char *dslot = NULL;
    for (;;) {
        in_part = in_host ? round_up((size_t)slot_elems * ies, QK_CU_ALIGN_BYTES) : 0;
        slot_bytes = in_part + (out_host ? round_up((size_t)slot_elems * oes, QK_CU_ALIGN_BYTES) : 0);
        const int last = slot_elems <= align;
        st = cu_alloc(be, 2 * slot_bytes, last ? CU_REQUIRED : CU_QUIET, (void **)&dslot);
        if (st == QK_OK) break;
        if (last || st != QK_ERR_NO_MEMORY) return st;
        slot_elems = slot_elems / 2 / align * align;
        if (slot_elems < align) slot_elems = align;
    }
    pending_out pend[2] = {{0, 0, 0}, {0, 0, 0}};
    st = ensure_pinned(be, slot_bytes);
    if (st != QK_OK) {
        cu_free(be, dslot, 2 * slot_bytes);
        return st;
    }
    /* the staging was allocated in the compute stream's order: the copy streams wait for it */
    CU_CHECK(be, st, cudaEventRecord(cu->ev_kernel[0], cu->compute));
    CU_CHECK(be, st, cudaStreamWaitEvent(cu->h2d, cu->ev_kernel[0], 0));
    CU_CHECK(be, st, cudaStreamWaitEvent(cu->d2h, cu->ev_kernel[0], 0));

    const char *din_base = in_host ? NULL : cu_tensor_ptr(in);
    char *dout_base = out && !out_host ? cu_tensor_ptr(out) : NULL;
    int64_t i = 0;
    for (int64_t start = 0; start < n; start += slot_elems, i++) {
        const int s = (int)(i & 1);
        const int64_t cnt = n - start < slot_elems ? n - start : slot_elems;
        char *pin = (char *)cu->pin + (size_t)s * cu->pin_slot;
        char *dev = dslot + (size_t)s * slot_bytes;
        if (pend[s].busy) {
            CU_CHECK(be, st, cudaEventSynchronize(cu->ev_done[s]));
            if (out_host) {
                memcpy((char *)out->host + (size_t)pend[s].base * oes, pin + in_part, (size_t)pend[s].count * oes);
            }
            pend[s].busy = 0;
        }
        const void *din;
        if (in_host) {
            memcpy(pin, (const char *)in->host + (size_t)start * ies, (size_t)cnt * ies);
            CU_CHECK(be, st, cudaMemcpyAsync(dev, pin, (size_t)cnt * ies, cudaMemcpyHostToDevice, cu->h2d));
            CU_CHECK(be, st, cudaEventRecord(cu->ev_in[s], cu->h2d));
            CU_CHECK(be, st, cudaStreamWaitEvent(cu->compute, cu->ev_in[s], 0));
            din = dev;
        } else {
            din = din_base + (size_t)start * ies;
        }
        void *dout = NULL;
        if (out) dout = out_host ? (void *)(dev + in_part) : (void *)(dout_base + (size_t)start * oes);
        st = fn(be, user, din, dout, start, cnt);
        if (st != QK_OK) goto done;
        if (out_host) {
            CU_CHECK(be, st, cudaEventRecord(cu->ev_kernel[s], cu->compute));
            CU_CHECK(be, st, cudaStreamWaitEvent(cu->d2h, cu->ev_kernel[s], 0));
            CU_CHECK(be, st, cudaMemcpyAsync(pin + in_part, dout, (size_t)cnt * oes, cudaMemcpyDeviceToHost, cu->d2h));
            CU_CHECK(be, st, cudaEventRecord(cu->ev_done[s], cu->d2h));
        } else {
            CU_CHECK(be, st, cudaEventRecord(cu->ev_done[s], cu->compute));
        }
        pend[s].busy = 1;
        pend[s].base = start;
        pend[s].count = cnt;
    }
    /* drain: oldest slot first */
    for (int k = 0; k < 2; k++) {
        const int s = (int)((i + k) & 1);
        if (!pend[s].busy) continue;
        CU_CHECK(be, st, cudaEventSynchronize(cu->ev_done[s]));
        if (out_host) {
            memcpy((char *)out->host + (size_t)pend[s].base * oes, (char *)cu->pin + (size_t)s * cu->pin_slot + in_part,
                   (size_t)pend[s].count * oes);
        }
        pend[s].busy = 0;
    }
done:;
    qk_status s2 = cu_sync(be); /* nothing may still use the staging when it is freed */
    if (st == QK_OK) st = s2;
    cu_free(be, dslot, 2 * slot_bytes);
    return st;
}
