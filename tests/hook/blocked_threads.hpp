// SPDX-License-Identifier: MIT
// What the hook tests that patch code under blocked threads share: whether patching can go
// without signals, a thread's count of sleeps, and threads blocked in nanosleep and in read.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace bpftime::test {

/// Whether this kernel lets code be patched without signalling the other threads.
inline bool live_patching() {
    const long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    return q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) != 0 &&
           (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0;
}

/// How many times thread tid of this process went to sleep (voluntary context switches); -1
/// when it cannot be read.
inline long voluntary_switches(pid_t tid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    FILE *f = std::fopen(path, "re");
    if (!f)
        return -1;
    char line[256];
    long n = -1;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
            break;
    std::fclose(f);
    return n;
}

/// A thread that sleeps `seconds` in one nanosleep, started at construction: its thread id
/// once it runs, what the call returned and how long it slept. Join `thread` before reading.
struct sleeper_thread {
    std::atomic<pid_t> tid{0};
    std::atomic<int> rc{-2}, err{0};
    std::atomic<long long> slept_ns{0};
    std::thread thread;

    explicit sleeper_thread(time_t seconds)
        : thread([this, seconds] {
              tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
              timespec t{seconds, 0};
              const auto start = std::chrono::steady_clock::now();
              errno = 0;
              rc.store(nanosleep(&t, nullptr));
              err.store(errno);
              slept_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
          }) {}
    ~sleeper_thread() {
        if (thread.joinable())
            thread.join();
    }
};

/// A thread blocked in one bare read system call (libc's syscall(), which libc does not
/// restart, so an interruption shows as EINTR) of one byte from a pipe of its own, started at
/// construction; write a byte to fds[1] to end it. ok is false when the pipe could not be made.
struct bare_reader {
    int fds[2] = {-1, -1};
    bool ok = pipe(fds) == 0;
    std::atomic<pid_t> tid{0};
    std::atomic<long> rc{-2};
    std::atomic<int> err{0};
    std::thread thread{[this] {
        tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
        char c;
        errno = 0;
        rc.store(syscall(SYS_read, fds[0], &c, 1));
        err.store(errno);
    }};

    bare_reader() = default;
    bare_reader(const bare_reader &) = delete;
    bare_reader &operator=(const bare_reader &) = delete;
    ~bare_reader() {
        if (thread.joinable()) {
            (void)!write(fds[1], "x", 1);
            thread.join();
        }
        for (int fd : fds)
            if (fd >= 0)
                close(fd);
    }
};

} // namespace bpftime::test
