// SPDX-License-Identifier: MIT
// The translator: eBPF to the LLVM module of one program. Every eBPF function (the entry and
// each local-call target) becomes an LLVM function whose registers are SSA values.
//
// Its member functions are defined in translator.cpp (functions, blocks, arithmetic, jumps and
// calls), translate_memory.cpp (access checks, loads, stores, atomics) and map_lookup.cpp
// (map lookups without the helper call and the map value pointers they return).
#pragma once

#include "plan.hpp"
#include "runtime.hpp"

#include <bpftime/vm/vm.hpp>

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>

namespace bpftime::vm::jit {

// What a function needs of the stack: whether it has a frame of its own, and whether it makes
// local calls.
struct function_shape {
    bool frame = true;
    bool calls = true;
};

// Builds the LLVM module of one program.
class translator {
public:
    // vector_free: code that keeps the vector state (see vector_free()).
    translator(const program &prog, bool checked, bool vector_free, llvm::LLVMContext &ctx,
               llvm::Module &mod);

    // Emits every function, the exported run entry `name`, its direct entry and its callback
    // entry. Returns an error message or "".
    std::string translate(const std::string &name, const direct_layout &direct);

    // Whether the module translated for vector_free is that: its calls into the runtime go
    // through wrappers that keep the vector state, and it calls nothing else (no helper, no
    // find call) and has no loop (so compiling it for general-purpose registers only costs no
    // vectorised loop). Its functions are then compiled without SSE, x87 and MMX (the engine
    // does that), and a run through its entries changes no vector register.
    bool vector_free() const { return vector_free_ && !calls_out_ && !loops_; }

private:
    // A pointer a direct lookup returned: null, or size bytes of a value in the map's value
    // area. Known not null in a block entered only from a test of it against 0 that says so;
    // accesses inside the value then need no check.
    struct value_pointer {
        size_t lookup = 0; // the call's pc: registers with the same one hold the same pointer
        uint32_t size = 0;
        bool writable = false;
        bool not_null = false;
    };
    using value_pointers = std::array<std::optional<value_pointer>, register_count>;

    // A jit_state field by its offset.
    llvm::Value *state_field(size_t offset) {
        return b_.CreateConstInBoundsGEP1_64(i8_, state_, offset);
    }
    llvm::Value *load_state(size_t offset) { return b_.CreateLoad(i64_, state_field(offset)); }
    llvm::Value *load_state_of(llvm::Value *state, size_t offset) {
        return b_.CreateLoad(i64_, b_.CreateConstInBoundsGEP1_64(i8_, state, offset));
    }
    void store_state(size_t offset, llvm::Value *v) { b_.CreateStore(v, state_field(offset)); }

    llvm::Value *reg(int r) {
        if (r == frame_pointer) {
            return fp_;
        }
        return b_.CreateLoad(i64_, regs_[static_cast<size_t>(r)]);
    }
    void set_reg(int r, llvm::Value *v) {
        if (v->getType() != i64_) {
            v = b_.CreateZExt(v, i64_);
        }
        b_.CreateStore(v, regs_[static_cast<size_t>(r)]);
    }
    llvm::Value *imm64(int32_t imm) {
        return b_.getInt64(static_cast<uint64_t>(static_cast<int64_t>(imm)));
    }
    llvm::Value *const_ptr(uint64_t addr) {
        return llvm::ConstantExpr::getIntToPtr(b_.getInt64(addr), ptr_);
    }
    // A runtime function as the code calls it: directly, or in vector-free code through its
    // wrapper that keeps the vector state.
    llvm::Value *runtime_fn(uint64_t direct, uint64_t keeping) {
        return const_ptr(vector_free_ ? keeping : direct);
    }
    // A call of a runtime slow path (rt_prepare, rt_fault, rt_check): in vector-free code
    // through its wrapper that keeps the vector state, in other code through its wrapper that
    // keeps the general-purpose registers (preserving()).
    llvm::CallInst *call_slow_path(llvm::FunctionType *ty, uint64_t keeping, uint64_t preserving,
                                   llvm::ArrayRef<llvm::Value *> args) {
        auto *call = b_.CreateCall(ty, const_ptr(vector_free_ ? keeping : preserving), args);
        if (!vector_free_) {
            call->setCallingConv(llvm::CallingConv::PreserveMost);
        }
        return call;
    }
    llvm::BasicBlock *new_block(const char *name) {
        return llvm::BasicBlock::Create(ctx_, name, fn_);
    }
    void branch_unlikely(llvm::Value *cond, llvm::BasicBlock *unlikely, llvm::BasicBlock *likely) {
        b_.CreateCondBr(cond, unlikely, likely, unlikely_);
    }

    // Functions, blocks, arithmetic, jumps and calls (translator.cpp).

    // When cond holds, records a fault and returns from the function; else goes on in a new
    // block.
    void fault_if(llvm::Value *cond, uint64_t kind, size_t pc, llvm::Value *addr = nullptr,
                  llvm::Value *len = nullptr);
    // Returns from the function when a callee or the runtime recorded a fault.
    void return_if_faulted();
    // Follows which registers hold r10 + a constant, and which the value of an lddw, through
    // one instruction.
    void track_registers(const ebpf_inst &inst);
    llvm::Type *int_type(uint64_t bytes);
    // dst op src in the width of the instruction class; division never traps.
    llvm::Value *emit_binary(uint8_t op, llvm::Value *a, llvm::Value *b, bool is_signed);
    void emit_alu(const ebpf_inst &inst);
    llvm::Value *emit_condition(const ebpf_inst &inst);
    // Stops the run when the budget is exhausted (at a loop head, a local call, an exit).
    void check_budget(size_t pc);
    // The number of instructions the block starting at pc executes (lddw counts once).
    uint64_t block_length(const function_plan &plan, size_t pc);
    // Returns (r0, args, the budget left, faulted) from the function.
    void emit_return(llvm::Value *r0, std::array<llvm::Value *, 5> args, bool faulted = false);
    // The fields of a function's return value after r0..r5.
    static constexpr unsigned ret_budget = 6, ret_faulted = 7, ret_fields = 8;
    void emit_helper_call(size_t pc, const ebpf_inst &inst);
    // The budget left at the current instruction into the run's state, and back (a callback
    // a helper runs spends it there; a tail call goes on from it).
    void budget_to_state();
    void budget_from_state();
    // Calls rt_prepare unless this run's context is set up already: before what uses it.
    void prepare_run_context();
    // Before a helper call: the run's context set up (prepare_run_context), and
    // run_context::stack, against which helpers check pointers, this function's frame and its
    // callers', as the interpreter keeps it, [frame's bottom, stack_top). Set at helper calls
    // rather than at every local call and return: only helpers read it.
    void prepare_helper_call();
    void emit_local_call(size_t pc, const ebpf_inst &inst);
    void emit_function(const function_plan &plan);
    // The compare tree at pc as a switch. Each way through the tree gets a block that counts
    // the tree's instructions it passes (and tests the budget where the way passes a loop
    // head), then goes on at the tree's leaf; values outside the switch's range go on to the
    // tree's root compare, which the caller emits in the block this leaves open.
    void emit_switch(size_t pc, const compare_tree &tree);
    // The body of a whole run on a thread's state (direct_layout), marked busy while it runs:
    // name.run(engine &, void *mem, uint64_t mem_len, const run_options &, state), and, for a
    // program whose direct entry tests the budget first, name (the same, internal) for its
    // low-budget way.
    void emit_run_entry(const std::string &name, const direct_layout &layout);
    // Whether the direct entry tests the budget once against what any run can need, and runs a
    // copy of the code without budget tests when it covers that (checked code of one function
    // without helper calls or callbacks): the program's length in instructions without loops,
    // with them the bound the optimised tier finds from their trip counts (bound_budget).
    bool budget_bounds_checks() const;
    // The run's instruction budget from its run_options at opts, at most INT64_MAX.
    llvm::Value *run_budget(llvm::Value *opts);
    // run_status name(engine &, void *mem, uint64_t mem_len, const run_options &): the run
    // on the calling thread's state, or the engine's elsewhere when it cannot be used.
    void emit_direct_entry(const std::string &name, const std::string &run_entry,
                           const direct_layout &layout);
    // callback_fn name(jit_state *, pc, r1..r5, fp, depth): runs the callback starting at pc.
    void emit_callback_entry(const std::string &name);

    // Access checks, loads, stores and atomics (translate_memory.cpp).

    // Checks [addr, addr + n) before an access; continues in a new block when allowed.
    void check_access(size_t pc, int base, int16_t offset, llvm::Value *addr, uint64_t n,
                      bool write);
    // Marks the compare of an access check for hoist_checks.
    llvm::Value *mark_check(llvm::Value *cmp);
    // base + offset, checked for an access of n bytes.
    llvm::Value *checked_address(size_t pc, int base, int16_t offset, uint64_t n, bool write);
    void emit_load(size_t pc, const ebpf_inst &inst, bool sign);
    void emit_store(size_t pc, const ebpf_inst &inst, llvm::Value *value);
    void emit_atomic(size_t pc, const ebpf_inst &inst);

    // Map lookups (map_lookup.cpp).

    // map_lookup_elem with a map's handle in r1 and the key in the frame, without the helper
    // call, as the map's plan says (direct_lookup): an indexed table inline, a find call as a
    // direct call. The same r0 as the helper, and the map's value area becomes a cache when a
    // value is found, as the helper's hint would make it. False (nothing emitted) when the call
    // does not have that shape.
    bool emit_direct_lookup(size_t pc);
    // A helper that handed out a region (a map value) is usually followed by accesses to it:
    // the region becomes the near cache.
    void take_handed_region();
    // The map value pointers a block starting at pc begins with: those of its one predecessor
    // when that is a conditional jump it is the not-null way of (`if rX == 0` falling through,
    // `if rX != 0` jumping), with the pointer rX holds (and its copies) known not null.
    value_pointers value_pointers_entering(const function_plan &plan, size_t pc);

    // The program and the module.
    const program &prog_;
    std::span<const ebpf_inst> insns_;
    bool checked_;
    bool vector_free_;
    bool calls_out_ = false; // a call that does not keep the vector state (a helper's)
    bool loops_ = false;
    llvm::LLVMContext &ctx_;
    llvm::Module &mod_;
    llvm::IRBuilder<> b_;
    llvm::Type *i8_, *i16_, *i32_, *i64_;
    llvm::PointerType *ptr_;
    llvm::StructType *ret_ty_;
    llvm::FunctionType *fn_ty_;
    llvm::MDNode *unlikely_;
    llvm::MDNode *likely_;
    std::map<size_t, llvm::Function *> functions_;
    // Each function's function_shape, by entry.
    std::map<size_t, function_shape> shapes_;
    bool frame_ = true;         // whether the function being emitted has a frame
    size_t function_entry_ = 0; // the pc of the function being emitted

    // The function being emitted.
    llvm::Function *fn_ = nullptr;
    llvm::Value *state_ = nullptr, *fp_ = nullptr, *depth_ = nullptr, *rc_ = nullptr,
                *helper_failed_ = nullptr, *stack_lo_ = nullptr, *stack_span_ = nullptr;
    std::array<llvm::Value *, 10> regs_{};
    // The near caches (read lo, read span, write lo, write span): set on entry and by helper
    // calls only, so in a loop without calls they are invariant and LLVM can hoist or drop
    // their checks. The far caches (read_lo_ ...) are refilled by every slow-path hit.
    static constexpr size_t near_count = 4;
    std::array<llvm::Value *, near_count> near_{};
    llvm::Value *budget_ = nullptr, *read_lo_ = nullptr, *read_span_ = nullptr,
                *write_lo_ = nullptr, *write_span_ = nullptr;
    // Registers known to hold r10 + offset in the current basic block.
    std::array<std::optional<int64_t>, register_count> fp_offset_{};
    // Registers that hold the value an lddw loaded, within the current block.
    std::array<std::optional<uint64_t>, register_count> loaded_{};
    // Map value pointers (value_pointer) by register.
    value_pointers value_ptr_{};
    std::optional<value_pointer> looked_up_; // what the call being emitted returns
    // value_ptr_ at the end of each block that ends in a conditional jump, by its pc.
    std::map<size_t, value_pointers> value_ptr_at_jump_;
    llvm::BasicBlock *fault_ret_ = nullptr;
    std::map<size_t, llvm::BasicBlock *> blocks_;
    // Instructions of the current block after the one being emitted: its budget was taken on
    // entry to the block.
    uint64_t rest_of_block_ = 0;
};

// The name of a program's callback entry is its entry's with this suffix.
inline constexpr const char *callback_entry_suffix = "_callback";
// The name of a program's direct entry is its entry's with this suffix.
inline constexpr const char *direct_entry_suffix = "_direct";
// The suffix of a run's body (internal, always inlined): the direct entry is a call of it, and
// so is the run entry of a program whose direct entry tests the budget first.
inline constexpr const char *run_body_suffix = ".run";

} // namespace bpftime::vm::jit
