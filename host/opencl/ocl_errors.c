/* OpenCL error codes in words, and the one way a failed call becomes a status:
 * the message names the call and its code, so a user's report says what broke. */
#include <stdarg.h>
#include <stdio.h>

#include "ocl.h"

const char *ocl_error_name(cl_int err)
{
    switch (err) {
#define QK_CASE(e) \
    case e: return #e;
        QK_CASE(CL_SUCCESS)
        QK_CASE(CL_DEVICE_NOT_FOUND)
        QK_CASE(CL_DEVICE_NOT_AVAILABLE)
        QK_CASE(CL_COMPILER_NOT_AVAILABLE)
        QK_CASE(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        QK_CASE(CL_OUT_OF_RESOURCES)
        QK_CASE(CL_OUT_OF_HOST_MEMORY)
        QK_CASE(CL_PROFILING_INFO_NOT_AVAILABLE)
        QK_CASE(CL_MEM_COPY_OVERLAP)
        QK_CASE(CL_IMAGE_FORMAT_MISMATCH)
        QK_CASE(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        QK_CASE(CL_BUILD_PROGRAM_FAILURE)
        QK_CASE(CL_MAP_FAILURE)
        QK_CASE(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        QK_CASE(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        QK_CASE(CL_COMPILE_PROGRAM_FAILURE)
        QK_CASE(CL_LINKER_NOT_AVAILABLE)
        QK_CASE(CL_LINK_PROGRAM_FAILURE)
        QK_CASE(CL_DEVICE_PARTITION_FAILED)
        QK_CASE(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        QK_CASE(CL_INVALID_VALUE)
        QK_CASE(CL_INVALID_DEVICE_TYPE)
        QK_CASE(CL_INVALID_PLATFORM)
        QK_CASE(CL_INVALID_DEVICE)
        QK_CASE(CL_INVALID_CONTEXT)
        QK_CASE(CL_INVALID_QUEUE_PROPERTIES)
        QK_CASE(CL_INVALID_COMMAND_QUEUE)
        QK_CASE(CL_INVALID_HOST_PTR)
        QK_CASE(CL_INVALID_MEM_OBJECT)
        QK_CASE(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        QK_CASE(CL_INVALID_IMAGE_SIZE)
        QK_CASE(CL_INVALID_SAMPLER)
        QK_CASE(CL_INVALID_BINARY)
        QK_CASE(CL_INVALID_BUILD_OPTIONS)
        QK_CASE(CL_INVALID_PROGRAM)
        QK_CASE(CL_INVALID_PROGRAM_EXECUTABLE)
        QK_CASE(CL_INVALID_KERNEL_NAME)
        QK_CASE(CL_INVALID_KERNEL_DEFINITION)
        QK_CASE(CL_INVALID_KERNEL)
        QK_CASE(CL_INVALID_ARG_INDEX)
        QK_CASE(CL_INVALID_ARG_VALUE)
        QK_CASE(CL_INVALID_ARG_SIZE)
        QK_CASE(CL_INVALID_KERNEL_ARGS)
        QK_CASE(CL_INVALID_WORK_DIMENSION)
        QK_CASE(CL_INVALID_WORK_GROUP_SIZE)
        QK_CASE(CL_INVALID_WORK_ITEM_SIZE)
        QK_CASE(CL_INVALID_GLOBAL_OFFSET)
        QK_CASE(CL_INVALID_EVENT_WAIT_LIST)
        QK_CASE(CL_INVALID_EVENT)
        QK_CASE(CL_INVALID_OPERATION)
        QK_CASE(CL_INVALID_GL_OBJECT)
        QK_CASE(CL_INVALID_BUFFER_SIZE)
        QK_CASE(CL_INVALID_MIP_LEVEL)
        QK_CASE(CL_INVALID_GLOBAL_WORK_SIZE)
        QK_CASE(CL_INVALID_PROPERTY)
        QK_CASE(CL_INVALID_IMAGE_DESCRIPTOR)
        QK_CASE(CL_INVALID_COMPILER_OPTIONS)
        QK_CASE(CL_INVALID_LINKER_OPTIONS)
        QK_CASE(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef QK_CASE
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "CL_UNKNOWN_ERROR";
    }
}

qk_status ocl_fail(ocl_backend *be, cl_int err, const char *call_fmt, ...)
{
    char call[256];
    va_list ap;
    va_start(ap, call_fmt);
    vsnprintf(call, sizeof call, call_fmt, ap);
    va_end(ap);
    qk_status st = (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_HOST_MEMORY ||
                    err == CL_INVALID_BUFFER_SIZE)
                       ? QK_ERR_NO_MEMORY
                       : QK_ERR_BACKEND;
    return qk_set_error(be->base.ctx, st, "opencl: %s failed: %s (%d)", call, ocl_error_name(err), (int)err);
}
