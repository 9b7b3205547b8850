// SPDX-License-Identifier: MIT
// Map specs, the storage layout, opening a view, and the operations every keyed map shares.
#include "layout.hpp"

#include <sched.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdio>
#include <new>
#include <string>

namespace bpftime::maps {

namespace detail {

uint32_t current_cpu(uint32_t ncpus) {
    if (ncpus <= 1) {
        return 0;
    }
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : static_cast<uint32_t>(cpu) % ncpus;
}

void store_value(const map_ref &m, uint32_t idx, const value_source &src, bool fresh) {
    using spread = value_source::spread;
    uint32_t size = m.spec.value_size, me = current_cpu(m.ncpus);
    if (m.spec.spin_lock_off >= 0) {
        // As Linux's copy_map_value: everything but the struct bpf_spin_lock, which a program
        // may hold; a fresh value's lock is free. (Such maps have one value per entry.)
        const auto off = static_cast<uint32_t>(m.spec.spin_lock_off);
        uint8_t *dst = m.value(idx, 0);
        std::memcpy(dst, src.data, off);
        std::memcpy(dst + off + 4, src.data + off + 4, size - off - 4);
        if (fresh) {
            std::memset(dst + off, 0, 4);
        }
        return;
    }
    for (uint32_t cpu = 0; cpu < m.ncpus; cpu++) {
        uint8_t *dst = m.value(idx, cpu);
        if (src.how == spread::per_cpu) {
            std::memcpy(dst, src.data + uint64_t{cpu} * size, size);
        } else if (src.how == spread::every_cpu || cpu == me) {
            std::memcpy(dst, src.data, size);
        } else if (fresh) {
            std::memset(dst, 0, size);
        }
    }
}

robust_lock::robust_lock(pthread_mutex_t &mu, wait how) : mu_(mu) {
    // Storage lives in a shared segment: a holder that is stopped, or a lock word naming a
    // thread of another process, must not block a host forever. A writer waits a bounded time
    // (the critical sections are a few stores), then the operation fails. A program (a probe in
    // someone's thread) only spins a little: it must not sleep in the probed function.
    int rc = pthread_mutex_trylock(&mu_);
    for (int tries = 0; rc == EBUSY && how == wait::spin && tries < 256; tries++) {
        __builtin_ia32_pause();
        rc = pthread_mutex_trylock(&mu_);
    }
    if (rc == EBUSY && how == wait::bounded) {
        timespec deadline{};
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += lock_wait_seconds;
        rc = pthread_mutex_clocklock(&mu_, CLOCK_MONOTONIC, &deadline);
    }
    if (rc == EOWNERDEAD) {
        owner_died_ = true;
        rc = pthread_mutex_consistent(&mu_);
        if (rc != 0) {
            pthread_mutex_unlock(&mu_); // leaves it unrecoverable, but not held forever
        }
    }
    locked_ = rc == 0;
}

robust_lock::~robust_lock() {
    if (locked_) {
        pthread_mutex_unlock(&mu_);
    }
}

} // namespace detail

namespace {

using namespace detail;

enum class family { array, hash, ringbuf, cgroup_array, stack_trace, queue, bloom };

// Flags Linux programs commonly set that change nothing here: maps are always preallocated,
// there is one LRU list, and storage is always shared memory.
constexpr uint32_t f_no_prealloc = map_no_prealloc, f_no_common_lru = 2, f_mmapable = 1024;
constexpr uint32_t f_zero_seed = map_zero_seed, f_inner_map = map_inner_map;
constexpr uint32_t lpm_min_key_size = 4 + 1, lpm_max_key_size = 4 + 256; // Linux's bounds
constexpr uint32_t max_key_size = 512;                                   // Linux: MAX_BPF_STACK
constexpr uint32_t max_value_size = 1u << 20;     // a sane bound (Linux: KMALLOC_MAX_SIZE)
constexpr uint32_t max_percpu_value_size = 32768; // Linux: PCPU_MIN_UNIT_SIZE
constexpr uint32_t max_hash_entries = 1u << 31;   // leaves `none` free and nbuckets in 32 bits
constexpr uint32_t ringbuf_page = 4096;

// The one table of map types.
struct type_info {
    map_type type;
    const char *name;
    family fam;
    bool percpu;
    uint32_t allowed_flags;
    const char *flag_names;
};

constexpr type_info type_table[] = {
    {map_type::hash, "hash", family::hash, false, f_no_prealloc, "only BPF_F_NO_PREALLOC (0x1)"},
    {map_type::array, "array", family::array, false, f_mmapable | f_inner_map,
     "only BPF_F_MMAPABLE (0x400) and BPF_F_INNER_MAP (0x1000)"},
    {map_type::percpu_hash, "percpu_hash", family::hash, true, f_no_prealloc,
     "only BPF_F_NO_PREALLOC (0x1)"},
    {map_type::percpu_array, "percpu_array", family::array, true, f_inner_map,
     "only BPF_F_INNER_MAP (0x1000)"},
    {map_type::cgroup_array, "cgroup_array", family::cgroup_array, false, 0, "no flags"},
    {map_type::lru_hash, "lru_hash", family::hash, false, f_no_common_lru,
     "only BPF_F_NO_COMMON_LRU (0x2)"},
    {map_type::ringbuf, "ringbuf", family::ringbuf, false, 0, "no flags"},
    {map_type::perf_event_array, "perf_event_array", family::array, false, 0, "no flags"},
    {map_type::perf_ring, "perf_ring", family::ringbuf, false, 0, "no flags"},
    {map_type::lru_percpu_hash, "lru_percpu_hash", family::hash, true, f_no_common_lru,
     "only BPF_F_NO_COMMON_LRU (0x2)"},
    // BPF_F_STACK_BUILD_ID needs the build ids of the mappings; refused.
    {map_type::stack_trace, "stack_trace", family::stack_trace, false, 0,
     "no flags (BPF_F_STACK_BUILD_ID is not supported)"},
    {map_type::lpm_trie, "lpm_trie", family::hash, false, f_no_prealloc,
     "only BPF_F_NO_PREALLOC (0x1)"},
    {map_type::queue, "queue", family::queue, false, 0, "no flags"},
    {map_type::stack, "stack", family::queue, false, 0, "no flags"},
    {map_type::bloom_filter, "bloom_filter", family::bloom, false, f_zero_seed,
     "only BPF_F_ZERO_SEED (0x40)"},
    {map_type::prog_array, "prog_array", family::array, false, 0, "no flags"},
    {map_type::array_of_maps, "array_of_maps", family::array, false, 0, "no flags"},
    {map_type::hash_of_maps, "hash_of_maps", family::hash, false, f_no_prealloc,
     "only BPF_F_NO_PREALLOC (0x1)"},
};

// Maps whose values are store ids of other objects: programs cannot read them as values.
bool holds_ids(map_type type) {
    return type == map_type::perf_event_array || type == map_type::prog_array ||
           type == map_type::array_of_maps || type == map_type::hash_of_maps;
}

const type_info *find_type(map_type type) {
    auto it = std::find_if(std::begin(type_table), std::end(type_table),
                           [&](const type_info &t) { return t.type == type; });
    return it == std::end(type_table) ? nullptr : it;
}

// Linux's map type numbers are small: the table's row of each, found without a search (every
// map operation asks).
constexpr uint32_t small_types = 64;
constexpr std::array<int8_t, small_types> small_type_rows = [] {
    std::array<int8_t, small_types> rows{};
    rows.fill(-1);
    for (size_t i = 0; i < std::size(type_table); i++) {
        if (static_cast<uint32_t>(type_table[i].type) < small_types) {
            rows[static_cast<uint32_t>(type_table[i].type)] = static_cast<int8_t>(i);
        }
    }
    return rows;
}();

// Only called on validated specs.
const type_info &info_of(map_type type) {
    const auto t = static_cast<uint32_t>(type);
    if (t < small_types && small_type_rows[t] >= 0) {
        return type_table[small_type_rows[t]];
    }
    return *find_type(type);
}

std::string field(const char *name, uint64_t value) {
    return std::string(name) + " " + std::to_string(value) + ": ";
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

// Lays sections out one after another, failing on overflow instead of wrapping.
class section_builder {
public:
    explicit section_builder(uint64_t start) : at_(start) {}

    uint64_t add(uint64_t count, uint64_t unit) {
        uint64_t bytes = 0, start = (at_ + storage_align - 1) / storage_align * storage_align;
        if (start < at_ || __builtin_mul_overflow(count, unit, &bytes) ||
            __builtin_add_overflow(start, bytes, &at_)) {
            overflow_ = true;
        }
        return start;
    }
    /// bytes starting on a page boundary.
    uint64_t add_page(uint64_t bytes) {
        pad_to_page();
        uint64_t start = at_;
        if (__builtin_add_overflow(at_, bytes, &at_)) {
            overflow_ = true;
        }
        return start;
    }
    void pad_to_page() {
        uint64_t next = (at_ + mmap_page_size - 1) / mmap_page_size * mmap_page_size;
        if (next < at_) {
            overflow_ = true;
        }
        at_ = next;
    }
    bool overflow() const { return overflow_; }
    uint64_t end() const { return at_; }

private:
    uint64_t at_;
    bool overflow_ = false;
};

uint32_t slots_for(const map_spec &spec, uint32_t ncpus) {
    return info_of(spec.type).percpu ? ncpus : 1;
}

// Storage beyond this is a mistake, not a map.
constexpr uint64_t max_storage = 1ull << 46;

// ncpus: value slots per entry (1 unless the map is per-CPU).
result<map_layout> compute_layout(const map_spec &spec, uint32_t ncpus) {
    map_layout lay;
    section_builder b(sizeof(map_header));
    uint64_t n = spec.max_entries;
    if (info_of(spec.type).fam == family::ringbuf) {
        if (spec.type == map_type::perf_ring) {
            // The perf_event_mmap_page, then the data: the kernel's mapping of a perf event.
            lay.perf_state = b.add(1, sizeof(perf_ring_state));
            lay.perf_page = b.add_page(mmap_page_size);
            lay.values = b.add_page(n);
            lay.values_size = n;
            lay.mmap_offset = lay.perf_page;
            lay.mmap_length = b.end() - lay.perf_page;
        } else {
            // Each position at the start of its own page, the data from the next page boundary
            // (max_entries is a multiple of the page size): the layout of Linux's mapping.
            lay.ring_consumer = b.add_page(mmap_page_size);
            lay.ring_producer = b.add_page(mmap_page_size);
            lay.values = b.add_page(n);
            lay.mmap_offset = lay.ring_consumer;
            lay.mmap_length = b.end() - lay.ring_consumer;
        }
    } else if (info_of(spec.type).fam == family::stack_trace) {
        // Stack ids are bucket indices, as Linux's: max_entries rounded up to a power of two.
        lay.nbuckets = static_cast<uint32_t>(std::bit_ceil(n));
        lay.entry_stride = 2 * sizeof(uint32_t);
        lay.entries = b.add(lay.nbuckets, lay.entry_stride);
        lay.value_stride = spec.value_size;
        lay.values = b.add(lay.nbuckets, lay.value_stride);
    } else if (info_of(spec.type).fam == family::bloom) {
        lay.bloom_mask = bloom_bits_for(spec) - 1;
        lay.bloom_hashes = bloom_hashes_for(spec);
        lay.bloom_bits = b.add((lay.bloom_mask + 1) / 64, sizeof(uint64_t));
        lay.values = b.end();
    } else {
        if (info_of(spec.type).fam == family::queue) {
            lay.queue_state = b.add(1, sizeof(uint64_t));
        }
        if (info_of(spec.type).fam == family::hash) {
            lay.nbuckets = static_cast<uint32_t>(std::bit_ceil(n));
            lay.bucket_shift = 32 - static_cast<uint32_t>(std::countr_zero(lay.nbuckets));
            n += spare_entries(spec); // max_hash_entries leaves room for them below `none`
            lay.nentries = static_cast<uint32_t>(n);
            lay.buckets = b.add(lay.nbuckets, sizeof(uint32_t));
            lay.free_stack = b.add(n, sizeof(uint32_t));
            lay.stamps = b.add(is_lru(spec.type) ? n : 0, sizeof(uint64_t));
            if (lock_free_updates(spec)) {
                lay.hazards = b.add(1 + hazard_slots, sizeof(hazard_slot));
            }
            lay.entry_stride = hash_entry_stride(spec.key_size);
            lay.entries = b.add(n, lay.entry_stride);
            if (spec.type == map_type::lpm_trie) {
                lay.lpm_counts = b.add(uint64_t{lpm_max_prefixlen(spec)} + 1, sizeof(uint32_t));
            }
        }
        lay.value_stride = (spec.value_size + 7) / 8 * 8;
        uint64_t slots = 0;
        if (__builtin_mul_overflow(n, uint64_t{ncpus}, &slots)) {
            slots = UINT64_MAX;
        }
        if (spec.type == map_type::array && (spec.flags & f_mmapable) != 0) {
            uint64_t bytes = 0;
            if (__builtin_mul_overflow(slots, uint64_t{lay.value_stride}, &bytes)) {
                bytes = UINT64_MAX;
            }
            lay.values = b.add_page(bytes);
            lay.values_size = b.end() - lay.values;
            b.pad_to_page();
            lay.mmap_offset = lay.values;
            lay.mmap_length = b.end() - lay.values;
        } else {
            lay.values = b.add(slots, lay.value_stride);
        }
    }
    if (lay.values_size == 0) {
        lay.values_size = b.end() - lay.values;
    }
    lay.total = b.end();
    if (b.overflow() || lay.total > max_storage) {
        return make_error(E2BIG, "the map needs more than " + std::to_string(max_storage) +
                                     " bytes of storage");
    }
    return lay;
}

result<void> check_ncpus(const map_spec &spec, uint32_t ncpus) {
    if (info_of(spec.type).percpu && (ncpus == 0 || ncpus > max_ncpus)) {
        return make_error(EINVAL, field("ncpus", ncpus) + "per-CPU maps take 1 to " +
                                      std::to_string(max_ncpus) + " CPU slots");
    }
    return {};
}

result<void> check_base(const void *base) {
    if (base == nullptr || reinterpret_cast<uintptr_t>(base) % storage_align != 0) {
        return make_error(EINVAL, "map storage must be " + std::to_string(storage_align) +
                                      "-byte aligned and not null");
    }
    return {};
}

error too_small(uint64_t size, uint64_t need) {
    return make_error(EINVAL, "storage of " + std::to_string(size) + " bytes is smaller than the " +
                                  std::to_string(need) + " bytes the map needs");
}

uint32_t find_entry(const map_ref &m, const void *key, bool touch) {
    switch (info_of(m.spec.type).fam) {
    case family::array:
        return array_find(m, key);
    case family::hash:
        break;
    case family::ringbuf:
    case family::cgroup_array:
    case family::stack_trace: // read under its lock (stack_read)
    case family::queue:
    case family::bloom:
        return none;
    }
    return m.spec.type == map_type::lpm_trie ? lpm_find(m, key) : hash_find(m, key, touch);
}

long update_entry(const map_ref &m, const void *key, const value_source &src, uint64_t flags) {
    switch (info_of(m.spec.type).fam) {
    case family::array:
        return array_update(m, key, src, flags);
    case family::hash:
        return m.spec.type == map_type::lpm_trie ? lpm_update(m, key, src, flags)
                                                 : hash_update(m, key, src, flags);
    case family::ringbuf:
    case family::cgroup_array: // programs cannot update a cgroup array
    case family::stack_trace:  // nor a stack trace map (bpf_get_stackid fills it)
    case family::queue:        // as Linux: values are pushed, not updated
    case family::bloom:
        break;
    }
    return -EINVAL;
}

} // namespace

const char *map_type_name(map_type type) {
    const type_info *t = find_type(type);
    return t ? t->name : "unknown";
}

std::optional<map_type> parse_map_type(std::string_view name) {
    for (const type_info &t : type_table) {
        if (name == t.name) {
            return t.type;
        }
    }
    return std::nullopt;
}

result<void> validate_spec(const map_spec &spec) {
    const type_info *t = find_type(spec.type);
    if (t == nullptr) {
        const auto n = static_cast<uint32_t>(spec.type);
        std::string have;
        for (const type_info &k : type_table) {
            if (k.type != map_type::perf_ring) {
                have += (have.empty() ? "" : ", ") + std::string(k.name);
            }
        }
        const std::string linux_name = linux_map_type_name(n);
        return make_error(EINVAL, field("type", n) +
                                      (linux_name == "unknown"
                                           ? std::string("no map type Linux or bpftime knows")
                                           : "bpftime has no " + linux_name + " maps") +
                                      " (it has " + have + ")");
    }
    std::string kind = std::string(t->name) + " maps ";
    if (t->fam == family::bloom) {
        if ((spec.map_extra & ~uint64_t{0xf}) != 0) {
            return make_error(EINVAL, "map_extra " + hex(spec.map_extra) + ": " + kind +
                                          "take the number of hash functions (1 to 15, 0 for " +
                                          std::to_string(bloom_default_hashes) +
                                          ") in its low 4 bits and nothing else");
        }
    } else if (spec.map_extra != 0) {
        return make_error(EINVAL, "map_extra " + hex(spec.map_extra) + ": " + kind +
                                      "take no map_extra (only bloom_filter maps do; use 0)");
    }
    if (t->fam == family::queue || t->fam == family::bloom) {
        if (spec.key_size != 0) {
            return make_error(EINVAL,
                              field("key_size", spec.key_size) + kind + "have no keys (use 0)");
        }
        if (spec.value_size == 0 || spec.value_size > max_value_size) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind + "take 1 to " +
                                          std::to_string(max_value_size) + "-byte values");
        }
        if (spec.max_entries == 0) {
            return make_error(EINVAL, field("max_entries", 0) + "a map holds at least 1 entry");
        }
    } else if (t->fam == family::ringbuf) {
        if (spec.key_size != 0) {
            return make_error(EINVAL, field("key_size", spec.key_size) + "ring buffers have no "
                                                                         "keys (use 0)");
        }
        if (spec.value_size != 0) {
            return make_error(EINVAL, field("value_size", spec.value_size) +
                                          "ring buffers have no values (use 0)");
        }
        if (spec.max_entries < ringbuf_page || !std::has_single_bit(spec.max_entries)) {
            return make_error(EINVAL, field("max_entries", spec.max_entries) +
                                          "a ring buffer's size must be a power of two and a "
                                          "multiple of 4096");
        }
    } else {
        if ((t->fam == family::array || t->fam == family::cgroup_array ||
             t->fam == family::stack_trace) &&
            spec.key_size != 4) {
            return make_error(EINVAL, field("key_size", spec.key_size) + kind + "have 4-byte keys");
        }
        if (t->fam == family::cgroup_array && spec.value_size != 4) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind +
                                          "have 4-byte values (a cgroup fd)");
        }
        if (spec.type == map_type::lpm_trie &&
            (spec.key_size < lpm_min_key_size || spec.key_size > lpm_max_key_size)) {
            return make_error(EINVAL, field("key_size", spec.key_size) + kind + "take keys of " +
                                          std::to_string(lpm_min_key_size) + " to " +
                                          std::to_string(lpm_max_key_size) +
                                          " bytes: a 4-byte prefixlen and 1 to 256 data bytes");
        }
        if (spec.key_size == 0 || spec.key_size > max_key_size) {
            return make_error(EINVAL, field("key_size", spec.key_size) + kind + "take 1 to " +
                                          std::to_string(max_key_size) + "-byte keys");
        }
        uint32_t max_value = t->percpu ? max_percpu_value_size : max_value_size;
        if (spec.value_size == 0 || spec.value_size > max_value) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind + "take 1 to " +
                                          std::to_string(max_value) + "-byte values");
        }
        if (spec.max_entries == 0) {
            return make_error(EINVAL, field("max_entries", 0) + "a map holds at least 1 entry");
        }
        if (spec.type == map_type::perf_event_array && spec.value_size != 4) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind +
                                          "have 4-byte values (a perf event)");
        }
        if (t->fam == family::stack_trace &&
            (spec.value_size % 8 != 0 || spec.value_size / 8 > max_stack_depth)) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind + "hold 1 to " +
                                          std::to_string(max_stack_depth) +
                                          " return addresses of 8 bytes each");
        }
        if (spec.type == map_type::prog_array && spec.value_size != 4) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind +
                                          "have 4-byte values (a program)");
        }
        if (is_map_in_map(spec.type) && spec.value_size != 4) {
            return make_error(EINVAL, field("value_size", spec.value_size) + kind +
                                          "have 4-byte values (an inner map)");
        }
        if ((t->fam == family::hash || t->fam == family::stack_trace) &&
            spec.max_entries > max_hash_entries) {
            return make_error(EINVAL, field("max_entries", spec.max_entries) + kind +
                                          "hold at most " + std::to_string(max_hash_entries) +
                                          " entries");
        }
    }
    if ((spec.flags & ~t->allowed_flags) != 0) {
        return make_error(EINVAL,
                          "flags " + hex(spec.flags) + ": " + kind + "accept " + t->flag_names);
    }
    if (spec.spin_lock_off >= 0) {
        // As Linux's map_check_btf: only hash and array values hold a lock, whole and aligned.
        if (spec.type != map_type::hash && spec.type != map_type::array) {
            return make_error(EINVAL, "a struct bpf_spin_lock in the value: " + kind +
                                          "cannot hold one (only hash and array maps can)");
        }
        if (spec.spin_lock_off % 4 != 0 ||
            uint64_t(spec.spin_lock_off) + 4 > uint64_t{spec.value_size}) {
            return make_error(EINVAL, "the struct bpf_spin_lock at offset " +
                                          std::to_string(spec.spin_lock_off) +
                                          " is not a 4-byte aligned field inside the " +
                                          std::to_string(spec.value_size) + "-byte value");
        }
    }
    if (spec.type == map_type::lpm_trie && (spec.flags & f_no_prealloc) == 0) {
        return make_error(EINVAL, "flags " + hex(spec.flags) + ": " + kind +
                                      "need BPF_F_NO_PREALLOC (0x1), as in Linux");
    }
    if (!is_map_in_map(spec.type)) {
        if (spec.inner.present()) {
            return make_error(EINVAL, kind + "take no inner map (only array_of_maps and "
                                             "hash_of_maps do)");
        }
        return {};
    }
    if (!spec.inner.present()) {
        return make_error(EINVAL, kind + "need an inner map that every map put in must match "
                                         "(BPF_MAP_CREATE's inner_map_fd; bpftime map create "
                                         "--inner ID)");
    }
    const inner_map_template &in = spec.inner;
    map_spec inner{in.type, in.key_size, in.value_size, in.max_entries, in.flags, 0, {}};
    if (auto ok = inner_template_of(inner); !ok) {
        return std::move(ok).err();
    }
    if (auto ok = validate_spec(inner); !ok) {
        return make_error(EINVAL, "the inner map template: " + ok.err().message);
    }
    return {};
}

bool is_map_in_map(map_type type) {
    return type == map_type::array_of_maps || type == map_type::hash_of_maps;
}

result<inner_map_template> inner_template_of(const map_spec &inner) {
    if (is_map_in_map(inner.type)) {
        return make_error(EINVAL, std::string(map_type_name(inner.type)) +
                                      " maps cannot be inner maps: maps hold maps one level "
                                      "deep, as in Linux");
    }
    if (inner.type == map_type::perf_ring || find_type(inner.type) == nullptr) {
        return make_error(EINVAL,
                          std::string(map_type_name(inner.type)) + " maps cannot be inner maps");
    }
    return inner_map_template{inner.type, inner.key_size, inner.value_size, inner.max_entries,
                              inner.flags};
}

result<void> check_inner_map(const map_spec &outer, const map_spec &inner) {
    if (!is_map_in_map(outer.type)) {
        return make_error(EINVAL, std::string(map_type_name(outer.type)) + " maps hold no maps");
    }
    auto have = inner_template_of(inner);
    if (!have) {
        return std::move(have).err();
    }
    const inner_map_template &want = outer.inner;
    auto differ = [](const char *what, uint64_t a, uint64_t b, bool as_hex = false) {
        auto text = [&](uint64_t v) { return as_hex ? hex(v) : std::to_string(v); };
        return make_error(EINVAL, std::string("its ") + what + " is " + text(a) +
                                      ", the outer map's inner template has " + text(b));
    };
    if (have->type != want.type) {
        return make_error(EINVAL, std::string("its type is ") + map_type_name(have->type) +
                                      ", the outer map's inner template has " +
                                      map_type_name(want.type));
    }
    if (have->key_size != want.key_size) {
        return differ("key_size", have->key_size, want.key_size);
    }
    if (have->value_size != want.value_size) {
        return differ("value_size", have->value_size, want.value_size);
    }
    if (have->flags != want.flags) {
        return differ("flags", have->flags, want.flags, true);
    }
    // As Linux's array_map_meta_equal: only arrays fix max_entries, unless the template says
    // BPF_F_INNER_MAP.
    const bool array = info_of(want.type).fam == family::array;
    if (array && (want.flags & f_inner_map) == 0 && have->max_entries != want.max_entries) {
        return make_error(EINVAL, "its max_entries is " + std::to_string(have->max_entries) +
                                      ", the outer map's inner template has " +
                                      std::to_string(want.max_entries) +
                                      " (BPF_F_INNER_MAP on the template lets it vary)");
    }
    return {};
}

namespace {

// The layout of a valid spec with ncpus CPUs.
result<map_layout> layout_for(const map_spec &spec, uint32_t ncpus) {
    if (auto ok = validate_spec(spec); !ok) {
        return std::move(ok).err();
    }
    if (auto ok = check_ncpus(spec, ncpus); !ok) {
        return std::move(ok).err();
    }
    return compute_layout(spec, slots_for(spec, ncpus));
}

} // namespace

result<uint64_t> storage_size(const map_spec &spec, uint32_t ncpus) {
    auto lay = layout_for(spec, ncpus);
    if (!lay) {
        return std::move(lay).err();
    }
    return lay->total;
}

std::optional<mmap_region> mmapable_region(const map_spec &spec, uint32_t ncpus) {
    auto lay = layout_for(spec, ncpus);
    if (!lay || lay->mmap_length == 0) {
        return std::nullopt;
    }
    return mmap_region{lay->mmap_offset, lay->mmap_length};
}

result<void> init_storage(void *base, uint64_t size, const map_spec &spec, uint32_t ncpus) {
    auto lay = layout_for(spec, ncpus);
    if (!lay) {
        return std::move(lay).err();
    }
    if (auto ok = check_base(base); !ok) {
        return ok;
    }
    ncpus = slots_for(spec, ncpus);
    if (size < lay->total) {
        return too_small(size, lay->total);
    }
    // Zero everything first (array values start at zero) and publish the magic last, so a
    // process opening a view meanwhile refuses the storage instead of using half of it.
    std::memset(base, 0, lay->total);
    auto *h = new (base) map_header{};
    h->version = storage_version;
    h->type = static_cast<uint32_t>(spec.type);
    h->key_size = spec.key_size;
    h->value_size = spec.value_size;
    h->max_entries = spec.max_entries;
    h->flags = spec.flags;
    h->ncpus = ncpus;
    h->extra = static_cast<uint32_t>(spec.map_extra);
    h->size = lay->total;
    if (getrandom(&h->seed, sizeof h->seed, GRND_NONBLOCK) != sizeof h->seed) {
        h->seed = reinterpret_cast<uintptr_t>(base) ^ 0x9e3779b97f4a7c15ull;
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) {
        return make_error(rc, std::string("cannot initialise the map's lock: ") + strerror(rc));
    }
    lay->seed = h->seed;
    if (info_of(spec.type).fam == family::hash) {
        hash_init(map_ref{static_cast<uint8_t *>(base), spec, ncpus, *lay});
    }
    if (spec.type == map_type::perf_ring) {
        perf_ring_init(map_ref{static_cast<uint8_t *>(base), spec, ncpus, *lay});
    }
    atomic(h->magic).store(storage_magic, std::memory_order_release);
    return {};
}

uint32_t possible_cpus() {
    static const uint32_t n =
        std::clamp<uint32_t>(static_cast<uint32_t>(get_nprocs_conf()), 1, max_ncpus);
    return n;
}

result<map_view> map_view::open(void *base, uint64_t size, const map_spec &spec) {
    if (auto ok = validate_spec(spec); !ok) {
        return std::move(ok).err();
    }
    if (auto ok = check_base(base); !ok) {
        return std::move(ok).err();
    }
    auto minimum = compute_layout(spec, 1);
    if (!minimum) {
        return std::move(minimum).err();
    }
    // The header first: storage formatted for another spec says which field differs, rather
    // than that it is smaller than this spec needs.
    if (size < sizeof(map_header)) {
        return too_small(size, minimum->total);
    }
    auto &h = *static_cast<map_header *>(base);
    if (atomic(h.magic).load(std::memory_order_acquire) != storage_magic) {
        return make_error(EINVAL, "storage is not a bpftime map (bad magic)");
    }
    if (h.version != storage_version) {
        return make_error(EINVAL, "storage has layout version " + std::to_string(h.version) +
                                      ", this build reads version " +
                                      std::to_string(storage_version));
    }
    if (h.type != static_cast<uint32_t>(spec.type)) {
        return make_error(EINVAL, std::string("storage holds a ") +
                                      map_type_name(static_cast<map_type>(h.type)) +
                                      " map, expected " + map_type_name(spec.type));
    }
    const struct {
        const char *name;
        uint32_t stored, wanted;
    } fields[] = {
        {"key_size", h.key_size, spec.key_size},
        {"value_size", h.value_size, spec.value_size},
        {"max_entries", h.max_entries, spec.max_entries},
        {"flags", h.flags, spec.flags},
        {"map_extra", h.extra, static_cast<uint32_t>(spec.map_extra)},
    };
    for (const auto &f : fields) {
        if (f.stored != f.wanted) {
            return make_error(EINVAL, std::string("storage holds ") + f.name + " " +
                                          std::to_string(f.stored) + ", expected " +
                                          std::to_string(f.wanted));
        }
    }
    if (size < minimum->total) {
        return too_small(size, minimum->total);
    }
    uint32_t ncpus = h.ncpus;
    bool percpu = info_of(spec.type).percpu;
    if (percpu ? ncpus == 0 || ncpus > max_ncpus : ncpus != 1) {
        return make_error(EINVAL, "storage holds an invalid CPU count " + std::to_string(ncpus));
    }
    auto lay = compute_layout(spec, ncpus);
    if (!lay) {
        return std::move(lay).err();
    }
    if (size < lay->total) {
        return too_small(size, lay->total);
    }
    map_view v;
    v.base_ = static_cast<uint8_t *>(base);
    v.size_ = size;
    v.spec_ = spec;
    v.ncpus_ = ncpus;
    v.layout_ = *lay;
    v.layout_.seed = h.seed;
    v.lookup_ = hash_lookup_for(spec, v.layout_);
    if (info_of(spec.type).fam == family::hash) {
        v.probe_ = probe_of(v.ref());
        if (spec.type == map_type::hash && (spec.key_size == 4 || spec.key_size == 8) &&
            std::has_single_bit(v.layout_.value_stride)) {
            v.probe_.inline_key_size = spec.key_size; // value_shift is the stride's
        }
    }
    v.update_ = hash_update_for(spec);
    if (holds_ids(spec.type)) {
        // As Linux: programs cannot look up perf events or programs, and a map-in-map's lookup
        // gives a map, not a value (inner_map_id).
        v.lookup_ = no_value;
    } else if (spec.type == map_type::array) {
        // Looked up inline (map_view::lookup) when the stride is a power of two, as it is for
        // values of up to 8 bytes; lookup_ serves compiled code that asks, and the other strides.
        if (std::has_single_bit(v.layout_.value_stride)) {
            v.table_ = v.base_ + v.layout_.values;
            v.table_shift_ = static_cast<uint32_t>(std::countr_zero(v.layout_.value_stride));
            v.table_count_ = spec.max_entries;
        }
        v.lookup_ = [](const void *view, const void *key) -> void * {
            const map_ref m = view_access::ref(*static_cast<const map_view *>(view));
            uint32_t idx;
            std::memcpy(&idx, key, sizeof idx);
            return idx < m.spec.max_entries ? m.value(idx, 0) : nullptr;
        };
    } else if (v.lookup_ == no_value && (info_of(spec.type).fam == family::array ||
                                         info_of(spec.type).fam == family::hash)) {
        v.lookup_ = [](const void *view, const void *key) -> void * {
            const map_ref m = view_access::ref(*static_cast<const map_view *>(view));
            uint32_t idx = find_entry(m, key, true);
            return idx != none ? m.value(idx, current_cpu(m.ncpus)) : nullptr;
        };
    }
    return v;
}

map_ref map_view::ref() const {
    return view_access::ref(*this);
}

long map_view::update_other(const void *key, const void *value, uint64_t flags) const {
    if (spec_.type == map_type::array && spec_.spin_lock_off < 0) {
        // A plain array: in place, as Linux does.
        if (flags > update_exist) {
            return -EINVAL;
        }
        uint32_t idx;
        std::memcpy(&idx, key, sizeof idx);
        if (idx >= spec_.max_entries) {
            return -E2BIG;
        }
        if (flags == update_noexist) {
            return -EEXIST;
        }
        uint8_t *dst = base_ + layout_.values + uint64_t{idx} * layout_.value_stride;
        if (spec_.value_size == 8) {
            std::memcpy(dst, value, 8);
        } else {
            std::memcpy(dst, value, spec_.value_size);
        }
        return 0;
    }
    if (holds_ids(spec_.type)) {
        return -EINVAL; // perf events, programs and maps are added through the bpf() syscall
    }
    value_source src{static_cast<const uint8_t *>(value), value_source::spread::this_cpu};
    return update_entry(ref(), key, src, flags);
}

long map_view::remove(const void *key) const {
    if (is_map_in_map(spec_.type)) {
        return -EINVAL; // as Linux's verifier: programs only look up in a map-in-map
    }
    if (spec_.type == map_type::perf_event_array || spec_.type == map_type::prog_array) {
        return perf_array_remove(ref(), key);
    }
    switch (info_of(spec_.type).fam) {
    case family::hash:
        return spec_.type == map_type::lpm_trie ? lpm_remove(ref(), key) : hash_remove(ref(), key);
    case family::stack_trace:
        return stack_remove(ref(), key);
    case family::bloom:
        return -EOPNOTSUPP; // as Linux: a value cannot be taken out of a bloom filter
    default:
        return -EINVAL;
    }
}

std::span<uint8_t> map_view::value_area() const {
    // A cgroup array's slots hold ids programs must not read (Linux refuses lookups in it).
    auto fam = info_of(spec_.type).fam;
    if (base_ == nullptr || fam == family::ringbuf || fam == family::cgroup_array ||
        fam == family::stack_trace || fam == family::queue || fam == family::bloom ||
        holds_ids(spec_.type)) {
        return {};
    }
    return {base_ + layout_.values, layout_.values_size};
}

uint64_t map_view::value_stride() const {
    return layout_.value_stride;
}

std::optional<vm::map_lookup_plan> map_view::lookup_plan() const {
    const std::span<uint8_t> values = value_area();
    if (values.empty()) {
        return std::nullopt;
    }
    vm::map_lookup_plan plan;
    plan.key_size = spec_.key_size;
    plan.value_size = spec_.value_size; // this CPU's value, for per-CPU maps
    plan.value_area = reinterpret_cast<uint64_t>(values.data());
    const type_info &t = info_of(spec_.type);
    if (t.fam == family::array && !t.percpu) {
        // The key is the index and element i is value slot i.
        plan.method = vm::indexed_table{plan.value_area, value_stride(), spec_.max_entries};
    } else {
        // The lookup function the view picked, called directly.
        plan.method = vm::find_call{lookup_, this};
    }
    return plan;
}

namespace {
error busy_error() {
    return make_error(EBUSY, "another writer has held the key's entry for over " +
                                 std::to_string(entry_lock_wait.count()) +
                                 " ms (a stopped or stuck process); try again");
}
} // namespace

error update_error(long rc, const map_spec &spec, uint64_t flags) {
    switch (rc) {
    case -EEXIST:
        return make_error(EEXIST, "the key exists (BPF_NOEXIST)");
    case -ENOENT:
        return make_error(ENOENT, "no such key (BPF_EXIST)");
    case -EBUSY:
        return busy_error();
    case -E2BIG:
        if (info_of(spec.type).fam == family::queue) {
            return make_error(E2BIG, std::string("the ") + map_type_name(spec.type) + " is full (" +
                                         std::to_string(spec.max_entries) +
                                         " values; BPF_EXIST drops the oldest to make room)");
        }
        return make_error(
            E2BIG, info_of(spec.type).fam != family::hash
                       ? "index out of range (max_entries " + std::to_string(spec.max_entries) + ")"
                       : "the map is full (" + std::to_string(spec.max_entries) + " entries)");
    case -EINVAL:
        if (info_of(spec.type).fam == family::queue || info_of(spec.type).fam == family::bloom) {
            return make_error(EINVAL, "push flags " + hex(flags) + ": " + map_type_name(spec.type) +
                                          " maps take " +
                                          (info_of(spec.type).fam == family::queue
                                               ? "BPF_ANY (0) or BPF_EXIST (2)"
                                               : "BPF_ANY (0) only"));
        }
        if (spec.type == map_type::lpm_trie) {
            return make_error(EINVAL, "update flags " + hex(flags) +
                                          " or a prefixlen longer than the map's " +
                                          std::to_string(lpm_max_prefixlen(spec)) +
                                          " bits: use BPF_ANY (0), BPF_NOEXIST (1) or "
                                          "BPF_EXIST (2) and a prefixlen up to that");
        }
        return make_error(EINVAL, "update flags " + hex(flags) +
                                      ": use BPF_ANY (0), BPF_NOEXIST (1) or BPF_EXIST (2)");
    default:
        return make_error(static_cast<int>(-rc), "the map's lock cannot be recovered");
    }
}

result<void> check_key(const map_spec &spec, std::span<const uint8_t> key, bool may_be_empty) {
    if (info_of(spec.type).fam == family::ringbuf) {
        return make_error(EINVAL, "ring buffers have no keys");
    }
    if (info_of(spec.type).fam == family::queue || info_of(spec.type).fam == family::bloom) {
        return make_error(EINVAL, std::string(map_type_name(spec.type)) +
                                      " maps have no keys: push, pop and peek values (the "
                                      "update, lookup-and-delete and lookup commands with no "
                                      "key)");
    }
    if (key.size() != spec.key_size && !(may_be_empty && key.empty())) {
        return make_error(EINVAL, "the key has " + std::to_string(key.size()) +
                                      " bytes, the map's keys have " +
                                      std::to_string(spec.key_size));
    }
    return {};
}

result<std::vector<uint8_t>> map_view::read(std::span<const uint8_t> key) const {
    if (auto ok = check_key(spec_, key, false); !ok) {
        return std::move(ok).err();
    }
    if (info_of(spec_.type).fam == family::cgroup_array) {
        return make_error(EOPNOTSUPP, "a cgroup array's values cannot be read, as in Linux (they "
                                      "are cgroup fds of the process that wrote them)");
    }
    auto m = ref();
    if (info_of(spec_.type).fam == family::stack_trace) {
        return stack_read(m, key.data());
    }
    uint32_t idx = find_entry(m, key.data(), false);
    // As Linux: an empty slot of a map or program array holds nothing to read.
    if (idx == none || (spec_.type == map_type::array_of_maps && inner_map_id(key.data()) == 0) ||
        (spec_.type == map_type::prog_array &&
         prog_array_id(*reinterpret_cast<const uint32_t *>(key.data())) == -ENOENT)) {
        return make_error(ENOENT, "no such key");
    }
    std::vector<uint8_t> out(uint64_t{ncpus_} * spec_.value_size);
    for (uint32_t cpu = 0; cpu < ncpus_; cpu++) {
        std::memcpy(out.data() + uint64_t{cpu} * spec_.value_size, m.value(idx, cpu),
                    spec_.value_size);
    }
    return out;
}

result<void> map_view::write(std::span<const uint8_t> key, std::span<const uint8_t> value,
                             uint64_t flags) const {
    if (auto ok = check_key(spec_, key, false); !ok) {
        return ok;
    }
    if (info_of(spec_.type).fam == family::cgroup_array) {
        return cgroup_array_write(ref(), key, value, flags);
    }
    if (info_of(spec_.type).fam == family::stack_trace) {
        return make_error(EINVAL, "a stack trace map is filled by bpf_get_stackid only, as in "
                                  "Linux (its entries can be read and deleted)");
    }
    value_source src{value.data(), value_source::spread::every_cpu};
    if (ncpus_ > 1 && value.size() == uint64_t{ncpus_} * spec_.value_size) {
        src.how = value_source::spread::per_cpu;
    } else if (value.size() != spec_.value_size) {
        std::string want = std::to_string(spec_.value_size);
        if (ncpus_ > 1) {
            want += " or " + std::to_string(uint64_t{ncpus_} * spec_.value_size);
        }
        return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                      " bytes, the map takes " + want);
    }
    if (long rc = update_entry(ref(), key.data(), src, flags); rc < 0) {
        return update_error(rc, spec_, flags);
    }
    return {};
}

result<void> map_view::erase(std::span<const uint8_t> key) const {
    if (auto ok = check_key(spec_, key, false); !ok) {
        return ok;
    }
    if (info_of(spec_.type).fam == family::cgroup_array) {
        return cgroup_array_erase(ref(), key);
    }
    long rc = 0;
    if (spec_.type == map_type::array_of_maps) {
        rc = perf_array_remove(ref(), key.data());
    } else if (spec_.type == map_type::hash_of_maps) {
        rc = hash_remove(ref(), key.data());
    } else {
        rc = remove(key.data());
    }
    if (rc == -ENOENT) {
        return make_error(ENOENT, "no such key");
    }
    if (rc == -EINVAL && spec_.type == map_type::lpm_trie) {
        return make_error(EINVAL, "the key's prefixlen is longer than the map's " +
                                      std::to_string(lpm_max_prefixlen(spec_)) + " bits");
    }
    if (rc == -E2BIG) {
        return make_error(E2BIG, "index out of range (max_entries " +
                                     std::to_string(spec_.max_entries) + ")");
    }
    if (rc == -EBUSY) {
        return busy_error();
    }
    if (rc < 0) {
        return make_error(static_cast<int>(-rc), info_of(spec_.type).fam == family::array
                                                     ? "array elements cannot be deleted"
                                                     : "the map's lock cannot be recovered");
    }
    return {};
}

result<std::optional<std::vector<uint8_t>>> map_view::next_key(std::span<const uint8_t> key) const {
    if (auto ok = check_key(spec_, key, true); !ok) {
        return std::move(ok).err();
    }
    auto m = ref();
    const void *after = key.empty() ? nullptr : key.data();
    uint8_t masked[4 + 256];
    if (spec_.type == map_type::lpm_trie && after != nullptr) {
        // Entries hold masked keys; a prefix longer than the map's is no entry: start over.
        after = lpm_mask_key(spec_, after, masked) ? masked : nullptr;
    }
    auto fam = info_of(spec_.type).fam;
    bool array = fam != family::hash;
    auto idx = fam == family::stack_trace ? stack_next(m, after)
               : array                    ? array_next(m, after)
                                          : hash_next(m, after);
    if (!idx) {
        return std::optional<std::vector<uint8_t>>();
    }
    std::vector<uint8_t> out(spec_.key_size);
    std::memcpy(out.data(), array ? static_cast<const void *>(&*idx) : m.key(*idx), out.size());
    return std::optional(std::move(out));
}

uint64_t map_view::count() const {
    switch (info_of(spec_.type).fam) {
    case family::array:
    case family::cgroup_array:
        return spec_.max_entries;
    case family::hash:
        return std::min(atomic(ref().header().count).load(std::memory_order_relaxed),
                        spec_.max_entries);
    case family::stack_trace:
        return stack_count(ref());
    case family::queue:
        return queue_count(ref());
    case family::ringbuf:
    case family::bloom:
        break;
    }
    return 0;
}

long map_view::stack_put(std::span<const uint64_t> ips, uint64_t flags) const {
    if (spec_.type != map_type::stack_trace) {
        return -EINVAL;
    }
    return detail::stack_put(ref(), ips, flags);
}

long map_view::push_elem(const void *value, uint64_t flags) const {
    switch (info_of(spec_.type).fam) {
    case family::queue:
        return queue_push(ref(), value, flags);
    case family::bloom:
        if (flags != update_any) {
            return -EINVAL;
        }
        bloom_add(ref(), value);
        return 0;
    default:
        return -EINVAL;
    }
}

long map_view::pop_elem(void *value) const {
    return info_of(spec_.type).fam == family::queue ? queue_pop(ref(), value, true) : -EINVAL;
}

long map_view::peek_elem(void *value) const {
    switch (info_of(spec_.type).fam) {
    case family::queue:
        return queue_pop(ref(), value, false);
    case family::bloom:
        return bloom_test(ref(), value) ? 0 : -ENOENT;
    default:
        return -EINVAL;
    }
}

namespace {

error not_a_queue(const map_spec &spec, bool bloom_too) {
    return make_error(EINVAL, std::string("a ") + map_type_name(spec.type) +
                                  " map has no values to push, pop or peek (queue, stack" +
                                  (bloom_too ? " or bloom_filter" : "") + " maps do)");
}

error empty_error(const map_spec &spec) {
    return make_error(ENOENT, std::string("the ") + map_type_name(spec.type) + " is empty");
}

} // namespace

result<void> map_view::push(std::span<const uint8_t> value, uint64_t flags) const {
    auto fam = info_of(spec_.type).fam;
    if (fam != family::queue && fam != family::bloom) {
        return not_a_queue(spec_, true);
    }
    if (value.size() != spec_.value_size) {
        return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                      " bytes, the map takes " + std::to_string(spec_.value_size));
    }
    if (long rc = push_elem(value.data(), flags); rc < 0) {
        return update_error(rc, spec_, flags);
    }
    return {};
}

result<std::vector<uint8_t>> map_view::pop() const {
    if (info_of(spec_.type).fam != family::queue) {
        return not_a_queue(spec_, false);
    }
    std::vector<uint8_t> out(spec_.value_size);
    if (long rc = pop_elem(out.data()); rc < 0) {
        return rc == -ENOENT
                   ? empty_error(spec_)
                   : make_error(static_cast<int>(-rc), "the map's lock cannot be recovered");
    }
    return out;
}

result<std::vector<uint8_t>> map_view::peek(std::span<const uint8_t> value) const {
    auto fam = info_of(spec_.type).fam;
    if (fam == family::bloom) {
        if (value.size() != spec_.value_size) {
            return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                          " bytes, the map takes " +
                                          std::to_string(spec_.value_size));
        }
        if (!bloom_test(ref(), value.data())) {
            return make_error(ENOENT, "the value is not in the bloom filter");
        }
        return std::vector<uint8_t>(value.begin(), value.end());
    }
    if (fam != family::queue) {
        return not_a_queue(spec_, true);
    }
    if (!value.empty()) {
        return make_error(EINVAL, std::string("a ") + map_type_name(spec_.type) +
                                      " is peeked with no value (it gives one)");
    }
    std::vector<uint8_t> out(spec_.value_size);
    if (long rc = queue_pop(ref(), out.data(), false); rc < 0) {
        return rc == -ENOENT
                   ? empty_error(spec_)
                   : make_error(static_cast<int>(-rc), "the map's lock cannot be recovered");
    }
    return out;
}

result<std::vector<std::vector<uint8_t>>> map_view::values() const {
    if (info_of(spec_.type).fam != family::queue) {
        return not_a_queue(spec_, false);
    }
    return queue_values(ref());
}

} // namespace bpftime::maps
