// SPDX-License-Identifier: MIT
// Bubble sort of SUITE_SORT_COUNT u32 values. They are copied from the input into a scratch
// area first, so every run sorts the same unsorted values.
#include "suite.h"

SUITE_PROGRAM(bubble_sort) {
    const __u32 *in = (const __u32 *)m->src;
    __u32 *v = m->sorted;
    for (__u32 i = 0; i < SUITE_SORT_COUNT; i++) {
        v[i] = in[i];
    }
    for (__u32 i = 0; i < SUITE_SORT_COUNT - 1; i++) {
        for (__u32 j = 0; j < SUITE_SORT_COUNT - 1 - i; j++) {
            __u32 a = v[j], b = v[j + 1];
            if (a > b) {
                v[j] = b;
                v[j + 1] = a;
            }
        }
    }
    // An order-sensitive checksum, so an unsorted result does not pass for a sorted one.
    __u64 sum = 0;
    for (__u32 i = 0; i < SUITE_SORT_COUNT; i++) {
        sum = sum * 31 + v[i];
    }
    return sum ^ (sum >> 32);
}
