/* The CLI's signal thread (see interrupt.h). */
#include "interrupt.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"

#define GRACE_MS 300 /* for the main thread to unwind by itself (free, close) */

static atomic_int grace_ms = GRACE_MS;

void cli_interrupt_grace_ms(int ms)
{
    atomic_store(&grace_ms, ms);
}

static const int handled[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
static atomic_int interrupted_by;
static atomic_flag said = ATOMIC_FLAG_INIT;

static void say(int sig)
{
    if (atomic_flag_test_and_set(&said))
        return;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "qkern: interrupted by %s: no output was written or changed\n",
                     sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "SIGQUIT");
    if (n > 0)
        (void)!write(2, msg, (size_t)n);
}

static void *wait_signals(void *arg)
{
    const sigset_t *set = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (atomic_load(&interrupted_by) != 0)
            break; /* a second signal: no more grace */
        if (qk_atomic_cancel_all() > 0)
            continue; /* the output is already in place: let the run finish */
        atomic_store(&interrupted_by, sig);
        int ms = atomic_load(&grace_ms);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
        break;
    }
    int sig = atomic_load(&interrupted_by);
    say(sig);
    _exit(128 + sig);
    return NULL;
}

int cli_interrupt_init(void)
{
    static sigset_t set;
    signal(SIGXFSZ, SIG_IGN);
    sigemptyset(&set);
    for (size_t k = 0; k < sizeof handled / sizeof handled[0]; k++)
        sigaddset(&set, handled[k]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, wait_signals, &set);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return -1;
    }
    return 0;
}

int cli_interrupted(void)
{
    return atomic_load(&interrupted_by);
}

int cli_interrupt_exit(int rc)
{
    int sig = atomic_load(&interrupted_by);
    if (sig == 0)
        return rc;
    say(sig);
    return 128 + sig;
}
