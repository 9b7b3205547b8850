// SPDX-License-Identifier: MIT
/// @file
/// Interception of this process's system calls on x86-64, the base of syscall tracepoints
/// hosted in user space.
///
/// Two mechanisms, the first preferred:
/// - Rewriting. When armed, the `syscall` instructions of the functions of every mapped ELF
///   object (the main program, libc, other libraries; functions found through `.symtab` or
///   `.dynsym`, decoded whole with Zydis) are replaced: a 5-byte `jmp` over whole instructions
///   around the `syscall` goes to a trampoline near the site that runs the relocated
///   instructions; in place of the `syscall` it jumps to a short thunk that checks the
///   number in a table of wanted numbers (flags kept) and either performs the system call from
///   the gate (not wanted: no handler, a few instructions) or enters a common stub that saves
///   the registers (and xmm0-15) as a `pt_regs` and dispatches. A site is refused (left to the
///   fallback) when its function does not decode, when a direct branch of the function lands
///   strictly inside the replaced bytes, when the bytes cannot be relocated, or when the
///   trampoline is out of reach. Indirect branches into the replaced bytes cannot be seen.
/// - Syscall User Dispatch (Linux 5.11+, `PR_SET_SYSCALL_USER_DISPATCH`) for every other
///   `syscall` executed by a registered thread: code refused above, functions without symbols,
///   JIT'ed code, objects mapped after arming. The kernel raises SIGSYS; the handler dispatches
///   the same way and puts the result in the interrupted context. Chosen over a seccomp filter
///   because it can be switched off (a selector byte: nothing is trapped while no syscall is
///   wanted), does not need no_new_privs, and does not survive execve into a program without
///   the agent. Its limits: the setting is per thread and not inherited by fork or clone, so a
///   host registers each thread (enable_thread(): the agent does so for threads made with
///   pthread_create and in fork children); threads created with a raw clone are not covered
///   by it; an application that replaces the SIGSYS handler ends it.
///
/// The agent's own system calls and those of the stubs are never intercepted: the gate, one
/// region of memory that holds the `syscall` instructions the dispatcher executes, is the range
/// Syscall User Dispatch always allows; threads marked internal (set_thread_internal) and calls
/// made while handlers run pass straight through.
///
/// System calls that depend on the stack or the signal frame they run on (`clone`, `clone3`,
/// `fork`, `vfork`, `rt_sigreturn`; and through the fallback also `rt_sigprocmask`,
/// `rt_sigsuspend`, `sigaltstack`, which would act on the SIGSYS handler's mask and stack) run
/// with the application's own registers from a per-site stub in the gate: their enter handlers
/// run before; for `clone`, `clone3`, `fork` and `vfork` the exit handlers run after, from a
/// stub behind the `syscall`, in the parent (the child's id) and in the child (0, on the
/// child's stack, Syscall User Dispatch already off there for `clone` and `clone3`); the others
/// have no exit handlers run. Every other call is made by the dispatcher from the gate;
/// a signal that interrupts it behaves as for the original instruction (EINTR, or a restart
/// with SA_RESTART, decided by the kernel for that very call).
#pragma once

#include "bpftime/hook/inline_hook.hpp"
#include "bpftime/result.hpp"

#include <cstddef>
#include <cstdint>

namespace bpftime::syscall_intercept {

/// Numbers below this are looked up in the table of wanted numbers; the rest count as wanted
/// when wanted_above() is set.
inline constexpr uint64_t table_size = 1024;

/// What the dispatcher calls for a wanted system call. regs are the registers of the call as
/// the kernel sees them (orig_rax = rax = the number; rdi, rsi, rdx, r10, r8, r9 the arguments;
/// rip after the `syscall`); for exit, rax is the return value. Handlers read them and must not
/// change them. System calls the handlers make pass through.
struct handlers {
    void (*enter)(void *user, const pt_regs *regs) = nullptr;
    void (*exit)(void *user, const pt_regs *regs) = nullptr;
    void *user = nullptr;
};

/// Sets up interception in this process (once; later calls change the handlers only): the
/// gate, the SIGSYS handler, and Syscall User Dispatch on the calling thread with nothing
/// trapped yet. Fails with the kernel's errno when the kernel lacks Syscall User Dispatch.
result<void> start(const handlers &h);
/// Turns Syscall User Dispatch on for the calling thread (new threads, fork children).
result<void> enable_thread();
/// Turns Syscall User Dispatch off for the calling thread (a thread about to exit: glibc blocks
/// every signal there, and a trap with SIGSYS blocked would end the process).
void disable_thread();
/// Whether the calling thread is one of the host's own: its system calls pass through.
void set_thread_internal(bool internal);
/// Whether the calling thread is marked internal.
bool thread_internal();

/// Marks system call nr as wanted (or not): a wanted number runs the enter handler, and the
/// exit handler unless with_exit is false (nothing to run there: the call costs less).
void set_wanted(uint64_t nr, bool wanted, bool with_exit = true);
/// Numbers at or above table_size (none on x86-64 today) count as wanted.
void set_wanted_above(bool wanted);

/// What arm() did.
struct arm_report {
    size_t sites = 0;   ///< `syscall` sites rewritten now (in all, with those kept from before)
    size_t refused = 0; ///< sites found but left to Syscall User Dispatch
};

/// Rewrites the sites of the objects mapped now (objects seen before keep their trampolines)
/// and turns trapping on for the registered threads. Idempotent.
result<arm_report> arm();
/// Turns trapping off and puts every rewritten site's original bytes back.
result<void> disarm();
/// Whether armed.
bool armed();

/// Performs a system call from the gate: never intercepted. Returns the kernel's result
/// (negative errno on failure).
long raw_syscall(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0,
                 long a6 = 0);

/// System calls that reached the handlers through Syscall User Dispatch, since start.
uint64_t trapped_calls();
/// System calls that reached the handlers through a rewritten site, since start.
uint64_t rewritten_calls();

} // namespace bpftime::syscall_intercept
