// SPDX-License-Identifier: MIT
// Private to store/: mapped segments guarded against truncation.
//
// A segment another process truncates (`truncate -s 0`) makes every later access to the
// pages past its new end raise SIGBUS. The store installs one SIGBUS handler per process; a
// fault inside a guarded mapping replaces the whole mapping with private zero pages
// (MAP_FIXED) and marks it damaged, so the faulting access and every later one read zeros
// instead of killing the process, and the next read of the segment refuses it. Faults
// elsewhere go to the handler that was installed before (or the default action).
#pragma once

#include <cstdint>

namespace bpftime::store::detail {

/// Guards [base, base + size); returns the guard's index, or -1 when every guard is taken (the
/// mapping is then used unguarded).
int guard_mapping(void *base, uint64_t size);
/// Stops guarding (before the mapping is unmapped).
void unguard_mapping(int index);
/// Whether a fault replaced the guarded mapping with zero pages.
bool mapping_damaged(int index);

} // namespace bpftime::store::detail
