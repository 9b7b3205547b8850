// SPDX-License-Identifier: MIT
// The store with real processes: a controller writes, hosts instantiate and run, writers die.
#include <bpftime/attach/attach.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bpftime {
namespace {

using store::segment;

// A segment with a name unique to this test, removed at the end.
struct StoreTest : ::testing::Test {
    std::string name;
    void SetUp() override {
        name = "bpftime-test-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)segment::remove(name);
    }
    void TearDown() override { (void)segment::remove(name); }

    std::shared_ptr<segment> open(store::open_options opts = {}) {
        auto seg = segment::open(name, opts);
        EXPECT_TRUE(seg.ok()) << seg.err().message;
        return seg.ok() ? *seg : nullptr;
    }
};

std::vector<vm::ebpf_inst> asm_or_die(const std::string &text) {
    auto insns = vm::assemble(text);
    EXPECT_TRUE(insns.ok()) << insns.err().message;
    return insns.ok() ? *insns : std::vector<vm::ebpf_inst>{};
}

// Adds 1 to the u64 at index 0 of array map `map`; returns 0.
std::string counter_program(uint32_t map) {
    return "stw [%r10-4], 0\n"
           "mov %r2, %r10\n"
           "add %r2, -4\n"
           "lddw %r1, map_fd(" +
           std::to_string(map) +
           ")\n"
           "call 1\n"
           "jeq %r0, 0, out\n"
           "mov %r1, 1\n"
           "lock add [%r0], %r1\n"
           "out:\n"
           "mov %r0, 0\n"
           "exit\n";
}

// Runs f in a child process; returns its exit status (0 = f returned true).
template <class F>
pid_t spawn(F &&f) {
    pid_t pid = fork();
    if (pid == 0) {
        bool ok = false;
        try {
            ok = f();
        } catch (...) {
        }
        _exit(ok ? 0 : 1);
    }
    return pid;
}

int wait_status(pid_t pid) {
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// A host process's view: the segment, an attach manager offering the test hooks, instantiated.
struct test_host {
    std::shared_ptr<segment> seg;
    std::unique_ptr<attach_manager> mgr;
    callable_attach_impl *hooks = nullptr;

    static std::optional<test_host> open(const std::string &name) {
        auto s = segment::open(name, {.create = false});
        if (!s) {
            return std::nullopt;
        }
        test_host h{*s, std::make_unique<attach_manager>(*s)};
        auto impl = std::make_unique<callable_attach_impl>();
        h.hooks = impl.get();
        if (!h.mgr->register_attach_impl(attach_type_test, std::move(impl)) ||
            !h.mgr->instantiate()) {
            return std::nullopt;
        }
        return h;
    }
};

const maps::map_spec counter_array{maps::map_type::array, 4, 8, 1, 0};

TEST_F(StoreTest, ControllerProcessCreatesHostProcessRuns) {
    // The controller is a separate process that writes and exits.
    pid_t controller = spawn([&] {
        auto seg = segment::open(name);
        if (!seg) {
            return false;
        }
        event_provider_impl p(*seg);
        auto map = p.create_map({"counts", counter_array});
        auto prog =
            map ? p.create_program({"count", 0, "test", asm_or_die(counter_program(*map)), {*map}})
                : result<uint32_t>(map.err());
        auto target = p.create_attach_target(attach_type_test, "hook");
        return prog && target && p.attach_program(*prog, *target).ok();
    });
    ASSERT_EQ(wait_status(controller), 0);

    auto seg = open({.create = false});
    ASSERT_TRUE(seg);
    attach_manager mgr(seg);
    auto impl = std::make_unique<callable_attach_impl>();
    callable_attach_impl &hooks = *impl;
    ASSERT_TRUE(mgr.register_attach_impl(attach_type_test, std::move(impl)).ok());
    auto r = mgr.instantiate();
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(hooks.attached("hook"), 1u);
    for (int i = 0; i < 5; i++) {
        auto results = hooks.trigger("hook", nullptr, 0);
        ASSERT_EQ(results.size(), 1u);
        ASSERT_TRUE(results[0].ok()) << results[0].err().message;
    }
    auto snap = seg->read_all();
    ASSERT_TRUE(snap.ok());
    auto view = seg->map_view(snap->maps.at(0).id);
    ASSERT_TRUE(view.ok());
    uint32_t key = 0;
    auto value = view->read({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_TRUE(value.ok());
    uint64_t count;
    std::memcpy(&count, value->data(), 8);
    EXPECT_EQ(count, 5u);
    EXPECT_EQ(snap->links.at(0).runs, 5u);
    EXPECT_EQ(snap->links.at(0).faults, 0u);
}

TEST_F(StoreTest, TwoHostProcessesCountExactly) {
    auto seg = open();
    event_provider_impl p(seg);
    auto map = p.create_map({"counts", counter_array});
    ASSERT_TRUE(map.ok()) << map.err().message;
    auto prog = p.create_program({"count", 0, "", asm_or_die(counter_program(*map)), {*map}});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto target = p.create_attach_target(attach_type_test, "hook");
    auto link = p.attach_program(*prog, *target);
    ASSERT_TRUE(link.ok());

    constexpr int runs = 50000;
    auto host = [&] {
        auto h = test_host::open(name);
        if (!h) {
            return false;
        }
        for (int i = 0; i < runs; i++) {
            auto r = h->hooks->trigger("hook", nullptr, 0);
            if (r.size() != 1 || !r[0]) {
                return false;
            }
        }
        return true;
    };
    pid_t a = spawn(host), b = spawn(host);
    EXPECT_EQ(wait_status(a), 0);
    EXPECT_EQ(wait_status(b), 0);

    auto view = seg->map_view(*map);
    uint32_t key = 0;
    auto value = view->read({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_TRUE(value.ok());
    uint64_t count;
    std::memcpy(&count, value->data(), 8);
    EXPECT_EQ(count, 2u * runs);
    auto l = seg->link(*link);
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->runs, 2u * runs);
}

TEST_F(StoreTest, RingBufferFedByTwoProcessesDeliversEveryRecordOnce) {
    auto seg = open();
    event_provider_impl p(seg);
    auto ring = p.create_map({"events", {maps::map_type::ringbuf, 0, 0, 16384, 0}});
    ASSERT_TRUE(ring.ok()) << ring.err().message;
    // ringbuf_output(ring, ctx, 8, 0): the record is the 8-byte context.
    auto prog =
        p.create_program({"log",
                          0,
                          "",
                          asm_or_die("mov %r2, %r1\nlddw %r1, map_fd(" + std::to_string(*ring) +
                                     ")\nmov %r3, 8\nmov %r4, 0\ncall 130\nexit\n"),
                          {*ring}});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto target = p.create_attach_target(attach_type_test, "hook");
    ASSERT_TRUE(p.attach_program(*prog, *target).ok());

    constexpr uint32_t per_producer = 20000;
    auto producer = [&](uint32_t who) {
        return [&, who] {
            auto h = test_host::open(name);
            if (!h) {
                return false;
            }
            for (uint32_t seq = 0; seq < per_producer; seq++) {
                uint32_t rec[2] = {who, seq};
                // A full ring answers -EAGAIN: wait for the consumer and retry.
                for (int tries = 0;; tries++) {
                    auto r = h->hooks->trigger("hook", rec, sizeof rec);
                    if (r.size() != 1 || !r[0] || tries > 100000) {
                        return false;
                    }
                    if (*r[0] == 0) {
                        break;
                    }
                    std::this_thread::yield();
                }
            }
            return true;
        };
    };
    pid_t a = spawn(producer(1)), b = spawn(producer(2));

    auto view = seg->map_view(*ring);
    ASSERT_TRUE(view.ok());
    uint32_t next[3] = {0, 0, 0};
    uint64_t total = 0, bad = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (total < 2 * per_producer && std::chrono::steady_clock::now() < deadline) {
        auto n = view->ringbuf_consume([&](std::span<const uint8_t> rec) {
            uint32_t v[2];
            if (rec.size() != sizeof v) {
                bad++;
                return;
            }
            std::memcpy(v, rec.data(), sizeof v);
            // Each producer's records arrive once and in order.
            if (v[0] < 1 || v[0] > 2 || v[1] != next[v[0]]) {
                bad++;
            } else {
                next[v[0]]++;
            }
            total++;
        });
        ASSERT_TRUE(n.ok());
        if (*n == 0) {
            view->ringbuf_wait(50);
        }
    }
    EXPECT_EQ(wait_status(a), 0);
    EXPECT_EQ(wait_status(b), 0);
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(next[1], per_producer);
    EXPECT_EQ(next[2], per_producer);
}

TEST_F(StoreTest, InstantiateIsIncrementalAndIdempotent) {
    auto seg = open();
    event_provider_impl p(seg);
    auto impl = std::make_unique<callable_attach_impl>();
    auto &hooks = *impl;
    ASSERT_TRUE(p.manager().register_attach_impl(attach_type_test, std::move(impl)).ok());
    auto ret = [](int v) { return asm_or_die("mov %r0, " + std::to_string(v) + "\nexit\n"); };
    auto p1 = p.create_program({"one", 0, "", ret(1), {}});
    auto p2 = p.create_program({"two", 0, "", ret(2), {}});
    auto t = p.create_attach_target(attach_type_test, "h");
    ASSERT_TRUE(p1 && p2 && t);
    auto l1 = p.attach_program(*p1, *t);
    ASSERT_TRUE(p.instantiate().ok());
    auto first = p.manager().attach_id_of(*l1);
    ASSERT_TRUE(first);
    EXPECT_FALSE(p.manager().stale());
    ASSERT_TRUE(p.instantiate().ok()); // idempotent
    EXPECT_EQ(p.manager().attach_id_of(*l1), first);

    auto l2 = p.attach_program(*p2, *t);
    EXPECT_TRUE(p.manager().stale());
    ASSERT_TRUE(p.instantiate().ok());
    EXPECT_EQ(p.manager().attach_id_of(*l1), first) << "an unchanged link stays attached";
    auto results = hooks.trigger("h", nullptr, 0);
    ASSERT_EQ(results.size(), 2u);
    EXPECT_EQ(*results[0], 1u) << "link order";
    EXPECT_EQ(*results[1], 2u);

    ASSERT_TRUE(p.disable_link(*l1).ok());
    ASSERT_TRUE(p.instantiate().ok());
    EXPECT_FALSE(p.manager().attach_id_of(*l1));
    EXPECT_EQ(hooks.attached("h"), 1u);
    ASSERT_TRUE(p.enable_link(*l1).ok());
    ASSERT_TRUE(p.instantiate().ok());
    EXPECT_EQ(hooks.attached("h"), 2u);

    // A replaced program is recompiled and re-attached; the other link is left alone.
    auto l2_id = p.manager().attach_id_of(*l2);
    ASSERT_TRUE(seg->replace_program(*p1, ret(7), {}).ok());
    ASSERT_TRUE(p.instantiate().ok());
    EXPECT_EQ(p.manager().attach_id_of(*l2), l2_id);
    results = hooks.trigger("h", nullptr, 0);
    ASSERT_EQ(results.size(), 2u);
    EXPECT_EQ(*results[0], 7u);

    ASSERT_TRUE(p.destroy_object(*l2).ok());
    ASSERT_TRUE(p.instantiate().ok());
    EXPECT_EQ(hooks.attached("h"), 1u);
    p.deinstantiate();
    EXPECT_EQ(hooks.attached("h"), 0u);
    EXPECT_EQ(p.manager().attached_count(), 0u);
}

// Ring buffers and BPF_F_MMAPABLE arrays lie on pages of the segment of their own, which another
// mapping of the segment's fd at that offset shares (the interposer maps them into a loader).
TEST_F(StoreTest, MmapableMapsLieOnPagesOfTheSegment) {
    auto seg = open();
    ASSERT_TRUE(seg);
    auto small = seg->create_map("small", {maps::map_type::hash, 4, 4, 3, 0});
    auto data = seg->create_map(".bss", {maps::map_type::array, 4, 20, 1, 1024});
    auto ring = seg->create_map("events", {maps::map_type::ringbuf, 0, 0, 8192, 0});
    ASSERT_TRUE(small && data && ring);
    auto hash_region = seg->map_mmap_region(*small);
    ASSERT_FALSE(hash_region);
    EXPECT_EQ(hash_region.err().code, ENODEV);
    EXPECT_NE(hash_region.err().message.find("BPF_F_MMAPABLE"), std::string::npos);
    auto data_region = seg->map_mmap_region(*data);
    auto ring_region = seg->map_mmap_region(*ring);
    ASSERT_TRUE(data_region && ring_region);
    EXPECT_EQ(data_region->offset % 4096, 0u);
    EXPECT_EQ(data_region->length, 4096u);
    EXPECT_EQ(ring_region->offset % 4096, 0u);
    EXPECT_EQ(ring_region->length, 2 * 4096u + 8192);
    EXPECT_TRUE(ring_region->offset >= data_region->offset + data_region->length ||
                data_region->offset >= ring_region->offset + ring_region->length);

    void *p = mmap(nullptr, data_region->length, PROT_READ | PROT_WRITE, MAP_SHARED, seg->fd(),
                   static_cast<off_t>(data_region->offset));
    ASSERT_NE(p, MAP_FAILED);
    auto view = seg->map_view(*data);
    ASSERT_TRUE(view);
    uint32_t key = 0;
    std::vector<uint8_t> value(20, 0x5a);
    ASSERT_TRUE(view->write({reinterpret_cast<uint8_t *>(&key), 4}, value));
    EXPECT_EQ(static_cast<uint8_t *>(p)[19], 0x5a);
    static_cast<uint8_t *>(p)[0] = 0x11;
    EXPECT_EQ((*view->read({reinterpret_cast<uint8_t *>(&key), 4}))[0], 0x11);
    munmap(p, data_region->length);
}

TEST_F(StoreTest, BadInputsAreErrors) {
    auto seg = open();
    event_provider_impl p(seg);
    auto expect_error = [](const auto &r, int code, const std::string &text) {
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.err().code, code) << r.err().message;
        EXPECT_NE(r.err().message.find(text), std::string::npos) << r.err().message;
    };
    auto prog = p.create_program({"p", 0, "", asm_or_die("mov %r0, 0\nexit\n"), {}});
    auto map = p.create_map({"m", counter_array});
    auto target = p.create_attach_target(attach_type_test, "h");
    ASSERT_TRUE(prog && map && target);

    expect_error(p.attach_program(999, *target), ENOENT, "no object with id 999");
    expect_error(p.attach_program(*prog, 998), ENOENT, "no object with id 998");
    expect_error(p.attach_program(*map, *target), EINVAL, "is a map, not a program");
    expect_error(p.attach_program(*prog, *prog), EINVAL, "is a program, not a target");
    expect_error(p.enable_link(*prog), EINVAL, "not a link");
    expect_error(p.destroy_object(12345), ENOENT, "no object with id 12345");
    expect_error(p.create_attach_target(4242, ""), EINVAL, "unknown attach type 4242");
    expect_error(p.create_program({"bad", 0, "", asm_or_die("mov %r10, 0\nexit\n"), {}}), EINVAL,
                 "instruction 0");
    expect_error(p.create_program({"m", 0, "", asm_or_die(counter_program(777)), {777}}), ENOENT,
                 "map 777");
    expect_error(p.create_program({std::string(100, 'x'), 0, "", asm_or_die("exit\n"), {}}),
                 ENAMETOOLONG, "longer than");
    expect_error(p.create_map({"bad", {maps::map_type::array, 8, 8, 1, 0}}), EINVAL, "bad");

    auto link = p.attach_program(*prog, *target);
    ASSERT_TRUE(link.ok());
    expect_error(p.destroy_object(*prog), EBUSY, "used by object");
    expect_error(p.destroy_object(*target), EBUSY, "used by object");
    auto user = p.create_program({"u", 0, "", asm_or_die(counter_program(*map)), {*map}});
    ASSERT_TRUE(user.ok());
    expect_error(p.destroy_object(*map), EBUSY, "used by object");
    // Destroying in dependency order works.
    EXPECT_TRUE(p.destroy_object(*link).ok());
    EXPECT_TRUE(p.destroy_object(*prog).ok());
    EXPECT_TRUE(p.destroy_object(*user).ok());
    EXPECT_TRUE(p.destroy_object(*map).ok());
    EXPECT_TRUE(p.destroy_object(*target).ok());
    auto snap = seg->read_all();
    ASSERT_TRUE(snap.ok());
    EXPECT_TRUE(snap->programs.empty() && snap->maps.empty() && snap->links.empty());
}

TEST_F(StoreTest, FullSegmentAndFullTableAreErrors) {
    auto seg = open({.size = 256 << 10, .max_objects = 8});
    event_provider_impl p(seg);
    auto big = p.create_map({"big", {maps::map_type::array, 4, 1024, 4096, 0}});
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().code, ENOSPC);
    EXPECT_NE(big.err().message.find("no space left"), std::string::npos) << big.err().message;
    for (int i = 0; i < 8; i++) {
        ASSERT_TRUE(p.create_attach_target(attach_type_test, "h").ok());
    }
    auto full = p.create_attach_target(attach_type_test, "h");
    ASSERT_FALSE(full.ok());
    EXPECT_NE(full.err().message.find("all 8 object slots"), std::string::npos);
}

TEST_F(StoreTest, EveryChangeBumpsTheGeneration) {
    auto seg = open();
    event_provider_impl p(seg);
    uint64_t g0 = seg->generation();
    auto prog = p.create_program({"p", 0, "", asm_or_die("mov %r0, 0\nexit\n"), {}});
    uint64_t g1 = seg->generation();
    EXPECT_GT(g1, g0);
    auto t = p.create_attach_target(attach_type_test, "h");
    auto l = p.attach_program(*prog, *t);
    uint64_t g2 = seg->generation();
    EXPECT_GT(g2, g1);
    ASSERT_TRUE(p.disable_link(*l).ok());
    EXPECT_GT(seg->generation(), g2);
    uint64_t g3 = seg->generation();
    EXPECT_FALSE(p.destroy_object(999).ok());
    EXPECT_EQ(seg->generation(), g3) << "a refused change changes nothing";
}

TEST_F(StoreTest, WriterKilledHoldingTheLockLeavesAUsableSegment) {
    auto seg = open();
    pid_t child = fork();
    if (child == 0) {
        auto s = segment::open(name, {.create = false});
        if (s) {
            (*s)->lock_for_test();
        }
        pause();
        _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    kill(child, SIGKILL);
    EXPECT_EQ(wait_status(child), 128 + SIGKILL);
    event_provider_impl p(seg);
    auto t = p.create_attach_target(attach_type_test, "after");
    EXPECT_TRUE(t.ok()) << t.err().message;
}

TEST_F(StoreTest, WritersKilledMidUpdateLeaveNoHalfCreatedObject) {
    auto seg = open();
    event_provider_impl p(seg);
    auto map = p.create_map({"counts", counter_array});
    ASSERT_TRUE(map.ok());
    auto insns = asm_or_die(counter_program(*map));
    for (int round = 0; round < 15; round++) {
        pid_t child = spawn([&] {
            auto s = segment::open(name, {.create = false});
            if (!s) {
                return false;
            }
            event_provider_impl w(*s);
            for (int i = 0;; i++) {
                auto prog = w.create_program({"p", 0, "", insns, {*map}});
                auto t = w.create_attach_target(attach_type_test, "h");
                if (prog && t) {
                    (void)w.attach_program(*prog, *t);
                }
                if (i % 3 == 0 && prog) {
                    // Keep the table from filling up: remove some again.
                    auto snap = (*s)->read_all();
                    for (const auto &l : snap->links) {
                        (void)w.destroy_object(l.id);
                    }
                    for (const auto &pr : snap->programs) {
                        (void)w.destroy_object(pr.id);
                    }
                    for (const auto &tg : snap->targets) {
                        (void)w.destroy_object(tg.id);
                    }
                }
            }
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(5 + (round * 7) % 20));
        kill(child, SIGKILL);
        EXPECT_EQ(wait_status(child), 128 + SIGKILL);

        // Every object the next reader sees is whole, and writing still works.
        auto snap = seg->read_all();
        ASSERT_TRUE(snap.ok()) << snap.err().message;
        for (const auto &pr : snap->programs) {
            EXPECT_EQ(pr.insns.size(), insns.size());
            EXPECT_EQ(pr.map_ids, std::vector<uint32_t>{*map});
        }
        for (const auto &l : snap->links) {
            EXPECT_TRUE(std::any_of(snap->programs.begin(), snap->programs.end(),
                                    [&](const auto &pr) { return pr.id == l.prog_id; }));
        }
        auto t = p.create_attach_target(attach_type_test, "after");
        ASSERT_TRUE(t.ok()) << t.err().message;
        ASSERT_TRUE(p.destroy_object(*t).ok());
    }
}

TEST_F(StoreTest, ForeignAndOtherVersionSegmentsAreRefused) {
    // Not a bpftime segment: a shared-memory object with other content.
    int fd = shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    void *m = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(m, MAP_FAILED);
    std::memcpy(m, "NOTOURS!garbage", 15);
    auto foreign = segment::open(name);
    ASSERT_FALSE(foreign.ok());
    EXPECT_NE(foreign.err().message.find("not a bpftime segment"), std::string::npos)
        << foreign.err().message;

    // A bpftime segment of another layout version (the version follows the 8-byte magic).
    std::memset(m, 0, 1 << 20);
    munmap(m, 1 << 20);
    close(fd);
    ASSERT_TRUE(segment::remove(name).ok());
    ASSERT_TRUE(open());
    fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
    m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint32_t other = store::layout_version + 1;
    std::memcpy(static_cast<char *>(m) + 8, &other, 4);
    munmap(m, 4096);
    close(fd);
    auto old = segment::open(name);
    ASSERT_FALSE(old.ok());
    EXPECT_NE(old.err().message.find("layout version " + std::to_string(other)), std::string::npos)
        << old.err().message;

    auto missing = segment::open(name + "-missing", {.create = false});
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.err().message.find("no segment named"), std::string::npos);
    // The library states the fault; command-line flags are the command line's to suggest.
    EXPECT_EQ(missing.err().message.find("--"), std::string::npos) << missing.err().message;
}

TEST_F(StoreTest, NewSegmentsAreOwnerOnly) {
    ASSERT_TRUE(open());
    struct stat st {};
    int fd = shm_open(("/" + name).c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    fstat(fd, &st);
    close(fd);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(StoreTest, FaultingProgramIsCountedAndTheHostCarriesOn) {
    auto seg = open();
    event_provider_impl p(seg);
    auto impl = std::make_unique<callable_attach_impl>();
    auto &hooks = *impl;
    ASSERT_TRUE(p.manager().register_attach_impl(attach_type_test, std::move(impl)).ok());
    auto prog = p.create_program({"wild", 0, "", asm_or_die("ldxdw %r0, [%r1+4096]\nexit\n"), {}});
    auto t = p.create_attach_target(attach_type_test, "h");
    auto l = p.attach_program(*prog, *t);
    ASSERT_TRUE(p.instantiate().ok());
    uint64_t ctx = 0;
    auto r = hooks.trigger("h", &ctx, sizeof ctx);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_FALSE(r[0].ok());
    auto info = seg->link(*l);
    EXPECT_EQ(info->runs, 1u);
    EXPECT_EQ(info->faults, 1u);
    // The provider lists the same counts, counted, and no kernel objects.
    auto listed = p.list();
    ASSERT_TRUE(listed.ok()) << listed.err().message;
    EXPECT_TRUE(listed->counted);
    EXPECT_TRUE(listed->kernel_ids.empty());
    ASSERT_EQ(listed->objects.links.size(), 1u);
    EXPECT_EQ(listed->objects.links[0].runs, 1u);
    EXPECT_EQ(listed->objects.links[0].faults, 1u);
    EXPECT_EQ(listed->kernel_id(*l), 0u);
}

// A link (of a program that is never run) whose counters a test adds to directly.
uint32_t counted_link(segment &seg) {
    auto prog = seg.create_program("p", 0, "", asm_or_die("mov %r0, 0\nexit\n"), {});
    auto target = prog ? seg.create_target("t", attach_type_test, "h") : prog;
    auto link = target ? seg.create_link("l", *prog, *target, true) : target;
    EXPECT_TRUE(link.ok()) << link.err().message;
    return link.ok() ? *link : 0;
}

// Runs link_counters::count per_thread times on each of `threads` threads at once (more
// threads than CPUs: they are preempted and migrated) while one more thread keeps sending them
// a signal (the kernel aborts a restartable sequence a signal interrupts, so the retry path
// runs often); every third call of the odd threads counts a fault. Returns {runs, faults}.
std::pair<uint64_t, uint64_t> count_on_threads(store::link_counters c, int threads,
                                               int per_thread) {
    struct sigaction nudge = {};
    struct sigaction old = {};
    nudge.sa_handler = [](int) {};
    sigemptyset(&nudge.sa_mask);
    sigaction(SIGUSR2, &nudge, &old);
    std::atomic<int> finished{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; t++) {
        ts.emplace_back([=, &finished] {
            for (int i = 0; i < per_thread; i++) {
                c.count(t % 2 == 1 && i % 3 == 0);
            }
            finished++;
        });
    }
    std::thread nudger([&] {
        for (size_t i = 0; finished < threads; i++) {
            pthread_kill(ts[i % ts.size()].native_handle(), SIGUSR2);
            std::this_thread::sleep_for(std::chrono::microseconds(10));
        }
    });
    nudger.join();
    for (auto &t : ts) {
        t.join();
    }
    sigaction(SIGUSR2, &old, nullptr);
    return {uint64_t(threads) * per_thread, uint64_t(threads / 2) * ((per_thread + 2) / 3)};
}

constexpr int counting_threads = 8, counts_per_thread = 1000000;

bool rseq_disabled_by_tunable() {
    const char *t = std::getenv("GLIBC_TUNABLES");
    return t != nullptr && std::strstr(t, "glibc.pthread.rseq=0") != nullptr;
}

TEST_F(StoreTest, LinkCountersAreExactOnThreadsBeingMigrated) {
    if (!rseq_disabled_by_tunable()) {
        EXPECT_TRUE(store::link_counters_use_rseq()) << "glibc 2.35+ on Linux 4.18+ registers rseq";
    }
    auto seg = open();
    ASSERT_TRUE(seg);
    uint32_t link = counted_link(*seg);
    auto c = seg->counters(link);
    ASSERT_TRUE(c.ok()) << c.err().message;
    auto [runs, faults] = count_on_threads(*c, counting_threads, counts_per_thread);
    auto info = seg->link(link);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->runs, runs);
    EXPECT_EQ(info->faults, faults);
}

TEST_F(StoreTest, LinkCountersAreExactAcrossProcesses) {
    auto seg = open();
    ASSERT_TRUE(seg);
    uint32_t link = counted_link(*seg);
    auto host = [&] {
        auto s = segment::open(name, {.create = false});
        auto c = s ? (*s)->counters(link) : result<store::link_counters>(s.err());
        if (!c) {
            return false;
        }
        count_on_threads(*c, counting_threads / 2, counts_per_thread);
        return true;
    };
    pid_t a = spawn(host), b = spawn(host);
    EXPECT_EQ(wait_status(a), 0);
    EXPECT_EQ(wait_status(b), 0);
    auto info = seg->link(link);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->runs, 2 * uint64_t(counting_threads / 2) * counts_per_thread);
    EXPECT_EQ(info->faults, 2 * uint64_t(counting_threads / 4) * ((counts_per_thread + 2) / 3));
}

// Run by LinkCountersWithoutRseqAreExact in a process of its own, with rseq disabled: counts
// on the link it names and checks that the locked add was the one taken.
TEST_F(StoreTest, LinkCountersWithoutRseqHelper) {
    const char *seg_name = std::getenv("BPFTIME_TEST_COUNTERS_SEGMENT");
    const char *link_id = std::getenv("BPFTIME_TEST_COUNTERS_LINK");
    if (seg_name == nullptr || link_id == nullptr) {
        GTEST_SKIP() << "run by LinkCountersWithoutRseqAreExact";
    }
    EXPECT_FALSE(store::link_counters_use_rseq()) << "GLIBC_TUNABLES=glibc.pthread.rseq=0";
    auto seg = segment::open(seg_name, {.create = false});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    auto c = (*seg)->counters(static_cast<uint32_t>(std::strtoul(link_id, nullptr, 10)));
    ASSERT_TRUE(c.ok()) << c.err().message;
    count_on_threads(*c, counting_threads, counts_per_thread);
}

TEST_F(StoreTest, LinkCountersWithoutRseqAreExact) {
    auto seg = open();
    ASSERT_TRUE(seg);
    uint32_t link = counted_link(*seg);
    auto c = seg->counters(link);
    ASSERT_TRUE(c.ok());

    // This test binary again, only the helper above, with glibc told not to register rseq.
    std::vector<std::string> env_strings{"GLIBC_TUNABLES=glibc.pthread.rseq=0",
                                         "BPFTIME_TEST_COUNTERS_SEGMENT=" + name,
                                         "BPFTIME_TEST_COUNTERS_LINK=" + std::to_string(link)};
    for (char **e = environ; *e != nullptr; e++) {
        if (std::strncmp(*e, "GLIBC_TUNABLES=", 15) != 0 && std::strncmp(*e, "GTEST_", 6) != 0) {
            env_strings.emplace_back(*e);
        }
    }
    std::vector<char *> envp;
    for (auto &e : env_strings) {
        envp.push_back(e.data());
    }
    envp.push_back(nullptr);
    std::string filter = "--gtest_filter=StoreTest.LinkCountersWithoutRseqHelper";
    std::string self = "/proc/self/exe";
    char *argv[] = {self.data(), filter.data(), nullptr};
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        execve("/proc/self/exe", argv, envp.data());
        _exit(127);
    }
    // Meanwhile this process counts on the same link with rseq (where glibc registered it):
    // the locked adds of the other process must not land on a stripe added to without a lock.
    auto [runs, faults] = count_on_threads(*c, counting_threads, counts_per_thread);
    EXPECT_EQ(wait_status(child), 0) << "the helper process failed (its output is above)";
    auto info = seg->link(link);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->runs, 2 * runs) << "the helper process counted too";
    EXPECT_EQ(info->faults, 2 * faults);
}

} // namespace
} // namespace bpftime
