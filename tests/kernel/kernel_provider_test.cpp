// SPDX-License-Identifier: MIT
// kernel_event_provider on the real kernel: uprobes, uretprobes and tracepoints counting real
// calls, links that really detach, the verifier's refusal as the message, objects pinned in
// bpffs outliving their creator, nothing left after reset, every bad input, and map access
// that reads the same as the user-space provider's.
#include <bpftime/attach/attach.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/provider/kernel_provider.hpp>
#include <bpftime/store/store.hpp>

#include "../provider_fixture.hpp"

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>

namespace bpftime {
namespace {

using test::id_of;

/// A function of this test binary for probes, called in-process right after detaching.
extern "C" __attribute__((noinline, used)) long bpftime_ktest_probed(long key, long value) {
    __asm__ volatile("" ::: "memory");
    return key + value;
}

const std::string examples = BPFTIME_EXAMPLES_DIR;
const std::string target_binary = BPFTIME_PROBE_TARGET;
const std::string probed = target_binary + ":bpftime_target_add";

std::vector<uint8_t> u32_bytes(uint32_t v) {
    std::vector<uint8_t> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
}

std::vector<uint8_t> u64_bytes(uint64_t v) {
    std::vector<uint8_t> b(8);
    std::memcpy(b.data(), &v, 8);
    return b;
}

uint64_t as_u64(const std::vector<uint8_t> &b) {
    uint64_t v = 0;
    std::memcpy(&v, b.data(), std::min<size_t>(b.size(), 8));
    return v;
}

/// What probe_target printed: the calls it made and the sum of what they returned.
struct target_run {
    uint64_t calls = 0;
    uint64_t sum = 0;
};

target_run run_target(uint64_t calls, int threads) {
    std::string cmd = target_binary + " " + std::to_string(calls) + " " + std::to_string(threads);
    FILE *f = ::popen(cmd.c_str(), "r");
    target_run out;
    if (f == nullptr) {
        ADD_FAILURE() << "cannot run " << cmd;
        return out;
    }
    unsigned long long c = 0, s = 0;
    EXPECT_EQ(std::fscanf(f, "calls %llu sum %llu", &c, &s), 2) << cmd;
    EXPECT_EQ(::pclose(f), 0) << cmd;
    out.calls = c;
    out.sum = s;
    return out;
}

class KernelProvider : public ::testing::Test {
protected:
    void SetUp() override {
        if (auto ok = kernel_event_provider::available(); !ok) {
            GTEST_SKIP() << "kernel provider tests need the kernel's eBPF: " << ok.err().message;
        }
        name_ = std::string("bpftime-ktest-") + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)kernel_event_provider::remove(name_);
        auto p = kernel_event_provider::open(name_, true);
        ASSERT_TRUE(p) << p.err().message;
        provider_ = std::move(*p);
    }

    void TearDown() override {
        provider_.reset();
        if (!name_.empty()) {
            (void)kernel_event_provider::remove(name_);
        }
    }

    loaded_object load(const std::string &path) { return test::load_elf(*provider_, path); }

    uint32_t attach(uint32_t prog, int32_t type, const std::string &args) {
        return test::attach(*provider_, prog, type, args);
    }

    uint64_t read_u64(uint32_t map, const std::vector<uint8_t> &key) {
        auto m = provider_->open_map(map);
        EXPECT_TRUE(m) << m.err().message;
        if (!m) {
            return 0;
        }
        auto v = (*m)->read(key);
        return v ? as_u64(*v) : 0;
    }

    std::string name_;
    std::unique_ptr<kernel_event_provider> provider_;
};

TEST_F(KernelProvider, UprobeAndUretprobeCountEveryCallOnEveryThread) {
    auto obj = load(examples + "/uprobe_count.bpf.o");
    uint32_t calls = id_of(obj.maps, "calls"), totals = id_of(obj.maps, "totals");
    attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, probed);
    attach(id_of(obj.programs, "count_return"), attach_type_uretprobe, probed);

    target_run run = run_target(2000, 4);
    ASSERT_EQ(run.calls, 8000u);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 8000u) << "calls seen on entry";
    EXPECT_EQ(read_u64(totals, u32_bytes(1)), 8000u) << "returns seen";
    EXPECT_EQ(read_u64(totals, u32_bytes(2)), run.sum) << "the sum of the returned values";
    // bpftime_target_add(i % 8, i): each first argument 0..7 comes 250 times per thread.
    for (uint64_t key = 0; key < 8; key++) {
        EXPECT_EQ(read_u64(calls, u64_bytes(key)), 1000u) << "first argument " << key;
    }
}

TEST_F(KernelProvider, DisabledAndDestroyedLinksReallyDetach) {
    auto obj = load(examples + "/uprobe_count.bpf.o");
    uint32_t totals = id_of(obj.maps, "totals");
    uint32_t link = attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, probed);
    run_target(100, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 100u);

    ASSERT_TRUE(provider_->disable_link(link));
    run_target(100, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 100u) << "a disabled link still counted";
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->objects.links.size(), 1u);
    EXPECT_FALSE(snap->objects.links[0].enabled);
    EXPECT_EQ(snap->kernel_id(snap->objects.links[0].id), 0u);
    EXPECT_FALSE(snap->counted) << "the kernel provider counts no runs";

    ASSERT_TRUE(provider_->enable_link(link));
    run_target(100, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 200u) << "an enabled link did not count";

    ASSERT_TRUE(provider_->destroy_object(link));
    run_target(100, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 200u) << "a destroyed link still counted";
}

// Disabling or destroying a link has detached it by the time the call returns: a call made at
// once is not counted.
TEST_F(KernelProvider, DetachingIsDoneWhenTheCallReturns) {
    auto obj = load(examples + "/uprobe_count.bpf.o");
    uint32_t totals = id_of(obj.maps, "totals");
    uint32_t link = attach(id_of(obj.programs, "count_entry"), attach_type_uprobe,
                           "/proc/self/exe:bpftime_ktest_probed");
    for (int round = 0; round < 20; round++) {
        uint64_t before = read_u64(totals, u32_bytes(0));
        EXPECT_EQ(bpftime_ktest_probed(round, 1), round + 1);
        ASSERT_EQ(read_u64(totals, u32_bytes(0)), before + 1) << "round " << round;
        ASSERT_TRUE(provider_->disable_link(link));
        bpftime_ktest_probed(round, 2);
        ASSERT_EQ(read_u64(totals, u32_bytes(0)), before + 1)
            << "a call right after disable_link was counted, round " << round;
        ASSERT_TRUE(provider_->enable_link(link));
    }
    ASSERT_TRUE(provider_->destroy_object(link));
    uint64_t before = read_u64(totals, u32_bytes(0));
    bpftime_ktest_probed(1, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), before) << "a call right after destroy was counted";
}

TEST_F(KernelProvider, DeinstantiateDetachesAndInstantiateReattaches) {
    auto obj = load(examples + "/uprobe_count.bpf.o");
    uint32_t totals = id_of(obj.maps, "totals");
    attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, probed);
    provider_->deinstantiate();
    run_target(50, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 0u);
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->objects.links[0].enabled) << "deinstantiate keeps the records";
    EXPECT_EQ(snap->kernel_id(snap->objects.links[0].id), 0u);
    ASSERT_TRUE(provider_->instantiate());
    run_target(50, 1);
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 50u);
}

TEST_F(KernelProvider, TracepointCountsThisProcessAndFeedsTheRingBuffer) {
    auto pid = static_cast<uint32_t>(::getpid()); // before the probe counts it
    auto obj = load(examples + "/tracepoint_count.bpf.o");
    uint32_t counts = id_of(obj.maps, "getpid_calls");
    uint32_t events = id_of(obj.maps, "getpid_events");
    attach(id_of(obj.programs, "count_getpid"), attach_type_tracepoint,
           "syscalls:sys_enter_getpid");
    for (int i = 0; i < 100; i++) {
        ::syscall(SYS_getpid);
    }
    EXPECT_EQ(read_u64(counts, u32_bytes(pid)), 100u);
    auto ring = provider_->open_map(events);
    ASSERT_TRUE(ring);
    uint64_t ours = 0;
    for (int round = 0; round < 100; round++) {
        auto n = (*ring)->consume(
            [&](std::span<const uint8_t> rec) {
                uint32_t who = 0;
                ASSERT_EQ(rec.size(), 4u);
                std::memcpy(&who, rec.data(), 4);
                ours += who == pid ? 1 : 0;
            },
            UINT64_MAX);
        ASSERT_TRUE(n) << n.err().message;
        if (*n == 0) {
            break;
        }
    }
    EXPECT_EQ(ours, 100u) << "ring-buffer records from this process";
}

TEST_F(KernelProvider, TheVerifiersRefusalIsTheMessage) {
    auto obj =
        loader::open_elf(std::string(BPFTIME_KERNEL_TEST_OBJECTS_DIR) + "/unchecked_lookup.bpf.o");
    ASSERT_TRUE(obj) << obj.err().message;
    auto loaded = load_object(*provider_, *obj);
    ASSERT_FALSE(loaded);
    const std::string &msg = loaded.err().message;
    EXPECT_NE(msg.find("program unchecked_lookup: the kernel verifier refused it"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("invalid mem access 'map_value_or_null'"), std::string::npos) << msg;
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    EXPECT_TRUE(snap->objects.maps.empty()) << "the object's map was not released";
}

TEST_F(KernelProvider, ObjectsOutliveTheProcessThatMadeThem) {
    // A child process loads and attaches, then exits; the probes keep counting.
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        auto p = kernel_event_provider::open(name_, false);
        auto obj = loader::open_elf(examples + "/uprobe_count.bpf.o");
        if (!p || !obj) {
            ::_exit(1);
        }
        auto loaded = load_object(**p, *obj);
        if (!loaded) {
            ::_exit(2);
        }
        auto target = (*p)->create_attach_target(attach_type_uprobe, probed);
        if (!target || !(*p)->attach_program(loaded->programs[0].second == "count_entry"
                                                 ? loaded->programs[0].first
                                                 : loaded->programs[1].first,
                                             *target)) {
            ::_exit(3);
        }
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    run_target(300, 2);
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    ASSERT_EQ(snap->objects.maps.size(), 2u);
    ASSERT_EQ(snap->objects.links.size(), 1u);
    EXPECT_NE(snap->kernel_id(snap->objects.links[0].id), 0u);
    uint32_t totals = snap->objects.maps[0].name == "totals" ? snap->objects.maps[0].id
                                                             : snap->objects.maps[1].id;
    EXPECT_EQ(read_u64(totals, u32_bytes(0)), 600u);
}

TEST_F(KernelProvider, ResetReleasesEveryKernelObject) {
    auto obj = load(examples + "/uprobe_count.bpf.o");
    attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, probed);
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    std::vector<uint32_t> progs, maps_ids, links;
    for (const auto &p : snap->objects.programs) {
        progs.push_back(snap->kernel_id(p.id));
    }
    for (const auto &m : snap->objects.maps) {
        maps_ids.push_back(snap->kernel_id(m.id));
    }
    for (const auto &l : snap->objects.links) {
        links.push_back(snap->kernel_id(l.id));
    }
    ASSERT_EQ(progs.size(), 2u);
    ASSERT_EQ(links.size(), 1u);
    std::string folder = provider_->location();
    provider_.reset();
    ASSERT_TRUE(kernel_event_provider::remove(name_));
    struct stat st {};
    EXPECT_NE(::stat(folder.c_str(), &st), 0) << folder << " is still there";
    // The kernel frees objects after a grace period: wait for it, boundedly.
    auto gone = [&] {
        for (uint32_t id : progs) {
            int fd = bpf_prog_get_fd_by_id(id);
            if (fd >= 0) {
                ::close(fd);
                return false;
            }
        }
        for (uint32_t id : maps_ids) {
            int fd = bpf_map_get_fd_by_id(id);
            if (fd >= 0) {
                ::close(fd);
                return false;
            }
        }
        for (uint32_t id : links) {
            int fd = bpf_link_get_fd_by_id(id);
            if (fd >= 0) {
                ::close(fd);
                return false;
            }
        }
        return true;
    };
    bool released = false;
    for (int i = 0; i < 100 && !released; i++) {
        released = gone();
        if (!released) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    EXPECT_TRUE(released) << "kernel objects outlived reset";
    auto again = kernel_event_provider::open(name_, false);
    ASSERT_FALSE(again);
    EXPECT_NE(again.err().message.find("does not exist"), std::string::npos) << again.err().message;
}

TEST_F(KernelProvider, BadInputGetsAClearErrorAndChangesNothing) {
    auto obj = load(examples + "/uprobe_count.bpf.o");
    uint32_t entry = id_of(obj.programs, "count_entry");
    uint32_t calls = id_of(obj.maps, "calls");
    auto expect_error = [](const auto &r, const std::string &text) {
        ASSERT_FALSE(r) << "expected: " << text;
        EXPECT_NE(r.err().message.find(text), std::string::npos) << r.err().message;
    };
    expect_error(provider_->destroy_object(999), "no object with id 999");
    expect_error(provider_->enable_link(999), "no object with id 999");
    expect_error(provider_->disable_link(calls), "is a map, not a link");
    expect_error(provider_->open_map(entry), "is a program, not a map");
    expect_error(provider_->attach_program(calls, 1), "is a map, not a program");
    expect_error(provider_->create_attach_target(attach_type_nginx_url, ""),
                 "attach type nginx-url has no counterpart in the kernel");
    expect_error(provider_->create_attach_target(attach_type_test, "hook"),
                 "has no counterpart in the kernel");
    expect_error(provider_->create_attach_target(77, ""), "unknown attach type 77");
    expect_error(provider_->create_attach_target(attach_type_uprobe, target_binary + ":nope"),
                 "no function 'nope'");
    expect_error(provider_->create_attach_target(attach_type_uprobe, "/no/such/binary:f"),
                 "/no/such/binary");
    expect_error(provider_->create_attach_target(attach_type_tracepoint, "syscalls:nope"),
                 "syscalls:nope");
    auto tp = provider_->create_attach_target(attach_type_tracepoint, "syscalls:sys_enter_getpid");
    ASSERT_TRUE(tp) << tp.err().message;
    expect_error(provider_->attach_program(entry, *tp),
                 "is a kprobe program; tracepoint targets take tracepoint programs");
    expect_error(provider_->destroy_object(calls),
                 "map " + std::to_string(calls) + " is used by object " + std::to_string(entry));
    program_spec untyped{"untyped", 0, "test", {{0xb7, 0, 0, 0, 0}, {0x95, 0, 0, 0, 0}}, {}};
    expect_error(provider_->create_program(untyped), "has no program type");
    program_spec missing_map{"missing",
                             2,
                             "uprobe",
                             {{0x18, 1, 1, 0, 4242}, {0, 0, 0, 0, 0}, {0x95, 0, 0, 0, 0}},
                             {4242}};
    expect_error(provider_->create_program(missing_map), "no object with id 4242");
    map_create_spec bad_map{"bad", {maps::map_type::hash, 0, 8, 16, 0}, {}, false};
    expect_error(provider_->create_map(bad_map), "the kernel refused it");
    // Nothing above created anything but the one tracepoint target.
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->objects.programs.size(), 2u);
    EXPECT_EQ(snap->objects.maps.size(), 2u);
    EXPECT_EQ(snap->objects.targets.size(), 1u);
    EXPECT_TRUE(snap->objects.links.empty());
}

TEST_F(KernelProvider, ForeignFoldersAndNamesAreRefused) {
    std::string foreign = name_ + "-foreign";
    std::string folder = std::string(bpffs_root) + "/" + foreign;
    ASSERT_EQ(::mkdir(folder.c_str(), 0700), 0) << std::strerror(errno);
    auto p = kernel_event_provider::open(foreign, false);
    ASSERT_FALSE(p);
    EXPECT_NE(p.err().message.find("is not a bpftime folder"), std::string::npos)
        << p.err().message;
    // A pinned object bpftime did not make: reset refuses and removes nothing.
    int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "other", 4, 8, 1, nullptr);
    ASSERT_GE(fd, 0);
    std::string other = provider_->location() + "/other";
    ASSERT_EQ(bpf_obj_pin(fd, other.c_str()), 0);
    ::close(fd);
    auto r = kernel_event_provider::remove(name_);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("holds other, which bpftime did not create"), std::string::npos)
        << r.err().message;
    EXPECT_TRUE(provider_->list()) << "the folder was damaged by a refused reset";
    ::unlink(other.c_str());
    ::rmdir(folder.c_str());
    for (const char *bad : {"a/b", "..", "/"}) {
        auto q = kernel_event_provider::open(bad, true);
        ASSERT_FALSE(q) << bad;
        EXPECT_NE(q.err().message.find("cannot name a folder in bpffs"), std::string::npos)
            << q.err().message;
    }
}

TEST_F(KernelProvider, TwoProcessesCreatingAtOnceGetDistinctIds) {
    constexpr int per_child = 15;
    pid_t children[2];
    for (pid_t &c : children) {
        c = ::fork();
        ASSERT_GE(c, 0);
        if (c == 0) {
            auto p = kernel_event_provider::open(name_, false);
            if (!p) {
                ::_exit(1);
            }
            for (int i = 0; i < per_child; i++) {
                if (!(*p)->create_map({"m", {maps::map_type::array, 4, 8, 1, 0}, {}, false})) {
                    ::_exit(2);
                }
            }
            ::_exit(0);
        }
    }
    for (pid_t c : children) {
        int status = 0;
        ASSERT_EQ(::waitpid(c, &status, 0), c);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    }
    auto snap = provider_->list();
    ASSERT_TRUE(snap);
    std::map<uint32_t, int> ids;
    for (const auto &m : snap->objects.maps) {
        ids[m.id]++;
    }
    EXPECT_EQ(ids.size(), 2u * per_child);
}

// The same map operations through both providers read back the same bytes and fail the same.
TEST_F(KernelProvider, MapsReadTheSameAsInUserSpace) {
    std::string shm = name_ + "-user";
    (void)store::segment::remove(shm);
    auto seg = store::segment::open(shm, {.create = true});
    ASSERT_TRUE(seg) << seg.err().message;
    event_provider_impl user(*seg);
    std::vector<map_create_spec> specs = {
        {"h", {maps::map_type::hash, 4, 8, 16, 0}, {}, false},
        {"a", {maps::map_type::array, 4, 8, 4, 0}, {}, false},
        {"pa", {maps::map_type::percpu_array, 4, 12, 2, 0}, {}, false},
        {"ph", {maps::map_type::percpu_hash, 4, 4, 4, 0}, {}, false},
        {"lph", {maps::map_type::lru_percpu_hash, 4, 4, 4, 0}, {}, false},
    };
    for (const map_create_spec &spec : specs) {
        SCOPED_TRACE(spec.name);
        auto uid = user.create_map(spec);
        auto kid = provider_->create_map(spec);
        ASSERT_TRUE(uid && kid);
        auto u = user.open_map(*uid);
        auto k = provider_->open_map(*kid);
        ASSERT_TRUE(u && k);
        std::vector<uint8_t> value((*u)->info().spec.value_size, 0x5a);
        auto same = [&](const auto &a, const auto &b, const char *what) {
            ASSERT_EQ(a.ok(), b.ok()) << what;
            if (!a.ok()) {
                EXPECT_EQ(a.err().message, b.err().message) << what;
            }
        };
        for (auto *m : {u->get(), k->get()}) {
            (void)m->write(u32_bytes(1), value, maps::update_any);
            (void)m->write(u32_bytes(3), u64_bytes(7), maps::update_any);
            (void)m->erase(u32_bytes(3));
        }
        same((*u)->write(u32_bytes(1), value, maps::update_noexist),
             (*k)->write(u32_bytes(1), value, maps::update_noexist), "update noexist");
        same((*u)->write(u32_bytes(9), value, maps::update_exist),
             (*k)->write(u32_bytes(9), value, maps::update_exist), "update exist, absent");
        same((*u)->erase(u32_bytes(2)), (*k)->erase(u32_bytes(2)), "erase");
        same((*u)->read(u32_bytes(2)), (*k)->read(u32_bytes(2)), "read");
        same((*u)->read(std::vector<uint8_t>(3)), (*k)->read(std::vector<uint8_t>(3)), "short key");
        // Every key and value, in order of keys.
        auto dump = [](map_access &m) {
            std::map<std::vector<uint8_t>, std::vector<uint8_t>> out;
            std::vector<uint8_t> key;
            for (int i = 0; i < 64; i++) {
                auto next = m.next_key(key);
                if (!next || !*next) {
                    break;
                }
                key = **next;
                if (auto v = m.read(key)) {
                    out[key] = *v;
                }
            }
            return out;
        };
        EXPECT_EQ(dump(**u), dump(**k));
        EXPECT_EQ((*u)->count(), (*k)->count());
    }
    (void)store::segment::remove(shm);
}

} // namespace
} // namespace bpftime
