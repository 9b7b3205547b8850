// SPDX-License-Identifier: MIT
/// @file
/// Small pieces every reader of ELF files through libelf shares (the eBPF object loader, the
/// uprobe target resolver).
#pragma once

#include <libelf.h>

#include <memory>
#include <string>

namespace bpftime::loader {

struct elf_closer {
    void operator()(Elf *elf) const { elf_end(elf); }
};
/// A libelf handle, ended when it goes.
using elf_ptr = std::unique_ptr<Elf, elf_closer>;

/// The machine of an ELF header for messages: "x86-64", "AArch64", "eBPF", ... or "machine N".
inline std::string elf_machine_name(unsigned machine) {
    switch (machine) {
    case EM_X86_64:
        return "x86-64";
    case EM_386:
        return "i386";
    case EM_AARCH64:
        return "AArch64";
    case EM_ARM:
        return "ARM";
    case EM_RISCV:
        return "RISC-V";
    case EM_PPC64:
        return "PowerPC64";
    case EM_S390:
        return "s390";
    case EM_BPF:
        return "eBPF";
    default:
        return "machine " + std::to_string(machine);
    }
}

} // namespace bpftime::loader
