// SPDX-License-Identifier: MIT
// lru_percpu_hash: per-CPU values as percpu_hash, eviction as lru_hash, and the same from two
// processes.
#include "test_util.hpp"

#include "layout.hpp" // the header, to scribble over it

#include <random>

namespace bpftime::maps::test {
namespace {

constexpr uint32_t ncpus = 4;
constexpr uint32_t no_common_lru = 2;

std::vector<uint64_t> slots(const map_view &v, uint32_t key) {
    auto raw = must(v.read(bytes(key)));
    std::vector<uint64_t> out(raw.size() / 8);
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
}

TEST(LruPercpuHash, SpecNamesAndFlags) {
    EXPECT_STREQ(map_type_name(map_type::lru_percpu_hash), "lru_percpu_hash");
    EXPECT_EQ(parse_map_type("lru_percpu_hash"), map_type::lru_percpu_hash);
    EXPECT_TRUE(validate_spec({map_type::lru_percpu_hash, 4, 8, 16, no_common_lru}));
    auto bad = validate_spec({map_type::lru_percpu_hash, 4, 8, 16, 1});
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.err().message.find("BPF_F_NO_COMMON_LRU"), std::string::npos)
        << bad.err().message;
    auto big = validate_spec({map_type::lru_percpu_hash, 4, 32769, 16, 0});
    ASSERT_FALSE(big);
    EXPECT_NE(big.err().message.find("value_size 32769"), std::string::npos) << big.err().message;
}

TEST(LruPercpuHash, FullMapEvictsTheLeastRecentlyUsedAndKeepsPerCpuValues) {
    shm_map m(map_spec{map_type::lru_percpu_hash, 4, 8, 8, no_common_lru}, ncpus);
    EXPECT_EQ(m->ncpus(), ncpus);
    for (uint32_t k = 0; k < 8; k++) {
        uint64_t per_cpu[ncpus] = {k, k + 100, k + 200, k + 300};
        ASSERT_TRUE(m->write(bytes(k), bytes(per_cpu)));
    }
    // Key 0 is used by a program, so key 1 is now the oldest.
    uint32_t zero = 0;
    ASSERT_NE(m->lookup(&zero), nullptr);
    uint32_t fresh = 50;
    uint64_t per_cpu[ncpus] = {1, 2, 3, 4};
    ASSERT_TRUE(m->write(bytes(fresh), bytes(per_cpu))) << "a full LRU map evicts, never fails";
    EXPECT_EQ(m->count(), 8u);
    EXPECT_EQ(slots(m.view(), fresh), (std::vector<uint64_t>{1, 2, 3, 4}));
    EXPECT_EQ(slots(m.view(), 0), (std::vector<uint64_t>{0, 100, 200, 300}));
    auto gone = m->read(bytes(uint32_t{1}));
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.err().code, ENOENT);
}

TEST(LruPercpuHash, AProgramsInsertSetsItsCpuOnlyAndEvicts) {
    shm_map m(map_spec{map_type::lru_percpu_hash, 4, 8, 4, 0}, ncpus);
    pin_cpu pin;
    uint32_t me = pin.slot(ncpus);
    for (uint32_t k = 0; k < 100; k++) {
        uint64_t v = k + 1;
        ASSERT_EQ(m->update(&k, &v, update_any), 0) << "key " << k;
        auto *p = static_cast<uint64_t *>(m->lookup(&k));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(*p, k + 1);
    }
    EXPECT_EQ(m->count(), 4u);
    auto after = slots(m.view(), 99);
    for (uint32_t cpu = 0; cpu < ncpus; cpu++) {
        EXPECT_EQ(after[cpu], cpu == me ? 100u : 0u) << "cpu slot " << cpu;
    }
}

TEST(LruPercpuHash, DamagedStorageStaysInsideTheMap) {
    shm_map m(map_spec{map_type::lru_percpu_hash, 4, 8, 32, 0}, ncpus);
    for (uint32_t k = 0; k < 32; k++) {
        ASSERT_TRUE(m->write(bytes(k), bytes(uint64_t{k})));
    }
    // Scribble over everything after the header's identity fields; no operation may leave the
    // storage or hang.
    std::mt19937_64 rng(7);
    uint8_t *base = m.region().data();
    size_t from = offsetof(detail::map_header, lock) + sizeof(pthread_mutex_t);
    for (size_t i = from; i < m.region().size(); i++) {
        base[i] = static_cast<uint8_t>(rng());
    }
    for (uint32_t k = 0; k < 64; k++) {
        uint64_t v = k;
        (void)m->lookup(&k);
        (void)m->update(&k, &v, update_any);
        (void)m->read(bytes(k));
        (void)m->erase(bytes(k));
    }
    std::vector<uint8_t> key;
    for (int i = 0; i < 1000; i++) {
        auto next = m->next_key(key);
        if (!next || !*next) {
            break;
        }
        key = **next;
    }
    EXPECT_LE(m->count(), 32u);
}

TEST(LruPercpuHash, TwoProcessesInsertIntoAFullMap) {
    shm_map m(map_spec{map_type::lru_percpu_hash, 4, 8, 64, 0}, ncpus);
    start_gate gate;
    std::vector<pid_t> children;
    for (uint32_t p = 0; p < 2; p++) {
        children.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            for (uint32_t i = 0; i < 20000; i++) {
                uint32_t k = p * 1000000 + i;
                uint64_t v = k;
                if (mine.second.update(&k, &v, update_any) != 0) {
                    return 2;
                }
            }
            return 0;
        }));
    }
    gate.open();
    for (pid_t pid : children) {
        expect_success(pid);
    }
    EXPECT_EQ(m->count(), 64u);
    // Every entry left is whole: the value of some CPU slot is its key.
    std::vector<uint8_t> key;
    size_t seen = 0;
    for (;;) {
        auto next = must(m->next_key(key));
        if (!next) {
            break;
        }
        key = *next;
        auto k = from_bytes<uint32_t>(key);
        auto values = slots(m.view(), k);
        EXPECT_NE(std::find(values.begin(), values.end(), uint64_t{k}), values.end()) << k;
        seen++;
    }
    EXPECT_EQ(seen, 64u);
}

} // namespace
} // namespace bpftime::maps::test
