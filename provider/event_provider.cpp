// SPDX-License-Identifier: MIT
#include <bpftime/provider/event_provider.hpp>

#include <algorithm>

namespace bpftime {

event_provider_impl::event_provider_impl(std::shared_ptr<store::segment> seg, manager_options opts)
    : seg_(std::move(seg)), manager_(seg_, opts) {}

result<uint32_t> event_provider_impl::create_program(const program_spec &spec) {
    // Refuse a malformed program here, where the controller sees the message, rather than in
    // every host. Map references are checked against the store when it is written.
    vm::load_options lo;
    lo.resolver = [](uint8_t, int32_t, int32_t) -> result<vm::resolved_lddw> {
        return vm::resolved_lddw{};
    };
    if (auto r = vm::validate(spec.insns, lo); !r) {
        return make_error(r.err().code, "program " + spec.name + ": " + r.err().message);
    }
    return seg_->create_program(spec.name, spec.type, spec.section, spec.insns, spec.map_ids);
}

result<uint32_t> event_provider_impl::create_map(const map_create_spec &spec) {
    return seg_->create_map(spec.name, spec.spec, spec.initial_value, spec.read_only);
}

result<uint32_t> event_provider_impl::create_attach_target(int32_t attach_type,
                                                           const std::string &args) {
    auto types = attach_types();
    if (std::none_of(types.begin(), types.end(),
                     [&](const attach_type_info &t) { return t.type == attach_type; })) {
        return make_error(EINVAL, "unknown attach type " + std::to_string(attach_type));
    }
    return seg_->create_target(attach_type_name(attach_type), attach_type, args);
}

result<uint32_t> event_provider_impl::attach_program(uint32_t prog_id, uint32_t target_id) {
    return seg_->create_link("link", prog_id, target_id, true);
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

result<void> event_provider_impl::instantiate() {
    return manager_.instantiate();
}

void event_provider_impl::deinstantiate() {
    manager_.deinstantiate();
}

result<loaded_object> load_object(base_event_provider &provider, const loader::elf_object &obj) {
    loaded_object out;
    auto undo = [&](error e) -> error {
        for (auto it = out.programs.rbegin(); it != out.programs.rend(); ++it) {
            (void)provider.destroy_object(it->first);
        }
        for (auto it = out.maps.rbegin(); it != out.maps.rend(); ++it) {
            (void)provider.destroy_object(it->first);
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
    }
    return out;
}

} // namespace bpftime
