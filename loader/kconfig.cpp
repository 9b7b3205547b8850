// SPDX-License-Identifier: MIT
// __kconfig externs, resolved as libbpf's bpf_object__resolve_externs() does: LINUX_* values
// libbpf computes itself, CONFIG_* from the running kernel's configuration (/proc/config.gz,
// else /boot/config-RELEASE), weak ones that nothing defines 0, strong ones refused by name.
// libbpf lays the externs out in its ".kconfig" map when it opens the object (the offsets are
// written into the .kconfig DATASEC of the object's BTF); the loader fills that map's bytes.
#include "loader.hpp"

#include <bpf/btf.h>
#include <elf.h>
#include <sys/utsname.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

namespace bpftime::loader::detail {
namespace {

struct btf_deleter {
    void operator()(btf *b) const { btf__free(b); }
};

const btf_type *kconfig_datasec(const btf *b) {
    for (uint32_t id = 1; id < btf__type_cnt(b); id++) {
        const btf_type *t = btf__type_by_id(b, id);
        if (btf_is_datasec(t) &&
            std::strcmp(btf__name_by_offset(b, t->name_off), ".kconfig") == 0) {
            return t;
        }
    }
    return nullptr;
}

// libbpf's kcfg types (find_kcfg_type).
enum class kcfg_type { unknown, boolean, character, tristate, integer, char_array };

kcfg_type type_of(const btf *b, uint32_t id, bool &is_signed) {
    is_signed = false;
    int resolved = btf__resolve_type(b, id);
    const btf_type *t = btf__type_by_id(b, resolved > 0 ? static_cast<uint32_t>(resolved) : id);
    if (t == nullptr) {
        return kcfg_type::unknown;
    }
    switch (btf_kind(t)) {
    case BTF_KIND_INT: {
        uint32_t enc = btf_int_encoding(t);
        is_signed = (enc & BTF_INT_SIGNED) != 0;
        if (enc & BTF_INT_BOOL) {
            return t->size == 1 ? kcfg_type::boolean : kcfg_type::unknown;
        }
        if (t->size == 1) {
            return kcfg_type::character;
        }
        if (t->size > 8 || (t->size & (t->size - 1)) != 0) {
            return kcfg_type::unknown;
        }
        return kcfg_type::integer;
    }
    case BTF_KIND_ENUM:
        return t->size == 4 &&
                       std::strcmp(btf__name_by_offset(b, t->name_off), "libbpf_tristate") == 0
                   ? kcfg_type::tristate
                   : kcfg_type::unknown;
    case BTF_KIND_ARRAY: {
        bool s = false;
        return type_of(b, btf_array(t)->type, s) == kcfg_type::character ? kcfg_type::char_array
                                                                         : kcfg_type::unknown;
    }
    default:
        return kcfg_type::unknown;
    }
}

struct kcfg_extern {
    std::string name;
    uint32_t offset = 0;
    uint32_t size = 0;
    kcfg_type type = kcfg_type::unknown;
    bool is_signed = false;
    bool weak = false;
    bool set = false;
};

error refuse(const kcfg_extern &e, const std::string &why) {
    return make_error(EINVAL, "__kconfig extern '" + e.name + "': " + why);
}

// As libbpf's set_kcfg_value_num: the number must fit the variable.
result<void> set_num(const kcfg_extern &e, uint8_t *at, uint64_t v) {
    if (e.type != kcfg_type::integer && e.type != kcfg_type::character &&
        e.type != kcfg_type::boolean) {
        return refuse(e, "a number cannot go into its type");
    }
    if (e.type == kcfg_type::boolean && v > 1) {
        return refuse(e, "value " + std::to_string(v) + " for a bool");
    }
    if (e.size < 8) {
        uint64_t bits = uint64_t{e.size} * 8;
        bool fits = e.is_signed ? (static_cast<int64_t>(v) >= -(int64_t{1} << (bits - 1)) &&
                                   static_cast<int64_t>(v) < (int64_t{1} << (bits - 1)))
                                : v >> bits == 0;
        if (!fits) {
            return refuse(e, "value " + std::to_string(v) + " does not fit in " +
                                 std::to_string(e.size) + " bytes");
        }
    }
    std::memcpy(at, &v, e.size); // little-endian
    return {};
}

// y, n or m (set_kcfg_value_tri).
result<void> set_tri(const kcfg_extern &e, uint8_t *at, char c) {
    switch (e.type) {
    case kcfg_type::boolean:
        if (c == 'm') {
            return refuse(e, "value 'm' (a module) for a bool");
        }
        *at = c == 'y' ? 1 : 0;
        return {};
    case kcfg_type::tristate: {
        uint32_t v = c == 'y' ? 1 : c == 'm' ? 2 : 0; // enum libbpf_tristate
        std::memcpy(at, &v, sizeof v);
        return {};
    }
    case kcfg_type::character:
        *at = static_cast<uint8_t>(c);
        return {};
    default:
        return refuse(e, std::string("value '") + c +
                             "' for a variable that is not a bool, "
                             "char or enum libbpf_tristate");
    }
}

result<void> set_config(const kcfg_extern &e, uint8_t *at, const std::string &value) {
    if (value.size() == 1 && (value[0] == 'y' || value[0] == 'n' || value[0] == 'm')) {
        return set_tri(e, at, value[0]);
    }
    if (!value.empty() && value[0] == '"') {
        if (e.type != kcfg_type::char_array) {
            return refuse(e, "a string value for a variable that is not a char array");
        }
        std::string s = value.substr(
            1, value.size() >= 2 && value.back() == '"' ? value.size() - 2 : value.size() - 1);
        size_t n = std::min<size_t>(s.size(), e.size - 1);
        std::memcpy(at, s.data(), n);
        at[n] = 0;
        return {};
    }
    char *end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(value.c_str(), &end, 0);
    if (errno != 0 || end == value.c_str() || *end != '\0') {
        return refuse(e, "cannot parse the kernel configuration's value '" + value + "'");
    }
    return set_num(e, at, v);
}

// The running kernel's configuration, as text; empty when neither file is there.
std::string kernel_config() {
    if (gzFile gz = gzopen("/proc/config.gz", "rb")) {
        std::string text;
        char buf[65536];
        int n = 0;
        while ((n = gzread(gz, buf, sizeof buf)) > 0) {
            text.append(buf, static_cast<size_t>(n));
        }
        gzclose(gz);
        if (n == 0) {
            return text;
        }
    }
    utsname u{};
    uname(&u);
    std::ifstream in(std::string("/boot/config-") + u.release);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// KERNEL_VERSION(a, b, c) of the running kernel, as libbpf's get_kernel_version().
uint32_t kernel_version() {
    int major = 0, minor = 0, patch = 0;
    std::ifstream ubuntu("/proc/version_signature");
    std::string sig;
    if (std::getline(ubuntu, sig) &&
        std::sscanf(sig.c_str(), "Ubuntu %*s %*s %d.%d.%d", &major, &minor, &patch) == 3) {
        return static_cast<uint32_t>((major << 16) + (minor << 8) + std::min(patch, 255));
    }
    utsname u{};
    if (uname(&u) != 0 || std::sscanf(u.release, "%d.%d.%d", &major, &minor, &patch) != 3) {
        return 0;
    }
    return static_cast<uint32_t>((major << 16) + (minor << 8) + std::min(patch, 255));
}

} // namespace

std::set<std::string, std::less<>> kconfig_externs(const elf_image &image) {
    std::set<std::string, std::less<>> names;
    uint32_t s = image.find_section(".BTF");
    if (s == 0) {
        return names;
    }
    const auto &bytes = image.sections[s].bytes;
    std::unique_ptr<btf, btf_deleter> b(
        btf__new(bytes.data(), static_cast<uint32_t>(bytes.size())));
    if (!b) {
        return names;
    }
    if (const btf_type *sec = kconfig_datasec(b.get())) {
        for (uint16_t i = 0; i < btf_vlen(sec); i++) {
            const btf_type *var = btf__type_by_id(b.get(), btf_var_secinfos(sec)[i].type);
            if (var != nullptr && btf_is_var(var)) {
                names.emplace(btf__name_by_offset(b.get(), var->name_off));
            }
        }
    }
    return names;
}

result<kconfig_values> resolve_kconfig(const btf *obj_btf, const elf_image &image, uint32_t size) {
    kconfig_values out;
    out.bytes.assign(size, 0);
    const btf_type *sec = obj_btf ? kconfig_datasec(obj_btf) : nullptr;
    if (sec == nullptr) {
        return make_error(EINVAL, "the object has a .kconfig map but no .kconfig section in BTF");
    }
    std::vector<kcfg_extern> externs;
    for (uint16_t i = 0; i < btf_vlen(sec); i++) {
        const btf_var_secinfo &vs = btf_var_secinfos(sec)[i];
        const btf_type *var = btf__type_by_id(obj_btf, vs.type);
        if (var == nullptr || !btf_is_var(var)) {
            continue;
        }
        kcfg_extern e;
        e.name = btf__name_by_offset(obj_btf, var->name_off);
        e.offset = vs.offset;
        e.size = vs.size;
        e.type = type_of(obj_btf, var->type, e.is_signed);
        for (const elf_symbol &sym : image.symbols) {
            if (sym.name == e.name && sym.section == SHN_UNDEF) {
                e.weak = sym.bind == STB_WEAK;
            }
        }
        if (uint64_t{e.offset} + e.size > size || e.size == 0) {
            return refuse(e, "lies outside the .kconfig map");
        }
        if (e.type == kcfg_type::unknown) {
            return refuse(e, "has a type libbpf does not accept for __kconfig (bool, char, "
                             "enum libbpf_tristate, an integer or a char array)");
        }
        externs.push_back(std::move(e));
        out.offsets.emplace(externs.back().name, externs.back().offset);
    }
    std::string config;
    bool config_read = false;
    for (kcfg_extern &e : externs) {
        uint8_t *at = out.bytes.data() + e.offset;
        result<void> r;
        if (e.name.starts_with("CONFIG_")) {
            if (!config_read) {
                config = "\n" + kernel_config();
                config_read = true;
            }
            std::string key = "\n" + e.name + "=";
            if (size_t pos = config.find(key); pos != std::string::npos) {
                size_t start = pos + key.size();
                size_t end = config.find('\n', start);
                r = set_config(e, at,
                               config.substr(start, end == std::string::npos ? std::string::npos
                                                                             : end - start));
                e.set = true;
            }
        } else if (e.name == "LINUX_KERNEL_VERSION") {
            uint32_t v = kernel_version();
            if (v == 0) {
                return refuse(e, "the kernel's version cannot be read from uname");
            }
            r = set_num(e, at, v);
            e.set = true;
        } else if (e.name == "LINUX_HAS_BPF_COOKIE") {
            r = set_num(e, at, 1); // bpf_get_attach_cookie works for every attach type here
            e.set = true;
        } else if (e.name == "LINUX_HAS_SYSCALL_WRAPPER") {
            // x86-64 kernels wrap syscalls (__x64_sys_*) since 4.17.
            r = set_num(e, at, kernel_version() >= (4u << 16) + (17u << 8) ? 1 : 0);
            e.set = true;
        } else if (!e.name.starts_with("LINUX_") || !e.weak) {
            return refuse(e, "libbpf knows only CONFIG_* and a few LINUX_* __kconfig externs "
                             "(LINUX_KERNEL_VERSION, LINUX_HAS_BPF_COOKIE, "
                             "LINUX_HAS_SYSCALL_WRAPPER); declare it __weak to default to 0");
        }
        if (!r) {
            return std::move(r).err();
        }
        if (!e.set && !e.weak) {
            return refuse(e, config.size() <= 1
                                 ? "the kernel's configuration is not readable "
                                   "(/proc/config.gz, /boot/config-RELEASE); declare "
                                   "it __weak to default to 0"
                                 : "the kernel's configuration does not set it; "
                                   "declare it __weak to default to 0");
        }
    }
    return out;
}

} // namespace bpftime::loader::detail
