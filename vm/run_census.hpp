// SPDX-License-Identifier: MIT
// Each thread's run sequence, read by a host that must know when the runs in progress on its
// other threads have ended (take_run_census, runs_ended in vm.hpp).
#pragma once

#include <atomic>
#include <cstdint>

namespace bpftime::vm::detail {

/// A thread's run sequence: odd while one of its runs is in progress. Only its thread writes
/// it: one store as a run starts (relaxed) and one as it ends (release, so what the run did to
/// shared memory is seen before the end is).
using run_seq = std::atomic<uint32_t>;

/// Makes seq the calling thread's, read by censuses until unregister_run_seq (its thread's exit).
void register_run_seq(run_seq *seq);
void unregister_run_seq(run_seq *seq);

/// Marks the calling thread as in a run while it lives, for engines without a per-thread
/// state of their own (the interpreter); a run inside a run counts once.
class run_mark {
public:
    run_mark();
    ~run_mark();
    run_mark(const run_mark &) = delete;
    run_mark &operator=(const run_mark &) = delete;

private:
    void *thread_; // the thread's state, or null when its runs are not counted
};

} // namespace bpftime::vm::detail
