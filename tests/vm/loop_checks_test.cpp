// SPDX-License-Identifier: MIT
// Counted loops, where the optimised JIT proves its access and budget checks once before the
// loop (and runs a copy without them): every engine must fault where the interpreter faults,
// with the same message, and count the same instructions when the run completes.
#include "test_util.hpp"

#include <array>
#include <cstring>
#include <regex>

namespace bpftime::vm::test {
namespace {

// Sums the bytes [r1 + from, r1 + to) going up, or (r1 + to, r1 + from] going down.
std::string sum_loop(int from, int to, int step) {
    const char *cond = step > 0 ? "jsge" : "jsle";
    return "mov %r0, 0\nmov %r3, " + std::to_string(from) + "\nloop:\n" + cond + " %r3, " +
           std::to_string(to) +
           ", done\nmov %r4, %r1\nadd %r4, %r3\nldxb %r5, [%r4+0]\nadd %r0, %r5\nadd %r3, " +
           std::to_string(step) + "\nja loop\ndone:\nexit";
}

TEST_P(Engine, CountedLoopsFaultWhereTheInterpreterDoes) {
    // In bounds: 64 bytes up, then down.
    EXPECT_TRUE(same_as_interpreter(sum_loop(0, 64, 1), 64).ok);
    EXPECT_TRUE(same_as_interpreter(sum_loop(63, -1, -1), 64).ok);
    EXPECT_TRUE(same_as_interpreter(sum_loop(0, 64, 4), 64).ok);
    // One byte past the end on the last iteration, and one before the start.
    EXPECT_FALSE(same_as_interpreter(sum_loop(0, 65, 1), 64).ok);
    EXPECT_FALSE(same_as_interpreter(sum_loop(64, -1, -1), 64).ok);
    EXPECT_FALSE(same_as_interpreter(sum_loop(63, -2, -1), 64).ok);
    EXPECT_FALSE(same_as_interpreter(sum_loop(0, 68, 4), 64).ok);
    // Never in bounds, and an empty loop.
    EXPECT_FALSE(same_as_interpreter(sum_loop(100, 164, 1), 64).ok);
    EXPECT_TRUE(same_as_interpreter(sum_loop(5, 5, 1), 64).ok);
}

// Runs text with budgets around what it needs, and ones that run out early or halfway: the
// same outcome as the interpreter each time, and a stop exactly when the budget is short.
void budgets_around_the_need(const std::string &text) {
    outcome full = same_as_interpreter(text, 4096);
    ASSERT_TRUE(full.ok);
    ASSERT_GT(full.executed, 4000u);
    for (uint64_t budget : {full.executed + 1, full.executed, full.executed - 1, full.executed - 5,
                            full.executed / 2, uint64_t{10}}) {
        outcome o = same_as_interpreter(text, 4096, budget);
        EXPECT_EQ(o.ok, budget >= full.executed) << "budget " << budget;
    }
}

// The definition of the function whose name ends in suffix, in ir.
std::string function_of(const std::string &ir, const std::string &suffix) {
    const size_t start = ir.find(suffix + "(");
    EXPECT_NE(start, std::string::npos) << ir;
    return ir.substr(start, ir.find("\n}\n", start) - start);
}

// The constants `icmp ult i64 %x, N` compares with in text.
std::vector<uint64_t> unsigned_bounds(const std::string &text) {
    std::vector<uint64_t> out;
    static const std::regex ult("icmp ult i64 %[^,]+, ([0-9]+)");
    for (std::sregex_iterator i(text.begin(), text.end(), ult), end; i != end; ++i) {
        out.push_back(std::stoull((*i)[1]));
    }
    return out;
}

TEST_P(Engine, CountedLoopsStopWhereTheInterpreterDoesWhenTheBudgetRunsOut) {
    budgets_around_the_need(sum_loop(0, 4000, 1));
}

// Sums the odd bytes only: iterations differ in length, so the budget left after n iterations
// is not a simple function of n.
constexpr const char *odd_bytes = "mov %r0, 0\nmov %r3, 0\nloop:\njsge %r3, 4000, done\n"
                                  "mov %r4, %r1\nadd %r4, %r3\nldxb %r5, [%r4+0]\nadd %r3, 1\n"
                                  "mov %r6, %r5\nand %r6, 1\njeq %r6, 0, loop\nadd %r0, %r5\n"
                                  "ja loop\ndone:\nexit";

TEST_P(Engine, LoopsWithBranchesStopWhereTheInterpreterDoesWhenTheBudgetRunsOut) {
    budgets_around_the_need(odd_bytes);
}

// Each iteration stores a byte on one of its two ways only, so the ways stay apart (no select
// joins them) and the budget left after an iteration is a phi of two amounts.
constexpr const char *store_on_one_way = "mov %r0, 0\nmov %r3, 0\nloop:\njsge %r3, 4000, done\n"
                                         "mov %r4, %r1\nadd %r4, %r3\nldxb %r5, [%r4+0]\n"
                                         "jset %r5, 1, odd\nstxb [%r4+0], %r0\nadd %r0, 1\n"
                                         "odd:\nadd %r0, %r5\nadd %r3, 1\nja loop\n"
                                         "done:\nexit";

TEST_P(Engine, LoopsWithAStoreOnOneWayStopWhereTheInterpreterDoesWhenTheBudgetRunsOut) {
    budgets_around_the_need(store_on_one_way);
}

// The longest run of text (memory of `fill` bytes) against the budget the optimised tier's direct
// entry tests before a copy without budget tests: the direct entry has none, and ends in a call of
// the run entry (for less budget, and runs that count, which the tests above run too), and its one
// bound covers the longest run and is over by less than slack.
void expect_one_bound(const std::string &text, uint8_t fill, uint64_t slack) {
    std::vector<uint8_t> mem(4096, fill);
    const outcome longest = run_text({engine_kind::interpreter, {}}, text, mem, 1'000'000);
    ASSERT_TRUE(longest.ok) << longest.error;
    const std::string direct = function_of(optimised_ir(text), "_direct");
    // A budget test is `budget <s 0` (marked), or after instcombine a subtraction that
    // overflows.
    EXPECT_EQ(direct.find("!bpftime.budget"), std::string::npos) << direct;
    EXPECT_EQ(direct.find("usub.with.overflow"), std::string::npos) << direct;
    EXPECT_NE(direct.find("call { i64, ptr } @bpftime_program_"), std::string::npos) << direct;
    const std::vector<uint64_t> bounds = unsigned_bounds(direct);
    ASSERT_EQ(bounds.size(), 1u) << direct;
    EXPECT_GE(bounds[0], longest.executed) << direct;
    EXPECT_LT(bounds[0], longest.executed + slack) << direct;
}

TEST(LoopChecks, ARunWhoseBudgetCoversTheLongestOneHasNoBudgetTests) {
    if (available_engines().size() < 2) {
        GTEST_SKIP() << "this build has no JIT";
    }
    // 4000 iterations of 7 instructions: the bound is scalar evolution's range of the budget,
    // off by less than an iteration.
    expect_one_bound(sum_loop(0, 4000, 1), 1, 7);
    // Iterations of 8 or 10 instructions, each counted as the longer way: even bytes take it
    // every time.
    expect_one_bound(store_on_one_way, 0, 10);
    // Nested: 8 rows of 8 bytes, the inner loop's most per entry times the outer's trips, off
    // by less than one outer iteration (83 instructions).
    expect_one_bound("mov %r0, 0\nmov %r6, 0\nouter:\njge %r6, 8, done\nmov %r3, 0\ninner:\n"
                     "jge %r3, 8, next\nmov %r4, %r6\nlsh %r4, 3\nadd %r4, %r3\nadd %r4, %r1\n"
                     "ldxb %r5, [%r4+0]\nadd %r0, %r5\nadd %r3, 1\nja inner\nnext:\nadd %r6, 1\n"
                     "ja outer\ndone:\nexit",
                     1, 83);
}

TEST(LoopChecks, TheBudgetOfALoopWithTwoWaysPassesOneAddFromIterationToIteration) {
    if (available_engines().size() < 2) {
        GTEST_SKIP() << "this build has no JIT";
    }
    // shorten_add_chains made the value the latch hands the header; the test above shows the
    // count stays exact with it.
    const std::string ir = optimised_ir(store_on_one_way);
    EXPECT_NE(ir.find("%chain"), std::string::npos) << ir;
}

// Looks for the byte r1[0] among r1[1..len): the loop leaves at the first match or at the end,
// and returns where it left.
constexpr const char *find_byte = "ldxb %r6, [%r1+0]\nmov %r3, 1\nloop:\njge %r3, %r2, done\n"
                                  "mov %r4, %r1\nadd %r4, %r3\nldxb %r5, [%r4+0]\n"
                                  "jeq %r5, %r6, found\nadd %r3, 1\nja loop\nfound:\n"
                                  "mov %r0, %r3\nexit\ndone:\nmov %r0, 0\nexit";

std::vector<uint8_t> byte_at(size_t where) {
    std::vector<uint8_t> mem(4096, 7);
    mem[0] = 0xab;
    if (where < mem.size()) {
        mem[where] = 0xab;
    }
    return mem;
}

TEST_P(Engine, LoopsLeftEarlyCountWhatTheyRan) {
    // The copy without checks counts the budget only at its exits, from the iteration it left
    // in (counts_at_exits): each exit must count what the interpreter counts, and a budget
    // around the need must stop the run where it stops the interpreter's.
    for (size_t where :
         {size_t{1}, size_t{2}, size_t{7}, size_t{100}, size_t{4000}, size_t{9999}}) {
        const outcome full = same_as_interpreter(find_byte, byte_at(where));
        ASSERT_TRUE(full.ok) << where << ": " << full.error;
        EXPECT_EQ(full.r0, where < 4096 ? where : 0u);
        for (uint64_t budget : {full.executed, full.executed - 1, full.executed + 1}) {
            const outcome o = same_as_interpreter(find_byte, byte_at(where), budget);
            EXPECT_EQ(o.ok, budget >= full.executed) << where << " budget " << budget;
        }
    }
}

TEST(LoopChecks, ALoopWithoutChecksCountsItsBudgetAtItsExits) {
    if (available_engines().size() < 2) {
        GTEST_SKIP() << "this build has no JIT";
    }
    // counts_at_exits computed each exit's count from the index; the test above shows the
    // counts are exact.
    const std::string ir = optimised_ir(find_byte);
    EXPECT_NE(ir.find("exit.count"), std::string::npos) << ir;
}

TEST_P(Engine, LoopsOverLocalCallsStopWhereTheInterpreterDoesWhenTheBudgetRunsOut) {
    // Each iteration calls f, whose two ways differ in length: inlined, the loop's budget is
    // taken by a select of two amounts, and the callee's checks at its exits and at the call
    // are computed apart from the loop's own count.
    budgets_around_the_need("mov %r7, %r1\nmov %r6, 0\nmov %r8, 0\nloop:\n"
                            "jsge %r6, 1000, done\nmov %r1, %r7\nadd %r1, %r6\n"
                            "ldxb %r1, [%r1+0]\nmov %r2, %r8\ncall local +5\nmov %r8, %r0\n"
                            "add %r6, 1\nja loop\ndone:\nmov %r0, %r8\nexit\n"
                            "mov %r0, %r2\njset %r1, 1, odd\nadd %r0, %r1\nexit\n"
                            "odd:\nsub %r0, %r1\nxor %r0, 5\nexit");
}

TEST_P(Engine, AVeryLongCountedLoopStopsAtTheBudget) {
    // 2^40 iterations over the same 8 bytes: the budget, not the count, ends it, within
    // milliseconds.
    const std::string text = "mov %r0, 0\nmov %r3, 0\nmov %r7, 1\nlsh %r7, 40\nloop:\n"
                             "jsge %r3, %r7, done\nmov %r4, %r3\nand %r4, 7\nadd %r4, %r1\n"
                             "ldxb %r5, [%r4+0]\nadd %r3, 1\njne %r5, 0, loop\nadd %r0, %r5\n"
                             "ja loop\ndone:\nexit";
    outcome o = same_as_interpreter(text, 8, 100'000);
    EXPECT_FALSE(o.ok);
    EXPECT_NE(o.error.find("instruction budget"), std::string::npos) << o.error;
}

TEST_P(Engine, NestedLoopsStopWhereTheInterpreterDoesWhenTheBudgetRunsOut) {
    // 64 rows of 64 bytes, odd bytes counted on a longer way.
    budgets_around_the_need(
        "mov %r0, 0\nmov %r6, 0\nouter:\njge %r6, 64, done\nmov %r3, 0\ninner:\n"
        "jge %r3, 64, next\nmov %r4, %r6\nlsh %r4, 6\nadd %r4, %r3\nadd %r4, %r1\n"
        "ldxb %r5, [%r4+0]\njset %r5, 1, odd\nadd %r0, %r5\nodd:\nadd %r0, 1\nadd %r3, 1\n"
        "ja inner\nnext:\nadd %r6, 1\nja outer\ndone:\nexit");
}

TEST_P(Engine, NestedLoopsKeepTheirChecks) {
    // for i < 8: for j < n: sum += mem[i * 8 + j], with n = 8 (in bounds) or 9 (the last row
    // reads one byte past the end).
    auto nested = [](int n) {
        return "mov %r0, 0\nmov %r6, 0\nouter:\njge %r6, 8, done\nmov %r3, 0\ninner:\njge %r3, " +
               std::to_string(n) +
               ", next\nmov %r4, %r6\nlsh %r4, 3\nadd %r4, %r3\nadd %r4, %r1\n"
               "ldxb %r5, [%r4+0]\nadd %r0, %r5\nadd %r3, 1\nja inner\nnext:\nadd %r6, 1\n"
               "ja outer\ndone:\nexit";
    };
    EXPECT_TRUE(same_as_interpreter(nested(8), 64).ok);
    EXPECT_FALSE(same_as_interpreter(nested(9), 64).ok);
}

// Copies n u64 words from r1 + s to r1 + d, word by word upwards; d, s and n are the first three
// words of memory. The optimised JIT vectorises the loop, with a test before it that the two
// ranges do not overlap in a way that changes what the words are.
constexpr const char *copy_words = R"(
        ldxdw %r2, [%r1+0]
        ldxdw %r3, [%r1+8]
        ldxdw %r6, [%r1+16]
        add %r2, %r1
        add %r3, %r1
        mov %r4, 0
    loop:
        jge %r4, %r6, done
        mov %r5, %r4
        lsh %r5, 3
        mov %r7, %r3
        add %r7, %r5
        ldxdw %r8, [%r7+0]
        mov %r7, %r2
        add %r7, %r5
        stxdw [%r7+0], %r8
        add %r4, 1
        ja loop
    done:
        mov %r0, %r4
        exit)";

std::vector<uint8_t> copy_memory(uint64_t d, uint64_t s, uint64_t n) {
    std::vector<uint8_t> mem(1024);
    std::iota(mem.begin(), mem.end(), uint8_t{7});
    std::memcpy(mem.data(), &d, 8);
    std::memcpy(mem.data() + 8, &s, 8);
    std::memcpy(mem.data() + 16, &n, 8);
    return mem;
}

TEST_P(Engine, VectorisedCopiesKeepTheOrderOfOverlappingAccesses) {
    // Apart; overlapping with the destination after the source (each word read was written
    // words before) and before it; unaligned; the same range; a short copy.
    for (auto [d, s, n] : std::vector<std::array<uint64_t, 3>>{{512, 32, 60},
                                                               {64, 32, 100},
                                                               {40, 32, 100},
                                                               {32, 64, 100},
                                                               {67, 32, 90},
                                                               {32, 35, 90},
                                                               {100, 100, 80},
                                                               {300, 24, 3}}) {
        const outcome o = same_as_interpreter(copy_words, copy_memory(d, s, n));
        EXPECT_TRUE(o.ok) << d << " " << s << " " << n << ": " << o.error;
    }
}

TEST_P(Engine, VectorisedCopiesFaultWhereTheInterpreterDoes) {
    // The last word written, then the last word read, one byte past the end.
    EXPECT_FALSE(same_as_interpreter(copy_words, copy_memory(225, 24, 100)).ok);
    EXPECT_FALSE(same_as_interpreter(copy_words, copy_memory(24, 225, 100)).ok);
    // Backwards from the start: d below r1.
    EXPECT_FALSE(same_as_interpreter(copy_words, copy_memory(-8, 24, 10)).ok);
}

// What the optimised tier compiles (BPFTIME_JIT_DUMP prints the IR it compiled) for the copy:
// vector loads and stores.
TEST(Jit, CountedCopyLoopsAreVectorised) {
    if (available_engines().size() < 2) {
        GTEST_SKIP() << "this build has no JIT";
    }
    const std::string ir = optimised_ir(copy_words);
    EXPECT_NE(ir.find("x i64>"), std::string::npos);
}

} // namespace
} // namespace bpftime::vm::test
