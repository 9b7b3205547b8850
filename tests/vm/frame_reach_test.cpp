// SPDX-License-Identifier: MIT
// How much of the entry frame a program can reach: engines zero and allow only that part.
#include "test_util.hpp"

#include <bpftime/vm/assembler.hpp>

#include <type_traits>

namespace bpftime::vm::test {
namespace {

// A helper that reports the stack region helpers check pointers against.
uint64_t helper_stack_size(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    return ctx->stack.size;
}

load_options with_stack_helper() {
    static helper_registry reg = [] {
        helper_registry r;
        EXPECT_TRUE(r.register_helper(200, "stack_size", helper_stack_size).ok());
        return r;
    }();
    load_options lo;
    lo.helpers = &reg;
    return lo;
}

// What read gives of the program text assembles to, loaded with the stack helper; 0 when it
// does not load.
template <class Read>
std::invoke_result_t<Read, const program &> loaded_with_stack_helper(std::string_view text,
                                                                     Read read) {
    auto insns = assemble(text);
    EXPECT_TRUE(insns.ok()) << text;
    if (!insns) {
        return 0;
    }
    auto prog = program::load(*insns, with_stack_helper());
    EXPECT_TRUE(prog.ok()) << text << ": " << (prog.ok() ? "" : prog.err().message);
    return prog.ok() ? read(*prog) : 0;
}

size_t reach_of(std::string_view text) {
    return loaded_with_stack_helper(text, [](const program &p) { return p.entry_frame_reach(); });
}

TEST(Program, KnowsWhetherItCallsHelpers) {
    // What decides whether a run needs the helpers' end-of-run step.
    EXPECT_FALSE(assembled("mov %r0, 0\nexit\n").calls_helpers());
    EXPECT_FALSE(assembled("call local f\nexit\nf:\nmov %r0, 1\nexit\n").calls_helpers());
    EXPECT_TRUE(assembled("call 5\nexit\n").calls_helpers());
    auto insns = assemble("mov %r0, 0\nexit\n");
    ASSERT_TRUE(insns.ok());
    insns->insert(insns->begin(), {insn(op_callx, 1), mov64_imm(0, 0)});
    auto with_callx = program::load(*insns);
    ASSERT_TRUE(with_callx.ok()) << with_callx.err().message;
    EXPECT_TRUE(with_callx->calls_helpers());
    EXPECT_TRUE(with_callx->needs_run_end());
}

uint64_t helper_zero(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    return 0;
}

TEST(Program, NeedsTheEndOfRunStepOnlyWhenItCallsAHelperThatLeavesSomething) {
    helper_registry reg;
    ASSERT_TRUE(reg.register_helper(200, "reserves", helper_zero).ok());
    ASSERT_TRUE(reg.register_helper(201, "reads", helper_zero).ok());
    reg.set_run_end([](std::string &) { return true; }, {200});
    load_options lo;
    lo.helpers = &reg;
    auto needs = [&](std::string_view text) {
        auto insns = assemble(text);
        EXPECT_TRUE(insns.ok()) << text;
        auto prog = program::load(*insns, lo);
        EXPECT_TRUE(prog.ok()) << text;
        return prog.ok() && prog->needs_run_end();
    };
    EXPECT_FALSE(needs("mov %r0, 0\nexit\n"));
    EXPECT_FALSE(needs("call 201\nexit\n"));
    EXPECT_TRUE(needs("call 201\ncall 200\nexit\n"));
    // In a subprogram too (a callback runs within the same run).
    EXPECT_TRUE(needs("call local f\nexit\nf:\ncall 200\nexit\n"));
    // A copy of the registry keeps what it names.
    helper_registry copy = reg;
    EXPECT_TRUE(copy.leaves_for_run_end(200));
    EXPECT_FALSE(copy.leaves_for_run_end(201));
}

TEST(FrameReach, ConstantOffsetsFromR10SetTheReach) {
    EXPECT_EQ(reach_of("mov %r0, 0\nexit"), 16u);
    EXPECT_EQ(reach_of("stdw [%r10-8], 1\nldxdw %r0, [%r10-8]\nexit"), 16u);
    EXPECT_EQ(reach_of("stw [%r10-36], 1\nmov %r0, 0\nexit"), 48u);
    EXPECT_EQ(reach_of("stb [%r10-512], 1\nmov %r0, 0\nexit"), 512u);
    // Followed through copies and constant adds, as clang passes a key to a helper.
    EXPECT_EQ(reach_of("mov %r2, %r10\nadd %r2, -100\nmov %r1, %r2\ncall 200\nexit"), 112u);
    EXPECT_EQ(reach_of("mov %r3, %r10\nsub %r3, 64\nstxdw [%r3+8], %r1\nmov %r0, 0\nexit"), 64u);
}

TEST(FrameReach, PointersThatCannotBeFollowedReachTheWholeFrame) {
    // Spilled to memory.
    EXPECT_EQ(reach_of("mov %r2, %r10\nstxdw [%r10-8], %r2\nmov %r0, 0\nexit"), 512u);
    // A variable index (the conformance suite's stack lookup table).
    EXPECT_EQ(reach_of("mov %r2, %r10\nadd %r2, %r1\nldxb %r0, [%r2-1]\nexit"), 512u);
    // Masked, truncated or negated.
    EXPECT_EQ(reach_of("mov %r2, %r10\nand %r2, -8\nmov %r0, 0\nexit"), 512u);
    EXPECT_EQ(reach_of("mov32 %r2, %r10\nmov %r0, 0\nexit"), 512u);
    EXPECT_EQ(reach_of("mov %r2, %r10\nneg %r2\nmov %r0, 0\nexit"), 512u);
    // Mixed into another register.
    EXPECT_EQ(reach_of("mov %r2, %r10\nadd %r1, %r2\nmov %r0, 0\nexit"), 512u);
    // Still held when control flow joins.
    EXPECT_EQ(reach_of("mov %r6, %r10\nadd %r6, -8\njeq %r1, 0, +1\nmov %r1, 1\n"
                       "stxdw [%r6+0], %r1\nmov %r0, 0\nexit"),
              512u);
    // A program with local calls.
    EXPECT_EQ(reach_of("call local f\nexit\nf:\nmov %r0, 0\nexit"), 512u);
}

TEST(FrameReach, ABlockBoundaryForgetsNothingWhenNoPointerIsHeld) {
    // The pointer dies in the helper call before the branch.
    EXPECT_EQ(reach_of("mov %r2, %r10\nadd %r2, -24\ncall 200\njeq %r0, 0, +1\n"
                       "stdw [%r10-8], 7\nmov %r0, 0\nexit"),
              32u);
}

TEST_P(Engine, HelpersSeeOnlyTheReachableFrame) {
    auto run = [&](std::string_view text) -> uint64_t {
        auto insns = assemble(text);
        EXPECT_TRUE(insns.ok());
        auto r = run_insns(insns.ok() ? *insns : std::vector<ebpf_inst>{}, nullptr, {},
                           with_stack_helper());
        EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.err().message);
        return r.ok() ? *r : 0;
    };
    EXPECT_EQ(run("mov %r2, %r10\nadd %r2, -40\nmov %r1, %r2\ncall 200\nexit"), 48u);
    EXPECT_EQ(run("mov %r2, %r10\nstxdw [%r10-8], %r2\ncall 200\nexit"), 512u);
}

TEST_P(Engine, TheReachableFrameStartsZeroedOnEveryRun) {
    // Reads the bytes, then leaves them dirty for the next run.
    auto insns = assemble("ldxdw %r0, [%r10-8]\nldxdw %r1, [%r10-40]\nor %r0, %r1\n"
                          "stdw [%r10-8], -1\nstdw [%r10-40], -1\nexit");
    ASSERT_TRUE(insns.ok());
    auto prog = program::load(*insns);
    ASSERT_TRUE(prog.ok());
    EXPECT_EQ(prog->entry_frame_reach(), 48u);
    auto eng = make_engine(engine_under_test().kind, *prog, engine_under_test().opts);
    ASSERT_TRUE(eng.ok());
    for (int i = 0; i < 3; i++) {
        auto r = (*eng)->run(nullptr, 0);
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, 0u) << "run " << i;
    }
}

uint64_t zeroed_of(std::string_view text) {
    return loaded_with_stack_helper(text,
                                    [](const program &p) { return p.entry_frame_zeroed_words(); });
}

TEST(FrameZeroing, BytesWrittenBeforeTheyAreReadNeedNoZeroing) {
    EXPECT_EQ(zeroed_of("mov %r0, 0\nexit"), 0u);
    EXPECT_EQ(zeroed_of("stdw [%r10-8], 1\nldxdw %r0, [%r10-8]\nexit"), 0u);
    // A key written whole before a helper reads upwards from it (a map lookup's shape).
    EXPECT_EQ(zeroed_of("stdw [%r10-8], 0\nmov %r2, %r10\nadd %r2, -8\ncall 200\nexit"), 0u);
    // Written on both ways to a join.
    EXPECT_EQ(zeroed_of("jeq %r1, 0, +2\nstdw [%r10-16], 1\nja +1\nstdw [%r10-16], 2\n"
                        "ldxdw %r0, [%r10-16]\nexit"),
              0u);
}

TEST(FrameZeroing, BytesThatMayBeReadFirstAreZeroed) {
    EXPECT_EQ(zeroed_of("ldxdw %r0, [%r10-8]\nexit"), 0b1u);
    EXPECT_EQ(zeroed_of("ldxb %r0, [%r10-17]\nexit"), 0b100u);
    // Half of a word written: the other half is read first.
    EXPECT_EQ(zeroed_of("stw [%r10-8], 1\nldxdw %r0, [%r10-8]\nexit"), 0b1u);
    // Written on one way to a join only.
    EXPECT_EQ(zeroed_of("jeq %r1, 0, +1\nstdw [%r10-16], 1\nldxdw %r0, [%r10-16]\nexit"), 0b10u);
    // Written after the read in a loop: the first iteration reads it first.
    EXPECT_EQ(zeroed_of("mov %r1, 3\nldxdw %r0, [%r10-8]\nstdw [%r10-8], 1\nsub %r1, 1\n"
                        "jne %r1, 0, -4\nexit"),
              0b1u);
    // A helper may read upwards from its pointer to the top of the frame.
    EXPECT_EQ(zeroed_of("stdw [%r10-24], 0\nmov %r2, %r10\nadd %r2, -24\ncall 200\nexit"), 0b11u);
    // An atomic operation reads before it writes.
    EXPECT_EQ(zeroed_of("mov %r1, 1\nlock add [%r10-8], %r1\nmov %r0, 0\nexit"), 0b1u);
}

TEST(FrameZeroing, PointersThatCannotBeFollowedZeroTheWholeReach) {
    EXPECT_EQ(zeroed_of("stdw [%r10-8], 1\nmov %r2, %r10\nadd %r2, %r1\nldxb %r0, [%r2-1]\nexit"),
              ~uint64_t{0});
    EXPECT_EQ(zeroed_of("stdw [%r10-8], 1\ncall local f\nexit\nf:\nmov %r0, 0\nexit"),
              ~uint64_t{0});
}

TEST_P(Engine, AByteReadBeforeAnyWriteIsZeroOnEveryPath) {
    // Another program's run on this thread leaves the frame dirty first.
    auto dirty = assemble("stdw [%r10-8], -1\nstdw [%r10-16], -1\nstdw [%r10-24], -1\n"
                          "mov %r0, 0\nexit");
    // Writes [r10-16] only when r1 (the input) is null; reads it and the half of [r10-8] it
    // did not write on every path; [r10-24] is written before it is read.
    auto reads = assemble("stw [%r10-8], 0\nstdw [%r10-24], 5\njne %r1, 0, +1\n"
                          "stdw [%r10-16], 7\nldxdw %r0, [%r10-16]\nldxdw %r2, [%r10-8]\n"
                          "add %r0, %r2\nldxdw %r2, [%r10-24]\nadd %r0, %r2\nexit");
    ASSERT_TRUE(dirty.ok() && reads.ok());
    auto p_dirty = program::load(*dirty);
    auto p_reads = program::load(*reads);
    ASSERT_TRUE(p_dirty.ok() && p_reads.ok());
    auto e_dirty = make_engine(engine_under_test().kind, *p_dirty, engine_under_test().opts);
    auto e_reads = make_engine(engine_under_test().kind, *p_reads, engine_under_test().opts);
    ASSERT_TRUE(e_dirty.ok() && e_reads.ok());
    uint8_t input[8] = {};
    for (int i = 0; i < 3; i++) {
        ASSERT_TRUE((*e_dirty)->run(nullptr, 0).ok());
        auto skipped = (*e_reads)->run(input, sizeof input); // [r10-16] not written
        ASSERT_TRUE(skipped.ok()) << skipped.err().message;
        EXPECT_EQ(*skipped, 5u) << "run " << i;
        ASSERT_TRUE((*e_dirty)->run(nullptr, 0).ok());
        const run_status direct = (*e_reads)->run_direct(input, sizeof input);
        ASSERT_TRUE(direct.ok());
        EXPECT_EQ(direct.r0, 5u) << "run " << i;
        ASSERT_TRUE((*e_dirty)->run(nullptr, 0).ok());
        auto written = (*e_reads)->run(nullptr, 0);
        ASSERT_TRUE(written.ok()) << written.err().message;
        EXPECT_EQ(*written, 12u) << "run " << i;
    }
}

} // namespace
} // namespace bpftime::vm::test
