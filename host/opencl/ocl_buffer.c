/* Device memory: qk_buffer handles (a cl_mem each, owned or wrapped from the
 * caller) and the small helpers the operations share. Every call's error code
 * is checked and named. */
#include <stdio.h>

#include "ocl.h"

qk_status ocl_alloc(ocl_backend *be, size_t bytes, cl_mem_flags flags, cl_mem *out)
{
    cl_int err;
    *out = clCreateBuffer(be->context, flags, bytes ? bytes : 16, NULL, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return ocl_fail(be, err, "clCreateBuffer(%zu bytes)", bytes);
    }
    return QK_OK;
}

qk_status ocl_wrap_host(ocl_backend *be, void *host, size_t bytes, cl_mem_flags flags, cl_mem *out)
{
    cl_int err;
    *out = clCreateBuffer(be->context, flags | CL_MEM_USE_HOST_PTR, bytes, host, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return ocl_fail(be, err, "clCreateBuffer(CL_MEM_USE_HOST_PTR, %zu bytes)", bytes);
    }
    return QK_OK;
}

qk_status ocl_fill_zero(ocl_backend *be, cl_mem mem, size_t bytes, cl_uint nwait, const cl_event *wait,
                        cl_event *done)
{
    cl_uint zero = 0;
    size_t pattern = bytes % 4 == 0 ? 4 : 1;
    cl_int err = clEnqueueFillBuffer(be->queue, mem, &zero, pattern, 0, bytes, nwait, nwait ? wait : NULL, done);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueFillBuffer(%zu bytes)", bytes);
    return QK_OK;
}

qk_status ocl_read(ocl_backend *be, cl_mem mem, size_t offset, void *dst, size_t bytes)
{
    cl_int err = clEnqueueReadBuffer(be->queue, mem, CL_TRUE, offset, bytes, dst, 0, NULL, NULL);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueReadBuffer(%zu bytes)", bytes);
    return QK_OK;
}

qk_status ocl_write(ocl_backend *be, cl_mem mem, size_t offset, const void *src, size_t bytes)
{
    cl_int err = clEnqueueWriteBuffer(be->queue, mem, CL_TRUE, offset, bytes, src, 0, NULL, NULL);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueWriteBuffer(%zu bytes)", bytes);
    return QK_OK;
}

qk_status ocl_finish(ocl_backend *be)
{
    return ocl_drain(be, be->queue, "the command queue");
}

cl_mem ocl_tensor_mem(const qk_tensor *t)
{
    return (cl_mem)t->buffer->handle;
}

void ocl_release_mem(cl_mem *mem)
{
    if (*mem) clReleaseMemObject(*mem);
    *mem = NULL;
}

void ocl_release_event(cl_event *ev)
{
    if (*ev) clReleaseEvent(*ev);
    *ev = NULL;
}

/* ---- qk_buffer handles: the cl_mem itself ------------------------------------------ */

qk_status ocl_buffer_alloc(qk_backend *base, size_t bytes, void **handle)
{
    cl_mem mem;
    qk_status st = ocl_alloc(ocl_of(base), bytes, CL_MEM_READ_WRITE, &mem);
    if (st != QK_OK) return st;
    *handle = mem;
    return QK_OK;
}

/* A caller's cl_mem: it must live in this context (a kernel cannot touch another
 * context's memory) and hold the bytes; we keep a reference until it is freed. */
qk_status ocl_buffer_wrap(qk_backend *base, void *native, size_t bytes, void **handle)
{
    ocl_backend *be = ocl_of(base);
    cl_mem mem = (cl_mem)native;
    cl_context owner = NULL;
    cl_int err = clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err != CL_SUCCESS) {
        return qk_set_error(base->ctx, QK_ERR_INVALID_ARG,
                            "qk_buffer_wrap: native is not a valid cl_mem (clGetMemObjectInfo returned %s (%d))",
                            ocl_error_name(err), (int)err);
    }
    if (owner != be->context) {
        return qk_set_error(base->ctx, QK_ERR_INVALID_ARG,
                            "qk_buffer_wrap: the cl_mem belongs to another cl_context than this qkern context's");
    }
    size_t size = 0;
    err = clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clGetMemObjectInfo(CL_MEM_SIZE)");
    if (size < bytes) {
        return qk_set_error(base->ctx, QK_ERR_INVALID_ARG,
                            "qk_buffer_wrap: the cl_mem holds %zu bytes, fewer than the %zu asked for", size, bytes);
    }
    err = clRetainMemObject(mem);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clRetainMemObject");
    *handle = mem;
    return QK_OK;
}

void ocl_buffer_free(qk_backend *base, void *handle, int owned)
{
    /* owned: our creation reference; wrapped: the reference taken in wrap */
    if (handle) clReleaseMemObject((cl_mem)handle);
}

qk_status ocl_buffer_write(qk_backend *base, void *handle, size_t offset, const void *src, size_t bytes)
{
    return ocl_write(ocl_of(base), (cl_mem)handle, offset, src, bytes);
}

qk_status ocl_buffer_read(qk_backend *base, void *handle, size_t offset, void *dst, size_t bytes)
{
    return ocl_read(ocl_of(base), (cl_mem)handle, offset, dst, bytes);
}

/* On the device (clEnqueueCopyBuffer), and complete when this returns: the
 * bench's yardstick for the device's own copy bandwidth. */
qk_status ocl_buffer_copy(qk_backend *base, void *dst, size_t dst_offset, void *src, size_t src_offset, size_t bytes)
{
    ocl_backend *be = ocl_of(base);
    cl_int err = clEnqueueCopyBuffer(be->queue, (cl_mem)src, (cl_mem)dst, src_offset, dst_offset, bytes, 0, NULL, NULL);
    if (err != CL_SUCCESS) return ocl_fail(be, err, "clEnqueueCopyBuffer(%zu bytes)", bytes);
    return ocl_finish(be);
}
