// SPDX-License-Identifier: MIT
/// @file
/// base_event_provider: what a controller does with programs, maps, targets and links;
/// event_provider_impl does it in user space, through the store and an attach_manager.
#pragma once

#include <bpftime/loader/elf.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/maps/maps.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bpftime {

/// A program to create. Its lddw map references name maps by object id
/// (src 1 = map, src 2 = map value + offset); map_ids lists them.
struct program_spec {
    std::string name;
    uint32_t type = 0;
    std::string section;
    std::vector<vm::ebpf_inst> insns;
    std::vector<uint32_t> map_ids;
};

/// A map to create.
struct map_create_spec {
    std::string name;
    maps::map_spec spec;
    std::vector<uint8_t> initial_value; ///< global data: the value at index 0
    bool read_only = false;
};

/// A map as a controller reads and changes it, whichever provider holds it. Keys and values
/// are raw bytes; per-CPU maps read as one value per CPU (value_size bytes each, CPU order)
/// and take either one value (every CPU gets it) or one per CPU.
class map_access {
public:
    virtual ~map_access() = default;
    virtual const store::map_info &info() const = 0;
    /// The value of a key; ENOENT ("no such key") when absent.
    virtual result<std::vector<uint8_t>> read(std::span<const uint8_t> key) const = 0;
    /// Sets a value (flags: maps::update_any, update_noexist, update_exist, or'd with
    /// maps::update_lock to copy it under the value's struct bpf_spin_lock, as BPF_F_LOCK).
    virtual result<void> write(std::span<const uint8_t> key, std::span<const uint8_t> value,
                               uint64_t flags) const = 0;
    /// The value of a key copied under its struct bpf_spin_lock (BPF_MAP_LOOKUP_ELEM with
    /// BPF_F_LOCK), the lock word zeroed; EINVAL when the map's value has no lock.
    virtual result<std::vector<uint8_t>> read_locked(std::span<const uint8_t> key) const {
        (void)key;
        return make_error(EINVAL, "map " + std::to_string(info().id) +
                                      ": BPF_F_LOCK reads are not available on this provider");
    }
    virtual result<void> erase(std::span<const uint8_t> key) const = 0;
    /// The key after key (the first key when key is empty); nothing after the last.
    virtual result<std::optional<std::vector<uint8_t>>>
    next_key(std::span<const uint8_t> key) const = 0;
    /// Entries in use (hash maps) or max_entries (arrays).
    virtual uint64_t count() const = 0;
    /// Queues, stacks and bloom filters: BPF_MAP_UPDATE_ELEM with no key (flags:
    /// maps::update_any, or maps::update_exist to drop a full queue's oldest value).
    virtual result<void> push(std::span<const uint8_t> value, uint64_t flags) const = 0;
    /// Queues and stacks: BPF_MAP_LOOKUP_AND_DELETE_ELEM with no key; ENOENT when empty.
    virtual result<std::vector<uint8_t>> pop() const = 0;
    /// Queues and stacks: BPF_MAP_LOOKUP_ELEM with no key (value empty); bloom filters: value
    /// back when it may be present, ENOENT when it certainly is not.
    virtual result<std::vector<uint8_t>> peek(std::span<const uint8_t> value) const = 0;
    /// Queues and stacks: every value in pop order, none removed (EOPNOTSUPP on the kernel,
    /// which can only pop them).
    virtual result<std::vector<std::vector<uint8_t>>> values() const = 0;
    /// Ring buffers: hands up to max waiting records to fn; returns how many.
    virtual result<uint64_t> consume(const std::function<void(std::span<const uint8_t>)> &fn,
                                     uint64_t max) = 0;
    /// Ring buffers: waits up to timeout_ms for a record.
    virtual void wait(int timeout_ms) = 0;
    /// Ring buffers: records lost because the process that reserved them died before it
    /// submitted them (skipped so the consumer goes on); 0 where nothing counts them.
    virtual uint64_t lost() const { return 0; }
};

/// What a provider lists: every object as the store describes it, plus what the provider
/// alone knows of them.
struct listing {
    /// Every object, in id order within each kind. The generation is the store's (user
    /// space) or the next id of the kernel provider's catalogue.
    store::snapshot objects;
    /// Object id -> the kernel's id of its kernel object (kernel provider: programs, maps,
    /// and links while attached). Objects without one are absent.
    std::map<uint32_t, uint32_t> kernel_ids;
    /// Whether the links' runs and faults are counted: always in user space; by the kernel only
    /// while kernel.bpf_stats_enabled is 1 (see kernel_stats), and 0 otherwise.
    bool counted = true;
    /// Link id -> how each host process that reported runs it (user space; the kernel is the
    /// only host of the kernel provider's links).
    std::map<uint32_t, std::vector<store::link_host_state>> link_hosts;
    /// Kernel provider: the kernel's run statistics are on (kernel.bpf_stats_enabled). A link
    /// then carries its program's run_cnt and run_time_ns (the kernel counts per program, over
    /// all links of it); faults and budget stops stay 0, the kernel has no such outcome.
    bool kernel_stats = false;
    /// Whether runs are timed now: the segment's flag (store::segment::set_run_timing) in user
    /// space, kernel.bpf_stats_enabled for the kernel provider.
    bool run_timing = false;
    /// User space: destroyed objects whose storage is kept for host processes that have not
    /// synchronised past the destroy (store::segment::retired).
    std::vector<store::retired_object> retired;

    /// The kernel's id for object id, 0 when it has none.
    uint32_t kernel_id(uint32_t id) const {
        auto it = kernel_ids.find(id);
        return it != kernel_ids.end() ? it->second : 0;
    }
};

/// The controller's API. Every failure is an error value with a message.
class base_event_provider {
public:
    virtual ~base_event_provider() = default;
    /// Where the objects live: the segment name (user space) or the bpffs folder (kernel).
    virtual std::string location() const = 0;
    virtual result<uint32_t> create_program(const program_spec &spec) = 0;
    virtual result<uint32_t> create_map(const map_create_spec &spec) = 0;
    virtual result<uint32_t> create_attach_target(int32_t attach_type, const std::string &args) = 0;
    /// Attaches a program at a target with an enabled link; returns the link id. The cookie is
    /// what get_attach_cookie gives the program through this link.
    virtual result<uint32_t> attach_program(uint32_t prog_id, uint32_t target_id,
                                            uint64_t cookie) = 0;
    result<uint32_t> attach_program(uint32_t prog_id, uint32_t target_id) {
        return attach_program(prog_id, target_id, 0);
    }
    virtual result<void> enable_link(uint32_t link_id) = 0;
    virtual result<void> disable_link(uint32_t link_id) = 0;
    /// Runs another program through a link, as BPF_LINK_UPDATE does: the link keeps its id,
    /// target, cookie, counters and enabled state, and no event finds it running neither
    /// program. Refused like attach_program when the program does not suit the target.
    virtual result<void> update_link(uint32_t link_id, uint32_t prog_id) = 0;
    virtual result<void> destroy_object(uint32_t id) = 0;
    /// Every object, in id order within each kind, with what this provider knows of them.
    virtual result<listing> list() const = 0;
    /// Reads and changes one map.
    virtual result<std::unique_ptr<map_access>> open_map(uint32_t id) const = 0;
    /// Brings the current process in line with the objects (see attach_manager).
    virtual result<void> instantiate() = 0;
    virtual void deinstantiate() = 0;
};

/// The user-space provider: objects go into the shared-memory store; instantiate() runs the
/// attach_manager of this process. Programs are compiled when created, exactly as hosts
/// compile them (attach_manager::compile_spec), so what hosts cannot compile is refused here;
/// a link joining a program with a target is refused when the program calls a helper the
/// target's attach type does not allow.
class event_provider_impl final : public base_event_provider {
public:
    explicit event_provider_impl(std::shared_ptr<store::segment> seg, manager_options opts = {});

    std::string location() const override { return seg_->name(); }
    result<uint32_t> create_program(const program_spec &spec) override;
    /// Replaces a program's instructions (checked as create_program checks them); hosts switch
    /// to the new revision at their next resync.
    result<void> replace_program(uint32_t prog_id, const program_spec &spec);
    result<uint32_t> create_map(const map_create_spec &spec) override;
    result<uint32_t> create_attach_target(int32_t attach_type, const std::string &args) override;
    using base_event_provider::attach_program;
    result<uint32_t> attach_program(uint32_t prog_id, uint32_t target_id, uint64_t cookie) override;
    result<void> enable_link(uint32_t link_id) override;
    result<void> disable_link(uint32_t link_id) override;
    result<void> update_link(uint32_t link_id, uint32_t prog_id) override;
    result<void> destroy_object(uint32_t id) override;
    result<listing> list() const override;
    result<std::unique_ptr<map_access>> open_map(uint32_t id) const override;
    result<void> instantiate() override;
    void deinstantiate() override;

    attach_manager &manager() { return manager_; }
    store::segment &segment() { return *seg_; }

private:
    result<void> check_program(const program_spec &spec);
    result<void> check_snprintf_formats(const program_spec &spec) const;
    result<void> check_link(uint32_t prog_id, uint32_t target_id);

    std::shared_ptr<store::segment> seg_;
    attach_manager manager_;
};

/// Whether program prog_id may go into the prog_array map_id, as Linux's
/// bpf_prog_map_compatible decides: a tail call keeps the caller's context, so every program
/// that names the array (the callers) and every program already in it must have prog_id's
/// program type. EINVAL names both programs and their types; ENOENT when either is gone.
result<void> check_prog_array_member(const store::segment &seg, uint32_t map_id, uint32_t prog_id);

/// BPF_MAP_LOOKUP_ELEM with BPF_F_LOCK on a map of the store: the value copied while holding
/// its struct bpf_spin_lock (the lock word bpf_spin_lock takes: the holder's thread id), the
/// lock word zeroed in the copy. EINVAL when the map's value has no lock (naming the map),
/// ENOENT when the key is absent, ETIMEDOUT when a live holder keeps it for a second.
result<std::vector<uint8_t>> read_value_locked(const store::map_info &info,
                                               const maps::map_view &view,
                                               std::span<const uint8_t> key);
/// BPF_MAP_UPDATE_ELEM with BPF_F_LOCK: an existing value is overwritten under its lock, all
/// but the lock word; a new one is inserted with the lock free. flags: maps::update_lock with
/// update_any, update_noexist or update_exist. Errors as read_value_locked, and the update's.
result<void> write_value_locked(const store::map_info &info, const maps::map_view &view,
                                std::span<const uint8_t> key, std::span<const uint8_t> value,
                                uint64_t flags);
/// BPF_MAP_LOOKUP_ELEM without BPF_F_LOCK: the value as the view reads it, with the lock word
/// of a value holding a struct bpf_spin_lock zeroed, as Linux copies values out.
result<std::vector<uint8_t>> read_value(const store::map_info &info, const maps::map_view &view,
                                        std::span<const uint8_t> key);
/// BPF_MAP_UPDATE_ELEM of a plain value map, with or without BPF_F_LOCK (write_value_locked).
/// Without it, a value holding a struct bpf_spin_lock is written all but its lock word, which
/// stays as it is (a program may hold it); a new value's lock is free. Other maps: the view's
/// write.
result<void> write_value(const store::map_info &info, const maps::map_view &view,
                         std::span<const uint8_t> key, std::span<const uint8_t> value,
                         uint64_t flags);

/// What loading an ELF object created.
struct loaded_object {
    std::vector<std::pair<uint32_t, std::string>> maps;     ///< id, name
    std::vector<std::pair<uint32_t, std::string>> programs; ///< id, name
    std::vector<std::string> sections; ///< each program's ELF section, in programs' order
};

/// After each map or program made: how many of the object's maps and programs are made so far,
/// and how many there are.
using load_progress = std::function<void(size_t done, size_t total)>;

/// Creates an object's maps and programs through a provider (map references become ids).
/// On failure, what was created is destroyed again. on_step, when given, follows the work
/// (programs are compiled as they are created, which is what takes time in a large object).
result<loaded_object> load_object(base_event_provider &provider, const loader::elf_object &obj,
                                  const load_progress &on_step = {});

} // namespace bpftime
