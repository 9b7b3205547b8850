// SPDX-License-Identifier: MIT
// The JIT's pass pipelines: the baseline tier's and the optimised tier's, with the JIT's own
// passes over the access and budget checks the translator marks.
#pragma once

namespace llvm {
class Module;
class TargetMachine;
} // namespace llvm

namespace bpftime::vm::jit {

// Metadata kinds that mark the compares of access checks (true: the access is allowed) and of
// budget checks (true: the budget is exhausted).
inline constexpr const char *check_kind = "bpftime.check";
inline constexpr const char *budget_kind = "bpftime.budget";
// Marks the run entry's stores of what only the runtime reads (the run's input, length, options
// and engine): the optimised tier drops them from a run that calls nothing (drop_unread_stores).
// The run's call of the engine after a fault, which reads them back (after the call whose fault
// it was), carries the mark too: it does not count as a call.
inline constexpr const char *lazy_kind = "bpftime.lazy";

// A checked program of one function with loops, which calls no helper: its direct entry
// branches on a call of this function (the budget run_budget gives, the one the options give,
// their executed pointer) to the run entry, which keeps the budget tests, or to its own copy of
// the run. bound_budget replaces the call. The optimised tier, when scalar evolution bounds the
// budget any test of the copy can find used (all its loops have a largest trip count), with
// `budget < bound || executed != null`: the copy loses its tests and its count. Otherwise, and
// in the baseline tier, with false: the copy keeps them, and the run entry goes.
inline constexpr const char *short_of_budget_name = "bpftime.short_of_budget";
// Marks the run entry's load of run_options::executed (bound_budget: null in a copy reached
// only when it is).
inline constexpr const char *executed_kind = "bpftime.executed";

// The largest loop (in LLVM's cost units) unswitching copies.
inline constexpr int unswitch_threshold = 1000;

// The baseline tier: registers become SSA values and nothing more, so code generation (with
// the fast instruction selector) takes a few milliseconds.
void promote_registers(llvm::Module &mod, llvm::TargetMachine &tm);

// The optimised tier, a short pipeline for code that arrives already optimised by clang:
// registers to SSA, subprograms inlined, redundant checks and loads merged, loop-invariant
// parts of the access checks hoisted, counted loops versioned so that a copy runs without
// their checks when one test before the loop proves they all pass (hoist_checks), and
// innermost loops vectorised. The full O2 pipeline would cost several times the compile time
// and find little more to do in code clang has optimised already.
void optimise(llvm::Module &mod, llvm::TargetMachine &tm);

} // namespace bpftime::vm::jit
