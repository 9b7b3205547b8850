// SPDX-License-Identifier: MIT
/// @file
/// How compiled code may look a key up in a map without calling a helper, in the terms the JIT
/// lowers: an indexed table, or a call of a find function on an opaque object. Plain data over
/// the standard library only: the maps layer, which does not link the VM, describes its maps
/// with it.
#pragma once

#include <cstdint>
#include <variant>

namespace bpftime::vm {

/// A table the key indexes: the key is a 32-bit index, element i is at base + i * stride for
/// i < count, and any other index finds nothing.
struct indexed_table {
    uint64_t base = 0;   ///< the address of element 0
    uint64_t stride = 0; ///< bytes from one element to the next
    uint32_t count = 0;  ///< the number of elements
};

/// A call find(object, key), which returns the key's value or null when the key is absent.
struct find_call {
    void *(*find)(const void *object, const void *key) = nullptr;
    const void *object = nullptr; ///< find's first argument, opaque to the caller
};

/// How a lookup in one map may be done without the helper call: the key's size, where every
/// value the lookup can find lies, and the method.
struct map_lookup_plan {
    uint32_t key_size = 0;
    /// Bytes of the value a found key's pointer leads to.
    uint32_t value_size = 0;
    /// The start of the memory every found value lies in (the map's values, a memory region of
    /// the programs that use the map).
    uint64_t value_area = 0;
    std::variant<indexed_table, find_call> method;
};

} // namespace bpftime::vm
