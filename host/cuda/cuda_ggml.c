/* ggml block formats on CUDA (kernels/cuda/ggml.cu): device tensors only (the
 * library stages host data through device buffers, host/ggml.c), launched in
 * pieces of whole blocks of at most QK_CU_MAX_LAUNCH elements. */
#include "cuda_internal.h"

/* Elements per block of the types the kernels know (0: unknown). */
static int64_t block_elems(int type)
{
    switch (type) {
    case 0: case 1: case 30: return 1;                        /* F32, F16, BF16 */
    case 2: case 3: case 6: case 7: case 8: return 32;        /* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 */
    case 10: case 11: case 12: case 13: case 14: return 256;  /* Q2_K .. Q6_K */
    default: return 0;
    }
}

qk_status qk_cu_op_ggml(qk_backend *be, int quantize, const qk_tensor *f, int type, const qk_tensor *b)
{
    int64_t elems = block_elems(type);
    size_t bytes = 0;
    if (f->host || b->host || !elems || qk_ggml_size((qk_ggml_type)type, elems, &bytes) != QK_OK)
        return qk_set_error(be->ctx, QK_ERR_UNSUPPORTED, "cuda: ggml type %d on these tensors is not supported", type);
    cu_state *cu = cu_of(be);
    float *fp = (float *)cu_tensor_ptr(f);
    unsigned char *bp = (unsigned char *)cu_tensor_ptr(b);
    const int64_t step = QK_CU_MAX_LAUNCH / elems * elems; /* whole blocks */
    qk_status st = QK_OK;
    for (int64_t start = 0; start < f->n && st == QK_OK; start += step) {
        const int64_t cnt = f->n - start < step ? f->n - start : step;
        unsigned char *bq = bp + (size_t)(start / elems) * bytes;
        st = cu_launch_status(be, quantize ? "ggml quantize kernel launch" : "ggml dequantize kernel launch",
                              quantize ? qk_cu_ggml_quantize(cu->compute, cu->sms, type, fp + start, bq, cnt)
                                       : qk_cu_ggml_dequantize(cu->compute, cu->sms, type, bq, fp + start, cnt));
    }
    qk_status s2 = cu_sync(be);
    return st != QK_OK ? st : s2;
}
