// SPDX-License-Identifier: MIT
// array: the key is the index, elements always exist and start at zero.
#include "test_util.hpp"

namespace bpftime::maps::test {
namespace {

constexpr map_spec spec{map_type::array, 4, 12, 10, 0};

TEST(ArrayMap, ValuesStartAtZeroAndLiveInTheValueArea) {
    shm_map m(spec);
    auto area = m->value_area();
    ASSERT_GE(area.size(), 10u * 12);
    for (uint32_t i = 0; i < 10; i++) {
        auto *p = static_cast<uint8_t *>(m->lookup(&i));
        ASSERT_NE(p, nullptr);
        EXPECT_GE(p, area.data());
        EXPECT_LE(p + 12, area.data() + area.size());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u) << "values are 8-byte aligned";
        EXPECT_EQ(must(m->read(bytes(i))), std::vector<uint8_t>(12, 0));
    }
    EXPECT_EQ(m->count(), 10u);
}

TEST(ArrayMap, UpdateFlags) {
    shm_map m(spec);
    uint32_t key = 3;
    uint8_t value[12] = {1, 2, 3};
    EXPECT_EQ(m->update(&key, value, update_any), 0);
    EXPECT_EQ(std::memcmp(m->lookup(&key), value, 12), 0);
    value[0] = 9;
    EXPECT_EQ(m->update(&key, value, update_exist), 0);
    EXPECT_EQ(static_cast<uint8_t *>(m->lookup(&key))[0], 9);
    EXPECT_EQ(m->update(&key, value, update_noexist), -EEXIST);
    EXPECT_EQ(m->update(&key, value, 3), -EINVAL);
    EXPECT_EQ(m->update(&key, value, 4), -EINVAL);

    auto w = m->write(bytes(key), std::span<const uint8_t>(value, 12), update_noexist);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.err().code, EEXIST);
    EXPECT_EQ(m->write(bytes(key), std::span<const uint8_t>(value, 12), 8).err().code, EINVAL);
    EXPECT_EQ(m->write(bytes(key), std::span<const uint8_t>(value, 11)).err().code, EINVAL);
    EXPECT_TRUE(m->write(bytes(key), std::span<const uint8_t>(value, 12)));
}

TEST(ArrayMap, OutOfRangeIndex) {
    shm_map m(spec);
    uint32_t key = 10;
    uint8_t value[12] = {};
    EXPECT_EQ(m->lookup(&key), nullptr);
    key = UINT32_MAX;
    EXPECT_EQ(m->lookup(&key), nullptr);
    EXPECT_EQ(m->update(&key, value, update_any), -E2BIG); // as Linux
    auto r = m->read(bytes(key));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, ENOENT);
    EXPECT_EQ(m->write(bytes(key), std::span<const uint8_t>(value, 12)).err().code, E2BIG);
}

// lookup() finds element i at slot i of the value area for every value size: inline when the
// stride is a power of two, through the lookup function compiled code may call otherwise; both
// give the same addresses, and nothing past the last element.
TEST(ArrayMap, LookupFindsElementsForEveryValueStride) {
    for (uint32_t value_size : {1u, 4u, 8u, 12u, 16u, 24u, 40u, 64u}) {
        SCOPED_TRACE("value_size " + std::to_string(value_size));
        shm_map m(map_spec{map_type::array, 4, value_size, 10, 0});
        const auto area = m->value_area();
        const uint64_t stride = m->value_stride();
        EXPECT_EQ(stride, (value_size + 7) / 8 * 8);
        auto plan = m->lookup_plan();
        ASSERT_TRUE(plan);
        const auto *table = std::get_if<vm::indexed_table>(&plan->method);
        ASSERT_NE(table, nullptr);
        for (uint32_t i = 0; i < 12; i++) {
            void *found = m->lookup(&i);
            if (i >= 10) {
                EXPECT_EQ(found, nullptr) << i;
                continue;
            }
            EXPECT_EQ(found, area.data() + i * stride) << i;
            EXPECT_EQ(reinterpret_cast<uint64_t>(found), table->base + i * table->stride) << i;
            std::vector<uint8_t> value(value_size, static_cast<uint8_t>(i + 1));
            ASSERT_EQ(m->update(&i, value.data(), update_any), 0);
            EXPECT_EQ(std::memcmp(found, value.data(), value_size), 0) << i;
        }
    }
}

TEST(ArrayMap, DeleteIsInvalid) {
    shm_map m(spec);
    uint32_t key = 1;
    EXPECT_EQ(m->remove(&key), -EINVAL);
    auto r = m->erase(bytes(key));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(m->lookup(&key), nullptr);
}

TEST(ArrayMap, NextKeyVisitsEveryIndex) {
    shm_map m(spec);
    std::vector<uint32_t> seen;
    std::vector<uint8_t> key;
    for (int steps = 0; steps < 100; steps++) {
        auto next = must(m->next_key(key));
        if (!next) {
            break;
        }
        key = *next;
        seen.push_back(from_bytes<uint32_t>(key));
    }
    EXPECT_EQ(seen, (std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    // An index out of range starts over, as in Linux.
    EXPECT_EQ(from_bytes<uint32_t>(*must(m->next_key(bytes(uint32_t{77})))), 0u);
}

TEST(ArrayMap, KeysOfTheWrongSizeAreRefused) {
    shm_map m(spec);
    std::vector<uint8_t> three(3);
    EXPECT_EQ(m->read(three).err().code, EINVAL);
    EXPECT_EQ(m->erase(three).err().code, EINVAL);
    EXPECT_EQ(m->next_key(three).err().code, EINVAL);
    EXPECT_EQ(m->write(three, std::vector<uint8_t>(12)).err().code, EINVAL);
}

TEST(ArrayMap, RingBufferCallsOnAnArrayDoNothing) {
    shm_map m(spec);
    EXPECT_EQ(m->ringbuf_reserve(8), nullptr);
    EXPECT_EQ(m->ringbuf_output("12345678", 8, 0), -EINVAL);
    EXPECT_FALSE(m->ringbuf_consume([](std::span<const uint8_t>) {}));
    EXPECT_FALSE(m->ringbuf_wait(0));
    EXPECT_EQ(m->ringbuf_dropped(), 0u);
    m->ringbuf_submit(m->lookup("\0\0\0\0"), 0); // not a record: ignored
}

// BPF_F_MMAPABLE: the values are whole pages of their own, value_stride apart, so a process
// can mmap them as it would a Linux array map fd (global data).
TEST(Array, MmapableValuesArePagesOfTheirOwn) {
    map_spec mmapable{map_type::array, 4, 12, 3, 1024};
    shm_map m(mmapable);
    auto region = mmapable_region(mmapable, 4);
    ASSERT_TRUE(region);
    EXPECT_EQ(region->offset % mmap_page_size, 0u);
    EXPECT_EQ(region->length, mmap_page_size);
    EXPECT_EQ(region->offset + region->length, m.region().size());
    EXPECT_EQ(m->value_area().data(), m.region().data() + region->offset);
    EXPECT_EQ(m->value_stride(), 16u);
    uint32_t key = 2;
    uint8_t value[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    ASSERT_EQ(m->update(&key, value, 0), 0);
    EXPECT_EQ(std::memcmp(m.region().data() + region->offset + 32, value, 12), 0);
    EXPECT_FALSE(mmapable_region(map_spec{map_type::array, 4, 12, 3, 0}, 4));
    EXPECT_FALSE(mmapable_region(map_spec{map_type::hash, 4, 12, 3, 0}, 4));
}

} // namespace
} // namespace bpftime::maps::test
