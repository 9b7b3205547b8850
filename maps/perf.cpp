// SPDX-License-Identifier: MIT
// perf_event_array and perf_ring: bpf_perf_event_output's records, as libbpf's perf_buffer reads
// them from a BPF output perf event's mapping.
//
// A perf event array's slot holds the store id of a perf ring (0: empty). A perf ring is what
// the kernel maps for a perf event fd: a struct perf_event_mmap_page (data_head written by
// producers, data_tail by the consumer), then a power-of-two data area that records wrap
// around in. Records are PERF_RECORD_SAMPLE {perf_event_header, u32 size, raw data} with the
// raw size padded so the record is a multiple of 8 bytes, and PERF_RECORD_LOST {header, u64 id,
// u64 lost} placed before the next sample that fits after records were lost.
// The kernel has one ring per CPU and one producer per ring; here threads of many processes
// may share a ring (their CPU slot), so producers serialise on the header's robust lock,
// which they only try for a moment: a probe never waits for another, it counts a lost record.
// data_head moves with a release store once the record is written, so a consumer that reads
// data_head with an acquire load (libbpf's ring_buffer_read_head) sees whole records.
#include "layout.hpp"

#include <linux/futex.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <ctime>

namespace bpftime::maps {

using namespace detail;

namespace {

constexpr uint64_t sample_header = sizeof(perf_event_header) + sizeof(uint32_t);
constexpr uint64_t lost_record = sizeof(perf_event_header) + 2 * sizeof(uint64_t);
// perf_event_header::size is 16 bits.
constexpr uint64_t max_record = 0xfff8;
// How many times a producer tries the ring's lock before it counts its record lost.
constexpr int lock_tries = 64;

struct perf_ring {
    explicit perf_ring(const map_ref &m)
        : h(m.header()), st(*m.section<perf_ring_state>(m.lay.perf_state)),
          page(*m.section<perf_event_mmap_page>(m.lay.perf_page)), data(m.base + m.lay.values),
          size(m.spec.max_entries) {}

    // Copies len bytes to ring position pos, wrapping at the end.
    void put(uint64_t pos, const void *src, uint64_t len) const {
        uint64_t off = pos & (size - 1), first = std::min(len, size - off);
        std::memcpy(data + off, src, first);
        std::memcpy(data, static_cast<const uint8_t *>(src) + first, len - first);
    }
    void get(uint64_t pos, void *dst, uint64_t len) const {
        uint64_t off = pos & (size - 1), first = std::min(len, size - off);
        std::memcpy(dst, data + off, first);
        std::memcpy(static_cast<uint8_t *>(dst) + first, data, len - first);
    }
    uint64_t head() const { return atomic(page.data_head).load(std::memory_order_acquire); }
    uint64_t tail() const { return atomic(page.data_tail).load(std::memory_order_acquire); }

    map_header &h;
    perf_ring_state &st;
    perf_event_mmap_page &page;
    uint8_t *data;
    uint64_t size;
};

void count_lost(const perf_ring &r) {
    atomic(r.st.pending_lost).fetch_add(1, std::memory_order_relaxed);
    atomic(r.st.total_lost).fetch_add(1, std::memory_order_relaxed);
}

// Takes the ring's lock without waiting more than a few tries.
bool try_lock(pthread_mutex_t &mu) {
    for (int i = 0; i < lock_tries; i++) {
        int rc = pthread_mutex_trylock(&mu);
        if (rc == EOWNERDEAD) {
            // Nothing to repair: data_head only moves once a record is whole.
            return pthread_mutex_consistent(&mu) == 0 || (pthread_mutex_unlock(&mu), false);
        }
        if (rc == 0) {
            return true;
        }
        if (rc != EBUSY) {
            return false;
        }
        if (i % 8 == 7) {
            sched_yield();
        } else {
            __builtin_ia32_pause();
        }
    }
    return false;
}

} // namespace

namespace detail {

void perf_ring_init(const map_ref &m) {
    perf_ring r(m);
    r.page.version = 0;
    r.page.compat_version = 0;
    r.page.data_offset = mmap_page_size;
    r.page.data_size = m.spec.max_entries;
}

long perf_array_remove(const map_ref &m, const void *key) {
    uint32_t idx = array_find(m, key);
    if (idx == none) {
        return -E2BIG;
    }
    auto slot = atomic(*reinterpret_cast<uint32_t *>(m.value(idx, 0)));
    return slot.exchange(0) == 0 ? -ENOENT : 0;
}

} // namespace detail

long map_view::perf_ring_id(uint64_t flags) const {
    if (spec_.type != map_type::perf_event_array) {
        return -EINVAL;
    }
    if (flags > perf_current_cpu) {
        return -EINVAL;
    }
    auto m = ref();
    uint32_t idx =
        flags == perf_current_cpu ? current_cpu(spec_.max_entries) : static_cast<uint32_t>(flags);
    if (idx >= spec_.max_entries) {
        return -E2BIG;
    }
    uint32_t id = atomic(*reinterpret_cast<uint32_t *>(m.value(idx, 0))).load();
    return id == 0 ? -ENOENT : static_cast<long>(id);
}

long map_view::perf_output(const void *data, uint64_t size) const {
    if (spec_.type != map_type::perf_ring) {
        return -EINVAL;
    }
    uint64_t raw = (size + sample_header + 7) / 8 * 8 - sample_header;
    if (size > max_record || sample_header + raw > max_record) {
        return -E2BIG;
    }
    perf_ring r(ref());
    if (atomic(r.st.disabled).load(std::memory_order_relaxed) != 0) {
        count_lost(r);
        return -EOPNOTSUPP;
    }
    if (!try_lock(r.h.lock)) {
        count_lost(r);
        return -EBUSY;
    }
    uint64_t head = atomic(r.page.data_head).load(std::memory_order_relaxed), tail = r.tail();
    // A consumer position outside the ring (a faulty consumer): treat the ring as full.
    uint64_t used = head - tail, room = used <= r.size ? r.size - used : 0;
    uint64_t lost = atomic(r.st.pending_lost).load(std::memory_order_relaxed);
    if (lost != 0 && room >= lost_record) {
        lost = atomic(r.st.pending_lost).exchange(0, std::memory_order_relaxed);
        struct {
            perf_event_header h;
            uint64_t id, lost;
        } rec{{PERF_RECORD_LOST, 0, static_cast<uint16_t>(lost_record)}, 0, lost};
        r.put(head, &rec, sizeof rec);
        head += lost_record;
        room -= lost_record;
    }
    uint64_t total = sample_header + raw;
    long rc = 0;
    if (room < total) {
        count_lost(r);
        rc = -ENOSPC;
    } else {
        struct {
            perf_event_header h;
            uint32_t size;
        } hdr{{PERF_RECORD_SAMPLE, 0, static_cast<uint16_t>(total)}, static_cast<uint32_t>(raw)};
        static constexpr uint8_t zeros[8] = {};
        r.put(head, &hdr, sample_header);
        r.put(head + sample_header, data, size);
        r.put(head + sample_header + size, zeros, raw - size);
        head += total;
    }
    bool wake = false;
    if (head != atomic(r.page.data_head).load(std::memory_order_relaxed)) {
        atomic(r.page.data_head).store(head, std::memory_order_release);
        uint32_t every = std::max<uint32_t>(r.st.wakeup_events, 1);
        if (++r.st.since_wakeup >= every) {
            r.st.since_wakeup = 0;
            wake = true;
        }
    }
    pthread_mutex_unlock(&r.h.lock);
    if (wake) {
        wake_consumers(r.h);
    }
    return rc;
}

result<uint64_t> map_view::perf_consume(const std::function<void(std::span<const uint8_t>)> &sample,
                                        const std::function<void(uint64_t lost)> &lost) const {
    if (spec_.type != map_type::perf_ring) {
        return make_error(EINVAL, std::string("a ") + map_type_name(spec_.type) +
                                      " map is not a perf ring");
    }
    perf_ring r(ref());
    uint64_t head = r.head(), tail = atomic(r.page.data_tail).load(std::memory_order_relaxed);
    uint64_t records = 0;
    std::vector<uint8_t> buf;
    while (tail != head) {
        perf_event_header h{};
        if (head - tail > r.size || head - tail < sizeof h || tail % 8 != 0) {
            atomic(r.page.data_tail).store(head, std::memory_order_release);
            return make_error(EIO, "perf ring record at position " + std::to_string(tail) +
                                       " is corrupt; skipped to position " + std::to_string(head));
        }
        r.get(tail, &h, sizeof h);
        if (h.size < sizeof h || h.size % 8 != 0 || h.size > head - tail) {
            atomic(r.page.data_tail).store(head, std::memory_order_release);
            return make_error(EIO, "perf ring record at position " + std::to_string(tail) +
                                       " has size " + std::to_string(h.size) +
                                       "; skipped to position " + std::to_string(head));
        }
        buf.resize(h.size);
        r.get(tail, buf.data(), h.size);
        if (h.type == PERF_RECORD_SAMPLE && h.size >= sample_header) {
            uint32_t n = 0;
            std::memcpy(&n, buf.data() + sizeof h, sizeof n);
            n = static_cast<uint32_t>(std::min<uint64_t>(n, h.size - sample_header));
            if (sample) {
                sample(std::span<const uint8_t>(buf.data() + sample_header, n));
            }
        } else if (h.type == PERF_RECORD_LOST && h.size >= lost_record) {
            uint64_t n = 0;
            std::memcpy(&n, buf.data() + sizeof h + sizeof(uint64_t), sizeof n);
            if (lost) {
                lost(n);
            }
        }
        records++;
        tail += h.size;
        // Only now may producers reuse the space the callbacks read.
        atomic(r.page.data_tail).store(tail, std::memory_order_release);
        if (tail == head) {
            head = r.head();
        }
    }
    return records;
}

bool map_view::perf_wait(int timeout_ms) const {
    if (spec_.type != map_type::perf_ring) {
        return false;
    }
    perf_ring r(ref());
    return wait_for_records(r.h, timeout_ms, [&] { return r.head() != r.tail(); });
}

uint64_t map_view::perf_lost() const {
    if (spec_.type != map_type::perf_ring) {
        return 0;
    }
    return atomic(perf_ring(ref()).st.total_lost).load(std::memory_order_relaxed);
}

void map_view::perf_configure(uint32_t events, bool enabled) const {
    if (spec_.type != map_type::perf_ring) {
        return;
    }
    perf_ring r(ref());
    atomic(r.st.wakeup_events).store(events, std::memory_order_relaxed);
    atomic(r.st.disabled).store(enabled ? 0 : 1, std::memory_order_relaxed);
}

} // namespace bpftime::maps
