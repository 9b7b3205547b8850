// SPDX-License-Identifier: MIT
// The inline hook engine on real code: C++ functions of this binary, hook_targets.S and libc.
#include "blocked_threads.hpp"
#include "bpftime/hook/inline_hook.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <linux/membarrier.h>
#include <mutex>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

using bpftime::hook_site;
using bpftime::inline_hook;
using bpftime::pt_regs;

namespace {
struct two_words {
    uint64_t a, b;
};
} // namespace

// clang's -fsanitize=function puts a jump over type data at the start of C++ functions, which
// is then all a hook could relocate: keep these functions plain.
#if defined(__clang__)
#define HK_PLAIN __attribute__((noinline, used, no_sanitize("function")))
#else
#define HK_PLAIN __attribute__((noinline, used))
#endif

extern "C" {
long hk_riprel(long x);
long hk_riprel_mov(long x);
int hk_jcc(int x);
long hk_jrcxz(long a, long b, long c, long d);
long hk_call(long x);
unsigned long hk_fact(unsigned long n);
two_words hk_where();
unsigned long hk_flags_after_stc();
two_words hk_flags_around(unsigned long flags);
unsigned long hk_flags();
int hk_park(const volatile char *flag);
long hk_tiny();
long hk_triple(long x);
long hk_short();
long hk_clobber(long x);
long hk_lea4(long x);
long hk_loopback(long n);
extern const uint64_t hk_loopback_size;
two_words hk_checked_call(long (*fn)(long), long x);
extern long hk_data;
// Vector state live across a probed point (hook_targets.S).
void hk_avx_mid(const void *in, void *out);
extern const char hk_avx_mid_point[];
void hk_avx512_mid(const void *in, void *out);
extern const char hk_avx512_mid_point[];
void hk_x87_mid(const long double *in, long double *out, unsigned *mxcsr);
extern const char hk_x87_mid_point[];
void hk_avx_args();
void hk_call_avx_args(const void *in, void *out);
void hk_avx_ret();
void hk_ld_ret();
void hk_call_rets(const void *in, void *out);
void hk_clobber_vectors(int how);

HK_PLAIN long hk_args6(long a, long b, long c, long d, long e, long f) {
    asm volatile("");
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

// Eight arguments: the last two on the stack, above the return address.
HK_PLAIN long hk_args8(long a, long b, long c, long d, long e, long f, long g, long h) {
    asm volatile("");
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}

HK_PLAIN double hk_fma(double a, double b, long k) {
    asm volatile("");
    return a * static_cast<double>(k) + b;
}
}

namespace {

template <class F>
uintptr_t addr(F *f) {
    return reinterpret_cast<uintptr_t>(f);
}

// Calls through a pointer the compiler cannot see through.
template <class F>
F *opaque(F *f) {
    F *volatile p = f;
    return p;
}

// What the handlers saw.
struct recorder {
    std::atomic<uint64_t> entries{0};
    std::atomic<uint64_t> returns{0};
    bool want_return = true;
    std::mutex mutex;
    std::vector<pt_regs> entry_regs;
    std::vector<pt_regs> return_regs;
    std::vector<uint64_t> entry_return_addresses; // [rsp] at entry
    bool keep = true;
};

bool on_entry(void *user, const pt_regs *regs) {
    auto *r = static_cast<recorder *>(user);
    r->entries.fetch_add(1);
    if (r->keep) {
        std::lock_guard lock(r->mutex);
        r->entry_regs.push_back(*regs);
        r->entry_return_addresses.push_back(*reinterpret_cast<const uint64_t *>(regs->rsp));
    }
    return r->want_return;
}

void on_return(void *user, const pt_regs *regs) {
    auto *r = static_cast<recorder *>(user);
    r->returns.fetch_add(1);
    if (r->keep) {
        std::lock_guard lock(r->mutex);
        r->return_regs.push_back(*regs);
    }
}

std::unique_ptr<inline_hook> hook(uintptr_t address, recorder &r) {
    auto h = inline_hook::install(address, on_entry, on_return, &r);
    EXPECT_TRUE(h.ok()) << (h.ok() ? "" : h.err().message);
    return h.ok() ? std::move(*h) : nullptr;
}

std::unique_ptr<inline_hook> trap_hook(uintptr_t address, recorder &r, size_t size = 0) {
    auto h = inline_hook::install_trap(address, size, on_entry, on_return, &r);
    EXPECT_TRUE(h.ok()) << (h.ok() ? "" : h.err().message);
    if (h.ok()) {
        EXPECT_TRUE((*h)->is_trap());
    }
    return h.ok() ? std::move(*h) : nullptr;
}

// Whether this kernel lets the code be patched without signalling the other threads.
std::string refusal(uintptr_t address, size_t size = 0) {
    recorder r;
    auto h = inline_hook::install(address, size, on_entry, on_return, &r);
    EXPECT_FALSE(h.ok()) << "hooking " << address << " should have been refused";
    return h.ok() ? "" : h.err().message;
}

TEST(InlineHook, EntrySeesArgumentsAndResultIsUnchanged) {
    recorder r;
    r.want_return = false;
    auto h = hook(addr(hk_args6), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->address(), addr(hk_args6));
    EXPECT_GE(h->patched_bytes(), 5u);
    EXPECT_EQ(opaque(hk_args6)(1, 2, 3, 4, 5, 6), 1 + 4 + 9 + 16 + 25 + 36);
    ASSERT_EQ(r.entries.load(), 1u);
    const pt_regs &regs = r.entry_regs.at(0);
    EXPECT_EQ(regs.rdi, 1u);
    EXPECT_EQ(regs.rsi, 2u);
    EXPECT_EQ(regs.rdx, 3u);
    EXPECT_EQ(regs.rcx, 4u);
    EXPECT_EQ(regs.r8, 5u);
    EXPECT_EQ(regs.r9, 6u);
    EXPECT_EQ(regs.rip, addr(hk_args6));
    EXPECT_EQ(regs.orig_rax, ~uint64_t{0});
    EXPECT_EQ(r.returns.load(), 0u) << "the entry handler returned false";
}

TEST(InlineHook, StackPointerAndReturnAddressAsTheFunctionSeesThem) {
    recorder r;
    r.want_return = false;
    auto h = hook(addr(hk_where), r);
    ASSERT_TRUE(h);
    const two_words seen = opaque(hk_where)();
    ASSERT_EQ(r.entry_regs.size(), 1u);
    EXPECT_EQ(r.entry_regs[0].rsp, seen.a) << "rsp at entry";
    EXPECT_EQ(r.entry_regs[0].rip, addr(hk_where));
    EXPECT_EQ(r.entry_return_addresses.at(0), seen.b) << "[rsp] is the return address";

    // With a return hook, the function runs with the return stub's address at [rsp].
    r.want_return = true;
    const two_words again = opaque(hk_where)();
    ASSERT_EQ(r.return_regs.size(), 1u);
    const pt_regs &ret = r.return_regs[0];
    EXPECT_EQ(ret.rip, addr(hk_where));
    EXPECT_EQ(ret.rsp, again.a + 8) << "rsp after the return";
    EXPECT_EQ(ret.rax, again.a) << "rax = the return value";
    EXPECT_EQ(ret.rdx, again.b);
    EXPECT_NE(again.b, r.entry_return_addresses.at(1));
}

// An entry handler that makes the call return at once (error injection), with what it saw.
struct early_recorder {
    uint64_t value = 0;
    bool early = true;
    bool accepted = false;
    uint64_t returns = 0;
    uint64_t returned_rax = 0;
};

bool early_entry(void *user, const pt_regs *) {
    auto *r = static_cast<early_recorder *>(user);
    if (r->early) {
        r->accepted = inline_hook::return_early(r->value);
    }
    return true;
}

void early_return(void *user, const pt_regs *regs) {
    auto *r = static_cast<early_recorder *>(user);
    r->returns++;
    r->returned_rax = regs->rax;
}

TEST(InlineHook, ReturnEarlySkipsTheFunctionAndKeepsCalleeSavedRegisters) {
    early_recorder r;
    r.value = static_cast<uint64_t>(-2);
    auto h = inline_hook::install(addr(hk_clobber), early_entry, early_return, &r);
    ASSERT_TRUE(h.ok()) << h.err().message;
    two_words got = hk_checked_call(hk_clobber, 41);
    EXPECT_TRUE(r.accepted);
    EXPECT_EQ(got.a, static_cast<uint64_t>(-2)) << "the caller gets the injected value";
    EXPECT_EQ(got.b, 0u) << "rbx, rbp, r12-r14 and rsp as before the call";
    EXPECT_EQ(r.returns, 1u) << "the return hook still runs";
    EXPECT_EQ(r.returned_rax, static_cast<uint64_t>(-2));

    r.early = false; // the function runs again
    got = hk_checked_call(hk_clobber, 41);
    EXPECT_EQ(got.a, 42u);
    EXPECT_EQ(got.b, 0u);
    EXPECT_EQ(r.returns, 2u);
    EXPECT_EQ(r.returned_rax, 42u);
}

TEST(InlineHook, ReturnEarlyOutsideAnEntryHandlerChangesNothing) {
    EXPECT_FALSE(inline_hook::return_early(7));
    EXPECT_EQ(hk_checked_call(hk_clobber, 1).a, 2u);
}

TEST(InlineHook, FloatArgumentsAndResultSurvive) {
    recorder r;
    auto h = hook(addr(hk_fma), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_fma)(1.5, 0.25, 3), 4.75);
    EXPECT_EQ(opaque(hk_fma)(-2.0, 0.5, 7), -13.5);
    EXPECT_EQ(r.entries.load(), 2u);
    EXPECT_EQ(r.returns.load(), 2u);
    EXPECT_EQ(r.entry_regs.at(0).rdi, 3u);
}

TEST(InlineHook, FlagsSurvive) {
    const unsigned long before = opaque(hk_flags_after_stc)();
    ASSERT_EQ(before & 1, 1u) << "the carry flag is set at entry";
    recorder r;
    auto h = hook(addr(hk_flags), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_flags_after_stc)(), before);
    ASSERT_EQ(r.entry_regs.size(), 1u);
    EXPECT_EQ(r.entry_regs[0].eflags, before) << "the handler sees the flags";
}

TEST(InlineHook, EveryArithmeticFlagAndTheDirectionSurviveBothStubs) {
    // CF 0x1, PF 0x4, AF 0x10, ZF 0x40, SF 0x80, DF 0x400, OF 0x800; 0x2 is always set.
    const unsigned long sets[] = {0x2, 0x802, 0x402, 0x896, 0xC03, 0x2D7, 0xCD7, 0x842, 0x403};
    std::vector<two_words> plain;
    for (unsigned long f : sets) {
        plain.push_back(opaque(hk_flags_around)(f));
        ASSERT_EQ(plain.back().a & 0xCD7, f & 0xCD7) << "flags 0x" << std::hex << f;
    }
    recorder r;
    auto h = hook(addr(hk_flags), r);
    ASSERT_TRUE(h);
    for (size_t i = 0; i < std::size(sets); i++) {
        two_words w = opaque(hk_flags_around)(sets[i]);
        EXPECT_EQ(w.a, plain[i].a) << "at entry, flags 0x" << std::hex << sets[i];
        EXPECT_EQ(w.b, plain[i].b) << "after the return, flags 0x" << std::hex << sets[i];
    }
    EXPECT_EQ(r.entries.load(), std::size(sets));
    EXPECT_EQ(r.returns.load(), std::size(sets));
}

// A return hook has the stub call the function: its arguments on the stack stay where the
// caller put them, and the return comes back with the caller's stack as it was.
TEST(InlineHook, StackArgumentsWithAReturnHook) {
    recorder r;
    auto h = hook(addr(hk_args8), r);
    ASSERT_TRUE(h);
    for (long i = 0; i < 3; i++) {
        EXPECT_EQ(opaque(hk_args8)(1, 2, 3, 4, 5, 6, 7 + i, 8 - i),
                  1 + 4 + 9 + 16 + 25 + 36 + 7 * (7 + i) + 8 * (8 - i));
    }
    ASSERT_EQ(r.entries.load(), 3u);
    ASSERT_EQ(r.returns.load(), 3u);
    EXPECT_EQ(r.return_regs.at(2).rsp, r.entry_regs.at(2).rsp + 8) << "rsp after the return";
    EXPECT_EQ(r.return_regs.at(2).rax, static_cast<uint64_t>(1 + 4 + 9 + 16 + 25 + 36 + 63 + 48));
}

// At a function's entry the flags are not kept for the function (the calling convention keeps
// none across a call), but the handler sees the arithmetic ones and the return stub keeps
// them all.
TEST(InlineHook, AtAFunctionsEntryTheHandlerSeesTheArithmeticFlags) {
    const unsigned long sets[] = {0x2, 0x802, 0x896, 0x2D7, 0x8D7, 0x842};
    recorder r;
    auto h = inline_hook::install(addr(hk_flags), 0, on_entry, on_return, &r,
                                  bpftime::hook_site::function_entry);
    ASSERT_TRUE(h) << h.err().message;
    std::vector<two_words> seen;
    for (unsigned long f : sets) {
        seen.push_back(opaque(hk_flags_around)(f));
    }
    ASSERT_EQ(r.entry_regs.size(), std::size(sets));
    for (size_t i = 0; i < std::size(sets); i++) {
        // CF PF AF ZF SF OF, and IF and bit 1, always set in user space.
        EXPECT_EQ(r.entry_regs[i].eflags & 0x8D5, sets[i] & 0x8D5)
            << "flags 0x" << std::hex << sets[i];
        EXPECT_EQ(r.entry_regs[i].eflags & 0x202, 0x202u);
        EXPECT_EQ(seen[i].a & 0x400, 0u) << "the function sees DF clear";
        EXPECT_EQ(seen[i].b & 0xCD7, seen[i].a & 0xCD7)
            << "the return stub keeps the flags the function returned with";
    }
}

TEST(InlineHook, ReturnHandlerSeesTheReturnValue) {
    recorder r;
    auto h = hook(addr(hk_riprel), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_riprel)(5), 1005);
    ASSERT_EQ(r.return_regs.size(), 1u);
    EXPECT_EQ(r.return_regs[0].rax, 1005u);
    EXPECT_EQ(r.return_regs[0].rip, addr(hk_riprel));
}

TEST(InlineHook, RelocatedRipRelativePrologues) {
    recorder r;
    auto a = hook(addr(hk_riprel), r);
    auto b = hook(addr(hk_riprel_mov), r);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->patched_bytes(), 7u);
    hk_data = 2000;
    EXPECT_EQ(opaque(hk_riprel)(1), 2001);
    EXPECT_EQ(opaque(hk_riprel_mov)(3), 6000);
    hk_data = 1000;
    EXPECT_EQ(r.entries.load(), 2u);
}

TEST(InlineHook, RelocatedJccPrologues) {
    recorder r;
    auto a = hook(addr(hk_jcc), r);
    auto b = hook(addr(hk_jrcxz), r);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->patched_bytes(), 7u); // test, jle, lea: whole instructions
    EXPECT_EQ(opaque(hk_jcc)(21), 42);
    EXPECT_EQ(opaque(hk_jcc)(0), -1);
    EXPECT_EQ(opaque(hk_jcc)(-5), -1);
    EXPECT_EQ(opaque(hk_jrcxz)(7, 0, 0, 1), 8);
    EXPECT_EQ(opaque(hk_jrcxz)(7, 0, 0, 0), -1);
    EXPECT_EQ(r.entries.load(), 5u);
    EXPECT_EQ(r.returns.load(), 5u);
}

TEST(InlineHook, RelocatedCallPrologue) {
    recorder r;
    auto h = hook(addr(hk_call), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->patched_bytes(), 5u);
    EXPECT_EQ(opaque(hk_call)(10), 31);
    ASSERT_EQ(r.return_regs.size(), 1u);
    EXPECT_EQ(r.return_regs[0].rax, 31u);
}

TEST(InlineHook, RecursionSeesEveryReturnInOrder) {
    recorder r;
    auto h = hook(addr(hk_fact), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_fact)(6), 720u);
    ASSERT_EQ(r.entry_regs.size(), 6u);
    for (size_t i = 0; i < 6; ++i)
        EXPECT_EQ(r.entry_regs[i].rdi, 6 - i);
    const uint64_t expected[] = {1, 2, 6, 24, 120, 720};
    ASSERT_EQ(r.return_regs.size(), 6u);
    for (size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(r.return_regs[i].rax, expected[i]) << "return " << i;
        EXPECT_EQ(r.return_regs[i].rsp, r.entry_regs[5 - i].rsp + 8);
    }
}

TEST(InlineHook, DeepRecursionBeyondTheShadowStackIsCounted) {
    recorder r;
    r.keep = false;
    auto h = hook(addr(hk_fact), r);
    ASSERT_TRUE(h);
    const uint64_t missed = inline_hook::missed_returns();
    unsigned long expect = 1;
    for (unsigned long i = 2; i <= 300; ++i)
        expect *= i;
    EXPECT_EQ(opaque(hk_fact)(300), expect);
    EXPECT_EQ(r.entries.load(), 300u);
    EXPECT_EQ(r.returns.load(), 256u);
    EXPECT_EQ(inline_hook::missed_returns() - missed, 44u);
}

TEST(InlineHook, ThreadsCountExactly) {
    recorder r;
    r.keep = false;
    auto h = hook(addr(hk_riprel), r);
    ASSERT_TRUE(h);
    constexpr int threads = 4, calls = 100000;
    std::atomic<int> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            auto *f = opaque(hk_riprel);
            for (int i = 0; i < calls; ++i)
                if (f(i + t) != 1000 + i + t)
                    wrong.fetch_add(1);
        });
    for (auto &t : pool)
        t.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(r.entries.load(), uint64_t{threads} * calls);
    EXPECT_EQ(r.returns.load(), uint64_t{threads} * calls);
}

TEST(InlineHook, RefusesTooShortFunctions) {
    auto tiny = refusal(addr(hk_tiny));
    EXPECT_NE(tiny.find("jmp"), std::string::npos) << tiny;
    EXPECT_NE(tiny.find("ends with"), std::string::npos) << tiny;
    auto shorter = refusal(addr(hk_short));
    EXPECT_NE(shorter.find("ret"), std::string::npos) << shorter;
    // The patch would run past the end of a function whose size is given.
    auto sized = refusal(addr(hk_riprel), 4);
    EXPECT_NE(sized.find("4 bytes long"), std::string::npos) << sized;
    // int3 padding itself.
    auto padding = refusal(addr(hk_tiny) + 2);
    EXPECT_NE(padding.find("int3"), std::string::npos) << padding;
    EXPECT_EQ(opaque(hk_tiny)(), 0) << "nothing was patched";
}

TEST(InlineHook, RefusesUnmappedAndNonExecutableAddresses) {
    const long page = sysconf(_SC_PAGESIZE);
    void *p = mmap(nullptr, static_cast<size_t>(page), PROT_READ | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    munmap(p, static_cast<size_t>(page));
    auto unmapped = refusal(reinterpret_cast<uintptr_t>(p));
    EXPECT_NE(unmapped.find("not mapped"), std::string::npos) << unmapped;
    auto data = refusal(reinterpret_cast<uintptr_t>(&hk_data));
    EXPECT_NE(data.find("not executable"), std::string::npos) << data;
}

TEST(InlineHook, RefusesASecondHookAtTheSameAddress) {
    recorder r;
    auto h = hook(addr(hk_riprel), r);
    ASSERT_TRUE(h);
    auto again = refusal(addr(hk_riprel));
    EXPECT_NE(again.find("already hooked"), std::string::npos) << again;
    auto inside = refusal(addr(hk_riprel) + 3);
    EXPECT_NE(inside.find("already hooked"), std::string::npos) << inside;
    EXPECT_EQ(opaque(hk_riprel)(1), 1001);
    EXPECT_EQ(r.entries.load(), 1u);
}

TEST(InlineHook, DestroyRestoresTheBytesAndStopsCounting) {
    const uintptr_t targets[] = {addr(hk_riprel), addr(hk_jcc), addr(hk_call), addr(hk_args6)};
    for (uintptr_t target : targets) {
        uint8_t before[32];
        std::memcpy(before, reinterpret_cast<const void *>(target), sizeof before);
        recorder r;
        auto h = hook(target, r);
        ASSERT_TRUE(h);
        EXPECT_NE(std::memcmp(before, reinterpret_cast<const void *>(target), 5), 0);
        h.reset();
        EXPECT_EQ(std::memcmp(before, reinterpret_cast<const void *>(target), sizeof before), 0);
    }
    recorder r;
    auto h = hook(addr(hk_jcc), r);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_jcc)(4), 8);
    h.reset();
    EXPECT_EQ(opaque(hk_jcc)(4), 8);
    EXPECT_EQ(r.entries.load(), 1u);
    // It can be hooked again.
    auto again = hook(addr(hk_jcc), r);
    ASSERT_TRUE(again);
    EXPECT_EQ(opaque(hk_jcc)(4), 8);
    EXPECT_EQ(r.entries.load(), 2u);
}

TEST(InlineHook, PendingReturnAfterDestroyGoesBackToTheCaller) {
    // A return hook is pending while the hook is destroyed from inside the call.
    static std::unique_ptr<inline_hook> pending;
    static recorder r;
    r.keep = false;
    struct local {
        static bool entry(void *, const pt_regs *) { return true; }
        static void ret(void *, const pt_regs *) { r.returns.fetch_add(1); }
    };
    auto h = inline_hook::install(addr(hk_call), local::entry, local::ret, nullptr);
    ASSERT_TRUE(h.ok()) << h.err().message;
    pending = std::move(*h);
    // hk_call calls hk_triple: destroy the hook from a hook on hk_triple, with hk_call's
    // return still pending.
    struct inner {
        static bool entry(void *, const pt_regs *) {
            pending.reset();
            return false;
        }
    };
    auto t = inline_hook::install(addr(hk_triple), inner::entry, nullptr, nullptr);
    ASSERT_TRUE(t.ok()) << t.err().message;
    EXPECT_EQ(opaque(hk_call)(10), 31);
    EXPECT_FALSE(pending);
    EXPECT_EQ(r.returns.load(), 0u);
}

TEST(InlineHook, InstallAndRemoveWhileThreadsCall) {
    recorder r;
    r.keep = false;
    r.want_return = true;
    std::atomic<bool> stop{false}, installed{false};
    std::atomic<uint64_t> must_count{0};
    std::atomic<int> wrong{0};
    std::atomic<uint64_t> iterations[2] = {0, 0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 2; ++t)
        pool.emplace_back([&, t] {
            auto *f = opaque(hk_jcc);
            for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                const int x = (i & 1023) - 100;
                // A call started after install() returned and before the hook is
                // destroyed must be counted.
                const bool counted = installed.load();
                const int got = f(x);
                if (counted)
                    must_count.fetch_add(1);
                if (got != (x <= 0 ? -1 : 2 * x))
                    wrong.fetch_add(1);
                iterations[t].fetch_add(1);
            }
        });
    for (int round = 0; round < 200; ++round) {
        auto h = hook(addr(hk_jcc), r);
        ASSERT_TRUE(h);
        installed.store(true);
        const uint64_t start = must_count.load();
        while (must_count.load() < start + 20)
            std::this_thread::yield();
        installed.store(false);
        // Calls that saw installed == true are over once each thread ends one more iteration.
        for (auto &it : iterations) {
            const uint64_t seen = it.load();
            while (it.load() <= seen)
                std::this_thread::yield();
        }
        h.reset();
        ASSERT_GE(r.entries.load(), must_count.load()) << "round " << round;
        ASSERT_GE(r.returns.load(), must_count.load()) << "round " << round;
        r.entries.store(0);
        r.returns.store(0);
        must_count.store(0);
    }
    stop.store(true);
    for (auto &t : pool)
        t.join();
    EXPECT_EQ(wrong.load(), 0);
}

TEST(InlineHook, ThreadsBetweenTheReplacedInstructionsAreMoved) {
    // A thread spins inside the replaced bytes (at +0 or at +3) while the hook comes and
    // goes: it is moved into the trampoline's copy and back, never onto the patch.
    volatile char flag = 1;
    std::atomic<int> result{0};
    std::thread spinner([&] { result.store(opaque(hk_park)(&flag)); });
    recorder r;
    r.keep = false;
    for (int round = 0; round < 100; ++round) {
        auto h = hook(addr(hk_park), r);
        ASSERT_TRUE(h);
        EXPECT_EQ(h->patched_bytes(), 5u);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    flag = 0;
    spinner.join();
    EXPECT_EQ(result.load(), 7);
    // The hooked function still works when called normally.
    flag = 0;
    auto h = hook(addr(hk_park), r);
    const uint64_t before = r.entries.load();
    EXPECT_EQ(opaque(hk_park)(&flag), 7);
    EXPECT_EQ(r.entries.load(), before + 1);
}

TEST(InlineHook, HooksALibcFunction) {
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(libc, nullptr);
    auto *real_getpid = reinterpret_cast<pid_t (*)()>(dlsym(libc, "getpid"));
    ASSERT_NE(real_getpid, nullptr);
    const pid_t pid = getpid();
    recorder r;
    r.keep = false;
    auto h = hook(reinterpret_cast<uintptr_t>(real_getpid), r);
    ASSERT_TRUE(h);
    for (int i = 0; i < 1000; ++i)
        ASSERT_EQ(opaque(real_getpid)(), pid);
    EXPECT_GE(r.entries.load(), 1000u);
    EXPECT_GE(r.returns.load(), 1000u);
    h.reset();
    const uint64_t after = r.entries.load();
    EXPECT_EQ(opaque(real_getpid)(), pid);
    EXPECT_EQ(r.entries.load(), after);
    dlclose(libc);
}

TEST(TrapProbe, AFourByteFunctionIsProbedAtEntryAndReturn) {
    // A jump does not fit: lea (3 bytes) then ret.
    auto refused = refusal(addr(hk_lea4));
    EXPECT_NE(refused.find("ret"), std::string::npos) << refused;
    recorder r;
    auto h = trap_hook(addr(hk_lea4), r, 4);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->patched_bytes(), 3u) << "the displaced instruction: the lea";
    EXPECT_EQ(*reinterpret_cast<const uint8_t *>(addr(hk_lea4)), 0xCC);
    for (long x = 0; x < 100; ++x)
        ASSERT_EQ(opaque(hk_lea4)(x), x + 1);
    EXPECT_EQ(r.entries.load(), 100u);
    EXPECT_EQ(r.returns.load(), 100u);
    std::lock_guard lock(r.mutex);
    ASSERT_EQ(r.entry_regs.size(), 100u);
    EXPECT_EQ(r.entry_regs[42].rdi, 42u);
    EXPECT_EQ(r.entry_regs[42].rip, addr(hk_lea4));
    EXPECT_EQ(r.return_regs[42].rax, 43u);
    EXPECT_EQ(r.return_regs[42].rsp, r.entry_regs[42].rsp + 8) << "rsp as after the ret";
    // The return address the function saw is its caller's... replaced by the return stub, as
    // the kernel's uretprobes do; the caller got its result back regardless (above).
    EXPECT_NE(r.entry_return_addresses[42], 0u);
}

TEST(TrapProbe, RemovalRestoresTheBytesAndStopsCounting) {
    const uint8_t before = *reinterpret_cast<const uint8_t *>(addr(hk_lea4));
    recorder r;
    auto h = trap_hook(addr(hk_lea4), r, 4);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_lea4)(1), 2);
    h.reset();
    EXPECT_EQ(*reinterpret_cast<const uint8_t *>(addr(hk_lea4)), before);
    EXPECT_EQ(opaque(hk_lea4)(5), 6);
    EXPECT_EQ(r.entries.load(), 1u);
    // Placed again after removal.
    auto again = trap_hook(addr(hk_lea4), r, 4);
    ASSERT_TRUE(again);
    EXPECT_EQ(opaque(hk_lea4)(7), 8);
    EXPECT_EQ(r.entries.load(), 2u);
}

TEST(TrapProbe, ReturnEarlyFromATrap) {
    struct early {
        static bool entry(void *, const pt_regs *regs) {
            EXPECT_TRUE(inline_hook::return_early(regs->rdi * 100));
            return false;
        }
    };
    auto h = inline_hook::install_trap(addr(hk_lea4), 4, early::entry, nullptr, nullptr);
    ASSERT_TRUE(h.ok()) << h.err().message;
    EXPECT_EQ(opaque(hk_lea4)(3), 300);
    EXPECT_EQ(opaque(hk_clobber)(3), 4) << "the caller's registers survive";
}

TEST(TrapProbe, ABranchBackIntoTheFirstBytesIsProbedByTrap) {
    const size_t size = hk_loopback_size;
    ASSERT_GT(size, 5u);
    // The loop goes back to offset 2: a jump over the first 5 bytes would break it.
    auto refused = refusal(addr(hk_loopback), size);
    EXPECT_NE(refused.find("goes into the 5 bytes"), std::string::npos) << refused;
    recorder r;
    r.keep = false;
    auto h = trap_hook(addr(hk_loopback), r, size);
    ASSERT_TRUE(h);
    for (long n = 1; n <= 50; ++n)
        ASSERT_EQ(opaque(hk_loopback)(n), n * (n + 1) / 2);
    EXPECT_EQ(r.entries.load(), 50u) << "one entry per call, not per iteration";
    EXPECT_EQ(r.returns.load(), 50u);
}

TEST(TrapProbe, RefusesWhatCannotBeTrapped) {
    recorder r;
    auto padding = inline_hook::install_trap(addr(hk_tiny) + 2, 0, on_entry, on_return, &r);
    ASSERT_FALSE(padding.ok());
    EXPECT_NE(padding.err().message.find("int3"), std::string::npos) << padding.err().message;
    auto data = inline_hook::install_trap(reinterpret_cast<uintptr_t>(&hk_data), 0, on_entry,
                                          on_return, &r);
    ASSERT_FALSE(data.ok());
    EXPECT_NE(data.err().message.find("not executable"), std::string::npos) << data.err().message;
    auto first = trap_hook(addr(hk_lea4), r, 4);
    ASSERT_TRUE(first);
    auto twice = inline_hook::install_trap(addr(hk_lea4), 4, on_entry, on_return, &r);
    ASSERT_FALSE(twice.ok());
    EXPECT_NE(twice.err().message.find("already hooked"), std::string::npos) << twice.err().message;
}

std::atomic<int> g_app_traps{0};
void app_trap_handler(int, siginfo_t *, void *) {
    g_app_traps.fetch_add(1);
}

TEST(TrapProbe, TheApplicationsOwnSigtrapHandlerStillGetsItsInt3s) {
    struct sigaction sa {};
    sa.sa_sigaction = app_trap_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGTRAP, &sa, nullptr), 0);
    recorder r;
    auto h = trap_hook(addr(hk_lea4), r, 4);
    ASSERT_TRUE(h);
    EXPECT_EQ(opaque(hk_lea4)(1), 2);
    asm volatile("int3" ::: "memory");
    EXPECT_EQ(g_app_traps.load(), 1) << "the application's int3 reached its handler";
    EXPECT_EQ(r.entries.load(), 1u) << "and the probe's did not";
    raise(SIGTRAP);
    EXPECT_EQ(g_app_traps.load(), 2) << "a raised SIGTRAP too";
    EXPECT_EQ(opaque(hk_lea4)(2), 3);
    EXPECT_EQ(r.entries.load(), 2u);
    EXPECT_EQ(g_app_traps.load(), 2);
}

TEST(TrapProbeDeathTest, AnInt3NotOursTakesTheDefaultActionWithoutAHandler) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            recorder r;
            auto h = inline_hook::install_trap(addr(hk_lea4), 4, on_entry, on_return, &r);
            if (!h.ok() || opaque(hk_lea4)(1) != 2)
                std::_Exit(3);
            asm volatile("int3" ::: "memory");
            std::_Exit(0);
        },
        testing::KilledBySignal(SIGTRAP), "");
}

// Threads blocked in nanosleep and read while hooks come and go on a function a third thread
// calls in a loop: nothing interrupts them (no EINTR, the full sleep).
TEST(LivePatching, BlockedThreadsAreNotInterruptedAndCountsAreExact) {
    if (!bpftime::test::live_patching())
        GTEST_SKIP() << "this kernel lacks membarrier SYNC_CORE: patching stops the threads";
    bpftime::test::sleeper_thread sleeper(3);
    bpftime::test::bare_reader reader;
    ASSERT_TRUE(reader.ok);
    std::atomic<bool> stop{false};
    std::atomic<int> wrong{0};
    std::thread caller([&] {
        auto *f = opaque(hk_jcc);
        for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
            const int x = (i & 1023) - 100;
            if (f(x) != (x <= 0 ? -1 : 2 * x))
                wrong.fetch_add(1);
        }
    });
    // The looping caller never passes 5000; this thread calls with it a known number of times
    // in each window.
    struct marked {
        std::atomic<uint64_t> hits{0}, returns{0};
        static bool entry(void *user, const pt_regs *regs) {
            if (static_cast<int>(regs->rdi) == 5000)
                static_cast<marked *>(user)->hits.fetch_add(1);
            return static_cast<int>(regs->rdi) == 5000;
        }
        static void ret(void *user, const pt_regs *regs) {
            if (regs->rax == 10000)
                static_cast<marked *>(user)->returns.fetch_add(1);
        }
    };
    // Once blocked, the reader wakes only if something interrupts it (a signal, which its
    // read would transparently restart): its count of sleeps must not move.
    while (reader.tid.load() == 0)
        std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const long sleeps_before = bpftime::test::voluntary_switches(reader.tid.load());
    ASSERT_GE(sleeps_before, 0);
    for (int round = 0; round < 100; ++round) {
        marked m;
        // Jumps and traps alike.
        auto h = round % 2 == 0
                     ? inline_hook::install(addr(hk_jcc), marked::entry, marked::ret, &m)
                     : inline_hook::install_trap(addr(hk_jcc), 0, marked::entry, marked::ret, &m);
        ASSERT_TRUE(h.ok()) << "round " << round << ": " << h.err().message;
        for (int k = 0; k < 3; ++k)
            ASSERT_EQ(opaque(hk_jcc)(5000), 10000);
        h->reset();
        EXPECT_EQ(m.hits.load(), 3u) << "round " << round;
        EXPECT_EQ(m.returns.load(), 3u) << "round " << round;
        ASSERT_EQ(opaque(hk_jcc)(5000), 10000);
        EXPECT_EQ(m.hits.load(), 3u) << "round " << round << ": counted after removal";
    }
    EXPECT_EQ(bpftime::test::voluntary_switches(reader.tid.load()), sleeps_before)
        << "the thread blocked in read was woken while the code was patched";
    sleeper.thread.join();
    ASSERT_EQ(write(reader.fds[1], "x", 1), 1);
    reader.thread.join();
    stop.store(true);
    caller.join();
    EXPECT_EQ(sleeper.rc.load(), 0) << "nanosleep was interrupted: " << std::strerror(sleeper.err);
    EXPECT_GE(sleeper.slept_ns.load(), 3'000'000'000LL);
    EXPECT_EQ(reader.rc.load(), 1) << "read was interrupted: " << std::strerror(reader.err);
    EXPECT_EQ(wrong.load(), 0);
}

} // namespace

// --- The vector state across a hook ----------------------------------------------------------

namespace vectors {

// hk_clobber_vectors's bits
constexpr int ymm = 1, zmm = 2, x87 = 4;

bool has_avx2() {
    return __builtin_cpu_supports("avx2");
}
bool has_avx512() {
    return __builtin_cpu_supports("avx512f");
}
// The vector registers this CPU has, as hk_clobber_vectors's bits.
int all_registers() {
    return (has_avx2() ? ymm : 0) | (has_avx512() ? zmm : 0);
}

// A handler whose "helpers" overwrite the vector state (what glibc's AVX string functions,
// vzeroupper, or long double arithmetic do to the caller's registers).
struct clobbering {
    int how = 0;
    bool want_return = false;
    std::atomic<int> entries{0};
    std::atomic<int> returns{0};
};
bool entry(void *user, const pt_regs *) {
    auto *c = static_cast<clobbering *>(user);
    c->entries.fetch_add(1);
    hk_clobber_vectors(c->how);
    return c->want_return;
}
void ret(void *user, const pt_regs *) {
    auto *c = static_cast<clobbering *>(user);
    c->returns.fetch_add(1);
    hk_clobber_vectors(c->how);
}

// Bytes no register holds by chance: each differs from its neighbours, none is 0 or 0xff.
template <size_t N>
std::array<uint8_t, N> pattern(uint8_t seed) {
    std::array<uint8_t, N> b{};
    for (size_t i = 0; i < N; ++i)
        b[i] = static_cast<uint8_t>(seed + 7 * i) % 250 + 3;
    return b;
}

unsigned mxcsr_now() {
    unsigned m = 0;
    asm volatile("stmxcsr %0" : "=m"(m));
    return m;
}

} // namespace vectors

// A hook inside a function (hook_site::any) where ymm0-15 hold live values: a handler that
// overwrites every vector register changes none of them.
TEST(HookVectorState, LiveYmmRegistersInsideAFunctionSurvive) {
    if (!vectors::has_avx2())
        GTEST_SKIP() << "this CPU has no AVX2";
    vectors::clobbering c;
    c.how = vectors::all_registers();
    auto h = inline_hook::install(reinterpret_cast<uintptr_t>(hk_avx_mid_point), 0, vectors::entry,
                                  nullptr, &c);
    ASSERT_TRUE(h) << h.err().message;
    const auto in = vectors::pattern<512>(11);
    std::array<uint8_t, 512> out{};
    opaque(hk_avx_mid)(in.data(), out.data());
    EXPECT_EQ(c.entries.load(), 1);
    for (size_t r = 0; r < 16; ++r)
        EXPECT_EQ(std::memcmp(in.data() + 32 * r, out.data() + 32 * r, 32), 0)
            << "ymm" << r << " changed across the hook";
}

// The same for the AVX-512 state: zmm16-31 and the mask registers k1-k7.
TEST(HookVectorState, LiveZmmAndMaskRegistersInsideAFunctionSurvive) {
    if (!vectors::has_avx512())
        GTEST_SKIP() << "this CPU has no AVX-512 (or the kernel does not enable it)";
    vectors::clobbering c;
    c.how = vectors::all_registers();
    auto h = inline_hook::install(reinterpret_cast<uintptr_t>(hk_avx512_mid_point), 0,
                                  vectors::entry, nullptr, &c);
    ASSERT_TRUE(h) << h.err().message;
    const auto in = vectors::pattern<1038>(5);
    std::array<uint8_t, 1038> out{};
    opaque(hk_avx512_mid)(in.data(), out.data());
    EXPECT_EQ(c.entries.load(), 1);
    for (size_t r = 0; r < 16; ++r)
        EXPECT_EQ(std::memcmp(in.data() + 64 * r, out.data() + 64 * r, 64), 0)
            << "zmm" << 16 + r << " changed across the hook";
    for (size_t k = 0; k < 7; ++k)
        EXPECT_EQ(std::memcmp(in.data() + 1024 + 2 * k, out.data() + 1024 + 2 * k, 2), 0)
            << "k" << k + 1 << " changed across the hook";
}

// Values on the x87 stack inside a function, and MXCSR: a handler that overflows the x87 stack
// and changes the SSE rounding mode leaves both as they were.
TEST(HookVectorState, X87StackAndMxcsrInsideAFunctionSurvive) {
    vectors::clobbering c;
    c.how = vectors::x87 | vectors::all_registers();
    auto h = inline_hook::install(reinterpret_cast<uintptr_t>(hk_x87_mid_point), 0, vectors::entry,
                                  nullptr, &c);
    ASSERT_TRUE(h) << h.err().message;
    alignas(16) long double in[3] = {1.25L, -3.0e100L, 7.0L / 3.0L};
    alignas(16) long double out[3] = {0, 0, 0};
    unsigned after = 0;
    const unsigned before = vectors::mxcsr_now();
    opaque(hk_x87_mid)(in, out, &after);
    EXPECT_EQ(c.entries.load(), 1);
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(in[i], out[i]) << "st" << i << " changed across the hook";
    EXPECT_EQ(after, before) << "MXCSR changed across the hook";
}

// A hook at hk_avx_args' entry whose handlers clobber every vector register, asking for the
// return hook or not.
std::unique_ptr<inline_hook> avx_args_hook(vectors::clobbering &c, bool want_return) {
    c.how = vectors::all_registers();
    c.want_return = want_return;
    auto h = inline_hook::install(addr(hk_avx_args), 0, vectors::entry, vectors::ret, &c,
                                  hook_site::function_entry);
    EXPECT_TRUE(h) << (h ? "" : h.err().message);
    return h ? std::move(*h) : nullptr;
}

// hk_call_avx_args with __m256 arguments made from seed: hk_avx_args sees each as it went in.
void expect_avx_args_survive(uint8_t seed, int round) {
    const auto in = vectors::pattern<256>(seed);
    std::array<uint8_t, 256> out{};
    opaque(hk_call_avx_args)(in.data(), out.data());
    for (size_t r = 0; r < 8; ++r)
        EXPECT_EQ(std::memcmp(in.data() + 32 * r, out.data() + 32 * r, 32), 0)
            << "argument ymm" << r << " changed across the hook, round " << round;
}

// At a function's entry (hook_site::function_entry) the argument registers hold __m256
// arguments at full width; with a return hook too.
TEST(HookVectorState, AvxArgumentsAtAFunctionsEntrySurvive) {
    if (!vectors::has_avx2())
        GTEST_SKIP() << "this CPU has no AVX2";
    vectors::clobbering c;
    auto h = avx_args_hook(c, true);
    ASSERT_NE(h, nullptr);
    expect_avx_args_survive(42, 0);
    EXPECT_EQ(c.entries.load(), 1);
    EXPECT_EQ(c.returns.load(), 1);
}

// A return hook keeps a function's results: an __m256 in ymm0 and a long double in st0.
// A handler that also overflows the x87 stack and changes MXCSR, on return only: at entry the
// convention makes the handler keep those.
void ret_with_x87(void *user, const pt_regs *regs) {
    auto *c = static_cast<vectors::clobbering *>(user);
    c->how |= vectors::x87;
    vectors::ret(user, regs);
}

// hk_call_rets with an __m256 made from seed and the long double value: both results come back
// as they went in, and MXCSR unchanged.
void expect_results_survive(uint8_t seed, long double value) {
    alignas(16) uint8_t in[48] = {};
    const auto bytes = vectors::pattern<32>(seed);
    std::memcpy(in, bytes.data(), 32);
    std::memcpy(in + 32, &value, 10);
    alignas(16) uint8_t out[48] = {};
    const unsigned before = vectors::mxcsr_now();
    opaque(hk_call_rets)(in, out);
    EXPECT_EQ(std::memcmp(in, out, 32), 0) << "the __m256 result changed across the return hook";
    long double got = 0;
    std::memcpy(&got, out + 32, 10);
    EXPECT_EQ(got, value) << "the long double result changed across the return hook";
    EXPECT_EQ(vectors::mxcsr_now(), before) << "MXCSR changed across the return hook";
}

// Hooks on hk_avx_ret and hk_ld_ret whose handlers ask for the return hook and clobber every
// vector register (the long double one the x87 stack too, on return).
struct result_hooks {
    vectors::clobbering on_avx, on_ld;
    std::unique_ptr<inline_hook> avx, ld;

    void install() {
        on_avx.how = on_ld.how = vectors::all_registers();
        on_avx.want_return = on_ld.want_return = true;
        auto ha = inline_hook::install(addr(hk_avx_ret), 0, vectors::entry, vectors::ret, &on_avx,
                                       hook_site::function_entry);
        ASSERT_TRUE(ha) << ha.err().message;
        auto hl = inline_hook::install(addr(hk_ld_ret), 0, vectors::entry, ret_with_x87, &on_ld,
                                       hook_site::function_entry);
        ASSERT_TRUE(hl) << hl.err().message;
        avx = std::move(*ha);
        ld = std::move(*hl);
    }
};

TEST(HookVectorState, AvxAndLongDoubleResultsSurviveTheReturnHook) {
    if (!vectors::has_avx2())
        GTEST_SKIP() << "this CPU has no AVX2";
    result_hooks r;
    ASSERT_NO_FATAL_FAILURE(r.install());
    expect_results_survive(9, -17.0L / 7.0L);
    EXPECT_EQ(r.on_avx.returns.load(), 1);
    EXPECT_EQ(r.on_ld.returns.load(), 1);
}

// A return-only hook at a function's entry: the entry handler never runs, every return is
// seen with the result, from several threads (each thread's first hooked call goes through the
// full path, which maps its shadow stack), the float arguments and result intact; switched
// back, the entry handler runs again.
TEST(InlineHook, ReturnOnlySkipsTheEntryHandlerAndSeesEveryReturn) {
    recorder r;
    r.keep = false;
    r.want_return = false; // would turn the return hook off if the entry handler ran
    auto h =
        inline_hook::install(addr(hk_fma), 0, on_entry, on_return, &r, hook_site::function_entry);
    ASSERT_TRUE(h) << h.err().message;
    (*h)->set_return_only(true);
    constexpr int threads = 3, calls = 20000;
    std::atomic<int> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            auto *f = opaque(hk_fma);
            for (int i = 0; i < calls; ++i)
                if (f(1.5, 0.25, i + t) != 1.5 * (i + t) + 0.25)
                    wrong.fetch_add(1);
        });
    for (auto &t : pool)
        t.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(r.entries.load(), 0u);
    EXPECT_EQ(r.returns.load(), uint64_t{threads} * calls);
    r.keep = true;
    EXPECT_EQ(opaque(hk_fma)(-2.0, 0.5, 7), -13.5);
    ASSERT_EQ(r.return_regs.size(), 1u);
    EXPECT_EQ(r.return_regs[0].rip, addr(hk_fma));
    (*h)->set_return_only(false);
    EXPECT_EQ(opaque(hk_fma)(1.5, 0.25, 3), 4.75);
    EXPECT_EQ(r.entries.load(), 1u) << "the entry handler runs again";
    EXPECT_EQ(r.returns.load(), uint64_t{threads} * calls + 1) << "and turned the return off";
}

// The same inside a function (hook_site::any: no light path, the full one skips the handler)
// and on a trap probe.
TEST(InlineHook, ReturnOnlyAtEveryKindOfSite) {
    for (bool trap : {false, true}) {
        SCOPED_TRACE(trap ? "trap probe" : "jump, whole state saved");
        recorder r;
        r.want_return = false;
        auto h = trap ? inline_hook::install_trap(addr(hk_lea4), 4, on_entry, on_return, &r)
                      : inline_hook::install(addr(hk_args6), on_entry, on_return, &r);
        ASSERT_TRUE(h) << h.err().message;
        (*h)->set_return_only(true);
        if (trap) {
            EXPECT_EQ(opaque(hk_lea4)(1), 2);
            EXPECT_EQ(opaque(hk_lea4)(2), 3);
        } else {
            EXPECT_EQ(opaque(hk_args6)(1, 2, 3, 4, 5, 6), 1 + 4 + 9 + 16 + 25 + 36);
            EXPECT_EQ(opaque(hk_args6)(1, 1, 1, 1, 1, 1), 21);
        }
        EXPECT_EQ(r.entries.load(), 0u);
        EXPECT_EQ(r.returns.load(), 2u);
    }
}

// Deeper than the shadow stack with a return-only hook: the light path hands the calls it
// cannot keep to the full one, which counts them as missed.
TEST(InlineHook, ReturnOnlyBeyondTheShadowStackIsCounted) {
    recorder r;
    r.keep = false;
    auto h =
        inline_hook::install(addr(hk_fact), 0, on_entry, on_return, &r, hook_site::function_entry);
    ASSERT_TRUE(h) << h.err().message;
    (*h)->set_return_only(true);
    const uint64_t missed = inline_hook::missed_returns();
    unsigned long expect = 1;
    for (unsigned long i = 2; i <= 300; ++i)
        expect *= i;
    EXPECT_EQ(opaque(hk_fact)(300), expect);
    EXPECT_EQ(r.entries.load(), 0u);
    EXPECT_EQ(r.returns.load(), 256u);
    EXPECT_EQ(inline_hook::missed_returns() - missed, 44u);
}

// AVX arguments at a function's entry under a return-only hook whose return handler clobbers
// every vector register: the light entry path leaves them alone, the return stub keeps the
// results.
TEST(HookVectorState, AvxArgumentsSurviveAReturnOnlyHook) {
    if (!vectors::has_avx2())
        GTEST_SKIP() << "this CPU has no AVX2";
    vectors::clobbering c;
    auto h = avx_args_hook(c, false);
    ASSERT_NE(h, nullptr);
    h->set_return_only(true);
    for (int round = 0; round < 2; ++round) // the second takes the light path
        expect_avx_args_survive(43, round);
    EXPECT_EQ(c.entries.load(), 0);
    EXPECT_EQ(c.returns.load(), 2);
}

// Plain handlers (set_plain_entry, set_plain_return) as a host's are: general-purpose registers
// only, counting their calls; the entry one asks for the return hook.
uint64_t g_plain_entries = 0, g_plain_returns = 0;

__attribute__((target("general-regs-only"))) bool plain_entry(void *, const pt_regs *) {
    __atomic_fetch_add(&g_plain_entries, 1, __ATOMIC_RELAXED);
    return true;
}

__attribute__((target("general-regs-only"))) void plain_return(void *, const pt_regs *) {
    __atomic_fetch_add(&g_plain_returns, 1, __ATOMIC_RELAXED);
}

uint64_t plain_count(const uint64_t &n) {
    return __atomic_load_n(&n, __ATOMIC_RELAXED);
}

// AVX arguments at a function's entry and AVX and long double results under plain handlers,
// whose stubs save no vector state: a thread's first hooked call takes the full handler (its
// mark is claimed there), the next ones the plain handler, whose return hook the plain return
// handler serves; arguments and results stay whole. Without the plain handlers the full ones
// run again.
TEST(HookVectorState, ArgumentsAndResultsSurvivePlainHandlers) {
    if (!vectors::has_avx2())
        GTEST_SKIP() << "this CPU has no AVX2";
    vectors::clobbering c;
    auto h = avx_args_hook(c, true);
    ASSERT_NE(h, nullptr);
    result_hooks results;
    ASSERT_NO_FATAL_FAILURE(results.install());
    for (inline_hook *hook : {h.get(), results.avx.get(), results.ld.get()}) {
        hook->set_plain_entry(plain_entry);
        hook->set_plain_return(plain_return);
    }
    // On a thread of its own: its first hooked call is the first of the thread.
    std::thread t([&] {
        for (int round = 0; round < 3; ++round)
            expect_avx_args_survive(44, round);
        EXPECT_EQ(c.entries.load(), 1) << "a thread's first hooked call takes the full handler";
        EXPECT_EQ(plain_count(g_plain_entries), 2u);
        EXPECT_EQ(c.returns.load(), 0);
        EXPECT_EQ(plain_count(g_plain_returns), 3u);

        expect_results_survive(10, -19.0L / 7.0L);
        EXPECT_EQ(plain_count(g_plain_entries), 4u);
        EXPECT_EQ(plain_count(g_plain_returns), 5u);

        h->set_plain_entry(nullptr);
        h->set_plain_return(nullptr);
        expect_avx_args_survive(44, 3);
        EXPECT_EQ(c.entries.load(), 2);
        EXPECT_EQ(c.returns.load(), 1);
        EXPECT_EQ(plain_count(g_plain_entries), 4u);
    });
    t.join();
}
