// SPDX-License-Identifier: MIT
// The host side of generated programs: the helpers they call, the buffer one helper hands out
// parts of, and the caller region, a memory region every run is given. Both buffers are
// globals, so their addresses (which programs may use as numbers) are the same for every
// engine, unlike the stack's.
#pragma once

#include <bpftime/vm/vm.hpp>

#include <cstdint>

namespace bpftime::fuzz {

/// Bytes in helper_buf.
inline constexpr int64_t helper_buf_size = 256;
/// Bytes in extra_buf.
inline constexpr int64_t extra_size = 64;

/// The buffer id_region hands out parts of; the runner sets its bytes before each run.
extern uint8_t helper_buf[helper_buf_size];
/// The caller region: the runner passes it to each run in run_options::regions, and programs
/// load its address as a constant.
extern uint8_t extra_buf[extra_size];

/// A number from all five arguments.
inline constexpr int32_t id_mix = 1;
/// r1 = offset into helper_buf, r2 = length, r3 & 1 = writable: makes that part of the buffer a
/// region of the run and returns its address.
inline constexpr int32_t id_region = 2;
/// Fails the run when the low byte of r1 is 0x42, else returns r1 * 3 + 1.
inline constexpr int32_t id_maybe_fail = 3;
/// r1 = pointer, r2 = length: a hash of the bytes, or -EFAULT when the program may not read them.
inline constexpr int32_t id_sum = 4;
/// r1 = pointer, r2 = length, r3 = byte: 0 when written, 1 when the program may not write there.
inline constexpr int32_t id_fill = 6;
/// Not registered: a callx to it must fault.
inline constexpr int32_t id_unknown = 77;

/// The registry with every helper above but id_unknown; programs are loaded with it.
const vm::helper_registry &fuzz_helpers();

} // namespace bpftime::fuzz
