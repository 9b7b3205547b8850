// SPDX-License-Identifier: MIT
// Global variables by name: read from the object's BTF (DATASEC entries) when it is opened, set
// in a global data map's initial value before load (`bpftime load --set NAME=VALUE`).
#include "loader.hpp"

#include <bpftime/loader/elf.hpp>

#include <bpf/btf.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>

namespace bpftime::loader {
namespace detail {

namespace {

std::string type_text(const btf *b, uint32_t id) {
    const btf_type *t = btf__type_by_id(b, id);
    if (t == nullptr) {
        return "?";
    }
    const char *name = btf__name_by_offset(b, t->name_off);
    std::string n = name != nullptr ? name : "";
    switch (btf_kind(t)) {
    case BTF_KIND_CONST:
    case BTF_KIND_VOLATILE:
    case BTF_KIND_RESTRICT:
    case BTF_KIND_TYPE_TAG:
        return type_text(b, t->type); // qualifiers say nothing about what a value may be
    case BTF_KIND_STRUCT:
        return "struct " + n;
    case BTF_KIND_UNION:
        return "union " + n;
    case BTF_KIND_ENUM:
    case BTF_KIND_ENUM64:
        return "enum " + n;
    case BTF_KIND_PTR:
        return "pointer";
    case BTF_KIND_ARRAY: {
        const struct btf_array *a = btf_array(t);
        return type_text(b, a->type) + "[" + std::to_string(a->nelems) + "]";
    }
    default:
        return n.empty() ? "?" : n;
    }
}

// An integer type (int, char, _Bool, an enum) behind typedefs and qualifiers: size and sign.
bool integer_of(const btf *b, uint32_t id, uint32_t &size, bool &is_signed, bool &boolean) {
    int resolved = btf__resolve_type(b, id);
    const btf_type *t =
        resolved < 0 ? nullptr : btf__type_by_id(b, static_cast<uint32_t>(resolved));
    if (t == nullptr) {
        return false;
    }
    if (btf_is_int(t)) {
        uint32_t enc = btf_int_encoding(t);
        if (btf_int_offset(t) != 0 || btf_int_bits(t) != t->size * 8) {
            return false; // a bitfield-like int
        }
        size = t->size;
        is_signed = (enc & BTF_INT_SIGNED) != 0;
        boolean = (enc & BTF_INT_BOOL) != 0;
        return size == 1 || size == 2 || size == 4 || size == 8;
    }
    if (btf_is_enum(t) || btf_is_enum64(t)) {
        size = t->size;
        is_signed = btf_kflag(t);
        boolean = false;
        return size == 1 || size == 2 || size == 4 || size == 8;
    }
    return false;
}

bool is_char(const btf *b, uint32_t id) {
    int resolved = btf__resolve_type(b, id);
    const btf_type *t =
        resolved < 0 ? nullptr : btf__type_by_id(b, static_cast<uint32_t>(resolved));
    return t != nullptr && btf_is_int(t) && t->size == 1 &&
           (btf_int_encoding(t) & BTF_INT_BOOL) == 0;
}

} // namespace

std::vector<elf_global> read_globals(const btf *b, const std::string &section,
                                     uint32_t section_size) {
    std::vector<elf_global> out;
    if (b == nullptr) {
        return out;
    }
    int sec = btf__find_by_name_kind(b, section.c_str(), BTF_KIND_DATASEC);
    if (sec < 0) {
        return out;
    }
    const btf_type *ds = btf__type_by_id(b, static_cast<uint32_t>(sec));
    const btf_var_secinfo *vi = btf_var_secinfos(ds);
    for (uint16_t i = 0; i < btf_vlen(ds); i++, vi++) {
        const btf_type *var = btf__type_by_id(b, vi->type);
        if (var == nullptr || !btf_is_var(var) || vi->offset > section_size ||
            vi->size > section_size - vi->offset) {
            continue;
        }
        elf_global g;
        const char *name = btf__name_by_offset(b, var->name_off);
        g.name = name != nullptr ? name : "";
        g.offset = vi->offset;
        g.size = vi->size;
        g.type_name = type_text(b, var->type);
        uint32_t size = 0;
        bool is_signed = false, boolean = false;
        int resolved = btf__resolve_type(b, var->type);
        const btf_type *t =
            resolved < 0 ? nullptr : btf__type_by_id(b, static_cast<uint32_t>(resolved));
        if (integer_of(b, var->type, size, is_signed, boolean) && size == g.size) {
            g.type = elf_global::kind::integer;
            g.is_signed = is_signed;
            g.boolean = boolean;
        } else if (t != nullptr && btf_is_array(t)) {
            const struct btf_array *a = btf_array(t);
            if (is_char(b, a->type) && a->nelems == g.size) {
                g.type = elf_global::kind::chars;
            } else if (integer_of(b, a->type, size, is_signed, boolean) && a->nelems > 0 &&
                       uint64_t{size} * a->nelems == g.size) {
                g.type = elf_global::kind::array;
                g.elem_size = size;
                g.count = a->nelems;
                g.is_signed = is_signed;
            }
        }
        out.push_back(std::move(g));
    }
    return out;
}

} // namespace detail

namespace {

// Parses an integer for size bytes of the given sign into its little-endian bytes.
result<void> parse_integer(std::string_view text, uint32_t size, bool is_signed, bool boolean,
                           uint8_t *out, const std::string &what) {
    if (boolean && (text == "true" || text == "false")) {
        out[0] = text == "true" ? 1 : 0;
        return {};
    }
    bool negative = !text.empty() && text.front() == '-';
    std::string_view digits = negative ? text.substr(1) : text;
    int base = 10;
    if (digits.starts_with("0x") || digits.starts_with("0X")) {
        base = 16;
        digits.remove_prefix(2);
    }
    uint64_t magnitude = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude, base);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
        return make_error(EINVAL, what + ": '" + std::string(text) + "' is not an integer" +
                                      (boolean ? " or true/false" : ""));
    }
    const unsigned bits = size * 8;
    uint64_t bytes = 0;
    if (negative) {
        uint64_t most = is_signed ? (1ull << (bits - 1)) : 0; // |min|
        if (magnitude > most) {
            return make_error(ERANGE, what + ": " + std::string(text) + " does not fit in " +
                                          (is_signed ? "a signed " : "an unsigned ") +
                                          std::to_string(size) + "-byte integer");
        }
        bytes = 0 - magnitude;
    } else {
        uint64_t most = bits == 64 ? std::numeric_limits<uint64_t>::max()
                                   : (is_signed ? (1ull << (bits - 1)) - 1 : (1ull << bits) - 1);
        if (magnitude > most) {
            return make_error(ERANGE, what + ": " + std::string(text) + " does not fit in " +
                                          (is_signed ? "a signed " : "an unsigned ") +
                                          std::to_string(size) + "-byte integer");
        }
        bytes = magnitude;
    }
    if (boolean && bytes > 1) {
        return make_error(ERANGE, what + ": a bool is true, false, 0 or 1");
    }
    for (uint32_t i = 0; i < size; i++) {
        out[i] = static_cast<uint8_t>(bytes >> (8 * i)); // little-endian, as eBPF on x86-64
    }
    return {};
}

} // namespace

result<void> set_global(std::span<const global_area> areas, const std::string &path,
                        std::string_view assignment) {
    auto eq = assignment.find('=');
    if (eq == std::string_view::npos || eq == 0) {
        return make_error(EINVAL, "--set takes NAME=VALUE or NAME[INDEX]=VALUE, not '" +
                                      std::string(assignment) + "'");
    }
    std::string_view lhs = assignment.substr(0, eq), value = assignment.substr(eq + 1);
    std::string_view name = lhs;
    std::optional<uint64_t> index;
    if (auto open = lhs.find('['); open != std::string_view::npos) {
        if (!lhs.ends_with("]")) {
            return make_error(EINVAL, "--set " + std::string(lhs) + ": an index is NAME[INDEX]");
        }
        uint64_t i = 0;
        std::string_view digits = lhs.substr(open + 1, lhs.size() - open - 2);
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
        if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
            return make_error(EINVAL, "--set " + std::string(lhs) + ": the index is not a number");
        }
        index = i;
        name = lhs.substr(0, open);
    }
    std::string known;
    for (const global_area &m : areas) {
        for (const elf_global &g : m.globals) {
            known += (known.empty() ? "" : ", ") + g.name;
            if (g.name != name) {
                continue;
            }
            std::string what =
                "--set " + std::string(lhs) + " (" + g.type_name + " in " + m.map_name + ")";
            if (m.bytes.size() < uint64_t{g.offset} + g.size) {
                return make_error(EINVAL, what + ": outside its section");
            }
            uint8_t *at = m.bytes.data() + g.offset;
            switch (g.type) {
            case elf_global::kind::integer:
                if (index) {
                    return make_error(EINVAL, what + ": not an array");
                }
                return parse_integer(value, g.size, g.is_signed, g.boolean, at, what);
            case elf_global::kind::chars:
                if (index) {
                    return make_error(EINVAL, what + ": a string is set whole, without an index");
                }
                if (value.size() >= g.size) {
                    return make_error(ERANGE, what + ": \"" + std::string(value) + "\" has " +
                                                  std::to_string(value.size()) +
                                                  " bytes; it holds " + std::to_string(g.size - 1) +
                                                  " and a NUL");
                }
                std::memset(at, 0, g.size);
                std::memcpy(at, value.data(), value.size());
                return {};
            case elf_global::kind::array:
                if (!index) {
                    return make_error(EINVAL, what + ": set its elements by index, " +
                                                  std::string(name) + "[0]=VALUE");
                }
                if (*index >= g.count) {
                    return make_error(ERANGE, what + ": index " + std::to_string(*index) +
                                                  " is past its " + std::to_string(g.count) +
                                                  " elements");
                }
                return parse_integer(value, g.elem_size, g.is_signed, false,
                                     at + *index * g.elem_size, what);
            case elf_global::kind::other:
                break;
            }
            return make_error(EINVAL, what + ": only integers, bools, enums, char arrays and "
                                             "elements of integer arrays can be set by name");
        }
    }
    return make_error(ENOENT, "--set " + std::string(name) + ": " + path +
                                  " has no global variable of that name" +
                                  (known.empty() ? " (it has none)" : " (it has: " + known + ")"));
}

result<void> set_global(elf_object &obj, std::string_view assignment) {
    std::vector<global_area> areas;
    for (elf_map &m : obj.maps) {
        areas.push_back({m.name, m.globals, m.initial_value});
    }
    return set_global(areas, obj.path, assignment);
}

std::vector<elf_global> globals_of_btf(const btf *b, const std::string &section,
                                       uint32_t section_size) {
    return detail::read_globals(b, section, section_size);
}

} // namespace bpftime::loader
