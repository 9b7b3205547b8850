// SPDX-License-Identifier: MIT
// Private to store/: the object heap, the extents after the object table.
#pragma once

#include "layout.hpp"

#include <bpftime/result.hpp>

#include <cstdint>
#include <string>

namespace bpftime::store::detail {

/// Where the table and the heap lie in a mapped segment: the header's fields, checked against
/// the mapping's real size when the segment was opened and kept in this process, so that a
/// header changed later by another process cannot move them.
struct geometry {
    uint32_t max_objects = 0;
    uint64_t table_offset = 0;
    uint64_t heap_offset = 0;
    uint64_t heap_end = 0;
};

/// The heap of one mapped segment. It keeps no state of its own: the free space is whatever
/// no slot references (as its extent or its pending extent), so a writer killed mid-update
/// cannot leak an extent or hand one out twice. Callers hold the writer lock.
class heap {
public:
    /// base: the segment's mapping in this process; name: the segment's, for messages (it
    /// must outlive the heap).
    heap(uint8_t *base, const geometry &geo, const std::string &name)
        : base_(base), geo_(geo), name_(name) {}

    /// A new extent of at least payload bytes owned by object owner: first fit among the gaps
    /// between the extents slots reference. Returns its offset in the segment.
    /// payload_align (a power of two, at least align): the payload starts on a multiple of it
    /// (a page, for map storage a process may mmap).
    result<uint64_t> allocate(uint64_t payload, uint32_t owner,
                              uint64_t payload_align = align) const;

    extent_header *extent_at(uint64_t off) const {
        return reinterpret_cast<extent_header *>(base_ + off);
    }
    /// The bytes of the extent at off, after its header.
    void *payload(uint64_t off) const { return base_ + off + sizeof(extent_header); }

    /// The payload size of the extent at off when it lies inside the heap (its offset aligned,
    /// its header and its recorded size within the heap's end), else an error saying why.
    result<uint64_t> checked_payload_size(uint64_t off) const;

private:
    uint8_t *base_;
    geometry geo_;
    const std::string &name_;
};

} // namespace bpftime::store::detail
