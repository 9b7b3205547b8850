// SPDX-License-Identifier: MIT
// Opening eBPF ELF objects: libbpf gives the object model (maps, programs, program types),
// the loader's own ELF reading gives what libbpf applies only when it loads into a kernel.
#include "loader.hpp"

#include <bpftime/loader/elf.hpp>

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

namespace bpftime::loader {
namespace {

using detail::elf_image;

// Closes a file descriptor on every return path.
struct file_descriptor {
    int fd;
    explicit file_descriptor(int f) : fd(f) {}
    file_descriptor(const file_descriptor &) = delete;
    file_descriptor &operator=(const file_descriptor &) = delete;
    ~file_descriptor() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

struct object_closer {
    void operator()(bpf_object *obj) const { bpf_object__close(obj); }
};
using object_ptr = std::unique_ptr<bpf_object, object_closer>;

// libbpf says why it refused an object only through its print callback.
std::mutex capture_mutex;
std::string *capture_target = nullptr;

int capture_warning(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_WARN && capture_target != nullptr) {
        char line[512];
        std::vsnprintf(line, sizeof line, format, args);
        *capture_target = line;
        while (!capture_target->empty() && capture_target->back() == '\n') {
            capture_target->pop_back();
        }
    }
    return 0;
}

// libbpf names an object after its file name up to the first dot, and its global data
// maps after the object ("counter.rodata"): give it the name open_file would.
std::string object_name(const std::string &name) {
    std::string base = name.substr(name.find_last_of('/') + 1);
    return base.substr(0, base.find('.'));
}

result<object_ptr> open_with_libbpf(std::span<const uint8_t> data, const std::string &name) {
    std::string obj_name = object_name(name);
    LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = obj_name.c_str());
    detail::libbpf_capture capture;
    object_ptr obj(bpf_object__open_mem(data.data(), data.size(), &opts));
    // libbpf 1.1 passes some failures on as whatever negative number it computed (a size
    // from damaged BTF), which its error-pointer check misses: such a "pointer" lies in the
    // kernel half of the address space, where user-space objects never are.
    if (reinterpret_cast<intptr_t>(obj.get()) < 0) {
        obj.release(); // libbpf freed the object already
        errno = EINVAL;
    }
    if (obj == nullptr) {
        int code = errno;
        char text[128];
        libbpf_strerror(code, text, sizeof text); // also knows libbpf's own codes
        std::string why = capture.last_warning().empty() ? text : capture.last_warning();
        // libbpf's own codes (LIBBPF_ERRNO__*) are not errno values.
        code = code > 0 && code < __LIBBPF_ERRNO__START ? code : EINVAL;
        return make_error(code, "libbpf cannot open it: " + why);
    }
    return obj;
}

bool supported_map_type(uint32_t type) {
    switch (static_cast<maps::map_type>(type)) {
    case maps::map_type::hash:
    case maps::map_type::array:
    case maps::map_type::percpu_hash:
    case maps::map_type::percpu_array:
    case maps::map_type::cgroup_array:
    case maps::map_type::lru_hash:
    case maps::map_type::ringbuf:
    case maps::map_type::lru_percpu_hash:
    case maps::map_type::stack_trace:
    case maps::map_type::lpm_trie:
    case maps::map_type::queue:
    case maps::map_type::stack:
    case maps::map_type::bloom_filter:
    case maps::map_type::prog_array: // slots filled by program id after loading
    case maps::map_type::array_of_maps:
    case maps::map_type::hash_of_maps:
        return true;
    case maps::map_type::perf_event_array: // needs a consumer's perf events (bpftime load)
    case maps::map_type::perf_ring:        // made by the interposer only
        break;
    }
    return false;
}

// libbpf makes a global data map for each non-empty .data*, .rodata* and .bss* section,
// in section order, after the BTF-defined maps. The same walk pairs maps with sections.
std::vector<uint32_t> global_data_sections(const elf_image &image) {
    std::vector<uint32_t> out;
    for (uint32_t i = 1; i < image.sections.size(); i++) {
        const detail::elf_section &s = image.sections[i];
        auto named = [&](std::string_view prefix) {
            return s.name == prefix || s.name.starts_with(std::string(prefix) + ".");
        };
        bool data =
            s.type == SHT_PROGBITS && !s.executable() && (named(".data") || named(".rodata"));
        bool bss = s.type == SHT_NOBITS && named(".bss");
        if ((data || bss) && s.size > 0) {
            out.push_back(i);
        }
    }
    return out;
}

// The byte offset of the last member (`values`) of the BTF struct of .maps variable name, and
// the variable's offset in .maps; nothing when BTF does not describe it.
std::optional<std::pair<uint32_t, uint32_t>> values_member(const btf *b, const std::string &name) {
    if (b == nullptr) {
        return std::nullopt;
    }
    int sec_id = btf__find_by_name_kind(b, ".maps", BTF_KIND_DATASEC);
    const btf_type *sec = sec_id > 0 ? btf__type_by_id(b, static_cast<uint32_t>(sec_id)) : nullptr;
    if (sec == nullptr) {
        return std::nullopt;
    }
    const btf_var_secinfo *vars = btf_var_secinfos(sec);
    for (uint16_t i = 0; i < btf_vlen(sec); i++) {
        const btf_type *var = btf__type_by_id(b, vars[i].type);
        const char *var_name = var ? btf__name_by_offset(b, var->name_off) : nullptr;
        if (var == nullptr || !btf_is_var(var) || var_name == nullptr || name != var_name) {
            continue;
        }
        const btf_type *def = btf__type_by_id(b, var->type);
        while (def != nullptr && (btf_is_mod(def) || btf_is_typedef(def))) {
            def = btf__type_by_id(b, def->type);
        }
        if (def == nullptr || !btf_is_struct(def) || btf_vlen(def) == 0) {
            return std::nullopt;
        }
        uint32_t bits = btf_member_bit_offset(def, static_cast<uint32_t>(btf_vlen(def) - 1));
        return std::pair{vars[i].offset, bits / 8};
    }
    return std::nullopt;
}

// The initial inner maps of array_of_maps and hash_of_maps: .maps relocations inside a
// definition's `values` array, each naming another map of .maps (as libbpf's init_slots).
result<void> collect_inner_maps(bpf_object *obj, const elf_image &image, elf_object &out,
                                const detail::map_index &index) {
    if (index.maps_section == 0) {
        return {};
    }
    const detail::elf_section &sec = image.sections[index.maps_section];
    for (const detail::elf_reloc &r : sec.relocs) {
        const detail::elf_symbol &target = image.symbols[r.symbol];
        // The definition holding the relocated pointer.
        const detail::elf_symbol *holder = nullptr;
        for (const detail::elf_symbol &s : image.symbols) {
            if (s.section == index.maps_section && s.type == STT_OBJECT && s.value <= r.offset &&
                r.offset < s.value + s.size) {
                holder = &s;
            }
        }
        auto outer = holder ? index.by_name.find(holder->name) : index.by_name.end();
        if (outer == index.by_name.end()) {
            return make_error(EINVAL, ".maps relocation at offset " + std::to_string(r.offset) +
                                          " lies in no map definition");
        }
        elf_map &m = out.maps[outer->second];
        if (!maps::is_map_in_map(m.spec.type)) {
            return make_error(EINVAL, "map '" + m.name + "' is a " +
                                          maps::map_type_name(m.spec.type) +
                                          ": only array_of_maps and hash_of_maps take maps in "
                                          "their initialiser");
        }
        if (m.spec.type == maps::map_type::hash_of_maps && m.spec.key_size != 4) {
            return make_error(EINVAL, "map '" + m.name +
                                          "': a hash_of_maps with an initialiser needs 4-byte "
                                          "keys (the slots are its keys), as libbpf requires");
        }
        auto inner = target.section == index.maps_section ? index.by_name.find(target.name)
                                                          : index.by_name.end();
        if (inner == index.by_name.end()) {
            return make_error(EINVAL, "map '" + m.name + "': its initialiser names '" +
                                          target.name + "', which is no map of .maps");
        }
        auto values = values_member(bpf_object__btf(obj), m.name);
        if (!values || r.offset < uint64_t{values->first} + values->second ||
            (r.offset - values->first - values->second) % sizeof(uint64_t) != 0) {
            return make_error(EINVAL, "map '" + m.name +
                                          "': a relocation in its definition is not an element "
                                          "of its values array");
        }
        uint64_t slot = (r.offset - values->first - values->second) / sizeof(uint64_t);
        if (slot >= m.spec.max_entries) {
            return make_error(EINVAL, "map '" + m.name + "': its initialiser sets slot " +
                                          std::to_string(slot) + ", past max_entries " +
                                          std::to_string(m.spec.max_entries));
        }
        m.inner_maps.emplace_back(static_cast<uint32_t>(slot), inner->second);
    }
    return {};
}

result<void> collect_maps(bpf_object *obj, const elf_image &image, elf_object &out,
                          detail::map_index &index) {
    std::vector<uint32_t> data_sections = global_data_sections(image);
    size_t next_data = 0;
    index.maps_section = image.find_section(".maps");
    bpf_map *map = nullptr;
    bpf_object__for_each_map(map, obj) {
        elf_map m;
        m.name = bpf_map__name(map);
        uint32_t type = bpf_map__type(map);
        if (!supported_map_type(type)) {
            const char *type_name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
            return make_error(ENOTSUP,
                              "map '" + m.name + "' has type " + std::to_string(type) + " (" +
                                  (type_name ? type_name : "unknown") +
                                  "), which bpftime does not support (supported: hash, array, "
                                  "percpu_hash, percpu_array, cgroup_array, lru_hash, ringbuf, "
                                  "lru_percpu_hash, stack_trace, lpm_trie, queue, stack, "
                                  "bloom_filter, prog_array, array_of_maps, hash_of_maps)");
        }
        m.spec = {static_cast<maps::map_type>(type),
                  bpf_map__key_size(map),
                  bpf_map__value_size(map),
                  bpf_map__max_entries(map),
                  bpf_map__map_flags(map),
                  bpf_map__map_extra(map),
                  {}};
        if (auto lock = spin_lock_offset(bpf_object__btf(obj), bpf_map__btf_value_type_id(map));
            !lock) {
            return make_error(EINVAL, "map '" + m.name + "': " + lock.err().message);
        } else {
            m.spec.spin_lock_off = *lock;
        }
        if (maps::is_map_in_map(m.spec.type)) {
            // libbpf reads the template from the `__array(values, struct ...)` member.
            bpf_map *inner = bpf_map__inner_map(map);
            if (inner == nullptr) {
                return make_error(EINVAL, "map '" + m.name + "' is an " +
                                              maps::map_type_name(m.spec.type) +
                                              " without an inner map: declare its values as "
                                              "__array(values, struct { ... })");
            }
            auto tmpl = maps::inner_template_of({static_cast<maps::map_type>(bpf_map__type(inner)),
                                                 bpf_map__key_size(inner),
                                                 bpf_map__value_size(inner),
                                                 bpf_map__max_entries(inner),
                                                 bpf_map__map_flags(inner),
                                                 0,
                                                 {}});
            if (!tmpl) {
                return make_error(EINVAL, "map '" + m.name + "': " + tmpl.err().message);
            }
            m.spec.inner = *tmpl;
        }
        uint32_t map_index = static_cast<uint32_t>(out.maps.size());
        if (!bpf_map__is_internal(map)) {
            index.by_name.emplace(m.name, map_index);
        } else if (m.name.ends_with(".kconfig")) {
            // libbpf's map of the __kconfig externs: read-only data the loader fills.
            auto values = detail::resolve_kconfig(bpf_object__btf(obj), image, m.spec.value_size);
            if (!values) {
                return std::move(values).err();
            }
            m.global_data = true;
            m.read_only = true;
            m.spec.flags = 0;
            m.initial_value = std::move(values->bytes);
            index.kconfig_map = map_index;
            index.kconfig = std::move(values->offsets);
        } else {
            if (next_data == data_sections.size()) {
                return make_error(EINVAL, "global data map '" + m.name + "' has no section");
            }
            uint32_t section = data_sections[next_data++];
            size_t size = 0;
            const void *initial = bpf_map__initial_value(map, &size);
            if (image.sections[section].size != m.spec.value_size || initial == nullptr ||
                size != m.spec.value_size) {
                return make_error(EINVAL, "global data map '" + m.name +
                                              "' does not match section '" +
                                              image.sections[section].name + "'");
            }
            m.global_data = true;
            m.read_only = (m.spec.flags & BPF_F_RDONLY_PROG) != 0;
            // The other flags (BPF_F_MMAPABLE, ...) are how libbpf asks a kernel for the
            // map; read_only says what bpftime needs to know.
            m.spec.flags = 0;
            const auto *bytes = static_cast<const uint8_t *>(initial);
            m.initial_value.assign(bytes, bytes + size);
            m.globals = detail::read_globals(bpf_object__btf(obj), image.sections[section].name,
                                             m.spec.value_size);
            index.by_section.emplace(section, map_index);
        }
        out.maps.push_back(std::move(m));
    }
    return collect_inner_maps(obj, image, out, index);
}

result<void> collect_programs(bpf_object *obj, const elf_image &image,
                              const detail::core_relos &core, const detail::map_index &index,
                              elf_object &out) {
    bpf_program *prog = nullptr;
    bpf_object__for_each_program(prog, obj) {
        elf_program p;
        p.name = bpf_program__name(prog);
        p.section = bpf_program__section_name(prog);
        p.type = bpf_program__type(prog);
        const detail::elf_function *entry = nullptr;
        for (const detail::elf_function &fn : image.functions) {
            if (fn.name == p.name && image.sections[fn.section].name == p.section) {
                entry = &fn;
            }
        }
        // libbpf found the program by the same symbol: both must see the same code.
        if (entry == nullptr || entry->count != bpf_program__insn_cnt(prog)) {
            return make_error(EINVAL, "program '" + p.name + "' in section '" + p.section +
                                          "' has no matching function symbol");
        }
        auto insns = detail::relocate_program(image, core, index, *entry);
        if (!insns) {
            return std::move(insns).err();
        }
        p.insns = std::move(*insns);
        out.programs.push_back(std::move(p));
    }
    return {};
}

result<elf_object> open_checked(std::span<const uint8_t> data, const std::string &name) {
    auto image = detail::read_elf(data);
    if (!image) {
        return std::move(image).err();
    }
    // libbpf trusts parts of .BTF it should not: check them before it reads them.
    auto core = detail::check_btf(*image);
    if (!core) {
        return std::move(core).err();
    }
    if (auto r = detail::check_externs(*image, detail::kconfig_externs(*image)); !r) {
        return std::move(r).err();
    }
    // libbpf allocates each global data map at its section's size, and .bss has no bytes
    // in the file to bound it: refuse what Linux refuses (values above KMALLOC_MAX_SIZE).
    constexpr uint64_t max_global_data = 4 << 20;
    for (uint32_t section : global_data_sections(*image)) {
        if (image->sections[section].size > max_global_data) {
            return make_error(E2BIG, "global data section '" + image->sections[section].name +
                                         "' has " + std::to_string(image->sections[section].size) +
                                         " bytes, more than the 4 MiB Linux allows");
        }
    }
    auto obj = open_with_libbpf(data, name);
    if (!obj) {
        return std::move(obj).err();
    }
    elf_object out;
    out.path = name;
    detail::map_index index;
    if (auto r = collect_maps(obj->get(), *image, out, index); !r) {
        return std::move(r).err();
    }
    if (auto r = collect_programs(obj->get(), *image, *core, index, out); !r) {
        return std::move(r).err();
    }
    return out;
}

} // namespace

detail::libbpf_capture::libbpf_capture()
    : lock_(capture_mutex), previous_(libbpf_set_print(capture_warning)) {
    capture_target = &warning_;
}

detail::libbpf_capture::~libbpf_capture() {
    capture_target = nullptr;
    libbpf_set_print(previous_);
}

bool looks_like_elf(std::span<const uint8_t> data) {
    return data.size() >= SELFMAG && std::memcmp(data.data(), ELFMAG, SELFMAG) == 0;
}

result<elf_object> open_elf_memory(std::span<const uint8_t> data, const std::string &name) {
    if (!looks_like_elf(data)) {
        return make_error(ENOEXEC, name + ": not an ELF file");
    }
    auto obj = open_checked(data, name);
    if (!obj) {
        return make_error(obj.err().code, name + ": " + obj.err().message);
    }
    return obj;
}

result<elf_object> open_elf(const std::string &path) {
    auto fail = [&](const char *what) {
        int code = errno;
        return make_error(code, path + ": " + what + ": " + std::strerror(code));
    };
    file_descriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (file.fd < 0 || ::fstat(file.fd, &st) != 0) {
        return fail("cannot open");
    }
    if (!S_ISREG(st.st_mode)) {
        return make_error(EINVAL, path + ": not a regular file");
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    for (size_t done = 0; done < bytes.size();) {
        ssize_t n = ::read(file.fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n == 0 ? make_error(EIO, path + ": the file shrank while it was read")
                          : fail("cannot read");
        }
        done += static_cast<size_t>(n);
    }
    return open_elf_memory(bytes, path);
}

} // namespace bpftime::loader
