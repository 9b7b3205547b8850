// SPDX-License-Identifier: MIT
// array_of_maps and hash_of_maps through the store and programs: outer maps with an inner
// template, inner maps put in by id with the template checked (each refusal its own case), a
// held inner map that cannot be destroyed until its entry goes, and programs that look the
// inner map up through the outer map and count into it, following an entry switched by
// another process without a resync, on each engine.
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/vm/assembler.hpp>

#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <sys/wait.h>
#include <unistd.h>

namespace bpftime {
namespace {

constexpr maps::map_spec counter_spec{maps::map_type::array, 4, 8, 4, 0};
constexpr maps::inner_map_template counter_template{maps::map_type::array, 4, 8, 4, 0};

std::span<const uint8_t> bytes(const uint32_t &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

struct MapInMapTest : test::provider_fixture {
    MapInMapTest() : provider_fixture("bpftime-mim-test") {}

    uint32_t map(const std::string &map_name, const maps::map_spec &spec) {
        auto id = provider->create_map({map_name, spec});
        EXPECT_TRUE(id.ok()) << id.err().message;
        return id.ok() ? *id : 0;
    }
    uint32_t outer(maps::map_type type = maps::map_type::array_of_maps) {
        return map("outer", {type, 4, 4, 8, 0, 0, counter_template});
    }
    result<void> put(uint32_t outer_id, uint32_t key, uint32_t inner_id) {
        auto m = provider->open_map(outer_id);
        if (!m) {
            return m.err();
        }
        return (*m)->write(bytes(key), bytes(inner_id), maps::update_any);
    }
    uint64_t counter(uint32_t inner_id, uint32_t index = 0) {
        auto m = provider->open_map(inner_id);
        EXPECT_TRUE(m.ok());
        auto v = m ? (*m)->read(bytes(index)) : result<std::vector<uint8_t>>(m.err());
        EXPECT_TRUE(v.ok()) << (v ? "" : v.err().message);
        uint64_t out = 0;
        if (v && v->size() >= sizeof out) {
            std::memcpy(&out, v->data(), sizeof out);
        }
        return out;
    }
    void expect_refused(const result<void> &r, int code, const std::string &text) {
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.err().code, code) << r.err().message;
        EXPECT_NE(r.err().message.find(text), std::string::npos) << r.err().message;
    }
};

// Looks up key 0 of the outer map (the inner map, or 0: returns 0), then adds 1 to the u64 at
// index 1 of the inner map; returns 1 when it counted.
std::string count_through(uint32_t outer_id) {
    return "stw [%r10-4], 0\n"
           "lddw %r1, map_fd(" +
           std::to_string(outer_id) +
           ")\n"
           "mov %r2, %r10\n"
           "add %r2, -4\n"
           "call 1\n"
           "jeq %r0, 0, none\n"
           "mov %r1, %r0\n"
           "stw [%r10-8], 1\n"
           "mov %r2, %r10\n"
           "add %r2, -8\n"
           "call 1\n"
           "jeq %r0, 0, none\n"
           "mov %r1, 1\n"
           "lock add [%r0], %r1\n"
           "mov %r0, 1\n"
           "exit\n"
           "none:\n"
           "mov %r0, 0\n"
           "exit\n";
}

TEST_F(MapInMapTest, OuterMapKeepsItsTemplate) {
    uint32_t o = outer(maps::map_type::hash_of_maps);
    auto info = seg->map(o);
    ASSERT_TRUE(info.ok()) << info.err().message;
    EXPECT_EQ(info->spec.inner.type, maps::map_type::array);
    EXPECT_EQ(info->spec.inner.key_size, 4u);
    EXPECT_EQ(info->spec.inner.value_size, 8u);
    EXPECT_EQ(info->spec.inner.max_entries, 4u);
}

TEST_F(MapInMapTest, MatchingMapIsPutInAndReadAsItsId) {
    uint32_t o = outer(), a = map("a", counter_spec);
    ASSERT_TRUE(put(o, 2, a).ok());
    auto m = provider->open_map(o);
    ASSERT_TRUE(m.ok());
    uint32_t key = 2;
    auto v = (*m)->read(bytes(key));
    ASSERT_TRUE(v.ok()) << v.err().message;
    uint32_t id = 0;
    std::memcpy(&id, v->data(), sizeof id);
    EXPECT_EQ(id, a);
}

TEST_F(MapInMapTest, MismatchingMapIsRefused) {
    uint32_t o = outer(), big = map("big", {maps::map_type::array, 4, 16, 4, 0});
    expect_refused(put(o, 0, big), EINVAL,
                   "map " + std::to_string(big) + " cannot be put into map " + std::to_string(o) +
                       " (outer): its value_size is 16, the outer map's inner template has 8");
}

TEST_F(MapInMapTest, MapOfAnotherTypeIsRefused) {
    uint32_t o = outer(), h = map("h", {maps::map_type::hash, 4, 8, 4, 0});
    expect_refused(put(o, 0, h), EINVAL,
                   "its type is hash, the outer map's inner template has array");
}

TEST_F(MapInMapTest, OuterMapCannotHoldItself) {
    uint32_t o = outer();
    expect_refused(put(o, 0, o), EINVAL, "a map cannot hold itself");
}

TEST_F(MapInMapTest, OuterMapCannotHoldAnotherOuterMap) {
    uint32_t o = outer(), other = outer(maps::map_type::hash_of_maps);
    expect_refused(put(o, 0, other), EINVAL, "hash_of_maps maps cannot be inner maps");
}

TEST_F(MapInMapTest, IdThatIsNoMapIsRefused) {
    uint32_t o = outer();
    auto prog = provider->create_program({"p", 0, "", *vm::assemble("mov %r0, 0\nexit\n"), {}});
    ASSERT_TRUE(prog.ok());
    expect_refused(put(o, 0, *prog), EINVAL, "is a program, not a map");
    expect_refused(put(o, 0, 999), ENOENT, "no object with id 999");
}

TEST_F(MapInMapTest, ValueOfWrongSizeIsRefused) {
    uint32_t o = outer();
    auto m = provider->open_map(o);
    ASSERT_TRUE(m.ok());
    uint32_t key = 0;
    uint64_t wide = 1;
    expect_refused(
        (*m)->write(bytes(key), {reinterpret_cast<const uint8_t *>(&wide), 8}, maps::update_any),
        EINVAL, "its values are inner map ids (4 bytes), not 8 bytes");
}

TEST_F(MapInMapTest, HeldInnerMapCannotBeDestroyedUntilItsEntryGoes) {
    uint32_t o = outer(), a = map("a", counter_spec);
    ASSERT_TRUE(put(o, 3, a).ok());
    expect_refused(provider->destroy_object(a), EBUSY,
                   "map " + std::to_string(a) + " is an inner map of map " + std::to_string(o) +
                       " (key 3); delete those entries or destroy map " + std::to_string(o) +
                       " first");
    EXPECT_TRUE(provider->open_map(a).ok()) << "the map stays usable";
    auto m = provider->open_map(o);
    ASSERT_TRUE(m.ok());
    uint32_t key = 3;
    ASSERT_TRUE((*m)->erase(bytes(key)).ok());
    EXPECT_TRUE(provider->destroy_object(a).ok()) << "the entry's delete released it";
}

TEST_F(MapInMapTest, DestroyingTheOuterMapReleasesItsInnerMaps) {
    uint32_t o = outer(), a = map("a", counter_spec);
    ASSERT_TRUE(put(o, 0, a).ok());
    ASSERT_TRUE(provider->destroy_object(o).ok());
    EXPECT_TRUE(provider->destroy_object(a).ok());
}

TEST_F(MapInMapTest, PutInMapIsReadAfterDestroyAndCreateOfOthers) {
    // An inner map put in after the outer map was made is found by its id.
    uint32_t o = outer(maps::map_type::hash_of_maps);
    uint32_t a = map("a", counter_spec);
    ASSERT_TRUE(put(o, 7, a).ok());
    auto held = seg->holders(a);
    ASSERT_TRUE(held.ok());
    ASSERT_EQ(held->size(), 1u);
    EXPECT_EQ(held->front().first, o);
}

TEST_F(MapInMapTest, UncheckedEmptyEntryStopsTheProgram) {
    // The kernel's verifier refuses a map-or-null used unchecked; here the helper stops the run.
    uint32_t o = outer();
    auto prog = provider->create_program(
        {"p",
         0,
         "",
         *vm::assemble("stw [%r10-4], 0\nlddw %r1, map_fd(" + std::to_string(o) +
                       ")\nmov %r2, %r10\nadd %r2, -4\ncall 1\nmov %r1, %r0\ncall 1\nexit\n"),
         {o}});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto compiled = provider->manager().compile(*prog);
    ASSERT_TRUE(compiled.ok()) << compiled.err().message;
    auto r = (*compiled)->run(nullptr, 0);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("map_lookup_elem: r1 is not a map"), std::string::npos)
        << r.err().message;
}

TEST_F(MapInMapTest, InnerMapValuesAreTheProgramsOnlyThroughALookup) {
    // A value pointer of an inner map is usable by the program that looked it up; writing past
    // the value's map stops the run.
    uint32_t o = outer(), a = map("a", counter_spec);
    ASSERT_TRUE(put(o, 0, a).ok());
    auto prog = provider->create_program(
        {"p",
         0,
         "",
         *vm::assemble("stw [%r10-4], 0\nlddw %r1, map_fd(" + std::to_string(o) +
                       ")\nmov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, out\n"
                       "mov %r1, %r0\nmov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, out\n"
                       "stdw [%r0], 5\nstdw [%r0+4096], 5\nout:\nexit\n"),
         {o}});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto compiled = provider->manager().compile(*prog);
    ASSERT_TRUE(compiled.ok()) << compiled.err().message;
    auto r = (*compiled)->run(nullptr, 0);
    ASSERT_FALSE(r.ok()) << "a store past the inner map's values";
    EXPECT_EQ(counter(a, 0), 5u) << "the store into the value itself went through";
}

class MapInMapEngines : public MapInMapTest,
                        public ::testing::WithParamInterface<vm::engine_kind> {};

TEST_P(MapInMapEngines, ProgramCountsIntoTheInnerMapTheEntryNames) {
    if (std::find(vm::available_engines().begin(), vm::available_engines().end(), GetParam()) ==
        vm::available_engines().end()) {
        GTEST_SKIP() << "engine not built";
    }
    for (maps::map_type type : {maps::map_type::array_of_maps, maps::map_type::hash_of_maps}) {
        uint32_t o = outer(type), a = map("a", counter_spec), b = map("b", counter_spec);
        auto prog =
            provider->create_program({"count", 0, "", *vm::assemble(count_through(o)), {o}});
        ASSERT_TRUE(prog.ok()) << prog.err().message;
        attach_manager mgr(seg, {.engine = GetParam()});
        auto compiled = mgr.compile(*prog);
        ASSERT_TRUE(compiled.ok()) << compiled.err().message;
        auto run = [&] {
            auto r = (*compiled)->run(nullptr, 0);
            EXPECT_TRUE(r.ok()) << r.err().message;
            return r.ok() ? *r : 99;
        };
        EXPECT_EQ(run(), 0u) << "an empty entry looks up as null";
        ASSERT_TRUE(put(o, 0, a).ok());
        EXPECT_EQ(run(), 1u);
        EXPECT_EQ(run(), 1u);
        // Switched with no resync of this host: the next run counts into b.
        ASSERT_TRUE(put(o, 0, b).ok());
        EXPECT_EQ(run(), 1u);
        EXPECT_EQ(counter(a, 1), 2u);
        EXPECT_EQ(counter(b, 1), 1u);
        auto m = provider->open_map(o);
        ASSERT_TRUE(m.ok());
        uint32_t key = 0;
        ASSERT_TRUE((*m)->erase(bytes(key)).ok());
        EXPECT_EQ(run(), 0u) << "a deleted entry looks up as null";
        EXPECT_EQ(counter(b, 1), 1u);
        // Once the inner maps are gone, the host's next sync releases its handles of them.
        EXPECT_GE(helpers::inner_maps_in_use(), 2u);
        ASSERT_TRUE(provider->destroy_object(*prog).ok());
        ASSERT_TRUE(provider->destroy_object(o).ok());
        ASSERT_TRUE(provider->destroy_object(a).ok());
        ASSERT_TRUE(provider->destroy_object(b).ok());
        ASSERT_TRUE(mgr.instantiate().ok());
        EXPECT_EQ(helpers::inner_maps_in_use(), 0u);
    }
}

TEST_P(MapInMapEngines, AnotherProcessSwitchesTheEntryWhileThisOneRuns) {
    if (std::find(vm::available_engines().begin(), vm::available_engines().end(), GetParam()) ==
        vm::available_engines().end()) {
        GTEST_SKIP() << "engine not built";
    }
    uint32_t o = outer(), a = map("a", counter_spec), b = map("b", counter_spec);
    ASSERT_TRUE(put(o, 0, a).ok());
    auto prog = provider->create_program({"count", 0, "", *vm::assemble(count_through(o)), {o}});
    ASSERT_TRUE(prog.ok());
    attach_manager mgr(seg, {.engine = GetParam()});
    auto compiled = mgr.compile(*prog);
    ASSERT_TRUE(compiled.ok()) << compiled.err().message;
    ASSERT_EQ(*(*compiled)->run(nullptr, 0), 1u);
    // A controller process of its own opens the segment and switches the entry.
    pid_t pid = fork();
    if (pid == 0) {
        auto s = store::segment::open(name, {.create = false});
        if (!s) {
            _exit(2);
        }
        event_provider_impl p(*s);
        auto m = p.open_map(o);
        uint32_t key = 0;
        _exit(m && (*m)->write(bytes(key), bytes(b), maps::update_exist) ? 0 : 3);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    ASSERT_EQ(*(*compiled)->run(nullptr, 0), 1u);
    EXPECT_EQ(counter(a, 1), 1u);
    EXPECT_EQ(counter(b, 1), 1u);
}

INSTANTIATE_TEST_SUITE_P(Engines, MapInMapEngines,
                         ::testing::Values(vm::engine_kind::interpreter, vm::engine_kind::jit),
                         [](const ::testing::TestParamInfo<vm::engine_kind> &p) {
                             return std::string(vm::engine_name(p.param));
                         });

} // namespace
} // namespace bpftime
