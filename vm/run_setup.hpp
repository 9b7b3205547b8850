// SPDX-License-Identifier: MIT
// What both engines share for one run (private to the VM component): the stack and run
// context they set up, and the text of the faults they report.
#pragma once

#include "text.hpp"

#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/vm.hpp>

#include <emmintrin.h>

#include <algorithm>
#include <cstdint>

namespace bpftime::vm {

/// Zeroes bytes (a multiple of 16) at a 16-byte aligned address with plain 16-byte stores. A
/// run zeroes a few lines: `rep stos` (a memset of a frame) or a call to memset costs more to
/// start than the stores themselves.
inline void zero_lines(void *at, size_t bytes) {
    auto *p = static_cast<__m128i *>(at);
    const __m128i zero = _mm_setzero_si128();
    for (size_t i = 0; i < bytes / sizeof(__m128i); i++) {
        _mm_store_si128(p + i, zero);
        asm("" ::: "memory"); // keeps the compiler from making the loop a call to memset
    }
}

/// Zeroes one whole frame at a 16-byte aligned address.
inline void zero_frame(void *frame) {
    zero_lines(frame, stack_frame_size);
}

/// Every conditional jump's condition, as X(operation, 64-bit condition, 32-bit condition) on a
/// (the destination register) and b (the source register or the immediate), unsigned 64- or
/// 32-bit values of the instruction's width: the interpreter's semantics, which the JIT's
/// recovery of compare trees also evaluates.
#define BPFTIME_JUMP_CONDITIONS(X)                                                                 \
    X(jmp_jeq, a == b, a == b)                                                                     \
    X(jmp_jgt, a > b, a > b)                                                                       \
    X(jmp_jge, a >= b, a >= b)                                                                     \
    X(jmp_jset, (a & b) != 0, (a & b) != 0)                                                        \
    X(jmp_jne, a != b, a != b)                                                                     \
    X(jmp_jsgt, static_cast<int64_t>(a) > static_cast<int64_t>(b),                                 \
      static_cast<int32_t>(a) > static_cast<int32_t>(b))                                           \
    X(jmp_jsge, static_cast<int64_t>(a) >= static_cast<int64_t>(b),                                \
      static_cast<int32_t>(a) >= static_cast<int32_t>(b))                                          \
    X(jmp_jlt, a < b, a < b)                                                                       \
    X(jmp_jle, a <= b, a <= b)                                                                     \
    X(jmp_jslt, static_cast<int64_t>(a) < static_cast<int64_t>(b),                                 \
      static_cast<int32_t>(a) < static_cast<int32_t>(b))                                           \
    X(jmp_jsle, static_cast<int64_t>(a) <= static_cast<int64_t>(b),                                \
      static_cast<int32_t>(a) <= static_cast<int32_t>(b))

/// The memory of one run: a 4 KiB stack, the input memory as a region, and the run context
/// over both. The stack region is the part of the entry frame the program can reach
/// (program::entry_frame_reach), zeroed, so no run sees what another left behind.
struct run_setup {
    run_setup(const program &prog, void *mem, uint64_t mem_len, const run_options &opts)
        : top(reinterpret_cast<uint64_t>(&stack[0]) + stack_size),
          input{reinterpret_cast<uint64_t>(mem), mem == nullptr ? 0 : mem_len, opts.mem_writable},
          rc({top - prog.entry_frame_reach(), prog.entry_frame_reach(), true}, input,
             prog.regions(), opts.regions, opts.info) {
        zero_lines(&stack[stack_size - prog.entry_frame_reach()], prog.entry_frame_reach());
    }
    run_setup(const run_setup &) = delete;
    run_setup &operator=(const run_setup &) = delete;

    alignas(16) uint8_t stack[stack_size];
    uint64_t top; ///< one past the entry frame: r10 on entry
    memory_region input;
    run_context rc;
};

// The faults both engines report, word for word.

/// "instruction N (text): why" with the error code.
inline error fault_at(std::span<const ebpf_inst> insns, size_t pc, int code,
                      const std::string &why) {
    return make_error(code, "instruction " + std::to_string(pc) + " (" +
                                disassemble_one(insns, pc) + "): " + why);
}

inline std::string outside_message(bool write, uint64_t n, uint64_t addr) {
    return std::string(write ? "write" : "read") + " of " + std::to_string(n) + " bytes at " +
           hex(addr) + " is outside the memory the program may access";
}

inline std::string misaligned_message(uint64_t addr, uint64_t n) {
    return "atomic access at " + hex(addr) + " is not " + std::to_string(n) + "-byte aligned";
}

inline std::string budget_message(uint64_t budget) {
    return "the instruction budget of " + std::to_string(budget) + " is exhausted";
}

inline std::string call_depth_message() {
    return "call depth exceeds " + std::to_string(max_call_depth) + " frames";
}

inline std::string unknown_helper_message(uint64_t id) {
    return "callx names unknown helper id " + std::to_string(id);
}

/// The budget a run's budget fault names (run_options::named_budget).
inline uint64_t named_budget(const run_options &opts) {
    return opts.named_budget != 0 ? opts.named_budget : opts.instruction_budget;
}

/// The error of a run a helper stopped at the call at pc: a fault inside a callback as it is
/// (it names the callback's instruction), anything else after the call's instruction.
inline error helper_failure(std::span<const ebpf_inst> insns, size_t pc, const run_context &rc) {
    if (rc.failure_is_positioned()) {
        return make_error(rc.failure_code(), rc.failure());
    }
    return fault_at(insns, pc, rc.failure_code(), rc.failure());
}

/// Runs the tail call a helper asked for (run_context::tail_call) after the program that asked
/// stopped having executed `used` instructions: the target with the same input and regions, the
/// rest of the budget and the chain's count of tail calls. Its result is the run's.
inline result<uint64_t> run_tail_call(const run_context &rc, void *mem, uint64_t mem_len,
                                      const run_options &opts, uint64_t used) {
    run_options next = opts;
    next.instruction_budget = opts.instruction_budget - std::min(used, opts.instruction_budget);
    next.named_budget = named_budget(opts);
    next.tail_calls = rc.tail_calls();
    uint64_t executed = 0;
    next.executed = &executed;
    auto r = rc.tail_target()->run(mem, mem_len, next);
    if (r && opts.executed != nullptr) {
        *opts.executed = used + executed;
    }
    return r;
}

} // namespace bpftime::vm
