// SPDX-License-Identifier: MIT
// The JIT engine (private to the VM component): eBPF to LLVM IR, optimised and compiled to
// x86-64 by LLVM's ORC JIT. Its stages, each in its own file under vm/jit/:
// - plan: the control flow of each eBPF function, and compare trees recovered as switches;
// - translator (translator.cpp, translate_memory.cpp, map_lookup.cpp): the LLVM module;
// - passes: the pass pipelines of the two tiers and the JIT's own passes over its checks;
// - host: the process's LLJIT and code generators;
// - runtime: the state and the functions generated code shares with the runtime;
// - engine: compiles, loads and runs a program's code (make_jit).
#pragma once

#include <bpftime/vm/vm.hpp>

namespace bpftime::vm {

/// Runs the function set by set_engine_thread_start, if any; engines' own threads call it
/// first.
void engine_thread_started();

/// Compiles a loaded program. Fails with a message when LLVM cannot set up or compile.
result<std::unique_ptr<engine>> make_jit(const program &prog, const engine_options &opts);

/// runs_keep_vector_state for an engine make_jit made.
bool jit_runs_keep_vector_state(const engine &e);

} // namespace bpftime::vm
