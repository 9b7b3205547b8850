// SPDX-License-Identifier: MIT
// The translator's memory accesses: access checks against the caches, the frame and the run's
// regions, and loads, stores and atomics.
#include "passes.hpp"
#include "runtime.hpp"
#include "translator.hpp"

namespace bpftime::vm::jit {

void translator::check_access(size_t pc, int base, int16_t offset, llvm::Value *addr, uint64_t n,
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
        return mark_check(b_.CreateICmpULT(b_.CreateSub(addr, lo),
                                           b_.CreateAdd(b_.CreateSub(span, nv), b_.getInt64(1))));
    };
    b_.CreateCondBr(in_cache(near_[write ? 2 : 0], near_[write ? 3 : 1]), ok, not_near, likely_);
    b_.SetInsertPoint(not_near);
    // The far cache holds a region once the run's context is set up (rt_prepare).
    llvm::Value *far_ready =
        b_.CreateICmpNE(load_state(offsetof(jit_state, rc_ready)), b_.getInt64(0));
    b_.CreateCondBr(b_.CreateAnd(far_ready, in_cache(write ? write_lo_ : read_lo_,
                                                     write ? write_span_ : read_span_)),
                    ok, not_cached);
    // The stack: the current frame and its callers' (stack_span >= 512 >= n).
    b_.SetInsertPoint(not_cached);
    llvm::Value *ds = b_.CreateSub(addr, stack_lo_);
    b_.CreateCondBr(mark_check(b_.CreateICmpULE(ds, b_.CreateSub(stack_span_, nv))), ok, slow);
    // Every other region of the run, through the runtime.
    b_.SetInsertPoint(slow);
    auto *ty = llvm::FunctionType::get(i64_, {ptr_, i64_, i64_, i64_, i64_}, false);
    llvm::Value *allowed =
        call_slow_path(ty, keeping().check, preserving().check,
                       {state_, addr, nv, b_.getInt64(write ? 1 : 0), b_.getInt64(pc)});
    auto *refill = new_block("refill");
    branch_unlikely(b_.CreateICmpEQ(allowed, b_.getInt64(0)), fault_ret_, refill);
    b_.SetInsertPoint(refill);
    b_.CreateBr(ok);
    b_.SetInsertPoint(ok);
}

llvm::Value *translator::mark_check(llvm::Value *cmp) {
    if (auto *i = llvm::dyn_cast<llvm::Instruction>(cmp)) {
        i->setMetadata(check_kind, llvm::MDNode::get(ctx_, {}));
    }
    return cmp;
}

llvm::Value *translator::checked_address(size_t pc, int base, int16_t offset, uint64_t n,
                                         bool write) {
    llvm::Value *addr = b_.CreateAdd(reg(base), imm64(offset));
    check_access(pc, base, offset, addr, n, write);
    return addr;
}

void translator::emit_load(size_t pc, const ebpf_inst &inst, bool sign) {
    uint64_t n = access_size(inst.opcode);
    llvm::Value *addr = checked_address(pc, inst.src, inst.offset, n, false);
    llvm::Value *v =
        b_.CreateAlignedLoad(int_type(n), b_.CreateIntToPtr(addr, ptr_), llvm::MaybeAlign(1));
    set_reg(inst.dst, sign ? b_.CreateSExt(v, i64_) : b_.CreateZExt(v, i64_));
}

void translator::emit_store(size_t pc, const ebpf_inst &inst, llvm::Value *value) {
    uint64_t n = access_size(inst.opcode);
    llvm::Value *addr = checked_address(pc, inst.dst, inst.offset, n, true);
    b_.CreateAlignedStore(b_.CreateTrunc(value, int_type(n)), b_.CreateIntToPtr(addr, ptr_),
                          llvm::MaybeAlign(1));
}

void translator::emit_atomic(size_t pc, const ebpf_inst &inst) {
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

} // namespace bpftime::vm::jit
