// SPDX-License-Identifier: MIT
/// @file
/// attach_manager: the main entry of bpftime in a host process.
#pragma once

#include <bpftime/attach/attach.hpp>
#include <bpftime/result.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/vm.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace bpftime {

/// Options of an attach_manager.
struct manager_options {
    /// The engine programs are compiled for (the fastest built one by default).
    std::optional<vm::engine_kind> engine;
    /// How programs are compiled (unchecked: trusted programs only).
    vm::engine_options engine_options;
};

/// Holds the compiled programs, the attach implementations registered by attach type, the
/// local attach records (link id -> attach type, attach id) and the store client.
class attach_manager {
public:
    explicit attach_manager(std::shared_ptr<store::segment> seg, manager_options opts = {});
    ~attach_manager();
    attach_manager(const attach_manager &) = delete;
    attach_manager &operator=(const attach_manager &) = delete;

    /// Registers the implementation of an attach type.
    result<void> register_attach_impl(int32_t type, std::unique_ptr<base_attach_impl> impl);
    /// Registers every implementation of a set (for example make_uprobe_attach_impls()); stops
    /// at the first type that is taken.
    result<void> register_attach_impls(attach_impl_set impls);
    /// The implementation of an attach type, or null.
    base_attach_impl *attach_impl(int32_t type) const;

    /// Brings this process in line with the store: attaches newly enabled links, detaches
    /// disabled or destroyed ones and recompiles replaced programs, leaving what did not
    /// change alone. Idempotent. Links that cannot be attached (a program that does not
    /// validate, a target without an implementation here) are skipped and named in the error;
    /// the rest still attach.
    result<void> instantiate();
    /// Removes every attach and drops the compiled programs.
    void deinstantiate();
    /// True when the store changed since the last instantiate (one atomic load).
    bool stale() const { return seg_->generation() != generation_; }

    /// Compiles a program of the store for this process (cached by id and revision).
    result<std::shared_ptr<const compiled_program>> compile(uint32_t prog_id);

    /// The attach id of a link attached in this process.
    std::optional<int> attach_id_of(uint32_t link_id) const;
    /// Number of links attached in this process.
    size_t attached_count() const;
    store::segment &segment() const { return *seg_; }

private:
    struct attach_record {
        int32_t type;
        int attach_id;
        uint32_t prog_id;
        uint64_t prog_revision;
    };

    result<std::shared_ptr<const compiled_program>> compile_locked(const store::program_info &p);
    result<uint64_t> map_handle(uint32_t map_id, std::optional<vm::memory_region> &region);
    void detach_locked(uint32_t link_id);

    std::shared_ptr<store::segment> seg_;
    vm::engine_kind engine_;
    vm::engine_options engine_options_;
    mutable std::recursive_mutex mu_;
    std::map<int32_t, std::unique_ptr<base_attach_impl>> impls_;
    std::map<uint32_t, std::shared_ptr<const compiled_program>> programs_;
    std::map<uint32_t, attach_record> attaches_;
    std::map<uint32_t, uint64_t> map_handles_;
    uint64_t generation_ = ~0ull;
};

} // namespace bpftime
