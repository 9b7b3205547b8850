// SPDX-License-Identifier: MIT
// Bloom filter maps: added values are always found, absent ones mostly not, flags, map_extra,
// sizes, several processes adding at once, damaged bits.
#include "test_util.hpp"

#include "layout.hpp"

#include <random>

namespace bpftime::maps::test {
namespace {

map_spec bloom_spec(uint32_t n, uint64_t extra = 0, uint32_t flags = 0) {
    return map_spec{map_type::bloom_filter, 0, 8, n, flags, extra};
}

long add(const shm_map &m, uint64_t v, uint64_t flags = 0) {
    return m->push_elem(&v, flags);
}
long test(const shm_map &m, uint64_t v) {
    return m->peek_elem(&v);
}

TEST(BloomFilter, AddedValuesAreFoundAbsentOnesMostlyNot) {
    for (uint64_t extra : {0, 1, 3, 15}) {
        shm_map m(bloom_spec(1000, extra));
        for (uint64_t v = 0; v < 1000; v++) {
            ASSERT_EQ(add(m, v * 7919), 0);
        }
        for (uint64_t v = 0; v < 1000; v++) {
            ASSERT_EQ(test(m, v * 7919), 0) << v;
        }
        int false_positives = 0;
        for (uint64_t v = 0; v < 10000; v++) {
            false_positives += test(m, (v + 5000) * 7919 + 1) == 0;
        }
        // Sized as Linux sizes it, even one hash function keeps this well under a half.
        EXPECT_LT(false_positives, extra == 1 ? 5000 : 1000) << "hashes " << extra;
    }
}

TEST(BloomFilter, EmptyFilterHasNothing) {
    shm_map m(bloom_spec(16));
    EXPECT_EQ(test(m, 1), -ENOENT);
    auto r = m->peek(bytes(uint64_t{1}));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, ENOENT);
    EXPECT_EQ(r.err().message, "the value is not in the bloom filter");
    must(m->push(bytes(uint64_t{1})));
    EXPECT_EQ(from_bytes<uint64_t>(must(m->peek(bytes(uint64_t{1})))), 1u);
}

TEST(BloomFilter, BitArrayIsSizedAsLinux) {
    // max_entries * hashes * 7 / 5 bits, rounded up to a power of two, at least 64.
    EXPECT_EQ(detail::bloom_bits_for(bloom_spec(1)), 64u);
    EXPECT_EQ(detail::bloom_bits_for(bloom_spec(1000)), 8192u);          // 7000
    EXPECT_EQ(detail::bloom_bits_for(bloom_spec(1000, 1)), 2048u);       // 1400
    EXPECT_EQ(detail::bloom_bits_for(bloom_spec(1u << 30)), 1ull << 32); // past 2^31
}

TEST(BloomFilter, FlagsAndMapExtraAreChecked) {
    shm_map m(bloom_spec(16));
    EXPECT_EQ(add(m, 1, update_exist), -EINVAL);
    auto r = m->push(bytes(uint64_t{1}), update_noexist);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("bloom_filter maps take BPF_ANY (0) only"), std::string::npos)
        << r.err().message;
    struct bad {
        map_spec spec;
        const char *message;
    };
    for (const bad &b : {
             bad{bloom_spec(16, 0x10), "map_extra 0x10: bloom_filter maps take the number of hash"},
             bad{bloom_spec(16, 1ull << 32), "map_extra 0x100000000"},
             bad{bloom_spec(16, 0, 1), "flags 0x1: bloom_filter maps accept only BPF_F_ZERO_SEED"},
             bad{map_spec{map_type::bloom_filter, 4, 8, 16, 0}, "key_size 4: bloom_filter maps "
                                                                "have no keys"},
             bad{map_spec{map_type::bloom_filter, 0, 0, 16, 0}, "value_size 0"},
             bad{bloom_spec(0), "max_entries 0"},
             bad{map_spec{map_type::hash, 4, 8, 16, 0, 5}, "map_extra 0x5: hash maps take no"},
         }) {
        auto v = validate_spec(b.spec);
        ASSERT_FALSE(v) << b.message;
        EXPECT_EQ(v.err().code, EINVAL);
        EXPECT_NE(v.err().message.find(b.message), std::string::npos) << v.err().message;
    }
}

TEST(BloomFilter, ZeroSeedGivesTheSameBitsInEveryMap) {
    shm_map a(bloom_spec(64, 0, map_zero_seed)), b(bloom_spec(64, 0, map_zero_seed));
    ASSERT_EQ(add(a, 42), 0);
    ASSERT_EQ(add(b, 42), 0);
    auto bits = [](const shm_map &m) {
        const uint8_t *p = m.region().data() + sizeof(detail::map_header);
        return std::vector<uint8_t>(p, p + 64 / 8);
    };
    EXPECT_EQ(bits(a), bits(b));
}

TEST(BloomFilter, StorageOfAnotherHashCountIsRefused) {
    shm_map m(bloom_spec(64, 3));
    auto other = map_view::open(m.region().data(), m.region().size(), bloom_spec(64, 4));
    ASSERT_FALSE(other);
    EXPECT_NE(other.err().message.find("storage holds map_extra 3, expected 4"), std::string::npos)
        << other.err().message;
}

TEST(BloomFilter, KeysAndDeletesAreRefused) {
    shm_map m(bloom_spec(16));
    EXPECT_FALSE(m->next_key({}));
    EXPECT_FALSE(m->erase({}));
    EXPECT_EQ(m->remove(nullptr), -EOPNOTSUPP);
    EXPECT_EQ(m->pop_elem(nullptr), -EINVAL);
    EXPECT_FALSE(m->pop());
    EXPECT_TRUE(m->value_area().empty());
}

TEST(BloomFilter, ProcessesAddingAtOnceLoseNothing) {
    constexpr uint64_t per_process = 20000;
    shm_map m(bloom_spec(4 * per_process));
    start_gate gate;
    std::vector<pid_t> children;
    for (uint64_t p = 0; p < 4; p++) {
        children.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            for (uint64_t v = p; v < 4 * per_process; v += 4) {
                if (mine.second.push_elem(&v, 0) != 0) {
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
    for (uint64_t v = 0; v < 4 * per_process; v++) {
        ASSERT_EQ(test(m, v), 0) << v;
    }
}

TEST(BloomFilter, DamagedBitsAreHarmless) {
    shm_map m(bloom_spec(100));
    std::mt19937_64 rng(3);
    uint8_t *bits = m.region().data() + sizeof(detail::map_header);
    for (uint64_t i = 0; i < detail::bloom_bits_for(bloom_spec(100)) / 8; i++) {
        bits[i] = static_cast<uint8_t>(rng());
    }
    for (uint64_t v = 0; v < 100; v++) {
        (void)test(m, v);
        ASSERT_EQ(add(m, v), 0);
        ASSERT_EQ(test(m, v), 0);
    }
}

} // namespace
} // namespace bpftime::maps::test
