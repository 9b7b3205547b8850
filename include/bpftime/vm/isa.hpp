// SPDX-License-Identifier: MIT
/// @file
/// The eBPF instruction encoding (RFC 9669) and the one opcode table that drives the
/// validator, the assembler, the disassembler and the tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace bpftime::vm {

/// One 64-bit eBPF instruction slot, in the little-endian layout of RFC 9669.
struct ebpf_inst {
    uint8_t opcode = 0;
    uint8_t dst : 4 = 0;
    uint8_t src : 4 = 0;
    int16_t offset = 0;
    int32_t imm = 0;
};
static_assert(sizeof(ebpf_inst) == 8, "an eBPF instruction is 8 bytes");

/// Limits of the execution model.
inline constexpr size_t stack_frame_size = 512; ///< bytes of stack per frame
inline constexpr size_t max_call_depth = 8;     ///< frames, the entry function included
inline constexpr size_t stack_size = stack_frame_size * max_call_depth;
inline constexpr int frame_pointer = 10; ///< r10, read-only
inline constexpr int register_count = 11;

// Instruction classes (low three bits of the opcode).
inline constexpr uint8_t cls_ld = 0x00;
inline constexpr uint8_t cls_ldx = 0x01;
inline constexpr uint8_t cls_st = 0x02;
inline constexpr uint8_t cls_stx = 0x03;
inline constexpr uint8_t cls_alu = 0x04;
inline constexpr uint8_t cls_jmp = 0x05;
inline constexpr uint8_t cls_jmp32 = 0x06;
inline constexpr uint8_t cls_alu64 = 0x07;

// Source bit of arithmetic and jump instructions.
inline constexpr uint8_t src_k = 0x00;
inline constexpr uint8_t src_x = 0x08;

// Size and mode of load and store instructions.
inline constexpr uint8_t size_w = 0x00;
inline constexpr uint8_t size_h = 0x08;
inline constexpr uint8_t size_b = 0x10;
inline constexpr uint8_t size_dw = 0x18;
inline constexpr uint8_t mode_imm = 0x00;
inline constexpr uint8_t mode_abs = 0x20;
inline constexpr uint8_t mode_ind = 0x40;
inline constexpr uint8_t mode_mem = 0x60;
inline constexpr uint8_t mode_memsx = 0x80;
inline constexpr uint8_t mode_atomic = 0xc0;

// Arithmetic operations (high four bits).
inline constexpr uint8_t alu_add = 0x00;
inline constexpr uint8_t alu_sub = 0x10;
inline constexpr uint8_t alu_mul = 0x20;
inline constexpr uint8_t alu_div = 0x30;
inline constexpr uint8_t alu_or = 0x40;
inline constexpr uint8_t alu_and = 0x50;
inline constexpr uint8_t alu_lsh = 0x60;
inline constexpr uint8_t alu_rsh = 0x70;
inline constexpr uint8_t alu_neg = 0x80;
inline constexpr uint8_t alu_mod = 0x90;
inline constexpr uint8_t alu_xor = 0xa0;
inline constexpr uint8_t alu_mov = 0xb0;
inline constexpr uint8_t alu_arsh = 0xc0;
inline constexpr uint8_t alu_end = 0xd0;

// Jump operations (high four bits).
inline constexpr uint8_t jmp_ja = 0x00;
inline constexpr uint8_t jmp_jeq = 0x10;
inline constexpr uint8_t jmp_jgt = 0x20;
inline constexpr uint8_t jmp_jge = 0x30;
inline constexpr uint8_t jmp_jset = 0x40;
inline constexpr uint8_t jmp_jne = 0x50;
inline constexpr uint8_t jmp_jsgt = 0x60;
inline constexpr uint8_t jmp_jsge = 0x70;
inline constexpr uint8_t jmp_call = 0x80;
inline constexpr uint8_t jmp_exit = 0x90;
inline constexpr uint8_t jmp_jlt = 0xa0;
inline constexpr uint8_t jmp_jle = 0xb0;
inline constexpr uint8_t jmp_jslt = 0xc0;
inline constexpr uint8_t jmp_jsle = 0xd0;

// Atomic operations (the imm field of an atomic store).
inline constexpr int32_t atomic_fetch = 0x01;
inline constexpr int32_t atomic_add = 0x00;
inline constexpr int32_t atomic_or = 0x40;
inline constexpr int32_t atomic_and = 0x50;
inline constexpr int32_t atomic_xor = 0xa0;
inline constexpr int32_t atomic_xchg = 0xe0 | atomic_fetch;
inline constexpr int32_t atomic_cmpxchg = 0xf0 | atomic_fetch;

// Whole opcodes that code refers to by name.
inline constexpr uint8_t op_lddw = cls_ld | mode_imm | size_dw; // 0x18
inline constexpr uint8_t op_ja = cls_jmp | jmp_ja;              // 0x05
inline constexpr uint8_t op_ja32 = cls_jmp32 | jmp_ja;          // 0x06
inline constexpr uint8_t op_call = cls_jmp | jmp_call;          // 0x85
inline constexpr uint8_t op_callx = cls_jmp | jmp_call | src_x; // 0x8d
inline constexpr uint8_t op_exit = cls_jmp | jmp_exit;          // 0x95

// The src field of lddw: what the 64-bit immediate means (RFC 9669 section 5.4).
inline constexpr uint8_t pseudo_imm64 = 0;         ///< dst = imm64
inline constexpr uint8_t pseudo_map_fd = 1;        ///< dst = map_by_fd(imm)
inline constexpr uint8_t pseudo_map_value = 2;     ///< dst = map_val(map_by_fd(imm)) + next_imm
inline constexpr uint8_t pseudo_var_addr = 3;      ///< dst = var_addr(imm)
inline constexpr uint8_t pseudo_code_addr = 4;     ///< dst = code_addr(imm)
inline constexpr uint8_t pseudo_map_idx = 5;       ///< dst = map_by_idx(imm)
inline constexpr uint8_t pseudo_map_idx_value = 6; ///< dst = map_val(map_by_idx(imm)) + next_imm

// The src field of call.
inline constexpr uint8_t call_helper = 0; ///< helper by static id
inline constexpr uint8_t call_local = 1;  ///< bpf-to-bpf call, imm = pc-relative target
inline constexpr uint8_t call_btf = 2;    ///< helper by BTF id (not supported in user space)

/// The class of an opcode.
constexpr uint8_t op_class(uint8_t opcode) {
    return opcode & 0x07;
}

/// How the validator treats the dst field of an opcode.
enum class dst_rule : uint8_t {
    zero,  ///< must be 0
    read,  ///< a register r0..r10 that is read (or used as a base address)
    write, ///< a register r0..r9 that is written
};

/// How the validator treats the src field of an opcode.
enum class src_rule : uint8_t {
    zero, ///< must be 0
    read, ///< a register r0..r10
    lddw, ///< an lddw pseudo kind (pseudo_*)
    call, ///< a call kind (call_helper, call_local; call_btf is refused)
};

/// How the validator treats the offset field of an opcode.
enum class off_rule : uint8_t {
    zero,    ///< must be 0
    memory,  ///< any signed 16-bit memory offset
    jump,    ///< a pc-relative jump target that must land on an instruction
    divmod,  ///< 0 (unsigned) or 1 (signed)
    movsx32, ///< 0, 8 or 16 (mov32 / movsx)
    movsx64, ///< 0, 8, 16 or 32 (mov / movsx)
};

/// How the validator treats the imm field of an opcode.
enum class imm_rule : uint8_t {
    zero,   ///< must be 0
    any,    ///< any 32-bit immediate
    endian, ///< 16, 32 or 64
    atomic, ///< one of the atomic operations
    jump,   ///< ja32: a pc-relative jump target in imm
    call,   ///< call: helper id or pc-relative local target, per src
};

/// What an opcode does, for code that walks programs (disassembler, engines).
enum class op_kind : uint8_t {
    alu,    ///< binary arithmetic, K or X
    neg,    ///< unary negation
    endian, ///< le / be / bswap
    lddw,   ///< 64-bit immediate load (two slots)
    ldx,    ///< load from memory
    ldsx,   ///< sign-extending load from memory
    st,     ///< store immediate
    stx,    ///< store register
    atomic, ///< atomic read-modify-write
    ja,     ///< unconditional jump, offset in off (ja) or imm (ja32)
    jcond,  ///< conditional jump
    call,   ///< helper or local call
    callx,  ///< helper call, id in a register (dst)
    exit,   ///< return
};

/// One row of the opcode table: a legal opcode and the legal values of its fields.
struct opcode_info {
    uint8_t opcode;
    const char *mnemonic; ///< assembler mnemonic of the common form ("add32", "ldxw", "jeq")
    op_kind kind;
    dst_rule dst;
    src_rule src;
    off_rule off;
    imm_rule imm;
    /// When not null the opcode is recognised but refused, and this says why.
    const char *unsupported;
};

/// Every opcode bpftime knows, in opcode order.
std::span<const opcode_info> opcode_table();

/// The table row of an opcode, or nullptr for an opcode that does not exist.
const opcode_info *find_opcode(uint8_t opcode);

/// Access size in bytes of a load, store or atomic opcode (1, 2, 4 or 8).
constexpr size_t access_size(uint8_t opcode) {
    switch (opcode & 0x18) {
    case size_b:
        return 1;
    case size_h:
        return 2;
    case size_w:
        return 4;
    default:
        return 8;
    }
}

} // namespace bpftime::vm
