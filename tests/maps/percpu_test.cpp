// SPDX-License-Identifier: MIT
// percpu_array, percpu_hash and lru_percpu_hash: programs see their CPU's slot, the controller
// sees all.
#include "test_util.hpp"

namespace bpftime::maps::test {
namespace {

class PerCpuMap : public ::testing::TestWithParam<map_type> {
protected:
    static constexpr uint32_t ncpus = 4;
    shm_map m{map_spec{GetParam(), 4, 8, 8, 0}, ncpus};
};

std::vector<uint64_t> slots(const shm_map &m, uint32_t key) {
    auto raw = must(m->read(bytes(key)));
    std::vector<uint64_t> out(raw.size() / 8);
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
}

TEST_P(PerCpuMap, ControllerWritesOneValueOrOnePerCpu) {
    EXPECT_EQ(m->ncpus(), ncpus);
    EXPECT_GE(m->value_area().size(), 8u * ncpus * 8);
    uint32_t key = 2;
    ASSERT_TRUE(m->write(bytes(key), bytes(uint64_t{7})));
    EXPECT_EQ(slots(m, key), (std::vector<uint64_t>{7, 7, 7, 7}));
    uint64_t per_cpu[ncpus] = {10, 11, 12, 13};
    ASSERT_TRUE(m->write(bytes(key), bytes(per_cpu)));
    EXPECT_EQ(slots(m, key), (std::vector<uint64_t>{10, 11, 12, 13}));
    auto wrong = m->write(bytes(key), std::vector<uint8_t>(16));
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.err().code, EINVAL);
    EXPECT_NE(wrong.err().message.find("8 or 32"), std::string::npos) << wrong.err().message;
}

TEST_P(PerCpuMap, ProgramsUpdateAndLookUpTheirCpuOnly) {
    uint32_t key = 3;
    uint64_t per_cpu[ncpus] = {10, 11, 12, 13};
    ASSERT_TRUE(m->write(bytes(key), bytes(per_cpu)));
    pin_cpu pin;
    uint32_t me = pin.slot(ncpus);
    EXPECT_EQ(*static_cast<uint64_t *>(m->lookup(&key)), per_cpu[me]);
    uint64_t v = 99;
    EXPECT_EQ(m->update(&key, &v, update_exist), 0);
    auto after = slots(m, key);
    for (uint32_t cpu = 0; cpu < ncpus; cpu++) {
        EXPECT_EQ(after[cpu], cpu == me ? 99 : per_cpu[cpu]) << "cpu slot " << cpu;
    }
    EXPECT_EQ(*static_cast<uint64_t *>(m->lookup(&key)), 99u);
}

TEST_P(PerCpuMap, AProgramsFirstUpdateLeavesOtherCpusZero) {
    uint32_t key = 5;
    if (GetParam() != map_type::percpu_array) {
        // Reuse an entry that held other values: the insert must clear them.
        uint64_t old[ncpus] = {1, 2, 3, 4};
        ASSERT_TRUE(m->write(bytes(key), bytes(old)));
        ASSERT_TRUE(m->erase(bytes(key)));
    }
    pin_cpu pin;
    uint32_t me = pin.slot(ncpus);
    uint64_t v = 42;
    EXPECT_EQ(m->update(&key, &v, update_any), 0);
    auto after = slots(m, key);
    for (uint32_t cpu = 0; cpu < ncpus; cpu++) {
        EXPECT_EQ(after[cpu], cpu == me ? 42u : 0u) << "cpu slot " << cpu;
    }
}

INSTANTIATE_TEST_SUITE_P(Types, PerCpuMap,
                         ::testing::Values(map_type::percpu_array, map_type::percpu_hash,
                                           map_type::lru_percpu_hash),
                         [](const auto &p) { return std::string(map_type_name(p.param)); });

} // namespace
} // namespace bpftime::maps::test
