/* Shared by the file-format tests (test_npy, test_safetensors): a temporary
 * directory per test group and small file helpers. Included after cmocka.h.
 * Tests run as root and never touch a system path, /dev/null included: a
 * character device is made with mknod in the group's directory
 * (qk_test_null_device). */
#ifndef QK_TEST_FILE_FIXTURE_H
#define QK_TEST_FILE_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char g_dir[PATH_MAX];

static const char *path_in(const char *name)
{
    static char buf[4][PATH_MAX + 300];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, name);
    return p;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        chmod(path, 0700);
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                char child[PATH_MAX];
                snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                rm_tree(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* A fresh temporary directory for the group: $TMPDIR/<prefix>.XXXXXX. */
static int fixture_setup(const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int fixture_teardown(void **state)
{
    (void)state;
    rm_tree(g_dir);
    return 0;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len > 0)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A null character device (major 1, minor 3: what /dev/null is) made with
 * mknod as DIR/NAME, its path in OUT. Returns 0, or -1 after printing why
 * (mknod needs root, EPERM otherwise; a node on a nodev mount cannot be
 * opened): the caller then skips. The node is checked by opening it for
 * reading, which a nodev mount refuses. */
static inline int qk_test_null_device(const char *dir, const char *name, char *out, size_t out_len)
{
    if ((size_t)snprintf(out, out_len, "%s/%s", dir, name) >= out_len) {
        print_message("  skipped: path of the null device too long\n");
        return -1;
    }
    unlink(out);
    if (mknod(out, S_IFCHR | 0666, makedev(1, 3)) != 0) {
        print_message("  skipped: mknod %s (a null character device) failed: %s%s\n", out, strerror(errno),
                      errno == EPERM ? " (needs root)" : "");
        return -1;
    }
    int fd = open(out, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        print_message("  skipped: the null device %s cannot be opened: %s (a nodev mount?)\n", out,
                      strerror(errno));
        unlink(out);
        return -1;
    }
    struct stat st;
    int ok = fstat(fd, &st) == 0 && S_ISCHR(st.st_mode);
    close(fd);
    if (!ok) {
        print_message("  skipped: %s is not a character device\n", out);
        unlink(out);
        return -1;
    }
    return 0;
}

/* Temporaries the atomic writer may have left in g_dir. */
static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.") != NULL || strstr(e->d_name, ".qkern-") != NULL)
            n++;
    closedir(d);
    return n;
}

/* Temporaries with a name while an atomic output is open: none with O_TMPFILE,
 * one with the named fallback (QKERN_ATOMIC_NAMED=1, a ctest variant). */
static inline int named_temporaries(void)
{
    const char *e = getenv("QKERN_ATOMIC_NAMED");
    return e != NULL && strcmp(e, "1") == 0;
}

#endif
