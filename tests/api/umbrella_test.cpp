// SPDX-License-Identifier: MIT
// An embedding application's view: the umbrella header alone is enough to create objects in a
// segment, host them in this process and run them.
#include <bpftime/bpftime.hpp>

#include <gtest/gtest.h>

#include <string>
#include <unistd.h>

namespace bpftime {
namespace {

TEST(Umbrella, HostsAProgramThroughThePublicApi) {
    const std::string name = "bpftime-umbrella-test-" + std::to_string(getpid());
    auto seg = store::segment::open(name);
    ASSERT_TRUE(seg.ok()) << seg.err().message;
    event_provider_impl provider(*seg);
    auto hooks = std::make_unique<callable_attach_impl>();
    callable_attach_impl &hook = *hooks;
    ASSERT_TRUE(provider.manager().register_attach_impl(attach_type_test, std::move(hooks)).ok());

    auto insns = vm::assemble("call 174\nadd %r0, 2\nexit\n");
    ASSERT_TRUE(insns.ok()) << insns.err().message;
    auto prog = provider.create_program({"cookie_plus_two", 0, "", *insns, {}});
    ASSERT_TRUE(prog.ok()) << prog.err().message;
    auto target = provider.create_attach_target(*parse_attach_type("test"), "h");
    ASSERT_TRUE(target.ok()) << target.err().message;
    ASSERT_TRUE(provider.attach_program(*prog, *target, 40).ok());
    ASSERT_TRUE(provider.instantiate().ok());

    auto results = hook.trigger("h", nullptr, 0);
    ASSERT_EQ(results.size(), 1u);
    ASSERT_TRUE(results[0].ok()) << results[0].err().message;
    EXPECT_EQ(*results[0], 42u) << "the link's cookie (40) plus 2";
    EXPECT_EQ(vm::disassemble_one(*insns, 0), "call 174");

    provider.deinstantiate();
    EXPECT_TRUE(store::segment::remove(name).ok());
}

} // namespace
} // namespace bpftime
