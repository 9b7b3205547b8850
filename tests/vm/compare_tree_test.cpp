// SPDX-License-Identifier: MIT
// Trees of compares of one register with immediates (clang's lowering of a switch, since eBPF
// has no indirect jump), which the JIT turns back into a switch: every engine must take the
// interpreter's way for every value, inside and outside the switch's range, count the same
// instructions and stop on the same budgets.
#include "test_util.hpp"

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace bpftime::vm::test {
namespace {

// A tree of compares of %r4, written as assembly text. Each inner node is one conditional jump
// whose fall-through is its left child; leaves change %r0 and jump to `next`.
struct tree_writer {
    std::mt19937 rng{1};
    std::vector<std::string> ops; // the jumps to choose from
    std::string width;            // "" or "32"
    int imm_lo = 0, imm_hi = 63;  // the immediates' range
    std::string text;             // the tree in program order
    std::string moved;            // a subtree placed before the root (a backward jump)
    int labels = 0;
    int leaves = 0;

    int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

    // A leaf: one of four operations with its own constant.
    std::string leaf() {
        const int n = ++leaves;
        static const char *const forms[] = {"add %r0, ", "xor %r0, ", "mul %r0, ", "sub %r0, "};
        return forms[n % 4] + std::to_string(n * 7919 + 13) + "\nja next\n";
    }

    // A subtree of the given depth; out receives its text, which starts with its root.
    void node(int depth, std::string &out, bool may_move) {
        if (depth == 0) {
            out += leaf();
            return;
        }
        const std::string right = "t" + std::to_string(labels++);
        const std::string &op = ops[static_cast<size_t>(pick(0, static_cast<int>(ops.size()) - 1))];
        out += op + width + " %r4, " + std::to_string(pick(imm_lo, imm_hi)) + ", " + right + "\n";
        node(depth - 1, out, may_move);
        if (may_move && moved.empty() && depth == 2) {
            // This right subtree goes before the program's start: its root is the target of a
            // backward jump, a loop head the switch must keep the budget test of.
            moved = right + ":\n";
            node(depth - 1, moved, false);
            return;
        }
        std::string sub = right + ":\n";
        node(depth - 1, sub, may_move);
        out += sub;
    }
};

// A program that runs the tree for each of the n u64 values in memory, accumulating in %r0.
std::string switch_program(tree_writer &w, int depth, int n) {
    std::string tree;
    w.node(depth, tree, true);
    return "ja start\n" + w.moved +
           "start:\n"
           "mov %r0, 1\nmov %r6, 0\n"
           "loop:\n"
           "jge %r6, " +
           std::to_string(n) +
           ", done\n"
           "mov %r3, %r6\nlsh %r3, 3\nadd %r3, %r1\nldxdw %r4, [%r3+0]\n" +
           tree +
           "next:\n"
           "add %r6, 1\nja loop\n"
           "done:\n"
           "exit";
}

// Every value from lo to hi, and some far outside any tree's range.
std::vector<uint8_t> values(int64_t lo, int64_t hi) {
    std::vector<int64_t> v;
    for (int64_t x = lo; x <= hi; x++) {
        v.push_back(x);
    }
    for (int64_t x : {int64_t{1} << 40, (int64_t{1} << 32) + 5, int64_t{0xffffffff}, INT64_MIN,
                      INT64_MAX, int64_t{-1000}, int64_t{100000}}) {
        v.push_back(x);
    }
    std::vector<uint8_t> mem(v.size() * 8);
    std::memcpy(mem.data(), v.data(), mem.size());
    return mem;
}

// The program on every value, then on budgets around what the run needs.
void check_tree(tree_writer &w, int depth, int64_t lo, int64_t hi) {
    const std::vector<uint8_t> mem = values(lo, hi);
    const std::string text = switch_program(w, depth, static_cast<int>(mem.size() / 8));
    const outcome full = same_as_interpreter(text, mem);
    ASSERT_TRUE(full.ok) << full.error;
    const uint64_t need = full.executed;
    for (uint64_t budget = need - 40; budget <= need + 2; budget++) {
        same_as_interpreter(text, mem, budget);
    }
}

TEST_P(Engine, SignedCompareTreesTakeTheInterpretersWay) {
    tree_writer w;
    w.ops = {"jsgt"};
    check_tree(w, 6, -5, 70);
}

TEST_P(Engine, CompareTreesOfEveryKindOfJumpTakeTheInterpretersWay) {
    for (unsigned seed = 1; seed <= 4; seed++) {
        tree_writer w;
        w.rng.seed(seed);
        w.ops = {"jeq", "jne", "jgt", "jge", "jlt", "jle", "jsgt", "jsge", "jslt", "jsle", "jset"};
        w.imm_lo = -8;
        w.imm_hi = 40;
        check_tree(w, 5, -12, 45);
    }
}

TEST_P(Engine, ThirtyTwoBitCompareTreesLookAtTheLowHalfOnly) {
    tree_writer w;
    w.ops = {"jsgt", "jlt", "jeq", "jsle"};
    w.width = "32";
    w.imm_lo = -20;
    w.imm_hi = 20;
    check_tree(w, 5, -25, 25);
}

TEST_P(Engine, CompareTreesWithImmediatesAtTheEndsOfTheirRange) {
    tree_writer w;
    w.ops = {"jsgt", "jeq"};
    w.imm_lo = INT32_MAX - 30;
    w.imm_hi = INT32_MAX;
    check_tree(w, 4, int64_t{INT32_MAX} - 40, int64_t{INT32_MAX} + 3);
    tree_writer n;
    n.ops = {"jsgt", "jeq"};
    n.width = "32";
    n.imm_lo = INT32_MIN;
    n.imm_hi = INT32_MIN + 30;
    check_tree(n, 4, int64_t{INT32_MIN} - 3, int64_t{INT32_MIN} + 40);
}

TEST_P(Engine, ALoopWhoseOnlyBackwardJumpIsInACompareTreeStopsOnTheBudget) {
    // For 3..10 the tree jumps back to `back`, whose leaves run on into the tree's root again:
    // the only loop head of that loop is a node inside the tree.
    const std::string text = R"(
        mov %r0, 0
        ldxdw %r4, [%r1+0]
        ja start
    back:
        jsgt %r4, 5, b1
        add %r0, 1
        ja next
    b1:
        add %r0, 2
        ja next
    next:
        add %r0, 3
    start:
        jsgt %r4, 10, high
        jsgt %r4, 2, back
        jeq %r4, 0, zero
        add %r0, 5
        exit
    zero:
        add %r0, 6
        exit
    high:
        jsgt %r4, 20, higher
        add %r0, 7
        exit
    higher:
        add %r0, 8
        exit)";
    for (int64_t v : {-1, 0, 1, 2, 3, 6, 10, 11, 20, 21, 1000}) {
        std::vector<uint8_t> mem(8);
        std::memcpy(mem.data(), &v, 8);
        const outcome o = same_as_interpreter(text, mem, 10'000);
        EXPECT_EQ(o.ok, v < 3 || v > 10) << v << ": " << o.error;
    }
}

// The switch is what the optimised tier compiles (BPFTIME_JIT_DUMP prints the IR it compiled):
// a tree of enough compares becomes one, a small one stays compares.
TEST(Jit, CompareTreesBecomeSwitches) {
    auto compiled_ir = [](int depth) {
        tree_writer w;
        w.ops = {"jsgt"};
        return optimised_ir(switch_program(w, depth, 4));
    };
    if (available_engines().size() < 2) {
        GTEST_SKIP() << "this build has no JIT";
    }
    EXPECT_NE(compiled_ir(6).find("switch i64"), std::string::npos);
    EXPECT_EQ(compiled_ir(1).find("switch i64"), std::string::npos);
}

} // namespace
} // namespace bpftime::vm::test
