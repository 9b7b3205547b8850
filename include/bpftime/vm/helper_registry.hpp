// SPDX-License-Identifier: MIT
/// @file
/// The helper registry: helper functions by their Linux ids.
#pragma once

#include <bpftime/result.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace bpftime::vm {

class run_context;

/// A helper function. It receives r1..r5 and the context of the running program, through
/// which it may hand memory to the program (run_context::add_region), check pointers the
/// program passed (run_context::check_access) or stop the program (run_context::fail).
using helper_fn = uint64_t (*)(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
                               run_context *ctx);

/// A step a host takes after each run of a program (helper_registry::run_end). False, with the
/// problem said, when the run that completed must count as failed (it ended holding a lock).
using run_end_fn = bool (*)(std::string &problem);

/// A registered helper.
struct helper_info {
    uint32_t id = 0;
    std::string name;
    helper_fn fn = nullptr;
};

/// Helpers by id (ids as in Linux: 1 map_lookup_elem, 5 ktime_get_ns, ...). One table plus
/// register_helper() for plugins; programs resolve their calls against a registry when
/// they are loaded.
class helper_registry {
public:
    /// An empty registry.
    helper_registry() = default;
    helper_registry(const helper_registry &other);
    helper_registry &operator=(const helper_registry &other);

    /// The process-wide registry, filled with bpftime's built-in helpers.
    static helper_registry &global();

    /// Adds a helper. Fails when the id is taken or the function is null.
    result<void> register_helper(uint32_t id, std::string name, helper_fn fn);
    /// Adds or replaces a helper.
    void replace_helper(uint32_t id, std::string name, helper_fn fn);

    /// The helper with this id, or a null pointer.
    const helper_info *find(uint32_t id) const;
    /// Every helper, ordered by id.
    std::vector<helper_info> list() const;

    /// Sets what a host runs after every run of a program bound to this registry: helpers
    /// that keep per-run state outside the run context (ring-buffer records a program
    /// reserved and did not hand back) release it there. leaving names those helpers: only a
    /// run of a program that calls one of them (or calls through a register) needs the step.
    void set_run_end(run_end_fn fn, std::vector<uint32_t> leaving);
    /// The step set by set_run_end(), or null.
    run_end_fn run_end() const { return run_end_.load(std::memory_order_relaxed); }
    /// The helpers set_run_end() named.
    std::vector<uint32_t> run_end_helpers() const;
    /// Whether a call of helper id may leave something for the end-of-run step.
    bool leaves_for_run_end(uint32_t id) const;

private:
    mutable std::mutex mu_;
    // std::map keeps element addresses stable, so find() results stay valid.
    std::map<uint32_t, helper_info> helpers_;
    std::atomic<run_end_fn> run_end_{nullptr};
    std::vector<uint32_t> run_end_helpers_; // under mu_
};

/// Registers bpftime's built-in helpers that need nothing but the VM (for example
/// 5 ktime_get_ns) into a registry. global() already holds them.
void register_builtin_helpers(helper_registry &registry);

} // namespace bpftime::vm
