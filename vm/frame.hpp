// SPDX-License-Identifier: MIT
// Zeroing a stack frame, shared by the engines (private to the VM component).
#pragma once

#include <bpftime/vm/isa.hpp>

#include <emmintrin.h>

namespace bpftime::vm {

/// Zeroes one 512-byte frame at a 16-byte aligned address. Plain 16-byte stores: a memset of
/// this size becomes `rep stos`, whose start-up cost was most of a short program's run.
inline void zero_frame(void *frame) {
    auto *p = static_cast<__m128i *>(frame);
    const __m128i zero = _mm_setzero_si128();
#pragma GCC unroll 32
    for (size_t i = 0; i < stack_frame_size / sizeof(__m128i); i++) {
        _mm_store_si128(p + i, zero);
    }
}

} // namespace bpftime::vm
