// SPDX-License-Identifier: MIT
// For each library or program given, how a uprobe would hook each exported function at its
// entry, decided without installing anything (decide_hook_site, as the uprobe host decides):
// by a jump inside the function, by a jump running into the fill after a short function, by
// trap, or not at all (with the reasons counted). Prints counts and shares; BENCHMARKS.md
// ("Hookable functions") records them.
// Usage: bpftime_hookable_share FILE...   (e.g. /lib/x86_64-linux-gnu/libc.so.6)
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/hook/inline_hook.hpp>

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

// The names of the functions a file exports: defined, global or weak, default visibility.
std::set<std::string> exported_functions(const std::string &path) {
    std::set<std::string> out;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return out;
    }
    elf_version(EV_CURRENT);
    Elf *elf = elf_begin(fd, ELF_C_READ, nullptr);
    for (Elf_Scn *scn = elf ? elf_nextscn(elf, nullptr) : nullptr; scn != nullptr;
         scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_type != SHT_DYNSYM || sh.sh_entsize == 0) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, nullptr);
        size_t count = data != nullptr ? sh.sh_size / sh.sh_entsize : 0;
        for (size_t i = 1; i < count; i++) {
            GElf_Sym s;
            if (gelf_getsym(data, static_cast<int>(i), &s) == nullptr || s.st_shndx == SHN_UNDEF ||
                (GELF_ST_TYPE(s.st_info) != STT_FUNC && GELF_ST_TYPE(s.st_info) != STT_GNU_IFUNC) ||
                GELF_ST_BIND(s.st_info) == STB_LOCAL ||
                GELF_ST_VISIBILITY(s.st_other) != STV_DEFAULT) {
                continue;
            }
            const char *name = elf_strptr(elf, sh.sh_link, s.st_name);
            if (name != nullptr && *name != '\0') {
                out.insert(std::string(name).substr(0, std::string(name).find('@')));
            }
        }
    }
    if (elf != nullptr) {
        elf_end(elf);
    }
    ::close(fd);
    return out;
}

// A refusal's reason, shortened to its kind for the tally.
std::string reason_kind(const std::string &why) {
    for (const char *k : {"indirect function", "int3", "cannot relocate", "cannot decode",
                          "without a size", "not inside executable code"}) {
        if (why.find(k) != std::string::npos) {
            return k;
        }
    }
    return why.substr(0, 60);
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        const std::string path = argv[a];
        const auto names = exported_functions(path);
        if (names.empty()) {
            std::printf("%s: no exported functions (or not readable)\n\n", path.c_str());
            continue;
        }
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        std::map<bpftime::hook_site_kind, size_t> kinds;
        std::map<std::string, size_t> refusals;
        for (const std::string &name : names) {
            auto loc = bpftime::resolve_uprobe_target(path + ":" + name);
            if (!loc) {
                refusals[reason_kind(loc.err().message)]++;
                kinds[bpftime::hook_site_kind::refused]++;
                continue;
            }
            // The function, the fill after it and a margin for the decoder, from the file.
            std::vector<uint8_t> code(loc->bytes_to_end + loc->padding_after + 64, 0);
            ssize_t got =
                ::pread(fd, code.data(), code.size(), static_cast<off_t>(loc->file_offset));
            if (got <= 0) {
                refusals["unreadable"]++;
                kinds[bpftime::hook_site_kind::refused]++;
                continue;
            }
            auto d = bpftime::decide_hook_site(code.data(), static_cast<size_t>(got),
                                               loc->bytes_to_end, loc->padding_after);
            kinds[d.kind]++;
            if (d.kind == bpftime::hook_site_kind::refused) {
                refusals[reason_kind(d.why)]++;
            }
        }
        ::close(fd);
        const double total = static_cast<double>(names.size());
        auto line = [&](const char *what, bpftime::hook_site_kind k) {
            std::printf("  %-28s %6zu  %5.1f%%\n", what, kinds[k], 100.0 * kinds[k] / total);
        };
        std::printf("%s: %zu exported functions\n", path.c_str(), names.size());
        line("jump inside the function", bpftime::hook_site_kind::jump);
        line("jump into the fill after", bpftime::hook_site_kind::padding_jump);
        line("trap (int3)", bpftime::hook_site_kind::trap);
        line("refused", bpftime::hook_site_kind::refused);
        for (const auto &[why, n] : refusals) {
            std::printf("    refused: %-40s %zu\n", why.c_str(), n);
        }
        std::printf("\n");
    }
    return 0;
}
