// SPDX-License-Identifier: MIT
// ringbuf: many producers in many processes, one consumer, records as in Linux.
//
// A record is an 8-byte header (length with the busy and discard bits, then a word Linux uses
// for the page offset, here the reserving process's id) and its data, 8-byte aligned. Linux maps
// the data twice so a record may wrap; here a record never wraps: when it does not fit before the
// end, a discarded filler record pads to the end and the record starts at the beginning, so a
// consumer that maps the data twice (libbpf's) reads the same records.
// The positions live at the start of their own pages, as in Linux, so a libbpf consumer that
// maps them reads the producer position and publishes the consumer position (a release
// store) where producers here read it.
// Producers serialise reservation on the header's lock; submit and discard clear the busy
// bit with a release store. The consumer delivers records in order and stops at the first
// busy one, so records are seen in reservation order.
// A producer killed between reserve and submit would leave its record busy for ever and stop
// the consumer there. Whoever finds the record at the consumer position busy (this library's
// consumer, a wait for records such as the interposer's epoll for a libbpf consumer reading
// the mapped ring, or a producer finding no room) looks at the process its header names: when
// that process is gone (or a zombie: killed, not yet reaped by its parent), the record becomes a
// discarded one (which libbpf's consumer skips too) and counts as lost (map_header::lost).
#include "layout.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace bpftime::maps {

using namespace detail;

namespace {

constexpr uint32_t busy_bit = 1u << 31;    // BPF_RINGBUF_BUSY_BIT
constexpr uint32_t discard_bit = 1u << 30; // BPF_RINGBUF_DISCARD_BIT
constexpr uint64_t header_size = 8;        // BPF_RINGBUF_HDR_SZ

struct ring {
    explicit ring(const map_ref &m)
        : h(m.header()), consumer_pos(*m.section<uint64_t>(m.lay.ring_consumer)),
          producer_pos(*m.section<uint64_t>(m.lay.ring_producer)), data(m.base + m.lay.values),
          size(m.spec.max_entries) {}

    // pos must be 8-byte aligned: then the header lies inside the data.
    uint32_t *header_at(uint64_t pos) const {
        return reinterpret_cast<uint32_t *>(data + (pos & (size - 1)));
    }
    // owner: the process that reserved the record (0 for a filler record).
    void write_header(uint64_t pos, uint32_t len, uint32_t owner = 0) const {
        atomic(header_at(pos)[1]).store(owner, std::memory_order_relaxed);
        atomic(header_at(pos)[0]).store(len, std::memory_order_release);
    }
    // Whether the process pid can still submit: it exists and is not a zombie. A zombie whose
    // threads are all gone counts as dead; a thread group whose first thread exited shows as a
    // zombie too, but with its other threads still counted (Threads > 1), so it is alive.
    static bool producer_alive(pid_t pid) {
        if (kill(pid, 0) != 0) {
            return errno != ESRCH;
        }
        char path[40], buf[2048];
        std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
        const int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return errno != ENOENT;
        }
        const ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) {
            return true;
        }
        buf[n] = '\0';
        const char *state = std::strstr(buf, "\nState:\t");
        const char *threads = std::strstr(buf, "\nThreads:\t");
        const bool zombie = state != nullptr && (state[8] == 'Z' || state[8] == 'X');
        return !zombie || threads == nullptr || std::atoi(threads + 10) > 1;
    }
    // Turns the record at the consumer position into a discarded one when it is busy and the
    // process that reserved it is gone; true when it did.
    bool skip_dead_head() const {
        uint64_t cons = atomic(consumer_pos).load(std::memory_order_acquire);
        uint64_t prod = atomic(producer_pos).load(std::memory_order_acquire);
        if (cons >= prod || cons % 8 != 0 || prod - cons > size) {
            return false;
        }
        auto len = atomic(*header_at(cons));
        uint32_t word = len.load(std::memory_order_acquire);
        auto owner = static_cast<pid_t>(atomic(header_at(cons)[1]).load(std::memory_order_relaxed));
        if (!(word & busy_bit) || owner <= 0 || owner == getpid() || producer_alive(owner)) {
            return false;
        }
        // One wins among those who found it; a producer that was not dead after all (its id
        // reused by nothing yet) cannot be: its commit finds the busy bit gone and does nothing.
        if (!len.compare_exchange_strong(word, (word & ~busy_bit) | discard_bit,
                                         std::memory_order_acq_rel)) {
            return false;
        }
        atomic(h.lost).fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    // Whether the record at the consumer position is complete (submitted or discarded), after
    // skipping one whose producer died.
    bool head_ready() const {
        uint64_t cons = atomic(consumer_pos).load(std::memory_order_acquire);
        uint64_t prod = atomic(producer_pos).load(std::memory_order_acquire);
        if (cons >= prod || cons % 8 != 0) {
            return false;
        }
        return !(atomic(*header_at(cons)).load(std::memory_order_acquire) & busy_bit) ||
               skip_dead_head();
    }

    map_header &h;
    uint64_t &consumer_pos;
    uint64_t &producer_pos;
    uint8_t *data;
    uint64_t size;
};

long futex(uint32_t *word, int op, uint32_t value, const timespec *timeout) {
    // Not FUTEX_PRIVATE_FLAG: waiters and wakers are in different processes.
    return syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
}

void commit(const map_ref &m, void *record, uint64_t flags, bool discard) {
    if (m.spec.type != map_type::ringbuf) {
        return;
    }
    ring r(m);
    // Only a record of this ring: anything else would have us write outside it.
    auto at = reinterpret_cast<uintptr_t>(record), start = reinterpret_cast<uintptr_t>(r.data);
    if (at < start + header_size || at - start > r.size || (at - start) % 8 != 0) {
        return;
    }
    auto len = atomic(*reinterpret_cast<uint32_t *>(at - header_size));
    uint32_t word = len.load(std::memory_order_relaxed);
    if (!(word & busy_bit)) {
        return; // committed already
    }
    len.store((word & ~busy_bit) | (discard ? discard_bit : 0), std::memory_order_release);
    if (!(flags & ringbuf_no_wakeup)) {
        wake_consumers(r.h);
    }
}

} // namespace

void *map_view::ringbuf_reserve(uint64_t size) const {
    if (spec_.type != map_type::ringbuf || size > spec_.max_entries - header_size ||
        size >= discard_bit) {
        return nullptr;
    }
    ring r(ref());
    uint64_t total = (size + header_size + 7) / 8 * 8;
    robust_lock lock(r.h.lock);
    if (!lock.locked()) {
        return nullptr;
    }
    // Nothing to repair after a producer died holding the lock: the positions move by single
    // stores, and a record is visible to the consumer only once producer_pos covers it.
    uint64_t cons = atomic(r.consumer_pos).load(std::memory_order_acquire);
    uint64_t prod = atomic(r.producer_pos).load(std::memory_order_relaxed);
    uint64_t used = prod - cons, off = prod & (r.size - 1);
    uint64_t pad = off + total > r.size ? r.size - off : 0;
    if (prod % 8 != 0 || used > r.size || pad + total > r.size - used) {
        // A full ring may be one whose consumer waits behind a dead producer's record: skipping
        // it lets the consumer go on (and free room for later reservations).
        if (r.skip_dead_head()) {
            wake_consumers(r.h);
        }
        atomic(r.h.dropped).fetch_add(1, std::memory_order_relaxed);
        return nullptr;
    }
    if (pad > 0) {
        r.write_header(prod, static_cast<uint32_t>(pad - header_size) | discard_bit);
        prod += pad;
    }
    r.write_header(prod, static_cast<uint32_t>(size) | busy_bit, static_cast<uint32_t>(getpid()));
    atomic(r.producer_pos).store(prod + total, std::memory_order_release);
    return reinterpret_cast<uint8_t *>(r.header_at(prod)) + header_size;
}

void map_view::ringbuf_submit(void *record, uint64_t flags) const {
    commit(ref(), record, flags, false);
}

void map_view::ringbuf_discard(void *record, uint64_t flags) const {
    commit(ref(), record, flags, true);
}

long map_view::ringbuf_output(const void *data, uint64_t size, uint64_t flags) const {
    if (spec_.type != map_type::ringbuf ||
        (flags & ~(ringbuf_no_wakeup | ringbuf_force_wakeup)) != 0) {
        return -EINVAL;
    }
    void *record = ringbuf_reserve(size);
    if (record == nullptr) {
        return -EAGAIN;
    }
    std::memcpy(record, data, size);
    ringbuf_submit(record, flags);
    return 0;
}

result<uint64_t> map_view::ringbuf_consume(const std::function<void(std::span<const uint8_t>)> &fn,
                                           uint64_t max) const {
    if (spec_.type != map_type::ringbuf) {
        return make_error(EINVAL, std::string("a ") + map_type_name(spec_.type) +
                                      " map is not a ring buffer");
    }
    ring r(ref());
    uint64_t cons = atomic(r.consumer_pos).load(std::memory_order_relaxed), delivered = 0;
    while (delivered < max) {
        uint64_t prod = atomic(r.producer_pos).load(std::memory_order_acquire);
        if (cons >= prod) {
            break;
        }
        uint32_t word =
            cons % 8 == 0 ? atomic(*r.header_at(cons)).load(std::memory_order_acquire) : 0;
        if ((word & busy_bit) && r.skip_dead_head()) {
            word = atomic(*r.header_at(cons)).load(std::memory_order_acquire);
        }
        if (word & busy_bit) {
            break;
        }
        uint64_t len = word & ~discard_bit, total = (len + header_size + 7) / 8 * 8;
        uint64_t off = cons & (r.size - 1);
        if (cons % 8 != 0 || prod - cons > r.size || total > r.size - off || total > prod - cons) {
            // No producer wrote this: skip what is published so the ring can go on.
            atomic(r.consumer_pos).store(prod, std::memory_order_release);
            return make_error(EIO, "ring buffer record at position " + std::to_string(cons) +
                                       " is corrupt; skipped to position " + std::to_string(prod));
        }
        if (!(word & discard_bit)) {
            fn(std::span<const uint8_t>(r.data + off + header_size, len));
            delivered++;
        }
        cons += total;
        // Only now may producers reuse the space fn read.
        atomic(r.consumer_pos).store(cons, std::memory_order_release);
    }
    return delivered;
}

namespace detail {

void wake_consumers(map_header &h) {
    // Paired with wait_for_records: either it sees the new sequence or we see it waiting.
    atomic(h.wake_seq).fetch_add(1);
    if (atomic(h.waiters).load() != 0) {
        futex(&h.wake_seq, FUTEX_WAKE, INT_MAX, nullptr);
    }
}

bool wait_for_records(map_header &h, int timeout_ms, const std::function<bool()> &ready) {
    using clock = std::chrono::steady_clock;
    auto deadline = clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
    for (;;) {
        uint32_t seq = atomic(h.wake_seq).load();
        if (ready()) {
            return true;
        }
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - clock::now());
        if (timeout_ms >= 0 && left.count() <= 0) {
            return false;
        }
        timespec ts{static_cast<time_t>(left.count() / 1'000'000'000),
                    static_cast<long>(left.count() % 1'000'000'000)};
        // A producer's wake after our load of seq makes FUTEX_WAIT return at once. A producer
        // either sees our increment of waiters and wakes us, or bumped seq before it (seq_cst).
        atomic(h.waiters).fetch_add(1);
        futex(&h.wake_seq, FUTEX_WAIT, seq, timeout_ms >= 0 ? &ts : nullptr);
        atomic(h.waiters).fetch_sub(1);
    }
}

} // namespace detail

bool map_view::ringbuf_wait(int timeout_ms) const {
    if (spec_.type != map_type::ringbuf) {
        return false;
    }
    ring r(ref());
    return wait_for_records(r.h, timeout_ms, [&] { return r.head_ready(); });
}

uint64_t map_view::ringbuf_dropped() const {
    if (spec_.type != map_type::ringbuf) {
        return 0;
    }
    return atomic(ref().header().dropped).load(std::memory_order_relaxed);
}

uint64_t map_view::ringbuf_lost() const {
    if (spec_.type != map_type::ringbuf) {
        return 0;
    }
    return atomic(ref().header().lost).load(std::memory_order_relaxed);
}

} // namespace bpftime::maps
