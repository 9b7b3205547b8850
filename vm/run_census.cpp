// SPDX-License-Identifier: MIT
// The threads whose runs a host waits for before it says it no longer reaches what a
// controller destroyed: a quiescent-state scheme. Every thread that runs programs registers
// its run sequence (odd while in a run); a census copies the odd ones, and a run is over once
// its thread's sequence moved on. A thread is never waited for longer than its current run:
// one that runs back to back ended the run of the census when it started the next, and that
// next run can no longer reach what the host released before the census.
#include "run_census.hpp"

#include <bpftime/vm/vm.hpp>

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

namespace bpftime::vm {
namespace detail {
namespace {

struct registered {
    run_seq *seq;
    uint64_t number;  // never reused, unlike seq's address
    pthread_t thread; // the same in a fork child for the thread that forked
};

// Never destroyed: threads may run and exit after the process's destructors.
struct registry {
    std::mutex mu;
    std::vector<registered> threads;
    uint64_t next = 1;

    static registry &get() {
        static registry *r = [] {
            auto *made = new registry;
            // A fork child has only the thread that forked: the others' sequences (which may
            // be odd for ever) go, and the lock is free again.
            pthread_atfork([] { get().mu.lock(); }, [] { get().mu.unlock(); },
                           [] {
                               registry &c = get();
                               std::erase_if(c.threads, [](const registered &t) {
                                   return !pthread_equal(t.thread, pthread_self());
                               });
                               c.mu.unlock();
                           });
            return made;
        }();
        return *r;
    }
};

// Every thread of this process runs a full barrier before this returns: a run that starts
// later sees what the caller wrote before, and a run that started earlier has its odd
// sequence seen by the caller. Without membarrier, a run whose start store is still in its
// CPU's store buffer may be missed (a window of nanoseconds).
void barrier_all_threads() {
    static const bool registered_expedited =
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    if (!registered_expedited ||
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
}

struct interp_thread {
    run_seq seq{0};
    uint32_t depth = 0;
};

// This thread's (null until its first interpreter run); past its exit, `gone`, which no
// census reads: a run then is not waited for.
constinit thread_local interp_thread *this_interp = nullptr;
interp_thread gone;

interp_thread *interp_thread_of_this() {
    if (this_interp != nullptr) [[likely]] {
        return this_interp;
    }
    struct owner {
        std::unique_ptr<interp_thread> t = std::make_unique<interp_thread>();
        owner() { register_run_seq(&t->seq); }
        ~owner() {
            unregister_run_seq(&t->seq);
            this_interp = &gone;
        }
    };
    this_interp = &gone; // while the owner is made (a run its allocation meets)
    thread_local owner mine;
    this_interp = mine.t.get();
    return this_interp;
}

} // namespace

void register_run_seq(run_seq *seq) {
    registry &r = registry::get();
    std::lock_guard lock(r.mu);
    r.threads.push_back({seq, r.next++, pthread_self()});
}

void unregister_run_seq(run_seq *seq) {
    registry &r = registry::get();
    std::lock_guard lock(r.mu);
    std::erase_if(r.threads, [&](const registered &t) { return t.seq == seq; });
}

run_mark::run_mark() : thread_(nullptr) {
    interp_thread *t = interp_thread_of_this();
    if (t == &gone) {
        return;
    }
    thread_ = t;
    if (t->depth++ == 0) {
        t->seq.store(t->seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        std::atomic_signal_fence(std::memory_order_seq_cst);
    }
}

run_mark::~run_mark() {
    auto *t = static_cast<interp_thread *>(thread_);
    if (t != nullptr && --t->depth == 0) {
        std::atomic_signal_fence(std::memory_order_seq_cst);
        t->seq.store(t->seq.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
}

} // namespace detail

run_census take_run_census() {
    detail::barrier_all_threads();
    detail::registry &r = detail::registry::get();
    run_census census;
    std::lock_guard lock(r.mu);
    for (const detail::registered &t : r.threads) {
        // The caller's own run (a host synchronising inside a run) cannot end while it waits.
        if (pthread_equal(t.thread, pthread_self())) {
            continue;
        }
        if (uint32_t seq = t.seq->load(std::memory_order_acquire); seq & 1) {
            census.runs.push_back({t.number, seq});
        }
    }
    return census;
}

bool runs_ended(run_census &census) {
    detail::registry &r = detail::registry::get();
    std::lock_guard lock(r.mu);
    std::erase_if(census.runs, [&](const run_census::running &run) {
        auto t = std::find_if(r.threads.begin(), r.threads.end(),
                              [&](const detail::registered &x) { return x.number == run.thread; });
        return t == r.threads.end() || t->seq->load(std::memory_order_acquire) != run.seq;
    });
    return census.runs.empty();
}

} // namespace bpftime::vm
