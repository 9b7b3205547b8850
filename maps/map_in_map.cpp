// SPDX-License-Identifier: MIT
// array_of_maps and hash_of_maps: each value is the store id of an inner map (uint32, 0 when
// empty), in storage programs cannot access. A program's lookup reads the id (inner_map_id) and
// the helper turns it into this process's handle of that map; which maps may be put in is the
// store's to check against the template (check_inner_map), as it knows the other maps.
#include "layout.hpp"

#include <bpftime/maps/maps.hpp>

#include <atomic>

namespace bpftime::maps {

uint32_t map_view::inner_map_id(const void *key) const {
    auto m = ref();
    uint32_t idx = detail::none;
    if (spec_.type == map_type::array_of_maps) {
        idx = detail::array_find(m, key);
    } else if (spec_.type == map_type::hash_of_maps) {
        idx = detail::hash_find(m, key, false);
    }
    if (idx == detail::none) {
        return 0;
    }
    return detail::atomic(*reinterpret_cast<uint32_t *>(m.value(idx, 0)))
        .load(std::memory_order_acquire);
}

} // namespace bpftime::maps
