// SPDX-License-Identifier: MIT
// hash, percpu_hash, lru_hash and lru_percpu_hash: one implementation.
//
// Entries live in parallel arrays indexed by entry number; a bucket holds the first entry of
// its chain and next[] links the rest. Readers take no lock: a writer fills an entry completely
// and then publishes it with a release store of the link that points at it, so a reader sees
// whole entries. A deleted entry keeps its next[] link, so a reader standing on it still reaches
// the rest of its chain; a reader racing a delete or a reuse may miss an entry, never leave the
// storage.
//
// Writers: an update of a present key (the common case: counters) takes only that entry's lock,
// a word in the entry's state holding the owner's thread id, and writes the value in place.
// Inserts and deletes take the header's robust mutex; a delete (and an LRU eviction) also takes
// the entry's lock before it unlinks the entry, so an update holding it never writes into an
// entry that is being freed or reused for another key. An entry lock whose owner died is taken
// over (what is lost is that writer's own value, perhaps half written); one held by a live
// thread is waited for at most entry_lock_wait, then the operation fails with -EBUSY, so a
// stopped writer never blocks another process for longer. In plain hash maps of 4- and 8-byte
// keys and values (lock_free_updates) such an update takes no lock at all: see "lock-free updates
// of present keys" below.
#include "layout.hpp"

#include <linux/membarrier.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <thread>
#include <type_traits>
#include <vector>

namespace bpftime::maps::detail {

void (*hash_insert_hook)() = nullptr;
void (*hash_entry_locked_hook)() = nullptr;

namespace {

// Eviction looks at this many entries, so its cost does not grow with the map.
constexpr uint32_t lru_sample = 256;

struct tables {
    explicit tables(const map_ref &m)
        : buckets(m.section<uint32_t>(m.lay.buckets)),
          free_stack(m.section<uint32_t>(m.lay.free_stack)),
          stamps(m.section<uint64_t>(m.lay.stamps)) {}

    uint32_t *buckets;
    uint32_t *free_stack;
    uint64_t *stamps;
};

uint32_t bucket_of(const map_ref &m, const void *key) {
    return bucket_of(probe_of(m), key, m.spec.key_size);
}

// Bytes per entry: a constant when the key size is (KeySize != 0), as compute_layout lays them
// out, so that finding an entry is a shift rather than a multiply by a stride read at run time.
template <uint32_t KeySize>
[[gnu::always_inline]] inline uint32_t entry_stride(const map_ref &m) {
    if constexpr (KeySize != 0) {
        return hash_entry_stride(KeySize);
    } else {
        return m.lay.entry_stride;
    }
}

template <uint32_t KeySize>
[[gnu::always_inline]] inline uint8_t *entry_at(const map_ref &m, uint32_t idx) {
    return m.base + m.lay.entries + uint64_t{idx} * entry_stride<KeySize>(m);
}

// chain_find of a map_ref's map.
template <uint32_t KeySize = 0>
[[gnu::always_inline]] inline uint32_t chain_find(const map_ref &m, const void *key,
                                                  uint32_t **link_out = nullptr) {
    return chain_find<KeySize>(probe_of(m), key, link_out);
}

// Calls f with the key size as a constant (std::integral_constant) for the common sizes, 4 and
// 8 bytes, and 0 (the map's, read at run time) for the others.
template <class F>
decltype(auto) with_key_size(uint32_t key_size, F &&f) {
    switch (key_size) {
    case 4:
        return f(std::integral_constant<uint32_t, 4>{});
    case 8:
        return f(std::integral_constant<uint32_t, 8>{});
    default:
        return f(std::integral_constant<uint32_t, 0>{});
    }
}

// chain_find for lookups, with the common key sizes as constants.
uint32_t lookup_chain(const map_ref &m, const void *key) {
    return with_key_size(m.spec.key_size,
                         [&](auto size) { return chain_find<decltype(size)::value>(m, key); });
}

void set_count(const map_ref &m, uint32_t count) {
    atomic(m.header().count).store(count, std::memory_order_relaxed);
}

// Rebuilds the bookkeeping from the chains: what a bucket reaches stays (a chain is cut at
// its first impossible link), everything else is free, or in limbo in a lock_free_updates map
// (a lock-free updater may still be writing it; grace() frees it). Runs at init and after a
// writer died holding the lock, which can leave an entry taken but not linked, or unlinked but
// not freed.
void rebuild(const map_ref &m, const tables &t) {
    uint32_t n = m.lay.nentries, count = 0;
    lpm_clear_counts(m);
    std::vector<bool> reachable(n);
    for (uint32_t b = 0; b < m.lay.nbuckets; b++) {
        for (uint32_t *link = &t.buckets[b];;) {
            uint32_t idx = atomic(*link).load(std::memory_order_relaxed);
            if (idx == none) {
                break;
            }
            if (idx >= n || reachable[idx] || !m.in_use(idx) || bucket_of(m, m.key(idx)) != b) {
                atomic(*link).store(none, std::memory_order_release);
                break;
            }
            reachable[idx] = true;
            count++;
            lpm_count(m, idx, 1);
            link = &m.next(idx);
        }
    }
    const bool limbo = lock_free_updates(m.spec);
    uint32_t top = 0;
    for (uint32_t idx = n; idx-- > 0;) {
        if (!reachable[idx]) {
            // Reachable entries keep their state: a live writer may hold one's lock.
            atomic(m.state(idx)).store(0, std::memory_order_relaxed);
            // Lowest index on top: new entries fill from the start (grace() keeps the order).
            t.free_stack[limbo ? n - 1 - top++ : top++] = idx;
        }
    }
    m.header().free_top = limbo ? 0 : top;
    m.header().limbo = limbo ? top : 0;
    set_count(m, count);
}

// Whether the writers' lock is held, after repairing what a writer that died holding it left.
bool lock_writers(const robust_lock &lock, const map_ref &m, const tables &t) {
    if (!lock.locked()) {
        return false;
    }
    if (lock.owner_died()) {
        rebuild(m, t);
    }
    return true;
}

// --- entry locks ---

// Initial-exec: the owner's id is read by every update, and a general-dynamic access from a
// shared library (the agent, the server) is a call of __tls_get_addr. Four bytes of static TLS.
[[gnu::tls_model("initial-exec")]] thread_local uint32_t cached_tid = 0;
// The hazard slot this thread last claimed in a map (see the hazards below) << 32 | its thread
// id; 0 before its process can take part in lock-free updates.
[[gnu::tls_model("initial-exec")]] thread_local uint64_t hazard_self = 0;

[[gnu::noinline]] uint32_t fetch_thread_id() {
    // Cached: gettid() is a system call, and a thread's id never changes (a fork child's thread
    // gets a new one: the handler below forgets the parent's).
    static const bool registered = pthread_atfork(nullptr, nullptr, [] {
                                       cached_tid = 0;
                                       hazard_self = 0;
                                   }) == 0;
    (void)registered;
    cached_tid = static_cast<uint32_t>(::gettid()) & entry_owner_mask;
    return cached_tid;
}

inline uint32_t this_thread_id() {
    const uint32_t tid = cached_tid;
    return tid != 0 ? tid : fetch_thread_id();
}

bool thread_gone(uint32_t tid) {
    return tid == 0 || tid > entry_owner_mask ||
           (::kill(static_cast<pid_t>(tid), 0) != 0 && errno == ESRCH);
}

// --- lock-free updates of present keys (lock_free_updates maps) ---
//
// Such an update writes the value with one store and takes no lock. What it must never do is
// write an entry that a delete freed and an insert reused for another key. So the updater
// publishes the entry it found in its hazard slot (a plain store), checks that the entry still
// holds its key, writes, and clears the slot. A delete puts the entry in limbo instead of on the
// free stack; grace() frees limbo entries that no hazard names, after a membarrier() that
// serves as the updaters' missing store-load fence: after it, an updater's hazard is either
// visible or the updater sees the entry deleted (the asymmetric fence of hazard pointers).
// Two updaters of one key both write whole values, as two stores would.
//
// A slot belongs to a thread (owner, by thread id) in that map for good; a thread has two
// candidate slots, and remembers the one it last claimed, which is the one it has in every map
// unless the first was taken there. Slots of threads that are gone are taken over. A thread that
// has neither slot (64 slots, so rarely), or whose process could not register for membarrier(),
// takes the entry lock as other maps do.

hazard_control &hazard_ctl(const map_ref &m) {
    return *m.section<hazard_control>(m.lay.hazards);
}

hazard_slot *hazard_slots_of(const map_ref &m) {
    return m.section<hazard_slot>(m.lay.hazards + sizeof(hazard_control));
}

// The slot this thread last claimed, when it owns that slot among slots (it may own another
// there, or none yet): null otherwise, and before its process registered.
[[gnu::always_inline]] inline hazard_slot *own_slot(hazard_slot *slots) {
    const uint64_t self = hazard_self;
    const uint32_t tid = static_cast<uint32_t>(self);
    hazard_slot *const slot = &slots[self >> 32];
    return tid != 0 && atomic(slot->owner).load(std::memory_order_relaxed) == tid ? slot : nullptr;
}

// A thread's two candidate slots, from two multiplicative hashes of its id.
inline uint32_t first_slot(uint32_t tid) {
    static_assert(std::has_single_bit(hazard_slots));
    return (tid * 0x9e3779b1u) >> (32 - std::countr_zero(hazard_slots));
}

inline uint32_t second_slot(uint32_t tid) {
    return (tid * 0x85ebca6bu) >> (32 - std::countr_zero(hazard_slots));
}

// membarrier(): which commands the kernel takes (glibc has no wrapper).
long membarrier(int cmd) {
    return ::syscall(SYS_membarrier, cmd, 0, 0);
}

// The process whose threads membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) reaches: registered once
// (a fork child registers again).
std::atomic<pid_t> registered_pid{0};

bool register_process() {
    const pid_t me = ::getpid();
    if (registered_pid.load(std::memory_order_acquire) == me) {
        return true;
    }
    if (membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0) {
        return false;
    }
    registered_pid.store(me, std::memory_order_release);
    return true;
}

// Slow updates left before this thread tries again to claim a slot.
thread_local uint32_t claim_backoff = 0;

// Gives this thread one of its candidate slots in m, so that its next updates of present keys
// take no lock. Runs on the slow path; after a failed try the next ones wait a while.
void claim_hazard_slot(const map_ref &m) {
    if (claim_backoff > 0) {
        claim_backoff--;
        return;
    }
    claim_backoff = 1024;
    const uint32_t tid = this_thread_id();
    if (!register_process()) {
        return;
    }
    // Set before any slot has an owner, with a full fence: grace() skips membarrier() and the
    // hazard scan while it is clear.
    if (auto used = atomic(hazard_ctl(m).used); used.load(std::memory_order_relaxed) == 0) {
        used.store(1, std::memory_order_seq_cst);
    }
    hazard_slot *slots = hazard_slots_of(m);
    const uint32_t candidates[] = {first_slot(tid), second_slot(tid)};
    auto take = [&](uint32_t s) {
        hazard_self = uint64_t{s} << 32 | tid;
        claim_backoff = 0;
    };
    for (uint32_t s : candidates) {
        if (atomic(slots[s].owner).load(std::memory_order_relaxed) == tid) {
            return take(s); // this thread's already (it updates maps that gave it other slots)
        }
    }
    for (uint32_t s : candidates) {
        auto owner = atomic(slots[s].owner);
        uint32_t seen = owner.load(std::memory_order_relaxed);
        if ((seen == 0 || thread_gone(seen)) &&
            owner.compare_exchange_strong(seen, tid, std::memory_order_seq_cst)) {
            // A hazard a dead owner left names nothing any more.
            atomic(slots[s].hazard).store(0, std::memory_order_relaxed);
            return take(s);
        }
    }
}

// The updaters' store-load fence, made for them (see above): false when the kernel takes
// neither command.
bool fence_updaters() {
    // Expedited: interrupts the CPUs running threads of registered processes (microseconds).
    // Otherwise a full RCU grace period over every CPU (milliseconds), which needs no
    // registration.
    return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0 ||
           membarrier(MEMBARRIER_CMD_GLOBAL) == 0;
}

enum class entry_lock { held, gone, busy };

// Waits for idx's lock after the first compare-and-swap failed, seen being what it found:
// spins a little, then checks that the holder is alive (it may have died holding the lock) while
// waiting up to the bound. Out of line: the fast path is one compare-and-swap.
[[gnu::noinline]] entry_lock wait_entry(uint32_t &word, uint32_t seen, uint32_t me) {
    auto state = atomic(word);
    const auto deadline = std::chrono::steady_clock::now() + entry_lock_wait;
    for (uint32_t round = 1;; round++) {
        if ((seen & entry_used) == 0) {
            return entry_lock::gone;
        }
        uint32_t owner = seen & entry_owner_mask;
        if (owner != 0 && round % 64 == 0 && thread_gone(owner)) {
            // Taken over as it is: a dead holder loses its own write, nothing else.
            if (state.compare_exchange_strong(seen, me, std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
                return entry_lock::held;
            }
            continue;
        }
        if (round % 64 == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                return entry_lock::busy;
            }
            std::this_thread::yield();
        } else {
            __builtin_ia32_pause();
        }
        seen = state.load(std::memory_order_relaxed);
        if (seen == entry_used && state.compare_exchange_strong(seen, me, std::memory_order_acquire,
                                                                std::memory_order_relaxed)) {
            return entry_lock::held;
        }
    }
}

// Takes idx's lock while it holds a key; with key set, also checks that the entry still holds
// that key (it may have been deleted and reused since the caller found it). gone: the entry is
// free or holds another key; busy: a live thread held the lock for longer than entry_lock_wait.
template <uint32_t KeySize = 0>
[[gnu::always_inline]] inline entry_lock lock_entry(const map_ref &m, uint32_t idx,
                                                    const void *key) {
    uint8_t *const e = entry_at<KeySize>(m, idx);
    auto &word = *reinterpret_cast<uint32_t *>(e + hash_entry_state);
    const uint32_t me = entry_used | this_thread_id();
    uint32_t seen = entry_used;
    if (!atomic(word).compare_exchange_strong(seen, me, std::memory_order_acquire,
                                              std::memory_order_relaxed)) [[unlikely]] {
        if (entry_lock got = wait_entry(word, seen, me); got != entry_lock::held) {
            return got;
        }
    }
    const uint32_t key_size = KeySize != 0 ? KeySize : m.spec.key_size;
    if (key != nullptr && !keys_equal(e + hash_entry_key, key, key_size)) [[unlikely]] {
        atomic(word).store(entry_used, std::memory_order_release);
        return entry_lock::gone;
    }
    return entry_lock::held;
}

void unlock_entry(const map_ref &m, uint32_t idx) {
    atomic(m.state(idx)).store(entry_used, std::memory_order_release);
}

// Unlinks idx, whose lock the caller holds, and frees it (which also releases the lock).
void unlink(const map_ref &m, uint32_t idx, uint32_t *link) {
    atomic(*link).store(atomic(m.next(idx)).load(std::memory_order_relaxed),
                        std::memory_order_release);
    atomic(m.state(idx)).store(0, std::memory_order_release);
    set_count(m, m.header().count - 1);
    lpm_count(m, idx, -1);
}

uint32_t take_free(const map_ref &m, const tables &t) {
    map_header &h = m.header();
    uint32_t top = std::min(h.free_top, m.lay.nentries);
    while (top > 0) {
        uint32_t idx = t.free_stack[--top];
        if (idx < m.lay.nentries && !m.in_use(idx)) {
            h.free_top = top;
            return idx;
        }
    }
    h.free_top = 0;
    return none;
}

// Frees an entry the caller unlinked: on the free stack, or in limbo in a lock_free_updates
// map, where a lock-free updater may still be about to write it.
void release_entry(const map_ref &m, const tables &t, uint32_t idx) {
    map_header &h = m.header();
    const uint32_t n = m.lay.nentries, free_top = std::min(h.free_top, n);
    if (!lock_free_updates(m.spec)) {
        if (free_top < n) {
            t.free_stack[h.free_top++] = idx;
        }
    } else if (const uint32_t limbo = std::min(h.limbo, n - free_top); free_top + limbo < n) {
        t.free_stack[n - 1 - limbo] = idx;
        h.limbo = limbo + 1;
    }
}

// Frees the limbo's entries that no lock-free updater may still write (see the hazards above):
// whether it freed any. The writers' lock held.
bool grace(const map_ref &m, const tables &t) {
    if (!lock_free_updates(m.spec)) {
        return false; // no limbo, whatever a damaged header says (and no hazards section)
    }
    map_header &h = m.header();
    const uint32_t n = m.lay.nentries;
    uint32_t free_top = std::min(h.free_top, n);
    const uint32_t limbo = std::min(h.limbo, n - free_top);
    if (limbo == 0) {
        return false;
    }
    // The deletes' stores of the entries' state before the load of `used` (claim_hazard_slot's
    // side of it is its seq_cst store).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::vector<uint32_t> held;
    if (atomic(hazard_ctl(m).used).load(std::memory_order_relaxed) != 0) {
        if (!fence_updaters()) {
            return false;
        }
        const hazard_slot *slots = hazard_slots_of(m);
        for (uint32_t s = 0; s < hazard_slots; s++) {
            const uint64_t hazard =
                atomic(const_cast<uint64_t &>(slots[s].hazard)).load(std::memory_order_acquire);
            // A thread that died mid-update writes no more.
            if (hazard != 0 && !thread_gone(static_cast<uint32_t>(hazard >> 32))) {
                held.push_back(static_cast<uint32_t>(hazard) - 1);
            }
        }
    }
    std::vector<uint32_t> waiting(t.free_stack + n - limbo, t.free_stack + n);
    uint32_t kept = 0;
    for (auto it = waiting.rbegin(); it != waiting.rend(); ++it) {
        const uint32_t idx = *it;
        if (idx >= n || m.in_use(idx)) {
            continue; // damaged: rebuild() finds what the chains hold
        }
        if (std::find(held.begin(), held.end(), idx) != held.end()) {
            t.free_stack[n - 1 - kept++] = idx;
        } else {
            t.free_stack[free_top++] = idx;
        }
    }
    h.free_top = free_top;
    h.limbo = kept;
    return free_top > 0;
}

// lru_hash when full: evicts the least recently used entry of a window that moves along the
// table (sampled LRU, as Redis does); exact for maps of up to lru_sample entries. none when the
// victim's lock stays held.
uint32_t evict(const map_ref &m, const tables &t) {
    uint32_t n = m.lay.nentries, start = m.header().lru_cursor % n;
    uint32_t window = std::min(n, lru_sample), victim = none;
    uint64_t oldest = UINT64_MAX;
    for (uint32_t i = 0; i < window; i++) {
        uint32_t idx = static_cast<uint32_t>((uint64_t{start} + i) % n);
        uint64_t stamp = atomic(t.stamps[idx]).load(std::memory_order_relaxed);
        if (victim == none || stamp < oldest) {
            victim = idx;
            oldest = stamp;
        }
    }
    m.header().lru_cursor = static_cast<uint32_t>((uint64_t{start} + window) % n);
    uint32_t *link = nullptr;
    if (chain_find(m, m.key(victim), &link) == victim) {
        if (lock_entry(m, victim, nullptr) != entry_lock::held) {
            return none;
        }
        unlink(m, victim, link);
    }
    return victim;
}

void touch(const map_ref &m, const tables &t, uint32_t idx) {
    uint64_t now = atomic(m.header().lru_clock).load(std::memory_order_relaxed);
    // Stores only on change: a hot entry's cache line is not dirtied by every lookup.
    if (auto stamp = atomic(t.stamps[idx]); stamp.load(std::memory_order_relaxed) != now) {
        stamp.store(now, std::memory_order_relaxed);
    }
}

// Writes a present entry's value, its lock held.
void write_locked(const map_ref &m, const tables &t, uint32_t idx, const value_source &src) {
    if (hash_entry_locked_hook) {
        hash_entry_locked_hook();
    }
    if (m.ncpus == 1 && m.spec.spin_lock_off < 0) {
        std::memcpy(m.value(idx, 0), src.data, m.spec.value_size);
    } else {
        store_value(m, idx, src, false);
    }
    if (is_lru(m.spec.type)) {
        uint64_t now = atomic(m.header().lru_clock).fetch_add(1, std::memory_order_relaxed) + 1;
        atomic(t.stamps[idx]).store(now, std::memory_order_relaxed);
    }
    unlock_entry(m, idx);
}

// An update of a key that is present, with the entry's lock only: 0, -EBUSY, or 1 when the
// key was not found (or went away meanwhile) and the caller must take the insert path.
template <uint32_t KeySize>
long update_present(const map_ref &m, const tables &t, const void *key, const value_source &src) {
    for (int tries = 0; tries < 4; tries++) {
        const uint32_t idx = chain_find<KeySize>(m, key);
        if (idx == none) {
            return 1;
        }
        switch (lock_entry<KeySize>(m, idx, key)) {
        case entry_lock::held:
            write_locked(m, t, idx, src);
            return 0;
        case entry_lock::busy:
            return -EBUSY;
        case entry_lock::gone:
            break; // deleted (and perhaps reused) meanwhile: look again
        }
    }
    return 1;
}

} // namespace

void hash_init(const map_ref &m) {
    tables t(m);
    std::memset(t.buckets, 0xff, uint64_t{m.lay.nbuckets} * sizeof(uint32_t));
    rebuild(m, t);
}

uint32_t hash_find(const map_ref &m, const void *key, bool touch_entry) {
    tables t(m);
    uint32_t idx = lookup_chain(m, key);
    if (idx == none) {
        return none;
    }
    if (touch_entry && is_lru(m.spec.type)) {
        touch(m, t, idx);
    }
    return idx;
}

namespace {

// A plain hash map's lookup with the key size a constant: one value slot per entry, no
// last-use stamp to update. With a value stride of a power of two (Shift), the walk
// map_view::lookup makes inline; otherwise the value is found with a multiply by the stride.
template <uint32_t KeySize, bool Shift>
void *plain_hash_lookup(const void *view, const void *key) {
    const hash_probe &p = view_access::probe(*static_cast<const map_view *>(view));
    if constexpr (Shift) {
        return inline_hash_lookup<KeySize>(p, key);
    } else {
        const uint32_t idx = chain_find<KeySize>(p, key);
        return idx != none ? p.values + uint64_t{idx} * p.value_stride : nullptr;
    }
}

} // namespace

lookup_fn hash_lookup_for(const map_spec &spec, const map_layout &lay) {
    if (spec.type != map_type::hash) {
        return no_value;
    }
    const bool shift = std::has_single_bit(lay.value_stride);
    return with_key_size(spec.key_size, [shift](auto size) -> lookup_fn {
        constexpr uint32_t key_size = decltype(size)::value;
        return shift ? plain_hash_lookup<key_size, true> : plain_hash_lookup<key_size, false>;
    });
}

namespace {

// An update the entry lock alone could not do, under the header's mutex: an insert, BPF_NOEXIST,
// or a key the lock-free walk did not find.
long update_locked(const map_ref &m, const tables &t, const void *key, const value_source &src,
                   uint64_t flags) {
    map_header &h = m.header();
    robust_lock lock(h.lock);
    if (!lock_writers(lock, m, t)) {
        return -ENOTRECOVERABLE;
    }
    bool lru = is_lru(m.spec.type);
    uint32_t idx = chain_find(m, key);
    if (idx == none && flags == update_exist) {
        // Decided here, not by the lock-free walk, which a concurrent delete and reuse can lead
        // past a present key.
        return -ENOENT;
    }
    if (idx != none) {
        if (flags == update_noexist) {
            return -EEXIST;
        }
        // Inserted meanwhile. In place, as Linux does for arrays: a concurrent reader may see a
        // mix of old and new bytes, but pointers programs hold stay valid. Deletes need the
        // mutex, so the entry stays.
        if (lock_entry(m, idx, nullptr) != entry_lock::held) {
            return -EBUSY;
        }
        write_locked(m, t, idx, src);
        return 0;
    }
    if (!lru && h.count >= m.spec.max_entries) {
        return -E2BIG; // a lock_free_updates map has spare entries beyond max_entries
    }
    idx = take_free(m, t);
    if (idx == none && grace(m, t)) {
        idx = take_free(m, t);
    }
    if (idx == none && lru) {
        idx = evict(m, t);
        if (idx == none) {
            return -EBUSY;
        }
    }
    if (idx == none) {
        return -E2BIG;
    }
    if (hash_insert_hook) {
        hash_insert_hook();
    }
    std::memcpy(m.key(idx), key, m.spec.key_size);
    store_value(m, idx, src, true);
    // Counted before it is linked: a lookup may then try a length in vain, never skip one.
    lpm_count(m, idx, 1);
    uint32_t *head = &t.buckets[bucket_of(m, key)];
    atomic(m.next(idx))
        .store(atomic(*head).load(std::memory_order_relaxed), std::memory_order_relaxed);
    atomic(m.state(idx)).store(entry_used, std::memory_order_release);
    atomic(*head).store(idx, std::memory_order_release);
    set_count(m, h.count + 1);
    if (lru) {
        uint64_t now = atomic(h.lru_clock).fetch_add(1, std::memory_order_relaxed) + 1;
        atomic(t.stamps[idx]).store(now, std::memory_order_relaxed);
    }
    return 0;
}

// A plain hash map's update that the fast path below did not finish: BPF_NOEXIST, a bad flag, a
// key that is not present, a chain longer than the fast walk goes, an entry lock it did not get
// at once, a thread whose id is not cached yet. The whole update again, with waits and the insert
// path. Out of line and reached by a tail call, so that the fast path calls nothing and keeps few
// registers live (two saved, no stack frame).
[[gnu::noinline]] long plain_hash_update_slow(const void *view, const void *key, const void *value,
                                              uint64_t flags) {
    const map_ref m = view_access::ref(*static_cast<const map_view *>(view));
    if (lock_free_updates(m.spec) && own_slot(hazard_slots_of(m)) == nullptr) {
        claim_hazard_slot(m); // for the next updates
    }
    const value_source src{static_cast<const uint8_t *>(value), value_source::spread::this_cpu};
    return hash_update(m, key, src, flags);
}

uint32_t value_size_of(const void *view) {
    return static_cast<const map_view *>(view)->spec().value_size;
}

// The end of plain_hash_update with a test hook set: the hook, then the value and the entry's
// lock released. Out of line, so that the update's fast path calls nothing.
template <uint32_t ValueSize>
[[gnu::noinline]] long write_after_hook(uint8_t *dst, const void *value, uint8_t *state_word,
                                        uint32_t value_size) {
    hash_entry_locked_hook();
    std::memcpy(dst, value, ValueSize != 0 ? ValueSize : value_size);
    atomic(*reinterpret_cast<uint32_t *>(state_word)).store(entry_used, std::memory_order_release);
    return 0;
}

// A value of 4 or 8 bytes written with one store: a concurrent reader or writer sees it whole.
template <uint32_t ValueSize>
[[gnu::always_inline]] inline void store_whole(uint8_t *dst, const void *value) {
    using word = std::conditional_t<ValueSize == 8, uint64_t, uint32_t>;
    atomic(*reinterpret_cast<word *>(dst))
        .store(load<word>(static_cast<const uint8_t *>(value)), std::memory_order_relaxed);
}

// The end of a lock-free update with a test hook set: the hook, the value, the hazard cleared.
template <uint32_t ValueSize>
[[gnu::noinline]] long store_after_hook(uint8_t *dst, const void *value, uint64_t *hazard) {
    hash_entry_locked_hook();
    store_whole<ValueSize>(dst, value);
    atomic(*hazard).store(0, std::memory_order_release);
    return 0;
}

// A plain hash map's update from a program with the key and value sizes constants: the value
// of a present key written with one store under this thread's hazard (values of 4 or 8 bytes),
// or under its entry's lock, taken with one compare-and-swap and released by the store that
// ends the update. Everything else (see plain_hash_update_slow) is a tail call, so this path
// calls nothing.
template <uint32_t KeySize, uint32_t ValueSize>
long plain_hash_update(const void *view, const void *key, const void *value, uint64_t flags) {
    static_assert(KeySize != 0, "specialised for constant key sizes only");
    const hash_probe &p = view_access::probe(*static_cast<const map_view *>(view));
    if ((flags & ~update_exist) != 0) [[unlikely]] {
        return plain_hash_update_slow(view, key, value, flags);
    }
    // The walk of chain_find with fewer live registers: a chain longer than fast_walk_steps
    // (only with keys that collide on purpose) is left to the slow path's bounded walk.
    constexpr uint32_t fast_walk_steps = 64;
    constexpr uint32_t entry_stride = hash_entry_stride(KeySize);
    // One value slot per entry (not per CPU); a constant stride when the size is.
    const uint64_t value_stride = ValueSize != 0 ? (ValueSize + 7) / 8 * 8 : p.value_stride;
    const uint32_t *link = p.buckets + bucket_of(p, key, KeySize);
    uint32_t idx;
    uint8_t *e;
    uint8_t *dst;
    for (uint32_t steps = 1;; steps++) {
        idx = atomic(*const_cast<uint32_t *>(link)).load(std::memory_order_acquire);
        if (idx >= p.nentries) [[unlikely]] {
            return plain_hash_update_slow(view, key, value, flags);
        }
        // The value's line is fetched for writing now, so that its miss overlaps the entry's
        // instead of following it.
        dst = p.values + uint64_t{idx} * value_stride;
        __builtin_prefetch(dst, 1);
        e = p.entries + uint64_t{idx} * entry_stride;
        if ((atomic(*reinterpret_cast<uint32_t *>(e + hash_entry_state))
                 .load(std::memory_order_relaxed) &
             entry_used) != 0 &&
            keys_equal(e + hash_entry_key, key, KeySize)) {
            break;
        }
        if (steps == fast_walk_steps) [[unlikely]] {
            return plain_hash_update_slow(view, key, value, flags);
        }
        link = reinterpret_cast<const uint32_t *>(e);
    }
    auto state = atomic(*reinterpret_cast<uint32_t *>(e + hash_entry_state));
    if constexpr (ValueSize == 4 || ValueSize == 8) {
        // A lock_free_updates map (hash_update_for picks this for no other): the entry published
        // in this thread's hazard slot, checked again, and written with one store.
        hazard_slot *const slot = own_slot(static_cast<hazard_slot *>(p.hazard_slots));
        // A hazard already set: this update interrupted another of this thread (a program run
        // from a signal handler), which must keep its own. The slow path leaves it alone.
        if (slot == nullptr || atomic(slot->hazard).load(std::memory_order_relaxed) != 0)
            [[unlikely]] {
            return plain_hash_update_slow(view, key, value, flags);
        }
        auto hazard = atomic(slot->hazard);
        const uint32_t tid = static_cast<uint32_t>(hazard_self); // the slot's owner
        hazard.store(uint64_t{tid} << 32 | (idx + 1), std::memory_order_relaxed);
        // No fence here: grace()'s membarrier() orders this store before the loads below, for
        // every update it must know about.
        std::atomic_signal_fence(std::memory_order_seq_cst);
        if ((state.load(std::memory_order_acquire) & entry_used) == 0 ||
            !keys_equal(e + hash_entry_key, key, KeySize)) [[unlikely]] {
            hazard.store(0, std::memory_order_release);
            return plain_hash_update_slow(view, key, value, flags);
        }
        if (hash_entry_locked_hook != nullptr) [[unlikely]] {
            return store_after_hook<ValueSize>(dst, value, &slot->hazard);
        }
        store_whole<ValueSize>(dst, value);
        hazard.store(0, std::memory_order_release);
        return 0;
    }
    const uint32_t tid = cached_tid;
    uint32_t seen = entry_used;
    if (tid == 0 ||
        !state.compare_exchange_strong(seen, entry_used | tid, std::memory_order_acquire,
                                       std::memory_order_relaxed)) [[unlikely]] {
        return plain_hash_update_slow(view, key, value, flags);
    }
    // Locked: the entry may have been deleted and reused for another key since the walk.
    if (!keys_equal(e + hash_entry_key, key, KeySize)) [[unlikely]] {
        state.store(entry_used, std::memory_order_release);
        return plain_hash_update_slow(view, key, value, flags);
    }
    if (hash_entry_locked_hook != nullptr) [[unlikely]] {
        return write_after_hook<ValueSize>(dst, value, e + hash_entry_state, value_size_of(view));
    }
    std::memcpy(dst, value, ValueSize != 0 ? ValueSize : value_size_of(view));
    state.store(entry_used, std::memory_order_release);
    return 0;
}

template <uint32_t KeySize>
update_fn plain_hash_update_for(uint32_t value_size) {
    if constexpr (KeySize == 0) {
        // Other key sizes: the general update (the entry lock for a present key as well).
        (void)value_size;
        return plain_hash_update_slow;
    } else {
        switch (value_size) {
        case 4:
            return plain_hash_update<KeySize, 4>;
        case 8:
            return plain_hash_update<KeySize, 8>;
        case 16:
            return plain_hash_update<KeySize, 16>;
        default:
            return plain_hash_update<KeySize, 0>;
        }
    }
}

} // namespace

update_fn hash_update_for(const map_spec &spec) {
    // A value holding a spin lock is written around its lock word (store_value).
    if (spec.type != map_type::hash || spec.spin_lock_off >= 0) {
        return nullptr;
    }
    // Key and value sizes of 4 or 8 bytes pick plain_hash_update's lock-free path: exactly the
    // lock_free_updates maps, which have hazard slots.
    return with_key_size(spec.key_size, [&](auto size) {
        return plain_hash_update_for<decltype(size)::value>(spec.value_size);
    });
}

long hash_update(const map_ref &m, const void *key, const value_source &src, uint64_t flags) {
    if (flags > update_exist) {
        return -EINVAL;
    }
    tables t(m);
    if (flags != update_noexist) {
        long rc = with_key_size(m.spec.key_size, [&](auto size) {
            return update_present<decltype(size)::value>(m, t, key, src);
        });
        if (rc <= 0) {
            return rc;
        }
    }
    return update_locked(m, t, key, src, flags);
}

long hash_remove(const map_ref &m, const void *key) {
    tables t(m);
    map_header &h = m.header();
    robust_lock lock(h.lock);
    if (!lock_writers(lock, m, t)) {
        return -ENOTRECOVERABLE;
    }
    uint32_t *link = nullptr;
    uint32_t idx = chain_find(m, key, &link);
    if (idx == none) {
        return -ENOENT;
    }
    if (lock_entry(m, idx, nullptr) != entry_lock::held) {
        return -EBUSY;
    }
    unlink(m, idx, link);
    release_entry(m, t, idx);
    return 0;
}

namespace {
// The first entry on the chain from idx (a bucket head or a next link) that is in use and whose
// key belongs to bucket b, or none. Other entries are on the chain only while one is being
// removed or when the storage was damaged; skipping them keeps a walk from handing out keys the
// map does not hold, or one key again from another bucket (which would start it over for ever).
uint32_t first_in_bucket(const map_ref &m, uint32_t idx, uint32_t b) {
    for (uint32_t steps = 0; steps < m.lay.nentries && idx < m.lay.nentries; steps++) {
        if (m.in_use(idx) && bucket_of(m, m.key(idx)) == b) {
            return idx;
        }
        idx = atomic(m.next(idx)).load(std::memory_order_acquire);
    }
    return none;
}
} // namespace

std::optional<uint32_t> hash_next(const map_ref &m, const void *key) {
    tables t(m);
    uint32_t b = 0;
    if (key != nullptr) {
        if (uint32_t idx = chain_find(m, key); idx != none) {
            b = bucket_of(m, key);
            uint32_t next =
                first_in_bucket(m, atomic(m.next(idx)).load(std::memory_order_acquire), b);
            if (next != none) {
                return next;
            }
            b++;
        }
    }
    for (; b < m.lay.nbuckets; b++) {
        uint32_t head = first_in_bucket(m, atomic(t.buckets[b]).load(std::memory_order_acquire), b);
        if (head != none) {
            return head;
        }
    }
    return std::nullopt;
}

} // namespace bpftime::maps::detail
