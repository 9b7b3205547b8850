// SPDX-License-Identifier: MIT
// Subprograms that helpers call back (run_context::call: bpf_loop, for_each_map_elem) and tail
// calls (run_context::tail_call), on every engine: arguments and results, the caller's stack,
// faults inside callbacks named at their instruction, the call depth, the budget, the chain of
// tail calls, and the validator's refusals of code addresses.
#include "test_util.hpp"

#include <bpftime/vm/control_flow.hpp>

#include <cerrno>
#include <cstring>

namespace bpftime::vm::test {
namespace {

ebpf_inst code_addr(uint8_t dst, int32_t rel) {
    return insn(op_lddw, dst, pseudo_code_addr, 0, rel);
}
ebpf_inst lddw_tail() {
    return insn(0);
}
ebpf_inst alu64(uint8_t op, uint8_t dst, uint8_t src) {
    return insn(cls_alu64 | src_x | op, dst, src);
}
ebpf_inst alu64_imm(uint8_t op, uint8_t dst, int32_t imm) {
    return insn(cls_alu64 | src_k | op, dst, 0, 0, imm);
}
ebpf_inst call(int32_t id) {
    return insn(op_call, 0, call_helper, 0, id);
}

// each(callback, ctx, n): the sum of callback(i, ctx) for i in [0, n); stops at the first
// callback that cannot run.
uint64_t helper_each(uint64_t cb, uint64_t ctx_arg, uint64_t n, uint64_t, uint64_t,
                     run_context *ctx) {
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        auto r = ctx->call(cb, i, ctx_arg);
        if (!r) {
            return 0;
        }
        sum += *r;
    }
    return sum;
}

// The engine a tail call goes to, set by each test.
engine *tail_target = nullptr;
uint64_t helper_tail(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    if (ctx->tail_calls() >= max_tail_calls) {
        return static_cast<uint64_t>(-ELOOP);
    }
    return ctx->tail_call(*tail_target, nullptr) ? 0 : static_cast<uint64_t>(-EOPNOTSUPP);
}

// Loading against the two helpers above.
load_options with_test_helpers() {
    static helper_registry reg = [] {
        helper_registry r;
        EXPECT_TRUE(r.register_helper(110, "each", helper_each).ok());
        EXPECT_TRUE(r.register_helper(120, "tail", helper_tail).ok());
        return r;
    }();
    load_options lo;
    lo.helpers = &reg;
    return lo;
}

struct Callbacks : Engine {
    load_options lo = with_test_helpers();

    // r0 and the instructions counted on the engine under test, checked against the
    // interpreter's.
    result<uint64_t> run(std::vector<ebpf_inst> insns, uint64_t budget = 1'000'000,
                         std::vector<uint8_t> *mem = nullptr) {
        auto prog = program::load(insns, lo);
        if (!prog) {
            return prog.err();
        }
        uint64_t want_count = 0, got_count = 0;
        run_options ro;
        ro.instruction_budget = budget;
        ro.executed = &want_count;
        std::vector<uint8_t> copy = mem ? *mem : std::vector<uint8_t>{};
        auto interp = make_engine(engine_kind::interpreter, *prog);
        auto want = (*interp)->run(copy.empty() ? nullptr : copy.data(), copy.size(), ro);
        auto eng = make_engine(GetParam().kind, *prog, GetParam().opts);
        EXPECT_TRUE(eng.ok());
        ro.executed = &got_count;
        void *p = mem && !mem->empty() ? mem->data() : nullptr;
        auto got = (*eng)->run(p, mem ? mem->size() : 0, ro);
        EXPECT_EQ(got.ok(), want.ok());
        if (got.ok() && want.ok()) {
            EXPECT_EQ(*got, *want);
            EXPECT_EQ(got_count, want_count);
            executed = got_count;
        } else if (!got.ok() && !want.ok()) {
            EXPECT_EQ(got.err().code, want.err().code);
            if (want.err().code != fault_budget) {
                EXPECT_EQ(got.err().message, want.err().message);
            }
        }
        return got;
    }
    uint64_t executed = 0;
};

// r0 = each(callback at 6, 10, 5); the callback gives index * ctx.
std::vector<ebpf_inst> sum_of_products() {
    return {code_addr(1, 5), lddw_tail(),          mov64_imm(2, 10),     mov64_imm(3, 5), call(110),
            exit_insn(),     alu64(alu_mov, 0, 1), alu64(alu_mul, 0, 2), exit_insn()};
}

TEST_P(Callbacks, RunWithTheirArgumentsAndGiveTheirResult) {
    auto r = run(sum_of_products());
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 100u); // (0 + 1 + 2 + 3 + 4) * 10
    // The caller's 5 instructions and 3 for each of 5 callbacks.
    EXPECT_EQ(executed, 5u + 5u * 3u);
}

TEST_P(Callbacks, ReachTheCallersStackThroughTheirContext) {
    // *(r10 - 8) = 1000; each(callback, r10 - 8, 4); r0 = *(r10 - 8) + each's result.
    // The callback adds its index to *ctx, scribbles on its own frame and gives 1.
    auto r = run({insn(cls_st | mode_mem | size_dw, 10, 0, -8, 1000), code_addr(1, 8), lddw_tail(),
                  alu64(alu_mov, 2, 10), alu64_imm(alu_add, 2, -8), mov64_imm(3, 4), call(110),
                  insn(cls_ldx | mode_mem | size_dw, 1, 10, -8), alu64(alu_add, 0, 1), exit_insn(),
                  // 10: the callback
                  insn(cls_ldx | mode_mem | size_dw, 3, 2, 0), alu64(alu_add, 3, 1),
                  insn(cls_stx | mode_mem | size_dw, 2, 3, 0),
                  insn(cls_st | mode_mem | size_dw, 10, 0, -8, 77), mov64_imm(0, 1), exit_insn()});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 1000u + 0 + 1 + 2 + 3 + 4);
}

TEST_P(Callbacks, FaultsInsideACallbackStopTheRunNamingTheCallbacksInstruction) {
    // The callback reads through its index (0): outside every region.
    auto prog = sum_of_products();
    prog[6] = insn(cls_ldx | mode_mem | size_dw, 0, 1, 0);
    auto r = run(prog);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    EXPECT_NE(r.err().message.find("instruction 6 (ldxdw %r0, [%r1]): read of 8 bytes at 0x0"),
              std::string::npos)
        << r.err().message;
    EXPECT_NE(r.err().message.find("outside the memory the program may access"), std::string::npos);
}

TEST_P(Callbacks, CountInTheCallDepth) {
    // The callback calls each() with itself: frames run out after the entry and 7 callbacks.
    auto r = run({code_addr(1, 4), lddw_tail(), mov64_imm(3, 1), call(110), exit_insn(),
                  // 5: the callback, r1 = index: each(itself, 0, 1)
                  code_addr(1, -1), lddw_tail(), mov64_imm(3, 1), call(110), exit_insn()});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_call_depth);
    EXPECT_NE(r.err().message.find("instruction 8 (call 110)"), std::string::npos)
        << r.err().message;
    EXPECT_NE(r.err().message.find("call depth exceeds 8 frames"), std::string::npos);
}

TEST_P(Callbacks, SpendTheRunsBudget) {
    auto r = run(sum_of_products(), 5 + 5 * 3);
    ASSERT_TRUE(r.ok()) << r.err().message;
    // A callback that never returns stops at the budget.
    auto forever = sum_of_products();
    forever[8] = insn(op_ja, 0, 0, -1);
    r = run(forever, 100'000);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_budget);
    EXPECT_NE(r.err().message.find("the instruction budget of 100000 is exhausted"),
              std::string::npos)
        << r.err().message;
    // Too small for the callbacks: the interpreter stops in the last one.
    r = run(sum_of_products(), 5 + 5 * 3 - 1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_budget);
}

TEST_P(Callbacks, AValueThatIsNotACodeAddressStopsTheRun) {
    auto prog = sum_of_products();
    prog[0] = insn(op_lddw, 1, 0, 0, 6); // the number 6, not the code address of pc 6
    auto r = run(prog);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_helper);
    EXPECT_NE(r.err().message.find("instruction 4 (call 110): the callback 0x6 is not the code "
                                   "address of a subprogram of this program"),
              std::string::npos)
        << r.err().message;
}

TEST(CodeAddresses, LoadAsOpaqueValuesNamingTheirSubprogram) {
    auto prog = program::load(sum_of_products(), with_test_helpers());
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    ASSERT_EQ(prog->callbacks().size(), 1u);
    EXPECT_EQ(prog->callbacks()[0], 6u);
    EXPECT_TRUE(prog->is_callback(6));
    EXPECT_EQ(prog->insns()[0].src, pseudo_imm64);
    EXPECT_EQ(static_cast<uint32_t>(prog->insns()[0].imm), 6u);
    EXPECT_EQ(static_cast<uint32_t>(prog->insns()[1].imm), code_address_tag >> 32);
    // A callback's frame sits below the entry frame.
    EXPECT_EQ(prog->entry_frame_reach(), stack_frame_size);
}

void expect_refused(std::vector<ebpf_inst> insns, const std::string &what) {
    auto r = validate(insns, with_test_helpers());
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(r.err().message.find(what), std::string::npos) << r.err().message;
}

TEST(CodeAddresses, MustNameTheFirstInstructionOfASubprogram) {
    auto prog = sum_of_products();
    // Into the middle of the callback (the instruction before is not an exit).
    prog[0].imm = 6;
    expect_refused(prog, "instruction 0 (lddw %r1, code_addr(6)): code address target 7 is not "
                         "the first instruction of a subprogram");
    // The entry function.
    prog[0].imm = -1;
    expect_refused(prog, "code address target 0 is not the first instruction of a subprogram");
    // Into the entry function's code.
    prog[0].imm = 2;
    expect_refused(prog, "code address target 3 is not the first instruction");
    // Outside the program, and the second slot of an lddw.
    prog[0].imm = 40;
    expect_refused(prog, "code address target 41 is outside the program (9 slots)");
    prog[0].imm = 0;
    expect_refused(prog, "code address target 1 is the second slot of an lddw");
    // A subprogram that a jump enters is not one.
    auto jumped = sum_of_products();
    jumped[5] = insn(op_ja, 0, 0, 0); // 5: ja +0 -> 6, then 6 is jumped into
    jumped.push_back(exit_insn());
    expect_refused(jumped, "code address target 6 is not the first instruction");
    // No resolver is needed.
    EXPECT_TRUE(validate(sum_of_products(), with_test_helpers()).ok());
}

// Tail calls: the target runs with the same input and the rest of the budget.
TEST_P(Callbacks, TailCallsRunTheTargetInsteadOfTheRestOfTheCaller) {
    // The target: r0 = *(u64 *)r1 + r2 (the input and its length, as the caller got them).
    auto target = program::load(
        {insn(cls_ldx | mode_mem | size_dw, 0, 1, 0), alu64(alu_add, 0, 2), exit_insn()}, lo);
    ASSERT_TRUE(target.ok());
    auto target_engine = make_engine(GetParam().kind, *target, GetParam().opts);
    ASSERT_TRUE(target_engine.ok());
    tail_target = target_engine->get();
    std::vector<uint8_t> mem(16, 0);
    mem[0] = 40;
    // The caller scribbles on r1 and its stack first; it never gets past the call.
    auto r = run({insn(cls_st | mode_mem | size_dw, 10, 0, -8, 5), mov64_imm(1, 0), call(120),
                  mov64_imm(0, 7), exit_insn()},
                 1'000'000, &mem);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 40u + 16u);
    EXPECT_EQ(executed, 3u + 3u); // the caller's three to the call, the target's three
}

TEST_P(Callbacks, TailCallsStopAfterThirtyThreeAndTheCallerGoesOn) {
    // A program that counts its runs in the input, then tail-calls itself; when the helper
    // refuses, it gives the count and the helper's result.
    auto prog =
        program::load({mov64_imm(3, 1), insn(cls_stx | mode_atomic | size_dw, 1, 3, 0, 0),
                       alu64(alu_mov, 6, 1), call(120), alu64(alu_mov, 7, 0),
                       insn(cls_ldx | mode_mem | size_dw, 0, 6, 0), alu64_imm(alu_lsh, 0, 32),
                       insn(cls_alu | src_x | alu_mov, 7, 7), alu64(alu_or, 0, 7), exit_insn()},
                      lo);
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto eng = make_engine(GetParam().kind, *prog, GetParam().opts);
    ASSERT_TRUE(eng.ok());
    tail_target = eng->get();
    std::vector<uint8_t> mem(8, 0);
    uint64_t count = 0;
    run_options ro;
    ro.executed = &count;
    auto r = (*eng)->run(mem.data(), mem.size(), ro);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r >> 32, 34u); // the first run and 33 tail calls
    EXPECT_EQ(static_cast<uint32_t>(*r), static_cast<uint32_t>(-ELOOP));
    EXPECT_EQ(count, 34u * 4 + 6); // four to each call, then the last one's six after it
}

TEST_P(Callbacks, TailCallsCarryTheBudgetOn) {
    auto prog = program::load({call(120), exit_insn()}, lo);
    ASSERT_TRUE(prog.ok());
    auto eng = make_engine(GetParam().kind, *prog, GetParam().opts);
    ASSERT_TRUE(eng.ok());
    tail_target = eng->get();
    run_options ro;
    ro.instruction_budget = 10; // less than the chain's 33 calls
    auto r = (*eng)->run(nullptr, 0, ro);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_budget);
    EXPECT_NE(r.err().message.find("the instruction budget of 10 is exhausted"), std::string::npos)
        << r.err().message;
}

TEST_P(Callbacks, TailCallsFromASubprogramAreRefused) {
    auto prog = program::load(
        {insn(op_call, 0, call_local, 0, 1), exit_insn(), call(120), exit_insn()}, lo);
    ASSERT_TRUE(prog.ok());
    auto eng = make_engine(GetParam().kind, *prog, GetParam().opts);
    ASSERT_TRUE(eng.ok());
    tail_target = eng->get();
    auto r = (*eng)->run(nullptr, 0, {});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, static_cast<uint64_t>(-EOPNOTSUPP));
}

INSTANTIATE_TEST_SUITE_P(AllEngines, Callbacks, ::testing::ValuesIn(engine_variants()),
                         engine_test_name);

} // namespace
} // namespace bpftime::vm::test
