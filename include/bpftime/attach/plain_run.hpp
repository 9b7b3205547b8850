// SPDX-License-Identifier: MIT
// A link's run for hosts that call a program without saving the vector state: the syscall
// tracepoints' plain short path and the uprobes' plain handlers.
#pragma once

#include <bpftime/store/store.hpp>
#include <bpftime/vm/vm.hpp>

namespace bpftime {

/// run_and_count (attach.hpp) for code that must touch no vector register, around a run whose
/// engine keeps the vector state (vm::runs_keep_vector_state): when this process counts the
/// link's runs untimed and the calling thread has its own stripe, runs run() and counts it
/// there inline (nothing else is called) and returns true; a fault's count is count_fault(code),
/// which the host makes through a wrapper that keeps the vector state. False, nothing run,
/// otherwise: the host then takes its general path with the vector state kept.
template <class Run, class CountFault>
[[gnu::always_inline]] inline bool run_and_count_plain(const store::link_counters &counters,
                                                       Run run, CountFault count_fault) {
    if (!counters.owned_untimed() || store::detail::thread_counter_offset >= 6 * 64) {
        return false;
    }
    const vm::run_status st = run();
    if (st.ok()) [[likely]] {
        // The offset checked above: a thread's is set once, before its first count, so
        // count_owned_run adds on the stripe and calls nothing.
        if (store::detail::thread_counter_offset >= 6 * 64) {
            __builtin_unreachable();
        }
        counters.count_owned_run();
    } else {
        count_fault(st.fault->code);
    }
    return true;
}

} // namespace bpftime
