// SPDX-License-Identifier: MIT
// Limits a user meets as errors when loading, each naming the limit: map handles per host
// process, and the segment's size.
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace bpftime {
namespace {

using store::segment;

struct LimitsTest : ::testing::Test {
    std::string name;
    void SetUp() override {
        name = "bpftime-limits-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)segment::remove(name);
    }
    void TearDown() override { (void)segment::remove(name); }
};

TEST_F(LimitsTest, ProgramsNamingMoreMapsThanAHostCanHoldAreRefusedAtLoad) {
    static_assert(store::max_host_maps == helpers::max_map_handles);
    constexpr size_t limit = store::max_host_maps;
    auto seg = segment::open(name, {.max_objects = static_cast<uint32_t>(limit + 200)});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    std::vector<uint32_t> maps;
    for (size_t i = 0; i <= limit; i++) {
        auto m = (*seg)->create_map("m", {maps::map_type::array, 4, 8, 1, 0});
        ASSERT_TRUE(m.ok()) << i << ": " << m.err().message;
        maps.push_back(*m);
    }
    auto insns = vm::assemble("mov %r0, 0\nexit\n");
    ASSERT_TRUE(insns.ok());
    // Programs of 64 maps each up to the limit: every map named once.
    for (size_t first = 0; first < limit; first += store::max_program_maps) {
        std::vector<uint32_t> ids(maps.begin() + static_cast<long>(first),
                                  maps.begin() +
                                      static_cast<long>(first + store::max_program_maps));
        auto p = (*seg)->create_program("p", 0, "", *insns, ids);
        ASSERT_TRUE(p.ok()) << first << ": " << p.err().message;
    }
    // A program naming maps already named adds none.
    auto again = (*seg)->create_program("again", 0, "", *insns, {maps[0], maps[1]});
    ASSERT_TRUE(again.ok()) << again.err().message;
    // One more map is one more than a host can hold: refused when loaded, naming the limit.
    auto past = (*seg)->create_program("past", 0, "", *insns, {maps.back()});
    ASSERT_FALSE(past.ok());
    EXPECT_EQ(past.err().code, E2BIG);
    EXPECT_NE(past.err().message.find("would name 4097 maps, past the limit of 4096 map handles "
                                      "per process"),
              std::string::npos)
        << past.err().message;
    // Nothing was created by the refusal; replacing a program's maps is checked the same way.
    auto snap = (*seg)->read_all();
    ASSERT_TRUE(snap.ok());
    EXPECT_EQ(snap->programs.size(), limit / store::max_program_maps + 1);
    auto replaced = (*seg)->replace_program(*again, *insns, {maps.back()});
    ASSERT_FALSE(replaced.ok());
    EXPECT_EQ(replaced.err().code, E2BIG);
}

TEST_F(LimitsTest, ASegmentTooSmallNamesTheSizeThatHoldsTheObject) {
    auto seg = segment::open(name, {.size = 256 << 10, .max_objects = 16});
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl p(*seg);
    const maps::map_spec big{maps::map_type::array, 4, 64, 8192, 0};
    auto refused = p.create_map({"big", big});
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.err().code, ENOSPC);
    const std::string &why = refused.err().message;
    auto at = why.find("BPFTIME_SHM_SIZE=");
    ASSERT_NE(at, std::string::npos) << why;
    uint64_t suggested = std::strtoull(why.c_str() + at + 17, nullptr, 10);
    EXPECT_GT(suggested, uint64_t{256} << 10) << why;
    EXPECT_EQ(suggested % (1 << 20), 0u) << why;
    // The size it names holds the object.
    std::string other = name + "-larger";
    (void)segment::remove(other);
    auto larger = segment::open(other, {.size = suggested, .max_objects = 16});
    ASSERT_TRUE(larger.ok()) << larger.err().message;
    auto fits = (*larger)->create_map("big", big);
    EXPECT_TRUE(fits.ok()) << fits.err().message;
    (void)segment::remove(other);
}

} // namespace
} // namespace bpftime
