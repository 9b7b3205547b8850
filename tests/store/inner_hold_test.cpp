// SPDX-License-Identifier: MIT
// An inner map a run reached through an outer map, destroyed while that run goes on: the host
// process's follower synchronises past the destroy, but must not say it passed it (so the
// storage is not reused) until the run that holds the inner map has ended.
#include <bpftime/attach/attach.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include <gtest/gtest.h>

#include "piped_child.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bpftime {
namespace {

using store::segment;

constexpr uint64_t host_value = 0xbad;              // what the run writes into the inner map
constexpr uint64_t pattern = 0x5555'5555'5555'5555; // what the controller writes into new maps
constexpr uint32_t inner_entries = 512;             // 4 KiB of values
constexpr maps::map_spec inner_spec{maps::map_type::array, 4, 8, inner_entries, 0};
constexpr maps::inner_map_template inner_template{maps::map_type::array, 4, 8, inner_entries, 0};

std::span<const uint8_t> bytes(const auto &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

// Looks up the inner map at key 0 of `outer` and control slots 0 and 1 of `ctl`, sets slot 0
// (the run has the inner map), then writes host_value into every value of the inner map over
// and over until slot 1 is set. Runs unchecked: no instruction budget ends it.
std::string holding_program(uint32_t outer, uint32_t ctl) {
    auto lookup = [](uint32_t map, int slot, int key) {
        return "stw [%r10-" + std::to_string(slot) + "], " + std::to_string(key) +
               "\nlddw %r1, map_fd(" + std::to_string(map) + ")\nmov %r2, %r10\nadd %r2, -" +
               std::to_string(slot) + "\ncall 1\njeq %r0, 0, none\n";
    };
    return lookup(outer, 4, 0) + "mov %r1, %r0\nstw [%r10-8], 0\nmov %r2, %r10\nadd %r2, -8\n" +
           "call 1\njeq %r0, 0, none\nmov %r6, %r0\n" + // r6: value 0 of the inner map
           lookup(ctl, 12, 0) + "mov %r7, %r0\n" + lookup(ctl, 16, 1) + "mov %r8, %r0\n" +
           "mov %r1, 1\nstxdw [%r7], %r1\n" + // started
           "again:\nmov %r2, 0\nmov %r3, " + std::to_string(host_value) +
           "\nwrite:\nmov %r4, %r6\nmov %r5, %r2\nlsh %r5, 3\nadd %r4, %r5\n"
           "stxdw [%r4], %r3\nadd %r2, 1\njlt %r2, " +
           std::to_string(inner_entries) +
           ", write\n"
           "ldxdw %r1, [%r8]\njeq %r1, 0, again\n"
           "mov %r0, 1\nexit\nnone:\nmov %r0, 0\nexit\n";
}

// What the host child tells its parent: a tag and a generation.
struct message {
    char tag = 0;        // 'r' ready, 'i' synchronised (gen: the snapshot's), 'd' run done
    uint64_t gen = 0;    // for 'i'
    uint64_t result = 0; // for 'd': the run's r0 (1 when it ran through)
};

// A host in a child process, as the agent is one: a thread runs the hook once (the long run),
// while the main thread follows the segment, synchronising whenever it is stale, until told
// to stop.
struct hold_host : store::test::piped_child {
    static hold_host start(const std::string &name) {
        return {piped_child::start([&](int cmd, int reply) { return run(name, cmd, reply); })};
    }

    static int run(const std::string &name, int cmd, int reply) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        auto seg = segment::open(name, {.create = false, .wait_ms = 0});
        if (!seg) {
            return 2;
        }
        attach_manager mgr(*seg,
                           {.engine = vm::engine_kind::jit,
                            .engine_options = {.unchecked = true, .tier = vm::jit_tier::baseline}});
        auto impl = std::make_unique<callable_attach_impl>();
        callable_attach_impl &hooks = *impl;
        if (!mgr.register_attach_impl(attach_type_test, std::move(impl)) || !mgr.instantiate() ||
            hooks.attached("hook") != 1) {
            return 3;
        }
        auto say = [&](message m) { return write(reply, &m, sizeof m) == sizeof m; };
        std::thread runner([&] {
            auto r = hooks.trigger("hook", nullptr, 0);
            say({'d', 0, r.size() == 1 && r[0] ? *r[0] : ~0ull});
        });
        if (!say({'r'})) {
            return 4;
        }
        fcntl(cmd, F_SETFL, O_NONBLOCK);
        uint64_t seen = (*seg)->generation();
        for (;;) {
            char c = 0;
            if (read(cmd, &c, 1) == 1 && c == 'q') {
                break;
            }
            (*seg)->wait_generation(seen, std::chrono::milliseconds(20));
            seen = (*seg)->generation();
            if (mgr.stale() && mgr.instantiate()) {
                say({'i', seen});
            }
        }
        runner.join();
        return 0;
    }

    // The next message (at most 10 s); tag 0 when none came.
    message next() const {
        pollfd p{from_child, POLLIN, 0};
        message m;
        if (poll(&p, 1, 10000) != 1 || read(from_child, &m, sizeof m) != sizeof m) {
            return {};
        }
        return m;
    }
    // Skips messages until one of this tag (and, for 'i', at least this generation).
    message until(char tag, uint64_t gen = 0) const {
        for (;;) {
            message m = next();
            if (m.tag == 0 || (m.tag == tag && m.gen >= gen)) {
                return m;
            }
        }
    }
};

struct InnerHoldTest : ::testing::Test {
    std::string name;
    void SetUp() override {
        name = "bpftime-inner-hold-" + std::to_string(getpid());
        (void)segment::remove(name);
    }
    void TearDown() override { (void)segment::remove(name); }
};

uint64_t read_u64(event_provider_impl &p, uint32_t map, uint32_t key) {
    auto m = p.open_map(map);
    EXPECT_TRUE(m.ok());
    auto v = m ? (*m)->read(bytes(key)) : result<std::vector<uint8_t>>(m.err());
    uint64_t out = 0;
    if (v && v->size() >= sizeof out) {
        std::memcpy(&out, v->data(), sizeof out);
    }
    return out;
}

void write_u64(event_provider_impl &p, uint32_t map, uint32_t key, uint64_t value) {
    auto m = p.open_map(map);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(bytes(key), bytes(value), maps::update_any).ok());
}

// The keys of `map` that do not hold `want`.
std::vector<uint32_t> differing(event_provider_impl &p, uint32_t map, uint64_t want) {
    std::vector<uint32_t> out;
    for (uint32_t k = 0; k < inner_entries; k++) {
        if (read_u64(p, map, k) != want) {
            out.push_back(k);
        }
    }
    return out;
}

bool is_retired(segment &seg, uint32_t id) {
    auto retired = seg.retired();
    EXPECT_TRUE(retired.ok());
    for (const store::retired_object &r : *retired) {
        if (r.id == id) {
            return true;
        }
    }
    return false;
}

TEST_F(InnerHoldTest, ARunKeepsTheInnerMapItReachedUntilItEnds) {
    // Small enough that every new map lands in the first free gap that fits it.
    auto seg = segment::open(name, {.size = 4 << 20, .max_objects = 64});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl p(*seg);
    auto ctl = p.create_map({"ctl", {maps::map_type::array, 4, 8, 2, 0}});
    auto inner = p.create_map({"inner", inner_spec});
    auto outer =
        p.create_map({"outer", {maps::map_type::array_of_maps, 4, 4, 1, 0, 0, inner_template}});
    ASSERT_TRUE(ctl && inner && outer);
    auto outer_map = p.open_map(*outer);
    ASSERT_TRUE(outer_map.ok());
    uint32_t key0 = 0;
    ASSERT_TRUE((*outer_map)->write(bytes(key0), bytes(*inner), maps::update_any).ok());
    auto insns = vm::assemble(holding_program(*outer, *ctl));
    ASSERT_TRUE(insns.ok()) << insns.err().message;
    auto prog = p.create_program({"holder", 0, "", *insns, {*outer, *ctl}});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto target = p.create_attach_target(attach_type_test, "hook");
    ASSERT_TRUE(target.ok());
    ASSERT_TRUE(p.attach_program(*prog, *target).ok());

    hold_host host = hold_host::start(name);
    ASSERT_EQ(host.until('r').tag, 'r');
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (read_u64(p, *ctl, 0) != 1) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the run did not start";
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    // The controller takes the inner map out and destroys it while the run writes into it.
    ASSERT_TRUE((*outer_map)->erase(bytes(key0)).ok());
    ASSERT_TRUE(p.destroy_object(*inner).ok());
    const uint64_t destroyed_at = (*seg)->generation();
    // The host's follower has synchronised past the destroy and released the inner map...
    ASSERT_EQ(host.until('i', destroyed_at).tag, 'i');
    // ...but the run still holds it: its storage is kept for the host.
    EXPECT_TRUE(is_retired(**seg, *inner)) << "the inner map's storage was given back while a "
                                              "run held it";

    // New maps of the inner map's size, made and filled while the run goes on, never see its
    // writes.
    std::vector<uint32_t> fresh;
    for (int i = 0; i < 3; i++) {
        auto m = p.create_map({"fresh", inner_spec});
        ASSERT_TRUE(m.ok()) << m.err().message;
        fresh.push_back(*m);
        for (uint32_t k = 0; k < inner_entries; k++) {
            write_u64(p, *m, k, pattern);
        }
    }
    for (int i = 0; i < 20; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        for (uint32_t m : fresh) {
            ASSERT_EQ(differing(p, m, pattern), std::vector<uint32_t>{})
                << "the run wrote into map " << m << ", made after the inner map was destroyed";
        }
    }
    EXPECT_TRUE(is_retired(**seg, *inner));

    // The run ends: the follower then says it passed the destroy, and the storage comes back.
    write_u64(p, *ctl, 1, 1);
    message done = host.until('d');
    ASSERT_EQ(done.tag, 'd');
    EXPECT_EQ(done.result, 1u) << "the run went through with the inner map";
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        auto hosts = (*seg)->hosts();
        ASSERT_TRUE(hosts.ok());
        ASSERT_EQ(hosts->size(), 1u);
        if (hosts->front().passed >= destroyed_at) {
            break;
        }
        ASSERT_LT(std::chrono::steady_clock::now(), deadline)
            << "the host never said it passed the destroy";
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    // Reclaimed at the next change; a new map may now take the storage.
    auto last = p.create_map({"last", inner_spec});
    ASSERT_TRUE(last.ok()) << last.err().message;
    EXPECT_FALSE(is_retired(**seg, *inner)) << "the storage was not given back after the run";
    for (uint32_t m : fresh) {
        EXPECT_EQ(differing(p, m, pattern), std::vector<uint32_t>{}) << "map " << m;
    }
    EXPECT_EQ(differing(p, *last, 0), std::vector<uint32_t>{});
    EXPECT_EQ(host.stop(), 0);
}

} // namespace
} // namespace bpftime
