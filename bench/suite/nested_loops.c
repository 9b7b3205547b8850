// SPDX-License-Identifier: MIT
// Nested fixed-count loops over small arrays: products of 8x8 u32 matrices read from the input
// (a left and a right matrix per product, SUITE_MATRICES products), each folded into a checksum.
#include "suite.h"

#define N 8

SUITE_PROGRAM(matrix_8x8) {
    const __u32 *in = (const __u32 *)m->src;
    __u64 sum = 0;
    for (__u32 p = 0; p < SUITE_MATRICES; p++) {
        const __u32 *a = in + p * 2 * N * N;
        const __u32 *b = a + N * N;
        for (__u32 i = 0; i < N; i++) {
            for (__u32 j = 0; j < N; j++) {
                __u32 c = 0;
                for (__u32 k = 0; k < N; k++) {
                    c += a[i * N + k] * b[k * N + j];
                }
                sum = sum * 31 + c;
            }
        }
    }
    return sum ^ (sum >> 32);
}
