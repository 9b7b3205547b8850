// SPDX-License-Identifier: MIT
// The control flow of the eBPF functions the JIT translates: which instructions each function
// reaches and where its basic blocks and loops start, and trees of compares that were a switch.
#pragma once

#include <bpftime/vm/control_flow.hpp>
#include <bpftime/vm/isa.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

namespace bpftime::vm::jit {

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

// The plan of the function starting at entry; the entries of the functions it calls are added
// to callees.
function_plan plan_function(std::span<const ebpf_inst> insns, size_t entry,
                            std::vector<size_t> &callees);

// Whether a conditional jump compares with an immediate: what clang's lowering of a switch
// (eBPF has no indirect jump) makes its tree of compares from.
bool is_immediate_compare(const ebpf_inst &inst);

// Whether the conditional jump `inst` (with an immediate) is taken when its register holds v:
// the interpreter's conditions (BPFTIME_JUMP_CONDITIONS).
bool jump_taken(const ebpf_inst &inst, uint64_t v);

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
                                              const function_plan &plan, size_t pc);

} // namespace bpftime::vm::jit
