// SPDX-License-Identifier: MIT
// A test fixture: a fresh segment of its own and a user-space provider over it.
#pragma once

#include <bpftime/provider/event_provider.hpp>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <unistd.h>

namespace bpftime::test {

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
