// SPDX-License-Identifier: MIT
// prog_array slots (program ids bpf_tail_call reads) and the refusal of map types bpftime does
// not have, by their Linux name.
#include "test_util.hpp"

namespace bpftime::maps::test {
namespace {

constexpr map_spec prog_array_spec{map_type::prog_array, 4, 4, 4, 0};

TEST(ProgArray, SpecsAndSlots) {
    EXPECT_TRUE(validate_spec(prog_array_spec));
    EXPECT_EQ(std::string(map_type_name(map_type::prog_array)), "prog_array");
    EXPECT_EQ(parse_map_type("prog_array"), map_type::prog_array);
    auto bad = validate_spec(map_spec{map_type::prog_array, 4, 8, 4, 0});
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.err().message.find("value_size 8: prog_array maps have 4-byte values (a "
                                     "program)"),
              std::string::npos)
        << bad.err().message;
    EXPECT_FALSE(validate_spec(map_spec{map_type::prog_array, 8, 4, 4, 0}));

    shm_map m(prog_array_spec);
    EXPECT_TRUE(m->value_area().empty()) << "programs cannot read the slots";
    EXPECT_FALSE(m->lookup_plan());
    uint32_t key = 2, id = 41;
    EXPECT_EQ(m->lookup(&key), nullptr);
    EXPECT_EQ(m->update(&key, &id, update_any), -EINVAL) << "programs cannot add programs";
    EXPECT_EQ(m->prog_array_id(2), -ENOENT);
    EXPECT_EQ(m->prog_array_id(4), -E2BIG);
    auto empty = m->read({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_FALSE(empty) << "an empty slot reads as no such key, as in Linux";
    EXPECT_EQ(empty.err().code, ENOENT);
    ASSERT_TRUE(
        m->write({reinterpret_cast<uint8_t *>(&key), 4}, {reinterpret_cast<uint8_t *>(&id), 4}));
    EXPECT_EQ(m->prog_array_id(2), 41);
    auto read = m->read({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_TRUE(read);
    EXPECT_EQ(*read, (std::vector<uint8_t>{41, 0, 0, 0}));
    ASSERT_TRUE(m->erase({reinterpret_cast<uint8_t *>(&key), 4}));
    EXPECT_EQ(m->prog_array_id(2), -ENOENT);
    read = m->read({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_FALSE(read);
    EXPECT_EQ(read.err().code, ENOENT);
}

TEST(MapTypes, ThoseBpftimeLacksAreRefusedByName) {
    auto r = validate_spec(map_spec{static_cast<map_type>(31), 4, 8, 16, 0});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(
        r.err().message.find("type 31: bpftime has no user_ringbuf maps (it has hash, array, "),
        std::string::npos)
        << r.err().message;
    EXPECT_NE(r.err().message.find("prog_array"), std::string::npos) << r.err().message;
    r = validate_spec(map_spec{static_cast<map_type>(4000), 4, 8, 16, 0});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("type 4000: no map type Linux or bpftime knows"),
              std::string::npos)
        << r.err().message;
    EXPECT_EQ(std::string(linux_map_type_name(12)), "array_of_maps");
}

} // namespace
} // namespace bpftime::maps::test
