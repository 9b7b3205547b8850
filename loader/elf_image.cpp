// SPDX-License-Identifier: MIT
// Reading an eBPF ELF object with libelf. Every index and offset taken from the file is
// checked here, so the relocator can trust the elf_image it gets.
#include "loader.hpp"

#include <bpftime/loader/elf_util.hpp>

#include <gelf.h>
#include <libelf.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <tuple>

namespace bpftime::loader::detail {
namespace {

error corrupt(const std::string &what) {
    std::string message = "corrupt ELF file: " + what;
    if (int code = elf_errno(); code != 0) {
        message += std::string(" (") + elf_errmsg(code) + ")";
    }
    return make_error(ENOEXEC, message);
}

// The header checks; the byte order comes first, as libelf reads the other fields with it.
result<void> check_header(const GElf_Ehdr &eh) {
    if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
        return make_error(ENOEXEC, "a 32-bit ELF file (eBPF objects are 64-bit)");
    }
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB) {
        return make_error(ENOEXEC, "a big-endian ELF file; bpftime runs little-endian eBPF "
                                   "objects (clang -target bpf or bpfel, not bpfeb)");
    }
    if (eh.e_machine != EM_BPF) {
        return make_error(ENOEXEC, "an ELF file for " + elf_machine_name(eh.e_machine) +
                                       ", not eBPF (EM_BPF); build it with clang -target bpf");
    }
    if (eh.e_type != ET_REL) {
        return make_error(ENOEXEC, "not a relocatable object (e_type " + std::to_string(eh.e_type) +
                                       "); give the .o file clang built");
    }
    return {};
}

result<void> read_sections(Elf *elf, elf_image &image) {
    size_t count = 0;
    size_t names = 0;
    if (elf_getshdrnum(elf, &count) != 0 || elf_getshdrstrndx(elf, &names) != 0) {
        return corrupt("no section table");
    }
    image.sections.resize(count);
    for (size_t i = 1; i < count; i++) {
        GElf_Shdr sh;
        Elf_Scn *scn = elf_getscn(elf, i);
        if (scn == nullptr || gelf_getshdr(scn, &sh) == nullptr) {
            return corrupt("section " + std::to_string(i) + " has a bad header");
        }
        const char *name = elf_strptr(elf, names, sh.sh_name);
        if (name == nullptr) {
            return corrupt("section " + std::to_string(i) + " has a bad name");
        }
        elf_section &s = image.sections[i];
        s.name = name;
        s.type = sh.sh_type;
        s.flags = sh.sh_flags;
        s.size = sh.sh_size;
        if (s.type == SHT_NOBITS || s.size == 0) {
            continue;
        }
        // libelf checks that the contents lie inside the file.
        Elf_Data *data = elf_getdata(scn, nullptr);
        if (data == nullptr || data->d_buf == nullptr || data->d_size != s.size) {
            return corrupt("section '" + s.name + "' lies outside the file");
        }
        if (s.type == SHT_PROGBITS) {
            const auto *p = static_cast<const uint8_t *>(data->d_buf);
            s.bytes.assign(p, p + data->d_size);
        }
        if (s.executable() && s.size % insn_size != 0) {
            return corrupt("code section '" + s.name + "' is not a whole number of instructions");
        }
    }
    return {};
}

result<size_t> read_symbols(Elf *elf, elf_image &image) {
    size_t symtab = 0;
    for (size_t i = 1; i < image.sections.size(); i++) {
        if (image.sections[i].type == SHT_SYMTAB) {
            if (symtab != 0) {
                return corrupt("two symbol tables");
            }
            symtab = i;
        }
    }
    if (symtab == 0) {
        return corrupt("no symbol table");
    }
    GElf_Shdr sh;
    Elf_Scn *scn = elf_getscn(elf, symtab);
    Elf_Data *data = elf_getdata(scn, nullptr);
    if (data == nullptr || gelf_getshdr(scn, &sh) == nullptr) {
        return corrupt("the symbol table lies outside the file");
    }
    size_t count = data->d_size / sizeof(Elf64_Sym);
    image.symbols.resize(count);
    for (size_t i = 0; i < count; i++) {
        GElf_Sym sym;
        const char *name = nullptr;
        if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr ||
            (name = elf_strptr(elf, sh.sh_link, sym.st_name)) == nullptr) {
            return corrupt("symbol " + std::to_string(i) + " has a bad name");
        }
        image.symbols[i] = {name,
                            sym.st_value,
                            sym.st_size,
                            sym.st_shndx,
                            static_cast<uint8_t>(GELF_ST_TYPE(sym.st_info)),
                            static_cast<uint8_t>(GELF_ST_BIND(sym.st_info))};
    }
    return symtab;
}

result<void> collect_functions(elf_image &image) {
    for (const elf_symbol &sym : image.symbols) {
        if (sym.type != STT_FUNC || sym.section >= image.sections.size() ||
            !image.sections[sym.section].executable()) {
            continue;
        }
        uint64_t section_size = image.sections[sym.section].size;
        if (sym.value % insn_size != 0 || sym.size % insn_size != 0 || sym.size == 0 ||
            sym.value > section_size || sym.size > section_size - sym.value) {
            return corrupt("function '" + sym.name + "' lies outside its section");
        }
        image.functions.push_back(
            {sym.name, sym.section, sym.value / insn_size, sym.size / insn_size});
    }
    std::sort(image.functions.begin(), image.functions.end(), [](const auto &a, const auto &b) {
        return std::tie(a.section, a.first) < std::tie(b.section, b.first);
    });
    return {};
}

// Only relocations of code and .maps matter: those of .BTF, .BTF.ext and debug sections serve
// debuggers and libbpf's own line info.
result<void> read_relocations(Elf *elf, elf_image &image, size_t symtab) {
    for (size_t i = 1; i < image.sections.size(); i++) {
        const elf_section &rel = image.sections[i];
        if (rel.type != SHT_REL && rel.type != SHT_RELA) {
            continue;
        }
        GElf_Shdr sh;
        Elf_Scn *scn = elf_getscn(elf, i);
        if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_info >= image.sections.size()) {
            return corrupt("relocation section '" + rel.name + "' has no target section");
        }
        elf_section &target = image.sections[sh.sh_info];
        // .maps: the inner maps an array_of_maps or hash_of_maps starts with.
        if (!target.executable() && target.name != ".maps") {
            continue;
        }
        if (rel.type == SHT_RELA || sh.sh_link != symtab) {
            return corrupt("relocation section '" + rel.name +
                           "' is not REL against the symbol table, as eBPF objects use");
        }
        Elf_Data *data = elf_getdata(scn, nullptr);
        if (data == nullptr) {
            return corrupt("relocation section '" + rel.name + "' lies outside the file");
        }
        size_t count = data->d_size / sizeof(Elf64_Rel);
        for (size_t r = 0; r < count; r++) {
            GElf_Rel entry;
            if (gelf_getrel(data, static_cast<int>(r), &entry) == nullptr) {
                return corrupt("relocation " + std::to_string(r) + " of '" + rel.name + "'");
            }
            elf_reloc reloc{entry.r_offset, static_cast<uint32_t>(GELF_R_SYM(entry.r_info)),
                            static_cast<uint32_t>(GELF_R_TYPE(entry.r_info))};
            if (reloc.symbol >= image.symbols.size() || reloc.offset % insn_size != 0 ||
                reloc.offset >= target.size) {
                return corrupt("relocation " + std::to_string(r) + " of '" + rel.name +
                               "' names a bad symbol or instruction");
            }
            target.relocs.push_back(reloc);
        }
    }
    for (elf_section &s : image.sections) {
        std::sort(s.relocs.begin(), s.relocs.end(),
                  [](const auto &a, const auto &b) { return a.offset < b.offset; });
        auto twice = std::adjacent_find(s.relocs.begin(), s.relocs.end(),
                                        [](auto &a, auto &b) { return a.offset == b.offset; });
        if (twice != s.relocs.end()) {
            return corrupt("two relocations for one instruction in '" + s.name + "'");
        }
    }
    return {};
}

} // namespace

bool elf_section::executable() const {
    return type == SHT_PROGBITS && (flags & SHF_EXECINSTR) != 0;
}

const elf_reloc *elf_section::reloc_at(uint64_t offset) const {
    auto it = std::lower_bound(relocs.begin(), relocs.end(), offset,
                               [](const elf_reloc &r, uint64_t off) { return r.offset < off; });
    return it != relocs.end() && it->offset == offset ? &*it : nullptr;
}

uint32_t elf_image::find_section(std::string_view name) const {
    for (size_t i = 1; i < sections.size(); i++) {
        if (sections[i].name == name) {
            return static_cast<uint32_t>(i);
        }
    }
    return 0;
}

const elf_function *elf_image::function_at(uint32_t section, size_t insn) const {
    auto it = std::upper_bound(functions.begin(), functions.end(), std::pair{section, insn},
                               [](const auto &key, const elf_function &f) {
                                   return key < std::pair{f.section, f.first};
                               });
    if (it == functions.begin()) {
        return nullptr;
    }
    --it;
    return it->section == section && insn - it->first < it->count ? &*it : nullptr;
}

result<elf_image> read_elf(std::span<const uint8_t> data) {
    static std::once_flag init;
    std::call_once(init, [] { elf_version(EV_CURRENT); });
    // libelf may convert an image in place, so it works on a copy of its own.
    std::vector<char> copy(data.begin(), data.end());
    elf_ptr elf(elf_memory(copy.data(), copy.size()));
    if (elf == nullptr || elf_kind(elf.get()) != ELF_K_ELF) {
        elf_errno(); // the reason is "not ELF": drop libelf's error so it does not linger
        return make_error(ENOEXEC, "not an ELF file");
    }
    GElf_Ehdr eh;
    if (gelf_getehdr(elf.get(), &eh) == nullptr) {
        return corrupt("bad ELF header");
    }
    if (auto r = check_header(eh); !r) {
        return std::move(r).err();
    }
    elf_image image;
    if (auto r = read_sections(elf.get(), image); !r) {
        return std::move(r).err();
    }
    auto symtab = read_symbols(elf.get(), image);
    if (!symtab) {
        return std::move(symtab).err();
    }
    if (auto r = collect_functions(image); !r) {
        return std::move(r).err();
    }
    if (auto r = read_relocations(elf.get(), image, *symtab); !r) {
        return std::move(r).err();
    }
    return image;
}

} // namespace bpftime::loader::detail
