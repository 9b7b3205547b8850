// SPDX-License-Identifier: MIT
// queue and stack: a ring of max_entries value slots.
//
// One 64-bit word holds the oldest slot and the number of values, and every change ends with
// one store of it, so a writer that dies holding the lock leaves the previous state or the new
// one, never a mix. Both fields are reduced modulo max_entries (from the process's own spec)
// before use, so a damaged word picks wrong slots at worst, never memory outside the ring.
// Pushes, pops and peeks serialise on the header's robust lock (Linux takes a spin lock for
// each too); values are copied under it.
#include "layout.hpp"

#include <algorithm>

namespace bpftime::maps::detail {

namespace {

struct ring_state {
    uint32_t first; ///< the oldest value's slot
    uint32_t count;
};

uint64_t &state_word(const map_ref &m) {
    return *m.section<uint64_t>(m.lay.queue_state);
}

ring_state load_state(const map_ref &m) {
    uint64_t w = atomic(state_word(m)).load(std::memory_order_acquire);
    uint32_t n = m.spec.max_entries;
    return {static_cast<uint32_t>(w >> 32) % n, std::min(static_cast<uint32_t>(w), n)};
}

void store_state(const map_ref &m, ring_state s) {
    atomic(state_word(m)).store(uint64_t{s.first} << 32 | s.count, std::memory_order_release);
}

uint32_t slot_at(const map_ref &m, const ring_state &s, uint32_t i) {
    return static_cast<uint32_t>((uint64_t{s.first} + i) % m.spec.max_entries);
}

// The slot the next pop takes: the oldest of a queue, the newest of a stack.
uint32_t next_out(const map_ref &m, const ring_state &s) {
    return m.spec.type == map_type::queue ? s.first : slot_at(m, s, s.count - 1);
}

} // namespace

long queue_push(const map_ref &m, const void *value, uint64_t flags) {
    if (flags != update_any && flags != update_exist) {
        return -EINVAL;
    }
    robust_lock lock(m.header().lock);
    if (!lock.locked()) {
        return -ENOTRECOVERABLE;
    }
    ring_state s = load_state(m);
    if (s.count == m.spec.max_entries) {
        if (flags != update_exist) {
            return -E2BIG;
        }
        // As Linux: BPF_EXIST makes room by dropping the oldest value, for stacks too.
        s.first = slot_at(m, s, 1);
        s.count--;
    }
    std::memcpy(m.value(slot_at(m, s, s.count), 0), value, m.spec.value_size);
    s.count++;
    store_state(m, s);
    return 0;
}

long queue_pop(const map_ref &m, void *out, bool take) {
    robust_lock lock(m.header().lock);
    if (!lock.locked()) {
        return -ENOTRECOVERABLE;
    }
    ring_state s = load_state(m);
    if (s.count == 0) {
        return -ENOENT;
    }
    uint32_t slot = next_out(m, s);
    if (out != nullptr) {
        std::memcpy(out, m.value(slot, 0), m.spec.value_size);
    }
    if (take) {
        if (m.spec.type == map_type::queue) {
            s.first = slot_at(m, s, 1);
        }
        s.count--;
        store_state(m, s);
    }
    return 0;
}

std::vector<std::vector<uint8_t>> queue_values(const map_ref &m) {
    std::vector<std::vector<uint8_t>> out;
    robust_lock lock(m.header().lock);
    if (!lock.locked()) {
        return out;
    }
    ring_state s = load_state(m);
    for (uint32_t i = 0; i < s.count; i++) {
        uint32_t slot =
            m.spec.type == map_type::queue ? slot_at(m, s, i) : slot_at(m, s, s.count - 1 - i);
        const uint8_t *v = m.value(slot, 0);
        out.emplace_back(v, v + m.spec.value_size);
    }
    return out;
}

uint32_t queue_count(const map_ref &m) {
    return load_state(m).count;
}

} // namespace bpftime::maps::detail
