// SPDX-License-Identifier: MIT
// Whether an engine's runs keep the vector state, for hosts that call its direct entry where
// vector registers are live.
#pragma once

#include <bpftime/vm/vm.hpp>

namespace bpftime::vm {

/// Whether every run through e's direct entry (engine::run_direct) leaves every vector, x87 and
/// MMX register, the MXCSR and the x87 control word as it found them, so that a host may call
/// it without saving them. True for the JIT's code of a program without loops that calls no
/// helper the JIT does not inline (a map lookup in an array is inlined): that code is compiled
/// for the general-purpose registers only, and its slow paths into the C++ runtime (a thread's
/// first run, a run inside a run, a fault) save and restore the whole state. False for the
/// interpreter and for other programs; fixed for the engine's life (the optimised tier keeps
/// it).
bool runs_keep_vector_state(const engine &e);

} // namespace bpftime::vm
