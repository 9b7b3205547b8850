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

} // namespace bpftime::vm
