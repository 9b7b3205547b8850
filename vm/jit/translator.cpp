// SPDX-License-Identifier: MIT
// The translator's functions, blocks, arithmetic, jumps and calls.
//
// Semantics are the interpreter's, instruction for instruction:
// - Loads and stores are checked (unless the engine is unchecked) against, in order, the near
//   cache (a region set on entry and by helpers, loop-invariant), the far cache (the region
//   that allowed the last slow-path access), the current frame and its callers' frames, then
//   the run's regions through a call into the runtime that refills the far cache. Accesses
//   through r10 + a constant inside the current frame need no check at all.
// - The instruction budget is a counter that each basic block decrements by its length; it is
//   tested at loop heads, local calls and exits, so a runaway loop stops within one iteration
//   of the interpreter's stop. A run that completes reports the exact count.
// - Division and modulo never trap; shifts mask their amount; local calls zero their frame.
// - A fault records its cause in the run's state and every function returns at once.
#include "translator.hpp"

#include "passes.hpp"
#include "runtime.hpp"

#include <llvm/IR/MDBuilder.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Support/raw_ostream.h>

#include <vector>

namespace bpftime::vm::jit {
namespace {

// Whether a function needs a frame of its own: it does when any instruction names r10 or calls
// a helper (helpers check pointers against the run's stack region, whose shape run_context::call
// and tail_call rely on). A function without one cannot reach the stack below its callers'
// frames (its accesses are checked against [fp, top)), so its frame is neither zeroed on the
// call nor kept: its callees' frames start at its fp. Only subprograms of programs without
// callbacks (whose frames run_context::call lays out one per depth) may go without.
function_shape shape_of(std::span<const ebpf_inst> insns, const function_plan &plan,
                        bool may_be_frameless) {
    function_shape shape{.frame = !may_be_frameless, .calls = false};
    for (size_t pc = 0; pc < insns.size(); pc++) {
        if (!plan.reachable[pc]) {
            continue;
        }
        const ebpf_inst &inst = insns[pc];
        const bool call = inst.opcode == (cls_jmp | jmp_call) || inst.opcode == op_callx;
        if (call && is_local_call(inst)) {
            shape.calls = true;
        } else if (call || inst.dst == frame_pointer || inst.src == frame_pointer) {
            shape.frame = true;
        }
        if (inst.opcode == op_lddw) {
            pc++;
        }
    }
    return shape;
}

} // namespace

translator::translator(const program &prog, bool checked, bool vector_free, llvm::LLVMContext &ctx,
                       llvm::Module &mod)
    : prog_(prog), insns_(prog.insns()), checked_(checked), vector_free_(vector_free), ctx_(ctx),
      mod_(mod), b_(ctx) {
    i8_ = b_.getInt8Ty();
    i16_ = b_.getInt16Ty();
    i32_ = b_.getInt32Ty();
    i64_ = b_.getInt64Ty();
    ptr_ = b_.getPtrTy();
    // (r0..r5, the budget left, faulted): the budget travels in registers, so that a call
    // inlined into its caller leaves no trip through the run's state, and so does whether the
    // function returned because of a fault (the state records which), so that a caller's test
    // of it folds away on the paths that did not fault.
    std::vector<llvm::Type *> fields(ret_fields, i64_);
    ret_ty_ = llvm::StructType::get(ctx_, fields);
    // (state, r0..r9, fp, depth, budget, the near caches): the caches travel in registers
    // too, so that a run's entry does not store them for the function to load back.
    std::vector<llvm::Type *> params{ptr_};
    params.insert(params.end(), 13 + near_count, i64_);
    fn_ty_ = llvm::FunctionType::get(ret_ty_, params, false);
    unlikely_ = llvm::MDBuilder(ctx_).createBranchWeights(1, 1 << 20);
    likely_ = llvm::MDBuilder(ctx_).createBranchWeights(1 << 20, 1);
}

std::string translator::translate(const std::string &name, const direct_layout &direct) {
    std::vector<size_t> pending{0};
    // Callbacks are functions too; helpers enter them through the callback entry.
    pending.insert(pending.end(), prog_.callbacks().begin(), prog_.callbacks().end());
    std::map<size_t, function_plan> plans;
    while (!pending.empty()) {
        size_t entry = pending.back();
        pending.pop_back();
        if (plans.count(entry) != 0) {
            continue;
        }
        std::vector<size_t> callees;
        plans.emplace(entry, plan_function(insns_, entry, callees));
        pending.insert(pending.end(), callees.begin(), callees.end());
    }
    for (auto &[entry, plan] : plans) {
        shapes_[entry] = shape_of(insns_, plan, entry != 0 && prog_.callbacks().empty());
        loops_ = loops_ || std::find(plan.loop_head.begin(), plan.loop_head.end(), true) !=
                               plan.loop_head.end();
    }
    for (auto &[entry, plan] : plans) {
        auto *fn = llvm::Function::Create(fn_ty_, llvm::Function::InternalLinkage,
                                          "f" + std::to_string(entry), mod_);
        fn->setCallingConv(llvm::CallingConv::Fast);
        fn->addFnAttr(llvm::Attribute::NoUnwind);
        // Into their callers (recursive ones stay calls).
        fn->addFnAttr(llvm::Attribute::AlwaysInline);
        functions_[entry] = fn;
    }
    for (auto &[entry, plan] : plans) {
        emit_function(plan);
    }
    emit_run_entry(name, direct);
    emit_direct_entry(name + direct_entry_suffix, name, direct);
    emit_callback_entry(name + callback_entry_suffix);
    std::string err;
    llvm::raw_string_ostream os(err);
    if (llvm::verifyModule(mod_, &os)) {
        return "generated code does not verify: " + os.str();
    }
    return {};
}

void translator::fault_if(llvm::Value *cond, uint64_t kind, size_t pc, llvm::Value *addr,
                          llvm::Value *len) {
    auto *fault = new_block("fault_here");
    auto *go = new_block("go_on");
    branch_unlikely(cond, fault, go);
    b_.SetInsertPoint(fault);
    auto *ty = llvm::FunctionType::get(b_.getVoidTy(), {ptr_, i64_, i64_, i64_, i64_}, false);
    call_slow_path(ty, keeping().fault, preserving().fault,
                   {state_, b_.getInt64(kind), b_.getInt64(pc), addr ? addr : b_.getInt64(0),
                    len ? len : b_.getInt64(0)});
    b_.CreateBr(fault_ret_);
    b_.SetInsertPoint(go);
}

void translator::return_if_faulted() {
    auto *go = new_block("go_on");
    branch_unlikely(b_.CreateICmpNE(load_state(offsetof(jit_state, fault)), b_.getInt64(0)),
                    fault_ret_, go);
    b_.SetInsertPoint(go);
}

void translator::track_registers(const ebpf_inst &inst) {
    auto &known = fp_offset_;
    const opcode_info *info = find_opcode(inst.opcode);
    auto forget = [&](int r) { known[static_cast<size_t>(r)].reset(); };
    switch (info->kind) {
    case op_kind::alu:
    case op_kind::neg:
    case op_kind::endian:
    case op_kind::ldx:
    case op_kind::ldsx:
    case op_kind::lddw:
        loaded_[inst.dst].reset();
        value_ptr_[inst.dst] = inst.opcode == (cls_alu64 | src_x | alu_mov) && inst.offset == 0
                                   ? value_ptr_[inst.src]
                                   : std::nullopt;
        break;
    case op_kind::atomic:
        value_ptr_[inst.imm == atomic_cmpxchg ? 0 : inst.src].reset();
        break;
    case op_kind::call:
    case op_kind::callx:
        for (size_t r = 0; r <= 5; r++) {
            value_ptr_[r].reset();
        }
        value_ptr_[0] = looked_up_;
        looked_up_.reset();
        break;
    default:
        break;
    }
    switch (info->kind) {
    case op_kind::alu: {
        auto &d = known[inst.dst];
        const uint8_t op = inst.opcode & 0xf0;
        if (inst.opcode == (cls_alu64 | src_x | alu_mov) && inst.offset == 0) {
            d = known[inst.src];
        } else if (d && op_class(inst.opcode) == cls_alu64 && (inst.opcode & src_x) == 0 &&
                   (op == alu_add || op == alu_sub)) {
            *d += op == alu_add ? inst.imm : -static_cast<int64_t>(inst.imm);
            if (*d < -(int64_t{1} << 40) || *d > (int64_t{1} << 40)) {
                d.reset();
            }
        } else {
            d.reset();
        }
        break;
    }
    case op_kind::lddw:
        // The second slot follows the first in insns_.
        loaded_[inst.dst] = static_cast<uint32_t>(inst.imm) |
                            (static_cast<uint64_t>(static_cast<uint32_t>((&inst)[1].imm)) << 32);
        forget(inst.dst);
        break;
    case op_kind::neg:
    case op_kind::endian:
    case op_kind::ldx:
    case op_kind::ldsx:
        forget(inst.dst);
        break;
    case op_kind::atomic:
        if (inst.imm == atomic_cmpxchg) {
            forget(0);
            loaded_[0].reset();
        } else if ((inst.imm & atomic_fetch) != 0) {
            forget(inst.src);
            loaded_[inst.src].reset();
        }
        break;
    case op_kind::call:
    case op_kind::callx:
        for (int r = 0; r <= 5; r++) {
            if (r == 0 || is_local_call(inst)) {
                forget(r);
                loaded_[static_cast<size_t>(r)].reset();
            }
        }
        break;
    default:
        break;
    }
}

llvm::Type *translator::int_type(uint64_t bytes) {
    switch (bytes) {
    case 1:
        return i8_;
    case 2:
        return i16_;
    case 4:
        return i32_;
    default:
        return i64_;
    }
}

llvm::Value *translator::emit_binary(uint8_t op, llvm::Value *a, llvm::Value *b, bool is_signed) {
    llvm::Type *ty = a->getType();
    auto c = [&](uint64_t v) { return llvm::ConstantInt::get(ty, v); };
    llvm::Value *mask = c(ty->getIntegerBitWidth() - 1);
    switch (op) {
    case alu_add:
        return b_.CreateAdd(a, b);
    case alu_sub:
        return b_.CreateSub(a, b);
    case alu_mul:
        return b_.CreateMul(a, b);
    case alu_or:
        return b_.CreateOr(a, b);
    case alu_and:
        return b_.CreateAnd(a, b);
    case alu_xor:
        return b_.CreateXor(a, b);
    case alu_lsh:
        return b_.CreateShl(a, b_.CreateAnd(b, mask));
    case alu_rsh:
        return b_.CreateLShr(a, b_.CreateAnd(b, mask));
    case alu_arsh:
        return b_.CreateAShr(a, b_.CreateAnd(b, mask));
    case alu_mov:
        return b;
    case alu_div:
    case alu_mod: {
        // x / 0 = 0, x % 0 = x; signed: x / -1 = -x, x % -1 = 0 (no INT_MIN / -1 trap).
        llvm::Value *zero = b_.CreateICmpEQ(b, c(0));
        llvm::Value *minus1 =
            is_signed ? b_.CreateICmpEQ(b, llvm::ConstantInt::getAllOnesValue(ty)) : b_.getFalse();
        llvm::Value *safe = b_.CreateSelect(b_.CreateOr(zero, minus1), c(1), b);
        if (op == alu_div) {
            llvm::Value *q = is_signed ? b_.CreateSDiv(a, safe) : b_.CreateUDiv(a, safe);
            q = b_.CreateSelect(minus1, b_.CreateNeg(a), q);
            return b_.CreateSelect(zero, c(0), q);
        }
        llvm::Value *r = is_signed ? b_.CreateSRem(a, safe) : b_.CreateURem(a, safe);
        r = b_.CreateSelect(minus1, c(0), r);
        return b_.CreateSelect(zero, a, r);
    }
    default:
        return nullptr;
    }
}

void translator::emit_alu(const ebpf_inst &inst) {
    const bool wide = op_class(inst.opcode) == cls_alu64;
    const uint8_t op = inst.opcode & 0xf0;
    llvm::Type *ty = wide ? i64_ : i32_;
    llvm::Value *a = b_.CreateTrunc(reg(inst.dst), ty);
    if (op == alu_neg) {
        set_reg(inst.dst, b_.CreateNeg(a));
        return;
    }
    if (op == alu_end) {
        unsigned width = static_cast<unsigned>(inst.imm);
        llvm::Type *wty = int_type(width / 8);
        llvm::Value *v = b_.CreateTrunc(reg(inst.dst), wty);
        const bool swap = wide || (inst.opcode & src_x) != 0; // bswap, be (the host is le)
        if (swap && width > 8) {
            v = b_.CreateUnaryIntrinsic(llvm::Intrinsic::bswap, v);
        }
        set_reg(inst.dst, v);
        return;
    }
    llvm::Value *b = (inst.opcode & src_x) != 0 ? b_.CreateTrunc(reg(inst.src), ty)
                                                : b_.CreateTrunc(imm64(inst.imm), ty);
    if (op == alu_mov && (inst.opcode & src_x) != 0 && inst.offset != 0) {
        // movsx: sign-extend the low offset bits of src.
        llvm::Value *low =
            b_.CreateTrunc(reg(inst.src), int_type(static_cast<uint64_t>(inst.offset) / 8));
        b = b_.CreateSExt(low, ty);
    }
    set_reg(inst.dst, emit_binary(op, a, b, inst.offset == 1));
}

llvm::Value *translator::emit_condition(const ebpf_inst &inst) {
    const bool wide = op_class(inst.opcode) == cls_jmp;
    llvm::Type *ty = wide ? i64_ : i32_;
    llvm::Value *a = b_.CreateTrunc(reg(inst.dst), ty);
    llvm::Value *b = (inst.opcode & src_x) != 0 ? b_.CreateTrunc(reg(inst.src), ty)
                                                : b_.CreateTrunc(imm64(inst.imm), ty);
    switch (inst.opcode & 0xf0) {
    case jmp_jeq:
        return b_.CreateICmpEQ(a, b);
    case jmp_jgt:
        return b_.CreateICmpUGT(a, b);
    case jmp_jge:
        return b_.CreateICmpUGE(a, b);
    case jmp_jset:
        return b_.CreateICmpNE(b_.CreateAnd(a, b), llvm::ConstantInt::get(ty, 0));
    case jmp_jne:
        return b_.CreateICmpNE(a, b);
    case jmp_jsgt:
        return b_.CreateICmpSGT(a, b);
    case jmp_jsge:
        return b_.CreateICmpSGE(a, b);
    case jmp_jlt:
        return b_.CreateICmpULT(a, b);
    case jmp_jle:
        return b_.CreateICmpULE(a, b);
    case jmp_jslt:
        return b_.CreateICmpSLT(a, b);
    default: // jsle
        return b_.CreateICmpSLE(a, b);
    }
}

void translator::check_budget(size_t pc) {
    if (checked_) {
        llvm::Value *out = b_.CreateICmpSLT(b_.CreateLoad(i64_, budget_), b_.getInt64(0));
        if (auto *i = llvm::dyn_cast<llvm::Instruction>(out)) {
            i->setMetadata(budget_kind, llvm::MDNode::get(ctx_, {}));
        }
        fault_if(out, fault_exhausted, pc);
    }
}

uint64_t translator::block_length(const function_plan &plan, size_t pc) {
    uint64_t n = 0;
    for (size_t i = pc; i < insns_.size(); i++) {
        if (i != pc && plan.leader[i]) {
            break;
        }
        n++;
        const opcode_info *info = find_opcode(insns_[i].opcode);
        if (info->kind == op_kind::jcond || info->kind == op_kind::ja ||
            info->kind == op_kind::exit) {
            break;
        }
        if (info->kind == op_kind::lddw) {
            i++;
        }
    }
    return n;
}

void translator::emit_return(llvm::Value *r0, std::array<llvm::Value *, 5> args, bool faulted) {
    llvm::Value *ret = llvm::UndefValue::get(ret_ty_);
    ret = b_.CreateInsertValue(ret, r0, 0);
    for (unsigned i = 0; i < 5; i++) {
        ret = b_.CreateInsertValue(ret, args[i], i + 1);
    }
    llvm::Value *budget =
        checked_ ? static_cast<llvm::Value *>(b_.CreateLoad(i64_, budget_)) : b_.getInt64(0);
    ret = b_.CreateInsertValue(ret, budget, ret_budget);
    ret = b_.CreateInsertValue(ret, b_.getInt64(faulted ? 1 : 0), ret_faulted);
    b_.CreateRet(ret);
}

void translator::budget_to_state() {
    if (checked_) {
        store_state(offsetof(jit_state, budget),
                    b_.CreateAdd(b_.CreateLoad(i64_, budget_), b_.getInt64(rest_of_block_)));
    }
}

void translator::budget_from_state() {
    if (checked_) {
        b_.CreateStore(
            b_.CreateSub(load_state(offsetof(jit_state, budget)), b_.getInt64(rest_of_block_)),
            budget_);
    }
}

void translator::emit_helper_call(size_t pc, const ebpf_inst &inst) {
    std::array<llvm::Value *, 5> args{reg(1), reg(2), reg(3), reg(4), reg(5)};
    llvm::Value *r0 = nullptr;
    if (inst.opcode == op_callx) {
        auto *ty =
            llvm::FunctionType::get(i64_, {ptr_, i64_, i64_, i64_, i64_, i64_, i64_, i64_}, false);
        budget_to_state();
        calls_out_ = true;
        prepare_helper_call();
        r0 = b_.CreateCall(
            ty, const_ptr(address_of(&rt_callx)),
            {state_, reg(inst.dst), args[0], args[1], args[2], args[3], args[4], b_.getInt64(pc)});
        set_reg(0, r0);
        return_if_faulted();
        budget_from_state();
        take_handed_region();
        return;
    }
    if (emit_direct_lookup(pc)) {
        return;
    }
    // A helper may run a callback (run_context::call), which spends the budget in the state.
    // The block's length was taken on entry: the state holds what is left at this instruction,
    // as the interpreter counts it, so a tail call's target goes on from the same count.
    const bool callbacks = !prog_.callbacks().empty();
    if (callbacks) {
        budget_to_state();
    }
    prepare_helper_call();
    auto *ty = llvm::FunctionType::get(i64_, {i64_, i64_, i64_, i64_, i64_, ptr_}, false);
    calls_out_ = true;
    r0 = b_.CreateCall(ty, const_ptr(address_of(prog_.helper_at(pc))),
                       {args[0], args[1], args[2], args[3], args[4], rc_});
    set_reg(0, r0);
    if (callbacks) {
        budget_from_state();
    }
    auto *stop = new_block("helper_stopped");
    auto *go = new_block("go_on");
    branch_unlikely(b_.CreateICmpNE(b_.CreateLoad(i8_, helper_failed_), b_.getInt8(0)), stop, go);
    b_.SetInsertPoint(stop);
    budget_to_state();
    auto *fty = llvm::FunctionType::get(b_.getVoidTy(), {ptr_, i64_, i64_, i64_, i64_}, false);
    call_slow_path(fty, keeping().fault, preserving().fault,
                   {state_, b_.getInt64(fault_helper_failed), b_.getInt64(pc), b_.getInt64(0),
                    b_.getInt64(0)});
    b_.CreateBr(fault_ret_);
    b_.SetInsertPoint(go);
    take_handed_region();
}

void translator::prepare_run_context() {
    auto *prepare = new_block("prepare");
    auto *go = new_block("go_on");
    b_.CreateCondBr(b_.CreateICmpEQ(load_state(offsetof(jit_state, rc_ready)), b_.getInt64(0)),
                    prepare, go);
    b_.SetInsertPoint(prepare);
    auto *ty = llvm::FunctionType::get(b_.getVoidTy(), {ptr_}, false);
    call_slow_path(ty, keeping().prepare, preserving().prepare, {state_});
    b_.CreateBr(go);
    b_.SetInsertPoint(go);
}

void translator::prepare_helper_call() {
    prepare_run_context();
    // The entry function's region is the one the run starts with (its reachable part), unless
    // a callee it called may have left its own.
    if (function_entry_ == 0 && !shapes_.at(0).calls) {
        return;
    }
    llvm::Value *lo =
        function_entry_ == 0 ? stack_lo_ : b_.CreateSub(fp_, b_.getInt64(stack_frame_size));
    llvm::Value *region = b_.CreateIntToPtr(load_state(offsetof(jit_state, rc_stack)), ptr_);
    llvm::Value *top = load_state(offsetof(jit_state, stack_top));
    b_.CreateStore(lo, b_.CreateConstInBoundsGEP1_64(i8_, region, offsetof(memory_region, start)));
    b_.CreateStore(b_.CreateSub(top, lo),
                   b_.CreateConstInBoundsGEP1_64(i8_, region, offsetof(memory_region, size)));
}

void translator::emit_local_call(size_t pc, const ebpf_inst &inst) {
    const size_t target = call_target(inst, pc);
    const function_shape callee = shapes_.at(target);
    check_budget(pc);
    fault_if(b_.CreateICmpUGE(b_.CreateAdd(depth_, b_.getInt64(1)), b_.getInt64(max_call_depth)),
             fault_depth, pc);
    // The callee's frame is [fp - 1024, fp - 512) (directly below fp when this function has no
    // frame), zeroed as the interpreter does; a callee without a frame has nothing to zero.
    llvm::Value *callee_fp = frame_ ? b_.CreateSub(fp_, b_.getInt64(stack_frame_size)) : fp_;
    if (callee.frame) {
        b_.CreateMemSet(
            b_.CreateIntToPtr(b_.CreateSub(callee_fp, b_.getInt64(stack_frame_size)), ptr_),
            b_.getInt8(0), stack_frame_size, llvm::MaybeAlign(16));
    }
    std::vector<llvm::Value *> args{state_};
    for (int r = 0; r < 10; r++) {
        args.push_back(reg(r));
    }
    args.push_back(callee_fp);
    args.push_back(b_.CreateAdd(depth_, b_.getInt64(1)));
    llvm::Value *budget =
        checked_ ? static_cast<llvm::Value *>(b_.CreateLoad(i64_, budget_)) : b_.getInt64(0);
    args.push_back(budget);
    for (llvm::Value *slot : near_) {
        args.push_back(checked_ ? static_cast<llvm::Value *>(b_.CreateLoad(i64_, slot))
                                : b_.getInt64(0));
    }
    auto *call = b_.CreateCall(fn_ty_, functions_.at(target), args);
    call->setCallingConv(llvm::CallingConv::Fast);
    auto *go = new_block("go_on");
    branch_unlikely(b_.CreateICmpNE(b_.CreateExtractValue(call, ret_faulted), b_.getInt64(0)),
                    fault_ret_, go);
    b_.SetInsertPoint(go);
    for (unsigned r = 0; r <= 5; r++) {
        set_reg(static_cast<int>(r), b_.CreateExtractValue(call, r));
    }
    if (checked_) {
        b_.CreateStore(b_.CreateExtractValue(call, ret_budget), budget_);
    }
}

void translator::emit_function(const function_plan &plan) {
    fn_ = functions_.at(plan.entry);
    function_entry_ = plan.entry;
    auto arg = fn_->arg_begin();
    state_ = &*arg++;
    auto *entry = new_block("entry");
    b_.SetInsertPoint(entry);
    for (size_t r = 0; r < 10; r++) {
        regs_[r] = b_.CreateAlloca(i64_, nullptr, "r" + std::to_string(r));
    }
    budget_ = b_.CreateAlloca(i64_, nullptr, "budget");
    for (auto &slot : near_) {
        slot = b_.CreateAlloca(i64_, nullptr, "near");
    }
    // The far caches stay in the run's state, where the runtime refills them: values kept
    // in registers would need phis at every join of the function, whose number grows with
    // blocks times joins, and so would the compile time of large programs. They hold a
    // region only once the run's context is set up (rc_ready).
    read_lo_ = state_field(offsetof(jit_state, read_lo));
    read_span_ = state_field(offsetof(jit_state, read_span));
    write_lo_ = state_field(offsetof(jit_state, write_lo));
    write_span_ = state_field(offsetof(jit_state, write_span));
    for (size_t r = 0; r < 10; r++) {
        b_.CreateStore(&*arg++, regs_[r]);
    }
    fp_ = &*arg++;
    depth_ = &*arg++;
    llvm::Value *budget_in = &*arg++;
    std::array<llvm::Value *, near_count> near_in{};
    for (auto &v : near_in) {
        v = &*arg++;
    }
    rc_ = b_.CreateIntToPtr(load_state(offsetof(jit_state, rc)), ptr_);
    helper_failed_ = b_.CreateIntToPtr(load_state(offsetof(jit_state, helper_failed)), ptr_);
    frame_ = shapes_.at(plan.entry).frame;
    stack_lo_ = frame_ ? b_.CreateSub(fp_, b_.getInt64(prog_.entry_frame_reach())) : fp_;
    stack_span_ = b_.CreateSub(load_state(offsetof(jit_state, stack_top)), stack_lo_);
    if (checked_) {
        b_.CreateStore(budget_in, budget_);
        for (size_t i = 0; i < near_count; i++) {
            b_.CreateStore(near_in[i], near_[i]);
        }
    }
    fault_ret_ = new_block("fault");
    blocks_.clear();
    value_ptr_at_jump_.clear();
    for (size_t pc = 0; pc < insns_.size(); pc++) {
        if (plan.reachable[pc] && plan.leader[pc]) {
            blocks_[pc] = new_block(("pc" + std::to_string(pc)).c_str());
        }
    }
    b_.CreateBr(blocks_.at(plan.entry));

    bool open = false; // the current block has no terminator yet
    for (size_t pc = 0; pc < insns_.size(); pc++) {
        if (!plan.reachable[pc]) {
            continue;
        }
        if (plan.leader[pc]) {
            if (open) {
                b_.CreateBr(blocks_.at(pc));
            }
            b_.SetInsertPoint(blocks_.at(pc));
            open = true;
            fp_offset_.fill(std::nullopt);
            fp_offset_[frame_pointer] = 0;
            loaded_.fill(std::nullopt);
            value_ptr_ = value_pointers_entering(plan, pc);
            if (plan.loop_head[pc]) {
                // Loops stop here once the instructions before this entry exhausted the
                // budget. Testing at the head rather than at the backward jump leaves the
                // loop's latch to its own exit test, the shape LLVM's loop passes want.
                check_budget(pc);
            }
            rest_of_block_ = block_length(plan, pc);
            if (checked_) {
                // An add of a negative constant: what hoist_checks follows.
                b_.CreateStore(b_.CreateAdd(b_.CreateLoad(i64_, budget_),
                                            b_.getInt64(-static_cast<int64_t>(rest_of_block_))),
                               budget_);
            }
        }
        rest_of_block_--; // the instructions of the block after this one
        const ebpf_inst &inst = insns_[pc];
        const opcode_info *info = find_opcode(inst.opcode);
        // Loads and stores see the offsets before their own instruction.
        struct tracker {
            translator &t;
            const ebpf_inst &inst;
            ~tracker() { t.track_registers(inst); }
        } after{*this, inst};
        switch (info->kind) {
        case op_kind::alu:
        case op_kind::neg:
        case op_kind::endian:
            emit_alu(inst);
            break;
        case op_kind::lddw:
            set_reg(inst.dst,
                    b_.getInt64(
                        static_cast<uint32_t>(inst.imm) |
                        (static_cast<uint64_t>(static_cast<uint32_t>(insns_[pc + 1].imm)) << 32)));
            pc++;
            break;
        case op_kind::ldx:
            emit_load(pc, inst, false);
            break;
        case op_kind::ldsx:
            emit_load(pc, inst, true);
            break;
        case op_kind::st:
            emit_store(pc, inst, imm64(inst.imm));
            break;
        case op_kind::stx:
            emit_store(pc, inst, reg(inst.src));
            break;
        case op_kind::atomic:
            emit_atomic(pc, inst);
            break;
        case op_kind::ja:
            b_.CreateBr(blocks_.at(jump_target(inst, pc)));
            open = false;
            break;
        case op_kind::jcond:
            value_ptr_at_jump_[pc] = value_ptr_;
            if (auto tree = find_compare_tree(insns_, plan, pc)) {
                emit_switch(pc, *tree);
            }
            b_.CreateCondBr(emit_condition(inst), blocks_.at(jump_target(inst, pc)),
                            blocks_.at(pc + 1));
            open = false;
            break;
        case op_kind::call:
        case op_kind::callx:
            if (is_local_call(inst)) {
                emit_local_call(pc, inst);
            } else {
                emit_helper_call(pc, inst);
            }
            break;
        case op_kind::exit:
            check_budget(pc);
            emit_return(reg(0), {reg(1), reg(2), reg(3), reg(4), reg(5)});
            open = false;
            break;
        }
    }
    b_.SetInsertPoint(fault_ret_);
    llvm::Value *z = b_.getInt64(0);
    emit_return(z, {z, z, z, z, z}, true);
}

void translator::emit_switch(size_t pc, const compare_tree &tree) {
    const ebpf_inst &root = insns_[pc];
    const bool wide = op_class(root.opcode) == cls_jmp;
    llvm::IntegerType *ty = wide ? b_.getInt64Ty() : b_.getInt32Ty();
    auto *outside = new_block("tree");
    auto *sw = b_.CreateSwitch(b_.CreateTrunc(reg(root.dst), ty), outside,
                               static_cast<unsigned>(tree.leaves.size()));
    std::map<compare_tree::way, llvm::BasicBlock *> ways;
    for (size_t i = 0; i < tree.leaves.size(); i++) {
        const compare_tree::way &w = tree.leaves[i];
        auto [it, fresh] = ways.emplace(w, nullptr);
        if (fresh) {
            it->second = new_block("way");
            b_.SetInsertPoint(it->second);
            if (checked_) {
                b_.CreateStore(b_.CreateAdd(b_.CreateLoad(i64_, budget_),
                                            b_.getInt64(-static_cast<int64_t>(w.passed))),
                               budget_);
                if (w.loop_head != SIZE_MAX) {
                    check_budget(w.loop_head);
                }
            }
            b_.CreateBr(blocks_.at(w.leaf));
        }
        sw->addCase(llvm::ConstantInt::get(ty, tree.lo + i), it->second);
    }
    b_.SetInsertPoint(outside);
}

void translator::emit_callback_entry(const std::string &name) {
    // uint64_t name(jit_state *, uint64_t pc, uint64_t r1..r5, uint64_t fp, uint64_t depth)
    std::vector<llvm::Type *> params{ptr_};
    params.insert(params.end(), 8, i64_);
    auto *fn = llvm::Function::Create(llvm::FunctionType::get(i64_, params, false),
                                      llvm::Function::ExternalLinkage, name, mod_);
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    std::vector<llvm::Value *> a;
    for (auto &arg : fn->args()) {
        a.push_back(&arg);
    }
    auto *entry = llvm::BasicBlock::Create(ctx_, "entry", fn);
    auto *none = llvm::BasicBlock::Create(ctx_, "none", fn);
    b_.SetInsertPoint(none);
    b_.CreateRet(b_.getInt64(0)); // run_context::call passes only callbacks
    b_.SetInsertPoint(entry);
    auto *sw = b_.CreateSwitch(a[1], none, static_cast<unsigned>(prog_.callbacks().size()));
    llvm::Value *z = b_.getInt64(0);
    for (size_t pc : prog_.callbacks()) {
        auto *bb = llvm::BasicBlock::Create(ctx_, "cb" + std::to_string(pc), fn);
        sw->addCase(b_.getInt64(pc), bb);
        b_.SetInsertPoint(bb);
        // A callback spends the run's budget, which the helper's caller keeps in the state.
        llvm::Value *budget = load_state_of(a[0], offsetof(jit_state, budget));
        std::vector<llvm::Value *> args{a[0], z, a[2], a[3], a[4], a[5], a[6],
                                        z,    z, z,    z,    a[7], a[8], budget};
        // The helper that runs it set the run's context up, so the far caches hold regions.
        for (size_t off : {offsetof(jit_state, read_lo), offsetof(jit_state, read_span),
                           offsetof(jit_state, write_lo), offsetof(jit_state, write_span)}) {
            args.push_back(checked_ ? load_state_of(a[0], off) : z);
        }
        auto *call = b_.CreateCall(fn_ty_, functions_.at(pc), args);
        call->setCallingConv(llvm::CallingConv::Fast);
        if (checked_) {
            b_.CreateStore(b_.CreateExtractValue(call, ret_budget),
                           b_.CreateConstInBoundsGEP1_64(i8_, a[0], offsetof(jit_state, budget)));
        }
        b_.CreateRet(b_.CreateExtractValue(call, 0));
    }
}

llvm::Value *translator::run_budget(llvm::Value *opts) {
    llvm::Value *wanted = b_.CreateLoad(
        i64_, b_.CreateConstInBoundsGEP1_64(i8_, opts, offsetof(run_options, instruction_budget)));
    return b_.CreateSelect(b_.CreateICmpUGT(wanted, b_.getInt64(INT64_MAX)), b_.getInt64(INT64_MAX),
                           wanted);
}

bool translator::budget_bounds_checks() const {
    return checked_ && !calls_out_ && shapes_.size() == 1 && prog_.callbacks().empty();
}

void translator::emit_run_entry(const std::string &name, const direct_layout &layout) {
    llvm::StructType *status = llvm::StructType::get(ctx_, {i64_, ptr_}); // run_status
    auto *ty = llvm::FunctionType::get(status, {ptr_, i64_, i64_, ptr_, i64_}, false);
    // The run itself, inlined into the direct entry, and for a program whose direct entry
    // tests the budget first (budget_bounds_checks) into the run entry its low-budget way
    // takes, where the budget tests stay.
    auto *fn =
        llvm::Function::Create(ty, llvm::Function::InternalLinkage, name + run_body_suffix, mod_);
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    fn->addFnAttr(llvm::Attribute::AlwaysInline);
    if (budget_bounds_checks()) {
        auto *outer = llvm::Function::Create(ty, llvm::Function::InternalLinkage, name, mod_);
        outer->addFnAttr(llvm::Attribute::NoUnwind);
        b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", outer));
        std::vector<llvm::Value *> args;
        for (auto &a : outer->args()) {
            args.push_back(&a);
        }
        auto *call = b_.CreateCall(ty, fn, args);
        call->setTailCall();
        b_.CreateRet(call);
    }
    auto arg = fn->arg_begin();
    llvm::Value *eng = &*arg++;
    llvm::Value *mem = &*arg++;
    llvm::Value *len = &*arg++;
    llvm::Value *opts = &*arg++;
    llvm::Value *t = &*arg++;
    auto block = [&](const char *n) { return llvm::BasicBlock::Create(ctx_, n, fn); };
    auto *entry = block("entry");
    auto *faulted = block("faulted");
    auto *done = block("done");
    auto field = [&](llvm::Value *p, uint64_t offset) {
        return b_.CreateConstInBoundsGEP1_64(i8_, p, offset);
    };
    auto signal_fence = [&] {
        b_.CreateFence(llvm::AtomicOrdering::SequentiallyConsistent, llvm::SyncScope::SingleThread);
    };
    // The thread's run sequence (thread_run::seq) goes odd for the run and even after it: only
    // this thread writes it, and a run nested in this one (a signal handler's, a probe's a
    // helper met) finds it odd and takes a state of its own, so the value the run ends with
    // is the one it started with plus two, read once; a host's census reads it from another
    // thread (after a membarrier) to know when the runs in progress have ended.
    auto set_seq = [&](llvm::Value *seq, llvm::Value *v, llvm::AtomicOrdering order) {
        auto *store = b_.CreateStore(v, seq);
        store->setAtomic(order);
        store->setAlignment(llvm::Align(4));
    };
    b_.SetInsertPoint(entry);
    // The budget is read before the mark's fence, where the direct entry's test of it
    // (budget_bounds_checks) reads it too: the two loads become one.
    llvm::Value *budget = checked_ ? run_budget(opts) : nullptr;
    llvm::Value *seq = b_.CreateIntToPtr(b_.CreateAdd(t, b_.getInt64(layout.seq)), ptr_);
    llvm::Value *seq_before = b_.CreateLoad(b_.getInt32Ty(), seq);
    set_seq(seq, b_.CreateAdd(seq_before, b_.getInt32(1)), llvm::AtomicOrdering::Monotonic);
    signal_fence(); // the mark comes before anything a signal handler's run could meet
    const uint64_t reach = prog_.entry_frame_reach();
    llvm::Value *top = b_.CreateAdd(t, b_.getInt64(layout.stack_top));
    llvm::Value *frame_lo = b_.CreateSub(top, b_.getInt64(reach));
    // Only the words the program may read before writing them, each run of them at once.
    const uint64_t zeroed = prog_.entry_frame_zeroed_words();
    for (uint64_t w = 0; w < reach / 8;) {
        if ((zeroed >> w & 1) == 0) {
            w++;
            continue;
        }
        uint64_t end = w;
        while (end < reach / 8 && (zeroed >> end & 1) != 0) {
            end++;
        }
        b_.CreateMemSet(b_.CreateIntToPtr(b_.CreateSub(top, b_.getInt64(end * 8)), ptr_),
                        b_.getInt8(0), (end - w) * 8, llvm::MaybeAlign(8));
        w = end;
    }
    llvm::Value *s = b_.CreateIntToPtr(b_.CreateAdd(t, b_.getInt64(layout.state)), ptr_);
    // What only the runtime reads, which the optimised tier drops from a run that calls nothing
    // (drop_unread_stores). rc_ready is not one: the far caches' checks read it without a call.
    for (auto [v, offset] :
         {std::pair{mem, offsetof(jit_state, mem)}, std::pair{len, offsetof(jit_state, mem_len)},
          std::pair{opts, offsetof(jit_state, opts)},
          std::pair{eng, offsetof(jit_state, engine)}}) {
        b_.CreateStore(v, field(s, offset))->setMetadata(lazy_kind, llvm::MDNode::get(ctx_, {}));
    }
    b_.CreateStore(b_.getInt64(0), field(s, offsetof(jit_state, rc_ready)));
    llvm::Value *z = b_.getInt64(0);
    std::vector<llvm::Value *> args{s, z, mem, len, z, z, z, z, z, z, z, top, z};
    // The budget and the near caches go to the program in registers; the state gets them
    // only on the paths that read them there (a helper that runs a callback, a tail call,
    // rt_prepare's far caches).
    if (checked_) {
        args.push_back(budget);
        // The caches start on the input memory, or the entry frame when it is too small
        // (rt_prepare starts the far caches the same way).
        llvm::Value *size =
            b_.CreateSelect(b_.CreateICmpEQ(mem, b_.getInt64(0)), b_.getInt64(0), len);
        llvm::Value *on_input = b_.CreateICmpUGE(size, b_.getInt64(max_access));
        llvm::Value *writable = b_.CreateICmpNE(
            b_.CreateLoad(i8_, field(opts, offsetof(run_options, mem_writable))), b_.getInt8(0));
        llvm::Value *write_input = b_.CreateAnd(on_input, writable);
        args.push_back(b_.CreateSelect(on_input, mem, frame_lo));
        args.push_back(b_.CreateSelect(on_input, size, b_.getInt64(reach)));
        args.push_back(b_.CreateSelect(write_input, mem, frame_lo));
        args.push_back(b_.CreateSelect(write_input, size, b_.getInt64(reach)));
    } else {
        args.insert(args.end(), 1 + near_count, z);
    }
    auto *call = b_.CreateCall(fn_ty_, functions_.at(0), args);
    call->setCallingConv(llvm::CallingConv::Fast);
    llvm::Value *r0 = b_.CreateExtractValue(call, 0);
    b_.CreateCondBr(b_.CreateICmpNE(b_.CreateExtractValue(call, ret_faulted), z), faulted, done,
                    unlikely_);

    // The engine turns the fault into the run's error (or runs the tail call a helper asked
    // for) and frees the state. It gets the run's arguments from the state, where the entry
    // stored them (a fault comes after a runtime call, which may write memory, so these loads
    // stay): kept in registers through the whole run only for this, they would take
    // callee-saved ones.
    b_.SetInsertPoint(faulted);
    auto *finish = b_.CreateCall(ty, runtime_fn(layout.faulted, layout.faulted_keeping),
                                 {b_.CreateLoad(ptr_, field(s, offsetof(jit_state, engine))),
                                  b_.CreateLoad(i64_, field(s, offsetof(jit_state, mem))),
                                  b_.CreateLoad(i64_, field(s, offsetof(jit_state, mem_len))),
                                  b_.CreateLoad(ptr_, field(s, offsetof(jit_state, opts))), t});
    finish->setTailCall();
    finish->setMetadata(lazy_kind, llvm::MDNode::get(ctx_, {}));
    b_.CreateRet(finish);

    b_.SetInsertPoint(done);
    auto *executed = b_.CreateLoad(ptr_, field(opts, offsetof(run_options, executed)));
    executed->setMetadata(executed_kind, llvm::MDNode::get(ctx_, {}));
    auto *count = block("count");
    auto *end = block("end");
    b_.CreateCondBr(b_.CreateICmpNE(executed, llvm::ConstantPointerNull::get(ptr_)), count, end,
                    unlikely_);
    b_.SetInsertPoint(count);
    llvm::Value *used =
        checked_ ? b_.CreateSub(budget, b_.CreateExtractValue(call, ret_budget)) : z;
    b_.CreateStore(used, executed);
    b_.CreateBr(end);
    b_.SetInsertPoint(end);
    signal_fence();
    set_seq(seq, b_.CreateAdd(seq_before, b_.getInt32(2)), llvm::AtomicOrdering::Release);
    llvm::Value *ret = llvm::UndefValue::get(status);
    ret = b_.CreateInsertValue(ret, r0, 0);
    ret = b_.CreateInsertValue(ret, llvm::ConstantPointerNull::get(ptr_), 1);
    b_.CreateRet(ret);
}

void translator::emit_direct_entry(const std::string &name, const std::string &run_entry,
                                   const direct_layout &layout) {
    llvm::StructType *status = llvm::StructType::get(ctx_, {i64_, ptr_}); // run_status
    auto *ty = llvm::FunctionType::get(status, {ptr_, i64_, i64_, ptr_}, false);
    auto *run_ty = llvm::FunctionType::get(status, {ptr_, i64_, i64_, ptr_, i64_}, false);
    auto *fn = llvm::Function::Create(ty, llvm::Function::ExternalLinkage, name, mod_);
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    std::vector<llvm::Value *> args;
    for (auto &a : fn->args()) {
        args.push_back(&a);
    }
    auto *entry = llvm::BasicBlock::Create(ctx_, "entry", fn);
    auto *check = llvm::BasicBlock::Create(ctx_, "check", fn);
    auto *here = llvm::BasicBlock::Create(ctx_, "here", fn);
    auto *elsewhere = llvm::BasicBlock::Create(ctx_, "elsewhere", fn);
    // The thread's state pointer: an initial-exec thread-local, %fs-relative (address space
    // 257 on x86-64).
    b_.SetInsertPoint(entry);
    llvm::Value *tls = llvm::ConstantExpr::getIntToPtr(
        b_.getInt64(static_cast<uint64_t>(layout.tls_offset)), b_.getPtrTy(257));
    llvm::Value *t = b_.CreateLoad(i64_, tls);
    b_.CreateCondBr(b_.CreateICmpEQ(t, b_.getInt64(0)), elsewhere, check, unlikely_);
    b_.SetInsertPoint(check);
    llvm::Value *seq = b_.CreateLoad(
        b_.getInt32Ty(), b_.CreateIntToPtr(b_.CreateAdd(t, b_.getInt64(layout.seq)), ptr_));
    llvm::Value *busy = b_.CreateAnd(seq, b_.getInt32(1));
    b_.CreateCondBr(b_.CreateICmpNE(busy, b_.getInt32(0)), elsewhere, here, unlikely_);
    b_.SetInsertPoint(here);
    llvm::Function *body = mod_.getFunction(run_entry + run_body_suffix);
    if (budget_bounds_checks()) {
        // Without loops, no run of it passes more instructions than it has: with that much
        // budget, none of its budget tests can fail, and the run inlined below that test loses
        // them, and with them the runtime call a failing one makes (values kept across it
        // would cost the entry callee-saved registers). With loops, the optimised tier finds
        // such a bound from their largest trip counts where they have one (bound_budget), and
        // sends the runs that count what they ran to the run entry too: the copy below then
        // neither tests nor counts. The other runs: the run entry, whose copy of the run keeps
        // its budget tests and faults.
        auto *enough = llvm::BasicBlock::Create(ctx_, "enough", fn);
        auto *short_of = llvm::BasicBlock::Create(ctx_, "short_of", fn);
        llvm::Value *low = nullptr;
        if (!loops_) {
            low = b_.CreateICmpULT(run_budget(args[3]), b_.getInt64(insns_.size()));
        } else {
            auto *marker = llvm::cast<llvm::Function>(
                mod_.getOrInsertFunction(
                        short_of_budget_name,
                        llvm::FunctionType::get(b_.getInt1Ty(), {i64_, i64_, ptr_}, false))
                    .getCallee());
            marker->setDoesNotAccessMemory();
            marker->setDoesNotThrow();
            marker->setWillReturn();
            auto option = [&](size_t offset) {
                return b_.CreateConstInBoundsGEP1_64(i8_, args[3], offset);
            };
            // Tested as the options give it as well: a budget the clamp of run_budget would
            // change is above any bound, and the copy has no test that needs the clamp.
            llvm::Value *wanted =
                b_.CreateLoad(i64_, option(offsetof(run_options, instruction_budget)));
            llvm::Value *executed = b_.CreateLoad(ptr_, option(offsetof(run_options, executed)));
            low = b_.CreateCall(marker, {run_budget(args[3]), wanted, executed});
        }
        b_.CreateCondBr(low, short_of, enough, unlikely_);
        b_.SetInsertPoint(short_of);
        auto *run = b_.CreateCall(run_ty, mod_.getFunction(run_entry),
                                  {args[0], args[1], args[2], args[3], t});
        run->setTailCall();
        b_.CreateRet(run);
        b_.SetInsertPoint(enough);
    }
    // The run inlined here, not reached by a jump to a run entry, which would load the run
    // sequence again and keep its own registers.
    auto *call = b_.CreateCall(run_ty, body, {args[0], args[1], args[2], args[3], t});
    call->setTailCall();
    b_.CreateRet(call);
    // No state yet, a run inside a run, or a thread past its exit: the engine finds a state,
    // makes it the thread's for the run, and comes back here.
    b_.SetInsertPoint(elsewhere);
    auto *other = b_.CreateCall(ty, runtime_fn(layout.elsewhere, layout.elsewhere_keeping), args);
    other->setTailCall();
    b_.CreateRet(other);
}

} // namespace bpftime::vm::jit
