// SPDX-License-Identifier: MIT
// Specs, storage sizes, and attach() refusing storage that is not the map asked for.
#include "test_util.hpp"

#include <cstdlib>
#include <memory>

namespace bpftime::maps::test {
namespace {

constexpr map_spec array_spec{map_type::array, 4, 8, 16, 0};
constexpr map_spec hash_spec{map_type::hash, 8, 16, 32, 0};

// Heap storage with the 64-byte alignment maps need.
struct aligned_storage {
    explicit aligned_storage(uint64_t n)
        : size(n),
          mem(static_cast<uint8_t *>(std::aligned_alloc(64, (n + 63) / 64 * 64)), &std::free) {}
    uint64_t size;
    std::unique_ptr<uint8_t, decltype(&std::free)> mem;
};

aligned_storage formatted(const map_spec &spec, uint32_t ncpus = 2) {
    aligned_storage s(must(storage_size(spec, ncpus)));
    must(init_storage(s.mem.get(), s.size, spec, ncpus));
    return s;
}

TEST(MapSpec, TypeNamesRoundTrip) {
    for (auto t : {map_type::hash, map_type::array, map_type::percpu_hash, map_type::percpu_array,
                   map_type::lru_hash, map_type::ringbuf, map_type::lpm_trie, map_type::queue,
                   map_type::stack, map_type::bloom_filter}) {
        EXPECT_EQ(parse_map_type(map_type_name(t)), t);
    }
    EXPECT_STREQ(map_type_name(static_cast<map_type>(99)), "unknown");
    EXPECT_FALSE(parse_map_type("deque"));
    EXPECT_EQ(static_cast<uint32_t>(map_type::lpm_trie), 11u);
    EXPECT_EQ(static_cast<uint32_t>(map_type::queue), 22u);
    EXPECT_EQ(static_cast<uint32_t>(map_type::stack), 23u);
    EXPECT_EQ(static_cast<uint32_t>(map_type::bloom_filter), 30u);
    EXPECT_EQ(static_cast<uint32_t>(map_type::ringbuf), 27u);
}

TEST(MapSpec, ValidSpecsPass) {
    for (const map_spec &s : {
             array_spec,
             hash_spec,
             map_spec{map_type::percpu_array, 4, 32768, 1, 0},
             map_spec{map_type::percpu_hash, 512, 8, 4, 0},
             map_spec{map_type::lru_hash, 1, 1, 1, 2},
             map_spec{map_type::hash, 4, 4, 4, 1},
             map_spec{map_type::array, 4, 1u << 20, 1, 1024},
             map_spec{map_type::ringbuf, 0, 0, 4096, 0},
             map_spec{map_type::ringbuf, 0, 0, 1u << 20, 0},
         }) {
        auto r = validate_spec(s);
        EXPECT_TRUE(r) << map_type_name(s.type) << ": " << r.err().message;
    }
}

TEST(MapSpec, EachRuleRefusesWithTheField) {
    struct bad {
        map_spec spec;
        const char *field;
    };
    const bad cases[] = {
        {{static_cast<map_type>(31), 4, 4, 4, 0}, "type 31"}, // user_ringbuf
        {{map_type::array, 8, 4, 4, 0}, "key_size 8"},
        {{map_type::percpu_array, 2, 4, 4, 0}, "key_size 2"},
        {{map_type::hash, 0, 4, 4, 0}, "key_size 0"},
        {{map_type::hash, 513, 4, 4, 0}, "key_size 513"},
        {{map_type::hash, 4, 0, 4, 0}, "value_size 0"},
        {{map_type::array, 4, (1u << 20) + 1, 4, 0}, "value_size 1048577"},
        {{map_type::percpu_hash, 4, 32769, 4, 0}, "value_size 32769"},
        {{map_type::array, 4, 4, 0, 0}, "max_entries 0"},
        {{map_type::lru_hash, 4, 4, 0x80000001u, 0}, "max_entries 2147483649"},
        {{map_type::ringbuf, 4, 0, 4096, 0}, "key_size 4"},
        {{map_type::ringbuf, 0, 8, 4096, 0}, "value_size 8"},
        {{map_type::ringbuf, 0, 0, 5000, 0}, "max_entries 5000"},
        {{map_type::ringbuf, 0, 0, 2048, 0}, "max_entries 2048"},
        {{map_type::ringbuf, 0, 0, 12288, 0}, "max_entries 12288"},
        {{map_type::hash, 4, 4, 4, 2}, "flags 0x2"},
        {{map_type::lru_hash, 4, 4, 4, 1}, "flags 0x1"},
        {{map_type::array, 4, 4, 4, 0x10}, "flags 0x10"},
        {{map_type::ringbuf, 0, 0, 4096, 1}, "flags 0x1"},
    };
    for (const bad &c : cases) {
        auto r = validate_spec(c.spec);
        ASSERT_FALSE(r) << c.field;
        EXPECT_EQ(r.err().code, EINVAL) << c.field;
        EXPECT_EQ(r.err().message.rfind(std::string(c.field) + ":", 0), 0u)
            << "want \"" << c.field << ":\" first, got: " << r.err().message;
        EXPECT_FALSE(storage_size(c.spec, 1)) << c.field;
    }
}

TEST(MapSpec, StorageSize) {
    map_spec percpu{map_type::percpu_array, 4, 8, 100, 0};
    uint64_t one = must(storage_size(percpu, 1)), four = must(storage_size(percpu, 4));
    EXPECT_GE(four - one, 3u * 100 * 8);
    // Non-per-CPU maps have one slot whatever the CPU count.
    EXPECT_EQ(must(storage_size(hash_spec, 1)), must(storage_size(hash_spec, 64)));
    EXPECT_GE(must(storage_size(map_spec{map_type::ringbuf, 0, 0, 8192, 0}, 1)), 8192u);

    auto no_cpus = storage_size(percpu, 0);
    ASSERT_FALSE(no_cpus);
    EXPECT_NE(no_cpus.err().message.find("ncpus 0"), std::string::npos);
    EXPECT_FALSE(storage_size(percpu, 100000));
    auto huge = storage_size(map_spec{map_type::percpu_array, 4, 32768, UINT32_MAX, 0}, 4096);
    ASSERT_FALSE(huge);
    EXPECT_EQ(huge.err().code, E2BIG);
}

TEST(MapAttach, RefusesStorageThatIsNotAMap) {
    aligned_storage s(must(storage_size(array_spec, 1)));
    std::memset(s.mem.get(), 0, s.size);
    auto r = map_view::open(s.mem.get(), s.size, array_spec);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message, "storage is not a bpftime map (bad magic)");
}

TEST(MapAttach, RefusesAnotherMapType) {
    auto s = formatted(hash_spec);
    map_spec want = hash_spec;
    want.type = map_type::array;
    want.key_size = 4;
    auto r = map_view::open(s.mem.get(), s.size, want);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message, "storage holds a hash map, expected array");
}

TEST(MapAttach, RefusesOtherSizesAndFlags) {
    auto s = formatted(hash_spec);
    map_spec key = hash_spec, value = hash_spec, entries = hash_spec, flags = hash_spec;
    key.key_size = 4;
    value.value_size = 8;
    entries.max_entries = 16;
    flags.flags = 1;
    EXPECT_EQ(map_view::open(s.mem.get(), s.size, key).err().message,
              "storage holds key_size 8, expected 4");
    EXPECT_EQ(map_view::open(s.mem.get(), s.size, value).err().message,
              "storage holds value_size 16, expected 8");
    EXPECT_EQ(map_view::open(s.mem.get(), s.size, entries).err().message,
              "storage holds max_entries 32, expected 16");
    EXPECT_EQ(map_view::open(s.mem.get(), s.size, flags).err().message,
              "storage holds flags 0, expected 1");
}

TEST(MapAttach, RefusesStorageTooSmall) {
    map_spec percpu{map_type::percpu_hash, 4, 8, 64, 0};
    auto s = formatted(percpu, 4);
    uint64_t need = must(storage_size(percpu, 4));
    auto r = map_view::open(s.mem.get(), need - 1, percpu);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message, "storage of " + std::to_string(need - 1) +
                                   " bytes is smaller than the " + std::to_string(need) +
                                   " bytes the map needs");
    auto tiny = map_view::open(s.mem.get(), 16, percpu);
    ASSERT_FALSE(tiny);
    EXPECT_EQ(tiny.err().message.rfind("storage of 16 bytes is smaller than the ", 0), 0u);
    EXPECT_TRUE(map_view::open(s.mem.get(), need, percpu));

    aligned_storage small(need - 1);
    auto init = init_storage(small.mem.get(), small.size, percpu, 4);
    ASSERT_FALSE(init);
    EXPECT_NE(init.err().message.find("smaller than"), std::string::npos);
}

TEST(MapAttach, RefusesMisalignedOrNullStorage) {
    auto s = formatted(array_spec);
    EXPECT_FALSE(map_view::open(s.mem.get() + 8, s.size - 8, array_spec));
    EXPECT_FALSE(map_view::open(nullptr, s.size, array_spec));
    EXPECT_FALSE(init_storage(s.mem.get() + 8, s.size - 8, array_spec, 1));
}

TEST(MapAttach, RefusesAnInvalidSpec) {
    auto s = formatted(array_spec);
    map_spec bad = array_spec;
    bad.key_size = 8;
    auto r = map_view::open(s.mem.get(), s.size, bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message.rfind("key_size 8:", 0), 0u);
}

TEST(MapAttach, ViewReportsSpecAndCpus) {
    map_spec percpu{map_type::percpu_array, 4, 8, 4, 0};
    auto s = formatted(percpu, 3);
    auto v = must(map_view::open(s.mem.get(), s.size, percpu));
    EXPECT_EQ(v.ncpus(), 3u);
    EXPECT_EQ(v.spec().max_entries, 4u);
    auto h = formatted(hash_spec, 3);
    EXPECT_EQ(must(map_view::open(h.mem.get(), h.size, hash_spec)).ncpus(), 1u);
    EXPECT_GE(possible_cpus(), 1u);
}

} // namespace
} // namespace bpftime::maps::test
