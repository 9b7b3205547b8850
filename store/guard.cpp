// SPDX-License-Identifier: MIT
// The SIGBUS handler that keeps a truncated segment from killing the process (guard.hpp).
#include "guard.hpp"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <mutex>

namespace bpftime::store::detail {

namespace {

// One guard per mapped segment; the handler reads them without a lock (atomics only).
struct guard {
    std::atomic<uintptr_t> start{0};
    std::atomic<uint64_t> size{0};
    std::atomic<bool> damaged{false};
};

constexpr size_t max_guards = 256;
guard guards[max_guards];
struct sigaction previous {};
std::once_flag installed;

// Hands a fault that is not ours to whoever handled SIGBUS before.
void chain(int sig, siginfo_t *info, void *context) {
    if ((previous.sa_flags & SA_SIGINFO) != 0) {
        if (previous.sa_sigaction != nullptr) {
            previous.sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous.sa_handler == SIG_IGN) {
        return;
    } else if (previous.sa_handler != SIG_DFL) {
        previous.sa_handler(sig);
        return;
    }
    // The default action: a faulting access raises the signal again when the handler returns;
    // a signal sent by a process is raised again here.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    if (info == nullptr || info->si_code <= 0) {
        raise(sig);
    }
}

void on_sigbus(int sig, siginfo_t *info, void *context) {
    auto addr = reinterpret_cast<uintptr_t>(info != nullptr ? info->si_addr : nullptr);
    if (info != nullptr && info->si_code > 0) {
        for (guard &g : guards) {
            uintptr_t start = g.start.load(std::memory_order_acquire);
            uint64_t size = g.size.load(std::memory_order_acquire);
            if (start <= 1 || addr < start || addr - start >= size) {
                continue;
            }
            // mmap is async-signal-safe in practice (a system call); MAP_FIXED replaces the
            // shared pages atomically.
            void *p = mmap(reinterpret_cast<void *>(start), size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (p != MAP_FAILED) {
                g.damaged.store(true, std::memory_order_release);
                return;
            }
            break;
        }
    }
    chain(sig, info, context);
}

void install() {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous);
}

} // namespace

int guard_mapping(void *base, uint64_t size) {
    std::call_once(installed, install);
    for (size_t i = 0; i < max_guards; i++) {
        guard &g = guards[i];
        uintptr_t expected = 0;
        // Claim the guard with a marker no mapping has, then describe the range.
        if (g.start.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
            g.damaged.store(false, std::memory_order_relaxed);
            g.size.store(size, std::memory_order_release);
            g.start.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
            return static_cast<int>(i);
        }
    }
    return -1;
}

void unguard_mapping(int index) {
    if (index >= 0) {
        guards[index].start.store(0, std::memory_order_release);
    }
}

bool mapping_damaged(int index) {
    return index >= 0 && guards[index].damaged.load(std::memory_order_acquire);
}

} // namespace bpftime::store::detail
