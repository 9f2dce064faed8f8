/* The process-wide side of atomic outputs: named temporaries that must go
 * away on every exit a process can catch, the cancellation a signal thread
 * requests, and the removal of temporaries that a killed run left behind.
 *
 * One mutex orders cancellation against commits: a commit that has linked its
 * output in happened before the cancel (the caller learns it from the count
 * qk_atomic_cancel_all returns); every commit after it fails. */
#include "atomic_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NAMED 32

/* Recursive: a commit holds it while it registers the short-lived name it
 * links the finished file under. */
static pthread_mutex_t lock;
static pthread_once_t lock_once = PTHREAD_ONCE_INIT;
static char *named[MAX_NAMED];
static int cancelled;
static unsigned commits;
static int atexit_done;

static void init_lock(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&lock, &a);
    pthread_mutexattr_destroy(&a);
}

static void take(void)
{
    pthread_once(&lock_once, init_lock);
    pthread_mutex_lock(&lock);
}

static void remove_all_named(void)
{
    for (int i = 0; i < MAX_NAMED; i++)
        if (named[i]) {
            unlink(named[i]);
            free(named[i]);
            named[i] = NULL;
        }
}

static void at_exit(void)
{
    take();
    remove_all_named();
    pthread_mutex_unlock(&lock);
}

int qk_atomic_reg_add(const char *path)
{
    take();
    if (!atexit_done)
        atexit_done = atexit(at_exit) == 0;
    int rc = -1;
    for (int i = 0; i < MAX_NAMED && rc != 0; i++)
        if (!named[i] && (named[i] = strdup(path)) != NULL)
            rc = 0;
    pthread_mutex_unlock(&lock);
    return rc;
}

void qk_atomic_reg_remove(const char *path, int do_unlink)
{
    take();
    for (int i = 0; i < MAX_NAMED; i++)
        if (named[i] && strcmp(named[i], path) == 0) {
            free(named[i]);
            named[i] = NULL;
            break;
        }
    if (do_unlink)
        unlink(path);
    pthread_mutex_unlock(&lock);
}

int qk_atomic_reg_begin_commit(void)
{
    take();
    if (cancelled) {
        pthread_mutex_unlock(&lock);
        return -1;
    }
    return 0;
}

void qk_atomic_reg_end_commit(int linked)
{
    commits += linked != 0;
    pthread_mutex_unlock(&lock);
}

int qk_atomic_reg_cancelled(void)
{
    take();
    int c = cancelled;
    pthread_mutex_unlock(&lock);
    return c;
}

unsigned qk_atomic_cancel_all(void)
{
    take();
    cancelled = 1;
    remove_all_named();
    unsigned n = commits;
    pthread_mutex_unlock(&lock);
    return n;
}

/* This host's name as one token of a temporary's name (which a stale-file
 * scan compares: a process id means nothing on another host). */
static void host_name(char *buf, size_t len)
{
    if (gethostname(buf, len) != 0)
        buf[0] = '\0';
    buf[len - 1] = '\0';
    for (char *p = buf; *p; p++) /* keep the name one token */
        if (*p == '/' || *p == '.' || *p == '@')
            *p = '_';
    if (strlen(buf) > QK_ATOMIC_MAX_HOST)
        buf[QK_ATOMIC_MAX_HOST] = '\0';
}

int qk_atomic_temp_name(const char *base, const char *suffix, char *out, size_t len)
{
    char host[256];
    host_name(host, sizeof host);
    int n = snprintf(out, len, ".%.*s.qkern-%ld@%s.%s", QK_ATOMIC_MAX_BASE, base, (long)getpid(), host, suffix);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* ".<base>.qkern-<pid>@<host>.<suffix>": removed when made on this host by a
 * process that no longer exists and owned by us; anything else is left. */
void qk_atomic_remove_stale(int dir_fd, const char *base)
{
    char prefix[QK_ATOMIC_MAX_BASE + 16];
    int plen = snprintf(prefix, sizeof prefix, ".%.*s.qkern-", QK_ATOMIC_MAX_BASE, base);
    if (plen <= 0 || (size_t)plen >= sizeof prefix)
        return;
    char host[256];
    host_name(host, sizeof host);
    int fd = dup(dir_fd);
    if (fd < 0)
        return;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, (size_t)plen) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + plen, &end, 10);
        if (end == e->d_name + plen || *end != '@' || pid <= 0)
            continue;
        const char *h = end + 1, *dot = strrchr(h, '.');
        if (dot == NULL || (size_t)(dot - h) != strlen(host) || strncmp(h, host, (size_t)(dot - h)) != 0)
            continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        struct stat st;
        if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_uid == geteuid())
            unlinkat(dir_fd, e->d_name, 0);
    }
    closedir(d);
}
