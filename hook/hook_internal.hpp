// SPDX-License-Identifier: MIT
/// @file
/// Internals of the inline hook engine: process memory maps, near allocation, relocation of
/// instructions into a trampoline, stopping the other threads while code is patched.
#pragma once

#include "bpftime/hook/pause.hpp"
#include "bpftime/result.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <ucontext.h>
#include <vector>

namespace bpftime::hook_detail {

using bpftime::pause_for;

/// One line of /proc/self/maps.
struct mapping {
    uintptr_t start = 0, end = 0;
    bool read = false, write = false, exec = false;
};

/// The current mappings of the process, sorted by address.
result<std::vector<mapping>> read_maps();
/// The mapping holding address, if any.
const mapping *find_mapping(const std::vector<mapping> &maps, uintptr_t address);
/// The mmap protection of a mapping (PROT_READ | PROT_WRITE | PROT_EXEC, as it has them).
int prot_of(const mapping &m);

/// A page of code and the protection to put back on it after writing.
struct page_prot {
    uintptr_t page;
    int prot;
};
/// Sorts pages by address and drops repeats (a batch's patches may share pages).
void sort_unique_pages(std::vector<page_prot> &pages);

/// Maps size bytes (a multiple of the page size) read+write, at an address such that every
/// byte of it is within +-(2 GiB - 16 MiB) of near.
result<uintptr_t> map_near(uintptr_t near, size_t size);

/// The replaced instructions copied into a trampoline.
struct relocation {
    size_t patched = 0;        ///< bytes replaced at the address (whole instructions, >= 5)
    std::vector<uint8_t> code; ///< trampoline code, ending with the jump back
    std::vector<size_t> from;  ///< offset in the original of each instruction boundary
    std::vector<size_t> to;    ///< matching offset in the trampoline
    /// Bytes of fill after the function's last instruction that the patch covers (0 for none):
    /// the function ends with a flow-ending instruction before 5 bytes, and the fill after it,
    /// which no code reaches, takes the rest of the jump.
    size_t padding_used = 0;
};

/// Decodes whole instructions at address (bytes readable up to limit) until they cover 5
/// bytes (or cover bytes, when more; exactly one instruction when cover is 0) and relocates
/// them for a trampoline placed at trampoline. function_size (0: unknown) bounds the range.
/// padding_after (with function_size) is how many bytes after the function's end are fill no
/// code reaches (the caller proved it from the binary): a function that ends (ret, jmp) before
/// 5 bytes may then be covered by a jump that runs into that fill, when its bytes here are
/// int3 or nop.
result<relocation> relocate(uintptr_t address, size_t available, size_t function_size,
                            uintptr_t trampoline, size_t cover = 5, size_t padding_after = 0);

/// Whether the bytes [at, at + n) are int3 or nop fill (whole nop forms, or the start of one
/// whose bytes are readable up to at + readable).
bool is_fill(const uint8_t *at, size_t n, size_t readable);

/// The first instruction of [address, address + size) (a linear sweep, size being the rest of
/// the function) with a relative branch into (address, address + patched): a jump patch there
/// would send that branch into the middle of the jump. 0 when there is none.
uintptr_t find_branch_into(uintptr_t address, size_t size, size_t patched);

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

// --- Patching live code (text_poke_bp) ------------------------------------------------------

/// Whether this kernel serialises other threads' instruction streams on request
/// (membarrier PRIVATE_EXPEDITED_SYNC_CORE, registered on first use): live patching then needs
/// no signal to the other threads. Without it patch_live falls back to stop_threads_and.
bool live_patching_available();

/// Makes every thread of the process execute a serialising instruction and a full memory
/// barrier before it runs user code again (membarrier SYNC_CORE); only this thread's when
/// live_patching_available() is false.
void sync_cores();

/// The pages holding a range of code with their protection, read beforehand so that writing
/// allocates nothing.
struct code_pages {
    uintptr_t page[2] = {0, 0};
    int prot[2] = {0, 0};
    int count = 0;
};
/// The pages of [address, address + n) (at most two).
result<code_pages> pages_of(uintptr_t address, size_t n);
/// Writes bytes over code, each page made writable for the moment. Allocates nothing. 0 or an
/// errno code.
int write_code(const code_pages &pages, uintptr_t address, const uint8_t *bytes, size_t n);

/// One patch of live code.
struct live_patch {
    uintptr_t address = 0;
    const uint8_t *bytes = nullptr;  ///< the new code
    const uint8_t *expect = nullptr; ///< the code there now (checked before it is changed)
    size_t n = 0;
    /// Where a thread that reaches address while the patch is being written goes on: code that
    /// does what the new (or, equally, the old) instruction at address does.
    uintptr_t redirect = 0;
    /// Wait, after the temporary int3 is in place, until no thread can still be at an
    /// instruction boundary inside (address, address + n): needed when the patch replaces more
    /// than one instruction.
    bool wait_inside = false;
};

/// Writes a patch while the other threads run, as the kernel's text_poke_bp does: an int3 at
/// the first byte, every core serialised, the remaining bytes, serialised, the first byte,
/// serialised. A thread reaching the int3 meanwhile is sent to redirect by the SIGTRAP
/// handler. Without membarrier SYNC_CORE the other threads are stopped instead
/// (stop_threads_and, with move_rip). EAGAIN when the code is not expect any more.
result<void> patch_live(const live_patch &patch, const move_rip_fn &move_rip);

/// Where a thread that meets the int3 at address goes on while a batch is patched.
struct trap_redirect {
    uintptr_t address = 0;
    uintptr_t redirect = 0;
};

/// Writes many patches while the other threads run, as the kernel's text_poke_bp_batch does:
/// the int3s at every first byte, every core serialised, a wait until no thread can be at an
/// instruction boundary inside any patch (as wait_inside), the remaining bytes, serialised, the
/// first bytes, serialised. A thread meeting one of the int3s meanwhile goes to its redirect.
/// redirects must be sorted by address and stay readable for the life of the process (a thread
/// may still look one up after this returns); their addresses are the patches'. The caller has
/// checked that the code is what it expects. ENOTSUP without membarrier SYNC_CORE (the caller
/// stops the threads instead); on a failure every first byte is put back.
result<void> patch_live_batch(const std::vector<live_patch> &patches,
                              const trap_redirect *redirects, size_t n_redirects);

/// Code that makes the rt_sigreturn system call, outside any code that may be rewritten (the
/// system call gate): the SIGTRAP handler returns through it from now on.
void use_signal_restorer(uintptr_t restorer);

/// Called by the SIGTRAP handler for an int3 of a trap site, with the interrupted context
/// (rip just past the int3): it sets where the thread goes on.
using trap_fn = void (*)(void *user, ucontext_t *context);
/// Places an int3 at address, whose first byte is original, and routes its traps to fn(user).
/// The handler chains to the application's SIGTRAP handler (or the default action) for every
/// int3 that is not one of ours.
result<void> add_trap_site(uintptr_t address, uint8_t original, trap_fn fn, void *user);
/// Puts original back at address and forgets the site. A thread that trapped just before goes
/// on at address, running the original instruction.
result<void> remove_trap_site(uintptr_t address, uint8_t original);

/// Orders the marks against a flag written before it: after it returns, every thread that sets
/// its mark later reads the flag's new value (membarrier PRIVATE_EXPEDITED, or stopping the
/// threads without membarrier). True on success.
bool barrier_all_threads();

} // namespace bpftime::hook_detail
