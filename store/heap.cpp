// SPDX-License-Identifier: MIT
// The object heap: extents allocated over what no slot references.
#include "heap.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

namespace bpftime::store::detail {

result<uint64_t> heap::allocate(uint64_t payload, uint32_t owner) const {
    uint64_t need = round_up(sizeof(extent_header) + payload, align);
    const auto *slots = reinterpret_cast<const slot *>(base_ + hdr()->table_offset);
    std::vector<std::pair<uint64_t, uint64_t>> used;
    for (uint32_t i = 0; i < hdr()->max_objects; i++) {
        const slot &s = slots[i];
        if (s.state == slot_free) {
            continue;
        }
        for (uint64_t off : {s.extent, s.pending}) {
            if (off != 0) {
                used.emplace_back(off, extent_at(off)->size);
            }
        }
    }
    std::sort(used.begin(), used.end());
    uint64_t at = hdr()->heap_offset, end = hdr()->heap_offset + hdr()->heap_size;
    uint64_t largest = 0;
    for (auto [off, len] : used) {
        if (off >= at && off - at >= need) {
            break;
        }
        largest = std::max(largest, off > at ? off - at : 0);
        at = std::max(at, off + len);
    }
    if (at > end || end - at < need) {
        largest = std::max(largest, at < end ? end - at : 0);
        return make_error(ENOSPC, "no space left in segment " + name_ + ": need " +
                                      std::to_string(need) + " bytes, the largest free gap is " +
                                      std::to_string(largest) +
                                      " (create a larger segment with BPFTIME_SHM_SIZE)");
    }
    extent_header *e = extent_at(at);
    e->size = need;
    e->owner = owner;
    return at;
}

} // namespace bpftime::store::detail
