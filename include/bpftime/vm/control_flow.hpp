// SPDX-License-Identifier: MIT
/// @file
/// Where control goes from an instruction: the target of a jump and the function a local call
/// enters. Header-only and over the encoding alone (isa.hpp), so that the validator, the
/// engines, the disassembler and code that links only the instruction set read jump and call
/// targets the same way.
#pragma once

#include <bpftime/vm/isa.hpp>

#include <cstddef>
#include <cstdint>

namespace bpftime::vm {

/// The pc-relative distance of a jump (ja, ja32 or a conditional jump): ja32 keeps it in imm,
/// every other jump in offset.
constexpr int64_t jump_offset(const ebpf_inst &inst) {
    return inst.opcode == op_ja32 ? inst.imm : inst.offset;
}

/// Where the jump at pc goes when it is taken. In a program that has not been validated it may
/// lie outside the program (below 0 or past the end).
constexpr int64_t jump_target(const ebpf_inst &inst, size_t pc) {
    return static_cast<int64_t>(pc) + 1 + jump_offset(inst);
}

/// Whether an instruction calls a local (bpf-to-bpf) function rather than a helper.
constexpr bool is_local_call(const ebpf_inst &inst) {
    return inst.opcode == op_call && inst.src == call_local;
}

/// The first instruction of the function the local call at pc enters (imm is pc-relative). In
/// a program that has not been validated it may lie outside the program.
constexpr int64_t call_target(const ebpf_inst &inst, size_t pc) {
    return static_cast<int64_t>(pc) + 1 + inst.imm;
}

/// Whether an instruction is an lddw of a code address (a callback passed to helpers such as
/// bpf_loop), as a loader leaves it: the first immediate is pc-relative.
constexpr bool is_code_address(const ebpf_inst &inst) {
    return inst.opcode == op_lddw && inst.src == pseudo_code_addr;
}

/// The instruction the code address lddw at pc names. In a program that has not been validated
/// it may lie outside the program.
constexpr int64_t code_address_target(const ebpf_inst &inst, size_t pc) {
    return static_cast<int64_t>(pc) + 1 + inst.imm;
}

/// The value a loaded program's register holds for the code address of the subprogram at pc:
/// opaque to the program (no memory), decoded by run_context::call.
inline constexpr uint64_t code_address_tag = uint64_t{0xc0de} << 48;
constexpr uint64_t code_address_value(size_t pc) {
    return code_address_tag | pc;
}

} // namespace bpftime::vm
