// SPDX-License-Identifier: MIT
// System call interception in this very process: libc's rewritten sites, code no symbol
// covers (Syscall User Dispatch), the calls that must run natively, signals, disarming.
#include <bpftime/hook/syscall_intercept.hpp>

#include "blocked_threads.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <string>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <time.h>
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

// What a read of an empty pipe gave when SIGUSR1 (counted by count_signal, with or without
// SA_RESTART) interrupted it 100 ms in, and a byte was written 100 ms later.
struct interrupted {
    ssize_t n = 0;
    char c = 0;
    int error = 0;
};

interrupted read_interrupted(bool restart) {
    interrupted r;
    struct sigaction sa {};
    sa.sa_handler = count_signal;
    sa.sa_flags = restart ? SA_RESTART : 0;
    EXPECT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
    int p[2];
    if (pipe(p) != 0) {
        ADD_FAILURE() << "pipe: " << std::strerror(errno);
        return r;
    }
    g_signals = 0;
    pthread_t reader = pthread_self();
    std::thread poke([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        pthread_kill(reader, SIGUSR1);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        EXPECT_EQ(write(p[1], "x", 1), 1);
    });
    errno = 0;
    r.n = read(p[0], &r.c, 1);
    r.error = errno;
    poke.join();
    EXPECT_EQ(g_signals.load(), 1);
    close(p[0]);
    close(p[1]);
    signal(SIGUSR1, SIG_DFL);
    return r;
}

// A blocking call interrupted by a signal: EINTR without SA_RESTART, restarted with it.
TEST_F(SyscallIntercept, SignalsInterruptAndRestartAsWithoutInterception) {
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_read, true);
    for (bool restart : {false, true}) {
        const interrupted r = read_interrupted(restart);
        if (restart) {
            EXPECT_EQ(r.n, 1) << "the read was not restarted";
            EXPECT_EQ(r.c, 'x');
        } else {
            EXPECT_EQ(r.n, -1);
            EXPECT_EQ(r.error, EINTR);
        }
    }
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

// What the application sees around its own `syscall`: flags, registers and vector registers
// set before it, read back after it. rcx and r11 are the instruction's to clobber; rax holds
// the result.
struct around_syscall {
    uint64_t flags_before, flags_after, rax, rbx, r12, r13, r14, rdi, rsi, rdx, r8, r9, r10;
    uint64_t xmm1, xmm7, xmm15, r15;
};

// CF PF AF ZF SF OF, and DF.
constexpr uint64_t arithmetic_and_df = 0x8D5 | 0x400;

// What an intercepted getpid_with_state left must be what the plain one left: the flags before
// and after, rax, every register it set (rbx up to r15, the vector registers among them), and
// r15 still the pointer it wrote through.
void expect_same_state(const around_syscall &plain, const around_syscall &hooked) {
    EXPECT_EQ(hooked.flags_before & arithmetic_and_df, plain.flags_before & arithmetic_and_df);
    EXPECT_EQ(hooked.flags_after & arithmetic_and_df, plain.flags_after & arithmetic_and_df);
    EXPECT_EQ(hooked.rax, plain.rax);
    const uint64_t *p = &plain.rbx, *h = &hooked.rbx;
    for (size_t i = 0; i < (offsetof(around_syscall, r15) - offsetof(around_syscall, rbx)) / 8;
         ++i) {
        EXPECT_EQ(h[i], p[i]) << "register " << i << " after rbx";
    }
    EXPECT_EQ(hooked.r15, reinterpret_cast<uintptr_t>(&hooked));
}

__attribute__((noinline)) void getpid_with_state(around_syscall *out) {
    __asm__ volatile(
        "mov %[out], %%r15\n"
        "movabs $0x1111111111111111, %%rbx\n"
        "movabs $0x2222222222222222, %%r12\n"
        "movabs $0x3333333333333333, %%r13\n"
        "movabs $0x4444444444444444, %%r14\n"
        "movabs $0x5555555555555555, %%rdi\n"
        "movabs $0x6666666666666666, %%rsi\n"
        "movabs $0x7777777777777777, %%rdx\n"
        "movabs $0x1212121212121212, %%r8\n"
        "movabs $0x1313131313131313, %%r9\n"
        "movabs $0x1414141414141414, %%r10\n"
        "movq %%rbx, %%xmm1\n"
        "movq %%r12, %%xmm7\n"
        "movq %%r13, %%xmm15\n"
        // OF and SF from an overflowing add, then CF and DF set: what a call must give back.
        "movabs $0x7fffffffffffffff, %%rax\n"
        "add $1, %%rax\n"
        "stc\n"
        "std\n"
        "pushfq\n"
        "popq 0(%%r15)\n"
        "mov $39, %%eax\n" // getpid
        "syscall\n"
        "pushfq\n"
        "popq 8(%%r15)\n"
        "cld\n"
        "mov %%rax, 16(%%r15)\n"
        "mov %%rbx, 24(%%r15)\n"
        "mov %%r12, 32(%%r15)\n"
        "mov %%r13, 40(%%r15)\n"
        "mov %%r14, 48(%%r15)\n"
        "mov %%rdi, 56(%%r15)\n"
        "mov %%rsi, 64(%%r15)\n"
        "mov %%rdx, 72(%%r15)\n"
        "mov %%r8, 80(%%r15)\n"
        "mov %%r9, 88(%%r15)\n"
        "mov %%r10, 96(%%r15)\n"
        "movq %%xmm1, 104(%%r15)\n"
        "movq %%xmm7, 112(%%r15)\n"
        "movq %%xmm15, 120(%%r15)\n"
        "mov %%r15, 128(%%r15)\n"
        :
        : [out] "m"(out)
        : "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
          "r15", "xmm1", "xmm7", "xmm15", "memory", "cc");
}

// A rewritten site gives back what the kernel does: every register but rcx and r11, and the
// flags (the arithmetic ones and DF) as they were before the call.
TEST_F(SyscallIntercept, RewrittenSitesKeepRegistersAndFlagsAsTheKernelDoes) {
    around_syscall plain{}, hooked{};
    getpid_with_state(&plain);
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_getpid, true);
    const uint64_t rewritten = syscall_intercept::rewritten_calls();
    getpid_with_state(&hooked);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 1u);
    EXPECT_EQ(g_seen.exits[SYS_getpid].load(), 1u);
    EXPECT_EQ(syscall_intercept::rewritten_calls() - rewritten, 1u)
        << "the test's own site was not rewritten";
    EXPECT_EQ(plain.flags_after & arithmetic_and_df, plain.flags_before & arithmetic_and_df);
    expect_same_state(plain, hooked);
}

// A clone through code no symbol covers: the fallback runs the call from a gate stub, then the
// exit handler in the parent (the child's pid) and in the child (0), as the kernel reports it.
TEST_F(SyscallIntercept, CloneExitsRunInParentAndChildThroughTheFallback) {
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_clone, true);
    void *page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(page, MAP_FAILED);
    const uint8_t code[] = {
        0xB8, SYS_clone, 0,    0, 0, // mov eax, SYS_clone
        0xBF, SIGCHLD,   0,    0, 0, // mov edi, SIGCHLD (a fork)
        0x31, 0xF6,                  // xor esi, esi
        0x31, 0xD2,                  // xor edx, edx
        0x45, 0x31,      0xD2,       // xor r10d, r10d
        0x45, 0x31,      0xC0,       // xor r8d, r8d
        0x0F, 0x05,                  // syscall
        0xC3,                        // ret
    };
    std::memcpy(page, code, sizeof code);
    ASSERT_EQ(mprotect(page, 4096, PROT_READ | PROT_EXEC), 0);
    auto fn = reinterpret_cast<long (*)()>(page);
    const uint64_t trapped = syscall_intercept::trapped_calls();
    const long child = fn();
    if (child == 0) {
        // The child's own copy of the counts: one exit, with 0.
        _exit(g_seen.exits[SYS_clone].load() == 1 && g_seen.last_ret.load() == 0 ? 0 : 1);
    }
    ASSERT_GT(child, 0);
    EXPECT_EQ(g_seen.enters[SYS_clone].load(), 1u);
    EXPECT_EQ(g_seen.exits[SYS_clone].load(), 1u);
    EXPECT_EQ(g_seen.last_ret.load(), child);
    EXPECT_EQ(syscall_intercept::trapped_calls() - trapped, 1u);
    int status = -1;
    ASSERT_EQ(waitpid(static_cast<pid_t>(child), &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "the child did not see its own exit with 0 (status " << status << ")";
    munmap(page, 4096);
}

// The user instruction pointer of thread tid blocked in a system call (just behind its
// `syscall`), or 0 when it is not blocked in one.
uintptr_t blocked_pc(pid_t tid) {
    char path[64], buf[256] = {};
    std::snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = std::fopen(path, "re");
    if (!f)
        return 0;
    const bool got = std::fgets(buf, sizeof buf, f) != nullptr;
    std::fclose(f);
    const char *last = std::strrchr(buf, ' ');
    if (!got || std::strncmp(buf, "running", 7) == 0 || buf[0] == '-' || last == nullptr)
        return 0;
    return std::strtoull(last + 1, nullptr, 16);
}

// Threads blocked in nanosleep and read (both inside libc functions whose `syscall` sites are
// rewritten and restored under them) while interception is armed and disarmed again and
// again: no signal reaches them (the sleep lasts, the read returns the data without being
// woken), and each armed window counts exactly the calls made in it.
TEST_F(SyscallIntercept, BlockedThreadsAreNotInterruptedWhileSitesAreRewritten) {
    if (!test::live_patching())
        GTEST_SKIP() << "this kernel lacks membarrier SYNC_CORE: rewriting stops the threads";
    test::sleeper_thread sleeper(3);
    test::bare_reader reader;
    ASSERT_TRUE(reader.ok);
    while (reader.tid.load() == 0 || sleeper.tid.load() == 0)
        std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const uintptr_t sleep_pc = blocked_pc(sleeper.tid.load());
    const uintptr_t read_pc = blocked_pc(reader.tid.load());
    ASSERT_NE(sleep_pc, 0u) << "the sleeper is not blocked in nanosleep";
    ASSERT_NE(read_pc, 0u) << "the reader is not blocked in read";
    const uint8_t syscall_bytes[] = {0x0F, 0x05};
    ASSERT_EQ(std::memcmp(reinterpret_cast<const void *>(sleep_pc - 2), syscall_bytes, 2), 0);
    // The code before each `syscall` (where its site's jump goes) as it was.
    constexpr size_t before_n = 16;
    uint8_t sleep_code[before_n], read_code[before_n];
    std::memcpy(sleep_code, reinterpret_cast<const void *>(sleep_pc - 2 - before_n), before_n);
    std::memcpy(read_code, reinterpret_cast<const void *>(read_pc - 2 - before_n), before_n);
    const long sleeps_before = test::voluntary_switches(reader.tid.load());
    ASSERT_GE(sleeps_before, 0);
    const pid_t parent = getppid();
    for (int round = 0; round < 20; ++round) {
        auto armed = syscall_intercept::arm();
        ASSERT_TRUE(armed) << "round " << round << ": " << armed.err().message;
        if (round == 0) {
            // The very sites the two threads wait in were rewritten under them: the jump ends
            // before the `syscall`, which stays where a restart sends a thread back to.
            EXPECT_NE(std::memcmp(reinterpret_cast<const void *>(sleep_pc - 2 - before_n),
                                  sleep_code, before_n),
                      0)
                << "nanosleep's site was not rewritten";
            EXPECT_NE(std::memcmp(reinterpret_cast<const void *>(read_pc - 2 - before_n), read_code,
                                  before_n),
                      0)
                << "syscall()'s site was not rewritten";
            EXPECT_EQ(std::memcmp(reinterpret_cast<const void *>(sleep_pc - 2), syscall_bytes, 2),
                      0)
                << "nanosleep's `syscall` was overwritten";
            EXPECT_EQ(std::memcmp(reinterpret_cast<const void *>(read_pc - 2), syscall_bytes, 2), 0)
                << "syscall()'s `syscall` was overwritten";
        }
        syscall_intercept::set_wanted(SYS_getppid, true);
        const uint64_t before = g_seen.enters[SYS_getppid].load();
        for (int k = 0; k < 3; ++k)
            ASSERT_EQ(getppid(), parent);
        EXPECT_EQ(g_seen.enters[SYS_getppid].load() - before, 3u) << "round " << round;
        syscall_intercept::set_wanted(SYS_getppid, false);
        ASSERT_TRUE(syscall_intercept::disarm()) << "round " << round;
        ASSERT_EQ(getppid(), parent);
        EXPECT_EQ(g_seen.enters[SYS_getppid].load() - before, 3u)
            << "round " << round << ": counted after disarming";
    }
    EXPECT_EQ(
        std::memcmp(reinterpret_cast<const void *>(sleep_pc - 2 - before_n), sleep_code, before_n),
        0)
        << "nanosleep's site was not restored";
    EXPECT_EQ(
        std::memcmp(reinterpret_cast<const void *>(read_pc - 2 - before_n), read_code, before_n), 0)
        << "syscall()'s site was not restored";
    EXPECT_EQ(test::voluntary_switches(reader.tid.load()), sleeps_before)
        << "the thread blocked in read was woken while the sites were rewritten";
    sleeper.thread.join();
    ASSERT_EQ(write(reader.fds[1], "x", 1), 1);
    reader.thread.join();
    EXPECT_EQ(sleeper.rc.load(), 0) << "nanosleep was interrupted: " << std::strerror(sleeper.err);
    EXPECT_GE(sleeper.slept_ns.load(), 3'000'000'000LL);
    EXPECT_EQ(reader.rc.load(), 1) << "read was interrupted: " << std::strerror(reader.err);
}

// Waits (up to 5 s) until thread tid is blocked in a system call at pc (0: anywhere); the pc.
uintptr_t wait_blocked(pid_t tid, uintptr_t pc = 0) {
    for (int i = 0; i < 5000; ++i) {
        const uintptr_t now = blocked_pc(tid);
        if (now != 0 && (pc == 0 || now == pc))
            return now;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return 0;
}

// The 16 bytes before the `syscall` that returns to pc (where its site's jump goes).
struct code_before {
    uint8_t bytes[16];
    explicit code_before(uintptr_t pc) {
        std::memcpy(bytes, reinterpret_cast<const void *>(pc - 2 - sizeof bytes), sizeof bytes);
    }
    bool operator==(const code_before &o) const {
        return std::memcmp(bytes, o.bytes, sizeof bytes) == 0;
    }
};

// Threads blocked in libc's read and nanosleep (sites whose `syscall` ends the rewritten
// range) when the sites are rewritten, whose calls the kernel then restarts, sending them back
// to the `syscall` itself: a SIGUSR1 handler with SA_RESTART for the read, a stop and continue
// for both (the sleep through restart_syscall). They make their original calls again: the
// handler runs each time, the read returns the data written later, the sleep lasts its whole
// time, nothing crashes; twice, with the sites restored and rewritten again between.
TEST_F(SyscallIntercept, CallsRestartedAtSitesRewrittenUnderThemRunTheOriginalCall) {
    if (!test::live_patching())
        GTEST_SKIP() << "this kernel lacks membarrier SYNC_CORE: rewriting stops the threads";
    struct sigaction sa {};
    sa.sa_handler = count_signal;
    sa.sa_flags = SA_RESTART;
    ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
    g_signals = 0;
    // The objects scanned once beforehand (slow under sanitizers), so that rewriting the sites
    // takes well under the sleep below.
    ASSERT_TRUE(syscall_intercept::arm());
    ASSERT_TRUE(syscall_intercept::disarm());
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    std::atomic<long> read_rc{-2};
    std::atomic<int> read_errno{0};
    std::atomic<pid_t> reader_tid{0};
    char got[8] = {};
    std::thread reader([&] {
        reader_tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
        errno = 0;
        read_rc.store(read(p[0], got, sizeof got));
        read_errno.store(errno);
    });
    test::sleeper_thread sleeper(4);
    while (reader_tid.load() == 0 || sleeper.tid.load() == 0)
        std::this_thread::yield();
    const uintptr_t read_pc = wait_blocked(reader_tid.load());
    const uintptr_t sleep_pc = wait_blocked(sleeper.tid.load());
    ASSERT_NE(read_pc, 0u) << "the reader is not blocked in read";
    ASSERT_NE(sleep_pc, 0u) << "the sleeper is not blocked in nanosleep";
    const code_before read_code(read_pc), sleep_code(sleep_pc);
    const uint8_t syscall_bytes[] = {0x0F, 0x05};
    for (int round = 0; round < 2; ++round) {
        auto armed = syscall_intercept::arm();
        ASSERT_TRUE(armed) << "round " << round << ": " << armed.err().message;
        syscall_intercept::set_wanted(SYS_read, true);
        syscall_intercept::set_wanted(SYS_nanosleep, true);
        syscall_intercept::set_wanted(SYS_clock_nanosleep, true);
        // The very sites the two threads wait in were rewritten under them.
        EXPECT_FALSE(code_before(read_pc) == read_code) << "round " << round << ": read's site";
        EXPECT_FALSE(code_before(sleep_pc) == sleep_code)
            << "round " << round << ": nanosleep's site";
        EXPECT_EQ(std::memcmp(reinterpret_cast<const void *>(read_pc - 2), syscall_bytes, 2), 0);

        // The read, interrupted by a handler with SA_RESTART, is made again at its site.
        ASSERT_EQ(pthread_kill(reader.native_handle(), SIGUSR1), 0);
        for (int i = 0; i < 5000 && g_signals.load() != round + 1; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        EXPECT_EQ(g_signals.load(), round + 1) << "round " << round << ": the handler did not run";
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        EXPECT_EQ(wait_blocked(reader_tid.load(), read_pc), read_pc)
            << "round " << round << ": the read was not made again at its site";

        // A stop and continue of the whole process: the read restarts (-ERESTARTSYS), the sleep
        // through restart_syscall.
        const pid_t self = getpid();
        const pid_t helper = fork();
        ASSERT_GE(helper, 0);
        if (helper == 0) {
            syscall_intercept::raw_syscall(SYS_kill, self, SIGSTOP);
            timespec t{0, 100'000'000};
            syscall_intercept::raw_syscall(SYS_nanosleep, reinterpret_cast<long>(&t), 0);
            syscall_intercept::raw_syscall(SYS_kill, self, SIGCONT);
            syscall_intercept::raw_syscall(SYS_exit_group, 0);
        }
        int status = 0;
        ASSERT_EQ(waitpid(helper, &status, 0), helper);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        EXPECT_EQ(wait_blocked(reader_tid.load(), read_pc), read_pc)
            << "round " << round << ": the read was not restarted at its site";
        if (round == 0) {
            EXPECT_EQ(wait_blocked(sleeper.tid.load(), sleep_pc), sleep_pc)
                << "the sleep was not restarted at its site";
        }

        // Calls made now go through the rewritten sites and are seen.
        const uint64_t reads = g_seen.enters[SYS_read].load();
        const int zero = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
        ASSERT_GE(zero, 0);
        char z[4];
        for (int k = 0; k < 3; ++k)
            ASSERT_EQ(read(zero, z, sizeof z), 4);
        ::close(zero);
        EXPECT_EQ(g_seen.enters[SYS_read].load() - reads, 3u) << "round " << round;

        for (uint64_t nr : {SYS_read, SYS_nanosleep, SYS_clock_nanosleep})
            syscall_intercept::set_wanted(nr, false);
        ASSERT_TRUE(syscall_intercept::disarm()) << "round " << round;
        EXPECT_TRUE(code_before(read_pc) == read_code) << "round " << round << ": not restored";
        EXPECT_TRUE(code_before(sleep_pc) == sleep_code) << "round " << round << ": not restored";
    }
    sleeper.thread.join();
    EXPECT_EQ(sleeper.rc.load(), 0) << "nanosleep failed: " << std::strerror(sleeper.err);
    EXPECT_GE(sleeper.slept_ns.load(), 4'000'000'000LL) << "the sleep was cut short";
    ASSERT_EQ(write(p[1], "hello", 5), 5);
    reader.join();
    EXPECT_EQ(read_rc.load(), 5) << "read failed: " << std::strerror(read_errno);
    EXPECT_EQ(std::string(got, 5), "hello");
    EXPECT_EQ(g_signals.load(), 2);
    signal(SIGUSR1, SIG_DFL);
    close(p[0]);
    close(p[1]);
}

// Checks the calling thread's Syscall User Dispatch as the host applies it.
void expect_dispatch(bool on, const char *when) {
    EXPECT_EQ(syscall_intercept::thread_dispatch_on(), on) << when;
}

// JIT-like code: a page written, then made executable through libc's mprotect.
long (*jit_getppid())() {
    void *page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return nullptr;
    const uint8_t code[] = {0xB8, SYS_getppid, 0, 0, 0, 0x0F, 0x05, 0xC3}; // mov eax; syscall; ret
    std::memcpy(page, code, sizeof code);
    if (mprotect(page, 4096, PROT_READ | PROT_EXEC) != 0)
        return nullptr;
    return reinterpret_cast<long (*)()>(page);
}

// A registered thread has Syscall User Dispatch (and its slow path in the kernel on every
// call) only while some code could make a system call no rewritten site catches: not before
// arming, not when everything is rewritten; on as soon as JIT-like code with a `syscall` is
// made executable (its calls then seen exactly); off again once that code is gone and the
// host looks again; off after disarming.
TEST_F(SyscallIntercept, DispatchIsOnOnlyWhileSomeCodeIsNotRewritten) {
    ASSERT_EQ(syscall_intercept::current_dispatch_mode(),
              syscall_intercept::dispatch_mode::when_needed);
    expect_dispatch(false, "registered, nothing armed");
    auto armed = syscall_intercept::arm();
    ASSERT_TRUE(armed) << armed.err().message;
    if (armed->dispatch)
        GTEST_SKIP() << "this process needs Syscall User Dispatch while armed: "
                     << armed->dispatch_reason;
    EXPECT_EQ(armed->refused, 0u);
    syscall_intercept::set_wanted(SYS_getppid, true);
    EXPECT_EQ(getppid(), static_cast<pid_t>(syscall_intercept::raw_syscall(SYS_getppid)));
    expect_dispatch(false, "armed, every site rewritten");
    EXPECT_EQ(syscall_intercept::dispatch_threads(), 0);

    auto fn = jit_getppid();
    ASSERT_NE(fn, nullptr);
    EXPECT_TRUE(syscall_intercept::dispatch_wanted()) << syscall_intercept::dispatch_reason();
    expect_dispatch(true, "JIT-like code with a syscall made executable");
    const uint64_t trapped = syscall_intercept::trapped_calls();
    const uint64_t enters = g_seen.enters[SYS_getppid].load();
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(fn(), getppid());
    EXPECT_EQ(syscall_intercept::trapped_calls() - trapped, 5u);
    EXPECT_EQ(g_seen.enters[SYS_getppid].load() - enters, 10u); // 5 trapped, 5 rewritten

    munmap(reinterpret_cast<void *>(fn), 4096);
    armed = syscall_intercept::arm(); // what a host does at its next attach
    ASSERT_TRUE(armed) << armed.err().message;
    EXPECT_FALSE(armed->dispatch) << armed->dispatch_reason;
    (void)getppid(); // the thread applies the wish at its next intercepted call
    expect_dispatch(false, "the JIT-like code unmapped");

    fn = jit_getppid();
    ASSERT_NE(fn, nullptr);
    expect_dispatch(true, "JIT-like code again");
    ASSERT_TRUE(syscall_intercept::disarm());
    expect_dispatch(false, "disarmed");
    EXPECT_FALSE(syscall_intercept::dispatch_wanted());
    munmap(reinterpret_cast<void *>(fn), 4096);
}

// BPFTIME_SYSCALL_DISPATCH=never: rewritten sites only; JIT-like code goes unseen (and nothing
// pays the kernel's slow path). always: on while armed even with everything rewritten.
TEST_F(SyscallIntercept, DispatchModesNeverAndAlways) {
    syscall_intercept::set_dispatch_mode(syscall_intercept::dispatch_mode::never);
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_getppid, true);
    auto fn = jit_getppid();
    ASSERT_NE(fn, nullptr);
    expect_dispatch(false, "never, with JIT-like code");
    const uint64_t trapped = syscall_intercept::trapped_calls();
    const uint64_t enters = g_seen.enters[SYS_getppid].load();
    EXPECT_EQ(fn(), getppid());
    EXPECT_EQ(syscall_intercept::trapped_calls() - trapped, 0u);
    EXPECT_EQ(g_seen.enters[SYS_getppid].load() - enters, 1u); // libc's getppid only
    munmap(reinterpret_cast<void *>(fn), 4096);

    syscall_intercept::set_dispatch_mode(syscall_intercept::dispatch_mode::always);
    (void)getppid();
    expect_dispatch(true, "always");
    EXPECT_TRUE(syscall_intercept::dispatch_wanted());
    ASSERT_TRUE(syscall_intercept::disarm());
    expect_dispatch(false, "always, disarmed");
    syscall_intercept::set_dispatch_mode(syscall_intercept::dispatch_mode::when_needed);
}

} // namespace

// --- The short path: numbers whose enter handler takes the record only ----------------------

struct seen_records {
    std::atomic<uint64_t> count[syscall_intercept::table_size]{};
    syscall_intercept::enter_record last{};
};
seen_records g_records;

// Counts and keeps the record, fills the common fields as a host does, then changes the
// registers a function call may change (vector ones included) as a program's code may.
void on_record(void *, syscall_intercept::enter_record *rec) {
    if (rec->nr < syscall_intercept::table_size) {
        g_records.count[rec->nr].fetch_add(1);
        g_records.last = *rec;
    }
    rec->common = 0xC0FFEE;
    __asm__ volatile("pcmpeqd %%xmm1, %%xmm1\n"
                     "pcmpeqd %%xmm7, %%xmm7\n"
                     "pcmpeqd %%xmm15, %%xmm15\n"
                     "pcmpeqd %%xmm0, %%xmm0\n"
                     "mov $-1, %%r8\n"
                     "mov $-1, %%r9\n"
                     "mov $-1, %%r10\n"
                     "mov $-1, %%rdx\n"
                     "mov $-1, %%rsi\n"
                     "mov $-1, %%rdi\n"
                     :
                     :
                     : "xmm0", "xmm1", "xmm7", "xmm15", "r8", "r9", "r10", "rdx", "rsi", "rdi",
                       "memory");
}

// Calls of on_record_plain.
uint64_t g_plain_calls = 0;

// A plain record handler, as a host's is: general-purpose registers only; it counts the call,
// then runs on_record (which changes vector registers) with the vector state kept.
__attribute__((target("general-regs-only"))) void
on_record_plain(void *user, syscall_intercept::enter_record *rec) {
    __atomic_fetch_add(&g_plain_calls, 1, __ATOMIC_RELAXED);
    syscall_intercept::call_keeping_vector_state(&on_record, user, rec);
}

uint64_t plain_calls() {
    return __atomic_load_n(&g_plain_calls, __ATOMIC_RELAXED);
}

// The record of getpid_with_state's call: the number, and the six arguments it set.
void expect_getpid_with_state_record(const syscall_intercept::enter_record &r) {
    EXPECT_EQ(r.nr, static_cast<uint64_t>(SYS_getpid));
    const uint64_t args[6] = {0x5555555555555555, 0x6666666666666666, 0x7777777777777777,
                              0x1414141414141414, 0x1212121212121212, 0x1313131313131313};
    for (int i = 0; i < 6; ++i)
        EXPECT_EQ(r.args[i], args[i]) << "argument " << i;
}

class SyscallShortPath : public SyscallIntercept {
protected:
    void SetUp() override {
        SyscallIntercept::SetUp();
        if (IsSkipped())
            return;
        ASSERT_TRUE(syscall_intercept::start({on_enter, on_exit, nullptr, on_record}));
        for (auto &c : g_records.count)
            c.store(0);
        g_records.last = {};
    }
};

// A number wanted with its enter handler on the record alone: the call takes the short path
// (counted as such), the handler sees the kernel's sys_enter record (the number at 8, the six
// arguments from 16, the common fields zero), and the application gets back what the kernel
// gives: every register but rcx and r11 (vector registers the handler changed included), the
// flags, the result. No exit handler runs.
TEST_F(SyscallShortPath, KeepsRegistersFlagsAndVectorsAndGivesTheKernelsRecord) {
    around_syscall plain{}, hooked{};
    getpid_with_state(&plain);
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_getpid, true, false, false);
    const uint64_t rewritten = syscall_intercept::rewritten_calls();
    const uint64_t short_calls = syscall_intercept::short_path_calls();
    getpid_with_state(&hooked);
    EXPECT_EQ(g_records.count[SYS_getpid].load(), 1u);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 0u);
    EXPECT_EQ(g_seen.exits[SYS_getpid].load(), 0u);
    EXPECT_EQ(syscall_intercept::rewritten_calls() - rewritten, 1u);
    EXPECT_EQ(syscall_intercept::short_path_calls() - short_calls, 1u)
        << "the call did not take the short path";
    EXPECT_EQ(g_records.last.common, 0u);
    expect_getpid_with_state_record(g_records.last);
    expect_same_state(plain, hooked);
}

// A number marked vector-free, with a plain handler, takes the plain short path: its stub saves
// no vector register, and the handler runs what changes them with the state kept. The
// application gets back what the kernel gives (registers, flags, vector registers), the
// handler the same record as on the short path. A thread's first call takes the short entry
// (its counter slot and errno are found there), its next ones the plain one; without the mark
// the short stub runs enter_record.
TEST_F(SyscallShortPath, ThePlainPathKeepsRegistersFlagsAndVectorsThroughItsHandler) {
    ASSERT_TRUE(syscall_intercept::start({on_enter, on_exit, nullptr, on_record, on_record_plain}));
    around_syscall plain{}, hooked{};
    getpid_with_state(&plain);
    ASSERT_TRUE(syscall_intercept::arm());
    syscall_intercept::set_wanted(SYS_getpid, true, false, false, true);
    std::thread first([] {
        (void)getpid(); // the short entry: the thread's first call
        (void)getpid(); // the plain entry
    });
    first.join();
    EXPECT_EQ(g_records.count[SYS_getpid].load(), 2u);
    EXPECT_EQ(plain_calls(), 1u) << "a thread's second call did not take the plain path";
    (void)getpid(); // this thread's slot and errno, if not found yet
    const uint64_t records = g_records.count[SYS_getpid].load();
    const uint64_t before = plain_calls();
    const uint64_t short_calls = syscall_intercept::short_path_calls();
    const uint64_t plain_path = syscall_intercept::plain_path_calls();
    getpid_with_state(&hooked);
    EXPECT_EQ(plain_calls() - before, 1u) << "the call did not take the plain path";
    EXPECT_EQ(syscall_intercept::plain_path_calls() - plain_path, 1u);
    EXPECT_EQ(g_records.count[SYS_getpid].load() - records, 1u);
    EXPECT_EQ(syscall_intercept::short_path_calls() - short_calls, 1u);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 0u);
    expect_getpid_with_state_record(g_records.last);
    expect_same_state(plain, hooked);

    syscall_intercept::set_wanted(SYS_getpid, true, false, false, false);
    getpid_with_state(&hooked);
    EXPECT_EQ(plain_calls() - before, 1u) << "an unmarked number took the plain path";
    EXPECT_EQ(g_records.count[SYS_getpid].load() - records, 2u);
    expect_same_state(plain, hooked);
}

// Numbers switch between the short path and the full one while calls go on: exact counts on
// whichever path the wish names, the exit handler only while wanted, and results as the
// kernel's.
TEST_F(SyscallShortPath, NumbersSwitchBetweenTheShortAndTheFullPathLive) {
    ASSERT_TRUE(syscall_intercept::arm());
    const pid_t real = static_cast<pid_t>(syscall_intercept::raw_syscall(SYS_getpid));
    auto calls = [&](int n) {
        for (int i = 0; i < n; ++i)
            ASSERT_EQ(getpid(), real);
    };
    const uint64_t short_calls = syscall_intercept::short_path_calls();
    syscall_intercept::set_wanted(SYS_getpid, true, false, false); // enter, record only
    calls(1000);
    EXPECT_EQ(g_records.count[SYS_getpid].load(), 1000u);
    EXPECT_EQ(syscall_intercept::short_path_calls() - short_calls, 1000u);
    syscall_intercept::set_wanted(SYS_getpid, true, true, false); // an exit handler too
    calls(1000);
    EXPECT_EQ(g_records.count[SYS_getpid].load(), 1000u);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 1000u);
    EXPECT_EQ(g_seen.exits[SYS_getpid].load(), 1000u);
    EXPECT_EQ(g_seen.last_ret.load(), real);
    syscall_intercept::set_wanted(SYS_getpid, true, false, true); // enter with the registers
    calls(1000);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 2000u);
    EXPECT_EQ(g_seen.exits[SYS_getpid].load(), 1000u);
    syscall_intercept::set_wanted(SYS_getpid, true, false, false); // back to the short path
    calls(1000);
    EXPECT_EQ(g_records.count[SYS_getpid].load(), 2000u);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 2000u);
    EXPECT_EQ(syscall_intercept::short_path_calls() - short_calls, 2000u);
    // Without a record handler the full enter handler runs for the same wish.
    ASSERT_TRUE(syscall_intercept::start({on_enter, on_exit, nullptr}));
    calls(1000);
    EXPECT_EQ(g_records.count[SYS_getpid].load(), 2000u);
    EXPECT_EQ(g_seen.enters[SYS_getpid].load(), 3000u);
    EXPECT_EQ(syscall_intercept::short_path_calls() - short_calls, 2000u);

    // Another thread switching the path while this one calls: every call seen once, on one
    // path or the other.
    ASSERT_TRUE(syscall_intercept::start({on_enter, on_exit, nullptr, on_record}));
    std::atomic<bool> stop{false};
    std::thread flip([&] {
        syscall_intercept::set_thread_internal(true);
        for (bool exit = false; !stop.load(); exit = !exit)
            syscall_intercept::set_wanted(SYS_getpid, true, exit, false);
    });
    const uint64_t before = g_records.count[SYS_getpid].load() + g_seen.enters[SYS_getpid].load();
    calls(20000);
    stop.store(true);
    flip.join();
    EXPECT_EQ(g_records.count[SYS_getpid].load() + g_seen.enters[SYS_getpid].load() - before,
              20000u);
}

// What the full path keeps doing for numbers on the short path's wish: internal threads run
// no handler, calls that must run natively (clone, fork) keep the full path, and a blocking
// call is interrupted and restarted as without interception.
TEST_F(SyscallShortPath, InternalThreadsNativeCallsAndRestartsAsOnTheFullPath) {
    ASSERT_TRUE(syscall_intercept::arm());
    for (uint64_t nr : {SYS_getppid, SYS_clone, SYS_clone3, SYS_fork, SYS_read})
        syscall_intercept::set_wanted(nr, true, false, false);
    std::thread([] {
        syscall_intercept::set_thread_internal(true);
        (void)getppid();
    }).join();
    EXPECT_EQ(g_records.count[SYS_getppid].load(), 0u);
    (void)getppid();
    EXPECT_EQ(g_records.count[SYS_getppid].load(), 1u);

    std::atomic<int> ran{0};
    std::thread([&] { ran.fetch_add(getppid() > 0 ? 1 : 0); }).join();
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(g_records.count[SYS_getppid].load(), 2u);
    EXPECT_GE(g_seen.enters[SYS_clone].load() + g_seen.enters[SYS_clone3].load(), 1u);
    EXPECT_EQ(g_records.count[SYS_clone].load() + g_records.count[SYS_clone3].load(), 0u);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0)
        _exit(getppid() > 0 ? 21 : 22);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 21);

    const uint64_t reads = g_records.count[SYS_read].load();
    const interrupted r = read_interrupted(true);
    EXPECT_EQ(r.n, 1) << "the read was not restarted";
    EXPECT_EQ(r.c, 'x');
    EXPECT_EQ(g_records.count[SYS_read].load() - reads, 1u);
}
