// SPDX-License-Identifier: MIT
/// @file
/// System call tracepoints hosted in this process (the agent): `tracepoint` targets
/// "syscalls:sys_enter_NAME" / "syscalls:sys_exit_NAME" and `raw_tracepoint` targets
/// "sys_enter" / "sys_exit", over the interception of hook/syscall_intercept.hpp.
///
/// Programs see the kernel's contexts (bpftime/attach/syscalls.hpp): sys_enter_* the common
/// fields (common_type the tracefs id, common_pid the thread id), the number and the six
/// arguments; sys_exit_* the number and the return value; raw sys_enter { pointer to the
/// call's struct pt_regs (orig_ax = the number, di, si, dx, r10, r8, r9), number }, raw
/// sys_exit { pt_regs, return value }. Exits of clone, clone3, fork and vfork run twice, as in
/// the kernel: in the parent (the child's id) and in the child (0, its own thread id as
/// common_pid). Contexts are read-only. Programs of one event run in
/// link order. Nothing is intercepted while no link is attached; a link costs only the
/// system calls it names (raw ones: every system call). The system calls bpftime makes
/// itself, and those its programs' helpers make, are not seen.
#pragma once

#include <bpftime/attach/attach.hpp>

namespace bpftime {

/// Sets up interception in this process and on the calling thread (the agent calls it first,
/// in the process's main thread, so that thread is covered whenever links come). Later calls
/// do nothing. Fails when the kernel lacks Syscall User Dispatch (Linux 5.11).
result<void> start_syscall_tracepoints();
/// Covers the calling thread (a thread the process starts, a fork child).
void enable_syscall_tracepoints_thread();
/// The calling thread is about to exit: it is no longer covered.
void disable_syscall_tracepoints_thread();
/// The process forked: the child's thread forgets the parent's thread id.
void syscall_tracepoints_forked_child();

/// The tracepoint and raw_tracepoint attach implementations of this process (one host per
/// process: interception is process-wide), for a host to register (register_attach_impls).
attach_impl_set make_syscall_attach_impls();

} // namespace bpftime
