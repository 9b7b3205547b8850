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
#include <bitset>
#include <optional>
#include <vector>

namespace bpftime::vm {

namespace {

// How an ALU, neg or endian instruction changes dst, the frame offset its destination register
// holds (src: its source register's), or false when a frame pointer cannot be followed through
// it: truncated, sign-extended, mixed into another value or moved out of the frame.
bool follow_alu(const ebpf_inst &inst, op_kind kind, std::optional<int64_t> &dst,
                std::optional<int64_t> src) {
    constexpr int64_t whole = static_cast<int64_t>(stack_frame_size);
    if (kind != op_kind::alu) {
        return !dst;
    }
    const bool x = (inst.opcode & src_x) != 0;
    const uint8_t op = inst.opcode & 0xf0;
    const bool wide = op_class(inst.opcode) == cls_alu64;
    if (op == alu_mov) {
        if (!x) {
            dst.reset();
        } else if (src && (!wide || inst.offset != 0)) {
            return false;
        } else {
            dst = src;
        }
    } else if (x && src) {
        return false;
    } else if (dst) {
        if (!wide || x || (op != alu_add && op != alu_sub)) {
            return false;
        }
        *dst += op == alu_add ? inst.imm : -static_cast<int64_t>(inst.imm);
        if (*dst < -whole || *dst > whole) {
            return false;
        }
    }
    return true;
}

} // namespace

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
        switch (info->kind) {
        case op_kind::alu:
        case op_kind::neg:
        case op_kind::endian:
            if (!follow_alu(inst, info->kind, dst, src)) {
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

// Which frame bytes a run must zero: a forward dataflow over the entry function's basic blocks
// of the bytes written on every path so far (joins keep those written on all incoming paths).
// A read of a byte not in that set, by a load, an atomic operation or a helper given a pointer
// below it (helpers may read upwards from a pointer to the top of the frame), needs the byte
// zeroed. Pointers into the frame are followed as frame_reach follows them, one block at a
// time: pointers into the frame come only from r10 (helpers return none), so a program whose
// pointers frame_reach can follow reads the frame only where this sees it.
uint64_t frame_words_to_zero(std::span<const ebpf_inst> insns, size_t reach) {
    const size_t words = std::min<size_t>(reach, stack_frame_size) / 8;
    const uint64_t every = words >= 64 ? ~uint64_t{0} : (uint64_t{1} << words) - 1;
    using bytes = std::bitset<stack_frame_size>; // bit i: the byte at offset -(i + 1)
    constexpr int64_t whole = static_cast<int64_t>(stack_frame_size);
    const size_t n = insns.size();
    std::vector<bool> leader(n + 1, false);
    leader[0] = true;
    for (size_t pc = 0; pc < n; pc++) {
        const ebpf_inst &inst = insns[pc];
        const opcode_info *info = find_opcode(inst.opcode);
        if (info == nullptr || is_local_call(inst)) {
            return every;
        }
        if (info->kind == op_kind::ja || info->kind == op_kind::jcond) {
            const int64_t to = jump_target(inst, pc);
            if (to < 0 || static_cast<size_t>(to) >= n) {
                return every;
            }
            leader[static_cast<size_t>(to)] = true;
        }
        if (info->kind == op_kind::lddw) {
            pc++;
        }
        if (info->kind == op_kind::ja || info->kind == op_kind::jcond ||
            info->kind == op_kind::exit) {
            leader[pc + 1] = true;
        }
    }
    bytes needed;
    // [at, at + len) as bits, or nothing when part of it lies outside the frame.
    auto range = [&](int64_t at, int64_t len) -> std::optional<bytes> {
        if (at < -whole || len <= 0 || at + len > 0) {
            return std::nullopt;
        }
        bytes b;
        for (int64_t o = at; o < at + len; o++) {
            b.set(static_cast<size_t>(-o - 1));
        }
        return b;
    };
    // Runs the block at start with `written` on entry; false when the program's frame pointers
    // cannot be followed. Fills the successors and leaves what is written at its end.
    auto run_block = [&](size_t start, bytes &written, std::vector<size_t> &next) {
        std::array<std::optional<int64_t>, register_count> known{};
        known[frame_pointer] = 0;
        auto holds_pointer = [&] {
            for (int r = 0; r < frame_pointer; r++) {
                if (known[static_cast<size_t>(r)]) {
                    return true;
                }
            }
            return false;
        };
        auto read = [&](int64_t at, int64_t len) {
            auto b = range(at, len);
            if (b) {
                needed |= *b & ~written;
            }
            return b.has_value();
        };
        for (size_t pc = start; pc < n; pc++) {
            if (pc != start && leader[pc]) {
                next.push_back(pc);
                return !holds_pointer();
            }
            const ebpf_inst &inst = insns[pc];
            const opcode_info *info = find_opcode(inst.opcode);
            auto &dst = known[inst.dst];
            const std::optional<int64_t> src =
                inst.src < register_count ? known[inst.src] : std::nullopt;
            const auto size = static_cast<int64_t>(access_size(inst.opcode));
            switch (info->kind) {
            case op_kind::alu:
            case op_kind::neg:
            case op_kind::endian:
                if (!follow_alu(inst, info->kind, dst, src)) {
                    return false;
                }
                break;
            case op_kind::lddw:
                dst.reset();
                pc++;
                break;
            case op_kind::ldx:
            case op_kind::ldsx:
                if (src && !read(*src + inst.offset, size)) {
                    return false;
                }
                dst.reset();
                break;
            case op_kind::st:
            case op_kind::stx:
            case op_kind::atomic:
                if (info->kind != op_kind::st && src) {
                    return false; // a frame pointer written to memory
                }
                if (dst) {
                    // An atomic operation reads the bytes before it writes them.
                    if (info->kind == op_kind::atomic && !read(*dst + inst.offset, size)) {
                        return false;
                    }
                    auto b = range(*dst + inst.offset, size);
                    if (!b) {
                        return false;
                    }
                    written |= *b;
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
                    if (auto &a = known[static_cast<size_t>(r)]; a && !read(*a, -*a)) {
                        return false;
                    }
                }
                for (int r = 0; r <= 5; r++) {
                    known[static_cast<size_t>(r)].reset();
                }
                break;
            case op_kind::ja:
                next.push_back(static_cast<size_t>(jump_target(inst, pc)));
                return !holds_pointer();
            case op_kind::jcond:
                next.push_back(static_cast<size_t>(jump_target(inst, pc)));
                next.push_back(pc + 1);
                return !holds_pointer();
            case op_kind::exit:
                return true;
            }
        }
        return true; // falls off the end (the validator refuses such programs)
    };
    // What is written on every path to each block's start: all of it until a path reaches it.
    std::vector<std::optional<bytes>> in(n + 1);
    in[0] = bytes{};
    std::vector<size_t> work{0};
    while (!work.empty()) {
        const size_t start = work.back();
        work.pop_back();
        bytes written = *in[start];
        std::vector<size_t> next;
        if (!run_block(start, written, next)) {
            return every;
        }
        for (size_t to : next) {
            if (to >= n) {
                continue;
            }
            bytes joined = in[to] ? (*in[to] & written) : written;
            if (!in[to] || joined != *in[to]) {
                in[to] = joined;
                work.push_back(to);
            }
        }
    }
    uint64_t mask = 0;
    for (size_t w = 0; w < words; w++) {
        for (size_t i = w * 8; i < w * 8 + 8; i++) {
            if (needed.test(i)) {
                mask |= uint64_t{1} << w;
            }
        }
    }
    return mask;
}

} // namespace bpftime::vm
