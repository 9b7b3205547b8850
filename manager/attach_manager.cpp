// SPDX-License-Identifier: MIT
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/hook/pause.hpp>
#include <bpftime/manager/attach_manager.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <unistd.h>

namespace bpftime {

static_assert(store::max_host_maps == helpers::max_map_handles,
              "the store refuses at load what a host could not hold");

namespace {

template <class T>
const T *by_id(const std::vector<T> &objects, uint32_t id) {
    auto it = std::find_if(objects.begin(), objects.end(), [&](const T &o) { return o.id == id; });
    return it == objects.end() ? nullptr : &*it;
}

// Perf rings for bpf_perf_event_output, by store id. Each thread keeps the views it found until
// the segment changes (a ring is made or destroyed with its perf event), so a probe does not read
// the object table for every record.
helpers::map_resolver ring_resolver(const std::shared_ptr<store::segment> &seg) {
    return
        [weak = std::weak_ptr<store::segment>(seg)](uint32_t id) -> std::optional<maps::map_view> {
            auto s = weak.lock();
            if (!s) {
                return std::nullopt;
            }
            struct cached {
                const store::segment *seg;
                uint64_t generation;
                std::vector<std::pair<uint32_t, maps::map_view>> views;
            };
            thread_local cached cache{nullptr, 0, {}};
            uint64_t gen = s->generation();
            if (cache.seg != s.get() || cache.generation != gen) {
                cache = {s.get(), gen, {}};
            }
            for (const auto &[cached_id, view] : cache.views) {
                if (cached_id == id) {
                    return view;
                }
            }
            auto view = s->map_view(id);
            if (!view) {
                return std::nullopt;
            }
            if (cache.views.size() < 64) {
                cache.views.emplace_back(id, *view);
            }
            return *view;
        };
}

} // namespace

// Programs compiled here by (store id, helper set), published for bpf_tail_call. The resolver
// never waits for the manager's lock (a host may hold it while it waits for the threads that run
// programs to leave a hook): a program not compiled yet is compiled only when the lock is free.
struct attach_manager::tail_calls {
    std::shared_mutex life; // shared while a resolver uses mgr; the manager's end takes it
    attach_manager *mgr = nullptr;
    std::mutex mu;
    std::shared_ptr<const std::map<program_key, std::shared_ptr<const compiled_program>>> table;
};

namespace {

helpers::program_resolver
program_resolver(const std::shared_ptr<attach_manager::tail_calls> &state) {
    return
        [weak = std::weak_ptr<attach_manager::tail_calls>(state)](
            uint32_t id, const vm::helper_registry *caller) -> result<helpers::tail_call_target> {
            auto st = weak.lock();
            if (!st) {
                return make_error(ENOENT, "no attach manager");
            }
            auto lookup = [&]() -> std::optional<helpers::tail_call_target> {
                std::lock_guard lock(st->mu);
                if (st->table) {
                    if (auto it = st->table->find({id, caller}); it != st->table->end()) {
                        return helpers::tail_call_target{&it->second->engine(), it->second};
                    }
                }
                return std::nullopt;
            };
            if (auto t = lookup()) {
                return *t;
            }
            std::shared_lock life(st->life);
            if (st->mgr == nullptr) {
                return make_error(ENOENT, "the attach manager is gone");
            }
            if (auto r = st->mgr->compile_tail_call_target(id, caller); !r) {
                return r.err();
            }
            if (auto t = lookup()) {
                return *t;
            }
            return make_error(EINVAL, "program " + std::to_string(id) + " cannot run here");
        };
}

} // namespace

attach_manager::attach_manager(std::shared_ptr<store::segment> seg, manager_options opts)
    : seg_(std::move(seg)), engine_(opts.engine.value_or(vm::available_engines().front())),
      engine_options_(opts.engine_options), report_link_states_(opts.report_link_states),
      tail_calls_(std::make_shared<tail_calls>()) {
    tail_calls_->mgr = this;
    helpers::register_all();
    helpers::set_map_resolver(ring_resolver(seg_));
    helpers::set_program_resolver(program_resolver(tail_calls_));
}

attach_manager::~attach_manager() {
    {
        std::unique_lock life(tail_calls_->life);
        tail_calls_->mgr = nullptr;
    }
    deinstantiate();
}

result<void> attach_manager::compile_tail_call_target(uint32_t prog_id,
                                                      const vm::helper_registry *caller) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) {
        return make_error(EAGAIN, "the host is synchronising with the store");
    }
    std::shared_ptr<const vm::helper_registry> registry;
    if (caller == &vm::helper_registry::global()) {
        registry = std::shared_ptr<const vm::helper_registry>(std::shared_ptr<void>(), caller);
    }
    for (const auto &[type, r] : registries_) {
        if (r.get() == caller) {
            registry = r;
        }
    }
    if (!registry) {
        return make_error(EINVAL, "the caller's helpers are not this host's");
    }
    auto p = seg_->program(prog_id);
    if (!p) {
        return p.err();
    }
    auto compiled = compile_locked(*p, registry, true);
    if (!compiled) {
        return compiled.err();
    }
    publish_programs();
    return {};
}

void attach_manager::publish_programs() {
    auto table =
        std::make_shared<const std::map<program_key, std::shared_ptr<const compiled_program>>>(
            programs_);
    std::lock_guard lock(tail_calls_->mu);
    tail_calls_->table = std::move(table);
}

void attach_manager::compile_tail_call_targets(const store::snapshot &snap) {
    std::vector<uint32_t> members;
    for (const store::map_info &m : snap.maps) {
        if (m.spec.type != maps::map_type::prog_array) {
            continue;
        }
        auto view = seg_->map_view(m.id);
        if (!view) {
            continue;
        }
        for (uint32_t i = 0; i < m.spec.max_entries; i++) {
            long id = view->prog_array_id(i);
            if (id > 0 && std::find(members.begin(), members.end(), id) == members.end()) {
                members.push_back(static_cast<uint32_t>(id));
            }
        }
    }
    std::vector<std::shared_ptr<const vm::helper_registry>> registries;
    for (const auto &[type, r] : registries_) {
        registries.push_back(r);
    }
    for (uint32_t id : members) {
        const store::program_info *p = by_id(snap.programs, id);
        if (p == nullptr) {
            continue;
        }
        for (const auto &r : registries) {
            // A member that cannot compile here makes its tail calls fail (-EINVAL), as a
            // slot naming a program of the wrong type does.
            (void)compile_locked(*p, r, true);
        }
    }
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

result<std::shared_ptr<const helpers::map_handle>>
attach_manager::map_handle(uint32_t map_id, std::optional<vm::memory_region> &region) {
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
    auto it = map_handles_.find(map_id);
    if (it == map_handles_.end()) {
        auto handle = helpers::make_map_handle(*view);
        if (!handle) {
            return make_error(handle.err().code,
                              "map " + std::to_string(map_id) + ": " + handle.err().message);
        }
        it = map_handles_.emplace(map_id, std::move(*handle)).first;
    }
    return it->second;
}

result<std::shared_ptr<const vm::helper_registry>> attach_manager::registry_for(int32_t type) {
    if (auto it = registries_.find(type); it != registries_.end()) {
        return it->second;
    }
    auto r = helpers_for(type);
    if (!r) {
        return r.err();
    }
    registries_[type] = *r;
    return r;
}

result<std::shared_ptr<const compiled_program>>
attach_manager::compile_locked(const store::program_info &p,
                               const std::shared_ptr<const vm::helper_registry> &registry,
                               bool cache) {
    program_key key{p.id, registry.get()};
    if (auto it = programs_.find(key);
        cache && it != programs_.end() && it->second->revision() == p.revision) {
        return it->second;
    }
    std::vector<std::shared_ptr<const void>> keep{registry};
    vm::load_options lo;
    lo.helpers = registry.get();
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
        keep.push_back(*handle);
        if (kind == vm::pseudo_map_fd) {
            // The handle is opaque: only the map's values are memory the program may touch.
            uint64_t value = (*handle)->value();
            return vm::resolved_lddw{value, region, helpers::direct_lookup_of(value)};
        }
        uint64_t off = static_cast<uint32_t>(next);
        if (!region || off >= region->size) {
            return make_error(EINVAL, "offset " + std::to_string(off) +
                                          " is outside the values of map " +
                                          std::to_string(map_id));
        }
        return vm::resolved_lddw{region->start + off, region};
    };
    // A program not in the store yet (compile_spec) has no id.
    std::string what =
        p.id != 0 ? "program " + std::to_string(p.id) + " (" + p.name + ")" : "program " + p.name;
    auto prog = vm::program::load(p.insns, lo);
    if (!prog) {
        return make_error(prog.err().code, what + ": " + prog.err().message);
    }
    auto compiled = compiled_program::create(p.id, p.revision, p.name, std::move(*prog), engine_,
                                             engine_options_, std::move(keep));
    if (!compiled) {
        return make_error(compiled.err().code, what + ": " + compiled.err().message);
    }
    if (cache) {
        programs_[key] = *compiled;
    }
    return std::shared_ptr<const compiled_program>(*compiled);
}

result<std::shared_ptr<const compiled_program>> attach_manager::compile(uint32_t prog_id) {
    auto p = seg_->program(prog_id);
    if (!p) {
        return p.err();
    }
    std::lock_guard lock(mu_);
    // Not owned: the global registry lives as long as the process.
    std::shared_ptr<const vm::helper_registry> all(std::shared_ptr<void>(),
                                                   &vm::helper_registry::global());
    return compile_locked(*p, all, true);
}

result<std::shared_ptr<const compiled_program>>
attach_manager::compile_spec(const store::program_info &p) {
    std::lock_guard lock(mu_);
    std::shared_ptr<const vm::helper_registry> all(std::shared_ptr<void>(),
                                                   &vm::helper_registry::global());
    // A controller compiles many programs it never runs: the handles it made for this one go
    // with the result rather than staying cached here.
    auto before = map_handles_;
    auto compiled = compile_locked(p, all, false);
    map_handles_ = std::move(before);
    return compiled;
}

std::vector<link_failure> attach_manager::failures() const {
    std::lock_guard lock(mu_);
    std::vector<link_failure> out;
    for (const auto &[id, f] : failures_) {
        out.push_back(f);
    }
    return out;
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

bool attach_manager::runs_before_ended() const {
    vm::run_census census = vm::take_run_census();
    const auto until = std::chrono::steady_clock::now() + run_wait_limit;
    auto pause = std::chrono::microseconds(20);
    while (!vm::runs_ended(census)) {
        if (std::chrono::steady_clock::now() >= until) {
            return false;
        }
        // Never nanosleep: instantiate() may run in a thread `bpftime inject` borrowed.
        pause_for(pause);
        pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(5));
    }
    return true;
}

result<void> attach_manager::instantiate() {
    std::lock_guard lock(mu_);
    if (auto pid = static_cast<int32_t>(getpid()); host_pid_ != pid) {
        // Before the first read: storage destroyed from now on is kept for this process. A fork
        // child holds what its parent held when it last synchronised.
        auto r = seg_->host_passed(host_pid_ == 0 ? UINT64_MAX : synced_);
        if (!r) {
            return make_error(r.err().code, "cannot register as a host of segment " + seg_->name() +
                                                ": " + r.err().message);
        }
        host_pid_ = pid;
    }
    auto snap = seg_->read_all();
    if (!snap) {
        return snap.err();
    }
    failures_.clear();
    auto fail = [&](const store::link_info &l, int32_t type, const error &e) {
        failures_[l.id] = {l.id, type,
                           make_error(e.code, "link " + std::to_string(l.id) + ": " + e.message)};
    };

    // Detach what is gone or disabled; links whose program changed are switched below.
    for (auto it = attaches_.begin(); it != attaches_.end();) {
        uint32_t link_id = it->first;
        const store::link_info *l = by_id(snap->links, link_id);
        const store::target_info *t = l ? by_id(snap->targets, l->target_id) : nullptr;
        ++it;
        if (l == nullptr || !l->enabled || t == nullptr) {
            detach_locked(link_id);
        }
    }
    for (auto it = programs_.begin(); it != programs_.end();) {
        const store::program_info *p = by_id(snap->programs, it->first.first);
        it = (!p || p->revision != it->second->revision()) ? programs_.erase(it) : std::next(it);
    }
    // Compiled programs hold their handles; a gone map's handle goes with the last of them.
    for (auto it = map_handles_.begin(); it != map_handles_.end();) {
        it = by_id(snap->maps, it->first) == nullptr ? map_handles_.erase(it) : std::next(it);
    }
    // Inner maps programs reached through outer maps, the same way.
    helpers::release_inner_maps([&](uint32_t id) { return by_id(snap->maps, id) != nullptr; });

    // A damaged record may be a link of any host's, or the target that says which: every host
    // counts it as a failure of a link of unknown type (a filter then applies its fail policy).
    auto damaged = [&](uint32_t id) -> const store::damaged_object * {
        for (const store::damaged_object &d : snap->damaged) {
            if (d.id == id) {
                return &d;
            }
        }
        return nullptr;
    };
    for (const store::damaged_object &d : snap->damaged) {
        store::link_info l;
        l.id = d.id;
        fail(l, 0, make_error(EPROTO, "object " + std::to_string(d.id) + " is damaged: " + d.why));
    }

    // Attach enabled links in creation order; links of types nobody here implements are
    // another host's business.
    for (const store::link_info &l : snap->links) {
        if (!l.enabled) {
            continue;
        }
        const store::target_info *t = by_id(snap->targets, l.target_id);
        if (t == nullptr) {
            if (const store::damaged_object *d = damaged(l.target_id)) {
                fail(l, 0,
                     make_error(EPROTO, "its target " + std::to_string(l.target_id) +
                                            " is damaged: " + d->why));
            }
            continue;
        }
        auto impl = impls_.find(t->attach_type);
        if (impl == impls_.end()) {
            continue;
        }
        auto now = attaches_.find(l.id);
        const store::program_info *p = by_id(snap->programs, l.prog_id);
        if (now != attaches_.end() && p != nullptr && now->second.prog_id == p->id &&
            now->second.prog_revision == p->revision) {
            continue;
        }
        auto drop_old = [&] { detach_locked(l.id); };
        if (p == nullptr) {
            drop_old();
            fail(l, t->attach_type,
                 make_error(ENOENT, "program " + std::to_string(l.prog_id) + " is gone"));
            continue;
        }
        if (auto ok = check_program_helpers(p->insns, p->id, t->attach_type); !ok) {
            drop_old();
            fail(l, t->attach_type, ok.err());
            continue;
        }
        auto registry = registry_for(t->attach_type);
        if (!registry) {
            drop_old();
            fail(l, t->attach_type, registry.err());
            continue;
        }
        auto compiled = compile_locked(*p, *registry, true);
        if (!compiled) {
            drop_old();
            fail(l, t->attach_type, compiled.err());
            continue;
        }
        // A host that reports its states counts in its own record, so the listing shows what
        // each process ran; without one (or with the lock busy) on the link's own counters.
        auto counters = report_link_states_
                            ? seg_->host_counters(l.id, static_cast<int32_t>(getpid()))
                            : result<store::link_counters>(make_error(ENOENT, "no host record"));
        if (!counters) {
            counters = seg_->counters(l.id);
        }
        auto attached = std::make_shared<const attached_program>(
            l.id, *compiled, counters ? *counters : store::link_counters{}, l.cookie);
        // A link whose program changed switches to the new one without a moment of neither.
        auto id = now != attaches_.end()
                      ? impl->second->replace_attach(now->second.attach_id, attached, t->args)
                      : impl->second->create_attach(attached, t->args);
        if (!id) {
            drop_old();
            fail(l, t->attach_type, id.err());
            continue;
        }
        attaches_[l.id] = {t->attach_type, *id, p->id, p->revision};
    }
    compile_tail_call_targets(*snap);
    publish_programs();
    generation_ = synced_ = snap->generation;
    if (report_link_states_) {
        report_states(*snap);
    }
    // Every handle of a map that is gone was released above (compiled programs that named one
    // went with their links, whose detach waits for the runs inside them): storage destroyed
    // up to this generation is no longer reachable from runs that start now. Runs in progress
    // on other threads may still hold it (an inner map a lookup in an outer map gave them),
    // so the generation is passed only once each of them ended. When they take longer, or the
    // lock is busy, the next poll synchronises again and says it then.
    if (!runs_before_ended() || !seg_->host_passed(snap->generation)) {
        generation_ = ~0ull;
    }
    if (!failures_.empty()) {
        std::string problems;
        for (const auto &[id, f] : failures_) {
            problems += (problems.empty() ? "" : "; ") + f.err.message;
        }
        return make_error(failures_.begin()->second.err.code, problems);
    }
    return {};
}

// Writes what changed since the last report; a segment that cannot take it (full, locked for
// too long) only costs the listing its detail.
void attach_manager::report_states(const store::snapshot &snap) {
    auto pid = static_cast<int32_t>(getpid());
    std::map<uint32_t, std::string> now;
    for (const store::link_info &l : snap.links) {
        const store::target_info *t = by_id(snap.targets, l.target_id);
        if (!l.enabled || t == nullptr || impls_.count(t->attach_type) == 0) {
            continue;
        }
        auto f = failures_.find(l.id);
        now[l.id] = f == failures_.end() ? std::string() : "!" + f->second.err.message;
    }
    // A write the segment refused (its lock held by another process: other hosts starting at
    // the same moment) is not recorded as reported, and the next synchronisation tries again.
    bool pending = false;
    std::map<uint32_t, std::string> written;
    for (const auto &[link_id, state] : now) {
        auto it = reported_.find(link_id);
        if (it != reported_.end() && it->second == state) {
            written.emplace(link_id, state);
            continue;
        }
        store::link_host_state s{pid, !state.empty(), state.empty() ? "" : state.substr(1)};
        if (seg_->set_link_host_state(link_id, s)) {
            written.emplace(link_id, state);
        } else {
            pending = true;
            if (it != reported_.end()) {
                written.emplace(link_id, it->second);
            }
        }
    }
    for (const auto &[link_id, state] : reported_) {
        if (now.count(link_id) == 0 && by_id(snap.links, link_id) != nullptr &&
            !seg_->clear_link_host_state(link_id, pid)) {
            pending = true;
            written.emplace(link_id, state);
        }
    }
    reported_ = std::move(written);
    report_pending_ = pending;
}

void attach_manager::deinstantiate() {
    std::lock_guard lock(mu_);
    while (!attaches_.empty()) {
        detach_locked(attaches_.begin()->first);
    }
    programs_.clear();
    publish_programs();
    map_handles_.clear();
    failures_.clear();
    if (report_link_states_) {
        auto pid = static_cast<int32_t>(getpid());
        for (const auto &[link_id, state] : reported_) {
            (void)seg_->clear_link_host_state(link_id, pid);
        }
    }
    reported_.clear();
    report_pending_ = false;
    generation_ = ~0ull;
    if (host_pid_ == static_cast<int32_t>(getpid()) && seg_->host_leave()) {
        host_pid_ = 0;
    }
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
