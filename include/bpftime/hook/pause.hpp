// SPDX-License-Identifier: MIT
#pragma once

#include <poll.h>

#include <chrono>
#include <ctime>

namespace bpftime {

/// Waits a short while without touching the calling thread's system call restart state.
/// nanosleep and clock_nanosleep reset it on entry, so a sleep made by a thread that
/// `bpftime inject` or `bpftime eject` borrows would turn the blocked call the thread restarts
/// afterwards (a nanosleep) into EINTR; ppoll without descriptors leaves it alone.
inline void pause_for(std::chrono::microseconds d) {
    const struct timespec ts = {static_cast<time_t>(d.count() / 1000000),
                                static_cast<long>(d.count() % 1000000) * 1000};
    ::ppoll(nullptr, 0, &ts, nullptr);
}

} // namespace bpftime
