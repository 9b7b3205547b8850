// SPDX-License-Identifier: MIT
// Straight-line code: arithmetic (with the operands engines most often get wrong), byte
// swaps, 64-bit constants, loads, stores and atomics through tracked pointers, and pointer
// moves, spills and arithmetic.
#include "generator.hpp"

#include <iterator>

namespace bpftime::fuzz::gen {

using namespace bpftime::vm;

namespace {

constexpr int32_t atomic_ops[] = {atomic_add,
                                  atomic_or,
                                  atomic_and,
                                  atomic_xor,
                                  atomic_add | atomic_fetch,
                                  atomic_or | atomic_fetch,
                                  atomic_and | atomic_fetch,
                                  atomic_xor | atomic_fetch,
                                  atomic_xchg,
                                  atomic_cmpxchg};

uint8_t size_code(int64_t n) {
    switch (n) {
    case 1:
        return size_b;
    case 2:
        return size_h;
    case 4:
        return size_w;
    default:
        return size_dw;
    }
}

} // namespace

void generator::gen_alu() {
    static constexpr uint8_t ops[] = {alu_add, alu_sub, alu_mul, alu_div, alu_or,  alu_and, alu_lsh,
                                      alu_rsh, alu_neg, alu_mod, alu_xor, alu_mov, alu_arsh};
    const uint8_t op = ops[in_.below(std::size(ops))];
    const uint8_t cls = in_.bit() ? cls_alu64 : cls_alu;
    if (op == alu_mov) {
        if (in_.bit()) {
            const int dst = dst_any();
            emit(cls | src_k | alu_mov, dst, 0, 0, imm32());
            st_[dst] = scalar();
        } else {
            const int src = src_scalar();
            const int dst = dst_any();
            static constexpr int16_t sx64[] = {0, 8, 16, 32};
            const int16_t off = cls == cls_alu64 ? sx64[in_.below(4)] : sx64[in_.below(3)];
            emit(cls | src_x | alu_mov, dst, src, off, 0);
            st_[dst] = scalar();
        }
        return;
    }
    const int dst = dst_scalar();
    if (op == alu_neg) {
        emit(cls | alu_neg, dst, 0, 0, 0);
        return;
    }
    const bool divmod = op == alu_div || op == alu_mod;
    const bool shift = op == alu_lsh || op == alu_rsh || op == alu_arsh;
    const int16_t off = divmod ? static_cast<int16_t>(in_.bit()) : 0;
    if (in_.bit()) {
        const int32_t imm = divmod ? divisor() : shift ? shift_amount() : imm32();
        emit(cls | src_k | op, dst, 0, off, imm);
    } else {
        emit(cls | src_x | op, dst, src_scalar(), off, 0);
    }
}

// Operand values the engines are most likely to get wrong.
void generator::gen_corner() {
    const uint8_t cls = in_.bit() ? cls_alu64 : cls_alu;
    const bool wide = cls == cls_alu64;
    const int a = dst_any();
    const int b = dst_any(a);
    const uint8_t divmod = in_.bit() ? alu_div : alu_mod;
    switch (in_.below(4)) {
    case 0: // INT_MIN / -1 and INT_MIN % -1, signed
        if (wide) {
            emit_lddw(a, 0x8000000000000000ull);
        } else {
            emit(cls_alu | src_k | alu_mov, a, 0, 0, INT32_MIN);
        }
        st_[a] = scalar();
        if (in_.bit()) {
            emit(cls | src_k | divmod, a, 0, 1, -1);
        } else {
            emit((in_.bit() ? cls_alu64 : cls_alu) | src_k | alu_mov, b, 0, 0, -1);
            st_[b] = scalar();
            emit(cls | src_x | divmod, a, b, 1, 0);
        }
        break;
    case 1: // by zero, or by a register whose low half alone is zero
    {
        emit_lddw(b, in_.bit() ? (static_cast<uint64_t>(in_.u32() | 1) << 32) : 0);
        st_[b] = scalar();
        const int dst = dst_scalar(b);
        emit(cls | src_x | divmod, dst, b, in_.bit(), 0);
        break;
    }
    case 2: { // shifts by register amounts past the width
        static constexpr uint8_t shifts[] = {alu_lsh, alu_rsh, alu_arsh};
        emit_lddw(b, in_.bit() ? static_cast<uint64_t>(static_cast<int64_t>(shift_amount()))
                               : imm64());
        st_[b] = scalar();
        const int dst = dst_scalar(b);
        emit(cls | src_x | shifts[in_.below(3)], dst, b, 0, 0);
        break;
    }
    default: // 32-bit arithmetic on a register with its high half set
        emit_lddw(a, imm64());
        st_[a] = scalar();
        gen_alu_on(a, cls_alu);
        break;
    }
}

void generator::gen_alu_on(int dst, uint8_t cls) {
    static constexpr uint8_t ops[] = {alu_add, alu_sub, alu_mul, alu_div, alu_or,  alu_and,
                                      alu_lsh, alu_rsh, alu_mod, alu_xor, alu_arsh};
    const uint8_t op = ops[in_.below(std::size(ops))];
    const int16_t off = (op == alu_div || op == alu_mod) ? static_cast<int16_t>(in_.bit()) : 0;
    emit(cls | src_k | op, dst, 0, off, imm32());
}

void generator::gen_endian() {
    static constexpr uint8_t ops[] = {cls_alu | src_k | alu_end, cls_alu | src_x | alu_end,
                                      cls_alu64 | src_k | alu_end};
    static constexpr int32_t widths[] = {16, 32, 64};
    const uint8_t op = ops[in_.below(3)];
    const int dst = dst_scalar(); // before the width (see generator.hpp)
    emit(op, dst, 0, 0, widths[in_.below(3)]);
}

void generator::emit_lddw_any() {
    const int dst = dst_any();
    emit_lddw(dst, imm64());
    st_[dst] = scalar();
}

void generator::gen_load() {
    const int base = ptr_reg(false);
    if (base < 0) {
        return;
    }
    static constexpr int64_t sizes[] = {1, 2, 4, 8};
    const int64_t n = sizes[in_.below(4)];
    const bool sx = n < 8 && in_.chance(30);
    const int16_t off = access_offset(st_[base], n, false);
    const int dst = dst_any();
    emit(cls_ldx | (sx ? mode_memsx : mode_mem) | size_code(n), dst, base, off, 0);
    st_[dst] = scalar();
}

void generator::gen_store() {
    const int base = ptr_reg(true);
    if (base < 0) {
        return;
    }
    static constexpr int64_t sizes[] = {1, 2, 4, 8};
    const int64_t n = sizes[in_.below(4)];
    const int16_t off = access_offset(st_[base], n, false);
    if (in_.bit()) {
        emit(cls_st | mode_mem | size_code(n), base, 0, off, imm32());
    } else {
        const int src = in_.chance(8) ? absolute_ptr(base) : src_scalar(base);
        emit(cls_stx | mode_mem | size_code(n), base, src, off, 0);
    }
}

// A register pointing into the input memory, the helper buffer or the caller region (whose
// addresses both engines share, so their values may be used as numbers), else a number.
int generator::absolute_ptr(int avoid) {
    const int p = pick([&](int x) { return is_ptr(st_[x].k) && st_[x].k != kind::stack; });
    return p >= 0 ? p : src_scalar(avoid);
}

void generator::gen_atomic() {
    const int base = ptr_reg(true);
    if (base < 0) {
        return;
    }
    const bool wide = in_.bit();
    const int64_t n = wide ? 8 : 4;
    int32_t op = atomic_ops[in_.below(std::size(atomic_ops))];
    if (op == atomic_cmpxchg && base == 0) {
        op = atomic_add | atomic_fetch; // cmpxchg would need r0 for the comparand
    }
    const bool fetch = (op & atomic_fetch) != 0 && op != atomic_cmpxchg;
    int src = fetch ? dst_scalar(base) : src_scalar(base);
    if (st_[base].k != kind::stack && writable(base) && in_.chance(8)) {
        src = base; // the address itself as the operand (and the old value into it)
    }
    if (op == atomic_cmpxchg && st_[0].k != kind::scalar) {
        mov_imm(0, imm32());
    }
    const int16_t off = access_offset(st_[base], n, true);
    emit(cls_stx | mode_atomic | (wide ? size_dw : size_w), base, src, off, op);
    if (op == atomic_cmpxchg) {
        st_[0] = scalar();
    } else if (fetch) {
        st_[src] = scalar();
    }
}

// An address outside the stack as a number: copied, then arithmetic on the copy.
void generator::gen_address_arith() {
    const int p = pick([&](int x) { return is_ptr(st_[x].k) && st_[x].k != kind::stack; });
    if (p < 0) {
        return;
    }
    const int q = dst_any(p);
    emit(cls_alu64 | src_x | alu_mov, q, p, 0, 0);
    st_[q] = scalar();
    gen_alu_on(q, in_.bit() ? cls_alu64 : cls_alu);
}

void generator::gen_pointer() {
    switch (in_.below(6)) {
    case 0: { // a copy of r10, moved somewhere in the frame
        const int q = dst_any();
        emit(cls_alu64 | src_x | alu_mov, q, frame_pointer, 0, 0);
        st_[q] = pointer(kind::stack, 0);
        if (in_.bit()) {
            const int32_t d = -static_cast<int32_t>(in_.below(520));
            emit(cls_alu64 | src_k | alu_add, q, 0, 0, d);
            st_[q].off += d;
        }
        break;
    }
    case 1: { // a copy of any pointer
        const int p = ptr_reg(false);
        const int q = dst_any(p);
        if (p >= 0) {
            emit(cls_alu64 | src_x | alu_mov, q, p, 0, 0);
            st_[q] = st_[p];
        }
        break;
    }
    case 2: { // pointer plus or minus a constant
        const int p = pick([&](int x) { return writable(x) && is_ptr(st_[x].k); });
        if (p >= 0) {
            const int32_t d = static_cast<int32_t>(in_.below(129)) - 64;
            const bool sub = in_.bit();
            emit(cls_alu64 | src_k | (sub ? alu_sub : alu_add), p, 0, 0, d);
            st_[p].off += sub ? -d : d;
        }
        break;
    }
    case 3: { // spill to the stack and fill into another register, then scrub the slot
        const int p = ptr_reg(false);
        if (p >= 0) {
            const int16_t slot = static_cast<int16_t>(-8 * (1 + static_cast<int>(in_.below(64))));
            const int q = dst_any();
            emit(cls_stx | mode_mem | size_dw, frame_pointer, p, slot, 0);
            emit(cls_ldx | mode_mem | size_dw, q, frame_pointer, slot, 0);
            emit(cls_st | mode_mem | size_dw, frame_pointer, 0, slot, imm32());
            st_[q] = st_[p];
        }
        break;
    }
    case 4: { // the caller region's address as a constant
        const int q = dst_any();
        const int32_t off = static_cast<int32_t>(in_.below(extra_size + 8));
        emit_lddw(q, reinterpret_cast<uint64_t>(extra_buf) + static_cast<uint64_t>(off));
        st_[q] = pointer(kind::extra, off);
        break;
    }
    default: { // input or helper memory plus a small variable amount (same address in both
               // engines, unlike the stack)
        const int p = pick(
            [&](int x) { return writable(x) && (st_[x].k == kind::mem || st_[x].k == kind::buf); });
        if (p >= 0) {
            const int s = dst_scalar(p);
            emit(cls_alu64 | src_k | alu_and, s, 0, 0, 15);
            emit(cls_alu64 | src_x | alu_add, p, s, 0, 0);
        }
        break;
    }
    }
}

// A load or store through base.
void generator::gen_access(int base) {
    static constexpr int64_t sizes[] = {1, 2, 4, 8};
    const int64_t n = sizes[in_.below(4)];
    const int16_t off = access_offset(st_[base], n, false);
    switch (in_.below(3)) {
    case 0: {
        const int dst = dst_any();
        emit(cls_ldx | (in_.bit() ? mode_memsx : mode_mem) | size_code(n), dst, base, off, 0);
        if (n == 8) { // there is no ldxsdw
            f_.code.back().opcode = cls_ldx | mode_mem | size_dw;
        }
        st_[dst] = scalar();
        break;
    }
    case 1:
        emit(cls_st | mode_mem | size_code(n), base, 0, off, imm32());
        break;
    default:
        emit(cls_stx | mode_mem | size_code(n), base, src_scalar(base), off, 0);
        break;
    }
}

} // namespace bpftime::fuzz::gen
