// SPDX-License-Identifier: MIT
// USDT attach through a provider: what libbpf's usdt.c does in a loader, done by a controller.
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/usdt.hpp>
#include <bpftime/provider/usdt_attach.hpp>

#include <algorithm>
#include <cstring>
#include <set>

namespace bpftime {

namespace {

// libbpf's map of argument specs; the kernel keeps 15 characters of a name.
constexpr std::string_view specs_map_name = "__bpf_usdt_specs";

bool is_specs_map(const std::string &name) {
    return name == specs_map_name || (name.size() >= 15 && specs_map_name.starts_with(name));
}

} // namespace

result<std::vector<usdt_link>> attach_usdt(base_event_provider &provider, uint32_t prog_id,
                                           std::string_view args, uint64_t usdt_cookie) {
    auto sites = resolve_usdt_target(args);
    if (!sites) {
        return sites.err();
    }
    auto listed = provider.list();
    if (!listed) {
        return listed.err();
    }
    const store::snapshot &snap = listed->objects;
    auto prog = std::find_if(snap.programs.begin(), snap.programs.end(),
                             [&](const store::program_info &p) { return p.id == prog_id; });
    if (prog == snap.programs.end()) {
        return make_error(ENOENT, "no program " + std::to_string(prog_id));
    }
    const store::map_info *specs = nullptr;
    for (uint32_t id : prog->map_ids) {
        for (const store::map_info &m : snap.maps) {
            if (m.id == id && is_specs_map(m.name)) {
                specs = &m;
            }
        }
    }
    std::string what = "program " + std::to_string(prog_id) + " (" + prog->name + ")";
    if (specs == nullptr) {
        return make_error(EINVAL, what + " does not use the " + std::string(specs_map_name) +
                                      " map: a USDT program reads its arguments through "
                                      "libbpf's usdt.bpf.h (bpf_usdt_arg)");
    }
    if (specs->spec.value_size != sizeof(usdt_spec) || specs->spec.key_size != 4) {
        return make_error(
            EINVAL, what + ": its " + std::string(specs_map_name) + " map holds " +
                        std::to_string(specs->spec.value_size) + "-byte values, not libbpf's " +
                        std::to_string(sizeof(usdt_spec)) + "-byte struct __bpf_usdt_spec");
    }
    // Spec ids in use: the cookies of the links of every program that shares the map.
    std::set<uint64_t> used;
    for (const store::link_info &l : snap.links) {
        for (const store::program_info &p : snap.programs) {
            if (p.id == l.prog_id &&
                std::find(p.map_ids.begin(), p.map_ids.end(), specs->id) != p.map_ids.end()) {
                used.insert(l.cookie);
            }
        }
    }
    auto map = provider.open_map(specs->id);
    if (!map) {
        return map.err();
    }
    std::vector<usdt_link> made;
    auto undo = [&](error e) -> result<std::vector<usdt_link>> {
        for (const usdt_link &l : made) {
            if (l.link_id != 0) {
                (void)provider.destroy_object(l.link_id);
            }
            (void)provider.destroy_object(l.target_id);
        }
        return e;
    };
    uint32_t next_id = 0;
    for (usdt_site &site : *sites) {
        while (used.count(next_id) != 0) {
            next_id++;
        }
        if (next_id >= specs->spec.max_entries) {
            return undo(make_error(
                ENOSPC, what + ": its " + std::string(specs_map_name) + " map has room for " +
                            std::to_string(specs->spec.max_entries) + " sites, all in use"));
        }
        uint32_t spec_id = next_id++;
        site.spec.usdt_cookie = usdt_cookie;
        uint8_t key[4];
        std::memcpy(key, &spec_id, sizeof key);
        std::vector<uint8_t> value(sizeof(usdt_spec));
        std::memcpy(value.data(), &site.spec, sizeof(usdt_spec));
        if (auto w = (*map)->write(key, value, maps::update_any); !w) {
            return undo(w.err());
        }
        auto target = provider.create_attach_target(attach_type_uprobe, site.uprobe_args);
        if (!target) {
            return undo(target.err());
        }
        made.push_back({site.note.address, *target, 0, spec_id});
        auto link = provider.attach_program(prog_id, *target, spec_id);
        if (!link) {
            return undo(link.err());
        }
        made.back().link_id = *link;
    }
    return made;
}

} // namespace bpftime
