// SPDX-License-Identifier: MIT
// strcmp as a byte loop: two equal 4 KiB strings, and two that differ at the eighth byte.
#include "suite.h"

// The position of the first difference (or NUL) and the difference of the bytes there.
SUITE_INLINE __u64 compare(const __u8 *a, const __u8 *b) {
    __u32 i = 0;
    // Bounded by the buffer so the kernel's verifier sees the loop end.
    for (; i < SUITE_STRING_LEN - 1; i++) {
        if (a[i] != b[i] || a[i] == 0) {
            break;
        }
    }
    return (__u64)i << 8 | (__u8)(a[i] - b[i]);
}

SUITE_PROGRAM(strcmp_equal) {
    return compare(m->str_a, m->str_b);
}

SUITE_PROGRAM(strcmp_mismatch) {
    return compare(m->str_a, m->str_c);
}
