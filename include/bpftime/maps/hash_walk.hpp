// SPDX-License-Identifier: MIT
/// @file
/// Internal to the maps library: the walk of a hash map's chains. map_view::lookup walks a plain
/// hash map inline, as std::unordered_map's find is inline in its caller, so the walk and the
/// layout of the entries it reads are here; maps/hash.cpp builds every hash operation on it and
/// maps/layout.hpp describes the rest of the storage.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>

namespace bpftime::maps::detail {

/// An index that names no entry.
inline constexpr uint32_t none = UINT32_MAX;
/// Where a hash entry's fields start within it: {next u32, state u32, key}.
inline constexpr uint32_t hash_entry_state = 4;
inline constexpr uint32_t hash_entry_key = 8;
/// A hash entry's state word: this bit while the entry holds a key; the bits below it hold the
/// thread id of the writer that holds the entry's lock, 0 when nobody does (thread ids are
/// below 2^22 on Linux, PID_MAX_LIMIT).
inline constexpr uint32_t entry_used = 1u << 31;

/// Bytes per hash entry: its key included, rounded up to 8, so that a lookup finds an entry's
/// link, state and key on one cache line.
constexpr uint32_t hash_entry_stride(uint32_t key_size) {
    return (hash_entry_key + key_size + 7) / 8 * 8;
}

/// What a hash map's walk reads, the sections as addresses. A view keeps its map's, so that a
/// lookup loads no offsets; writers build one per operation (maps/layout.hpp, probe_of).
struct hash_probe {
    uint32_t *buckets = nullptr;
    uint8_t *entries = nullptr;
    uint8_t *values = nullptr;
    uint64_t seed = 0;
    uint32_t bucket_shift = 0; ///< 32 - log2(nbuckets)
    uint32_t nentries = 0;
    uint32_t entry_stride = 0;
    uint32_t key_size = 0;
    uint32_t value_stride = 0;
    /// 4 or 8 when map_view::lookup walks the map inline: a plain hash map with that key size
    /// and a value stride of a power of two; 0 when it calls the view's lookup function.
    uint32_t inline_key_size = 0;
    uint32_t value_shift = 0; ///< log2(value_stride) when that is a power of two, else 0
    /// Maps with lock-free updates: the first updater's hazard slot (maps/layout.hpp).
    void *hazard_slots = nullptr;
};

// A lookup inlined into its caller has a branch for each map kind and key size, and GCC sees
// the branch of 8-byte keys (or an array's 4-byte index) read past a smaller key object the
// caller passed, though the map's key size rules that branch out: no warning for that read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#if __GNUC__ >= 11
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif
#endif
template <class T>
T load(const uint8_t *p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// The last 1 to 7 key bytes as one word, with whole loads (a byte-wise copy into a word stalls
/// store forwarding): equal bytes give equal words, which is all hashing needs.
inline uint64_t tail_word(const uint8_t *p, uint32_t n) {
    if (n >= 4) {
        return load<uint32_t>(p) | uint64_t{load<uint32_t>(p + n - 4)} << 32;
    }
    return uint64_t{p[0]} << 16 | uint64_t{p[n / 2]} << 8 | p[n - 1];
}

/// The bucket of a key of key_size bytes: the top bits of a multiplicative hash (Knuth's), which
/// depend on every key bit. Keys of 4 and 8 bytes, the common sizes, take one multiply; longer
/// keys are mixed a word at a time first. Inline, so that a constant key_size (lookups of the
/// common sizes) leaves straight-line code.
inline uint32_t bucket_of(const hash_probe &p, const void *key, uint32_t key_size) {
    constexpr uint64_t mul = 0x9e3779b97f4a7c15ull;
    const auto *k = static_cast<const uint8_t *>(key);
    uint64_t x;
    if (key_size == 4) {
        x = load<uint32_t>(k);
    } else if (key_size == 8) {
        x = load<uint64_t>(k);
    } else {
        uint64_t h = p.seed ^ key_size; // seeded first: colliding keys depend on the seed
        uint32_t n = key_size;
        for (; n >= 8; n -= 8, k += 8) {
            h = std::rotl((h ^ load<uint64_t>(k)) * mul, 31);
        }
        if (n > 0) {
            h = std::rotl((h ^ tail_word(k, n)) * mul, 31);
        }
        x = h ^ (h >> 29);
    }
    // nbuckets is a power of two up to 2^31: the top log2(nbuckets) bits of the product (two
    // shifts, as one of 64 would be undefined for a single bucket).
    const uint64_t h = (x ^ p.seed) * mul;
    return static_cast<uint32_t>((h >> 32) >> p.bucket_shift);
}

inline bool keys_equal(const uint8_t *a, const void *b, uint32_t n) {
    // The common sizes without a call to memcmp.
    const auto *bb = static_cast<const uint8_t *>(b);
    switch (n) {
    case 4:
        return load<uint32_t>(a) == load<uint32_t>(bb);
    case 8:
        return load<uint64_t>(a) == load<uint64_t>(bb);
    default:
        return std::memcmp(a, b, n) == 0;
    }
}

/// Walks key's chain and gives its entry or none; link_out gets the word that points at the
/// entry found. Bounded: a chain rewired under a reader (or corrupted) could otherwise loop.
/// KeySize is the key size when the caller knows it (0: the map's).
template <uint32_t KeySize = 0>
[[gnu::always_inline]] inline uint32_t chain_find(const hash_probe &p, const void *key,
                                                  uint32_t **link_out = nullptr) {
    const uint32_t key_size = KeySize != 0 ? KeySize : p.key_size;
    const uint32_t max = p.nentries;
    const uint32_t stride = KeySize != 0 ? hash_entry_stride(KeySize) : p.entry_stride;
    uint32_t *link = &p.buckets[bucket_of(p, key, key_size)];
    // At most max steps (max is at least 1), counted at the end so that the first step, the
    // common whole walk, is straight-line code.
    for (uint32_t steps = 1;; steps++) {
        const uint32_t idx = std::atomic_ref<uint32_t>(*link).load(std::memory_order_acquire);
        if (idx >= max) {
            return none;
        }
        uint8_t *e = p.entries + uint64_t{idx} * stride;
        const uint32_t state =
            std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t *>(e + hash_entry_state))
                .load(std::memory_order_relaxed);
        if ((state & entry_used) != 0 && keys_equal(e + hash_entry_key, key, key_size)) {
            if (link_out) {
                *link_out = link;
            }
            return idx;
        }
        if (steps == max) {
            return none;
        }
        link = reinterpret_cast<uint32_t *>(e);
    }
}

/// A plain hash map's lookup with a value stride of a power of two (map_view::lookup's, inline,
/// when the probe's inline_key_size is KeySize).
template <uint32_t KeySize>
[[gnu::always_inline]] inline void *inline_hash_lookup(const hash_probe &p, const void *key) {
    const uint32_t idx = chain_find<KeySize>(p, key);
    return idx != none ? p.values + (uint64_t{idx} << p.value_shift) : nullptr;
}

} // namespace bpftime::maps::detail
