// SPDX-License-Identifier: MIT
// The object heap: extents allocated over what no slot references.
#include "heap.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

namespace bpftime::store::detail {

result<uint64_t> heap::allocate(uint64_t payload, uint32_t owner, uint64_t payload_align) const {
    uint64_t need = round_up(sizeof(extent_header) + payload, align);
    // Where an extent may start at or after at: its payload on a multiple of payload_align.
    auto start_at = [&](uint64_t at) {
        return round_up(at + sizeof(extent_header), payload_align) - sizeof(extent_header);
    };
    const auto *slots = reinterpret_cast<const slot *>(base_ + geo_.table_offset);
    std::vector<std::pair<uint64_t, uint64_t>> used;
    for (uint32_t i = 0; i < geo_.max_objects; i++) {
        const slot &s = slots[i];
        if (s.state == slot_free) {
            continue;
        }
        for (uint64_t off : {s.extent, s.pending}) {
            // A damaged reference (outside the heap, a size past its end) reserves nothing:
            // its object is refused wherever it is read.
            if (off != 0) {
                if (auto size = checked_payload_size(off); size) {
                    used.emplace_back(off, *size + sizeof(extent_header));
                }
            }
        }
    }
    std::sort(used.begin(), used.end());
    uint64_t at = geo_.heap_offset, end = geo_.heap_end;
    uint64_t largest = 0;
    at = start_at(at);
    for (auto [off, len] : used) {
        if (off >= at && off - at >= need) {
            break;
        }
        largest = std::max(largest, off > at ? off - at : 0);
        at = start_at(std::max(at, off + len));
    }
    if (at > end || end - at < need) {
        largest = std::max(largest, at < end ? end - at : 0);
        // A segment this much larger holds the object whatever else it holds: its heap grows
        // by need past today's end. Rounded up to whole MiB, as a person would type it.
        uint64_t suggested = round_up(end + need, uint64_t{1} << 20);
        return make_error(ENOSPC, "no space left in segment " + name_ + " (" + std::to_string(end) +
                                      " bytes): need " + std::to_string(need) +
                                      " bytes, the largest free gap is " + std::to_string(largest) +
                                      "; create a larger segment: remove this one and load "
                                      "again with BPFTIME_SHM_SIZE=" +
                                      std::to_string(suggested) + " (bytes) or more");
    }
    extent_header *e = extent_at(at);
    e->size = need;
    e->owner = owner;
    return at;
}

result<uint64_t> heap::checked_payload_size(uint64_t off) const {
    if (off % align != 0 || off < geo_.heap_offset || off >= geo_.heap_end ||
        geo_.heap_end - off < sizeof(extent_header)) {
        return make_error(EPROTO, "its extent offset " + std::to_string(off) +
                                      " is outside the heap [" + std::to_string(geo_.heap_offset) +
                                      ", " + std::to_string(geo_.heap_end) + ")");
    }
    uint64_t size = __atomic_load_n(&extent_at(off)->size, __ATOMIC_RELAXED);
    if (size < sizeof(extent_header) || size % align != 0 || size > geo_.heap_end - off) {
        return make_error(EPROTO, "its extent at " + std::to_string(off) + " has size " +
                                      std::to_string(size) + ", past the heap's end " +
                                      std::to_string(geo_.heap_end));
    }
    return size - sizeof(extent_header);
}

} // namespace bpftime::store::detail
