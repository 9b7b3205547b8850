// SPDX-License-Identifier: MIT
/// @file
/// attach_manager: the main entry of bpftime in a host process.
#pragma once

#include <bpftime/attach/attach.hpp>
#include <bpftime/result.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/vm.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bpftime {

namespace helpers {
class map_handle;
}

/// Options of an attach_manager.
struct manager_options {
    /// The engine programs are compiled for (the fastest built one by default).
    std::optional<vm::engine_kind> engine;
    /// How programs are compiled (unchecked: trusted programs only).
    vm::engine_options engine_options;
    /// Record in the segment how this process runs each link of the attach types it
    /// implements (store::segment::set_link_host_state), for `bpftime list`.
    bool report_link_states = true;
};

/// A link this process should run and cannot: its program does not compile here, calls a
/// helper its attach type does not allow, names a map that is gone, the attach failed, or a
/// record it needs (the link's own, its target's) is damaged in the segment.
struct link_failure {
    uint32_t link_id = 0;
    /// The link's attach type; 0 when the record that would tell is damaged, so that every
    /// host must assume the link was one of its own.
    int32_t attach_type = 0;
    error err;
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
    /// disabled or destroyed ones and switches links whose program was replaced or changed,
    /// leaving what did not change alone. Idempotent. Links of types implemented here that
    /// cannot run (see link_failure) are named in the error and in failures(); the rest still
    /// attach. Links of types without an implementation here are another host's.
    /// The process is registered as a host of the segment before its first read, and says it
    /// has passed the generation it synchronised to once it released what is gone, so that
    /// storage of destroyed objects is reused only after that (segment::host_passed).
    result<void> instantiate();
    /// Removes every attach and drops the compiled programs; the process stops being a host of
    /// the segment.
    void deinstantiate();
    /// True when the store changed since the last instantiate (one atomic load), or when the
    /// last instantiate could not record this host's link states in the segment.
    bool stale() const { return seg_->generation() != generation_ || report_pending_; }

    /// Compiles a program of the store for this process (cached by id and revision), with
    /// every helper.
    result<std::shared_ptr<const compiled_program>> compile(uint32_t prog_id);
    /// Compiles a program that is not in the store (yet) exactly as hosts would: the same
    /// engine and options, its map references resolved against the store's maps. What a host
    /// cannot compile fails here, with the reason.
    result<std::shared_ptr<const compiled_program>> compile_spec(const store::program_info &p);

    /// Compiles the store's program prog_id for a caller bound to the helper set caller (one of
    /// this manager's), for bpf_tail_call; EAGAIN when the manager is busy (it never waits).
    result<void> compile_tail_call_target(uint32_t prog_id, const vm::helper_registry *caller);

    /// The links of types implemented here that could not run at the last instantiate().
    std::vector<link_failure> failures() const;

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

    // Programs compiled against one helper registry (every helper, or an attach type's set).
    using program_key = std::pair<uint32_t, const vm::helper_registry *>;

    result<std::shared_ptr<const compiled_program>>
    compile_locked(const store::program_info &p,
                   const std::shared_ptr<const vm::helper_registry> &helpers, bool cache);
    result<std::shared_ptr<const vm::helper_registry>> registry_for(int32_t attach_type);
    result<std::shared_ptr<const helpers::map_handle>>
    map_handle(uint32_t map_id, std::optional<vm::memory_region> &region);
    void detach_locked(uint32_t link_id);
    void report_states(const store::snapshot &snap);
    // Compiles the programs the store's program arrays name, for every helper set links here
    // use, so that bpf_tail_call finds them compiled; publishes what is compiled.
    void compile_tail_call_targets(const store::snapshot &snap);
    void publish_programs();

public:
    /// What bpf_tail_call's resolver reads on the threads that run programs (private to the
    /// manager's implementation).
    struct tail_calls;

private:
    std::shared_ptr<store::segment> seg_;
    vm::engine_kind engine_;
    vm::engine_options engine_options_;
    bool report_link_states_;
    mutable std::recursive_mutex mu_;
    std::map<int32_t, std::unique_ptr<base_attach_impl>> impls_;
    std::map<int32_t, std::shared_ptr<const vm::helper_registry>> registries_;
    std::map<program_key, std::shared_ptr<const compiled_program>> programs_;
    std::map<uint32_t, attach_record> attaches_;
    // Map handles by map id; compiled programs hold them too, so a handle outlives its entry
    // here while code that names it may still run.
    std::map<uint32_t, std::shared_ptr<const helpers::map_handle>> map_handles_;
    std::map<uint32_t, link_failure> failures_;
    std::map<uint32_t, std::string> reported_; // link id -> the state recorded in the segment
    bool report_pending_ = false; // a state the segment did not take yet (its lock was held)
    uint64_t generation_ = ~0ull;
    // The generation this process last synchronised to (what a fork child holds).
    uint64_t synced_ = 0;
    // How long instantiate() waits for the runs in progress on other threads before it says
    // it passed a generation; past it, the next synchronisation tries again.
    static constexpr std::chrono::milliseconds run_wait_limit{100};
    // Whether every run in progress on another thread when it was called has ended, waiting
    // up to run_wait_limit.
    bool runs_before_ended() const;
    // The process registered as a host of the segment (segment::host_passed), 0 for none: a
    // fork child is another process and registers again.
    int32_t host_pid_ = 0;
    std::shared_ptr<tail_calls> tail_calls_;
};

} // namespace bpftime
