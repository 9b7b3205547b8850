// SPDX-License-Identifier: MIT
// The vector state of x86-64 code (x87, SSE, AVX, AVX-512): what this CPU and kernel enable, and
// calls that keep all of it, for code that calls C++ from a place where every register is live
// without saving the vector registers itself (stubs, and code that uses none of them).
#pragma once

#include <cstdint>

namespace bpftime::cpu {

/// What the CPU and the kernel enable of the vector state, read once.
struct vector_unit {
    bool avx = false;    ///< ymm: XCR0 enables SSE and AVX state
    bool avx512 = false; ///< zmm and the mask registers: XCR0 enables their three components
    bool xsave = false;  ///< XSAVE/XRSTOR usable (the kernel set CR4.OSXSAVE)
    bool xsavec = false; ///< the compacting XSAVEC, which skips components in their initial state
    uint64_t mask = 0;   ///< the components a full save takes: x87, SSE, AVX, AVX-512
    uint32_t area = 512; ///< bytes of a save area for them (FXSAVE's 512 without XSAVE)
};

/// This machine's vector unit (detected on the first call; calls that keep the vector state
/// need it detected, which loading the library does).
const vector_unit &vectors();

} // namespace bpftime::cpu

/// Defines `wrapper`, a function called as `target` is (at most six integer or pointer
/// arguments, none on the stack; an integer, pointer or two-register result) that calls target
/// with every vector, x87 and MMX register, the MXCSR and the x87 control word kept: a full
/// XSAVE (XSAVEC where there is one; FXSAVE without XSAVE) on the stack around the call. It is
/// for slow paths out of code that keeps the vector state without saving it (a save costs tens
/// of nanoseconds). target is any function (a C++ one too); wrapper is a symbol of C linkage:
/// declare it `extern "C"`, with target's signature where the types are C's, else as
/// `void wrapper()` to take its address for generated code. Use at namespace scope.
#define BPFTIME_KEEPING_VECTOR_STATE(wrapper, target)                                              \
    extern "C" decltype(&target) const wrapper##_target                                            \
        __attribute__((visibility("hidden"), used)) = &target;                                     \
    asm(".text\n.p2align 4\n.globl " #wrapper "\n.hidden " #wrapper "\n.type " #wrapper            \
        ", @function\n" #wrapper ":\n"                                                             \
        "  movq " #wrapper "_target(%rip), %r11\n"                                                 \
        "  jmp bpftime_keep_vector_state\n"                                                        \
        ".size " #wrapper ", . - " #wrapper "\n")
