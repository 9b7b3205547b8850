// SPDX-License-Identifier: MIT
// Fuzz input bytes to a valid program and what it runs with.
//
// The bytes drive a generator of valid programs rather than being instructions themselves, so
// nearly every input loads and the engines spend their time on semantics instead of on the
// validator's refusals. Programs have subprograms (one of them perhaps recursive), bounded and
// unbounded loops, if/else, compare trees in the shape of clang's switch, loads, stores and
// atomics through pointers into every memory a program can reach (now and then out of bounds
// on purpose), pointer spills, and calls to the helpers of host.hpp, directly and by callx.
//
// The generator tracks what every register holds (nothing, a number, or a pointer into the
// stack, the input memory, the helper buffer or the caller region, with its offset) and never
// lets a pointer's value reach r0, memory, a comparison or a helper that does arithmetic: two
// engines have their stacks at different addresses, so such a program would differ between
// them without a bug. It also treats r1-r5 as clobbered by calls and r0, r6-r9 as unset on
// entry to a subprogram, as the kernel's verifier does, since engines need not agree there.
//
// The same bytes always give the same case (saved corpora keep their meaning); after the
// input's bytes run out, bytes derived from a hash of the input take over, so short inputs
// still make whole programs.
#pragma once

#include "host.hpp"

#include <bpftime/vm/isa.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bpftime::fuzz {

/// Parts of programs the generator can leave out, to fuzz past a known difference between
/// engines.
struct generator_options {
    /// Stack pointers handed to helpers from subprograms.
    bool helper_stack_in_call = true;
};

/// What one run of a program gets. The runner copies buf into helper_buf and extra into
/// extra_buf before the run, and passes extra_buf as a region (writable as extra_writable).
struct run_inputs {
    std::vector<uint8_t> mem; ///< the input memory (the program's r1), perhaps empty
    std::array<uint8_t, helper_buf_size> buf{};
    std::array<uint8_t, extra_size> extra{};
    bool mem_writable = true;   ///< run_options::mem_writable
    bool extra_writable = true; ///< the caller region's writable flag
    uint64_t budget = 20000;    ///< run_options::instruction_budget
};

/// A program and its inputs, from fuzz input bytes.
struct generated_case {
    /// The input's first byte. Bits 0-2 choose how often the program faults on purpose (never
    /// for half the values), bits 3-5 which memory is writable; the runner may use bits 6-7.
    uint8_t flags = 0;
    /// A number from the input, for the runner's choices (tiers, further memory contents).
    uint32_t seed = 0;
    run_inputs inputs;
    std::vector<vm::ebpf_inst> program; ///< valid for program::load with fuzz_helpers()
};

/// The case that data stands for; any bytes, none included, make one.
generated_case generate_case(const uint8_t *data, size_t size,
                             const generator_options &options = {});

/// Fills bytes (a container of uint8_t) with pseudo-random bytes from seed (xorshift32), so
/// that a buffer costs the input four bytes.
template <class C>
void fill_bytes(C &bytes, uint32_t seed) {
    uint32_t x = seed | 1;
    for (uint8_t &b : bytes) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b = static_cast<uint8_t>(x);
    }
}

} // namespace bpftime::fuzz
