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

} // namespace bpftime::vm
