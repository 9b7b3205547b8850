// SPDX-License-Identifier: MIT
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/attach/syscalls.hpp>
#include <bpftime/provider/event_provider.hpp>

#include <bpftime/helpers/helpers.hpp>
#include <bpftime/vm/control_flow.hpp>

#include <bpf/libbpf.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iterator>
#include <span>

#include <sched.h>
#include <unistd.h>

namespace bpftime {

event_provider_impl::event_provider_impl(std::shared_ptr<store::segment> seg, manager_options opts)
    : seg_(std::move(seg)), manager_(seg_, opts) {}

namespace {

constexpr int32_t helper_snprintf = 165;

// What straight-line code before pc leaves in register reg, when it is a constant or the
// address of a map value: the lddw (src 2) that set it and the constant added since, or a
// mov of a constant (map_id 0). Only within the basic block: a jump into the code between
// makes it unknown, as does any other write of the register or a call.
struct known_value {
    uint32_t map_id = 0; ///< 0: a constant
    int64_t value = 0;   ///< the constant, or the offset into the map value
};

std::optional<known_value> value_before(std::span<const vm::ebpf_inst> insns,
                                        const std::vector<bool> &jump_target, size_t pc,
                                        uint8_t reg, int depth = 0) {
    int64_t added = 0;
    for (size_t i = pc; i-- > 0;) {
        if (jump_target[i + 1]) {
            return std::nullopt; // reached from elsewhere too
        }
        const vm::ebpf_inst &in = insns[i];
        if (i > 0 && insns[i - 1].opcode == vm::op_lddw) {
            continue; // the second half of an lddw
        }
        uint8_t cls = vm::op_class(in.opcode);
        if (in.opcode == vm::op_call || in.opcode == vm::op_callx) {
            if (reg <= 5) {
                return std::nullopt; // calls clobber r0-r5
            }
            continue;
        }
        bool writes = false;
        if (cls == vm::cls_alu || cls == vm::cls_alu64 || cls == vm::cls_ldx || cls == vm::cls_ld) {
            writes = in.dst == reg;
        } else if (cls == vm::cls_stx && (in.opcode & 0xe0) == vm::mode_atomic) {
            writes = ((in.imm & vm::atomic_fetch) != 0 && in.src == reg) ||
                     (in.imm == vm::atomic_cmpxchg && reg == 0);
        }
        if (!writes) {
            continue;
        }
        if (in.opcode == vm::op_lddw && in.src == vm::pseudo_map_value && i + 1 < insns.size()) {
            return known_value{static_cast<uint32_t>(in.imm), insns[i + 1].imm + added};
        }
        if (in.opcode == (vm::cls_alu64 | vm::alu_mov | vm::src_k) ||
            in.opcode == (vm::cls_alu | vm::alu_mov | vm::src_k)) {
            int64_t v = cls == vm::cls_alu ? static_cast<int64_t>(static_cast<uint32_t>(in.imm))
                                           : static_cast<int64_t>(in.imm);
            return known_value{0, v + added};
        }
        if (in.opcode == (vm::cls_alu64 | vm::alu_add | vm::src_k)) {
            added += in.imm;
            continue;
        }
        if (in.opcode == (vm::cls_alu64 | vm::alu_mov | vm::src_x) && depth < 4 && in.offset == 0) {
            auto from = value_before(insns, jump_target, i, in.src, depth + 1);
            if (!from) {
                return std::nullopt;
            }
            from->value += added;
            return from;
        }
        return std::nullopt;
    }
    return std::nullopt;
}

} // namespace

result<void> event_provider_impl::check_snprintf_formats(const program_spec &spec) const {
    std::span<const vm::ebpf_inst> insns = spec.insns;
    std::vector<bool> jump_target(insns.size() + 1, false);
    for (size_t pc = 0; pc < insns.size(); pc++) {
        uint8_t cls = vm::op_class(insns[pc].opcode);
        if ((cls == vm::cls_jmp || cls == vm::cls_jmp32) && insns[pc].opcode != vm::op_call &&
            insns[pc].opcode != vm::op_callx && insns[pc].opcode != vm::op_exit) {
            int64_t t = vm::jump_target(insns[pc], pc);
            if (t >= 0 && static_cast<size_t>(t) <= insns.size()) {
                jump_target[static_cast<size_t>(t)] = true;
            }
        } else if (vm::is_local_call(insns[pc]) || vm::is_code_address(insns[pc])) {
            int64_t t = vm::call_target(insns[pc], pc);
            if (t >= 0 && static_cast<size_t>(t) <= insns.size()) {
                jump_target[static_cast<size_t>(t)] = true; // a function starts there
            }
        }
    }
    for (size_t pc = 0; pc < insns.size(); pc++) {
        const vm::ebpf_inst &in = insns[pc];
        if (in.opcode != vm::op_call || in.src != vm::call_helper || in.imm != helper_snprintf) {
            continue;
        }
        // The kernel checks the format when it is a constant string of a read-only map; so
        // do we. Any other format is checked at each call (-EINVAL).
        auto fmt = value_before(insns, jump_target, pc, 3);
        auto len = value_before(insns, jump_target, pc, 5);
        if (!fmt || fmt->map_id == 0 || !len || len->map_id != 0) {
            continue;
        }
        auto info = seg_->map(fmt->map_id);
        if (!info || !info->read_only || info->spec.key_size != 4) {
            continue;
        }
        auto view = seg_->map_view(fmt->map_id);
        if (!view) {
            continue;
        }
        uint32_t zero = 0;
        auto value = view->read({reinterpret_cast<const uint8_t *>(&zero), sizeof zero});
        if (!value) {
            continue;
        }
        auto where = [&] {
            return "program " + spec.name + ": instruction " + std::to_string(pc) +
                   " calls snprintf (165) with the format at offset " + std::to_string(fmt->value) +
                   " of read-only map " + std::to_string(fmt->map_id) + " (" + info->name + ")";
        };
        if (fmt->value < 0 || static_cast<uint64_t>(fmt->value) >= value->size()) {
            return make_error(EINVAL, where() + ", which is outside its " +
                                          std::to_string(value->size()) + "-byte value");
        }
        const char *start = reinterpret_cast<const char *>(value->data()) + fmt->value;
        size_t room = value->size() - static_cast<size_t>(fmt->value);
        size_t n = strnlen(start, room);
        if (n == room) {
            return make_error(EINVAL,
                              where() + ": the string is not NUL-terminated within the map value");
        }
        std::string_view text(start, n);
        if (len->value < 0 || len->value % 8 != 0) {
            return make_error(EINVAL, where() + ": data_len " + std::to_string(len->value) +
                                          " is not a multiple of 8 (the data is an array of "
                                          "u64 arguments)");
        }
        std::string problem =
            helpers::snprintf_format_problem(text, static_cast<uint64_t>(len->value) / 8);
        if (!problem.empty()) {
            return make_error(EINVAL, where() + ", \"" + std::string(text) + "\": " + problem +
                                          "; Linux's verifier refuses it as an invalid format "
                                          "string");
        }
    }
    return {};
}

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
    if (auto r = check_snprintf_formats(spec); !r) {
        return r;
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

// A program type as Linux names it (libbpf's names), with its number.
std::string prog_type_label(uint32_t type) {
    const char *s = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(type));
    return std::string(s != nullptr ? s : "unknown") + " (type " + std::to_string(type) + ")";
}

} // namespace

result<void> check_prog_array_member(const store::segment &seg, uint32_t map_id, uint32_t prog_id) {
    auto snap = seg.read_all();
    if (!snap) {
        return snap.err();
    }
    const store::map_info *map = nullptr;
    for (const auto &m : snap->maps) {
        if (m.id == map_id) {
            map = &m;
        }
    }
    if (map == nullptr) {
        return make_error(ENOENT, "map " + std::to_string(map_id) + " does not exist");
    }
    if (map->spec.type != maps::map_type::prog_array) {
        return {};
    }
    std::map<uint32_t, const store::program_info *> progs;
    for (const auto &p : snap->programs) {
        progs[p.id] = &p;
    }
    auto it = progs.find(prog_id);
    if (it == progs.end()) {
        return make_error(ENOENT, "program " + std::to_string(prog_id) + " does not exist");
    }
    const store::program_info &member = *it->second;
    auto refuse = [&](const store::program_info &owner, const std::string &role) {
        return make_error(
            EINVAL, "program " + std::to_string(member.id) + " (" + member.name + ") is a " +
                        prog_type_label(member.type) + " program and cannot go into prog_array " +
                        std::to_string(map_id) + " (" + map->name + "): program " +
                        std::to_string(owner.id) + " (" + owner.name + "), " + role + ", is a " +
                        prog_type_label(owner.type) +
                        " program, and a tail call keeps its caller's context, so the programs "
                        "of one array share a type (as Linux's bpf_prog_map_compatible); put a " +
                        prog_type_label(owner.type) + " program there");
    };
    // The callers: programs whose instructions name the array.
    for (const auto &p : snap->programs) {
        if (p.type != member.type &&
            std::find(p.map_ids.begin(), p.map_ids.end(), map_id) != p.map_ids.end()) {
            return refuse(p, "which tail-calls through it");
        }
    }
    // The programs already in it.
    auto view = seg.map_view(map_id);
    if (!view) {
        return view.err();
    }
    for (uint32_t i = 0; i < map->spec.max_entries; i++) {
        long id = view->prog_array_id(i);
        if (id <= 0) {
            continue;
        }
        auto p = progs.find(static_cast<uint32_t>(id));
        if (p != progs.end() && p->second->type != member.type) {
            return refuse(*p->second, "in its slot " + std::to_string(i));
        }
    }
    return {};
}

namespace {

result<void> no_lock(const store::map_info &info) {
    return make_error(EINVAL, "map " + std::to_string(info.id) + " (" + info.name +
                                  ") has no struct bpf_spin_lock in its value (its BTF value "
                                  "type names none), so BPF_F_LOCK cannot be used on it, as "
                                  "in Linux");
}

// Takes a value's lock word as bpf_spin_lock does (helpers/vmcalls.cpp): the holder's thread
// id, taken over from a holder that died, given up after a second of a live holder.
result<void> take_value_lock(uint32_t *word, const store::map_info &info) {
    const auto me = static_cast<uint32_t>(::gettid());
    auto try_take = [&](uint32_t from) {
        return __atomic_compare_exchange_n(word, &from, me, false, __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED);
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (uint64_t round = 0;; round++) {
        uint32_t holder = __atomic_load_n(word, __ATOMIC_RELAXED);
        if (holder == 0 && try_take(0)) {
            return {};
        }
        if (round % 256 == 255) {
            if (holder != 0 && ::kill(static_cast<pid_t>(holder), 0) != 0 && errno == ESRCH &&
                try_take(holder)) {
                return {};
            }
            if (std::chrono::steady_clock::now() > deadline) {
                return make_error(ETIMEDOUT, "map " + std::to_string(info.id) + " (" + info.name +
                                                 "): the value's spin lock stayed "
                                                 "held by thread " +
                                                 std::to_string(holder) + " for 1 s");
            }
            ::sched_yield();
        } else {
            __builtin_ia32_pause();
        }
    }
}

void release_value_lock(uint32_t *word) {
    __atomic_store_n(word, 0, __ATOMIC_RELEASE);
}

} // namespace

result<std::vector<uint8_t>> read_value_locked(const store::map_info &info,
                                               const maps::map_view &view,
                                               std::span<const uint8_t> key) {
    const maps::map_spec &spec = info.spec;
    if (spec.spin_lock_off < 0) {
        return no_lock(info).err();
    }
    if (auto ok = maps::check_key(spec, key, false); !ok) {
        return std::move(ok).err();
    }
    auto *value = static_cast<uint8_t *>(view.lookup(key.data()));
    if (value == nullptr) {
        return make_error(ENOENT, "no such key");
    }
    auto *word = reinterpret_cast<uint32_t *>(value + spec.spin_lock_off);
    std::vector<uint8_t> out(spec.value_size);
    if (auto ok = take_value_lock(word, info); !ok) {
        return std::move(ok).err();
    }
    std::memcpy(out.data(), value, out.size());
    release_value_lock(word);
    std::memset(out.data() + spec.spin_lock_off, 0, sizeof(uint32_t));
    return out;
}

result<void> write_value_locked(const store::map_info &info, const maps::map_view &view,
                                std::span<const uint8_t> key, std::span<const uint8_t> value,
                                uint64_t flags) {
    const maps::map_spec &spec = info.spec;
    if (spec.spin_lock_off < 0) {
        return no_lock(info);
    }
    uint64_t mode = flags & ~maps::update_lock;
    if (mode > maps::update_exist) {
        return make_error(EINVAL, "flags " + std::to_string(flags) +
                                      ": BPF_F_LOCK goes with BPF_ANY, BPF_NOEXIST or BPF_EXIST");
    }
    if (auto ok = maps::check_key(spec, key, false); !ok) {
        return ok;
    }
    if (value.size() != spec.value_size) {
        return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                      " bytes, the map takes " + std::to_string(spec.value_size));
    }
    const auto off = static_cast<size_t>(spec.spin_lock_off);
    if (auto *current = static_cast<uint8_t *>(view.lookup(key.data()))) {
        if (mode == maps::update_noexist) {
            return maps::update_error(-EEXIST, spec, flags);
        }
        // In place, under the lock, everything but the lock word.
        auto *word = reinterpret_cast<uint32_t *>(current + off);
        if (auto ok = take_value_lock(word, info); !ok) {
            return ok;
        }
        std::memcpy(current, value.data(), off);
        std::memcpy(current + off + 4, value.data() + off + 4, value.size() - off - 4);
        release_value_lock(word);
        return {};
    }
    if (mode == maps::update_exist) {
        return maps::update_error(-ENOENT, spec, flags);
    }
    return view.write(key, value, mode); // a new value's lock is free (maps::map_view::write)
}

result<std::vector<uint8_t>> read_value(const store::map_info &info, const maps::map_view &view,
                                        std::span<const uint8_t> key) {
    auto v = view.read(key);
    const int32_t off = info.spec.spin_lock_off;
    if (v && off >= 0 && uint64_t(off) + sizeof(uint32_t) <= v->size()) {
        std::memset(v->data() + off, 0, sizeof(uint32_t));
    }
    return v;
}

result<void> write_value(const store::map_info &info, const maps::map_view &view,
                         std::span<const uint8_t> key, std::span<const uint8_t> value,
                         uint64_t flags) {
    if ((flags & maps::update_lock) != 0) {
        return write_value_locked(info, view, key, value, flags);
    }
    // The view writes a value holding a spin lock around its lock word.
    return view.write(key, value, flags);
}

namespace {

// A map of the store, through a view of its shared storage.
class store_map_access final : public map_access {
public:
    store_map_access(store::map_info info, maps::map_view view, std::shared_ptr<store::segment> seg)
        : info_(std::move(info)), view_(view), seg_(std::move(seg)) {}
    const store::map_info &info() const override { return info_; }
    result<std::vector<uint8_t>> read(std::span<const uint8_t> key) const override {
        return read_value(info_, view_, key);
    }
    result<std::vector<uint8_t>> read_locked(std::span<const uint8_t> key) const override {
        return read_value_locked(info_, view_, key);
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
        if ((flags & maps::update_lock) != 0) {
            return write_value_locked(info_, view_, key, value, flags);
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
            if (auto ok = check_prog_array_member(*seg_, info_.id, id); !ok) {
                return ok;
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
        return write_value(info_, view_, key, value, flags);
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
