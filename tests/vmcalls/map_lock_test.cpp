// SPDX-License-Identifier: MIT
// BPF_F_LOCK through the C++ map API: reads and writes of a value holding a struct
// bpf_spin_lock (spin.bpf.c, compiled with clang -target bpf, its lock found through BTF) take
// the lock a program's bpf_spin_lock takes, so a pair the program changes under it is never
// seen torn, and the lock word itself is never copied.
#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <unistd.h>

namespace bpftime {
namespace {

const std::string objects = BPFTIME_VMCALLS_TEST_OBJECTS_DIR;

struct MapLock : test::provider_fixture {
    MapLock() : provider_fixture("bpftime-map-lock") {}

    /// A new hash map of 8 guarded values keyed by u32, its lock at offset 0.
    result<std::unique_ptr<map_access>> locked_hash(const std::string &map_name);
};

/// spin.bpf.c's struct guarded.
struct guarded {
    uint32_t lock, pad;
    uint64_t count, twice;
};

result<std::unique_ptr<map_access>> MapLock::locked_hash(const std::string &map_name) {
    map_create_spec spec;
    spec.name = map_name;
    spec.spec = maps::map_spec{maps::map_type::hash, 4, sizeof(guarded), 8, 0};
    spec.spec.spin_lock_off = 0;
    auto id = provider->create_map(spec);
    if (!id) {
        return id.err();
    }
    return provider->open_map(*id);
}

std::span<const uint8_t> bytes(const auto &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

guarded as_guarded(const std::vector<uint8_t> &v) {
    guarded g{};
    EXPECT_EQ(v.size(), sizeof g);
    std::memcpy(&g, v.data(), std::min(v.size(), sizeof g));
    return g;
}

TEST_F(MapLock, LockedPairIsNeverTornAndTheLockWordNeverCopied) {
    auto obj = test::load_elf(*provider, objects + "/spin.bpf.o");
    auto m = provider->open_map(test::id_of(obj.maps, "counter"));
    ASSERT_TRUE(m) << m.err().message;
    EXPECT_EQ((*m)->info().spec.spin_lock_off, 0) << "the lock's offset, from the value's BTF";
    auto prog = provider->manager().compile(test::id_of(obj.programs, "locked_add"));
    ASSERT_TRUE(prog) << prog.err().message;

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> runs{0};
    std::thread adder([&] {
        for (int i = 0; i < 2'000'000 && !stop.load(std::memory_order_relaxed); i++) {
            auto rc = (*prog)->run(nullptr, 0);
            ASSERT_TRUE(rc) << rc.err().message;
            runs.fetch_add(1, std::memory_order_relaxed);
        }
    });
    while (runs.load() == 0) {
        std::this_thread::yield();
    }
    const uint32_t zero = 0;
    int torn = 0, lock_seen = 0;
    for (int i = 0; i < 100'000; i++) {
        auto v = (*m)->read_locked(bytes(zero));
        ASSERT_TRUE(v) << v.err().message;
        guarded g = as_guarded(*v);
        torn += g.twice != 2 * g.count;
        lock_seen += g.lock != 0;
        if (i % 8 == 0) {
            g.lock = 0xdeadbeef; // never copied into the map
            g.count += 1000;
            g.twice = 2 * g.count;
            auto w = (*m)->write(bytes(zero), bytes(g), maps::update_lock);
            ASSERT_TRUE(w) << w.err().message;
        }
    }
    stop = true;
    adder.join();
    EXPECT_EQ(torn, 0) << "copies taken under the lock see both fields of one update";
    EXPECT_EQ(lock_seen, 0) << "a locked read gives the lock word zeroed";
    auto raw = (*m)->read(bytes(zero));
    ASSERT_TRUE(raw);
    guarded last = as_guarded(*raw);
    EXPECT_EQ(last.lock, 0u) << "free, and not the 0xdeadbeef a write carried";
    EXPECT_EQ(last.twice, 2 * last.count);
    EXPECT_GT(last.count, runs.load()) << "the writes' increments are in it";
}

TEST_F(MapLock, WritesWithoutTheFlagLeaveTheLockWordAndReadsHideIt) {
    // As Linux copies values: an update without BPF_F_LOCK writes all but the lock word, and a
    // copy out shows it zeroed. A lock word naming this (live) thread, were it written, would
    // keep the program's bpf_spin_lock waiting until it gives up after 1 s.
    auto obj = test::load_elf(*provider, objects + "/spin.bpf.o");
    auto m = provider->open_map(test::id_of(obj.maps, "counter"));
    ASSERT_TRUE(m) << m.err().message;
    auto prog = provider->manager().compile(test::id_of(obj.programs, "locked_add"));
    ASSERT_TRUE(prog) << prog.err().message;
    const uint32_t zero = 0;
    const auto me = static_cast<uint32_t>(gettid());
    guarded g{me, 0, 5, 10};
    ASSERT_TRUE((*m)->write(bytes(zero), bytes(g), 0));
    auto rc = (*prog)->run(nullptr, 0);
    ASSERT_TRUE(rc) << rc.err().message;
    EXPECT_EQ(*rc, 6u) << "the write's count, and the lock free";
    auto raw = (*m)->read(bytes(zero));
    ASSERT_TRUE(raw);
    EXPECT_EQ(as_guarded(*raw).lock, 0u);
    EXPECT_EQ(as_guarded(*raw).count, 6u);
    EXPECT_EQ(as_guarded(*raw).twice, 12u);

    // A hash: a new key's lock starts free, and an update of a present key keeps it.
    auto h = locked_hash("plain_locked_hash");
    ASSERT_TRUE(h) << h.err().message;
    const uint32_t one = 1;
    ASSERT_TRUE((*h)->write(bytes(one), bytes(g), maps::update_noexist));
    g.count = 7;
    ASSERT_TRUE((*h)->write(bytes(one), bytes(g), maps::update_exist));
    EXPECT_EQ((*h)->write(bytes(one), bytes(g), maps::update_noexist).err().code, EEXIST);
    // A locked read takes the lock at once: the word is free, not this thread's id.
    auto locked = (*h)->read_locked(bytes(one));
    ASSERT_TRUE(locked) << locked.err().message;
    EXPECT_EQ(as_guarded(*locked).count, 7u);
}

TEST_F(MapLock, RefusedOnMapsWithoutALockAndFlagsKept) {
    auto obj = test::load_elf(*provider, objects + "/dispatch.bpf.o");
    auto plain = provider->open_map(test::id_of(obj.maps, "choice"));
    ASSERT_TRUE(plain);
    EXPECT_EQ((*plain)->info().spec.spin_lock_off, -1);
    const uint32_t zero = 0, one = 1;
    auto r = (*plain)->read_locked(bytes(zero));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(r.err().message.find("(choice) has no struct bpf_spin_lock in its value"),
              std::string::npos)
        << r.err().message;
    auto w = (*plain)->write(bytes(zero), bytes(one), maps::update_lock);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.err().code, EINVAL);

    // A hash map with a lock: a new key's lock word starts free; BPF_NOEXIST and BPF_EXIST
    // keep their meaning under BPF_F_LOCK.
    auto h = locked_hash("locked_hash");
    ASSERT_TRUE(h) << h.err().message;
    guarded g{0xdeadbeef, 0, 3, 6};
    EXPECT_EQ((*h)->write(bytes(one), bytes(g), maps::update_lock | maps::update_exist).err().code,
              ENOENT);
    ASSERT_TRUE((*h)->write(bytes(one), bytes(g), maps::update_lock | maps::update_noexist));
    auto raw = (*h)->read(bytes(one));
    ASSERT_TRUE(raw);
    EXPECT_EQ(as_guarded(*raw).lock, 0u);
    EXPECT_EQ(as_guarded(*raw).count, 3u);
    EXPECT_EQ(
        (*h)->write(bytes(one), bytes(g), maps::update_lock | maps::update_noexist).err().code,
        EEXIST);
    g.count = 4;
    ASSERT_TRUE((*h)->write(bytes(one), bytes(g), maps::update_lock | maps::update_exist));
    auto locked = (*h)->read_locked(bytes(one));
    ASSERT_TRUE(locked);
    EXPECT_EQ(as_guarded(*locked).count, 4u);
    EXPECT_EQ((*h)->read_locked(bytes(zero)).err().code, ENOENT);

    // A lock where the value cannot hold one is refused at creation.
    map_create_spec spec;
    spec.name = "bad_lock";
    spec.spec = maps::map_spec{maps::map_type::hash, 4, sizeof(guarded), 8, 0};
    spec.spec.spin_lock_off = 22;
    auto bad = provider->create_map(spec);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.err().message.find("struct bpf_spin_lock at offset 22"), std::string::npos)
        << bad.err().message;
}

} // namespace
} // namespace bpftime
