// SPDX-License-Identifier: MIT
/// @file
/// Reading eBPF ELF objects (clang -O2 -target bpf, libbpf's bpf_helpers.h) into programs
/// and map definitions, with every relocation turned into an lddw pseudo form.
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

struct btf;

namespace bpftime::loader {

/// A global variable of a global data section, as the object's BTF describes it (a DATASEC
/// entry): what `set_global` may set before the object is loaded.
struct elf_global {
    /// What the value is, for parsing a setting.
    enum class kind {
        integer, ///< a signed or unsigned integer of size bytes (char, bool and enums too)
        chars,   ///< an array of char: a string, NUL-terminated within size bytes
        array,   ///< an array of count integers of elem_size bytes, set by index
        other,   ///< anything else (structs, pointers, floats): not settable by name
    };
    std::string name;
    uint32_t offset = 0; ///< in the section (the map's value)
    uint32_t size = 0;
    kind type = kind::other;
    bool is_signed = false; ///< integer, array: the elements' sign
    bool boolean = false;   ///< integer: a _Bool (true/false accepted)
    uint32_t elem_size = 0; ///< array: bytes per element
    uint32_t count = 0;     ///< array: elements
    std::string type_name;  ///< for messages: "int", "char[16]", "struct config", ...
};

/// A map the object defines: a BTF map from `.maps`, or the map of a global data section
/// (.data, .rodata, .bss, ...; one array entry holding the section's bytes).
struct elf_map {
    std::string name; ///< as libbpf names it (e.g. "counts", "prog.rodata")
    maps::map_spec spec;
    std::vector<uint8_t> initial_value; ///< global data: the section's bytes (zeros for .bss)
    bool global_data = false;           ///< a .data/.rodata/.bss map
    bool read_only = false;             ///< .rodata: programs may not write it
    std::vector<elf_global> globals;    ///< global data: its variables (from BTF)
    /// array_of_maps, hash_of_maps (spec.inner from the `__array(values, struct ...)` member):
    /// the maps the definition's initialiser puts in, as (slot, index into elf_object::maps);
    /// the slot is the key (4 bytes) the loader writes the inner map's id at.
    std::vector<std::pair<uint32_t, uint32_t>> inner_maps;
};

/// A program of the object, linked: bpf-to-bpf callees from .text are appended and their
/// call offsets fixed, and every map reference is an lddw pseudo form that names the map by
/// its index in elf_object::maps:
///   src = vm::pseudo_map_idx        imm = map index                  (a map, for helpers)
///   src = vm::pseudo_map_idx_value  imm = map index, next imm = offset (global data address)
struct elf_program {
    std::string name;    ///< the function name
    std::string section; ///< the ELF section (SEC("...")), e.g. "nginx", "uprobe/..."
    uint32_t type = 0;   ///< libbpf's enum bpf_prog_type for the section (0 when unknown)
    std::vector<vm::ebpf_inst> insns;
};

/// A whole object.
struct elf_object {
    std::string path;
    std::vector<elf_map> maps;
    std::vector<elf_program> programs;
};

/// Opens an ELF object with libbpf. Errors name the file and what is wrong (not an ELF file,
/// not BPF, an unsupported map type or relocation, a reference to an unknown symbol, ...).
result<elf_object> open_elf(const std::string &path);

/// Opens an ELF object from memory (name is used in messages).
result<elf_object> open_elf_memory(std::span<const uint8_t> data, const std::string &name);

/// Sets a global variable before the object is loaded, as a skeleton does through its
/// `rodata`/`data`/`bss` pointers: assignment is `NAME=VALUE` (an integer in decimal, 0x hex or
/// negative; true/false for a bool; a string for a char array) or `NAME[INDEX]=VALUE` for an
/// element of an integer array. The error names an unknown variable (listing the object's),
/// a type that cannot be set this way, or a value that does not fit.
result<void> set_global(elf_object &obj, std::string_view assignment);

/// One global data section's bytes and variables, for set_global on an object opened some other
/// way (the kernel provider's, opened by libbpf's bpf_object__open).
struct global_area {
    std::string map_name;                   ///< for messages: "prog.rodata"
    const std::vector<elf_global> &globals; ///< its variables
    std::span<uint8_t> bytes;               ///< its initial value, changed in place
};

/// set_global over global data areas (path names the object in messages); the same grammar,
/// refusals and messages.
result<void> set_global(std::span<const global_area> areas, const std::string &path,
                        std::string_view assignment);

/// The variables of global data section `section` (section_size bytes) as BTF b describes
/// them (its DATASEC); none without BTF or without that DATASEC.
std::vector<elf_global> globals_of_btf(const btf *b, const std::string &section,
                                       uint32_t section_size);

/// Where the struct bpf_spin_lock of BTF type value_type_id (a map's value type) is, in bytes:
/// -1 when it has none (or type 0, no BTF); EINVAL when it has more than one, as Linux's
/// btf_parse_fields refuses. Members of nested structs count (at their offset in the value).
result<int32_t> spin_lock_offset(const struct btf *b, uint32_t value_type_id);

/// True when the bytes start like an ELF file.
bool looks_like_elf(std::span<const uint8_t> data);

} // namespace bpftime::loader
