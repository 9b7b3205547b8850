// SPDX-License-Identifier: MIT
// The vector unit's detection, and bpftime_keep_vector_state: the call that keeps the whole
// vector state around a C++ function for the wrappers BPFTIME_KEEPING_VECTOR_STATE defines.
#include <bpftime/cpu/vector_state.hpp>

#include <cpuid.h>

#include <algorithm>

// What bpftime_keep_vector_state saves, set with the detection: the components (edx:eax), the
// bytes of the area and how (0: FXSAVE, 1: XSAVE, 2: XSAVEC).
extern "C" {
__attribute__((visibility("hidden"))) uint64_t bpftime_vector_save_mask = 0;
__attribute__((visibility("hidden"))) uint64_t bpftime_vector_save_area = 512;
__attribute__((visibility("hidden"))) uint64_t bpftime_vector_save_how = 0;
}

namespace bpftime::cpu {
namespace {

uint64_t read_xcr0() {
    uint32_t lo = 0, hi = 0;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t{hi} << 32) | lo;
}

vector_unit detect_vector_unit() {
    vector_unit v;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return v;
    const bool osxsave = (c & (1u << 27)) != 0;
    const bool cpu_avx = (c & (1u << 28)) != 0;
    if (!osxsave)
        return v;
    v.xsave = true;
    const uint64_t xcr0 = read_xcr0();
    // x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM: the state C and C++ code can touch. PKRU and
    // AMX tiles are left out: compilers never use them implicitly.
    v.mask = xcr0 & 0xE7;
    v.avx = cpu_avx && (xcr0 & 0x6) == 0x6;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
        v.avx512 = v.avx && (b & (1u << 16)) != 0 && (xcr0 & 0xE0) == 0xE0;
    if (__get_cpuid_count(0xD, 1, &a, &b, &c, &d))
        v.xsavec = (a & (1u << 1)) != 0;
    // The end of the last component of mask in the standard form: at least what the compacted
    // form needs. Components XCR0 enables outside mask (AMX tiles: 8 KiB) take no stack.
    v.area = 512 + 64;
    for (unsigned i = 2; i < 64; ++i)
        if ((v.mask >> i) & 1 && __get_cpuid_count(0xD, i, &a, &b, &c, &d))
            v.area = std::max(v.area, b + a); // offset + size
    return v;
}

// Detected when the library is loaded, before any code can call a wrapper.
[[gnu::constructor]] void detect_at_load() {
    (void)vectors();
}

} // namespace

const vector_unit &vectors() {
    static const vector_unit v = [] {
        vector_unit u = detect_vector_unit();
        bpftime_vector_save_mask = u.mask;
        bpftime_vector_save_area = u.area;
        bpftime_vector_save_how = u.xsave ? (u.xsavec ? 2 : 1) : 0;
        return u;
    }();
    return v;
}

} // namespace bpftime::cpu

// Called by a wrapper with the target in r11 and its arguments in rdi, rsi, rdx, rcx, r8 and r9:
// saves the state in an area on the stack (64-byte aligned, its XSAVE header zeroed: XRSTOR
// refuses one whose bytes 8-63 are not, and XSAVE writes only the fields it uses), calls the
// target, restores the state and returns the target's rax and rdx. rbx and r12 (callee-saved)
// hold the target and rdx across the save, then the result across the restore.
asm(R"(
        .text
        .p2align 4
        .globl bpftime_keep_vector_state
        .hidden bpftime_keep_vector_state
        .type bpftime_keep_vector_state, @function
bpftime_keep_vector_state:
        pushq %rbp
        movq %rsp, %rbp
        pushq %rbx
        pushq %r12
        movq %r11, %rbx
        subq bpftime_vector_save_area(%rip), %rsp
        andq $-64, %rsp
        movq %rdx, %r12
        cmpq $0, bpftime_vector_save_how(%rip)
        je 3f
        xorl %eax, %eax
        movq %rax, 520(%rsp)
        movq %rax, 528(%rsp)
        movq %rax, 536(%rsp)
        movq %rax, 544(%rsp)
        movq %rax, 552(%rsp)
        movq %rax, 560(%rsp)
        movq %rax, 568(%rsp)
        movl bpftime_vector_save_mask(%rip), %eax
        movl bpftime_vector_save_mask+4(%rip), %edx
        cmpq $2, bpftime_vector_save_how(%rip)
        jne 1f
        xsavec64 (%rsp)
        jmp 4f
1:      xsave64 (%rsp)
        jmp 4f
3:      fxsave64 (%rsp)
4:      movq %r12, %rdx
        cld
        callq *%rbx
        movq %rax, %rbx
        movq %rdx, %r12
        cmpq $0, bpftime_vector_save_how(%rip)
        je 5f
        movl bpftime_vector_save_mask(%rip), %eax
        movl bpftime_vector_save_mask+4(%rip), %edx
        xrstor64 (%rsp)
        jmp 6f
5:      fxrstor64 (%rsp)
6:      movq %rbx, %rax
        movq %r12, %rdx
        leaq -16(%rbp), %rsp
        popq %r12
        popq %rbx
        popq %rbp
        ret
        .size bpftime_keep_vector_state, . - bpftime_keep_vector_state
)");
