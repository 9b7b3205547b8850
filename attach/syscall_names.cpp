// SPDX-License-Identifier: MIT
// The x86-64 system call table and the user-space system call tracepoint targets.
#include <bpftime/attach/syscalls.hpp>

#include <cerrno>
#include <utility>

namespace bpftime {
namespace {

struct syscall_entry {
    std::string_view name;
    uint32_t nr;
};

constexpr syscall_entry table[] = {
#include "syscall_names.inc"
};

// Tracepoints named after the kernel's function where it differs from the unistd name.
constexpr std::pair<std::string_view, std::string_view> tracepoint_names[] = {
    {"newfstat", "fstat"},
    {"newstat", "stat"},
    {"newlstat", "lstat"},
    {"newuname", "uname"},
};

} // namespace

std::optional<uint32_t> syscall_number(std::string_view name) {
    for (const auto &[alias, real] : tracepoint_names) {
        if (name == alias) {
            name = real;
        }
    }
    for (const syscall_entry &e : table) {
        if (e.name == name) {
            return e.nr;
        }
    }
    return std::nullopt;
}

std::string syscall_name(uint32_t nr) {
    for (const syscall_entry &e : table) {
        if (e.nr == nr) {
            return std::string(e.name);
        }
    }
    return "";
}

result<syscall_tracepoint> parse_syscall_tracepoint(std::string_view args) {
    const std::string text(args);
    const size_t colon = args.find(':');
    if (colon == std::string_view::npos) {
        return make_error(EINVAL, text + ": expected syscalls:sys_enter_NAME or "
                                         "syscalls:sys_exit_NAME");
    }
    const std::string_view category = args.substr(0, colon);
    const std::string_view event = args.substr(colon + 1);
    syscall_tracepoint tp;
    if (category == "raw_syscalls" && (event == "sys_enter" || event == "sys_exit")) {
        tp.all = true;
        tp.exit = event == "sys_exit";
        tp.event = std::string(event);
        return tp;
    }
    if (category != "syscalls") {
        return make_error(EOPNOTSUPP, text + ": only the kernel hosts tracepoints of category '" +
                                          std::string(category) +
                                          "'; user space hosts syscalls:sys_enter_NAME, "
                                          "syscalls:sys_exit_NAME and raw_syscalls:sys_enter|"
                                          "sys_exit");
    }
    std::string_view name;
    if (event.starts_with("sys_enter_")) {
        name = event.substr(10);
    } else if (event.starts_with("sys_exit_")) {
        name = event.substr(9);
        tp.exit = true;
    } else {
        return make_error(EINVAL, text + ": expected sys_enter_NAME or sys_exit_NAME after "
                                         "'syscalls:'");
    }
    auto nr = syscall_number(name);
    if (!nr) {
        return make_error(ENOENT,
                          text + ": no x86-64 system call named '" + std::string(name) + "'");
    }
    tp.nr = *nr;
    tp.event = std::string(event);
    return tp;
}

result<bool> parse_raw_syscall_tracepoint(std::string_view args) {
    if (args == "sys_enter") {
        return false;
    }
    if (args == "sys_exit") {
        return true;
    }
    return make_error(EOPNOTSUPP, std::string(args) +
                                      ": user space hosts the raw tracepoints sys_enter and "
                                      "sys_exit only");
}

} // namespace bpftime
