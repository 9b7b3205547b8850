// SPDX-License-Identifier: MIT
// A test fixture: a fresh segment of its own and a user-space provider over it; and what
// tests do through any provider (load an ELF object, find ids by name, attach).
#pragma once

#include <bpftime/provider/event_provider.hpp>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <unistd.h>

namespace bpftime::test {

/// Creates an ELF object's maps and programs through a provider; a failure fails the test.
inline loaded_object load_elf(base_event_provider &provider, const std::string &path) {
    auto obj = loader::open_elf(path);
    EXPECT_TRUE(obj) << obj.err().message;
    if (!obj) {
        return {};
    }
    auto loaded = load_object(provider, *obj);
    EXPECT_TRUE(loaded) << loaded.err().message;
    return loaded ? *loaded : loaded_object{};
}

/// The id of the object with this name (0 and a test failure when there is none).
inline uint32_t id_of(const std::vector<std::pair<uint32_t, std::string>> &objs,
                      const std::string &name) {
    for (const auto &[id, n] : objs) {
        if (n == name) {
            return id;
        }
    }
    ADD_FAILURE() << "no object named " << name;
    return 0;
}

/// Attaches prog at a new target; the link id (0 and a test failure when refused).
inline uint32_t attach(base_event_provider &provider, uint32_t prog, int32_t type,
                       const std::string &args) {
    auto target = provider.create_attach_target(type, args);
    EXPECT_TRUE(target) << target.err().message;
    if (!target) {
        return 0;
    }
    auto link = provider.attach_program(prog, *target);
    EXPECT_TRUE(link) << link.err().message;
    return link ? *link : 0;
}

struct provider_fixture : ::testing::Test {
    std::string name;
    std::shared_ptr<store::segment> seg;
    std::unique_ptr<event_provider_impl> provider;

    explicit provider_fixture(const std::string &prefix)
        : name(prefix + "-" + std::to_string(getpid())) {}

    void SetUp() override {
        (void)store::segment::remove(name);
        auto s = store::segment::open(name);
        ASSERT_TRUE(s.ok()) << s.err().message;
        seg = *s;
        provider = std::make_unique<event_provider_impl>(seg);
    }
    void TearDown() override {
        provider.reset();
        (void)store::segment::remove(name);
    }
};

} // namespace bpftime::test
