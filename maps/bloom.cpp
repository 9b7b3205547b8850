// SPDX-License-Identifier: MIT
// bloom_filter: a bit array sized as Linux sizes it (max_entries * hashes * 7 / 5 bits, a power
// of two, at least 64, at most 2^32), bloom_hashes bit positions per value by double hashing.
// Adding sets bits with atomic ORs and testing reads them, so neither takes a lock and any
// number of processes may add and test at once; a value added before a test began is always
// found. Positions are masked with the bit count from the process's own spec.
#include "layout.hpp"

#include <bit>

namespace bpftime::maps::detail {

namespace {

uint64_t hash_bytes(const uint8_t *p, uint32_t n, uint64_t seed) {
    constexpr uint64_t mul = 0x9e3779b97f4a7c15ull;
    uint64_t h = seed ^ (uint64_t{n} * mul);
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        h = std::rotl((h ^ w) * mul, 31);
    }
    if (n > 0) {
        uint64_t w = 0;
        std::memcpy(&w, p, n);
        h = std::rotl((h ^ w ^ (uint64_t{n} << 56)) * mul, 31);
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

template <class F>
void for_each_bit(const map_ref &m, const void *value, F &&f) {
    auto *p = static_cast<const uint8_t *>(value);
    uint64_t seed = (m.spec.flags & map_zero_seed) != 0 ? 0 : m.lay.seed;
    uint64_t h1 = hash_bytes(p, m.spec.value_size, seed);
    uint64_t h2 = hash_bytes(p, m.spec.value_size, seed ^ 0x5bd1e9955bd1e995ull) | 1;
    for (uint32_t i = 0; i < m.lay.bloom_hashes; i++) {
        uint64_t bit = (h1 + i * h2) & m.lay.bloom_mask;
        if (!f(m.section<uint64_t>(m.lay.bloom_bits)[bit / 64], uint64_t{1} << (bit % 64))) {
            return;
        }
    }
}

} // namespace

uint32_t bloom_hashes_for(const map_spec &spec) {
    uint32_t k = static_cast<uint32_t>(spec.map_extra & 0xf);
    return k == 0 ? bloom_default_hashes : k;
}

uint64_t bloom_bits_for(const map_spec &spec) {
    uint64_t bits = uint64_t{spec.max_entries} * bloom_hashes_for(spec) / 5 * 7;
    if (bits > (uint64_t{1} << 31)) {
        return uint64_t{1} << 32;
    }
    return bits <= 64 ? 64 : std::bit_ceil(bits);
}

void bloom_add(const map_ref &m, const void *value) {
    for_each_bit(m, value, [](uint64_t &word, uint64_t bit) {
        if ((atomic(word).load(std::memory_order_relaxed) & bit) == 0) {
            atomic(word).fetch_or(bit, std::memory_order_relaxed);
        }
        return true;
    });
}

bool bloom_test(const map_ref &m, const void *value) {
    bool all = true;
    for_each_bit(m, value, [&](uint64_t &word, uint64_t bit) {
        all = (atomic(word).load(std::memory_order_relaxed) & bit) != 0;
        return all;
    });
    return all;
}

} // namespace bpftime::maps::detail
