// SPDX-License-Identifier: MIT
// 64-bit FNV-1a over the first SUITE_FNV_BYTES bytes of the input.
#include "suite.h"

SUITE_PROGRAM(fnv1a) {
    __u64 h = 0xcbf29ce484222325ull;
    for (__u32 i = 0; i < SUITE_FNV_BYTES; i++) {
        h ^= m->src[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 32);
}
