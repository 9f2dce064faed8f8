/* The OpenCL and CUDA slots of a build without them: they report, cleanly, that
 * the backend is not built in. A build with a backend compiles its own files
 * instead (QKERN_HAVE_OPENCL / QKERN_HAVE_CUDA). */
#include <stdio.h>

#include "internal.h"

#ifndef QKERN_HAVE_OPENCL
qk_status qk_opencl_backend_create(qk_context *ctx, int device, qk_backend **out)
{
    *out = NULL;
    return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "opencl: not built in (this library was built without OpenCL)");
}

void qk_opencl_backend_query(qk_backend_info *out)
{
    snprintf(out->reason, sizeof out->reason, "not built in (this library was built without OpenCL)");
}
#endif

#ifndef QKERN_HAVE_CUDA
qk_status qk_cuda_backend_create(qk_context *ctx, int device, qk_backend **out)
{
    *out = NULL;
    return qk_set_error(ctx, QK_ERR_UNSUPPORTED, "cuda: not built in (this library was built without CUDA)");
}

void qk_cuda_backend_query(qk_backend_info *out)
{
    snprintf(out->reason, sizeof out->reason, "not built in (this library was built without CUDA)");
}
#endif
