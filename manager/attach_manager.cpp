// SPDX-License-Identifier: MIT
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/manager/attach_manager.hpp>

#include <algorithm>

namespace bpftime {
namespace {

template <class T>
const T *by_id(const std::vector<T> &objects, uint32_t id) {
    auto it = std::find_if(objects.begin(), objects.end(), [&](const T &o) { return o.id == id; });
    return it == objects.end() ? nullptr : &*it;
}

} // namespace

attach_manager::attach_manager(std::shared_ptr<store::segment> seg, manager_options opts)
    : seg_(std::move(seg)), engine_(opts.engine.value_or(vm::available_engines().front())),
      engine_options_(opts.engine_options) {
    helpers::register_all();
}

attach_manager::~attach_manager() {
    deinstantiate();
}

result<void> attach_manager::register_attach_impl(int32_t type,
                                                  std::unique_ptr<base_attach_impl> impl) {
    std::lock_guard lock(mu_);
    if (impl == nullptr) {
        return make_error(EINVAL, "attach type " + attach_type_name(type) + ": no implementation");
    }
    if (!impls_.try_emplace(type, std::move(impl)).second) {
        return make_error(EEXIST, "attach type " + attach_type_name(type) +
                                      " already has an implementation");
    }
    generation_ = ~0ull; // links of this type may now attach
    return {};
}

result<void> attach_manager::register_attach_impls(attach_impl_set impls) {
    for (auto &[type, impl] : impls) {
        if (auto r = register_attach_impl(type, std::move(impl)); !r) {
            return r;
        }
    }
    return {};
}

base_attach_impl *attach_manager::attach_impl(int32_t type) const {
    std::lock_guard lock(mu_);
    auto it = impls_.find(type);
    return it == impls_.end() ? nullptr : it->second.get();
}

result<uint64_t> attach_manager::map_handle(uint32_t map_id,
                                            std::optional<vm::memory_region> &region) {
    auto view = seg_->map_view(map_id);
    if (!view) {
        return view.err();
    }
    auto info = seg_->map(map_id);
    if (!info) {
        return info.err();
    }
    auto values = view->value_area();
    if (!values.empty()) {
        region = vm::memory_region{reinterpret_cast<uint64_t>(values.data()), values.size(),
                                   !info->read_only};
    }
    auto [it, added] = map_handles_.try_emplace(map_id, 0);
    if (added) {
        it->second = helpers::make_map_handle(*view);
    }
    return it->second;
}

result<std::shared_ptr<const compiled_program>>
attach_manager::compile_locked(const store::program_info &p) {
    if (auto it = programs_.find(p.id);
        it != programs_.end() && it->second->revision() == p.revision) {
        return it->second;
    }
    vm::load_options lo;
    lo.resolver = [&](uint8_t kind, int32_t imm, int32_t next) -> result<vm::resolved_lddw> {
        uint32_t map_id = static_cast<uint32_t>(imm);
        if (kind != vm::pseudo_map_fd && kind != vm::pseudo_map_value) {
            return make_error(EINVAL, "lddw kind " + std::to_string(kind) +
                                          " cannot be resolved in the store");
        }
        std::optional<vm::memory_region> region;
        auto handle = map_handle(map_id, region);
        if (!handle) {
            return handle.err();
        }
        if (kind == vm::pseudo_map_fd) {
            // The handle is opaque: only the map's values are memory the program may touch.
            return vm::resolved_lddw{*handle, region, helpers::direct_lookup_of(*handle)};
        }
        uint64_t off = static_cast<uint32_t>(next);
        if (!region || off >= region->size) {
            return make_error(EINVAL, "offset " + std::to_string(off) +
                                          " is outside the values of map " +
                                          std::to_string(map_id));
        }
        return vm::resolved_lddw{region->start + off, region};
    };
    auto prog = vm::program::load(p.insns, lo);
    if (!prog) {
        return make_error(prog.err().code, "program " + std::to_string(p.id) + " (" + p.name +
                                               "): " + prog.err().message);
    }
    auto compiled = compiled_program::create(p.id, p.revision, p.name, std::move(*prog), engine_,
                                             engine_options_);
    if (!compiled) {
        return compiled.err();
    }
    programs_[p.id] = *compiled;
    return std::shared_ptr<const compiled_program>(*compiled);
}

result<std::shared_ptr<const compiled_program>> attach_manager::compile(uint32_t prog_id) {
    auto p = seg_->program(prog_id);
    if (!p) {
        return p.err();
    }
    std::lock_guard lock(mu_);
    return compile_locked(*p);
}

void attach_manager::detach_locked(uint32_t link_id) {
    auto it = attaches_.find(link_id);
    if (it == attaches_.end()) {
        return;
    }
    if (auto impl = impls_.find(it->second.type); impl != impls_.end()) {
        (void)impl->second->detach(it->second.attach_id);
    }
    attaches_.erase(it);
}

result<void> attach_manager::instantiate() {
    std::lock_guard lock(mu_);
    auto snap = seg_->read_all();
    if (!snap) {
        return snap.err();
    }
    std::string problems;
    auto problem = [&](const std::string &what) {
        problems += (problems.empty() ? "" : "; ") + what;
    };

    // Detach what is gone, disabled, or runs a program that was replaced.
    for (auto it = attaches_.begin(); it != attaches_.end();) {
        uint32_t link_id = it->first;
        const store::link_info *l = by_id(snap->links, link_id);
        const store::program_info *p = l ? by_id(snap->programs, l->prog_id) : nullptr;
        bool keep = l && l->enabled && p && p->id == it->second.prog_id &&
                    p->revision == it->second.prog_revision;
        ++it;
        if (!keep) {
            detach_locked(link_id);
        }
    }
    for (auto it = programs_.begin(); it != programs_.end();) {
        const store::program_info *p = by_id(snap->programs, it->first);
        it = (!p || p->revision != it->second->revision()) ? programs_.erase(it) : std::next(it);
    }
    for (auto it = map_handles_.begin(); it != map_handles_.end();) {
        if (by_id(snap->maps, it->first) == nullptr) {
            helpers::retire_map_handle(it->second);
            it = map_handles_.erase(it);
        } else {
            ++it;
        }
    }

    // Attach enabled links in creation order; links of types nobody here implements are
    // another host's business.
    for (const store::link_info &l : snap->links) {
        if (!l.enabled || attaches_.count(l.id) != 0) {
            continue;
        }
        const store::target_info *t = by_id(snap->targets, l.target_id);
        const store::program_info *p = by_id(snap->programs, l.prog_id);
        if (t == nullptr || p == nullptr) {
            continue;
        }
        auto impl = impls_.find(t->attach_type);
        if (impl == impls_.end()) {
            continue;
        }
        auto compiled = compile_locked(*p);
        if (!compiled) {
            problem("link " + std::to_string(l.id) + ": " + compiled.err().message);
            continue;
        }
        auto counters = seg_->counters(l.id);
        auto attached = std::make_shared<const attached_program>(
            l.id, *compiled, counters ? *counters : store::link_counters{}, l.cookie);
        auto id = impl->second->create_attach(attached, t->args);
        if (!id) {
            problem("link " + std::to_string(l.id) + ": " + id.err().message);
            continue;
        }
        attaches_[l.id] = {t->attach_type, *id, p->id, p->revision};
    }
    generation_ = snap->generation;
    if (!problems.empty()) {
        return make_error(EINVAL, problems);
    }
    return {};
}

void attach_manager::deinstantiate() {
    std::lock_guard lock(mu_);
    while (!attaches_.empty()) {
        detach_locked(attaches_.begin()->first);
    }
    programs_.clear();
    for (auto [id, handle] : map_handles_) {
        helpers::retire_map_handle(handle);
    }
    map_handles_.clear();
    generation_ = ~0ull;
}

std::optional<int> attach_manager::attach_id_of(uint32_t link_id) const {
    std::lock_guard lock(mu_);
    auto it = attaches_.find(link_id);
    return it == attaches_.end() ? std::nullopt : std::optional<int>(it->second.attach_id);
}

size_t attach_manager::attached_count() const {
    std::lock_guard lock(mu_);
    return attaches_.size();
}

} // namespace bpftime
