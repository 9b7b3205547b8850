// SPDX-License-Identifier: MIT
// array_of_maps and hash_of_maps in the maps layer: specs and their inner template, the
// template checks Linux's map_meta_equal makes (each refusal its own case), the slots as
// programs and the controller see them, and another process seeing a slot change.
#include "test_util.hpp"

namespace bpftime::maps::test {
namespace {

constexpr inner_map_template array_template{map_type::array, 4, 8, 16, 0};
constexpr map_spec outer_array{map_type::array_of_maps, 4, 4, 8, 0, 0, array_template};
constexpr map_spec outer_hash{map_type::hash_of_maps, 8, 4, 8, 0, 0, array_template};

std::span<const uint8_t> bytes(const uint32_t &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}
std::span<const uint8_t> bytes(const uint64_t &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

std::string refusal(const map_spec &outer, const map_spec &inner) {
    auto r = check_inner_map(outer, inner);
    EXPECT_FALSE(r);
    if (r) {
        return {};
    }
    EXPECT_EQ(r.err().code, EINVAL);
    return r.err().message;
}

TEST(MapInMap, TypesAndNames) {
    EXPECT_EQ(std::string(map_type_name(map_type::array_of_maps)), "array_of_maps");
    EXPECT_EQ(std::string(map_type_name(map_type::hash_of_maps)), "hash_of_maps");
    EXPECT_EQ(parse_map_type("array_of_maps"), map_type::array_of_maps);
    EXPECT_EQ(parse_map_type("hash_of_maps"), map_type::hash_of_maps);
    EXPECT_EQ(static_cast<uint32_t>(map_type::array_of_maps), 12u);
    EXPECT_EQ(static_cast<uint32_t>(map_type::hash_of_maps), 13u);
    EXPECT_TRUE(is_map_in_map(map_type::hash_of_maps));
    EXPECT_FALSE(is_map_in_map(map_type::prog_array));
    EXPECT_TRUE(validate_spec(outer_array));
    EXPECT_TRUE(validate_spec(outer_hash));
}

TEST(MapInMap, SpecWithoutTemplateIsRefused) {
    auto r = validate_spec(map_spec{map_type::array_of_maps, 4, 4, 8, 0});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("array_of_maps maps need an inner map"), std::string::npos)
        << r.err().message;
}

TEST(MapInMap, TemplateOnAnotherTypeIsRefused) {
    auto r = validate_spec(map_spec{map_type::array, 4, 8, 8, 0, 0, array_template});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("array maps take no inner map"), std::string::npos)
        << r.err().message;
}

TEST(MapInMap, ValuesAreFourBytes) {
    auto r = validate_spec(map_spec{map_type::hash_of_maps, 4, 8, 8, 0, 0, array_template});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("value_size 8: hash_of_maps maps have 4-byte values (an "
                                   "inner map)"),
              std::string::npos)
        << r.err().message;
}

TEST(MapInMap, TemplateThatIsAMapInMapIsRefused) {
    inner_map_template nested{map_type::array_of_maps, 4, 4, 8, 0};
    auto r = validate_spec(map_spec{map_type::array_of_maps, 4, 4, 8, 0, 0, nested});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("array_of_maps maps cannot be inner maps"), std::string::npos)
        << r.err().message;
}

TEST(MapInMap, InvalidTemplateIsRefused) {
    inner_map_template bad{map_type::array, 8, 8, 16, 0}; // arrays have 4-byte keys
    auto r = validate_spec(map_spec{map_type::array_of_maps, 4, 4, 8, 0, 0, bad});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("the inner map template: key_size 8"), std::string::npos)
        << r.err().message;
}

TEST(MapInMap, MatchingInnerMapIsAccepted) {
    EXPECT_TRUE(check_inner_map(outer_array, map_spec{map_type::array, 4, 8, 16, 0}));
}

TEST(MapInMap, InnerOfAnotherTypeIsRefused) {
    EXPECT_NE(refusal(outer_array, map_spec{map_type::hash, 4, 8, 16, 0})
                  .find("its type is hash, the outer map's inner template has array"),
              std::string::npos);
}

TEST(MapInMap, InnerKeySizeMismatchIsRefused) {
    inner_map_template hash_template{map_type::hash, 4, 8, 16, 0};
    map_spec outer{map_type::array_of_maps, 4, 4, 8, 0, 0, hash_template};
    EXPECT_NE(refusal(outer, map_spec{map_type::hash, 8, 8, 16, 0})
                  .find("its key_size is 8, the outer map's inner template has 4"),
              std::string::npos);
}

TEST(MapInMap, InnerValueSizeMismatchIsRefused) {
    EXPECT_NE(refusal(outer_array, map_spec{map_type::array, 4, 16, 16, 0})
                  .find("its value_size is 16, the outer map's inner template has 8"),
              std::string::npos);
}

TEST(MapInMap, InnerFlagsMismatchIsRefused) {
    EXPECT_NE(refusal(outer_array, map_spec{map_type::array, 4, 8, 16, map_inner_map})
                  .find("its flags is 0x1000, the outer map's inner template has 0x0"),
              std::string::npos);
}

TEST(MapInMap, InnerArrayMaxEntriesMismatchIsRefused) {
    EXPECT_NE(refusal(outer_array, map_spec{map_type::array, 4, 8, 32, 0})
                  .find("its max_entries is 32, the outer map's inner template has 16"),
              std::string::npos);
}

TEST(MapInMap, InnerMapFlagLetsArrayMaxEntriesVary) {
    map_spec outer{map_type::array_of_maps, 4, 4, 8, 0, 0, {map_type::array, 4, 8, 16, 0x1000}};
    ASSERT_TRUE(validate_spec(outer));
    EXPECT_TRUE(check_inner_map(outer, map_spec{map_type::array, 4, 8, 32, map_inner_map}));
}

TEST(MapInMap, HashMaxEntriesMayDifferAsInLinux) {
    map_spec outer{map_type::hash_of_maps, 4, 4, 8, 0, 0, {map_type::hash, 4, 8, 16, 0}};
    EXPECT_TRUE(check_inner_map(outer, map_spec{map_type::hash, 4, 8, 1024, 0}));
}

TEST(MapInMap, MapInMapAsInnerIsRefused) {
    EXPECT_NE(refusal(outer_array, outer_hash).find("hash_of_maps maps cannot be inner maps"),
              std::string::npos);
}

TEST(MapInMap, ArraySlotsAsProgramsAndControllerSeeThem) {
    shm_map m(outer_array);
    EXPECT_TRUE(m->value_area().empty()) << "programs cannot read the ids";
    EXPECT_FALSE(m->lookup_plan());
    uint32_t key = 3, id = 77;
    EXPECT_EQ(m->inner_map_id(&key), 0u);
    auto empty = m->read(bytes(key));
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.err().code, ENOENT) << "as Linux: an empty slot holds no map";
    EXPECT_EQ(m->update(&key, &id, update_any), -EINVAL) << "programs cannot put maps in";
    EXPECT_EQ(m->remove(&key), -EINVAL) << "programs cannot take maps out";
    ASSERT_TRUE(m->write(bytes(key), bytes(id)));
    EXPECT_EQ(m->inner_map_id(&key), 77u);
    auto read = m->read(bytes(key));
    ASSERT_TRUE(read);
    EXPECT_EQ(*read, (std::vector<uint8_t>{77, 0, 0, 0}));
    ASSERT_TRUE(m->erase(bytes(key)));
    EXPECT_EQ(m->inner_map_id(&key), 0u);
    auto again = m->erase(bytes(key));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.err().code, ENOENT);
    uint32_t past = 8;
    auto out = m->erase(bytes(past));
    ASSERT_FALSE(out);
    EXPECT_EQ(out.err().code, E2BIG);
    EXPECT_EQ(m->inner_map_id(&past), 0u);
}

TEST(MapInMap, HashEntriesComeAndGo) {
    shm_map m(outer_hash);
    uint64_t key = 0x1122334455667788ull;
    uint32_t id = 9;
    EXPECT_EQ(m->inner_map_id(&key), 0u);
    ASSERT_TRUE(m->write(bytes(key), bytes(id), update_noexist));
    EXPECT_EQ(m->inner_map_id(&key), 9u);
    EXPECT_EQ(m->count(), 1u);
    auto next = m->next_key({});
    ASSERT_TRUE(next && *next);
    EXPECT_EQ(**next, std::vector<uint8_t>(bytes(key).begin(), bytes(key).end()));
    ASSERT_TRUE(m->erase(bytes(key)));
    EXPECT_EQ(m->inner_map_id(&key), 0u);
    EXPECT_EQ(m->count(), 0u);
}

TEST(MapInMap, AnotherProcessSeesTheSlotChange) {
    shm_map m(outer_array);
    uint32_t key = 1, first = 5, second = 6;
    ASSERT_TRUE(m->write(bytes(key), bytes(first)));
    int to_child[2], to_parent[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(to_parent), 0);
    pid_t pid = spawn([&] {
        auto [region, view] = m.reopen();
        uint32_t k = 1;
        if (view.inner_map_id(&k) != 5) {
            return 2;
        }
        char c = 'r';
        if (::write(to_parent[1], &c, 1) != 1 || ::read(to_child[0], &c, 1) != 1) {
            return 3;
        }
        return view.inner_map_id(&k) == 6 ? 0 : 4;
    });
    char c = 0;
    ASSERT_EQ(::read(to_parent[0], &c, 1), 1);
    ASSERT_TRUE(m->write(bytes(key), bytes(second)));
    ASSERT_EQ(::write(to_child[1], &c, 1), 1);
    expect_success(pid);
    for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) {
        ::close(fd);
    }
}

} // namespace
} // namespace bpftime::maps::test
