/* One pass over a tensor (and optionally an output tensor of the same length),
 * in spans whose starts are multiples of QK_OCL_SB elements, so per-span
 * results line up with the error pass's fixed super-blocks and nothing depends
 * on where the spans fall.
 *
 * Each side (input, output) is one of:
 *   DEVICE  a qk_buffer tensor: used in place, no copy;
 *   WRAP    host memory wrapped with CL_MEM_USE_HOST_PTR (zero copy on PoCL
 *           and integrated GPUs), when the device shares host memory and the
 *           tensor fits the budget;
 *   STAGE   host memory streamed through two device staging buffers: the
 *           upload of span i+1 (upload queue) overlaps the kernels of span i
 *           (compute queue) and the download of span i-1 (download queue);
 *           events order them, and a staging slot is reused only after the
 *           kernels and download that used it two spans ago are done. */
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

typedef enum { SIDE_NONE, SIDE_DEVICE, SIDE_WRAP, SIDE_STAGE } side_mode;

typedef struct side {
    const qk_tensor *t;
    side_mode mode;
    size_t es;
    char *host;
    cl_mem stage[2]; /* borrowed from be->stage */
} side;

/* A staging buffer of at least bytes for side s, slot k: the one kept from an
 * earlier call when it is big enough. */
static qk_status get_stage(ocl_backend *be, int s, int k, size_t bytes, cl_mem *out)
{
    if (be->stage[s][k] && be->stage_bytes[s][k] >= bytes) {
        *out = be->stage[s][k];
        return QK_OK;
    }
    ocl_release_mem(&be->stage[s][k]);
    be->stage_bytes[s][k] = 0;
    qk_status st = ocl_alloc(be, bytes, s == 0 ? CL_MEM_READ_ONLY : CL_MEM_WRITE_ONLY, &be->stage[s][k]);
    if (st == QK_OK) be->stage_bytes[s][k] = bytes;
    *out = be->stage[s][k];
    return st;
}

/* Elements of one staging slot: two slots of every staged side within half the
 * budget (the other half is left to the operation's own buffers), at most 2^23
 * elements (big enough to amortise a launch, small enough to overlap), a
 * multiple of the super-block. */
static int64_t staging_chunk(const ocl_backend *be, size_t staged_es)
{
    uint64_t per = be->budget / 2 / (2 * (uint64_t)staged_es);
    uint64_t cap = (uint64_t)1 << 23;
    if (per > cap) per = cap;
    if (per > be->max_alloc / staged_es) per = be->max_alloc / staged_es;
    per -= per % QK_OCL_SB;
    return per ? (int64_t)per : QK_OCL_SB;
}

int ocl_host_fits(const ocl_backend *be, uint64_t bytes)
{
    return be->zero_copy && (!be->budget_explicit || bytes <= be->budget);
}

static side_mode mode_of(const ocl_backend *be, const qk_tensor *t)
{
    if (!t) return SIDE_NONE;
    if (t->buffer) return SIDE_DEVICE;
    return ocl_host_fits(be, (uint64_t)t->n * qk_dtype_size(t->dtype)) ? SIDE_WRAP : SIDE_STAGE;
}

/* Span length: the staging chunk when anything is staged, else one launch's
 * worth (below 2^31 elements so 32-bit counters in kernels cannot overflow,
 * and within the device's largest allocation for wrapped memory). */
static int64_t span_length(const ocl_backend *be, const side *in, const side *out)
{
    size_t staged_es = 0, wrapped_es = 0;
    const side *s[2] = {in, out};
    for (int i = 0; i < 2; i++) {
        if (s[i]->mode == SIDE_STAGE) staged_es += s[i]->es;
        if (s[i]->mode == SIDE_WRAP && s[i]->es > wrapped_es) wrapped_es = s[i]->es;
    }
    if (staged_es) return staging_chunk(be, staged_es);
    uint64_t len = (uint64_t)1 << 30;
    if (wrapped_es && len > be->max_alloc / wrapped_es) {
        len = be->max_alloc / wrapped_es;
        len -= len % QK_OCL_SB;
        if (len == 0) len = QK_OCL_SB;
    }
    return (int64_t)len;
}

/* Every queue drained (on an error path too: nothing may still write to the
 * caller's memory once ocl_stream returns); the first failure. */
static qk_status finish_all(ocl_backend *be)
{
    qk_status a = ocl_drain(be, be->upload, "the upload queue");
    qk_status b = ocl_drain(be, be->queue, "the compute queue");
    qk_status c = ocl_drain(be, be->download, "the download queue");
    return a != QK_OK ? a : b != QK_OK ? b : c;
}

qk_status ocl_stream(ocl_backend *be, const qk_tensor *in, const qk_tensor *out, ocl_span_fn fn, void *user)
{
    side sides[2] = {{in, mode_of(be, in), qk_dtype_size(in->dtype), (char *)in->host, {NULL, NULL}},
                     {out, mode_of(be, out), out ? qk_dtype_size(out->dtype) : 0, out ? (char *)out->host : NULL,
                      {NULL, NULL}}};
    side *si = &sides[0], *so = &sides[1];
    int64_t chunk = span_length(be, si, so), total = in->n;
    qk_status st = QK_OK;
    cl_event slot_free[2][2] = {{NULL, NULL}, {NULL, NULL}};
    cl_mem *wrapped_out = NULL;
    size_t n_wrapped_out = 0;
    cl_int err;

    for (int s = 0; s < 2 && st == QK_OK; s++) {
        side *sd = &sides[s];
        if (sd->mode != SIDE_STAGE) continue;
        size_t bytes = (size_t)(chunk < total ? chunk : total) * sd->es;
        for (int slot = 0; slot < 2 && st == QK_OK; slot++) st = get_stage(be, s, slot, bytes, &sd->stage[slot]);
    }
    if (st == QK_OK && so->mode == SIDE_WRAP) {
        wrapped_out = calloc((size_t)((total + chunk - 1) / chunk), sizeof *wrapped_out);
        if (!wrapped_out) st = qk_set_error(be->base.ctx, QK_ERR_NO_MEMORY, "opencl: out of host memory");
    }

    int index = 0;
    for (int64_t start = 0; st == QK_OK && start < total; start += chunk, index++) {
        int slot = index & 1;
        int64_t n = total - start < chunk ? total - start : chunk;
        ocl_span sp;
        memset(&sp, 0, sizeof sp);
        sp.start = start;
        sp.n = n;
        sp.index = index;
        cl_mem wrapped_in = NULL;
        cl_uint nfree = (slot_free[slot][0] != NULL) + (slot_free[slot][1] != NULL);

        switch (si->mode) {
        case SIDE_DEVICE:
            sp.in = ocl_tensor_mem(in);
            sp.in_off = (uint64_t)in->offset / si->es + (uint64_t)start;
            break;
        case SIDE_WRAP:
            st = ocl_wrap_host(be, si->host + (size_t)start * si->es, (size_t)n * si->es, CL_MEM_READ_ONLY,
                               &wrapped_in);
            sp.in = wrapped_in;
            break;
        default: {
            cl_event up = NULL;
            err = clEnqueueWriteBuffer(be->upload, si->stage[slot], CL_FALSE, 0, (size_t)n * si->es,
                                       si->host + (size_t)start * si->es, nfree, nfree ? slot_free[slot] : NULL,
                                       &up);
            if (err != CL_SUCCESS) {
                st = ocl_fail(be, err, "clEnqueueWriteBuffer(staging, %zu bytes)", (size_t)n * si->es);
                break;
            }
            clFlush(be->upload);
            sp.in = si->stage[slot];
            sp.wait[sp.nwait++] = up;
            break;
        }
        }
        if (st != QK_OK) break;

        switch (so->mode) {
        case SIDE_NONE:
            break;
        case SIDE_DEVICE:
            sp.out = ocl_tensor_mem(out);
            sp.out_off = (uint64_t)out->offset / so->es + (uint64_t)start;
            break;
        case SIDE_WRAP:
            st = ocl_wrap_host(be, so->host + (size_t)start * so->es, (size_t)n * so->es, CL_MEM_WRITE_ONLY,
                               &wrapped_out[n_wrapped_out]);
            sp.out = wrapped_out[n_wrapped_out++];
            break;
        default:
            sp.out = so->stage[slot];
            /* the slot's previous download must be done before the kernels overwrite it
             * (when the input is staged its upload already waited for that) */
            if (si->mode != SIDE_STAGE) {
                for (int j = 0; j < 2; j++) {
                    if (slot_free[slot][j]) sp.wait[sp.nwait++] = slot_free[slot][j];
                }
            }
            break;
        }
        if (st == QK_OK) st = fn(be, &sp, user);
        if (st == QK_OK && !sp.done) {
            err = clEnqueueMarkerWithWaitList(be->queue, 0, NULL, &sp.done);
            if (err != CL_SUCCESS) st = ocl_fail(be, err, "clEnqueueMarkerWithWaitList");
        }
        cl_event down = NULL;
        if (st == QK_OK && so->mode == SIDE_STAGE) {
            err = clEnqueueReadBuffer(be->download, so->stage[slot], CL_FALSE, 0, (size_t)n * so->es,
                                      so->host + (size_t)start * so->es, 1, &sp.done, &down);
            if (err != CL_SUCCESS) st = ocl_fail(be, err, "clEnqueueReadBuffer(staging, %zu bytes)", (size_t)n * so->es);
        }
        clFlush(be->queue);
        if (so->mode == SIDE_STAGE) clFlush(be->download);
        /* the upload's event is only needed by the kernels, enqueued by now */
        if (si->mode == SIDE_STAGE) ocl_release_event(&sp.wait[0]);
        ocl_release_mem(&wrapped_in); /* deleted once its kernels are done */
        /* span index - 2 (this slot's last user) must have completed, reads into
         * host memory included; how it ended is checked here, span by span */
        qk_status wst = ocl_wait(be, 2, slot_free[slot], "a span's kernels and reads");
        if (st == QK_OK) st = wst;
        ocl_release_event(&slot_free[slot][0]);
        ocl_release_event(&slot_free[slot][1]);
        slot_free[slot][0] = sp.done;
        slot_free[slot][1] = down;
    }

    qk_status fst = finish_all(be);
    for (int s = 0; s < 2; s++) {
        qk_status wst = ocl_wait(be, 2, slot_free[s], "a span's kernels and reads");
        if (fst == QK_OK) fst = wst;
    }
    if (st == QK_OK) st = fst;
    /* wrapped output: mapping is what makes the device's writes visible to the
     * host by the OpenCL memory model (a no-op on PoCL) */
    for (size_t i = 0; i < n_wrapped_out; i++) {
        if (st == QK_OK) {
            size_t bytes = 0;
            clGetMemObjectInfo(wrapped_out[i], CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
            void *p = clEnqueueMapBuffer(be->queue, wrapped_out[i], CL_TRUE, CL_MAP_READ, 0, bytes, 0, NULL, NULL,
                                         &err);
            if (err != CL_SUCCESS) {
                st = ocl_fail(be, err, "clEnqueueMapBuffer(output, %zu bytes)", bytes);
            } else {
                err = clEnqueueUnmapMemObject(be->queue, wrapped_out[i], p, 0, NULL, NULL);
                if (err != CL_SUCCESS) st = ocl_fail(be, err, "clEnqueueUnmapMemObject(output)");
            }
        }
    }
    if (n_wrapped_out) {
        qk_status dst = ocl_drain(be, be->queue, "the output mapping");
        if (st == QK_OK) st = dst;
    }
    for (size_t i = 0; i < n_wrapped_out; i++) ocl_release_mem(&wrapped_out[i]);
    free(wrapped_out);
    for (int s = 0; s < 2; s++) {
        ocl_release_event(&slot_free[s][0]);
        ocl_release_event(&slot_free[s][1]);
    }
    return st;
}

int64_t ocl_stream_span_length(ocl_backend *be, const qk_tensor *in, const qk_tensor *out)
{
    side si = {in, mode_of(be, in), qk_dtype_size(in->dtype), NULL, {NULL, NULL}};
    side so = {out, mode_of(be, out), out ? qk_dtype_size(out->dtype) : 0, NULL, {NULL, NULL}};
    return span_length(be, &si, &so);
}
