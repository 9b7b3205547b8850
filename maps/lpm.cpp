// SPDX-License-Identifier: MIT
// lpm_trie: longest-prefix match over the hash family's storage.
//
// Every entry's key is stored masked to its prefix length (the bits past it zero), so an exact
// prefix is one hash lookup. A lookup masks the key to each prefix length that holds entries,
// longest first, and takes the first hit: at most max_prefixlen + 1 hash lookups, usually the
// few lengths a table uses (33 for IPv4 at most). The per-length counts only steer lookups: a
// damaged count makes a lookup try a length in vain or miss one, never leave the storage.
#include "layout.hpp"

#include <algorithm>

namespace bpftime::maps::detail {

namespace {

constexpr uint32_t prefixlen_size = 4;

uint32_t *counts(const map_ref &m) {
    return m.section<uint32_t>(m.lay.lpm_counts);
}

uint32_t prefixlen_of(const void *key) {
    uint32_t v = 0;
    std::memcpy(&v, key, sizeof v);
    return v;
}

// Clears the data bits from bit `from` (most significant bit of byte 0 first) to the end.
void clear_bits_from(uint8_t *data, uint32_t data_size, uint32_t from) {
    uint32_t byte = from / 8, bit = from % 8;
    if (byte >= data_size) {
        return;
    }
    if (bit != 0) {
        data[byte] &= static_cast<uint8_t>(0xff00u >> bit);
        byte++;
    }
    std::memset(data + byte, 0, data_size - byte);
}

} // namespace

bool lpm_mask_key(const map_spec &spec, const void *key, uint8_t *out) {
    uint32_t plen = prefixlen_of(key);
    if (plen > lpm_max_prefixlen(spec)) {
        return false;
    }
    std::memcpy(out, key, spec.key_size);
    clear_bits_from(out + prefixlen_size, spec.key_size - prefixlen_size, plen);
    return true;
}

void lpm_count(const map_ref &m, uint32_t idx, int delta) {
    if (m.spec.type != map_type::lpm_trie) {
        return;
    }
    uint32_t plen = prefixlen_of(m.key(idx));
    if (plen <= lpm_max_prefixlen(m.spec)) {
        atomic(counts(m)[plen]).fetch_add(static_cast<uint32_t>(delta), std::memory_order_relaxed);
    }
}

void lpm_clear_counts(const map_ref &m) {
    if (m.spec.type == map_type::lpm_trie) {
        std::memset(counts(m), 0, (uint64_t{lpm_max_prefixlen(m.spec)} + 1) * sizeof(uint32_t));
    }
}

uint32_t lpm_find(const map_ref &m, const void *key) {
    const uint32_t maxp = lpm_max_prefixlen(m.spec), data_size = m.spec.key_size - prefixlen_size;
    uint8_t buf[4 + 256];
    // A key longer than the map's prefixes matches as the longest (as Linux's lookup does).
    uint32_t plen = std::min(prefixlen_of(key), maxp);
    std::memcpy(buf, key, m.spec.key_size);
    uint8_t *data = buf + prefixlen_size;
    clear_bits_from(data, data_size, plen);
    const uint32_t *count = counts(m);
    for (uint32_t len = plen + 1; len-- > 0;) {
        if (len < plen) {
            data[len / 8] &= static_cast<uint8_t>(~(0x80u >> (len % 8)));
        }
        if (atomic(const_cast<uint32_t &>(count[len])).load(std::memory_order_relaxed) == 0) {
            continue;
        }
        std::memcpy(buf, &len, sizeof len);
        if (uint32_t idx = hash_find(m, buf, false); idx != none) {
            return idx;
        }
    }
    return none;
}

long lpm_update(const map_ref &m, const void *key, const value_source &src, uint64_t flags) {
    uint8_t buf[4 + 256];
    if (flags > update_exist || !lpm_mask_key(m.spec, key, buf)) {
        return -EINVAL;
    }
    return hash_update(m, buf, src, flags);
}

long lpm_remove(const map_ref &m, const void *key) {
    uint8_t buf[4 + 256];
    if (!lpm_mask_key(m.spec, key, buf)) {
        return -EINVAL;
    }
    return hash_remove(m, buf);
}

} // namespace bpftime::maps::detail
