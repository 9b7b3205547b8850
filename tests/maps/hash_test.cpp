// SPDX-License-Identifier: MIT
// hash and lru_hash in one process: semantics, errors, eviction, and garbage in storage.
#include "test_util.hpp"

#include "layout.hpp" // the header, to scribble over its counters

#include <array>
#include <random>
#include <set>

namespace bpftime::maps::test {
namespace {

constexpr map_spec spec{map_type::hash, 4, 8, 64, 0};

long put(const shm_map &m, uint32_t key, uint64_t value, uint64_t flags = update_any) {
    return m->update(&key, &value, flags);
}

std::optional<uint64_t> get(const shm_map &m, uint32_t key) {
    auto *p = static_cast<uint64_t *>(m->lookup(&key));
    return p ? std::optional(*p) : std::nullopt;
}

// Every key next_key reports, bounded so a broken chain cannot hang the test.
std::vector<std::vector<uint8_t>> all_keys(const map_view &v, size_t limit = 10000) {
    std::vector<std::vector<uint8_t>> keys;
    std::vector<uint8_t> key;
    while (keys.size() < limit) {
        auto next = v.next_key(key);
        if (!next || !*next) {
            break;
        }
        key = **next;
        keys.push_back(key);
    }
    return keys;
}

TEST(HashMap, InsertLookupDelete) {
    shm_map m(spec);
    EXPECT_EQ(get(m, 1), std::nullopt);
    EXPECT_EQ(put(m, 1, 100), 0);
    EXPECT_EQ(put(m, 2, 200), 0);
    EXPECT_EQ(get(m, 1), 100u);
    EXPECT_EQ(from_bytes<uint64_t>(must(m->read(bytes(uint32_t{2})))), 200u);
    EXPECT_EQ(m->count(), 2u);
    uint32_t key = 1;
    EXPECT_EQ(m->remove(&key), 0);
    EXPECT_EQ(get(m, 1), std::nullopt);
    EXPECT_EQ(m->count(), 1u);
    EXPECT_TRUE(m->erase(bytes(uint32_t{2})));
    EXPECT_EQ(m->count(), 0u);
}

TEST(HashMap, ValuesLiveInTheValueAreaKeysDoNot) {
    shm_map m(spec);
    auto area = m->value_area();
    for (uint32_t k = 0; k < 64; k++) {
        ASSERT_EQ(put(m, k, 0xabcdef0000000000ull | k), 0);
    }
    for (uint32_t k = 0; k < 64; k++) {
        auto *p = static_cast<uint8_t *>(m->lookup(&k));
        ASSERT_GE(p, area.data());
        ASSERT_LE(p + 8, area.data() + area.size());
    }
    // A program scribbling over every value cannot disturb the keys or the chains.
    std::memset(area.data(), 0xff, area.size());
    EXPECT_EQ(all_keys(m.view()).size(), 64u);
    EXPECT_EQ(get(m, 17), UINT64_MAX);
    uint32_t key = 17;
    EXPECT_EQ(m->remove(&key), 0);
    EXPECT_EQ(put(m, 99, 5), 0);
    EXPECT_EQ(get(m, 99), 5u);
}

TEST(HashMap, UpdateFlags) {
    shm_map m(spec);
    EXPECT_EQ(put(m, 1, 1, update_exist), -ENOENT);
    EXPECT_EQ(put(m, 1, 1, update_noexist), 0);
    EXPECT_EQ(put(m, 1, 2, update_noexist), -EEXIST);
    EXPECT_EQ(get(m, 1), 1u);
    EXPECT_EQ(put(m, 1, 3, update_exist), 0);
    EXPECT_EQ(get(m, 1), 3u);
    EXPECT_EQ(put(m, 1, 4, 3), -EINVAL);
    EXPECT_EQ(put(m, 1, 4, 1ull << 32), -EINVAL);
    EXPECT_EQ(put(m, 5, 4, 4), -EINVAL); // BPF_F_LOCK: values have no spin lock here
    EXPECT_EQ(get(m, 1), 3u);

    uint32_t absent = 7;
    EXPECT_EQ(m->remove(&absent), -ENOENT);
    EXPECT_EQ(m->erase(bytes(absent)).err().code, ENOENT);
    EXPECT_EQ(m->read(bytes(absent)).err().code, ENOENT);
    auto w = m->write(bytes(absent), bytes(uint64_t{1}), update_exist);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.err().code, ENOENT);
    EXPECT_EQ(m->write(bytes(uint32_t{1}), bytes(uint64_t{1}), update_noexist).err().code, EEXIST);
    EXPECT_EQ(m->write(bytes(uint32_t{1}), bytes(uint64_t{1}), 3).err().code, EINVAL);
}

TEST(HashMap, FullMapRefusesNewKeysWithE2big) {
    shm_map m(spec);
    for (uint32_t k = 0; k < 64; k++) {
        ASSERT_EQ(put(m, k, k), 0) << k;
    }
    EXPECT_EQ(put(m, 1000, 1), -E2BIG);
    auto w = m->write(bytes(uint32_t{1000}), bytes(uint64_t{1}));
    ASSERT_FALSE(w);
    EXPECT_EQ(w.err().code, E2BIG);
    EXPECT_EQ(put(m, 5, 55), 0) << "updating an existing key needs no room";
    EXPECT_EQ(m->count(), 64u);
    uint32_t key = 9;
    EXPECT_EQ(m->remove(&key), 0);
    EXPECT_EQ(put(m, 1000, 1), 0);
    EXPECT_EQ(get(m, 1000), 1u);
    EXPECT_EQ(get(m, 5), 55u);
}

TEST(HashMap, NextKeyVisitsEveryKeyOnce) {
    shm_map m(spec);
    std::set<uint32_t> want;
    for (uint32_t k = 0; k < 50; k++) {
        ASSERT_EQ(put(m, k * 7919, k), 0);
        want.insert(k * 7919);
    }
    std::multiset<uint32_t> seen;
    for (const auto &key : all_keys(m.view())) {
        seen.insert(from_bytes<uint32_t>(key));
    }
    EXPECT_EQ(seen, std::multiset<uint32_t>(want.begin(), want.end()));
    // An absent key starts over, as in Linux.
    auto first = must(m->next_key({}));
    EXPECT_EQ(must(m->next_key(bytes(uint32_t{1}))), first);
    EXPECT_FALSE(must(shm_map(spec)->next_key({})).has_value());
}

TEST(HashMap, NextKeySkipsEntriesNotInUse) {
    // Buckets naming an entry that is not in use (damage, or a removal in progress) must not
    // make a walk report that entry's stale key, nor start it over for ever.
    shm_map m(spec);
    ASSERT_EQ(put(m, 5, 1), 0);
    auto *heads = reinterpret_cast<uint32_t *>(m.region().data() + sizeof(detail::map_header));
    const uint32_t nbuckets = 64; // max_entries rounded up to a power of two
    uint32_t used = detail::none;
    for (uint32_t b = 0; b < nbuckets; b++) {
        if (heads[b] != detail::none) {
            used = heads[b];
        }
    }
    ASSERT_LT(used, spec.max_entries);
    for (uint32_t b = 0; b < nbuckets; b++) {
        if (heads[b] == detail::none) {
            heads[b] = (used + 1) % spec.max_entries;
        }
    }
    auto keys = all_keys(m.view());
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(from_bytes<uint32_t>(keys[0]), 5u);
}

TEST(HashMap, OddKeySizes) {
    shm_map m(map_spec{map_type::hash, 13, 3, 100, 0});
    std::vector<uint8_t> key(13), value(3);
    for (uint8_t i = 0; i < 100; i++) {
        key[i % 13] = i;
        value = {i, uint8_t(i + 1), uint8_t(i + 2)};
        ASSERT_TRUE(m->write(key, value, update_noexist)) << int(i);
    }
    EXPECT_EQ(m->count(), 100u);
    EXPECT_EQ(all_keys(m.view()).size(), 100u);
    EXPECT_EQ(must(m->read(key)), (std::vector<uint8_t>{99, 100, 101}));
}

TEST(LruHashMap, EvictsTheLeastRecentlyUsed) {
    shm_map m(map_spec{map_type::lru_hash, 4, 8, 64, 0});
    for (uint32_t k = 0; k < 64; k++) {
        ASSERT_EQ(put(m, k, k), 0);
    }
    for (uint32_t k = 0; k < 10; k++) {
        ASSERT_TRUE(get(m, k));
    }
    EXPECT_EQ(put(m, 0, 1000, update_exist), 0) << "an update when full evicts nothing";
    EXPECT_EQ(m->count(), 64u);
    for (uint32_t k = 64; k < 84; k++) {
        ASSERT_EQ(put(m, k, k), 0) << "lru_hash evicts instead of failing";
    }
    EXPECT_EQ(m->count(), 64u);
    for (uint32_t k = 0; k < 84; k++) {
        bool evicted = k >= 10 && k < 30;
        EXPECT_EQ(get(m, k).has_value(), !evicted) << "key " << k;
    }
    EXPECT_EQ(get(m, 0), 1000u);
    EXPECT_EQ(all_keys(m.view()).size(), 64u);
}

TEST(LruHashMap, LargeMapsKeepRecentlyUsedKeys) {
    // Beyond the eviction sample the choice is approximate, but a key used since the last
    // insert is never older than an unused one.
    shm_map m(map_spec{map_type::lru_hash, 4, 8, 2000, 0});
    for (uint32_t k = 0; k < 2000; k++) {
        ASSERT_EQ(put(m, k, k), 0);
    }
    for (uint32_t round = 0; round < 500; round++) {
        for (uint32_t k = 0; k < 50; k++) {
            ASSERT_TRUE(get(m, k)) << "hot key " << k << " evicted in round " << round;
        }
        ASSERT_EQ(put(m, 10000 + round, round), 0);
    }
    EXPECT_EQ(m->count(), 2000u);
}

TEST(HashMap, GarbageInStorageNeverLeadsOutside) {
    // Another process could leave anything in the bookkeeping; every index is checked and
    // every walk bounded (ASan builds check that no access leaves the storage).
    for (auto type : {map_type::hash, map_type::lru_hash, map_type::percpu_hash}) {
        shm_map m(map_spec{type, 4, 8, 64, 0});
        for (uint32_t k = 0; k < 40; k++) {
            ASSERT_EQ(put(m, k, k), 0);
        }
        std::mt19937_64 rng(static_cast<uint64_t>(type));
        uint8_t *base = m.region().data();
        auto scribble = [&](uint8_t *from, uint8_t *to) {
            for (uint8_t *p = from; p < to; p++) {
                *p = static_cast<uint8_t>(rng() % 4 == 0 ? 0xff : rng());
            }
        };
        uint8_t *values = m->value_area().data();
        // The header's counters (not the lock) and all bookkeeping up to the values.
        scribble(base + offsetof(detail::map_header, count),
                 base + offsetof(detail::map_header, dropped));
        scribble(base + sizeof(detail::map_header), values);
        for (uint32_t k = 0; k < 200; k++) {
            (void)get(m, k);
            (void)put(m, k, k);
            (void)put(m, k + 1000, k, update_noexist);
            uint32_t key = k / 2;
            (void)m->remove(&key);
        }
        (void)all_keys(m.view(), 1000);
        EXPECT_LE(m->count(), 64u);
    }
}

// What compiled code calls for a lookup (lookup_plan's find call) finds what lookup() finds, for
// every key size, value size and hash type, present and absent keys alike. lookup() walks plain
// hash maps of 4- and 8-byte keys and value strides of a power of two inline; the others call
// the same function compiled code does.
TEST(Hash, CompiledCodesFindCallFindsWhatLookupFinds) {
    pin_cpu pin; // per-CPU maps: updates and lookups on one CPU's slot
    for (auto type : {map_type::hash, map_type::lru_hash, map_type::percpu_hash}) {
        for (uint32_t key_size : {4u, 8u, 12u}) {
            for (uint32_t value_size : {4u, 8u, 12u, 24u}) {
                SCOPED_TRACE(std::string(map_type_name(type)) + " key_size " +
                             std::to_string(key_size) + " value_size " +
                             std::to_string(value_size));
                shm_map m(map_spec{type, key_size, value_size, 32, 0});
                auto plan = m->lookup_plan();
                ASSERT_TRUE(plan);
                const auto *call = std::get_if<vm::find_call>(&plan->method);
                ASSERT_NE(call, nullptr);
                const auto area = m->value_area();
                std::vector<uint8_t> key(key_size, 0), value(value_size);
                for (uint8_t k = 0; k < 20; k++) {
                    key[0] = k;
                    key[key_size - 1] = static_cast<uint8_t>(k * 7);
                    std::fill(value.begin(), value.end(), static_cast<uint8_t>(100 + k));
                    ASSERT_EQ(m->update(key.data(), value.data(), update_noexist), 0);
                }
                for (uint8_t k = 0; k < 40; k++) {
                    key[0] = k;
                    key[key_size - 1] = static_cast<uint8_t>(k * 7);
                    auto *found = static_cast<uint8_t *>(call->find(call->object, key.data()));
                    EXPECT_EQ(found, m->lookup(key.data())) << int{k};
                    EXPECT_EQ(found != nullptr, k < 20) << int{k};
                    if (found != nullptr) {
                        EXPECT_GE(found, area.data());
                        EXPECT_LE(found + value_size, area.data() + area.size());
                        EXPECT_EQ(std::vector<uint8_t>(found, found + value_size),
                                  std::vector<uint8_t>(value_size, static_cast<uint8_t>(100 + k)));
                    }
                }
            }
        }
    }
}

// An update of a present key, BPF_ANY or BPF_EXIST, writes in place: the pointer a lookup gave
// sees the new value, and the entry count does not move.
TEST(Hash, UpdatesOfPresentKeysWriteInPlace) {
    shm_map m(spec);
    ASSERT_EQ(put(m, 3, 30), 0);
    uint32_t key = 3;
    auto *p = static_cast<uint64_t *>(m->lookup(&key));
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(put(m, 3, 31, update_any), 0);
    EXPECT_EQ(*p, 31u);
    ASSERT_EQ(put(m, 3, 32, update_exist), 0);
    EXPECT_EQ(*p, 32u);
    EXPECT_EQ(put(m, 3, 33, update_noexist), -EEXIST);
    EXPECT_EQ(*p, 32u);
    EXPECT_EQ(put(m, 4, 40, update_exist), -ENOENT);
    EXPECT_EQ(m->count(), 1u);
}

// A value holding a struct bpf_spin_lock is written as Linux's copy_map_value writes it, by a
// program's map_update_elem and by user space alike: all but the lock word, which a program may
// hold at that moment; a new value's lock starts free.
TEST(Hash, UpdatesNeverWriteTheSpinLockWord) {
    struct locked {
        uint64_t a;
        uint32_t lock, b;
    };
    for (map_type type : {map_type::hash, map_type::array}) {
        map_spec with_lock{type, 4, sizeof(locked), 8, 0};
        with_lock.spin_lock_off = offsetof(locked, lock);
        shm_map m(with_lock);
        const uint32_t key = 1;
        locked v{10, 0xdeadbeef, 20};
        ASSERT_EQ(m->update(&key, &v, update_any), 0);
        auto *p = static_cast<locked *>(m->lookup(&key));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(p->a, 10u);
        EXPECT_EQ(p->b, 20u);
        EXPECT_EQ(p->lock, 0u) << map_type_name(type) << ": a new value's lock is free";
        p->lock = 4242; // held by a program's thread
        v = {11, 0, 21};
        ASSERT_EQ(m->update(&key, &v, update_exist), 0);
        EXPECT_EQ(p->a, 11u);
        EXPECT_EQ(p->b, 21u);
        EXPECT_EQ(p->lock, 4242u) << map_type_name(type) << ": the holder keeps its lock";
        v = {12, 0, 22};
        ASSERT_TRUE(m->write(bytes(key), bytes(v), update_any));
        EXPECT_EQ(p->a, 12u);
        EXPECT_EQ(p->lock, 4242u) << map_type_name(type);
    }
}

// Updates of present keys reach every key of a chain, however long: keys that all fall in one
// bucket (found by watching the bucket heads while inserting) make a chain longer than the walk
// the update's fast path goes, so the keys deepest in it (inserted first) take the general path.
// Each update must land on its own key, insert nothing, and be read back.
TEST(Hash, UpdatesReachKeysDeepInALongChain) {
    constexpr uint32_t chain = 80, entries = 256;
    shm_map m(map_spec{map_type::hash, 4, 8, entries, 0});
    const auto *heads =
        reinterpret_cast<const uint32_t *>(m.region().data() + sizeof(detail::map_header));
    const uint32_t nbuckets = entries; // max_entries rounded up to a power of two
    std::vector<uint32_t> keys{0};
    ASSERT_EQ(put(m, 0, 0, update_noexist), 0);
    uint32_t bucket = detail::none;
    for (uint32_t b = 0; b < nbuckets; b++) {
        if (heads[b] != detail::none) {
            bucket = b;
        }
    }
    ASSERT_NE(bucket, detail::none);
    for (uint32_t k = 1; keys.size() < chain && k < 1000000; k++) {
        const uint32_t before = heads[bucket];
        ASSERT_EQ(put(m, k, 0, update_noexist), 0);
        if (heads[bucket] != before) {
            keys.push_back(k); // linked at the head of the same bucket
        } else {
            ASSERT_EQ(m->remove(&k), 0);
        }
    }
    ASSERT_EQ(keys.size(), chain);
    ASSERT_EQ(m->count(), chain);
    for (uint32_t k : keys) {
        EXPECT_EQ(put(m, k, uint64_t{k} * 10 + 1, update_exist), 0) << "key " << k;
        EXPECT_EQ(put(m, k, uint64_t{k} * 10 + 2, update_any), 0) << "key " << k;
    }
    EXPECT_EQ(m->count(), chain);
    for (uint32_t k : keys) {
        EXPECT_EQ(get(m, k), uint64_t{k} * 10 + 2) << "key " << k;
    }
    EXPECT_EQ(all_keys(m.view()).size(), chain);
}

// Keys of sizes other than 4 and 8 bytes take the general update: present keys are written in
// place, BPF_EXIST of an absent key is refused, and nothing is inserted twice.
TEST(Hash, UpdatesOfPresentKeysOfOddSizes) {
    shm_map m(map_spec{map_type::hash, 12, 8, 64, 0});
    auto key_of = [](uint32_t i) { return std::array<uint32_t, 3>{i, i * 7, ~i}; };
    for (uint32_t i = 0; i < 64; i++) {
        const auto key = key_of(i);
        const uint64_t v = i;
        ASSERT_EQ(m->update(key.data(), &v, update_noexist), 0);
    }
    for (uint32_t i = 0; i < 64; i++) {
        const auto key = key_of(i);
        const uint64_t v = uint64_t{i} << 32 | 1;
        EXPECT_EQ(m->update(key.data(), &v, i % 2 == 0 ? update_exist : update_any), 0);
    }
    const auto absent = key_of(1000);
    const uint64_t v = 5;
    EXPECT_EQ(m->update(absent.data(), &v, update_exist), -ENOENT);
    EXPECT_EQ(m->count(), 64u);
    for (uint32_t i = 0; i < 64; i++) {
        const auto key = key_of(i);
        auto *p = static_cast<const uint64_t *>(m->lookup(key.data()));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(*p, uint64_t{i} << 32 | 1);
    }
}

// An update of a present key never lands in an entry that a concurrent delete freed and an
// insert reused for another key: one thread updates a fixed key (BPF_EXIST) as fast as it can
// while another deletes that key and inserts others, which take its entry at once (the free
// stack's top), then puts it back. Every other key must hold what its inserter wrote. The
// updater lingers where it has found the entry and is about to write (the test hook), so a
// write that was not guarded against the reuse would be caught.
TEST(Hash, UpdatesNeverLandInAnEntryReusedForAnotherKey) {
    constexpr uint32_t fixed = 1, others = 3, rounds = 20000, min_updates = 20000;
    constexpr uint64_t updater_mark = 0xdead000000000000ull;
    shm_map m(map_spec{map_type::hash, 4, 8, others + 1, 0});
    ASSERT_EQ(put(m, fixed, 0, update_noexist), 0);
    auto other_value = [](uint32_t key, uint32_t round) { return uint64_t{key} << 32 | round; };
    detail::hash_entry_locked_hook = [] {
        for (int i = 0; i < 200; i++) {
            __builtin_ia32_pause();
        }
    };
    std::atomic<bool> churning{true}, started{false};
    std::atomic<uint64_t> updated{0}, refused{0};
    std::thread updater([&] {
        started = true;
        for (uint64_t i = 0; churning.load(std::memory_order_relaxed); i++) {
            long rc = put(m, fixed, updater_mark | i, update_exist);
            if (rc == 0) {
                updated.fetch_add(1, std::memory_order_relaxed);
            } else if (rc != -ENOENT) {
                refused.fetch_add(1, std::memory_order_relaxed);
            }
            // As long outside the entry as inside it: a writer that takes the entry again at
            // once would keep the deleting thread waiting (an entry lock is not fair).
            for (int p = 0; p < 200; p++) {
                __builtin_ia32_pause();
            }
        }
    });
    uint64_t wrong = 0, failed = 0;
    std::string first_wrong;
    auto check = [&](uint32_t key, uint32_t round) {
        auto got = get(m, key);
        if (!got || *got != other_value(key, round)) {
            if (wrong++ == 0) {
                first_wrong = "key " + std::to_string(key) + " round " + std::to_string(round) +
                              ": " + (got ? std::to_string(*got) : std::string("absent"));
            }
        }
    };
    std::string first_failed;
    auto ok = [&](const char *what, long rc) {
        if (rc != 0 && failed++ == 0) {
            first_failed = std::string(what) + ": " + std::to_string(rc);
        }
    };
    while (!started) {
        std::this_thread::yield();
    }
    // Bounded, but long enough for the updater to have written often while the others churn
    // (on a loaded machine the two threads may seldom run at the same time).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (uint32_t r = 0; (r < rounds || updated.load(std::memory_order_relaxed) < min_updates) &&
                         std::chrono::steady_clock::now() < give_up;
         r++) {
        ok("remove fixed", m->remove(&fixed));
        for (uint32_t k = 100; k < 100 + others; k++) {
            ok("insert other", put(m, k, other_value(k, r), update_noexist));
        }
        for (uint32_t k = 100; k < 100 + others; k++) {
            check(k, r);
        }
        for (uint32_t k = 100; k < 100 + others; k++) {
            check(k, r);
            ok("remove other", m->remove(&k));
        }
        ok("insert fixed", put(m, fixed, 0, update_noexist));
    }
    churning = false;
    updater.join();
    detail::hash_entry_locked_hook = nullptr;
    EXPECT_EQ(wrong, 0u) << "first: " << first_wrong;
    EXPECT_EQ(failed, 0u) << "first: " << first_failed;
    EXPECT_EQ(refused.load(), 0u);
    EXPECT_GT(updated.load(), 0u);
    EXPECT_EQ(m->count(), 1u);
}

} // namespace
} // namespace bpftime::maps::test
