// SPDX-License-Identifier: MIT
// The process's LLJIT and its two code generators, one per tier.
#pragma once

#include <bpftime/result.hpp>

#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/Support/Error.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Target/TargetMachine.h>

#include <memory>
#include <mutex>
#include <string>

namespace bpftime::vm::jit {

// The text of an LLVM error.
std::string llvm_message(llvm::Error err);

// One LLJIT per process: setting LLVM up costs milliseconds, compiling one program much less.
class jit_host {
public:
    // The process's host, set up by the first call; an error when LLVM cannot start.
    static result<jit_host *> get();

    llvm::orc::LLJIT &jit() { return *jit_; }

    /// Compiles a module to an object file with the fast or the optimising code generator.
    llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> emit(llvm::Module &mod, bool optimised);

    /// Has the functions the module defines compiled for the general-purpose registers only:
    /// the host's features without SSE (and so without every extension built on it), x87 and
    /// MMX.
    void general_registers_only(llvm::Module &mod) const;

private:
    struct code_generator {
        std::unique_ptr<llvm::TargetMachine> tm;
        std::mutex mu;
    };

    jit_host() = default;

    // Sets LLVM up; an error message or "".
    std::string init();

    std::unique_ptr<llvm::orc::LLJIT> jit_;
    code_generator fast_;
    code_generator optimising_;
};

} // namespace bpftime::vm::jit
