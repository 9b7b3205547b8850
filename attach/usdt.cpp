// SPDX-License-Identifier: MIT
// USDT probes: systemtap's `.note.stapsdt` notes read with libelf, their argument specs parsed
// into libbpf's layout (as libbpf's usdt.c does for x86-64).
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/attach/usdt.hpp>

#include <bpftime/loader/elf_util.hpp>

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <optional>

namespace bpftime {
namespace {

constexpr uint32_t stapsdt_note_type = 3; // _SDT_NOTE_TYPE in <sys/sdt.h>

std::string hex(uint64_t value) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, 16);
    (void)ec;
    return "0x" + std::string(buf, end);
}

// The general-purpose registers by every name an operand may use, and where pt_regs keeps
// them (the kernel's x86-64 layout: r15 first, then r14 ... ss).
struct register_names {
    std::array<std::string_view, 4> names; // 64, 32, 16 and 8 bits
    int16_t offset;
};
constexpr std::array<register_names, 17> registers = {{
    {{"rip", "eip", "", ""}, 128},
    {{"rax", "eax", "ax", "al"}, 80},
    {{"rbx", "ebx", "bx", "bl"}, 40},
    {{"rcx", "ecx", "cx", "cl"}, 88},
    {{"rdx", "edx", "dx", "dl"}, 96},
    {{"rsi", "esi", "si", "sil"}, 104},
    {{"rdi", "edi", "di", "dil"}, 112},
    {{"rbp", "ebp", "bp", "bpl"}, 32},
    {{"rsp", "esp", "sp", "spl"}, 152},
    {{"r8", "r8d", "r8w", "r8b"}, 72},
    {{"r9", "r9d", "r9w", "r9b"}, 64},
    {{"r10", "r10d", "r10w", "r10b"}, 56},
    {{"r11", "r11d", "r11w", "r11b"}, 48},
    {{"r12", "r12d", "r12w", "r12b"}, 24},
    {{"r13", "r13d", "r13w", "r13b"}, 16},
    {{"r14", "r14d", "r14w", "r14b"}, 8},
    {{"r15", "r15d", "r15w", "r15b"}, 0},
}};

std::optional<int16_t> register_offset(std::string_view name) {
    for (const register_names &r : registers) {
        for (std::string_view n : r.names) {
            if (!n.empty() && n == name) {
                return r.offset;
            }
        }
    }
    return std::nullopt;
}

std::optional<int64_t> parse_signed(std::string_view text) {
    bool negative = !text.empty() && text[0] == '-';
    if (negative || (!text.empty() && text[0] == '+')) {
        text.remove_prefix(1);
    }
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
    if (value > (negative ? uint64_t{1} << 63 : uint64_t{INT64_MAX})) {
        return std::nullopt;
    }
    return negative ? static_cast<int64_t>(0 - value) : static_cast<int64_t>(value);
}

// One SIZE@OPERAND; the message says what is wrong with it.
result<usdt_arg_spec> parse_arg(std::string_view text) {
    usdt_arg_spec arg;
    size_t at = text.find('@');
    if (at == std::string_view::npos) {
        return make_error(EINVAL, "no '@' between the size and the operand (expected "
                                  "SIZE@OPERAND, e.g. -4@%edi)");
    }
    auto size = parse_signed(text.substr(0, at));
    if (!size) {
        return make_error(EINVAL, "the size '" + std::string(text.substr(0, at)) +
                                      "' is not a number (1, 2, 4 or 8, negative when signed)");
    }
    arg.arg_signed = *size < 0;
    int64_t bytes = *size < 0 ? -*size : *size;
    if (bytes != 1 && bytes != 2 && bytes != 4 && bytes != 8) {
        return make_error(EINVAL, "size " + std::to_string(bytes) + " is not 1, 2, 4 or 8 bytes");
    }
    arg.arg_bitshift = static_cast<int8_t>(64 - bytes * 8);
    std::string_view op = text.substr(at + 1);
    auto reg = [&](std::string_view name) -> result<int16_t> {
        auto off = register_offset(name);
        if (!off) {
            return make_error(EINVAL, "'%" + std::string(name) +
                                          "' is not a general-purpose x86-64 register");
        }
        return *off;
    };
    if (op.empty()) {
        return make_error(EINVAL, "no operand after '@'");
    }
    if (op[0] == '$') {
        auto value = parse_signed(op.substr(1));
        if (!value) {
            return make_error(EINVAL, "the constant '" + std::string(op) + "' is not a number");
        }
        arg.arg_type = usdt_arg_const;
        arg.val_off = static_cast<uint64_t>(*value);
        return arg;
    }
    if (op[0] == '%') {
        auto off = reg(op.substr(1));
        if (!off) {
            return off.err();
        }
        arg.arg_type = usdt_arg_reg;
        arg.reg_off = *off;
        return arg;
    }
    size_t open = op.find('(');
    if (open == std::string_view::npos || op.back() != ')' || op.size() < open + 3 ||
        op[open + 1] != '%') {
        return make_error(EINVAL, "the operand '" + std::string(op) +
                                      "' is not a register (%REG), a constant ($N) or a memory "
                                      "operand (OFFSET(%REG))");
    }
    std::string_view inside = op.substr(open + 2, op.size() - open - 3);
    if (inside.find(',') != std::string_view::npos) {
        return make_error(EOPNOTSUPP, "the memory operand '" + std::string(op) +
                                          "' uses an index register, which libbpf's usdt.bpf.h "
                                          "cannot read");
    }
    std::string_view disp = op.substr(0, open);
    int64_t offset = 0;
    if (!disp.empty()) {
        auto value = parse_signed(disp);
        if (!value) {
            return make_error(EINVAL, "the displacement '" + std::string(disp) +
                                          "' is not a number (symbol-relative operands are not "
                                          "supported)");
        }
        offset = *value;
    }
    auto off = reg(inside);
    if (!off) {
        return off.err();
    }
    arg.arg_type = usdt_arg_reg_deref;
    arg.val_off = static_cast<uint64_t>(offset);
    arg.reg_off = *off;
    return arg;
}

struct fd_closer {
    int fd = -1;
    ~fd_closer() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

} // namespace

result<usdt_spec> parse_usdt_args(std::string_view args) {
    usdt_spec spec;
    int n = 0;
    size_t pos = 0;
    while (true) {
        while (pos < args.size() && (args[pos] == ' ' || args[pos] == '\t')) {
            pos++;
        }
        if (pos >= args.size()) {
            break;
        }
        size_t end = args.find_first_of(" \t", pos);
        std::string_view one = args.substr(pos, end == std::string_view::npos ? end : end - pos);
        pos = end == std::string_view::npos ? args.size() : end;
        if (n == usdt_max_args) {
            return make_error(E2BIG, "more than " + std::to_string(usdt_max_args) +
                                         " arguments (libbpf's usdt.bpf.h reads at most " +
                                         std::to_string(usdt_max_args) + ")");
        }
        auto arg = parse_arg(one);
        if (!arg) {
            return make_error(arg.err().code, "argument " + std::to_string(n + 1) + " '" +
                                                  std::string(one) + "': " + arg.err().message);
        }
        spec.args[n++] = *arg;
    }
    spec.arg_cnt = static_cast<int16_t>(n);
    return spec;
}

result<std::vector<usdt_note>> read_usdt_notes(std::string_view name) {
    static std::once_flag init;
    std::call_once(init, [] { elf_version(EV_CURRENT); });
    auto path = find_binary(name);
    if (!path) {
        return path.err();
    }
    fd_closer fd;
    fd.fd = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
    if (fd.fd < 0) {
        int e = errno;
        return make_error(e, *path + ": " + std::strerror(e));
    }
    loader::elf_ptr elf(elf_begin(fd.fd, ELF_C_READ, nullptr));
    size_t shstrndx = 0;
    if (!elf || elf_kind(elf.get()) != ELF_K_ELF || gelf_getclass(elf.get()) != ELFCLASS64 ||
        elf_getshdrstrndx(elf.get(), &shstrndx) != 0) {
        return make_error(ENOEXEC, *path + " is not a 64-bit ELF file with section headers");
    }
    uint64_t base = 0; // where .stapsdt.base is: notes record where the linker put it
    std::vector<Elf_Scn *> note_sections;
    for (Elf_Scn *scn = elf_nextscn(elf.get(), nullptr); scn != nullptr;
         scn = elf_nextscn(elf.get(), scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) {
            return make_error(ENOEXEC, *path + " has a damaged section header");
        }
        const char *sname = elf_strptr(elf.get(), shstrndx, sh.sh_name);
        if (sname == nullptr) {
            continue;
        }
        if (std::strcmp(sname, ".stapsdt.base") == 0) {
            base = sh.sh_addr;
        } else if (std::strcmp(sname, ".note.stapsdt") == 0 && sh.sh_type == SHT_NOTE) {
            note_sections.push_back(scn);
        }
    }
    std::vector<usdt_note> notes;
    for (Elf_Scn *scn : note_sections) {
        Elf_Data *data = elf_getdata(scn, nullptr);
        if (data == nullptr) {
            return make_error(ENOEXEC, *path + ": .note.stapsdt cannot be read");
        }
        GElf_Nhdr nh;
        size_t name_off = 0, desc_off = 0;
        for (size_t off = 0; (off = gelf_getnote(data, off, &nh, &name_off, &desc_off)) > 0;) {
            if (nh.n_type != stapsdt_note_type || nh.n_namesz != sizeof "stapsdt" ||
                std::memcmp(static_cast<const char *>(data->d_buf) + name_off, "stapsdt",
                            sizeof "stapsdt") != 0) {
                continue;
            }
            const auto *desc = static_cast<const char *>(data->d_buf) + desc_off;
            size_t len = nh.n_descsz;
            // Three addresses (the site, .stapsdt.base as linked, the semaphore), then the
            // provider, the name and the argument specs, each ending with a NUL.
            usdt_note note;
            uint64_t addrs[3];
            const char *end = desc + len;
            const char *text = desc + sizeof addrs;
            auto next_string = [&](std::string &out) {
                const char *nul =
                    text < end ? static_cast<const char *>(std::memchr(text, '\0', end - text))
                               : nullptr;
                if (nul == nullptr) {
                    return false;
                }
                out.assign(text, nul);
                text = nul + 1;
                return true;
            };
            if (len < sizeof addrs || !(std::memcpy(addrs, desc, sizeof addrs), true) ||
                !next_string(note.provider) || !next_string(note.name) || !next_string(note.args)) {
                return make_error(ENOEXEC, *path + ": a damaged .note.stapsdt note at offset " +
                                               std::to_string(off));
            }
            note.address = addrs[0];
            if (base != 0 && addrs[1] != 0) {
                note.address += base - addrs[1]; // prelinked: moved with .stapsdt.base
            }
            note.semaphore = addrs[2];
            notes.push_back(std::move(note));
        }
    }
    return notes;
}

result<std::vector<usdt_site>> resolve_usdt_target(std::string_view args) {
    constexpr std::string_view syntax = "BINARY:PROVIDER:NAME";
    size_t last = args.rfind(':');
    size_t first = last == std::string_view::npos || last == 0 ? std::string_view::npos
                                                               : args.rfind(':', last - 1);
    if (first == std::string_view::npos || first == 0 || last == first + 1 ||
        last + 1 == args.size()) {
        return make_error(EINVAL, std::string(args) + ": expected " + std::string(syntax) +
                                      " (all three parts non-empty)");
    }
    std::string_view binary = args.substr(0, first);
    std::string_view provider = args.substr(first + 1, last - first - 1);
    std::string_view name = args.substr(last + 1);
    auto path = find_binary(binary);
    if (!path) {
        return make_error(path.err().code, std::string(args) + ": " + path.err().message);
    }
    auto notes = read_usdt_notes(*path);
    if (!notes) {
        return make_error(notes.err().code, std::string(args) + ": " + notes.err().message);
    }
    std::vector<usdt_site> sites;
    std::string others;
    for (const usdt_note &n : *notes) {
        if (n.provider != provider || n.name != name) {
            std::string one = n.provider + ":" + n.name;
            if (others.find(one) == std::string::npos && others.size() < 300) {
                others += (others.empty() ? "" : ", ") + one;
            }
            continue;
        }
        auto spec = parse_usdt_args(n.args);
        if (!spec) {
            return make_error(spec.err().code, std::string(args) + ": the site at " +
                                                   hex(n.address) + " ('" + n.args +
                                                   "'): " + spec.err().message);
        }
        std::string target = *path + ":" + hex(n.address);
        if (n.semaphore != 0) {
            target += "(" + hex(n.semaphore) + ")";
        }
        if (auto ok = resolve_uprobe_target(target); !ok) {
            return make_error(ok.err().code, std::string(args) + ": the site at " + hex(n.address) +
                                                 ": " + ok.err().message);
        }
        sites.push_back({n, std::move(target), *spec});
    }
    if (sites.empty()) {
        return make_error(ENOENT, std::string(args) + ": " + *path + " has no USDT probe " +
                                      std::string(provider) + ":" + std::string(name) +
                                      (notes->empty() ? " (it has no .note.stapsdt notes at all)"
                                                      : " (its probes: " + others + ")"));
    }
    return sites;
}

} // namespace bpftime
