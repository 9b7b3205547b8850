// SPDX-License-Identifier: MIT
// Relocating a program the way libbpf's bpf_object__load() does (bpf_object__relocate): map,
// global-data and call relocations applied and bpf-to-bpf callees appended, with maps named by
// their index in the object instead of kernel file descriptors.
#include "loader.hpp"

#include <bpftime/vm/disassembler.hpp>

#include <elf.h>

#include <cstring>

namespace bpftime::loader::detail {
namespace {

// enum bpf_core_relo_kind: BPF_CORE_TYPE_ID_TARGET, and the last kind this code knows.
constexpr uint32_t core_type_id_target = 7;
constexpr uint32_t core_last_kind = 12;

std::string extern_error(const std::string &name) {
    return "refers to the extern '" + name +
           "' (a kfunc, __ksym or __kconfig variable), which bpftime does not support";
}

class relocator {
public:
    relocator(const elf_image &image, const core_relos &core, const map_index &maps,
              const elf_function &entry)
        : image_(image), core_(core), maps_(maps), entry_(entry) {}

    result<std::vector<vm::ebpf_inst>> run() {
        place(entry_);
        // placed_ grows while it is walked: callees of appended code are appended in turn.
        for (size_t i = 0; i < placed_.size(); i++) {
            for (size_t j = 0; j < placed_[i].fn->count; j++) {
                if (auto r = relocate(i, j); !r) {
                    return std::move(r).err();
                }
                if (out_[placed_[i].at + j].opcode == vm::op_lddw) {
                    j++; // the second slot is data
                }
            }
        }
        return std::move(out_);
    }

private:
    struct placed {
        const elf_function *fn;
        size_t at; ///< index of its first instruction in out_
    };

    // Appends a function once; later references share the copy.
    size_t place(const elf_function &fn) {
        for (const placed &p : placed_) {
            if (p.fn == &fn) {
                return p.at;
            }
        }
        size_t at = out_.size();
        out_.resize(at + fn.count);
        std::memcpy(&out_[at], image_.sections[fn.section].bytes.data() + fn.first * insn_size,
                    fn.count * insn_size);
        placed_.push_back({&fn, at});
        return at;
    }

    error refuse(size_t i, size_t j, const std::string &why, int code = EINVAL) const {
        const placed &p = placed_[i];
        size_t pc = p.at + j;
        return make_error(code, "program '" + entry_.name + "', instruction " + std::to_string(pc) +
                                    " (" + vm::disassemble_one(out_, pc) + ", in function '" +
                                    p.fn->name + "' of section '" +
                                    image_.sections[p.fn->section].name + "'): " + why);
    }

    error unsupported_type(size_t i, size_t j, uint32_t type) const {
        return refuse(i, j, "unsupported relocation type " + std::to_string(type), ENOTSUP);
    }

    result<void> relocate(size_t i, size_t j) {
        const elf_function &fn = *placed_[i].fn;
        const size_t pc = placed_[i].at + j;
        const size_t insn = fn.first + j; // index in the section, as relocations count
        const vm::ebpf_inst ins = out_[pc];
        if (auto it = core_.find({fn.section, insn}); it != core_.end()) {
            // Without a kernel there is no target BTF: the memory a program sees is laid out
            // by the types it was compiled with, so clang's values stand, except a type id
            // in a target BTF, which nothing can answer.
            if (it->second == core_type_id_target) {
                return refuse(i, j,
                              "has a CO-RE relocation of kind 7 (a type id in the kernel's "
                              "BTF), which bpftime cannot answer: it has no kernel BTF",
                              ENOTSUP);
            }
            if (it->second > core_last_kind) {
                return refuse(
                    i, j, "has a CO-RE relocation of unknown kind " + std::to_string(it->second),
                    ENOTSUP);
            }
        }
        // check_externs() refused relocations against externs other than __kconfig variables
        // (loaded with lddw) before libbpf saw them.
        const elf_reloc *rel = image_.sections[fn.section].reloc_at(insn * insn_size);
        const elf_symbol *sym = rel != nullptr ? &image_.symbols[rel->symbol] : nullptr;
        bool lddw = ins.opcode == vm::op_lddw;
        if (lddw && j + 1 >= fn.count) {
            return refuse(i, j, "lddw has no second slot");
        }
        if (ins.opcode == vm::op_call && ins.src == vm::call_local) {
            if (rel == nullptr) {
                // Calls inside one section may have no relocation: imm is pc-relative.
                return set_target(i, j, fn.section, static_cast<int64_t>(insn) + ins.imm + 1);
            }
            if (rel->type != R_BPF_64_32) {
                return unsupported_type(i, j, rel->type);
            }
            // Through a function symbol imm is -1; through a section symbol it is the
            // target's index in the section minus one.
            return set_code(i, j, *sym, static_cast<int64_t>(sym->value / insn_size) + ins.imm + 1);
        }
        if (rel == nullptr) {
            return {};
        }
        if (!lddw) {
            return refuse(i, j,
                          "has a relocation against '" + sym->name +
                              "' but is neither lddw nor a local call",
                          ENOTSUP);
        }
        if (rel->type != R_BPF_64_64) {
            return unsupported_type(i, j, rel->type);
        }
        if (sym->section == SHN_UNDEF) {
            // A __kconfig extern: its place in the .kconfig map, as libbpf relocates it.
            auto it = maps_.kconfig.find(sym->name);
            if (it == maps_.kconfig.end() || maps_.kconfig_map == UINT32_MAX) {
                return refuse(i, j, extern_error(sym->name), ENOTSUP);
            }
            out_[pc].src = vm::pseudo_map_idx_value;
            out_[pc].imm = static_cast<int32_t>(maps_.kconfig_map);
            out_[pc + 1].imm = static_cast<int32_t>(it->second);
            return {};
        }
        // Section symbols (static variables, string literals) carry the offset in imm.
        int64_t offset = static_cast<int64_t>(sym->value) + ins.imm;
        if (sym->section < image_.sections.size() && image_.sections[sym->section].executable()) {
            if (offset % static_cast<int64_t>(insn_size) != 0) {
                return refuse(i, j, "takes the address of a misaligned instruction");
            }
            out_[pc].src = vm::pseudo_code_addr; // a callback for helpers such as bpf_loop
            out_[pc + 1].imm = 0;
            return set_code(i, j, *sym, offset / static_cast<int64_t>(insn_size));
        }
        if (sym->section == maps_.maps_section && maps_.maps_section != 0) {
            return set_map(i, j, offset);
        }
        if (auto it = maps_.by_section.find(sym->section); it != maps_.by_section.end()) {
            uint64_t size = image_.sections[sym->section].size;
            if (offset < 0 || static_cast<uint64_t>(offset) > size) {
                return refuse(i, j,
                              "refers to offset " + std::to_string(offset) + " of '" +
                                  image_.sections[sym->section].name + "', which has " +
                                  std::to_string(size) + " bytes");
            }
            out_[pc].src = vm::pseudo_map_idx_value;
            out_[pc].imm = static_cast<int32_t>(it->second);
            out_[pc + 1].imm = static_cast<int32_t>(offset);
            return {};
        }
        std::string where = sym->section < image_.sections.size()
                                ? "section '" + image_.sections[sym->section].name + "'"
                                : "no section";
        return refuse(i, j,
                      "refers to '" + sym->name + "' in " + where +
                          ", which holds neither code, maps nor global data");
    }

    // A call or code address through a symbol: it must name code.
    result<void> set_code(size_t i, size_t j, const elf_symbol &sym, int64_t target) {
        if (sym.section >= image_.sections.size() || !image_.sections[sym.section].executable() ||
            sym.value % insn_size != 0) {
            return refuse(i, j, "refers to '" + sym.name + "', which is not code");
        }
        return set_target(i, j, sym.section, target);
    }

    // Points the pc-relative imm at instruction target of a section, appending its function.
    result<void> set_target(size_t i, size_t j, uint32_t section, int64_t target) {
        const elf_function *callee =
            target < 0 ? nullptr : image_.function_at(section, static_cast<size_t>(target));
        if (callee == nullptr) {
            return refuse(i, j,
                          "targets instruction " + std::to_string(target) + " of section '" +
                              image_.sections[section].name + "', which is in no function");
        }
        size_t at = place(*callee);
        size_t pc = placed_[i].at + j;
        int64_t dest = static_cast<int64_t>(at + (static_cast<size_t>(target) - callee->first));
        out_[pc].imm = static_cast<int32_t>(dest - static_cast<int64_t>(pc) - 1);
        return {};
    }

    // A map is named by its variable in .maps; a static one may be .maps plus an offset.
    result<void> set_map(size_t i, size_t j, int64_t offset) {
        for (const elf_symbol &s : image_.symbols) {
            if (s.section != maps_.maps_section || s.type != STT_OBJECT ||
                static_cast<int64_t>(s.value) != offset) {
                continue;
            }
            auto it = maps_.by_name.find(s.name);
            if (it == maps_.by_name.end()) {
                break;
            }
            size_t pc = placed_[i].at + j;
            out_[pc].src = vm::pseudo_map_idx;
            out_[pc].imm = static_cast<int32_t>(it->second);
            out_[pc + 1].imm = 0;
            return {};
        }
        return refuse(i, j,
                      "refers to offset " + std::to_string(offset) +
                          " of .maps, where no map is defined");
    }

    const elf_image &image_;
    const core_relos &core_;
    const map_index &maps_;
    const elf_function &entry_;
    std::vector<vm::ebpf_inst> out_;
    std::vector<placed> placed_;
};

} // namespace

result<void> check_externs(const elf_image &image,
                           const std::set<std::string, std::less<>> &kconfig) {
    for (uint32_t s = 1; s < image.sections.size(); s++) {
        const elf_section &section = image.sections[s];
        for (const elf_reloc &rel : section.relocs) {
            const elf_symbol &sym = image.symbols[rel.symbol];
            if (sym.section != SHN_UNDEF) {
                continue;
            }
            size_t insn = rel.offset / insn_size;
            std::span<const vm::ebpf_inst> code(
                reinterpret_cast<const vm::ebpf_inst *>(section.bytes.data()),
                section.bytes.size() / insn_size);
            if (kconfig.count(sym.name) != 0 && rel.type == R_BPF_64_64 && insn < code.size() &&
                code[insn].opcode == vm::op_lddw) {
                continue; // its address, in libbpf's .kconfig map
            }
            const elf_function *fn = image.function_at(s, insn);
            std::string where =
                fn == nullptr ? "section '" + section.name + "'"
                              : "function '" + fn->name + "' of section '" + section.name + "'";
            return make_error(ENOTSUP, where + ", instruction " +
                                           std::to_string(insn - (fn ? fn->first : 0)) + " (" +
                                           vm::disassemble_one(code, insn) +
                                           "): " + extern_error(sym.name));
        }
    }
    for (const elf_symbol &sym : image.symbols) {
        if (sym.section == SHN_UNDEF && !sym.name.empty() && kconfig.count(sym.name) == 0) {
            return make_error(ENOTSUP, "the object " + extern_error(sym.name));
        }
    }
    return {};
}

result<std::vector<vm::ebpf_inst>> relocate_program(const elf_image &image, const core_relos &core,
                                                    const map_index &maps,
                                                    const elf_function &entry) {
    return relocator(image, core, maps, entry).run();
}

} // namespace bpftime::loader::detail
