// SPDX-License-Identifier: MIT
/// @file
/// Linux's helper functions by id (include/uapi/linux/bpf.h, __BPF_FUNC_MAPPER), so that a call
/// of a helper bpftime does not have is named in refusals and disassembly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bpftime::vm {

/// The name Linux gives helper `id` ("map_lookup_elem" for 1, without the bpf_ prefix), or an
/// empty view for an id Linux does not define.
std::string_view linux_helper_name(uint32_t id);

/// "helper 67 (get_stack)", or "helper 4000" for an id Linux does not define.
std::string describe_helper(uint32_t id);

} // namespace bpftime::vm
