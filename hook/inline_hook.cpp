// SPDX-License-Identifier: MIT
/// @file
/// The inline hook engine: stubs, dispatch to the handlers, the per-thread shadow stack of
/// return addresses, installing and removing the patch.
#include "bpftime/hook/inline_hook.hpp"

#include "bpftime/hook/syscall_intercept.hpp"
#include "hook_internal.hpp"

#include <bpftime/cpu/vector_state.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>
#include <utility>

namespace bpftime {

namespace {

using hook_detail::relocation;

constexpr size_t shadow_capacity = 256;

} // namespace

struct inline_hook::record {
    uintptr_t address = 0;
    hook_entry_fn on_entry = nullptr;
    hook_return_fn on_return = nullptr;
    void *user = nullptr;
    uintptr_t page = 0; // stub, trampoline and return stub; never unmapped
    uintptr_t trampoline = 0;
    uintptr_t return_stub = 0;
    relocation reloc;
    std::vector<uint8_t> original;
    // Handlers run only while set. A thread marks the hook it dispatches for in its shadow
    // stack before it reads this; removal clears it and then stops the threads until none is
    // marked (a stopped thread reports its mark), so no shared counter is written per call.
    std::atomic<bool> active{false};
    // set_return_only: a function entry stub skips the entry handler and the vector state and
    // only arranges the return hook (return_only_dispatch). Read by the stub itself.
    std::atomic<bool> return_only{false};
    // set_plain_entry / set_plain_return: the handlers that run without the vector state saved
    // (null: none).
    std::atomic<hook_entry_fn> on_entry_plain{nullptr};
    std::atomic<hook_return_fn> on_return_plain{nullptr};
    // What a function entry stub does before saving the vector state (light_mode), made from
    // return_only and on_entry_plain. Read by the stub itself.
    std::atomic<uint8_t> light{0};
    bool patched = false; // the jump is in place (guarded by g_hooks_mutex)
    bool trap = false;    // an int3 at address instead of a jump (install_trap)
};

namespace {

using record = inline_hook::record;

struct shadow_entry {
    uintptr_t slot; // where the return address was (rsp at entry)
    uintptr_t ret;  // the original return address
    record *rec;
    // The entry stub called the function (the return comes back through the stub's call, so
    // the CPU's return stack predicts it) rather than swapping the return address.
    bool called;
};

// What a function entry stub does first (record::light).
enum light_mode : uint8_t {
    light_none = 0,        // save the vector state and call entry_dispatch
    light_return_only = 1, // return_only_dispatch, with no vector state saved
    light_plain_entry = 2, // plain_entry_dispatch, with no vector state saved
};

// What entry_dispatch tells the entry stub to do.
enum entry_outcome : uint8_t {
    go_on = 0,         // run the function
    return_now = 1,    // return to the caller at once (return_early)
    call_and_hook = 2, // call the function from the stub; its return runs the return stub
    take_full = 3      // (light_dispatch) go through the full path instead
};

// Per thread: the return addresses of calls whose return is hooked, innermost last.
struct shadow_stack {
    size_t depth;
    bool in_handler; // a handler runs on this thread: hooked calls from it run unhooked
    bool off;        // the thread's hooks are off (set_thread_handlers_off): the same
    bool in_entry;   // the handler running is an entry handler (return_early may be called)
    bool early;      // return_early was called by it
    uint64_t early_value;
    struct thread_mark *mark; // where this thread shows the hook it dispatches for
    // shadow_capacity entries, mapped at the thread's first hooked return: the thread-local
    // block stays small enough for a library loaded by dlopen (an injected agent), which
    // glibc must fit into the little static TLS left after start-up.
    shadow_entry *entries;
};

// Initial-exec: the probe path reaches it with one load relative to the thread pointer instead
// of a call to __tls_get_addr in a library (the agent); it is small enough for the static TLS
// surplus a library loaded by dlopen must fit in.
__attribute__((tls_model("initial-exec"))) thread_local shadow_stack t_shadow;

// Unmaps a thread's entries when it exits; only touched when they are mapped, so the probe
// path has no thread-local constructor check. Its system calls (and the mapping's) go through
// the interception's gate: a system call tracepoint must not see them as the program's.
struct shadow_release {
    bool armed = false;
    ~shadow_release() {
        if (shadow_entry *e = t_shadow.entries) {
            t_shadow.entries = nullptr;
            t_shadow.depth = 0;
            (void)syscall_intercept::raw_syscall(SYS_munmap, reinterpret_cast<long>(e),
                                                 shadow_capacity * sizeof(shadow_entry));
        }
    }
};
thread_local shadow_release t_shadow_release;

bool map_shadow_entries(shadow_stack &ss) {
    const long p =
        syscall_intercept::raw_syscall(SYS_mmap, 0, shadow_capacity * sizeof(shadow_entry),
                                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p < 0 && p > -4096)
        return false;
    ss.entries = reinterpret_cast<shadow_entry *>(p);
    t_shadow_release.armed = true; // registers its destructor for this thread
    return true;
}

// The hook a thread dispatches for, where a remover on another thread can read it (see
// record::active). Marks live in a static pool, so reading one of a thread that has exited
// reads a released mark, never freed memory. Each has a cache line of its own: threads write
// theirs twice per hooked call, and sharing a line would make every call wait for the others'.
struct alignas(64) thread_mark {
    std::atomic<record *> running{nullptr};
    std::atomic<bool> used{false};
};
constexpr size_t max_marks = 4096;
thread_mark g_marks[max_marks];
std::atomic<size_t> g_marks_high{0};
// Dispatches in flight on threads that found no free mark (past max_marks threads).
std::atomic<long> g_unmarked_running{0};

// Gives the thread's mark back when it exits.
struct mark_releaser {
    bool armed = false;
    ~mark_releaser() {
        if (thread_mark *m = t_shadow.mark) {
            t_shadow.mark = nullptr;
            m->running.store(nullptr, std::memory_order_relaxed);
            m->used.store(false, std::memory_order_release);
        }
    }
};
thread_local mark_releaser t_mark_releaser;

thread_mark *claim_mark() {
    for (size_t i = 0; i < max_marks; ++i) {
        bool expected = false;
        if (!g_marks[i].used.load(std::memory_order_relaxed) &&
            g_marks[i].used.compare_exchange_strong(expected, true)) {
            size_t high = g_marks_high.load();
            while (high < i + 1 && !g_marks_high.compare_exchange_weak(high, i + 1)) {
            }
            t_mark_releaser.armed = true;
            return &g_marks[i];
        }
    }
    return nullptr;
}

// Whether a thread is inside a handler of rec (or may be: one without a mark is).
bool handlers_running(const record *rec) {
    if (g_unmarked_running.load() != 0)
        return true;
    const size_t high = g_marks_high.load();
    for (size_t i = 0; i < high; ++i)
        if (g_marks[i].running.load() == rec)
            return true;
    return false;
}
std::atomic<uint64_t> g_missed_returns{0};

// Every hook ever installed; records are never freed (their stubs may still run).
std::mutex g_hooks_mutex;
std::vector<record *> &all_records() {
    static auto *records = new std::vector<record *>;
    return *records;
}

// Sets this thread's mark. The remover clears active, then runs a barrier on every thread
// (membarrier, or stopping them), then reads the marks: the compiler keeps the mark before
// the read of active, and the barrier orders the two on the CPU, so a thread either shows its
// mark to the remover or reads active cleared. No shared counter is written per call.
inline void mark_running(shadow_stack &ss, record *rec) {
    if (ss.mark == nullptr) [[unlikely]] {
        if (rec == nullptr) {
            g_unmarked_running.fetch_sub(1); // the end of a dispatch that found no mark
            return;
        }
        ss.mark = claim_mark();
        if (ss.mark == nullptr) {
            g_unmarked_running.fetch_add(1); // a full barrier before the read of active
            return;
        }
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    ss.mark->running.store(rec, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
}

// The end of an entry dispatch whose handler asked for the return hook or called
// return_early: what the stub is to do then. Out of line, so that the common path (a handler
// that asks for neither) keeps few registers across the handler's call.
__attribute__((no_sanitize("address"), noinline)) uint8_t
entry_finish(shadow_stack &ss, record *rec, pt_regs *frame, bool may_call, bool want_return) {
    uint8_t outcome = go_on;
    const bool early = ss.early;
    if (early) {
        outcome = return_now;
        frame->rax = ss.early_value;
    }
    if (want_return && rec->on_return) {
        if (ss.depth < shadow_capacity && (ss.entries != nullptr || map_shadow_entries(ss))) {
            auto *slot = reinterpret_cast<uintptr_t *>(frame->rsp);
            const bool call = may_call && !early;
            ss.entries[ss.depth++] = shadow_entry{frame->rsp, *slot, rec, call};
            if (call)
                outcome = call_and_hook;
            else
                *slot = rec->return_stub;
        } else {
            g_missed_returns.fetch_add(1, std::memory_order_relaxed);
        }
    }
    return outcome;
}

// Called by a hook's stub with the saved registers (frame) of a hooked call: what the stub is
// to do (entry_outcome). return_now: the stub restores the registers and returns to the caller
// with frame->rax (return_early) instead of running the function. call_and_hook (only when
// may_call, from an entry stub): the return hook is pending and the stub calls the function
// itself, so that its `ret` comes back to the stub as the CPU's return stack predicts; the
// return address stays where it is (the stub's call overwrites it). Otherwise (a trap probe, an
// early return) a pending return hook swaps the return address for the return stub's, as the
// kernel's uretprobes do.
__attribute__((no_sanitize("address"))) uint8_t entry_dispatch(record *rec, pt_regs *frame,
                                                               bool may_call) {
    shadow_stack &ss = t_shadow;
    if (ss.in_handler || ss.off)
        return go_on;
    mark_running(ss, rec);
    uint8_t outcome = go_on;
    if (rec->active.load(std::memory_order_relaxed)) {
        ss.early = false;
        if (rec->return_only.load(std::memory_order_relaxed)) [[unlikely]] {
            // No entry handler (a trap probe, a site inside a function, or the thread's first
            // return hook at a function's entry): just the return hook.
            outcome = entry_finish(ss, rec, frame, may_call, true);
            mark_running(ss, nullptr);
            return outcome;
        }
        ss.in_handler = true;
        ss.in_entry = true;
        // The saved registers themselves, read-only to the handler (no copy per call).
        const bool want_return = rec->on_entry(rec->user, frame);
        ss.in_entry = false;
        ss.in_handler = false;
        if (want_return || ss.early) [[unlikely]]
            outcome = entry_finish(ss, rec, frame, may_call, want_return);
    }
    mark_running(ss, nullptr);
    return outcome;
}

// What a function entry stub calls instead of entry_dispatch while the hook is return-only
// (set_return_only): no entry handler, so the stub has saved no vector state, and this code
// touches none (general-purpose registers only; it calls nothing). It pushes the return address
// on the shadow stack and has the stub call the function, or lets the call go on unhooked as
// entry_dispatch would; take_full where only the full path can go on (the thread's shadow stack
// is not mapped yet: mapping it registers a thread exit handler through the C library; or it is
// full, which the full path counts).
// No hook mark is set: no handler runs here, and a record is never freed, so a return hook
// pushed just as the hook is removed meets a cleared active flag in return_dispatch.
// t_shadow's offset from the thread pointer, the same in every thread (initial-exec), set
// before the first stub is made: return_only_dispatch reaches the block with one %fs-relative
// address and no call (clang reaches a thread_local of a file that has thread_locals with
// destructors through a wrapper whose first call on a thread registers them in the C library,
// code that may use vector registers). A thread's block exists before that registration; the
// full path does it (take_full while the shadow stack is not mapped).
uintptr_t g_shadow_offset = 0;

uintptr_t thread_pointer() {
    uintptr_t tp = 0;
    asm("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

// The calling thread's block, for code of the general-purpose registers only: thread_pointer()
// written out (a call cannot be inlined into code of another target).
__attribute__((target("general-regs-only"))) shadow_stack &plain_shadow() {
    uintptr_t tp = 0;
    asm("mov %%fs:0, %0" : "=r"(tp));
    return *reinterpret_cast<shadow_stack *>(tp + g_shadow_offset);
}

// The hook's active flag, its relaxed load as a builtin: std::atomic's member would be an
// out-of-line call in code of another target.
__attribute__((target("general-regs-only"))) bool plain_active(const record *rec) {
    static_assert(sizeof(rec->active) == 1 && std::atomic<bool>::is_always_lock_free);
    return __atomic_load_n(reinterpret_cast<const bool *>(&rec->active), __ATOMIC_RELAXED);
}

// Pushes the return address of the hooked call at frame for the stub's call of the function
// (call_and_hook); false, nothing pushed, while the thread's shadow stack is not mapped or is
// full (the full path maps it, or counts the missed return).
__attribute__((target("general-regs-only"))) bool push_called_return(shadow_stack &ss, record *rec,
                                                                     const pt_regs *frame) {
    if (ss.entries == nullptr || ss.depth >= shadow_capacity) [[unlikely]]
        return false;
    const auto *slot = reinterpret_cast<const uintptr_t *>(frame->rsp);
    ss.entries[ss.depth++] = shadow_entry{frame->rsp, *slot, rec, true};
    return true;
}

__attribute__((no_sanitize("address"), target("general-regs-only"))) uint8_t
return_only_dispatch(record *rec, const pt_regs *frame) {
    shadow_stack &ss = plain_shadow();
    if (ss.in_handler || ss.off || !plain_active(rec))
        return go_on;
    return push_called_return(ss, rec, frame) ? call_and_hook : take_full;
}

[[noreturn]] void shadow_stack_lost(uintptr_t rsp) {
    char msg[160];
    const int n = std::snprintf(msg, sizeof msg,
                                "bpftime: inline hook return stub reached with rsp=0x%lx and no "
                                "matching return address on this thread's shadow stack\n",
                                static_cast<unsigned long>(rsp));
    if (write(STDERR_FILENO, msg, static_cast<size_t>(n)) < 0) {
    }
    std::abort();
}

} // namespace

// The end of a return stub for a call the entry stub made: the original return address is back
// in its slot, just below rsp; returning to it pops the return stack entry the caller's call
// pushed, so the caller's return is predicted.
extern "C" void bpftime_hook_return_thunk();
asm(R"(
        .text
        .p2align 4
        .type bpftime_hook_return_thunk, @function
bpftime_hook_return_thunk:
        leaq -8(%rsp), %rsp
        ret
        .size bpftime_hook_return_thunk, . - bpftime_hook_return_thunk
)");

namespace {

// The return stubs' bookkeeping, for return_dispatch and plain_return_dispatch: takes the
// innermost shadow entry of the return at frame (entries above it were left by longjmp:
// stale) and leaves the original return address at [rsp - 8] and where the stub is to jump at
// [rsp - 16]: the return address itself when it was swapped, else the thunk that returns to it
// through the return stack. Its record, or null when the thread has no entry for it.
[[gnu::always_inline]] inline __attribute__((no_sanitize("address"), target("general-regs-only")))
record *
pop_return(shadow_stack &ss, const pt_regs *frame) {
    const uintptr_t slot = frame->rsp - 8;
    size_t k = ss.depth;
    while (k > 0 && ss.entries[k - 1].slot != slot)
        --k;
    if (k == 0)
        return nullptr;
    const shadow_entry e = ss.entries[k - 1];
    ss.depth = k - 1;
    *reinterpret_cast<uintptr_t *>(slot) = e.ret;
    *reinterpret_cast<uintptr_t *>(slot - 8) =
        e.called ? reinterpret_cast<uintptr_t>(&bpftime_hook_return_thunk) : e.ret;
    return e.rec;
}

// The return handler of rec for a hooked call's return, with the thread's mark set meanwhile.
void run_return_handler(record *rec, const pt_regs *frame) {
    shadow_stack &ss = t_shadow;
    mark_running(ss, rec);
    if (rec->active.load(std::memory_order_relaxed)) {
        ss.in_handler = true;
        rec->on_return(rec->user, frame); // its stub saved rip as the hooked address
        ss.in_handler = false;
    }
    mark_running(ss, nullptr);
}

// Called by the return stub: pop_return, then on_return.
__attribute__((no_sanitize("address"))) void return_dispatch(pt_regs *frame) {
    shadow_stack &ss = t_shadow;
    record *rec = pop_return(ss, frame);
    if (rec == nullptr)
        shadow_stack_lost(frame->rsp);
    if (!ss.in_handler)
        run_return_handler(rec, frame);
}

} // namespace

// The parts of the entry and return paths that run C++ (which may use vector registers), with
// the whole vector state kept, for the plain dispatchers below.
BPFTIME_KEEPING_VECTOR_STATE(bpftime_hook_entry_finish_keeping, entry_finish);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_hook_return_dispatch_keeping, return_dispatch);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_hook_return_handler_keeping, run_return_handler);
extern "C" uint8_t bpftime_hook_entry_finish_keeping(void *ss, void *rec, pt_regs *frame,
                                                     bool may_call, bool want_return);
extern "C" void bpftime_hook_return_dispatch_keeping(pt_regs *frame);
extern "C" void bpftime_hook_return_handler_keeping(void *rec, const pt_regs *frame);

namespace {

// The dispatchers of the plain handlers (set_plain_entry, set_plain_return), called by stubs
// that saved no vector state: general-purpose registers only, std::atomic's members as
// builtins (they cannot be inlined into code of another target), the thread's block reached
// through g_shadow_offset (see return_only_dispatch). What needs more (the thread's first hooked
// call, which claims its mark; a return hook to arrange; a handler gone) goes through the full
// path or the C++ above with the vector state kept.
// mark_running for a thread whose mark is claimed.
__attribute__((target("general-regs-only"))) void plain_mark(shadow_stack &ss, record *rec) {
    static_assert(sizeof(thread_mark::running) == sizeof(record *));
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(reinterpret_cast<record **>(&ss.mark->running), rec, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

// entry_dispatch for the plain entry handler.
__attribute__((no_sanitize("address"), target("general-regs-only"))) uint8_t
plain_entry_dispatch(record *rec, pt_regs *frame) {
    shadow_stack &ss = plain_shadow();
    if (ss.in_handler || ss.off)
        return go_on;
    const hook_entry_fn fn = __atomic_load_n(
        reinterpret_cast<const hook_entry_fn *>(&rec->on_entry_plain), __ATOMIC_RELAXED);
    if (ss.mark == nullptr || fn == nullptr) [[unlikely]]
        return take_full;
    plain_mark(ss, rec);
    uint8_t outcome = go_on;
    if (plain_active(rec)) {
        ss.early = false;
        ss.in_handler = true;
        ss.in_entry = true;
        const bool want_return = fn(rec->user, frame);
        ss.in_entry = false;
        ss.in_handler = false;
        if (ss.early) [[unlikely]] {
            outcome = bpftime_hook_entry_finish_keeping(&ss, rec, frame, true, want_return);
        } else if (want_return) {
            // entry_finish's common case: the return address on the thread's shadow stack,
            // the stub calls the function.
            if (rec->on_return != nullptr && push_called_return(ss, rec, frame))
                outcome = call_and_hook;
            else
                outcome = bpftime_hook_entry_finish_keeping(&ss, rec, frame, true, true);
        }
    }
    plain_mark(ss, nullptr);
    return outcome;
}

// What a function entry stub calls while its hook's light mode is set.
__attribute__((no_sanitize("address"), target("general-regs-only"))) uint8_t
light_dispatch(record *rec, pt_regs *frame) {
    static_assert(sizeof(rec->light) == 1);
    const uint8_t mode =
        __atomic_load_n(reinterpret_cast<const uint8_t *>(&rec->light), __ATOMIC_RELAXED);
    if (mode == light_return_only)
        return return_only_dispatch(rec, frame);
    if (mode == light_plain_entry)
        return plain_entry_dispatch(rec, frame);
    return take_full; // changed since the stub read it
}

// return_dispatch for the plain return handler.
__attribute__((no_sanitize("address"), target("general-regs-only"))) void
plain_return_dispatch(pt_regs *frame) {
    shadow_stack &ss = plain_shadow();
    record *rec = pop_return(ss, frame);
    if (rec == nullptr) [[unlikely]] {
        bpftime_hook_return_dispatch_keeping(frame); // reports the lost return address
        return;
    }
    if (ss.in_handler)
        return;
    const hook_return_fn fn = __atomic_load_n(
        reinterpret_cast<const hook_return_fn *>(&rec->on_return_plain), __ATOMIC_RELAXED);
    if (ss.mark == nullptr || fn == nullptr) [[unlikely]] {
        bpftime_hook_return_handler_keeping(rec, frame);
        return;
    }
    plain_mark(ss, rec);
    if (plain_active(rec)) {
        ss.in_handler = true;
        fn(rec->user, frame);
        ss.in_handler = false;
    }
    plain_mark(ss, nullptr);
}

// --- Machine code of the stubs ---------------------------------------------------------------

using cpu::vector_unit;
using cpu::vectors;

// How much of the vector state a stub saves around its handler.
enum class vector_save {
    // At a function's entry or return, where the ABI makes only some state live: the argument
    // and return registers at full width (zmm0-7, or ymm/xmm), the low 128 bits of the others
    // (xmm8-15, ymm8-15 whole with AVX) for callers that keep values there across calls to a
    // function they know (GCC's -fipa-ra). The x87 stack is empty at a call, the control words
    // are callee-saved, so the handler keeps them. A return stub whose x87 stack is not empty
    // (a long double result) takes the full save instead.
    abi,
    // Anywhere: every component of mask with XSAVEC (or XSAVE; FXSAVE without XSAVE) into an
    // area on the stack below the frame, restored with XRSTOR.
    full,
    // None: the code called touches no vector register (return_only_dispatch).
    none,
};

// The stub's frame: a pt_regs, 8 bytes of padding, then (abi saves) the vector registers. It
// sits below the red zone; a full save's area lies below it, 64-byte aligned.
constexpr int32_t vector_offset = 176;
constexpr int32_t red_zone = 128;

// Bytes of the abi save's vector area.
int32_t abi_vector_bytes() {
    const vector_unit &v = vectors();
    if (v.avx512)
        return 8 * 64 + 8 * 32; // zmm0-7, ymm8-15
    if (v.avx)
        return 16 * 32; // ymm0-15
    return 16 * 16;     // xmm0-15
}

// The abi save's area is 64-byte aligned inside the frame (rsp is 8 bytes off 16 at a
// function's entry): a vector store that crosses a cache line costs two.
int32_t frame_size(vector_save save) {
    return vector_offset + (save == vector_save::abi ? 64 + abi_vector_bytes() : 0);
}

// This process's code and stack segment selectors, as pt_regs reports them.
struct segment_selectors {
    uint16_t cs = 0, ss = 0;
};
const segment_selectors &selectors() {
    static const segment_selectors s = [] {
        segment_selectors v;
        asm volatile("mov %%cs, %0" : "=r"(v.cs));
        asm volatile("mov %%ss, %0" : "=r"(v.ss));
        return v;
    }();
    return s;
}

enum reg : uint8_t { rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15 };

int32_t slot_of(reg r) {
    switch (r) {
    case r15:
        return 0;
    case r14:
        return 8;
    case r13:
        return 16;
    case r12:
        return 24;
    case rbp:
        return 32;
    case rbx:
        return 40;
    case r11:
        return 48;
    case r10:
        return 56;
    case r9:
        return 64;
    case r8:
        return 72;
    case rax:
        return 80;
    case rcx:
        return 88;
    case rdx:
        return 96;
    case rsi:
        return 104;
    case rdi:
        return 112;
    case rsp:
        return 152;
    }
    return 0;
}
constexpr int32_t orig_rax_slot = 120, rip_slot = 128, cs_slot = 136, eflags_slot = 144,
                  ss_slot = 160;
static_assert(sizeof(pt_regs) == 168);

constexpr reg saved_regs[] = {rax, rcx, rdx, rbx, rbp, rsi, rdi, r8,
                              r9,  r10, r11, r12, r13, r14, r15};

struct emitter {
    std::vector<uint8_t> code;
    void bytes(std::initializer_list<uint8_t> b) { code.insert(code.end(), b); }
    void imm32(int32_t v) {
        for (int i = 0; i < 4; ++i)
            code.push_back(static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * i)));
    }
    void imm64(uint64_t v) {
        for (int i = 0; i < 8; ++i)
            code.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    // lea rsp, [rsp + disp32]
    void lea_rsp(int32_t disp) {
        bytes({0x48, 0x8D, 0xA4, 0x24});
        imm32(disp);
    }
    // mov [rsp + disp32], r  /  mov r, [rsp + disp32]
    void store(reg r, int32_t disp) { rsp_op(0x89, r, disp); }
    void load(reg r, int32_t disp) { rsp_op(0x8B, r, disp); }
    void rsp_op(uint8_t opcode, reg r, int32_t disp) {
        bytes({static_cast<uint8_t>(0x48 | (r >= 8 ? 4 : 0)), opcode,
               static_cast<uint8_t>(0x84 | ((r & 7) << 3)), 0x24});
        imm32(disp);
    }
    // The ModRM and disp32 of [rax + disp32] with register n in the reg field.
    void rax_operand(int n, int32_t disp) {
        code.push_back(static_cast<uint8_t>(0x80 | ((n & 7) << 3)));
        imm32(disp);
    }
    // movdqu [rax + disp32], xmmN  /  movdqu xmmN, [rax + disp32] (opcode 0x7F / 0x6F)
    void xmm_op(uint8_t opcode, int n, int32_t disp) {
        code.push_back(0xF3);
        if (n >= 8)
            code.push_back(0x44);
        bytes({0x0F, opcode});
        rax_operand(n, disp);
    }
    // vmovdqu [rax + disp32], ymmN  /  vmovdqu ymmN, [rax + disp32]: VEX.256.F3.0F 7F / 6F
    void ymm_op(uint8_t opcode, int n, int32_t disp) {
        bytes({0xC5, static_cast<uint8_t>(n >= 8 ? 0x7E : 0xFE), opcode});
        rax_operand(n, disp);
    }
    // vmovdqu64 [rax + disp32], zmmN  /  vmovdqu64 zmmN, [rax + disp32] for N < 8:
    // EVEX.512.F3.0F.W1 7F / 6F
    void zmm_op(uint8_t opcode, int n, int32_t disp) {
        bytes({0x62, 0xF1, 0xFE, 0x48, opcode});
        rax_operand(n, disp);
    }
    // mov r, imm64
    void movabs(reg r, uint64_t v) {
        bytes(
            {static_cast<uint8_t>(0x48 | (r >= 8 ? 1 : 0)), static_cast<uint8_t>(0xB8 + (r & 7))});
        imm64(v);
    }

    // The vector registers of an abi save, stored (0x7F) or loaded (0x6F), at the first 64-byte
    // boundary past vector_offset in the frame at rsp. Uses rax.
    void abi_vectors(uint8_t opcode) {
        const vector_unit &v = vectors();
        bytes({0x48, 0x8D, 0x84, 0x24}); // lea rax, [rsp + vector_offset + 63]
        imm32(vector_offset + 63);
        bytes({0x48, 0x83, 0xE0, 0xC0}); // and rax, -64
        int32_t at = 0;
        for (int n = 0; n < 16; ++n) {
            if (v.avx512 && n < 8) {
                zmm_op(opcode, n, at);
                at += 64;
            } else if (v.avx) {
                ymm_op(opcode, n, at);
                at += 32;
            } else {
                xmm_op(opcode, n, at);
                at += 16;
            }
        }
    }

    // Saves the general registers into a frame of the given size below the red zone: a pt_regs
    // (the flags in eflags). Nothing is written above rsp - red_zone - size. Without keep_flags
    // (a function's entry, where the calling convention keeps no flag across the call and DF
    // is clear), eflags is built from lahf and seto instead of pushfq: the arithmetic flags,
    // IF and the always-set bit 1; the stub then need not restore them. With read_df too (a
    // return stub, which keeps the flags a function returns without paying for pushfq), DF
    // is read from the way a lodsb moves rsi.
    void save_gprs(uintptr_t address, int32_t size, bool keep_flags, bool read_df = false) {
        const int32_t below = red_zone + size;
        lea_rsp(-below);
        for (reg r : saved_regs)
            store(r, slot_of(r));
        if (keep_flags) {
            bytes({0x9C, 0x58}); // pushfq; pop rax
        } else {
            bytes({0x9F});                         // lahf: SF ZF AF PF CF and bit 1 into ah
            bytes({0x0F, 0x90, 0xC1});             // seto cl
            bytes({0x0F, 0xB6, 0xC4});             // movzx eax, ah
            bytes({0x0F, 0xB6, 0xC9});             // movzx ecx, cl
            bytes({0xC1, 0xE1, 0x0B});             // shl ecx, 11 (OF)
            bytes({0x09, 0xC8});                   // or eax, ecx
            bytes({0x0D, 0x00, 0x02, 0x00, 0x00}); // or eax, 0x200 (IF)
            if (read_df) {
                bytes({0x89, 0xC1});             // mov ecx, eax (lodsb writes al)
                bytes({0x48, 0x89, 0xE6});       // mov rsi, rsp
                bytes({0xAC});                   // lodsb: rsi + 1, or - 1 with DF
                bytes({0x48, 0x29, 0xE6});       // sub rsi, rsp
                bytes({0x48, 0xC1, 0xEE, 0x3F}); // shr rsi, 63 (1 with DF)
                bytes({0xC1, 0xE6, 0x0A});       // shl esi, 10 (DF)
                bytes({0x09, 0xF1});             // or ecx, esi
                bytes({0x89, 0xC8});             // mov eax, ecx
            }
        }
        store(rax, eflags_slot);
        bytes({0x48, 0x8D, 0x84, 0x24}); // lea rax, [rsp + below]: rsp as it was
        imm32(below);
        store(rax, slot_of(rsp));
        movabs(rax, address);
        store(rax, rip_slot);
        bytes({0x48, 0xC7, 0x84, 0x24}); // mov qword [rsp + orig_rax], -1
        imm32(orig_rax_slot);
        imm32(-1);
        // The segment selectors of 64-bit user code never change: stored as constants, since
        // reading a segment register costs more than the store.
        for (auto [slot, value] : {std::pair{cs_slot, selectors().cs}, {ss_slot, selectors().ss}}) {
            bytes({0x48, 0xC7, 0x84, 0x24}); // mov qword [rsp + slot], imm32
            imm32(slot);
            imm32(static_cast<int32_t>(value));
        }
    }

    // edx:eax = the components of a full save
    void full_mask() {
        const uint64_t m = vectors().mask;
        code.push_back(0xB8); // mov eax, imm32
        imm32(static_cast<int32_t>(m & 0xFFFFFFFF));
        code.push_back(0xBA); // mov edx, imm32
        imm32(static_cast<int32_t>(m >> 32));
    }

    // Saves the vector state (after save_gprs); rbx then holds the frame, rsp is 16-byte
    // aligned for the handler's call and the direction flag is clear.
    void save_vectors(vector_save save) {
        if (save == vector_save::abi)
            abi_vectors(0x7F);
        bytes({0x48, 0x89, 0xE3}); // mov rbx, rsp
        if (save == vector_save::full) {
            const vector_unit &v = vectors();
            bytes({0x48, 0x81, 0xEC}); // sub rsp, imm32
            imm32(static_cast<int32_t>(v.area));
            bytes({0x48, 0x83, 0xE4, 0xC0}); // and rsp, -64
            if (v.xsave) {
                // XRSTOR refuses a header whose bytes 8-63 are not zero; XSAVE and XSAVEC
                // write only the fields they use.
                for (int32_t at = 512 + 8; at < 512 + 64; at += 8) {
                    bytes({0x48, 0xC7, 0x84, 0x24}); // mov qword [rsp + disp32], 0
                    imm32(at);
                    imm32(0);
                }
                full_mask();
                if (v.xsavec)
                    bytes({0x48, 0x0F, 0xC7, 0x24, 0x24}); // xsavec64 [rsp]
                else
                    bytes({0x48, 0x0F, 0xAE, 0x24, 0x24}); // xsave64 [rsp]
            } else {
                bytes({0x48, 0x0F, 0xAE, 0x04, 0x24}); // fxsave64 [rsp]
            }
        } else {
            bytes({0x48, 0x83, 0xE4, 0xF0}); // and rsp, -16
        }
        code.push_back(0xFC); // cld
    }

    // call fn(rdi = arg or the frame, rsi = the frame or nothing)
    void call(uintptr_t fn) {
        movabs(rax, fn);
        bytes({0xFF, 0xD0}); // call rax
    }
    // Restores the flags from the frame without popfq, which is microcoded and costs more
    // than these few instructions on every probe: DF by std when it was set (the stub clears it for
    // the handler), OF by an add that overflows exactly when it was set, then SF, ZF, AF, PF and CF
    // by sahf. The handler leaves the other flags (TF, AC) as they were. Uses rax.
    void restore_flags() {
        const int32_t high = eflags_slot + 1; // TF IF DF OF in bits 0-3
        bytes({0xF6, 0x84, 0x24});            // test byte [rsp + high], 0x04 (DF)
        imm32(high);
        bytes({0x04, 0x74, 0x01, 0xFD}); // jz +1; std
        bytes({0x8A, 0x84, 0x24});       // mov al, [rsp + high]
        imm32(high);
        bytes({0xC0, 0xE0, 0x04, 0x24, 0x80, 0x00, 0xC0}); // shl al, 4; and al, 0x80; add al, al
        bytes({0x8A, 0xA4, 0x24});                         // mov ah, [rsp + eflags]
        imm32(eflags_slot);
        bytes({0x9E}); // sahf
    }
    // Restores every register (rsp as at the start) after save_gprs(size, keep_flags) and
    // save_vectors; the flags only with keep_flags.
    void restore_all(vector_save save, int32_t size, bool keep_flags) {
        if (save == vector_save::full) {
            if (vectors().xsave) {
                full_mask();
                bytes({0x48, 0x0F, 0xAE, 0x2C, 0x24}); // xrstor64 [rsp]
            } else {
                bytes({0x48, 0x0F, 0xAE, 0x0C, 0x24}); // fxrstor64 [rsp]
            }
        }
        bytes({0x48, 0x89, 0xDC}); // mov rsp, rbx
        if (save == vector_save::abi)
            abi_vectors(0x6F);
        if (keep_flags)
            restore_flags();
        // The handler is called as C code is: it keeps rbp and r12-r15 (rbx held the frame).
        for (reg r : saved_regs)
            if (r != rbp && r < r12)
                load(r, slot_of(r));
        lea_rsp(red_zone + size);
    }
    // jnz rel32 to a label placed later (patched by land)
    size_t jnz_forward() {
        bytes({0x0F, 0x85});
        imm32(0);
        return code.size();
    }
    // jz rel32 to a label placed later (patched by land)
    size_t jz_forward() {
        bytes({0x0F, 0x84});
        imm32(0);
        return code.size();
    }
    void land(size_t from) {
        const auto rel = static_cast<int32_t>(code.size() - from);
        std::memcpy(&code[from - 4], &rel, 4);
    }
};

// An entry stub's code, with where the addresses known only once the page is laid out go.
struct entry_code {
    std::vector<uint8_t> code;
    std::vector<size_t> call_trampoline; // offsets of the rel32 of each `call trampoline`
    std::vector<size_t> jump_return;     // ... of each `jmp return_stub`
    std::vector<size_t> jump_trampoline; // ... of each `jmp trampoline`
};

// Writes the rel32 at offset at of code placed at base so that it reaches target.
void set_rel32(std::vector<uint8_t> &code, size_t at, uintptr_t base, uintptr_t target) {
    const auto rel =
        static_cast<int32_t>(static_cast<int64_t>(target) - static_cast<int64_t>(base + at + 4));
    std::memcpy(&code[at], &rel, 4);
}

// The entry stub: registers saved, entry_dispatch(rec, frame, true), registers restored, then
// one of three endings (each restoring the registers itself, since the outcome is in rax):
// - call_and_hook: rsp moves past the return address (kept on the shadow stack) and the stub
//   calls the trampoline, so the function sees its arguments on the stack where they were and
//   returns into the stub, which goes on in the return stub;
// - return_now: a `ret` returns to the caller (at entry rsp points at the return address and
//   the callee-saved registers are the caller's), with rax the value asked for;
// - go_on: the trampoline, which follows the stub directly.
//
// At a function's entry (no flags kept) the stub first tests the hook's light mode: while it is
// set (return-only, or a plain entry handler), it saves no vector state and calls
// light_dispatch, which touches none, then ends as above, or goes on in the full path
// (take_full).
entry_code entry_stub(record *rec, vector_save save, bool keep_flags) {
    emitter e;
    entry_code out;
    const int32_t size = frame_size(save);
    // Restores the registers, steps past the return address and calls the trampoline, whose
    // return goes on in the return stub.
    auto call_and_hook_ending = [&](vector_save saved) {
        e.restore_all(saved, size, keep_flags);
        e.bytes({0x48, 0x8D, 0x64, 0x24, 0x08}); // lea rsp, [rsp + 8]
        e.code.push_back(0xE8);                  // call trampoline
        out.call_trampoline.push_back(e.code.size());
        e.imm32(0);
        e.code.push_back(0xE9); // jmp return_stub
        out.jump_return.push_back(e.code.size());
        e.imm32(0);
    };
    e.save_gprs(rec->address, size, keep_flags);
    size_t to_full = 0;
    const bool light = !keep_flags;
    if (light) {
        e.movabs(rax, reinterpret_cast<uintptr_t>(&rec->light));
        e.bytes({0x80, 0x38, 0x00}); // cmp byte [rax], 0
        to_full = e.jz_forward();
        e.save_vectors(vector_save::none);
        e.movabs(rdi, reinterpret_cast<uintptr_t>(rec));
        e.bytes({0x48, 0x89, 0xDE}); // mov rsi, rbx
        e.call(reinterpret_cast<uintptr_t>(&light_dispatch));
        e.bytes({0x3C, take_full}); // cmp al, take_full
        const size_t to_back = e.jz_forward();
        e.bytes({0x84, 0xC0}); // test al, al
        const size_t to_light_go_on = e.jz_forward();
        e.bytes({0x3C, return_now}); // cmp al, return_now
        const size_t to_light_return = e.jz_forward();
        call_and_hook_ending(vector_save::none);
        e.land(to_light_return);
        e.restore_all(vector_save::none, size, keep_flags);
        e.code.push_back(0xC3); // ret
        e.land(to_light_go_on);
        e.restore_all(vector_save::none, size, keep_flags);
        e.code.push_back(0xE9); // jmp trampoline
        out.jump_trampoline.push_back(e.code.size());
        e.imm32(0);
        e.land(to_back);
        e.bytes({0x48, 0x89, 0xDC}); // mov rsp, rbx: back to the frame for the full path
        e.land(to_full);
    }
    e.save_vectors(save);
    e.movabs(rdi, reinterpret_cast<uintptr_t>(rec));
    e.bytes({0x48, 0x89, 0xDE});             // mov rsi, rbx
    e.bytes({0xBA, 0x01, 0x00, 0x00, 0x00}); // mov edx, 1 (may_call)
    e.call(reinterpret_cast<uintptr_t>(&entry_dispatch));
    e.bytes({0x84, 0xC0}); // test al, al
    const size_t to_go_on = e.jz_forward();
    e.bytes({0x3C, return_now}); // cmp al, return_now
    const size_t to_return = e.jz_forward();
    call_and_hook_ending(save);
    e.land(to_return);
    e.restore_all(save, size, keep_flags);
    e.code.push_back(0xC3); // ret
    e.land(to_go_on);
    e.restore_all(save, size, keep_flags);
    out.code = std::move(e.code);
    return out;
}

// The return stub: registers saved, return_dispatch(frame), registers restored, then a jump to
// where return_dispatch left at [rsp - 16]: the original return address, or for a call the
// entry stub made, a thunk returning to it (return_dispatch left it at [rsp - 8], in the red
// zone, which signal frames skip). A function returns its results in rax, rdx, xmm0-1
// (ymm0/zmm0 at full width) or st0-1: an abi save, unless the x87 stack holds a result (its
// top is not 0), which takes a full save. The flags are kept: code written by hand may return
// a result in them. They are read with lahf, seto and a lodsb (for DF) rather than pushfq
// (microcoded, the slowest step of a return stub); the stub changes neither TF nor AC.
std::vector<uint8_t> return_stub(record *rec) {
    emitter e;
    // Both paths use the abi save's frame (a full save's area lies below it).
    const int32_t size = frame_size(vector_save::abi);
    auto path = [&](vector_save save) {
        e.save_vectors(save);
        e.bytes({0x48, 0x89, 0xDF}); // mov rdi, rbx
        e.call(reinterpret_cast<uintptr_t>(&return_dispatch));
        e.restore_all(save, size, true);
        e.bytes({0xFF, 0x64, 0x24, 0xF0}); // jmp [rsp - 16]
    };
    e.save_gprs(rec->address, size, false, true);
    // A plain return handler: no vector state saved (the x87 stack may hold a result: nothing
    // on this path touches it).
    e.movabs(rax, reinterpret_cast<uintptr_t>(&rec->on_return_plain));
    e.bytes({0x48, 0x83, 0x38, 0x00}); // cmp qword [rax], 0
    const size_t to_saving = e.jz_forward();
    e.save_vectors(vector_save::none);
    e.bytes({0x48, 0x89, 0xDF}); // mov rdi, rbx
    e.call(reinterpret_cast<uintptr_t>(&plain_return_dispatch));
    e.restore_all(vector_save::none, size, true);
    e.bytes({0xFF, 0x64, 0x24, 0xF0}); // jmp [rsp - 16]
    e.land(to_saving);
    e.bytes({0xDF, 0xE0, 0xF6, 0xC4, 0x38}); // fnstsw ax; test ah, 0x38 (TOP)
    const size_t to_full = e.jnz_forward();
    path(vector_save::abi);
    e.land(to_full);
    path(vector_save::full);
    return e.code;
}

std::string hex(uintptr_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(v));
    return buf;
}

size_t page_size() {
    return static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// A trap probe's int3 was hit: the registers come from the signal's context, the handlers run
// as from the entry stub, then the thread goes on in the displaced instruction's out-of-line
// copy (which jumps back behind it), or returns to its caller (return_early). The trap is
// synchronous, at a call of the probed code: the handlers may do what they do in the stub.
__attribute__((no_sanitize("address"))) void trap_dispatch(void *user, ucontext_t *context) {
    auto *rec = static_cast<record *>(user);
    greg_t *g = context->uc_mcontext.gregs;
    auto u = [](greg_t v) { return static_cast<uint64_t>(v); };
    pt_regs regs{};
    regs.r15 = u(g[REG_R15]);
    regs.r14 = u(g[REG_R14]);
    regs.r13 = u(g[REG_R13]);
    regs.r12 = u(g[REG_R12]);
    regs.rbp = u(g[REG_RBP]);
    regs.rbx = u(g[REG_RBX]);
    regs.r11 = u(g[REG_R11]);
    regs.r10 = u(g[REG_R10]);
    regs.r9 = u(g[REG_R9]);
    regs.r8 = u(g[REG_R8]);
    regs.rax = u(g[REG_RAX]);
    regs.rcx = u(g[REG_RCX]);
    regs.rdx = u(g[REG_RDX]);
    regs.rsi = u(g[REG_RSI]);
    regs.rdi = u(g[REG_RDI]);
    regs.orig_rax = ~uint64_t{0};
    regs.rip = rec->address;
    regs.cs = u(g[REG_CSGSFS]) & 0xFFFF;
    regs.eflags = u(g[REG_EFL]);
    regs.rsp = u(g[REG_RSP]);
    uint64_t ss = 0;
    asm volatile("mov %%ss, %0" : "=r"(ss));
    regs.ss = ss;
    if (entry_dispatch(rec, &regs, false) == return_now) {
        // As the stub's early `ret`: rax the value, rip the return address (the return stub's
        // when a return handler is pending), rsp past it.
        g[REG_RAX] = static_cast<greg_t>(regs.rax);
        g[REG_RIP] = static_cast<greg_t>(*reinterpret_cast<const uintptr_t *>(regs.rsp));
        g[REG_RSP] = static_cast<greg_t>(regs.rsp + 8);
        return;
    }
    g[REG_RIP] = static_cast<greg_t>(rec->trampoline);
}

// The record of a new hook, installed.
result<record *> install_hook(uintptr_t address, size_t function_size, hook_entry_fn on_entry,
                              hook_return_fn on_return, void *user, bool trap, hook_site site,
                              size_t padding_after = 0) {
    if (!on_entry)
        return make_error(EINVAL, "an inline hook needs an entry handler");
    std::lock_guard lock(g_hooks_mutex);
    g_shadow_offset = reinterpret_cast<uintptr_t>(&t_shadow) - thread_pointer();
    for (const record *r : all_records())
        if (r->patched && address >= r->address && address < r->address + r->reloc.patched)
            return make_error(EEXIST, "the address " + hex(address) +
                                          " is already hooked (hook at " + hex(r->address) + ")");
    auto maps = hook_detail::read_maps();
    if (!maps)
        return std::move(maps).err();
    const auto *m = hook_detail::find_mapping(*maps, address);
    if (!m || !m->exec)
        return make_error(EFAULT, "refusing to hook " + hex(address) + ": " +
                                      (m ? "the memory is not executable" : "it is not mapped"));
    if (!m->read)
        return make_error(EFAULT,
                          "refusing to hook " + hex(address) + ": the code is not readable");
    // Bytes that can be decoded: this mapping and following readable, adjacent ones.
    uintptr_t readable_end = m->end;
    for (const auto &next : *maps)
        if (next.start == readable_end && next.read)
            readable_end = next.end;
    const size_t available = std::min<size_t>(readable_end - address, 64);

    const size_t page = page_size();
    auto mem = hook_detail::map_near(address, page);
    if (!mem)
        return std::move(mem).err();

    auto *rec = new record;
    rec->address = address;
    rec->on_entry = on_entry;
    rec->on_return = on_return;
    rec->user = user;
    rec->page = *mem;
    rec->trap = trap;
    auto fail = [&](error err) -> result<record *> {
        munmap(reinterpret_cast<void *>(rec->page), page);
        delete rec;
        return err;
    };

    // A trap probe needs no entry stub: its trampoline (the displaced instruction's copy)
    // starts the page.
    const bool entry = site == hook_site::function_entry;
    entry_code stub_code;
    if (!trap)
        stub_code = entry_stub(rec, entry ? vector_save::abi : vector_save::full, !entry);
    std::vector<uint8_t> &stub = stub_code.code;
    rec->trampoline = rec->page + stub.size();
    auto reloc = hook_detail::relocate(address, available, function_size, rec->trampoline,
                                       trap ? 0 : 5, trap ? 0 : padding_after);
    if (!reloc)
        return fail(std::move(reloc).err());
    rec->reloc = std::move(*reloc);
    const size_t patched = rec->reloc.patched;
    for (const record *r : all_records())
        if (r->patched && r->address < address + patched && address < r->address + r->reloc.patched)
            return fail(make_error(EEXIST, "the " + std::to_string(patched) + " bytes at " +
                                               hex(address) + " overlap the hook at " +
                                               hex(r->address)));
    if (!trap && function_size != 0) {
        const uintptr_t from = hook_detail::find_branch_into(address, function_size, patched);
        if (from != 0)
            return fail(make_error(EINVAL, "refusing to hook " + hex(address) +
                                               " with a jump: the branch at " + hex(from) +
                                               " goes into the " + std::to_string(patched) +
                                               " bytes the jump would replace"));
    }
    rec->return_stub = (rec->trampoline + rec->reloc.code.size() + 15) & ~uintptr_t{15};
    const auto ret_stub = return_stub(rec);
    if (rec->return_stub - rec->page + ret_stub.size() > page)
        return fail(make_error(E2BIG, "the stubs do not fit in a page"));

    auto *base = reinterpret_cast<uint8_t *>(rec->page);
    // A trap probe has no entry stub and may have no relocated code: copy only what there is.
    if (!stub.empty()) {
        for (size_t at : stub_code.call_trampoline)
            set_rel32(stub, at, rec->page, rec->trampoline);
        for (size_t at : stub_code.jump_trampoline)
            set_rel32(stub, at, rec->page, rec->trampoline);
        for (size_t at : stub_code.jump_return)
            set_rel32(stub, at, rec->page, rec->return_stub);
        std::memcpy(base, stub.data(), stub.size());
    }
    if (!rec->reloc.code.empty())
        std::memcpy(base + stub.size(), rec->reloc.code.data(), rec->reloc.code.size());
    if (!ret_stub.empty())
        std::memcpy(reinterpret_cast<uint8_t *>(rec->return_stub), ret_stub.data(),
                    ret_stub.size());
    if (mprotect(base, page, PROT_READ | PROT_EXEC) != 0)
        return fail(make_error(errno, std::string("cannot make the stub executable: ") +
                                          std::strerror(errno)));

    const auto *code = reinterpret_cast<const uint8_t *>(address);
    rec->original.assign(code, code + patched);
    rec->active.store(true);
    result<void> done;
    if (trap) {
        done = hook_detail::add_trap_site(address, rec->original[0], trap_dispatch, rec);
    } else {
        std::vector<uint8_t> patch(patched, 0xCC); // int3 behind the jump: never executed
        patch[0] = 0xE9;
        const int64_t rel = static_cast<int64_t>(rec->page) - static_cast<int64_t>(address + 5);
        const auto rel32 = static_cast<int32_t>(rel);
        std::memcpy(&patch[1], &rel32, 4);
        hook_detail::live_patch lp;
        lp.address = address;
        lp.bytes = patch.data();
        lp.expect = rec->original.data();
        lp.n = patched;
        lp.redirect = rec->page;                     // what the jump does: the entry stub
        lp.wait_inside = rec->reloc.from.size() > 2; // more than one instruction replaced
        done = hook_detail::patch_live(lp, [&](uintptr_t rip) {
            // A stopped thread between the replaced instructions continues in their copy.
            const auto &r = rec->reloc;
            for (size_t i = 1; i + 1 < r.from.size(); ++i)
                if (rip == address + r.from[i])
                    return rec->trampoline + r.to[i];
            return rip;
        });
    }
    if (!done) {
        rec->active.store(false);
        return fail(make_error(done.err().code, "cannot patch the code at " + hex(address) + ": " +
                                                    done.err().message));
    }
    rec->patched = true;
    all_records().push_back(rec);
    return rec;
}

} // namespace

hook_site_decision decide_hook_site(const uint8_t *code, size_t available, size_t function_size,
                                    size_t padding_after) {
    // As install_hook decides: the trampoline's place only matters for reach, so the bytes'
    // own address stands in for it.
    const auto address = reinterpret_cast<uintptr_t>(code);
    hook_site_decision out;
    auto jump = hook_detail::relocate(address, available, function_size, address, 5, padding_after);
    if (jump) {
        const uintptr_t from =
            function_size != 0
                ? hook_detail::find_branch_into(address, function_size, jump->patched)
                : 0;
        if (from == 0) {
            out.kind =
                jump->padding_used != 0 ? hook_site_kind::padding_jump : hook_site_kind::jump;
            return out;
        }
        out.why = "a branch at +" + std::to_string(from - address) + " goes into the " +
                  std::to_string(jump->patched) + " bytes a jump would replace";
    } else {
        out.why = jump.err().message;
    }
    auto trap = hook_detail::relocate(address, available, function_size, address, 0);
    if (trap) {
        out.kind = hook_site_kind::trap;
        return out;
    }
    out.kind = hook_site_kind::refused;
    out.why += "; and as a trap probe: " + trap.err().message;
    return out;
}

result<std::unique_ptr<inline_hook>> inline_hook::install(uintptr_t address, size_t function_size,
                                                          hook_entry_fn on_entry,
                                                          hook_return_fn on_return, void *user,
                                                          hook_site site, size_t padding_after) {
    auto rec =
        install_hook(address, function_size, on_entry, on_return, user, false, site, padding_after);
    if (!rec)
        return std::move(rec).err();
    return std::unique_ptr<inline_hook>(new inline_hook(*rec));
}

result<std::unique_ptr<inline_hook>>
inline_hook::install_trap(uintptr_t address, size_t function_size, hook_entry_fn on_entry,
                          hook_return_fn on_return, void *user) {
    // The kernel saves and restores the whole register state around the signal.
    auto rec =
        install_hook(address, function_size, on_entry, on_return, user, true, hook_site::any);
    if (!rec)
        return std::move(rec).err();
    return std::unique_ptr<inline_hook>(new inline_hook(*rec));
}

inline_hook::~inline_hook() {
    std::lock_guard lock(g_hooks_mutex);
    record *rec = rec_;
    // Cleared before the barrier below: a thread that sets its mark after it reads it cleared.
    rec->active.store(false);
    const uintptr_t address = rec->address;
    result<void> done;
    if (rec->trap) {
        done = hook_detail::remove_trap_site(address, rec->original[0]);
    } else {
        hook_detail::live_patch lp;
        lp.address = address;
        lp.bytes = rec->original.data();
        lp.n = rec->original.size();
        // What the original instructions do: their copy, which jumps back behind them.
        lp.redirect = rec->trampoline;
        done = hook_detail::patch_live(lp, [&](uintptr_t rip) {
            // A stopped thread at the start of a relocated instruction goes back to the
            // original.
            const auto &r = rec->reloc;
            for (size_t i = 0; i < r.from.size(); ++i)
                if (rip == rec->trampoline + r.to[i])
                    return address + r.from[i];
            return rip;
        });
    }
    if (!done) {
        std::fprintf(stderr,
                     "bpftime: cannot remove the inline hook at %s (%s); its handlers are "
                     "disabled and the %s stays\n",
                     hex(address).c_str(), done.err().message.c_str(), rec->trap ? "int3" : "jump");
    } else {
        rec->patched = false;
    }
    // No handler starts any more once every thread has passed a barrier; wait for the ones
    // running (bounded: a handler that never returns is reported and left). Stubs, trampolines
    // and records are never freed, so a thread still on its way out of them is safe.
    bool busy = !hook_detail::barrier_all_threads() || handlers_running(rec);
    for (int round = 0; busy && round < 10000; round++) {
        hook_detail::pause_for(std::chrono::microseconds(100));
        busy = handlers_running(rec);
    }
    if (busy)
        std::fprintf(stderr,
                     "bpftime: a handler of the inline hook at %s did not return within 1 s\n",
                     hex(address).c_str());
}

uintptr_t inline_hook::address() const {
    return rec_->address;
}
size_t inline_hook::patched_bytes() const {
    return rec_->reloc.patched;
}
bool inline_hook::is_trap() const {
    return rec_->trap;
}

size_t inline_hook::padding_used() const {
    return rec_->reloc.padding_used;
}
bool inline_hook::return_early(uint64_t value) {
    shadow_stack &ss = t_shadow;
    if (!ss.in_entry)
        return false;
    ss.early = true;
    ss.early_value = value;
    return true;
}
namespace {

// record::light from the modes its owner set.
void update_light(record &rec) {
    uint8_t mode = light_none;
    if (rec.return_only.load())
        mode = light_return_only;
    else if (rec.on_entry_plain.load() != nullptr)
        mode = light_plain_entry;
    rec.light.store(mode);
}

} // namespace

void inline_hook::set_return_only(bool on) {
    rec_->return_only.store(on && rec_->on_return != nullptr);
    update_light(*rec_);
}
void inline_hook::set_plain_entry(hook_entry_fn fn) {
    rec_->on_entry_plain.store(fn);
    update_light(*rec_);
}
void inline_hook::set_plain_return(hook_return_fn fn) {
    rec_->on_return_plain.store(rec_->on_return != nullptr ? fn : nullptr);
}
bool inline_hook::set_thread_handlers_off(bool off) {
    shadow_stack &ss = t_shadow;
    const bool was = ss.off;
    ss.off = off;
    return was;
}
uint64_t inline_hook::missed_returns() {
    return g_missed_returns.load();
}
int inline_hook::hook_stop_signal() {
    return hook_detail::stop_signal();
}

const void *hook_detail::running_hook() {
    const thread_mark *m = t_shadow.mark;
    return m ? m->running.load(std::memory_order_relaxed) : nullptr;
}

} // namespace bpftime
