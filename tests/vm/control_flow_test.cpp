// SPDX-License-Identifier: MIT
// The control-flow view of instructions (control_flow.hpp) that the validator, the frame
// analysis, the JIT and the disassembler share: jump and local-call targets.
#include "test_util.hpp"

#include <bpftime/vm/control_flow.hpp>

namespace bpftime::vm::test {
namespace {

// Usable in constant expressions: code that links only the instruction set computes targets
// without the VM.
constexpr ebpf_inst ja32_back = {.opcode = op_ja32, .offset = 7, .imm = -3};
static_assert(jump_offset(ja32_back) == -3);
static_assert(jump_target(ja32_back, 2) == 0);

TEST(ControlFlow, JumpsCountFromTheNextInstruction) {
    // ja and conditional jumps keep the distance in offset; imm is the compare's operand.
    EXPECT_EQ(jump_target(insn(op_ja, 0, 0, 3), 10), 14);
    EXPECT_EQ(jump_target(insn(op_ja, 0, 0, -1), 10), 10);
    EXPECT_EQ(jump_target(insn(cls_jmp | jmp_jeq | src_k, 1, 0, 2, 99), 5), 8);
    EXPECT_EQ(jump_target(insn(cls_jmp32 | jmp_jlt | src_x, 1, 2, -6, 0), 5), 0);
    // ja32 keeps it in imm, so it reaches beyond 16 bits.
    EXPECT_EQ(jump_offset(insn(op_ja32, 0, 0, 5, 100000)), 100000);
    EXPECT_EQ(jump_target(insn(op_ja32, 0, 0, 5, 100000), 1), 100002);
}

TEST(ControlFlow, TargetsOfUnvalidatedProgramsMayLieOutside) {
    EXPECT_EQ(jump_target(insn(op_ja, 0, 0, -5), 1), -3);
    EXPECT_EQ(call_target(insn(op_call, 0, call_local, 0, -10), 4), -5);
}

TEST(ControlFlow, OnlyLocalCallsEnterAFunction) {
    EXPECT_TRUE(is_local_call(insn(op_call, 0, call_local, 0, 2)));
    EXPECT_FALSE(is_local_call(insn(op_call, 0, call_helper, 0, 2)));
    EXPECT_FALSE(is_local_call(insn(op_callx, 1, 0, 0, 0)));
    EXPECT_FALSE(is_local_call(insn(op_ja, 0, call_local, 0, 2)));
    EXPECT_EQ(call_target(insn(op_call, 0, call_local, 0, 2), 3), 6);
}

} // namespace
} // namespace bpftime::vm::test
