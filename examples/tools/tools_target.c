// SPDX-License-Identifier: MIT
/*
 * A program for the tools to watch, which makes a known number of calls after a trigger, so
 * what a tool reports can be compared exactly between runs (the kernel, bpftime).
 *
 * For each round R (1..ROUNDS) it waits until TRIGGER.R exists, then makes MALLOCS calls of
 * malloc(MARKER_SIZE) and CALLS calls of tools_target_work(i, 10 * i, SLEEP_US) for
 * i = 1..CALLS, where SLEEP_US is 1500 for odd i and 6000 for even i (the function sleeps that
 * long), and prints "round R done". It prints "pid PID ready" first.
 *
 * Usage: tools_target TRIGGER [MALLOCS [MARKER_SIZE [CALLS [ROUNDS]]]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The function funclat and rbevents watch: sleeps sleep_us microseconds, returns a + b. */
__attribute__((noinline, used)) long tools_target_work(long a, long b, long sleep_us) {
    struct timespec ts = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};

    while (nanosleep(&ts, &ts) != 0) {
    }
    __asm__ volatile("" ::: "memory");
    return a + b;
}

static int wait_for(const char *path) {
    struct stat st;

    /* At most two minutes: a test that never triggers still ends. */
    for (int i = 0; i < 12000; i++) {
        if (stat(path, &st) == 0)
            return 0;
        usleep(10000);
    }
    fprintf(stderr, "tools_target: %s never appeared\n", path);
    return -1;
}

int main(int argc, char **argv) {
    long mallocs, size, calls, rounds;
    char path[4096];

    if (argc < 2) {
        fprintf(stderr, "usage: %s TRIGGER [MALLOCS [MARKER_SIZE [CALLS [ROUNDS]]]]\n", argv[0]);
        return 2;
    }
    mallocs = argc > 2 ? strtol(argv[2], NULL, 0) : 100;
    size = argc > 3 ? strtol(argv[3], NULL, 0) : 12345;
    calls = argc > 4 ? strtol(argv[4], NULL, 0) : 6;
    rounds = argc > 5 ? strtol(argv[5], NULL, 0) : 1;
    if (mallocs < 0 || size <= 0 || calls < 0 || rounds < 1) {
        fprintf(stderr, "%s: MALLOCS and CALLS must be >= 0, MARKER_SIZE and ROUNDS > 0\n",
                argv[0]);
        return 2;
    }
    printf("pid %d ready\n", (int)getpid());
    fflush(stdout);
    for (long r = 1; r <= rounds; r++) {
        snprintf(path, sizeof(path), "%s.%ld", argv[1], r);
        if (wait_for(path) != 0)
            return 1;
        for (long i = 0; i < mallocs; i++) {
            void *volatile p = malloc((size_t)size);

            free(p);
        }
        for (long i = 1; i <= calls; i++) {
            if (tools_target_work(i, 10 * i, i % 2 ? 1500 : 6000) != 11 * i)
                return 3;
        }
        printf("round %ld done\n", r);
        fflush(stdout);
    }
    return 0;
}
