// SPDX-License-Identifier: MIT
// Control flow of the functions the JIT translates, and compare trees recovered as switches.
#include "plan.hpp"

#include "../run_setup.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>

namespace bpftime::vm::jit {

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

bool is_immediate_compare(const ebpf_inst &inst) {
    return find_opcode(inst.opcode)->kind == op_kind::jcond && (inst.opcode & src_x) == 0;
}

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
        for (size_t next : {static_cast<size_t>(jump_target(insns[at], at)), at + 1}) {
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
                                    ? static_cast<size_t>(jump_target(insns[at], at))
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

} // namespace bpftime::vm::jit
