// SPDX-License-Identifier: MIT
/// @file
/// Reading eBPF ELF objects (clang -O2 -target bpf, libbpf's bpf_helpers.h) into programs
/// and map definitions, with every relocation turned into an lddw pseudo form.
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace bpftime::loader {

/// A map the object defines: a BTF map from `.maps`, or the map of a global data section
/// (.data, .rodata, .bss, ...; one array entry holding the section's bytes).
struct elf_map {
    std::string name; ///< as libbpf names it (e.g. "counts", "prog.rodata")
    maps::map_spec spec;
    std::vector<uint8_t> initial_value; ///< global data: the section's bytes (zeros for .bss)
    bool global_data = false;           ///< a .data/.rodata/.bss map
    bool read_only = false;             ///< .rodata: programs may not write it
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

/// True when the bytes start like an ELF file.
bool looks_like_elf(std::span<const uint8_t> data);

} // namespace bpftime::loader
