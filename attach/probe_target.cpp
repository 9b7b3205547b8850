// SPDX-License-Identifier: MIT
// Probe targets: uprobe texts resolved through the binary's symbols and program headers
// (read with libelf), binaries found by name, and tracepoint ids read from tracefs.
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>

#include <bpftime/loader/elf_util.hpp>
#include <fcntl.h>

#include <gelf.h>
#include <libelf.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace bpftime {
namespace {

constexpr std::string_view uprobe_syntax = "BINARY:SYMBOL[+OFFSET] or BINARY:ADDRESS";

constexpr std::array<std::string_view, 6> library_folders = {"/lib/x86_64-linux-gnu",
                                                             "/usr/lib/x86_64-linux-gnu",
                                                             "/lib64",
                                                             "/usr/lib64",
                                                             "/lib",
                                                             "/usr/lib"};

std::string hex(uint64_t value) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, 16);
    (void)ec;
    return "0x" + std::string(buf, end);
}

std::string errno_text(int code) {
    return std::strerror(code);
}

/// A whole unsigned number: decimal, or hexadecimal after 0x.
std::optional<uint64_t> parse_number(std::string_view text) {
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    }
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
        return std::nullopt;
    }
    return value;
}

// --- finding binaries ---------------------------------------------------------------------

result<std::string> real_path(const std::string &path, std::string_view name) {
    char *resolved = ::realpath(path.c_str(), nullptr);
    if (resolved == nullptr) {
        int code = errno;
        return make_error(code, std::string(name) + ": " + errno_text(code));
    }
    std::string out(resolved);
    std::free(resolved);
    struct stat st {};
    if (::stat(out.c_str(), &st) != 0) {
        int code = errno;
        return make_error(code, std::string(name) + ": " + errno_text(code));
    }
    if (!S_ISREG(st.st_mode)) {
        return make_error(S_ISDIR(st.st_mode) ? EISDIR : EINVAL,
                          std::string(name) + ": not a regular file (" + out + ")");
    }
    return out;
}

bool is_regular_file(const std::string &path, bool executable) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        return false;
    }
    return !executable || ::access(path.c_str(), X_OK) == 0;
}

// --- reading ELF files --------------------------------------------------------------------

struct fd_closer {
    int fd = -1;
    ~fd_closer() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

std::string libelf_text() {
    int code = elf_errno();
    return code != 0 ? std::string(" (") + elf_errmsg(code) + ")" : std::string();
}

/// An executable PT_LOAD segment, as far as the file backs it.
struct code_segment {
    uint64_t vaddr;
    uint64_t size;
    uint64_t offset;
};

/// A function symbol that matches the name asked for.
struct function_symbol {
    GElf_Sym sym;
    bool ifunc;
    int rank; ///< global or weak: +2; the default version (or no version): +1
};

/// What one look-up of a name found in a binary.
struct symbol_search {
    std::optional<function_symbol> best;
    std::string other_kind; ///< a defined symbol of that name that is not a function
    bool undefined = false; ///< the binary only refers to the name
};

/// An opened binary: its ELF handle and its executable segments.
class binary_file {
public:
    /// Opens and checks the binary; messages are complete sentences about `path`.
    static result<std::unique_ptr<binary_file>> open(const std::string &path);

    const std::vector<code_segment> &code() const { return code_; }
    /// The loadable segment holding an address in its file-backed part, if any.
    const code_segment *loaded_of(uint64_t address) const {
        for (const code_segment &seg : loaded_) {
            if (address >= seg.vaddr && address - seg.vaddr < seg.size) {
                return &seg;
            }
        }
        return nullptr;
    }
    /// The code segment holding an address, if any.
    const code_segment *segment_of(uint64_t address) const {
        for (const code_segment &seg : code_) {
            if (address >= seg.vaddr && address - seg.vaddr < seg.size) {
                return &seg;
            }
        }
        return nullptr;
    }
    /// Looks a function up in .symtab, then .dynsym.
    result<symbol_search> find_function(std::string_view name) const;
    /// Whether a function symbol (of .symtab or .dynsym) starts at address.
    bool starts_function(uint64_t address) const;
    /// How many bytes from end (a function's end) are fill no code uses: int3 or nop, before
    /// the next symbol or unwind entry (.eh_frame_hdr) starts, with no symbol over them and no
    /// relocation naming them; at most 15. 0 when any of it cannot be shown (no
    /// .eh_frame_hdr, an encoding not read here).
    uint64_t padding_after(uint64_t end) const;

private:
    fd_closer fd_;
    loader::elf_ptr elf_;
    std::string path_;
    std::vector<code_segment> code_;
    std::vector<code_segment> loaded_; // every PT_LOAD, as far as the file backs it

    result<void> scan(Elf_Scn *scn, Elf_Data *versym, bool dynamic, std::string_view name,
                      symbol_search &out) const;
};

result<std::unique_ptr<binary_file>> binary_file::open(const std::string &path) {
    static std::once_flag init;
    std::call_once(init, [] { elf_version(EV_CURRENT); });

    auto file = std::make_unique<binary_file>();
    file->path_ = path;
    file->fd_.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (file->fd_.fd < 0) {
        int code = errno;
        return make_error(code, path + ": " + errno_text(code));
    }
    file->elf_.reset(elf_begin(file->fd_.fd, ELF_C_READ, nullptr));
    if (!file->elf_ || elf_kind(file->elf_.get()) != ELF_K_ELF) {
        return make_error(ENOEXEC, path + " is not an ELF file");
    }
    Elf *elf = file->elf_.get();
    GElf_Ehdr eh;
    if (gelf_getehdr(elf, &eh) == nullptr) {
        return make_error(ENOEXEC, path + " is not a readable ELF file" + libelf_text());
    }
    if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
        return make_error(ENOEXEC, path + " is a 32-bit ELF file, not x86-64");
    }
    if (eh.e_machine != EM_X86_64) {
        return make_error(ENOEXEC, path + " is an ELF file for " +
                                       loader::elf_machine_name(eh.e_machine) + ", not x86-64");
    }
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN) {
        std::string kind = eh.e_type == ET_REL    ? "a relocatable object"
                           : eh.e_type == ET_CORE ? "a core dump"
                                                  : "of ELF type " + std::to_string(eh.e_type);
        return make_error(ENOEXEC, path + " is " + kind + ", not an executable or shared library");
    }
    size_t count = 0;
    if (elf_getphdrnum(elf, &count) != 0) {
        return make_error(ENOEXEC, path + " has no readable program headers" + libelf_text());
    }
    for (size_t i = 0; i < count; i++) {
        GElf_Phdr ph;
        if (gelf_getphdr(elf, static_cast<int>(i), &ph) == nullptr) {
            return make_error(ENOEXEC, path + " has a damaged program header" + libelf_text());
        }
        if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0 && ph.p_filesz > 0) {
            file->code_.push_back({ph.p_vaddr, ph.p_filesz, ph.p_offset});
        }
        if (ph.p_type == PT_LOAD && ph.p_filesz > 0) {
            file->loaded_.push_back({ph.p_vaddr, ph.p_filesz, ph.p_offset});
        }
    }
    return file;
}

/// The name without its version ("malloc@@GLIBC_2.2.5" is "malloc"); `hidden` tells whether
/// the version written is not the default one ("@" rather than "@@").
std::string_view unversioned(std::string_view name, bool &hidden) {
    size_t at = name.find('@');
    hidden = at != std::string_view::npos && name.substr(at, 2) != "@@";
    return name.substr(0, at);
}

std::string symbol_kind(unsigned type) {
    switch (type) {
    case STT_OBJECT:
        return "a data object";
    case STT_TLS:
        return "a thread-local variable";
    case STT_NOTYPE:
        return "a symbol without a type";
    case STT_SECTION:
        return "a section";
    case STT_FILE:
        return "a file name";
    default:
        return "a symbol of type " + std::to_string(type);
    }
}

result<void> binary_file::scan(Elf_Scn *scn, Elf_Data *versym, bool dynamic, std::string_view name,
                               symbol_search &out) const {
    Elf *elf = elf_.get();
    GElf_Shdr sh;
    if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_entsize == 0) {
        return make_error(ENOEXEC, path_ + " has a damaged symbol table" + libelf_text());
    }
    Elf_Data *data = elf_getdata(scn, nullptr);
    if (data == nullptr) {
        return make_error(ENOEXEC, path_ + " has an unreadable symbol table" + libelf_text());
    }
    size_t count = sh.sh_size / sh.sh_entsize;
    for (size_t i = 1; i < count && i <= INT_MAX; i++) {
        GElf_Sym sym;
        if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) {
            return make_error(ENOEXEC, path_ + " has a damaged symbol" + libelf_text());
        }
        const char *raw = elf_strptr(elf, sh.sh_link, sym.st_name);
        if (raw == nullptr || *raw == '\0') {
            continue;
        }
        bool hidden = false;
        if (unversioned(raw, hidden) != name) {
            continue;
        }
        if (dynamic && versym != nullptr) {
            GElf_Versym version;
            if (gelf_getversym(versym, static_cast<int>(i), &version) != nullptr) {
                hidden = (version & 0x8000) != 0;
            }
        }
        if (sym.st_shndx == SHN_UNDEF) {
            out.undefined = true;
            continue;
        }
        unsigned type = GELF_ST_TYPE(sym.st_info);
        if (type != STT_FUNC && type != STT_GNU_IFUNC) {
            if (out.other_kind.empty()) {
                out.other_kind = symbol_kind(type);
            }
            continue;
        }
        unsigned bind = GELF_ST_BIND(sym.st_info);
        int rank = (bind == STB_GLOBAL || bind == STB_WEAK ? 2 : 0) + (hidden ? 0 : 1);
        if (!out.best || rank > out.best->rank) {
            out.best = function_symbol{sym, type == STT_GNU_IFUNC, rank};
        }
    }
    return {};
}

result<symbol_search> binary_file::find_function(std::string_view name) const {
    Elf *elf = elf_.get();
    Elf_Scn *symtab = nullptr;
    Elf_Scn *dynsym = nullptr;
    Elf_Data *versym = nullptr;
    for (Elf_Scn *scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) {
            return make_error(ENOEXEC, path_ + " has a damaged section header" + libelf_text());
        }
        if (sh.sh_type == SHT_SYMTAB && symtab == nullptr) {
            symtab = scn;
        } else if (sh.sh_type == SHT_DYNSYM && dynsym == nullptr) {
            dynsym = scn;
        } else if (sh.sh_type == SHT_GNU_versym && versym == nullptr) {
            versym = elf_getdata(scn, nullptr);
        }
    }
    symbol_search out;
    // .symtab first: it holds local functions too, and on a tie its symbol is kept.
    if (symtab != nullptr) {
        if (auto r = scan(symtab, nullptr, false, name, out); !r) {
            return std::move(r).err();
        }
    }
    if (dynsym != nullptr) {
        if (auto r = scan(dynsym, versym, true, name, out); !r) {
            return std::move(r).err();
        }
    }
    return out;
}

namespace {

// The start addresses of the FDEs .eh_frame_hdr lists (its binary search table, in the
// encoding every linker writes: datarel sdata4 pairs, a udata4 count); nullopt when it is
// absent or written otherwise.
std::optional<std::vector<uint64_t>> fde_starts(Elf *elf) {
    size_t shstrndx = 0;
    if (elf_getshdrstrndx(elf, &shstrndx) != 0) {
        return std::nullopt;
    }
    for (Elf_Scn *scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) {
            continue;
        }
        const char *name = elf_strptr(elf, shstrndx, sh.sh_name);
        if (name == nullptr || std::strcmp(name, ".eh_frame_hdr") != 0) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, nullptr);
        if (data == nullptr || data->d_buf == nullptr || data->d_size < 12) {
            return std::nullopt;
        }
        const auto *b = static_cast<const uint8_t *>(data->d_buf);
        // version 1, eh_frame_ptr pcrel|sdata4, fde_count udata4, table datarel|sdata4
        if (b[0] != 1 || b[2] != 0x03 || b[3] != 0x3b) {
            return std::nullopt;
        }
        uint32_t count = 0;
        std::memcpy(&count, b + 8, 4);
        if (uint64_t{count} * 8 + 12 > data->d_size) {
            return std::nullopt;
        }
        std::vector<uint64_t> out;
        for (uint32_t i = 0; i < count; i++) {
            int32_t rel = 0;
            std::memcpy(&rel, b + 12 + uint64_t{i} * 8, 4);
            out.push_back(sh.sh_addr + static_cast<uint64_t>(static_cast<int64_t>(rel)));
        }
        return out;
    }
    return std::nullopt;
}

// Whether bytes are int3 or whole nop forms (90; 66.. 90; 66.. [2e] 0f 1f modrm [sib] [disp]).
size_t fill_prefix(const uint8_t *b, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (b[i] == 0xcc || b[i] == 0x90) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && (b[j] == 0x66 || b[j] == 0x2e)) {
            j++;
        }
        if (j < n && b[j] == 0x90 && j > i) {
            i = j + 1;
            continue;
        }
        if (j + 2 >= n || b[j] != 0x0f || b[j + 1] != 0x1f) {
            break;
        }
        uint8_t modrm = b[j + 2];
        if (((modrm >> 3) & 7) != 0) {
            break;
        }
        size_t len = 3;
        uint8_t mod = modrm >> 6, rm = modrm & 7;
        if (mod != 3 && rm == 4) {
            len++; // sib
        }
        len += mod == 1 ? 1 : mod == 2 ? 4 : (mod == 0 && rm == 5) ? 4 : 0;
        if (j + len > n) {
            break;
        }
        i = j + len;
    }
    return i;
}

} // namespace

uint64_t binary_file::padding_after(uint64_t end) const {
    constexpr uint64_t most = 15;
    const code_segment *seg = segment_of(end);
    if (seg == nullptr) {
        return 0;
    }
    uint64_t limit = std::min<uint64_t>(most, seg->vaddr + seg->size - end);
    Elf *elf = elf_.get();
    auto fdes = fde_starts(elf);
    if (!fdes) {
        return 0;
    }
    for (uint64_t start : *fdes) {
        if (start >= end && start - end < limit) {
            limit = start - end;
        }
    }
    for (Elf_Scn *scn = elf_nextscn(elf, nullptr); scn != nullptr && limit > 0;
         scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_entsize == 0) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, nullptr);
        size_t count = data != nullptr ? sh.sh_size / sh.sh_entsize : 0;
        if (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM) {
            for (size_t i = 1; i < count && i <= INT_MAX; i++) {
                GElf_Sym sym;
                if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr ||
                    sym.st_shndx == SHN_UNDEF || GELF_ST_TYPE(sym.st_info) == STT_FILE ||
                    GELF_ST_TYPE(sym.st_info) == STT_SECTION ||
                    GELF_ST_TYPE(sym.st_info) == STT_TLS) {
                    continue;
                }
                if (sym.st_value >= end && sym.st_value - end < limit) {
                    limit = sym.st_value - end; // the next symbol starts there
                } else if (sym.st_value < end && sym.st_value + sym.st_size > end) {
                    return 0; // a symbol over the bytes after the function
                }
            }
        } else if (sh.sh_type == SHT_RELA) {
            for (size_t i = 0; i < count && i <= INT_MAX; i++) {
                GElf_Rela r;
                if (gelf_getrela(data, static_cast<int>(i), &r) == nullptr) {
                    continue;
                }
                uint32_t type = GELF_R_TYPE(r.r_info);
                auto inside = [&](uint64_t a) { return a >= end && a - end < limit; };
                if (inside(r.r_offset) ||
                    ((type == R_X86_64_RELATIVE || type == R_X86_64_IRELATIVE) &&
                     inside(static_cast<uint64_t>(r.r_addend)))) {
                    return 0; // a relocation names them
                }
            }
        }
    }
    if (limit == 0) {
        return 0;
    }
    uint8_t bytes[most];
    ssize_t got = ::pread(fd_.fd, bytes, limit, static_cast<off_t>(end - seg->vaddr + seg->offset));
    if (got != static_cast<ssize_t>(limit)) {
        return 0;
    }
    // Fill up to the next start: all of it must be fill (a partial nop form means code).
    return fill_prefix(bytes, limit) == limit ? limit : 0;
}

bool binary_file::starts_function(uint64_t address) const {
    Elf *elf = elf_.get();
    for (Elf_Scn *scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr ||
            (sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM) || sh.sh_entsize == 0) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, nullptr);
        size_t count = data != nullptr ? sh.sh_size / sh.sh_entsize : 0;
        for (size_t i = 1; i < count && i <= INT_MAX; i++) {
            GElf_Sym sym;
            if (gelf_getsym(data, static_cast<int>(i), &sym) != nullptr &&
                GELF_ST_TYPE(sym.st_info) == STT_FUNC && sym.st_shndx != SHN_UNDEF &&
                sym.st_value == address) {
                return true;
            }
        }
    }
    return false;
}

// --- parsing -----------------------------------------------------------------------------

error refuse(std::string_view args, int code, const std::string &message) {
    return make_error(code, std::string(args) + ": " + message);
}

std::string segments_text(const binary_file &file) {
    if (file.code().empty()) {
        return "it has no executable segment";
    }
    std::string text = "its executable code is at ";
    for (size_t i = 0; i < file.code().size(); i++) {
        const code_segment &seg = file.code()[i];
        text += (i > 0 ? ", " : "") + hex(seg.vaddr) + "-" + hex(seg.vaddr + seg.size);
    }
    return text;
}

// --- tracefs -----------------------------------------------------------------------------

bool is_directory(const std::string &path, int &code) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        code = errno;
        return false;
    }
    code = S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    return code == 0;
}

/// The tracefs folder to read, or why there is none.
result<std::string> tracefs_root() {
    const std::string main_root = "/sys/kernel/tracing";
    const std::string debug_root = "/sys/kernel/debug/tracing";
    int code = 0;
    if (is_directory(main_root + "/events", code)) {
        return main_root;
    }
    if (code == EACCES || code == EPERM) {
        return make_error(code, "cannot read " + main_root + ": " + errno_text(code) +
                                    " (tracefs is for root)");
    }
    std::string why = "nothing usable at " + main_root;
    int dir_code = 0;
    struct stat here {};
    struct stat parent {};
    if (is_directory(main_root, dir_code) && ::stat(main_root.c_str(), &here) == 0 &&
        ::stat("/sys/kernel", &parent) == 0 && here.st_dev == parent.st_dev) {
        // Nothing is mounted there: mount tracefs when this process may.
        if (::mount("nodev", main_root.c_str(), "tracefs", 0, nullptr) == 0) {
            if (is_directory(main_root + "/events", code)) {
                return main_root;
            }
            why = "tracefs mounted at " + main_root + " has no events folder";
        } else {
            int mount_code = errno;
            why = "tracefs is not mounted at " + main_root + " and mounting it failed (" +
                  errno_text(mount_code) + ")";
        }
    }
    if (is_directory(debug_root + "/events", code)) {
        return debug_root;
    }
    if (code == EACCES || code == EPERM) {
        return make_error(code, why + "; cannot read " + debug_root + ": " + errno_text(code));
    }
    return make_error(ENOENT, why + ", and no " + debug_root +
                                  "; mount it with 'mount -t tracefs nodev " + main_root + "'");
}

} // namespace

result<std::string> find_binary(std::string_view name) {
    if (name.empty()) {
        return make_error(EINVAL, "no binary named (an empty name)");
    }
    std::string text(name);
    if (name.find('/') != std::string_view::npos) {
        return real_path(text, name);
    }
    const char *env = std::getenv("PATH");
    std::string_view path = env != nullptr ? env : "/usr/local/bin:/usr/bin:/bin";
    while (true) {
        size_t colon = path.find(':');
        std::string_view dir = path.substr(0, colon);
        std::string candidate = std::string(dir.empty() ? "." : dir) + "/" + text;
        if (is_regular_file(candidate, true)) {
            return real_path(candidate, name);
        }
        if (colon == std::string_view::npos) {
            break;
        }
        path.remove_prefix(colon + 1);
    }
    std::string folders;
    for (std::string_view dir : library_folders) {
        std::string candidate = std::string(dir) + "/" + text;
        if (is_regular_file(candidate, false)) {
            return real_path(candidate, name);
        }
        folders += (folders.empty() ? "" : ", ") + std::string(dir);
    }
    return make_error(ENOENT,
                      text + ": not found in $PATH nor in the library folders (" + folders + ")");
}

result<uprobe_location> resolve_uprobe_target(std::string_view args) {
    size_t colon = args.find(':');
    if (colon == std::string_view::npos) {
        return refuse(args, EINVAL, "expected " + std::string(uprobe_syntax));
    }
    std::string_view binary_name = args.substr(0, colon);
    std::string_view where = args.substr(colon + 1);
    // "(SEMAPHORE)" at the end: a USDT semaphore's ELF virtual address, as the kernel's
    // uprobe_events take "PATH:OFFSET(REF_CTR_OFFSET)".
    std::optional<uint64_t> semaphore;
    if (size_t open = where.find('('); open != std::string_view::npos) {
        std::string_view text = where.substr(open + 1);
        if (text.empty() || text.back() != ')') {
            return refuse(args, EINVAL,
                          "a semaphore is written (0xADDRESS) at the end (expected " +
                              std::string(uprobe_syntax) + ", then optionally (0xSEMAPHORE))");
        }
        text.remove_suffix(1);
        bool hex_prefix = text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
        semaphore = parse_number(text);
        if (!hex_prefix || !semaphore || *semaphore == 0) {
            return refuse(args, EINVAL,
                          "bad semaphore '" + std::string(text) +
                              "' (an ELF virtual address, hexadecimal with 0x, e.g. 0x4010)");
        }
        where = where.substr(0, open);
    }
    if (binary_name.empty()) {
        return refuse(args, EINVAL,
                      "no binary before ':' (expected " + std::string(uprobe_syntax) + ")");
    }
    if (where.empty()) {
        return refuse(args, EINVAL,
                      "no symbol or address after ':' (expected " + std::string(uprobe_syntax) +
                          ")");
    }

    uprobe_location loc;
    bool by_address = where[0] >= '0' && where[0] <= '9';
    if (by_address) {
        bool hex_prefix =
            where.size() > 2 && where[0] == '0' && (where[1] == 'x' || where[1] == 'X');
        auto value = parse_number(where);
        if (!hex_prefix || !value) {
            return refuse(args, EINVAL,
                          "bad address '" + std::string(where) +
                              "' (an address is hexadecimal with 0x, e.g. 0x1139)");
        }
        loc.address = *value;
    } else {
        size_t plus = where.rfind('+');
        loc.symbol = std::string(where.substr(0, plus));
        if (plus != std::string_view::npos) {
            std::string_view offset_text = where.substr(plus + 1);
            if (loc.symbol.empty()) {
                return refuse(args, EINVAL, "no symbol before '+'");
            }
            if (offset_text.empty()) {
                return refuse(args, EINVAL, "no offset after '+'");
            }
            auto value = parse_number(offset_text);
            if (!value) {
                return refuse(args, EINVAL,
                              "bad offset '" + std::string(offset_text) + "' (decimal or 0x hex)");
            }
            loc.offset = *value;
        }
    }

    auto path = find_binary(binary_name);
    if (!path) {
        return refuse(args, path.err().code, path.err().message);
    }
    loc.binary = *path;
    auto opened = binary_file::open(loc.binary);
    if (!opened) {
        return refuse(args, opened.err().code, opened.err().message);
    }
    const binary_file &file = **opened;

    if (!by_address) {
        auto found = file.find_function(loc.symbol);
        if (!found) {
            return refuse(args, found.err().code, found.err().message);
        }
        const symbol_search &search = *found;
        const std::string &sym = loc.symbol;
        if (!search.best) {
            std::string message = "no function '" + sym + "' in " + loc.binary;
            if (!search.other_kind.empty()) {
                message += " ('" + sym + "' there is " + search.other_kind + ")";
            } else if (search.undefined) {
                message += " (it only refers to '" + sym + "', defined in a library it loads)";
            } else if (sym.find('@') != std::string::npos) {
                message += " (give the name without a version)";
            } else if (sym.find("::") != std::string::npos || sym.find('(') != std::string::npos) {
                message += " (C++ functions go by their mangled names, as nm prints them)";
            }
            return refuse(args, ENOENT, message);
        }
        const GElf_Sym &s = search.best->sym;
        if (search.best->ifunc) {
            return refuse(args, EINVAL,
                          sym + " in " + loc.binary +
                              " is an indirect function (ifunc); probe the implementation it "
                              "resolves to");
        }
        if (s.st_size > 0 && loc.offset >= s.st_size) {
            return refuse(args, ERANGE,
                          "offset " + std::to_string(loc.offset) + " is past the end of '" + sym +
                              "' in " + loc.binary + " (" + std::to_string(s.st_size) +
                              " bytes long)");
        }
        if (loc.offset > UINT64_MAX - s.st_value) {
            return refuse(args, ERANGE,
                          "offset " + std::to_string(loc.offset) + " past '" + sym + "' in " +
                              loc.binary + " leaves the address space");
        }
        loc.address = s.st_value + loc.offset;
        loc.bytes_to_end = s.st_size > 0 ? s.st_size - loc.offset : 0;
        loc.padding_after = s.st_size > 0 ? file.padding_after(s.st_value + s.st_size) : 0;
        loc.function_entry = loc.offset == 0;
    } else {
        loc.function_entry = file.starts_function(loc.address);
    }

    const code_segment *seg = file.segment_of(loc.address);
    if (seg == nullptr) {
        std::string what =
            by_address ? hex(loc.address) : "'" + loc.symbol + "' (" + hex(loc.address) + ")";
        return refuse(args, EFAULT,
                      what + " in " + loc.binary + " is not inside executable code; " +
                          segments_text(file));
    }
    loc.file_offset = loc.address - seg->vaddr + seg->offset;
    if (semaphore) {
        const code_segment *data = file.loaded_of(*semaphore);
        if (data == nullptr || *semaphore - data->vaddr + 2 > data->size) {
            return refuse(args, EFAULT,
                          "the semaphore " + hex(*semaphore) + " is in no loadable segment of " +
                              loc.binary + " backed by the file");
        }
        loc.semaphore = *semaphore;
        loc.semaphore_offset = *semaphore - data->vaddr + data->offset;
    }
    return loc;
}

result<uint64_t> tracepoint_id(std::string_view args) {
    constexpr std::string_view syntax = "CATEGORY:NAME, e.g. syscalls:sys_enter_getpid";
    size_t colon = args.find(':');
    if (colon == std::string_view::npos) {
        return refuse(args, EINVAL, "expected " + std::string(syntax));
    }
    std::string category(args.substr(0, colon));
    std::string name(args.substr(colon + 1));
    auto bad_part = [](const std::string &part) {
        return part.empty() || part == "." || part == ".." ||
               part.find_first_of("/: \t\n") != std::string::npos;
    };
    if (bad_part(category) || bad_part(name)) {
        return refuse(args, EINVAL,
                      "expected " + std::string(syntax) +
                          " (both parts non-empty, without '/', ':' or spaces)");
    }
    auto root = tracefs_root();
    if (!root) {
        return refuse(args, root.err().code, root.err().message);
    }
    std::string events = *root + "/events";
    std::string id_path = events + "/" + category + "/" + name + "/id";
    int fd = ::open(id_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int code = errno;
        if (code != ENOENT) {
            return refuse(args, code, id_path + ": " + errno_text(code));
        }
        int dir_code = 0;
        if (!is_directory(events + "/" + category, dir_code)) {
            return refuse(args, ENOENT, "no tracepoint category '" + category + "' in " + events);
        }
        return refuse(args, ENOENT,
                      "no tracepoint '" + name + "' in category '" + category + "' (no " + id_path +
                          ")");
    }
    char buf[32];
    ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
    int read_code = errno;
    ::close(fd);
    if (n < 0) {
        return refuse(args, read_code, id_path + ": " + errno_text(read_code));
    }
    std::string_view text(buf, static_cast<size_t>(n));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.remove_suffix(1);
    }
    uint64_t id = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id, 10);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
        return refuse(args, EIO,
                      id_path + " does not hold a tracepoint id ('" + std::string(text) + "')");
    }
    return id;
}

namespace {

// Where file_offset of binary (length bytes from it) is mapped in this process: a mapping of the
// same file (device and inode) that is executable, or writable, holding the whole range.
// Nothing when there is none; an error when the file or /proc/self/maps cannot be read.
result<std::optional<uintptr_t>> mapped_address(const std::string &binary, uint64_t file_offset,
                                                uint64_t length, bool writable) {
    struct stat st {};
    if (::stat(binary.c_str(), &st) != 0) {
        int e = errno;
        return make_error(e, binary + ": " + std::strerror(e));
    }
    FILE *maps = std::fopen("/proc/self/maps", "re");
    if (maps == nullptr) {
        int e = errno;
        return make_error(e, std::string("/proc/self/maps: ") + std::strerror(e));
    }
    // "start-end perms offset major:minor inode path".
    char line[4096];
    std::optional<uintptr_t> found;
    while (!found && std::fgets(line, sizeof line, maps) != nullptr) {
        unsigned long long start = 0, end = 0, offset = 0, inode = 0;
        unsigned major = 0, minor = 0;
        char perms[8] = {};
        if (std::sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &start, &end, perms, &offset, &major,
                        &minor, &inode) != 7) {
            continue;
        }
        bool kind = writable ? perms[1] == 'w' : perms[2] == 'x';
        if (kind && inode == st.st_ino && major == major(st.st_dev) && minor == minor(st.st_dev) &&
            file_offset >= offset && file_offset - offset + length <= end - start) {
            found = static_cast<uintptr_t>(start + (file_offset - offset));
        }
    }
    std::fclose(maps);
    return found;
}

} // namespace

result<uintptr_t> runtime_address(const uprobe_location &loc) {
    auto found = mapped_address(loc.binary, loc.file_offset, 1, false);
    if (!found) {
        return std::move(found).err();
    }
    if (!*found) {
        return make_error(ENOENT, loc.binary + std::string(not_mapped_here) + " (pid " +
                                      std::to_string(::getpid()) + ")");
    }
    return **found;
}

result<uint16_t *> runtime_semaphore(const uprobe_location &loc) {
    if (loc.semaphore == 0) {
        return make_error(EINVAL, loc.binary + ": the probe has no semaphore");
    }
    // The writable private mapping of the same file that holds the semaphore's file offset.
    auto found = mapped_address(loc.binary, loc.semaphore_offset, sizeof(uint16_t), true);
    if (!found) {
        return std::move(found).err();
    }
    if (!*found || **found % alignof(uint16_t) != 0) {
        return make_error(ENOENT, loc.binary + ": the semaphore " + hex(loc.semaphore) +
                                      " is not in a writable mapping of this process (pid " +
                                      std::to_string(::getpid()) + ")");
    }
    return reinterpret_cast<uint16_t *>(**found);
}

result<void> check_return_override(std::span<const vm::ebpf_inst> insns, uint32_t prog_id,
                                   int32_t attach_type, std::string_view args) {
    bool calls = std::any_of(insns.begin(), insns.end(), [](const vm::ebpf_inst &inst) {
        return inst.opcode == vm::op_call && inst.src == vm::call_helper && inst.imm == 58;
    });
    if (!calls) {
        return {};
    }
    std::string where;
    if (attach_type == attach_type_uretprobe) {
        where = "a uretprobe (the function has run by then)";
    } else if (attach_type != attach_type_uprobe) {
        where = "a " + attach_type_name(attach_type) + " target";
    } else {
        auto loc = resolve_uprobe_target(args);
        if (!loc) {
            return loc.err();
        }
        if (loc->function_entry) {
            return {};
        }
        where = "a uprobe inside a function, not at its first instruction";
    }
    return make_error(EINVAL, "program " + std::to_string(prog_id) +
                                  " calls override_return (58), which works only in a uprobe at "
                                  "a function's entry; " +
                                  std::string(args) + " is " + where);
}

result<void> check_target_args(int32_t attach_type, std::string_view args) {
    if (attach_type == attach_type_uprobe || attach_type == attach_type_uretprobe) {
        if (auto loc = resolve_uprobe_target(args); !loc) {
            return loc.err();
        }
    } else if (attach_type == attach_type_tracepoint) {
        if (auto id = tracepoint_id(args); !id) {
            return id.err();
        }
    }
    return {};
}

} // namespace bpftime
