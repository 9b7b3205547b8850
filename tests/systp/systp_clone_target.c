// SPDX-License-Identifier: MIT
// A program creating processes and threads in every way the system call tracepoints must see
// return twice, for the clone exit tests. Prints "pid N ready"; once DIR/go exists it names its
// main thread "systp-clones" (what it starts inherits the name), then makes FORKS fork()s
// (glibc's is a clone), FORKS raw clone(SIGCHLD) calls through syscall(), THREADS
// pthread_create()s (clone3), VFORKS vfork()s, every child exiting at once and waited for;
// prints "done" and exits 0.
// Usage: systp_clone_target DIR FORKS THREADS VFORKS
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void wait_for(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
        nanosleep(&tick, NULL);
}

static int reap(pid_t child) {
    int status = -1;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child %d failed (status %d)\n", (int)child, status);
        return 1;
    }
    return 0;
}

static void *thread_main(void *arg) {
    return arg;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s DIR FORKS THREADS VFORKS\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    const long forks = strtol(argv[2], NULL, 10), threads = strtol(argv[3], NULL, 10),
               vforks = strtol(argv[4], NULL, 10);
    printf("pid %d ready\n", (int)getpid());
    fflush(stdout);
    wait_for(dir, "go");
    prctl(PR_SET_NAME, "systp-clones", 0, 0, 0);

    int failed = 0;
    for (long i = 0; i < forks; i++) {
        pid_t child = fork();
        if (child == 0)
            _exit(0);
        failed |= reap(child);
    }
    for (long i = 0; i < forks; i++) {
        long child = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (child == 0)
            _exit(0);
        failed |= reap((pid_t)child);
    }
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        void *back = NULL;
        if (pthread_create(&t, NULL, thread_main, (void *)(i + 1)) != 0 ||
            pthread_join(t, &back) != 0 || back != (void *)(i + 1)) {
            fprintf(stderr, "thread %ld failed\n", i);
            failed = 1;
        }
    }
    for (long i = 0; i < vforks; i++) {
        pid_t child = vfork();
        if (child == 0)
            _exit(0);
        failed |= reap(child);
    }
    printf("done %d\n", failed);
    return failed;
}
