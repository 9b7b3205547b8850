// SPDX-License-Identifier: MIT
// A program to probe: THREADS threads each call bpftime_target_add(i % 8, i) CALLS times,
// sleeping PAUSE_US microseconds after each call (so probes can come and go while it runs).
// Prints the number of calls and the sum of what the calls returned, which probes must see;
// exits with status 3 when a call returned a wrong result.
// With "short" after PAUSE_US the threads call bpftime_target_add4 instead, the same sum in a
// 4-byte function (`lea; ret`), too short for a 5-byte jump inside it: the fill after it takes
// the rest of the jump. With "tight" they call bpftime_target_add4_tight, the same 4 bytes with
// another function right behind: probes go there by trap.
// Usage: probe_target CALLS [THREADS [PAUSE_US [short|tight]]]
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/// The probed function: returns key + value. noinline and used, so every call is a real call.
__attribute__((noinline, used)) long bpftime_target_add(long key, long value) {
    __asm__ volatile("" ::: "memory");
    return key + value;
}

/// The short probed function: returns key + value in 4 bytes of code.
int bpftime_target_add4(int key, int value);
__asm__(".text\n"
        ".globl bpftime_target_add4\n"
        ".type bpftime_target_add4, @function\n"
        "bpftime_target_add4:\n"
        "    leal (%rdi,%rsi), %eax\n"
        "    ret\n"
        ".size bpftime_target_add4, .-bpftime_target_add4\n");

/// The same 4 bytes with another function right behind its ret (no fill to run into).
int bpftime_target_add4_tight(int key, int value);
/// Right behind bpftime_target_add4_tight: key + value + 1.
int bpftime_target_after_tight(int key, int value);
__asm__(".text\n"
        ".p2align 4\n"
        ".globl bpftime_target_add4_tight\n"
        ".type bpftime_target_add4_tight, @function\n"
        "bpftime_target_add4_tight:\n"
        "    leal (%rdi,%rsi), %eax\n"
        "    ret\n"
        ".size bpftime_target_add4_tight, .-bpftime_target_add4_tight\n"
        ".globl bpftime_target_after_tight\n"
        ".type bpftime_target_after_tight, @function\n"
        "bpftime_target_after_tight:\n"
        "    leal 1(%rdi,%rsi), %eax\n"
        "    ret\n"
        ".size bpftime_target_after_tight, .-bpftime_target_after_tight\n");

static int use_short, use_tight;
static long calls_per_thread;
static long pause_us;
static volatile long wrong_results;

static void *run(void *arg) {
    long sum = 0;
    for (long i = 0; i < calls_per_thread; i++) {
        long r = use_tight   ? bpftime_target_add4_tight((int)(i % 8), (int)i)
                 : use_short ? bpftime_target_add4((int)(i % 8), (int)i)
                             : bpftime_target_add(i % 8, i);
        if (use_tight && bpftime_target_after_tight((int)(i % 8), (int)i) != r + 1) {
            __sync_fetch_and_add(&wrong_results, 1);
        }
        if (r != i % 8 + i) {
            __sync_fetch_and_add(&wrong_results, 1);
        }
        sum += r;
        if (pause_us > 0) {
            usleep((useconds_t)pause_us);
        }
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
    pause_us = argc > 3 ? strtol(argv[3], NULL, 0) : 0;
    use_short = argc > 4 && strcmp(argv[4], "short") == 0;
    use_tight = argc > 4 && strcmp(argv[4], "tight") == 0;
    if (calls_per_thread < 0 || nthreads < 1 || nthreads > 64 || pause_us < 0) {
        fprintf(stderr, "%s: CALLS must be >= 0, THREADS 1..64 and PAUSE_US >= 0\n", argv[0]);
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
    if (wrong_results != 0) {
        fprintf(stderr, "%s: %ld calls returned a wrong result\n", argv[0], wrong_results);
        return 3;
    }
    return 0;
}
