// SPDX-License-Identifier: MIT
// What the helpers' files share (private to helpers/).
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/vm/vm.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace bpftime::helpers {

/// Copies the view of a live map handle into out; false (the program stopped, the message
/// naming helper) when it is not one.
bool decode_map_handle(uint64_t handle, vm::run_context *ctx, const char *helper,
                       maps::map_view &out);

/// A helper by Linux id.
struct helper_entry {
    uint32_t id;
    const char *name;
    vm::helper_fn fn;
};

/// tail_call, spin_lock, spin_unlock, for_each_map_elem and loop (vmcalls.cpp).
const std::vector<helper_entry> &vmcall_helpers();

/// The end of a run: releases the spin lock the program still holds; false, with the problem,
/// when it held one.
bool release_held_lock(std::string &problem);

} // namespace bpftime::helpers
