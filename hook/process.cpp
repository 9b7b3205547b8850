// SPDX-License-Identifier: MIT
/// @file
/// Process-level services of the inline hooks: the memory map, allocation near an address and
/// stopping the other threads while code is patched.
#include "hook_internal.hpp"

#include "bpftime/hook/syscall_intercept.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/futex.h>
#include <mutex>
#include <signal.h>
#include <span>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>
#include <ucontext.h>
#include <unistd.h>

namespace bpftime::hook_detail {

result<std::vector<mapping>> read_maps() {
    FILE *f = std::fopen("/proc/self/maps", "re");
    if (!f)
        return make_error(errno,
                          std::string("cannot read /proc/self/maps: ") + std::strerror(errno));
    std::vector<mapping> maps;
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
        unsigned long start = 0, end = 0;
        char perms[8] = {};
        if (std::sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3)
            continue;
        maps.push_back(mapping{start, end, perms[0] == 'r', perms[1] == 'w', perms[2] == 'x'});
    }
    std::fclose(f);
    std::sort(maps.begin(), maps.end(),
              [](const mapping &a, const mapping &b) { return a.start < b.start; });
    return maps;
}

const mapping *find_mapping(const std::vector<mapping> &maps, uintptr_t address) {
    for (const auto &m : maps)
        if (address >= m.start && address < m.end)
            return &m;
    return nullptr;
}

result<uintptr_t> map_near(uintptr_t near, size_t size) {
    constexpr uint64_t reach = (2ull << 30) - (16ull << 20);
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = near > reach + page ? (near - reach + page - 1) & ~(page - 1) : page;
    const uintptr_t hi =
        (near < (uintptr_t{1} << 47) - reach ? near + reach : (uintptr_t{1} << 47)) & ~(page - 1);
    for (int attempt = 0; attempt < 8; ++attempt) {
        auto maps = read_maps();
        if (!maps)
            return std::move(maps).err();
        // Free gaps between mappings, as candidate addresses ordered by distance from near.
        std::vector<uintptr_t> candidates;
        uintptr_t prev_end = page;
        auto consider = [&](uintptr_t gap_start, uintptr_t gap_end) {
            gap_start = std::max(gap_start, lo);
            gap_end = std::min(gap_end, hi);
            if (gap_end <= gap_start || gap_end - gap_start < size)
                return;
            // The end of a gap below near, the start of a gap above it, else near itself.
            if (gap_end <= near)
                candidates.push_back(gap_end - size);
            else if (gap_start >= near)
                candidates.push_back(gap_start);
            else
                candidates.push_back(std::min((near & ~(page - 1)), gap_end - size));
        };
        for (const auto &m : *maps) {
            if (m.start > prev_end)
                consider(prev_end, m.start);
            prev_end = std::max(prev_end, m.end);
        }
        consider(prev_end, hi);
        auto distance = [near](uintptr_t a) { return a > near ? a - near : near - a; };
        std::sort(candidates.begin(), candidates.end(),
                  [&](uintptr_t a, uintptr_t b) { return distance(a) < distance(b); });
        for (uintptr_t c : candidates) {
            void *p = mmap(reinterpret_cast<void *>(c), size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (p == MAP_FAILED)
                continue; // taken meanwhile (EEXIST) or refused: the next gap
            auto got = reinterpret_cast<uintptr_t>(p);
            if (got >= lo && got + size <= hi)
                return got;
            munmap(p, size); // an old kernel that took the hint as a hint only
        }
    }
    return make_error(ENOMEM, "no free memory within 2 GiB of the hooked address");
}

// --- Stopping the other threads ------------------------------------------------------------

namespace {

constexpr int max_threads = 4096;

struct stop_slot {
    std::atomic<pid_t> tid{0};
    ucontext_t *context = nullptr;
    const void *running = nullptr; // the hook whose handler the thread was in, if any
};

struct stop_state {
    std::atomic<uint64_t> session{0};  // the session being run, 0 when none
    std::atomic<uint32_t> released{0}; // low bits of the last released session (futex word)
    std::atomic<int> count{0};         // slots claimed in this session
    std::atomic<int> inside{0};        // handlers running
    stop_slot slots[max_threads];
};

stop_state g_stop;
std::mutex g_stop_mutex; // one patching session at a time
std::once_flag g_handler_once;
int g_handler_error = 0;

void serialise() {
    // cpuid is a serialising instruction: no stale prefetched bytes after it.
    unsigned a = 0, b, c = 0, d;
    asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d)::"memory");
}

void stop_handler(int, siginfo_t *, void *context) {
    const int saved_errno = errno;
    g_stop.inside.fetch_add(1);
    const uint64_t session = g_stop.session.load();
    if (session != 0 && g_stop.released.load() != static_cast<uint32_t>(session)) {
        const int i = g_stop.count.fetch_add(1);
        if (i < max_threads) {
            g_stop.slots[i].context = static_cast<ucontext_t *>(context);
            g_stop.slots[i].running = running_hook();
            g_stop.slots[i].tid.store(
                static_cast<pid_t>(syscall_intercept::raw_syscall(SYS_gettid)),
                std::memory_order_release);
        }
        // The wait goes through the system call gate, never through libc: libc's `syscall`
        // may be the very code being rewritten while this thread waits inside it.
        while (g_stop.released.load(std::memory_order_acquire) != static_cast<uint32_t>(session)) {
            timespec wait{0, 5'000'000};
            syscall_intercept::raw_syscall(SYS_futex, reinterpret_cast<long>(&g_stop.released),
                                           FUTEX_WAIT_PRIVATE,
                                           static_cast<long>(static_cast<uint32_t>(session - 1)),
                                           reinterpret_cast<long>(&wait), 0, 0);
        }
        serialise();
    }
    g_stop.inside.fetch_sub(1);
    errno = saved_errno;
}

void install_handler() {
    struct sigaction sa {};
    sa.sa_sigaction = stop_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    if (sigaction(stop_signal(), &sa, nullptr) != 0)
        g_handler_error = errno;
}

// The threads of the process, through getdents64 into a fixed buffer: nothing here may
// allocate, as a stopped thread may hold the allocator's lock. Returns how many were stored
// (at most max), or -1.
int list_threads(pid_t *out, int max) {
    const int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    alignas(8) char buf[4096];
    int n = 0;
    for (;;) {
        const long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (got <= 0)
            break;
        for (long pos = 0; pos < got;) {
            struct entry {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[1];
            };
            const auto *e = reinterpret_cast<const entry *>(buf + pos);
            if (e->name[0] != '.' && n < max)
                out[n++] = static_cast<pid_t>(std::atoi(e->name));
            pos += e->reclen;
        }
    }
    close(fd);
    return n;
}

bool thread_alive(pid_t tid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/task/%d", tid);
    return access(path, F_OK) == 0;
}

stop_slot *find_slot(pid_t tid) {
    const int n = std::min(g_stop.count.load(), max_threads);
    for (int i = 0; i < n; ++i)
        if (g_stop.slots[i].tid.load(std::memory_order_acquire) == tid)
            return &g_stop.slots[i];
    return nullptr;
}

} // namespace

int stop_signal() {
    return SIGRTMIN + 6;
}

bool stopped_thread_runs(const void *hook) {
    const int n = std::min(g_stop.count.load(), max_threads);
    for (int i = 0; i < n; i++) {
        if (g_stop.slots[i].tid.load(std::memory_order_acquire) != 0 &&
            g_stop.slots[i].running == hook) {
            return true;
        }
    }
    return false;
}

result<void> stop_threads_and(const std::function<int()> &patch, const move_rip_fn &move_rip) {
    std::call_once(g_handler_once, install_handler);
    if (g_handler_error)
        return make_error(g_handler_error, std::string("cannot install the thread stop handler: ") +
                                               std::strerror(g_handler_error));
    std::lock_guard lock(g_stop_mutex);
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::seconds(1);
    // Handlers of an earlier session may still be on their way out.
    while (g_stop.inside.load() != 0 && clock::now() < deadline)
        std::this_thread::yield();

    static uint64_t next_session = 0;
    uint64_t session = ++next_session;
    if (static_cast<uint32_t>(session) == 0) // the futex word must differ from "released"
        session = ++next_session;
    g_stop.count.store(0);
    for (auto &s : g_stop.slots)
        s.tid.store(0, std::memory_order_relaxed);
    g_stop.released.store(static_cast<uint32_t>(session - 1));
    g_stop.session.store(session);

    auto release = [&] {
        g_stop.released.store(static_cast<uint32_t>(session), std::memory_order_release);
        syscall(SYS_futex, reinterpret_cast<uint32_t *>(&g_stop.released), FUTEX_WAKE_PRIVATE,
                INT_MAX, nullptr, nullptr, 0);
        g_stop.session.store(0);
    };

    const pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
    const pid_t pid = getpid();
    // From here until release(), nothing allocates (a stopped thread may hold a lock of the
    // allocator).
    static pid_t targets_buf[max_threads];
    static pid_t listed[max_threads + 1];
    std::span<pid_t> targets(targets_buf, 0);
    // Signal every thread, then list again until no thread appears that was not signalled
    // (a stopped thread cannot create new ones).
    for (;;) {
        bool added = false;
        const int n = list_threads(listed, max_threads + 1);
        if (n < 0 || n > max_threads) {
            release();
            return n < 0 ? make_error(errno, "cannot list the threads of the process")
                         : make_error(EAGAIN, "too many threads to stop (more than " +
                                                  std::to_string(max_threads) + ")");
        }
        for (pid_t tid : std::span<pid_t>(listed, static_cast<size_t>(n))) {
            if (tid == self || std::find(targets.begin(), targets.end(), tid) != targets.end())
                continue;
            if (syscall(SYS_tgkill, pid, tid, stop_signal()) == 0) {
                targets_buf[targets.size()] = tid;
                targets = std::span<pid_t>(targets_buf, targets.size() + 1);
                added = true;
            }
        }
        // Wait for everyone signalled to report in (or to be gone).
        for (;;) {
            bool all = true;
            for (pid_t tid : targets)
                if (!find_slot(tid) && thread_alive(tid)) {
                    all = false;
                    break;
                }
            if (all)
                break;
            if (clock::now() >= deadline) {
                release();
                return make_error(ETIMEDOUT,
                                  "a thread did not stop within 1 s to let the code be patched "
                                  "(does it block signal " +
                                      std::to_string(stop_signal()) + "?)");
            }
            std::this_thread::yield();
        }
        if (!added)
            break;
    }
    if (g_stop.count.load() > max_threads) {
        release();
        return make_error(EAGAIN, "too many threads to stop (more than " +
                                      std::to_string(max_threads) + ")");
    }

    const int failed = patch();
    if (!failed) {
        for (pid_t tid : targets)
            if (stop_slot *s = find_slot(tid)) {
                auto &rip = s->context->uc_mcontext.gregs[REG_RIP];
                rip = static_cast<greg_t>(move_rip(static_cast<uintptr_t>(rip)));
            }
        serialise();
    }
    release();
    if (failed)
        return make_error(failed, std::string("cannot patch the code: ") + std::strerror(failed));
    return {};
}

} // namespace bpftime::hook_detail
