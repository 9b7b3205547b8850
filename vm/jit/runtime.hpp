// SPDX-License-Identifier: MIT
// What the JIT's generated code shares with the runtime: the per-run state it reads and writes
// by byte offset, the kinds of fault it records, and the runtime functions it calls by absolute
// address.
#pragma once

#include <bpftime/vm/vm.hpp>

#include <cstdint>

namespace bpftime::vm::jit {

// What the generated code shares with the runtime, by byte offset (offsetof).
// A run sets only the fields that change from run to run; what the runtime needs only when the
// program calls a helper or meets a slow-path access check (the run context's regions, the
// callback runner) is set up by rt_prepare when the code first needs it, so a short program
// that calls no helper pays for none of it. fault and handed are 0 between runs: the run that
// set them clears them.
struct jit_state {
    // The far caches: the read cache [read_lo, read_lo + read_span) is a region the program
    // may read, the write cache one it may write. Once rc_ready is set both hold a region of at
    // least max_access bytes (at worst the entry frame), so span - n never wraps and one
    // compare decides; before, code does not read them (the run entry hands the near caches
    // to the code in registers, and rt_prepare starts these).
    uint64_t read_lo;
    uint64_t read_span;
    uint64_t write_lo;
    uint64_t write_span;
    // Instructions left (below zero means exhausted): the code keeps it in registers and
    // stores it here only for what reads it here (a helper that runs a callback, a tail call).
    int64_t budget;
    uint64_t stack_top; // one past the entry frame
    run_context *rc;
    const bool *helper_failed;
    // run_context::stack, which helpers check pointers against (run_context is not standard
    // layout, so generated code cannot find it through rc).
    memory_region *rc_stack;
    const program *prog;  // set by rt_prepare, from engine
    memory_region handed; // the last region a helper handed out (run_context's sink)
    uint64_t fault;       // a fault_kind, 0 while the run is going
    // Where and what the fault was; meaningful only once fault is set.
    uint64_t fault_pc;
    uint64_t fault_addr;
    uint64_t fault_len;
    uint64_t fault_write;
    // What rt_prepare needs: this run's input, options and code (a loaded_code of the engine).
    void *mem;
    uint64_t mem_len;
    const run_options *opts;
    const void *engine; // the jit_engine running (its code runs callbacks)
    uint64_t rc_ready;  // 1 once rt_prepare set up rc for this run
};

// Where the entries the JIT emits for a program find a thread's run state, and what they call
// when they cannot run on it. The direct entry reads the thread's state pointer at tls_offset
// from the thread pointer (an initial-exec thread-local, at the same offset in every thread)
// and runs there when the state is not busy (its run sequence even); otherwise (no state yet, a run
// inside a run, a thread past its exit) the engine finds a state (elsewhere) and calls the run
// entry with it. After a fault the run entry hands the run to the engine (faulted).
struct direct_layout {
    int64_t tls_offset = 0;
    uint64_t seq = 0;       // offsets in the thread's state: its run sequence (odd: busy),
    uint64_t stack_top = 0; // one past the entry frame,
    uint64_t state = 0;     // the jit_state
    // run_status (*)(engine &, void *mem, uint64_t mem_len, const run_options &)
    uint64_t elsewhere = 0;
    // run_status (*)(engine &, void *mem, uint64_t mem_len, const run_options &, state):
    // finishes a run that faulted (or asked for a tail call) and frees the state
    uint64_t faulted = 0;
    // The same two through wrappers that keep the vector state, for vector-free code.
    uint64_t elsewhere_keeping = 0;
    uint64_t faulted_keeping = 0;
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

// Sets up the run context for this run (its stack, input and regions, the callback runner);
// generated code calls it before its first helper call or local call when rc_ready is 0.
void rt_prepare(jit_state *s);

// Records a fault of this kind at pc.
void rt_fault(jit_state *s, uint64_t kind, uint64_t pc, uint64_t addr, uint64_t len);

// The slow path of an access check: 1 when a region allows it (the far cache is refilled),
// else 0 with the fault recorded.
uint64_t rt_check(jit_state *s, uint64_t addr, uint64_t len, uint64_t write, uint64_t pc);

// callx: calls the helper whose id the program computed, or records that there is none.
uint64_t rt_callx(jit_state *s, uint64_t id, uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                  uint64_t r5, uint64_t pc);

// rt_prepare, rt_fault and rt_check as vector-free code calls them (translator::vector_free):
// through wrappers that keep the vector state around the C++ runtime.
struct keeping_vectors {
    uint64_t prepare, fault, check;
};
const keeping_vectors &keeping();

// rt_prepare, rt_fault and rt_check as other code calls them: through wrappers that keep every
// general-purpose register but r11 (LLVM's preserve_most convention), so that what the code
// keeps across a slow path that rarely runs needs no callee-saved register of its own, which
// its entry would push and its exit pop on every run.
struct preserving_most {
    uint64_t prepare, fault, check;
};
const preserving_most &preserving();

// A function's address, as generated code calls it.
template <class F>
uint64_t address_of(F *fn) {
    return reinterpret_cast<uint64_t>(fn);
}

} // namespace bpftime::vm::jit
