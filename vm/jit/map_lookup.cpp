// SPDX-License-Identifier: MIT
// The translator's map lookups: map_lookup_elem on a map the program names by an lddw, done
// without the helper call (direct_lookup), and the value pointers such a lookup returns, whose
// accesses need no check once a test against 0 has shown they are not null.
#include "runtime.hpp"
#include "translator.hpp"

#include <variant>

namespace bpftime::vm::jit {

bool translator::emit_direct_lookup(size_t pc) {
    const direct_lookup *d = loaded_[1] ? prog_.direct_lookup_of(*loaded_[1]) : nullptr;
    if (d == nullptr || d->replaces != prog_.helper_at(pc)) {
        return false;
    }
    const map_lookup_plan &plan = d->plan;
    const auto *table = std::get_if<indexed_table>(&plan.method);
    const auto *call = std::get_if<find_call>(&plan.method);
    const std::optional<int64_t> key_at = fp_offset_[2];
    if (!key_at || *key_at < -static_cast<int64_t>(prog_.entry_frame_reach()) ||
        *key_at + static_cast<int64_t>(plan.key_size) > 0 ||
        (table != nullptr ? plan.key_size != 4 : call->find == nullptr)) {
        return false;
    }
    // The region the helper's hint would pick: the first of the program's regions that
    // holds the values, a writable one first.
    const memory_region *area = nullptr;
    for (bool writable : {true, false}) {
        for (const memory_region &r : prog_.regions()) {
            if (area == nullptr && (!writable || r.writable) && r.contains(plan.value_area, 1)) {
                area = &r;
            }
        }
    }
    if (area == nullptr) {
        return false;
    }
    llvm::Value *found = nullptr;
    if (table != nullptr) {
        llvm::Value *key =
            b_.CreateAlignedLoad(i32_, b_.CreateIntToPtr(reg(2), ptr_), llvm::MaybeAlign(1));
        found = b_.CreateICmpULT(key, b_.getInt32(table->count));
        llvm::Value *value =
            b_.CreateAdd(b_.getInt64(table->base),
                         b_.CreateMul(b_.CreateZExt(key, i64_), b_.getInt64(table->stride)));
        set_reg(0, b_.CreateSelect(found, value, b_.getInt64(0)));
    } else {
        auto *ty = llvm::FunctionType::get(i64_, {i64_, i64_}, false);
        calls_out_ = true;
        llvm::Value *r0 =
            b_.CreateCall(ty, const_ptr(address_of(call->find)),
                          {b_.getInt64(reinterpret_cast<uint64_t>(call->object)), reg(2)});
        found = b_.CreateICmpNE(r0, b_.getInt64(0));
        set_reg(0, r0);
    }
    if (plan.value_size != 0 &&
        plan.value_size <= (table != nullptr ? table->stride : UINT32_MAX)) {
        looked_up_ = value_pointer{pc, plan.value_size, area->writable, false};
    }
    // A table's element (an array's value) is often a program's working memory (a scratch
    // area), used all along: it becomes the near cache. A value a find call returns (a hash
    // map's) needs no check after the test against null; the near cache (and checks against it
    // that a loop could hoist) stays, and a pointer derived from the value finds its region
    // through the slow path once, which leaves it in the far cache.
    if (checked_ && table != nullptr && area->size >= max_access) {
        auto update = [&](llvm::Value *slot, uint64_t v) {
            b_.CreateStore(b_.CreateSelect(found, b_.getInt64(v), b_.CreateLoad(i64_, slot)), slot);
        };
        update(near_[0], area->start);
        update(near_[1], area->size);
        if (area->writable) {
            update(near_[2], area->start);
            update(near_[3], area->size);
        }
    }
    return true;
}

void translator::take_handed_region() {
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

translator::value_pointers translator::value_pointers_entering(const function_plan &plan,
                                                               size_t pc) {
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

} // namespace bpftime::vm::jit
