// SPDX-License-Identifier: MIT
// How much of the entry frame a program can reach (program::entry_frame_reach).
//
// Safety does not rest on this answer: both engines check every stack access against the
// reachable part (or prove it inside at compile time), so a wrong answer makes a program fault,
// never read what another run left. The analysis only has to be generous enough that real
// programs never meet the limit.
//
// It follows r10 + a constant through each straight run of instructions, as the JIT does to
// skip checks. The answer is the lowest offset any access or helper argument uses, as long as
// no pointer into the frame can be used anywhere else: one spilled to memory, changed by
// anything but add or sub of a constant, still held in r0-r9 when control flow joins, or handed
// to a local function. Any of these, or a local call at all, makes the answer the whole frame.
// Helpers read and write upwards from the pointers they get (up to the length they are given,
// checked against the same stack region), so a pointer handed to a helper counts at its own
// offset; after a helper call r0-r5 count as dead, as in the kernel's verifier.
#include "frame_reach.hpp"

#include <bpftime/vm/control_flow.hpp>

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

namespace bpftime::vm {

size_t frame_reach(std::span<const ebpf_inst> insns) {
    constexpr int64_t whole = static_cast<int64_t>(stack_frame_size);
    // Where basic blocks start: jump targets and the instruction after a jump.
    std::vector<bool> leader(insns.size() + 1, false);
    for (size_t pc = 0; pc < insns.size(); pc++) {
        const ebpf_inst &inst = insns[pc];
        const opcode_info *info = find_opcode(inst.opcode);
        if (info == nullptr) {
            return stack_frame_size;
        }
        if (is_local_call(inst)) {
            return stack_frame_size; // callee frames sit below the entry frame
        }
        if (info->kind == op_kind::ja || info->kind == op_kind::jcond) {
            const int64_t to = jump_target(inst, pc);
            if (to < 0 || static_cast<size_t>(to) >= insns.size()) {
                return stack_frame_size;
            }
            leader[static_cast<size_t>(to)] = true;
            leader[pc + 1] = true;
        }
        if (info->kind == op_kind::lddw) {
            pc++;
        }
    }

    std::array<std::optional<int64_t>, register_count> known{};
    int64_t lowest = 0;
    auto reach = [&](int64_t at) { lowest = std::min(lowest, at); };
    // True when a pointer into the frame other than r10 itself is live in a register.
    auto holds_pointer = [&] {
        for (int r = 0; r < frame_pointer; r++) {
            if (known[static_cast<size_t>(r)]) {
                return true;
            }
        }
        return false;
    };
    auto restart = [&] {
        known.fill(std::nullopt);
        known[frame_pointer] = 0;
    };
    restart();
    for (size_t pc = 0; pc < insns.size(); pc++) {
        if (leader[pc]) {
            if (holds_pointer()) {
                return stack_frame_size;
            }
            restart();
        }
        const ebpf_inst &inst = insns[pc];
        const opcode_info *info = find_opcode(inst.opcode);
        auto &dst = known[inst.dst];
        const std::optional<int64_t> src =
            inst.src < register_count ? known[inst.src] : std::nullopt;
        const bool x = (inst.opcode & src_x) != 0;
        switch (info->kind) {
        case op_kind::alu: {
            const uint8_t op = inst.opcode & 0xf0;
            const bool wide = op_class(inst.opcode) == cls_alu64;
            if (op == alu_mov) {
                if (!x) {
                    dst.reset();
                } else if (src && (!wide || inst.offset != 0)) {
                    return stack_frame_size; // a truncated or sign-extended frame pointer
                } else {
                    dst = src;
                }
            } else if (x && src) {
                return stack_frame_size; // a frame pointer mixed into another value
            } else if (dst) {
                if (!wide || x || (op != alu_add && op != alu_sub)) {
                    return stack_frame_size;
                }
                *dst += op == alu_add ? inst.imm : -static_cast<int64_t>(inst.imm);
                if (*dst < -whole || *dst > whole) {
                    return stack_frame_size;
                }
            }
            break;
        }
        case op_kind::neg:
        case op_kind::endian:
            if (dst) {
                return stack_frame_size;
            }
            break;
        case op_kind::lddw:
            dst.reset();
            pc++;
            break;
        case op_kind::ldx:
        case op_kind::ldsx:
            if (src) {
                reach(*src + inst.offset);
            }
            dst.reset();
            break;
        case op_kind::st:
            if (dst) {
                reach(*dst + inst.offset);
            }
            break;
        case op_kind::stx:
        case op_kind::atomic:
            if (src) {
                return stack_frame_size; // a frame pointer written to memory
            }
            if (dst) {
                reach(*dst + inst.offset);
            }
            if (info->kind == op_kind::atomic) {
                if (inst.imm == atomic_cmpxchg) {
                    known[0].reset();
                } else if ((inst.imm & atomic_fetch) != 0) {
                    known[inst.src].reset();
                }
            }
            break;
        case op_kind::call:
        case op_kind::callx:
            for (int r = 1; r <= 5; r++) {
                if (auto &a = known[static_cast<size_t>(r)]) {
                    reach(*a);
                }
            }
            for (int r = 0; r <= 5; r++) {
                known[static_cast<size_t>(r)].reset();
            }
            break;
        case op_kind::ja:
        case op_kind::jcond:
        case op_kind::exit:
            if (holds_pointer() && info->kind != op_kind::exit) {
                return stack_frame_size;
            }
            break;
        }
    }
    if (lowest < -whole) {
        return stack_frame_size;
    }
    // Whole 16-byte lines, at least one access's worth (engines keep a cached region of at
    // least 8 bytes).
    const auto bytes = static_cast<size_t>(-lowest);
    return std::clamp<size_t>((bytes + 15) & ~size_t{15}, 16, stack_frame_size);
}

} // namespace bpftime::vm
