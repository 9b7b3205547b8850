// SPDX-License-Identifier: MIT
// What is particular to the JIT: it is the default, its code pages are never writable and
// executable at once, its unchecked mode, its instruction counts, and compiling on threads.
#include "test_util.hpp"

#include <bpftime/vm/assembler.hpp>

#include <fstream>
#include <numeric>
#include <sstream>
#include <thread>

namespace bpftime::vm::test {
namespace {

bool have_jit() {
    auto engines = available_engines();
    return std::find(engines.begin(), engines.end(), engine_kind::jit) != engines.end();
}

#define REQUIRE_JIT()                                                                              \
    if (!have_jit()) {                                                                             \
        GTEST_SKIP() << "this build has no jit (BPFTIME_ENABLE_JIT=OFF)";                          \
    }

// Sums the bytes of the input memory, one local call per byte.
const char *sum_bytes = R"(
    mov %r6, %r1
    mov %r7, %r2
    mov %r8, 0
loop:
    jeq %r7, 0, done
    ldxb %r1, [%r6]
    call local byte_of
    add %r8, %r0
    add %r6, 1
    sub %r7, 1
    ja loop
done:
    mov %r0, %r8
    exit
byte_of:
    mov %r0, %r1
    exit
)";

TEST(Jit, IsTheDefaultEngine) {
    REQUIRE_JIT();
    EXPECT_EQ(available_engines().front(), engine_kind::jit);
}

TEST(Jit, CodePagesAreNeverWritableAndExecutable) {
    REQUIRE_JIT();
    program prog = assembled(sum_bytes);
    std::vector<std::unique_ptr<engine>> engines;
    for (int i = 0; i < 20; i++) {
        auto eng = make_engine(engine_kind::jit, prog);
        ASSERT_TRUE(eng.ok()) << eng.err().message;
        engines.push_back(std::move(*eng));
    }
    std::ifstream maps("/proc/self/maps");
    std::string line;
    int lines = 0;
    while (std::getline(maps, line)) {
        lines++;
        std::istringstream fields(line);
        std::string range, perms;
        fields >> range >> perms;
        EXPECT_FALSE(perms.find('w') != std::string::npos && perms.find('x') != std::string::npos)
            << "writable and executable mapping: " << line;
    }
    EXPECT_GT(lines, 0);
}

TEST(Jit, UncheckedModeComputesTheSame) {
    REQUIRE_JIT();
    program prog = assembled(sum_bytes);
    std::vector<uint8_t> mem(1000);
    uint64_t want = 0;
    for (size_t i = 0; i < mem.size(); i++) {
        mem[i] = static_cast<uint8_t>(i * 7);
        want += mem[i];
    }
    for (bool unchecked : {false, true}) {
        auto eng = make_engine(engine_kind::jit, prog, {.unchecked = unchecked});
        ASSERT_TRUE(eng.ok()) << eng.err().message;
        auto r = (*eng)->run(mem.data(), mem.size());
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, want) << (unchecked ? "unchecked" : "checked");
    }
}

TEST(Jit, SubprogramsThatNeverNameTheFramePointerHaveNoFrame) {
    REQUIRE_JIT();
    // reader(p, off) never names r10 nor calls a helper, so it gets no frame of its own: it may
    // read its caller's frame through the pointer it is given, but below that frame (where its
    // own frame would be, holding what an earlier call left) is nobody's and faults. Main
    // stores 5, and a deeper call first leaves 77 in the frame below main's.
    program prog = assembled(R"(
        stdw [%r10-8], 5
        mov %r6, %r1
        call local leave
        mov %r1, %r10
        add %r1, -8
        mov %r2, %r6
        call local reader
        exit
    leave:
        stdw [%r10-8], 77
        mov %r0, 0
        exit
    reader:
        add %r1, %r2
        ldxdw %r0, [%r1]
        exit
    )");
    for (bool unchecked : {false, true}) {
        auto eng = make_engine(engine_kind::jit, prog, {.unchecked = unchecked});
        ASSERT_TRUE(eng.ok()) << eng.err().message;
        auto r = (*eng)->run(reinterpret_cast<void *>(0), 0);
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, 5u) << "the caller's frame, through the pointer it passed";
    }
    auto eng = make_engine(engine_kind::jit, prog);
    ASSERT_TRUE(eng.ok()) << eng.err().message;
    // r1 = -512: main's r10 - 8 - 512, the slot leave() wrote 77 into.
    auto r = (*eng)->run(reinterpret_cast<void *>(static_cast<uintptr_t>(-512)), 0);
    ASSERT_FALSE(r.ok()) << "read " << *r;
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    EXPECT_NE(r.err().message.find("(ldxdw %r0, [%r1]): read of 8 bytes"), std::string::npos)
        << r.err().message;
}

// The engine helper_run_again runs (the test's own), from inside a run of it.
engine *nested_engine = nullptr;

uint64_t helper_run_again(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    auto r = nested_engine->run(nullptr, 0);
    return r.ok() ? *r : 1000;
}

TEST(Jit, ARunInsideARunOnTheSameThreadKeepsBothApart) {
    REQUIRE_JIT();
    // The program keeps 40 in its frame and a pointer to its input in r6 across a helper that
    // runs the same program again (with no input, so it does not go deeper, and with its own
    // frame value 2): the inner run must not take the outer run's stack or state.
    helper_registry reg;
    ASSERT_TRUE(reg.register_helper(300, "run_again", helper_run_again).ok());
    auto insns = assemble(R"(
        mov %r6, %r1
        stdw [%r10-8], 40
        jeq %r2, 0, inner
        call 300
        ldxdw %r1, [%r10-8]
        add %r0, %r1
        ldxb %r1, [%r6]
        add %r0, %r1
        exit
    inner:
        stdw [%r10-8], 2
        ldxdw %r0, [%r10-8]
        exit
    )");
    ASSERT_TRUE(insns.ok()) << insns.err().message;
    auto prog = program::load(*insns, {.helpers = &reg});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto eng = make_engine(engine_kind::jit, *prog);
    ASSERT_TRUE(eng.ok()) << eng.err().message;
    nested_engine = eng->get();
    uint8_t input = 100;
    for (int i = 0; i < 3; i++) {
        auto r = (*eng)->run(&input, 1);
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, 2u + 40u + 100u) << "the inner run's r0, the outer frame's 40, the input";
    }
    nested_engine = nullptr;
}

TEST(Jit, CountsExecutedInstructionsLikeTheInterpreter) {
    REQUIRE_JIT();
    program prog = assembled(sum_bytes);
    std::vector<uint8_t> mem(37, 1);
    uint64_t counts[2] = {};
    int i = 0;
    for (engine_kind kind : {engine_kind::interpreter, engine_kind::jit}) {
        auto eng = make_engine(kind, prog);
        ASSERT_TRUE(eng.ok()) << eng.err().message;
        run_options ro;
        ro.executed = &counts[i++];
        auto r = (*eng)->run(mem.data(), mem.size(), ro);
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, 37u);
    }
    EXPECT_EQ(counts[0], counts[1]);
    EXPECT_EQ(counts[0], 3 + 37 * 9 + 3u);
}

TEST(Jit, WriteLoopPastTheEndFaultsAndKeepsWhatItWrote) {
    REQUIRE_JIT();
    // Writes 0xaa to mem[0..len], one byte too many.
    program prog = assembled(R"(
        mov %r3, 0
    loop:
        stb [%r1], 0xaa
        add %r1, 1
        add %r3, 1
        jle %r3, %r2, loop
        exit
    )");
    auto eng = make_engine(engine_kind::jit, prog);
    ASSERT_TRUE(eng.ok()) << eng.err().message;
    std::vector<uint8_t> mem(64, 0);
    auto r = (*eng)->run(mem.data(), 63);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    EXPECT_NE(r.err().message.find("instruction 1 (stb [%r1], 170): write of 1 bytes"),
              std::string::npos)
        << r.err().message;
    EXPECT_EQ(std::count(mem.begin(), mem.begin() + 63, 0xaa), 63);
    EXPECT_EQ(mem[63], 0) << "the byte past the input was written";
}

TEST(Jit, ProgramsCompileAndRunOnSeveralThreads) {
    REQUIRE_JIT();
    program prog = assembled(sum_bytes);
    std::vector<std::thread> threads;
    std::atomic<int> good{0};
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 10; i++) {
                auto eng = make_engine(engine_kind::jit, prog);
                if (!eng) {
                    return;
                }
                std::vector<uint8_t> mem(static_cast<size_t>(t + i), 2);
                auto r = (*eng)->run(mem.data(), mem.size());
                if (r && *r == 2u * mem.size()) {
                    good++;
                }
            }
        });
    }
    for (auto &th : threads) {
        th.join();
    }
    EXPECT_EQ(good.load(), 40);
}

TEST(Jit, TieredCodeGivesTheSameResultsWhileItSwitchesTiers) {
    REQUIRE_JIT();
    program prog = assembled(sum_bytes);
    std::vector<uint8_t> mem(300, 3);
    for (int round = 0; round < 3; round++) {
        auto eng = make_engine(engine_kind::jit, prog, {.tier = jit_tier::tiered});
        ASSERT_TRUE(eng.ok()) << eng.err().message;
        // Runs before, during and after the optimised code replaces the baseline code. The
        // last round destroys the engine while its background compile may still be running.
        for (int i = 0; i < (round == 2 ? 1 : 3000); i++) {
            auto r = (*eng)->run(mem.data(), mem.size());
            ASSERT_TRUE(r.ok()) << r.err().message;
            ASSERT_EQ(*r, 900u);
        }
    }
}

TEST(Jit, TierNames) {
    for (jit_tier t : {jit_tier::tiered, jit_tier::baseline, jit_tier::optimised}) {
        EXPECT_EQ(parse_jit_tier(jit_tier_name(t)), t);
    }
    EXPECT_FALSE(parse_jit_tier("fast").has_value());
}

TEST(Jit, LargeProgramsCompile) {
    REQUIRE_JIT();
    // 20,000 dependent additions with branches every 100 instructions.
    std::string text = "mov %r0, 0\n";
    for (int i = 0; i < 20000; i++) {
        text += i % 100 == 99 ? "jgt %r0, 0x7fffffff, out\n" : "add %r0, 3\n";
    }
    text += "out:\nexit\n";
    program prog = assembled(text);
    auto eng = make_engine(engine_kind::jit, prog);
    ASSERT_TRUE(eng.ok()) << eng.err().message;
    auto r = (*eng)->run(nullptr, 0);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 3u * (20000 - 200));
}

// Programs larger than the optimised tier takes (it compiles in time that grows faster than
// the program) keep baseline code: the tiered engine does not recompile them and an engine
// asked for the optimised tier gets baseline code, with the same results.
TEST(Jit, ProgramsTooLargeForTheOptimisedTierKeepBaselineCode) {
    REQUIRE_JIT();
    // n loops in a row, each copying 64 bytes one at a time and summing them.
    auto loops = [](int n) {
        std::string text = "mov %r0, 0\n";
        for (int k = 0; k < n; k++) {
            const std::string l = std::to_string(k);
            text += "mov %r4, 0\nl" + l + ":\njge %r4, 64, d" + l +
                    "\nmov %r5, %r1\nadd %r5, %r4\nldxb %r6, [%r5+0]\nstxb [%r5+64], %r6\n"
                    "add %r0, %r6\nadd %r4, 1\nja l" +
                    l + "\nd" + l + ":\n";
        }
        return text + "exit\n";
    };
    // The baseline tier keeps each eBPF function an LLVM function of its own; the optimised
    // tier inlines them into the entry.
    const std::string baseline_mark = "define internal fastcc";
    EXPECT_EQ(optimised_ir(loops(10)).find(baseline_mark), std::string::npos);
    EXPECT_NE(optimised_ir(loops(300)).find(baseline_mark), std::string::npos);
    const program big = assembled(loops(300));
    for (jit_tier tier : {jit_tier::optimised, jit_tier::tiered}) {
        auto eng = make_engine(engine_kind::jit, big, {.tier = tier});
        ASSERT_TRUE(eng.ok()) << eng.err().message;
        std::vector<uint8_t> mem(128);
        std::iota(mem.begin(), mem.end(), uint8_t{0});
        auto r = (*eng)->run(mem.data(), mem.size());
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, 300u * (63 * 64 / 2));
    }
}

} // namespace
} // namespace bpftime::vm::test
