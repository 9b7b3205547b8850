// SPDX-License-Identifier: MIT
// Assembly text (AT&T) that loads or stores ymm0-15 at a base register (16 x 32 bytes), for
// tests that set every ymm register around a call or a system call and read them back.
#pragma once

#define BPFTIME_TEST_YMM_LOAD1(base, at, n) "        vmovdqu " #at "(" base "), %ymm" #n "\n"
#define BPFTIME_TEST_YMM_STORE1(base, at, n) "        vmovdqu %ymm" #n ", " #at "(" base ")\n"

// clang-format off
/// ymm0-15 from [base, base + 512).
#define BPFTIME_TEST_YMM_LOAD(base) \
    BPFTIME_TEST_YMM_LOAD1(base, 0, 0) \
    BPFTIME_TEST_YMM_LOAD1(base, 32, 1) \
    BPFTIME_TEST_YMM_LOAD1(base, 64, 2) \
    BPFTIME_TEST_YMM_LOAD1(base, 96, 3) \
    BPFTIME_TEST_YMM_LOAD1(base, 128, 4) \
    BPFTIME_TEST_YMM_LOAD1(base, 160, 5) \
    BPFTIME_TEST_YMM_LOAD1(base, 192, 6) \
    BPFTIME_TEST_YMM_LOAD1(base, 224, 7) \
    BPFTIME_TEST_YMM_LOAD1(base, 256, 8) \
    BPFTIME_TEST_YMM_LOAD1(base, 288, 9) \
    BPFTIME_TEST_YMM_LOAD1(base, 320, 10) \
    BPFTIME_TEST_YMM_LOAD1(base, 352, 11) \
    BPFTIME_TEST_YMM_LOAD1(base, 384, 12) \
    BPFTIME_TEST_YMM_LOAD1(base, 416, 13) \
    BPFTIME_TEST_YMM_LOAD1(base, 448, 14) \
    BPFTIME_TEST_YMM_LOAD1(base, 480, 15)
/// ymm0-15 to [base, base + 512).
#define BPFTIME_TEST_YMM_STORE(base) \
    BPFTIME_TEST_YMM_STORE1(base, 0, 0) \
    BPFTIME_TEST_YMM_STORE1(base, 32, 1) \
    BPFTIME_TEST_YMM_STORE1(base, 64, 2) \
    BPFTIME_TEST_YMM_STORE1(base, 96, 3) \
    BPFTIME_TEST_YMM_STORE1(base, 128, 4) \
    BPFTIME_TEST_YMM_STORE1(base, 160, 5) \
    BPFTIME_TEST_YMM_STORE1(base, 192, 6) \
    BPFTIME_TEST_YMM_STORE1(base, 224, 7) \
    BPFTIME_TEST_YMM_STORE1(base, 256, 8) \
    BPFTIME_TEST_YMM_STORE1(base, 288, 9) \
    BPFTIME_TEST_YMM_STORE1(base, 320, 10) \
    BPFTIME_TEST_YMM_STORE1(base, 352, 11) \
    BPFTIME_TEST_YMM_STORE1(base, 384, 12) \
    BPFTIME_TEST_YMM_STORE1(base, 416, 13) \
    BPFTIME_TEST_YMM_STORE1(base, 448, 14) \
    BPFTIME_TEST_YMM_STORE1(base, 480, 15)
// clang-format on
