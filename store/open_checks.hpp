// SPDX-License-Identifier: MIT
// Private to store/: the checks a segment passes before it is used (segment::open).
#pragma once

#include "heap.hpp"
#include "layout.hpp"

#include <bpftime/result.hpp>
#include <bpftime/store/store.hpp>

#include <cstdint>
#include <string>

namespace bpftime::store::detail {

/// Whether the segment behind fd may be trusted (fstat on the open file, not its name, so it
/// cannot change between the check and the use): owned by the expected user (root or this
/// process's effective user, unless opts.owner names one) and not writable by others, nor by
/// its group unless opts.group names that group (or, with opts.member_groups and no group
/// named, this process is a member of it). The error names the segment, its owner, its
/// mode and the fix.
result<void> check_trust(int fd, const std::string &name, const open_options &opts);

/// Why this process may not open segment name (EACCES): its user and group, the segment's
/// owner, group and mode, and the access a host needs.
std::string describe_denied(const std::string &name);

/// The header's geometry, checked against the mapping's real size (mapped bytes).
result<geometry> check_header(const header &h, uint64_t mapped, const std::string &name);

} // namespace bpftime::store::detail
