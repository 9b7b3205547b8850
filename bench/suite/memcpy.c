// SPDX-License-Identifier: MIT
// Copies the 64 KiB input to the destination half, 8 bytes at a time.
#include "suite.h"

SUITE_PROGRAM(copy_64k) {
    const __u64 *from = (const __u64 *)m->src;
    __u64 *to = (__u64 *)m->dst;
    for (__u32 i = 0; i < SUITE_HALF / 8; i++) {
        to[i] = from[i];
    }
    __u64 last = to[SUITE_HALF / 8 - 1];
    return to[0] ^ last ^ (last >> 32);
}
