/* Planned, streamed, atomic model output (model_out.h). */
#define _GNU_SOURCE
#include "model_out.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "gguf.h"
#include "map_file.h"
#include "safetensors.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SYNC_EVERY ((uint64_t)256 << 20) /* wait for writeback this often: dirty pages stay bounded */

/* ---- the safetensors layout ---------------------------------------------------- */

static const mo_tensor *sort_base;

/* Wider elements first; sub-byte types (F4, F6_*) last, as their tensors may
 * end at odd bytes; ties in the order added (the index). */
static int by_width(const void *a, const void *b)
{
    const mo_tensor *x = &sort_base[*(const size_t *)a], *y = &sort_base[*(const size_t *)b];
    if (x->elem_bits != y->elem_bits)
        return x->elem_bits > y->elem_bits ? -1 : 1;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return i < j ? -1 : i > j;
}

static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

static qk_status st_plan(const model_out *o, mo_tensor *t, size_t *order, size_t n, const char *const *keys, const char *const *values,
                         size_t n_meta, unsigned char **head, size_t *head_len, char *err, size_t err_len)
{
    (void)o;
    pthread_mutex_lock(&sort_lock); /* qsort has no context argument in C11 */
    sort_base = t;
    qsort(order, n, sizeof *order, by_width);
    pthread_mutex_unlock(&sort_lock);
    qk_st_planned *p = calloc(n ? n : 1, sizeof *p);
    if (!p) {
        qk_io_error(err, err_len, "out of memory planning the output");
        return QK_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        const mo_tensor *x = &t[order[i]];
        p[i] = (qk_st_planned){x->name, x->st_dtype, x->ndim, x->shape, x->nbytes};
    }
    qk_status st = qk_st_plan_header(p, n, keys, values, n_meta, head, head_len, err, err_len);
    free(p);
    uint64_t off = st == QK_OK ? *head_len : 0;
    for (size_t i = 0; st == QK_OK && i < n; i++) {
        t[order[i]].offset = off;
        off += t[order[i]].nbytes;
    }
    return st;
}

const mo_format mo_safetensors = {st_plan};

/* ---- the GGUF layout ----------------------------------------------------------------- */

static qk_status gguf_plan(const model_out *o, mo_tensor *t, size_t *order, size_t n, const char *const *keys,
                           const char *const *values, size_t n_meta, unsigned char **head, size_t *head_len,
                           char *err, size_t err_len)
{
    qk_gguf_writer *w = NULL;
    qk_status st = qk_gguf_writer_new(&w, err, err_len);
    for (size_t i = 0; st == QK_OK && i < n_meta; i++)
        st = qk_gguf_writer_set_string(w, keys[i], values[i], strlen(values[i]), err, err_len);
    for (size_t i = 0; st == QK_OK && i < o->n_kv; i++)
        st = qk_gguf_writer_set_encoded(w, o->kv[i].key, o->kv[i].type, o->kv[i].enc, o->kv[i].enc_size, err,
                                        err_len);
    for (size_t i = 0; st == QK_OK && i < n; i++) {
        mo_tensor *x = &t[order[i]];
        int from_gguf = x->ggml_type >= 0; /* its GGUF shape is kept as is, 0 dimensions included */
        int type = from_gguf ? x->ggml_type : mi_st_dtype_ggml(x->st_dtype);
        if (type < 0) {
            qk_io_error(err, err_len, "tensor '%.200s' is %s, which GGUF cannot hold (it has F32, F16, BF16, F64, I8, "
                        "I16, I32, I64 and ggml's block types)", x->name, x->st_dtype);
            st = QK_ERR_UNSUPPORTED;
            break;
        }
        if (x->ndim > QK_GGUF_MAX_DIMS) {
            qk_io_error(err, err_len, "tensor '%.200s' has %d dimensions; GGUF holds at most %d", x->name, x->ndim,
                        QK_GGUF_MAX_DIMS);
            st = QK_ERR_UNSUPPORTED;
            break;
        }
        int64_t ne[QK_GGUF_MAX_DIMS] = {1, 1, 1, 1};
        /* a safetensors scalar: one element of one dimension (what ggml's tensors have) */
        uint32_t nd = x->ndim || from_gguf ? (uint32_t)x->ndim : 1;
        for (int d = 0; d < x->ndim; d++)
            ne[d] = x->shape[x->ndim - 1 - d];
        x->ggml_type = type;
        st = qk_gguf_writer_add_tensor(w, x->name, nd, ne, (uint32_t)type, NULL, x->nbytes, err, err_len);
    }
    uint64_t *off = st == QK_OK ? calloc(n ? n : 1, sizeof *off) : NULL;
    if (st == QK_OK && !off) {
        qk_io_error(err, err_len, "out of memory planning the output");
        st = QK_ERR_NO_MEMORY;
    }
    if (st == QK_OK)
        st = qk_gguf_writer_header(w, head, head_len, off, err, err_len);
    for (size_t i = 0; st == QK_OK && i < n; i++)
        t[order[i]].offset = off[i];
    free(off);
    qk_gguf_writer_free(w);
    return st;
}

const mo_format mo_gguf = {gguf_plan};

/* ---- planning ---------------------------------------------------------------------- */

qk_status mo_init(model_out *o, const char *path, int dir_mode, size_t n_shards, char *const *base, char *err,
                  size_t err_len)
{
    memset(o, 0, sizeof *o);
    o->fmt = &mo_safetensors;
    o->path = path;
    o->dir_mode = dir_mode;
    o->shards = calloc(n_shards ? n_shards : 1, sizeof *o->shards);
    if (!o->shards) {
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    o->n_shards = n_shards;
    for (size_t k = 0; k < n_shards; k++) {
        o->shards[k].f.fd = -1;
        pthread_mutex_init(&o->shards[k].lock, NULL); /* all of them: mo_close destroys all */
    }
    for (size_t k = 0; k < n_shards; k++) {
        mo_shard *s = &o->shards[k];
        if (dir_mode && !(s->base = strdup(base[k]))) {
            qk_io_error(err, err_len, "out of memory");
            return QK_ERR_NO_MEMORY;
        }
    }
    return QK_OK;
}

size_t mo_add(model_out *o, size_t shard, const char *name, const char *st_dtype, int ndim, const int64_t *shape,
              mo_kind kind, size_t item)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        mo_tensor *t = realloc(o->t, cap * sizeof *t);
        if (!t)
            return (size_t)-1;
        o->t = t;
        o->cap = cap;
    }
    mo_tensor *x = &o->t[o->n];
    memset(x, 0, sizeof *x);
    qk_dtype dt;
    int bits = 8;
    if (qk_st_dtype_parse(st_dtype, &dt, &bits) != QK_OK)
        bits = 8;
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (uint64_t)shape[d];
    *x = (mo_tensor){name, st_dtype, ndim, shape, (n * (uint64_t)bits + 7) / 8, bits, kind, item, shard, 0, -1};
    return o->n++;
}

size_t mo_add_ggml(model_out *o, size_t shard, const char *name, int ggml_type, int ndim, const int64_t *shape,
                   mo_kind kind, size_t item)
{
    const qk_ggml_type_traits *tt = qk_ggml_type_get((uint32_t)ggml_type);
    const char *st = mi_ggml_st_dtype((uint32_t)ggml_type);
    size_t i = mo_add(o, shard, name, st ? st : "U8", ndim, shape, kind, item);
    if (i == (size_t)-1 || !tt)
        return i;
    mo_tensor *x = &o->t[i];
    uint64_t rows = 1, row = ndim ? (uint64_t)shape[ndim - 1] : 1;
    for (int d = 0; d + 1 < ndim; d++)
        rows *= (uint64_t)shape[d];
    x->ggml_type = ggml_type;
    x->nbytes = row / (uint64_t)tt->blck_size * tt->type_size * rows;
    return i;
}

qk_status mo_plan(model_out *o, size_t k, const char *const *keys, const char *const *values, size_t n_meta,
                  char *err, size_t err_len)
{
    mo_shard *s = &o->shards[k];
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++)
        n += o->t[i].shard == k;
    s->order = malloc((n ? n : 1) * sizeof *s->order);
    if (!s->order) {
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < o->n; i++)
        if (o->t[i].shard == k)
            s->order[s->n++] = i;
    qk_status st = o->fmt->plan(o, o->t, s->order, s->n, keys, values, n_meta, &s->head, &s->head_len, err, err_len);
    s->size = s->head_len;
    for (size_t i = 0; st == QK_OK && i < s->n; i++) { /* the end of the last tensor: GGUF pads between them */
        const mo_tensor *x = &o->t[s->order[i]];
        if (x->offset + x->nbytes > s->size)
            s->size = x->offset + x->nbytes;
    }
    return st;
}

/* ---- writing ----------------------------------------------------------------------- */

qk_status mo_open(model_out *o, char *err, size_t err_len)
{
    qk_status st = QK_OK;
    if (o->dir_mode && (st = qk_atomic_dir_open(&o->dir, o->path, err, err_len)) != QK_OK)
        return st;
    for (size_t k = 0; st == QK_OK && k < o->n_shards; k++) {
        mo_shard *s = &o->shards[k];
        char *path = o->dir_mode ? qk_atomic_dir_file(&o->dir, s->base) : strdup(o->path);
        if (!path) {
            qk_io_error(err, err_len, "out of memory");
            return QK_ERR_NO_MEMORY;
        }
        st = qk_atomic_open(&s->f, path, err, err_len);
        free(path);
        if (st != QK_OK)
            break;
        s->open = 1;
        s->seekable = qk_atomic_seekable(&s->f);
        st = qk_atomic_write(&s->f, s->head, s->head_len, err, err_len);
        s->next = s->head_len;
    }
    return st;
}

int mo_seekable(const model_out *o)
{
    for (size_t k = 0; k < o->n_shards; k++)
        if (!o->shards[k].seekable)
            return 0;
    return 1;
}

qk_status mo_write(model_out *o, size_t i, uint64_t off, const void *data, size_t len, char *err, size_t err_len)
{
    const mo_tensor *t = &o->t[i];
    mo_shard *s = &o->shards[t->shard];
    uint64_t at = t->offset + off;
    qk_status st;
    pthread_mutex_lock(&s->lock);
    if (s->seekable) {
        st = qk_atomic_pwrite(&s->f, data, len, at, err, err_len);
    } else if (at < s->next) {
        qk_io_error(err, err_len, "internal: out-of-order write to an output that cannot seek");
        st = QK_ERR_INVALID_ARG;
    } else {
        /* a gap is alignment padding (GGUF): zeros, written in order */
        static const unsigned char zeros[256];
        st = QK_OK;
        while (st == QK_OK && s->next < at) {
            size_t c = at - s->next < sizeof zeros ? (size_t)(at - s->next) : sizeof zeros;
            st = qk_atomic_write(&s->f, zeros, c, err, err_len);
            s->next += c;
        }
        if (st == QK_OK)
            st = qk_atomic_write(&s->f, data, len, err, err_len);
        s->next += len;
    }
    if (st == QK_OK && s->seekable) {
        /* Start writeback now; every SYNC_EVERY bytes wait for it and drop the
         * clean pages, so dirty output never piles up in the page cache. */
        int fd = qk_atomic_fd(&s->f);
        (void)sync_file_range(fd, (off_t)at, (off_t)len, SYNC_FILE_RANGE_WRITE);
        s->unsynced += len;
        if (s->unsynced >= SYNC_EVERY) {
            (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                                SYNC_FILE_RANGE_WAIT_AFTER);
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            s->unsynced = 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp((*(const mo_tensor *const *)a)->name, (*(const mo_tensor *const *)b)->name);
}

/* {"metadata": {"total_size": N}, "weight_map": {name: shard}} with names sorted. */
static qk_status write_index(model_out *o, const char *name, char *err, size_t err_len)
{
    const mo_tensor **v = malloc((o->n ? o->n : 1) * sizeof *v);
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *map = cJSON_CreateObject();
    int fail = !v || !root || !meta || !map;
    if (!fail) {
        cJSON_AddItemToObject(root, "metadata", meta);
        cJSON_AddItemToObject(root, "weight_map", map);
        meta = map = NULL;
    }
    uint64_t total = 0;
    for (size_t i = 0; !fail && i < o->n; i++) {
        v[i] = &o->t[i];
        total += o->t[i].nbytes;
    }
    if (!fail) {
        qsort(v, o->n, sizeof *v, cmp_entry);
        char num[24];
        snprintf(num, sizeof num, "%llu", (unsigned long long)total);
        cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "metadata"), *w = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
        fail = !cJSON_AddRawToObject(m, "total_size", num);
        for (size_t i = 0; !fail && i < o->n; i++)
            fail = !cJSON_AddStringToObject(w, v[i]->name, o->shards[v[i]->shard].base);
    }
    char *text = fail ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    cJSON_Delete(meta);
    cJSON_Delete(map);
    free(v);
    if (!text) {
        qk_io_error(err, err_len, "out of memory building %s", name);
        return QK_ERR_NO_MEMORY;
    }
    char *path = qk_atomic_dir_file(&o->dir, name);
    qk_atomic_file f;
    qk_status st = path ? qk_atomic_open(&f, path, err, err_len) : QK_ERR_NO_MEMORY;
    if (st == QK_OK) {
        st = qk_atomic_write(&f, text, strlen(text), err, err_len);
        if (st == QK_OK)
            st = qk_atomic_write(&f, "\n", 1, err, err_len);
        if (st == QK_OK)
            st = qk_atomic_commit(&f, err, err_len);
        else
            qk_atomic_abort(&f);
    }
    if (st == QK_OK)
        o->bytes_out += file_size(path);
    free(path);
    free(text);
    return st;
}

/* A byte-for-byte copy of src into the output directory under name. */
static qk_status copy_file(model_out *o, const char *src, const char *name, char *err, size_t err_len)
{
    enum { BUF = 1 << 20 };
    char *path = qk_atomic_dir_file(&o->dir, name), *buf = malloc(BUF);
    if (!path || !buf) {
        free(path);
        free(buf);
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    int in = open(src, O_RDONLY | O_CLOEXEC);
    qk_atomic_file f;
    qk_status st = QK_OK;
    if (in < 0) {
        qk_io_error(err, err_len, "%s: %s", src, strerror(errno));
        st = QK_ERR_IO;
    } else if ((st = qk_atomic_open(&f, path, err, err_len)) == QK_OK) {
        for (;;) {
            ssize_t got = read(in, buf, BUF);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                qk_io_error(err, err_len, "%s: %s", src, strerror(errno));
                st = QK_ERR_IO;
            }
            if (got <= 0 || (st = qk_atomic_write(&f, buf, (size_t)got, err, err_len)) != QK_OK)
                break;
        }
        if (st == QK_OK)
            st = qk_atomic_commit(&f, err, err_len);
        else
            qk_atomic_abort(&f);
    }
    if (in >= 0)
        close(in);
    if (st == QK_OK)
        o->bytes_out += file_size(path);
    free(buf);
    free(path);
    return st;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (s) {
        memcpy(s, dir, a);
        s[a] = '/';
        memcpy(s + a + 1, name, b + 1);
    }
    return s;
}

qk_status mo_commit(model_out *o, const model_in *in, char *err, size_t err_len)
{
    qk_status st = QK_OK;
    o->bytes_out = 0;
    for (size_t k = 0; st == QK_OK && k < o->n_shards; k++) {
        mo_shard *s = &o->shards[k];
        st = qk_atomic_commit(&s->f, err, err_len);
        s->open = 0;
        o->bytes_out += s->size;
    }
    if (st != QK_OK || !o->dir_mode)
        return st;
    st = write_index(o, in->index_base ? in->index_base : INDEX_NAME, err, err_len);
    for (size_t i = 0; st == QK_OK && i < in->n_extra; i++) {
        char *src = join(in->dir, in->extra[i]);
        st = src ? copy_file(o, src, in->extra[i], err, err_len) : QK_ERR_NO_MEMORY;
        free(src);
        o->files_copied += st == QK_OK;
    }
    if (st == QK_OK)
        st = qk_atomic_dir_commit(&o->dir, err, err_len);
    return st;
}

void mo_close(model_out *o)
{
    for (size_t k = 0; o->shards && k < o->n_shards; k++) {
        mo_shard *s = &o->shards[k];
        if (s->open)
            qk_atomic_abort(&s->f);
        pthread_mutex_destroy(&s->lock);
        free(s->base);
        free(s->order);
        free(s->head);
    }
    if (o->dir_mode)
        qk_atomic_dir_abort(&o->dir);
    free(o->shards);
    free(o->t);
    o->shards = NULL;
    o->t = NULL;
}
