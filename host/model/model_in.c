/* Opening a model: one file, an index, or a directory (model_in.h). */
#define _GNU_SOURCE
#include "model_in.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "map_file.h"

#define INDEX_SUFFIX ".safetensors.index.json"
#define MAX_INDEX_BYTES ((size_t)100 << 20)

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
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

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct names {
    char **v;
    size_t n, cap;
} names;

static int names_add(names *s, const char *name)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(name)))
        return -1;
    s->n++;
    return 0;
}

static void names_free(names *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int is_regular(const char *dir, const char *name)
{
    char *p = join(dir, name);
    struct stat sb;
    int ok = p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    free(p);
    return ok;
}

/* Read a whole small file into a NUL-terminated buffer. */
static char *slurp(const char *path, char *err, size_t err_len, qk_status *st)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        qk_io_error(err, err_len, "%s: %s", path, strerror(errno));
        *st = QK_ERR_IO;
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap)
            break;
        if (cap >= MAX_INDEX_BYTES) {
            qk_io_error(err, err_len, "%s: larger than %zu bytes", path, MAX_INDEX_BYTES);
            *st = QK_ERR_FORMAT;
            free(buf);
            fclose(f);
            return NULL;
        }
        cap *= 2;
        char *b = realloc(buf, cap + 1);
        if (!b)
            free(buf);
        buf = b;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) {
        qk_io_error(err, err_len, "out of memory reading %s", path);
        *st = QK_ERR_NO_MEMORY;
        return NULL;
    }
    if (bad) {
        qk_io_error(err, err_len, "%s: read error", path);
        *st = QK_ERR_IO;
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* The shard names an index's weight_map points at (sorted, unique), and the
 * parsed weight_map kept for the cross-check. */
static qk_status read_index(const char *path, cJSON **root_out, names *shards, char *err, size_t err_len)
{
    qk_status st = QK_OK;
    char *text = slurp(path, err, err_len, &st);
    if (!text)
        return st;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        qk_io_error(err, err_len, "%s: %s", path, root ? "no \"weight_map\" object" : "not valid JSON");
        cJSON_Delete(root);
        return QK_ERR_FORMAT;
    }
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            strcmp(e->valuestring, "..") == 0 || strcmp(e->valuestring, ".") == 0) {
            qk_io_error(err, err_len, "%s: weight_map entry '%.200s' is not a file name in the index's directory",
                        path, e->string ? e->string : "");
            cJSON_Delete(root);
            return QK_ERR_FORMAT;
        }
        if (names_add(shards, e->valuestring) != 0) {
            cJSON_Delete(root);
            qk_io_error(err, err_len, "out of memory reading %s", path);
            return QK_ERR_NO_MEMORY;
        }
    }
    qsort(shards->v, shards->n, sizeof *shards->v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < shards->n; i++) {
        if (k && strcmp(shards->v[k - 1], shards->v[i]) == 0)
            free(shards->v[i]);
        else
            shards->v[k++] = shards->v[i];
    }
    shards->n = k;
    if (k == 0) {
        qk_io_error(err, err_len, "%s: the weight_map is empty", path);
        cJSON_Delete(root);
        return QK_ERR_FORMAT;
    }
    *root_out = root;
    return QK_OK;
}

static int cmp_sorted(const void *a, const void *b, void *arg)
{
    const model_in *m = arg;
    return strcmp(m->t[*(const size_t *)a].name, m->t[*(const size_t *)b].name);
}

static qk_status open_shards(model_in *m, names *files, char *err, size_t err_len)
{
    m->shards = calloc(files->n, sizeof *m->shards);
    if (!m->shards) {
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    size_t total = 0;
    for (size_t i = 0; i < files->n; i++) {
        mi_shard *s = &m->shards[m->n_shards];
        s->fd = -1;
        s->path = m->sharded ? join(m->dir, files->v[i]) : strdup(files->v[i]);
        if (!s->path) {
            qk_io_error(err, err_len, "out of memory");
            return QK_ERR_NO_MEMORY;
        }
        m->n_shards++;
        const char *slash = strrchr(s->path, '/');
        s->base = slash ? slash + 1 : s->path;
        qk_status st = m->fmt->open(s->path, &s->file, err, err_len);
        if (st != QK_OK) {
            if (m->sharded) { /* name the shard: the message of a single file names it already */
                char inner[512];
                snprintf(inner, sizeof inner, "%s", err);
                qk_io_error(err, err_len, "shard %s: %s", s->base, inner);
            }
            return st;
        }
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (s->fd < 0 || fstat(s->fd, &sb) != 0) {
            qk_io_error(err, err_len, "%s: %s", s->path, strerror(errno));
            return QK_ERR_IO;
        }
        s->size = (uint64_t)sb.st_size;
        s->first = total;
        s->count = m->fmt->count(s->file);
        total += s->count;
    }
    m->t = calloc(total ? total : 1, sizeof *m->t);
    m->sorted = calloc(total ? total : 1, sizeof *m->sorted);
    m->sorted_idx = calloc(total ? total : 1, sizeof *m->sorted_idx);
    if (!m->t || !m->sorted || !m->sorted_idx) {
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    for (size_t k = 0; k < m->n_shards; k++)
        for (size_t i = 0; i < m->shards[k].count; i++) {
            mi_tensor *t = &m->t[m->shards[k].first + i];
            m->fmt->tensor(m->shards[k].file, i, t);
            t->shard = k;
        }
    m->n = total;
    for (size_t i = 0; i < total; i++)
        m->sorted_idx[i] = i;
    qsort_r(m->sorted_idx, total, sizeof *m->sorted_idx, cmp_sorted, m);
    for (size_t i = 0; i < total; i++) {
        m->sorted[i] = m->t[m->sorted_idx[i]].name;
        if (i && strcmp(m->sorted[i - 1], m->sorted[i]) == 0) {
            qk_io_error(err, err_len, "tensor '%.200s' is in shard %s and in shard %s", m->sorted[i],
                        m->shards[m->t[m->sorted_idx[i - 1]].shard].base, m->shards[m->t[m->sorted_idx[i]].shard].base);
            return QK_ERR_FORMAT;
        }
    }
    return QK_OK;
}

/* Every tensor where the index says it is, and every name of the index found. */
static qk_status check_index(model_in *m, const cJSON *root, char *err, size_t err_len)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    size_t listed = 0;
    for (const cJSON *e = map->child; e; e = e->next) {
        const mi_tensor *t = mi_find(m, e->string, NULL);
        if (!t) {
            qk_io_error(err, err_len, "%s: tensor '%.200s' of the weight_map is not in shard %s", m->index_base,
                        e->string, e->valuestring);
            return QK_ERR_FORMAT;
        }
        if (strcmp(m->shards[t->shard].base, e->valuestring) != 0) {
            qk_io_error(err, err_len, "%s: tensor '%.200s' is in shard %s, the weight_map says %s", m->index_base,
                        e->string, m->shards[t->shard].base, e->valuestring);
            return QK_ERR_FORMAT;
        }
        listed++;
    }
    if (listed != m->n) {
        for (size_t i = 0; i < m->n; i++)
            if (!cJSON_GetObjectItemCaseSensitive(map, m->t[i].name)) {
                qk_io_error(err, err_len, "%s: tensor '%.200s' of shard %s is not in the weight_map", m->index_base,
                            m->t[i].name, m->shards[m->t[i].shard].base);
                return QK_ERR_FORMAT;
            }
    }
    return QK_OK;
}

/* The directory's other regular files (not shards, not the index, not hidden). */
static qk_status list_extra(model_in *m, char *err, size_t err_len)
{
    DIR *d = opendir(m->dir);
    if (!d) {
        qk_io_error(err, err_len, "%s: %s", m->dir, strerror(errno));
        return QK_ERR_IO;
    }
    names ex = {0};
    int oom = 0;
    for (struct dirent *e; !oom && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || (m->index_base && strcmp(e->d_name, m->index_base) == 0))
            continue;
        int shard = 0;
        for (size_t i = 0; i < m->n_shards && !shard; i++)
            shard = strcmp(m->shards[i].base, e->d_name) == 0;
        if (!shard && is_regular(m->dir, e->d_name))
            oom = names_add(&ex, e->d_name) != 0;
    }
    closedir(d);
    if (oom) {
        names_free(&ex);
        qk_io_error(err, err_len, "out of memory");
        return QK_ERR_NO_MEMORY;
    }
    if (ex.n) /* no other file: ex.v is NULL, which qsort must not get */
        qsort(ex.v, ex.n, sizeof *ex.v, cmp_str);
    m->extra = ex.v;
    m->n_extra = ex.n;
    return QK_OK;
}

qk_status mi_open(model_in *m, const char *path, char *err, size_t err_len)
{
    memset(m, 0, sizeof *m);
    m->fmt = &mi_safetensors;
    const char *pf = getenv("QKERN_PREFETCH");
    m->readahead = !(pf && strcmp(pf, "0") == 0);
    names files = {0};
    cJSON *index = NULL;
    qk_status st = QK_OK;
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (is_dir) {
        m->sharded = 1;
        m->dir = strdup(path);
        DIR *d = m->dir ? opendir(path) : NULL;
        if (!d) {
            qk_io_error(err, err_len, "%s: %s", path, m->dir ? strerror(errno) : "out of memory");
            return m->dir ? QK_ERR_IO : QK_ERR_NO_MEMORY;
        }
        names idx = {0};
        for (struct dirent *e; st == QK_OK && (e = readdir(d)) != NULL;) {
            if (e->d_name[0] == '.' || !is_regular(path, e->d_name))
                continue;
            if (ends_with(e->d_name, INDEX_SUFFIX))
                st = names_add(&idx, e->d_name) ? QK_ERR_NO_MEMORY : QK_OK;
            else if (ends_with(e->d_name, m->fmt->suffix))
                st = names_add(&files, e->d_name) ? QK_ERR_NO_MEMORY : QK_OK;
        }
        closedir(d);
        if (st == QK_OK && idx.n > 1) {
            qk_io_error(err, err_len, "%s holds %zu indexes (%s, %s ...): name the one to use", path, idx.n,
                        idx.v[0], idx.v[1]);
            st = QK_ERR_INVALID_ARG;
        } else if (st == QK_OK && idx.n == 0 && files.n == 0) {
            qk_io_error(err, err_len, "%s holds no *%s file and no *%s index", path, m->fmt->suffix, INDEX_SUFFIX);
            st = QK_ERR_IO;
        } else if (st == QK_OK && idx.n == 1) {
            m->index_base = strdup(idx.v[0]);
            names_free(&files);
        } else if (st == QK_ERR_NO_MEMORY) {
            qk_io_error(err, err_len, "out of memory");
        }
        names_free(&idx);
        if (st == QK_OK && !m->index_base)
            qsort(files.v, files.n, sizeof *files.v, cmp_str);
    } else if (ends_with(path, ".index.json")) {
        m->sharded = 1;
        const char *slash = strrchr(path, '/');
        m->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
        m->index_base = strdup(slash ? slash + 1 : path);
        if (!m->dir || !m->index_base) {
            qk_io_error(err, err_len, "out of memory");
            st = QK_ERR_NO_MEMORY;
        }
    } else {
        if (ends_with(path, mi_gguf.suffix))
            m->fmt = &mi_gguf;
        st = names_add(&files, path) ? QK_ERR_NO_MEMORY : QK_OK;
        if (st != QK_OK)
            qk_io_error(err, err_len, "out of memory");
    }
    if (st == QK_OK && m->index_base) {
        char *ipath = join(m->dir, m->index_base);
        st = ipath ? read_index(ipath, &index, &files, err, err_len) : QK_ERR_NO_MEMORY;
        free(ipath);
    }
    if (st == QK_OK)
        st = open_shards(m, &files, err, err_len);
    if (st == QK_OK && index)
        st = check_index(m, index, err, err_len);
    if (st == QK_OK && m->sharded)
        st = list_extra(m, err, err_len);
    cJSON_Delete(index);
    names_free(&files);
    if (st != QK_OK)
        mi_close(m);
    return st;
}

void mi_close(model_in *m)
{
    for (size_t i = 0; m->shards && i < m->n_shards; i++) {
        if (m->shards[i].file)
            m->fmt->close(m->shards[i].file);
        if (m->shards[i].fd >= 0)
            close(m->shards[i].fd);
        free(m->shards[i].path);
    }
    for (size_t i = 0; i < m->n_extra; i++)
        free(m->extra[i]);
    free(m->extra);
    free(m->shards);
    free(m->t);
    free(m->sorted);
    free(m->sorted_idx);
    free(m->dir);
    free(m->index_base);
    memset(m, 0, sizeof *m);
}

const mi_tensor *mi_find(const model_in *m, const char *name, size_t *index)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->sorted[mid], name);
        if (c == 0) {
            if (index)
                *index = m->sorted_idx[mid];
            return &m->t[m->sorted_idx[mid]];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

qk_status mi_read(const model_in *m, const mi_tensor *t, uint64_t off, void *dst, size_t len, char *err,
                  size_t err_len)
{
    const mi_shard *s = &m->shards[t->shard];
    uint64_t pos = t->file_offset + off;
    unsigned char *p = dst;
    size_t left = len;
    while (left > 0) {
        ssize_t got = pread(s->fd, p, left < ((size_t)1 << 30) ? left : ((size_t)1 << 30), (off_t)pos);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            qk_io_error(err, err_len, "%s: %s reading tensor '%.200s'", s->path, got < 0 ? strerror(errno) : "short read",
                        t->name);
            return QK_ERR_IO;
        }
        p += got;
        pos += (uint64_t)got;
        left -= (size_t)got;
    }
    /* Read once: keep the page cache from filling with a whole model. */
    (void)posix_fadvise(s->fd, (off_t)(t->file_offset + off), (off_t)len, POSIX_FADV_DONTNEED);
    return QK_OK;
}

/* At least this much is announced ahead of the reads: a small tensor (a bias)
 * must not leave the large one after it to be read cold. Page cache, not RSS. */
#define READAHEAD_WINDOW ((uint64_t)64 << 20)

void mi_willneed(const model_in *m, const mi_tensor *t, uint64_t off, uint64_t len)
{
    const mi_shard *s = &m->shards[t->shard];
    uint64_t start = t->file_offset + off;
    if (!m->readahead || start >= s->size)
        return;
    if (len < READAHEAD_WINDOW)
        len = READAHEAD_WINDOW;
    if (len > s->size - start)
        len = s->size - start;
    (void)posix_fadvise(s->fd, (off_t)start, (off_t)len, POSIX_FADV_WILLNEED);
}

uint64_t mi_bytes(const model_in *m)
{
    uint64_t s = 0;
    for (size_t i = 0; i < m->n_shards; i++)
        s += m->shards[i].size;
    return s;
}
