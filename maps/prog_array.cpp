// SPDX-License-Identifier: MIT
// prog_array: slot i holds the store id of a program (uint32, 0 when empty) in storage programs
// cannot access; bpf_tail_call reads it.
#include "layout.hpp"

#include <bpftime/maps/maps.hpp>

#include <atomic>
#include <cerrno>

namespace bpftime::maps {

long map_view::prog_array_id(uint32_t index) const {
    if (spec_.type != map_type::prog_array) {
        return -EINVAL;
    }
    if (index >= spec_.max_entries) {
        return -E2BIG;
    }
    auto m = ref();
    uint32_t id = detail::atomic(*reinterpret_cast<uint32_t *>(m.value(index, 0)))
                      .load(std::memory_order_acquire);
    return id == 0 ? -ENOENT : static_cast<long>(id);
}

} // namespace bpftime::maps
