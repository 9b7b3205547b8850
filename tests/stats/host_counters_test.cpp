// SPDX-License-Identifier: MIT
// Run counters per host process, with real processes on one segment: each host's share is
// exact and listed under its pid, the link's totals are their sum and keep the counts of
// processes that exited (also when their records go to other processes), budget stops and run
// time are counted as hosts see them.
#include <bpftime/attach/attach.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace bpftime {
namespace {

using store::segment;

struct HostCounters : ::testing::Test {
    std::string name;
    std::shared_ptr<segment> seg;
    uint32_t link = 0;

    void SetUp() override {
        name = "bpftime-host-counters-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)segment::remove(name);
        auto s = segment::open(name, {.size = 8 << 20});
        ASSERT_TRUE(s.ok()) << s.err().message;
        seg = *s;
        link = make_link("mov %r0, 7\nexit\n", "h");
    }
    void TearDown() override { (void)segment::remove(name); }

    uint32_t make_link(const std::string &text, const std::string &hook) {
        auto insns = vm::assemble(text);
        EXPECT_TRUE(insns.ok());
        auto p = seg->create_program("p", 0, "", *insns, {});
        auto t = p ? seg->create_target("t", attach_type_test, hook) : p;
        auto l = t ? seg->create_link("l", *p, *t, true) : t;
        EXPECT_TRUE(l.ok()) << l.err().message;
        return l.ok() ? *l : 0;
    }

    store::link_info info(uint32_t id) {
        auto l = seg->link(id);
        EXPECT_TRUE(l.ok());
        return l.ok() ? *l : store::link_info{};
    }

    std::vector<store::link_host_state> hosts(uint32_t id) {
        auto all = seg->link_host_states();
        EXPECT_TRUE(all.ok());
        return all.ok() && all->count(id) ? all->at(id) : std::vector<store::link_host_state>{};
    }
};

// A host process: instantiates over the segment, triggers hook `runs` times, tells the parent
// through `ready` and waits for a byte on `go` before it exits.
struct host_process {
    pid_t pid = -1;
    int ready[2] = {-1, -1}, go[2] = {-1, -1};

    static host_process start(const std::string &name, const std::string &hook, uint64_t runs) {
        host_process h;
        EXPECT_EQ(pipe(h.ready), 0);
        EXPECT_EQ(pipe(h.go), 0);
        h.pid = fork();
        if (h.pid == 0) {
            auto s = segment::open(name, {.create = false, .wait_ms = 5000});
            if (!s) {
                _exit(2);
            }
            attach_manager mgr(*s);
            auto impl = std::make_unique<callable_attach_impl>();
            callable_attach_impl &hooks = *impl;
            if (!mgr.register_attach_impl(attach_type_test, std::move(impl)) ||
                !mgr.instantiate()) {
                _exit(3);
            }
            for (uint64_t i = 0; i < runs; i++) {
                hooks.trigger(hook, nullptr, 0);
            }
            char c = 1;
            if (write(h.ready[1], &c, 1) != 1 || read(h.go[0], &c, 1) != 1) {
                _exit(4);
            }
            _exit(0);
        }
        char c = 0;
        EXPECT_EQ(read(h.ready[0], &c, 1), 1) << "host process did not get ready";
        return h;
    }

    int finish() {
        char c = 1;
        (void)!write(go[1], &c, 1);
        int st = 0;
        waitpid(pid, &st, 0);
        for (int fd : {ready[0], ready[1], go[0], go[1]}) {
            close(fd);
        }
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    }
};

TEST_F(HostCounters, EachProcessCountsItsShareAndTotalsAddUp) {
    auto a = host_process::start(name, "h", 300);
    auto b = host_process::start(name, "h", 1200);
    auto states = hosts(link);
    ASSERT_EQ(states.size(), 2u);
    for (const auto &s : states) {
        EXPECT_FALSE(s.failed);
        EXPECT_EQ(s.runs, s.pid == a.pid ? 300u : 1200u) << "pid " << s.pid;
        EXPECT_EQ(s.faults, 0u);
    }
    EXPECT_EQ(info(link).runs, 1500u);
    EXPECT_EQ(a.finish(), 0);
    EXPECT_EQ(b.finish(), 0);
    // The processes are gone: no longer listed, their runs still in the totals.
    EXPECT_TRUE(hosts(link).empty());
    EXPECT_EQ(info(link).runs, 1500u);
    // A new host takes a record of a process that exited: it starts from 0, totals keep all.
    auto c = host_process::start(name, "h", 5);
    states = hosts(link);
    ASSERT_EQ(states.size(), 1u);
    EXPECT_EQ(states[0].pid, c.pid);
    EXPECT_EQ(states[0].runs, 5u);
    EXPECT_EQ(info(link).runs, 1505u);
    EXPECT_EQ(c.finish(), 0);
}

TEST_F(HostCounters, ThreadsAndAForkedChildCountExactly) {
    // A host's threads each add to a stripe of their own while there is one (six), the others
    // with locked adds, and a stripe goes back when its thread exits; a child forked by the host
    // runs its parent's programs into the parent's record with locked adds. Every run counts
    // once: the main thread 1,000,000 runs while a forked child runs as many, then 3 waves of 10
    // threads (the later waves reuse the stripes of the first), each 20,000 runs.
    constexpr int waves = 3, threads = 10, per_thread = 20000, main_runs = 1000000,
                  child_runs = 1000000;
    int ready[2], go[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    pid_t host = fork();
    if (host == 0) {
        auto s = segment::open(name, {.create = false, .wait_ms = 5000});
        if (!s) {
            _exit(2);
        }
        attach_manager mgr(*s);
        auto impl = std::make_unique<callable_attach_impl>();
        callable_attach_impl &hooks = *impl;
        if (!mgr.register_attach_impl(attach_type_test, std::move(impl)) || !mgr.instantiate()) {
            _exit(3);
        }
        hooks.trigger("h", nullptr, 0); // the main thread counts too: one run
        pid_t child = fork();
        if (child == 0) {
            for (int i = 0; i < child_runs; i++) {
                hooks.trigger("h", nullptr, 0);
            }
            _exit(0);
        }
        // The main thread's stripe is the one the child inherited: both count at once.
        for (int i = 0; i < main_runs; i++) {
            hooks.trigger("h", nullptr, 0);
        }
        for (int w = 0; w < waves; w++) {
            std::vector<std::thread> pool;
            for (int t = 0; t < threads; t++) {
                pool.emplace_back([&] {
                    for (int i = 0; i < per_thread; i++) {
                        hooks.trigger("h", nullptr, 0);
                    }
                });
            }
            for (auto &t : pool) {
                t.join();
            }
        }
        int st = 0;
        if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            _exit(5);
        }
        char c = 1;
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) {
            _exit(4);
        }
        _exit(0);
    }
    char c = 0;
    ASSERT_EQ(read(ready[0], &c, 1), 1) << "host process did not get ready";
    const uint64_t want = 1 + main_runs + uint64_t{waves} * threads * per_thread + child_runs;
    auto states = hosts(link);
    ASSERT_EQ(states.size(), 1u);
    EXPECT_EQ(states[0].pid, host);
    EXPECT_EQ(states[0].runs, want);
    EXPECT_EQ(info(link).runs, want);
    (void)!write(go[1], &c, 1);
    int st = 0;
    waitpid(host, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "host status " << st;
    EXPECT_EQ(info(link).runs, want);
    for (int fd : {ready[0], ready[1], go[0], go[1]}) {
        close(fd);
    }
}

TEST_F(HostCounters, TotalsKeepCountsWhenRecordsRunOut) {
    std::vector<host_process> live;
    for (size_t i = 0; i < store::max_link_hosts + 2; i++) {
        live.push_back(host_process::start(name, "h", 10 + i));
    }
    uint64_t want = 0;
    for (size_t i = 0; i < live.size(); i++) {
        want += 10 + i;
    }
    EXPECT_EQ(info(link).runs, want);
    EXPECT_LE(hosts(link).size(), store::max_link_hosts);
    for (auto &h : live) {
        EXPECT_EQ(h.finish(), 0);
    }
    EXPECT_EQ(info(link).runs, want);
}

TEST_F(HostCounters, BudgetStopsAreFaultsOfTheirOwnKind) {
    uint32_t loop = make_link("loop:\nja loop\nexit\n", "loop");
    uint32_t bad = make_link("ldxdw %r0, [%r1+4096]\nexit\n", "bad");
    auto h = host_process::start(name, "loop", 3);
    EXPECT_EQ(h.finish(), 0);
    h = host_process::start(name, "bad", 4);
    EXPECT_EQ(h.finish(), 0);
    store::link_info l = info(loop), b = info(bad);
    EXPECT_EQ(l.runs, 3u);
    EXPECT_EQ(l.faults, 3u);
    EXPECT_EQ(l.budget_stops, 3u);
    EXPECT_EQ(b.runs, 4u);
    EXPECT_EQ(b.faults, 4u);
    EXPECT_EQ(b.budget_stops, 0u);
    EXPECT_EQ(l.run_time_ns, 0u) << "runs are not timed unless asked";
}

TEST_F(HostCounters, TimingIsOneFlagForEveryHost) {
    EXPECT_FALSE(seg->run_timing());
    auto c = seg->counters(link);
    ASSERT_TRUE(c.ok());
    EXPECT_FALSE(c->timing());
    ASSERT_TRUE(seg->set_run_timing(true).ok());
    EXPECT_TRUE(c->timing()) << "a host sees the flag at its next run";
    auto h = host_process::start(name, "h", 50);
    store::link_info timed = info(link);
    EXPECT_EQ(timed.runs, 50u);
    EXPECT_GT(timed.run_time_ns, 0u);
    ASSERT_EQ(hosts(link).size(), 1u);
    EXPECT_EQ(hosts(link)[0].run_time_ns, timed.run_time_ns);
    ASSERT_TRUE(seg->set_run_timing(false).ok());
    EXPECT_EQ(h.finish(), 0);
    h = host_process::start(name, "h", 50);
    EXPECT_EQ(h.finish(), 0);
    EXPECT_EQ(info(link).runs, 100u);
    EXPECT_EQ(info(link).run_time_ns, timed.run_time_ns);
}

TEST_F(HostCounters, RunTimeIsInNanoseconds) {
    // A program that spins until ktime_get_ns (CLOCK_MONOTONIC) has moved 20 ms, run five times
    // with timing on by this process as host: the time counted is at least the 100 ms the
    // program waited and at most the wall-clock time of the five runs (on a busy machine a run
    // may last longer than its 20 ms). Raw TSC ticks, at any rate from 1.1 GHz up, would be
    // past the upper bound.
    uint32_t spin = make_link("call 5\nmov %r6, %r0\nspin:\ncall 5\nsub %r0, %r6\n"
                              "jlt %r0, 20000000, spin\nmov %r0, 0\nexit\n",
                              "spin");
    ASSERT_TRUE(seg->set_run_timing(true).ok());
    attach_manager mgr(seg);
    auto impl = std::make_unique<callable_attach_impl>();
    callable_attach_impl &hooks = *impl;
    ASSERT_TRUE(mgr.register_attach_impl(attach_type_test, std::move(impl)).ok());
    ASSERT_TRUE(mgr.instantiate().ok());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; i++) {
        hooks.trigger("spin", nullptr, 0);
    }
    const auto wall = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::steady_clock::now() - start)
                                                .count());
    const store::link_info l = info(spin);
    EXPECT_EQ(l.runs, 5u);
    EXPECT_EQ(l.faults, 0u);
    EXPECT_GE(l.run_time_ns, 99'000'000u) << "5 runs of at least 20 ms each";
    // A little over the wall-clock time: the TSC's rate is measured, to within a fraction of a
    // percent.
    EXPECT_LE(l.run_time_ns, wall + wall / 50) << "the runs took " << wall << " ns in all";
}

TEST_F(HostCounters, TimingSwitchesUnderARunningHost) {
    // A host that instantiated with timing off counts its runs on its own stripe; a controller
    // turning timing on (its own mapping, as `bpftime stats --enable-timing` does) makes the
    // same host's next runs timed, with no resync, and turning it off makes them untimed again.
    // Each round of 100 runs counts exactly.
    int ready[2], go[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    pid_t host = fork();
    if (host == 0) {
        auto s = segment::open(name, {.create = false, .wait_ms = 5000});
        if (!s) {
            _exit(2);
        }
        attach_manager mgr(*s);
        auto impl = std::make_unique<callable_attach_impl>();
        callable_attach_impl &hooks = *impl;
        if (!mgr.register_attach_impl(attach_type_test, std::move(impl)) || !mgr.instantiate()) {
            _exit(3);
        }
        for (int round = 0; round < 3; round++) {
            char c = 0;
            if (read(go[0], &c, 1) != 1) {
                _exit(4);
            }
            for (int i = 0; i < 100; i++) {
                hooks.trigger("h", nullptr, 0);
            }
            if (write(ready[1], &c, 1) != 1) {
                _exit(4);
            }
        }
        _exit(0);
    }
    auto round = [&] {
        char c = 1;
        EXPECT_EQ(write(go[1], &c, 1), 1);
        EXPECT_EQ(read(ready[0], &c, 1), 1) << "host process did not run its round";
    };
    round();
    EXPECT_EQ(info(link).runs, 100u);
    EXPECT_EQ(info(link).run_time_ns, 0u);
    ASSERT_TRUE(seg->set_run_timing(true).ok());
    round();
    const store::link_info timed = info(link);
    EXPECT_EQ(timed.runs, 200u);
    EXPECT_GT(timed.run_time_ns, 0u) << "the running host times runs once timing is on";
    ASSERT_EQ(hosts(link).size(), 1u);
    EXPECT_EQ(hosts(link)[0].pid, host);
    ASSERT_TRUE(seg->set_run_timing(false).ok());
    round();
    EXPECT_EQ(info(link).runs, 300u);
    EXPECT_EQ(info(link).run_time_ns, timed.run_time_ns) << "untimed again once timing is off";
    int st = 0;
    waitpid(host, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "host status " << st;
    for (int fd : {ready[0], ready[1], go[0], go[1]}) {
        close(fd);
    }
}

TEST_F(HostCounters, AHostIsAttachingUntilItReports) {
    // A host takes its record before it hooks the link: until it says how that went, the
    // listing must not call the link attached there.
    const int32_t pid = static_cast<int32_t>(getpid());
    ASSERT_TRUE(seg->host_counters(link, pid).ok());
    auto states = hosts(link);
    ASSERT_EQ(states.size(), 1u);
    EXPECT_TRUE(states[0].attaching);
    EXPECT_FALSE(states[0].failed);
    ASSERT_TRUE(seg->set_link_host_state(link, {pid, false, ""}).ok());
    states = hosts(link);
    ASSERT_EQ(states.size(), 1u);
    EXPECT_FALSE(states[0].attaching);
    EXPECT_FALSE(states[0].failed);
    ASSERT_TRUE(seg->set_link_host_state(link, {pid, true, "no such function"}).ok());
    states = hosts(link);
    ASSERT_EQ(states.size(), 1u);
    EXPECT_FALSE(states[0].attaching);
    EXPECT_TRUE(states[0].failed);
    EXPECT_EQ(states[0].why, "no such function");
    // Taking the counters again (a link re-attached) keeps what the host said last.
    ASSERT_TRUE(seg->host_counters(link, pid).ok());
    EXPECT_TRUE(hosts(link)[0].failed);
}

TEST_F(HostCounters, RunClockMoves) {
    uint64_t a = store::run_clock_ns();
    usleep(2000);
    uint64_t b = store::run_clock_ns();
    EXPECT_GE(b - a, 1'500'000u);
    EXPECT_LT(b - a, 1'000'000'000u);
}

} // namespace
} // namespace bpftime
