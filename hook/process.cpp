// SPDX-License-Identifier: MIT
/// @file
/// Process-level services of the inline hooks: the memory map, allocation near an address,
/// patching live code (int3, membarrier and a SIGTRAP handler) and, where the kernel lacks
/// membarrier SYNC_CORE, stopping the other threads while code is patched.
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
#include <linux/membarrier.h>
#include <mutex>
#include <signal.h>
#include <span>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>
#include <ucontext.h>
#include <unistd.h>
#include <vector>

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

int prot_of(const mapping &m) {
    return (m.read ? PROT_READ : 0) | (m.write ? PROT_WRITE : 0) | (m.exec ? PROT_EXEC : 0);
}

void sort_unique_pages(std::vector<page_prot> &pages) {
    std::sort(pages.begin(), pages.end(),
              [](const page_prot &a, const page_prot &b) { return a.page < b.page; });
    pages.erase(
        std::unique(pages.begin(), pages.end(),
                    [](const page_prot &a, const page_prot &b) { return a.page == b.page; }),
        pages.end());
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

// --- Patching live code ----------------------------------------------------------------------

namespace {

size_t page_size() {
    return static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

std::string hex(uintptr_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(v));
    return buf;
}

// Through the system call gate: libc's `syscall` may be code being patched right now.
long membarrier(int cmd, unsigned flags) {
    const long r = syscall_intercept::raw_syscall(SYS_membarrier, cmd, flags, 0);
    if (r < 0) {
        errno = static_cast<int>(-r);
        return -1;
    }
    return r;
}

// 1: membarrier SYNC_CORE and PRIVATE_EXPEDITED registered; 0: not available.
int membarrier_state() {
    static const int state = [] {
        const long q = membarrier(MEMBARRIER_CMD_QUERY, 0);
        if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) ||
            !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED))
            return 0;
        if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0) != 0 ||
            membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) != 0)
            return 0;
        return 1;
    }();
    return state;
}

// One int3 of ours: a site's routing, immutable once published. Entries are never freed (a
// handler may be reading one the patcher just unpublished); each costs 32 bytes per patch.
struct trap_entry {
    uintptr_t address;
    uintptr_t redirect; // when fn is null: where the thread goes on
    trap_fn fn;
    void *user;
};

constexpr int max_trap_sites = 4096;
std::atomic<const trap_entry *> g_traps[max_trap_sites];
std::atomic<int> g_traps_high{0}; // slots below it may be used
std::mutex g_traps_mutex;         // publishing and unpublishing
struct sigaction g_prev_trap {};  // the SIGTRAP disposition before ours
std::once_flag g_trap_once;
int g_trap_error = 0;

// The redirects of the batch being patched (patch_live_batch), or null: published whole.
struct trap_batch {
    const trap_redirect *entries;
    size_t count;
};
std::atomic<const trap_batch *> g_batch{nullptr};

// The redirect of address in the batch being patched, or 0.
uintptr_t find_batch_redirect(uintptr_t address) {
    const trap_batch *b = g_batch.load(std::memory_order_acquire);
    if (b == nullptr)
        return 0;
    size_t lo = 0, hi = b->count;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (b->entries[mid].address < address)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < b->count && b->entries[lo].address == address ? b->entries[lo].redirect : 0;
}

const trap_entry *find_trap(uintptr_t address) {
    const int high = g_traps_high.load(std::memory_order_acquire);
    for (int i = 0; i < high; ++i) {
        const trap_entry *e = g_traps[i].load(std::memory_order_acquire);
        if (e != nullptr && e->address == address)
            return e;
    }
    return nullptr;
}

// Hands a trap that is not ours to what the application installed, or takes the default action.
void chain_trap(int sig, siginfo_t *info, void *context) {
    if (g_prev_trap.sa_flags & SA_SIGINFO) {
        if (g_prev_trap.sa_sigaction != nullptr)
            g_prev_trap.sa_sigaction(sig, info, context);
        return;
    }
    if (g_prev_trap.sa_handler == SIG_IGN)
        return;
    if (g_prev_trap.sa_handler == SIG_DFL) {
        // Delivered again when this handler returns (it is blocked here), now with the default
        // action: the process dumps core at the application's own int3, as without bpftime.
        signal(sig, SIG_DFL);
        syscall_intercept::raw_syscall(SYS_tgkill, getpid(),
                                       syscall_intercept::raw_syscall(SYS_gettid), sig);
        return;
    }
    g_prev_trap.sa_handler(sig);
}

void trap_handler(int sig, siginfo_t *info, void *context) {
    auto *uc = static_cast<ucontext_t *>(context);
    greg_t &rip = uc->uc_mcontext.gregs[REG_RIP];
    // An int3 reports SI_KERNEL with rip just past it; anything else (kill, single-step) is
    // not ours.
    if (info->si_code == SI_KERNEL) {
        const uintptr_t at = static_cast<uintptr_t>(rip) - 1;
        if (const trap_entry *e = find_trap(at)) {
            const int saved_errno = errno;
            if (e->fn != nullptr)
                e->fn(e->user, uc);
            else
                rip = static_cast<greg_t>(e->redirect);
            errno = saved_errno;
            return;
        }
        if (const uintptr_t to = find_batch_redirect(at)) {
            rip = static_cast<greg_t>(to);
            return;
        }
        // An int3 of ours removed between the trap and this lookup: the byte is back; the
        // thread runs what is there now.
        if (*reinterpret_cast<const volatile uint8_t *>(at) != 0xCC) {
            rip = static_cast<greg_t>(at);
            return;
        }
    }
    chain_trap(sig, info, context);
}

// Where the SIGTRAP handler returns through (rt_sigreturn), when not libc's __restore_rt.
std::atomic<uintptr_t> g_restorer{0};
bool g_trap_installed = false; // under g_trap_once, then under g_traps_mutex

struct kernel_sigaction {
    void (*handler)(int, siginfo_t *, void *);
    unsigned long flags;
    uintptr_t restorer;
    uint64_t mask;
};
constexpr unsigned long sa_restorer_flag = 0x04000000;

// Installs the handler with the kernel's own call when a restorer of ours is set: libc's
// __restore_rt holds a `syscall` that may be rewritten, and a thread returning from this very
// handler through an int3 there would trap again for ever.
int set_trap_action() {
    const uintptr_t restorer = g_restorer.load();
    if (restorer == 0) {
        struct sigaction sa {};
        sa.sa_sigaction = trap_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        return sigaction(SIGTRAP, &sa, g_trap_installed ? nullptr : &g_prev_trap) != 0 ? errno : 0;
    }
    if (!g_trap_installed && sigaction(SIGTRAP, nullptr, &g_prev_trap) != 0)
        return errno;
    kernel_sigaction ka{};
    ka.handler = trap_handler;
    ka.flags = SA_SIGINFO | SA_RESTART | SA_NODEFER | sa_restorer_flag;
    ka.restorer = restorer;
    const long r = syscall_intercept::raw_syscall(SYS_rt_sigaction, SIGTRAP,
                                                  reinterpret_cast<long>(&ka), 0, 8);
    return r < 0 ? static_cast<int>(-r) : 0;
}

void install_trap_handler() {
    std::lock_guard lock(g_traps_mutex);
    g_trap_error = set_trap_action();
    g_trap_installed = g_trap_error == 0;
}

result<void> ensure_trap_handler() {
    std::call_once(g_trap_once, install_trap_handler);
    if (g_trap_error)
        return make_error(g_trap_error, std::string("cannot install the SIGTRAP handler: ") +
                                            std::strerror(g_trap_error));
    return {};
}

// Entries taken out of the table (under g_traps_mutex).
std::vector<const trap_entry *> &retired_traps() {
    static auto *retired = new std::vector<const trap_entry *>;
    return *retired;
}

// Publishes an entry; false when every slot is taken.
bool publish_trap(const trap_entry *e) {
    std::lock_guard lock(g_traps_mutex);
    for (int i = 0; i < max_trap_sites; ++i) {
        const trap_entry *expected = nullptr;
        if (g_traps[i].load() == nullptr) {
            if (i >= g_traps_high.load())
                g_traps_high.store(i + 1, std::memory_order_release);
            if (g_traps[i].compare_exchange_strong(expected, e, std::memory_order_release))
                return true;
        }
    }
    return false;
}

// Unpublishes the entries at address: the one given, or every probe's (fn set) when null.
void unpublish_trap(uintptr_t address, const trap_entry *which) {
    std::lock_guard lock(g_traps_mutex);
    const int high = g_traps_high.load();
    for (int i = 0; i < high; ++i) {
        const trap_entry *e = g_traps[i].load();
        if (e != nullptr && e->address == address && (which ? e == which : e->fn != nullptr)) {
            g_traps[i].store(nullptr, std::memory_order_release);
            // Never freed (a thread in the SIGTRAP handler may still read it), but kept where
            // it can be found: it is retired, not lost.
            retired_traps().push_back(e);
        }
    }
}

// Reads a small /proc file of this process into buf; its length or -1.
int read_proc(const char *path, char *buf, size_t size) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    const ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return static_cast<int>(n);
}

// The time thread tid has run (ns, /proc schedstat), or -1 when it is gone.
long long run_time(pid_t tid) {
    char path[64], buf[128];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    if (read_proc(path, buf, sizeof buf) < 0)
        return -1;
    return std::atoll(buf);
}

// A range of code no thread may be inside: [lo, hi).
struct code_range {
    uintptr_t lo, hi;
};

// Whether thread tid is blocked in a system call (or a fault) with its user instruction
// pointer outside every range (sorted by lo, not overlapping).
bool blocked_outside(pid_t tid, std::span<const code_range> ranges) {
    char path[64], buf[256];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    if (read_proc(path, buf, sizeof buf) < 0 || std::strncmp(buf, "running", 7) == 0)
        return false;
    // "nr arg1 .. arg6 sp pc", or "-1 sp pc" outside a system call: the pc is the last field.
    const char *last = std::strrchr(buf, ' ');
    if (last == nullptr)
        return false;
    const uintptr_t pc = std::strtoull(last + 1, nullptr, 16);
    auto after = std::upper_bound(ranges.begin(), ranges.end(), pc,
                                  [](uintptr_t v, const code_range &r) { return v < r.lo; });
    return after == ranges.begin() || pc >= std::prev(after)->hi;
}

// The rule that keeps threads out of half-replaced instructions without stopping them: once the
// int3 is in place and serialised, no thread enters [lo, hi) from its start; a thread that was
// already at a boundary inside (preempted there, a few instructions' window) leaves it as soon
// as it runs. So wait until every other thread has run since (its schedstat run time grew) or
// is blocked in a system call elsewhere. ETIMEDOUT after a second (a thread stopped by a
// debugger or SIGSTOP inside the range).
result<void> wait_threads_outside(std::span<const code_range> ranges) {
    struct seen {
        pid_t tid;
        long long ran;
    };
    std::vector<seen> pending;
    const pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
    std::vector<pid_t> tids(max_threads + 1);
    const int n = list_threads(tids.data(), max_threads + 1);
    if (n < 0)
        return make_error(errno, "cannot list the threads of the process");
    for (int i = 0; i < n; ++i)
        if (tids[i] != self)
            pending.push_back({tids[i], run_time(tids[i])});
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::seconds(1);
    while (!pending.empty()) {
        std::erase_if(pending, [&](const seen &s) {
            const long long now = run_time(s.tid);
            return now < 0 || now > s.ran || blocked_outside(s.tid, ranges);
        });
        if (pending.empty())
            break;
        if (clock::now() >= deadline)
            return make_error(ETIMEDOUT, "thread " + std::to_string(pending.front().tid) +
                                             " neither ran nor blocked outside " +
                                             hex(ranges.front().lo) +
                                             " within 1 s while the code there was patched (is it "
                                             "stopped?)");
        pause_for(std::chrono::microseconds(200));
    }
    return {};
}

} // namespace

bool live_patching_available() {
    return membarrier_state() == 1;
}

// A registered membarrier command; a child of fork starts unregistered (the registration
// belongs to the address space), so EPERM registers again once.
static bool registered_membarrier(int cmd) {
    if (membarrier(cmd, 0) == 0)
        return true;
    if (errno != EPERM || membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0) != 0 ||
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) != 0)
        return false;
    return membarrier(cmd, 0) == 0;
}

void sync_cores() {
    if (membarrier_state() == 1)
        registered_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE);
    serialise();
}

bool barrier_all_threads() {
    if (membarrier_state() == 1)
        return registered_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
    return stop_threads_and([] { return 0; }, [](uintptr_t rip) { return rip; }).ok();
}

result<code_pages> pages_of(uintptr_t address, size_t n) {
    auto maps = read_maps();
    if (!maps)
        return std::move(maps).err();
    const uintptr_t size = page_size();
    code_pages pages;
    for (uintptr_t p = address & ~(size - 1); p < address + n; p += size) {
        const auto *m = find_mapping(*maps, p);
        if (!m)
            return make_error(EFAULT, "the code at " + hex(p) + " is not mapped");
        if (pages.count == 2)
            return make_error(EINVAL, "the patch at " + hex(address) + " spans too many pages");
        pages.page[pages.count] = p;
        pages.prot[pages.count++] = prot_of(*m);
    }
    return pages;
}

// Writes through /proc/self/mem, as a debugger does: code whose protection cannot change (the
// vDSO). 0 or an errno code.
int write_code_forced(uintptr_t address, const uint8_t *bytes, size_t n) {
    const long fd = syscall_intercept::raw_syscall(
        SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/mem"), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return static_cast<int>(-fd);
    const long r = syscall_intercept::raw_syscall(SYS_pwrite64, fd, reinterpret_cast<long>(bytes),
                                                  static_cast<long>(n), static_cast<long>(address));
    syscall_intercept::raw_syscall(SYS_close, fd);
    return r == static_cast<long>(n) ? 0 : r < 0 ? static_cast<int>(-r) : EIO;
}

int write_code(const code_pages &pages, uintptr_t address, const uint8_t *bytes, size_t n) {
    const size_t size = page_size();
    for (int i = 0; i < pages.count; ++i)
        if (mprotect(reinterpret_cast<void *>(pages.page[i]), size,
                     PROT_READ | PROT_WRITE | PROT_EXEC) != 0) {
            const int err = errno;
            for (int j = 0; j < i; ++j)
                mprotect(reinterpret_cast<void *>(pages.page[j]), size, pages.prot[j]);
            if (err == EINVAL || err == EACCES)
                return write_code_forced(address, bytes, n);
            return err;
        }
    auto *dst = reinterpret_cast<volatile uint8_t *>(address);
    for (size_t i = 0; i < n; ++i)
        dst[i] = bytes[i];
    for (int i = 0; i < pages.count; ++i)
        mprotect(reinterpret_cast<void *>(pages.page[i]), size, pages.prot[i]);
    return 0;
}

result<void> patch_live(const live_patch &p, const move_rip_fn &move_rip) {
    auto pages = pages_of(p.address, p.n);
    if (!pages)
        return std::move(pages).err();
    const auto *code = reinterpret_cast<const uint8_t *>(p.address);
    if (membarrier_state() != 1) {
        bool changed = false;
        auto done = stop_threads_and(
            [&] {
                if (p.expect && std::memcmp(code, p.expect, p.n) != 0) {
                    changed = true;
                    return EAGAIN;
                }
                return write_code(*pages, p.address, p.bytes, p.n);
            },
            move_rip);
        if (!done && changed)
            return make_error(EAGAIN, "the code at " + hex(p.address) + " changed meanwhile");
        return done;
    }
    if (auto h = ensure_trap_handler(); !h)
        return h;
    if (p.expect && std::memcmp(code, p.expect, p.n) != 0)
        return make_error(EAGAIN, "the code at " + hex(p.address) + " changed meanwhile");
    const uint8_t first = code[0];
    const auto *entry = new trap_entry{p.address, p.redirect, nullptr, nullptr};
    if (!publish_trap(entry))
        return make_error(ENOSPC, "too many int3 sites (" + std::to_string(max_trap_sites) + ")");
    const uint8_t int3 = 0xCC;
    auto fail = [&](int err, const std::string &what) -> result<void> {
        // Back to the first byte the code had: the rest is still the old code.
        write_code(*pages, p.address, &first, 1);
        sync_cores();
        unpublish_trap(p.address, entry);
        return make_error(err, what);
    };
    if (int err = write_code(*pages, p.address, &int3, 1))
        return fail(err, std::string("cannot write the code: ") + std::strerror(err));
    sync_cores();
    if (p.wait_inside && p.n > 1)
        if (auto w = wait_threads_outside(
                std::span<const code_range>({code_range{p.address + 1, p.address + p.n}}));
            !w)
            return fail(w.err().code, w.err().message);
    if (p.n > 1) {
        if (int err = write_code(*pages, p.address + 1, p.bytes + 1, p.n - 1))
            return fail(err, std::string("cannot write the code: ") + std::strerror(err));
        sync_cores();
    }
    if (int err = write_code(*pages, p.address, p.bytes, 1)) {
        // The int3 stays, redirecting for good: the bytes behind it are already the new ones.
        return make_error(err, std::string("cannot write the code: ") + std::strerror(err));
    }
    sync_cores();
    unpublish_trap(p.address, entry);
    return {};
}

result<void> add_trap_site(uintptr_t address, uint8_t original, trap_fn fn, void *user) {
    if (auto h = ensure_trap_handler(); !h)
        return h;
    auto pages = pages_of(address, 1);
    if (!pages)
        return std::move(pages).err();
    if (*reinterpret_cast<const uint8_t *>(address) != original)
        return make_error(EAGAIN, "the code at " + hex(address) + " changed meanwhile");
    if (!publish_trap(new trap_entry{address, 0, fn, user}))
        return make_error(ENOSPC, "too many int3 sites (" + std::to_string(max_trap_sites) + ")");
    const uint8_t int3 = 0xCC;
    if (int err = write_code(*pages, address, &int3, 1)) {
        unpublish_trap(address, nullptr);
        return make_error(err, std::string("cannot write the int3: ") + std::strerror(err));
    }
    // A single byte: no thread can see half of it; the serialisation makes the probe take
    // effect everywhere now rather than at each core's next serialising event.
    sync_cores();
    return {};
}

result<void> remove_trap_site(uintptr_t address, uint8_t original) {
    auto pages = pages_of(address, 1);
    if (!pages)
        return std::move(pages).err();
    if (int err = write_code(*pages, address, &original, 1))
        return make_error(err, std::string("cannot restore the code: ") + std::strerror(err));
    sync_cores();
    unpublish_trap(address, nullptr);
    return {};
}

result<void> patch_live_batch(const std::vector<live_patch> &patches,
                              const trap_redirect *redirects, size_t n_redirects) {
    if (patches.empty())
        return {};
    if (membarrier_state() != 1)
        return make_error(ENOTSUP, "live patching needs membarrier SYNC_CORE");
    if (auto h = ensure_trap_handler(); !h)
        return h;
    static std::mutex batch_mutex; // one batch at a time: one published table
    std::lock_guard lock(batch_mutex);
    auto maps = read_maps();
    if (!maps)
        return std::move(maps).err();
    // Every page made writable once for the whole batch, its protection put back at the end.
    const uintptr_t size = page_size();
    std::vector<page_prot> pages;
    std::vector<code_range> inside;
    for (const live_patch &p : patches) {
        for (uintptr_t pg = p.address & ~(size - 1); pg < p.address + p.n; pg += size) {
            const auto *m = find_mapping(*maps, pg);
            if (!m)
                return make_error(EFAULT, "the code at " + hex(pg) + " is not mapped");
            pages.push_back({pg, prot_of(*m)});
        }
        if (p.wait_inside && p.n > 1)
            inside.push_back({p.address + 1, p.address + p.n});
    }
    sort_unique_pages(pages);
    std::sort(inside.begin(), inside.end(),
              [](const code_range &a, const code_range &b) { return a.lo < b.lo; });
    // Pages whose protection cannot change (the vDSO) are written through /proc/self/mem, as
    // a debugger writes its breakpoints (a private copy of the page for this process).
    std::vector<uintptr_t> forced;
    int mem_fd = -1;
    auto restore_prot = [&] {
        for (const page_prot &p : pages)
            if (!std::binary_search(forced.begin(), forced.end(), p.page))
                syscall_intercept::raw_syscall(SYS_mprotect, static_cast<long>(p.page),
                                               static_cast<long>(size), p.prot);
        if (mem_fd >= 0)
            syscall_intercept::raw_syscall(SYS_close, mem_fd);
    };
    for (const page_prot &p : pages) {
        const long r = syscall_intercept::raw_syscall(SYS_mprotect, static_cast<long>(p.page),
                                                      static_cast<long>(size),
                                                      PROT_READ | PROT_WRITE | PROT_EXEC);
        if (r == 0)
            continue;
        if (mem_fd < 0)
            mem_fd = static_cast<int>(syscall_intercept::raw_syscall(
                SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/mem"),
                O_RDWR | O_CLOEXEC));
        if (mem_fd < 0) {
            restore_prot();
            return make_error(static_cast<int>(-r),
                              "cannot make the code at " + hex(p.page) +
                                  " writable: " + std::strerror(static_cast<int>(-r)));
        }
        forced.push_back(p.page);
    }
    auto put = [&](uintptr_t at, uint8_t v) {
        if (!forced.empty() && std::binary_search(forced.begin(), forced.end(), at & ~(size - 1)))
            syscall_intercept::raw_syscall(SYS_pwrite64, mem_fd, reinterpret_cast<long>(&v), 1,
                                           static_cast<long>(at));
        else
            *reinterpret_cast<volatile uint8_t *>(at) = v;
    };
    // Never freed (a thread in the SIGTRAP handler may read it after it is unpublished), kept
    // where the leak checker finds it.
    static auto *batches = new std::vector<const trap_batch *>;
    const auto *batch = new trap_batch{redirects, n_redirects};
    batches->push_back(batch);
    g_batch.store(batch, std::memory_order_release);
    for (const live_patch &p : patches)
        put(p.address, 0xCC);
    sync_cores();
    if (!inside.empty()) {
        if (auto w = wait_threads_outside(inside); !w) {
            for (const live_patch &p : patches)
                put(p.address, p.expect[0]);
            sync_cores();
            g_batch.store(nullptr, std::memory_order_release);
            restore_prot();
            return w;
        }
    }
    for (const live_patch &p : patches)
        for (size_t i = 1; i < p.n; ++i)
            put(p.address + i, p.bytes[i]);
    sync_cores();
    for (const live_patch &p : patches)
        put(p.address, p.bytes[0]);
    sync_cores();
    g_batch.store(nullptr, std::memory_order_release);
    restore_prot();
    return {};
}

void use_signal_restorer(uintptr_t restorer) {
    g_restorer.store(restorer);
    std::lock_guard lock(g_traps_mutex);
    if (g_trap_installed)
        (void)set_trap_action();
}

} // namespace bpftime::hook_detail
