// SPDX-License-Identifier: MIT
/// @file
/// Internals of the inline hook engine: process memory maps, near allocation, relocation of
/// instructions into a trampoline, stopping the other threads while code is patched.
#pragma once

#include "bpftime/result.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bpftime::hook_detail {

/// One line of /proc/self/maps.
struct mapping {
    uintptr_t start = 0, end = 0;
    bool read = false, write = false, exec = false;
};

/// The current mappings of the process, sorted by address.
result<std::vector<mapping>> read_maps();
/// The mapping holding address, if any.
const mapping *find_mapping(const std::vector<mapping> &maps, uintptr_t address);

/// Maps size bytes (a multiple of the page size) read+write, at an address such that every
/// byte of it is within +-(2 GiB - 16 MiB) of near.
result<uintptr_t> map_near(uintptr_t near, size_t size);

/// The replaced instructions copied into a trampoline.
struct relocation {
    size_t patched = 0;        ///< bytes replaced at the address (whole instructions, >= 5)
    std::vector<uint8_t> code; ///< trampoline code, ending with the jump back
    std::vector<size_t> from;  ///< offset in the original of each instruction boundary
    std::vector<size_t> to;    ///< matching offset in the trampoline
};

/// Decodes whole instructions at address (bytes readable up to limit) until they cover 5
/// bytes (or cover bytes, when more) and relocates them for a trampoline placed at
/// trampoline. function_size (0: unknown) bounds the range.
result<relocation> relocate(uintptr_t address, size_t available, size_t function_size,
                            uintptr_t trampoline, size_t cover = 5);

/// The rip-moving callback type: returns the new rip of a stopped thread.
using move_rip_fn = std::function<uintptr_t(uintptr_t)>;
/// Stops every other thread of the process (each waits in a signal handler), calls patch()
/// (0, or an errno code on failure), moves each stopped thread's instruction pointer through
/// move_rip, then serialises and releases them. Waits at most about a second for the threads
/// to report in. patch and move_rip run while the other threads are stopped: they must not
/// allocate memory (a stopped thread may hold the allocator's lock) nor take locks.
result<void> stop_threads_and(const std::function<int()> &patch, const move_rip_fn &move_rip);

/// The signal used to stop threads.
int stop_signal();

/// The hook whose handler this thread runs, or null (what a stopped thread reports).
const void *running_hook();

/// While threads are stopped (inside patch()): whether a stopped thread was running a handler
/// of hook.
bool stopped_thread_runs(const void *hook);

} // namespace bpftime::hook_detail
