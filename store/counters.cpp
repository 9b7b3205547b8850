// SPDX-License-Identifier: MIT
// Link run counters: striped per CPU in the link's slot (or a host record), added to
// lock-free by every host; the run clock hosts read around runs when timing is on.
#include "layout.hpp"

#include <bpftime/store/store.hpp>

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <mutex>
#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

// Restartable sequences: glibc (2.35 and later) registers every thread's struct rseq.
#if defined(__x86_64__) && defined(__has_include)
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define BPFTIME_COUNTERS_RSEQ 1
#endif
#endif

namespace bpftime::store {

namespace detail {
constinit __attribute__((tls_model("initial-exec"))) thread_local uint32_t thread_counter_offset =
    0xffffffffu; // not yet given a stripe (stripe_unclaimed below)
// Read at the first count and again in a forked child, compared with a host record's pid and key.
int32_t counting_pid = -2;
const int32_t no_owned_key = -1;
} // namespace detail

using detail::counter_stripe;
using detail::counter_stripes;
using detail::slot;

namespace {

// Stripe i < rseq_stripes belongs to CPU i and is added to without a lock prefix (in a
// restartable sequence, so only by threads on CPU i); the other stripes take every locked add
// (threads on higher CPUs, processes without rseq). Keeping the two apart matters: an add
// without the lock prefix is not atomic against another CPU's add.
constexpr uint32_t rseq_stripes = 6;
static_assert(rseq_stripes < counter_stripes);

// The fallback: a locked add on one of the stripes no CPU owns.
void locked_add(counter_stripe *s, uint64_t counter_stripe::*field, uint32_t cpu, uint64_t n) {
    counter_stripe &c = s[rseq_stripes + cpu % (counter_stripes - rseq_stripes)];
    __atomic_fetch_add(&(c.*field), n, __ATOMIC_RELAXED);
}

#ifdef BPFTIME_COUNTERS_RSEQ
static_assert(sizeof(counter_stripe) == 64, "rseq_add shifts the cpu id by 6");

// Adds n to the u64 at `first` + cpu * sizeof(counter_stripe), cpu being the CPU this thread
// runs on, in a restartable sequence (see link_counters::count). Returns the cpu id it read:
// when that is >= rseq_stripes (or the thread has no rseq: ~0u, ~1u), it added nothing.
//
// 3: the struct rseq_cs descriptor (version 0, flags 0, start_ip, post_commit_offset,
//    abort_ip) in section __rseq_cs, also listed in __rseq_cs_ptr_array for debuggers.
// 0: (re)start: point this thread's rseq->rseq_cs (offset 8) at the descriptor.
// 1: the critical section: read rseq->cpu_id (offset 4), leave when it owns no stripe,
//    compute the address from it, and commit with the one add.
// 2: the end, just past the commit.
// 4: the abort handler, preceded by RSEQ_SIG (as the operand of a ud1, like librseq, so
//    disassemblers stay in step): the kernel sends the thread there when it preempts,
//    migrates or signals it between 1 and 2; the sequence starts again.
[[gnu::always_inline]] inline uint32_t rseq_add(uint64_t *first, uint64_t n) {
    uint32_t cpu;
    uint64_t offset;
    asm volatile(".pushsection __rseq_cs, \"aw\"\n\t"
                 ".balign 32\n"
                 "3:\n\t"
                 ".long 0, 0\n\t"
                 ".quad 1f, 2f - 1f, 4f\n\t"
                 ".popsection\n\t"
                 ".pushsection __rseq_cs_ptr_array, \"aw\"\n\t"
                 ".quad 3b\n\t"
                 ".popsection\n"
                 "0:\n\t"
                 "leaq 3b(%%rip), %[offset]\n\t"
                 "movq %[offset], %%fs:8(%[rseq])\n"
                 "1:\n\t"
                 "movl %%fs:4(%[rseq]), %[cpu]\n\t"
                 "cmpl %[stripes], %[cpu]\n\t"
                 "jae 2f\n\t"
                 "movl %[cpu], %k[offset]\n\t"
                 "shlq $6, %[offset]\n\t"
                 "addq %[n], (%[first], %[offset])\n"
                 "2:\n\t"
                 ".pushsection __rseq_failure, \"ax\"\n\t"
                 ".byte 0x0f, 0xb9, 0x3d\n\t"
                 ".long %c[sig]\n"
                 "4:\n\t"
                 "jmp 0b\n\t"
                 ".popsection\n"
                 : [cpu] "=&r"(cpu), [offset] "=&r"(offset)
                 : [rseq] "r"(__rseq_offset), [first] "r"(first), [n] "r"(n),
                   [stripes] "i"(rseq_stripes), [sig] "i"(RSEQ_SIG)
                 : "memory", "cc");
    return cpu;
}
#endif

// Adds n to this CPU's copy of one counter.
[[gnu::always_inline]] inline void add(counter_stripe *s, uint64_t counter_stripe::*field,
                                       uint64_t n) {
#ifdef BPFTIME_COUNTERS_RSEQ
    if (__rseq_size != 0) {
        uint32_t cpu = rseq_add(&(s[0].*field), n);
        if (cpu >= rseq_stripes) {
            locked_add(s, field, cpu, n);
        }
        return;
    }
#endif
    int cpu = sched_getcpu();
    locked_add(s, field, static_cast<uint32_t>(cpu < 0 ? 0 : cpu), n);
}

// --- host records: stripes owned by threads ---
//
// A host record counts the runs of one process. Its stripe i < thread_stripes belongs to at
// most one thread of that process at a time, which adds to it without a lock prefix and
// without a restartable sequence: a plain add on a line no other thread writes. Threads past
// thread_stripes, and processes that are not the record's (a forked child still running its
// parent's programs, a process whose record another took over), take locked adds on the other
// stripes.

constexpr uint32_t thread_stripes = rseq_stripes;

using detail::counting_pid;
// detail::thread_counter_offset: sizeof(counter_stripe) * this thread's stripe, or one of these.
using detail::thread_counter_offset;
constexpr uint32_t stripe_unclaimed = 0xffffffffu; // before its first count in this process
constexpr uint32_t no_stripe_left = 0xfffffffeu;
constexpr int32_t pid_unread = -2;
static_assert(thread_stripes == 6 && sizeof(counter_stripe) == 64 &&
                  offsetof(counter_stripe, runs) == 0 && pid_unread != detail::no_owned_key,
              "link_counters::count_owned_run (store.hpp) hard-codes these");

struct stripe_pool {
    std::mutex mu;
    uint32_t used = 0; // a bit per stripe held by a live thread
    pthread_key_t key{};
    bool key_ok = false;
};
stripe_pool &pool() {
    static auto *p = new stripe_pool();
    return *p;
}

// Thread exit: the stripe goes back to the pool; its counts stay in every record.
void release_stripe(void *held) {
    stripe_pool &p = pool();
    std::lock_guard lock(p.mu);
    p.used &= ~(1u << (reinterpret_cast<uintptr_t>(held) - 1));
}

// Set up on the first count in the process, not when the library loads: a constructor's system
// calls would run in the host's main thread as the application's own (a syscall tracepoint
// would count them).
void init_stripes() {
    counting_pid = static_cast<int32_t>(getpid());
    stripe_pool &p = pool();
    p.key_ok = pthread_key_create(&p.key, release_stripe) == 0;
    // The child of a fork has one thread, the one that forked: no stripe is held there.
    pthread_atfork([] { pool().mu.lock(); }, [] { pool().mu.unlock(); },
                   [] {
                       stripe_pool &c = pool();
                       c.used = 0;
                       c.mu.unlock();
                       thread_counter_offset = stripe_unclaimed;
                       counting_pid = pid_unread; // read again at the child's first count
                   });
}

// The first count of a thread: the offset of a free stripe, or no_stripe_left.
uint32_t claim_stripe() {
    static std::once_flag once;
    std::call_once(once, init_stripes);
    if (counting_pid == pid_unread) {
        counting_pid = static_cast<int32_t>(getpid());
    }
    stripe_pool &p = pool();
    std::lock_guard lock(p.mu);
    for (uint32_t i = 0; i < thread_stripes && p.key_ok; i++) {
        if ((p.used & (1u << i)) == 0 &&
            pthread_setspecific(p.key, reinterpret_cast<void *>(uintptr_t{i} + 1)) == 0) {
            p.used |= 1u << i;
            return i * sizeof(counter_stripe);
        }
    }
    return no_stripe_left;
}

// Adds n to a stripe only this thread writes: readers in other processes load whole values.
[[gnu::always_inline]] inline void owned_add(uint64_t &v, uint64_t n) {
    __atomic_store_n(&v, __atomic_load_n(&v, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

} // namespace

bool link_counters_use_rseq() {
#ifdef BPFTIME_COUNTERS_RSEQ
    return __rseq_size != 0;
#else
    return false;
#endif
}

// A host record's counts go to the calling thread's own stripe (see "host records" above), with
// a locked add when it has none or the record is not its process's. A link's own stripes (a host
// without a record) are shared by every process:
// runs and faults are added to without a lock prefix: each add is the commit of a restartable
// sequence (Linux rseq) that reads the CPU id and picks that CPU's stripe. The kernel restarts
// the sequence when it preempts, migrates or signals the thread before the commit, so nothing
// else runs on this CPU between reading the id and the add; that covers other processes'
// threads on this CPU too, as they only run here after a preemption. A CPU's stripe is so
// written by one add at a time, all on that CPU, and readers in other processes (relaxed
// loads) see whole values: x86-64 writes an aligned u64 in one piece. Without rseq in this process
// (GLIBC_TUNABLES=glibc.pthread.rseq=0, an old kernel) or on a CPU >= rseq_stripes, the add is a
// locked one on a stripe no CPU owns.
void link_counters::count(int error, uint64_t run_time_ns) const {
    auto *s = static_cast<counter_stripe *>(stripes_);
    if (owner_ != nullptr) {
        uint32_t mine = thread_counter_offset;
        if (mine == stripe_unclaimed) [[unlikely]] {
            thread_counter_offset = mine = claim_stripe();
        }
        const uint32_t stripe = mine / sizeof(counter_stripe);
        bool owned =
            stripe < thread_stripes && __atomic_load_n(owner_, __ATOMIC_RELAXED) == counting_pid;
        // Else a locked add on a stripe no thread owns.
        counter_stripe &c =
            owned ? s[stripe] : s[thread_stripes + stripe % (counter_stripes - thread_stripes)];
        auto bump = [owned](uint64_t &v, uint64_t n) {
            if (owned) [[likely]] {
                owned_add(v, n);
            } else {
                __atomic_fetch_add(&v, n, __ATOMIC_RELAXED);
            }
        };
        bump(c.runs, 1);
        if (error != 0) [[unlikely]] {
            bump(c.faults, 1);
            if (error == ETIMEDOUT) {
                bump(c.budget_stops, 1);
            }
        }
        if (run_time_ns != 0) {
            bump(c.run_time_ns, run_time_ns);
        }
        return;
    }
    add(s, &counter_stripe::runs, 1);
    if (error != 0) [[unlikely]] {
        add(s, &counter_stripe::faults, 1);
        if (error == ETIMEDOUT) {
            add(s, &counter_stripe::budget_stops, 1);
        }
    }
    if (run_time_ns != 0) {
        add(s, &counter_stripe::run_time_ns, run_time_ns);
    }
}

void link_counters::count_decision(decision d, int status) const {
    auto *f = static_cast<detail::filter_counts *>(decisions_);
    if (f == nullptr) {
        return;
    }
    auto bump = [](uint64_t &v) { __atomic_fetch_add(&v, 1, __ATOMIC_RELAXED); };
    switch (d) {
    case decision::allowed:
        return bump(f->allowed);
    case decision::fail_open:
        return bump(f->fail_open);
    case decision::fail_closed:
        return bump(f->fail_closed);
    case decision::refused:
        break;
    }
    auto want = static_cast<uint32_t>(status);
    for (auto &r : f->refused) {
        uint32_t have = __atomic_load_n(&r.status, __ATOMIC_ACQUIRE);
        if (have == 0 && want != 0) {
            uint32_t expected = 0;
            // Another thread may claim the entry first, for this status or another.
            __atomic_compare_exchange_n(&r.status, &expected, want, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE);
            have = expected == 0 ? want : expected;
        }
        if (have == want) {
            return bump(r.count);
        }
    }
    bump(f->refused_other);
}

namespace detail {

void sum_decisions(const filter_counts &from, filter_decisions &into) {
    into.allowed += __atomic_load_n(&from.allowed, __ATOMIC_RELAXED);
    into.fail_open += __atomic_load_n(&from.fail_open, __ATOMIC_RELAXED);
    into.fail_closed += __atomic_load_n(&from.fail_closed, __ATOMIC_RELAXED);
    if (uint64_t n = __atomic_load_n(&from.refused_other, __ATOMIC_RELAXED)) {
        into.refused[0] += n;
    }
    for (const auto &r : from.refused) {
        uint32_t status = __atomic_load_n(&r.status, __ATOMIC_ACQUIRE);
        uint64_t n = __atomic_load_n(&r.count, __ATOMIC_RELAXED);
        if (status != 0 && n != 0) {
            into.refused[static_cast<int>(status)] += n;
        }
    }
}

void sum_counters(const counter_stripe (&from)[counter_stripes], counter_totals &into) {
    for (const counter_stripe &c : from) {
        into.runs += __atomic_load_n(&c.runs, __ATOMIC_RELAXED);
        into.faults += __atomic_load_n(&c.faults, __ATOMIC_RELAXED);
        into.budget_stops += __atomic_load_n(&c.budget_stops, __ATOMIC_RELAXED);
        into.run_time_ns += __atomic_load_n(&c.run_time_ns, __ATOMIC_RELAXED);
    }
}

// Each value is taken with an exchange and given to a stripe no CPU owns with a locked add, so
// totals keep every count of a process that no longer adds. (A process that still adds here
// without the lock prefix may race with the exchange; records are only handed on when theirs
// is gone or past max_link_hosts.)
void fold_counters(counter_stripe (&from)[counter_stripes],
                   counter_stripe (&into)[counter_stripes]) {
    for (counter_stripe &c : from) {
        for (auto field : {&counter_stripe::runs, &counter_stripe::faults,
                           &counter_stripe::budget_stops, &counter_stripe::run_time_ns}) {
            uint64_t v = __atomic_exchange_n(&(c.*field), 0, __ATOMIC_RELAXED);
            if (v != 0) {
                __atomic_fetch_add(&(into[rseq_stripes].*field), v, __ATOMIC_RELAXED);
            }
        }
    }
}

} // namespace detail

namespace detail {
run_clock_source run_clock = run_clock_unset;
uint64_t run_clock_scale = uint64_t{1} << 32;
} // namespace detail

namespace {

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

#if defined(__x86_64__)
// One reading of CLOCK_MONOTONIC and the TSC at the same moment: of a few tries, the one whose
// two TSC reads around the clock's are closest, so that a preemption or an interrupt inside a
// try does not skew the rate measured from two such readings.
void paired_reading(uint64_t &ns, uint64_t &tsc) {
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 8; i++) {
        const uint64_t before = __rdtsc();
        const uint64_t m = monotonic_ns();
        const uint64_t after = __rdtsc();
        if (after - before < best) {
            best = after - before;
            ns = m;
            tsc = before + (after - before) / 2;
        }
    }
}
#endif

// The TSC counts at a constant rate on every CPU when CPUID says it is invariant; its rate is
// measured once against CLOCK_MONOTONIC (over about 200 microseconds) rather than trusted from
// CPUID, which many hypervisors leave empty. Returns ns per tick as 32.32 fixed point, or 0 when
// the TSC is not usable.
uint64_t measure_tsc_scale() {
#if defined(__x86_64__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    // GCC's cpuid.h returns unsigned int here and clang's int.
    if (static_cast<unsigned>(__get_cpuid_max(0x80000000u, nullptr)) < 0x80000007u) {
        return 0;
    }
    __cpuid(0x80000007u, a, b, c, d);
    if ((d & (1u << 8)) == 0) {
        return 0;
    }
    uint64_t t0 = 0, c0 = 0, t1 = 0, c1 = 0;
    paired_reading(t0, c0);
    while (monotonic_ns() - t0 < 200000) {
    }
    paired_reading(t1, c1);
    if (c1 > c0 && t1 > t0) {
        // Far below 2^32 ns per tick (a TSC runs at MHz to GHz), so the scale fits.
        const uint64_t scale =
            static_cast<uint64_t>((static_cast<unsigned __int128>(t1 - t0) << 32) / (c1 - c0));
        return scale != 0 ? scale : 1;
    }
#endif
    return 0;
}

void choose_run_clock() {
    const uint64_t scale = measure_tsc_scale();
    if (scale != 0) {
        detail::run_clock_scale = scale;
    }
    // The scale is written before the source is published: a thread that sees the TSC chosen
    // converts with its scale.
    __atomic_store_n(&detail::run_clock,
                     scale != 0 ? detail::run_clock_tsc : detail::run_clock_monotonic,
                     __ATOMIC_RELEASE);
}

} // namespace

uint64_t run_clock_ticks_slow() {
    if (__atomic_load_n(&detail::run_clock, __ATOMIC_ACQUIRE) == detail::run_clock_unset) {
        static std::once_flag once;
        std::call_once(once, choose_run_clock);
    }
#if defined(__x86_64__)
    if (detail::run_clock == detail::run_clock_tsc) {
        return __rdtsc();
    }
#endif
    return monotonic_ns();
}

uint64_t run_clock_ns() {
    return run_ticks_to_ns(run_clock_ticks());
}

} // namespace bpftime::store
