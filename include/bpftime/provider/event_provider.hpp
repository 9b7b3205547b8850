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
#include <memory>
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

/// The controller's API. Every failure is an error value with a message.
class base_event_provider {
public:
    virtual ~base_event_provider() = default;
    virtual result<uint32_t> create_program(const program_spec &spec) = 0;
    virtual result<uint32_t> create_map(const map_create_spec &spec) = 0;
    virtual result<uint32_t> create_attach_target(int32_t attach_type, const std::string &args) = 0;
    /// Attaches a program at a target with an enabled link; returns the link id.
    virtual result<uint32_t> attach_program(uint32_t prog_id, uint32_t target_id) = 0;
    virtual result<void> enable_link(uint32_t link_id) = 0;
    virtual result<void> disable_link(uint32_t link_id) = 0;
    virtual result<void> destroy_object(uint32_t id) = 0;
    /// Brings the current process in line with the objects (see attach_manager).
    virtual result<void> instantiate() = 0;
    virtual void deinstantiate() = 0;
};

/// The user-space provider: objects go into the shared-memory store; instantiate() runs the
/// attach_manager of this process.
class event_provider_impl final : public base_event_provider {
public:
    explicit event_provider_impl(std::shared_ptr<store::segment> seg, manager_options opts = {});

    result<uint32_t> create_program(const program_spec &spec) override;
    result<uint32_t> create_map(const map_create_spec &spec) override;
    result<uint32_t> create_attach_target(int32_t attach_type, const std::string &args) override;
    result<uint32_t> attach_program(uint32_t prog_id, uint32_t target_id) override;
    result<void> enable_link(uint32_t link_id) override;
    result<void> disable_link(uint32_t link_id) override;
    result<void> destroy_object(uint32_t id) override;
    result<void> instantiate() override;
    void deinstantiate() override;

    attach_manager &manager() { return manager_; }
    store::segment &segment() { return *seg_; }

private:
    std::shared_ptr<store::segment> seg_;
    attach_manager manager_;
};

/// What loading an ELF object created.
struct loaded_object {
    std::vector<std::pair<uint32_t, std::string>> maps;     ///< id, name
    std::vector<std::pair<uint32_t, std::string>> programs; ///< id, name
};

/// Creates an object's maps and programs through a provider (map references become ids).
/// On failure, what was created is destroyed again.
result<loaded_object> load_object(base_event_provider &provider, const loader::elf_object &obj);

} // namespace bpftime
