// SPDX-License-Identifier: MIT
// The opcode table of RFC 9669 as bpftime runs it.
#include <bpftime/vm/isa.hpp>

#include <algorithm>
#include <array>

namespace bpftime::vm {
namespace {

constexpr opcode_info row(uint8_t opcode, const char *mnemonic, op_kind kind, dst_rule dst,
                          src_rule src, off_rule off, imm_rule imm,
                          const char *unsupported = nullptr) {
    return opcode_info{opcode, mnemonic, kind, dst, src, off, imm, unsupported};
}

// Binary arithmetic in both widths and both source forms. div and mod take offset 1 for
// their signed forms (sdiv, smod); the others take offset 0.
#define BPFTIME_ALU(op, name, off)                                                                 \
    row(cls_alu | src_k | op, name "32", op_kind::alu, dst_rule::write, src_rule::zero, off,       \
        imm_rule::any),                                                                            \
        row(cls_alu | src_x | op, name "32", op_kind::alu, dst_rule::write, src_rule::read, off,   \
            imm_rule::zero),                                                                       \
        row(cls_alu64 | src_k | op, name, op_kind::alu, dst_rule::write, src_rule::zero, off,      \
            imm_rule::any),                                                                        \
        row(cls_alu64 | src_x | op, name, op_kind::alu, dst_rule::write, src_rule::read, off,      \
            imm_rule::zero)

// Conditional jumps in both widths and both source forms.
#define BPFTIME_JCOND(op, name)                                                                    \
    row(cls_jmp | src_k | op, name, op_kind::jcond, dst_rule::read, src_rule::zero,                \
        off_rule::jump, imm_rule::any),                                                            \
        row(cls_jmp | src_x | op, name, op_kind::jcond, dst_rule::read, src_rule::read,            \
            off_rule::jump, imm_rule::zero),                                                       \
        row(cls_jmp32 | src_k | op, name "32", op_kind::jcond, dst_rule::read, src_rule::zero,     \
            off_rule::jump, imm_rule::any),                                                        \
        row(cls_jmp32 | src_x | op, name "32", op_kind::jcond, dst_rule::read, src_rule::read,     \
            off_rule::jump, imm_rule::zero)

#define BPFTIME_LDX(size, name)                                                                    \
    row(cls_ldx | mode_mem | size, name, op_kind::ldx, dst_rule::write, src_rule::read,            \
        off_rule::memory, imm_rule::zero)
#define BPFTIME_LDSX(size, name)                                                                   \
    row(cls_ldx | mode_memsx | size, name, op_kind::ldsx, dst_rule::write, src_rule::read,         \
        off_rule::memory, imm_rule::zero)
#define BPFTIME_ST(size, name)                                                                     \
    row(cls_st | mode_mem | size, name, op_kind::st, dst_rule::read, src_rule::zero,               \
        off_rule::memory, imm_rule::any)
#define BPFTIME_STX(size, name)                                                                    \
    row(cls_stx | mode_mem | size, name, op_kind::stx, dst_rule::read, src_rule::read,             \
        off_rule::memory, imm_rule::zero)

constexpr const char *legacy_packet =
    "legacy packet access (ld abs/ind) is not supported; load through the context pointer";

constexpr opcode_info rows[] = {
    BPFTIME_ALU(alu_add, "add", off_rule::zero),
    BPFTIME_ALU(alu_sub, "sub", off_rule::zero),
    BPFTIME_ALU(alu_mul, "mul", off_rule::zero),
    BPFTIME_ALU(alu_div, "div", off_rule::divmod),
    BPFTIME_ALU(alu_or, "or", off_rule::zero),
    BPFTIME_ALU(alu_and, "and", off_rule::zero),
    BPFTIME_ALU(alu_lsh, "lsh", off_rule::zero),
    BPFTIME_ALU(alu_rsh, "rsh", off_rule::zero),
    row(cls_alu | alu_neg, "neg32", op_kind::neg, dst_rule::write, src_rule::zero, off_rule::zero,
        imm_rule::zero),
    row(cls_alu64 | alu_neg, "neg", op_kind::neg, dst_rule::write, src_rule::zero, off_rule::zero,
        imm_rule::zero),
    BPFTIME_ALU(alu_mod, "mod", off_rule::divmod),
    BPFTIME_ALU(alu_xor, "xor", off_rule::zero),
    row(cls_alu | src_k | alu_mov, "mov32", op_kind::alu, dst_rule::write, src_rule::zero,
        off_rule::zero, imm_rule::any),
    row(cls_alu | src_x | alu_mov, "mov32", op_kind::alu, dst_rule::write, src_rule::read,
        off_rule::movsx32, imm_rule::zero),
    row(cls_alu64 | src_k | alu_mov, "mov", op_kind::alu, dst_rule::write, src_rule::zero,
        off_rule::zero, imm_rule::any),
    row(cls_alu64 | src_x | alu_mov, "mov", op_kind::alu, dst_rule::write, src_rule::read,
        off_rule::movsx64, imm_rule::zero),
    BPFTIME_ALU(alu_arsh, "arsh", off_rule::zero),
    row(cls_alu | src_k | alu_end, "le", op_kind::endian, dst_rule::write, src_rule::zero,
        off_rule::zero, imm_rule::endian),
    row(cls_alu | src_x | alu_end, "be", op_kind::endian, dst_rule::write, src_rule::zero,
        off_rule::zero, imm_rule::endian),
    row(cls_alu64 | src_k | alu_end, "bswap", op_kind::endian, dst_rule::write, src_rule::zero,
        off_rule::zero, imm_rule::endian),

    row(op_ja, "ja", op_kind::ja, dst_rule::zero, src_rule::zero, off_rule::jump, imm_rule::zero),
    row(op_ja32, "ja32", op_kind::ja, dst_rule::zero, src_rule::zero, off_rule::zero,
        imm_rule::jump),
    BPFTIME_JCOND(jmp_jeq, "jeq"),
    BPFTIME_JCOND(jmp_jgt, "jgt"),
    BPFTIME_JCOND(jmp_jge, "jge"),
    BPFTIME_JCOND(jmp_jset, "jset"),
    BPFTIME_JCOND(jmp_jne, "jne"),
    BPFTIME_JCOND(jmp_jsgt, "jsgt"),
    BPFTIME_JCOND(jmp_jsge, "jsge"),
    BPFTIME_JCOND(jmp_jlt, "jlt"),
    BPFTIME_JCOND(jmp_jle, "jle"),
    BPFTIME_JCOND(jmp_jslt, "jslt"),
    BPFTIME_JCOND(jmp_jsle, "jsle"),
    row(op_call, "call", op_kind::call, dst_rule::zero, src_rule::call, off_rule::zero,
        imm_rule::call),
    row(op_callx, "call", op_kind::callx, dst_rule::read, src_rule::zero, off_rule::zero,
        imm_rule::zero),
    row(op_exit, "exit", op_kind::exit, dst_rule::zero, src_rule::zero, off_rule::zero,
        imm_rule::zero),

    row(op_lddw, "lddw", op_kind::lddw, dst_rule::write, src_rule::lddw, off_rule::zero,
        imm_rule::any),
    row(cls_ld | mode_abs | size_w, "ldabsw", op_kind::ldx, dst_rule::zero, src_rule::zero,
        off_rule::zero, imm_rule::any, legacy_packet),
    row(cls_ld | mode_abs | size_h, "ldabsh", op_kind::ldx, dst_rule::zero, src_rule::zero,
        off_rule::zero, imm_rule::any, legacy_packet),
    row(cls_ld | mode_abs | size_b, "ldabsb", op_kind::ldx, dst_rule::zero, src_rule::zero,
        off_rule::zero, imm_rule::any, legacy_packet),
    row(cls_ld | mode_ind | size_w, "ldindw", op_kind::ldx, dst_rule::zero, src_rule::read,
        off_rule::zero, imm_rule::any, legacy_packet),
    row(cls_ld | mode_ind | size_h, "ldindh", op_kind::ldx, dst_rule::zero, src_rule::read,
        off_rule::zero, imm_rule::any, legacy_packet),
    row(cls_ld | mode_ind | size_b, "ldindb", op_kind::ldx, dst_rule::zero, src_rule::read,
        off_rule::zero, imm_rule::any, legacy_packet),

    BPFTIME_LDX(size_w, "ldxw"),
    BPFTIME_LDX(size_h, "ldxh"),
    BPFTIME_LDX(size_b, "ldxb"),
    BPFTIME_LDX(size_dw, "ldxdw"),
    BPFTIME_LDSX(size_w, "ldxsw"),
    BPFTIME_LDSX(size_h, "ldxsh"),
    BPFTIME_LDSX(size_b, "ldxsb"),
    BPFTIME_ST(size_w, "stw"),
    BPFTIME_ST(size_h, "sth"),
    BPFTIME_ST(size_b, "stb"),
    BPFTIME_ST(size_dw, "stdw"),
    BPFTIME_STX(size_w, "stxw"),
    BPFTIME_STX(size_h, "stxh"),
    BPFTIME_STX(size_b, "stxb"),
    BPFTIME_STX(size_dw, "stxdw"),
    row(cls_stx | mode_atomic | size_w, "lock", op_kind::atomic, dst_rule::read, src_rule::read,
        off_rule::memory, imm_rule::atomic),
    row(cls_stx | mode_atomic | size_dw, "lock", op_kind::atomic, dst_rule::read, src_rule::read,
        off_rule::memory, imm_rule::atomic),
};

#undef BPFTIME_ALU
#undef BPFTIME_JCOND
#undef BPFTIME_LDX
#undef BPFTIME_LDSX
#undef BPFTIME_ST
#undef BPFTIME_STX

constexpr auto sorted_rows() {
    std::array<opcode_info, std::size(rows)> out{};
    std::copy(std::begin(rows), std::end(rows), out.begin());
    std::sort(out.begin(), out.end(),
              [](const opcode_info &a, const opcode_info &b) { return a.opcode < b.opcode; });
    return out;
}

constexpr auto table = sorted_rows();

constexpr auto index_table() {
    std::array<int16_t, 256> idx{};
    idx.fill(-1);
    for (size_t i = 0; i < table.size(); i++) {
        idx[table[i].opcode] = static_cast<int16_t>(i);
    }
    return idx;
}

constexpr auto by_opcode = index_table();

constexpr bool unique_opcodes() {
    for (size_t i = 1; i < table.size(); i++) {
        if (table[i].opcode == table[i - 1].opcode) {
            return false;
        }
    }
    return true;
}
static_assert(unique_opcodes(), "each opcode has one row");

} // namespace

std::span<const opcode_info> opcode_table() {
    return table;
}

const opcode_info *find_opcode(uint8_t opcode) {
    int16_t i = by_opcode[opcode];
    return i < 0 ? nullptr : &table[static_cast<size_t>(i)];
}

} // namespace bpftime::vm
