// SPDX-License-Identifier: MIT
// A USDT probe as the last statement of a small function compiled -O2: its site (a one-byte
// nop) sits right before the function's `ret`, too close for a 5-byte jump, so bpftime probes
// it by trap. The function's arguments are the probe's; the program prints what it passed.
// The probe's first argument is 3 * a.
//   usdt_near_ret ROUNDS
#include <sys/sdt.h>

#include <stdio.h>
#include <stdlib.h>

// The probe passes what the function computed, so its site comes after the computation, just
// before the `ret`.
__attribute__((noinline)) int near_ret(int a, long b) {
    int tripled = a * 3;
    DTRACE_PROBE2(bpftime_test, last, tripled, b);
    return tripled;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s ROUNDS\n", argv[0]);
        return 2;
    }
    long rounds = strtol(argv[1], NULL, 10);
    long sum_a = 0, sum_b = 0, got = 0;
    for (long i = 0; i < rounds; i++) {
        int a = (int)(i % 7) - 3;
        long b = i * 1000003L;
        got += near_ret(a, b);
        sum_a += a;
        sum_b += b;
    }
    printf("last %ld: sum_a %ld sum_b %ld returned %ld\n", rounds, sum_a, sum_b, got);
    return got == 3 * sum_a ? 0 : 3;
}
