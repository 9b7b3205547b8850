// SPDX-License-Identifier: MIT
/// @file
/// Maps that live in shared memory: their storage format and a process-local view.
///
/// A map's storage is one contiguous block (inside the store's segment, or any memory
/// several processes map). init_storage() formats it; map_view::open() gives a process a
/// view whose bounds come from the process's own copy of the map_spec, so nothing read from
/// shared memory can send an access outside the block, whatever another process or a faulty
/// program wrote there.
#pragma once

#include <bpftime/maps/hash_walk.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/map_lookup_plan.hpp>

#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bpftime::maps {

/// Map types, numbered as Linux's enum bpf_map_type.
enum class map_type : uint32_t {
    hash = 1,
    array = 2,
    percpu_hash = 5,
    percpu_array = 6,
    cgroup_array = 8,
    lru_hash = 9,
    ringbuf = 27,
    /// BPF_MAP_TYPE_PERF_EVENT_ARRAY: 4-byte keys (an index, usually a CPU) and 4-byte values,
    /// each the store id of a perf_ring (0: empty slot). Programs do not look it up or update
    /// it; bpf_perf_event_output writes into the ring a slot names.
    perf_event_array = 4,
    /// bpftime's own, not a Linux map type: the ring of one BPF output perf event, laid out as
    /// the kernel's mmap of a perf event fd (a perf_event_mmap_page page, then max_entries bytes
    /// of data, a power of two and a multiple of 4096). key_size and value_size are 0.
    perf_ring = 0x40000004,
    /// BPF_MAP_TYPE_LRU_PERCPU_HASH: per-CPU values as percpu_hash, eviction of the least
    /// recently used entry when full as lru_hash. BPF_F_NO_COMMON_LRU is accepted (there is one
    /// LRU list either way).
    lru_percpu_hash = 10,
    /// BPF_MAP_TYPE_STACK_TRACE: 4-byte keys (a stack id, below max_entries rounded up to a power
    /// of two), values of value_size / 8 return addresses (u64), zero-padded past the stack's
    /// depth. Filled by bpf_get_stackid only (stack_put); the controller reads and deletes.
    stack_trace = 7,
    /// BPF_MAP_TYPE_LPM_TRIE: keys are `struct { u32 prefixlen; u8 data[]; }` (5 to 260 bytes,
    /// prefixlen in host order, data most significant bit first); a lookup gives the value of
    /// the longest stored prefix of the key, an update or delete names one prefix exactly.
    /// BPF_F_NO_PREALLOC is required, as in Linux.
    lpm_trie = 11,
    /// BPF_MAP_TYPE_QUEUE: no keys (key_size 0); values pushed and popped first in, first out.
    queue = 22,
    /// BPF_MAP_TYPE_STACK: as queue, last in, first out.
    stack = 23,
    /// BPF_MAP_TYPE_BLOOM_FILTER: no keys; values are pushed (added) and peeked (tested: maybe
    /// present or certainly absent). map_extra's low 4 bits: the number of hash functions (0: 5).
    bloom_filter = 30,
    /// BPF_MAP_TYPE_PROG_ARRAY: 4-byte keys (an index) and 4-byte values, each the store id of
    /// a program (0: empty slot). Programs do not look it up or update it; bpf_tail_call runs
    /// the program a slot names.
    prog_array = 3,
    /// BPF_MAP_TYPE_ARRAY_OF_MAPS: 4-byte keys (an index) and 4-byte values, each the store id
    /// of an inner map (0: empty slot) that matches the map's inner template (map_spec::inner).
    /// A program's lookup gives the inner map, usable as the map of its next helper call; the
    /// controller reads and writes the ids.
    array_of_maps = 12,
    /// BPF_MAP_TYPE_HASH_OF_MAPS: as array_of_maps with keys of any size, entries that come and
    /// go as a hash map's.
    hash_of_maps = 13,
};

/// "hash", "array", "percpu_hash", "percpu_array", "cgroup_array", "lru_hash", "ringbuf",
/// "perf_event_array", "perf_ring", "lru_percpu_hash", "stack_trace", "lpm_trie", "queue", "stack",
/// "bloom_filter", "prog_array", "array_of_maps", "hash_of_maps" (or "unknown").
const char *map_type_name(map_type type);
/// Parses the names above.
std::optional<map_type> parse_map_type(std::string_view name);
/// The name Linux gives map type t (enum bpf_map_type without BPF_MAP_TYPE_, lower case:
/// "stack_trace" for 7), or "unknown".
const char *linux_map_type_name(uint32_t t);

/// Update flags, as in Linux.
inline constexpr uint64_t update_any = 0;     ///< BPF_ANY
inline constexpr uint64_t update_noexist = 1; ///< BPF_NOEXIST
inline constexpr uint64_t update_exist = 2;   ///< BPF_EXIST
/// BPF_F_LOCK: a user's read or write of a value holding a struct bpf_spin_lock takes it.
inline constexpr uint64_t update_lock = 4;

/// Map flags, as in Linux.
inline constexpr uint32_t map_no_prealloc = 1;  ///< BPF_F_NO_PREALLOC (lpm_trie requires it)
inline constexpr uint32_t map_zero_seed = 0x40; ///< BPF_F_ZERO_SEED (bloom_filter: hash seed 0)
/// BPF_F_INNER_MAP: an array made to be an inner map whose template leaves max_entries free
/// (arrays and per-CPU arrays only; a map put into an outer map carries the template's flags).
inline constexpr uint32_t map_inner_map = 0x1000;
/// A bloom filter's number of hash functions when map_extra leaves it 0, as Linux's.
inline constexpr uint32_t bloom_default_hashes = 5;

/// bpf_perf_event_output's flags value for "the slot of the current CPU" (BPF_F_CURRENT_CPU);
/// other values below it name a slot.
inline constexpr uint64_t perf_current_cpu = 0xffffffffull;

/// bpf_get_stackid's flags, as in Linux.
inline constexpr uint64_t stack_skip_mask = 0xff;           ///< BPF_F_SKIP_FIELD_MASK
inline constexpr uint64_t stack_user = 1ull << 8;           ///< BPF_F_USER_STACK
inline constexpr uint64_t stack_fast_cmp = 1ull << 9;       ///< BPF_F_FAST_STACK_CMP
inline constexpr uint64_t stack_reuse_id = 1ull << 10;      ///< BPF_F_REUSE_STACKID
inline constexpr uint64_t stack_user_build_id = 1ull << 11; ///< BPF_F_USER_BUILD_ID (get_stack)
/// The deepest stack a stack trace map or bpf_get_stack keeps (Linux's default
/// kernel.perf_event_max_stack).
inline constexpr uint32_t max_stack_depth = 127;

/// Ring-buffer flags, as in Linux.
inline constexpr uint64_t ringbuf_no_wakeup = 1;    ///< BPF_RB_NO_WAKEUP
inline constexpr uint64_t ringbuf_force_wakeup = 2; ///< BPF_RB_FORCE_WAKEUP

/// What a map is. For ringbuf, max_entries is the data size in bytes (a power of two and a
/// multiple of 4096), key_size and value_size are 0. A cgroup_array has 4-byte keys (the index)
/// and 4-byte values: what an update gives is a cgroup directory's fd in the updating process,
/// as for Linux's; the slot keeps the cgroup's id (cgroup_id_of_fd). Queues, stacks and bloom
/// filters have key_size 0.
/// The inner map template of an array_of_maps or hash_of_maps (what Linux takes from
/// BPF_MAP_CREATE's inner_map_fd): every map put into the outer map has this type, key size,
/// value size and flags, and, for arrays without BPF_F_INNER_MAP, these max_entries (Linux's
/// bpf_map_meta_equal). type 0: no template (every other map type).
struct inner_map_template {
    map_type type = map_type{};
    uint32_t key_size = 0;
    uint32_t value_size = 0;
    uint32_t max_entries = 0;
    uint32_t flags = 0;
    bool present() const { return static_cast<uint32_t>(type) != 0; }
};

struct map_spec {
    map_type type = map_type::array;
    uint32_t key_size = 0;
    uint32_t value_size = 0;
    uint32_t max_entries = 0;
    uint32_t flags = 0;
    /// BPF_MAP_CREATE's map_extra: a bloom filter's number of hash functions in the low 4 bits
    /// (0: bloom_default_hashes); 0 for every other type.
    uint64_t map_extra = 0;
    /// array_of_maps, hash_of_maps: the inner map template (required); absent for other types.
    inner_map_template inner;
    /// Where the value's struct bpf_spin_lock is (its 4-byte lock word), -1 for none: hash and
    /// array maps whose BTF value type has one (BPF_MAP_CREATE's btf_value_type_id). Users'
    /// BPF_F_LOCK reads and writes take it, as bpf_spin_lock does, and never copy it.
    int32_t spin_lock_off = -1;
};

/// Whether a map type holds other maps (array_of_maps, hash_of_maps).
bool is_map_in_map(map_type type);
/// The template a map of this spec makes as the inner map of an outer map (Linux's
/// bpf_map_meta_alloc): EINVAL when it is itself a map-in-map or a type bpftime does not put
/// into outer maps (perf_ring), naming the type.
result<inner_map_template> inner_template_of(const map_spec &inner);
/// Checks that a map of spec `inner` may be put into the outer map `outer` (its template),
/// as Linux's map_meta_equal: EINVAL naming the first field that differs and both values, or
/// that the map is a map-in-map.
result<void> check_inner_map(const map_spec &outer, const map_spec &inner);

/// Checks a spec: known type, sizes the type accepts (array keys are 4 bytes, ...), limits.
/// The error says which field is wrong and why.
result<void> validate_spec(const map_spec &spec);

/// Bytes of storage a map needs; ncpus is the number of per-CPU slots for per-CPU maps.
result<uint64_t> storage_size(const map_spec &spec, uint32_t ncpus);

/// Formats storage of storage_size() bytes (zeroed or not) for a map. The storage must be
/// 64-byte aligned (as every mapping is); map_view::open() requires the same.
result<void> init_storage(void *base, uint64_t size, const map_spec &spec, uint32_t ncpus);

/// The error for an update's negative errno (-EEXIST, -ENOENT, -E2BIG, -EINVAL), worded the
/// same for every map implementation.
error update_error(long rc, const map_spec &spec, uint64_t flags);
/// Checks a key's size for a map (may_be_empty: an empty key, as next_key's start, passes).
result<void> check_key(const map_spec &spec, std::span<const uint8_t> key, bool may_be_empty);

/// The page size of the mmapable layouts (x86-64's).
inline constexpr uint64_t mmap_page_size = 4096;

/// The part of a map's storage a process may mmap as it would a Linux map fd: an array with
/// BPF_F_MMAPABLE gives its values (value_stride apart, contiguous, whole pages); a ring buffer
/// gives the consumer position's page, then the producer position's page and the data (the
/// kernel's offset-0 and offset-4096 mappings); a perf ring gives its perf_event_mmap_page page
/// and its data (the kernel's mapping of a perf event fd). Offsets are from the storage's start and
/// are page-aligned when the storage is (the store allocates such maps on a page).
struct mmap_region {
    uint64_t offset = 0;
    uint64_t length = 0;
};
/// The mmapable region of a map of this spec, or nothing (other types, arrays without
/// BPF_F_MMAPABLE).
std::optional<mmap_region> mmapable_region(const map_spec &spec, uint32_t ncpus);

/// The number of per-CPU slots this machine uses for new per-CPU maps.
uint32_t possible_cpus();

/// The cgroup v2 id of the cgroup directory open as fd (its inode number on the cgroup2 file
/// system, as bpf_get_current_cgroup_id() reports it): what a cgroup_array slot stores, so any
/// process can compare it. EBADF when fd is not an open directory of a cgroup2 file system.
result<uint64_t> cgroup_id_of_fd(int fd);
/// The ids of the cgroup v2 hierarchy this process is in (/proc/self/cgroup's "0::" line, under
/// the cgroup2 mount of /proc/self/mountinfo), from its own cgroup up to the root. Empty when
/// the process is in no cgroup2 hierarchy.
result<std::vector<uint64_t>> current_cgroup_ancestry();

namespace detail {
/// Where each part of a map's storage starts, in bytes from the base. Computed from the spec
/// and the CPU count (never read back from storage), so it bounds every access.
struct map_layout {
    uint64_t buckets = 0;       ///< hash: bucket heads (uint32 entry index or none)
    uint64_t free_stack = 0;    ///< hash: indices of free entries (uint32)
    uint64_t stamps = 0;        ///< lru_hash: last-use stamps (uint64)
    uint64_t entries = 0;       ///< hash: entry_stride bytes per entry (detail::hash_entry)
    uint64_t values = 0;        ///< the value area, or a ring buffer's data
    uint64_t values_size = 0;   ///< its length in bytes
    uint64_t total = 0;         ///< bytes of storage the map needs
    uint64_t seed = 0;          ///< hash: the key hash seed (a copy of the header's)
    uint64_t ring_consumer = 0; ///< ringbuf: the page whose first 8 bytes are the consumer position
    uint64_t ring_producer = 0; ///< ringbuf: the page whose first 8 bytes are the producer position
    uint64_t perf_state = 0;    ///< perf_ring: producer-side state (detail::perf_ring_state)
    uint64_t perf_page = 0;     ///< perf_ring: the perf_event_mmap_page (data from values)
    uint64_t queue_state = 0;   ///< queue, stack: one uint64 word, oldest slot << 32 | count
    uint64_t lpm_counts = 0;    ///< lpm_trie: entries per prefix length (uint32[max_prefixlen+1])
    uint64_t bloom_bits = 0;    ///< bloom_filter: the bit array (uint64 words)
    uint64_t bloom_mask = 0;    ///< bloom_filter: bits - 1 (bits a power of two, at least 64)
    uint64_t hazards = 0;       ///< hash with lock-free updates: the updaters' hazard slots
    uint64_t mmap_offset = 0;   ///< mmapable_region(): where it starts (0 and 0: none)
    uint64_t mmap_length = 0;   ///< and its length, whole pages
    uint32_t nbuckets = 0;      ///< hash: a power of two
    uint32_t value_stride = 0;  ///< bytes per value slot: value_size rounded up to 8
    uint32_t entry_stride = 0;  ///< hash: bytes per entry, its key included, a multiple of 8
    uint32_t bloom_hashes = 0;  ///< bloom_filter: hash functions per value
    uint32_t nentries = 0;      ///< hash: entries in storage, max_entries and the spare ones
    uint32_t bucket_shift = 0;  ///< hash: 32 - log2(nbuckets), how a key's hash picks its bucket
};
struct map_ref;
struct view_access;
/// A lookup specialised for one map (its type and key size), chosen when a view is opened:
/// view is the map_view. The same signature as vm::find_call::find, so compiled code calls it
/// directly.
using lookup_fn = void *(*)(const void *view, const void *key);
/// An update specialised for one map, chosen when a view is opened: map_view::update's
/// arguments after the view.
using update_fn = long (*)(const void *view, const void *key, const void *value, uint64_t flags);
/// The lookup of maps whose programs find no values (and of a view not opened).
inline void *no_value(const void *, const void *) {
    return nullptr;
}
} // namespace detail

/// A process-local view of a map's storage. Copyable; it does not own the storage.
/// Every operation is safe against concurrent use from other threads and processes.
class map_view {
public:
    /// Checks that storage holds a map formatted for this spec and returns a view.
    static result<map_view> open(void *base, uint64_t size, const map_spec &spec);

    const map_spec &spec() const { return spec_; }
    uint32_t ncpus() const { return ncpus_; }

    // --- as programs see the map (helpers call these) ---

    /// The value for key, or nullptr. Per-CPU maps give the current CPU's value.
    [[gnu::always_inline]] void *lookup(const void *key) const {
        if (table_count_ != 0) [[likely]] {
            // A plain array: the key is the index, bounded by the view's copy of max_entries.
            const uint32_t idx = detail::load<uint32_t>(static_cast<const uint8_t *>(key));
            return idx < table_count_ ? table_ + (uint64_t{idx} << table_shift_) : nullptr;
        }
        // A plain hash map walks inline; every other map calls the lookup made for it.
        switch (probe_.inline_key_size) {
        case 4:
            return detail::inline_hash_lookup<4>(probe_, key);
        case 8:
            return detail::inline_hash_lookup<8>(probe_, key);
        default:
            return lookup_(this, key);
        }
    }
    /// 0 or a negative errno (-ENOENT, -EEXIST, -E2BIG when full, -EINVAL bad flags or key;
    /// hash maps: -EBUSY when another writer held the key's entry for over a second, as a
    /// stopped process can). Per-CPU maps update the current CPU's value. An update of a key a
    /// hash map holds writes the value in place under that entry's lock only, or with no lock
    /// for plain hash maps of 4- and 8-byte keys and values (one store; see hash.cpp).
    long update(const void *key, const void *value, uint64_t flags) const {
        // Inline: a plain hash map's update is one direct call of the update specialised for it.
        return update_ != nullptr ? update_(this, key, value, flags)
                                  : update_other(key, value, flags);
    }
    /// 0 or a negative errno (-ENOENT; -EINVAL for arrays; -EBUSY as for update()).
    long remove(const void *key) const;

    /// The memory where values live: programs may access this range (the VM region of the
    /// map). Keys and bookkeeping are outside it. Empty for ring buffers.
    std::span<uint8_t> value_area() const;
    /// Bytes from one value slot to the next in value_area() (an array's element i is slot i;
    /// per-CPU maps have ncpus slots per element).
    uint64_t value_stride() const;
    /// How compiled code may do lookup() without calling it: a plain array is an indexed table
    /// over value_area(), every other map with values a call of lookup() on this view (which
    /// must outlive the code). Nothing for ring buffers.
    std::optional<vm::map_lookup_plan> lookup_plan() const;

    // --- as the controller sees the map ---

    /// The value bytes of key: value_size bytes, or ncpus * value_size for per-CPU maps
    /// (one slot per CPU, in CPU order). ENOENT when absent.
    result<std::vector<uint8_t>> read(std::span<const uint8_t> key) const;
    /// Sets a value; for per-CPU maps value holds either one value (every CPU gets it) or
    /// ncpus values.
    result<void> write(std::span<const uint8_t> key, std::span<const uint8_t> value,
                       uint64_t flags = update_any) const;
    /// Removes key.
    result<void> erase(std::span<const uint8_t> key) const;
    /// Key iteration as BPF_MAP_GET_NEXT_KEY: the first key when key is empty, then the
    /// key after key; nullopt at the end.
    result<std::optional<std::vector<uint8_t>>> next_key(std::span<const uint8_t> key) const;
    /// Number of entries in use (hash maps, LPM tries), values held (queues, stacks) or
    /// max_entries (arrays).
    uint64_t count() const;

    // --- queues, stacks and bloom filters, as programs see them ---
    //
    // bpf_map_push_elem, bpf_map_pop_elem, bpf_map_peek_elem: value_size bytes at value.

    /// Pushes a value (queue, stack: BPF_EXIST drops the oldest value when full, else -E2BIG;
    /// bloom filter: adds it, flags must be 0). 0 or a negative errno (-EINVAL: bad flags or
    /// another map type; -E2BIG: full).
    long push_elem(const void *value, uint64_t flags) const;
    /// Queue, stack: copies the next value (the oldest of a queue, the newest of a stack) to
    /// value and removes it. -ENOENT when empty, -EINVAL for another map type.
    long pop_elem(void *value) const;
    /// Queue, stack: as pop_elem without removing. Bloom filter: 0 when value may have been
    /// pushed, -ENOENT when it certainly was not (value is read, not written).
    long peek_elem(void *value) const;

    // --- queues, stacks and bloom filters, as the controller sees them ---
    //
    // Linux's bpf() commands with a NULL key: BPF_MAP_UPDATE_ELEM pushes, BPF_MAP_LOOKUP_ELEM
    // peeks, BPF_MAP_LOOKUP_AND_DELETE_ELEM pops.

    /// push_elem with the errors worded (value must be value_size bytes).
    result<void> push(std::span<const uint8_t> value, uint64_t flags = update_any) const;
    /// pop_elem: the value; ENOENT ("the queue is empty") when empty.
    result<std::vector<uint8_t>> pop() const;
    /// Queue, stack: the value pop() would give. Bloom filter: the value given when it may be
    /// present, ENOENT when it is certainly absent.
    result<std::vector<uint8_t>> peek(std::span<const uint8_t> value = {}) const;
    /// Queue, stack: every value in the order pops would give them, without removing any.
    result<std::vector<std::vector<uint8_t>>> values() const;

    // --- cgroup arrays ---
    //
    // write() takes a cgroup fd of the calling process (4 bytes) with BPF_ANY only, erase()
    // empties a slot; read() is refused with EOPNOTSUPP and programs get no value from lookup()
    // and cannot update, as in Linux.

    /// bpf_current_task_under_cgroup: 1 when the calling process's cgroup is the one in slot
    /// index or below it, 0 when not, -E2BIG for an index past max_entries, -EAGAIN for an empty
    /// slot, -EINVAL when this is not a cgroup array. The process's cgroup is read from /proc
    /// once per thread and again after a second or a fork.
    long current_task_under_cgroup(uint32_t index) const;
    /// The cgroup id in slot index (0 when empty), or nothing for a bad index or another type.
    std::optional<uint64_t> cgroup_at(uint32_t index) const;

    // --- ring buffers ---

    /// Space for a record of size bytes, or nullptr when the ring is full. Many producers in
    /// many processes may reserve at once.
    void *ringbuf_reserve(uint64_t size) const;
    /// Publishes (or drops) a record from ringbuf_reserve.
    void ringbuf_submit(void *record, uint64_t flags) const;
    void ringbuf_discard(void *record, uint64_t flags) const;
    /// Reserve + copy + submit. 0 or -EAGAIN when full.
    long ringbuf_output(const void *data, uint64_t size, uint64_t flags) const;
    /// Consumer side (one consumer): calls fn for each published record in order, at most
    /// max of them, and returns how many it delivered. Discarded records are skipped; records
    /// past max stay in the ring for the next call.
    result<uint64_t> ringbuf_consume(const std::function<void(std::span<const uint8_t>)> &fn,
                                     uint64_t max = UINT64_MAX) const;
    /// Waits until a record may be ready or timeout_ms passes; true when data is available.
    bool ringbuf_wait(int timeout_ms) const;
    /// Records a producer could not place because the ring was full.
    uint64_t ringbuf_dropped() const;
    /// Ring buffers: records skipped because the process that reserved them died before it
    /// submitted or discarded them.
    uint64_t ringbuf_lost() const;

    // --- perf event arrays and perf rings (perf_buffer) ---

    /// perf_event_array: the store id of the perf ring bpf_perf_event_output writes to for
    /// flags (perf_current_cpu: the slot of this thread's CPU, modulo max_entries; else the
    /// index), or a negative errno: -EINVAL for flags beyond the index, -E2BIG for an index out
    /// of range, -ENOENT for an empty slot (as Linux).
    long perf_ring_id(uint64_t flags) const;
    /// prog_array: the store id of the program in slot index, or a negative errno: -E2BIG for
    /// an index out of range, -ENOENT for an empty slot, -EINVAL for another map type.
    long prog_array_id(uint32_t index) const;
    /// array_of_maps, hash_of_maps, as a program's lookup sees them: the store id of the inner
    /// map of key (key_size bytes), 0 when there is none (an empty slot, an absent key or
    /// another map type).
    uint32_t inner_map_id(const void *key) const;
    /// perf_ring: appends one PERF_RECORD_SAMPLE carrying size bytes of raw data (padded to 8
    /// bytes as Linux does), first a PERF_RECORD_LOST when records were lost since the last one
    /// placed. 0, or a negative errno with the record counted as lost: -ENOSPC when the ring is
    /// full, -EBUSY when another producer holds the ring for too long, -EOPNOTSUPP while the
    /// event is disabled; -E2BIG for a record larger than a perf record can be, -EINVAL for
    /// another map. Producers in many processes may write at once; none waits long.
    long perf_output(const void *data, uint64_t size) const;
    /// perf_ring, consumer side (one consumer, as libbpf's perf_buffer): calls sample for each
    /// PERF_RECORD_SAMPLE's raw data and lost for each PERF_RECORD_LOST's count, in order, and
    /// returns how many records it read. EIO (the rest skipped) when the ring is corrupt.
    result<uint64_t> perf_consume(const std::function<void(std::span<const uint8_t>)> &sample,
                                  const std::function<void(uint64_t lost)> &lost) const;
    /// perf_ring: waits until data_head != data_tail or timeout_ms passes (negative: no limit).
    bool perf_wait(int timeout_ms) const;
    /// perf_ring: records lost so far (full ring, busy ring, disabled event).
    uint64_t perf_lost() const;
    // --- stack trace maps ---

    /// stack_trace: stores a stack of return addresses (ips.size() at most value_size / 8) as
    /// bpf_get_stackid does and returns its id, or a negative errno: -EEXIST when the stack's
    /// bucket holds another stack and flags lack stack_reuse_id, -EBUSY when other writers hold
    /// the map for too long, -EFAULT for an empty stack, -EINVAL for another map or unknown flags.
    /// flags: stack_fast_cmp (compare hashes only), stack_reuse_id (replace another stack).
    long stack_put(std::span<const uint64_t> ips, uint64_t flags) const;

    /// perf_ring: wake the consumer every `events` records (perf_event_attr::wakeup_events; 0
    /// is 1), and whether the event is enabled (PERF_EVENT_IOC_ENABLE / DISABLE).
    void perf_configure(uint32_t events, bool enabled) const;

private:
    friend struct detail::view_access;
    detail::map_ref ref() const;
    /// update() of every map without a specialised update function.
    long update_other(const void *key, const void *value, uint64_t flags) const;

    uint8_t *base_ = nullptr;
    uint64_t size_ = 0;
    map_spec spec_;
    uint32_t ncpus_ = 1;
    detail::map_layout layout_;
    detail::lookup_fn lookup_ = detail::no_value; // never null
    detail::update_fn update_ = nullptr;
    /// Hash maps: what their lookup reads (inline_key_size 0 for every other map).
    detail::hash_probe probe_;
    /// Plain arrays with a value stride of a power of two: their values, log2 of the stride and
    /// max_entries (0 for every other map), for the inline lookup.
    uint8_t *table_ = nullptr;
    uint32_t table_shift_ = 0;
    uint32_t table_count_ = 0;
};

} // namespace bpftime::maps
