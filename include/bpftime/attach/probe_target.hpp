// SPDX-License-Identifier: MIT
/// @file
/// Probe targets as users write them: uprobes ("BINARY:SYMBOL[+OFFSET]", "BINARY:ADDRESS")
/// resolved to a binary and an instruction in it, and kernel tracepoints ("CATEGORY:NAME")
/// resolved to their tracefs id.
#pragma once

#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace bpftime {

/// Where a uprobe goes: a binary and the instruction's place in it.
struct uprobe_location {
    /// The binary: an absolute path, symbolic links resolved.
    std::string binary;
    /// The function named; empty when the place was given as an address.
    std::string symbol;
    /// Bytes past the symbol's start (SYMBOL+OFFSET).
    uint64_t offset = 0;
    /// The probed instruction's ELF virtual address (as nm and objdump show it).
    uint64_t address = 0;
    /// The same instruction's offset in the file (what the kernel's uprobe PMU takes).
    uint64_t file_offset = 0;
    /// Bytes from the probed instruction to the end of the function (the symbol's size less
    /// the offset); 0 when unknown (given as an address, or a symbol without a size).
    uint64_t bytes_to_end = 0;
    /// Bytes after the function's end that are fill no code uses (int3 or nop up to the next
    /// symbol or unwind entry, named by no symbol or relocation; at most 15), which a hook's
    /// jump may run into when the function is shorter than the jump; 0 when unknown.
    uint64_t padding_after = 0;
    /// The instruction is a function's first (SYMBOL with no offset, or an ADDRESS where a
    /// function symbol starts): only there may a program make the function return early
    /// (override_return).
    bool function_entry = false;
    /// A USDT semaphore's ELF virtual address ("(0xADDRESS)" after the place), 0 for none:
    /// hosts add one to the 16-bit counter there while the probe is attached, as the kernel
    /// does with a uprobe's reference counter.
    uint64_t semaphore = 0;
    /// The semaphore's offset in the file (the kernel's uprobe ref_ctr_offset).
    uint64_t semaphore_offset = 0;
};

/// Where a resolved uprobe location is in this process: the run-time address of its
/// instruction, found through /proc/self/maps (the binary's executable mapping that holds
/// file_offset). ENOENT when the binary is not mapped here.
result<uintptr_t> runtime_address(const uprobe_location &loc);

/// What runtime_address's ENOENT says after the binary's path: a host that does not map the
/// binary records it as its state of the link, which `bpftime attach` tells from a refusal.
inline constexpr std::string_view not_mapped_here = " is not mapped executable in this process";

/// Where a resolved location's semaphore is in this process: the writable mapping of the
/// binary that holds semaphore_offset. ENOENT when the binary's data is not mapped here.
result<uint16_t *> runtime_semaphore(const uprobe_location &loc);

/// Parses and resolves "BINARY:SYMBOL", "BINARY:SYMBOL+OFFSET" (decimal or 0x hex) or
/// "BINARY:ADDRESS" (0x hex, an ELF virtual address as nm/objdump print it), each optionally
/// followed by "(0xSEMAPHORE)", the ELF virtual address of a USDT semaphore (a 16-bit counter
/// in a loadable segment of the same binary).
///
/// BINARY is found as find_binary() finds it. Text after the ':' that starts with a digit is an
/// ADDRESS and must be written 0x hex (nm's bare hex is refused, not read as decimal). SYMBOL
/// is a defined function (STT_FUNC) of `.symtab` or `.dynsym` with exactly that name, written
/// without a version ("malloc", not "malloc@@GLIBC_2.2.5"); a global or weak symbol wins over
/// a local one, then the default version over older ones. Indirect functions (ifunc) are
/// refused. The binary must be an x86-64 executable or shared library, and the instruction must
/// lie in an executable PT_LOAD segment. Every refusal's message starts with the text given,
/// then names the binary (as resolved, once it is found) and the symbol.
result<uprobe_location> resolve_uprobe_target(std::string_view args);

/// A binary by name: a name containing '/' is a path (made absolute, symlinks resolved);
/// otherwise searched in $PATH and then in the library folders (/lib/x86_64-linux-gnu,
/// /usr/lib/x86_64-linux-gnu, /lib64, /usr/lib64, /lib, /usr/lib), so "libc.so.6" works.
result<std::string> find_binary(std::string_view name);

/// The id of a kernel tracepoint "CATEGORY:NAME" (e.g. "syscalls:sys_enter_getpid"), read
/// from tracefs (/sys/kernel/tracing/events/CATEGORY/NAME/id; mounts tracefs at
/// /sys/kernel/tracing when nothing is mounted there and the caller may; falls back to
/// /sys/kernel/debug/tracing).
result<uint64_t> tracepoint_id(std::string_view args);

/// Refuses (EINVAL) a program that calls override_return (58) at a target where a function
/// cannot be made to return early: anything but a uprobe at a function's first instruction
/// (a uretprobe, a uprobe at an offset inside a function, other attach types). The message
/// names the program, the helper and the target.
result<void> check_return_override(std::span<const vm::ebpf_inst> insns, uint32_t prog_id,
                                   int32_t attach_type, std::string_view args);

/// Checks a target's arguments where they can be checked before anything attaches: uprobe and
/// uretprobe locations are resolved, tracepoints looked up; other types pass. Providers call
/// it when a target is created, so the controller sees why a target is wrong.
result<void> check_target_args(int32_t attach_type, std::string_view args);

} // namespace bpftime
