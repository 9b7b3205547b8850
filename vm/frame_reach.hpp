// SPDX-License-Identifier: MIT
// Private to the VM component: how much of the entry frame a program can reach.
#pragma once

#include <bpftime/vm/isa.hpp>

#include <cstddef>
#include <span>

namespace bpftime::vm {

/// The bytes at the top of the entry frame that a validated program can access, directly or
/// through helpers: a multiple of 16 from 16 to stack_frame_size (the whole frame whenever the
/// program's use of frame pointers cannot be followed, or it makes local calls).
size_t frame_reach(std::span<const ebpf_inst> insns);

/// The 8-byte words of the reachable part of the entry frame (reach bytes, from frame_reach)
/// that a run must zero: those with a byte the program may read, itself or through a helper,
/// before writing it on some path from its entry. Bit w stands for the bytes
/// [-(w + 1) * 8, -w * 8) from the frame's top. Every word of the reach when the program's use
/// of frame pointers cannot be followed (as frame_reach says) or it makes local calls.
uint64_t frame_words_to_zero(std::span<const ebpf_inst> insns, size_t reach);

} // namespace bpftime::vm
