// SPDX-License-Identifier: MIT
// System call interception in this very process: libc's rewritten sites, code no symbol
// covers (Syscall User Dispatch), the calls that must run natively, signals, disarming.
#include <bpftime/hook/syscall_intercept.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace bpftime;

struct seen {
    std::atomic<uint64_t> enters[syscall_intercept::table_size]{};
    std::atomic<uint64_t> exits[syscall_intercept::table_size]{};
    std::atomic<int64_t> last_ret{0};
    std::atomic<uint64_t> last_arg1{0};
};
seen g_seen;

void on_enter(void *, const pt_regs *r) {
    if (r->orig_rax < syscall_intercept::table_size) {
        g_seen.enters[r->orig_rax].fetch_add(1);
        g_seen.last_arg1.store(r->rdi);
    }
}
void on_exit(void *, const pt_regs *r) {
    if (r->orig_rax < syscall_intercept::table_size) {
        g_seen.exits[r->orig_rax].fetch_add(1);
        g_seen.last_ret.store(static_cast<int64_t>(r->rax));
    }
}

class SyscallIntercept : public ::testing::Test {
protected:
    void SetUp() override {
        auto r = syscall_intercept::start({on_enter, on_exit, nullptr});
        if (!r) {
            GTEST_SKIP() << "no Syscall User Dispatch here: " << r.err().message;
        }
        for (auto &e : g_seen.enters)
            e.store(0);
        for (auto &e : g_seen.exits)
            e.store(0);
    }
    void TearDown() override {
        for (uint64_t nr = 0; nr < syscall_intercept::table_size; ++nr)
            syscall_intercept::set_wanted(nr, false);
        if (syscall_intercept::armed()) {
            auto r = syscall_intercept::disarm();
            EXPECT_TRUE(r) << r.err().message;
        }
    }
};

// getpid through libc: a rewritten site, exact counts, the real result.
TEST_F(SyscallIntercept, LibcCallsAreCountedExactlyWithTheirResults) {
    auto armed = syscall_intercept::arm();
    ASSERT_TRUE(armed) << armed.err().message;
    EXPECT_GT(armed->sites, 10u) << "libc's syscall sites were not rewritten";
    syscall_intercept::set_wanted(SYS_getpid, true);
    const uint64_t rewritten = syscall_intercept::rewritten_calls();
    pid_t real = static_cast<pid_t>(syscall_intercept::raw_syscall(SYS_getpid));
    for (int i = 0; i < 1000; ++i) {
        ASSERT_EQ(getpid(), real);
    }
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 1000u);
    EXPECT_EQ(g_seen.exits[SYS_getpid].load(), 1000u);
    EXPECT_EQ(g_seen.last_ret.load(), real);
    EXPECT_GE(syscall_intercept::rewritten_calls() - rewritten, 1000u)
        << "getpid went through Syscall User Dispatch, not its rewritten site";
}

// Errors come back as the kernel gives them: errno set by libc, the handler sees -errno.
TEST_F(SyscallIntercept, ErrorsReachTheCallerAndTheHandler) {
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_openat, true);
    errno = 0;
    int fd = ::open("/nonexistent/bpftime-systp", O_RDONLY);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_EQ(g_seen.last_ret.load(), -ENOENT);
    EXPECT_EQ(g_seen.enters[SYS_openat].load(), 1u);
}

// Code with no symbol (here: made at run time, as a JIT makes it) traps through Syscall User
// Dispatch and is seen all the same.
TEST_F(SyscallIntercept, CodeWithoutSymbolsIsCoveredByTheFallback) {
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_getppid, true);
    void *page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(page, MAP_FAILED);
    const uint8_t code[] = {0xB8, SYS_getppid, 0, 0, 0, 0x0F, 0x05, 0xC3}; // mov eax; syscall; ret
    std::memcpy(page, code, sizeof code);
    ASSERT_EQ(mprotect(page, 4096, PROT_READ | PROT_EXEC), 0);
    auto fn = reinterpret_cast<long (*)()>(page);
    const uint64_t trapped = syscall_intercept::trapped_calls();
    for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(fn(), getppid());
    }
    // getppid() itself goes through libc's rewritten site: 5 + 5 enters.
    EXPECT_EQ(g_seen.enters[SYS_getppid].load(), 10u);
    EXPECT_EQ(syscall_intercept::trapped_calls() - trapped, 5u);
    munmap(page, 4096);
}

// Threads, fork and exec keep working while clone, fork and vfork are intercepted.
TEST_F(SyscallIntercept, ThreadsForkAndExecWork) {
    ASSERT_TRUE(syscall_intercept::arm());
    for (uint64_t nr :
         {SYS_clone, SYS_clone3, SYS_fork, SYS_vfork, SYS_execve, SYS_wait4, SYS_getpid})
        syscall_intercept::set_wanted(nr, true);
    std::atomic<int> ran{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&] {
            ASSERT_TRUE(syscall_intercept::enable_thread());
            for (int k = 0; k < 100; ++k)
                (void)getpid();
            ran.fetch_add(1);
        });
    for (auto &t : threads)
        t.join();
    EXPECT_EQ(ran.load(), 4);
    EXPECT_GE(g_seen.enters[SYS_getpid].load(), 400u);
    EXPECT_GE(g_seen.enters[SYS_clone].load() + g_seen.enters[SYS_clone3].load(), 4u);

    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        _exit(getppid() > 0 ? 21 : 22);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 21);

    pid_t vchild = vfork();
    if (vchild == 0) {
        execl("/bin/sh", "sh", "-c", "exit 23", static_cast<char *>(nullptr));
        _exit(99);
    }
    ASSERT_GT(vchild, 0);
    ASSERT_EQ(waitpid(vchild, &status, 0), vchild);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 23);
    EXPECT_GE(g_seen.enters[SYS_vfork].load() + g_seen.enters[SYS_clone].load() +
                  g_seen.enters[SYS_clone3].load(),
              6u);
}

std::atomic<int> g_signals{0};
void count_signal(int) {
    g_signals.fetch_add(1);
}

// A blocking call interrupted by a signal: EINTR without SA_RESTART, restarted with it.
TEST_F(SyscallIntercept, SignalsInterruptAndRestartAsWithoutInterception) {
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_read, true);
    for (bool restart : {false, true}) {
        struct sigaction sa {};
        sa.sa_handler = count_signal;
        sa.sa_flags = restart ? SA_RESTART : 0;
        ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
        int p[2];
        ASSERT_EQ(pipe(p), 0);
        g_signals = 0;
        pthread_t reader = pthread_self();
        std::thread poke([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            pthread_kill(reader, SIGUSR1);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            EXPECT_EQ(write(p[1], "x", 1), 1);
        });
        char c = 0;
        errno = 0;
        ssize_t n = read(p[0], &c, 1);
        poke.join();
        EXPECT_EQ(g_signals.load(), 1);
        if (restart) {
            EXPECT_EQ(n, 1) << "the read was not restarted";
            EXPECT_EQ(c, 'x');
        } else {
            EXPECT_EQ(n, -1);
            EXPECT_EQ(errno, EINTR);
        }
        close(p[0]);
        close(p[1]);
    }
    signal(SIGUSR1, SIG_DFL);
}

// Unwanted numbers run no handler; internal threads run none; disarming restores the bytes.
TEST_F(SyscallIntercept, OnlyWantedCallsOfTheApplicationAndDisarmRestores) {
    auto *fn = reinterpret_cast<const uint8_t *>(dlsym(RTLD_DEFAULT, "getppid"));
    ASSERT_NE(fn, nullptr);
    std::vector<uint8_t> before(fn, fn + 16);
    ASSERT_TRUE(syscall_intercept::arm());
    EXPECT_NE(std::vector<uint8_t>(fn, fn + 16), before) << "getppid was not rewritten";
    (void)getppid();
    EXPECT_EQ(g_seen.enters[SYS_getppid].load(), 0u);
    syscall_intercept::set_wanted(SYS_getppid, true);
    std::thread([] {
        syscall_intercept::set_thread_internal(true);
        (void)getppid();
    }).join();
    EXPECT_EQ(g_seen.enters[SYS_getppid].load(), 0u);
    (void)getppid();
    EXPECT_EQ(g_seen.enters[SYS_getppid].load(), 1u);
    ASSERT_TRUE(syscall_intercept::disarm());
    EXPECT_EQ(std::vector<uint8_t>(fn, fn + 16), before);
    (void)getppid();
    EXPECT_EQ(g_seen.enters[SYS_getppid].load(), 1u);
    // Armed again: the same trampolines.
    ASSERT_TRUE(syscall_intercept::arm());
    (void)getppid();
    EXPECT_EQ(g_seen.enters[SYS_getppid].load(), 2u);
}

} // namespace
