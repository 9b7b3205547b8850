// SPDX-License-Identifier: MIT
#include "frame_reach.hpp"

#include <algorithm>

#include <bpftime/vm/control_flow.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/vm.hpp>

namespace bpftime::vm {

result<program> program::load(std::vector<ebpf_inst> insns, const load_options &opts) {
    if (auto r = validate(insns, opts); !r) {
        return std::move(r).err();
    }
    program p;
    p.helpers_ = opts.helpers != nullptr ? opts.helpers : &helper_registry::global();
    p.bound_.assign(insns.size(), nullptr);
    for (size_t pc = 0; pc < insns.size(); pc++) {
        ebpf_inst &inst = insns[pc];
        if (inst.opcode == op_call && inst.src == call_helper) {
            // validate() checked that the helper exists.
            p.bound_[pc] = p.helpers_->find(static_cast<uint32_t>(inst.imm))->fn;
            p.calls_helpers_ = true;
            p.needs_run_end_ =
                p.needs_run_end_ || p.helpers_->leaves_for_run_end(static_cast<uint32_t>(inst.imm));
        } else if (inst.opcode == op_callx) {
            p.calls_helpers_ = true;
            p.needs_run_end_ = true;
        } else if (inst.opcode == op_lddw) {
            ebpf_inst &next = insns[pc + 1];
            if (is_code_address(inst)) {
                // validate() checked that it names the first instruction of a subprogram.
                const auto target = static_cast<size_t>(code_address_target(inst, pc));
                const uint64_t value = code_address_value(target);
                inst.src = pseudo_imm64;
                inst.imm = static_cast<int32_t>(static_cast<uint32_t>(value));
                next.imm = static_cast<int32_t>(static_cast<uint32_t>(value >> 32));
                p.callbacks_.push_back(target);
            } else if (inst.src != pseudo_imm64) {
                auto resolved = opts.resolver(inst.src, inst.imm, next.imm);
                if (!resolved) {
                    return make_error(resolved.err().code, "instruction " + std::to_string(pc) +
                                                               " (" + disassemble_one(insns, pc) +
                                                               "): " + resolved.err().message);
                }
                // The engines see a plain 64-bit immediate.
                inst.src = pseudo_imm64;
                inst.imm = static_cast<int32_t>(static_cast<uint32_t>(resolved->value));
                next.imm = static_cast<int32_t>(static_cast<uint32_t>(resolved->value >> 32));
                if (resolved->region) {
                    p.regions_.push_back(*resolved->region);
                }
                if (resolved->lookup && resolved->region &&
                    p.direct_lookup_of(resolved->value) == nullptr) {
                    p.lookups_.emplace_back(resolved->value, *resolved->lookup);
                }
            }
            pc++;
        }
    }
    std::sort(p.callbacks_.begin(), p.callbacks_.end());
    p.callbacks_.erase(std::unique(p.callbacks_.begin(), p.callbacks_.end()), p.callbacks_.end());
    // A callback's frame sits below the entry frame, as a local callee's does.
    p.entry_frame_reach_ = p.callbacks_.empty() ? frame_reach(insns) : stack_frame_size;
    p.entry_frame_zeroed_ =
        p.callbacks_.empty() ? frame_words_to_zero(insns, p.entry_frame_reach_) : ~uint64_t{0};
    p.insns_ = std::move(insns);
    return p;
}

} // namespace bpftime::vm
