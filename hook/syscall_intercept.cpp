// SPDX-License-Identifier: MIT
/// @file
/// System call interception: the gate, rewritten `syscall` sites with their trampolines and
/// thunks, the common and short stubs, Syscall User Dispatch and its SIGSYS handler, and the
/// dispatcher they share (see the header for what each covers).
#include "bpftime/hook/syscall_intercept.hpp"

#include "hook_internal.hpp"

#include <bpftime/cpu/vector_state.hpp>

#include <Zydis/Zydis.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <iterator>
#include <link.h>
#include <mutex>
#include <optional>
#include <set>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
#include <vector>

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_OFF 0
#define PR_SYS_DISPATCH_ON 1
#endif
#ifndef SYSCALL_DISPATCH_FILTER_ALLOW
#define SYSCALL_DISPATCH_FILTER_ALLOW 0
#define SYSCALL_DISPATCH_FILTER_BLOCK 1
#endif
#ifndef SYS_USER_DISPATCH
#define SYS_USER_DISPATCH 2
#endif

extern "C" __attribute__((visibility("hidden"))) void
bpftime_syscall_site_entry(bpftime::pt_regs *frame);
extern "C" __attribute__((visibility("hidden"))) void
bpftime_syscall_native_exit_entry(bpftime::pt_regs *frame);
extern "C" __attribute__((visibility("hidden"))) void
bpftime_syscall_short_entry(bpftime::syscall_intercept::enter_record *rec);
extern "C" __attribute__((visibility("hidden"))) void
bpftime_syscall_plain_entry(bpftime::syscall_intercept::enter_record *rec);

namespace bpftime::syscall_intercept {

namespace {

// --- State ----------------------------------------------------------------------------------

// The gate: one region, the range Syscall User Dispatch always lets through. It holds the
// dispatcher's `syscall` (raw_fn), the SIGSYS handler's restorer, the common stub and the
// stubs that run a call natively with the application's registers. Mapped twice from a memfd:
// executable here, writable at gate_rw (never both in one mapping; pages never written are
// never backed).
constexpr size_t gate_size = 16 << 20;
constexpr size_t raw_fn_at = 0, restorer_at = 64, common_at = 128, after_at = 4096;
constexpr size_t short_at = 6144, plain_at = 7168, native_first = 8192;
constexpr size_t native_stub_size = 64;
constexpr size_t native_capacity = (gate_size - native_first) / native_stub_size;
// The system calls that run natively and can return (to both sides for the first four): their
// exit handlers run from a stub that calls the dispatcher after the `syscall`.
constexpr long exit_after_native[] = {SYS_clone, SYS_clone3, SYS_fork, SYS_vfork};
constexpr size_t n_exit_kinds = std::size(exit_after_native);
// Rewritten sites own the last stubs_per_site * max_sites stubs (a plain one, one for clone,
// and one running the exit handlers for each of exit_after_native); returns seen by the
// fallback hash into the rest.
constexpr size_t max_sites = 1 << 14;
constexpr size_t stubs_per_site = 2 + n_exit_kinds;
constexpr size_t hash_capacity = native_capacity - stubs_per_site * max_sites;

uintptr_t gate = 0;
uint8_t *gate_rw = nullptr;
using raw_fn_t = long (*)(long, long, long, long, long, long, long);
raw_fn_t raw_fn = nullptr;

// The selector byte every registered thread's Syscall User Dispatch reads: BLOCK while armed.
volatile char selector = SYSCALL_DISPATCH_FILTER_ALLOW;

// Wanted numbers: by the handlers (the dispatcher reads it), and as the thunks read them:
// 0 not wanted, else the index in stub_entries of the stub the call enters (the common stub
// for the wanted numbers, for clone and clone3 always: their child needs the dispatcher's
// stub, and for those watched; the short stub for numbers with an enter_record handler only,
// its plain form, which saves no vector register, for those marked vector-free too).
uint8_t wanted_table[table_size];
uint8_t thunk_table[table_size];
constexpr uint8_t thunk_common = 1, thunk_short = 2, thunk_plain = 3;
// The stubs by thunk_table value (the thunks jump through it; [0] is never used).
uintptr_t stub_entries[4];
std::atomic<bool> wanted_high{false};

handlers g_handlers;
std::atomic<bool> started{false};
std::atomic<bool> is_armed{false};
std::atomic<uint64_t> n_trapped{0};

// Calls through rewritten sites (by path: [0] the common stub, [1] the short one, [2] its plain
// form), counted
// without a locked add on the hot path: each thread owns a slot it alone writes (plain relaxed
// load and store); the totals sum the slots. Threads past the slots share the last one's
// atomic add.
constexpr size_t rewritten_slots = 4096;
struct rewritten_slot {
    std::atomic<uint64_t> by_path[3];
};
rewritten_slot rewritten_by_thread[rewritten_slots];
std::atomic<size_t> rewritten_next{0};
__attribute__((tls_model("initial-exec"))) thread_local rewritten_slot *t_rewritten = nullptr;

[[gnu::always_inline]] inline void count_rewritten(int path) {
    rewritten_slot *slot = t_rewritten;
    if (slot == nullptr) [[unlikely]] {
        const size_t i = rewritten_next.fetch_add(1, std::memory_order_relaxed);
        slot = t_rewritten = &rewritten_by_thread[std::min(i, rewritten_slots - 1)];
        if (i >= rewritten_slots - 1) {
            slot->by_path[path].fetch_add(1, std::memory_order_relaxed);
            t_rewritten = nullptr; // shared: always the atomic add
            return;
        }
    }
    std::atomic<uint64_t> &n = slot->by_path[path];
    n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// Native stubs by the address they return to: keys claimed with a CAS, the code written, then
// ready set; lookups in a signal handler allocate nothing.
std::atomic<uintptr_t> *native_keys = nullptr;
std::atomic<uint8_t> *native_ready = nullptr;

// What a thunk's index names: where the call goes on.
struct site_slot {
    uintptr_t after;        // the address behind the `syscall` (rip as the kernel reports it)
    uintptr_t resume;       // the trampoline's copy of what follows the `syscall`
    uintptr_t native;       // a gate stub: `syscall`, then jump to resume
    uintptr_t native_clone; // the same for clone and clone3 (see write_clone_stub)
    // Then, stub by stub, those of exit_after_native (see write_exit_stub).
};
site_slot *site_slots = nullptr;

__attribute__((tls_model("initial-exec"))) thread_local bool t_internal = false;
__attribute__((tls_model("initial-exec"))) thread_local int t_depth = 0;

std::mutex arm_mu;

// Syscall User Dispatch only where needed. The process-wide wish (g_sud_wanted) changes with a
// new generation; each registered thread compares the generation with the one it applied,
// on the dispatcher's path and in the SIGSYS handler, and switches its own setting (the
// setting is per thread and only a thread can change its own).
std::atomic<int> g_mode{static_cast<int>(dispatch_mode::when_needed)};
std::atomic<bool> g_sud_wanted{false};
std::atomic<uint32_t> g_sud_gen{1};
std::atomic<int> g_sud_threads{0};
// Whether calls mapping executable memory go through the dispatcher (armed, when_needed).
std::atomic<bool> g_watch{false};
// Executable memory mapped since the last full look (what it needs is decided at refresh()).
std::atomic<uint64_t> g_exec_events{0};
std::atomic<uintptr_t> g_last_exec{0};
std::string g_sud_reason; // under arm_mu
__attribute__((tls_model("initial-exec"))) thread_local bool t_registered = false;
__attribute__((tls_model("initial-exec"))) thread_local bool t_sud_on = false;
__attribute__((tls_model("initial-exec"))) thread_local uint32_t t_sud_gen = 0;

std::string hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

void put64(uint8_t *at, uint64_t v) {
    std::memcpy(at, &v, 8);
}

// --- The dispatcher ---------------------------------------------------------------------------

// wanted_table: 0 not wanted, else want_call, plus want_exit when the exit handlers run too,
// plus want_regs when the enter handler needs the registers (not only the record), plus
// want_plain when the record's handler may run without the vector state saved.
constexpr uint8_t want_call = 1, want_exit = 2, want_regs = 4, want_plain = 8;

bool exit_wanted(uint64_t nr) {
    if (nr < table_size) {
        return (__atomic_load_n(&wanted_table[nr], __ATOMIC_RELAXED) & want_exit) != 0;
    }
    return true;
}

bool is_wanted(uint64_t nr) {
    if (nr < table_size) {
        return __atomic_load_n(&wanted_table[nr], __ATOMIC_RELAXED) != 0;
    }
    return wanted_high.load(std::memory_order_relaxed);
}

// Calls that must run with the application's own registers (new stacks, signal frames); from
// a SIGSYS handler also those acting on the handler's signal mask or stack.
bool runs_natively(uint64_t nr, bool from_signal) {
    switch (nr) {
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
    case SYS_rt_sigreturn:
        return true;
    case SYS_rt_sigprocmask:
    case SYS_rt_sigsuspend:
    case SYS_sigaltstack:
        return from_signal;
    default:
        return false;
    }
}

long perform(const pt_regs &r) {
    return raw_fn(static_cast<long>(r.orig_rax), static_cast<long>(r.rdi), static_cast<long>(r.rsi),
                  static_cast<long>(r.rdx), static_cast<long>(r.r10), static_cast<long>(r.r8),
                  static_cast<long>(r.r9));
}

// Which of exit_after_native nr is, or n_exit_kinds.
size_t exit_kind(uint64_t nr) {
    for (size_t k = 0; k < n_exit_kinds; ++k)
        if (nr == static_cast<uint64_t>(exit_after_native[k]))
            return k;
    return n_exit_kinds;
}

enum class outcome {
    done,             // regs.rax holds the result
    native,           // the call must run natively (regs unchanged)
    native_then_exit, // the same, then the exit handlers (a stub of write_exit_stub)
};

void set_thread_dispatch(bool on) {
    if (on == t_sud_on)
        return;
    const long r = raw_fn(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH,
                          on ? PR_SYS_DISPATCH_ON : PR_SYS_DISPATCH_OFF, on ? gate : 0,
                          on ? gate_size : 0, on ? reinterpret_cast<long>(&selector) : 0, 0);
    if (r == 0) {
        t_sud_on = on;
        g_sud_threads.fetch_add(on ? 1 : -1, std::memory_order_relaxed);
    }
}

// Applies the process-wide wish to the calling thread when it changed since the last look.
inline void sync_thread_dispatch() {
    const uint32_t gen = g_sud_gen.load(std::memory_order_acquire);
    if (t_sud_gen == gen) [[likely]]
        return;
    t_sud_gen = gen;
    if (t_registered)
        set_thread_dispatch(g_sud_wanted.load(std::memory_order_acquire));
}

// The process-wide wish. The selector blocks only while it is on: a thread that has not
// switched its own setting off yet traps nothing.
void publish_dispatch_wish(bool wanted) {
    if (wanted)
        selector = SYSCALL_DISPATCH_FILTER_BLOCK;
    g_sud_wanted.store(wanted, std::memory_order_release);
    if (!wanted)
        selector = SYSCALL_DISPATCH_FILTER_ALLOW;
    g_sud_gen.fetch_add(1, std::memory_order_acq_rel);
}

bool is_watched(uint64_t nr) {
    return nr == SYS_mmap || nr == SYS_mprotect || nr == SYS_pkey_mprotect;
}

// Whether executable code in [p, p + n) may hold a `syscall` instruction (its two bytes
// anywhere: what is an instruction there is unknown).
bool may_hold_syscall(const uint8_t *p, size_t n) {
    for (size_t i = 0; i + 1 < n; ++i) {
        const void *at = std::memchr(p + i, 0x0F, n - 1 - i);
        if (at == nullptr)
            return false;
        i = static_cast<size_t>(static_cast<const uint8_t *>(at) - p);
        if (p[i + 1] == 0x05)
            return true;
    }
    return false;
}

// After a successful mmap, mprotect or pkey_mprotect of the application: executable memory
// that may hold a `syscall` (or that cannot be inspected: a file's code, not yet known to the
// dynamic loader, or more than 16 MiB) turns Syscall User Dispatch on at once, for this thread
// now and for the others at their next intercepted call; refresh() looks again later.
void watch_exec(const pt_regs &regs) {
    const auto nr = regs.orig_rax;
    const long ret = static_cast<long>(regs.rax);
    if (ret < 0 && ret > -4096)
        return;
    const int prot = static_cast<int>(regs.rdx);
    if ((prot & PROT_EXEC) == 0)
        return;
    const uintptr_t at = nr == SYS_mmap ? static_cast<uintptr_t>(ret) : regs.rdi;
    const size_t len = static_cast<size_t>(regs.rsi);
    bool needs = true;
    const bool file = nr == SYS_mmap && (regs.r10 & MAP_ANONYMOUS) == 0;
    if (!file && (prot & PROT_READ) != 0 && (prot & PROT_WRITE) == 0 && len <= (16u << 20))
        needs = may_hold_syscall(reinterpret_cast<const uint8_t *>(at), len);
    g_exec_events.fetch_add(1, std::memory_order_acq_rel);
    if (!needs)
        return;
    g_last_exec.store(at, std::memory_order_relaxed);
    if (!g_sud_wanted.load(std::memory_order_acquire))
        publish_dispatch_wish(true);
    sync_thread_dispatch();
}

// Runs the handlers around one call.
outcome dispatch(pt_regs &regs, bool from_signal) {
    sync_thread_dispatch();
    const uint64_t nr = regs.orig_rax;
    const bool native = runs_natively(nr, from_signal);
    const handlers h = g_handlers;
    if (t_internal || t_depth > 0 || !is_wanted(nr)) {
        if (native) {
            return outcome::native;
        }
        regs.rax = static_cast<uint64_t>(perform(regs));
        if (is_watched(nr) && !t_internal && t_depth == 0 &&
            g_watch.load(std::memory_order_relaxed))
            watch_exec(regs);
        return outcome::done;
    }
    if (from_signal)
        n_trapped.fetch_add(1, std::memory_order_relaxed);
    else
        count_rewritten(0);
    ++t_depth;
    if (h.enter != nullptr) {
        h.enter(h.user, &regs);
    }
    --t_depth;
    const bool exit = h.exit != nullptr && exit_wanted(nr);
    if (native) {
        return exit && exit_kind(nr) < n_exit_kinds ? outcome::native_then_exit : outcome::native;
    }
    regs.rax = static_cast<uint64_t>(perform(regs));
    if (is_watched(nr) && g_watch.load(std::memory_order_relaxed))
        watch_exec(regs);
    if (exit) {
        ++t_depth;
        h.exit(h.user, &regs);
        --t_depth;
    }
    return outcome::done;
}

bool is_clone(uint64_t nr) {
    return nr == SYS_clone || nr == SYS_clone3;
}

// What the thunks are to do with nr (nr < table_size), from wanted_table, the handlers and
// whether mmap and its kind are watched.
uint8_t thunk_value(uint64_t nr) {
    const uint8_t w = __atomic_load_n(&wanted_table[nr], __ATOMIC_RELAXED);
    if (is_clone(nr) || (is_watched(nr) && g_watch.load(std::memory_order_relaxed)))
        return thunk_common;
    if (w == 0)
        return 0;
    if ((w & ~want_plain) == want_call && g_handlers.enter_record != nullptr &&
        !runs_natively(nr, false))
        return (w & want_plain) != 0 && g_handlers.enter_record_plain != nullptr ? thunk_plain
                                                                                 : thunk_short;
    return thunk_common;
}

void update_thunk(uint64_t nr) {
    __atomic_store_n(&thunk_table[nr], thunk_value(nr), __ATOMIC_RELAXED);
}

// `syscall`, then jmp [ret].
void write_stub(uint8_t *code, uintptr_t ret) {
    const uint8_t head[] = {0x0F, 0x05, 0xFF, 0x25, 0, 0, 0, 0}; // syscall; jmp [rip+0]
    std::memcpy(code, head, sizeof head);
    put64(code + 8, ret);
}

// clone and clone3: a new thread inherits Syscall User Dispatch and starts with every signal
// blocked (glibc blocks them around clone), so a trapped call there would kill the process.
// The child turns it off first (prctl with its own registers saved on its new stack; the
// flags kept); hosts turn it on again once the thread runs its own code (enable_thread). rcx
// is free after a `syscall` (the kernel writes it), so jrcxz tests rax without the flags.
void write_clone_stub(uint8_t *code, uintptr_t ret) {
    const uint8_t text[] = {
        0x0F, 0x05,                               // syscall
        0x48, 0x89, 0xC1,                         // mov rcx, rax
        0xE3, 0x06,                               // jrcxz child
        0xFF, 0x25, 0x2A, 0,    0,    0,          // jmp [ret]  (rip+42)
        0x9C,                                     // child: pushfq
        0x57, 0x56, 0x52, 0x41, 0x52, 0x41, 0x50, // push rdi rsi rdx r10 r8
        0xB8, 0x9D, 0,    0,    0,                // mov eax, 157 (prctl)
        0xBF, 0x3B, 0,    0,    0,                // mov edi, 59 (PR_SET_SYSCALL_USER_DISPATCH)
        0x31, 0xF6,                               // xor esi, esi (PR_SYS_DISPATCH_OFF)
        0x31, 0xD2,                               // xor edx, edx
        0x45, 0x31, 0xD2,                         // xor r10d, r10d
        0x45, 0x31, 0xC0,                         // xor r8d, r8d
        0x0F, 0x05,                               // syscall
        0x41, 0x58, 0x41, 0x5A, 0x5A, 0x5E, 0x5F, // pop r8 r10 rdx rsi rdi
        0x31, 0xC0,                               // xor eax, eax (the child's 0)
        0x9D,                                     // popfq
        0xEB, 0xD0,                               // jmp back to jmp [ret]
    };
    static_assert(sizeof text + 8 <= native_stub_size);
    std::memcpy(code, text, sizeof text);
    put64(code + sizeof text, ret);
}

// One of exit_after_native natively, then the exit handlers: `syscall`, then the number in
// ecx and the continuation in r11 (both free after a `syscall`: the kernel writes them) for the
// gate's after stub (native_exit_stub), which saves the registers, runs the handlers (a clone
// child first turns Syscall User Dispatch off, as in write_clone_stub) and goes on at ret.
void write_exit_stub(uint8_t *code, uintptr_t ret, long nr) {
    const uint8_t head[] = {0x0F, 0x05, 0xB9}; // syscall; mov ecx, imm32
    std::memcpy(code, head, sizeof head);
    const auto n = static_cast<uint32_t>(nr);
    std::memcpy(code + 3, &n, 4);
    const uint8_t mov_r11[] = {0x49, 0xBB}; // movabs r11, imm64
    std::memcpy(code + 7, mov_r11, 2);
    put64(code + 9, ret);
    const uint8_t jmp[] = {0xFF, 0x25, 0, 0, 0, 0}; // jmp [rip+0]
    std::memcpy(code + 17, jmp, sizeof jmp);
    put64(code + 23, gate + after_at);
    static_assert(31 <= native_stub_size);
}

// What a native stub does after its `syscall`.
enum class stub_kind : uintptr_t {
    plain = 0,
    clone = 1, // write_clone_stub
    exit = 2,  // write_exit_stub for the number nr (plus this code)
};

// A gate stub that runs `syscall` and jumps to ret; 0 when the gate is full.
uintptr_t native_stub_for(uintptr_t ret, stub_kind kind, long nr) {
    // User addresses stay below bit 47: the kind and the number go above.
    const uintptr_t code =
        kind == stub_kind::exit ? static_cast<uintptr_t>(nr) + 2 : static_cast<uintptr_t>(kind);
    const uintptr_t key = ret | code << 48;
    size_t i = (ret * 0x9E3779B97F4A7C15ull >> 40) % hash_capacity;
    for (size_t probes = 0; probes < hash_capacity; ++probes, i = (i + 1) % hash_capacity) {
        uintptr_t now = native_keys[i].load(std::memory_order_acquire);
        if (now == 0) {
            uintptr_t expected = 0;
            if (native_keys[i].compare_exchange_strong(expected, key)) {
                uint8_t *at = gate_rw + native_first + i * native_stub_size;
                if (kind == stub_kind::clone)
                    write_clone_stub(at, ret);
                else if (kind == stub_kind::exit)
                    write_exit_stub(at, ret, nr);
                else
                    write_stub(at, ret);
                native_ready[i].store(1, std::memory_order_release);
                return gate + native_first + i * native_stub_size;
            }
            now = expected;
        }
        if (now == key) {
            while (native_ready[i].load(std::memory_order_acquire) == 0) {
            }
            return gate + native_first + i * native_stub_size;
        }
    }
    return 0;
}

// --- Syscall User Dispatch --------------------------------------------------------------------

void on_sigsys(int sig, siginfo_t *info, void *context) {
    auto *uc = static_cast<ucontext_t *>(context);
    greg_t *g = uc->uc_mcontext.gregs;
    if (info->si_code != SYS_USER_DISPATCH) {
        // Not ours (a seccomp trap): the default action, as without this handler.
        signal(sig, SIG_DFL);
        return;
    }
    const int saved_errno = errno;
    pt_regs r{};
    r.r15 = static_cast<uint64_t>(g[REG_R15]);
    r.r14 = static_cast<uint64_t>(g[REG_R14]);
    r.r13 = static_cast<uint64_t>(g[REG_R13]);
    r.r12 = static_cast<uint64_t>(g[REG_R12]);
    r.rbp = static_cast<uint64_t>(g[REG_RBP]);
    r.rbx = static_cast<uint64_t>(g[REG_RBX]);
    r.r11 = static_cast<uint64_t>(g[REG_R11]);
    r.r10 = static_cast<uint64_t>(g[REG_R10]);
    r.r9 = static_cast<uint64_t>(g[REG_R9]);
    r.r8 = static_cast<uint64_t>(g[REG_R8]);
    r.rcx = static_cast<uint64_t>(g[REG_RCX]);
    r.rdx = static_cast<uint64_t>(g[REG_RDX]);
    r.rsi = static_cast<uint64_t>(g[REG_RSI]);
    r.rdi = static_cast<uint64_t>(g[REG_RDI]);
    r.orig_rax = static_cast<uint64_t>(static_cast<int64_t>(info->si_syscall));
    r.rax = r.orig_rax;
    r.rip = static_cast<uint64_t>(g[REG_RIP]);
    r.eflags = static_cast<uint64_t>(g[REG_EFL]);
    r.rsp = static_cast<uint64_t>(g[REG_RSP]);
    const outcome o = dispatch(r, true);
    if (o != outcome::done) {
        const stub_kind kind = o == outcome::native_then_exit ? stub_kind::exit
                               : is_clone(r.orig_rax)         ? stub_kind::clone
                                                              : stub_kind::plain;
        uintptr_t stub = native_stub_for(static_cast<uintptr_t>(g[REG_RIP]), kind,
                                         static_cast<long>(r.orig_rax));
        if (stub != 0) {
            g[REG_RIP] = static_cast<greg_t>(stub);
            g[REG_RAX] = static_cast<greg_t>(r.orig_rax);
        } else {
            g[REG_RAX] = static_cast<greg_t>(perform(r)); // the gate is full: best effort
        }
    } else {
        g[REG_RAX] = static_cast<greg_t>(r.rax);
    }
    errno = saved_errno;
}

struct kernel_sigaction {
    void (*handler)(int, siginfo_t *, void *);
    unsigned long flags;
    void (*restorer)();
    uint64_t mask;
};
constexpr unsigned long sa_restorer_flag = 0x04000000;

// --- Code the gate holds -----------------------------------------------------------------------

struct emitter {
    std::vector<uint8_t> code;
    // Byte by byte: GCC 12 at -O3 reports a false overflow for vector::insert of a short
    // initializer list.
    void bytes(std::initializer_list<uint8_t> b) {
        for (uint8_t v : b)
            code.push_back(v);
    }
    void imm32(uint32_t v) {
        for (int i = 0; i < 4; ++i)
            code.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void imm64(uint64_t v) {
        for (int i = 0; i < 8; ++i)
            code.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    void abs_jmp(uint64_t target) {
        bytes({0xFF, 0x25, 0, 0, 0, 0}); // jmp [rip+0]
        imm64(target);
    }
    // movaps [rsp + disp32], xmmN (store) / movaps xmmN, [rsp + disp32] (load)
    void xmm(uint8_t opcode, int n, uint32_t disp) {
        if (n >= 8)
            code.push_back(0x44);
        bytes({0x0F, opcode, static_cast<uint8_t>(0x84 | ((n & 7) << 3)), 0x24});
        imm32(disp);
    }
};

// The frame a thunk leaves: [rsp] = the site's index (then the continuation), the
// application's red zone above. The stub saves the flags, then a pt_regs below them.
constexpr size_t frame_flags_at = sizeof(pt_regs), frame_slot_at = sizeof(pt_regs) + 8;

// The stubs' call of their C++ entry (rdi its argument): rbx keeps the stub's stack pointer
// (callee-saved, so the entry leaves it), the stack is aligned for the call, and xmm0-15 are
// kept around it unless the entry changes no vector register (keep_xmm false).
void call_entry(emitter &e, uintptr_t entry, bool keep_xmm = true) {
    e.bytes({0x48, 0x89, 0xE3});       // mov rbx, rsp
    e.bytes({0x48, 0x83, 0xE4, 0xF0}); // and rsp, -16
    if (keep_xmm) {
        e.bytes({0x48, 0x81, 0xEC, 0x00, 0x01, 0x00, 0x00}); // sub rsp, 256
        for (int n = 0; n < 16; ++n)
            e.xmm(0x29, n, static_cast<uint32_t>(16 * n));
    }
    e.bytes({0x48, 0xB8}); // movabs rax, entry
    e.imm64(entry);
    e.bytes({0xFF, 0xD0}); // call rax
    if (keep_xmm) {
        for (int n = 0; n < 16; ++n)
            e.xmm(0x28, n, static_cast<uint32_t>(16 * n));
    }
    e.bytes({0x48, 0x89, 0xDC}); // mov rsp, rbx
}

// after: the after stub of write_exit_stub (the number in rcx, the continuation in r11, rax
// the result); else the common stub the thunks enter (the number in rax, the continuation
// slot pushed).
void flags_and_return(emitter &e);

std::vector<uint8_t> common_stub(bool after) {
    emitter e;
    if (after) {
        e.bytes({0x48, 0x8D, 0x64, 0x24, 0x80}); // lea rsp, [rsp-128]
        e.bytes({0x41, 0x53});                   // push r11 (the continuation)
    }
    e.bytes({0x9C, 0xFC});                                     // pushfq; cld
    e.bytes({0x6A, 0, 0x6A, 0, 0x6A, 0, 0x6A, 0, 0x6A, 0});    // ss, rsp, eflags, cs, rip
    e.bytes({static_cast<uint8_t>(after ? 0x51 : 0x50)});      // orig_rax (push rcx / rax)
    e.bytes({0x57, 0x56, 0x52, 0x51, 0x50});                   // rdi rsi rdx rcx rax
    e.bytes({0x41, 0x50, 0x41, 0x51, 0x41, 0x52, 0x41, 0x53}); // r8 r9 r10 r11
    e.bytes({0x53, 0x55});                                     // rbx rbp
    e.bytes({0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57}); // r12 r13 r14 r15
    e.bytes({0x48, 0x89, 0xE7});                               // mov rdi, rsp
    call_entry(e, after ? reinterpret_cast<uintptr_t>(&bpftime_syscall_native_exit_entry)
                        : reinterpret_cast<uintptr_t>(&bpftime_syscall_site_entry));
    e.bytes({0x41, 0x5F, 0x41, 0x5E, 0x41, 0x5D, 0x41, 0x5C}); // r15 r14 r13 r12
    e.bytes({0x5D, 0x5B});                                     // rbp rbx
    e.bytes({0x41, 0x5B, 0x41, 0x5A, 0x41, 0x59, 0x41, 0x58}); // r11 r10 r9 r8
    e.bytes({0x58, 0x59, 0x5A, 0x5E, 0x5F});                   // rax rcx rdx rsi rdi
    e.bytes({0x48, 0x8D, 0x64, 0x24, 0x30});                   // lea rsp, [rsp+48]
    flags_and_return(e);
    return e.code;
}

// The short stub the thunks enter for numbers whose enter handler takes the record only
// (thunk_short; the number in rax, the continuation slot pushed). A `syscall` preserves every
// register but rax, rcx and r11; of those, the handler's C++ may change only the ones a
// function call may (rdi, rsi, rdx, r8-r10 and the vector registers; the rest it saves
// itself), so only those are saved. The arguments and the number are pushed in the order of
// the kernel's sys_enter record, below 8 bytes for its common fields: the record the programs
// read is those very pushes, and what the call is made with is popped from it. xmm0-15 are
// saved too: the programs' code is compiled for the host with vectorising passes and store
// merging, and may use them whatever helpers it calls (or none); the plain form (keep_xmm false)
// saves none and calls bpftime_syscall_plain_entry, for numbers whose programs' code keeps
// them. Then the call is made from the gate, and the flags come back as in the common stub;
// there is no exit side.
std::vector<uint8_t> short_stub(bool keep_xmm) {
    emitter e;
    e.bytes({0x9C, 0xFC});                         // pushfq; cld
    e.bytes({0x41, 0x51, 0x41, 0x50, 0x41, 0x52}); // push r9 r8 r10
    e.bytes({0x52, 0x56, 0x57, 0x50});             // push rdx rsi rdi rax
    e.bytes({0x6A, 0x00});                         // push 0 (the common fields)
    e.bytes({0x53});                               // push rbx
    e.bytes({0x48, 0x8D, 0x7C, 0x24, 0x08});       // lea rdi, [rsp+8] (the record)
    call_entry(e,
               keep_xmm ? reinterpret_cast<uintptr_t>(&bpftime_syscall_short_entry)
                        : reinterpret_cast<uintptr_t>(&bpftime_syscall_plain_entry),
               keep_xmm);
    e.bytes({0x5B});                               // pop rbx
    e.bytes({0x48, 0x8D, 0x64, 0x24, 0x08});       // lea rsp, [rsp+8] (the common fields)
    e.bytes({0x58, 0x5F, 0x5E, 0x5A});             // pop rax rdi rsi rdx
    e.bytes({0x41, 0x5A, 0x41, 0x58, 0x41, 0x59}); // pop r10 r8 r9
    // The call, from the gate: a restart the kernel decides comes back to this `syscall`
    // with the same registers.
    e.bytes({0x0F, 0x05});
    flags_and_return(e);
    return e.code;
}

// The end of the stubs: [rsp] the saved flags, [rsp+8] the continuation, the application's
// red zone above it. The flags come back without popfq (microcoded, the slowest step here):
// rcx and r11 are the `syscall` instruction's to clobber (r11 ends holding the flags, as the
// kernel leaves it); DF first, then OF from an addition, then SF ZF AF PF CF through sahf. The
// other flags (TF, AC, ID) no code of ours changes. The continuation is reached with a jump
// through rcx (which then holds it, as the kernel leaves rcx holding the address behind the
// `syscall`), not a `ret`: no call pushed it, and a `ret` would take the return stack's top
// entry, the application's own return, mispredicting this return and the application's
// next one.
void flags_and_return(emitter &e) {
    e.bytes({0x4C, 0x8B, 0x1C, 0x24});                   // mov r11, [rsp]
    e.bytes({0x41, 0xF7, 0xC3, 0x00, 0x04, 0x00, 0x00}); // test r11d, DF
    e.bytes({0x74, 0x01, 0xFD});                         // jz +1; std
    e.bytes({0x50});                                     // push rax
    e.bytes({0x44, 0x89, 0xD8, 0x88, 0xC4});             // mov eax, r11d; mov ah, al
    e.bytes({0x44, 0x89, 0xD9, 0xC1, 0xE1, 0x14});       // mov ecx, r11d; shl ecx, 20
    e.bytes({0x81, 0xE1, 0x00, 0x00, 0x00, 0x80});       // and ecx, 0x80000000 (OF)
    e.bytes({0x81, 0xC1, 0x00, 0x00, 0x00, 0x80});       // add ecx, 0x80000000: OF = OF
    e.bytes({0x9E});                                     // sahf
    e.bytes({0x58});                                     // pop rax
    e.bytes({0x48, 0x8B, 0x4C, 0x24, 0x08});             // mov rcx, [rsp+8]
    e.bytes({0x48, 0x8D, 0xA4, 0x24, 0x90, 0, 0, 0});    // lea rsp, [rsp+144] (the red zone's top)
    e.bytes({0xFF, 0xE1});                               // jmp rcx
}

// Whether the thunks may use BMI2's shrx, which shifts without touching the flags.
bool have_bmi2() {
    static const bool yes = [] {
        __builtin_cpu_init(); // this may run before the library's constructors
        return __builtin_cpu_supports("bmi2") != 0;
    }();
    return yes;
}

// A site's thunk: the number not wanted goes straight to the gate stub, flags kept. With BMI2
// the check changes no flag (shrx, movzx, jrcxz on rcx and r11, which the `syscall` clobbers
// anyway) and a wanted number goes to the stub its thunk_table value names (a number past the
// table to the common stub); without BMI2 the flags are saved around a cmp and every wanted
// number takes the common stub (which serves the short path's numbers as well).
std::vector<uint8_t> thunk(uint32_t index, uintptr_t native) {
    static_assert(table_size == 1024, "the flag-free check shifts by log2(table_size)");
    emitter e;
    if (have_bmi2()) {
        e.bytes({0x41, 0xBB, 0x0A, 0x00, 0x00, 0x00}); // mov r11d, 10
        e.bytes({0xC4, 0xE2, 0xA3, 0xF7, 0xC8});       // shrx rcx, rax, r11
        const size_t small_at = e.code.size();
        e.bytes({0xE3, 0});                     // jrcxz small
        e.bytes({0xB9, thunk_common, 0, 0, 0}); // mov ecx, thunk_common (a number past the table)
        const size_t high_at = e.code.size();
        e.bytes({0xEB, 0}); // jmp want
        e.code[small_at + 1] = static_cast<uint8_t>(e.code.size() - (small_at + 2));
        e.bytes({0x49, 0xBB}); // small: movabs r11, table
        e.imm64(reinterpret_cast<uintptr_t>(&thunk_table[0]));
        e.bytes({0x41, 0x0F, 0xB6, 0x0C, 0x03}); // movzx ecx, byte [r11+rax]
        const size_t skip_at = e.code.size();
        e.bytes({0xE3, 0}); // jrcxz not_wanted
        e.code[high_at + 1] = static_cast<uint8_t>(e.code.size() - (high_at + 2));
        e.bytes({0x48, 0x8D, 0x64, 0x24, 0x80}); // want: lea rsp, [rsp-128]
        e.bytes({0x68});                         // push index
        e.imm32(index);
        e.bytes({0x49, 0xBB}); // movabs r11, stub_entries
        e.imm64(reinterpret_cast<uintptr_t>(&stub_entries[0]));
        e.bytes({0x41, 0xFF, 0x24, 0xCB}); // jmp [r11+rcx*8]
        e.code[skip_at + 1] = static_cast<uint8_t>(e.code.size() - (skip_at + 2));
        e.abs_jmp(native); // not_wanted
        return e.code;
    }
    e.bytes({0x48, 0x8D, 0x64, 0x24, 0x80}); // lea rsp, [rsp-128]
    e.bytes({0x9C});                         // pushfq
    e.bytes({0x48, 0x3D});                   // cmp rax, table_size - 1
    e.imm32(static_cast<uint32_t>(table_size - 1));
    const size_t ja_at = e.code.size();
    e.bytes({0x77, 0}); // ja want
    e.bytes({0x49, 0xBB});
    e.imm64(reinterpret_cast<uintptr_t>(&thunk_table[0])); // movabs r11, table
    e.bytes({0x41, 0x80, 0x3C, 0x03, 0x00});               // cmp byte [r11+rax], 0
    const size_t jne_at = e.code.size();
    e.bytes({0x75, 0});                                        // jne want
    e.bytes({0x9D});                                           // popfq
    e.bytes({0x48, 0x8D, 0xA4, 0x24, 0x80, 0x00, 0x00, 0x00}); // lea rsp, [rsp+128]
    e.abs_jmp(native);
    const size_t want = e.code.size();
    e.code[ja_at + 1] = static_cast<uint8_t>(want - (ja_at + 2));
    e.code[jne_at + 1] = static_cast<uint8_t>(want - (jne_at + 2));
    e.bytes({0x9D}); // popfq
    e.bytes({0x68}); // push index
    e.imm32(index);
    e.abs_jmp(gate + common_at);
    return e.code;
}

// --- Finding sites -------------------------------------------------------------------------------

struct map_line {
    uintptr_t start = 0, end = 0, offset = 0;
    bool exec = false, read = false;
    unsigned long inode = 0;
    std::string path;
};

struct function {
    uintptr_t start, size;
    uintptr_t core = 0; // bytes that must decode (0: all); the rest up to size may be padding
};

// The functions of an ELF file (.symtab, else .dynsym), as runtime addresses inside the
// executable mappings given.
std::vector<function> functions_of(const std::string &path, const std::vector<map_line> &exec) {
    std::vector<function> out;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return out;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
        ::close(fd);
        return out;
    }
    const size_t size = static_cast<size_t>(st.st_size);
    void *mem = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (mem == MAP_FAILED)
        return out;
    const auto *base = static_cast<const uint8_t *>(mem);
    auto in_file = [&](uint64_t off, uint64_t len) { return off <= size && len <= size - off; };
    const auto *eh = reinterpret_cast<const Elf64_Ehdr *>(base);
    if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_machine != EM_X86_64 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_phentsize != sizeof(Elf64_Phdr) ||
        !in_file(eh->e_shoff, uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr)) ||
        !in_file(eh->e_phoff, uint64_t{eh->e_phnum} * sizeof(Elf64_Phdr))) {
        ::munmap(mem, size);
        return out;
    }
    const auto *sh = reinterpret_cast<const Elf64_Shdr *>(base + eh->e_shoff);
    const auto *ph = reinterpret_cast<const Elf64_Phdr *>(base + eh->e_phoff);
    // The load bias, from an executable mapping and the PT_LOAD holding its file offset.
    std::optional<int64_t> bias;
    for (const map_line &m : exec) {
        for (unsigned i = 0; i < eh->e_phnum && !bias; ++i) {
            if (ph[i].p_type == PT_LOAD && m.offset >= ph[i].p_offset &&
                m.offset < ph[i].p_offset + ph[i].p_filesz) {
                bias = static_cast<int64_t>(m.start - m.offset) -
                       static_cast<int64_t>(ph[i].p_vaddr - ph[i].p_offset);
            }
        }
    }
    const uint32_t want_type = [&] {
        for (unsigned i = 0; i < eh->e_shnum; ++i)
            if (sh[i].sh_type == SHT_SYMTAB)
                return uint32_t{SHT_SYMTAB};
        return uint32_t{SHT_DYNSYM};
    }();
    for (unsigned i = 0; i < eh->e_shnum && bias; ++i) {
        if (sh[i].sh_type != want_type || sh[i].sh_entsize != sizeof(Elf64_Sym) ||
            !in_file(sh[i].sh_offset, sh[i].sh_size))
            continue;
        const auto *syms = reinterpret_cast<const Elf64_Sym *>(base + sh[i].sh_offset);
        const size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; ++k) {
            const Elf64_Sym &s = syms[k];
            if (ELF64_ST_TYPE(s.st_info) != STT_FUNC || s.st_size == 0 || s.st_shndx == SHN_UNDEF)
                continue;
            const uintptr_t at = static_cast<uintptr_t>(static_cast<int64_t>(s.st_value) + *bias);
            for (const map_line &m : exec) {
                if (at >= m.start && at < m.end && s.st_size <= m.end - at) {
                    out.push_back({at, s.st_size});
                    break;
                }
            }
        }
    }
    ::munmap(mem, size);
    std::sort(out.begin(), out.end(),
              [](const function &a, const function &b) { return a.start < b.start; });
    out.erase(std::unique(out.begin(), out.end(),
                          [](const function &a, const function &b) { return a.start == b.start; }),
              out.end());
    return out;
}

struct site {
    uintptr_t start = 0;      // first replaced byte
    uintptr_t syscall_at = 0; // the `syscall`
    uintptr_t trampoline = 0;
    hook_detail::relocation reloc;
    size_t syscall_index = 0; // of the `syscall` among the replaced instructions
    // The bytes written at start: the replaced instructions before the `syscall` when it is
    // the last of them (its own 2 bytes are never written, see prepare_site), else all of them.
    std::vector<uint8_t> original, patch;
    bool patched = false;
    // Instructions follow the `syscall` inside the replaced bytes: a thread blocked in that
    // call would come back into the middle of the jump, so the site is written only with the
    // other threads stopped (they are moved out of the kernel's way first).
    bool return_inside = false;
};

// Built on first use, never destroyed: a host may arm from its own start-up code (a
// constructor running before this file's static objects exist) and handlers may run until the
// process ends.
std::deque<site> &all_sites() { // never shrinks: thunks hold indexes
    static auto *sites = new std::deque<site>;
    return *sites;
}
std::set<std::pair<unsigned long, uintptr_t>> &scanned_objects() {
    static auto *scanned = new std::set<std::pair<unsigned long, uintptr_t>>;
    return *scanned;
}
// Executable ranges whose `syscall` instructions are accounted for: the code of scanned
// objects (a site rewritten or counted as refused), the host's own object, the trampolines.
std::vector<std::pair<uintptr_t, uintptr_t>> &covered_ranges() {
    static auto *ranges = new std::vector<std::pair<uintptr_t, uintptr_t>>;
    return *ranges;
}

struct decoded_function {
    size_t size = 0;                // bytes decoded
    std::vector<uintptr_t> starts;  // instruction starts
    std::vector<uintptr_t> targets; // direct branch targets
    std::vector<uintptr_t> syscalls;
};

bool decode_function(const function &fn, decoded_function &out) {
    ZydisDecoder decoder;
    ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    const auto *bytes = reinterpret_cast<const uint8_t *>(fn.start);
    size_t at = 0;
    while (at < fn.size) {
        ZydisDecodedInstruction in;
        ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
        if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, bytes + at, fn.size - at, &in, ops)) ||
            (at >= fn.core && in.mnemonic == ZYDIS_MNEMONIC_INT3)) {
            if (fn.core != 0 && at >= fn.core) {
                out.size = at; // padding or data after the unwind range ends the function
                break;
            }
            return false;
        }
        const uintptr_t here = fn.start + at;
        out.starts.push_back(here);
        if (in.mnemonic == ZYDIS_MNEMONIC_SYSCALL)
            out.syscalls.push_back(here);
        for (unsigned i = 0; i < in.operand_count; ++i) {
            if (ops[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && ops[i].imm.is_relative) {
                ZyanU64 target = 0;
                if (ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&in, &ops[i], here, &target)))
                    out.targets.push_back(static_cast<uintptr_t>(target));
            }
        }
        at += in.length;
        out.size = at;
    }
    std::sort(out.targets.begin(), out.targets.end());
    return true;
}

// The gate stub of a site: `syscall`, then a jump to the rest of its trampoline (the target
// is written by finish_gate_stub once the trampoline is laid out).
uintptr_t gate_stub_slot(uint32_t index) {
    const size_t slot = hash_capacity + stubs_per_site * index;
    site_slots[index].native = gate + native_first + slot * native_stub_size;
    site_slots[index].native_clone = site_slots[index].native + native_stub_size;
    return site_slots[index].native;
}

void finish_gate_stub(uint32_t index) {
    const size_t slot = hash_capacity + stubs_per_site * index;
    write_stub(gate_rw + native_first + slot * native_stub_size, site_slots[index].resume);
    write_clone_stub(gate_rw + native_first + (slot + 1) * native_stub_size,
                     site_slots[index].resume);
    for (size_t k = 0; k < n_exit_kinds; ++k)
        write_exit_stub(gate_rw + native_first + (slot + 2 + k) * native_stub_size,
                        site_slots[index].resume, exit_after_native[k]);
}

constexpr size_t site_space = 256; // trampoline and thunk of one site

bool prepare_range(const function &fn, const decoded_function &d, uintptr_t sc, uintptr_t start,
                   bool no_return, uintptr_t place, uint8_t *slot, uint32_t index, site &out);

// Whether the `syscall` at sc is exit or exit_group (no thread ever comes back from it, so
// what follows it may be replaced while one is inside): the instruction before it sets eax to
// one of them, as an immediate, or from a register that every instruction of the function
// writing it sets to that same immediate (glibc's _exit).
bool never_returns(const function &fn, const decoded_function &d, uintptr_t sc) {
    auto pos = std::lower_bound(d.starts.begin(), d.starts.end(), sc);
    if (pos == d.starts.begin() || pos == d.starts.end() || *pos != sc)
        return false;
    ZydisDecoder decoder;
    ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    ZydisDecodedInstruction in;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    auto decode = [&](uintptr_t at) {
        return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, reinterpret_cast<const void *>(at),
                                                   fn.start + d.size - at, &in, ops));
    };
    auto exits = [](uint64_t v) { return v == SYS_exit || v == SYS_exit_group; };
    auto mov_imm = [&](ZydisRegister reg, uint64_t &v) {
        if (in.mnemonic != ZYDIS_MNEMONIC_MOV || ops[0].type != ZYDIS_OPERAND_TYPE_REGISTER ||
            ops[0].reg.value != reg || ops[1].type != ZYDIS_OPERAND_TYPE_IMMEDIATE)
            return false;
        v = ops[1].imm.value.u;
        return true;
    };
    if (!decode(*(pos - 1)))
        return false;
    uint64_t v = 0;
    if (mov_imm(ZYDIS_REGISTER_EAX, v) || mov_imm(ZYDIS_REGISTER_RAX, v))
        return exits(v);
    if (in.mnemonic != ZYDIS_MNEMONIC_MOV || ops[0].reg.value != ZYDIS_REGISTER_EAX ||
        ops[1].type != ZYDIS_OPERAND_TYPE_REGISTER)
        return false;
    const ZydisRegister src = ops[1].reg.value;
    const ZydisRegister src64 = ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, src);
    auto writes_src = [&] {
        for (unsigned i = 0; i < in.operand_count; ++i)
            if (ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER &&
                (ops[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE) != 0 &&
                ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, ops[i].reg.value) ==
                    src64)
                return true;
        return false;
    };
    // glibc's thread exit loop: `mov $60, %edx` then `L: xor %edi, %edi; mov %edx, %eax;
    // syscall; jmp L`. The nearest write of the register before the `syscall` sets an exit
    // number, and the only branch into the code between them is the jump right after the
    // `syscall`, which a thread reaches only if the call returned: the first call exits.
    for (auto w = pos - 1; w != d.starts.begin();) {
        --w;
        if (!decode(*w) || in.mnemonic == ZYDIS_MNEMONIC_CALL)
            break;
        if (!writes_src())
            continue;
        if (!mov_imm(src, v) || !exits(v))
            break;
        const uintptr_t back = sc + 2;
        if (back >= fn.start + d.size || !decode(back) || in.mnemonic != ZYDIS_MNEMONIC_JMP ||
            ops[0].type != ZYDIS_OPERAND_TYPE_IMMEDIATE || !ops[0].imm.is_relative)
            break;
        ZyanU64 loop = 0;
        if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&in, &ops[0], back, &loop)))
            break;
        const auto lo = std::upper_bound(d.targets.begin(), d.targets.end(), *w);
        const auto hi = std::upper_bound(d.targets.begin(), d.targets.end(), sc);
        if (hi - lo == 1 && *lo == loop)
            return true;
        break;
    }
    bool seen = false;
    uint64_t value = 0;
    for (uintptr_t at : d.starts) {
        // A call may change any caller-saved register.
        if (!decode(at) || in.mnemonic == ZYDIS_MNEMONIC_CALL)
            return false;
        for (unsigned i = 0; i < in.operand_count; ++i) {
            const ZydisDecodedOperand &o = ops[i];
            if (o.type != ZYDIS_OPERAND_TYPE_REGISTER ||
                (o.actions & ZYDIS_OPERAND_ACTION_MASK_WRITE) == 0 ||
                ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, o.reg.value) != src64)
                continue;
            if (!mov_imm(src, v) || (seen && v != value))
                return false;
            seen = true;
            value = v;
        }
    }
    return seen && exits(value);
}

// Prepares a site in memory at slot (writable) for a trampoline placed at runtime address
// place. Returns false (the fallback covers it) when no range around the `syscall` works.
bool prepare_site(const function &fn, const decoded_function &d, uintptr_t sc, uintptr_t place,
                  uint8_t *slot, uint32_t index, site &out) {
    auto pos = std::lower_bound(d.starts.begin(), d.starts.end(), sc);
    if (pos == d.starts.end() || *pos != sc)
        return false;
    const size_t sc_at = static_cast<size_t>(pos - d.starts.begin());
    // Best, the `syscall` last among the replaced instructions (it and up to six before it),
    // the jump and its fill ending at or before the `syscall`, whose 2 bytes stay as they are:
    // every address the kernel sends a thread back to is then what it was. A thread blocked in
    // the call returns behind the jump (syscall + 2); one whose call the kernel restarts (a
    // signal handler with SA_RESTART, a stop, restart_syscall) is sent back to the `syscall`
    // itself (rip - 2) and makes the original call again, which is what it was doing. So the
    // site can be written while threads run. Else starting at the `syscall` or up to three
    // instructions before it, with an int3 on the first byte only. No thread comes back from
    // exit or exit_group, nor has it restarted: their jump may cover the `syscall` (glibc's
    // thread exit loop has 4 bytes before it and runs with every signal blocked, where an int3
    // would kill the process).
    const bool no_return = never_returns(fn, d, sc);
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t back = pass == 0 ? 1 : 0; back <= (pass == 0 ? 6u : 3u) && back <= sc_at;
             ++back) {
            const uintptr_t start = d.starts[sc_at - back];
            if (pass == 0 && (no_return ? sc + 2 : sc) - start < 5)
                continue;
            if (prepare_range(fn, d, sc, start, no_return, place, slot, index, out))
                return true;
        }
    }
    return false;
}

// prepare_site for the range starting at start.
bool prepare_range(const function &fn, const decoded_function &d, uintptr_t sc, uintptr_t start,
                   bool no_return, uintptr_t place, uint8_t *slot, uint32_t index, site &out) {
    {
        const size_t to_end = fn.start + d.size - start;
        // With fewer than 5 bytes before the `syscall`, the jump would cover it: the range then
        // goes on past it, and the site becomes an int3 on its first byte (return_inside), so
        // the `syscall`'s bytes stay as they are there too (exit and exit_group excepted).
        const size_t cover = sc - start >= 5 || no_return ? sc + 2 - start : sc + 3 - start;
        auto reloc = hook_detail::relocate(start, to_end, to_end, place, cover);
        if (!reloc)
            return false;
        const uintptr_t end = start + reloc->patched;
        // No direct branch may land strictly inside the replaced bytes, nor another `syscall`.
        auto t = std::upper_bound(d.targets.begin(), d.targets.end(), start);
        if (t != d.targets.end() && *t < end)
            return false;
        bool other = false;
        for (uintptr_t s : d.syscalls)
            other = other || (s != sc && s >= start && s < end);
        if (other)
            return false;
        size_t k = 0;
        while (k < reloc->from.size() && start + reloc->from[k] != sc)
            ++k;
        if (k + 1 >= reloc->from.size())
            return false;
        std::vector<uint8_t> code = reloc->code;
        const size_t thunk_at = code.size();
        const size_t rel = thunk_at - (reloc->to[k] + 2);
        if (rel > 127)
            return false;
        code[reloc->to[k]] = 0xEB; // jmp rel8 to the thunk, in place of the `syscall`
        code[reloc->to[k] + 1] = static_cast<uint8_t>(rel);
        const uintptr_t native = gate_stub_slot(index);
        auto th = thunk(index, native);
        code.insert(code.end(), th.begin(), th.end());
        if (code.size() > site_space)
            return false;
        const int64_t jump = static_cast<int64_t>(place) - static_cast<int64_t>(start + 5);
        if (jump < INT32_MIN || jump > INT32_MAX)
            return false;
        std::memcpy(slot, code.data(), code.size());
        out.start = start;
        out.syscall_at = sc;
        out.trampoline = place;
        out.syscall_index = k;
        out.reloc = std::move(*reloc);
        out.return_inside = k + 2 < out.reloc.from.size() && !no_return;
        // The `syscall` last: the jump and its fill stop before it (prepare_site made room), and
        // the trampoline, which copies it too, jumps back behind it.
        const bool syscall_last = k + 2 == out.reloc.from.size() && sc - start >= 5;
        const size_t written = syscall_last ? sc - start : out.reloc.patched;
        const auto *orig = reinterpret_cast<const uint8_t *>(start);
        out.original.assign(orig, orig + written);
        out.patch.assign(written, 0xCC); // int3 behind the jump: never executed
        out.patch[0] = 0xE9;
        const auto rel32 = static_cast<int32_t>(jump);
        std::memcpy(&out.patch[1], &rel32, 4);
        site_slots[index].after = sc + 2;
        site_slots[index].resume = place + out.reloc.to[k + 1];
        return true;
    }
    return false;
}

// --- Function bounds from the unwind tables -------------------------------------------------

// Every function the compiler emitted has an FDE in .eh_frame (static and hidden ones, which
// no dynamic symbol names, and the cold parts split off functions, each a range of its own).
// Reads the .eh_frame_hdr search table of a loaded object; FDEs whose CIE does not encode
// pc_begin as a 4-byte pc-relative value (what GCC and Clang emit) are skipped.
uint64_t read_uleb(const uint8_t *&p, const uint8_t *end) {
    uint64_t v = 0;
    int shift = 0;
    while (p < end) {
        const uint8_t b = *p++;
        if (shift < 64)
            v |= uint64_t{b & 0x7Fu} << shift;
        shift += 7;
        if ((b & 0x80) == 0)
            break;
    }
    return v;
}

// The pointer encoding of an FDE's pc_begin, from its CIE's augmentation; -1 when unknown.
int fde_encoding(const uint8_t *cie, uintptr_t lo, uintptr_t hi, bool &signal_frame) {
    if (reinterpret_cast<uintptr_t>(cie) < lo || reinterpret_cast<uintptr_t>(cie) + 16 > hi)
        return -1;
    uint32_t len = 0;
    std::memcpy(&len, cie, 4);
    if (len == 0 || len == 0xFFFFFFFF)
        return -1;
    const uint8_t *end = cie + 4 + len;
    if (reinterpret_cast<uintptr_t>(end) > hi)
        return -1;
    const uint8_t *p = cie + 8; // past length and the zero id
    const uint8_t version = *p++;
    const char *aug = reinterpret_cast<const char *>(p);
    const size_t aug_len = strnlen(aug, static_cast<size_t>(end - p));
    p += aug_len + 1;
    if (aug[0] != 'z')
        return -1;
    (void)read_uleb(p, end); // code alignment
    (void)read_uleb(p, end); // data alignment (sleb; only skipped)
    if (version == 1)
        ++p; // return address register, one byte
    else
        (void)read_uleb(p, end);
    (void)read_uleb(p, end); // augmentation data length
    int enc = 0;             // absolute, native size, unless 'R' says otherwise
    for (size_t i = 1; i < aug_len && p < end; ++i) {
        switch (aug[i]) {
        case 'R':
            enc = *p++;
            break;
        case 'L':
            ++p;
            break;
        case 'P': {
            const uint8_t penc = *p++;
            switch (penc & 0x0F) {
            case 0x00:
            case 0x04:
            case 0x0C:
                p += 8;
                break;
            case 0x02:
            case 0x0A:
                p += 2;
                break;
            case 0x03:
            case 0x0B:
                p += 4;
                break;
            default:
                return -1;
            }
            break;
        }
        case 'S':
            signal_frame = true;
            break;
        case 'B':
            break;
        default:
            return -1;
        }
    }
    return enc;
}

std::vector<function> unwind_functions(uintptr_t hdr, uintptr_t lo, uintptr_t hi) {
    std::vector<function> out;
    const auto *h = reinterpret_cast<const uint8_t *>(hdr);
    // version 1; eh_frame_ptr encoding; fde_count encoding; table encoding (datarel sdata4).
    if (h[0] != 1 || h[2] != 0x03 || h[3] != 0x3B)
        return out;
    const uint8_t *p = h + 4;
    switch (h[1]) {
    case 0x1B: // pcrel sdata4
    case 0x03:
        p += 4;
        break;
    default:
        return out;
    }
    uint32_t count = 0;
    std::memcpy(&count, p, 4);
    p += 4;
    for (uint32_t i = 0; i < count; ++i, p += 8) {
        int32_t fde_off = 0;
        std::memcpy(&fde_off, p + 4, 4);
        const auto *fde = reinterpret_cast<const uint8_t *>(hdr + static_cast<intptr_t>(fde_off));
        if (reinterpret_cast<uintptr_t>(fde) < lo || reinterpret_cast<uintptr_t>(fde) + 16 > hi)
            continue;
        int32_t cie_off = 0;
        std::memcpy(&cie_off, fde + 4, 4);
        bool signal_frame = false;
        const int enc = fde_encoding(fde + 4 - cie_off, lo, hi, signal_frame);
        if (enc != 0x1B)
            continue;
        int32_t begin = 0, range = 0;
        std::memcpy(&begin, fde + 8, 4);
        std::memcpy(&range, fde + 12, 4);
        uintptr_t at = reinterpret_cast<uintptr_t>(fde + 8) + static_cast<intptr_t>(begin);
        // A signal frame's FDE (glibc's __restore_rt) starts one byte before the code, inside
        // the padding before it, as unwinders look up the return address minus one: decoding
        // from there would find instructions that are not the code's.
        if (signal_frame && range > 1) {
            ++at;
            --range;
        }
        if (range > 0)
            out.push_back({at, static_cast<uintptr_t>(range)});
    }
    return out;
}

struct loaded_object {
    std::string path;
    std::vector<map_line> exec; // executable segments, as runtime ranges
    uintptr_t eh_frame_hdr = 0;
    uintptr_t lo = 0, hi = 0; // the object's mapped range
};

int collect_object(dl_phdr_info *info, size_t, void *data) {
    auto *objects = static_cast<std::vector<loaded_object> *>(data);
    loaded_object o;
    o.path = info->dlpi_name != nullptr ? info->dlpi_name : "";
    o.lo = UINTPTR_MAX;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        const uintptr_t at = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD) {
            o.lo = std::min(o.lo, at);
            o.hi = std::max(o.hi, at + ph.p_memsz);
            if ((ph.p_flags & PF_X) != 0) {
                map_line m;
                m.start = at;
                m.end = at + ph.p_memsz;
                m.offset = ph.p_offset;
                m.exec = true;
                o.exec.push_back(m);
            }
        } else if (ph.p_type == PT_GNU_EH_FRAME) {
            o.eh_frame_hdr = at;
        }
    }
    if (!o.exec.empty())
        objects->push_back(std::move(o));
    return 0;
}

// Rewrites the `syscall` sites of objects not scanned yet; returns (sites added, refused).
std::pair<size_t, size_t> scan_new_objects() {
    size_t added = 0, refused = 0;
    std::vector<loaded_object> objects;
    dl_iterate_phdr(collect_object, &objects);
    const auto self = reinterpret_cast<uintptr_t>(&bpftime_syscall_site_entry);
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    for (loaded_object &o : objects) {
        // The shared object holding this code is left alone (its system calls are the host's
        // own). A program linking this code statically is scanned, and so is the vDSO (its
        // fallbacks, clock_gettime of a clock it cannot read itself, make system calls).
        // (Its pages are written through /proc/self/mem by the live patcher only.)
        if (!hook_detail::live_patching_available() &&
            (o.path.find("linux-vdso") != std::string::npos ||
             o.path.find("linux-gate") != std::string::npos))
            continue;
        if (!scanned_objects().insert({0, o.exec.front().start}).second)
            continue;
        for (const map_line &m : o.exec)
            covered_ranges().emplace_back(m.start, m.end);
        if (!o.path.empty() && self >= o.lo && self < o.hi)
            continue;
        std::vector<function> fns;
        if (o.eh_frame_hdr != 0)
            fns = unwind_functions(o.eh_frame_hdr, o.lo, o.hi);
        if (fns.empty()) {
            char exe[4096];
            std::string path = o.path;
            if (path.empty()) {
                const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
                path = n > 0 ? std::string(exe, static_cast<size_t>(n)) : "";
            }
            fns = functions_of(path, o.exec);
        }
        std::erase_if(fns, [&](const function &fn) {
            for (const map_line &m : o.exec)
                if (fn.start >= m.start && fn.start < m.end && fn.size <= m.end - fn.start)
                    return false;
            return true;
        });
        std::sort(fns.begin(), fns.end(),
                  [](const function &a, const function &b) { return a.start < b.start; });
        // Hand-written code may leave a `syscall` after the range its unwind entry covers
        // (glibc's clone3): each range runs on to the next one (at most 256 bytes more, in the
        // same segment), the part after its own range decoded while it decodes.
        for (size_t i = 0; i < fns.size(); ++i) {
            uintptr_t limit = fns[i].start + fns[i].size + 256;
            if (i + 1 < fns.size())
                limit = std::min(limit, fns[i + 1].start);
            for (const map_line &m : o.exec)
                if (fns[i].start >= m.start && fns[i].start < m.end)
                    limit = std::min(limit, m.end);
            fns[i].core = fns[i].size;
            if (limit > fns[i].start + fns[i].size)
                fns[i].size = limit - fns[i].start;
        }
        // Every function is decoded for its direct branches: a cold part split off a function
        // may jump back into it, so the targets of the whole object count.
        std::vector<std::pair<function, decoded_function>> found;
        std::vector<uintptr_t> all_targets;
        size_t count = 0;
        for (const function &fn : fns) {
            decoded_function d;
            if (!decode_function(fn, d)) {
                const auto *b = reinterpret_cast<const uint8_t *>(fn.start);
                for (size_t i = 0; i + 1 < fn.size; ++i)
                    refused += b[i] == 0x0F && b[i + 1] == 0x05 ? 1 : 0;
                continue;
            }
            all_targets.insert(all_targets.end(), d.targets.begin(), d.targets.end());
            if (d.syscalls.empty())
                continue;
            count += d.syscalls.size();
            found.emplace_back(fn, std::move(d));
        }
        if (count == 0)
            continue;
        std::sort(all_targets.begin(), all_targets.end());
        for (auto &f : found)
            f.second.targets = all_targets;
        const size_t bytes = (count * site_space + page - 1) & ~(page - 1);
        auto chunk = hook_detail::map_near(o.exec.front().start, bytes);
        if (!chunk) {
            refused += count;
            continue;
        }
        covered_ranges().emplace_back(*chunk, *chunk + bytes);
        auto *mem = reinterpret_cast<uint8_t *>(*chunk);
        size_t used = 0;
        for (auto &[fn, d] : found) {
            for (uintptr_t sc : d.syscalls) {
                if (all_sites().size() >= max_sites) {
                    ++refused;
                    continue;
                }
                site s;
                const auto index = static_cast<uint32_t>(all_sites().size());
                if (prepare_site(fn, d, sc, *chunk + used, mem + used, index, s)) {
                    all_sites().push_back(std::move(s));
                    used += site_space;
                    ++added;
                } else {
                    ++refused;
                }
            }
        }
        ::mprotect(mem, bytes, PROT_READ | PROT_EXEC);
    }
    return {added, refused};
}

// Where a thread meeting a site's temporary int3 goes: its trampoline, which does what the
// replaced instructions do whether the site is being written or restored (trampolines are
// never freed). Sorted by address; rebuilt when sites are added, the old table kept (a thread
// in the SIGTRAP handler may still read it).
const std::vector<hook_detail::trap_redirect> &site_redirects() {
    // Never destroyed either: the tables stay reachable until the process ends.
    static auto *tables = new std::vector<const std::vector<hook_detail::trap_redirect> *>;
    static size_t for_sites = SIZE_MAX;
    if (tables->empty() || for_sites != all_sites().size()) {
        auto *t = new std::vector<hook_detail::trap_redirect>;
        for (const site &s : all_sites())
            t->push_back({s.start, s.trampoline});
        std::sort(t->begin(), t->end(),
                  [](const auto &a, const auto &b) { return a.address < b.address; });
        tables->push_back(t);
        for_sites = all_sites().size();
    }
    return *tables->back();
}

// A thread meeting the int3 of a routed site goes through its trampoline.
void route_site(void *user, ucontext_t *context) {
    context->uc_mcontext.gregs[REG_RIP] =
        static_cast<greg_t>(static_cast<const site *>(user)->trampoline);
}

// Writes the sites' patch (or original) bytes while the other threads run (text_poke_bp for
// the whole batch). A site whose `syscall` returns inside the replaced bytes cannot take the
// jump (a thread blocked in that call would come back into its middle): it gets an int3 on
// its first byte only, for good, and a thread meeting it is sent to the trampoline by the
// SIGTRAP handler (a signal per call, but no byte a returning thread runs changes).
result<void> write_sites_live(bool install) {
    std::vector<hook_detail::live_patch> patches;
    std::vector<site *> todo;
    for (site &s : all_sites()) {
        if (s.patched == install)
            continue;
        if (s.return_inside) {
            auto r = install ? hook_detail::add_trap_site(s.start, s.original[0], route_site, &s)
                             : hook_detail::remove_trap_site(s.start, s.original[0]);
            if (r || !install)
                s.patched = install && r.ok();
            continue;
        }
        const auto &now = install ? s.original : s.patch;
        if (std::memcmp(reinterpret_cast<const void *>(s.start), now.data(), now.size()) != 0) {
            // The code changed (unmapped and mapped again): not ours any more, left to the
            // fallback.
            s.patched = false;
            continue;
        }
        hook_detail::live_patch p;
        p.address = s.start;
        p.bytes = install ? s.patch.data() : s.original.data();
        p.expect = now.data();
        p.n = s.original.size();
        p.redirect = s.trampoline;
        p.wait_inside = true;
        patches.push_back(p);
        todo.push_back(&s);
    }
    const auto &redirects = site_redirects();
    if (auto r = hook_detail::patch_live_batch(patches, redirects.data(), redirects.size()); !r)
        return r;
    for (site *s : todo)
        s->patched = install;
    return {};
}

// Writes every site's patch (or original) bytes with the other threads stopped.
result<void> write_sites(bool install) {
    if (hook_detail::live_patching_available())
        return write_sites_live(install);
    auto maps = hook_detail::read_maps();
    if (!maps)
        return std::move(maps).err();
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    std::vector<hook_detail::page_prot> pages;
    std::vector<site *> todo;
    for (site &s : all_sites()) {
        if (s.patched == install)
            continue;
        if (install && std::memcmp(reinterpret_cast<const void *>(s.start), s.original.data(),
                                   s.original.size()) != 0)
            continue; // the code changed (unmapped and mapped again): left to the fallback
        todo.push_back(&s);
        for (uintptr_t p = s.start & ~(page - 1); p < s.start + s.original.size(); p += page) {
            const auto *m = hook_detail::find_mapping(*maps, p);
            if (m == nullptr)
                return make_error(EFAULT, "the code at " + hex(p) + " is no longer mapped");
            pages.push_back({p, hook_detail::prot_of(*m)});
        }
    }
    if (todo.empty())
        return {};
    hook_detail::sort_unique_pages(pages);
    std::sort(todo.begin(), todo.end(),
              [](const site *a, const site *b) { return a->start < b->start; });
    auto done = hook_detail::stop_threads_and(
        [&] {
            for (const hook_detail::page_prot &p : pages)
                if (mprotect(reinterpret_cast<void *>(p.page), page,
                             PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
                    return errno;
            for (site *s : todo) {
                const auto &bytes = install ? s->patch : s->original;
                auto *dst = reinterpret_cast<volatile uint8_t *>(s->start);
                for (size_t i = 0; i < bytes.size(); ++i)
                    dst[i] = bytes[i];
                s->patched = install;
            }
            for (const hook_detail::page_prot &p : pages)
                mprotect(reinterpret_cast<void *>(p.page), page, p.prot);
            return 0;
        },
        [&](uintptr_t rip) {
            // A thread inside replaced bytes goes to their copy (and back when restoring).
            for (const site *s : todo) {
                const auto &r = s->reloc;
                for (size_t i = 0; i < r.from.size(); ++i) {
                    if (install && i > 0 && i + 1 < r.from.size() && rip == s->start + r.from[i])
                        return s->trampoline + r.to[i];
                    if (!install && rip == s->trampoline + r.to[i])
                        return s->start + r.from[i];
                }
            }
            return rip;
        });
    if (!done)
        return std::move(done).err();
    return {};
}

// Whether some executable code of the process may make a system call that no rewritten site
// catches; why, in why. Reads /proc/self/maps: code outside the covered ranges that cannot be
// read, that is writable or shared (it may change without a call this file sees), or that
// holds the bytes of a `syscall` anywhere.
bool uncovered_code(size_t refused, std::string &why) {
    if (refused > 0) {
        why = std::to_string(refused) + " system call site(s) could not be rewritten";
        return true;
    }
    FILE *f = std::fopen("/proc/self/maps", "re");
    if (f == nullptr) {
        why = "/proc/self/maps cannot be read";
        return true;
    }
    char line[4096];
    bool needed = false;
    while (!needed && std::fgets(line, sizeof line, f)) {
        unsigned long start = 0, end = 0;
        char perms[8] = {};
        int path_at = 0;
        if (std::sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &start, &end, perms, &path_at) < 3)
            continue;
        std::string path = path_at > 0 ? std::string(line + path_at) : "";
        while (!path.empty() && (path.back() == '\n' || path.back() == ' '))
            path.pop_back();
        if (perms[2] != 'x' || path == "[vsyscall]" || (start >= gate && start < gate + gate_size))
            continue;
        bool covered = false;
        for (const auto &[lo, hi] : covered_ranges())
            covered = covered || (start < hi && end > lo);
        if (covered)
            continue;
        const std::string name = hex(start) + (path.empty() ? "" : " (" + path + ")");
        if (perms[0] != 'r') {
            why = "executable memory at " + name + " cannot be read";
            needed = true;
        } else if (perms[1] == 'w' || perms[3] == 's') {
            why = "executable memory at " + name + " may change unseen (writable or shared)";
            needed = true;
        } else if (may_hold_syscall(reinterpret_cast<const uint8_t *>(start), end - start)) {
            why = "executable memory at " + name + " holds a syscall instruction not rewritten";
            needed = true;
        }
    }
    std::fclose(f);
    return needed;
}

// Decides (under arm_mu) whether the registered threads need Syscall User Dispatch now.
void decide_dispatch(size_t refused) {
    const auto mode = static_cast<dispatch_mode>(g_mode.load());
    bool wanted = false;
    std::string why;
    if (!is_armed.load()) {
        why = "no system call is intercepted";
    } else if (mode == dispatch_mode::always) {
        wanted = true;
        why = "always on (BPFTIME_SYSCALL_DISPATCH=always)";
    } else if (mode == dispatch_mode::never) {
        why = "off (BPFTIME_SYSCALL_DISPATCH=never)";
    } else {
        const uint64_t events = g_exec_events.load(std::memory_order_acquire);
        wanted = uncovered_code(refused, why);
        // Executable memory mapped while this looked: its watch may have turned it on after
        // the maps were read.
        if (!wanted && g_exec_events.load(std::memory_order_acquire) != events) {
            wanted = true;
            why = "executable memory was mapped meanwhile";
        }
        if (!wanted)
            why = "every system call site is rewritten";
    }
    g_sud_reason = why;
    if (wanted != g_sud_wanted.load())
        publish_dispatch_wish(wanted);
    sync_thread_dispatch();
}

size_t g_refused = 0;      // sites found and not rewritten, as of the last arm (under arm_mu)
size_t g_scan_refused = 0; // sites the scans refused, every object so far (under arm_mu)

// Rewrites what was mapped since the last look and decides again (under arm_mu).
result<arm_report> rearm() {
    ++t_depth; // the calls made here are the host's own
    const size_t before = all_sites().size();
    auto [added, refused] = scan_new_objects();
    for (size_t i = before; i < all_sites().size(); ++i)
        finish_gate_stub(static_cast<uint32_t>(i));
    auto written = write_sites(true);
    --t_depth;
    if (!written)
        return written.err();
    is_armed.store(true);
    size_t live = 0;
    for (const site &s : all_sites())
        live += s.patched ? 1 : 0;
    (void)added;
    g_scan_refused += refused;
    g_refused = g_scan_refused + (all_sites().size() - live);
    const bool watch = static_cast<dispatch_mode>(g_mode.load()) == dispatch_mode::when_needed;
    g_watch.store(watch);
    for (uint64_t nr : {SYS_mmap, SYS_mprotect, SYS_pkey_mprotect})
        update_thunk(nr);
    decide_dispatch(g_refused);
    // Sites found but not written now (their call returns inside the replaced bytes, or their
    // code changed) are the fallback's too.
    return arm_report{live, g_refused, g_sud_wanted.load(), g_sud_reason};
}

} // namespace

result<void> start(const handlers &h) {
    std::lock_guard lock(arm_mu);
    g_handlers = h;
    if (started.load()) {
        // Numbers take the short path only while there is a handler for it.
        for (uint64_t nr = 0; nr < table_size; ++nr)
            update_thunk(nr);
        return {};
    }
    int fd = static_cast<int>(::syscall(SYS_memfd_create, "bpftime-syscall-gate", MFD_CLOEXEC));
    if (fd < 0)
        return make_error(errno, std::string("memfd_create for the syscall gate: ") +
                                     std::strerror(errno));
    if (::ftruncate(fd, gate_size) != 0) {
        int e = errno;
        ::close(fd);
        return make_error(e, std::string("sizing the syscall gate: ") + std::strerror(e));
    }
    void *rx = ::mmap(nullptr, gate_size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    void *rw = ::mmap(nullptr, gate_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (rx == MAP_FAILED || rw == MAP_FAILED)
        return make_error(ENOMEM, "cannot map the syscall gate");
    void *keys =
        ::mmap(nullptr, native_capacity * (sizeof(uintptr_t) + 1) + max_sites * sizeof(site_slot),
               PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (keys == MAP_FAILED)
        return make_error(ENOMEM, "cannot map the syscall site tables");
    native_keys = static_cast<std::atomic<uintptr_t> *>(keys);
    site_slots = reinterpret_cast<site_slot *>(native_keys + native_capacity);
    native_ready = reinterpret_cast<std::atomic<uint8_t> *>(site_slots + max_sites);
    gate = reinterpret_cast<uintptr_t>(rx);
    gate_rw = static_cast<uint8_t *>(rw);
    const uint8_t raw[] = {
        0x48, 0x89, 0xF8,             // mov rax, rdi
        0x48, 0x89, 0xF7,             // mov rdi, rsi
        0x48, 0x89, 0xD6,             // mov rsi, rdx
        0x48, 0x89, 0xCA,             // mov rdx, rcx
        0x4D, 0x89, 0xC2,             // mov r10, r8
        0x4D, 0x89, 0xC8,             // mov r8, r9
        0x4C, 0x8B, 0x4C, 0x24, 0x08, // mov r9, [rsp+8]
        0x0F, 0x05,                   // syscall
        0xC3,                         // ret
    };
    std::memcpy(gate_rw + raw_fn_at, raw, sizeof raw);
    const uint8_t restorer[] = {0xB8, 0x0F, 0, 0, 0, 0x0F, 0x05, 0x0F, 0x0B}; // rt_sigreturn
    std::memcpy(gate_rw + restorer_at, restorer, sizeof restorer);
    auto common = common_stub(false);
    auto after = common_stub(true);
    auto short_path = short_stub(true);
    auto plain = short_stub(false);
    if (common.size() > after_at - common_at || after.size() > short_at - after_at ||
        short_path.size() > plain_at - short_at || plain.size() > native_first - plain_at)
        return make_error(EOVERFLOW, "the syscall gate's stubs outgrew their room");
    std::memcpy(gate_rw + common_at, common.data(), common.size());
    std::memcpy(gate_rw + after_at, after.data(), after.size());
    std::memcpy(gate_rw + short_at, short_path.data(), short_path.size());
    std::memcpy(gate_rw + plain_at, plain.data(), plain.size());
    stub_entries[thunk_common] = gate + common_at;
    stub_entries[thunk_short] = gate + short_at;
    stub_entries[thunk_plain] = gate + plain_at;
    raw_fn = reinterpret_cast<raw_fn_t>(gate + raw_fn_at);
    for (uint64_t nr = 0; nr < table_size; ++nr)
        update_thunk(nr);

    kernel_sigaction sa{};
    sa.handler = on_sigsys;
    sa.flags = SA_SIGINFO | SA_NODEFER | sa_restorer_flag;
    sa.restorer = reinterpret_cast<void (*)()>(gate + restorer_at);
    if (long r = raw_fn(SYS_rt_sigaction, SIGSYS, reinterpret_cast<long>(&sa), 0, 8, 0, 0); r < 0)
        return make_error(static_cast<int>(-r), std::string("cannot handle SIGSYS: ") +
                                                    std::strerror(static_cast<int>(-r)));
    // The kernel must offer Syscall User Dispatch (the fallback) even while nothing needs it.
    if (::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, gate, gate_size,
                const_cast<char *>(&selector)) != 0) {
        int e = errno;
        return make_error(e, std::string("Syscall User Dispatch (Linux 5.11 or later): ") +
                                 std::strerror(e));
    }
    (void)raw_fn(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0, 0);
    if (const char *m = std::getenv("BPFTIME_SYSCALL_DISPATCH")) {
        const std::string v = m;
        g_mode.store(static_cast<int>(v == "always"  ? dispatch_mode::always
                                      : v == "never" ? dispatch_mode::never
                                                     : dispatch_mode::when_needed));
    }
    hook_detail::use_signal_restorer(gate + restorer_at);
    started.store(true);
    return enable_thread();
}

result<void> enable_thread() {
    if (!started.load())
        return make_error(EINVAL, "syscall interception is not started");
    // A fork child's copy of these says what its parent's thread had; the kernel gives the
    // child none (the clone stubs turn it off there).
    if (t_sud_on)
        (void)raw_fn(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0, 0);
    t_sud_on = false;
    t_registered = true;
    t_sud_gen = g_sud_gen.load(std::memory_order_acquire);
    if (g_sud_wanted.load(std::memory_order_acquire)) {
        set_thread_dispatch(true);
        if (!t_sud_on)
            return make_error(EINVAL, "Syscall User Dispatch could not be turned on for thread " +
                                          std::to_string(raw_syscall(SYS_gettid)));
    }
    return {};
}

void disable_thread() {
    t_registered = false;
    if (raw_fn == nullptr) {
        (void)raw_syscall(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0);
        return;
    }
    set_thread_dispatch(false);
}

void set_dispatch_mode(dispatch_mode mode) {
    std::lock_guard lock(arm_mu);
    g_mode.store(static_cast<int>(mode));
    if (is_armed.load())
        (void)rearm();
}

dispatch_mode current_dispatch_mode() {
    return static_cast<dispatch_mode>(g_mode.load());
}

bool dispatch_wanted() {
    return g_sud_wanted.load();
}

std::string dispatch_reason() {
    std::lock_guard lock(arm_mu);
    return g_sud_reason;
}

bool thread_dispatch_on() {
    sync_thread_dispatch();
    return t_sud_on;
}

int dispatch_threads() {
    return g_sud_threads.load();
}

void set_thread_internal(bool internal) {
    t_internal = internal;
}

bool thread_internal() {
    return t_internal;
}

void set_wanted(uint64_t nr, bool wanted, bool with_exit, bool full_regs, bool vector_free) {
    if (nr < table_size) {
        const uint8_t v = !wanted ? 0
                                  : static_cast<uint8_t>(want_call | (with_exit ? want_exit : 0) |
                                                         (full_regs ? want_regs : 0) |
                                                         (vector_free ? want_plain : 0));
        __atomic_store_n(&wanted_table[nr], v, __ATOMIC_RELAXED);
        update_thunk(nr);
    }
}

void set_wanted_above(bool wanted) {
    wanted_high.store(wanted);
}

result<arm_report> arm() {
    std::lock_guard lock(arm_mu);
    if (!started.load())
        return make_error(EINVAL, "syscall interception is not started");
    return rearm();
}

result<void> disarm() {
    std::lock_guard lock(arm_mu);
    is_armed.store(false);
    g_watch.store(false);
    for (uint64_t nr : {SYS_mmap, SYS_mprotect, SYS_pkey_mprotect})
        update_thunk(nr);
    decide_dispatch(0);
    ++t_depth;
    auto r = write_sites(false);
    --t_depth;
    return r;
}

bool armed() {
    return is_armed.load();
}

long raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
    if (raw_fn == nullptr) {
        const long r = ::syscall(nr, a1, a2, a3, a4, a5, a6);
        return r < 0 ? -errno : r;
    }
    return raw_fn(nr, a1, a2, a3, a4, a5, a6);
}

uint64_t trapped_calls() {
    return n_trapped.load();
}

namespace {

// Calls through rewritten sites that took path (0 the common stub, 1 the short one, 2 the plain
// one).
uint64_t calls_by_path(int path) {
    uint64_t total = 0;
    for (const auto &slot : rewritten_by_thread)
        total += slot.by_path[path].load(std::memory_order_relaxed);
    return total;
}

} // namespace

uint64_t rewritten_calls() {
    return calls_by_path(0) + calls_by_path(1) + calls_by_path(2);
}

uint64_t short_path_calls() {
    return calls_by_path(1) + calls_by_path(2);
}

uint64_t plain_path_calls() {
    return calls_by_path(2);
}

} // namespace bpftime::syscall_intercept

// Called by the common stub with the saved registers of a rewritten site's call.
extern "C" void bpftime_syscall_site_entry(bpftime::pt_regs *frame) {
    using namespace bpftime::syscall_intercept;
    auto *bytes = reinterpret_cast<uint8_t *>(frame);
    auto *slot = reinterpret_cast<uint64_t *>(bytes + frame_flags_at + 8);
    const site_slot &s = site_slots[*slot];
    const int saved_errno = errno;
    std::memcpy(&frame->eflags, bytes + frame_flags_at, 8);
    frame->rsp = reinterpret_cast<uintptr_t>(bytes) + frame_slot_at + 8 + 128;
    frame->rip = s.after;
    frame->orig_rax = frame->rax;
    const outcome o = dispatch(*frame, false);
    if (o == outcome::done)
        *slot = s.resume;
    else if (o == outcome::native_then_exit)
        *slot = s.native + (2 + exit_kind(frame->orig_rax)) * native_stub_size;
    else
        *slot = is_clone(frame->orig_rax) ? s.native_clone : s.native;
    errno = saved_errno;
}

// Called by the short stub with the record of a call of a number that takes the short path
// (the continuation slot behind the saved flags, the index of the site in it).
namespace bpftime::syscall_intercept {
namespace {

// The short path's call when its handler went away since the thunk read the table: the full
// enter handler, on registers made from the record.
[[gnu::noinline, gnu::cold]] void enter_from_record(const handlers &h, const enter_record &rec) {
    if (h.enter == nullptr)
        return;
    pt_regs r{};
    r.orig_rax = r.rax = rec.nr;
    r.rdi = rec.args[0];
    r.rsi = rec.args[1];
    r.rdx = rec.args[2];
    r.r10 = rec.args[3];
    r.r8 = rec.args[4];
    r.r9 = rec.args[5];
    h.enter(h.user, &r);
}

// The calling thread's errno, found once (a call into libc otherwise, twice per call).
__attribute__((tls_model("initial-exec"))) thread_local int *t_errno = nullptr;

int &thread_errno() {
    int *e = t_errno;
    if (e == nullptr) [[unlikely]]
        e = t_errno = &errno;
    return *e;
}

} // namespace
} // namespace bpftime::syscall_intercept

extern "C" void bpftime_syscall_short_entry(bpftime::syscall_intercept::enter_record *rec) {
    using namespace bpftime::syscall_intercept;
    auto *slot = reinterpret_cast<uint64_t *>(reinterpret_cast<uint8_t *>(rec) + sizeof *rec + 8);
    *slot = site_slots[*slot].resume;
    sync_thread_dispatch();
    if (t_internal || t_depth > 0) [[unlikely]]
        return;
    const handlers &h = g_handlers;
    int &err = thread_errno();
    const int saved_errno = err;
    count_rewritten(1);
    ++t_depth;
    if (h.enter_record != nullptr) [[likely]]
        h.enter_record(h.user, rec);
    else
        enter_from_record(h, *rec);
    --t_depth;
    err = saved_errno;
}

// The short entry and a record handler with the whole vector state kept, for the plain entry's
// calls that need it.
BPFTIME_KEEPING_VECTOR_STATE(bpftime_syscall_short_entry_keeping, bpftime_syscall_short_entry);
extern "C" void bpftime_syscall_short_entry_keeping(bpftime::syscall_intercept::enter_record *rec);

namespace {

void run_record_handler(void (*fn)(void *, bpftime::syscall_intercept::enter_record *), void *user,
                        bpftime::syscall_intercept::enter_record *rec) {
    fn(user, rec);
}

} // namespace

BPFTIME_KEEPING_VECTOR_STATE(bpftime_syscall_record_handler_keeping, run_record_handler);
extern "C" void bpftime_syscall_record_handler_keeping(
    void (*fn)(void *, bpftime::syscall_intercept::enter_record *), void *user,
    bpftime::syscall_intercept::enter_record *rec);

namespace bpftime::syscall_intercept {

__attribute__((target("general-regs-only"))) void
call_keeping_vector_state(void (*fn)(void *user, enter_record *rec), void *user,
                          enter_record *rec) {
    bpftime_syscall_record_handler_keeping(fn, user, rec);
}

} // namespace bpftime::syscall_intercept

// Called by the plain short stub, which saved no vector register: the short entry's common case
// (the thread's Syscall User Dispatch setting current, its counter slot and errno found, no
// handler running on it, a plain handler set) in code that touches none (general-purpose
// registers only, calling only the plain handler); every other case is the short entry itself
// with the vector state kept. std::atomic's members are builtins here: they cannot be inlined
// into code of another target.
extern "C" __attribute__((no_sanitize("address"), target("general-regs-only"))) void
bpftime_syscall_plain_entry(bpftime::syscall_intercept::enter_record *rec) {
    using namespace bpftime::syscall_intercept;
    static_assert(sizeof g_sud_gen == sizeof(uint32_t) && decltype(g_sud_gen)::is_always_lock_free);
    const uint32_t gen =
        __atomic_load_n(reinterpret_cast<const uint32_t *>(&g_sud_gen), __ATOMIC_ACQUIRE);
    void (*const plain)(void *, enter_record *) = g_handlers.enter_record_plain;
    rewritten_slot *const counts = t_rewritten;
    int *const err = t_errno;
    if (t_sud_gen != gen || t_internal || t_depth > 0 || plain == nullptr || counts == nullptr ||
        err == nullptr) [[unlikely]] {
        bpftime_syscall_short_entry_keeping(rec);
        return;
    }
    auto *slot = reinterpret_cast<uint64_t *>(reinterpret_cast<uint8_t *>(rec) + sizeof *rec + 8);
    *slot = site_slots[*slot].resume;
    const int saved_errno = *err;
    static_assert(sizeof counts->by_path[2] == sizeof(uint64_t));
    auto *n = reinterpret_cast<uint64_t *>(&counts->by_path[2]);
    __atomic_store_n(n, __atomic_load_n(n, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    ++t_depth;
    plain(g_handlers.user, rec);
    --t_depth;
    *err = saved_errno;
}

// Called by the after stub with the registers behind a native clone, clone3, fork or vfork:
// rax is the result (0 in a child), orig_rax the number; rip the continuation.
extern "C" void bpftime_syscall_native_exit_entry(bpftime::pt_regs *frame) {
    using namespace bpftime::syscall_intercept;
    // A clone child starts with every signal blocked and the parent's Syscall User Dispatch:
    // a trapped call would end the process, so that goes first (hosts turn it on again).
    if (frame->rax == 0 && is_clone(frame->orig_rax))
        (void)raw_fn(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0, 0);
    auto *bytes = reinterpret_cast<uint8_t *>(frame);
    const int saved_errno = errno;
    std::memcpy(&frame->eflags, bytes + frame_flags_at, 8);
    frame->rsp = reinterpret_cast<uintptr_t>(bytes) + frame_slot_at + 8 + 128;
    std::memcpy(&frame->rip, bytes + frame_slot_at, 8);
    const handlers h = g_handlers;
    if (h.exit != nullptr && !t_internal && t_depth == 0) {
        ++t_depth;
        h.exit(h.user, frame);
        --t_depth;
    }
    errno = saved_errno;
}
