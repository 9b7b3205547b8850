// SPDX-License-Identifier: MIT
// System call tracepoints hosted in this process, with real programs (bpf/getpgid_trace.bpf.c,
// built with clang -target bpf) on a private segment: a number with enter programs only takes
// the rewritten site's short path, one with an exit program the full one; both give exact
// counts and the kernel's contexts, and links attached and detached switch a number between
// them while the process runs.
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/cpu/vector_state.hpp>
#include <bpftime/hook/syscall_intercept.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/syscall/syscall_tracepoint.hpp>

#include "../ymm_asm.hpp"

#include <gtest/gtest.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>

namespace {

using namespace bpftime;
namespace si = syscall_intercept;

const std::string segment_name = "bpftime-syscall-host-test-" + std::to_string(getpid());

// Slots of the program's map (see the program).
enum slot : uint32_t {
    enters = 0,
    enter_common = 1,
    enter_nr = 2,
    enter_args = 3,
    exits = 9,
    exit_common = 10,
    exit_nr = 11,
    exit_ret = 12,
    raw_enters = 13,
    raw_common = 14,
    raw_arg0 = 15,
    timed_enters = 16,
    timed_last = 17,
};

// Loads ymm0-15 from in (16 x 32 bytes), makes getpgid(0) with its own `syscall` (a site of
// this program, rewritten when armed: its unwind entry names the function), stores ymm0-15 to
// out.
extern "C" void bpftime_test_getpgid_with_ymm(const void *in, void *out);
asm(R"(
        .text
        .p2align 4
        .globl bpftime_test_getpgid_with_ymm
        .type bpftime_test_getpgid_with_ymm, @function
bpftime_test_getpgid_with_ymm:
        .cfi_startproc
        pushq %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_offset %rbx, -16
        movq %rsi, %rbx
)" BPFTIME_TEST_YMM_LOAD("%rdi") R"(
        movl $121, %eax
        xorl %edi, %edi
        syscall
)" BPFTIME_TEST_YMM_STORE("%rbx") R"(
        vzeroupper
        popq %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        ret
        .cfi_endproc
        .size bpftime_test_getpgid_with_ymm, . - bpftime_test_getpgid_with_ymm
)");

class SyscallHost : public ::testing::Test {
protected:
    void SetUp() override {
        (void)store::segment::remove(segment_name);
        auto seg = store::segment::open(segment_name, {.create = true});
        ASSERT_TRUE(seg) << seg.err().message;
        // The optimised tier at once: no background compile thread starting while the sites
        // are rewritten (a thread starting runs with every signal blocked, and meeting a site
        // in the middle of its rewrite then ends the process).
        manager_options opts;
        opts.engine_options.tier = vm::jit_tier::optimised;
        auto p = std::make_unique<event_provider_impl>(*seg, opts);
        auto reg = p->manager().register_attach_impls(make_syscall_attach_impls());
        ASSERT_TRUE(reg) << reg.err().message;
        provider_ = std::move(p);
        const std::string path =
            std::string(BPFTIME_SYSCALL_HOST_OBJECTS_DIR) + "/getpgid_trace.bpf.o";
        auto obj = loader::open_elf(path);
        ASSERT_TRUE(obj) << path << ": " << obj.err().message;
        auto loaded = load_object(*provider_, *obj);
        ASSERT_TRUE(loaded) << loaded.err().message;
        for (const auto &[id, name] : loaded->programs)
            programs_[name] = id;
        auto m = provider_->open_map(loaded->maps.front().first);
        ASSERT_TRUE(m) << m.err().message;
        seen_ = std::move(*m);
    }

    void TearDown() override {
        for (auto it = made_.rbegin(); it != made_.rend(); ++it)
            (void)provider_->destroy_object(*it);
        if (provider_)
            (void)provider_->instantiate();
        seen_.reset();
        provider_.reset();
        (void)store::segment::remove(segment_name);
    }

    // Attaches a program at a tracepoint; returns the ids to destroy (link first).
    std::pair<uint32_t, uint32_t> attach(const std::string &program, const std::string &where) {
        auto target = provider_->create_attach_target(attach_type_tracepoint, where);
        EXPECT_TRUE(target) << where << ": " << (target ? "" : target.err().message);
        if (!target)
            return {};
        auto link = provider_->attach_program(programs_.at(program), *target);
        EXPECT_TRUE(link) << where << ": " << (link ? "" : link.err().message);
        auto inst = provider_->instantiate();
        EXPECT_TRUE(inst) << (inst ? "" : inst.err().message);
        made_.push_back(*target);
        made_.push_back(link ? *link : 0);
        return {link ? *link : 0, *target};
    }

    void detach(std::pair<uint32_t, uint32_t> ids) {
        ASSERT_TRUE(provider_->destroy_object(ids.first));
        ASSERT_TRUE(provider_->destroy_object(ids.second));
        ASSERT_TRUE(provider_->instantiate());
        std::erase_if(made_, [&](uint32_t id) { return id == ids.first || id == ids.second; });
    }

    uint64_t read(uint32_t key) {
        auto v = seen_->read({reinterpret_cast<const uint8_t *>(&key), sizeof key});
        EXPECT_TRUE(v) << v.err().message;
        uint64_t n = 0;
        if (v)
            std::memcpy(&n, v->data(), sizeof n);
        return n;
    }

    // The common fields the kernel gives this thread's events of a tracepoint.
    static uint64_t common_of(const std::string &tracepoint) {
        auto id = tracepoint_id(tracepoint); // 0 when tracefs cannot say, as the host does
        const uint64_t type = id ? *id : 0;
        return (type & 0xFFFF) | uint64_t{static_cast<uint32_t>(gettid())} << 32;
    }

    // n calls of getpgid(pid) through libc, each as the kernel answers.
    static void calls(int n, pid_t pid) {
        const pid_t want = static_cast<pid_t>(si::raw_syscall(SYS_getpgid, pid));
        for (int i = 0; i < n; ++i)
            ASSERT_EQ(getpgid(pid), want);
    }

    std::unique_ptr<event_provider_impl> provider_;
    std::map<std::string, uint32_t> programs_;
    std::unique_ptr<map_access> seen_;
    std::vector<uint32_t> made_;
};

TEST_F(SyscallHost, EnterOnlyAndEnterWithExitGiveExactCountsAndTheKernelsContexts) {
    const pid_t self = getpid();
    // Enter programs only: the short path, the record the kernel's sys_enter_getpgid format
    // describes (common fields, the number at 8 with zero padding, the arguments from 16).
    attach("getpgid_enter", "syscalls:sys_enter_getpgid");
    uint64_t short_calls = si::short_path_calls();
    calls(100, self);
    EXPECT_EQ(read(enters), 100u);
    EXPECT_EQ(read(exits), 0u);
    EXPECT_EQ(si::short_path_calls() - short_calls, 100u)
        << "getpgid did not take the rewritten site's short path";
    EXPECT_EQ(read(enter_common), common_of("syscalls:sys_enter_getpgid"));
    EXPECT_EQ(read(enter_nr), static_cast<uint64_t>(SYS_getpgid));
    EXPECT_EQ(read(enter_args), static_cast<uint64_t>(self));

    // An exit program attached while the process runs: the full path, both exact.
    auto exit_link = attach("getpgid_exit", "syscalls:sys_exit_getpgid");
    short_calls = si::short_path_calls();
    calls(100, 0);
    EXPECT_EQ(read(enters), 200u);
    EXPECT_EQ(read(exits), 100u);
    EXPECT_EQ(si::short_path_calls() - short_calls, 0u);
    EXPECT_EQ(read(enter_args), 0u);
    EXPECT_EQ(read(exit_common), common_of("syscalls:sys_exit_getpgid"));
    EXPECT_EQ(read(exit_nr), static_cast<uint64_t>(SYS_getpgid));
    EXPECT_EQ(static_cast<int64_t>(read(exit_ret)), si::raw_syscall(SYS_getpgid, 0));

    // Detached again: back on the short path, the exit program runs no more.
    detach(exit_link);
    short_calls = si::short_path_calls();
    calls(100, self);
    EXPECT_EQ(read(enters), 300u);
    EXPECT_EQ(read(exits), 100u);
    EXPECT_EQ(si::short_path_calls() - short_calls, 100u);
    EXPECT_EQ(read(enter_args), static_cast<uint64_t>(self));

    // A call that fails reaches the program (enter) and the caller (errno) as without it.
    errno = 0;
    EXPECT_EQ(getpgid(-1), -1);
    EXPECT_EQ(errno, ESRCH);
    EXPECT_EQ(read(enters), 301u);
}

// raw_syscalls:sys_enter beside a number's own enter program: both on the short path, each
// with its own common fields on the same record.
TEST_F(SyscallHost, RawSyscallsEnterAndTheNumbersOwnShareTheShortPath) {
    attach("getpgid_enter", "syscalls:sys_enter_getpgid");
    attach("any_enter", "raw_syscalls:sys_enter");
    const uint64_t short_calls = si::short_path_calls();
    calls(50, 0);
    EXPECT_EQ(read(enters), 50u);
    EXPECT_EQ(read(raw_enters), 50u);
    EXPECT_GE(si::short_path_calls() - short_calls, 50u);
    EXPECT_EQ(read(raw_common), common_of("raw_syscalls:sys_enter"));
    EXPECT_EQ(read(enter_common), common_of("syscalls:sys_enter_getpgid"));
    EXPECT_EQ(read(raw_arg0), 0u);
}

// A number whose programs all keep the vector state (the JIT's code of a program without loops
// or helper calls) takes the short path's plain form, which saves no vector register: exact
// counts, and the application's ymm registers, upper halves included, as the kernel keeps
// them. A second program that calls a helper puts the number back on the short path.
TEST_F(SyscallHost, ProgramsThatKeepTheVectorStateTakeThePlainPath) {
    if (!cpu::vectors().avx)
        GTEST_SKIP() << "the test's system call site keeps ymm registers: this CPU or kernel "
                        "has no AVX";
    attach("getpgid_enter", "syscalls:sys_enter_getpgid");
    calls(1, getpid()); // the thread's first call finds its counter slot and errno
    uint64_t plain = si::plain_path_calls();
    calls(100, getpid());
    EXPECT_EQ(read(enters), 101u);
    EXPECT_EQ(si::plain_path_calls() - plain, 100u)
        << "getpgid did not take the short path's plain form";

    std::array<uint8_t, 16 * 32> in{}, out{};
    for (size_t i = 0; i < in.size(); ++i)
        in[i] = static_cast<uint8_t>(i * 13 + 5);
    plain = si::plain_path_calls();
    bpftime_test_getpgid_with_ymm(in.data(), out.data());
    EXPECT_EQ(si::plain_path_calls() - plain, 1u) << "the test's own site was not rewritten";
    EXPECT_EQ(read(enters), 102u);
    EXPECT_EQ(read(enter_args), 0u);
    EXPECT_EQ(out, in) << "a vector register changed across the system call";

    attach("getpgid_enter_timed", "syscalls:sys_enter_getpgid");
    plain = si::plain_path_calls();
    const uint64_t short_calls = si::short_path_calls();
    calls(100, 0);
    EXPECT_EQ(read(enters), 202u);
    EXPECT_EQ(read(timed_enters), 100u);
    EXPECT_NE(read(timed_last), 0u);
    EXPECT_EQ(si::plain_path_calls() - plain, 0u);
    EXPECT_EQ(si::short_path_calls() - short_calls, 100u);
}

} // namespace
