/* libFuzzer target for the safetensors reader: any input either parses or is
 * refused with QK_ERR_FORMAT and a message; nothing else, and never a read
 * outside the input (libFuzzer hands over an exact-size copy, ASan watches).
 * On success every tensor byte is read and the coverage invariants checked.
 * Built and run by run_fuzz.sh. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "safetensors.h"

#define CHECK(cond)                \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qk_st_file *f = NULL;
    char err[256];
    qk_status st = qk_st_parse(data, size, &f, err, sizeof err);
    CHECK(st == QK_OK || st == QK_ERR_FORMAT);
    if (st != QK_OK) {
        CHECK(f == NULL);
        CHECK(err[0] != '\0');
        return 0;
    }
    CHECK(err[0] == '\0');
    size_t data_size = qk_st_data_size(f), pos = 0;
    CHECK(8 + qk_st_header_len(f) + data_size == size);
    volatile unsigned sum = 0;
    for (size_t i = 0; i < qk_st_count(f); i++) {
        const qk_st_tensor *t = qk_st_get(f, i);
        CHECK(t != NULL && t->name != NULL && t->st_dtype != NULL && t->shape != NULL);
        CHECK(t->ndim >= 0 && t->ndim <= QK_ST_MAX_DIMS);
        CHECK(t->offset == pos); /* the tensors tile the data section */
        pos += t->nbytes;
        CHECK(pos <= data_size);
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++)
            sum += p[k];
        size_t idx = (size_t)-1;
        CHECK(qk_st_find(f, t->name, &idx) == t && idx == i);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(t->shape[d] >= 0);
            n = t->shape[d] == 0 ? 0 : n;
        }
        for (int d = 0; d < t->ndim && n != 0; d++)
            n *= t->shape[d];
        CHECK(n == t->n);
        CHECK((uint64_t)t->n * (uint64_t)t->elem_bits == (uint64_t)t->nbytes * 8);
        if (t->nbytes > 0) {
            const void *aligned = NULL;
            void *copy = NULL;
            CHECK(qk_st_tensor_aligned(t, &aligned, &copy, NULL, 0) == QK_OK);
            CHECK(memcmp(aligned, t->data, t->nbytes) == 0);
            qk_st_free_copy(copy, t->nbytes);
        }
    }
    CHECK(pos == data_size);
    (void)sum;
    for (size_t i = 0; i < qk_st_metadata_count(f); i++) {
        const char *k = NULL, *v = NULL;
        CHECK(qk_st_metadata_at(f, i, &k, &v) == QK_OK);
        CHECK(qk_st_metadata_get(f, k) == v);
    }
    qk_st_close(f);
    return 0;
}
