// SPDX-License-Identifier: MIT
/// @file
/// Inline hooks on x86-64: the base of user-space uprobes.
///
/// Installing a hook overwrites the first instructions at an address with a 5-byte `jmp rel32`
/// to a per-hook stub placed within +-2 GiB of it. The stub saves the registers into a
/// pt_regs, calls the entry handler, restores every register and runs the replaced
/// instructions, relocated into a trampoline, which then jumps back behind the patch. No trap
/// and no system call is on the path of a hooked call.
///
/// What is saved and restored around a handler: all 16 general-purpose registers (pt_regs),
/// the flags (except at a function's entry, where the calling convention keeps none across
/// the call and DF is clear: pt_regs.eflags then holds the arithmetic flags, IF and bit 1, read
/// without pushfq), and the vector state as the site needs it (hook_site):
/// - hook_site::any (inside a function, a USDT site: any register may be live): every state
///   component XCR0 enables of x87, SSE, AVX and AVX-512 (ymm/zmm upper halves, zmm16-31, the
///   mask registers, MXCSR, the x87 stack and control words), with XSAVEC (or XSAVE) into a
///   64-byte aligned area on the stack and XRSTOR.
/// - hook_site::function_entry (a function's first instruction): what the calling convention
///   makes live there: the argument registers at full width (zmm0-7 where AVX-512 is
///   enabled, else ymm0-7 or xmm0-7) and xmm8-15 (ymm8-15 with AVX), which a caller may keep
///   across a call to a function it knows leaves them alone (GCC's -fipa-ra). The x87 stack is
///   empty at a call and the x87 control word and MXCSR are callee-saved, so the handler (C++
///   code following the same convention) keeps them. zmm16-31 and the mask registers are not
///   saved there: no convention passes values in them.
/// - Return stubs (a function's return: rax, rdx, xmm0-1 or st0-1 hold its results) save as
///   at a function's entry; when the x87 stack is not empty (a long double result) they take
///   the full save instead.
/// - Trap probes: the kernel saves and restores the whole state around the signal.
/// The stub moves rsp below the 128-byte red zone before it writes anything.
///
/// Where a jump cannot go, install_trap() places an int3 instead, with the kernel's uprobe
/// semantics: the SIGTRAP handler builds the pt_regs from the signal's context, runs the
/// handlers, and sends the thread through an out-of-line copy of the displaced instruction
/// (relocated like a trampoline: `ret`, branches and RIP-relative operands work), which jumps
/// back behind it. A trap costs a signal per call.
///
/// Patching live code: where the kernel has membarrier SYNC_CORE, the bytes are written as
/// the kernel's text_poke_bp writes them (an int3 first, every thread core-serialised between
/// the steps; a thread reaching the int3 meanwhile is sent on by the SIGTRAP handler). No
/// other thread is interrupted, so blocking system calls in them run undisturbed. When a jump
/// replaces several instructions, patching waits until every other thread has run (or is
/// blocked in a system call elsewhere) since the int3 went in, so none can still be between
/// them. The SIGTRAP handler is installed at the first patch and chains to the handler the
/// application had then (or the default action) for every int3 that is not bpftime's; an
/// application that installs its own SIGTRAP handler later takes int3s away from bpftime.
///
/// Known limits:
/// - A branch elsewhere in the function that jumps into the replaced instructions (other than
///   to their first byte) cannot be detected in general; such a jump would land inside the
///   patch. install() refuses what it can see (the range running past function_size, int3
///   padding, a function ending with ret/jmp before 5 bytes, a branch inside the range to the
///   middle of the range, and, given function_size, a relative branch anywhere from address to
///   the end of the function into the replaced bytes); install_trap() takes those.
/// - Return hooks keep the return address on a per-thread shadow stack and have the entry stub
///   call the function (its `call` replaces the return address in its slot, so stack arguments
///   stay where they were): the function sees an address in the stub at [rsp], as with the
///   kernel's uretprobes, and its `ret` comes back to the stub as the CPU's return stack
///   predicts; the return stub then returns to the original address. A trap probe, and an entry
///   handler that calls return_early, swap the return address for the return stub's instead.
///   The shadow stack holds 256 entries (deeper calls are run
///   without their return hook and counted by missed_returns()). A longjmp out of a hooked
///   function leaves a stale entry, discarded when a frame further up returns. C++ exceptions
///   cannot unwind through the return stub (it has no unwind information): an exception that
///   leaves a hooked function whose return hook is pending terminates the process. Code that
///   switches stacks (makecontext, coroutines) under a pending return hook is not supported,
///   nor are CET shadow stacks.
/// - Stubs and trampolines are never unmapped (a thread may still be executing them);
///   each hook leaves one page behind when destroyed.
/// - Without membarrier SYNC_CORE, threads are stopped while the code is patched with a
///   real-time signal (hook_stop_signal()); a thread blocking that signal makes install and
///   destruction fail after one second (destruction then keeps the hook, see ~inline_hook).
/// - A handler that calls a hooked function (on its own thread) does not run handlers again:
///   those nested calls run unhooked.
#pragma once

#include "bpftime/result.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace bpftime {

/// The registers at a probe, in the layout of the Linux kernel's x86-64 struct pt_regs, so eBPF
/// programs written with libbpf's bpf_tracing.h (PT_REGS_PARM1.., PT_REGS_RC) read them
/// unchanged. orig_rax is always -1 (as the kernel has it outside system calls); cs and ss are
/// the values of the segment registers.
struct pt_regs {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip,
        cs, eflags, rsp, ss;
};

/// Called on entry with the registers as the function sees them (rip = the hooked address,
/// rsp = the stack pointer at entry, pointing at the return address). Return true to have
/// on_return called when this call returns. regs are the saved registers the function goes on
/// with: the handler reads them and must not change them.
using hook_entry_fn = bool (*)(void *user, const pt_regs *regs);
/// Called when a call whose entry handler returned true returns: rax = the return value,
/// rip = the hooked address (the function's), rsp = the stack pointer after the return.
using hook_return_fn = void (*)(void *user, const pt_regs *regs);

/// Where a hook is placed: how much of the vector state its stub must keep (see above).
enum class hook_site : uint8_t {
    /// Anywhere, such as inside a function: the whole state is saved (XSAVE).
    any,
    /// A function's first instruction: the registers the calling convention makes live.
    function_entry,
};

/// How a hook would go in at an instruction (decide_hook_site).
enum class hook_site_kind {
    jump,         ///< a 5-byte jump inside the function
    padding_jump, ///< a 5-byte jump that runs into the fill after a function shorter than it
    trap,         ///< an int3 (a trap probe)
    refused,      ///< neither
};

/// What decide_hook_site found.
struct hook_site_decision {
    hook_site_kind kind = hook_site_kind::refused;
    std::string why; ///< why no jump (for trap) or nothing (for refused) can go there
};

/// Decides, without installing anything, how a uprobe would hook the instruction at code: a
/// jump (install() with function_size and padding_after), else an int3 (install_trap()), else
/// neither, by the same checks. code points at the instruction's bytes as the binary holds
/// them (a copy will do), readable for `available` bytes, which covers the rest of the
/// function (function_size) and the fill after it.
hook_site_decision decide_hook_site(const uint8_t *code, size_t available, size_t function_size,
                                    size_t padding_after);

/// One inline hook at one address. At most one per address: a program multiplexer sits on
/// top of it.
class inline_hook {
public:
    /// Hooks the instruction at address (normally a function's first instruction, or
    /// function+offset). function_size, when not 0, is the number of bytes from address to the
    /// end of the function: the patch must fit inside. Refuses with a clear message what cannot
    /// be relocated safely, an address that is not mapped executable and an address already
    /// hooked. on_return may be null (then entry results are ignored). site says what the stub
    /// saves: hook_site::function_entry only where address is a function's first instruction.
    /// padding_after (with function_size) is how many bytes after the function's end are fill
    /// that no code, symbol, unwind entry or relocation uses (uprobe_location::padding_after):
    /// a function ending (ret, jmp) less than 5 bytes in is then patched with a jump that runs
    /// into that fill (padding_used()), where its bytes are still int3 or nop.
    static result<std::unique_ptr<inline_hook>> install(uintptr_t address, size_t function_size,
                                                        hook_entry_fn on_entry,
                                                        hook_return_fn on_return, void *user,
                                                        hook_site site = hook_site::any,
                                                        size_t padding_after = 0);
    /// Hooks the instruction at address with an int3 (a trap probe): for what install() refuses
    /// because a 5-byte jump does not fit (a function shorter than 5 bytes before its `ret`, a
    /// branch into the first bytes, a neighbouring hook). Same handlers and return_early; each
    /// hooked call takes a SIGTRAP. Refuses an address that is not mapped executable, an int3
    /// already there and an address already hooked.
    static result<std::unique_ptr<inline_hook>> install_trap(uintptr_t address,
                                                             size_t function_size,
                                                             hook_entry_fn on_entry,
                                                             hook_return_fn on_return, void *user);
    /// The same with no function size.
    static result<std::unique_ptr<inline_hook>> install(uintptr_t address, hook_entry_fn on_entry,
                                                        hook_return_fn on_return, void *user) {
        return install(address, 0, on_entry, on_return, user);
    }

    /// Restores the original bytes exactly (safe while other threads run, which it does not
    /// interrupt where membarrier SYNC_CORE exists; calls in flight finish). When it returns, no
    /// handler of this hook runs any more or will run again; returns still pending then go back to
    /// their callers without on_return. Must not be called from a handler of the same hook. If the
    /// other threads cannot be stopped (one blocks the stop signal), the bytes stay patched and the
    /// handlers disabled, with a message on stderr.
    ~inline_hook();

    inline_hook(const inline_hook &) = delete;
    inline_hook &operator=(const inline_hook &) = delete;

    /// The hooked address.
    uintptr_t address() const;
    /// How many bytes at address() were replaced (5 or more: whole instructions), or for a trap
    /// probe the length of the displaced instruction.
    size_t patched_bytes() const;
    /// Whether this is a trap probe (install_trap).
    bool is_trap() const;
    /// How many bytes of the fill after the function the jump covers (0: none; the jump lies
    /// inside the function, or this is a trap probe).
    size_t padding_used() const;

    /// Called from an entry handler, on its thread: when the handler returns, the hooked call
    /// returns value (in rax) to its caller without running the function: every other register
    /// is as at entry and rsp as after a `ret` (error injection). The return hook, when the
    /// handler asked for it, still runs and sees value. Meaningful only when the hook is at a
    /// function's first instruction. False (nothing changes) outside an entry handler.
    static bool return_early(uint64_t value);

    /// Return-only (true): the entry handler is not called and every hooked call asks for the
    /// return hook, as if the entry handler returned true. At a function's first instruction
    /// (hook_site::function_entry) the stub then saves no vector state on entry (nothing it
    /// runs there touches it): for an owner with return handlers only. Off (false) by default;
    /// nothing changes for a hook without on_return. Safe while hooked calls
    /// run: each call sees the old or the new mode.
    void set_return_only(bool on);

    /// A plain entry handler (null: none, the default): called instead of the entry handler,
    /// with the same arguments and result, from a stub that saves no vector state, at a
    /// function's first instruction (hook_site::function_entry; elsewhere the entry handler
    /// runs as before). fn must change no vector, x87 or MMX register: code compiled for the
    /// general-purpose registers only, calling only code that keeps them (a C++ call through
    /// BPFTIME_KEEPING_VECTOR_STATE, or the entry handler so); a thread's first hooked call and
    /// the return hook's bookkeeping take the saving path themselves. Return-only wins over
    /// it. Safe while hooked calls run: each sees the old or the new handler.
    void set_plain_entry(hook_entry_fn fn);
    /// The same for the return handler (null: none, the default): called instead of on_return
    /// from the return stub, which then saves no vector state (the function's results in
    /// vector or x87 registers stay as they are, since fn touches none).
    void set_plain_return(hook_return_fn fn);

    /// Turns the handlers of every hook off (true) or back on (false) for the calling thread
    /// and returns what was set before: hooked calls the thread makes meanwhile run unhooked,
    /// as calls from a handler do (no entry handler, no return hook). Hosts set it on their own
    /// threads and around their own work; it is one flag the stub's dispatch reads beside the
    /// handler flag, so it costs a hooked call nothing more.
    static bool set_thread_handlers_off(bool off);

    /// Calls whose return hook was skipped because the calling thread's shadow stack was full,
    /// over all hooks since the process started.
    static uint64_t missed_returns();
    /// The real-time signal used to stop the other threads while code is patched.
    static int hook_stop_signal();

    struct record;

private:
    explicit inline_hook(record *rec) : rec_(rec) {}
    record *rec_; // never freed: the stubs of a destroyed hook may still be running
};

} // namespace bpftime
