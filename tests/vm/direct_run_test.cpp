// SPDX-License-Identifier: MIT
// The direct entry (engine::run_direct), on every engine: the same r0, faults, budget and
// instruction count as run(), memory reached without any helper call, a run inside a run on
// the same thread, runs from a signal handler, and runs on many threads that come and go.
#include "test_util.hpp"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

namespace bpftime::vm::test {
namespace {

struct DirectRun : Engine {
    std::unique_ptr<engine> make(const program &prog) {
        auto eng = make_engine(GetParam().kind, prog, GetParam().opts);
        EXPECT_TRUE(eng.ok()) << (eng.ok() ? "" : eng.err().message);
        return eng.ok() ? std::move(*eng) : nullptr;
    }
};

TEST_P(DirectRun, ReturnsWhatRunReturns) {
    const program prog = assembled(input_byte_sum);
    auto eng = make(prog);
    ASSERT_NE(eng, nullptr);
    std::vector<uint8_t> mem{1, 2, 3, 250};
    const run_status st = eng->run_direct(mem.data(), mem.size());
    ASSERT_TRUE(st.ok()) << st.fault->message;
    EXPECT_EQ(st.r0, 256u);
    auto r = eng->run(mem.data(), mem.size());
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, st.r0);
}

TEST_P(DirectRun, AFaultNamesItsInstructionAndTheNextRunsGoOn) {
    const program bad = assembled(past_input_read);
    const program good = assembled(input_byte_sum);
    auto bad_eng = make(bad);
    auto good_eng = make(good);
    ASSERT_NE(bad_eng, nullptr);
    ASSERT_NE(good_eng, nullptr);
    std::vector<uint8_t> mem(16, 1);
    for (int round = 0; round < 3; round++) {
        const run_status st = bad_eng->run_direct(mem.data(), mem.size());
        ASSERT_FALSE(st.ok());
        EXPECT_EQ(st.fault->code, fault_out_of_bounds);
        EXPECT_NE(st.fault->message.find("instruction 0 (ldxdw %r0, [%r1+4096])"),
                  std::string::npos)
            << st.fault->message;
        EXPECT_NE(st.fault->message.find("outside the memory the program may access"),
                  std::string::npos)
            << st.fault->message;
        auto r = bad_eng->run(mem.data(), mem.size());
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.err().message, st.fault->message);
        // The same thread's next run starts clean.
        const run_status next = good_eng->run_direct(mem.data(), mem.size());
        ASSERT_TRUE(next.ok()) << next.fault->message;
        EXPECT_EQ(next.r0, 16u);
    }
}

TEST_P(DirectRun, TheBudgetStopsALoop) {
    if (GetParam().opts.unchecked) {
        GTEST_SKIP() << "unchecked code has no budget";
    }
    const program prog = assembled("mov %r0, 0\nloop:\nadd %r0, 1\nja loop\n");
    auto eng = make(prog);
    ASSERT_NE(eng, nullptr);
    run_options ro;
    ro.instruction_budget = 1000;
    const run_status st = eng->run_direct(nullptr, 0, ro);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.fault->code, fault_budget);
    EXPECT_NE(st.fault->message.find("the instruction budget of 1000 is exhausted"),
              std::string::npos)
        << st.fault->message;
}

// A program without loops runs at most its length: the JIT's direct entry tests the budget
// against that once and runs code without budget tests; less budget than that still faults.
TEST_P(DirectRun, TheBudgetStopsAStraightProgramLongerThanIt) {
    if (GetParam().opts.unchecked) {
        GTEST_SKIP() << "unchecked code has no budget";
    }
    const program prog = assembled("mov %r0, 1\nadd %r0, 2\nadd %r0, 3\nexit\n");
    auto eng = make(prog);
    ASSERT_NE(eng, nullptr);
    for (int round = 0; round < 2; round++) {
        run_options ro;
        uint64_t executed = 0;
        ro.executed = &executed;
        ro.instruction_budget = 4;
        const run_status enough = eng->run_direct(nullptr, 0, ro);
        ASSERT_TRUE(enough.ok()) << enough.fault->message;
        EXPECT_EQ(enough.r0, 6u);
        EXPECT_EQ(executed, 4u);
        for (uint64_t budget : {3, 1}) {
            ro.instruction_budget = budget;
            const run_status st = eng->run_direct(nullptr, 0, ro);
            ASSERT_FALSE(st.ok()) << "budget " << budget;
            EXPECT_EQ(st.fault->code, fault_budget);
            EXPECT_NE(st.fault->message.find("the instruction budget of " + std::to_string(budget) +
                                             " is exhausted"),
                      std::string::npos)
                << st.fault->message;
        }
    }
}

TEST_P(DirectRun, CountsTheInstructionsRunCounts) {
    const program prog = assembled(input_byte_sum);
    auto eng = make(prog);
    ASSERT_NE(eng, nullptr);
    std::vector<uint8_t> mem(10, 3);
    uint64_t direct_count = 0, run_count = 0;
    run_options ro;
    ro.executed = &direct_count;
    ASSERT_TRUE(eng->run_direct(mem.data(), mem.size(), ro).ok());
    ro.executed = &run_count;
    ASSERT_TRUE(eng->run(mem.data(), mem.size(), ro).ok());
    // 3 before the loop, 6 per byte, the last test and exit.
    EXPECT_EQ(direct_count, 3u + 6u * 10u + 2u);
    EXPECT_EQ(direct_count, run_count);
}

// The input holds the address of a host word the run's regions allow: the program reads it
// without calling any helper (the JIT's slow-path check sets up the run's regions itself).
TEST_P(DirectRun, ReachesTheRunsRegionsWithoutAHelperCall) {
    const program prog = assembled("ldxdw %r2, [%r1]\nldxdw %r0, [%r2]\nexit\n");
    auto eng = make(prog);
    ASSERT_NE(eng, nullptr);
    const uint64_t word = 0x1234567890;
    std::vector<uint8_t> mem(8);
    const uint64_t addr = reinterpret_cast<uint64_t>(&word);
    std::memcpy(mem.data(), &addr, sizeof addr);
    const memory_region region{addr, sizeof word, false};
    run_options ro;
    ro.regions = {&region, 1};
    const run_status st = eng->run_direct(mem.data(), mem.size(), ro);
    ASSERT_TRUE(st.ok()) << st.fault->message;
    EXPECT_EQ(st.r0, word);
    // Without the region the same read fails, and names the address.
    const run_status refused = eng->run_direct(mem.data(), mem.size());
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.fault->code, fault_out_of_bounds);
    EXPECT_NE(refused.fault->message.find("instruction 1"), std::string::npos)
        << refused.fault->message;
}

// The engine a helper runs from inside a run (a probe a helper met), set by the test.
engine *inner_engine = nullptr;
run_status inner_status;
uint64_t helper_run_inner(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    inner_status = inner_engine->run_direct(nullptr, 0);
    return inner_status.ok() ? inner_status.r0 : 0;
}

load_options with_inner_run() {
    static helper_registry reg = [] {
        helper_registry r;
        EXPECT_TRUE(r.register_helper(140, "run_inner", helper_run_inner).ok());
        return r;
    }();
    load_options lo;
    lo.helpers = &reg;
    return lo;
}

TEST_P(DirectRun, ARunInsideARunKeepsTheOuterRunsFrame) {
    auto outer_insns = assemble("stdw [%r10-8], 77\ncall 140\nldxdw %r1, [%r10-8]\n"
                                "add %r0, %r1\nexit\n");
    auto inner_insns = assemble("stdw [%r10-8], 99\nldxdw %r0, [%r10-8]\nsub %r0, 94\nexit\n");
    ASSERT_TRUE(outer_insns.ok() && inner_insns.ok());
    auto outer = program::load(*outer_insns, with_inner_run());
    auto inner = program::load(*inner_insns);
    ASSERT_TRUE(outer.ok()) << outer.err().message;
    ASSERT_TRUE(inner.ok()) << inner.err().message;
    auto outer_eng = make(*outer);
    auto inner_eng = make(*inner);
    ASSERT_NE(outer_eng, nullptr);
    ASSERT_NE(inner_eng, nullptr);
    inner_engine = inner_eng.get();
    const run_status st = outer_eng->run_direct(nullptr, 0);
    inner_engine = nullptr;
    ASSERT_TRUE(inner_status.ok()) << inner_status.fault->message;
    EXPECT_EQ(inner_status.r0, 5u);
    ASSERT_TRUE(st.ok()) << st.fault->message;
    EXPECT_EQ(st.r0, 82u); // 77 from the outer frame, 5 from the inner run
}

// Runs from a signal handler on the thread whose runs it interrupts: in the middle of a run,
// and of a run inside a run (which names a state of its own as the thread's while it runs).
engine *signal_engine = nullptr;
volatile sig_atomic_t signal_runs = 0;
volatile sig_atomic_t signal_wrong = 0;
void run_in_handler(int) {
    const run_status st = signal_engine->run_direct(nullptr, 0);
    signal_runs = signal_runs + 1;
    if (!st.ok() || st.r0 != 5050) {
        signal_wrong = signal_wrong + 1;
    }
}

TEST_P(DirectRun, RunsFromASignalHandlerInsideRunsAndRunsInsideRunsGetTheirOwnState) {
    // Outer: 64 helper calls, each running the inner program inside the run, summed with the
    // outer frame's word; inner and the handler's: a loop summing 1..100 in the frame.
    auto outer_insns = assemble("stdw [%r10-8], 0\nmov %r6, 0\nloop:\njge %r6, 64, done\n"
                                "call 140\nldxdw %r1, [%r10-8]\nadd %r1, %r0\n"
                                "stxdw [%r10-8], %r1\nadd %r6, 1\nja loop\n"
                                "done:\nldxdw %r0, [%r10-8]\nexit\n");
    const char *sum_text = "stdw [%r10-16], 0\nmov %r1, 1\nloop:\njgt %r1, 100, done\n"
                           "ldxdw %r2, [%r10-16]\nadd %r2, %r1\nstxdw [%r10-16], %r2\n"
                           "add %r1, 1\nja loop\ndone:\nldxdw %r0, [%r10-16]\nexit\n";
    ASSERT_TRUE(outer_insns.ok()) << outer_insns.err().message;
    auto outer = program::load(*outer_insns, with_inner_run());
    ASSERT_TRUE(outer.ok()) << outer.err().message;
    const program sum = assembled(sum_text);
    auto outer_eng = make(*outer);
    auto inner_eng = make(sum);
    auto handler_eng = make(sum);
    ASSERT_NE(outer_eng, nullptr);
    ASSERT_NE(inner_eng, nullptr);
    ASSERT_NE(handler_eng, nullptr);
    inner_engine = inner_eng.get();
    signal_engine = handler_eng.get();
    signal_runs = 0;
    signal_wrong = 0;
    struct sigaction sa = {};
    struct sigaction old = {};
    sa.sa_handler = run_in_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
    const pthread_t runner = pthread_self();
    std::atomic<bool> stop{false};
    // Bounded both ways: the sender stops when the runs end, and the runs end once enough
    // handler runs met them (at least 400 runs, at most 10 s on a loaded machine).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::thread sender([&] {
        while (!stop.load() && std::chrono::steady_clock::now() < deadline) {
            pthread_kill(runner, SIGUSR2);
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    });
    int wrong = 0;
    for (int n = 0; n < 400 || (signal_runs < 200 && std::chrono::steady_clock::now() < deadline);
         n++) {
        const run_status st = outer_eng->run_direct(nullptr, 0);
        if (!st.ok() || st.r0 != 64 * 5050) {
            wrong++;
        }
    }
    stop.store(true);
    sender.join();
    ASSERT_EQ(sigaction(SIGUSR2, &old, nullptr), 0);
    inner_engine = nullptr;
    signal_engine = nullptr;
    EXPECT_EQ(wrong, 0);
    EXPECT_GT(signal_runs, 0);
    EXPECT_EQ(signal_wrong, 0) << "of " << signal_runs << " runs in the handler";
    // The thread's own state is its own again: a run after all that.
    const run_status after = inner_eng->run_direct(nullptr, 0);
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after.r0, 5050u);
}

TEST_P(DirectRun, ThreadsThatComeAndGoEachRunOnTheirOwn) {
    const program prog = assembled(input_byte_sum);
    auto eng = make(prog);
    ASSERT_NE(eng, nullptr);
    for (int wave = 0; wave < 3; wave++) {
        std::vector<std::thread> threads;
        std::vector<int> wrong(8, 0);
        for (int i = 0; i < 8; i++) {
            threads.emplace_back([&, i] {
                std::vector<uint8_t> mem(static_cast<size_t>(i + 1), static_cast<uint8_t>(i));
                for (int n = 0; n < 2000; n++) {
                    const run_status st = eng->run_direct(mem.data(), mem.size());
                    if (!st.ok() || st.r0 != static_cast<uint64_t>(i) * (i + 1)) {
                        wrong[static_cast<size_t>(i)]++;
                    }
                }
            });
        }
        for (auto &t : threads) {
            t.join();
        }
        for (int i = 0; i < 8; i++) {
            EXPECT_EQ(wrong[static_cast<size_t>(i)], 0) << "thread " << i;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllEngines, DirectRun, ::testing::ValuesIn(engine_variants()),
                         engine_test_name);

// The run's input, length, options and engine go to the thread's state only for the runtime:
// the optimised tier leaves their stores out of a run that calls nothing, and keeps them in one
// whose check may call rt_check (ReachesTheRunsRegionsWithoutAHelperCall shows they are there
// when it does).
TEST(DirectRunCode, ARunThatCallsNothingStoresNothingForTheRuntime) {
    auto engines = available_engines();
    if (std::find(engines.begin(), engines.end(), engine_kind::jit) == engines.end()) {
        GTEST_SKIP() << "this build has no jit (BPFTIME_ENABLE_JIT=OFF)";
    }
    // In the direct entry (the run entry a program without loops has too keeps its budget
    // tests, and so its runtime calls, for runs with too little budget).
    auto runtime_stores = [](const std::string &ir) {
        const size_t start = ir.find("_direct(");
        EXPECT_NE(start, std::string::npos) << ir;
        const size_t end = ir.find("\n}\n", start);
        size_t n = 0;
        std::istringstream lines(ir.substr(start, end - start));
        for (std::string line; std::getline(lines, line);) {
            if (line.find(" store ") != std::string::npos &&
                line.find("!bpftime.lazy") != std::string::npos) {
                n++;
            }
        }
        return n;
    };
    EXPECT_EQ(runtime_stores(optimised_ir("mov %r0, 7\nexit\n")), 0u);
    EXPECT_EQ(runtime_stores(optimised_ir("ldxdw %r2, [%r1]\nldxdw %r0, [%r2]\nexit\n")), 4u);
}

// Unchecked code (no memory checks, no budget) has a direct entry of its own.
TEST(DirectRunUnchecked, ReturnsWhatRunReturns) {
    auto engines = available_engines();
    if (std::find(engines.begin(), engines.end(), engine_kind::jit) == engines.end()) {
        GTEST_SKIP() << "this build has no jit (BPFTIME_ENABLE_JIT=OFF)";
    }
    const program prog = assembled(input_byte_sum);
    auto eng =
        make_engine(engine_kind::jit, prog, {.unchecked = true, .tier = jit_tier::optimised});
    ASSERT_TRUE(eng.ok()) << eng.err().message;
    std::vector<uint8_t> mem(100, 7);
    uint64_t count = 1;
    run_options ro;
    ro.executed = &count;
    const run_status st = (*eng)->run_direct(mem.data(), mem.size(), ro);
    ASSERT_TRUE(st.ok()) << st.fault->message;
    EXPECT_EQ(st.r0, 700u);
    EXPECT_EQ(count, 0u); // unchecked code counts nothing
    auto r = (*eng)->run(mem.data(), mem.size());
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, st.r0);
}

} // namespace
} // namespace bpftime::vm::test
