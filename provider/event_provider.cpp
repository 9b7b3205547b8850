// SPDX-License-Identifier: MIT
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/attach/syscalls.hpp>
#include <bpftime/provider/event_provider.hpp>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <span>

namespace bpftime {

event_provider_impl::event_provider_impl(std::shared_ptr<store::segment> seg, manager_options opts)
    : seg_(std::move(seg)), manager_(seg_, opts) {}

result<void> event_provider_impl::check_program(const program_spec &spec) {
    // Refuse here, where the controller sees the message, what every host would refuse:
    // validation first (its messages name the instruction), then the compile hosts do, with
    // their engine against the store's maps.
    vm::load_options lo;
    lo.resolver = [](uint8_t, int32_t, int32_t) -> result<vm::resolved_lddw> {
        return vm::resolved_lddw{};
    };
    if (auto r = vm::validate(spec.insns, lo); !r) {
        return make_error(r.err().code, "program " + spec.name + ": " + r.err().message);
    }
    for (uint32_t map_id : spec.map_ids) {
        if (auto m = seg_->map(map_id); !m) {
            return make_error(m.err().code, "program " + spec.name + " refers to map " +
                                                std::to_string(map_id) + ": " + m.err().message);
        }
    }
    store::program_info info;
    info.name = spec.name;
    info.type = spec.type;
    info.insns = spec.insns;
    info.map_ids = spec.map_ids;
    if (auto c = manager_.compile_spec(info); !c) {
        return make_error(c.err().code, c.err().message + " (hosts could not run it)");
    }
    return {};
}

result<uint32_t> event_provider_impl::create_program(const program_spec &spec) {
    if (auto r = check_program(spec); !r) {
        return r.err();
    }
    return seg_->create_program(spec.name, spec.type, spec.section, spec.insns, spec.map_ids);
}

result<void> event_provider_impl::replace_program(uint32_t prog_id, const program_spec &spec) {
    auto old = seg_->program(prog_id);
    if (!old) {
        return old.err();
    }
    if (auto r = check_program(spec); !r) {
        return r.err();
    }
    // Every link that runs it must still allow its helpers.
    auto snap = seg_->read_all();
    if (!snap) {
        return snap.err();
    }
    for (const store::link_info &l : snap->links) {
        for (const store::target_info &t : snap->targets) {
            if (l.prog_id == prog_id && t.id == l.target_id) {
                auto ok = check_program_helpers(spec.insns, prog_id, t.attach_type);
                if (ok) {
                    ok = check_return_override(spec.insns, prog_id, t.attach_type, t.args);
                }
                if (!ok) {
                    return make_error(ok.err().code, ok.err().message +
                                                         " (it is attached there "
                                                         "by link " +
                                                         std::to_string(l.id) + ")");
                }
            }
        }
    }
    return seg_->replace_program(prog_id, spec.insns, spec.map_ids);
}

result<void> event_provider_impl::check_link(uint32_t prog_id, uint32_t target_id) {
    auto p = seg_->program(prog_id);
    if (!p) {
        return p.err();
    }
    auto snap = seg_->read_all();
    if (!snap) {
        return snap.err();
    }
    for (const store::target_info &t : snap->targets) {
        if (t.id == target_id) {
            if (auto ok = check_program_type(prog_id, p->type, t.attach_type); !ok) {
                return ok;
            }
            if (auto ok = check_program_helpers(p->insns, prog_id, t.attach_type); !ok) {
                return ok;
            }
            return check_return_override(p->insns, prog_id, t.attach_type, t.args);
        }
    }
    // Not a target: the store says what it is.
    return {};
}

result<uint32_t> event_provider_impl::create_map(const map_create_spec &spec) {
    return seg_->create_map(spec.name, spec.spec, spec.initial_value, spec.read_only);
}

result<uint32_t> event_provider_impl::create_attach_target(int32_t attach_type,
                                                           const std::string &args) {
    auto type = find_attach_type(attach_type);
    if (!type) {
        return type.err();
    }
    if (!type->user) {
        return make_error(EOPNOTSUPP, "attach type " + type->name +
                                          " is attached by the kernel, not in user space; the "
                                          "kernel provider attaches it");
    }
    // System call tracepoints are hosted here (the agent), other tracepoints only by the
    // kernel; the number comes from the system call table, tracefs is not needed.
    if (attach_type == attach_type_tracepoint) {
        if (auto tp = parse_syscall_tracepoint(args); !tp) {
            return tp.err();
        }
    } else if (attach_type == attach_type_raw_tracepoint) {
        if (auto raw = parse_raw_syscall_tracepoint(args); !raw) {
            return raw.err();
        }
    } else if (auto ok = check_target_args(attach_type, args); !ok) {
        // Whether a uprobe's binary is mapped is for each host to find out.
        return ok.err();
    }
    return seg_->create_target(type->name, attach_type, args);
}

result<uint32_t> event_provider_impl::attach_program(uint32_t prog_id, uint32_t target_id,
                                                     uint64_t cookie) {
    if (auto ok = check_link(prog_id, target_id); !ok) {
        return ok.err();
    }
    return seg_->create_link("link", prog_id, target_id, true, cookie);
}

result<void> event_provider_impl::update_link(uint32_t link_id, uint32_t prog_id) {
    auto l = seg_->link(link_id);
    if (!l) {
        return l.err();
    }
    if (auto ok = check_link(prog_id, l->target_id); !ok) {
        return ok.err();
    }
    return seg_->set_link_program(link_id, prog_id);
}

result<void> event_provider_impl::enable_link(uint32_t link_id) {
    return seg_->set_link_enabled(link_id, true);
}

result<void> event_provider_impl::disable_link(uint32_t link_id) {
    return seg_->set_link_enabled(link_id, false);
}

result<void> event_provider_impl::destroy_object(uint32_t id) {
    return seg_->destroy(id);
}

result<listing> event_provider_impl::list() const {
    auto snap = seg_->read_all();
    if (!snap) {
        return snap.err();
    }
    listing out{std::move(*snap), {}, true, {}};
    out.run_timing = seg_->run_timing();
    if (auto hosts = seg_->link_host_states()) {
        out.link_hosts = std::move(*hosts);
    }
    if (auto retired = seg_->retired()) {
        out.retired = std::move(*retired);
    }
    return out;
}

namespace {

// A map of the store, through a view of its shared storage.
class store_map_access final : public map_access {
public:
    store_map_access(store::map_info info, maps::map_view view, std::shared_ptr<store::segment> seg)
        : info_(std::move(info)), view_(view), seg_(std::move(seg)) {}
    const store::map_info &info() const override { return info_; }
    result<std::vector<uint8_t>> read(std::span<const uint8_t> key) const override {
        return view_.read(key);
    }
    result<void> write(std::span<const uint8_t> key, std::span<const uint8_t> value,
                       uint64_t flags) const override {
        // Read-only data (.rodata) is frozen once loaded, as the kernel provider freezes it.
        if (info_.read_only) {
            return make_error(EPERM, "map " + std::to_string(info_.id) + " (" + info_.name +
                                         ") is read-only data, frozen when it was loaded; give "
                                         "its variables their values at load with "
                                         "`bpftime load FILE --set NAME=VALUE`");
        }
        if (info_.spec.type == maps::map_type::prog_array && value.size() == sizeof(uint32_t)) {
            // A slot names a program of this store by id, as a program fd names one in Linux.
            uint32_t id = 0;
            std::memcpy(&id, value.data(), sizeof id);
            if (auto p = seg_->program(id); !p) {
                return make_error(EINVAL, "map " + std::to_string(info_.id) +
                                              " is a prog_array: its values are program ids, and " +
                                              std::to_string(id) + " is not one (" +
                                              p.err().message + ")");
            }
        }
        if (maps::is_map_in_map(info_.spec.type)) {
            // A value names an inner map of this store by id, as a map fd names one in Linux;
            // the store checks it against the template under its lock.
            if (value.size() != sizeof(uint32_t)) {
                return make_error(EINVAL, "map " + std::to_string(info_.id) + " is an " +
                                              maps::map_type_name(info_.spec.type) +
                                              ": its values are inner map ids (4 bytes), not " +
                                              std::to_string(value.size()) + " bytes");
            }
            if (auto k = maps::check_key(info_.spec, key, false); !k) {
                return k;
            }
            uint32_t id = 0;
            std::memcpy(&id, value.data(), sizeof id);
            return seg_->set_inner_map(info_.id, key, id, flags);
        }
        return view_.write(key, value, flags);
    }
    result<void> erase(std::span<const uint8_t> key) const override { return view_.erase(key); }
    result<std::optional<std::vector<uint8_t>>>
    next_key(std::span<const uint8_t> key) const override {
        return view_.next_key(key);
    }
    uint64_t count() const override { return view_.count(); }
    result<void> push(std::span<const uint8_t> value, uint64_t flags) const override {
        return view_.push(value, flags);
    }
    result<std::vector<uint8_t>> pop() const override { return view_.pop(); }
    result<std::vector<std::vector<uint8_t>>> values() const override { return view_.values(); }
    result<std::vector<uint8_t>> peek(std::span<const uint8_t> value) const override {
        return view_.peek(value);
    }
    result<uint64_t> consume(const std::function<void(std::span<const uint8_t>)> &fn,
                             uint64_t max) override {
        return view_.ringbuf_consume(fn, max);
    }
    void wait(int timeout_ms) override { view_.ringbuf_wait(timeout_ms); }
    uint64_t lost() const override { return view_.ringbuf_lost(); }

private:
    store::map_info info_;
    maps::map_view view_;
    std::shared_ptr<store::segment> seg_;
};

} // namespace

result<std::unique_ptr<map_access>> event_provider_impl::open_map(uint32_t id) const {
    auto info = seg_->map(id);
    if (!info) {
        return info.err();
    }
    auto view = seg_->map_view(id);
    if (!view) {
        return view.err();
    }
    return std::unique_ptr<map_access>(std::make_unique<store_map_access>(*info, *view, seg_));
}

result<void> event_provider_impl::instantiate() {
    return manager_.instantiate();
}

void event_provider_impl::deinstantiate() {
    manager_.deinstantiate();
}

result<loaded_object> load_object(base_event_provider &provider, const loader::elf_object &obj,
                                  const load_progress &on_step) {
    loaded_object out;
    const size_t total = obj.maps.size() + obj.programs.size();
    auto step = [&] {
        if (on_step) {
            on_step(out.maps.size() + out.programs.size(), total);
        }
    };
    auto undo = [&](error e) -> error {
        for (auto it = out.programs.rbegin(); it != out.programs.rend(); ++it) {
            (void)provider.destroy_object(it->first);
        }
        // Outer maps first: a map cannot be destroyed while one holds it.
        for (bool outer : {true, false}) {
            for (auto it = out.maps.rbegin(); it != out.maps.rend(); ++it) {
                size_t i = static_cast<size_t>(std::distance(it, out.maps.rend())) - 1;
                if (maps::is_map_in_map(obj.maps[i].spec.type) == outer) {
                    (void)provider.destroy_object(it->first);
                }
            }
        }
        return e;
    };
    std::vector<uint32_t> map_ids;
    for (const loader::elf_map &m : obj.maps) {
        auto id = provider.create_map({m.name, m.spec, m.initial_value, m.read_only});
        if (!id) {
            return undo(
                make_error(id.err().code, obj.path + ": map " + m.name + ": " + id.err().message));
        }
        map_ids.push_back(*id);
        out.maps.emplace_back(*id, m.name);
        step();
    }
    // The inner maps outer maps start with, once every map exists.
    for (size_t i = 0; i < obj.maps.size(); i++) {
        const loader::elf_map &m = obj.maps[i];
        if (m.inner_maps.empty()) {
            continue;
        }
        auto outer = provider.open_map(map_ids[i]);
        if (!outer) {
            return undo(make_error(outer.err().code,
                                   obj.path + ": map " + m.name + ": " + outer.err().message));
        }
        for (const auto &[slot, inner] : m.inner_maps) {
            if (inner >= map_ids.size()) {
                return undo(make_error(EINVAL, obj.path + ": map " + m.name +
                                                   " names a map the object lacks"));
            }
            uint32_t id = map_ids[inner];
            auto key = std::as_bytes(std::span(&slot, 1));
            auto value = std::as_bytes(std::span(&id, 1));
            auto w = (*outer)->write(
                {reinterpret_cast<const uint8_t *>(key.data()), key.size()},
                {reinterpret_cast<const uint8_t *>(value.data()), value.size()}, maps::update_any);
            if (!w) {
                return undo(make_error(
                    w.err().code, obj.path + ": map " + m.name + " slot " + std::to_string(slot) +
                                      " (map " + obj.maps[inner].name + "): " + w.err().message));
            }
        }
    }
    for (const loader::elf_program &p : obj.programs) {
        program_spec spec{p.name, p.type, p.section, p.insns, {}};
        // The loader names maps by their index in the object; the store names them by id.
        for (size_t pc = 0; pc + 1 < spec.insns.size(); pc++) {
            vm::ebpf_inst &inst = spec.insns[pc];
            if (inst.opcode != vm::op_lddw) {
                continue;
            }
            if (inst.src == vm::pseudo_map_idx || inst.src == vm::pseudo_map_idx_value) {
                auto index = static_cast<size_t>(static_cast<uint32_t>(inst.imm));
                if (index >= map_ids.size()) {
                    return undo(make_error(EINVAL, obj.path + ": program " + p.name +
                                                       ": instruction " + std::to_string(pc) +
                                                       " names map " + std::to_string(index) +
                                                       ", which the object lacks"));
                }
                inst.src =
                    inst.src == vm::pseudo_map_idx ? vm::pseudo_map_fd : vm::pseudo_map_value;
                inst.imm = static_cast<int32_t>(map_ids[index]);
                if (std::find(spec.map_ids.begin(), spec.map_ids.end(), map_ids[index]) ==
                    spec.map_ids.end()) {
                    spec.map_ids.push_back(map_ids[index]);
                }
            }
            pc++;
        }
        auto id = provider.create_program(spec);
        if (!id) {
            return undo(make_error(id.err().code, obj.path + ": " + id.err().message));
        }
        out.programs.emplace_back(*id, p.name);
        out.sections.push_back(p.section);
        step();
    }
    return out;
}

} // namespace bpftime
