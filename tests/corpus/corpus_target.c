// SPDX-License-Identifier: MIT
// The target of the corpus tools: one run makes a known set of calls, each one a tool of
// tests/corpus/bpf watches, and prints its pid. The corpus test runs it under `bpftime start`
// (user space) and plainly (the kernel's probes) and checks that both report these counts.
// Usage: corpus_target [cgroup]   ("cgroup": only the calls the cgroup tool counts)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sdt.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

// A real call each: the tools probe these functions by name.
#if defined(__clang__)
#define PROBED __attribute__((noinline, used))
#else
#define PROBED __attribute__((noinline, noclone, used))
#endif

// The allocations stay visible, so the compiler cannot drop a malloc/free pair.
void *volatile corpus_kept;
// Written by the probed functions, so each has a body long enough for a probe's 5-byte jump.
volatile long corpus_seen;

// bashreadline's shape: a function returning the line it read.
PROBED const char *corpus_readline(int i) {
    static char line[32];
    snprintf(line, sizeof line, "corpus line %d", i);
    corpus_seen = corpus_seen + 1;
    return line;
}

// A user structure passed by pointer (the CO-RE tool reads its tv_nsec).
PROBED long corpus_visit(const struct timespec *ts) {
    corpus_seen = corpus_seen + 1;
    return ts->tv_nsec;
}

// Calls of a kind with a value (the options tool filters them).
PROBED int corpus_work(int kind, int value) {
    corpus_seen = corpus_seen + 1;
    return kind * 100 + value;
}

// A tick (the cgroup tool counts those made inside a cgroup).
PROBED int corpus_tick(int i) {
    corpus_seen = corpus_seen + 1;
    return i + 1;
}

int main(int argc, char **argv) {
    long sum = 0;
    for (int i = 0; i < 30; i++) {
        sum += corpus_tick(i);
    }
    if (argc > 1 && strcmp(argv[1], "cgroup") == 0) {
        printf("pid %d ticks 30 sum %ld\n", (int)getpid(), sum);
        return 0;
    }
    // 64 allocations of 5000 bytes and 20 of 100 (below the malloc tool's --set min_size).
    for (int i = 0; i < 64; i++) {
        corpus_kept = malloc(5000);
        free(corpus_kept);
    }
    for (int i = 0; i < 20; i++) {
        corpus_kept = malloc(100);
        free(corpus_kept);
    }
    for (int i = 0; i < 5; i++) {
        sum += (long)strlen(corpus_readline(i));
    }
    for (long i = 1; i <= 10; i++) {
        long tenfold = i * 10;
        DTRACE_PROBE2(corpus, tick, i, tenfold);
    }
    for (int i = 1; i <= 8; i++) {
        struct timespec ts = {.tv_sec = i, .tv_nsec = 1000L * i};
        sum += corpus_visit(&ts);
    }
    for (int kind = 0; kind < 4; kind++) {
        for (int value = 1; value <= 5; value++) {
            sum += corpus_work(kind, value);
        }
    }
    // Seven uname system calls (the kernel function tools count them).
    for (int i = 0; i < 7; i++) {
        struct utsname name;
        sum += uname(&name) == 0;
    }
    printf("pid %d done sum %ld\n", (int)getpid(), sum);
    return 0;
}
