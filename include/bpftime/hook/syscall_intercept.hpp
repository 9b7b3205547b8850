// SPDX-License-Identifier: MIT
/// @file
/// Interception of this process's system calls on x86-64, the base of syscall tracepoints
/// hosted in user space.
///
/// Two mechanisms, the first preferred:
/// - Rewriting. When armed, the `syscall` instructions of the functions of every mapped ELF
///   object (the main program, libc, other libraries; functions found through `.symtab` or
///   `.dynsym`, decoded whole with Zydis) are replaced: a 5-byte `jmp` over whole instructions
///   before the `syscall` (the `syscall`'s own bytes stay, so a call the kernel restarts, which
///   it sends back to the `syscall`, makes the original call; with less room before it, an
///   int3 on the first of the instructions around it) goes to a trampoline near the site that
///   runs the relocated instructions; in place of the `syscall` it jumps to a short thunk that
///   checks the number in a table of wanted numbers (flags kept) and either performs the system
///   call from the gate (not wanted: no handler, a few instructions), or enters a common stub that
///   saves the registers (and xmm0-15) as a `pt_regs` and dispatches, or, for a number with an
///   enter handler on the kernel's sys_enter record alone (handlers::enter_record), enters a
///   short stub that saves only what a function call may change, pushes the record, runs that
///   handler and makes the call from the gate, with no exit side. A site is refused (left to
///   the fallback) when its function does not decode, when a direct branch of the function lands
///   strictly inside the replaced bytes, when the bytes cannot be relocated, or when the
///   trampoline is out of reach. Indirect branches into the replaced bytes cannot be seen.
/// - Syscall User Dispatch (Linux 5.11+, `PR_SET_SYSCALL_USER_DISPATCH`) for every other
///   `syscall` executed by a registered thread: code refused above, functions without symbols,
///   JIT'ed code, objects mapped after arming. The kernel raises SIGSYS; the handler dispatches
///   the same way and puts the result in the interrupted context. Chosen over a seccomp filter
///   because it can be switched off, does not need no_new_privs, and does not survive execve
///   into a program without the agent. While a thread has it on, every system call of that
///   thread takes the kernel's slow path (tens of ns) whatever the selector says, so it is on
///   only where needed (dispatch_mode::when_needed, the default): while armed and some
///   executable code may make a system call no rewritten site catches (a site refused,
///   executable memory outside the scanned objects that holds the bytes of a `syscall`, cannot
///   be read, or is writable or shared). Calls of the application that map executable memory
///   (mmap, mprotect, pkey_mprotect through rewritten sites) are watched: such memory holding a
///   `syscall` turns it on at once for the calling thread. The setting is per thread and only
///   the thread itself can change it, without signals: each registered thread applies the
///   process-wide wish at its next call through the dispatcher (a wanted number, a watched one,
///   clone) or when registered. Until then (a thread that makes no such call), that thread's
///   calls from unrewritten code are not seen, and a thread that had it on keeps paying the
///   slow path (nothing trapped) after the wish went off. A host registers each thread
///   (enable_thread(): the agent does so for threads made with pthread_create and in fork
///   children); threads created with a raw clone are not covered by it; an application that
///   replaces the SIGSYS handler ends it. Objects loaded after arming are rewritten at the
///   next arm() (each link attach); until then their exec mappings keep it on.
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
#include <string>

namespace bpftime::syscall_intercept {

/// Numbers below this are looked up in the table of wanted numbers; the rest count as wanted
/// when wanted_above() is set.
inline constexpr uint64_t table_size = 1024;

/// The record of a system call's entry as the kernel's sys_enter tracepoints lay it out
/// (`struct trace_event_raw_sys_enter`): 8 bytes of common fields, the number at 8 (a 64-bit
/// `long id` for raw_syscalls:sys_enter; `int __syscall_nr` and 4 bytes of padding, zero for
/// the numbers below table_size, for syscalls:sys_enter_*), the six arguments at 16.
struct enter_record {
    uint64_t common; ///< zero; the handler fills it (type, flags, preempt count, pid)
    uint64_t nr;
    uint64_t args[6]; ///< rdi, rsi, rdx, r10, r8, r9
};
static_assert(sizeof(enter_record) == 64);

/// What the dispatcher calls for a wanted system call. regs are the registers of the call as
/// the kernel sees them (orig_rax = rax = the number; rdi, rsi, rdx, r10, r8, r9 the arguments;
/// rip after the `syscall`); for exit, rax is the return value. Handlers read them and must not
/// change them. System calls the handlers make pass through.
///
/// enter_record, when set, is the enter handler of the numbers marked wanted without an exit
/// handler and without registers (set_wanted: with_exit and full_regs false): a rewritten
/// site's call of such a number takes the short path, which saves only the registers a
/// function call may change, builds the record in place from the registers (the handler may
/// fill rec->common and must change nothing else; the record is on the calling thread's stack
/// and only valid during the call), runs the handler and makes the call from the gate, with no
/// exit side. Calls that come through Syscall User Dispatch, and every number while this is
/// null, run enter instead.
///
/// enter_record_plain, when set, is enter_record for the numbers marked vector-free as well
/// (set_wanted): their short path saves no vector register either, so this handler must change
/// none (no vector, x87 or MMX register, no MXCSR): code compiled for the general-purpose
/// registers only, that calls only code that keeps the vector state. Where that cannot hold
/// (a thread's first call, a number no longer vector-free), the handler calls enter_record
/// through call_keeping_vector_state.
struct handlers {
    void (*enter)(void *user, const pt_regs *regs) = nullptr;
    void (*exit)(void *user, const pt_regs *regs) = nullptr;
    void *user = nullptr;
    void (*enter_record)(void *user, enter_record *rec) = nullptr;
    void (*enter_record_plain)(void *user, struct enter_record *rec) = nullptr;
};

/// Calls fn(user, rec) with the whole vector state kept (saved and restored around it): for an
/// enter_record_plain handler that must run code that may change it.
void call_keeping_vector_state(void (*fn)(void *user, enter_record *rec), void *user,
                               enter_record *rec);

/// Sets up interception in this process (once; later calls change the handlers only): the
/// gate, the SIGSYS handler, the calling thread registered (enable_thread()). Fails with the
/// kernel's errno when the kernel lacks Syscall User Dispatch.
result<void> start(const handlers &h);
/// Registers the calling thread (new threads, fork children): it gets Syscall User Dispatch
/// whenever the process needs it (now, if it does).
result<void> enable_thread();
/// Turns Syscall User Dispatch off for the calling thread and unregisters it (a thread about to
/// exit: glibc blocks every signal there, and a trap with SIGSYS blocked would end the process).
void disable_thread();
/// Whether the calling thread is one of the host's own: its system calls pass through.
void set_thread_internal(bool internal);
/// Whether the calling thread is marked internal.
bool thread_internal();

/// Marks system call nr as wanted (or not): a wanted number runs the enter handler, and the
/// exit handler unless with_exit is false (nothing to run there: the call costs less). With
/// with_exit and full_regs false (the enter handler needs the number and the arguments only),
/// rewritten sites run handlers::enter_record on the short path instead (except for the calls
/// that must run natively or are watched for executable memory, which keep the full path);
/// with vector_free too, handlers::enter_record_plain on a short path that saves no vector
/// register.
void set_wanted(uint64_t nr, bool wanted, bool with_exit = true, bool full_regs = true,
                bool vector_free = false);
/// Numbers at or above table_size (none on x86-64 today) count as wanted.
void set_wanted_above(bool wanted);

/// When Syscall User Dispatch is on for the registered threads (the environment variable
/// `BPFTIME_SYSCALL_DISPATCH`, read by start(): `auto`, `always`, `never`).
enum class dispatch_mode {
    when_needed, ///< while armed and some code may make a call no rewritten site catches
    always,      ///< while armed (every call of a registered thread is seen at once)
    never,       ///< rewritten sites only (nothing costs the kernel's slow path)
};

/// Sets the mode (and applies it now if armed).
void set_dispatch_mode(dispatch_mode mode);
/// The mode in use.
dispatch_mode current_dispatch_mode();
/// Whether registered threads are to have Syscall User Dispatch on now.
bool dispatch_wanted();
/// Why dispatch_wanted() is what it is (the first code found that needs it, or why not).
std::string dispatch_reason();
/// Whether the calling thread has Syscall User Dispatch on (after applying the current wish).
bool thread_dispatch_on();
/// How many threads have Syscall User Dispatch on (as set through this file).
int dispatch_threads();

/// What arm() did.
struct arm_report {
    size_t sites = 0;      ///< `syscall` sites rewritten now (in all, with those kept from before)
    size_t refused = 0;    ///< sites found but left to Syscall User Dispatch
    bool dispatch = false; ///< whether Syscall User Dispatch is wanted (dispatch_wanted())
    std::string dispatch_reason; ///< why (dispatch_reason())
};

/// Rewrites the sites of the objects mapped now (objects seen before keep their trampolines),
/// while the other threads run (int3, membarrier SYNC_CORE, SIGTRAP handler; stopping them by
/// signal only on kernels without membarrier SYNC_CORE), and decides whether Syscall User
/// Dispatch is needed. Called again, it rewrites objects mapped since and decides again.
result<arm_report> arm();
/// Turns trapping off and puts every rewritten site's original bytes back (threads running;
/// trampolines stay, for threads still returning through them).
result<void> disarm();
/// Whether armed.
bool armed();

/// Performs a system call from the gate: never intercepted. Returns the kernel's result
/// (negative errno on failure).
long raw_syscall(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0,
                 long a6 = 0);

/// System calls that reached the handlers through Syscall User Dispatch, since start.
uint64_t trapped_calls();
/// System calls that reached the handlers through a rewritten site, since start (both paths).
uint64_t rewritten_calls();
/// Of rewritten_calls(), those that took the short path (handlers::enter_record).
uint64_t short_path_calls();
/// Of short_path_calls(), those that took its plain form (handlers::enter_record_plain).
uint64_t plain_path_calls();

} // namespace bpftime::syscall_intercept
