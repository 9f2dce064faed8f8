/* Linking libqkern from C: calibrate a tensor by grid search and quantize it.
 *   cc quantize_example.c $(pkg-config --cflags --libs qkern) -lm -o quantize_example */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <qkern.h>

int main(void)
{
    enum { N = 1 << 18 };
    float *x = malloc(N * sizeof *x);
    uint8_t *codes = malloc(N);
    if (!x || !codes) return 1;
    for (int i = 0; i < N; i++) x[i] = sinf((float)i * 0.001f) * (i % 4099 == 0 ? 40.0f : 1.0f);

    qk_context *ctx;
    char why[256];
    qk_status st = qk_context_create(QK_BACKEND_AUTO, &ctx, why, sizeof why);
    if (st != QK_OK) {
        fprintf(stderr, "qkern: %s: %s\n", qk_status_string(st), why);
        return 1;
    }

    qk_tensor t = qk_tensor_host(QK_F32, x, N);
    qk_calib_options opts;
    qk_calib_options_default(&opts); /* 8-bit asymmetric */
    opts.method = QK_CALIB_GRIDSEARCH; /* percentiles 99:100:0.01 */
    opts.objective = QK_OBJECTIVE_MSE_INLIERS;

    qk_calib_result cal;
    st = qk_calibrate(ctx, &t, &opts, &cal);
    if (st == QK_OK) {
        qk_tensor c = qk_tensor_host(QK_U8, codes, N);
        st = qk_quantize(ctx, &t, &cal.params, &c);
        const qk_candidate *best = &cal.candidates[cal.best];
        if (st == QK_OK)
            printf("%s: p=%g scale=%.9g zero_point=%d mse=%.6g (inliers %.6g)\n",
                   qk_backend_name(qk_context_backend(ctx)), best->percentile, (double)cal.params.scale,
                   (int)cal.params.zero_point, best->mse, best->mse_inliers);
        qk_calib_result_release(&cal);
    }
    if (st != QK_OK) fprintf(stderr, "qkern: %s: %s\n", qk_status_string(st), qk_context_message(ctx));
    qk_context_destroy(ctx);
    free(x);
    free(codes);
    return st == QK_OK ? 0 : 1;
}
