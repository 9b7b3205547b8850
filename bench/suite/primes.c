// SPDX-License-Identifier: MIT
// Counts the primes below prime_limit (at most SUITE_PRIME_LIMIT) by trial division. The
// kernel's verifier cannot know which divisions leave no remainder, so it walks both ways out
// of every inner iteration; the work grows about quadratically with the limit, and 512 stays
// well inside its million-instruction limit (1024 does not).
#include "suite.h"

SUITE_PROGRAM(count_primes) {
    __u32 limit = m->prime_limit;
    if (limit > SUITE_PRIME_LIMIT) {
        limit = SUITE_PRIME_LIMIT;
    }
    __u64 count = 0;
    for (__u32 n = 2; n < limit; n++) {
        __u32 prime = 1;
        for (__u32 d = 2; d * d <= n; d++) {
            if (n % d == 0) {
                prime = 0;
                break;
            }
        }
        count += prime;
    }
    return count;
}
