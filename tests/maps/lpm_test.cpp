// SPDX-License-Identifier: MIT
// LPM trie maps: longest-prefix match, exact prefixes on update and delete, key iteration,
// refusals, several processes, damaged storage.
#include "test_util.hpp"

#include "layout.hpp"

#include <arpa/inet.h>

#include <random>
#include <set>

namespace bpftime::maps::test {
namespace {

struct ipv4_key {
    uint32_t prefixlen;
    uint8_t data[4];
};

ipv4_key key(uint32_t prefixlen, const char *addr) {
    ipv4_key k{prefixlen, {}};
    in_addr a{};
    inet_pton(AF_INET, addr, &a);
    std::memcpy(k.data, &a, 4);
    return k;
}

map_spec lpm_spec(uint32_t n = 64, uint32_t key_size = 8) {
    return map_spec{map_type::lpm_trie, key_size, 8, n, map_no_prealloc};
}

long put(const shm_map &m, const ipv4_key &k, uint64_t v, uint64_t flags = update_any) {
    return m->update(&k, &v, flags);
}

// The value the longest prefix of addr holds, or -1.
int64_t match(const shm_map &m, const char *addr) {
    ipv4_key k = key(32, addr);
    auto *v = static_cast<const uint64_t *>(m->lookup(&k));
    return v ? static_cast<int64_t>(*v) : -1;
}

TEST(LpmTrie, LongestPrefixWins) {
    shm_map m(lpm_spec());
    ASSERT_EQ(put(m, key(8, "10.0.0.0"), 8), 0);
    ASSERT_EQ(put(m, key(16, "10.1.0.0"), 16), 0);
    ASSERT_EQ(put(m, key(24, "10.1.2.0"), 24), 0);
    ASSERT_EQ(put(m, key(32, "10.1.2.3"), 32), 0);
    ASSERT_EQ(put(m, key(0, "0.0.0.0"), 0), 0);
    EXPECT_EQ(match(m, "10.1.2.3"), 32);
    EXPECT_EQ(match(m, "10.1.2.4"), 24);
    EXPECT_EQ(match(m, "10.1.3.4"), 16);
    EXPECT_EQ(match(m, "10.2.3.4"), 8);
    EXPECT_EQ(match(m, "192.168.0.1"), 0);
    EXPECT_EQ(m->count(), 5u);
    // Without the default route nothing matches there.
    auto def = key(0, "0.0.0.0");
    ASSERT_EQ(m->remove(&def), 0);
    EXPECT_EQ(match(m, "192.168.0.1"), -1);
    // A lookup with a shorter prefix matches only prefixes up to it.
    ipv4_key k = key(12, "10.1.2.3");
    auto *v = static_cast<const uint64_t *>(m->lookup(&k));
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(*v, 8u);
}

TEST(LpmTrie, OddPrefixLengthsAndBitsPastThePrefix) {
    shm_map m(lpm_spec());
    // Bits past the prefix do not matter: 10.0.0.0/7 covers 10.x and 11.x.
    ASSERT_EQ(put(m, key(7, "11.255.1.1"), 7), 0);
    EXPECT_EQ(match(m, "10.9.9.9"), 7);
    EXPECT_EQ(match(m, "11.0.0.1"), 7);
    EXPECT_EQ(match(m, "12.0.0.1"), -1);
    // The same prefix with other trailing bits is the same entry.
    EXPECT_EQ(put(m, key(7, "10.0.0.0"), 70, update_noexist), -EEXIST);
    EXPECT_EQ(put(m, key(7, "10.0.0.0"), 70, update_exist), 0);
    EXPECT_EQ(match(m, "11.0.0.1"), 70);
    EXPECT_EQ(m->count(), 1u);
}

TEST(LpmTrie, UpdateAndDeleteTakeExactPrefixes) {
    shm_map m(lpm_spec());
    ASSERT_EQ(put(m, key(16, "10.1.0.0"), 16), 0);
    auto k24 = key(24, "10.1.2.0");
    EXPECT_EQ(m->remove(&k24), -ENOENT); // covered by /16, but not stored
    EXPECT_EQ(put(m, key(24, "10.1.2.0"), 1, update_exist), -ENOENT);
    auto k16 = key(16, "10.1.99.0");
    EXPECT_EQ(m->remove(&k16), 0);
    EXPECT_EQ(match(m, "10.1.2.3"), -1);
    EXPECT_EQ(m->count(), 0u);
}

TEST(LpmTrie, PrefixesLongerThanTheMapsAreRefused) {
    shm_map m(lpm_spec());
    EXPECT_EQ(put(m, key(33, "10.0.0.0"), 1), -EINVAL);
    auto k = key(33, "10.0.0.0");
    EXPECT_EQ(m->remove(&k), -EINVAL);
    auto w = m->write(bytes(k), bytes(uint64_t{1}));
    ASSERT_FALSE(w);
    EXPECT_NE(w.err().message.find("prefixlen longer than the map's 32 bits"), std::string::npos)
        << w.err().message;
    auto e = m->erase(bytes(k));
    ASSERT_FALSE(e);
    EXPECT_NE(e.err().message.find("longer than the map's 32 bits"), std::string::npos);
    // A lookup with a longer prefix matches as the longest, as Linux's does.
    ASSERT_EQ(put(m, key(32, "10.0.0.1"), 5), 0);
    auto *v = static_cast<const uint64_t *>(m->lookup(&k));
    EXPECT_EQ(v, nullptr); // 10.0.0.0 is not 10.0.0.1
    k = key(1000, "10.0.0.1");
    v = static_cast<const uint64_t *>(m->lookup(&k));
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(*v, 5u);
    EXPECT_EQ(put(m, key(1, "0.0.0.0"), 1, 3), -EINVAL);
}

TEST(LpmTrie, SpecsNeedNoPreallocAndLinuxKeySizes) {
    struct bad {
        map_spec spec;
        const char *message;
    };
    for (const bad &b : {
             bad{map_spec{map_type::lpm_trie, 8, 8, 16, 0},
                 "flags 0x0: lpm_trie maps need BPF_F_NO_PREALLOC (0x1), as in Linux"},
             bad{map_spec{map_type::lpm_trie, 8, 8, 16, 3},
                 "flags 0x3: lpm_trie maps accept only BPF_F_NO_PREALLOC"},
             bad{lpm_spec(16, 4), "key_size 4: lpm_trie maps take keys of 5 to 260 bytes"},
             bad{lpm_spec(16, 261), "key_size 261"},
             bad{lpm_spec(0), "max_entries 0"},
             bad{map_spec{map_type::lpm_trie, 8, 0, 16, 1}, "value_size 0"},
         }) {
        auto v = validate_spec(b.spec);
        ASSERT_FALSE(v) << b.message;
        EXPECT_EQ(v.err().code, EINVAL);
        EXPECT_NE(v.err().message.find(b.message), std::string::npos) << v.err().message;
    }
    EXPECT_TRUE(validate_spec(lpm_spec(16, 5)));
    EXPECT_TRUE(validate_spec(lpm_spec(16, 260)));
}

TEST(LpmTrie, ReadGivesTheLongestMatchAndNextKeyVisitsEveryEntryOnce) {
    shm_map m(lpm_spec(300));
    std::set<std::vector<uint8_t>> stored;
    for (uint32_t i = 0; i < 256; i++) {
        char addr[32];
        std::snprintf(addr, sizeof addr, "10.%u.0.0", i);
        auto k = key(16 + i % 17, addr);
        ASSERT_EQ(put(m, k, i), 0);
        uint8_t masked[8];
        ASSERT_TRUE(detail::lpm_mask_key(m->spec(), &k, masked));
        stored.insert(std::vector<uint8_t>(masked, masked + 8));
    }
    std::set<std::vector<uint8_t>> seen;
    std::vector<uint8_t> at;
    for (int i = 0; i < 1000; i++) {
        auto next = must(m->next_key(at));
        if (!next) {
            break;
        }
        EXPECT_TRUE(seen.insert(*next).second) << "visited twice";
        at = *next;
    }
    EXPECT_EQ(seen, stored);
    // The controller's read is a lookup: the longest prefix of the key.
    auto k = key(32, "10.3.0.9");
    EXPECT_EQ(from_bytes<uint64_t>(must(m->read(bytes(k)))), 3u);
    // Starting from a key that is not stored starts over.
    auto absent = key(32, "99.0.0.0");
    auto first = must(m->next_key(bytes(absent)));
    ASSERT_TRUE(first);
    EXPECT_EQ(*first, *must(m->next_key({})));
}

TEST(LpmTrie, WideKeys) {
    // IPv6-sized keys and the widest Linux allows.
    for (uint32_t key_size : {20u, 260u}) {
        shm_map m(lpm_spec(8, key_size));
        std::vector<uint8_t> k(key_size, 0xab);
        uint32_t plen = (key_size - 4) * 8 - 3;
        std::memcpy(k.data(), &plen, 4);
        uint64_t v = 77;
        ASSERT_EQ(m->update(k.data(), &v, 0), 0);
        uint32_t full = plen + 3;
        std::memcpy(k.data(), &full, 4);
        k.back() ^= 0x7; // the last 3 bits differ
        auto *got = static_cast<const uint64_t *>(m->lookup(k.data()));
        ASSERT_NE(got, nullptr);
        EXPECT_EQ(*got, 77u);
        k.back() ^= 0x8; // a bit inside the prefix
        EXPECT_EQ(m->lookup(k.data()), nullptr);
    }
}

TEST(LpmTrie, LookupPlanIsACallOverTheValueArea) {
    shm_map m(lpm_spec());
    auto plan = m->lookup_plan();
    ASSERT_TRUE(plan);
    EXPECT_TRUE(std::holds_alternative<vm::find_call>(plan->method));
    ASSERT_EQ(put(m, key(8, "10.0.0.0"), 1), 0);
    ipv4_key k = key(32, "10.1.1.1");
    void *v = m->lookup(&k);
    auto area = m->value_area();
    EXPECT_TRUE(v >= area.data() && v < area.data() + area.size());
}

TEST(LpmTrie, FullMapRefusesNewPrefixes) {
    shm_map m(lpm_spec(2));
    ASSERT_EQ(put(m, key(8, "10.0.0.0"), 1), 0);
    ASSERT_EQ(put(m, key(9, "10.0.0.0"), 1), 0);
    EXPECT_EQ(put(m, key(10, "10.0.0.0"), 1), -E2BIG);
    EXPECT_EQ(put(m, key(9, "10.0.0.0"), 2), 0); // replacing needs no room
}

TEST(LpmTrie, ProcessesUpdatingAtOnceKeepExactCounts) {
    shm_map m(lpm_spec(4096));
    start_gate gate;
    std::vector<pid_t> children;
    for (uint32_t p = 0; p < 2; p++) {
        children.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            for (uint32_t i = 0; i < 2000; i++) {
                ipv4_key k{8 + i % 25,
                           {10, static_cast<uint8_t>(p), static_cast<uint8_t>(i >> 8),
                            static_cast<uint8_t>(i)}};
                uint64_t v = i;
                if (mine.second.update(&k, &v, 0) != 0) {
                    return 1;
                }
            }
            return 0;
        }));
    }
    gate.open();
    for (pid_t pid : children) {
        expect_success(pid);
    }
    // Distinct (prefix, masked data) pairs each process made.
    std::set<std::pair<uint32_t, uint32_t>> distinct;
    for (uint32_t p = 0; p < 2; p++) {
        for (uint32_t i = 0; i < 2000; i++) {
            uint32_t plen = 8 + i % 25;
            uint32_t addr = 10u << 24 | p << 16 | i;
            uint32_t mask = plen == 32 ? ~0u : ~(~0u >> plen);
            distinct.insert({plen, addr & mask});
        }
    }
    EXPECT_EQ(m->count(), distinct.size());
    // i = 1999 (0x7cf) of process 1 is 10.1.7.207/32, the longest prefix of that address.
    ipv4_key k = key(32, "10.1.7.207");
    auto *v = static_cast<const uint64_t *>(m->lookup(&k));
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(*v, 1999u);
}

TEST(LpmTrie, GarbageInStorageNeverLeadsOutside) {
    shm_map m(lpm_spec(64));
    for (uint32_t i = 0; i < 40; i++) {
        ASSERT_EQ(put(m, ipv4_key{i % 33, {10, 0, 0, static_cast<uint8_t>(i)}}, i), 0);
    }
    std::mt19937_64 rng(11);
    uint8_t *base = m.region().data();
    uint8_t *values = m->value_area().data();
    for (uint8_t *p = base + sizeof(detail::map_header); p < values; p++) {
        *p = static_cast<uint8_t>(rng() % 4 == 0 ? 0xff : rng());
    }
    for (uint32_t i = 0; i < 200; i++) {
        (void)match(m, "10.0.0.5");
        (void)put(m, ipv4_key{i % 40, {10, 1, 0, static_cast<uint8_t>(i)}}, i);
        auto k = ipv4_key{i % 33, {10, 0, 0, static_cast<uint8_t>(i / 2)}};
        (void)m->remove(&k);
    }
    std::vector<uint8_t> at;
    for (int i = 0; i < 200; i++) {
        auto next = m->next_key(at);
        if (!next || !*next) {
            break;
        }
        at = **next;
    }
    EXPECT_LE(m->count(), 64u);
}

} // namespace
} // namespace bpftime::maps::test
