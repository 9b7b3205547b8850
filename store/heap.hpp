// SPDX-License-Identifier: MIT
// Private to store/: the object heap, the extents after the object table.
#pragma once

#include "layout.hpp"

#include <bpftime/result.hpp>

#include <cstdint>
#include <string>

namespace bpftime::store::detail {

/// The heap of one mapped segment. It keeps no state of its own: the free space is whatever
/// no slot references (as its extent or its pending extent), so a writer killed mid-update
/// cannot leak an extent or hand one out twice. Callers hold the writer lock.
class heap {
public:
    /// base: the segment's mapping in this process; name: the segment's, for messages (it
    /// must outlive the heap).
    heap(uint8_t *base, const std::string &name) : base_(base), name_(name) {}

    /// A new extent of at least payload bytes owned by object owner: first fit among the gaps
    /// between the extents slots reference. Returns its offset in the segment.
    result<uint64_t> allocate(uint64_t payload, uint32_t owner) const;

    extent_header *extent_at(uint64_t off) const {
        return reinterpret_cast<extent_header *>(base_ + off);
    }
    /// The bytes of the extent at off, after its header.
    void *payload(uint64_t off) const { return base_ + off + sizeof(extent_header); }
    uint64_t payload_size(uint64_t off) const {
        return extent_at(off)->size - sizeof(extent_header);
    }

private:
    const header *hdr() const { return reinterpret_cast<const header *>(base_); }

    uint8_t *base_;
    const std::string &name_;
};

} // namespace bpftime::store::detail
