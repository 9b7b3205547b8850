// SPDX-License-Identifier: MIT
// Storage of destroyed objects with real host processes: a host runs what it last instantiated
// until it synchronises again, so a destroyed map's storage must not be reused before then; a
// host that dies gives it back.
#include <bpftime/attach/attach.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include <gtest/gtest.h>

#include "piped_child.hpp"

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

constexpr uint64_t host_value = 0xbad;     // what the host's program writes
constexpr uint64_t pattern = 0x5555'5555u; // what the controller writes into the new map

struct RetireTest : ::testing::Test {
    std::string name;
    void SetUp() override {
        name = "bpftime-retire-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)segment::remove(name);
    }
    void TearDown() override { (void)segment::remove(name); }
};

// Writes host_value into index 0 of array map `map`.
std::string writer_program(uint32_t map) {
    return "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(" + std::to_string(map) +
           ")\ncall 1\njeq %r0, 0, out\nmov %r1, " + std::to_string(host_value) +
           "\nstxdw [%r0], %r1\nout:\nmov %r0, 0\nexit\n";
}

// A host in a child process: instantiates once, then runs the hook in a loop. Commands on its
// pipe: 's' synchronises (instantiate) and answers 'k'; 'q' ends it. Until told, it never
// synchronises: a host whose follower has not caught up yet.
struct host_child : store::test::piped_child {
    static host_child start(const std::string &name) {
        return {piped_child::start([&](int cmd, int reply) { return run(name, cmd, reply); })};
    }

    static int run(const std::string &name, int cmd, int reply) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); // never outlives a test that stopped early
        auto seg = segment::open(name, {.create = false, .wait_ms = 0});
        if (!seg) {
            return 2;
        }
        attach_manager mgr(*seg);
        auto impl = std::make_unique<callable_attach_impl>();
        callable_attach_impl &hooks = *impl;
        if (!mgr.register_attach_impl(attach_type_test, std::move(impl)) || !mgr.instantiate()) {
            return 3;
        }
        if (hooks.attached("hook") != 1) {
            return 4;
        }
        // One run before "ready": the parent then finds the host's value in the map.
        (void)hooks.trigger("hook", nullptr, 0);
        if (write(reply, "r", 1) != 1) {
            return 4;
        }
        fcntl(cmd, F_SETFL, O_NONBLOCK);
        for (;;) {
            (void)hooks.trigger("hook", nullptr, 0);
            char c = 0;
            if (read(cmd, &c, 1) != 1) {
                continue;
            }
            if (c == 'q') {
                return 0;
            }
            // The lock is taken with wait 0: retry while a controller holds it.
            while (!mgr.instantiate()) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            if (write(reply, "k", 1) != 1) {
                return 5;
            }
        }
    }

    // Waits for one byte from the child (at most 10 s).
    char await() const {
        pollfd p{from_child, POLLIN, 0};
        char c = 0;
        if (poll(&p, 1, 10000) != 1 || read(from_child, &c, 1) != 1) {
            return 0;
        }
        return c;
    }
    bool sync() const { return write(to_child, "s", 1) == 1 && await() == 'k'; }
};

struct loaded {
    uint32_t map = 0, prog = 0, target = 0, link = 0;
};

loaded load_writer(event_provider_impl &p, const maps::map_spec &spec) {
    auto map = p.create_map({"old", spec});
    EXPECT_TRUE(map.ok()) << map.err().message;
    auto insns = vm::assemble(writer_program(*map));
    EXPECT_TRUE(insns.ok()) << insns.err().message;
    auto prog = p.create_program({"writer", 0, "", *insns, {*map}});
    EXPECT_TRUE(prog.ok()) << prog.err().message;
    auto target = p.create_attach_target(attach_type_test, "hook");
    auto link = p.attach_program(*prog, *target);
    EXPECT_TRUE(link.ok()) << link.err().message;
    return {*map, *prog, *target, *link};
}

void destroy_all(event_provider_impl &p, const loaded &l) {
    for (uint32_t id : {l.link, l.prog, l.target, l.map}) {
        auto r = p.destroy_object(id);
        EXPECT_TRUE(r.ok()) << r.err().message;
    }
}

uint64_t value_at_0(segment &seg, uint32_t map) {
    auto view = seg.map_view(map);
    EXPECT_TRUE(view.ok()) << view.err().message;
    uint32_t key = 0;
    auto v = view->read({reinterpret_cast<uint8_t *>(&key), 4});
    uint64_t out = 0;
    if (v.ok()) {
        std::memcpy(&out, v->data(), sizeof out);
    }
    return out;
}

TEST_F(RetireTest, AHostThatHasNotSynchronisedNeverWritesANewMap) {
    auto seg = segment::open(name);
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl p(*seg);
    const maps::map_spec spec{maps::map_type::array, 4, 8, 1, 0};
    loaded old = load_writer(p, spec);
    host_child host = host_child::start(name);
    ASSERT_EQ(host.await(), 'r');
    ASSERT_EQ(value_at_0(**seg, old.map), host_value) << "the host runs the program";

    // The link, its program and the map go while the host runs on what it instantiated; a new
    // map of the same size comes and gets the controller's pattern.
    destroy_all(p, old);
    auto fresh = p.create_map({"new", spec});
    ASSERT_TRUE(fresh.ok()) << fresh.err().message;
    auto access = p.open_map(*fresh);
    ASSERT_TRUE(access.ok());
    uint32_t key = 0;
    uint64_t value = pattern;
    ASSERT_TRUE((*access)
                    ->write({reinterpret_cast<uint8_t *>(&key), 4},
                            {reinterpret_cast<uint8_t *>(&value), 8}, maps::update_any)
                    .ok());
    // The host keeps writing its old map for a while: none of it may land in the new one.
    for (int i = 0; i < 50; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ASSERT_EQ(value_at_0(**seg, *fresh), pattern) << "the host wrote into the new map";
    }
    // The old map's storage is kept for the host, and the listing says so.
    auto retired = (*seg)->retired();
    ASSERT_TRUE(retired.ok()) << retired.err().message;
    bool kept = false;
    for (const store::retired_object &r : *retired) {
        if (r.id == old.map) {
            kept = true;
            EXPECT_EQ(r.kind, store::object_kind::map);
            EXPECT_EQ(r.name, "old");
            EXPECT_GT(r.bytes, 0u);
            EXPECT_EQ(r.held_by, std::vector<int32_t>{host.pid});
        }
    }
    EXPECT_TRUE(kept) << "map " << old.map << " is not listed as retired";
    auto listed = p.list();
    ASSERT_TRUE(listed.ok());
    EXPECT_FALSE(listed->retired.empty());

    // Once the host synchronises, it holds nothing of them: the storage is free again.
    ASSERT_TRUE(host.sync());
    retired = (*seg)->retired();
    ASSERT_TRUE(retired.ok());
    EXPECT_TRUE(retired->empty()) << retired->size() << " objects still retired";
    EXPECT_EQ(value_at_0(**seg, *fresh), pattern);
    EXPECT_EQ(host.stop(), 0);
}

TEST_F(RetireTest, AKilledHostsRetiredStorageIsReclaimed) {
    // Room for one big map at a time.
    auto seg = segment::open(name, {.size = 1 << 20, .max_objects = 64});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl p(*seg);
    const maps::map_spec big{maps::map_type::array, 4, 8, 80000, 0};
    loaded old = load_writer(p, big);
    host_child host = host_child::start(name);
    ASSERT_EQ(host.await(), 'r');
    destroy_all(p, old);

    // Held for the host: no room for another such map, and the error names who holds it.
    auto refused = p.create_map({"new", big});
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.err().code, ENOSPC);
    EXPECT_NE(refused.err().message.find("until host process " + std::to_string(host.pid) +
                                         " synchronises"),
              std::string::npos)
        << refused.err().message;

    // The host dies without a word: its place and what it held go at the next create.
    kill(host.pid, SIGKILL);
    int st = 0;
    waitpid(host.pid, &st, 0);
    close(host.to_child);
    close(host.from_child);
    host.pid = -1;
    auto fresh = p.create_map({"new", big});
    ASSERT_TRUE(fresh.ok()) << fresh.err().message;
    auto hosts = (*seg)->hosts();
    ASSERT_TRUE(hosts.ok());
    EXPECT_TRUE(hosts->empty());
}

TEST_F(RetireTest, WithoutHostsStorageIsReusedAtOnce) {
    auto seg = segment::open(name, {.size = 1 << 20, .max_objects = 64});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl p(*seg);
    const maps::map_spec big{maps::map_type::array, 4, 8, 80000, 0};
    for (int i = 0; i < 3; i++) {
        auto m = p.create_map({"m", big});
        ASSERT_TRUE(m.ok()) << m.err().message;
        ASSERT_TRUE(p.destroy_object(*m).ok());
    }
    auto retired = (*seg)->retired();
    ASSERT_TRUE(retired.ok());
    EXPECT_TRUE(retired->empty());
}

TEST_F(RetireTest, AHostThatLeavesHoldsNothing) {
    auto seg = segment::open(name, {.size = 1 << 20, .max_objects = 64});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl p(*seg);
    const maps::map_spec big{maps::map_type::array, 4, 8, 80000, 0};
    loaded old = load_writer(p, big);
    {
        attach_manager mgr(*seg);
        ASSERT_TRUE(
            mgr.register_attach_impl(attach_type_test, std::make_unique<callable_attach_impl>())
                .ok());
        ASSERT_TRUE(mgr.instantiate().ok());
        auto hosts = (*seg)->hosts();
        ASSERT_TRUE(hosts.ok());
        ASSERT_EQ(hosts->size(), 1u);
        EXPECT_EQ(hosts->front().pid, getpid());
        destroy_all(p, old);
        auto retired = (*seg)->retired();
        ASSERT_TRUE(retired.ok());
        EXPECT_EQ(retired->size(), 4u) << "link, program, target and map kept for this host";
    } // deinstantiates
    auto hosts = (*seg)->hosts();
    ASSERT_TRUE(hosts.ok());
    EXPECT_TRUE(hosts->empty());
    auto retired = (*seg)->retired();
    ASSERT_TRUE(retired.ok());
    EXPECT_TRUE(retired->empty());
    EXPECT_TRUE(p.create_map({"new", big}).ok());
}

} // namespace
} // namespace bpftime
