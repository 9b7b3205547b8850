// SPDX-License-Identifier: MIT
/// @file
/// Disassembler to the bpf_conformance text syntax (the syntax assembler.hpp reads), driven by
/// the opcode table. Part of the ISA library: it needs no engine.
#pragma once

#include <bpftime/vm/isa.hpp>

#include <cstddef>
#include <span>
#include <string>

namespace bpftime::vm {

/// The text of the instruction at insns[pc] (an lddw uses insns[pc + 1] too). Every
/// instruction the validator accepts disassembles to text that assembles back to the same
/// bytes; an unknown opcode prints as `.invalid 0x<opcode> ...` and never crashes.
std::string disassemble_one(std::span<const ebpf_inst> insns, size_t pc);

/// The text of a whole program, one instruction per line. With numbered, each line starts
/// with the slot index; jump targets are printed as `+N`/`-N`.
std::string disassemble(std::span<const ebpf_inst> insns, bool numbered = false);

} // namespace bpftime::vm
