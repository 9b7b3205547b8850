// SPDX-License-Identifier: MIT
// array and percpu_array: the key is the index; every element always exists.
#include "layout.hpp"

namespace bpftime::maps::detail {

namespace {

uint32_t index_of(const void *key) {
    uint32_t idx;
    std::memcpy(&idx, key, sizeof idx);
    return idx;
}

} // namespace

uint32_t array_find(const map_ref &m, const void *key) {
    uint32_t idx = index_of(key);
    return idx < m.spec.max_entries ? idx : none;
}

long array_update(const map_ref &m, const void *key, const value_source &src, uint64_t flags) {
    if (flags > update_exist) {
        return -EINVAL;
    }
    uint32_t idx = array_find(m, key);
    if (idx == none) {
        return -E2BIG; // as Linux
    }
    if (flags == update_noexist) {
        return -EEXIST;
    }
    store_value(m, idx, src, false);
    return 0;
}

std::optional<uint32_t> array_next(const map_ref &m, const void *key) {
    // As Linux: no key or an out-of-range one starts over.
    uint32_t next = 0;
    if (uint32_t idx = key ? array_find(m, key) : none; idx != none) {
        next = idx + 1;
    }
    return next < m.spec.max_entries ? std::optional(next) : std::nullopt;
}

} // namespace bpftime::maps::detail
