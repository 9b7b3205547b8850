// SPDX-License-Identifier: MIT
// Call-heavy code: small functions that are not inlined, so that the eBPF object has
// bpf-to-bpf calls (and native code real calls), three per input word, one nested in another.
#include "suite.h"

#define SUITE_NOINLINE static __attribute__((noinline))

SUITE_NOINLINE __u64 rotate(__u64 x, __u64 n) {
    return (x << (n & 63)) | (x >> ((64 - n) & 63));
}

SUITE_NOINLINE __u64 mix(__u64 h, __u64 v) {
    h ^= rotate(v * 0x9e3779b97f4a7c15ull, 31);
    return h * 0xbf58476d1ce4e5b9ull;
}

SUITE_NOINLINE __u64 clamp(__u64 h, __u64 limit) {
    return h > limit ? h - limit : h;
}

SUITE_PROGRAM(calls) {
    const __u64 *in = (const __u64 *)m->src;
    __u64 h = 0;
    for (__u32 i = 0; i < SUITE_CALL_WORDS; i++) {
        h = clamp(mix(h, in[i]), 0xf000000000000000ull);
    }
    return h ^ (h >> 32);
}
