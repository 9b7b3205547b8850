// SPDX-License-Identifier: MIT
// A program for `bpftime inject` and the agent's fork and exec hosting to probe. It calls
// inject_target_work() when told, from its main thread, which otherwise waits in a system call:
//   pipe          prints "ready PID", then reads commands from standard input with read(2):
//                 "call N" makes N calls and prints "done N", "quit" ends it. A read that fails
//                 (EINTR included) is printed and ends it with status 3. "fork" forks: the
//                 child prints "ready CHILD_PID" and reads the commands from then on, the
//                 parent waits for it and exits with its status.
//   sleep SECONDS prints "ready PID", sleeps once with nanosleep(2) and prints
//                 "slept S.SSS" as measured with CLOCK_MONOTONIC ("nanosleep: ..." and status
//                 3 when the sleep is cut short).
//   fork          forks; the child runs "pipe" (printing "ready CHILD_PID"), the parent waits
//                 for it and exits with its status.
//   calls N       makes N calls, prints "calls N shm SEGMENT preload yes|no" and exits.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/// The probed function. noinline and used, so every call is a real call.
__attribute__((noinline, used)) long inject_target_work(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

static long work(long n) {
    long sum = 0;
    for (long i = 0; i < n; i++) {
        sum += inject_target_work(i);
    }
    return sum;
}

static int run_pipe(void) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[256];
    size_t len = 0;
    for (;;) {
        ssize_t got = read(0, line + len, sizeof line - 1 - len);
        if (got < 0) {
            printf("read: %s\n", strerror(errno));
            fflush(stdout);
            return 3;
        }
        if (got == 0) {
            return 0;
        }
        len += (size_t)got;
        line[len] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            long n = 0;
            if (strcmp(line, "quit") == 0) {
                printf("bye\n");
                return 0;
            }
            if (strcmp(line, "fork") == 0) {
                // The child goes on reading the commands; the parent waits for it.
                fflush(stdout);
                pid_t child = fork();
                if (child == 0) {
                    printf("ready %d\n", (int)getpid());
                } else if (child > 0) {
                    int status = 0;
                    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
                    }
                    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
                }
            } else if (sscanf(line, "call %ld", &n) == 1) {
                work(n);
                printf("done %ld\n", n);
                fflush(stdout);
            }
            size_t rest = len - (size_t)(nl + 1 - line);
            memmove(line, nl + 1, rest + 1);
            len = rest;
        }
        if (len == sizeof line - 1) {
            len = 0;
        }
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "pipe") == 0) {
        return run_pipe();
    }
    if (argc >= 3 && strcmp(argv[1], "sleep") == 0) {
        double seconds = strtod(argv[2], NULL);
        printf("ready %d\n", (int)getpid());
        struct timespec want = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (nanosleep(&want, NULL) != 0) {
            printf("nanosleep: %s\n", strerror(errno));
            return 3;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("slept %.3f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "fork") == 0) {
        pid_t child = fork();
        if (child < 0) {
            perror("fork");
            return 1;
        }
        if (child == 0) {
            return run_pipe();
        }
        int status = 0;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    if (argc >= 3 && strcmp(argv[1], "calls") == 0) {
        long n = strtol(argv[2], NULL, 0);
        work(n);
        const char *shm = getenv("BPFTIME_SHM");
        const char *preload = getenv("LD_PRELOAD");
        printf("calls %ld shm %s preload %s\n", n, shm ? shm : "(none)",
               preload && strstr(preload, "libbpftime_agent") ? "yes" : "no");
        return 0;
    }
    fprintf(stderr, "usage: %s pipe | sleep SECONDS | fork | calls N\n", argv[0]);
    return 2;
}
