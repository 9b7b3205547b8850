// SPDX-License-Identifier: MIT
// The JIT: every eBPF function (the entry and each local-call target) becomes an LLVM function
// whose registers are SSA values; a tier's passes optimise the module and ORC loads the code.
//
// Semantics are the interpreter's, instruction for instruction:
// - Loads and stores are checked (unless the engine is unchecked) against, in order, the near
//   cache (a region set on entry and by helpers, loop-invariant), the far cache (the region
//   that allowed the last slow-path access), the current frame and its callers' frames, then
//   the run's regions through a call into the runtime that refills the far cache. Accesses
//   through r10 + a constant inside the current frame need no check at all.
// - The instruction budget is a counter that each basic block decrements by its length; it is
//   tested at loop heads, local calls and exits, so a runaway loop stops within one iteration
//   of the interpreter's stop. A run that completes reports the exact count.
// - Division and modulo never trap; shifts mask their amount; local calls zero their frame.
// - A fault records its cause in the run's state and every function returns at once.
// Code pages are written before they are made executable and never both (ORC's memory
// managers map them read-write, then read-execute).
#include "jit.hpp"
#include "run_setup.hpp"

#include <llvm/Analysis/LoopInfo.h>
#include <llvm/Analysis/ScalarEvolution.h>
#include <llvm/Analysis/ScalarEvolutionExpressions.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/Dominators.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/MDBuilder.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/PatternMatch.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/CommandLine.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Transforms/IPO/AlwaysInliner.h>
#include <llvm/Transforms/InstCombine/InstCombine.h>
#include <llvm/Transforms/Scalar/EarlyCSE.h>
#include <llvm/Transforms/Scalar/GVN.h>
#include <llvm/Transforms/Scalar/IndVarSimplify.h>
#include <llvm/Transforms/Scalar/LICM.h>
#include <llvm/Transforms/Scalar/LoopPassManager.h>
#include <llvm/Transforms/Scalar/LoopRotation.h>
#include <llvm/Transforms/Scalar/SROA.h>
#include <llvm/Transforms/Scalar/SimpleLoopUnswitch.h>
#include <llvm/Transforms/Scalar/SimplifyCFG.h>
#include <llvm/Transforms/Utils/LoopSimplify.h>
#include <llvm/Transforms/Utils/ScalarEvolutionExpander.h>
#include <llvm/Transforms/Vectorize/LoopVectorize.h>

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

namespace bpftime::vm {
namespace {

// What the generated code shares with the runtime, by byte offset (offsetof).
// Every field is set by jit_engine::run before the code runs; none has a default, so a run does
// not zero the whole struct first (GCC did that with rep stos, a measurable share of a short
// run).
struct jit_state {
    // The read cache [read_lo, read_lo + read_span) is a region the program may read, the write
    // cache one it may write. Both always hold a region of at least max_access bytes (at worst
    // the entry frame), so span - n never wraps and one compare decides.
    uint64_t read_lo;
    uint64_t read_span;
    uint64_t write_lo;
    uint64_t write_span;
    int64_t budget;     // instructions left; below zero means exhausted
    uint64_t stack_top; // one past the entry frame
    run_context *rc;
    const bool *helper_failed;
    // run_context::stack, which helpers check pointers against (run_context is not standard
    // layout, so generated code cannot find it through rc).
    memory_region *rc_stack;
    const program *prog;
    memory_region handed; // the last region a helper handed out (run_context's sink)
    uint64_t fault;       // a fault_kind, 0 while the run is going
    // Where and what the fault was; meaningful only once fault is set.
    uint64_t fault_pc;
    uint64_t fault_addr;
    uint64_t fault_len;
    uint64_t fault_write;
};

// The widest single load or store.
constexpr uint64_t max_access = 8;

enum fault_kind : uint64_t {
    no_fault,
    fault_access,
    fault_misaligned,
    fault_exhausted,
    fault_depth,
    fault_unknown_helper,
    fault_helper_failed,
};

// The runtime functions generated code calls (by absolute address).

void rt_fault(jit_state *s, uint64_t kind, uint64_t pc, uint64_t addr, uint64_t len) {
    s->fault = kind;
    s->fault_pc = pc;
    s->fault_addr = addr;
    s->fault_len = len;
}

// The slow path of an access check: 1 when a region allows it (the far cache is refilled),
// else 0 with the fault recorded.
uint64_t rt_check(jit_state *s, uint64_t addr, uint64_t len, uint64_t write, uint64_t pc) {
    if (const memory_region *r = s->rc->find_region(addr, len, write != 0)) {
        if (r->size >= max_access) {
            s->read_lo = r->start;
            s->read_span = r->size;
            if (r->writable) {
                s->write_lo = r->start;
                s->write_span = r->size;
            }
        }
        return 1;
    }
    rt_fault(s, fault_access, pc, addr, len);
    s->fault_write = write;
    return 0;
}

uint64_t rt_callx(jit_state *s, uint64_t id, uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                  uint64_t r5, uint64_t pc) {
    const helper_info *h = s->prog->helpers().find(static_cast<uint32_t>(id));
    if (h == nullptr) {
        rt_fault(s, fault_unknown_helper, pc, id, 0);
        return 0;
    }
    uint64_t r0 = h->fn(r1, r2, r3, r4, r5, s->rc);
    if (*s->helper_failed) {
        rt_fault(s, fault_helper_failed, pc, 0, 0);
    }
    return r0;
}

template <class F>
uint64_t address_of(F *fn) {
    return reinterpret_cast<uint64_t>(fn);
}

std::string llvm_message(llvm::Error err) {
    std::string text;
    llvm::raw_string_ostream os(text);
    os << err;
    return os.str();
}

// Metadata kinds that mark the compares of access checks (true: the access is allowed) and of
// budget checks (true: the budget is exhausted).
constexpr const char *check_kind = "bpftime.check";
constexpr const char *budget_kind = "bpftime.budget";

// Loop versioning of the checks in innermost loops whose trip count SCEV can bound (its
// maximum backedge count). A condition computed once in the loop's preheader, `all_hold`,
// implies that every check of the loop passes on every iteration the loop can make:
// - an access check `x <u bound` (or `<=u`) whose x moves by a constant step per iteration and
//   whose bound does not change in the loop holds throughout when it holds at the first and at
//   the last iteration and x does not wrap in between;
// - a budget check `budget <s 0` cannot fire when the budget at the loop's entry covers
//   (iterations + 1) times the sum of every decrement on the loop's cycle (each block of an
//   innermost loop runs at most once per iteration).
// Each access check becomes `all_hold | check` and each budget check `!all_hold & check`, which
// changes nothing; non-trivial loop unswitching then splits the loop on all_hold: one copy
// without the checks, the original for when one may fail. The budget is still counted exactly.
struct hoist_checks : llvm::PassInfoMixin<hoist_checks> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        auto &dt = fam.getResult<llvm::DominatorTreeAnalysis>(f);
        const unsigned check = f.getContext().getMDKindID(check_kind);
        const unsigned budget = f.getContext().getMDKindID(budget_kind);
        bool changed = false;
        for (llvm::Loop *loop : li.getLoopsInPreorder()) {
            if (loop->getSubLoops().empty()) {
                changed |= version(*loop, se, dt, check, budget);
            }
        }
        return changed ? llvm::PreservedAnalyses::none() : llvm::PreservedAnalyses::all();
    }

    // The loop header's phi that v derives from through phis of the loop and adds of negative
    // constants (the budget's decrements), collecting those adds; null for anything else.
    static llvm::PHINode *budget_origin(llvm::Value *v, llvm::Loop &loop,
                                        std::set<llvm::Instruction *> &decrements,
                                        std::set<llvm::Value *> &seen) {
        llvm::PHINode *origin = nullptr;
        bool ok = true;
        std::vector<llvm::Value *> work{v};
        while (ok && !work.empty()) {
            llvm::Value *x = work.back();
            work.pop_back();
            if (!seen.insert(x).second) {
                continue;
            }
            auto *i = llvm::dyn_cast<llvm::Instruction>(x);
            if (i == nullptr || !loop.contains(i)) {
                ok = false;
            } else if (auto *phi = llvm::dyn_cast<llvm::PHINode>(i)) {
                if (phi->getParent() == loop.getHeader()) {
                    ok = origin == nullptr || origin == phi;
                    origin = phi;
                } else {
                    for (llvm::Value *in : phi->incoming_values()) {
                        work.push_back(in);
                    }
                }
            } else if (auto *add = llvm::dyn_cast<llvm::BinaryOperator>(i);
                       add != nullptr && add->getOpcode() == llvm::Instruction::Add) {
                auto *c = llvm::dyn_cast<llvm::ConstantInt>(add->getOperand(1));
                ok = c != nullptr && c->isNegative() && !c->isMinValue(true);
                decrements.insert(add);
                work.push_back(add->getOperand(0));
            } else {
                ok = false;
            }
        }
        return ok ? origin : nullptr;
    }

    // An upper bound of the backedges the loop takes that is cheap to compute before it: the
    // smallest exit count (SCEV's symbolic maximum) among exits that run on every iteration
    // (their block dominates the latch), leaving out counts with a division (the budget's own
    // exit, which IndVars makes a division of the budget, costs more to compute than it saves).
    static const llvm::SCEV *loop_bound(llvm::Loop &loop, llvm::ScalarEvolution &se,
                                        llvm::DominatorTree &dt, llvm::Type *i64) {
        llvm::SmallVector<llvm::BasicBlock *, 4> exiting;
        loop.getExitingBlocks(exiting);
        const llvm::SCEV *best = nullptr;
        for (llvm::BasicBlock *bb : exiting) {
            if (!dt.dominates(bb, loop.getLoopLatch())) {
                continue;
            }
            const llvm::SCEV *c =
                se.getExitCount(&loop, bb, llvm::ScalarEvolution::SymbolicMaximum);
            if (llvm::isa<llvm::SCEVCouldNotCompute>(c) || !se.isLoopInvariant(c, &loop) ||
                c->getType()->getIntegerBitWidth() > 64 ||
                llvm::SCEVExprContains(
                    c, [](const llvm::SCEV *e) { return llvm::isa<llvm::SCEVUDivExpr>(e); })) {
                continue;
            }
            c = se.getNoopOrZeroExtend(c, i64);
            best = best == nullptr ? c : se.getUMinExpr(best, c);
        }
        return best;
    }

    static bool version(llvm::Loop &loop, llvm::ScalarEvolution &se, llvm::DominatorTree &dt,
                        unsigned check_md, unsigned budget_md) {
        llvm::BasicBlock *pre = loop.getLoopPreheader();
        llvm::BasicBlock *latch = loop.getLoopLatch();
        if (pre == nullptr || latch == nullptr) {
            return false;
        }
        llvm::Type *i64 = llvm::Type::getInt64Ty(pre->getContext());
        const llvm::SCEV *max = loop_bound(loop, se, dt, i64);
        if (max == nullptr) {
            return false;
        }
        llvm::SCEVExpander expander(se, pre->getModule()->getDataLayout(), "hoisted");
        llvm::Instruction *at = pre->getTerminator();
        if (!expander.isSafeToExpandAt(max, at)) {
            return false;
        }
        std::vector<llvm::ICmpInst *> checks, budgets;
        for (llvm::BasicBlock *bb : loop.blocks()) {
            for (llvm::Instruction &i : *bb) {
                auto *cmp = llvm::dyn_cast<llvm::ICmpInst>(&i);
                if (cmp == nullptr || !cmp->getOperand(0)->getType()->isIntegerTy(64)) {
                    continue;
                }
                const auto pred = cmp->getPredicate();
                if (i.getMetadata(check_md) != nullptr &&
                    (pred == llvm::ICmpInst::ICMP_ULT || pred == llvm::ICmpInst::ICMP_ULE)) {
                    checks.push_back(cmp);
                }
                if (i.getMetadata(budget_md) != nullptr && pred == llvm::ICmpInst::ICMP_SLT &&
                    llvm::PatternMatch::match(cmp->getOperand(1), llvm::PatternMatch::m_Zero())) {
                    budgets.push_back(cmp);
                }
            }
        }
        llvm::IRBuilder<> b(at);
        llvm::Value *v_max = nullptr;
        auto expand_max = [&] {
            if (v_max == nullptr) {
                v_max = expander.expandCodeFor(max, i64, at);
            }
            return v_max;
        };
        llvm::Value *all = nullptr;
        auto require = [&](llvm::Value *cond) {
            all = all == nullptr ? cond : b.CreateAnd(all, cond);
        };
        std::vector<llvm::ICmpInst *> hoisted_checks, hoisted_budgets;
        for (llvm::ICmpInst *cmp : checks) {
            const auto *x = llvm::dyn_cast<llvm::SCEVAddRecExpr>(se.getSCEV(cmp->getOperand(0)));
            const llvm::SCEV *bound = se.getSCEV(cmp->getOperand(1));
            if (x == nullptr || x->getLoop() != &loop || !x->isAffine() ||
                !se.isLoopInvariant(bound, &loop)) {
                continue;
            }
            const auto *step = llvm::dyn_cast<llvm::SCEVConstant>(x->getStepRecurrence(se));
            if (step == nullptr || step->getAPInt().isZero() ||
                step->getAPInt().isMinSignedValue()) {
                continue;
            }
            const llvm::SCEV *first = x->getStart();
            const llvm::SCEV *last = x->evaluateAtIteration(max, se);
            if (!expander.isSafeToExpandAt(first, at) || !expander.isSafeToExpandAt(last, at) ||
                !expander.isSafeToExpandAt(bound, at)) {
                continue;
            }
            llvm::Value *v_first = expander.expandCodeFor(first, i64, at);
            llvm::Value *v_last = expander.expandCodeFor(last, i64, at);
            llvm::Value *v_bound = expander.expandCodeFor(bound, i64, at);
            const bool ule = cmp->getPredicate() == llvm::ICmpInst::ICMP_ULE;
            auto holds = [&](llvm::Value *v) {
                return ule ? b.CreateICmpULE(v, v_bound) : b.CreateICmpULT(v, v_bound);
            };
            // No wrap between first and last: |step| * max fits in 64 bits, and last lies on
            // the step's side of first.
            const uint64_t limit = UINT64_MAX / step->getAPInt().abs().getZExtValue();
            require(b.CreateICmpULE(expand_max(), b.getInt64(limit)));
            require(step->getAPInt().isNegative() ? b.CreateICmpULE(v_last, v_first)
                                                  : b.CreateICmpUGE(v_last, v_first));
            require(holds(v_first));
            require(holds(v_last));
            hoisted_checks.push_back(cmp);
        }
        llvm::PHINode *budget_phi = nullptr;
        uint64_t per_iteration = 0;
        std::set<llvm::Instruction *> cycle; // every decrement on the loop's cycle
        for (llvm::ICmpInst *cmp : budgets) {
            std::set<llvm::Instruction *> decrements;
            std::set<llvm::Value *> seen;
            llvm::PHINode *origin = budget_origin(cmp->getOperand(0), loop, decrements, seen);
            if (origin == nullptr || (budget_phi != nullptr && origin != budget_phi)) {
                continue;
            }
            if (budget_phi == nullptr) {
                // Every decrement on the loop's cycle: from the value that comes back to the
                // header, back to the header's phi.
                std::set<llvm::Value *> seen_cycle;
                if (budget_origin(origin->getIncomingValueForBlock(latch), loop, cycle,
                                  seen_cycle) != origin) {
                    break;
                }
                for (llvm::Instruction *d : cycle) {
                    per_iteration += llvm::cast<llvm::ConstantInt>(d->getOperand(1))
                                         ->getValue()
                                         .abs()
                                         .getZExtValue();
                }
                if (per_iteration == 0 || per_iteration > (uint64_t{1} << 32)) {
                    break;
                }
                budget_phi = origin;
                // entry >= (max + 1) * per_iteration, without overflow.
                const uint64_t limit = static_cast<uint64_t>(INT64_MAX) / per_iteration - 1;
                llvm::Value *n = expand_max();
                require(b.CreateICmpULE(n, b.getInt64(limit)));
                llvm::Value *need =
                    b.CreateMul(b.CreateAdd(n, b.getInt64(1)), b.getInt64(per_iteration));
                require(b.CreateICmpSGE(origin->getIncomingValueForBlock(pre), need));
            }
            // A check on a path off the cycle (before an exit) may see decrements the cycle's
            // sum does not cover.
            if (!std::includes(cycle.begin(), cycle.end(), decrements.begin(), decrements.end())) {
                continue;
            }
            hoisted_budgets.push_back(cmp);
        }
        if (all == nullptr) {
            return false;
        }
        for (llvm::ICmpInst *cmp : hoisted_checks) {
            llvm::IRBuilder<> in(cmp->getNextNode());
            llvm::Value *either = in.CreateOr(all, cmp);
            cmp->replaceUsesWithIf(either, [&](llvm::Use &u) { return u.getUser() != either; });
        }
        llvm::Value *not_all = b.CreateNot(all); // in the preheader, so it is loop-invariant
        for (llvm::ICmpInst *cmp : hoisted_budgets) {
            llvm::IRBuilder<> in(cmp->getNextNode());
            llvm::Value *both = in.CreateAnd(not_all, cmp);
            cmp->replaceUsesWithIf(both, [&](llvm::Use &u) { return u.getUser() != both; });
        }
        return true;
    }
};

// Memory is addressed through integers (inttoptr of a register), which scalar evolution does
// not follow into pointers, so the loop vectorizer sees no stride. In each innermost loop, an
// access at inttoptr(x) where x = {start, +, step} becomes an access at
// `gep i8, inttoptr(start), x - start`: a pointer with a loop-invariant base and an affine
// offset, the form the vectorizer's dependence and overlap checks work with. The address is the
// same; only its expression changes.
struct rebase_accesses : llvm::PassInfoMixin<rebase_accesses> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        bool changed = false;
        for (llvm::Loop *loop : li.getLoopsInPreorder()) {
            if (loop->getSubLoops().empty()) {
                changed |= rebase(*loop, se);
            }
        }
        return changed ? llvm::PreservedAnalyses::none() : llvm::PreservedAnalyses::all();
    }

    static bool rebase(llvm::Loop &loop, llvm::ScalarEvolution &se) {
        llvm::BasicBlock *pre = loop.getLoopPreheader();
        if (pre == nullptr) {
            return false;
        }
        llvm::SCEVExpander expander(se, pre->getModule()->getDataLayout(), "base");
        llvm::Instruction *at = pre->getTerminator();
        llvm::IRBuilder<> b(pre->getContext());
        // One base pointer per start value.
        std::map<const llvm::SCEV *, std::pair<llvm::Value *, llvm::Value *>> bases;
        bool changed = false;
        for (llvm::BasicBlock *bb : loop.blocks()) {
            for (llvm::Instruction &i : *bb) {
                const unsigned operand = llvm::isa<llvm::LoadInst>(i)    ? 0
                                         : llvm::isa<llvm::StoreInst>(i) ? 1
                                                                         : 2;
                if (operand == 2) {
                    continue;
                }
                auto *cast = llvm::dyn_cast<llvm::IntToPtrInst>(i.getOperand(operand));
                if (cast == nullptr) {
                    continue;
                }
                llvm::Value *x = cast->getOperand(0);
                auto *rec = llvm::dyn_cast<llvm::SCEVAddRecExpr>(se.getSCEV(x));
                if (rec == nullptr || rec->getLoop() != &loop || !rec->isAffine() ||
                    !se.isLoopInvariant(rec->getStart(), &loop) ||
                    !expander.isSafeToExpandAt(rec->getStart(), at)) {
                    continue;
                }
                auto [it, fresh] = bases.emplace(rec->getStart(), std::pair{nullptr, nullptr});
                if (fresh) {
                    b.SetInsertPoint(at);
                    llvm::Value *start = expander.expandCodeFor(rec->getStart(), x->getType(), at);
                    it->second = {start, b.CreateIntToPtr(start, cast->getType(), "base")};
                }
                b.SetInsertPoint(&i);
                llvm::Value *offset = b.CreateSub(x, it->second.first);
                i.setOperand(operand, b.CreateGEP(b.getInt8Ty(), it->second.second, offset));
                changed = true;
            }
        }
        return changed;
    }
};

// Runs passes over a module with the analyses they need.
template <class F>
void run_passes(llvm::Module &mod, llvm::TargetMachine &tm, F add_passes) {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(&tm);
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm;
    add_passes(mpm);
    mpm.run(mod, mam);
}

// The baseline tier: registers become SSA values and nothing more, so code generation (with
// the fast instruction selector) takes a few milliseconds.
void promote_registers(llvm::Module &mod, llvm::TargetMachine &tm) {
    run_passes(mod, tm, [](llvm::ModulePassManager &mpm) {
        mpm.addPass(llvm::createModuleToFunctionPassAdaptor(llvm::SROAPass()));
    });
}

// The optimised tier, a short pipeline for code that arrives already optimised by clang:
// registers to SSA, subprograms inlined, redundant checks and loads merged, loop-invariant
// parts of the access checks hoisted, counted loops versioned so that a copy runs without
// their checks when one test before the loop proves they all pass (hoist_checks), and
// innermost loops vectorised. The full O2 pipeline costs several times the compile time for no
// measurable gain on this code.
void optimise(llvm::Module &mod, llvm::TargetMachine &tm) {
    run_passes(mod, tm, [](llvm::ModulePassManager &mpm) {
        llvm::FunctionPassManager fpm;
        fpm.addPass(llvm::SROAPass());
        fpm.addPass(llvm::EarlyCSEPass(true));
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        llvm::LoopPassManager lpm;
        lpm.addPass(llvm::LoopRotatePass());
        lpm.addPass(llvm::LICMPass(llvm::LICMOptions()));
        fpm.addPass(llvm::createFunctionToLoopPassAdaptor(std::move(lpm), true));
        fpm.addPass(llvm::GVNPass());
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        fpm.addPass(hoist_checks());
        llvm::LoopPassManager unswitch;
        unswitch.addPass(llvm::SimpleLoopUnswitchPass(true));
        unswitch.addPass(llvm::LoopRotatePass());
        unswitch.addPass(llvm::IndVarSimplifyPass());
        fpm.addPass(llvm::createFunctionToLoopPassAdaptor(std::move(unswitch), true));
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        fpm.addPass(llvm::LoopSimplifyPass());
        fpm.addPass(rebase_accesses());
        fpm.addPass(llvm::LoopVectorizePass());
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        mpm.addPass(llvm::AlwaysInlinerPass());
        mpm.addPass(llvm::createModuleToFunctionPassAdaptor(std::move(fpm)));
    });
}

// The largest loop (in LLVM's cost units) unswitching copies.
constexpr int unswitch_threshold = 1000;

// One LLJIT per process: setting LLVM up costs milliseconds, compiling one program much less.
class jit_host {
public:
    static result<jit_host *> get() {
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

    llvm::orc::LLJIT &jit() { return *jit_; }

    /// Compiles a module to an object file with the fast or the optimising code generator.
    llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> emit(llvm::Module &mod, bool optimised) {
        code_generator &g = optimised ? optimising_ : fast_;
        std::lock_guard lock(g.mu); // a TargetMachine compiles one module at a time
        if (optimised) {
            optimise(mod, *g.tm);
        } else {
            promote_registers(mod, *g.tm);
        }
        return llvm::orc::SimpleCompiler(*g.tm)(mod);
    }

private:
    struct code_generator {
        std::unique_ptr<llvm::TargetMachine> tm;
        std::mutex mu;
    };

    jit_host() = default;

    std::string init() {
        llvm::InitializeNativeTarget();
        llvm::InitializeNativeTargetAsmPrinter();
        // Loop unswitching copies a loop whose checks hoist_checks proved (the copy runs
        // without them) only up to a size, 50 by default: a loop around a 64-way switch costs
        // about 400. The pass takes its limit from LLVM's command-line options only.
        // BPFTIME_LLVM_OPTIONS adds LLVM options for looking at what the optimiser does, for
        // example "-pass-remarks-missed=loop-vectorize".
        // X86's domain reassignment (general-purpose to mask-register instructions, on AVX-512
        // hosts) grows with the square of a function's size and took most of the code
        // generation time of large programs, for no gain on this code.
        const std::string threshold = "-unswitch-threshold=" + std::to_string(unswitch_threshold);
        const char *argv[] = {"bpftime", threshold.c_str(), "-disable-x86-domain-reassignment"};
        std::string why;
        llvm::raw_string_ostream errs(why);
        if (!llvm::cl::ParseCommandLineOptions(3, argv, "", &errs, "BPFTIME_LLVM_OPTIONS")) {
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

    std::unique_ptr<llvm::orc::LLJIT> jit_;
    code_generator fast_;
    code_generator optimising_;
};

// Control flow of one eBPF function: the instructions reachable from its entry without
// entering a callee, and where basic blocks start.
struct function_plan {
    size_t entry = 0;
    std::vector<bool> reachable;
    std::vector<bool> leader;
    std::vector<bool> loop_head; // the target of a backward jump
    // Control-flow edges into each instruction (the function's entry counts one), and where
    // the last one came from.
    std::vector<uint32_t> preds;
    std::vector<size_t> pred;
};

size_t jump_target(const ebpf_inst &inst, size_t pc) {
    int64_t rel = inst.opcode == op_ja32 ? inst.imm : inst.offset;
    return static_cast<size_t>(static_cast<int64_t>(pc) + 1 + rel);
}

bool is_local_call(const ebpf_inst &inst) {
    return inst.opcode == op_call && inst.src == call_local;
}

size_t call_target(const ebpf_inst &inst, size_t pc) {
    return static_cast<size_t>(static_cast<int64_t>(pc) + 1 + inst.imm);
}

function_plan plan_function(std::span<const ebpf_inst> insns, size_t entry,
                            std::vector<size_t> &callees) {
    function_plan f;
    f.entry = entry;
    f.reachable.assign(insns.size(), false);
    f.leader.assign(insns.size(), false);
    f.loop_head.assign(insns.size(), false);
    f.preds.assign(insns.size(), 0);
    f.pred.assign(insns.size(), SIZE_MAX);
    f.leader[entry] = true;
    f.preds[entry] = 1;
    std::vector<size_t> work{entry};
    auto edge = [&](size_t from, size_t to) {
        f.preds[to]++;
        f.pred[to] = from;
        if (!f.reachable[to]) {
            work.push_back(to);
        }
    };
    auto jump = [&](size_t from, size_t to) {
        f.leader[to] = true;
        if (to <= from) {
            f.loop_head[to] = true;
        }
        edge(from, to);
    };
    while (!work.empty()) {
        size_t pc = work.back();
        work.pop_back();
        if (f.reachable[pc]) {
            continue;
        }
        f.reachable[pc] = true;
        const ebpf_inst &inst = insns[pc];
        const opcode_info *info = find_opcode(inst.opcode);
        switch (info->kind) {
        case op_kind::exit:
            break;
        case op_kind::ja:
            jump(pc, jump_target(inst, pc));
            break;
        case op_kind::jcond:
            jump(pc, jump_target(inst, pc));
            f.leader[pc + 1] = true;
            edge(pc, pc + 1);
            break;
        case op_kind::lddw:
            edge(pc, pc + 2);
            break;
        default:
            if (is_local_call(inst)) {
                callees.push_back(call_target(inst, pc));
            }
            edge(pc, pc + 1);
            break;
        }
    }
    return f;
}

// Whether a conditional jump compares with an immediate: what clang's lowering of a switch
// (eBPF has no indirect jump) makes its tree of compares from.
bool is_immediate_compare(const ebpf_inst &inst) {
    return find_opcode(inst.opcode)->kind == op_kind::jcond && (inst.opcode & src_x) == 0;
}

// Whether the conditional jump `inst` (with an immediate) is taken when its register holds v:
// the interpreter's conditions (BPFTIME_JUMP_CONDITIONS).
bool jump_taken(const ebpf_inst &inst, uint64_t v) {
    const bool wide = op_class(inst.opcode) == cls_jmp;
    const uint64_t imm = static_cast<uint64_t>(static_cast<int64_t>(inst.imm));
    switch (inst.opcode & 0xf0) {
#define BPFTIME_TAKEN(op, expr64, expr32)                                                          \
    case op:                                                                                       \
        if (wide) {                                                                                \
            const uint64_t a = v, b = imm;                                                         \
            return expr64;                                                                         \
        } else {                                                                                   \
            const uint32_t a = static_cast<uint32_t>(v), b = static_cast<uint32_t>(imm);           \
            return expr32;                                                                         \
        }
        BPFTIME_JUMP_CONDITIONS(BPFTIME_TAKEN)
#undef BPFTIME_TAKEN
    default:
        return false; // not a conditional jump
    }
}

// A tree of compares of one register with immediates, recovered as the switch it was: for each
// value of the register in [lo, lo + leaves.size()), where the tree leads. LLVM lowers the
// switch to a jump table (or range tests, or bit tests, as it does native switches) instead of
// a chain of hard-to-predict branches. Values outside the range take the tree as it is.
struct compare_tree {
    // One way through the tree: where it leads, the tree's blocks it passes after the root
    // (each one instruction the budget counts) and the first of them that is a loop head
    // (SIZE_MAX: none), whose budget test the way must keep.
    struct way {
        size_t leaf = 0;
        uint64_t passed = 0;
        size_t loop_head = SIZE_MAX;
        bool operator<(const way &o) const {
            return std::tie(leaf, passed, loop_head) < std::tie(o.leaf, o.passed, o.loop_head);
        }
    };
    uint64_t lo = 0;         // the first value, in the width of the compares
    std::vector<way> leaves; // by value - lo
};

// The compare tree rooted at the conditional jump at pc, when there is one worth a switch: at
// least min_compares compares (the root's block may hold more instructions before it; every
// other compare is a block of its own whose one way in is from the tree) over a range of at
// most max_values values around their immediates.
std::optional<compare_tree> find_compare_tree(std::span<const ebpf_inst> insns,
                                              const function_plan &plan, size_t pc) {
    constexpr size_t min_compares = 4;
    constexpr uint64_t max_values = 1024;
    const ebpf_inst &root = insns[pc];
    if (!is_immediate_compare(root)) {
        return std::nullopt;
    }
    const uint8_t cls = op_class(root.opcode);
    auto in_tree = [&](size_t from, size_t at) {
        const ebpf_inst &i = insns[at];
        return plan.reachable[at] && plan.leader[at] && plan.preds[at] == 1 &&
               plan.pred[at] == from && at != from && is_immediate_compare(i) &&
               op_class(i.opcode) == cls && i.dst == root.dst;
    };
    // A compare that is itself part of a tree above it is not a root.
    if (plan.leader[pc] && plan.preds[pc] == 1 && plan.pred[pc] != SIZE_MAX &&
        in_tree(plan.pred[pc], pc)) {
        return std::nullopt;
    }
    // The tree's compares; the range spans their immediates and one value either side.
    std::vector<size_t> compares{pc};
    int64_t lo = INT64_MAX;
    int64_t hi = INT64_MIN;
    for (size_t i = 0; i < compares.size(); i++) {
        const size_t at = compares[i];
        const int64_t imm = insns[at].imm; // sign-extended, in either width
        lo = std::min(lo, imm);
        hi = std::max(hi, imm);
        for (size_t next : {jump_target(insns[at], at), at + 1}) {
            if (in_tree(at, next)) {
                compares.push_back(next);
            }
        }
    }
    if (compares.size() < min_compares ||
        static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) > max_values - 3) {
        return std::nullopt;
    }
    lo = lo == INT64_MIN ? lo : lo - 1;
    hi = hi == INT64_MAX ? hi : hi + 1;
    compare_tree tree;
    tree.lo = static_cast<uint64_t>(lo);
    for (int64_t v = lo;; v++) {
        compare_tree::way w;
        size_t at = pc;
        for (;;) {
            const size_t next = jump_taken(insns[at], static_cast<uint64_t>(v))
                                    ? jump_target(insns[at], at)
                                    : at + 1;
            if (!in_tree(at, next)) {
                w.leaf = next;
                break;
            }
            w.passed++;
            if (plan.loop_head[next] && w.loop_head == SIZE_MAX) {
                w.loop_head = next;
            }
            at = next;
        }
        tree.leaves.push_back(w);
        if (v == hi) {
            break;
        }
    }
    return tree;
}

// Builds the LLVM module of one program.
class translator {
public:
    translator(const program &prog, bool checked, llvm::LLVMContext &ctx, llvm::Module &mod)
        : prog_(prog), insns_(prog.insns()), checked_(checked), ctx_(ctx), mod_(mod), b_(ctx) {
        i8_ = b_.getInt8Ty();
        i16_ = b_.getInt16Ty();
        i32_ = b_.getInt32Ty();
        i64_ = b_.getInt64Ty();
        ptr_ = b_.getPtrTy();
        std::vector<llvm::Type *> six(6, i64_);
        ret_ty_ = llvm::StructType::get(ctx_, six);
        // (state, r0..r9, fp, depth)
        std::vector<llvm::Type *> params{ptr_};
        params.insert(params.end(), 12, i64_);
        fn_ty_ = llvm::FunctionType::get(ret_ty_, params, false);
        unlikely_ = llvm::MDBuilder(ctx_).createBranchWeights(1, 1 << 20);
        likely_ = llvm::MDBuilder(ctx_).createBranchWeights(1 << 20, 1);
    }

    // Emits every function and the exported entry `name`. Returns an error message or "".
    std::string translate(const std::string &name) {
        std::vector<size_t> pending{0};
        std::map<size_t, function_plan> plans;
        while (!pending.empty()) {
            size_t entry = pending.back();
            pending.pop_back();
            if (plans.count(entry) != 0) {
                continue;
            }
            std::vector<size_t> callees;
            plans.emplace(entry, plan_function(insns_, entry, callees));
            pending.insert(pending.end(), callees.begin(), callees.end());
        }
        for (auto &[entry, plan] : plans) {
            auto *fn = llvm::Function::Create(fn_ty_, llvm::Function::InternalLinkage,
                                              "f" + std::to_string(entry), mod_);
            fn->setCallingConv(llvm::CallingConv::Fast);
            fn->addFnAttr(llvm::Attribute::NoUnwind);
            // Into their callers (recursive ones stay calls).
            fn->addFnAttr(llvm::Attribute::AlwaysInline);
            functions_[entry] = fn;
        }
        for (auto &[entry, plan] : plans) {
            emit_function(plan);
        }
        emit_entry(name);
        std::string err;
        llvm::raw_string_ostream os(err);
        if (llvm::verifyModule(mod_, &os)) {
            return "generated code does not verify: " + os.str();
        }
        return {};
    }

private:
    // A pointer a direct lookup returned: null, or size bytes of a value in the map's value
    // area. Known not null in a block entered only from a test of it against 0 that says so;
    // accesses inside the value then need no check.
    struct value_pointer {
        size_t lookup = 0; // the call's pc: registers with the same one hold the same pointer
        uint32_t size = 0;
        bool writable = false;
        bool not_null = false;
    };
    using value_pointers = std::array<std::optional<value_pointer>, register_count>;

    // A jit_state field by its offset.
    llvm::Value *state_field(size_t offset) {
        return b_.CreateConstInBoundsGEP1_64(i8_, state_, offset);
    }
    llvm::Value *load_state(size_t offset) { return b_.CreateLoad(i64_, state_field(offset)); }
    void store_state(size_t offset, llvm::Value *v) { b_.CreateStore(v, state_field(offset)); }

    llvm::Value *reg(int r) {
        if (r == frame_pointer) {
            return fp_;
        }
        return b_.CreateLoad(i64_, regs_[static_cast<size_t>(r)]);
    }
    void set_reg(int r, llvm::Value *v) {
        if (v->getType() != i64_) {
            v = b_.CreateZExt(v, i64_);
        }
        b_.CreateStore(v, regs_[static_cast<size_t>(r)]);
    }
    llvm::Value *imm64(int32_t imm) {
        return b_.getInt64(static_cast<uint64_t>(static_cast<int64_t>(imm)));
    }
    llvm::Value *const_ptr(uint64_t addr) {
        return llvm::ConstantExpr::getIntToPtr(b_.getInt64(addr), ptr_);
    }
    llvm::BasicBlock *new_block(const char *name) {
        return llvm::BasicBlock::Create(ctx_, name, fn_);
    }
    void branch_unlikely(llvm::Value *cond, llvm::BasicBlock *unlikely, llvm::BasicBlock *likely) {
        b_.CreateCondBr(cond, unlikely, likely, unlikely_);
    }

    // When cond holds, records a fault and returns from the function; else goes on in a new
    // block.
    void fault_if(llvm::Value *cond, uint64_t kind, size_t pc, llvm::Value *addr = nullptr,
                  llvm::Value *len = nullptr) {
        auto *fault = new_block("fault_here");
        auto *go = new_block("go_on");
        branch_unlikely(cond, fault, go);
        b_.SetInsertPoint(fault);
        auto *ty = llvm::FunctionType::get(b_.getVoidTy(), {ptr_, i64_, i64_, i64_, i64_}, false);
        b_.CreateCall(ty, const_ptr(address_of(&rt_fault)),
                      {state_, b_.getInt64(kind), b_.getInt64(pc), addr ? addr : b_.getInt64(0),
                       len ? len : b_.getInt64(0)});
        b_.CreateBr(fault_ret_);
        b_.SetInsertPoint(go);
    }

    // Returns from the function when a callee or the runtime recorded a fault.
    void return_if_faulted() {
        auto *go = new_block("go_on");
        branch_unlikely(b_.CreateICmpNE(load_state(offsetof(jit_state, fault)), b_.getInt64(0)),
                        fault_ret_, go);
        b_.SetInsertPoint(go);
    }

    // Checks [addr, addr + n) before an access; continues in a new block when allowed.
    void check_access(size_t pc, int base, int16_t offset, llvm::Value *addr, uint64_t n,
                      bool write) {
        if (!checked_) {
            return;
        }
        if (const auto &v = value_ptr_[static_cast<size_t>(base)];
            v && v->not_null && offset >= 0 && offset + n <= v->size && (!write || v->writable)) {
            // Inside a map value a lookup found: nothing to check at run time.
            return;
        }
        if (auto known = fp_offset_[static_cast<size_t>(base)]) {
            int64_t at = *known + offset;
            if (at >= -static_cast<int64_t>(prog_.entry_frame_reach()) &&
                at + static_cast<int64_t>(n) <= 0) {
                // Inside the current frame's reachable part (the whole frame in a program
                // with local calls): nothing to check at run time.
                return;
            }
        }
        llvm::Value *nv = b_.getInt64(n);
        auto *ok = new_block("ok");
        auto *not_near = new_block("not_near");
        auto *not_cached = new_block("not_cached");
        auto *slow = new_block("slow");
        // A cache holds [lo, lo + span): addr - lo < span - n + 1 (span >= max_access >= n).
        auto in_cache = [&](llvm::Value *lo_slot, llvm::Value *span_slot) {
            llvm::Value *lo = b_.CreateLoad(i64_, lo_slot);
            llvm::Value *span = b_.CreateLoad(i64_, span_slot);
            return mark_check(b_.CreateICmpULT(
                b_.CreateSub(addr, lo), b_.CreateAdd(b_.CreateSub(span, nv), b_.getInt64(1))));
        };
        b_.CreateCondBr(in_cache(near_[write ? 2 : 0], near_[write ? 3 : 1]), ok, not_near,
                        likely_);
        b_.SetInsertPoint(not_near);
        b_.CreateCondBr(in_cache(write ? write_lo_ : read_lo_, write ? write_span_ : read_span_),
                        ok, not_cached);
        // The stack: the current frame and its callers' (stack_span >= 512 >= n).
        b_.SetInsertPoint(not_cached);
        llvm::Value *ds = b_.CreateSub(addr, stack_lo_);
        b_.CreateCondBr(mark_check(b_.CreateICmpULE(ds, b_.CreateSub(stack_span_, nv))), ok, slow);
        // Every other region of the run, through the runtime.
        b_.SetInsertPoint(slow);
        auto *ty = llvm::FunctionType::get(i64_, {ptr_, i64_, i64_, i64_, i64_}, false);
        llvm::Value *allowed =
            b_.CreateCall(ty, const_ptr(address_of(&rt_check)),
                          {state_, addr, nv, b_.getInt64(write ? 1 : 0), b_.getInt64(pc)});
        auto *refill = new_block("refill");
        branch_unlikely(b_.CreateICmpEQ(allowed, b_.getInt64(0)), fault_ret_, refill);
        b_.SetInsertPoint(refill);
        b_.CreateBr(ok);
        b_.SetInsertPoint(ok);
    }

    // Marks the compare of an access check for hoist_checks.
    llvm::Value *mark_check(llvm::Value *cmp) {
        if (auto *i = llvm::dyn_cast<llvm::Instruction>(cmp)) {
            i->setMetadata(check_kind, llvm::MDNode::get(ctx_, {}));
        }
        return cmp;
    }

    // Follows which registers hold r10 + a constant, and which the value of an lddw, through
    // one instruction.
    void track_registers(const ebpf_inst &inst) {
        auto &known = fp_offset_;
        const opcode_info *info = find_opcode(inst.opcode);
        auto forget = [&](int r) { known[static_cast<size_t>(r)].reset(); };
        switch (info->kind) {
        case op_kind::alu:
        case op_kind::neg:
        case op_kind::endian:
        case op_kind::ldx:
        case op_kind::ldsx:
        case op_kind::lddw:
            loaded_[inst.dst].reset();
            value_ptr_[inst.dst] = inst.opcode == (cls_alu64 | src_x | alu_mov) && inst.offset == 0
                                       ? value_ptr_[inst.src]
                                       : std::nullopt;
            break;
        case op_kind::atomic:
            value_ptr_[inst.imm == atomic_cmpxchg ? 0 : inst.src].reset();
            break;
        case op_kind::call:
        case op_kind::callx:
            for (size_t r = 0; r <= 5; r++) {
                value_ptr_[r].reset();
            }
            value_ptr_[0] = looked_up_;
            looked_up_.reset();
            break;
        default:
            break;
        }
        switch (info->kind) {
        case op_kind::alu: {
            auto &d = known[inst.dst];
            const uint8_t op = inst.opcode & 0xf0;
            if (inst.opcode == (cls_alu64 | src_x | alu_mov) && inst.offset == 0) {
                d = known[inst.src];
            } else if (d && op_class(inst.opcode) == cls_alu64 && (inst.opcode & src_x) == 0 &&
                       (op == alu_add || op == alu_sub)) {
                *d += op == alu_add ? inst.imm : -static_cast<int64_t>(inst.imm);
                if (*d < -(int64_t{1} << 40) || *d > (int64_t{1} << 40)) {
                    d.reset();
                }
            } else {
                d.reset();
            }
            break;
        }
        case op_kind::lddw:
            // The second slot follows the first in insns_.
            loaded_[inst.dst] =
                static_cast<uint32_t>(inst.imm) |
                (static_cast<uint64_t>(static_cast<uint32_t>((&inst)[1].imm)) << 32);
            forget(inst.dst);
            break;
        case op_kind::neg:
        case op_kind::endian:
        case op_kind::ldx:
        case op_kind::ldsx:
            forget(inst.dst);
            break;
        case op_kind::atomic:
            if (inst.imm == atomic_cmpxchg) {
                forget(0);
                loaded_[0].reset();
            } else if ((inst.imm & atomic_fetch) != 0) {
                forget(inst.src);
                loaded_[inst.src].reset();
            }
            break;
        case op_kind::call:
        case op_kind::callx:
            for (int r = 0; r <= 5; r++) {
                if (r == 0 || is_local_call(inst)) {
                    forget(r);
                    loaded_[static_cast<size_t>(r)].reset();
                }
            }
            break;
        default:
            break;
        }
    }

    llvm::Type *int_type(uint64_t bytes) {
        switch (bytes) {
        case 1:
            return i8_;
        case 2:
            return i16_;
        case 4:
            return i32_;
        default:
            return i64_;
        }
    }

    // base + offset, checked for an access of n bytes.
    llvm::Value *checked_address(size_t pc, int base, int16_t offset, uint64_t n, bool write) {
        llvm::Value *addr = b_.CreateAdd(reg(base), imm64(offset));
        check_access(pc, base, offset, addr, n, write);
        return addr;
    }

    void emit_load(size_t pc, const ebpf_inst &inst, bool sign) {
        uint64_t n = access_size(inst.opcode);
        llvm::Value *addr = checked_address(pc, inst.src, inst.offset, n, false);
        llvm::Value *v =
            b_.CreateAlignedLoad(int_type(n), b_.CreateIntToPtr(addr, ptr_), llvm::MaybeAlign(1));
        set_reg(inst.dst, sign ? b_.CreateSExt(v, i64_) : b_.CreateZExt(v, i64_));
    }

    void emit_store(size_t pc, const ebpf_inst &inst, llvm::Value *value) {
        uint64_t n = access_size(inst.opcode);
        llvm::Value *addr = checked_address(pc, inst.dst, inst.offset, n, true);
        b_.CreateAlignedStore(b_.CreateTrunc(value, int_type(n)), b_.CreateIntToPtr(addr, ptr_),
                              llvm::MaybeAlign(1));
    }

    void emit_atomic(size_t pc, const ebpf_inst &inst) {
        uint64_t n = access_size(inst.opcode);
        llvm::Type *ty = int_type(n);
        llvm::Value *addr = checked_address(pc, inst.dst, inst.offset, n, true);
        fault_if(b_.CreateICmpNE(b_.CreateAnd(addr, b_.getInt64(n - 1)), b_.getInt64(0)),
                 fault_misaligned, pc, addr, b_.getInt64(n));
        llvm::Value *p = b_.CreateIntToPtr(addr, ptr_);
        llvm::Value *src = b_.CreateTrunc(reg(inst.src), ty);
        const auto order = llvm::AtomicOrdering::SequentiallyConsistent;
        if (inst.imm == atomic_cmpxchg) {
            llvm::Value *expected = b_.CreateTrunc(reg(0), ty);
            auto *x = b_.CreateAtomicCmpXchg(p, expected, src, llvm::MaybeAlign(n), order, order);
            set_reg(0, b_.CreateExtractValue(x, 0));
            return;
        }
        llvm::AtomicRMWInst::BinOp op = llvm::AtomicRMWInst::Xchg;
        switch (inst.imm & ~atomic_fetch) {
        case atomic_add:
            op = llvm::AtomicRMWInst::Add;
            break;
        case atomic_or:
            op = llvm::AtomicRMWInst::Or;
            break;
        case atomic_and:
            op = llvm::AtomicRMWInst::And;
            break;
        case atomic_xor:
            op = llvm::AtomicRMWInst::Xor;
            break;
        default:
            break; // xchg
        }
        llvm::Value *old = b_.CreateAtomicRMW(op, p, src, llvm::MaybeAlign(n), order);
        if ((inst.imm & atomic_fetch) != 0) {
            set_reg(inst.src, old);
        }
    }

    // dst op src in the width of the instruction class; division never traps.
    llvm::Value *emit_binary(uint8_t op, llvm::Value *a, llvm::Value *b, bool is_signed) {
        llvm::Type *ty = a->getType();
        auto c = [&](uint64_t v) { return llvm::ConstantInt::get(ty, v); };
        llvm::Value *mask = c(ty->getIntegerBitWidth() - 1);
        switch (op) {
        case alu_add:
            return b_.CreateAdd(a, b);
        case alu_sub:
            return b_.CreateSub(a, b);
        case alu_mul:
            return b_.CreateMul(a, b);
        case alu_or:
            return b_.CreateOr(a, b);
        case alu_and:
            return b_.CreateAnd(a, b);
        case alu_xor:
            return b_.CreateXor(a, b);
        case alu_lsh:
            return b_.CreateShl(a, b_.CreateAnd(b, mask));
        case alu_rsh:
            return b_.CreateLShr(a, b_.CreateAnd(b, mask));
        case alu_arsh:
            return b_.CreateAShr(a, b_.CreateAnd(b, mask));
        case alu_mov:
            return b;
        case alu_div:
        case alu_mod: {
            // x / 0 = 0, x % 0 = x; signed: x / -1 = -x, x % -1 = 0 (no INT_MIN / -1 trap).
            llvm::Value *zero = b_.CreateICmpEQ(b, c(0));
            llvm::Value *minus1 = is_signed
                                      ? b_.CreateICmpEQ(b, llvm::ConstantInt::getAllOnesValue(ty))
                                      : b_.getFalse();
            llvm::Value *safe = b_.CreateSelect(b_.CreateOr(zero, minus1), c(1), b);
            if (op == alu_div) {
                llvm::Value *q = is_signed ? b_.CreateSDiv(a, safe) : b_.CreateUDiv(a, safe);
                q = b_.CreateSelect(minus1, b_.CreateNeg(a), q);
                return b_.CreateSelect(zero, c(0), q);
            }
            llvm::Value *r = is_signed ? b_.CreateSRem(a, safe) : b_.CreateURem(a, safe);
            r = b_.CreateSelect(minus1, c(0), r);
            return b_.CreateSelect(zero, a, r);
        }
        default:
            return nullptr;
        }
    }

    void emit_alu(const ebpf_inst &inst) {
        const bool wide = op_class(inst.opcode) == cls_alu64;
        const uint8_t op = inst.opcode & 0xf0;
        llvm::Type *ty = wide ? i64_ : i32_;
        llvm::Value *a = b_.CreateTrunc(reg(inst.dst), ty);
        if (op == alu_neg) {
            set_reg(inst.dst, b_.CreateNeg(a));
            return;
        }
        if (op == alu_end) {
            unsigned width = static_cast<unsigned>(inst.imm);
            llvm::Type *wty = int_type(width / 8);
            llvm::Value *v = b_.CreateTrunc(reg(inst.dst), wty);
            const bool swap = wide || (inst.opcode & src_x) != 0; // bswap, be (the host is le)
            if (swap && width > 8) {
                v = b_.CreateUnaryIntrinsic(llvm::Intrinsic::bswap, v);
            }
            set_reg(inst.dst, v);
            return;
        }
        llvm::Value *b = (inst.opcode & src_x) != 0 ? b_.CreateTrunc(reg(inst.src), ty)
                                                    : b_.CreateTrunc(imm64(inst.imm), ty);
        if (op == alu_mov && (inst.opcode & src_x) != 0 && inst.offset != 0) {
            // movsx: sign-extend the low offset bits of src.
            llvm::Value *low =
                b_.CreateTrunc(reg(inst.src), int_type(static_cast<uint64_t>(inst.offset) / 8));
            b = b_.CreateSExt(low, ty);
        }
        set_reg(inst.dst, emit_binary(op, a, b, inst.offset == 1));
    }

    llvm::Value *emit_condition(const ebpf_inst &inst) {
        const bool wide = op_class(inst.opcode) == cls_jmp;
        llvm::Type *ty = wide ? i64_ : i32_;
        llvm::Value *a = b_.CreateTrunc(reg(inst.dst), ty);
        llvm::Value *b = (inst.opcode & src_x) != 0 ? b_.CreateTrunc(reg(inst.src), ty)
                                                    : b_.CreateTrunc(imm64(inst.imm), ty);
        switch (inst.opcode & 0xf0) {
        case jmp_jeq:
            return b_.CreateICmpEQ(a, b);
        case jmp_jgt:
            return b_.CreateICmpUGT(a, b);
        case jmp_jge:
            return b_.CreateICmpUGE(a, b);
        case jmp_jset:
            return b_.CreateICmpNE(b_.CreateAnd(a, b), llvm::ConstantInt::get(ty, 0));
        case jmp_jne:
            return b_.CreateICmpNE(a, b);
        case jmp_jsgt:
            return b_.CreateICmpSGT(a, b);
        case jmp_jsge:
            return b_.CreateICmpSGE(a, b);
        case jmp_jlt:
            return b_.CreateICmpULT(a, b);
        case jmp_jle:
            return b_.CreateICmpULE(a, b);
        case jmp_jslt:
            return b_.CreateICmpSLT(a, b);
        default: // jsle
            return b_.CreateICmpSLE(a, b);
        }
    }

    // Stops the run when the budget is exhausted (at a loop head, a local call, an exit).
    void check_budget(size_t pc) {
        if (checked_) {
            llvm::Value *out = b_.CreateICmpSLT(b_.CreateLoad(i64_, budget_), b_.getInt64(0));
            if (auto *i = llvm::dyn_cast<llvm::Instruction>(out)) {
                i->setMetadata(budget_kind, llvm::MDNode::get(ctx_, {}));
            }
            fault_if(out, fault_exhausted, pc);
        }
    }

    // The number of instructions the block starting at pc executes (lddw counts once).
    uint64_t block_length(const function_plan &plan, size_t pc) {
        uint64_t n = 0;
        for (size_t i = pc; i < insns_.size(); i++) {
            if (i != pc && plan.leader[i]) {
                break;
            }
            n++;
            const opcode_info *info = find_opcode(insns_[i].opcode);
            if (info->kind == op_kind::jcond || info->kind == op_kind::ja ||
                info->kind == op_kind::exit) {
                break;
            }
            if (info->kind == op_kind::lddw) {
                i++;
            }
        }
        return n;
    }

    void emit_return(llvm::Value *r0, std::array<llvm::Value *, 5> args) {
        llvm::Value *ret = llvm::UndefValue::get(ret_ty_);
        ret = b_.CreateInsertValue(ret, r0, 0);
        for (unsigned i = 0; i < 5; i++) {
            ret = b_.CreateInsertValue(ret, args[i], i + 1);
        }
        b_.CreateRet(ret);
    }

    void emit_helper_call(size_t pc, const ebpf_inst &inst) {
        std::array<llvm::Value *, 5> args{reg(1), reg(2), reg(3), reg(4), reg(5)};
        llvm::Value *r0 = nullptr;
        if (inst.opcode == op_callx) {
            auto *ty = llvm::FunctionType::get(
                i64_, {ptr_, i64_, i64_, i64_, i64_, i64_, i64_, i64_}, false);
            r0 = b_.CreateCall(ty, const_ptr(address_of(&rt_callx)),
                               {state_, reg(inst.dst), args[0], args[1], args[2], args[3], args[4],
                                b_.getInt64(pc)});
            set_reg(0, r0);
            return_if_faulted();
            take_handed_region();
            return;
        }
        if (emit_direct_lookup(pc)) {
            return;
        }
        auto *ty = llvm::FunctionType::get(i64_, {i64_, i64_, i64_, i64_, i64_, ptr_}, false);
        r0 = b_.CreateCall(ty, const_ptr(address_of(prog_.helper_at(pc))),
                           {args[0], args[1], args[2], args[3], args[4], rc_});
        set_reg(0, r0);
        fault_if(b_.CreateICmpNE(b_.CreateLoad(i8_, helper_failed_), b_.getInt8(0)),
                 fault_helper_failed, pc);
        take_handed_region();
    }

    // map_lookup_elem with a map's handle in r1 and the key in the frame, without the helper
    // call (direct_lookup): arrays inline, other maps through a direct call of the map's find.
    // The same r0 as the helper, and the map's value area becomes the near cache when a value
    // is found, as the helper's hint would make it. False (nothing emitted) when the call does
    // not have that shape.
    bool emit_direct_lookup(size_t pc) {
        const direct_lookup *d = loaded_[1] ? prog_.direct_lookup_of(*loaded_[1]) : nullptr;
        const std::optional<int64_t> key_at = fp_offset_[2];
        if (d == nullptr || d->replaces != prog_.helper_at(pc) || !key_at ||
            *key_at < -static_cast<int64_t>(prog_.entry_frame_reach()) ||
            *key_at + static_cast<int64_t>(d->key_size) > 0 ||
            (d->stride != 0 ? d->key_size != 4 : d->find == nullptr)) {
            return false;
        }
        // The region the helper's hint would pick: the first of the program's regions that
        // holds the values, a writable one first.
        const memory_region *area = nullptr;
        for (bool writable : {true, false}) {
            for (const memory_region &r : prog_.regions()) {
                if (area == nullptr && (!writable || r.writable) && r.contains(d->values, 1)) {
                    area = &r;
                }
            }
        }
        if (area == nullptr) {
            return false;
        }
        llvm::Value *found = nullptr;
        if (d->stride != 0) {
            llvm::Value *key =
                b_.CreateAlignedLoad(i32_, b_.CreateIntToPtr(reg(2), ptr_), llvm::MaybeAlign(1));
            found = b_.CreateICmpULT(key, b_.getInt32(d->max_entries));
            llvm::Value *value =
                b_.CreateAdd(b_.getInt64(d->values),
                             b_.CreateMul(b_.CreateZExt(key, i64_), b_.getInt64(d->stride)));
            set_reg(0, b_.CreateSelect(found, value, b_.getInt64(0)));
        } else {
            auto *ty = llvm::FunctionType::get(i64_, {i64_, i64_}, false);
            llvm::Value *r0 =
                b_.CreateCall(ty, const_ptr(address_of(d->find)),
                              {b_.getInt64(reinterpret_cast<uint64_t>(d->map)), reg(2)});
            found = b_.CreateICmpNE(r0, b_.getInt64(0));
            set_reg(0, r0);
        }
        if (d->value_size != 0 && d->value_size <= (d->stride != 0 ? d->stride : UINT32_MAX)) {
            looked_up_ = value_pointer{pc, d->value_size, area->writable, false};
        }
        if (checked_ && area->size >= max_access) {
            auto update = [&](llvm::Value *slot, uint64_t v) {
                b_.CreateStore(b_.CreateSelect(found, b_.getInt64(v), b_.CreateLoad(i64_, slot)),
                               slot);
            };
            // An array's value is often a program's working memory (a scratch area), used all
            // along: it becomes the near cache. A hash map's value, whose accesses after the
            // test against null need no check, goes to the far cache: the near cache (and
            // checks against it that a loop could hoist) stays.
            const bool near = d->stride != 0;
            update(near ? near_[0] : read_lo_, area->start);
            update(near ? near_[1] : read_span_, area->size);
            if (area->writable) {
                update(near ? near_[2] : write_lo_, area->start);
                update(near ? near_[3] : write_span_, area->size);
            }
        }
        return true;
    }

    // A helper that handed out a region (a map value) is usually followed by accesses to it:
    // the region becomes the near cache.
    void take_handed_region() {
        if (!checked_) {
            return;
        }
        const size_t at = offsetof(jit_state, handed);
        llvm::Value *start = load_state(at + offsetof(memory_region, start));
        llvm::Value *size = load_state(at + offsetof(memory_region, size));
        llvm::Value *writable = b_.CreateICmpNE(
            b_.CreateLoad(i8_, state_field(at + offsetof(memory_region, writable))), b_.getInt8(0));
        llvm::Value *fresh = b_.CreateICmpUGE(size, b_.getInt64(max_access));
        llvm::Value *fresh_writable = b_.CreateAnd(fresh, writable);
        auto update = [&](llvm::Value *slot, llvm::Value *cond, llvm::Value *v) {
            b_.CreateStore(b_.CreateSelect(cond, v, b_.CreateLoad(i64_, slot)), slot);
        };
        update(near_[0], fresh, start);
        update(near_[1], fresh, size);
        update(near_[2], fresh_writable, start);
        update(near_[3], fresh_writable, size);
        store_state(at + offsetof(memory_region, size), b_.getInt64(0));
    }

    // run_context::stack = [lo, stack_top).
    void set_helper_stack(llvm::Value *lo) {
        llvm::Value *region = b_.CreateIntToPtr(load_state(offsetof(jit_state, rc_stack)), ptr_);
        llvm::Value *top = load_state(offsetof(jit_state, stack_top));
        b_.CreateStore(lo,
                       b_.CreateConstInBoundsGEP1_64(i8_, region, offsetof(memory_region, start)));
        b_.CreateStore(b_.CreateSub(top, lo),
                       b_.CreateConstInBoundsGEP1_64(i8_, region, offsetof(memory_region, size)));
    }

    void emit_local_call(size_t pc, const ebpf_inst &inst) {
        const size_t target = call_target(inst, pc);
        check_budget(pc);
        fault_if(
            b_.CreateICmpUGE(b_.CreateAdd(depth_, b_.getInt64(1)), b_.getInt64(max_call_depth)),
            fault_depth, pc);
        // The callee's frame is [fp - 1024, fp - 512), zeroed as the interpreter does.
        llvm::Value *callee_fp = b_.CreateSub(fp_, b_.getInt64(stack_frame_size));
        b_.CreateMemSet(
            b_.CreateIntToPtr(b_.CreateSub(callee_fp, b_.getInt64(stack_frame_size)), ptr_),
            b_.getInt8(0), stack_frame_size, llvm::MaybeAlign(1));
        if (checked_) {
            store_state(offsetof(jit_state, budget), b_.CreateLoad(i64_, budget_));
        }
        std::vector<llvm::Value *> args{state_};
        for (int r = 0; r < 10; r++) {
            args.push_back(reg(r));
        }
        args.push_back(callee_fp);
        args.push_back(b_.CreateAdd(depth_, b_.getInt64(1)));
        // Helpers the callee calls check its pointers against run_context::stack: the callee's
        // frame and its callers', as the interpreter keeps it.
        set_helper_stack(b_.CreateSub(callee_fp, b_.getInt64(stack_frame_size)));
        auto *call = b_.CreateCall(fn_ty_, functions_.at(target), args);
        call->setCallingConv(llvm::CallingConv::Fast);
        return_if_faulted();
        set_helper_stack(stack_lo_);
        for (unsigned r = 0; r <= 5; r++) {
            set_reg(static_cast<int>(r), b_.CreateExtractValue(call, r));
        }
        if (checked_) {
            b_.CreateStore(load_state(offsetof(jit_state, budget)), budget_);
        }
    }

    void emit_function(const function_plan &plan) {
        fn_ = functions_.at(plan.entry);
        auto arg = fn_->arg_begin();
        state_ = &*arg++;
        auto *entry = new_block("entry");
        b_.SetInsertPoint(entry);
        for (size_t r = 0; r < 10; r++) {
            regs_[r] = b_.CreateAlloca(i64_, nullptr, "r" + std::to_string(r));
        }
        budget_ = b_.CreateAlloca(i64_, nullptr, "budget");
        for (auto &slot : near_) {
            slot = b_.CreateAlloca(i64_, nullptr, "near");
        }
        // The far caches stay in the run's state, where the runtime refills them: values kept
        // in registers would need phis at every join of the function, whose number grows with
        // blocks times joins (a program of 3000 blocks took seconds to compile).
        read_lo_ = state_field(offsetof(jit_state, read_lo));
        read_span_ = state_field(offsetof(jit_state, read_span));
        write_lo_ = state_field(offsetof(jit_state, write_lo));
        write_span_ = state_field(offsetof(jit_state, write_span));
        for (size_t r = 0; r < 10; r++) {
            b_.CreateStore(&*arg++, regs_[r]);
        }
        fp_ = &*arg++;
        depth_ = &*arg++;
        rc_ = b_.CreateIntToPtr(load_state(offsetof(jit_state, rc)), ptr_);
        helper_failed_ = b_.CreateIntToPtr(load_state(offsetof(jit_state, helper_failed)), ptr_);
        stack_lo_ = b_.CreateSub(fp_, b_.getInt64(prog_.entry_frame_reach()));
        stack_span_ = b_.CreateSub(load_state(offsetof(jit_state, stack_top)), stack_lo_);
        if (checked_) {
            b_.CreateStore(load_state(offsetof(jit_state, budget)), budget_);
            b_.CreateStore(b_.CreateLoad(i64_, read_lo_), near_[0]);
            b_.CreateStore(b_.CreateLoad(i64_, read_span_), near_[1]);
            b_.CreateStore(b_.CreateLoad(i64_, write_lo_), near_[2]);
            b_.CreateStore(b_.CreateLoad(i64_, write_span_), near_[3]);
        }
        fault_ret_ = new_block("fault");
        blocks_.clear();
        value_ptr_at_jump_.clear();
        for (size_t pc = 0; pc < insns_.size(); pc++) {
            if (plan.reachable[pc] && plan.leader[pc]) {
                blocks_[pc] = new_block(("pc" + std::to_string(pc)).c_str());
            }
        }
        b_.CreateBr(blocks_.at(plan.entry));

        bool open = false; // the current block has no terminator yet
        for (size_t pc = 0; pc < insns_.size(); pc++) {
            if (!plan.reachable[pc]) {
                continue;
            }
            if (plan.leader[pc]) {
                if (open) {
                    b_.CreateBr(blocks_.at(pc));
                }
                b_.SetInsertPoint(blocks_.at(pc));
                open = true;
                fp_offset_.fill(std::nullopt);
                fp_offset_[frame_pointer] = 0;
                loaded_.fill(std::nullopt);
                value_ptr_ = value_pointers_entering(plan, pc);
                if (plan.loop_head[pc]) {
                    // Loops stop here once the instructions before this entry exhausted the
                    // budget. Testing at the head rather than at the backward jump leaves the
                    // loop's latch to its own exit test, the shape LLVM's loop passes want.
                    check_budget(pc);
                }
                if (checked_) {
                    // An add of a negative constant: what hoist_checks follows.
                    b_.CreateStore(
                        b_.CreateAdd(b_.CreateLoad(i64_, budget_),
                                     b_.getInt64(-static_cast<int64_t>(block_length(plan, pc)))),
                        budget_);
                }
            }
            const ebpf_inst &inst = insns_[pc];
            const opcode_info *info = find_opcode(inst.opcode);
            // Loads and stores see the offsets before their own instruction.
            struct tracker {
                translator &t;
                const ebpf_inst &inst;
                ~tracker() { t.track_registers(inst); }
            } after{*this, inst};
            switch (info->kind) {
            case op_kind::alu:
            case op_kind::neg:
            case op_kind::endian:
                emit_alu(inst);
                break;
            case op_kind::lddw:
                set_reg(
                    inst.dst,
                    b_.getInt64(
                        static_cast<uint32_t>(inst.imm) |
                        (static_cast<uint64_t>(static_cast<uint32_t>(insns_[pc + 1].imm)) << 32)));
                pc++;
                break;
            case op_kind::ldx:
                emit_load(pc, inst, false);
                break;
            case op_kind::ldsx:
                emit_load(pc, inst, true);
                break;
            case op_kind::st:
                emit_store(pc, inst, imm64(inst.imm));
                break;
            case op_kind::stx:
                emit_store(pc, inst, reg(inst.src));
                break;
            case op_kind::atomic:
                emit_atomic(pc, inst);
                break;
            case op_kind::ja:
                b_.CreateBr(blocks_.at(jump_target(inst, pc)));
                open = false;
                break;
            case op_kind::jcond:
                value_ptr_at_jump_[pc] = value_ptr_;
                if (auto tree = find_compare_tree(insns_, plan, pc)) {
                    emit_switch(pc, *tree);
                }
                b_.CreateCondBr(emit_condition(inst), blocks_.at(jump_target(inst, pc)),
                                blocks_.at(pc + 1));
                open = false;
                break;
            case op_kind::call:
            case op_kind::callx:
                if (is_local_call(inst)) {
                    emit_local_call(pc, inst);
                } else {
                    emit_helper_call(pc, inst);
                }
                break;
            case op_kind::exit:
                check_budget(pc);
                if (checked_) {
                    store_state(offsetof(jit_state, budget), b_.CreateLoad(i64_, budget_));
                }
                emit_return(reg(0), {reg(1), reg(2), reg(3), reg(4), reg(5)});
                open = false;
                break;
            }
        }
        b_.SetInsertPoint(fault_ret_);
        llvm::Value *z = b_.getInt64(0);
        emit_return(z, {z, z, z, z, z});
    }

    // The map value pointers a block starting at pc begins with: those of its one predecessor
    // when that is a conditional jump it is the not-null way of (`if rX == 0` falling through,
    // `if rX != 0` jumping), with the pointer rX holds (and its copies) known not null.
    value_pointers value_pointers_entering(const function_plan &plan, size_t pc) {
        value_pointers out{};
        if (plan.preds[pc] != 1 || plan.pred[pc] == SIZE_MAX) {
            return out;
        }
        const size_t from = plan.pred[pc];
        auto saved = value_ptr_at_jump_.find(from);
        const ebpf_inst &test = insns_[from];
        if (saved == value_ptr_at_jump_.end() || test.opcode & src_x || test.imm != 0 ||
            op_class(test.opcode) != cls_jmp) {
            return out;
        }
        const size_t target = jump_target(test, from);
        const bool not_null_way =
            target != from + 1 && (((test.opcode & 0xf0) == jmp_jeq && pc == from + 1) ||
                                   ((test.opcode & 0xf0) == jmp_jne && pc == target));
        const auto &tested = saved->second[test.dst];
        if (!not_null_way || !tested) {
            return out;
        }
        for (size_t r = 0; r < register_count; r++) {
            if (saved->second[r] && saved->second[r]->lookup == tested->lookup) {
                out[r] = saved->second[r];
                out[r]->not_null = true;
            }
        }
        return out;
    }

    // The compare tree at pc as a switch. Each way through the tree gets a block that counts
    // the tree's instructions it passes (and tests the budget where the way passes a loop
    // head), then goes on at the tree's leaf; values outside the switch's range go on to the
    // tree's root compare, which the caller emits in the block this leaves open.
    void emit_switch(size_t pc, const compare_tree &tree) {
        const ebpf_inst &root = insns_[pc];
        const bool wide = op_class(root.opcode) == cls_jmp;
        llvm::IntegerType *ty = wide ? b_.getInt64Ty() : b_.getInt32Ty();
        auto *outside = new_block("tree");
        auto *sw = b_.CreateSwitch(b_.CreateTrunc(reg(root.dst), ty), outside,
                                   static_cast<unsigned>(tree.leaves.size()));
        std::map<compare_tree::way, llvm::BasicBlock *> ways;
        for (size_t i = 0; i < tree.leaves.size(); i++) {
            const compare_tree::way &w = tree.leaves[i];
            auto [it, fresh] = ways.emplace(w, nullptr);
            if (fresh) {
                it->second = new_block("way");
                b_.SetInsertPoint(it->second);
                if (checked_) {
                    b_.CreateStore(b_.CreateAdd(b_.CreateLoad(i64_, budget_),
                                                b_.getInt64(-static_cast<int64_t>(w.passed))),
                                   budget_);
                    if (w.loop_head != SIZE_MAX) {
                        check_budget(w.loop_head);
                    }
                }
                b_.CreateBr(blocks_.at(w.leaf));
            }
            sw->addCase(llvm::ConstantInt::get(ty, tree.lo + i), it->second);
        }
        b_.SetInsertPoint(outside);
    }

    // uint64_t name(jit_state *, uint64_t r1, uint64_t r2, uint64_t fp): runs function 0.
    void emit_entry(const std::string &name) {
        auto *ty = llvm::FunctionType::get(i64_, {ptr_, i64_, i64_, i64_}, false);
        auto *fn = llvm::Function::Create(ty, llvm::Function::ExternalLinkage, name, mod_);
        fn->addFnAttr(llvm::Attribute::NoUnwind);
        auto arg = fn->arg_begin();
        llvm::Value *state = &*arg++;
        llvm::Value *r1 = &*arg++;
        llvm::Value *r2 = &*arg++;
        llvm::Value *fp = &*arg++;
        b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn));
        llvm::Value *z = b_.getInt64(0);
        auto *call =
            b_.CreateCall(fn_ty_, functions_.at(0), {state, z, r1, r2, z, z, z, z, z, z, z, fp, z});
        call->setCallingConv(llvm::CallingConv::Fast);
        b_.CreateRet(b_.CreateExtractValue(call, 0));
    }

    const program &prog_;
    std::span<const ebpf_inst> insns_;
    bool checked_;
    llvm::LLVMContext &ctx_;
    llvm::Module &mod_;
    llvm::IRBuilder<> b_;
    llvm::Type *i8_, *i16_, *i32_, *i64_;
    llvm::PointerType *ptr_;
    llvm::StructType *ret_ty_;
    llvm::FunctionType *fn_ty_;
    llvm::MDNode *unlikely_;
    llvm::MDNode *likely_;
    std::map<size_t, llvm::Function *> functions_;

    // The function being emitted.
    llvm::Function *fn_ = nullptr;
    llvm::Value *state_ = nullptr, *fp_ = nullptr, *depth_ = nullptr, *rc_ = nullptr,
                *helper_failed_ = nullptr, *stack_lo_ = nullptr, *stack_span_ = nullptr;
    std::array<llvm::Value *, 10> regs_{};
    // The near caches (read lo, read span, write lo, write span): set on entry and by helper
    // calls only, so in a loop without calls they are invariant and LLVM can hoist or drop
    // their checks. The far caches (read_lo_ ...) are refilled by every slow-path hit.
    std::array<llvm::Value *, 4> near_{};
    llvm::Value *budget_ = nullptr, *read_lo_ = nullptr, *read_span_ = nullptr,
                *write_lo_ = nullptr, *write_span_ = nullptr;
    // Registers known to hold r10 + offset in the current basic block.
    std::array<std::optional<int64_t>, register_count> fp_offset_{};
    // Registers that hold the value an lddw loaded, within the current block.
    std::array<std::optional<uint64_t>, register_count> loaded_{};
    // Map value pointers (value_pointer) by register.
    value_pointers value_ptr_{};
    std::optional<value_pointer> looked_up_; // what the call being emitted returns
    // value_ptr_ at the end of each block that ends in a conditional jump, by its pc.
    std::map<size_t, value_pointers> value_ptr_at_jump_;
    llvm::BasicBlock *fault_ret_ = nullptr;
    std::map<size_t, llvm::BasicBlock *> blocks_;
};

using entry_fn = uint64_t (*)(jit_state *, uint64_t, uint64_t, uint64_t);

// Loaded code of one tier; freed with the engine.
struct loaded_code {
    llvm::orc::ResourceTrackerSP tracker;
    entry_fn fn = nullptr;
    size_t blocks = 0; // basic blocks of the program's translation
};

// The largest program (in basic blocks of its translation, access checks included) the
// optimised tier compiles; larger ones keep the baseline code. Some passes and the register
// allocator grow faster than the program: 1,500 blocks took under a second, 3,000 blocks (200
// loops in a row) several seconds and 24,000 blocks (2,000 branches) 11 s.
constexpr size_t max_optimised_blocks = 2500;

result<loaded_code> compile(jit_host &host, const program &prog, bool checked, bool optimised) {
    static std::atomic<uint64_t> next_id{0};
    const std::string name = "bpftime_program_" + std::to_string(next_id++);
    llvm::orc::LLJIT &jit = host.jit();
    auto ctx = std::make_unique<llvm::LLVMContext>();
    auto mod = std::make_unique<llvm::Module>(name, *ctx);
    mod->setDataLayout(jit.getDataLayout());
    mod->setTargetTriple(jit.getTargetTriple().str());
    translator t(prog, checked, *ctx, *mod);
    if (auto err = t.translate(name); !err.empty()) {
        return make_error(EINVAL, err);
    }
    size_t blocks = 0;
    for (const llvm::Function &f : *mod) {
        blocks += f.size();
    }
    optimised = optimised && blocks <= max_optimised_blocks;
    auto object = host.emit(*mod, optimised);
    if (std::getenv("BPFTIME_JIT_DUMP") != nullptr) {
        // The IR as compiled (after the tier's passes), for looking at what the checks became.
        mod->print(llvm::errs(), nullptr);
    }
    if (!object) {
        return make_error(EINVAL, "the jit cannot compile the program: " +
                                      llvm_message(object.takeError()));
    }
    loaded_code code;
    code.tracker = jit.getMainJITDylib().createResourceTracker();
    if (auto e = jit.addObjectFile(code.tracker, std::move(*object))) {
        return make_error(EINVAL, "the jit cannot load the program: " + llvm_message(std::move(e)));
    }
    auto sym = jit.lookup(name);
    if (!sym) {
        std::string why = llvm_message(sym.takeError());
        llvm::consumeError(code.tracker->remove());
        return make_error(EINVAL, "the jit cannot link the program: " + why);
    }
    code.fn = sym->toPtr<entry_fn>();
    code.blocks = blocks;
    return code;
}

// Background compiles still running in this process. A process that exits while one runs
// would destroy LLVM's static objects under it, so exit waits for them (boundedly) first, and
// no new one starts. A forked child has none of its parent's threads.
class background_compiles {
public:
    static background_compiles &get() {
        static auto *bg = [] {
            auto *b = new background_compiles(); // never destroyed: threads may outlive exit
            std::atexit([] { get().wait_at_exit(); });
            pthread_atfork(nullptr, nullptr, [] { get().running_ = 0; });
            return b;
        }();
        return *bg;
    }

    bool begin() {
        std::lock_guard lock(mu_);
        if (exiting_) {
            return false;
        }
        running_++;
        return true;
    }

    void end() {
        std::lock_guard lock(mu_);
        running_--;
        cv_.notify_all();
    }

private:
    void wait_at_exit() {
        std::unique_lock lock(mu_);
        exiting_ = true;
        cv_.wait_for(lock, std::chrono::seconds(5), [this] { return running_ == 0; });
    }

    std::mutex mu_;
    std::condition_variable cv_;
    int running_ = 0;
    bool exiting_ = false;
};

class jit_engine final : public engine {
public:
    jit_engine(const program &prog, bool checked, jit_host &host, loaded_code first)
        : prog_(prog), checked_(checked), host_(host), first_(std::move(first)), fn_(first_.fn) {}

    ~jit_engine() override {
        if (worker_.joinable()) {
            worker_.join();
        }
        for (loaded_code *c : {&first_, &second_}) {
            if (c->tracker) {
                llvm::consumeError(c->tracker->remove());
            }
        }
    }

    // Compiles the optimised tier on a thread of its own and switches to it when it is ready;
    // runs keep using the baseline code until then.
    void optimise_in_background() {
        background_compiles &bg = background_compiles::get(); // registers the exit wait now
        worker_ = std::thread([this, &bg] {
            if (!bg.begin()) {
                return; // the process is exiting: the baseline code stays
            }
            auto code = compile(host_, prog_, checked_, true);
            if (code) {
                second_ = std::move(*code);
                fn_.store(second_.fn, std::memory_order_release);
            }
            bg.end();
        });
    }

    engine_kind kind() const override { return engine_kind::jit; }

    result<uint64_t> run(void *mem, uint64_t mem_len, const run_options &opts) override {
        run_setup run(prog_, mem, mem_len, opts);
        const uint64_t stack_top = run.top;
        const memory_region &input = run.input;
        run_context &rc = run.rc;
        jit_state s; // every field is set below
        s.handed = {};
        s.fault = no_fault;
        // The caches start on the input memory, or the entry frame when it is too small.
        s.read_lo = s.write_lo = rc.stack.start;
        s.read_span = s.write_span = rc.stack.size;
        if (input.size >= max_access) {
            s.read_lo = input.start;
            s.read_span = input.size;
            if (input.writable) {
                s.write_lo = input.start;
                s.write_span = input.size;
            }
        }
        const uint64_t budget =
            std::min<uint64_t>(opts.instruction_budget, static_cast<uint64_t>(INT64_MAX));
        s.budget = static_cast<int64_t>(budget);
        s.stack_top = stack_top;
        s.rc = &rc;
        s.helper_failed = rc.failed_flag();
        s.rc_stack = &rc.stack;
        rc.set_region_sink(&s.handed);
        s.prog = &prog_;
        entry_fn fn = fn_.load(std::memory_order_acquire);
        uint64_t r0 = fn(&s, reinterpret_cast<uint64_t>(mem), mem_len, stack_top);
        if (s.fault != no_fault) {
            return fault(s, rc, opts);
        }
        if (opts.executed != nullptr) {
            *opts.executed = checked_ ? budget - static_cast<uint64_t>(s.budget) : 0;
        }
        return r0;
    }

private:
    error fault(const jit_state &s, const run_context &rc, const run_options &opts) const {
        auto at = [&](int code, const std::string &why) {
            return fault_at(prog_.insns(), s.fault_pc, code, why);
        };
        switch (s.fault) {
        case fault_access:
            return at(fault_out_of_bounds,
                      outside_message(s.fault_write != 0, s.fault_len, s.fault_addr));
        case fault_misaligned:
            return at(fault_out_of_bounds, misaligned_message(s.fault_addr, s.fault_len));
        case fault_exhausted:
            return at(fault_budget, budget_message(opts.instruction_budget));
        case fault_depth:
            return at(fault_call_depth, call_depth_message());
        case fault_unknown_helper:
            return at(fault_bad_helper, unknown_helper_message(s.fault_addr));
        default:
            return at(fault_helper, rc.failure());
        }
    }

    const program &prog_;
    bool checked_;
    jit_host &host_;
    loaded_code first_;
    loaded_code second_; // the optimised tier, when it came later
    std::atomic<entry_fn> fn_;
    std::thread worker_;
};

} // namespace

result<std::unique_ptr<engine>> make_jit(const program &prog, const engine_options &opts) {
    auto host = jit_host::get();
    if (!host) {
        return std::move(host).err();
    }
    const bool checked = !opts.unchecked;
    const bool optimised_first = opts.tier == jit_tier::optimised;
    auto code = compile(**host, prog, checked, optimised_first);
    if (!code) {
        return std::move(code).err();
    }
    const bool worth_optimising = code->blocks <= max_optimised_blocks;
    auto eng = std::make_unique<jit_engine>(prog, checked, **host, std::move(*code));
    if (opts.tier == jit_tier::tiered && worth_optimising) {
        eng->optimise_in_background();
    }
    return std::unique_ptr<engine>(std::move(eng));
}

} // namespace bpftime::vm
