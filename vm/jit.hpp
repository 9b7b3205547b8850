// SPDX-License-Identifier: MIT
// The JIT engine (private to the VM component): eBPF to LLVM IR, optimised and compiled to
// x86-64 by LLVM's ORC JIT.
#pragma once

#include <bpftime/vm/vm.hpp>

namespace bpftime::vm {

/// Compiles a loaded program. Fails with a message when LLVM cannot set up or compile.
result<std::unique_ptr<engine>> make_jit(const program &prog, const engine_options &opts);

} // namespace bpftime::vm
