/* The atomic output module's contract (host/io/atomic_file.h), as library
 * callers (the model pipeline) use it: seekable temporaries with pwrite, in-place
 * FIFOs that refuse pwrite, links followed, modes kept, output = input
 * detection, and a process-wide cancel that leaves the target as it was. The
 * end-to-end checks through the command are tests/test_outputs.py. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "atomic_file.h"
#include "file_fixture.h"

static int group_setup(void **state)
{
    (void)state;
    return fixture_setup("qk_test_atomic");
}

static void test_pwrite_out_of_order(void **state)
{
    (void)state;
    const char *path = path_in("planned.bin");
    qk_atomic_file f;
    char err[256] = "";
    assert_int_equal(qk_atomic_open(&f, path, err, sizeof err), QK_OK);
    assert_int_equal(qk_atomic_seekable(&f), 1);
    assert_true(qk_atomic_fd(&f) >= 0);
    assert_int_equal(qk_atomic_pwrite(&f, "world", 5, 6, err, sizeof err), QK_OK);
    assert_int_equal(qk_atomic_pwrite(&f, "hello ", 6, 0, err, sizeof err), QK_OK);
    assert_false(file_exists(path)); /* nothing at the name until the commit */
    assert_int_equal(count_temp_files(g_dir), named_temporaries());
    assert_int_equal(qk_atomic_commit(&f, err, sizeof err), QK_OK);
    size_t len = 0;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 11);
    assert_memory_equal(got, "hello world", 11);
    free(got);
    assert_int_equal(qk_atomic_fd(&f), -1);
    unlink(path);
}

static void test_mode_kept_and_link_followed(void **state)
{
    (void)state;
    const char *target = path_in("kept.bin"), *link = path_in("kept.link");
    write_bytes(target, "old", 3);
    assert_int_equal(chmod(target, 0600), 0);
    assert_int_equal(symlink("kept.bin", link), 0);
    qk_atomic_file f;
    assert_int_equal(qk_atomic_open(&f, link, NULL, 0), QK_OK);
    assert_int_equal(qk_atomic_write(&f, "new!", 4, NULL, 0), QK_OK);
    assert_int_equal(qk_atomic_commit(&f, NULL, 0), QK_OK);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 4);
    assert_int_equal(qk_atomic_same_file(link, target), 1);
    assert_int_equal(qk_atomic_same_file(link, "-"), 0);
    assert_int_equal(qk_atomic_same_file(path_in("none"), target), 0);
    unlink(link);
    unlink(target);
}

static void *drain(void *arg)
{
    int fd = open(arg, O_RDONLY);
    size_t total = 0;
    char buf[256];
    for (ssize_t r; fd >= 0 && (r = read(fd, buf, sizeof buf)) > 0;)
        total += (size_t)r;
    if (fd >= 0)
        close(fd);
    return (void *)(uintptr_t)total;
}

static void test_fifo_in_place(void **state)
{
    (void)state;
    const char *fifo = path_in("out.fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(qk_atomic_check(fifo, NULL, 0), QK_OK); /* opens nothing: no reader needed */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, drain, (void *)fifo), 0);
    qk_atomic_file f;
    char err[256] = "";
    assert_int_equal(qk_atomic_open(&f, fifo, err, sizeof err), QK_OK);
    assert_int_equal(qk_atomic_seekable(&f), 0);
    assert_int_equal(qk_atomic_pwrite(&f, "x", 1, 0, err, sizeof err), QK_ERR_UNSUPPORTED);
    assert_int_equal(qk_atomic_write(&f, "12345", 5, err, sizeof err), QK_OK);
    assert_int_equal(qk_atomic_commit(&f, err, sizeof err), QK_OK);
    void *total = NULL;
    pthread_join(t, &total);
    assert_int_equal((uintptr_t)total, 5);
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    unlink(fifo);
}

static void test_refusals(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(qk_atomic_check(g_dir, err, sizeof err), QK_ERR_IO); /* a directory */
    assert_int_equal(qk_atomic_check(path_in("no/such/dir/x"), err, sizeof err), QK_ERR_IO);
    if (geteuid() == 0) {
        const char *blk = path_in("blk");
        assert_int_equal(mknod(blk, S_IFBLK | 0600, makedev(7, 0)), 0);
        assert_int_equal(qk_atomic_check(blk, err, sizeof err), QK_ERR_IO);
        assert_non_null(strstr(err, "block device"));
        unlink(blk);
    }
}

/* Last: the cancel is process-wide and permanent. */
static void test_cancel_keeps_target(void **state)
{
    (void)state;
    const char *path = path_in("cancelled.bin");
    write_bytes(path, "precious", 8);
    qk_atomic_file f;
    char err[256] = "";
    assert_int_equal(qk_atomic_open(&f, path, err, sizeof err), QK_OK);
    assert_int_equal(qk_atomic_write(&f, "partial", 7, err, sizeof err), QK_OK);
    unsigned done = qk_atomic_cancel_all();
    assert_true(done >= 1); /* the commits of the tests before */
    assert_int_equal(count_temp_files(g_dir), 0);
    assert_int_equal(qk_atomic_write(&f, "more", 4, err, sizeof err), QK_ERR_IO);
    assert_non_null(strstr(err, "interrupted"));
    assert_int_equal(qk_atomic_commit(&f, err, sizeof err), QK_ERR_IO);
    qk_atomic_abort(&f);
    size_t len = 0;
    unsigned char *got = read_bytes(path, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(got, "precious", 8);
    free(got);
    assert_int_equal(qk_atomic_open(&f, path_in("later.bin"), err, sizeof err), QK_ERR_IO);
    assert_false(file_exists(path_in("later.bin")));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pwrite_out_of_order),
        cmocka_unit_test(test_mode_kept_and_link_followed),
        cmocka_unit_test(test_fifo_in_place),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_cancel_keeps_target),
    };
    return cmocka_run_group_tests(tests, group_setup, fixture_teardown);
}
