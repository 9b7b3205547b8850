// SPDX-License-Identifier: MIT
/// @file
/// Assembler for the bpf_conformance text syntax (disassembler.hpp goes the other way).
///
/// One instruction per line; `#` starts a comment; `name:` defines a label. Registers are
/// `%r0`..`%r10`; immediates are decimal or `0x` hex, optionally negative. Jump and local
/// call targets are labels or `+N` / `-N` slot offsets; the label `exit` names the first
/// exit instruction unless a label of that name is defined.
///
///     mov32 %r0, 1            add %r1, %r2            neg32 %r0
///     sdiv %r0, 3             smod32 %r0, %r1         movsx832 %r0, %r1 (8, 16 -> 32 or 64)
///     le16 %r0  be32 %r0  bswap64 %r0  (swap16/32/64 is an alias of bswap)
///     lddw %r0, 0x1122334455667788
///     lddw %r1, map_fd(3)     lddw %r1, map_value(3, 16)  (also map_idx, map_idx_value,
///                                                          var_addr, code_addr)
///     ldxdw %r0, [%r1+2]      ldxsb %r0, [%r1-1]      stw [%r10-8], 5   stxb [%r1], %r2
///     lock add [%r10-8], %r1  lock fetch xor32 [%r1+4], %r2
///     lock xchg [%r1], %r2    lock cmpxchg32 [%r1], %r2
///     ja L1   ja32 +5   jeq %r1, 5, exit   jslt32 %r1, %r2, -3
///     call 5   call %r2   call local func1   exit
#pragma once

#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace bpftime::vm {

/// Assembles program text. An error names the line number and what is wrong.
result<std::vector<ebpf_inst>> assemble(std::string_view text);

} // namespace bpftime::vm
