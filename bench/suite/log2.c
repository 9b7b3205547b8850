// SPDX-License-Identifier: MIT
// Integer log2 of SUITE_LOG2_COUNT u64 values by shifts alone: smear the highest set bit
// down, then count the set bits (SWAR). Each value is first shifted right by its own low six
// bits so the results vary. Branch-free on purpose: the kernel's verifier walks the paths of
// a binary search of six data-dependent branches per value at about 2,300 instructions per
// value, so 1024 values exceed its million-instruction limit (this form: 45,000 in all).
#include "suite.h"

SUITE_PROGRAM(int_log2) {
    const __u64 *values = (const __u64 *)m->src;
    __u64 sum = 0;
    for (__u32 i = 0; i < SUITE_LOG2_COUNT; i++) {
        __u64 x = (values[i] >> (values[i] & 63)) | 1;
        x |= x >> 1;
        x |= x >> 2;
        x |= x >> 4;
        x |= x >> 8;
        x |= x >> 16;
        x |= x >> 32;
        x -= (x >> 1) & 0x5555555555555555ull;
        x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
        x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
        sum += ((x * 0x0101010101010101ull) >> 56) - 1;
    }
    return sum;
}
