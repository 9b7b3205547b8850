// SPDX-License-Identifier: MIT
// Private to maps/: the storage format and what the map implementations share.
//
// Storage of every map:
//   map_header (below)
//   hash family: buckets u32[nbuckets] | free_stack u32[n] | stamps u64[n] (lru_hash only)
//                | hazards (lock_free_updates maps only: hazard_control, then hazard_slots
//                  hazard_slot lines) | entries: n * entry_stride bytes, each {next u32,
//                  state u32, key u8[key_size]}
//                  rounded up to 8 bytes, so that a lookup finds an entry's link, state and key
//                  on one cache line as the kernel's hash map does. state: entry_used while the
//                  entry holds a key, or'ed with the thread id of the writer holding the entry's
//                  lock (0: unlocked); see hash.cpp. n is max_entries, and for lock_free_updates
//                  maps spare_entries more, which deleted entries wait in while a lock-free
//                  updater may still write them (the free stack's array holds those from its
//                  top down, the free ones from its bottom up)
//   values: n * ncpus slots of value_stride bytes, slot (entry * ncpus + cpu)  (arrays, hashes);
//           for an array with BPF_F_MMAPABLE they start on a page and the storage ends on one,
//           so the values can be mmap'ed as Linux maps them (mmapable_region)
//   stack_trace: entries: nbuckets * {hash u32, nr u32} (nr 0: empty bucket) | values: nbuckets
//           slots of value_size bytes (the return addresses), written under the header's lock
//   cgroup_array: values hold one uint64 cgroup id per slot (0: empty), never given to programs
//   perf ring: perf_ring_state, then from the next page boundary a perf_event_mmap_page page and
//           data u8[max_entries] in place of the values, as Linux maps a perf event fd
//   ring buffer: from the first page boundary after the header, as Linux's ring buffer fd
//           maps: the consumer position at the start of a page, the producer position at the
//           start of the next, then data u8[max_entries] in place of the values
//   lpm_trie: the hash family's sections with keys masked to their prefix length, then
//           lpm_counts u32[max_prefixlen + 1] (entries per prefix length), then the values
//   queue, stack: queue_state u64 (oldest slot << 32 | count, written in one store), then
//           values: max_entries slots of value_stride bytes used as a ring
//   bloom_filter: bloom_bits u64[(bloom_mask + 1) / 64]; no values
// Sections start on 64-byte boundaries. Indices are uint32 with `none` for "no entry" (an entry's
// fields, and the chain walk: <bpftime/maps/hash_walk.hpp>).
#pragma once

#include <bpftime/maps/maps.hpp>

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

namespace bpftime::maps::detail {

inline constexpr uint64_t storage_magic = 0x3150414d54465042; // "BPFTMAP1"
inline constexpr uint32_t storage_version = 5;
inline constexpr uint32_t max_ncpus = 4096;
inline constexpr uint64_t storage_align = 64;

/// The start of every map's storage. Identity fields are written once by init_storage();
/// the rest is shared state, each group on its own cache line.
struct map_header {
    uint64_t magic;
    uint32_t version;
    uint32_t type;
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t flags;
    uint32_t ncpus;
    uint32_t extra; ///< map_spec::map_extra (validated to fit: 0, or 0..15 for bloom filters)
    uint64_t seed;
    uint64_t size; ///< storage bytes the layout needs
    /// Hash writers and ring-buffer producers (process-shared, robust).
    alignas(64) pthread_mutex_t lock;
    uint32_t count;      ///< hash: entries in use
    uint32_t free_top;   ///< hash: entries on the free stack
    uint32_t lru_cursor; ///< lru_hash: where the next eviction sample starts
    uint32_t limbo;      ///< hash: deleted entries waiting for lock-free updaters (hash.cpp)
    uint64_t lru_clock;  ///< lru_hash: bumped by every insert or update
    /// Ring buffers: records a producer could not place. The positions are in their own pages
    /// (map_layout::ring_consumer, ring_producer).
    alignas(64) uint64_t dropped;
    /// Ring buffers: records skipped because the process that reserved them died before it
    /// submitted them (in the padding of dropped's cache line: no offset moves).
    uint64_t lost;
    alignas(64) uint32_t wake_seq; ///< futex word: bumped by every waking submit
    uint32_t waiters;              ///< consumers inside ringbuf_wait
};
static_assert(std::is_standard_layout_v<map_header> && std::is_trivially_copyable_v<map_header>);

/// A hash entry's fields and state bits are in <bpftime/maps/hash_walk.hpp>, with the walk a
/// lookup makes; the state word's bits below entry_used hold the lock owner's thread id.
inline constexpr uint32_t entry_owner_mask = entry_used - 1;

/// Whether a map's updates of present keys take no lock (hash.cpp): plain hash maps whose values
/// are written in one store (4 or 8 bytes) and whose keys have the sizes the specialised update
/// takes (4 or 8 bytes). From the header's fields only, as the layout that depends on it: a value
/// holding a spin lock is updated with the entry lock (hash_update_for), in the same layout.
inline bool lock_free_updates(const map_spec &spec) {
    return spec.type == map_type::hash && (spec.value_size == 4 || spec.value_size == 8) &&
           (spec.key_size == 4 || spec.key_size == 8);
}

/// Entries such a map has beyond max_entries, so that an insert seldom waits for deleted ones
/// (see hash.cpp's grace()): an eighth of max_entries, at least 16 and at most 1024.
inline uint32_t spare_entries(const map_spec &spec) {
    if (!lock_free_updates(spec)) {
        return 0;
    }
    return std::clamp(spec.max_entries / 8, 16u, 1024u);
}

/// Threads of all processes that can update one map without a lock at a time; others take
/// the entry lock.
inline constexpr uint32_t hazard_slots = 64;

/// The first line of a lock_free_updates map's hazards section.
struct hazard_control {
    uint32_t used; ///< set (for good) before a thread first claims a slot
    uint32_t reserved[15];
};

/// One updater's line: the thread that owns it and, while that thread writes an entry without
/// a lock, (thread id << 32 | entry + 1), 0 otherwise.
struct hazard_slot {
    uint32_t owner;
    uint32_t reserved;
    uint64_t hazard;
    uint64_t pad[6];
};
static_assert(sizeof(hazard_control) == 64 && sizeof(hazard_slot) == 64);

/// Atomic access to a plain integer in storage.
template <class T>
std::atomic_ref<T> atomic(T &v) {
    return std::atomic_ref<T>(v);
}

/// A view's storage with its layout: what the per-type code works on.
struct map_ref {
    uint8_t *base;
    const map_spec &spec;
    uint32_t ncpus;
    const map_layout &lay;

    map_header &header() const { return *reinterpret_cast<map_header *>(base); }
    template <class T>
    T *section(uint64_t offset) const {
        return reinterpret_cast<T *>(base + offset);
    }
    uint8_t *entry(uint32_t idx) const {
        return base + lay.entries + uint64_t{idx} * lay.entry_stride;
    }
    /// The next entry of idx's chain.
    uint32_t &next(uint32_t idx) const { return *reinterpret_cast<uint32_t *>(entry(idx)); }
    /// The entry's state word (entry_used, the lock owner's thread id).
    uint32_t &state(uint32_t idx) const {
        return *reinterpret_cast<uint32_t *>(entry(idx) + hash_entry_state);
    }
    /// Whether the entry holds a key.
    bool in_use(uint32_t idx) const {
        return (std::atomic_ref<uint32_t>(state(idx)).load(std::memory_order_relaxed) &
                entry_used) != 0;
    }
    uint8_t *key(uint32_t idx) const { return entry(idx) + hash_entry_key; }
    uint8_t *value(uint32_t idx, uint32_t cpu) const {
        return base + lay.values + (uint64_t{idx} * ncpus + cpu) * lay.value_stride;
    }
};

/// A hash map's walk as its view keeps it (a lookup) or as a writer builds it.
inline hash_probe probe_of(const map_ref &m) {
    return hash_probe{m.section<uint32_t>(m.lay.buckets),
                      m.base + m.lay.entries,
                      m.base + m.lay.values,
                      m.lay.seed,
                      m.lay.bucket_shift,
                      m.lay.nentries,
                      m.lay.entry_stride,
                      m.spec.key_size,
                      m.lay.value_stride,
                      0,
                      std::has_single_bit(m.lay.value_stride)
                          ? static_cast<uint32_t>(std::countr_zero(m.lay.value_stride))
                          : 0,
                      m.lay.hazards != 0 ? m.base + m.lay.hazards + sizeof(hazard_control)
                                         : nullptr};
}

/// What the lookup functions a view picks (lookup_fn) read of it.
struct view_access {
    static map_ref ref(const map_view &v) { return map_ref{v.base_, v.spec_, v.ncpus_, v.layout_}; }
    static const hash_probe &probe(const map_view &v) { return v.probe_; }
};

/// The CPU slot programs on this thread use.
uint32_t current_cpu(uint32_t ncpus);

/// Where an update's value bytes come from.
struct value_source {
    enum class spread {
        this_cpu,  ///< one value for the current CPU (programs)
        every_cpu, ///< one value copied to every CPU
        per_cpu,   ///< ncpus values in CPU order
    };
    const uint8_t *data;
    spread how;
};

/// Writes an entry's value slots; fresh entries get zeros in the slots the source skips.
void store_value(const map_ref &m, uint32_t idx, const value_source &src, bool fresh);

/// How long a map writer waits for a map's lock before its operation fails.
inline constexpr time_t lock_wait_seconds = 1;

/// Holds a robust process-shared mutex, waiting at most lock_wait_seconds (locked() is false
/// after that), or, for programs (how == spin), trying a bounded number of times without
/// sleeping. When the previous owner died holding it, the lock is made consistent and
/// owner_died() tells the caller to repair what it guards.
class robust_lock {
public:
    enum class wait { bounded, spin };
    explicit robust_lock(pthread_mutex_t &mu, wait how = wait::bounded);
    ~robust_lock();
    robust_lock(const robust_lock &) = delete;
    robust_lock &operator=(const robust_lock &) = delete;

    bool locked() const { return locked_; }
    bool owner_died() const { return owner_died_; }

private:
    pthread_mutex_t &mu_;
    bool locked_ = false;
    bool owner_died_ = false;
};

// The find functions return `none` for a key with no entry rather than an empty
// std::optional: GCC returns optional<uint32_t> through the stack in two stores and one load, a
// store-forwarding stall that was most of a hash lookup.

/// A perf ring's producer-side state, beside the header (not in the pages the consumer maps).
/// Producers serialise on the header's lock; the header's wake_seq and waiters wake the
/// consumer as for ring buffers.
struct perf_ring_state {
    uint64_t pending_lost;  ///< lost since the last PERF_RECORD_LOST was written
    uint64_t total_lost;    ///< lost since the ring was made
    uint32_t wakeup_events; ///< wake the consumer every this many records (0: every one)
    uint32_t since_wakeup;  ///< records since the last wake (under the lock)
    uint32_t disabled;      ///< PERF_EVENT_IOC_DISABLE: output fails
    uint32_t reserved;
};

// Queues and stacks (queue.cpp): push, pop and peek under the header's lock.
long queue_push(const map_ref &m, const void *value, uint64_t flags);
/// Copies the next value to out (when not null); removes it when take.
long queue_pop(const map_ref &m, void *out, bool take);
/// Every value in pop order.
std::vector<std::vector<uint8_t>> queue_values(const map_ref &m);
uint32_t queue_count(const map_ref &m);

// Bloom filters (bloom.cpp): lock-free, bits set with atomic ORs.
/// The bit array's size in bits for a spec (a power of two, at least 64), as Linux sizes it.
uint64_t bloom_bits_for(const map_spec &spec);
uint32_t bloom_hashes_for(const map_spec &spec);
void bloom_add(const map_ref &m, const void *value);
bool bloom_test(const map_ref &m, const void *value);

// LPM tries (lpm.cpp) over the hash family's storage: entries hold keys masked to their
// prefix length; a lookup tries the prefix lengths in use, longest first.
inline uint32_t lpm_max_prefixlen(const map_spec &spec) {
    return (spec.key_size - 4) * 8;
}
/// The entry of the longest stored prefix of key, or none.
uint32_t lpm_find(const map_ref &m, const void *key);
long lpm_update(const map_ref &m, const void *key, const value_source &src, uint64_t flags);
long lpm_remove(const map_ref &m, const void *key);
/// key masked to its prefix length into out (key_size bytes); false when the prefix length is
/// longer than the map's.
bool lpm_mask_key(const map_spec &spec, const void *key, uint8_t *out);
/// Counts entry idx's prefix length up or down (hash.cpp calls it as entries come and go).
void lpm_count(const map_ref &m, uint32_t idx, int delta);
void lpm_clear_counts(const map_ref &m);

// Perf event arrays and perf rings (perf.cpp).
void perf_ring_init(const map_ref &m);
long perf_array_remove(const map_ref &m, const void *key);

/// lru_hash and lru_percpu_hash.
inline bool is_lru(map_type t) {
    return t == map_type::lru_hash || t == map_type::lru_percpu_hash;
}

// Stack trace maps (stack_trace.cpp).
uint32_t stack_find(const map_ref &m, const void *key);
long stack_put(const map_ref &m, std::span<const uint64_t> ips, uint64_t flags);
/// Copies stack id's frames (zero-padded to value_size), under the lock; ENOENT when empty.
result<std::vector<uint8_t>> stack_read(const map_ref &m, const void *key);
long stack_remove(const map_ref &m, const void *key);
std::optional<uint32_t> stack_next(const map_ref &m, const void *key);
uint64_t stack_count(const map_ref &m);

// Arrays (array.cpp).
uint32_t array_find(const map_ref &m, const void *key);
long array_update(const map_ref &m, const void *key, const value_source &src, uint64_t flags);
std::optional<uint32_t> array_next(const map_ref &m, const void *key);

// Hash maps: hash, percpu_hash and lru_hash (hash.cpp).
void hash_init(const map_ref &m);
/// touch marks the entry used (lru_hash lookups from programs).
uint32_t hash_find(const map_ref &m, const void *key, bool touch);
/// The lookup compiled code calls (and map_view::lookup, for the maps it does not walk inline)
/// for a hash map of this spec and layout, specialised for plain hash maps with 4- and 8-byte
/// keys and for value strides of a power of two (map_view::lookup's inline walk); no_value for
/// the others.
lookup_fn hash_lookup_for(const map_spec &spec, const map_layout &lay);
/// The update programs make (map_view::update) for a plain hash map of this spec, specialised
/// for its key and value sizes; null for the other types.
update_fn hash_update_for(const map_spec &spec);
long hash_update(const map_ref &m, const void *key, const value_source &src, uint64_t flags);
long hash_remove(const map_ref &m, const void *key);
/// The entry after key's in iteration order; the first one when key is null or absent.
std::optional<uint32_t> hash_next(const map_ref &m, const void *key);

/// cgroup_array: an update from the controller (value: a cgroup fd of this process) and a
/// delete; both as map_view::write() and erase() report them.
result<void> cgroup_array_write(const map_ref &m, std::span<const uint8_t> key,
                                std::span<const uint8_t> value, uint64_t flags);
result<void> cgroup_array_erase(const map_ref &m, std::span<const uint8_t> key);

// Consumers of ring buffers and perf rings (ringbuf.cpp): they sleep on the header's wake_seq,
// a futex word shared across processes.
/// Wakes every consumer waiting in wait_for_records on h.
void wake_consumers(map_header &h);
/// Waits until ready() holds, at most timeout_ms (forever when negative); false at the timeout.
bool wait_for_records(map_header &h, int timeout_ms, const std::function<bool()> &ready);

/// Tests only: called by an insert that holds the lock and has taken a free entry but not
/// linked it yet, so a test can kill the process at the worst moment.
extern void (*hash_insert_hook)();
/// Tests only: called by an update of a present key while it holds the entry's lock (or, in a
/// lock_free_updates map, while its hazard names the entry), before it writes the value, so a
/// test can kill or stop the writer there.
extern void (*hash_entry_locked_hook)();

/// How long a hash writer tries for an entry's lock held by a live thread before its operation
/// fails with -EBUSY (a stopped holder must not stall other processes longer).
inline constexpr auto entry_lock_wait = std::chrono::milliseconds(1000);

} // namespace bpftime::maps::detail
