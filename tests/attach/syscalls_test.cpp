// SPDX-License-Identifier: MIT
// The x86-64 system call table and the system call tracepoint targets user space hosts.
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/syscalls.hpp>

#include <gtest/gtest.h>
#include <sys/syscall.h>

namespace {

using namespace bpftime;

TEST(SyscallTable, NamesAndNumbersAsTheKernelHeadersHaveThem) {
    EXPECT_EQ(syscall_number("openat"), SYS_openat);
    EXPECT_EQ(syscall_number("getpid"), SYS_getpid);
    EXPECT_EQ(syscall_number("clone3"), SYS_clone3);
    EXPECT_EQ(syscall_number("read"), 0u);
    EXPECT_EQ(syscall_name(SYS_openat), "openat");
    EXPECT_EQ(syscall_name(100000), "");
    EXPECT_FALSE(syscall_number("nosuchcall"));
}

TEST(SyscallTable, TracepointNamesThatDifferFromTheCall) {
    EXPECT_EQ(syscall_number("newfstat"), SYS_fstat);
    EXPECT_EQ(syscall_number("newuname"), SYS_uname);
}

TEST(SyscallTracepoint, EnterAndExitTargets) {
    auto enter = parse_syscall_tracepoint("syscalls:sys_enter_openat");
    ASSERT_TRUE(enter) << enter.err().message;
    EXPECT_EQ(enter->nr, SYS_openat);
    EXPECT_FALSE(enter->exit);
    EXPECT_EQ(enter->event, "sys_enter_openat");
    auto exit = parse_syscall_tracepoint("syscalls:sys_exit_getpid");
    ASSERT_TRUE(exit) << exit.err().message;
    EXPECT_EQ(exit->nr, SYS_getpid);
    EXPECT_TRUE(exit->exit);
}

TEST(SyscallTracepoint, OtherCategoriesAreTheKernels) {
    auto r = parse_syscall_tracepoint("sched:sched_switch");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EOPNOTSUPP);
    EXPECT_EQ(r.err().message,
              "sched:sched_switch: only the kernel hosts tracepoints of category 'sched'; user "
              "space hosts syscalls:sys_enter_NAME, syscalls:sys_exit_NAME and "
              "raw_syscalls:sys_enter|sys_exit");
    // raw_syscalls hosts its two events only.
    auto other = parse_syscall_tracepoint("raw_syscalls:sys_other");
    ASSERT_FALSE(other);
    EXPECT_EQ(other.err().code, EOPNOTSUPP);
}

TEST(SyscallTracepoint, RawSyscallsCoverEveryCall) {
    auto enter = parse_syscall_tracepoint("raw_syscalls:sys_enter");
    ASSERT_TRUE(enter) << enter.err().message;
    EXPECT_TRUE(enter->all);
    EXPECT_FALSE(enter->exit);
    auto exit = parse_syscall_tracepoint("raw_syscalls:sys_exit");
    ASSERT_TRUE(exit) << exit.err().message;
    EXPECT_TRUE(exit->all);
    EXPECT_TRUE(exit->exit);
}

TEST(SyscallTracepoint, UnknownSystemCall) {
    auto r = parse_syscall_tracepoint("syscalls:sys_enter_nosuchcall");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, ENOENT);
    EXPECT_EQ(r.err().message,
              "syscalls:sys_enter_nosuchcall: no x86-64 system call named 'nosuchcall'");
}

TEST(SyscallTracepoint, NeitherEnterNorExit) {
    auto r = parse_syscall_tracepoint("syscalls:openat");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
}

TEST(SyscallTracepoint, NoCategory) {
    auto r = parse_syscall_tracepoint("sys_enter_openat");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
}

TEST(RawSyscallTracepoint, SysEnterAndSysExitOnly) {
    auto enter = parse_raw_syscall_tracepoint("sys_enter");
    ASSERT_TRUE(enter);
    EXPECT_FALSE(*enter);
    auto exit = parse_raw_syscall_tracepoint("sys_exit");
    ASSERT_TRUE(exit);
    EXPECT_TRUE(*exit);
    auto r = parse_raw_syscall_tracepoint("sched_switch");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EOPNOTSUPP);
}

TEST(SyscallTracepoint, ProgramTypesAsTheKernelChecksThem) {
    EXPECT_TRUE(check_program_type(3, 5, attach_type_tracepoint));
    EXPECT_TRUE(check_program_type(3, 17, attach_type_raw_tracepoint));
    EXPECT_TRUE(check_program_type(3, 0, attach_type_tracepoint)); // assembled: no type
    auto r = check_program_type(3, 2, attach_type_tracepoint);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message,
              "program 3 is a kprobe program; tracepoint targets take tracepoint programs");
    auto raw = check_program_type(4, 5, attach_type_raw_tracepoint);
    ASSERT_FALSE(raw);
    EXPECT_EQ(raw.err().message, "program 4 is a tracepoint program; raw_tracepoint targets take "
                                 "raw_tracepoint programs");
}

} // namespace
