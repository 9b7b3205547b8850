// SPDX-License-Identifier: MIT
// Private to store/: the segment's layout in shared memory.
//
//   header | object table (max_objects slots) | heap of extents
// Plain data and offsets only, no pointers, so processes built separately share it. Each
// object owns at most one extent (program instructions and map ids, target arguments, map
// storage), referenced from its slot by offset. A slot becomes visible by one release store of
// its state (creating -> live), so a writer that dies mid-update leaves at most a `creating`
// slot, which the next writer frees. The heap keeps no state of its own (heap.hpp).
//
// Any change to these structures changes the bytes in the segment and needs a new
// store::layout_version.
#pragma once

#include <bpftime/store/store.hpp>

#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace bpftime::store::detail {

inline constexpr char segment_magic[8] = {'B', 'P', 'F', 'T', 'I', 'M', 'E', '1'};
/// The table, the heap and every extent start on this boundary.
inline constexpr uint64_t align = 64;
/// slot::state. A retired slot is an object that was destroyed while host processes may still
/// hold its storage (map values, a link's counters): it keeps its extent (and the slot, whose
/// counters hosts may still add to) until every live host in header::hosts has passed the
/// generation of the destroy, kept in its revision field.
inline constexpr uint32_t slot_free = 0, slot_creating = 1, slot_live = 2, slot_retired = 3;
/// Copies of each link counter (counters.cpp says which thread adds to which).
inline constexpr size_t counter_stripes = 8;

/// One host process that may hold storage of the segment's objects (header::hosts).
struct host_entry {
    int32_t pid; ///< 0: free
    uint32_t reserved;
    uint64_t start_time; ///< the process's start time (/proc/PID/stat), against pid reuse
    /// The generation this host has synchronised to and released everything that was gone by
    /// then: storage retired at or before it is no longer reachable from this process.
    uint64_t passed;
    uint64_t reserved2;
};

/// The start of the segment.
struct header {
    // Magic and version first, at offsets no future layout moves.
    char magic[8];
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t size;
    uint32_t ready; ///< 1 once the creator has written the header
    uint32_t max_objects;
    uint64_t table_offset;
    uint64_t heap_offset;
    uint64_t heap_size;
    uint64_t generation; ///< bumped by every change
    uint32_t next_id;    ///< ids only grow: never reused, id order is creation order
    uint32_t slot_size;
    /// stats_* bits, for the whole segment; hosts read them with one relaxed load per run.
    uint32_t stats_flags;
    /// The writers' lock (process-shared, robust).
    alignas(64) pthread_mutex_t lock;
    /// The host processes that may hold storage, written under the lock
    /// (segment::host_passed); entries of processes that are gone are dropped.
    alignas(64) host_entry hosts[max_host_processes];
};

/// header::stats_flags: hosts time every run (run_time_ns), as kernel.bpf_stats_enabled does.
inline constexpr uint32_t stats_timing = 1;

/// One copy of a link's counters, on its own cache line.
struct alignas(64) counter_stripe {
    uint64_t runs;
    uint64_t faults;       ///< runs that stopped with an error (budget stops included)
    uint64_t budget_stops; ///< runs stopped by the instruction budget (ETIMEDOUT)
    uint64_t run_time_ns;  ///< time in runs, while stats_timing was set
};

/// nginx URL filter decisions one host process counted for a link (in its host record).
struct filter_counts {
    uint64_t allowed, fail_open, fail_closed;
    uint64_t refused_other; ///< refusals with a status the table below had no room for
    struct {
        uint32_t status; ///< 0: unused; claimed by a compare-and-swap
        uint32_t pad;
        uint64_t count;
    } refused[12];
};

/// One object of the table; which fields mean something depends on kind.
struct alignas(64) slot {
    uint32_t state;
    uint32_t id;
    uint32_t kind;    ///< object_kind
    uint32_t enabled; ///< links
    char name[max_name + 1];
    uint64_t extent;  ///< offset of the owned extent, 0 for none
    uint64_t pending; ///< an extent being written by replace_program, 0 for none
    // programs
    uint32_t prog_type;
    /// maps: 1 + the offset of the value's struct bpf_spin_lock, 0 for none (was padding,
    /// so older segments read as maps without one).
    uint32_t map_lock;
    uint64_t revision;
    char section[64];
    // maps
    uint32_t map_type, key_size, value_size, max_entries, map_flags, ncpus, read_only;
    uint32_t inner_type; ///< array_of_maps, hash_of_maps: the inner template's map type
    // targets
    int32_t attach_type;
    // links
    uint32_t prog_id, target_id;
    uint64_t cookie;
    // maps
    uint64_t map_extra;
    /// array_of_maps, hash_of_maps: the rest of the inner template (maps::inner_map_template).
    uint32_t inner_key_size, inner_value_size, inner_max_entries, inner_flags;
    counter_stripe counters[counter_stripes];
};

/// The start of every extent: its size, so the heap can rebuild the free space.
struct alignas(64) extent_header {
    uint64_t size; ///< bytes including this header
    uint32_t owner;
};

/// A program's extent after its extent_header.
struct program_payload {
    uint32_t insn_count;
    uint32_t map_count;
    // then insn_count instructions, then map_count map ids
};

static_assert(std::is_standard_layout_v<header> && std::is_trivially_copyable_v<header>);
static_assert(std::is_standard_layout_v<slot> && std::is_trivially_copyable_v<slot>);
static_assert(std::is_standard_layout_v<extent_header> &&
              std::is_trivially_copyable_v<extent_header>);
static_assert(std::is_standard_layout_v<program_payload> &&
              std::is_trivially_copyable_v<program_payload>);
// The sizes of layout version 7 (x86-64, glibc), which other processes' builds also assume.
// (Version 4: map storage a process may mmap starts on a page, maps' storage version 3; counter
// stripes count budget stops and run time, host records hold their own stripes. Version 5: a
// map's slot holds its map_extra. Version 6: a map's slot holds its inner map template, a host
// record its owned key. Version 7: the header holds the host table, slots may be retired.)
static_assert(layout_version == 7 && sizeof(host_entry) == 32 &&
              sizeof(header) == 192 + 32 * max_host_processes && sizeof(slot) == 768 &&
              sizeof(counter_stripe) == 64 && sizeof(extent_header) == 64 &&
              sizeof(program_payload) == 8);
static_assert(offsetof(slot, counters) == 256 && offsetof(slot, map_extra) == 232 &&
              offsetof(slot, inner_type) == 204 && offsetof(slot, inner_flags) == 252 &&
              offsetof(header, stats_flags) == 72 && offsetof(header, lock) == 128);

/// Counter totals of some stripes.
struct counter_totals {
    uint64_t runs = 0, faults = 0, budget_stops = 0, run_time_ns = 0;
};
/// Adds the stripes' counts to into (relaxed loads; counters.cpp).
void sum_counters(const counter_stripe (&from)[counter_stripes], counter_totals &into);
/// Adds a filter_counts to a filter_decisions (relaxed loads; counters.cpp).
void sum_decisions(const filter_counts &from, filter_decisions &into);
/// Moves the counts of from into into (a link's own stripes), leaving from zero.
void fold_counters(counter_stripe (&from)[counter_stripes],
                   counter_stripe (&into)[counter_stripes]);

inline uint64_t round_up(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

/// Ordered access to a field other processes read and write.
template <class T>
T load_acquire(const T &v) {
    return __atomic_load_n(&v, __ATOMIC_ACQUIRE);
}
template <class T>
void store_release(T &v, T x) {
    __atomic_store_n(&v, x, __ATOMIC_RELEASE);
}

} // namespace bpftime::store::detail
