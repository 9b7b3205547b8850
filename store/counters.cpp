// SPDX-License-Identifier: MIT
// Link run counters: striped per CPU in the link's slot, added to lock-free by every host.
#include "layout.hpp"

#include <bpftime/store/store.hpp>

#include <sched.h>

#include <cstdint>

// Restartable sequences: glibc (2.35 and later) registers every thread's struct rseq.
#if defined(__x86_64__) && defined(__has_include)
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define BPFTIME_COUNTERS_RSEQ 1
#endif
#endif

namespace bpftime::store {

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
void locked_add(slot *s, uint64_t counter_stripe::*field, uint32_t cpu) {
    counter_stripe &c = s->counters[rseq_stripes + cpu % (counter_stripes - rseq_stripes)];
    __atomic_fetch_add(&(c.*field), 1, __ATOMIC_RELAXED);
}

#ifdef BPFTIME_COUNTERS_RSEQ
static_assert(sizeof(counter_stripe) == 64, "rseq_add_one shifts the cpu id by 6");

// Adds 1 to the u64 at `first` + cpu * sizeof(counter_stripe), cpu being the CPU this thread
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
[[gnu::always_inline]] inline uint32_t rseq_add_one(uint64_t *first) {
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
                 "addq $1, (%[first], %[offset])\n"
                 "2:\n\t"
                 ".pushsection __rseq_failure, \"ax\"\n\t"
                 ".byte 0x0f, 0xb9, 0x3d\n\t"
                 ".long %c[sig]\n"
                 "4:\n\t"
                 "jmp 0b\n\t"
                 ".popsection\n"
                 : [cpu] "=&r"(cpu), [offset] "=&r"(offset)
                 : [rseq] "r"(__rseq_offset), [first] "r"(first), [stripes] "i"(rseq_stripes),
                   [sig] "i"(RSEQ_SIG)
                 : "memory", "cc");
    return cpu;
}
#endif

// Adds 1 to this CPU's copy of one counter.
[[gnu::always_inline]] inline void add_one(slot *s, uint64_t counter_stripe::*field) {
#ifdef BPFTIME_COUNTERS_RSEQ
    if (__rseq_size != 0) {
        uint32_t cpu = rseq_add_one(&(s->counters[0].*field));
        if (cpu >= rseq_stripes) {
            locked_add(s, field, cpu);
        }
        return;
    }
#endif
    int cpu = sched_getcpu();
    locked_add(s, field, static_cast<uint32_t>(cpu < 0 ? 0 : cpu));
}

} // namespace

bool link_counters_use_rseq() {
#ifdef BPFTIME_COUNTERS_RSEQ
    return __rseq_size != 0;
#else
    return false;
#endif
}

// Runs and faults are added to without a lock prefix: each add is the commit of a restartable
// sequence (Linux rseq) that reads the CPU id and picks that CPU's stripe. The kernel restarts
// the sequence when it preempts, migrates or signals the thread before the commit, so nothing
// else runs on this CPU between reading the id and the add; that covers other processes'
// threads on this CPU too, as they only run here after a preemption. A CPU's stripe is so
// written by one add at a time, all on that CPU, and readers in other processes (relaxed
// loads) see whole values: x86-64 writes an aligned u64 in one piece. Without rseq in this process
// (GLIBC_TUNABLES=glibc.pthread.rseq=0, an old kernel) or on a CPU >= rseq_stripes, the add is a
// locked one on a stripe no CPU owns.
void link_counters::count(bool fault) const {
    auto *s = static_cast<slot *>(slot_);
    add_one(s, &counter_stripe::runs);
    if (fault) {
        add_one(s, &counter_stripe::faults);
    }
}

} // namespace bpftime::store
