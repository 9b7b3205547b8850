// SPDX-License-Identifier: MIT
// A program to probe: THREADS threads each call bpftime_target_add(i % 8, i) CALLS times.
// Prints the number of calls and the sum of what the calls returned, which probes must see.
// Usage: probe_target CALLS [THREADS]
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/// The probed function: returns key + value. noinline and used, so every call is a real call.
__attribute__((noinline, used)) long bpftime_target_add(long key, long value) {
    __asm__ volatile("" ::: "memory");
    return key + value;
}

static long calls_per_thread;

static void *run(void *arg) {
    long sum = 0;
    for (long i = 0; i < calls_per_thread; i++) {
        sum += bpftime_target_add(i % 8, i);
    }
    *(long *)arg = sum;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CALLS [THREADS]\n", argv[0]);
        return 2;
    }
    calls_per_thread = strtol(argv[1], NULL, 0);
    long nthreads = argc > 2 ? strtol(argv[2], NULL, 0) : 1;
    if (calls_per_thread < 0 || nthreads < 1 || nthreads > 64) {
        fprintf(stderr, "%s: CALLS must be >= 0 and THREADS 1..64\n", argv[0]);
        return 2;
    }
    pthread_t threads[64];
    long sums[64] = {0};
    for (long t = 0; t < nthreads; t++) {
        if (pthread_create(&threads[t], NULL, run, &sums[t]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    long sum = 0;
    for (long t = 0; t < nthreads; t++) {
        pthread_join(threads[t], NULL);
        sum += sums[t];
    }
    printf("calls %ld sum %ld\n", calls_per_thread * nthreads, sum);
    return 0;
}
