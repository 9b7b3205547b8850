// SPDX-License-Identifier: MIT
/// @file
/// USDT probes (<sys/sdt.h>, systemtap's `.note.stapsdt`): the probe sites a binary declares and
/// their argument specs turned into libbpf's `struct __bpf_usdt_spec`, which the BPF side of
/// libbpf's usdt.bpf.h (bpf_usdt_arg, bpf_usdt_arg_cnt, bpf_usdt_cookie) reads from the
/// program's `__bpf_usdt_specs` map at the spec id its attach cookie carries.
#pragma once

#include <bpftime/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bpftime {

/// One probe site of a binary, as its `.note.stapsdt` note declares it.
struct usdt_note {
    std::string provider;
    std::string name;
    /// The argument specs as the note has them, e.g. "-4@%edi 8@-8(%rbp) 4@$5".
    std::string args;
    /// The site's ELF virtual address (adjusted for prelinking through `.stapsdt.base`).
    uint64_t address = 0;
    /// The semaphore's ELF virtual address, 0 when the probe has none.
    uint64_t semaphore = 0;
};

/// Every note of `.note.stapsdt` in a binary (found as find_binary finds it), in file order.
/// A binary without the section has none; a damaged note is refused with the binary's name.
result<std::vector<usdt_note>> read_usdt_notes(std::string_view binary);

/// How one argument is found, as libbpf's enum __bpf_usdt_arg_type.
enum usdt_arg_type : uint32_t {
    usdt_arg_const = 0,     ///< the value is val_off
    usdt_arg_reg = 1,       ///< the register at reg_off in pt_regs
    usdt_arg_reg_deref = 2, ///< 8 bytes read at (that register + val_off)
};

/// libbpf's struct __bpf_usdt_arg_spec (usdt.bpf.h), byte for byte.
struct usdt_arg_spec {
    uint64_t val_off = 0;
    uint32_t arg_type = usdt_arg_const;
    int16_t reg_off = 0; ///< offset of the register in struct pt_regs
    bool arg_signed = false;
    /// 64 less the argument's size in bits: the value read is shifted left and back (signed
    /// when arg_signed) by this much.
    int8_t arg_bitshift = 0;
};

/// The most arguments a probe may have (libbpf's BPF_USDT_MAX_ARG_CNT).
inline constexpr int usdt_max_args = 12;

/// libbpf's struct __bpf_usdt_spec (usdt.bpf.h), byte for byte: the value type of
/// `__bpf_usdt_specs`.
struct usdt_spec {
    usdt_arg_spec args[usdt_max_args];
    uint64_t usdt_cookie = 0; ///< what bpf_usdt_cookie gives
    int16_t arg_cnt = 0;
};
static_assert(sizeof(usdt_arg_spec) == 16 && sizeof(usdt_spec) == 208,
              "the layout of libbpf's usdt.bpf.h");

/// Parses a note's argument specs (x86-64, as libbpf reads them): space-separated
/// SIZE@OPERAND where SIZE is 1, 2, 4 or 8, negative for a signed value, and OPERAND is a
/// register (%edi), a constant ($-5) or a memory operand (-8(%rbp), (%rax)). Registers are
/// the general-purpose ones in their 64/32/16/8-bit names and %rip. Refusals name the argument
/// and say what is wrong ("argument 2 '3@%edi': size 3 is not 1, 2, 4 or 8").
result<usdt_spec> parse_usdt_args(std::string_view args);

/// One site of a USDT target: the note, the uprobe target text that probes it
/// ("BINARY:0xADDRESS" or "BINARY:0xADDRESS(0xSEMAPHORE)") and its parsed spec.
struct usdt_site {
    usdt_note note;
    std::string uprobe_args;
    usdt_spec spec;
};

/// Resolves "BINARY:PROVIDER:NAME" to every site of that probe in the binary (a probe may be
/// placed at several sites, e.g. in inlined code). ENOENT naming the probes the binary has
/// when none matches; EINVAL for a malformed argument spec (naming the site).
result<std::vector<usdt_site>> resolve_usdt_target(std::string_view args);

} // namespace bpftime
