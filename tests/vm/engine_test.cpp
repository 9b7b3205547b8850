// SPDX-License-Identifier: MIT
// Semantics and memory safety of every engine: faults are errors, never crashes.
#include "test_util.hpp"

#include <bpftime/vm/isa.hpp>

#include <climits>

namespace bpftime::vm::test {
namespace {

uint64_t r0_of(std::vector<ebpf_inst> insns, std::vector<uint8_t> *mem = nullptr) {
    auto r = run_insns(std::move(insns), mem);
    EXPECT_TRUE(r.ok()) << r.err().message;
    return r.ok() ? *r : 0xdeadbeef;
}

ebpf_inst lddw_lo(uint8_t dst, uint64_t v) {
    return insn(op_lddw, dst, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v)));
}
ebpf_inst lddw_hi(uint64_t v) {
    return insn(0, 0, 0, 0, static_cast<int32_t>(v >> 32));
}

// r0 = a; r1 = b; r0 = r0 OP r1 (opcode op); exit
uint64_t binop(uint8_t op, uint64_t a, uint64_t b, int16_t off = 0) {
    return r0_of(
        {lddw_lo(0, a), lddw_hi(a), lddw_lo(1, b), lddw_hi(b), insn(op, 0, 1, off), exit_insn()});
}

TEST_P(Engine, ThirtyTwoBitResultsZeroExtend) {
    EXPECT_EQ(binop(cls_alu | src_x | alu_add, 0xffffffffffffffffull, 1), 0u);
    EXPECT_EQ(binop(cls_alu | src_x | alu_sub, 0, 1), 0xffffffffu);
    EXPECT_EQ(binop(cls_alu | src_x | alu_mov, 0, 0xffffffffffffffffull), 0xffffffffu);
    EXPECT_EQ(r0_of({lddw_lo(0, ~0ull), lddw_hi(~0ull), insn(cls_alu | alu_neg), exit_insn()}), 1u);
}

TEST_P(Engine, DivisionByZeroGivesZeroAndModuloKeepsDst) {
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_div, 7, 0), 0u);
    EXPECT_EQ(binop(cls_alu | src_x | alu_div, 7, 0), 0u);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_div, 7, 0, 1), 0u);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_mod, 7, 0), 7u);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_mod, 0xffffffff00000007ull, 0, 1),
              0xffffffff00000007ull);
    // 32-bit modulo by zero keeps the low half and zero-extends it.
    EXPECT_EQ(binop(cls_alu | src_x | alu_mod, 0xffffffff00000007ull, 0), 7u);
}

TEST_P(Engine, SignedDivisionOverflowDoesNotTrap) {
    const uint64_t int64_min = 0x8000000000000000ull;
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_div, int64_min, ~0ull, 1), int64_min);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_mod, int64_min, ~0ull, 1), 0u);
    EXPECT_EQ(binop(cls_alu | src_x | alu_div, 0x80000000u, 0xffffffffu, 1), 0x80000000u);
    EXPECT_EQ(binop(cls_alu | src_x | alu_mod, 0x80000000u, 0xffffffffu, 1), 0u);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_div, static_cast<uint64_t>(-7), 2, 1),
              static_cast<uint64_t>(-3));
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_mod, static_cast<uint64_t>(-7), 2, 1),
              static_cast<uint64_t>(-1));
}

TEST_P(Engine, ShiftCountsAreMasked) {
    EXPECT_EQ(binop(cls_alu | src_x | alu_lsh, 1, 33), 2u);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_lsh, 1, 65), 2u);
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_rsh, 4, 66), 1u);
    EXPECT_EQ(binop(cls_alu | src_x | alu_arsh, 0x80000000u, 63), 0xffffffffu);
}

TEST_P(Engine, ByteSwapsTruncate) {
    const uint64_t v = 0x1122334455667788ull;
    auto swap = [&](uint8_t op, int32_t width) {
        return r0_of({lddw_lo(0, v), lddw_hi(v), insn(op, 0, 0, 0, width), exit_insn()});
    };
    EXPECT_EQ(swap(cls_alu | src_k | alu_end, 16), 0x7788u);
    EXPECT_EQ(swap(cls_alu | src_k | alu_end, 32), 0x55667788u);
    EXPECT_EQ(swap(cls_alu | src_k | alu_end, 64), v);
    EXPECT_EQ(swap(cls_alu | src_x | alu_end, 16), 0x8877u);
    EXPECT_EQ(swap(cls_alu | src_x | alu_end, 32), 0x88776655u);
    EXPECT_EQ(swap(cls_alu64 | src_k | alu_end, 64), 0x8877665544332211ull);
}

TEST_P(Engine, Jmp32ComparesLowHalves) {
    // r1 = 0x1_00000000: as 64 bits it is not 0, its low half is.
    auto taken = [](uint8_t op) {
        return r0_of({mov64_imm(0, 0), lddw_lo(1, 0x100000000ull), lddw_hi(0x100000000ull),
                      insn(op, 1, 0, 1, 0), exit_insn(), mov64_imm(0, 1), exit_insn()});
    };
    EXPECT_EQ(taken(cls_jmp32 | src_k | jmp_jeq), 1u);
    EXPECT_EQ(taken(cls_jmp | src_k | jmp_jeq), 0u);
}

TEST_P(Engine, MovsxAndLdsxSignExtend) {
    EXPECT_EQ(binop(cls_alu64 | src_x | alu_mov, 0, 0x80, 8), 0xffffffffffffff80ull);
    EXPECT_EQ(binop(cls_alu | src_x | alu_mov, 0, 0x8000, 16), 0xffff8000u);
    std::vector<uint8_t> mem{0xfe, 0xff, 0xff, 0x7f};
    EXPECT_EQ(r0_of({insn(cls_ldx | mode_memsx | size_b, 0, 1, 0), exit_insn()}, &mem),
              static_cast<uint64_t>(-2));
    EXPECT_EQ(r0_of({insn(cls_ldx | mode_memsx | size_w, 0, 1, 0), exit_insn()}, &mem),
              0x7ffffffeu);
}

TEST_P(Engine, InputMemoryIsPassedInR1AndR2) {
    std::vector<uint8_t> mem(24);
    EXPECT_EQ(r0_of({insn(cls_alu64 | src_x | alu_mov, 0, 2), exit_insn()}, &mem), 24u);
    EXPECT_EQ(r0_of({insn(cls_st | mode_mem | size_w, 1, 0, 4, 0x01020304),
                     insn(cls_ldx | mode_mem | size_w, 0, 1, 4), exit_insn()},
                    &mem),
              0x01020304u);
    EXPECT_EQ(mem[4], 0x04);
}

TEST_P(Engine, ReadOutsideMemoryIsAnErrorNotACrash) {
    std::vector<uint8_t> mem(8);
    auto r = run_insns({insn(cls_ldx | mode_mem | size_dw, 0, 1, 4), exit_insn()}, &mem);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    EXPECT_NE(r.err().message.find("instruction 0 (ldxdw %r0, [%r1+4])"), std::string::npos)
        << r.err().message;
    EXPECT_NE(r.err().message.find("read of 8 bytes"), std::string::npos);
}

TEST_P(Engine, WildPointersFault) {
    // Null, a host address and the top of the address space.
    for (uint64_t addr : {0ull, 0x400000ull, 0xfffffffffffffff8ull}) {
        auto r = run_insns({lddw_lo(1, addr), lddw_hi(addr),
                            insn(cls_ldx | mode_mem | size_dw, 0, 1, 0), exit_insn()});
        ASSERT_FALSE(r.ok()) << addr;
        EXPECT_EQ(r.err().code, fault_out_of_bounds);
        auto w = run_insns({lddw_lo(1, addr), lddw_hi(addr),
                            insn(cls_st | mode_mem | size_b, 1, 0, 0, 1), exit_insn()});
        ASSERT_FALSE(w.ok());
        EXPECT_NE(w.err().message.find("write of 1 bytes"), std::string::npos);
    }
    // Just above the stack's top.
    auto r = run_insns({insn(cls_alu64 | src_x | alu_mov, 1, 10),
                        insn(cls_ldx | mode_mem | size_b, 0, 1, 1), exit_insn()});
    ASSERT_FALSE(r.ok());
}

TEST_P(Engine, ReadOnlyMemoryRefusesWrites) {
    std::vector<uint8_t> mem(8);
    run_options ro;
    ro.mem_writable = false;
    auto r = run_insns({insn(cls_st | mode_mem | size_b, 1, 0, 0, 1), exit_insn()}, &mem, ro);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    EXPECT_EQ(mem[0], 0);
    EXPECT_TRUE(
        run_insns({insn(cls_ldx | mode_mem | size_b, 0, 1, 0), exit_insn()}, &mem, ro).ok());
}

TEST_P(Engine, StackBelowTheFrameFaults) {
    auto ok = run_insns(
        {insn(cls_st | mode_mem | size_dw, 10, 0, -512, 1), mov64_imm(0, 0), exit_insn()});
    EXPECT_TRUE(ok.ok()) << ok.err().message;
    auto r = run_insns({insn(cls_st | mode_mem | size_dw, 10, 0, -520, 1), exit_insn()});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    auto above = run_insns({insn(cls_ldx | mode_mem | size_b, 0, 10, 0), exit_insn()});
    ASSERT_FALSE(above.ok());
}

TEST_P(Engine, StackStartsZeroed) {
    EXPECT_EQ(r0_of({insn(cls_ldx | mode_mem | size_dw, 0, 10, -8), exit_insn()}), 0u);
}

TEST_P(Engine, InstructionBudgetStopsRunawayLoops) {
    run_options ro;
    ro.instruction_budget = 1000;
    auto r = run_insns({mov64_imm(0, 0), insn(op_ja, 0, 0, -1)}, nullptr, ro);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_budget);
    EXPECT_NE(r.err().message.find("budget of 1000"), std::string::npos);
    ro.instruction_budget = 2;
    uint64_t executed = 0;
    ro.executed = &executed;
    EXPECT_TRUE(run_insns({mov64_imm(0, 0), exit_insn()}, nullptr, ro).ok());
    EXPECT_EQ(executed, 2u);
}

// f(n) calls itself n times; each call uses its own 512-byte frame.
std::vector<ebpf_inst> recursion(int32_t n) {
    return {mov64_imm(1, n), insn(op_call, 0, call_local, 0, 1), exit_insn(),
            // f: store a marker in this frame, recurse while r1 > 0, check the marker survived.
            insn(cls_stx | mode_mem | size_dw, 10, 1, -8), mov64_imm(0, 0),
            insn(cls_jmp | src_k | jmp_jeq, 1, 0, 3, 0),
            insn(cls_alu64 | src_k | alu_sub, 1, 0, 0, 1), insn(op_call, 0, call_local, 0, -5),
            insn(cls_ldx | mode_mem | size_dw, 1, 10, -8), insn(cls_alu64 | src_x | alu_add, 0, 1),
            exit_insn()};
}

TEST_P(Engine, LocalCallsHaveTheirOwnFramesUpToEight) {
    // Main + 7 nested frames: sum of 0..6 after the deepest call returns 0.
    EXPECT_EQ(r0_of(recursion(6)), 21u);
    auto r = run_insns(recursion(7));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_call_depth);
    EXPECT_NE(r.err().message.find("call depth exceeds 8 frames"), std::string::npos);
}

TEST_P(Engine, LocalCallsPreserveCalleeSavedRegisters) {
    EXPECT_EQ(r0_of({mov64_imm(6, 6), insn(op_call, 0, call_local, 0, 2),
                     insn(cls_alu64 | src_x | alu_mov, 0, 6), exit_insn(), mov64_imm(6, 99),
                     exit_insn()}),
              6u);
}

uint64_t helper_add(uint64_t a, uint64_t b, uint64_t, uint64_t, uint64_t, run_context *) {
    return a + b;
}
uint64_t helper_fail(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    ctx->fail("the helper said no");
    return 0;
}
uint8_t shared_value[16];
uint64_t helper_give(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    ctx->add_region(shared_value, sizeof shared_value, true);
    return reinterpret_cast<uint64_t>(shared_value);
}

uint64_t helper_check(uint64_t p, uint64_t n, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    return ctx->check_access(p, n, true) ? 1 : 0;
}

struct HelperTest : Engine {
    helper_registry reg;
    load_options lo;
    void SetUp() override {
        Engine::SetUp();
        ASSERT_TRUE(reg.register_helper(100, "add", helper_add).ok());
        ASSERT_TRUE(reg.register_helper(101, "fail", helper_fail).ok());
        ASSERT_TRUE(reg.register_helper(102, "give", helper_give).ok());
        ASSERT_TRUE(reg.register_helper(103, "check", helper_check).ok());
        lo.helpers = &reg;
    }
};

TEST_P(HelperTest, CallsByIdAndByRegister) {
    auto r = run_insns({mov64_imm(1, 2), mov64_imm(2, 3), insn(op_call, 0, 0, 0, 100), exit_insn()},
                       nullptr, {}, lo);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 5u);
    r = run_insns(
        {mov64_imm(1, 2), mov64_imm(2, 3), mov64_imm(4, 100), insn(op_callx, 4), exit_insn()},
        nullptr, {}, lo);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 5u);
    r = run_insns({mov64_imm(4, 77), insn(op_callx, 4), exit_insn()}, nullptr, {}, lo);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_bad_helper);
    EXPECT_NE(r.err().message.find("unknown helper id 77"), std::string::npos);
}

TEST_P(HelperTest, HelperFailureStopsTheProgram) {
    auto r =
        run_insns({insn(op_call, 0, 0, 0, 101), mov64_imm(0, 1), exit_insn()}, nullptr, {}, lo);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_helper);
    EXPECT_NE(r.err().message.find("the helper said no"), std::string::npos);
}

TEST_P(HelperTest, HelpersSeeTheFrameOfTheSubprogramThatCallsThem) {
    // f passes a pointer into its own frame (r10 - 8), then into its caller's (r10 + 504).
    auto frame_ok = [&](int32_t off) {
        auto r = run_insns({insn(op_call, 0, call_local, 0, 1), exit_insn(),
                            insn(cls_alu64 | src_x | alu_mov, 1, 10),
                            insn(cls_alu64 | src_k | alu_add, 1, 0, 0, off), mov64_imm(2, 8),
                            insn(op_call, 0, 0, 0, 103), exit_insn()},
                           nullptr, {}, lo);
        EXPECT_TRUE(r.ok()) << r.err().message;
        return r.ok() ? *r : 2;
    };
    EXPECT_EQ(frame_ok(-8), 1u);
    EXPECT_EQ(frame_ok(504), 1u);
    // Below the callee's frame is nobody's.
    EXPECT_EQ(frame_ok(-520), 0u);
    // Back in main, the callee's frame is gone.
    auto r =
        run_insns({insn(op_call, 0, call_local, 0, 4), insn(cls_alu64 | src_x | alu_mov, 1, 10),
                   insn(cls_alu64 | src_k | alu_add, 1, 0, 0, -520), mov64_imm(2, 8),
                   insn(op_call, 0, 0, 0, 103), exit_insn(), exit_insn()},
                  nullptr, {}, lo);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 0u);
}

TEST_P(HelperTest, AfterACallWhoseCalleeCalledAHelperTheCallersFrameIsTheHelpersAgain) {
    // A nested callee g hands a helper its own frame; back in its caller (f, or the entry),
    // a helper sees the caller's frames and no longer g's.
    const std::vector<ebpf_inst> g{insn(cls_alu64 | src_x | alu_mov, 1, 10),
                                   insn(cls_alu64 | src_k | alu_add, 1, 0, 0, -8), mov64_imm(2, 8),
                                   insn(op_call, 0, 0, 0, 103), exit_insn()};
    // What the check helper says of [r10 + off, +8) after a call of g, the code before it
    // being `before`.
    auto after_g = [&](std::vector<ebpf_inst> before, int32_t off) {
        const std::vector<ebpf_inst> rest{insn(op_call, 0, call_local, 0, 5),
                                          insn(cls_alu64 | src_x | alu_mov, 1, 10),
                                          insn(cls_alu64 | src_k | alu_add, 1, 0, 0, off),
                                          mov64_imm(2, 8),
                                          insn(op_call, 0, 0, 0, 103),
                                          exit_insn()};
        before.insert(before.end(), rest.begin(), rest.end());
        before.insert(before.end(), g.begin(), g.end());
        auto r = run_insns(before, nullptr, {}, lo);
        EXPECT_TRUE(r.ok()) << r.err().message;
        return r.ok() ? *r : 2;
    };
    // In f, which the entry calls first.
    const std::vector<ebpf_inst> into_f{insn(op_call, 0, call_local, 0, 1), exit_insn()};
    EXPECT_EQ(after_g(into_f, -8), 1u) << "f's own frame";
    EXPECT_EQ(after_g(into_f, 504), 1u) << "the entry's frame";
    EXPECT_EQ(after_g(into_f, -520), 0u) << "g's frame, gone";
    EXPECT_EQ(after_g({}, -8), 1u) << "the entry's own frame";
    EXPECT_EQ(after_g({}, -520), 0u) << "g's frame, gone";
}

TEST_P(HelperTest, RegionsFromHelpersAreAccessible) {
    auto r = run_insns({insn(op_call, 0, 0, 0, 102), insn(cls_st | mode_mem | size_dw, 0, 0, 8, 42),
                        insn(cls_ldx | mode_mem | size_dw, 0, 0, 8), exit_insn()},
                       nullptr, {}, lo);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 42u);
    r = run_insns(
        {insn(op_call, 0, 0, 0, 102), insn(cls_ldx | mode_mem | size_dw, 0, 0, 9), exit_insn()},
        nullptr, {}, lo);
    EXPECT_FALSE(r.ok()) << "one byte past the region";
}

TEST_P(Engine, AtomicsNeedAlignment) {
    auto r =
        run_insns({insn(cls_st | mode_mem | size_dw, 10, 0, -16, 0), mov64_imm(1, 1),
                   insn(cls_stx | mode_atomic | size_dw, 10, 1, -12, atomic_add), exit_insn()});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("not 8-byte aligned"), std::string::npos);
}

TEST_P(Engine, LddwPseudoFormsUseTheResolver) {
    static uint64_t global = 0x1234;
    load_options lo;
    int calls = 0;
    lo.resolver = [&](uint8_t kind, int32_t imm, int32_t next) -> result<resolved_lddw> {
        calls++;
        if (kind != pseudo_map_value || imm != 7) {
            return make_error(ENOENT, "no map with id " + std::to_string(imm));
        }
        return resolved_lddw{reinterpret_cast<uint64_t>(&global) + static_cast<uint64_t>(next),
                             memory_region{reinterpret_cast<uint64_t>(&global), 8, false}};
    };
    auto r = run_insns({insn(op_lddw, 1, pseudo_map_value, 0, 7), insn(0),
                        insn(cls_ldx | mode_mem | size_dw, 0, 1, 0), exit_insn()},
                       nullptr, {}, lo);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 0x1234u);
    auto bad = program::load({insn(op_lddw, 1, pseudo_map_fd, 0, 8), insn(0), exit_insn()}, lo);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.err().message.find("instruction 0"), std::string::npos);
    EXPECT_NE(bad.err().message.find("no map with id 8"), std::string::npos);
    // The region is read-only.
    auto w = run_insns({insn(op_lddw, 1, pseudo_map_value, 0, 7), insn(0),
                        insn(cls_st | mode_mem | size_dw, 1, 0, 0, 1), exit_insn()},
                       nullptr, {}, lo);
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(global, 0x1234u);
    EXPECT_EQ(calls, 3);
}

INSTANTIATE_TEST_SUITE_P(All, Engine, ::testing::ValuesIn(engine_variants()), engine_test_name);
INSTANTIATE_TEST_SUITE_P(All, HelperTest, ::testing::ValuesIn(engine_variants()), engine_test_name);

} // namespace
} // namespace bpftime::vm::test
