// SPDX-License-Identifier: MIT
// bpftime load | list | map | attach | enable | disable | link update | destroy | reset: the
// controller.
#include "cli.hpp"

#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/provider/kernel_provider.hpp>
#include <bpftime/provider/usdt_attach.hpp>
#include <bpftime/vm/conformance.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

namespace bpftime::cli {

using json = nlohmann::ordered_json;

int report(const error &e) {
    std::fprintf(stderr, "bpftime: %s\n", e.message.c_str());
    return 1;
}

result<std::string> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        return make_error(ENOENT, path + ": " + std::strerror(errno));
    }
    std::stringstream buf;
    buf << f.rdbuf();
    return buf.str();
}

result<std::shared_ptr<store::segment>> open_store(const global_options &g, bool create) {
    auto opts = store_options(g, create);
    if (!opts) {
        return opts.err();
    }
    if (const char *size = std::getenv("BPFTIME_SHM_SIZE"); size != nullptr && *size != '\0') {
        // Bytes, or with a K, M or G suffix (powers of 1024).
        errno = 0;
        char *end = nullptr;
        uint64_t bytes = std::strtoull(size, &end, 0);
        unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
        end += shift != 0 ? 1 : 0;
        if (errno != 0 || end == size || *end != '\0' || size[0] == '-' || bytes == 0 ||
            bytes > (UINT64_MAX >> shift)) {
            return make_error(EINVAL, std::string("BPFTIME_SHM_SIZE '") + size +
                                          "' is not a segment size: bytes, or a number with K, "
                                          "M or G (64M is the default)");
        }
        opts->size = bytes << shift;
    }
    auto seg = store::segment::open(store::segment_name(g.shm), *opts);
    if (!seg && seg.err().code == EINVAL &&
        seg.err().message.find("cannot reserve") != std::string::npos) {
        return with_hint(seg.err(), "BPFTIME_SHM_SIZE sets the size of a new segment");
    }
    if (!seg && seg.err().code == ENOENT) {
        return with_hint(seg.err(), "bpftime load creates one; --shm or BPFTIME_SHM picks another "
                                    "name");
    }
    if (!seg) {
        return with_access_hint(g, seg.err());
    }
    note_group_mismatch(g, *opts);
    return seg;
}

error with_hint(const error &e, const std::string &hint) {
    return make_error(e.code, e.message + " (" + hint + ")");
}

bool global_options::kernel() const {
    if (!provider.empty()) {
        return provider == "kernel";
    }
    const char *env = std::getenv("BPFTIME_PROVIDER");
    return env != nullptr && std::string_view(env) == "kernel";
}

result<std::unique_ptr<base_event_provider>> open_provider(const global_options &g, bool create) {
    if (const char *env = std::getenv("BPFTIME_PROVIDER");
        g.provider.empty() && env != nullptr && *env != '\0' && std::string_view(env) != "user" &&
        std::string_view(env) != "kernel") {
        return make_error(EINVAL, std::string("BPFTIME_PROVIDER is '") + env +
                                      "'; it takes user or kernel");
    }
    if (g.kernel()) {
        auto p = kernel_event_provider::open(store::segment_name(g.shm), create);
        if (!p && p.err().code == EPROTO) {
            return with_hint(p.err(), "`bpftime reset --provider kernel` releases it");
        }
        if (!p) {
            return p.err();
        }
        return std::unique_ptr<base_event_provider>(std::move(*p));
    }
    auto seg = open_store(g, create);
    if (!seg) {
        return seg.err();
    }
    return std::unique_ptr<base_event_provider>(std::make_unique<event_provider_impl>(*seg));
}

error user_space_only(const std::string &what) {
    return make_error(EOPNOTSUPP,
                      what + " takes programs of the user-space provider; the kernel "
                             "provider's programs run in the kernel (use --provider user)");
}

std::string hex_bytes(const uint8_t *data, size_t len) {
    std::string out;
    char buf[4];
    for (size_t i = 0; i < len; i++) {
        std::snprintf(buf, sizeof buf, i == 0 ? "%02x" : " %02x", data[i]);
        out += buf;
    }
    return out;
}

result<std::vector<uint8_t>> parse_bytes(const std::string &text, size_t size) {
    auto bytes_of = [&](std::string_view hex) -> result<std::vector<uint8_t>> {
        auto b = vm::parse_hex_bytes(hex);
        if (!b) {
            return make_error(EINVAL, "'" + text + "': " + b.err().message);
        }
        if (b->size() != size) {
            return make_error(EINVAL, "'" + text + "' is " + std::to_string(b->size()) +
                                          " bytes; " + std::to_string(size) + " are needed");
        }
        return b;
    };
    if (text.rfind("hex:", 0) == 0) {
        return bytes_of(std::string_view(text).substr(4));
    }
    if (text.rfind("str:", 0) == 0) {
        // A string, zero-padded to the size (path prefixes, names).
        std::string_view str = std::string_view(text).substr(4);
        if (str.size() > size) {
            return make_error(EINVAL, "'" + std::string(str) + "' is " +
                                          std::to_string(str.size()) + " bytes; at most " +
                                          std::to_string(size) + " fit");
        }
        std::vector<uint8_t> out(size);
        std::copy(str.begin(), str.end(), out.begin());
        return out;
    }
    if (text.find(' ') != std::string::npos) {
        return bytes_of(text);
    }
    errno = 0;
    char *end = nullptr;
    bool negative = !text.empty() && text[0] == '-';
    uint64_t v = negative ? static_cast<uint64_t>(std::strtoll(text.c_str(), &end, 0))
                          : std::strtoull(text.c_str(), &end, 0);
    if (text.empty() || *end != '\0' || errno != 0) {
        return make_error(EINVAL, "'" + text +
                                      "' is neither an integer nor hex bytes (\"01 02\" or "
                                      "\"hex:0102\")");
    }
    if (size < 8 && !negative && (v >> (size * 8)) != 0) {
        return make_error(ERANGE,
                          "'" + text + "' does not fit in " + std::to_string(size) + " bytes");
    }
    std::vector<uint8_t> out(size);
    std::memcpy(out.data(), &v, std::min<size_t>(size, 8));
    return out;
}

namespace {

// An outer map's template: what every map put in must be.
std::string inner_details(const maps::map_spec &s) {
    if (!maps::is_map_in_map(s.type)) {
        return {};
    }
    const maps::inner_map_template &t = s.inner;
    char flags[24];
    std::snprintf(flags, sizeof flags, "%#x", t.flags);
    return std::string(" inner ") + maps::map_type_name(t.type) + " key " +
           std::to_string(t.key_size) + " value " + std::to_string(t.value_size) + " max_entries " +
           std::to_string(t.max_entries) +
           (t.flags != 0 ? std::string(" flags ") + flags : std::string());
}

std::string map_details(const store::map_info &m, uint64_t entries) {
    const maps::map_spec &s = m.spec;
    if (s.type == maps::map_type::ringbuf) {
        return std::string("ringbuf ") + std::to_string(s.max_entries) + " bytes";
    }
    return std::string(maps::map_type_name(s.type)) + " key " + std::to_string(s.key_size) +
           " value " + std::to_string(s.value_size) + " max_entries " +
           std::to_string(s.max_entries) + " entries " + std::to_string(entries) +
           (m.read_only ? " read-only" : "") + inner_details(s);
}

// Destroys what a failed `load --attach` made, newest first: its links and their targets, then
// the object's programs and maps. An inner map an outer map of the object holds is refused
// until that outer map is gone, so maps go in passes until no pass destroys anything more.
int roll_back_load(base_event_provider &provider, const std::string &path,
                   const loaded_object &loaded, const std::vector<auto_link> &links) {
    std::vector<uint32_t> ids;
    for (const auto_link &l : links) {
        ids.push_back(l.link);
        ids.push_back(l.target);
    }
    for (const auto &[id, name] : loaded.programs) {
        ids.push_back(id);
    }
    for (const auto &[id, name] : loaded.maps) {
        ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end(), std::greater<>());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::vector<uint32_t> left = ids;
    std::optional<error> last;
    for (size_t before = 0; !left.empty() && left.size() != before;) {
        before = left.size();
        std::erase_if(left, [&](uint32_t id) {
            auto r = provider.destroy_object(id);
            if (!r) {
                last = r.err();
            }
            return r.ok();
        });
    }
    if (!left.empty()) {
        std::string named;
        for (uint32_t id : left) {
            named += (named.empty() ? "" : ", ") + std::to_string(id);
        }
        return report(
            make_error(last->code, path + ": the load failed and objects " + named +
                                       " it made could not be destroyed: " + last->message +
                                       "; destroy them with "
                                       "`bpftime destroy ID`"));
    }
    std::fprintf(stderr,
                 "bpftime: %s: not loaded: a program did not attach, so the %zu objects "
                 "the load made were destroyed\n",
                 path.c_str(), ids.size());
    return 1;
}

int cmd_load(const global_options &g, const std::string &path, const std::vector<std::string> &sets,
             bool attach) {
    std::unique_ptr<base_event_provider> provider;
    std::optional<loaded_object> loaded;
    if (g.kernel()) {
        // libbpf loads it as it loads any tool's object; the kernel provider records the result.
        auto opened = open_provider(g, true);
        if (!opened) {
            return report(opened.err());
        }
        provider = std::move(*opened);
        auto made = static_cast<kernel_event_provider &>(*provider).load_file(path, sets);
        if (!made) {
            return report(made.err());
        }
        loaded = std::move(*made);
    } else {
        auto obj = loader::open_elf(path);
        if (!obj) {
            return report(obj.err());
        }
        // Global variables take their values before anything is created, as a skeleton's do.
        for (const std::string &set : sets) {
            if (auto r = loader::set_global(*obj, set); !r) {
                return report(r.err());
            }
        }
        auto opened = open_provider(g, true);
        if (!opened) {
            return report(opened.err());
        }
        provider = std::move(*opened);
        std::optional<progress> shown;
        shown.emplace("loading " + path, obj->maps.size() + obj->programs.size(), 1);
        auto made = load_object(*provider, *obj, [&](size_t done, size_t) { shown->step(done); });
        shown.reset(); // erases the line before the listing or the error
        if (!made) {
            return report(made.err());
        }
        loaded = std::move(*made);
    }
    // --attach: every program whose section names its target, as libbpf's auto-attach; one
    // line for each that does not attach. A program whose attach fails fails the whole load, as
    // a skeleton's attach does: what it made is taken back. One whose attach type only the
    // other provider attaches (EOPNOTSUPP: tp_btf in user space, raw tracepoints in the kernel)
    // is left unattached while the others attach, so one object serves both providers.
    json links = json::array();
    std::vector<std::string> lines;
    std::vector<auto_link> made_links;
    int status = 0;
    bool failed = false;
    for (size_t i = 0; attach && i < loaded->programs.size(); i++) {
        const auto &[id, name] = loaded->programs[i];
        const std::string &section = loaded->sections[i];
        auto made = attach_by_section(*provider, id, section);
        if (!made) {
            // A section that names nothing to attach to is not a failure, as in libbpf.
            if (made.err().code != ENOENT || section_target_of(section).ok()) {
                status = 1;
                failed = failed || made.err().code != EOPNOTSUPP;
            }
            std::fprintf(stderr, "bpftime: program %u %s not attached: %s\n", id, name.c_str(),
                         made.err().message.c_str());
            continue;
        }
        made_links.insert(made_links.end(), made->begin(), made->end());
        for (const auto_link &l : *made) {
            links.push_back({{"program", id},
                             {"link", l.link},
                             {"target", l.target},
                             {"type", l.type},
                             {"args", l.args}});
            lines.push_back("link " + std::to_string(l.link) + " (target " +
                            std::to_string(l.target) + ") " + l.type + " " + l.args +
                            " <- program " + std::to_string(id) + " " + name);
        }
    }
    if (failed) {
        return roll_back_load(*provider, path, *loaded, made_links);
    }
    if (g.json) {
        json out{{"maps", json::array()}, {"programs", json::array()}};
        for (auto &[id, name] : loaded->maps) {
            out["maps"].push_back({{"id", id}, {"name", name}});
        }
        for (auto &[id, name] : loaded->programs) {
            out["programs"].push_back({{"id", id}, {"name", name}});
        }
        if (attach) {
            out["links"] = links;
        }
        std::puts(out.dump().c_str());
        return status;
    }
    for (auto &[id, name] : loaded->maps) {
        std::printf("map %u %s\n", id, name.c_str());
    }
    for (auto &[id, name] : loaded->programs) {
        std::printf("program %u %s\n", id, name.c_str());
    }
    for (const std::string &line : lines) {
        std::printf("%s\n", line.c_str());
    }
    return status;
}

int cmd_list(const global_options &g) {
    auto provider = open_provider(g, false);
    if (!provider) {
        return report(provider.err());
    }
    auto listed = (*provider)->list();
    if (!listed) {
        return report(listed.err());
    }
    const store::snapshot &snap = listed->objects;
    struct row {
        uint32_t id;
        const char *kind;
        std::string name, details;
        json j;
    };
    // The kernel's own id, where the kernel holds the object.
    auto kernel_id = [](row &r, uint32_t id, const char *what) {
        if (id != 0) {
            r.details += std::string(", kernel ") + what + " " + std::to_string(id);
            r.j["kernel_id"] = id;
        }
    };
    std::vector<row> rows;
    for (const auto &m : snap.maps) {
        auto access = (*provider)->open_map(m.id);
        uint64_t entries = access ? (*access)->count() : 0;
        rows.push_back({m.id,
                        "map",
                        m.name,
                        map_details(m, entries),
                        {{"type", maps::map_type_name(m.spec.type)},
                         {"key_size", m.spec.key_size},
                         {"value_size", m.spec.value_size},
                         {"max_entries", m.spec.max_entries},
                         {"entries", entries},
                         {"read_only", m.read_only}}});
        if (maps::is_map_in_map(m.spec.type)) {
            const maps::inner_map_template &t = m.spec.inner;
            rows.back().j["inner"] = json{{"type", maps::map_type_name(t.type)},
                                          {"key_size", t.key_size},
                                          {"value_size", t.value_size},
                                          {"max_entries", t.max_entries},
                                          {"flags", t.flags}};
        }
        kernel_id(rows.back(), listed->kernel_id(m.id), "map");
    }
    for (const auto &p : snap.programs) {
        std::string maps_list;
        for (uint32_t id : p.map_ids) {
            maps_list += (maps_list.empty() ? "" : ",") + std::to_string(id);
        }
        rows.push_back({p.id,
                        "program",
                        p.name,
                        "section " + (p.section.empty() ? "-" : p.section) + ", " +
                            std::to_string(p.insns.size()) + " insns" +
                            (maps_list.empty() ? "" : ", maps " + maps_list) +
                            // Kernel programs are never replaced; they have no revisions.
                            (g.kernel() ? "" : ", revision " + std::to_string(p.revision)),
                        {{"type", p.type},
                         {"section", p.section},
                         {"insns", p.insns.size()},
                         {"maps", p.map_ids},
                         {"revision", p.revision}}});
        kernel_id(rows.back(), listed->kernel_id(p.id), "program");
    }
    for (const auto &t : snap.targets) {
        rows.push_back({t.id,
                        "target",
                        t.name,
                        attach_type_name(t.attach_type) + " " + t.args,
                        {{"attach_type", attach_type_name(t.attach_type)}, {"args", t.args}}});
    }
    for (const auto &l : snap.links) {
        row r{l.id,
              "link",
              l.name,
              "program " + std::to_string(l.prog_id) + " -> target " + std::to_string(l.target_id) +
                  ", " + (l.enabled ? "enabled" : "disabled"),
              {{"prog_id", l.prog_id}, {"target_id", l.target_id}, {"enabled", l.enabled}}};
        if (l.cookie != 0) {
            r.details += ", cookie " + std::to_string(l.cookie);
            r.j["cookie"] = l.cookie;
        }
        add_link_counts(r.details, r.j, *listed, l);
        if (!listed->counted && l.enabled && listed->kernel_id(l.id) == 0) {
            r.details += ", not attached";
        }
        kernel_id(r, listed->kernel_id(l.id), "link");
        // How each host process that reported runs it.
        if (auto hosts = listed->link_hosts.find(l.id); hosts != listed->link_hosts.end()) {
            json hj = json::array();
            for (const store::link_host_state &h : hosts->second) {
                // "attached" says the host hooked it (a jump or, where none fits, an int3); a
                // refusal names its reason.
                r.details += h.failed ? ", failed in pid " + std::to_string(h.pid) + ": " + h.why
                             : h.attaching
                                 ? ", attaching in pid " + std::to_string(h.pid)
                                 : ", attached and running in pid " + std::to_string(h.pid);
                r.details += " (" + host_counts_text(h) + ")";
                hj.push_back({{"pid", h.pid},
                              {"state", h.failed      ? "failed"
                                        : h.attaching ? "attaching"
                                                      : "running"},
                              {"attached", !h.failed && !h.attaching},
                              {"why", h.why},
                              {"run_cnt", h.runs},
                              {"run_time_ns", h.run_time_ns},
                              {"faults", h.faults},
                              {"budget_stops", h.budget_stops},
                              {"decisions", host_decisions_json(h)}});
            }
            r.j["hosts"] = std::move(hj);
        }
        rows.push_back(std::move(r));
    }
    std::sort(rows.begin(), rows.end(), [](const row &a, const row &b) { return a.id < b.id; });
    // Records the segment refused as damaged: named on stderr, the status says so.
    for (const store::damaged_object &d : snap.damaged) {
        std::fprintf(stderr, "bpftime: object %u (slot %u) is damaged: %s\n", d.id, d.slot,
                     d.why.c_str());
    }
    int status = snap.damaged.empty() ? 0 : 1;
    if (g.json) {
        json out = json::array();
        for (const row &r : rows) {
            json o{{"id", r.id}, {"kind", r.kind}, {"name", r.name}};
            o.update(r.j);
            out.push_back(std::move(o));
        }
        json retired = json::array();
        for (const store::retired_object &r : listed->retired) {
            retired.push_back({{"id", r.id},
                               {"kind", store::kind_name(r.kind)},
                               {"name", r.name},
                               {"bytes", r.bytes},
                               {"generation", r.generation},
                               {"held_by", r.held_by}});
        }
        std::puts(json{{g.kernel() ? "folder" : "segment", (*provider)->location()},
                       {"generation", snap.generation},
                       {"run_timing", listed->run_timing},
                       {"objects", out},
                       {"retired", retired}}
                      .dump()
                      .c_str());
        return status;
    }
    std::printf("%-4s %-8s %-20s %s\n", "ID", "KIND", "NAME", "DETAILS");
    for (const row &r : rows) {
        std::printf("%-4u %-8s %-20s %s\n", r.id, r.kind, r.name.c_str(), r.details.c_str());
    }
    // Storage of destroyed objects that hosts may still write: reused once they synchronise.
    for (const store::retired_object &r : listed->retired) {
        std::string pids;
        for (int32_t pid : r.held_by) {
            pids += (pids.empty() ? "" : ", ") + std::to_string(pid);
        }
        std::printf("retired %s %u (%s): %llu bytes kept for host process%s %s (destroyed at "
                    "generation %llu; reused once they synchronise or exit)\n",
                    store::kind_name(r.kind), r.id, r.name.c_str(),
                    static_cast<unsigned long long>(r.bytes), r.held_by.size() > 1 ? "es" : "",
                    pids.c_str(), static_cast<unsigned long long>(r.generation));
    }
    print_list_footer(*listed);
    return status;
}

struct map_args {
    std::string op;
    uint32_t id = 0;
    std::string key, value, flags = "any";
    uint64_t count = 0;
    double timeout = 0;
    // map create
    std::string type, name;
    uint32_t key_size = 0, value_size = 0, max_entries = 0, map_flags = 0;
    uint64_t map_extra = 0;
    uint32_t inner = 0; ///< array_of_maps, hash_of_maps: the map whose spec is the template
};

bool keyless(maps::map_type t) {
    return t == maps::map_type::queue || t == maps::map_type::stack ||
           t == maps::map_type::bloom_filter;
}

// `map create TYPE ...`: an empty map, as BPF_MAP_CREATE makes one.
int cmd_map_create(const global_options &g, const map_args &a) {
    auto type = maps::parse_map_type(a.type);
    if (!type) {
        return report(make_error(EINVAL, "map type '" + a.type +
                                             "' is unknown (hash, array, percpu_hash, "
                                             "percpu_array, lru_hash, ringbuf, lpm_trie, queue, "
                                             "stack, bloom_filter, array_of_maps, "
                                             "hash_of_maps)"));
    }
    const bool outer = maps::is_map_in_map(*type);
    if (outer != (a.inner != 0)) {
        return report(make_error(
            EINVAL, outer ? "map create " + a.type +
                                " needs --inner ID: the map every map put in must match, as "
                                "BPF_MAP_CREATE's inner_map_fd"
                          : "--inner is for array_of_maps and hash_of_maps, not " + a.type));
    }
    auto provider = open_provider(g, true);
    if (!provider) {
        return report(provider.err());
    }
    map_create_spec spec;
    spec.name = a.name.empty() ? a.type : a.name;
    spec.spec = {*type, a.key_size, a.value_size, a.max_entries, a.map_flags, a.map_extra, {}};
    if (outer) {
        auto inner = (*provider)->open_map(a.inner);
        if (!inner) {
            return report(make_error(inner.err().code, "--inner " + std::to_string(a.inner) + ": " +
                                                           inner.err().message));
        }
        auto tmpl = maps::inner_template_of((*inner)->info().spec);
        if (!tmpl) {
            return report(make_error(tmpl.err().code, "--inner " + std::to_string(a.inner) + ": " +
                                                          tmpl.err().message));
        }
        spec.spec.inner = *tmpl;
        // The values are inner map ids; an array's keys are indices.
        if (spec.spec.value_size == 0) {
            spec.spec.value_size = sizeof(uint32_t);
        }
        if (spec.spec.key_size == 0 && *type == maps::map_type::array_of_maps) {
            spec.spec.key_size = sizeof(uint32_t);
        }
    }
    auto id = (*provider)->create_map(spec);
    if (!id) {
        return report(id.err());
    }
    if (g.json) {
        std::puts(json{{"id", *id}, {"name", spec.name}}.dump().c_str());
    } else {
        std::printf("map %u %s\n", *id, spec.name.c_str());
    }
    return 0;
}

void print_value(const global_options &g, const std::vector<uint8_t> &value) {
    if (g.json) {
        std::puts(json{{"value", hex_bytes(value.data(), value.size())}}.dump().c_str());
    } else {
        std::printf("value: %s\n", hex_bytes(value.data(), value.size()).c_str());
    }
}

// `map push|pop|peek` on queues, stacks and bloom filters.
int cmd_map_values(const global_options &g, map_access &view, const map_args &a) {
    const store::map_info &info = view.info();
    std::string what = "map " + std::to_string(a.id);
    bool bloom = info.spec.type == maps::map_type::bloom_filter;
    if (!keyless(info.spec.type)) {
        return report(make_error(EINVAL, what + " is a " + maps::map_type_name(info.spec.type) +
                                             ": push, pop and peek are for queue, stack and "
                                             "bloom_filter maps (use update, lookup, delete)"));
    }
    std::vector<uint8_t> value;
    if (a.op == "push" || (bloom && a.op == "peek")) {
        if (a.value.empty()) {
            return report(make_error(EINVAL, "map " + a.op + " on a " +
                                                 maps::map_type_name(info.spec.type) +
                                                 " needs a VALUE"));
        }
        auto parsed = parse_bytes(a.value, info.spec.value_size);
        if (!parsed) {
            return report(make_error(parsed.err().code, "value " + parsed.err().message));
        }
        value = std::move(*parsed);
    } else if (!a.value.empty()) {
        return report(make_error(EINVAL, "map " + a.op + " on a " +
                                             maps::map_type_name(info.spec.type) +
                                             " takes no VALUE (it gives one)"));
    }
    if (a.op == "push") {
        uint64_t flags = a.flags == "exist" ? maps::update_exist : maps::update_any;
        if (a.flags == "noexist") {
            flags = maps::update_noexist; // refused with the map's message
        }
        if (auto r = view.push(value, flags); !r) {
            return report(make_error(r.err().code, what + ": " + r.err().message));
        }
        return 0;
    }
    auto got = a.op == "pop" ? view.pop() : view.peek(value);
    if (!got) {
        return report(make_error(got.err().code, what + ": " + got.err().message));
    }
    if (bloom) {
        // A bloom filter can only say "maybe": it may answer yes for a value never pushed.
        if (g.json) {
            std::puts(json{{"value", hex_bytes(got->data(), got->size())}, {"present", "maybe"}}
                          .dump()
                          .c_str());
        } else {
            std::printf("value: %s  maybe present\n", hex_bytes(got->data(), got->size()).c_str());
        }
        return 0;
    }
    print_value(g, *got);
    return 0;
}

std::atomic<bool> interrupted{false};

// A stack trace map's value: its return addresses, innermost first, up to the first zero.
std::vector<std::string> stack_frames(const std::vector<uint8_t> &value) {
    std::vector<std::string> out;
    for (size_t at = 0; at + 8 <= value.size(); at += 8) {
        uint64_t ip = 0;
        std::memcpy(&ip, value.data() + at, sizeof ip);
        if (ip == 0) {
            break;
        }
        char buf[24];
        std::snprintf(buf, sizeof buf, "0x%" PRIx64, ip);
        out.emplace_back(buf);
    }
    return out;
}

void print_entry(const global_options &g, const store::map_info &m, const std::vector<uint8_t> &key,
                 const std::vector<uint8_t> &value) {
    if (m.spec.type == maps::map_type::stack_trace && key.size() == 4) {
        uint32_t id = 0;
        std::memcpy(&id, key.data(), sizeof id);
        auto frames = stack_frames(value);
        if (g.json) {
            std::puts(json{
                {"key", hex_bytes(key.data(), key.size())}, {"stack_id", id}, {"frames", frames}}
                          .dump()
                          .c_str());
            return;
        }
        std::string text;
        for (const std::string &f : frames) {
            text += (text.empty() ? "" : " ") + f;
        }
        std::printf("stack %u: %s\n", id, text.c_str());
        return;
    }
    if (maps::is_map_in_map(m.spec.type) && value.size() == sizeof(uint32_t)) {
        uint32_t inner = 0;
        std::memcpy(&inner, value.data(), sizeof inner);
        if (g.json) {
            std::puts(json{{"key", hex_bytes(key.data(), key.size())},
                           {"value", hex_bytes(value.data(), value.size())},
                           {"inner_map", inner}}
                          .dump()
                          .c_str());
            return;
        }
        std::printf("key: %s  inner map: %u\n", hex_bytes(key.data(), key.size()).c_str(), inner);
        return;
    }
    if (g.json) {
        std::puts(json{{"key", hex_bytes(key.data(), key.size())},
                       {"value", hex_bytes(value.data(), value.size())}}
                      .dump()
                      .c_str());
        return;
    }
    std::printf("key: %s  value: %s\n", hex_bytes(key.data(), key.size()).c_str(),
                hex_bytes(value.data(), value.size()).c_str());
}

// The data size of each perf ring `map events` gives a perf event array slot.
constexpr uint32_t perf_ring_bytes = 16 * 4096;

// One line of `map events`: written out at once, whatever stdout is (a pipe or a file too), so
// a record taken from the ring is never left in a buffer when the command is stopped.
void emit_record(const std::string &line) {
    std::fputs(line.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

// `map events` on a perf event array: this command is the consumer, as libbpf's perf_buffer is
// in a loader. Each slot gets a perf ring of its own for as long as the command runs; the slots
// are emptied and the rings destroyed when it stops.
int cmd_perf_events(const global_options &g, base_event_provider &provider, map_access &array,
                    const map_args &a) {
    auto *user = dynamic_cast<event_provider_impl *>(&provider);
    if (user == nullptr) {
        return report(make_error(EOPNOTSUPP, "map " + std::to_string(a.id) +
                                                 ": `map events` on a perf event array reads "
                                                 "user-space perf rings; use --provider user"));
    }
    store::segment &seg = user->segment();
    uint32_t slots = array.info().spec.max_entries;
    struct slot_ring {
        uint32_t index, id;
        maps::map_view view;
    };
    std::vector<slot_ring> rings;
    auto key_of = [](const uint32_t &i) {
        return std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&i), sizeof i);
    };
    auto release = [&] {
        for (const slot_ring &r : rings) {
            auto now = array.read(key_of(r.index));
            uint32_t held = 0;
            if (now && now->size() >= sizeof held) {
                std::memcpy(&held, now->data(), sizeof held);
            }
            if (held == r.id) {
                (void)array.erase(key_of(r.index));
            }
            (void)provider.destroy_object(r.id);
        }
    };
    for (uint32_t i = 0; i < slots; i++) {
        auto now = array.read(key_of(i));
        uint32_t held = 0;
        if (now && now->size() >= sizeof held) {
            std::memcpy(&held, now->data(), sizeof held);
        }
        if (auto other =
                held != 0 ? seg.map(held) : result<store::map_info>(make_error(ENOENT, ""));
            other && other->spec.type == maps::map_type::perf_ring) {
            release();
            return report(make_error(EBUSY, "map " + std::to_string(a.id) + ": slot " +
                                                std::to_string(i) + " is read already (perf ring " +
                                                std::to_string(held) +
                                                ": a loader's perf_buffer or another `bpftime "
                                                "map events`)"));
        }
        map_create_spec spec;
        spec.name = "perf_cpu" + std::to_string(i);
        spec.spec = {maps::map_type::perf_ring, 0, 0, perf_ring_bytes, 0};
        auto id = provider.create_map(spec);
        auto view = id ? seg.map_view(*id) : result<maps::map_view>(id.err());
        if (!view) {
            if (id) {
                (void)provider.destroy_object(*id);
            }
            release();
            return report(view.err());
        }
        rings.push_back({i, *id, *view});
        if (auto w = array.write(key_of(i), key_of(*id), maps::update_any); !w) {
            release();
            return report(w.err());
        }
    }
    std::signal(SIGINT, [](int) { interrupted = true; });
    std::signal(SIGTERM, [](int) { interrupted = true; });
    uint64_t seen = 0;
    auto idle_since = std::chrono::steady_clock::now();
    int status = 0;
    while (!interrupted && (a.count == 0 || seen < a.count)) {
        uint64_t got = 0;
        for (const slot_ring &r : rings) {
            auto n = r.view.perf_consume(
                [&](std::span<const uint8_t> rec) {
                    if (a.count != 0 && seen >= a.count) {
                        return;
                    }
                    seen++;
                    emit_record(g.json ? json{{"cpu", r.index},
                                              {"size", rec.size()},
                                              {"data", hex_bytes(rec.data(), rec.size())}}
                                             .dump()
                                       : hex_bytes(rec.data(), rec.size()));
                },
                [&](uint64_t lost) {
                    emit_record(g.json ? json{{"cpu", r.index}, {"lost", lost}}.dump()
                                       : "lost " + std::to_string(lost) + " records (cpu " +
                                             std::to_string(r.index) + ")");
                });
            if (!n) {
                status = report(n.err());
                break;
            }
            got += *n;
        }
        std::fflush(stdout);
        if (status != 0) {
            break;
        }
        if (got > 0) {
            idle_since = std::chrono::steady_clock::now();
            continue;
        }
        if (a.timeout > 0 &&
            std::chrono::duration<double>(std::chrono::steady_clock::now() - idle_since).count() >=
                a.timeout) {
            break;
        }
        // The first ring's futex wakes us at once; the others are looked at every 10 ms.
        if (!rings.empty()) {
            rings.front().view.perf_wait(rings.size() == 1 ? 100 : 10);
        }
    }
    release();
    return status;
}

int cmd_map(const global_options &g, const map_args &a) {
    auto provider = open_provider(g, false);
    if (!provider) {
        return report(provider.err());
    }
    auto opened = (*provider)->open_map(a.id);
    if (!opened) {
        return report(opened.err());
    }
    map_access &view = **opened;
    const store::map_info *info = &view.info();
    bool ring = info->spec.type == maps::map_type::ringbuf;
    if (a.op == "events" && info->spec.type == maps::map_type::perf_event_array) {
        return cmd_perf_events(g, **provider, view, a);
    }
    if (ring != (a.op == "events")) {
        return report(make_error(
            EINVAL, "map " + std::to_string(a.id) + " is a " +
                        maps::map_type_name(info->spec.type) +
                        (ring ? "; use `bpftime map events`"
                              : "; `map events` is for ring buffers and perf event arrays")));
    }
    if (a.op == "events") {
        std::signal(SIGINT, [](int) { interrupted = true; });
        std::signal(SIGTERM, [](int) { interrupted = true; });
        uint64_t seen = 0, lost = view.lost();
        auto idle_since = std::chrono::steady_clock::now();
        while (!interrupted && (a.count == 0 || seen < a.count)) {
            auto n = view.consume(
                [&](std::span<const uint8_t> rec) {
                    seen++;
                    emit_record(g.json ? json{{"size", rec.size()},
                                              {"data", hex_bytes(rec.data(), rec.size())}}
                                             .dump()
                                       : hex_bytes(rec.data(), rec.size()));
                },
                a.count == 0 ? UINT64_MAX : a.count - seen);
            // Records skipped because their producer died before submitting them (counted
            // in the ring by whoever skipped them, this command or another process).
            if (uint64_t now = view.lost(); now > lost) {
                emit_record(g.json ? json{{"lost", now - lost}}.dump()
                                   : "lost " + std::to_string(now - lost) +
                                         " records (their producer died before submitting)");
                lost = now;
            }
            std::fflush(stdout);
            if (!n) {
                return report(n.err());
            }
            if (*n > 0) {
                idle_since = std::chrono::steady_clock::now();
                continue;
            }
            if (a.timeout > 0 &&
                std::chrono::duration<double>(std::chrono::steady_clock::now() - idle_since)
                        .count() >= a.timeout) {
                break;
            }
            view.wait(100);
        }
        return 0;
    }
    if (a.op == "push" || a.op == "pop" || a.op == "peek") {
        return cmd_map_values(g, view, a);
    }
    if (keyless(info->spec.type)) {
        bool bloom = info->spec.type == maps::map_type::bloom_filter;
        if (a.op != "dump" || bloom) {
            return report(make_error(
                EINVAL, "map " + std::to_string(a.id) + " is a " +
                            maps::map_type_name(info->spec.type) + ": it has no keys" +
                            (bloom ? " and cannot list its values; use `bpftime map push ID "
                                     "VALUE` and `bpftime map peek ID VALUE`"
                                   : "; use `bpftime map push|pop|peek`")));
        }
        auto all = view.values();
        if (!all) {
            return report(all.err());
        }
        for (const auto &v : *all) {
            print_value(g, v);
        }
        if (!g.json) {
            std::printf("%zu values\n", all->size());
        }
        return 0;
    }
    uint32_t ks = info->spec.key_size;
    uint32_t vs = info->spec.value_size;
    if (a.op == "dump") {
        // Entries are printed as next_key walks the map, never gathered first, so a dump of
        // any size needs the memory of one entry.
        std::vector<uint8_t> key;
        uint64_t n = 0;
        progress shown("map " + std::to_string(a.id) + " entries", view.count());
        // A walk visits each key once unless the map changes under it (a removed key starts it
        // again from the first) or its storage was damaged into a cycle: past twice the map's
        // capacity it stops rather than run for ever.
        const uint64_t most_steps = 2 * static_cast<uint64_t>(info->spec.max_entries) + 64;
        for (uint64_t steps = 0;; steps++) {
            shown.step(n);
            if (steps > most_steps) {
                return report(make_error(
                    EIO, "map " + std::to_string(a.id) +
                             ": the walk of its keys did not end after " + std::to_string(steps) +
                             " steps (the map has at most " +
                             std::to_string(info->spec.max_entries) +
                             " entries): it changed all the while, or its storage is damaged"));
            }
            auto next = view.next_key(key);
            if (!next) {
                return report(next.err());
            }
            if (!*next) {
                break;
            }
            key = std::move(**next);
            auto value = view.read(key);
            if (value) {
                print_entry(g, *info, key, *value);
                n++;
            }
        }
        if (!g.json) {
            std::printf("%" PRIu64 " entries\n", n);
        }
        return 0;
    }
    if (a.key.empty()) {
        return report(make_error(EINVAL, "map " + a.op + " needs a KEY"));
    }
    auto key = parse_bytes(a.key, ks);
    if (!key) {
        return report(make_error(key.err().code, "key " + key.err().message));
    }
    if (a.op == "lookup") {
        auto value = view.read(*key);
        if (!value) {
            return report(make_error(value.err().code, "map " + std::to_string(a.id) + ": key " +
                                                           hex_bytes(key->data(), key->size()) +
                                                           ": " + value.err().message));
        }
        print_entry(g, *info, *key, *value);
        return 0;
    }
    if (a.op == "delete") {
        if (auto r = view.erase(*key); !r) {
            return report(r.err());
        }
        return 0;
    }
    // update
    if (a.value.empty()) {
        return report(make_error(EINVAL, "map update needs a KEY and a VALUE"));
    }
    // A cgroup array's value is a cgroup fd of the updating process: the VALUE is the cgroup's
    // directory, opened here for the update.
    bool cgroup = info->spec.type == maps::map_type::cgroup_array;
    int cgroup_fd = cgroup ? ::open(a.value.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (cgroup && cgroup_fd < 0) {
        int e = errno;
        return report(make_error(e, "value " + a.value +
                                        ": a cgroup array takes a cgroup directory (such as "
                                        "/sys/fs/cgroup/NAME): " +
                                        strerror(e)));
    }
    auto value = cgroup ? result<std::vector<uint8_t>>(std::vector<uint8_t>(
                              reinterpret_cast<const uint8_t *>(&cgroup_fd),
                              reinterpret_cast<const uint8_t *>(&cgroup_fd) + sizeof cgroup_fd))
                        : parse_bytes(a.value, vs);
    if (!value) {
        return report(make_error(value.err().code, "value " + value.err().message));
    }
    uint64_t flags = a.flags == "noexist" ? maps::update_noexist
                     : a.flags == "exist" ? maps::update_exist
                                          : maps::update_any;
    auto written = view.write(*key, *value, flags);
    if (cgroup_fd >= 0) {
        ::close(cgroup_fd);
    }
    if (!written) {
        return report(written.err());
    }
    return 0;
}

// A USDT probe: one uprobe target and link per site of the probe (attach_usdt); without ARGS
// the probe named by the program's section (usdt/BINARY:PROVIDER:NAME).
int cmd_attach_usdt(const global_options &g, uint32_t prog_id, std::string args, uint64_t cookie) {
    auto opened = open_provider(g, false);
    if (!opened) {
        return report(opened.err());
    }
    base_event_provider &provider = **opened;
    if (args.empty()) {
        auto listed = provider.list();
        if (!listed) {
            return report(listed.err());
        }
        for (const store::program_info &p : listed->objects.programs) {
            if (p.id == prog_id && p.section.starts_with("usdt/")) {
                args = p.section.substr(5);
            }
        }
        if (args.empty()) {
            return report(make_error(EINVAL, "attach usdt needs BINARY:PROVIDER:NAME (program " +
                                                 std::to_string(prog_id) +
                                                 " has no usdt/BINARY:PROVIDER:NAME section)"));
        }
    }
    auto links = attach_usdt(provider, prog_id, args, cookie);
    if (!links) {
        return report(links.err());
    }
    json all = json::array();
    for (const usdt_link &l : *links) {
        if (g.json) {
            all.push_back(json{{"link", l.link_id},
                               {"target", l.target_id},
                               {"address", l.address},
                               {"spec", l.spec_id}});
        } else {
            std::printf("link %u (target %u) at 0x%llx, spec %u\n", l.link_id, l.target_id,
                        static_cast<unsigned long long>(l.address), l.spec_id);
        }
    }
    if (g.json) {
        std::puts(all.dump().c_str());
    }
    return 0;
}

// attach auto PROG_ID: where the program's section says.
int cmd_attach_auto(const global_options &g, uint32_t prog_id,
                    const std::vector<std::string> &args) {
    if (!args.empty()) {
        return report(make_error(EINVAL, "attach auto takes a program id only; its section names "
                                         "the target"));
    }
    auto opened = open_provider(g, false);
    if (!opened) {
        return report(opened.err());
    }
    auto listed = (*opened)->list();
    if (!listed) {
        return report(listed.err());
    }
    const store::program_info *prog = nullptr;
    for (const store::program_info &p : listed->objects.programs) {
        if (p.id == prog_id) {
            prog = &p;
        }
    }
    if (prog == nullptr) {
        return report(make_error(ENOENT, "no program with id " + std::to_string(prog_id)));
    }
    auto made = attach_by_section(**opened, prog_id, prog->section);
    if (!made) {
        return report(made.err());
    }
    json all = json::array();
    for (const auto_link &l : *made) {
        if (g.json) {
            all.push_back(
                {{"link", l.link}, {"target", l.target}, {"type", l.type}, {"args", l.args}});
        } else {
            std::printf("link %u (target %u) %s %s\n", l.link, l.target, l.type.c_str(),
                        l.args.c_str());
        }
    }
    if (g.json) {
        std::puts(all.dump().c_str());
    }
    return 0;
}

// Whether a process still exists (a host record may outlive its process until it is pruned).
bool process_alive(int32_t pid) {
    return pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH);
}

// After a link is made on the user provider: waits up to wait_ms for the running hosts to say
// whether they attached it (their per-host records), prints what each said (on stderr, so the
// "link N (target M)" line stays the only line scripts read; in the JSON object with --json),
// and gives the exit status: 1 when every host that reported refused the link (it stays).
int report_hosts(const global_options &g, base_event_provider &provider, uint32_t link,
                 uint32_t target, int wait_ms) {
    // The hosts known to be running: live processes that reported on any other link.
    std::set<int32_t> known;
    if (auto before = provider.list()) {
        for (const auto &[id, records] : before->link_hosts) {
            for (const store::link_host_state &h : records) {
                if (id != link && process_alive(h.pid)) {
                    known.insert(h.pid);
                }
            }
        }
    }
    // Without a host known to run, a short wait for one that has no links yet.
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(known.empty() ? wait_ms / 5 : wait_ms);
    std::vector<store::link_host_state> records;
    for (;;) {
        records.clear();
        if (auto now = provider.list()) {
            if (auto it = now->link_hosts.find(link); it != now->link_hosts.end()) {
                for (const store::link_host_state &h : it->second) {
                    if (process_alive(h.pid)) {
                        records.push_back(h);
                    }
                }
            }
        }
        std::set<int32_t> settled;
        bool attaching = false;
        for (const store::link_host_state &h : records) {
            attaching = attaching || h.attaching;
            if (!h.attaching) {
                settled.insert(h.pid);
            }
        }
        const bool all_known =
            std::includes(settled.begin(), settled.end(), known.begin(), known.end());
        if ((!records.empty() && !attaching && all_known) ||
            std::chrono::steady_clock::now() >= deadline) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::sort(records.begin(), records.end(),
              [](const auto &a, const auto &b) { return a.pid < b.pid; });
    size_t attached = 0, refused = 0, unmapped = 0;
    json hj = json::array();
    for (const store::link_host_state &h : records) {
        // A process that does not map the probed binary is no refusal: it may load it later,
        // as the kernel's uprobes fire in whichever process maps it.
        const bool elsewhere = h.failed && h.why.find(not_mapped_here) != std::string::npos;
        const char *state = elsewhere     ? "not mapped"
                            : h.failed    ? "refused"
                            : h.attaching ? "attaching"
                                          : "attached";
        attached += !h.failed && !h.attaching;
        refused += h.failed && !elsewhere;
        unmapped += elsewhere;
        if (g.json) {
            hj.push_back({{"pid", h.pid}, {"state", state}, {"why", h.why}});
        } else if (elsewhere) {
            std::fprintf(stderr, "pid %d: does not map the binary (%s)\n", h.pid, h.why.c_str());
        } else if (h.failed) {
            std::fprintf(stderr, "pid %d: refused: %s\n", h.pid, h.why.c_str());
        } else {
            std::fprintf(stderr, "pid %d: %s\n", h.pid,
                         h.attaching ? "still attaching (bpftime list shows how it ends)"
                                     : "attached");
        }
    }
    const bool all_refused = refused > 0 && attached == 0 && refused + unmapped == records.size();
    if (g.json) {
        std::puts(json{{"link", link}, {"target", target}, {"hosts", hj}}.dump().c_str());
    } else if (records.empty()) {
        std::fprintf(stderr,
                     "no running host reported within %d ms (none runs this segment's links, or "
                     "none hosts this attach type); the link attaches when one starts\n",
                     known.empty() ? wait_ms / 5 : wait_ms);
    }
    if (all_refused) {
        std::fprintf(stderr,
                     "bpftime: every host that reported refused link %u; it stays (`bpftime list` "
                     "shows it, `bpftime destroy %u` removes it)\n",
                     link, link);
        return 1;
    }
    return 0;
}

int cmd_attach(const global_options &g, const std::string &type, uint32_t prog_id,
               const std::vector<std::string> &args, uint64_t cookie, bool no_wait) {
    if (type == "auto") {
        return cmd_attach_auto(g, prog_id, args);
    }
    if (type == "usdt") {
        std::string joined;
        for (const std::string &a : args) {
            joined += (joined.empty() ? "" : " ") + a;
        }
        return cmd_attach_usdt(g, prog_id, joined, cookie);
    }
    auto t = parse_attach_type(type);
    if (!t) {
        std::string names;
        for (const auto &info : attach_types()) {
            names += (names.empty() ? "" : ", ") + info.name;
        }
        return report(
            make_error(EINVAL, "unknown attach type '" + type + "' (" + names + ", usdt)"));
    }
    auto opened = open_provider(g, false);
    if (!opened) {
        return report(opened.err());
    }
    base_event_provider &provider = **opened;
    std::string joined;
    for (const std::string &a : args) {
        joined += (joined.empty() ? "" : " ") + a;
    }
    auto target = provider.create_attach_target(*t, joined);
    if (!target && target.err().code == EOPNOTSUPP) {
        return report(
            with_hint(target.err(), g.kernel() ? "--provider user" : "--provider kernel"));
    }
    if (!target) {
        return report(target.err());
    }
    auto link = provider.attach_program(prog_id, *target, cookie);
    if (!link) {
        (void)provider.destroy_object(*target);
        return report(link.err());
    }
    // The kernel answers at once: attach_program already failed if it refused.
    const bool wait = !no_wait && !g.kernel();
    if (g.json) {
        if (!wait) {
            std::puts(json{{"link", *link}, {"target", *target}}.dump().c_str());
        }
    } else {
        std::printf("link %u (target %u)\n", *link, *target);
        std::fflush(stdout);
    }
    return wait ? report_hosts(g, provider, *link, *target, 1000) : 0;
}

// A host for the test attach type: instantiates, then triggers the hook.
int cmd_trigger(const global_options &g, const std::string &hook, const std::string &mem_hex,
                uint64_t repeat) {
    if (g.kernel()) {
        return report(user_space_only("bpftime trigger"));
    }
    auto seg = open_store(g, false);
    if (!seg) {
        return report(seg.err());
    }
    auto mem = vm::parse_hex_bytes(mem_hex);
    if (!mem) {
        return report(make_error(EINVAL, "--mem: " + mem.err().message));
    }
    attach_manager mgr(*seg);
    auto impl = std::make_unique<callable_attach_impl>();
    callable_attach_impl &hooks = *impl;
    (void)mgr.register_attach_impl(attach_type_test, std::move(impl));
    if (auto r = mgr.instantiate(); !r) {
        report(r.err()); // the links that did attach still run
    }
    if (hooks.attached(hook) == 0) {
        return report(
            make_error(ENOENT, "no enabled link attaches a program at test hook '" + hook + "'"));
    }
    std::vector<result<uint64_t>> last;
    uint64_t faults = 0;
    for (uint64_t i = 0; i < std::max<uint64_t>(repeat, 1); i++) {
        last = hooks.trigger(hook, mem->empty() ? nullptr : mem->data(), mem->size());
        faults += static_cast<uint64_t>(
            std::count_if(last.begin(), last.end(), [](const auto &r) { return !r.ok(); }));
    }
    for (const auto &r : last) {
        if (r) {
            std::printf("r0 = 0x%llx\n", static_cast<unsigned long long>(*r));
        } else {
            std::printf("error: %s\n", r.err().message.c_str());
        }
    }
    if (faults > 0) {
        std::printf("%" PRIu64 " faulted runs\n", faults);
    }
    return 0;
}

template <class F>
int with_provider(const global_options &g, F &&f) {
    auto provider = open_provider(g, false);
    if (!provider) {
        return report(provider.err());
    }
    if (auto r = f(**provider); !r) {
        return report(r.err());
    }
    return 0;
}

} // namespace

void add_store_commands(CLI::App &app, const global_options &g, int &status) {
    auto *load = app.add_subcommand(
        "load", "create an ELF object's maps and programs, or run a libbpf loader program so "
                "that what it loads goes to the segment");
    // PROGRAM and everything after it belong to the loader, options included.
    load->prefix_command();
    load->allow_extras();
    load->fallthrough(false);
    load->footer("Usage: bpftime load FILE.bpf.o [--set NAME=VALUE]... [--attach]\n"
                 "         an object built with clang -O2 -target bpf; --set gives a global "
                 "variable of .rodata, .data or .bss its value before load (an integer, "
                 "true/false, a string for a char array, NAME[INDEX]=VALUE for an element of an "
                 "array); --attach attaches every program whose section names its target, as "
                 "libbpf's auto-attach does\n"
                 "       bpftime load PROGRAM [ARGS...] (a libbpf loader, run with the bpf() "
                 "interposer)");
    load->callback([&g, &status, load] {
        std::vector<std::string> args = load->remaining();
        if (!args.empty() && args.front() == "--") {
            args.erase(args.begin());
        }
        if (args.empty()) {
            status = report(make_error(
                EINVAL, "bpftime load needs a FILE: an eBPF object or a loader PROGRAM to run"));
            return;
        }
        auto input = classify_load_input(args.front());
        if (!input) {
            status = report(input.err());
            return;
        }
        if (input->kind == load_input::program) {
            status = run_loader(g, args);
            return;
        }
        // An object takes --set NAME=VALUE (or --set=NAME=VALUE), as often as needed.
        std::vector<std::string> sets;
        bool attach = false;
        for (size_t i = 1; i < args.size(); i++) {
            if (args[i] == "--attach") {
                attach = true;
            } else if (args[i] == "--set" && i + 1 < args.size()) {
                sets.push_back(args[++i]);
            } else if (args[i].starts_with("--set=")) {
                sets.push_back(args[i].substr(6));
            } else {
                status = report(
                    make_error(EINVAL, args.front() +
                                           " is an eBPF object, which takes only --set NAME=VALUE "
                                           "and --attach (got '" +
                                           args[i] + "'); only a loader PROGRAM takes ARGS"));
                return;
            }
        }
        status = cmd_load(g, input->path, sets, attach);
    });

    auto *list = app.add_subcommand("list", "list every object of the segment (or bpffs folder)");
    list->callback([&] { status = cmd_list(g); });

    auto *map = app.add_subcommand("map", "read and change maps");
    map->require_subcommand(1);
    static map_args ma;
    auto add_map_op = [&](const char *op, const char *help, int operands) {
        auto *c = map->add_subcommand(op, help);
        c->add_option("ID", ma.id, "map id")->required();
        if (operands >= 1) {
            c->add_option("KEY", ma.key,
                          "an integer (5, 0x10, -1), bytes (\"01 00 00 00\", hex:01000000) or a "
                          "zero-padded string (str:/api/)")
                ->required();
        }
        if (operands >= 2) {
            c->add_option("VALUE", ma.value,
                          "an integer or bytes, like KEY; a cgroup array takes a cgroup directory")
                ->required();
            c->add_option("--flags", ma.flags, "any, noexist or exist")
                ->check(CLI::IsMember({"any", "noexist", "exist"}));
        }
        c->callback([&, op] {
            ma.op = op;
            status = cmd_map(g, ma);
        });
        return c;
    };
    add_map_op("dump", "print every entry", 0);
    add_map_op("lookup", "print the value of a key", 1);
    add_map_op("update", "set the value of a key", 2);
    add_map_op("delete", "remove a key", 1);
    auto *push = add_map_op("push", "push a value (queue, stack, bloom_filter)", 0);
    push->add_option("VALUE", ma.value, "an integer or bytes, as for update")->required();
    push->add_option("--flags", ma.flags, "any, or exist: a full queue or stack drops its oldest")
        ->check(CLI::IsMember({"any", "noexist", "exist"}));
    add_map_op("pop", "print and remove the next value (queue: the oldest, stack: the newest)", 0);
    auto *peek = add_map_op("peek",
                            "print the next value without removing it (queue, stack); "
                            "whether VALUE may be in a bloom filter (exit status 1 when "
                            "it is not)",
                            0);
    peek->add_option("VALUE", ma.value, "the value to test (bloom_filter)");
    auto *create = map->add_subcommand("create", "create an empty map");
    create
        ->add_option("TYPE", ma.type,
                     "hash, array, percpu_hash, percpu_array, lru_hash, ringbuf, lpm_trie, "
                     "queue, stack, bloom_filter, array_of_maps or hash_of_maps")
        ->required();
    create->add_option("--inner", ma.inner,
                       "array_of_maps, hash_of_maps: the id of a map whose type, key and value "
                       "sizes, flags (and an array's max_entries) every map put in must have; "
                       "update the outer map with inner map ids as values");
    create->add_option("--name", ma.name, "the map's name (default: the type)");
    create->add_option("--key-size", ma.key_size,
                       "bytes per key (0 for queue, stack, bloom_filter)");
    create->add_option("--value-size", ma.value_size, "bytes per value (0 for ringbuf)");
    create->add_option("--max-entries", ma.max_entries, "entries (a ring buffer's bytes)")
        ->required();
    create->add_option("--flags", ma.map_flags,
                       "map flags as BPF_MAP_CREATE takes them (lpm_trie needs 1, "
                       "BPF_F_NO_PREALLOC)");
    create->add_option("--map-extra", ma.map_extra,
                       "map_extra: a bloom filter's number of hash functions (1-15, 0: 5)");
    create->callback([&] { status = cmd_map_create(g, ma); });
    auto *events =
        add_map_op("events", "print ring-buffer or perf event array records as they arrive", 0);
    events->add_option("--count", ma.count, "stop after N records");
    events->add_option("--timeout", ma.timeout, "stop after this many seconds without records");

    auto *attach = app.add_subcommand("attach", "attach a program: a target and an enabled link");
    static std::string attach_type;
    static uint32_t attach_prog = 0;
    static std::vector<std::string> attach_args;
    attach
        ->add_option("TYPE", attach_type,
                     "attach type (test, nginx-url, uprobe, uretprobe, tracepoint, "
                     "raw_tracepoint; usdt: BINARY:PROVIDER:NAME, a link per site of the probe; "
                     "auto: where the program's section says)")
        ->required();
    attach->add_option("PROG_ID", attach_prog, "program id")->required();
    static uint64_t attach_cookie = 0;
    attach->add_option("ARGS", attach_args, "the target's arguments");
    attach->add_option("--cookie", attach_cookie,
                       "what bpf_get_attach_cookie() gives the program through this link (usdt: "
                       "what bpf_usdt_cookie() gives)");
    static bool attach_no_wait = false;
    attach->add_flag("--no-wait", attach_no_wait,
                     "do not wait (up to 1 s) for the running hosts to say whether they attached "
                     "the link");
    attach->callback([&] {
        status =
            cmd_attach(g, attach_type, attach_prog, attach_args, attach_cookie, attach_no_wait);
    });

    auto *trigger = app.add_subcommand(
        "trigger", "act as a host of the test attach type: run the programs at a hook");
    static std::string trigger_hook, trigger_mem;
    static uint64_t trigger_repeat = 1;
    trigger->add_option("HOOK", trigger_hook, "the hook name given to `bpftime attach test`")
        ->required();
    trigger->add_option("--mem", trigger_mem, "the context memory as hex bytes");
    trigger->add_option("--repeat", trigger_repeat, "how many times to trigger");
    trigger->callback([&] { status = cmd_trigger(g, trigger_hook, trigger_mem, trigger_repeat); });

    static uint32_t object_id = 0;
    auto *enable = app.add_subcommand("enable", "enable a link");
    enable->add_option("LINK_ID", object_id)->required();
    enable->callback([&] {
        status = with_provider(g, [](base_event_provider &p) { return p.enable_link(object_id); });
    });
    auto *disable = app.add_subcommand("disable", "disable a link");
    disable->add_option("LINK_ID", object_id)->required();
    disable->callback([&] {
        status = with_provider(g, [](base_event_provider &p) { return p.disable_link(object_id); });
    });
    auto *link = app.add_subcommand("link", "change links");
    link->require_subcommand(1);
    auto *update = link->add_subcommand(
        "update", "run another program through a link (hosts switch at their next resync)");
    static uint32_t update_prog = 0;
    update->add_option("LINK_ID", object_id)->required();
    update->add_option("PROG_ID", update_prog)->required();
    update->callback([&] {
        status = with_provider(
            g, [](base_event_provider &p) { return p.update_link(object_id, update_prog); });
    });
    auto *destroy = app.add_subcommand("destroy", "destroy an object");
    destroy->add_option("ID", object_id)->required();
    destroy->callback([&] {
        status =
            with_provider(g, [](base_event_provider &p) { return p.destroy_object(object_id); });
    });

    auto *reset = app.add_subcommand(
        "reset", "remove the segment (kernel: the bpffs folder) and every object in it");
    reset->callback([&] {
        std::string name = store::segment_name(g.shm);
        auto r = g.kernel() ? kernel_event_provider::remove(name) : store::segment::remove(name);
        status = r ? 0 : report(r.err());
    });
}

} // namespace bpftime::cli
