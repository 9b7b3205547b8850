// SPDX-License-Identifier: MIT
// The process's LLJIT: LLVM's options, the host's target machines and the linker of the code.
#include "host.hpp"

#include "passes.hpp"

#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/IR/Module.h>
#include <llvm/Support/CommandLine.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>

#include <utility>

namespace bpftime::vm::jit {

std::string llvm_message(llvm::Error err) {
    std::string text;
    llvm::raw_string_ostream os(text);
    os << err;
    return os.str();
}

result<jit_host *> jit_host::get() {
    static std::once_flag once;
    static jit_host *host = nullptr;
    static std::string failure;
    std::call_once(once, [] {
        auto h = std::unique_ptr<jit_host>(new jit_host());
        if (auto e = h->init(); !e.empty()) {
            failure = std::move(e);
            return;
        }
        host = h.release(); // lives as long as the process, like the code it owns
    });
    if (host == nullptr) {
        return make_error(ENOTSUP, "the jit cannot start: " + failure);
    }
    return host;
}

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> jit_host::emit(llvm::Module &mod,
                                                                   bool optimised) {
    code_generator &g = optimised ? optimising_ : fast_;
    std::lock_guard lock(g.mu); // a TargetMachine compiles one module at a time
    if (optimised) {
        optimise(mod, *g.tm);
    } else {
        promote_registers(mod, *g.tm);
    }
    return llvm::orc::SimpleCompiler(*g.tm)(mod);
}

void jit_host::general_registers_only(llvm::Module &mod) const {
    // Later entries of a feature list win; turning SSE off turns off what implies it.
    const std::string features = fast_.tm->getTargetFeatureString().str() + ",-x87,-mmx,-sse";
    for (llvm::Function &f : mod) {
        if (!f.isDeclaration()) {
            f.addFnAttr("target-features", features);
        }
    }
}

std::string jit_host::init() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    // Loop unswitching copies a loop whose checks hoist_checks proved (the copy runs
    // without them) only up to a size, 50 by default: a loop around a 64-way switch costs
    // about 400. The pass takes its limit from LLVM's command-line options only.
    // BPFTIME_LLVM_OPTIONS adds LLVM options for looking at what the optimiser does, for
    // example "-pass-remarks-missed=loop-vectorize".
    // X86's domain reassignment (general-purpose to mask-register instructions, on AVX-512
    // hosts) grows with the square of a function's size, so it would dominate the code
    // generation time of large programs, for no gain on this code.
    // Innermost loops start on a 64-byte line: a short loop (strcmp's is eight instructions)
    // that straddles two lines costs a cycle more per iteration on some cores, so where it
    // lands would otherwise depend on the size of unrelated code before it.
    // Loops are unrolled at most twice, and only short ones: the unroller's budget for this
    // host's cores (their micro-op buffers) unrolls a byte loop twenty times and more, whose
    // exits then take more time in a short run than the branches the unrolling saves, and
    // doubles loops around a large switch, for a third more compile time.
    const std::string threshold = "-unswitch-threshold=" + std::to_string(unswitch_threshold);
    const char *argv[] = {"bpftime",
                          threshold.c_str(),
                          "-disable-x86-domain-reassignment",
                          "-x86-experimental-pref-innermost-loop-alignment=6",
                          "-unroll-max-count=2",
                          "-unroll-partial-threshold=64"};
    std::string why;
    llvm::raw_string_ostream errs(why);
    if (!llvm::cl::ParseCommandLineOptions(6, argv, "", &errs, "BPFTIME_LLVM_OPTIONS")) {
        return "LLVM options (BPFTIME_LLVM_OPTIONS): " + errs.str();
    }
    auto jtmb = llvm::orc::JITTargetMachineBuilder::detectHost();
    if (!jtmb) {
        return llvm_message(jtmb.takeError());
    }
    for (auto [g, level] : {std::pair{&fast_, llvm::CodeGenOpt::None},
                            std::pair{&optimising_, llvm::CodeGenOpt::Aggressive}}) {
        jtmb->setCodeGenOptLevel(level);
        auto tm = jtmb->createTargetMachine();
        if (!tm) {
            return llvm_message(tm.takeError());
        }
        g->tm = std::move(*tm);
    }
    // The LLJIT links and loads the objects; code generation happens in emit().
    auto jit = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(*jtmb).create();
    if (!jit) {
        return llvm_message(jit.takeError());
    }
    jit_ = std::move(*jit);
    // Code may call memset that LLVM emits for zeroing a frame.
    auto gen = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
        jit_->getDataLayout().getGlobalPrefix());
    if (!gen) {
        return llvm_message(gen.takeError());
    }
    jit_->getMainJITDylib().addGenerator(std::move(*gen));
    return {};
}

} // namespace bpftime::vm::jit
