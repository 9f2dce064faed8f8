/* Waiting for commands, and finding out how they ended. clFinish and
 * clWaitForEvents say only that a wait happened: a command that failed on the
 * device (CL_OUT_OF_RESOURCES, a watchdog reset) shows as a negative
 * CL_EVENT_COMMAND_EXECUTION_STATUS, which is read here. A driver whose wait
 * returns early (Mesa 22.3's rusticl: commands queued before a clFlush still
 * CL_QUEUED after clFinish) is caught too: the status is polled until the
 * command is complete, so a non-blocking read never lands in host memory that
 * its caller has freed or reused. */
#include <time.h>

#include "ocl.h"

/* How long a command may stay incomplete after its wait returned. */
#define OCL_WAIT_POLL_LIMIT_MS 60000

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The final execution status of ev: CL_COMPLETE, a negative error, or (a
 * command that never completed) CL_QUEUED/CL_SUBMITTED/CL_RUNNING. */
static cl_int final_status(cl_event ev)
{
    cl_int s = CL_QUEUED;
    for (long waited = 0;; waited++) {
        if (clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof s, &s, NULL) != CL_SUCCESS) {
            return CL_INVALID_EVENT;
        }
        if (s <= CL_COMPLETE || waited >= OCL_WAIT_POLL_LIMIT_MS) return s;
        sleep_ms(1);
    }
}

qk_status ocl_wait(ocl_backend *be, cl_uint n, const cl_event *ev, const char *what)
{
    qk_status st = QK_OK;
    for (cl_uint i = 0; i < n; i++) {
        if (!ev[i]) continue;
        cl_int err = clWaitForEvents(1, &ev[i]);
        cl_int s = final_status(ev[i]);
        if (st != QK_OK) continue; /* keep waiting for the others; the first failure is reported */
        if (s < 0) {
            st = ocl_fail(be, s, "%s (on the device)", what);
        } else if (s != CL_COMPLETE) {
            st = qk_set_error(be->base.ctx, QK_ERR_BACKEND,
                              "opencl: %s did not complete within %d s of its wait returning on \"%s\" (a driver bug)",
                              what, OCL_WAIT_POLL_LIMIT_MS / 1000, be->info.name);
        } else if (err != CL_SUCCESS) {
            st = ocl_fail(be, err, "clWaitForEvents(%s)", what);
        }
    }
    return st;
}

qk_status ocl_drain(ocl_backend *be, cl_command_queue queue, const char *what)
{
    cl_event marker = NULL;
    cl_int err = clEnqueueMarkerWithWaitList(queue, 0, NULL, &marker);
    cl_int ferr = clFinish(queue);
    qk_status st = QK_OK;
    if (err == CL_SUCCESS) {
        st = ocl_wait(be, 1, &marker, what);
        clReleaseEvent(marker);
    } else {
        st = ocl_fail(be, err, "clEnqueueMarkerWithWaitList(%s)", what);
    }
    if (st == QK_OK && ferr != CL_SUCCESS) st = ocl_fail(be, ferr, "clFinish(%s)", what);
    return st;
}
