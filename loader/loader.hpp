// SPDX-License-Identifier: MIT
// Internal to the loader: an eBPF ELF object as the relocator needs it, read with libelf.
//
// libbpf's bpf_object__open() gives the object model (maps, programs, section types) but
// relocations and bpf-to-bpf calls are only applied by bpf_object__load(), which needs the
// kernel. So the loader reads sections, symbols and relocations itself and relocates programs.
#pragma once

#include <bpftime/loader/elf.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <bpf/libbpf.h>

struct btf;

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bpftime::loader::detail {

/// Bytes of one instruction slot: code offsets in ELF files are in bytes.
inline constexpr size_t insn_size = sizeof(vm::ebpf_inst);

/// A relocation (SHT_REL entry) against an executable section.
struct elf_reloc {
    uint64_t offset = 0; ///< byte offset of the instruction in the section
    uint32_t symbol = 0; ///< index into elf_image::symbols, always valid
    uint32_t type = 0;   ///< R_BPF_*
};

/// A section, by its ELF index.
struct elf_section {
    std::string name;
    uint32_t type = 0;  ///< SHT_*
    uint64_t flags = 0; ///< SHF_*
    uint64_t size = 0;
    std::vector<uint8_t> bytes;    ///< the contents; empty for SHT_NOBITS
    std::vector<elf_reloc> relocs; ///< executable sections and .maps only, sorted by offset

    bool executable() const;
    /// The relocation of the instruction at byte offset, or null.
    const elf_reloc *reloc_at(uint64_t offset) const;
};

/// A symbol of .symtab, by its index.
struct elf_symbol {
    std::string name;
    uint64_t value = 0;
    uint64_t size = 0;
    uint32_t section = 0; ///< st_shndx (SHN_UNDEF for externs, may be >= section count)
    uint8_t type = 0;     ///< STT_*
    uint8_t bind = 0;     ///< STB_*
};

/// A function (an STT_FUNC symbol of an executable section), as instruction indexes.
struct elf_function {
    std::string name;
    uint32_t section = 0;
    size_t first = 0; ///< first instruction, an index into the section
    size_t count = 0;
};

/// What the loader uses of an ELF object.
struct elf_image {
    std::vector<elf_section> sections;   ///< by ELF index; 0 is the null section
    std::vector<elf_symbol> symbols;     ///< by symbol index
    std::vector<elf_function> functions; ///< sorted by section, then first instruction

    /// The index of the section with this name, or 0.
    uint32_t find_section(std::string_view name) const;
    /// The function of a section that holds instruction index insn, or null.
    const elf_function *function_at(uint32_t section, size_t insn) const;
};

/// While alive, libbpf's messages are kept from stderr and its last warning is recorded, to
/// go into an error message. libbpf's print callback is global, so captures take turns.
class libbpf_capture {
public:
    libbpf_capture();
    ~libbpf_capture();
    libbpf_capture(const libbpf_capture &) = delete;
    libbpf_capture &operator=(const libbpf_capture &) = delete;

    /// The last warning, without its newline ("" when there was none).
    const std::string &last_warning() const { return warning_; }

private:
    std::unique_lock<std::mutex> lock_;
    libbpf_print_fn_t previous_;
    std::string warning_;
};

/// Reads an ELF object and checks its structure: a 64-bit little-endian EM_BPF relocatable
/// file whose sections, symbols and relocations lie inside the file and refer to each other
/// by valid indexes.
result<elf_image> read_elf(std::span<const uint8_t> data);

/// CO-RE relocation kinds (enum bpf_core_relo_kind) by (section, instruction index).
using core_relos = std::map<std::pair<uint32_t, size_t>, uint32_t>;

/// Checks .BTF more strictly than libbpf 1.1 does before libbpf walks it (it follows type
/// ids and string offsets unchecked), and reads the CO-RE relocations of .BTF.ext.
result<core_relos> check_btf(const elf_image &image);

/// Refuses externs other than the __kconfig variables named in kconfig (kfuncs, __ksym
/// variables): nothing in user space provides them, and libbpf 1.1 mishandles damaged ones.
/// A __kconfig extern may only be the target of lddw. The error names the instruction.
result<void> check_externs(const elf_image &image,
                           const std::set<std::string, std::less<>> &kconfig = {});

/// The names of the object's __kconfig externs: the variables of the .kconfig DATASEC of its
/// .BTF (which check_btf() has checked).
std::set<std::string, std::less<>> kconfig_externs(const elf_image &image);

/// The bytes of libbpf's .kconfig map and where each extern lies in it.
struct kconfig_values {
    std::vector<uint8_t> bytes;
    std::map<std::string, uint32_t, std::less<>> offsets;
};
/// Resolves the __kconfig externs as libbpf does, at the offsets libbpf gave them in the
/// opened object's BTF (obj_btf), into a map of size bytes. The error names the extern.
result<kconfig_values> resolve_kconfig(const btf *obj_btf, const elf_image &image, uint32_t size);

/// The variables of a global data section (its BTF DATASEC, by the section's name), with
/// their offsets, sizes and kinds; those outside section_size bytes are left out.
std::vector<elf_global> read_globals(const btf *b, const std::string &section,
                                     uint32_t section_size);

/// Where relocated lddw instructions point: indexes into elf_object::maps.
struct map_index {
    uint32_t maps_section = 0;                            ///< .maps, 0 when absent
    std::map<std::string, uint32_t, std::less<>> by_name; ///< BTF-defined maps
    std::map<uint32_t, uint32_t> by_section;              ///< global data section -> map
    uint32_t kconfig_map = UINT32_MAX;                    ///< libbpf's .kconfig map, if any
    std::map<std::string, uint32_t, std::less<>> kconfig; ///< __kconfig extern -> its offset
};

/// Relocates one program: the entry function plus every function it calls or takes the address
/// of, appended once each, with map, global data and call relocations applied. Errors name
/// the program and the instruction.
result<std::vector<vm::ebpf_inst>> relocate_program(const elf_image &image, const core_relos &core,
                                                    const map_index &maps,
                                                    const elf_function &entry);

} // namespace bpftime::loader::detail
