// SPDX-License-Identifier: MIT
/// @file
/// bpftime's helper functions (Linux ids and semantics) and the map handles they take.
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/vm/helper_registry.hpp>
#include <bpftime/vm/vm.hpp>

#include <bpftime/result.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

namespace bpftime::helpers {

/// Registers every helper in a registry (the global one by default), and the registry's
/// end-of-run step (helper_registry::run_end): ring-buffer records a run reserved and did not
/// submit or discard are discarded, so an ill-behaved program cannot stall a ring's consumer.
/// Idempotent.
void register_all(vm::helper_registry &registry = vm::helper_registry::global());

namespace detail {
struct handle_maker; // helpers.cpp: makes the handles
} // namespace detail

/// A map made usable from programs in this process. value() is what an lddw map reference
/// loads into a register: an opaque handle that map and ring-buffer helpers check and decode (it
/// is never a dereferenceable address). The handle works while this object lives; compiled
/// programs whose code names it hold a reference. Once it is gone the handle stops working and
/// its slot may serve another map, under a new generation, so the old value never reaches the
/// new map.
class map_handle {
public:
    ~map_handle();
    map_handle(const map_handle &) = delete;
    map_handle &operator=(const map_handle &) = delete;
    uint64_t value() const { return value_; }

private:
    friend struct detail::handle_maker;
    explicit map_handle(uint64_t value) : value_(value) {}
    uint64_t value_;
};

/// Most map handles one process holds at once (store::max_host_maps is the same limit, checked
/// when programs are loaded).
inline constexpr size_t max_map_handles = 4096;
/// A handle for a map; ENOSPC when this process already holds max_map_handles handles.
result<std::shared_ptr<const map_handle>> make_map_handle(const maps::map_view &view);
/// How compiled code may do map_lookup_elem on the map of a live handle without the helper
/// call: the map's map_view::lookup_plan() for calls of map_lookup_elem, valid while the
/// handle lives. Nothing for ring buffers and handles that are not live.
std::optional<vm::direct_lookup> direct_lookup_of(uint64_t handle);
/// Handles alive in this process now.
size_t map_handles_in_use();

/// Finds a map by store id, for helpers whose map names other maps by id: a perf event array's
/// slots name perf rings (bpf_perf_event_output). Nothing when there is no such map. Called on
/// the threads that run programs.
using map_resolver = std::function<std::optional<maps::map_view>(uint32_t id)>;
/// Installs this process's resolver (the attach manager installs one for its segment); an empty
/// function removes it, and bpf_perf_event_output then finds no ring (-ENOENT). The resolver
/// also finds the inner maps a lookup in an array_of_maps or hash_of_maps names: the first
/// lookup of an inner map makes this process's handle of it, kept until release_inner_maps()
/// says the map is gone; installing a resolver releases them all (the ids may be another
/// segment's).
void set_map_resolver(map_resolver fn);
/// Releases the handles of inner maps for which exists(id) is false (all of them when exists
/// is empty); threads that cached them look them up again. Hosts call it when they synchronise
/// with the store, after maps were destroyed.
void release_inner_maps(const std::function<bool(uint32_t id)> &exists);
/// The inner maps this process holds handles of.
size_t inner_maps_in_use();

/// A program bpf_tail_call may run: an engine compiled as the calling program is (the same
/// engine, options and helper set) and what keeps it alive.
struct tail_call_target {
    vm::engine *engine = nullptr;
    std::shared_ptr<const void> keep;
};

/// Finds the program with a store id (a prog_array slot's value) for a caller bound to the
/// helpers `caller_helpers`; an error says why this host cannot run it. Called on the threads
/// that run programs.
using program_resolver = std::function<result<tail_call_target>(
    uint32_t prog_id, const vm::helper_registry *caller_helpers)>;
/// Installs this process's resolver (the attach manager installs one for its segment); an empty
/// function removes it, and bpf_tail_call then fails with -EINVAL.
void set_program_resolver(program_resolver fn);

/// Checks a bpf_snprintf format as Linux's bpf_bprintf_prepare does for num_args arguments
/// (12 at most): printable ASCII, %% and the conversions it takes (%d %i %u %x %X with l or
/// ll, %c, %s, %pks, %pus, %p with K, x, s, S, B, %pi4 %pI4 %pi6 %pI6; flags 0+- and space, a
/// width), no more conversions than arguments. Empty when the kernel takes it, else what is
/// wrong, naming the conversion and its offset. The helper refuses what this refuses
/// (-EINVAL); loaders call it on formats known at load.
std::string snprintf_format_problem(std::string_view fmt, uint64_t num_args);

} // namespace bpftime::helpers
