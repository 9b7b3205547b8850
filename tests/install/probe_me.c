/* SPDX-License-Identifier: MIT */
/*
 * A small program for `bpftime start`: calls probed_add(i, 1) for i in 1..N (N = argv[1]) and
 * prints the sum of the results. The install test attaches examples/uprobe_count.bpf.o to
 * probed_add and checks the agent counted every call.
 */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long probed_add(long a, long b) {
    __asm__ volatile("" ::: "memory");
    return a + b;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    long sum = 0;
    for (long i = 1; i <= n; i++) {
        sum += probed_add(i, 1);
    }
    printf("sum %ld\n", sum);
    return 0;
}
