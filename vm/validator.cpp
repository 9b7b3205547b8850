// SPDX-License-Identifier: MIT
// Load-time validation, driven by the opcode table.
#include "text.hpp"

#include <bpftime/vm/control_flow.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/helper_names.hpp>
#include <bpftime/vm/vm.hpp>

#include <string>
#include <vector>

namespace bpftime::vm {
namespace {

class validator {
public:
    validator(std::span<const ebpf_inst> insns, const load_options &opts)
        : insns_(insns), opts_(opts),
          helpers_(opts.helpers != nullptr ? *opts.helpers : helper_registry::global()) {}

    result<void> run() {
        if (insns_.empty()) {
            return make_error(EINVAL, "instruction 0: the program is empty");
        }
        if (insns_.size() > opts_.max_instructions) {
            return make_error(E2BIG, "instruction " + std::to_string(opts_.max_instructions) +
                                         ": too many instructions: the program has " +
                                         std::to_string(insns_.size()) + ", the limit is " +
                                         std::to_string(opts_.max_instructions));
        }
        if (auto r = mark_lddw_tails(); !r) {
            return r;
        }
        size_t last = 0;
        for (size_t pc = 0; pc < insns_.size(); pc++) {
            if (tail_[pc]) {
                continue;
            }
            if (auto r = check(pc); !r) {
                return r;
            }
            last = pc;
        }
        const opcode_info *info = find_opcode(insns_[last].opcode);
        if (info->kind != op_kind::exit && info->kind != op_kind::ja) {
            return refuse(last, "the program falls off its end: the last instruction must be "
                                "exit or an unconditional jump");
        }
        return check_code_addresses();
    }

private:
    error refuse(size_t pc, const std::string &why) const {
        return make_error(EINVAL, "instruction " + std::to_string(pc) + " (" +
                                      disassemble_one(insns_, pc) + "): " + why);
    }

    // The second slot of each lddw is data, not an instruction.
    result<void> mark_lddw_tails() {
        tail_.assign(insns_.size(), false);
        for (size_t pc = 0; pc < insns_.size(); pc++) {
            if (insns_[pc].opcode != op_lddw) {
                continue;
            }
            if (pc + 1 == insns_.size()) {
                return refuse(pc, "lddw needs a second instruction slot");
            }
            const ebpf_inst &next = insns_[pc + 1];
            if (next.opcode != 0 || next.dst != 0 || next.src != 0 || next.offset != 0) {
                return refuse(pc, "the second slot of lddw must hold only an immediate "
                                  "(opcode, registers and offset 0)");
            }
            tail_[++pc] = true;
        }
        return {};
    }

    // A jump or local-call target (jump_target, call_target) of the instruction at pc.
    result<void> check_target(size_t pc, int64_t target, const char *what) const {
        if (target < 0 || target >= static_cast<int64_t>(insns_.size())) {
            return refuse(pc, std::string(what) + " target " + std::to_string(target) +
                                  " is outside the program (" + std::to_string(insns_.size()) +
                                  " slots)");
        }
        if (tail_[static_cast<size_t>(target)]) {
            return refuse(pc, std::string(what) + " target " + std::to_string(target) +
                                  " is the second slot of an lddw");
        }
        return {};
    }

    // A code address (a callback for a helper) must name the first instruction of a function
    // other than the entry: one that nothing falls or jumps into, whose instruction before is
    // an exit or an unconditional jump.
    result<void> check_code_addresses() const {
        std::vector<bool> jumped_to(insns_.size(), false);
        for (size_t pc = 0; pc < insns_.size(); pc++) {
            const opcode_info *info = tail_[pc] ? nullptr : find_opcode(insns_[pc].opcode);
            if (info != nullptr && (info->kind == op_kind::ja || info->kind == op_kind::jcond)) {
                jumped_to[static_cast<size_t>(jump_target(insns_[pc], pc))] = true;
            }
        }
        for (size_t pc = 0; pc < insns_.size(); pc++) {
            if (tail_[pc] || !is_code_address(insns_[pc])) {
                continue;
            }
            const int64_t target = code_address_target(insns_[pc], pc);
            if (auto r = check_target(pc, target, "code address"); !r) {
                return r;
            }
            const auto t = static_cast<size_t>(target);
            const opcode_info *before =
                t == 0 || tail_[t - 1] ? nullptr : find_opcode(insns_[t - 1].opcode);
            if (t == 0 || jumped_to[t] || before == nullptr ||
                (before->kind != op_kind::exit && before->kind != op_kind::ja)) {
                return refuse(pc, "code address target " + std::to_string(t) +
                                      " is not the first instruction of a subprogram (a "
                                      "function other than the entry, which nothing falls or "
                                      "jumps into)");
            }
        }
        return {};
    }

    result<void> check(size_t pc) const {
        const ebpf_inst &inst = insns_[pc];
        const opcode_info *info = find_opcode(inst.opcode);
        if (info == nullptr) {
            return refuse(pc, "unknown opcode " + hex(inst.opcode));
        }
        if (info->unsupported != nullptr) {
            return refuse(pc, info->unsupported);
        }
        if (auto r = check_dst(pc, *info); !r) {
            return r;
        }
        if (auto r = check_src(pc, *info); !r) {
            return r;
        }
        if (auto r = check_offset(pc, *info); !r) {
            return r;
        }
        return check_imm(pc, *info);
    }

    result<void> check_dst(size_t pc, const opcode_info &info) const {
        unsigned dst = insns_[pc].dst;
        switch (info.dst) {
        case dst_rule::zero:
            if (dst != 0) {
                return refuse(pc, "the dst field must be 0");
            }
            break;
        case dst_rule::read:
            if (dst > 10) {
                return refuse(pc, "bad destination register r" + std::to_string(dst));
            }
            break;
        case dst_rule::write:
            if (dst == frame_pointer) {
                return refuse(pc, "r10 is the read-only frame pointer");
            }
            if (dst > 10) {
                return refuse(pc, "bad destination register r" + std::to_string(dst));
            }
            break;
        }
        return {};
    }

    result<void> check_src(size_t pc, const opcode_info &info) const {
        const ebpf_inst &inst = insns_[pc];
        unsigned src = inst.src;
        switch (info.src) {
        case src_rule::zero:
            if (src != 0) {
                return refuse(pc, "the src field must be 0");
            }
            break;
        case src_rule::read:
            if (src > 10) {
                return refuse(pc, "bad source register r" + std::to_string(src));
            }
            // Fetching atomics write the old value back into src.
            if (info.kind == op_kind::atomic && (inst.imm & atomic_fetch) != 0 &&
                inst.imm != atomic_cmpxchg && src == frame_pointer) {
                return refuse(pc, "r10 is the read-only frame pointer");
            }
            break;
        case src_rule::lddw:
            if (src > pseudo_map_idx_value) {
                return refuse(pc, "unknown lddw kind (src " + std::to_string(src) + ")");
            }
            if (src != pseudo_imm64 && src != pseudo_code_addr && !opts_.resolver) {
                return refuse(pc, "lddw refers to a map or variable (src " + std::to_string(src) +
                                      ") and nothing resolves it; load the program from an "
                                      "object file");
            }
            break;
        case src_rule::call:
            if (src == call_btf) {
                return refuse(pc, "calls to kernel functions by BTF id are not supported");
            }
            if (src > call_btf) {
                return refuse(pc, "unknown call kind (src " + std::to_string(src) + ")");
            }
            break;
        }
        return {};
    }

    result<void> check_offset(size_t pc, const opcode_info &info) const {
        int off = insns_[pc].offset;
        auto one_of = [&](std::initializer_list<int> legal, const char *what) -> result<void> {
            for (int v : legal) {
                if (off == v) {
                    return {};
                }
            }
            return refuse(pc, std::string("offset ") + std::to_string(off) + " is not " + what);
        };
        switch (info.off) {
        case off_rule::zero:
            return one_of({0}, "0");
        case off_rule::memory:
            return {};
        case off_rule::jump:
            return check_target(pc, jump_target(insns_[pc], pc), "jump");
        case off_rule::divmod:
            return one_of({0, 1}, "0 (unsigned) or 1 (signed)");
        case off_rule::movsx32:
            return one_of({0, 8, 16}, "0, 8 or 16");
        case off_rule::movsx64:
            return one_of({0, 8, 16, 32}, "0, 8, 16 or 32");
        }
        return {};
    }

    result<void> check_imm(size_t pc, const opcode_info &info) const {
        const ebpf_inst &inst = insns_[pc];
        int32_t imm = inst.imm;
        switch (info.imm) {
        case imm_rule::zero:
            if (imm != 0) {
                return refuse(pc, "the imm field must be 0");
            }
            break;
        case imm_rule::any:
            break;
        case imm_rule::endian:
            if (imm != 16 && imm != 32 && imm != 64) {
                return refuse(pc,
                              "byte swap width " + std::to_string(imm) + " is not 16, 32 or 64");
            }
            break;
        case imm_rule::atomic:
            switch (imm) {
            case atomic_add:
            case atomic_or:
            case atomic_and:
            case atomic_xor:
            case atomic_add | atomic_fetch:
            case atomic_or | atomic_fetch:
            case atomic_and | atomic_fetch:
            case atomic_xor | atomic_fetch:
            case atomic_xchg:
            case atomic_cmpxchg:
                break;
            default:
                return refuse(pc, "unknown atomic operation " + hex(static_cast<uint32_t>(imm)));
            }
            break;
        case imm_rule::jump:
            return check_target(pc, jump_target(inst, pc), "jump");
        case imm_rule::call:
            if (is_local_call(inst)) {
                return check_target(pc, call_target(inst, pc), "local call");
            }
            if (helpers_.find(static_cast<uint32_t>(imm)) == nullptr) {
                const auto id = static_cast<uint32_t>(imm);
                if (helper_registry::global().find(id) != nullptr) {
                    return refuse(pc, describe_helper(id) +
                                          " is not among the helpers this program may call");
                }
                if (!linux_helper_name(id).empty()) {
                    return refuse(pc, describe_helper(id) + " is not available in bpftime");
                }
                return refuse(pc, "unknown helper id " + std::to_string(imm));
            }
            break;
        }
        return {};
    }

    std::span<const ebpf_inst> insns_;
    const load_options &opts_;
    const helper_registry &helpers_;
    std::vector<bool> tail_;
};

} // namespace

result<void> validate(std::span<const ebpf_inst> insns, const load_options &opts) {
    return validator(insns, opts).run();
}

} // namespace bpftime::vm
