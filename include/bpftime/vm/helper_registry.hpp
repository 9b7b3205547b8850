// SPDX-License-Identifier: MIT
/// @file
/// The helper registry: helper functions by their Linux ids.
#pragma once

#include <bpftime/result.hpp>

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

private:
    mutable std::mutex mu_;
    // std::map keeps element addresses stable, so find() results stay valid.
    std::map<uint32_t, helper_info> helpers_;
};

/// Registers bpftime's built-in helpers that need nothing but the VM (for example
/// 5 ktime_get_ns) into a registry. global() already holds them.
void register_builtin_helpers(helper_registry &registry);

} // namespace bpftime::vm
