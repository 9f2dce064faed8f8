/* The small parts of the model API: defaults and releasing a report. */
#include <stdlib.h>
#include <string.h>

#include "qkern.h"

QK_API qk_status qk_model_options_default(qk_model_options *opts)
{
    if (!opts)
        return QK_ERR_INVALID_ARG;
    memset(opts, 0, sizeof *opts);
    qk_calib_options_default(&opts->calib);
    opts->jobs = 1;
    opts->granularity = QK_PER_CHANNEL;
    opts->axis = 0;
    opts->ggml = 0;
    opts->out_dtype = QK_F32;
    return QK_OK;
}

QK_API void qk_model_report_release(qk_model_report *report)
{
    if (!report)
        return;
    for (size_t i = 0; report->tensors && i < report->n_tensors; i++)
        free(report->tensors[i].name);
    free(report->tensors);
    report->tensors = NULL;
    report->n_tensors = 0;
}
