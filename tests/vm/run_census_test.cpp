// SPDX-License-Identifier: MIT
// take_run_census and runs_ended with every engine: a run in progress on another thread is in
// the census until that run ends, whether its thread then idles, starts another run or exits;
// the caller's own thread and threads between runs are not in it.
#include "test_util.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>

namespace bpftime::vm::test {
namespace {

std::atomic<int> entered{0};
std::atomic<int> released{0};

// Blocks the run that calls it until the test releases it: the nth call returns once
// `released` reaches n.
uint64_t helper_block(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    const int me = ++entered;
    while (released.load() < me) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return 7;
}

struct RunCensus : ::testing::TestWithParam<engine_variant> {
    helper_registry reg;
    std::optional<program> prog;
    std::unique_ptr<engine> eng;

    void SetUp() override {
        entered = 0;
        released = 0;
        ASSERT_TRUE(reg.register_helper(200, "block", helper_block).ok());
        load_options lo;
        lo.helpers = &reg;
        auto p = program::load({insn(op_call, 0, 0, 0, 200), exit_insn()}, lo);
        ASSERT_TRUE(p.ok()) << p.err().message;
        prog.emplace(std::move(*p));
        auto e = make_engine(GetParam().kind, *prog, GetParam().opts);
        ASSERT_TRUE(e.ok()) << e.err().message;
        eng = std::move(*e);
    }

    void wait_entered(int n) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (entered.load() < n) {
            ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the run did not start";
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
};

TEST_P(RunCensus, NothingRunningNothingToWaitFor) {
    released = 1000;
    ASSERT_EQ(*eng->run(nullptr, 0), 7u); // this thread has run, and is between runs
    std::thread other([&] { (void)eng->run(nullptr, 0); });
    other.join();
    run_census census = take_run_census();
    EXPECT_TRUE(census.runs.empty());
    EXPECT_TRUE(runs_ended(census));
}

TEST_P(RunCensus, ARunInProgressIsWaitedForUntilItEnds) {
    std::atomic<bool> idle{false};
    std::thread runner([&] {
        (void)eng->run(nullptr, 0);
        idle = true;
        while (idle.load()) { // stays alive, between runs
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    wait_entered(1);
    run_census census = take_run_census();
    EXPECT_EQ(census.runs.size(), 1u);
    EXPECT_FALSE(runs_ended(census));
    released = 1;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!runs_ended(census)) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the run never ended";
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(census.runs.empty());
    while (!idle.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(take_run_census().runs.empty()) << "a thread between runs is not running";
    idle = false;
    runner.join();
}

TEST_P(RunCensus, AThreadThatStartedAnotherRunEndedTheOne) {
    std::atomic<int> runs{0};
    std::thread runner([&] {
        (void)eng->run(nullptr, 0);
        runs++;
        (void)eng->run(nullptr, 0); // blocks again until released a second time
        runs++;
    });
    wait_entered(1);
    run_census census = take_run_census();
    ASSERT_EQ(census.runs.size(), 1u);
    // The first run ends; the second waits in its helper.
    released = 1;
    wait_entered(2);
    EXPECT_EQ(runs.load(), 1);
    EXPECT_TRUE(runs_ended(census)) << "the census's run ended; the thread's next one is not it";
    EXPECT_EQ(take_run_census().runs.size(), 1u) << "the second run is in a new census";
    released = 2;
    runner.join();
}

TEST_P(RunCensus, AThreadThatExitedIsNotWaitedFor) {
    std::thread runner([&] { (void)eng->run(nullptr, 0); });
    wait_entered(1);
    run_census census = take_run_census();
    ASSERT_EQ(census.runs.size(), 1u);
    released = 1;
    runner.join();
    EXPECT_TRUE(runs_ended(census));
}

// A host synchronising inside a run of its own thread cannot wait for that run.
uint64_t helper_census(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    return take_run_census().runs.size();
}

TEST_P(RunCensus, TheCallersOwnRunIsLeftOut) {
    ASSERT_TRUE(reg.register_helper(201, "census", helper_census).ok());
    load_options lo;
    lo.helpers = &reg;
    auto p = program::load({insn(op_call, 0, 0, 0, 201), exit_insn()}, lo);
    ASSERT_TRUE(p.ok()) << p.err().message;
    auto e = make_engine(GetParam().kind, *p, GetParam().opts);
    ASSERT_TRUE(e.ok()) << e.err().message;
    auto r = (*e)->run(nullptr, 0);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 0u);
}

INSTANTIATE_TEST_SUITE_P(All, RunCensus, ::testing::ValuesIn(engine_variants()), engine_test_name);

} // namespace
} // namespace bpftime::vm::test
