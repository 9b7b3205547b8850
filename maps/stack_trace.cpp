// SPDX-License-Identifier: MIT
// stack_trace: the map bpf_get_stackid fills. A stack's id is its hash's bucket, as in Linux, so
// the same stack always gets the same id and a different stack hashing to a taken bucket gets
// -EEXIST unless the caller asks to replace it (BPF_F_REUSE_STACKID).
//
// Each bucket is {hash, nr} and nr return addresses. Writers and readers take the header's
// lock (programs only spin on it briefly); a writer clears nr first and sets it last, so a writer
// that dies in the middle leaves an empty bucket, never a stack of mixed frames. nr read from
// storage is clamped to the map's depth, so damaged bytes cannot send a copy past a slot.
#include "layout.hpp"

#include <algorithm>

namespace bpftime::maps::detail {

namespace {

struct bucket {
    uint32_t hash;
    uint32_t nr;
};

bucket *bucket_at(const map_ref &m, uint32_t id) {
    return reinterpret_cast<bucket *>(m.entry(id));
}

uint64_t *frames_at(const map_ref &m, uint32_t id) {
    return reinterpret_cast<uint64_t *>(m.base + m.lay.values + uint64_t{id} * m.lay.value_stride);
}

uint32_t depth(const map_ref &m) {
    return m.spec.value_size / 8;
}

uint32_t hash_of(std::span<const uint64_t> ips) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ips.size();
    for (uint64_t ip : ips) {
        h = (h ^ ip) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return static_cast<uint32_t>(h ^ (h >> 29));
}

uint32_t id_of(const void *key) {
    uint32_t id;
    std::memcpy(&id, key, sizeof id);
    return id;
}

// The stored depth of a bucket, 0 when empty; never beyond the map's depth.
uint32_t stored_nr(const map_ref &m, uint32_t id) {
    return std::min(atomic(bucket_at(m, id)->nr).load(std::memory_order_relaxed), depth(m));
}

} // namespace

uint32_t stack_find(const map_ref &m, const void *key) {
    uint32_t id = id_of(key);
    return id < m.lay.nbuckets && stored_nr(m, id) != 0 ? id : none;
}

long stack_put(const map_ref &m, std::span<const uint64_t> ips, uint64_t flags) {
    if ((flags & ~(stack_fast_cmp | stack_reuse_id)) != 0) {
        return -EINVAL;
    }
    if (ips.empty()) {
        return -EFAULT;
    }
    if (ips.size() > depth(m)) {
        ips = ips.first(depth(m));
    }
    const uint32_t hash = hash_of(ips), nr = static_cast<uint32_t>(ips.size());
    const uint32_t id = hash & (m.lay.nbuckets - 1);
    robust_lock lock(m.header().lock, robust_lock::wait::spin);
    if (!lock.locked()) {
        return -EBUSY;
    }
    bucket *b = bucket_at(m, id);
    uint64_t *frames = frames_at(m, id);
    uint32_t now = stored_nr(m, id);
    if (now != 0 && b->hash == hash && now == nr &&
        ((flags & stack_fast_cmp) != 0 || std::memcmp(frames, ips.data(), nr * 8ull) == 0)) {
        return id;
    }
    if (now != 0 && (flags & stack_reuse_id) == 0) {
        return -EEXIST;
    }
    atomic(b->nr).store(0, std::memory_order_relaxed);
    std::memcpy(frames, ips.data(), nr * 8ull);
    std::memset(frames + nr, 0, (depth(m) - nr) * 8ull);
    b->hash = hash;
    atomic(b->nr).store(nr, std::memory_order_release);
    return id;
}

result<std::vector<uint8_t>> stack_read(const map_ref &m, const void *key) {
    uint32_t id = id_of(key);
    if (id >= m.lay.nbuckets) {
        return make_error(ENOENT, "no such key (stack ids are below " +
                                      std::to_string(m.lay.nbuckets) + ")");
    }
    robust_lock lock(m.header().lock);
    if (!lock.locked()) {
        return make_error(EBUSY, "the map's lock is held by another process for too long");
    }
    uint32_t nr = stored_nr(m, id);
    if (nr == 0) {
        return make_error(ENOENT, "no such key");
    }
    std::vector<uint8_t> out(m.spec.value_size);
    std::memcpy(out.data(), frames_at(m, id), nr * 8ull);
    return out;
}

long stack_remove(const map_ref &m, const void *key) {
    uint32_t id = id_of(key);
    if (id >= m.lay.nbuckets) {
        return -ENOENT;
    }
    robust_lock lock(m.header().lock);
    if (!lock.locked()) {
        return -ENOTRECOVERABLE;
    }
    if (stored_nr(m, id) == 0) {
        return -ENOENT;
    }
    atomic(bucket_at(m, id)->nr).store(0, std::memory_order_release);
    return 0;
}

std::optional<uint32_t> stack_next(const map_ref &m, const void *key) {
    // As Linux: no key or an out-of-range one starts over.
    uint32_t id = 0;
    if (key != nullptr && id_of(key) < m.lay.nbuckets) {
        id = id_of(key) + 1;
    }
    for (; id < m.lay.nbuckets; id++) {
        if (stored_nr(m, id) != 0) {
            return id;
        }
    }
    return std::nullopt;
}

uint64_t stack_count(const map_ref &m) {
    uint64_t n = 0;
    for (uint32_t id = 0; id < m.lay.nbuckets; id++) {
        n += stored_nr(m, id) != 0 ? 1 : 0;
    }
    return n;
}

} // namespace bpftime::maps::detail
