// SPDX-License-Identifier: MIT
// kernel_event_provider::load_file: ELF objects loaded by libbpf itself (bpf_object__open_file,
// bpf_object__load), so the kernel provider takes whatever libbpf and the kernel take (CO-RE,
// __kconfig, BTF-typed tracing programs, every map type); what it made is then recorded in the
// catalogue like the objects create_map and create_program make.
#include <bpftime/loader/elf.hpp>
#include <bpftime/provider/kernel_provider.hpp>

#include "kernel_objects.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

namespace bpftime {

namespace {

// libbpf's warnings while an object is opened and loaded, kept for the error message rather
// than printed (libbpf prints through one process-wide function).
std::mutex capture_mu;
std::string *capture_target = nullptr;

int capture_print(enum libbpf_print_level level, const char *fmt, va_list ap) {
    if (level == LIBBPF_DEBUG || capture_target == nullptr) {
        return 0;
    }
    // The verifier's log comes as one argument of any length.
    va_list again;
    va_copy(again, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, again);
    va_end(again);
    if (n > 0) {
        std::string buf(static_cast<size_t>(n) + 1, '\0');
        std::vsnprintf(buf.data(), buf.size(), fmt, ap);
        buf.pop_back();
        capture_target->append(buf);
    }
    return 0;
}

class libbpf_capture {
public:
    libbpf_capture() : lock_(capture_mu), previous_(libbpf_set_print(capture_print)) {
        capture_target = &text_;
    }
    ~libbpf_capture() {
        capture_target = nullptr;
        libbpf_set_print(previous_);
    }
    libbpf_capture(const libbpf_capture &) = delete;
    libbpf_capture &operator=(const libbpf_capture &) = delete;

    // The last lines libbpf wrote.
    std::string tail(size_t max_lines) const { return last_lines(text_, max_lines); }

    // A program the kernel refused: its name and the end of the verifier's log (where it gave
    // up and why), as libbpf wrote them; no name when libbpf reported no such refusal.
    std::pair<std::string, std::string> refused_program() const {
        static const std::string failed = "': BPF program load failed";
        static const std::string begin = "-- BEGIN PROG LOAD LOG --",
                                 end = "-- END PROG LOAD LOG --";
        auto at = text_.find(failed);
        auto open = at == std::string::npos ? at : text_.rfind("prog '", at);
        if (open == std::string::npos) {
            return {};
        }
        std::string name = text_.substr(open + 6, at - open - 6);
        std::string log;
        if (auto b = text_.find(begin, at); b != std::string::npos) {
            auto e = text_.find(end, b);
            log = text_.substr(b + begin.size(), e == std::string::npos ? e : e - b - begin.size());
        }
        return {name, last_lines(log, 20)};
    }

private:
    // The log's last lines, each after a line break.
    static std::string last_lines(const std::string &text, size_t max_lines) {
        std::string tail = kernel::log_tail(text.c_str(), max_lines);
        return tail.empty() ? tail : "\n" + tail;
    }

    std::lock_guard<std::mutex> lock_;
    libbpf_print_fn_t previous_;
    std::string text_;
};

struct object_closer {
    void operator()(bpf_object *o) const { bpf_object__close(o); }
};

// The section of a global data map: libbpf names it OBJECT.rodata, OBJECT.data, OBJECT.bss,
// .kconfig, or after its own section (.data.NAME, .rodata.NAME).
std::string data_section(const bpf_map *m) {
    std::string name = bpf_map__name(m);
    for (const char *sec : {".kconfig", ".rodata", ".data", ".bss"}) {
        if (auto at = name.find(sec); at != std::string::npos) {
            return name.substr(at);
        }
    }
    return {};
}

// The kernel's ids of the maps a loaded program uses.
std::vector<uint32_t> program_map_ids(int fd) {
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || info.nr_map_ids == 0) {
        return {};
    }
    std::vector<uint32_t> ids(info.nr_map_ids);
    bpf_prog_info again{};
    again.nr_map_ids = static_cast<uint32_t>(ids.size());
    again.map_ids = reinterpret_cast<uint64_t>(ids.data());
    len = sizeof again;
    if (bpf_obj_get_info_by_fd(fd, &again, &len) != 0) {
        return {};
    }
    ids.resize(std::min<size_t>(ids.size(), again.nr_map_ids));
    return ids;
}

} // namespace

result<loaded_object> kernel_event_provider::load_file(const std::string &path,
                                                       const std::vector<std::string> &sets) {
    std::unique_ptr<bpf_object, object_closer> obj;
    {
        libbpf_capture log;
        LIBBPF_OPTS(bpf_object_open_opts, opts);
        bpf_object *o = bpf_object__open_file(path.c_str(), &opts);
        if (o == nullptr) {
            int e = errno;
            return make_error(e,
                              path + ": libbpf cannot open it: " + std::strerror(e) + log.tail(10));
        }
        obj.reset(o);
    }
    // Global variables take their values before the load, as a skeleton's do: each section's
    // bytes are copied, set, and given back with bpf_map__set_initial_value.
    struct section_values {
        bpf_map *map;
        std::vector<loader::elf_global> globals;
        std::vector<uint8_t> bytes;
    };
    std::deque<section_values> sections;
    std::vector<loader::global_area> areas;
    bpf_map *m = nullptr;
    bpf_object__for_each_map(m, obj.get()) {
        std::string sec = data_section(m);
        if (!bpf_map__is_internal(m) || sec.empty() || sec == ".kconfig") {
            continue;
        }
        size_t size = 0;
        const auto *bytes = static_cast<const uint8_t *>(bpf_map__initial_value(m, &size));
        if (bytes == nullptr) {
            continue;
        }
        sections.push_back(
            {m,
             loader::globals_of_btf(bpf_object__btf(obj.get()), sec, static_cast<uint32_t>(size)),
             std::vector<uint8_t>(bytes, bytes + size)});
        section_values &v = sections.back();
        areas.push_back(loader::global_area{bpf_map__name(m), v.globals, v.bytes});
    }
    for (const std::string &set : sets) {
        if (auto r = loader::set_global(areas, path, set); !r) {
            return r.err();
        }
    }
    bpf_program *prog = nullptr;
    bpf_object__for_each_program(prog, obj.get()) {
        const auto *insns = reinterpret_cast<const vm::ebpf_inst *>(bpf_program__insns(prog));
        auto ok = kernel::check_override_return(
            path + ": program " + bpf_program__name(prog), bpf_program__section_name(prog),
            std::span<const vm::ebpf_inst>(insns, bpf_program__insn_cnt(prog)));
        if (!ok) {
            return ok.err();
        }
    }
    for (section_values &v : sections) {
        if (!sets.empty() && bpf_map__set_initial_value(v.map, v.bytes.data(), v.bytes.size())) {
            int e = errno;
            return make_error(e, path + ": map " + bpf_map__name(v.map) +
                                     ": cannot set its initial value: " + std::strerror(e));
        }
    }
    // An outer map's inner template, read now: libbpf drops it once it made the outer map.
    std::map<const bpf_map *, maps::inner_map_template> inner_templates;
    bpf_object__for_each_map(m, obj.get()) {
        if (bpf_map *inner = bpf_map__inner_map(m)) {
            inner_templates[m] = maps::inner_map_template{
                static_cast<maps::map_type>(bpf_map__type(inner)), bpf_map__key_size(inner),
                bpf_map__value_size(inner), bpf_map__max_entries(inner), bpf_map__map_flags(inner)};
        }
    }
    {
        libbpf_capture log;
        if (int rc = bpf_object__load(obj.get()); rc != 0) {
            int e = rc < 0 ? -rc : EINVAL;
            std::string why = std::strerror(e);
            if (e == EPERM) {
                // Either no privilege at all, or a program kind this kernel forbids (some refuse
                // fentry/fexit trampolines even to root).
                why += kernel::probe_bpf() ? " (the kernel takes other eBPF programs from this "
                                             "process, not this one)"
                                           : " (needs root with CAP_BPF)";
            }
            if (auto [name, tail] = log.refused_program(); !name.empty()) {
                return make_error(e, path + ": program " + name +
                                         ": the kernel verifier refused it (" + why + ")" +
                                         (tail.empty() ? "" : ":" + tail));
            }
            return make_error(e, path + ": the kernel refused it (" + why + ")" + log.tail(20));
        }
    }
    loaded_object out;
    std::vector<uint32_t> made; // to destroy again on failure
    auto record_all = [&]() -> result<void> {
        auto lock = exclusive_lock();
        std::map<uint32_t, uint32_t> by_kernel_id; // the kernel's map id -> ours
        bpf_map *map = nullptr;
        bpf_object__for_each_map(map, obj.get()) {
            int fd = bpf_map__fd(map);
            if (fd < 0) {
                continue; // not created (autocreate off)
            }
            std::string sec = bpf_map__is_internal(map) ? data_section(map) : "";
            map_create_spec spec;
            spec.name = bpf_map__name(map);
            spec.spec.type = static_cast<maps::map_type>(bpf_map__type(map));
            spec.spec.key_size = bpf_map__key_size(map);
            spec.spec.value_size = bpf_map__value_size(map);
            spec.spec.max_entries = bpf_map__max_entries(map);
            spec.spec.flags = bpf_map__map_flags(map);
            spec.spec.map_extra = bpf_map__map_extra(map);
            if (auto it = inner_templates.find(map); it != inner_templates.end()) {
                spec.spec.inner = it->second;
            }
            // libbpf freezes these after writing their values.
            spec.read_only = sec.starts_with(".rodata") || sec == ".kconfig";
            auto id = adopt_map(spec, fd);
            if (!id) {
                return make_error(id.err().code,
                                  path + ": map " + spec.name + ": " + id.err().message);
            }
            made.push_back(*id);
            by_kernel_id[kernel::object_id(fd)] = *id;
            out.maps.emplace_back(*id, spec.name);
        }
        bpf_program *p = nullptr;
        bpf_object__for_each_program(p, obj.get()) {
            int fd = bpf_program__fd(p);
            if (fd < 0) {
                continue; // not loaded (autoload off)
            }
            program_spec spec;
            spec.name = bpf_program__name(p);
            spec.type = bpf_program__type(p);
            spec.section = bpf_program__section_name(p);
            for (uint32_t kid : program_map_ids(fd)) {
                if (auto it = by_kernel_id.find(kid); it != by_kernel_id.end()) {
                    spec.map_ids.push_back(it->second);
                }
            }
            if (spec.map_ids.size() > store::max_program_maps) {
                return make_error(E2BIG, path + ": program " + spec.name + " uses " +
                                             std::to_string(spec.map_ids.size()) +
                                             " maps; bpftime records at most " +
                                             std::to_string(store::max_program_maps));
            }
            auto id = adopt_program(spec, fd);
            if (!id) {
                return make_error(id.err().code,
                                  path + ": program " + spec.name + ": " + id.err().message);
            }
            made.push_back(*id);
            out.programs.emplace_back(*id, spec.name);
            out.sections.push_back(spec.section);
        }
        return {};
    };
    if (auto r = record_all(); !r) {
        // Programs were recorded after the maps they use: undo newest first.
        for (auto it = made.rbegin(); it != made.rend(); ++it) {
            (void)destroy_object(*it);
        }
        return r.err();
    }
    return out;
}

} // namespace bpftime
