// SPDX-License-Identifier: MIT
/// @file
/// System call tracepoints as user space hosts them: the x86-64 system call table, the
/// targets ("syscalls:sys_enter_NAME", "syscalls:sys_exit_NAME"; raw "sys_enter", "sys_exit")
/// and the contexts programs see, laid out as the kernel's tracepoint formats.
#pragma once

#include <bpftime/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bpftime {

/// The number of an x86-64 system call by name ("openat"), or by the name its tracepoints
/// carry where that differs ("newfstat" for fstat, "newuname" for uname, ...).
std::optional<uint32_t> syscall_number(std::string_view name);
/// The name of an x86-64 system call ("" when the number has none).
std::string syscall_name(uint32_t nr);

/// One system call tracepoint.
struct syscall_tracepoint {
    uint32_t nr = 0;
    bool exit = false; ///< sys_exit_NAME (else sys_enter_NAME)
    bool all = false;  ///< raw_syscalls:sys_enter or sys_exit: every system call (nr unused)
    std::string event; ///< as tracefs names it: "sys_enter_openat"
};

/// Parses a tracepoint target hosted in user space: "syscalls:sys_enter_NAME",
/// "syscalls:sys_exit_NAME", or "raw_syscalls:sys_enter" / "raw_syscalls:sys_exit" (every
/// system call, as syscount uses them). Other categories are refused (EOPNOTSUPP: the kernel's
/// only), unknown system calls too (ENOENT).
result<syscall_tracepoint> parse_syscall_tracepoint(std::string_view args);

/// Parses a raw tracepoint target hosted in user space: "sys_enter" or "sys_exit" (true).
result<bool> parse_raw_syscall_tracepoint(std::string_view args);

/// The context of a sys_enter_* tracepoint (/sys/kernel/tracing/events/syscalls/
/// sys_enter_NAME/format): the 8 bytes of common fields, the number, each argument as 8 bytes
/// from offset 16 (all six are filled).
struct syscall_enter_context {
    uint16_t common_type;         ///< the tracepoint's tracefs id (0 when tracefs is missing)
    uint8_t common_flags;         ///< 0
    uint8_t common_preempt_count; ///< 0
    int32_t common_pid;           ///< the calling thread's id
    int32_t syscall_nr;
    uint32_t pad;
    uint64_t args[6];
};
static_assert(sizeof(syscall_enter_context) == 64);

/// The context of a sys_exit_* tracepoint: common fields, the number, the return value at 16.
struct syscall_exit_context {
    uint16_t common_type;
    uint8_t common_flags;
    uint8_t common_preempt_count;
    int32_t common_pid;
    int32_t syscall_nr;
    uint32_t pad;
    int64_t ret;
};
static_assert(sizeof(syscall_exit_context) == 24);

/// The context of raw_syscalls:sys_enter (/sys/kernel/tracing/events/raw_syscalls/sys_enter/
/// format): the common fields, `long id` at 8, `unsigned long args[6]` at 16.
struct raw_syscalls_enter_context {
    uint16_t common_type;
    uint8_t common_flags;
    uint8_t common_preempt_count;
    int32_t common_pid;
    int64_t id;
    uint64_t args[6];
};
static_assert(sizeof(raw_syscalls_enter_context) == 64);

/// The context of raw_syscalls:sys_exit: the common fields, `long id` at 8, `long ret` at 16.
struct raw_syscalls_exit_context {
    uint16_t common_type;
    uint8_t common_flags;
    uint8_t common_preempt_count;
    int32_t common_pid;
    int64_t id;
    int64_t ret;
};
static_assert(sizeof(raw_syscalls_exit_context) == 24);

} // namespace bpftime
