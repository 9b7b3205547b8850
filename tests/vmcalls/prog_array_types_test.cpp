// SPDX-License-Identifier: MIT
// A program array holds programs of its callers' type only (Linux's bpf_prog_map_compatible):
// the dispatcher object compiled with clang -target bpf, its array filled through the C++ map
// API of the user-space provider; and the same dispatcher on the kernel provider, its array
// filled with the same program ids, gives the same answers.
#include <bpftime/provider/kernel_provider.hpp>

#include "../provider_fixture.hpp"

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bpftime {
namespace {

const std::string objects = BPFTIME_VMCALLS_TEST_OBJECTS_DIR;

struct ProgArrayTypes : test::provider_fixture {
    ProgArrayTypes() : provider_fixture("bpftime-prog-array-types") {}
};

result<void> put(map_access &m, uint32_t slot, uint32_t prog) {
    return m.write({reinterpret_cast<const uint8_t *>(&slot), 4},
                   {reinterpret_cast<const uint8_t *>(&prog), 4}, 0);
}

TEST_F(ProgArrayTypes, ProgramOfAnotherTypeIsRefusedNamingBoth) {
    auto obj = test::load_elf(*provider, objects + "/dispatch.bpf.o");
    uint32_t handlers = test::id_of(obj.maps, "handlers");
    uint32_t dispatch = test::id_of(obj.programs, "dispatch");
    uint32_t other = test::id_of(obj.programs, "other_type");
    auto m = provider->open_map(handlers);
    ASSERT_TRUE(m) << m.err().message;
    ASSERT_TRUE(put(**m, 1, test::id_of(obj.programs, "handler1")));

    auto r = put(**m, 0, other);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    const std::string want = "program " + std::to_string(other) +
                             " (other_type) is a kprobe (type 2) program and cannot go into "
                             "prog_array " +
                             std::to_string(handlers) + " (handlers): program " +
                             std::to_string(dispatch) +
                             " (dispatch), which tail-calls through it, is a syscall (type 31) "
                             "program";
    EXPECT_NE(r.err().message.find(want), std::string::npos) << r.err().message;
    auto slot0 = (*m)->read({reinterpret_cast<const uint8_t *>("\0\0\0\0"), 4});
    ASSERT_TRUE(slot0) << slot0.err().message;
    EXPECT_EQ(*slot0, std::vector<uint8_t>(4, 0)) << "the refused program is not in the slot";
    EXPECT_TRUE(put(**m, 2, test::id_of(obj.programs, "handler2")));
}

TEST_F(ProgArrayTypes, ArrayWithoutCallersTakesTheTypeOfItsFirstProgram) {
    auto obj = test::load_elf(*provider, objects + "/dispatch.bpf.o");
    map_create_spec spec;
    spec.name = "lone";
    spec.spec = maps::map_spec{maps::map_type::prog_array, 4, 4, 4, 0};
    auto lone = provider->create_map(spec);
    ASSERT_TRUE(lone) << lone.err().message;
    auto m = provider->open_map(*lone);
    ASSERT_TRUE(m) << m.err().message;
    uint32_t other = test::id_of(obj.programs, "other_type");
    ASSERT_TRUE(put(**m, 0, other));
    auto r = put(**m, 1, test::id_of(obj.programs, "handler1"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(r.err().message.find("program " + std::to_string(other) +
                                   " (other_type), in its slot 0, is a kprobe (type 2) program"),
              std::string::npos)
        << r.err().message;
}

// dispatch_raw_tp.bpf.c's context: the raw tracepoint's arguments.
struct request {
    uint64_t handler;
    uint64_t arg;
};

// Fills `handlers` with handler1..3 by program id and runs the dispatcher on each request
// through run(dispatch id, request); gives the answers.
template <class Run>
std::vector<uint64_t> dispatch_answers(base_event_provider &p, const loaded_object &obj, Run run) {
    auto m = p.open_map(test::id_of(obj.maps, "handlers"));
    EXPECT_TRUE(m) << m.err().message;
    if (!m) {
        return {};
    }
    for (uint32_t i = 1; i <= 3; i++) {
        uint32_t prog = test::id_of(obj.programs, "handler" + std::to_string(i));
        auto ok = put(**m, i, prog);
        EXPECT_TRUE(ok) << ok.err().message;
        uint32_t key = i;
        auto back = (*m)->read({reinterpret_cast<const uint8_t *>(&key), 4});
        EXPECT_TRUE(back) << "slot " << i;
        if (back) {
            EXPECT_EQ(*back, std::vector<uint8_t>(reinterpret_cast<const uint8_t *>(&prog),
                                                  reinterpret_cast<const uint8_t *>(&prog) + 4))
                << "a lookup gives the program id back";
        }
    }
    auto refused = put(**m, 0, test::id_of(obj.programs, "other_type"));
    EXPECT_FALSE(refused) << "a kprobe program in an array of raw_tracepoint programs";
    if (refused) {
        return {};
    }
    EXPECT_EQ(refused.err().code, EINVAL) << refused.err().message;
    std::vector<uint64_t> out;
    uint32_t dispatch = test::id_of(obj.programs, "dispatch");
    for (request r : {request{1, 5}, request{2, 5}, request{3, 5}, request{0, 5}}) {
        out.push_back(run(dispatch, r));
    }
    return out;
}

TEST_F(ProgArrayTypes, KernelProviderTakesProgramIdsAndAnswersAsUserSpace) {
    auto obj = test::load_elf(*provider, objects + "/dispatch_raw_tp.bpf.o");
    auto user = dispatch_answers(*provider, obj, [&](uint32_t prog, request r) -> uint64_t {
        auto c = provider->manager().compile(prog);
        EXPECT_TRUE(c) << c.err().message;
        if (!c) {
            return 0;
        }
        auto rc = (*c)->run(&r, sizeof r);
        EXPECT_TRUE(rc) << rc.err().message;
        return rc ? *rc : 0;
    });
    // handler 1, handler 2, handler 3 then 1, an empty slot.
    EXPECT_EQ(user, (std::vector<uint64_t>{105, 205, 105, 900}));

    if (auto ok = kernel_event_provider::available(); !ok) {
        GTEST_SKIP() << "the kernel comparison needs the kernel's eBPF: " << ok.err().message;
    }
    std::string kname = "bpftime-kprogarray-" + std::to_string(getpid());
    (void)kernel_event_provider::remove(kname);
    auto kp = kernel_event_provider::open(kname, true);
    ASSERT_TRUE(kp) << kp.err().message;
    auto kobj = test::load_elf(**kp, objects + "/dispatch_raw_tp.bpf.o");
    auto kernel = dispatch_answers(**kp, kobj, [&](uint32_t prog, request r) -> uint64_t {
        std::string pin = std::string(bpffs_root) + "/" + kname + "/prog_" + std::to_string(prog);
        int fd = bpf_obj_get(pin.c_str());
        EXPECT_GE(fd, 0) << pin << ": " << std::strerror(errno);
        if (fd < 0) {
            return 0;
        }
        LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &r, .ctx_size_in = sizeof r);
        EXPECT_EQ(bpf_prog_test_run_opts(fd, &opts), 0) << std::strerror(errno);
        close(fd);
        return opts.retval;
    });
    kp->reset();
    (void)kernel_event_provider::remove(kname);
    EXPECT_EQ(kernel, user);
}

} // namespace
} // namespace bpftime
