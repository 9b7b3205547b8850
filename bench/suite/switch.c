// SPDX-License-Identifier: MIT
// A 64-case switch in a loop over input bytes. The cases do different operations, so clang
// cannot turn the switch into a table of values: natively it becomes a jump table, for BPF
// (which has no indirect jumps) a tree of compares. The kernel's verifier walks each of the 64
// cases for every input byte, about 960 instructions per byte: 1024 bytes came within 2% of
// its million-instruction limit, 512 leave room.
//
// Each run reads the next of the input's 128 windows of 512 bytes. With the same 512 bytes in
// every run, the branch predictor learned the sequence of the switch's targets, so that the
// figures measured how well it did for each code layout (native code of the same source took
// from 950 to 3850 ns in two builds) rather than the code; 64 KiB of targets it cannot learn.
#include "suite.h"

#define SUITE_SWITCH_WINDOWS (SUITE_HALF / SUITE_SWITCH_COUNT)

// Four cases n..n+3, each a different operation on the accumulator with constants from k.
#define SUITE_CASES(n, k)                                                                          \
    case n:                                                                                        \
        acc += (k) + x;                                                                            \
        break;                                                                                     \
    case n + 1:                                                                                    \
        acc ^= acc >> ((k) % 29 + 1);                                                              \
        break;                                                                                     \
    case n + 2:                                                                                    \
        acc = acc * ((k) | 1) + n;                                                                 \
        break;                                                                                     \
    case n + 3:                                                                                    \
        acc -= (__u64)x << ((k) % 13);                                                             \
        break;

SUITE_PROGRAM(big_switch) {
    __u64 acc = 0x9e3779b97f4a7c15ull;
    __u32 round = m->switch_round;
    m->switch_round = round + 1;
    const __u8 *in = m->src + (round % SUITE_SWITCH_WINDOWS) * SUITE_SWITCH_COUNT;
    for (__u32 i = 0; i < SUITE_SWITCH_COUNT; i++) {
        __u64 x = in[i];
        switch (x & 63) {
            SUITE_CASES(0, 0x1234567)
            SUITE_CASES(4, 0x2345671)
            SUITE_CASES(8, 0x3456712)
            SUITE_CASES(12, 0x4567123)
            SUITE_CASES(16, 0x5671234)
            SUITE_CASES(20, 0x6712345)
            SUITE_CASES(24, 0x7123456)
            SUITE_CASES(28, 0x1357913)
            SUITE_CASES(32, 0x2468024)
            SUITE_CASES(36, 0x3579135)
            SUITE_CASES(40, 0x4680246)
            SUITE_CASES(44, 0x5791357)
            SUITE_CASES(48, 0x6802468)
            SUITE_CASES(52, 0x7913579)
            SUITE_CASES(56, 0x1a2b3c4)
            SUITE_CASES(60, 0x2b3c4d5)
        }
    }
    return acc ^ (acc >> 32);
}
