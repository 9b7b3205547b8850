// SPDX-License-Identifier: MIT
// Short loops the vectorizer leaves: SUITE_RECORDS records of 16 bytes, each hashed over a
// length its first byte gives (0-15 bytes), so every inner loop runs a few data-dependent
// iterations with a multiply carried from one to the next.
#include "suite.h"

SUITE_PROGRAM(short_loops) {
    const __u8 *in = m->src;
    __u64 sum = 0;
    for (__u32 r = 0; r < SUITE_RECORDS; r++) {
        const __u8 *rec = in + r * 16;
        __u32 len = rec[0] & 15;
        __u32 h = 2166136261u;
        for (__u32 i = 1; i < 16; i++) {
            if (i > len) {
                break;
            }
            h = (h ^ rec[i]) * 16777619u;
        }
        sum += h;
    }
    return sum ^ (sum >> 32);
}
