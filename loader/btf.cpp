// SPDX-License-Identifier: MIT
// BTF checks before libbpf sees an object, and the CO-RE records of .BTF.ext.
//
// libbpf 1.1's btf__new() checks the layout of .BTF (header, type sizes, string table) but
// not what types refer to: bpf_object__open() then follows member and variable type ids
// unchecked (a bad id is a NULL dereference) and modifier chains without a bound (a cycle
// hangs). Newer libbpf checks both (btf_sanity_check); this is the same check.
#include "loader.hpp"

#include <bpf/btf.h>

#include <cstring>
#include <memory>

namespace bpftime::loader::detail {
namespace {

struct btf_deleter {
    void operator()(btf *b) const { btf__free(b); }
};

error corrupt_btf(uint32_t id, const std::string &why) {
    return make_error(ENOEXEC, "corrupt .BTF section: type [" + std::to_string(id) + "] " + why);
}

bool is_chain(const btf_type *t) {
    return btf_is_mod(t) || btf_is_typedef(t) || btf_is_ptr(t);
}

result<void> check_type(const btf *b, uint32_t id) {
    const uint32_t count = btf__type_cnt(b);
    const btf_type *t = btf__type_by_id(b, id);
    auto name_ok = [&](uint32_t off) { return btf__name_by_offset(b, off) != nullptr; };
    auto ref_ok = [&](uint32_t ref) { return ref < count; };
    bool ok = name_ok(t->name_off);
    switch (btf_kind(t)) {
    case BTF_KIND_INT:
    case BTF_KIND_FWD:
    case BTF_KIND_FLOAT:
        break;
    case BTF_KIND_PTR:
    case BTF_KIND_TYPEDEF:
    case BTF_KIND_VOLATILE:
    case BTF_KIND_CONST:
    case BTF_KIND_RESTRICT:
    case BTF_KIND_VAR:
    case BTF_KIND_DECL_TAG:
    case BTF_KIND_TYPE_TAG:
        ok = ok && ref_ok(t->type);
        break;
    case BTF_KIND_ARRAY:
        ok = ok && ref_ok(btf_array(t)->type) && ref_ok(btf_array(t)->index_type);
        break;
    case BTF_KIND_STRUCT:
    case BTF_KIND_UNION:
        for (uint16_t i = 0; ok && i < btf_vlen(t); i++) {
            ok = name_ok(btf_members(t)[i].name_off) && ref_ok(btf_members(t)[i].type);
        }
        break;
    case BTF_KIND_ENUM:
        for (uint16_t i = 0; ok && i < btf_vlen(t); i++) {
            ok = name_ok(btf_enum(t)[i].name_off);
        }
        break;
    case BTF_KIND_ENUM64:
        for (uint16_t i = 0; ok && i < btf_vlen(t); i++) {
            ok = name_ok(btf_enum64(t)[i].name_off);
        }
        break;
    case BTF_KIND_FUNC:
        ok = ok && ref_ok(t->type) && btf_is_func_proto(btf__type_by_id(b, t->type));
        break;
    case BTF_KIND_FUNC_PROTO:
        ok = ok && ref_ok(t->type);
        for (uint16_t i = 0; ok && i < btf_vlen(t); i++) {
            ok = name_ok(btf_params(t)[i].name_off) && ref_ok(btf_params(t)[i].type);
        }
        break;
    case BTF_KIND_DATASEC:
        for (uint16_t i = 0; ok && i < btf_vlen(t); i++) {
            ok = ref_ok(btf_var_secinfos(t)[i].type);
        }
        break;
    default:
        return corrupt_btf(id, "has unknown kind " + std::to_string(btf_kind(t)));
    }
    if (!ok) {
        return corrupt_btf(id, "refers to a type or a name that does not exist");
    }
    return {};
}

// Modifier, typedef and pointer chains must end: state 1 marks the chain being walked.
result<void> check_chains(const btf *b) {
    const uint32_t count = btf__type_cnt(b);
    std::vector<uint8_t> state(count);
    std::vector<uint32_t> chain;
    for (uint32_t id = 1; id < count; id++) {
        uint32_t cur = id;
        chain.clear();
        while (cur != 0 && state[cur] == 0 && is_chain(btf__type_by_id(b, cur))) {
            state[cur] = 1;
            chain.push_back(cur);
            cur = btf__type_by_id(b, cur)->type;
        }
        if (cur != 0 && state[cur] == 1) {
            return corrupt_btf(id, "starts a cycle of modifiers, typedefs or pointers");
        }
        for (uint32_t c : chain) {
            state[c] = 2;
        }
    }
    return {};
}

template <class T>
bool read_at(std::span<const uint8_t> bytes, uint64_t off, T &out) {
    if (off > bytes.size() || bytes.size() - off < sizeof(T)) {
        return false;
    }
    std::memcpy(&out, bytes.data() + off, sizeof(T));
    return true;
}

// .BTF.ext: a header, then (at hdr_len + core_relo_off) a record size followed by blocks of
// {section name offset, record count, records}; a record is struct bpf_core_relo
// {insn_off, type_id, access_str_off, kind}.
result<core_relos> read_core_relos(const elf_image &image, const btf *b) {
    core_relos out;
    uint32_t index = image.find_section(".BTF.ext");
    if (index == 0) {
        return out;
    }
    std::span<const uint8_t> bytes = image.sections[index].bytes;
    auto corrupt = [] { return make_error(ENOEXEC, "corrupt .BTF.ext section"); };
    uint32_t hdr_len = 0;
    uint32_t core_off = 0;
    uint32_t core_len = 0;
    if (!read_at(bytes, 4, hdr_len)) {
        return corrupt();
    }
    constexpr uint32_t core_fields = 24; // offset of core_relo_off in the header
    if (hdr_len < core_fields + 8 || !read_at(bytes, core_fields, core_off) ||
        !read_at(bytes, core_fields + 4, core_len) || core_len == 0) {
        return out; // an older header without CO-RE records, or none
    }
    uint64_t pos = uint64_t{hdr_len} + core_off;
    uint64_t end = pos + core_len;
    uint32_t record_size = 0;
    if (end > bytes.size() || !read_at(bytes, pos, record_size) || record_size < 16) {
        return corrupt();
    }
    for (pos += 4; pos < end;) {
        uint32_t name_off = 0;
        uint32_t records = 0;
        if (!read_at(bytes, pos, name_off) || !read_at(bytes, pos + 4, records)) {
            return corrupt();
        }
        pos += 8;
        const char *name = btf__name_by_offset(b, name_off);
        if (name == nullptr || uint64_t{records} * record_size > end - pos) {
            return corrupt();
        }
        uint32_t section = image.find_section(name);
        for (uint32_t r = 0; r < records; r++, pos += record_size) {
            uint32_t insn_off = 0;
            uint32_t kind = 0;
            if (!read_at(bytes, pos, insn_off) || !read_at(bytes, pos + 12, kind) ||
                insn_off % insn_size != 0) {
                return corrupt();
            }
            if (section != 0) {
                out[{section, insn_off / insn_size}] = kind;
            }
        }
    }
    return out;
}

} // namespace

result<core_relos> check_btf(const elf_image &image) {
    uint32_t index = image.find_section(".BTF");
    if (index == 0) {
        return core_relos{};
    }
    const std::vector<uint8_t> &bytes = image.sections[index].bytes;
    libbpf_capture capture;
    std::unique_ptr<btf, btf_deleter> b(
        btf__new(bytes.data(), static_cast<uint32_t>(bytes.size())));
    if (b == nullptr) {
        return make_error(ENOEXEC, "corrupt .BTF section: " + (capture.last_warning().empty()
                                                                   ? std::strerror(errno)
                                                                   : capture.last_warning()));
    }
    for (uint32_t id = 1; id < btf__type_cnt(b.get()); id++) {
        if (auto r = check_type(b.get(), id); !r) {
            return std::move(r).err();
        }
    }
    if (auto r = check_chains(b.get()); !r) {
        return std::move(r).err();
    }
    return read_core_relos(image, b.get());
}

} // namespace bpftime::loader::detail

namespace bpftime::loader {
namespace {

// Adds the offsets (in bits from base_bits) of every struct bpf_spin_lock in type id to out;
// depth bounds a damaged, self-referring BTF.
void find_spin_locks(const btf *b, uint32_t id, uint64_t base_bits, int depth,
                     std::vector<uint64_t> &out) {
    const btf_type *t = btf__type_by_id(b, id);
    while (t != nullptr && (btf_is_mod(t) || btf_is_typedef(t))) {
        t = btf__type_by_id(b, t->type);
    }
    if (t == nullptr || depth > 16 || !(btf_is_struct(t) || btf_is_union(t))) {
        return;
    }
    const char *name = btf__name_by_offset(b, t->name_off);
    if (btf_is_struct(t) && name != nullptr && std::strcmp(name, "bpf_spin_lock") == 0) {
        out.push_back(base_bits);
        return;
    }
    const btf_member *m = btf_members(t);
    for (uint16_t i = 0; i < btf_vlen(t); i++) {
        find_spin_locks(b, m[i].type, base_bits + btf_member_bit_offset(t, i), depth + 1, out);
    }
}

} // namespace

result<int32_t> spin_lock_offset(const struct btf *b, uint32_t value_type_id) {
    if (b == nullptr || value_type_id == 0) {
        return -1;
    }
    std::vector<uint64_t> found;
    find_spin_locks(b, value_type_id, 0, 0, found);
    if (found.empty()) {
        return -1;
    }
    if (found.size() > 1) {
        return make_error(EINVAL, "the value type has " + std::to_string(found.size()) +
                                      " struct bpf_spin_lock fields; a map value holds one at "
                                      "most, as in Linux");
    }
    if (found[0] % 8 != 0) {
        return make_error(EINVAL, "the value's struct bpf_spin_lock is not on a byte boundary");
    }
    return static_cast<int32_t>(found[0] / 8);
}

} // namespace bpftime::loader
