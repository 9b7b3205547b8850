// SPDX-License-Identifier: MIT
// The interpreter: every memory access is checked against the regions of the run.
#include "interpreter.hpp"
#include "run_census.hpp"
#include "run_setup.hpp"

#include <array>
#include <cstring>

namespace bpftime::vm {
namespace {

struct frame {
    size_t return_pc;
    uint64_t saved[4]; // r6..r9
    uint64_t fp;
};

uint64_t sx32(int32_t imm) {
    return static_cast<uint64_t>(static_cast<int64_t>(imm));
}

uint64_t bswap(uint64_t v, int32_t width) {
    switch (width) {
    case 16:
        return __builtin_bswap16(static_cast<uint16_t>(v));
    case 32:
        return __builtin_bswap32(static_cast<uint32_t>(v));
    default:
        return __builtin_bswap64(v);
    }
}

uint64_t truncate(uint64_t v, int32_t width) {
    switch (width) {
    case 16:
        return static_cast<uint16_t>(v);
    case 32:
        return static_cast<uint32_t>(v);
    default:
        return v;
    }
}

uint64_t sign_extend(uint64_t v, int bits) {
    switch (bits) {
    case 8:
        return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(v)));
    case 16:
        return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int16_t>(v)));
    case 32:
        return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(v)));
    default:
        return v;
    }
}

// Division and modulo never trap: x / 0 = 0, x % 0 = x, INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0.
template <class U, class S>
U divide(U a, U b, bool is_signed) {
    if (b == 0) {
        return 0;
    }
    if (!is_signed) {
        return a / b;
    }
    if (static_cast<S>(b) == -1) {
        return static_cast<U>(U{0} - a);
    }
    return static_cast<U>(static_cast<S>(a) / static_cast<S>(b));
}

template <class U, class S>
U modulo(U a, U b, bool is_signed) {
    if (b == 0) {
        return a;
    }
    if (!is_signed) {
        return a % b;
    }
    if (static_cast<S>(b) == -1) {
        return 0;
    }
    return static_cast<U>(static_cast<S>(a) % static_cast<S>(b));
}

template <class T>
T atomic_apply(T *p, int32_t op, T val, T expected) {
    switch (op & ~atomic_fetch) {
    case atomic_add:
        return __atomic_fetch_add(p, val, __ATOMIC_SEQ_CST);
    case atomic_or:
        return __atomic_fetch_or(p, val, __ATOMIC_SEQ_CST);
    case atomic_and:
        return __atomic_fetch_and(p, val, __ATOMIC_SEQ_CST);
    case atomic_xor:
        return __atomic_fetch_xor(p, val, __ATOMIC_SEQ_CST);
    case atomic_xchg & ~atomic_fetch:
        return __atomic_exchange_n(p, val, __ATOMIC_SEQ_CST);
    default: // cmpxchg: the old value whether or not it matched
        __atomic_compare_exchange_n(p, &expected, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        return expected;
    }
}

template <class T>
T load(uint64_t addr) {
    T v;
    std::memcpy(&v, reinterpret_cast<const void *>(addr), sizeof v);
    return v;
}

template <class T>
void store(uint64_t addr, T v) {
    std::memcpy(reinterpret_cast<void *>(addr), &v, sizeof v);
}

// What the functions of one run share: a callback (run_context::call) runs in a nested
// execute() on the same budget.
struct interp_run {
    const program &prog;
    run_context &rc;
    const memory_region &input;
    uint64_t stack_top;
    const run_options &opts;
    uint64_t budget; // instructions left, kept here while a helper runs
};

// Runs the function starting at pc with r1..r5 = args and r10 = fp at call depth base_depth,
// until it returns.
result<uint64_t> execute(interp_run &run, size_t pc, const uint64_t (&args)[5], uint64_t fp,
                         size_t base_depth) {
    const program &prog_ = run.prog;
    const run_options &opts = run.opts;
    const uint64_t stack_top = run.stack_top;
    const memory_region &input = run.input;
    run_context &rc = run.rc;

    std::array<frame, max_call_depth - 1> frames;
    size_t depth = 0;
    uint64_t reg[register_count] = {};
    std::memcpy(&reg[1], args, sizeof args);
    reg[frame_pointer] = fp;

    const ebpf_inst *code = prog_.insns().data();
    uint64_t budget = run.budget;

    auto fault = [&](size_t at, int code_, const std::string &why) -> error {
        run.budget = budget;
        return fault_at(prog_.insns(), at, code_, why);
    };
    // A helper stopped the program: a tail call to run, or a failure.
    auto stopped = [&](size_t at) -> error {
        run.budget = budget;
        if (rc.tail_target() != nullptr) {
            return make_error(0, std::string());
        }
        return helper_failure(prog_.insns(), at, rc);
    };
    // The stack (always writable) and the input memory are the common cases; after them, the
    // region that allowed the last other access, since loops walk one region.
    memory_region last{};
    auto allowed = [&](uint64_t addr, uint64_t n, bool write) {
        if ((addr >= rc.stack.start && addr <= stack_top - n) ||
            ((!write || input.writable) && input.contains(addr, n)) ||
            ((!write || last.writable) && last.contains(addr, n))) {
            return true;
        }
        const memory_region *r = rc.find_region(addr, n, write);
        if (r == nullptr) {
            return false;
        }
        last = *r;
        return true;
    };

#define BPFTIME_CHECK(addr, n, write)                                                              \
    do {                                                                                           \
        if (!allowed((addr), (n), (write))) [[unlikely]] {                                         \
            return fault(pc - 1, fault_out_of_bounds, outside_message((write), (n), (addr)));      \
        }                                                                                          \
    } while (0)

#define BPFTIME_LDX(type, ext)                                                                     \
    {                                                                                              \
        uint64_t addr = reg[inst.src] + static_cast<uint64_t>(static_cast<int64_t>(inst.offset));  \
        BPFTIME_CHECK(addr, sizeof(type), false);                                                  \
        reg[inst.dst] = ext(load<type>(addr));                                                     \
        break;                                                                                     \
    }

#define BPFTIME_ST(type, value)                                                                    \
    {                                                                                              \
        uint64_t addr = reg[inst.dst] + static_cast<uint64_t>(static_cast<int64_t>(inst.offset));  \
        BPFTIME_CHECK(addr, sizeof(type), true);                                                   \
        store<type>(addr, static_cast<type>(value));                                               \
        break;                                                                                     \
    }

#define BPFTIME_ALU32(op, expr)                                                                    \
    case cls_alu | src_k | op: {                                                                   \
        uint32_t a = static_cast<uint32_t>(reg[inst.dst]);                                         \
        uint32_t b = static_cast<uint32_t>(inst.imm);                                              \
        reg[inst.dst] = static_cast<uint32_t>(expr);                                               \
        break;                                                                                     \
    }                                                                                              \
    case cls_alu | src_x | op: {                                                                   \
        uint32_t a = static_cast<uint32_t>(reg[inst.dst]);                                         \
        uint32_t b = static_cast<uint32_t>(reg[inst.src]);                                         \
        reg[inst.dst] = static_cast<uint32_t>(expr);                                               \
        break;                                                                                     \
    }

#define BPFTIME_ALU64(op, expr)                                                                    \
    case cls_alu64 | src_k | op: {                                                                 \
        uint64_t a = reg[inst.dst];                                                                \
        uint64_t b = sx32(inst.imm);                                                               \
        reg[inst.dst] = (expr);                                                                    \
        break;                                                                                     \
    }                                                                                              \
    case cls_alu64 | src_x | op: {                                                                 \
        uint64_t a = reg[inst.dst];                                                                \
        uint64_t b = reg[inst.src];                                                                \
        reg[inst.dst] = (expr);                                                                    \
        break;                                                                                     \
    }

#define BPFTIME_ALU(op, expr) BPFTIME_ALU32(op, expr) BPFTIME_ALU64(op, expr)

#define BPFTIME_JMP(op, expr64, expr32)                                                            \
    case cls_jmp | src_k | op: {                                                                   \
        uint64_t a = reg[inst.dst];                                                                \
        uint64_t b = sx32(inst.imm);                                                               \
        if (expr64) {                                                                              \
            pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.offset));                        \
        }                                                                                          \
        break;                                                                                     \
    }                                                                                              \
    case cls_jmp | src_x | op: {                                                                   \
        uint64_t a = reg[inst.dst];                                                                \
        uint64_t b = reg[inst.src];                                                                \
        if (expr64) {                                                                              \
            pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.offset));                        \
        }                                                                                          \
        break;                                                                                     \
    }                                                                                              \
    case cls_jmp32 | src_k | op: {                                                                 \
        uint32_t a = static_cast<uint32_t>(reg[inst.dst]);                                         \
        uint32_t b = static_cast<uint32_t>(inst.imm);                                              \
        if (expr32) {                                                                              \
            pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.offset));                        \
        }                                                                                          \
        break;                                                                                     \
    }                                                                                              \
    case cls_jmp32 | src_x | op: {                                                                 \
        uint32_t a = static_cast<uint32_t>(reg[inst.dst]);                                         \
        uint32_t b = static_cast<uint32_t>(reg[inst.src]);                                         \
        if (expr32) {                                                                              \
            pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.offset));                        \
        }                                                                                          \
        break;                                                                                     \
    }

    for (;;) {
        if (budget == 0) [[unlikely]] {
            return fault(pc, fault_budget, budget_message(named_budget(opts)));
        }
        budget--;
        const ebpf_inst inst = code[pc++];
        switch (inst.opcode) {
            BPFTIME_ALU(alu_add, a + b)
            BPFTIME_ALU(alu_sub, a - b)
            BPFTIME_ALU(alu_mul, a * b)
            BPFTIME_ALU32(alu_div, (divide<uint32_t, int32_t>(a, b, inst.offset == 1)))
            BPFTIME_ALU64(alu_div, (divide<uint64_t, int64_t>(a, b, inst.offset == 1)))
            BPFTIME_ALU(alu_or, a | b)
            BPFTIME_ALU(alu_and, a & b)
            BPFTIME_ALU32(alu_lsh, a << (b & 31))
            BPFTIME_ALU64(alu_lsh, a << (b & 63))
            BPFTIME_ALU32(alu_rsh, a >> (b & 31))
            BPFTIME_ALU64(alu_rsh, a >> (b & 63))
            BPFTIME_ALU32(alu_mod, (modulo<uint32_t, int32_t>(a, b, inst.offset == 1)))
            BPFTIME_ALU64(alu_mod, (modulo<uint64_t, int64_t>(a, b, inst.offset == 1)))
            BPFTIME_ALU(alu_xor, a ^ b)
            BPFTIME_ALU32(alu_arsh, static_cast<uint32_t>(static_cast<int32_t>(a) >> (b & 31)))
            BPFTIME_ALU64(alu_arsh, static_cast<uint64_t>(static_cast<int64_t>(a) >> (b & 63)))

        case cls_alu | alu_neg:
            reg[inst.dst] = static_cast<uint32_t>(0u - static_cast<uint32_t>(reg[inst.dst]));
            break;
        case cls_alu64 | alu_neg:
            reg[inst.dst] = 0 - reg[inst.dst];
            break;
        case cls_alu | src_k | alu_mov:
            reg[inst.dst] = static_cast<uint32_t>(inst.imm);
            break;
        case cls_alu | src_x | alu_mov:
            reg[inst.dst] = static_cast<uint32_t>(sign_extend(reg[inst.src], inst.offset));
            break;
        case cls_alu64 | src_k | alu_mov:
            reg[inst.dst] = sx32(inst.imm);
            break;
        case cls_alu64 | src_x | alu_mov:
            reg[inst.dst] = sign_extend(reg[inst.src], inst.offset);
            break;
        case cls_alu | src_k | alu_end: // le: the host is little-endian
            reg[inst.dst] = truncate(reg[inst.dst], inst.imm);
            break;
        case cls_alu | src_x | alu_end:   // be
        case cls_alu64 | src_k | alu_end: // bswap
            reg[inst.dst] = bswap(reg[inst.dst], inst.imm);
            break;

        case op_lddw:
            reg[inst.dst] = static_cast<uint32_t>(inst.imm) |
                            (static_cast<uint64_t>(static_cast<uint32_t>(code[pc].imm)) << 32);
            pc++;
            break;

        case cls_ldx | mode_mem | size_b:
            BPFTIME_LDX(uint8_t, uint64_t)
        case cls_ldx | mode_mem | size_h:
            BPFTIME_LDX(uint16_t, uint64_t)
        case cls_ldx | mode_mem | size_w:
            BPFTIME_LDX(uint32_t, uint64_t)
        case cls_ldx | mode_mem | size_dw:
            BPFTIME_LDX(uint64_t, uint64_t)
        case cls_ldx | mode_memsx | size_b:
            BPFTIME_LDX(int8_t, static_cast<uint64_t>)
        case cls_ldx | mode_memsx | size_h:
            BPFTIME_LDX(int16_t, static_cast<uint64_t>)
        case cls_ldx | mode_memsx | size_w:
            BPFTIME_LDX(int32_t, static_cast<uint64_t>)
        case cls_st | mode_mem | size_b:
            BPFTIME_ST(uint8_t, inst.imm)
        case cls_st | mode_mem | size_h:
            BPFTIME_ST(uint16_t, inst.imm)
        case cls_st | mode_mem | size_w:
            BPFTIME_ST(uint32_t, inst.imm)
        case cls_st | mode_mem | size_dw:
            BPFTIME_ST(uint64_t, sx32(inst.imm))
        case cls_stx | mode_mem | size_b:
            BPFTIME_ST(uint8_t, reg[inst.src])
        case cls_stx | mode_mem | size_h:
            BPFTIME_ST(uint16_t, reg[inst.src])
        case cls_stx | mode_mem | size_w:
            BPFTIME_ST(uint32_t, reg[inst.src])
        case cls_stx | mode_mem | size_dw:
            BPFTIME_ST(uint64_t, reg[inst.src])

        case cls_stx | mode_atomic | size_w:
        case cls_stx | mode_atomic | size_dw: {
            const bool wide = inst.opcode == (cls_stx | mode_atomic | size_dw);
            const uint64_t n = wide ? 8 : 4;
            uint64_t addr = reg[inst.dst] + sx32(inst.offset);
            BPFTIME_CHECK(addr, n, true);
            if ((addr & (n - 1)) != 0) [[unlikely]] {
                return fault(pc - 1, fault_out_of_bounds, misaligned_message(addr, n));
            }
            uint64_t old =
                wide ? atomic_apply<uint64_t>(reinterpret_cast<uint64_t *>(addr), inst.imm,
                                              reg[inst.src], reg[0])
                     : atomic_apply<uint32_t>(reinterpret_cast<uint32_t *>(addr), inst.imm,
                                              static_cast<uint32_t>(reg[inst.src]),
                                              static_cast<uint32_t>(reg[0]));
            if (inst.imm == atomic_cmpxchg) {
                reg[0] = old;
            } else if ((inst.imm & atomic_fetch) != 0) {
                reg[inst.src] = old;
            }
            break;
        }

        case op_ja:
            pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.offset));
            break;
        case op_ja32:
            pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.imm));
            break;
            BPFTIME_JUMP_CONDITIONS(BPFTIME_JMP)

        case op_call:
            if (inst.src == call_local) {
                if (base_depth + depth + 1 >= max_call_depth) [[unlikely]] {
                    return fault(pc - 1, fault_call_depth, call_depth_message());
                }
                frame &f = frames[depth++];
                f.return_pc = pc;
                std::memcpy(f.saved, &reg[6], sizeof f.saved);
                f.fp = reg[frame_pointer];
                reg[frame_pointer] -= stack_frame_size;
                rc.stack.start = reg[frame_pointer] - stack_frame_size;
                rc.stack.size = stack_top - rc.stack.start;
                zero_frame(reinterpret_cast<void *>(rc.stack.start));
                pc += static_cast<size_t>(static_cast<ptrdiff_t>(inst.imm));
                break;
            }
            run.budget = budget; // a callback the helper runs spends it
            reg[0] = prog_.helper_at(pc - 1)(reg[1], reg[2], reg[3], reg[4], reg[5], &rc);
            budget = run.budget;
            if (rc.failed()) [[unlikely]] {
                return stopped(pc - 1);
            }
            break;
        case op_callx: {
            const helper_info *h = prog_.helpers().find(static_cast<uint32_t>(reg[inst.dst]));
            if (h == nullptr) [[unlikely]] {
                return fault(pc - 1, fault_bad_helper, unknown_helper_message(reg[inst.dst]));
            }
            run.budget = budget;
            reg[0] = h->fn(reg[1], reg[2], reg[3], reg[4], reg[5], &rc);
            budget = run.budget;
            if (rc.failed()) [[unlikely]] {
                return stopped(pc - 1);
            }
            break;
        }
        case op_exit:
            if (depth == 0) {
                run.budget = budget;
                return reg[0];
            }
            {
                const frame &f = frames[--depth];
                pc = f.return_pc;
                std::memcpy(&reg[6], f.saved, sizeof f.saved);
                reg[frame_pointer] = f.fp;
                rc.stack.start = f.fp - stack_frame_size;
                rc.stack.size = stack_top - rc.stack.start;
            }
            break;
        default:
            // validate() admits only the opcodes above.
            return fault(pc - 1, EINVAL, "opcode the interpreter does not know");
        }
    }
#undef BPFTIME_CHECK
#undef BPFTIME_LDX
#undef BPFTIME_ST
#undef BPFTIME_ALU32
#undef BPFTIME_ALU64
#undef BPFTIME_ALU
#undef BPFTIME_JMP
}

result<uint64_t> run_callback(void *run, size_t pc, const uint64_t (&args)[5], uint64_t fp,
                              size_t depth) {
    return execute(*static_cast<interp_run *>(run), pc, args, fp, depth);
}

} // namespace

interpreter::interpreter(const program &prog) : prog_(prog) {}

result<uint64_t> interpreter::run(void *mem, uint64_t mem_len, const run_options &opts) {
    const detail::run_mark in_run;
    run_setup setup(prog_, mem, mem_len, opts);
    interp_run run{prog_, setup.rc, setup.input, setup.top, opts, opts.instruction_budget};
    setup.rc.set_subprogram_runner(&run_callback, &run, prog_);
    setup.rc.set_tail_calls(opts.tail_calls);
    const uint64_t args[5] = {reinterpret_cast<uint64_t>(mem), mem_len, 0, 0, 0};
    auto r = execute(run, 0, args, setup.top, 0);
    const uint64_t used = opts.instruction_budget - run.budget;
    if (!r && setup.rc.tail_target() != nullptr) {
        return run_tail_call(setup.rc, mem, mem_len, opts, used);
    }
    if (r && opts.executed != nullptr) {
        *opts.executed = used;
    }
    return r;
}

} // namespace bpftime::vm
