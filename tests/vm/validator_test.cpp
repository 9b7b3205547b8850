// SPDX-License-Identifier: MIT
// Each validation rule, one by one: the refusal names the instruction and the reason.
#include "test_util.hpp"

#include <bpftime/vm/helper_names.hpp>

#include <bpftime/vm/isa.hpp>

namespace bpftime::vm::test {
namespace {

// Lets tests write programs as brace lists.
result<void> validate(const std::vector<ebpf_inst> &insns, const load_options &opts = {}) {
    return bpftime::vm::validate(std::span<const ebpf_inst>(insns), opts);
}

// Expects a refusal that names instruction `pc` and contains `why`.
void expect_refused(const std::vector<ebpf_inst> &insns, size_t pc, const std::string &why,
                    const load_options &opts = {}) {
    auto r = validate(insns, opts);
    ASSERT_FALSE(r.ok()) << "accepted; expected: " << why;
    const std::string &msg = r.err().message;
    EXPECT_EQ(msg.rfind("instruction " + std::to_string(pc) + " ", 0) == 0 ||
                  msg.rfind("instruction " + std::to_string(pc) + ":", 0) == 0,
              true)
        << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
    // program::load refuses exactly like validate.
    auto p = program::load(insns, opts);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.err().message, msg);
}

TEST(Validator, AcceptsMinimalProgram) {
    EXPECT_TRUE(validate({mov64_imm(0, 1), exit_insn()}).ok());
}

TEST(Validator, RefusesEmptyProgram) {
    expect_refused({}, 0, "empty");
}

TEST(Validator, RefusesUnknownOpcode) {
    expect_refused({mov64_imm(0, 0), insn(0xff), exit_insn()}, 1, "unknown opcode 0xff");
    expect_refused({insn(0x86), exit_insn()}, 0, "unknown opcode 0x86"); // call in JMP32
    expect_refused({insn(0xdf, 0, 0, 0, 16), exit_insn()}, 0, "unknown opcode 0xdf");
}

TEST(Validator, RefusesLegacyPacketAccess) {
    expect_refused({insn(cls_ld | mode_abs | size_w, 0, 0, 0, 4), exit_insn()}, 0,
                   "legacy packet access");
}

TEST(Validator, RefusesBadRegisters) {
    expect_refused({mov64_imm(11, 0), exit_insn()}, 0, "bad destination register r11");
    expect_refused({insn(cls_alu64 | src_x | alu_add, 0, 12), exit_insn()}, 0,
                   "bad source register r12");
    expect_refused({insn(cls_ldx | mode_mem | size_w, 1, 15, 0), exit_insn()}, 0,
                   "bad source register r15");
}

TEST(Validator, RefusesWritesToFramePointer) {
    expect_refused({mov64_imm(10, 0), exit_insn()}, 0, "r10 is the read-only frame pointer");
    expect_refused({insn(cls_ldx | mode_mem | size_dw, 10, 1, 0), exit_insn()}, 0,
                   "read-only frame pointer");
    expect_refused({insn(op_lddw, 10, 0, 0, 1), insn(0), exit_insn()}, 0, "frame pointer");
    // lock fetch add writes the old value into src.
    expect_refused(
        {insn(cls_stx | mode_atomic | size_dw, 1, 10, 0, atomic_add | atomic_fetch), exit_insn()},
        0, "frame pointer");
    // Storing through r10 and reading it are fine.
    EXPECT_TRUE(validate({insn(cls_st | mode_mem | size_dw, 10, 0, -8, 1),
                          insn(cls_alu64 | src_x | alu_mov, 1, 10), exit_insn()})
                    .ok());
}

TEST(Validator, RefusesFieldsThatMustBeZero) {
    expect_refused({insn(cls_alu64 | src_k | alu_add, 0, 3, 0, 1), exit_insn()}, 0,
                   "src field must be 0");
    expect_refused({insn(cls_alu64 | src_x | alu_add, 0, 1, 0, 7), exit_insn()}, 0,
                   "imm field must be 0");
    expect_refused({insn(cls_alu64 | src_k | alu_add, 0, 0, 4, 1), exit_insn()}, 0,
                   "offset 4 is not 0");
    expect_refused({mov64_imm(0, 0), insn(op_exit, 1)}, 1, "dst field must be 0");
}

TEST(Validator, RefusesBadFieldValues) {
    expect_refused({insn(cls_alu64 | src_x | alu_div, 0, 1, 2), exit_insn()}, 0,
                   "offset 2 is not 0 (unsigned) or 1 (signed)");
    expect_refused({insn(cls_alu | src_x | alu_mov, 0, 1, 32), exit_insn()}, 0,
                   "offset 32 is not 0, 8 or 16");
    expect_refused({insn(cls_alu64 | src_x | alu_mov, 0, 1, 24), exit_insn()}, 0,
                   "offset 24 is not 0, 8, 16 or 32");
    expect_refused({insn(cls_alu | src_x | alu_end, 0, 0, 0, 8), exit_insn()}, 0,
                   "byte swap width 8");
    expect_refused({insn(cls_stx | mode_atomic | size_w, 1, 2, 0, 0x10), exit_insn()}, 0,
                   "unknown atomic operation 0x10");
}

TEST(Validator, RefusesJumpsOutOfRange) {
    expect_refused({insn(op_ja, 0, 0, 5), exit_insn()}, 0, "jump target 6 is outside");
    expect_refused({mov64_imm(0, 0), insn(cls_jmp | jmp_jeq, 0, 0, -3, 0), exit_insn()}, 1,
                   "jump target -1 is outside");
    expect_refused({insn(op_ja32, 0, 0, 0, 9), exit_insn()}, 0, "jump target 10 is outside");
}

TEST(Validator, RefusesJumpIntoLddw) {
    expect_refused(
        {insn(op_ja, 0, 0, 1), insn(op_lddw, 0, 0, 0, 1), insn(0, 0, 0, 0, 2), exit_insn()}, 0,
        "target 2 is the second slot of an lddw");
}

TEST(Validator, RefusesBrokenLddw) {
    expect_refused({mov64_imm(0, 0), insn(op_lddw, 0, 0, 0, 1)}, 1, "needs a second");
    expect_refused({insn(op_lddw, 0, 0, 0, 1), insn(0x07, 0, 0, 0, 2), exit_insn()}, 0,
                   "second slot of lddw");
}

TEST(Validator, RefusesFallingOffTheEnd) {
    expect_refused({mov64_imm(0, 0)}, 0, "falls off its end");
    expect_refused({mov64_imm(0, 0), insn(cls_jmp | jmp_jeq, 0, 0, -2, 0)}, 1, "falls off its end");
    expect_refused({insn(op_lddw, 0, 0, 0, 1), insn(0)}, 0, "falls off its end");
    // An unconditional jump back is a proper last instruction.
    EXPECT_TRUE(validate({mov64_imm(0, 0), exit_insn(), insn(op_ja, 0, 0, -3)}).ok());
}

TEST(Validator, RefusesUnknownHelpers) {
    expect_refused({insn(op_call, 0, call_helper, 0, 999999), exit_insn()}, 0,
                   "unknown helper id 999999");
    helper_registry empty;
    load_options opts;
    opts.helpers = &empty;
    expect_refused({insn(op_call, 0, call_helper, 0, 5), exit_insn()}, 0,
                   "helper 5 (ktime_get_ns) is not among the helpers this program may call", opts);
    EXPECT_TRUE(validate({insn(op_call, 0, call_helper, 0, 5), exit_insn()}).ok());
}

TEST(Validator, NamesLinuxHelpersBpftimeDoesNotHave) {
    // get_stack (67) is a Linux helper nothing here registers: refused at load, by name.
    expect_refused({insn(op_call, 0, call_helper, 0, 67), exit_insn()}, 0,
                   "instruction 0 (call 67): helper 67 (get_stack) is not available in bpftime");
    expect_refused({mov64_imm(0, 0), insn(op_call, 0, call_helper, 0, 211), exit_insn()}, 1,
                   "helper 211 (cgrp_storage_delete) is not available in bpftime");
    EXPECT_EQ(linux_helper_name(1), "map_lookup_elem");
    EXPECT_EQ(linux_helper_name(181), "loop");
    EXPECT_EQ(linux_helper_name(0), "");
    EXPECT_EQ(linux_helper_name(100000), "");
    EXPECT_EQ(describe_helper(12), "helper 12 (tail_call)");
    EXPECT_EQ(describe_helper(5000), "helper 5000");
}

TEST(Validator, RefusesBadLocalCalls) {
    expect_refused({insn(op_call, 0, call_local, 0, 7), exit_insn()}, 0,
                   "local call target 8 is outside");
    expect_refused({insn(op_call, 0, call_local, 0, -2), exit_insn()}, 0,
                   "local call target -1 is outside");
    expect_refused({insn(op_call, 0, call_local, 0, 2), exit_insn(), insn(op_lddw, 0, 0, 0, 1),
                    insn(0), exit_insn()},
                   0, "second slot of an lddw");
    expect_refused({insn(op_call, 0, call_btf, 0, 1), exit_insn()}, 0, "BTF id");
    expect_refused({insn(op_call, 0, 3, 0, 1), exit_insn()}, 0, "unknown call kind");
}

TEST(Validator, RefusesTooManyInstructions) {
    std::vector<ebpf_inst> insns(100, mov64_imm(0, 0));
    insns.push_back(exit_insn());
    load_options opts;
    opts.max_instructions = 100;
    expect_refused(insns, 100, "too many instructions: the program has 101, the limit is 100",
                   opts);
    opts.max_instructions = 101;
    EXPECT_TRUE(validate(insns, opts).ok());
}

TEST(Validator, RefusesUnresolvedMapReferences) {
    expect_refused({insn(op_lddw, 1, pseudo_map_fd, 0, 3), insn(0), exit_insn()}, 0,
                   "nothing resolves it");
    expect_refused({insn(op_lddw, 1, 7, 0, 3), insn(0), exit_insn()}, 0, "unknown lddw kind");
}

// Habit: the one opcode table drives the validator, and this test walks the same table.
TEST(Validator, OpcodeTableDecidesWhichOpcodesExist) {
    for (int op = 0; op < 256; op++) {
        const opcode_info *info = find_opcode(static_cast<uint8_t>(op));
        ebpf_inst inst = insn(static_cast<uint8_t>(op));
        if (info != nullptr) {
            // The smallest legal operands for the row.
            if (info->imm == imm_rule::endian) {
                inst.imm = 16;
            } else if (info->imm == imm_rule::call) {
                inst.imm = 5;
            }
        }
        std::vector<ebpf_inst> prog{inst};
        if (op == op_lddw) {
            prog.push_back(insn(0));
        }
        prog.push_back(exit_insn());
        auto r = validate(prog);
        if (info == nullptr) {
            ASSERT_FALSE(r.ok()) << "opcode " << op;
            EXPECT_NE(r.err().message.find("unknown opcode"), std::string::npos);
        } else if (info->unsupported != nullptr) {
            EXPECT_FALSE(r.ok()) << "opcode " << op;
        } else {
            EXPECT_TRUE(r.ok()) << "opcode " << op << ": " << r.err().message;
        }
    }
}

} // namespace
} // namespace bpftime::vm::test
