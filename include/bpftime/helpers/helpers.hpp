// SPDX-License-Identifier: MIT
/// @file
/// bpftime's helper functions (Linux ids and semantics) and the map handles they take.
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/vm/helper_registry.hpp>
#include <bpftime/vm/vm.hpp>

#include <cstdint>
#include <optional>

namespace bpftime::helpers {

/// Registers every helper in a registry (the global one by default), and the registry's
/// end-of-run step (helper_registry::run_end): ring-buffer records a run reserved and did not
/// submit or discard are discarded, so an ill-behaved program cannot stall a ring's consumer.
/// Idempotent.
void register_all(vm::helper_registry &registry = vm::helper_registry::global());

/// Makes a map usable from programs in this process: the returned value is what an lddw map
/// reference loads into a register, an opaque handle that map and ring-buffer helpers
/// check and decode (it is never a dereferenceable address).
uint64_t make_map_handle(const maps::map_view &view);
/// How compiled code may do map_lookup_elem on the map of a handle from make_map_handle without
/// the helper call: the map's map_view::lookup_plan() for calls of map_lookup_elem. Nothing for
/// ring buffers and unknown handles.
std::optional<vm::direct_lookup> direct_lookup_of(uint64_t handle);
/// Stops a handle from working (helpers given it fail the program). Handles are not reused.
void retire_map_handle(uint64_t handle);

} // namespace bpftime::helpers
