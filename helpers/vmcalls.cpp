// SPDX-License-Identifier: MIT
// Helpers that use the VM's control-flow mechanisms: bpf_loop and bpf_for_each_map_elem call a
// subprogram of the program back (run_context::call), bpf_tail_call replaces the program by
// another of a program array (run_context::tail_call); and spin locks in map values, real locks
// in shared memory that programs in any process take.
#include "internal.hpp"

#include <bpftime/helpers/helpers.hpp>
#include <bpftime/vm/vm.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <mutex>
#include <sched.h>
#include <string>
#include <unistd.h>

namespace bpftime::helpers {
namespace {

using vm::run_context;

uint64_t u64(long v) {
    return static_cast<uint64_t>(v);
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

// --- callbacks ---

// Linux's BPF_MAX_LOOPS.
constexpr uint32_t max_loops = 1u << 23;

// long bpf_loop(u32 nr_loops, void *callback_fn, void *callback_ctx, u64 flags): calls
// callback_fn(index, callback_ctx) until it returns non-zero (1) or nr_loops calls were made;
// returns the number of calls.
uint64_t loop(uint64_t nr_loops, uint64_t callback, uint64_t callback_ctx, uint64_t flags, uint64_t,
              run_context *ctx) {
    const auto n = static_cast<uint32_t>(nr_loops);
    if (flags != 0) {
        return u64(-EINVAL);
    }
    if (n > max_loops) {
        return u64(-E2BIG);
    }
    uint64_t i = 0;
    while (i < n) {
        auto r = ctx->call(callback, i, callback_ctx);
        if (!r) {
            return 0; // the run stops
        }
        i++;
        if (*r != 0) {
            break;
        }
    }
    return i;
}

// Keys handed to for_each_map_elem's callbacks: a copy of the element's key in memory that
// stays valid for the run (the program may read it only), one per nesting of callbacks.
struct key_buffers {
    std::array<std::array<uint8_t, 512>, vm::max_call_depth> keys{};
    size_t depth = 0;
};
// On the heap: the library may be loaded with dlopen (the nginx module) while it has
// initial-exec thread-locals, so its whole thread-local block must stay small enough for the
// static TLS space glibc keeps for such libraries.
thread_local std::unique_ptr<key_buffers> key_bufs_held;
key_buffers &key_bufs_of_thread() {
    if (!key_bufs_held) {
        key_bufs_held = std::make_unique<key_buffers>();
    }
    return *key_bufs_held;
}

// long bpf_for_each_map_elem(struct bpf_map *map, void *callback_fn, void *callback_ctx,
// u64 flags): callback_fn(map, key, value, callback_ctx) for each element (this CPU's value of
// a per-CPU map) until it returns non-zero (1); returns the number of elements visited.
uint64_t for_each_map_elem(uint64_t map, uint64_t callback, uint64_t callback_ctx, uint64_t flags,
                           uint64_t, run_context *ctx) {
    maps::map_view m;
    if (!decode_map_handle(map, ctx, "for_each_map_elem", m)) {
        return 0;
    }
    switch (m.spec().type) {
    case maps::map_type::hash:
    case maps::map_type::array:
    case maps::map_type::percpu_hash:
    case maps::map_type::percpu_array:
    case maps::map_type::lru_hash:
        break;
    default:
        ctx->fail(std::string("for_each_map_elem: ") + maps::map_type_name(m.spec().type) +
                  " maps cannot be iterated (arrays, per-CPU arrays, hashes, LRU hashes and "
                  "per-CPU hashes can)");
        return 0;
    }
    if (flags != 0) {
        return u64(-EINVAL);
    }
    key_buffers &key_bufs = key_bufs_of_thread();
    if (key_bufs.depth >= key_bufs.keys.size()) {
        ctx->fail("for_each_map_elem: callbacks nest too deep");
        return 0;
    }
    uint8_t *key = key_bufs.keys[key_bufs.depth].data();
    const uint32_t key_size = m.spec().key_size;
    const uint32_t value_size = m.spec().value_size;
    ctx->add_region(key, key_size, false);
    key_bufs.depth++;
    struct leave {
        key_buffers &bufs;
        ~leave() { bufs.depth--; }
    } on_return{key_bufs};
    // Elements in key order as next_key gives them; at most max_entries of them, so a callback
    // that deletes and adds elements cannot keep the walk going.
    std::vector<uint8_t> at;
    uint64_t visited = 0;
    while (visited < m.spec().max_entries) {
        auto next = m.next_key(at);
        if (!next || !*next) {
            break;
        }
        at = std::move(**next);
        void *value = m.lookup(at.data());
        if (value == nullptr) {
            continue; // deleted meanwhile
        }
        // Values lie in the map's value area, which the program's regions already cover.
        const auto v = reinterpret_cast<uint64_t>(value);
        if (!ctx->check_access(v, value_size, false)) {
            ctx->add_region(value, value_size, false);
        }
        ctx->hint_region(value, value_size);
        std::memcpy(key, at.data(), key_size);
        visited++;
        auto r = ctx->call(callback, map, reinterpret_cast<uint64_t>(key), v, callback_ctx);
        if (!r) {
            return 0;
        }
        if (*r != 0) {
            break;
        }
    }
    return visited;
}

// --- spin locks ---

// How long a program waits for a lock another thread holds before its run fails: holders
// leave within a handful of instructions, so this much means the holder died or never
// unlocks (a program that ended holding it is released at the end of its run).
constexpr auto lock_wait = std::chrono::seconds(1);

// The lock this thread's running program holds (Linux's verifier allows one at a time).
thread_local uint32_t *held_lock = nullptr;

bool thread_exists(uint32_t tid) {
    return tid != 0 && (::kill(static_cast<pid_t>(tid), 0) == 0 || errno != ESRCH);
}

// long bpf_spin_lock(struct bpf_spin_lock *lock): the lock word (4 bytes in a map value)
// holds the holder's thread id, 0 when free.
uint64_t spin_lock(uint64_t lock, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    if (lock % 4 != 0 || !ctx->check_access(lock, 4, true)) {
        ctx->fail("spin_lock: the lock at " + hex(lock) +
                  " is not a 4-byte aligned lock in writable program memory (a struct "
                  "bpf_spin_lock in a map value)");
        return 0;
    }
    if (held_lock != nullptr) {
        ctx->fail("spin_lock: the program already holds the lock at " +
                  hex(reinterpret_cast<uint64_t>(held_lock)) +
                  " (Linux's verifier refuses taking a second)");
        return 0;
    }
    auto *word = reinterpret_cast<uint32_t *>(lock);
    const auto me = static_cast<uint32_t>(::gettid());
    auto try_take = [&](uint32_t from) {
        return __atomic_compare_exchange_n(word, &from, me, false, __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED);
    };
    for (int i = 0; i < 1000; i++) {
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 && try_take(0)) {
            held_lock = word;
            return 0;
        }
        __builtin_ia32_pause();
    }
    const auto deadline = std::chrono::steady_clock::now() + lock_wait;
    for (uint64_t round = 1;; round++) {
        uint32_t holder = __atomic_load_n(word, __ATOMIC_RELAXED);
        if (holder == 0 ? try_take(0)
                        : (round % 256 == 0 && !thread_exists(holder) && try_take(holder))) {
            held_lock = word; // free, or taken over from a holder that died
            return 0;
        }
        if (round % 256 == 0 && std::chrono::steady_clock::now() > deadline) {
            ctx->fail("spin_lock: the lock at " + hex(lock) + " stayed held by thread " +
                      std::to_string(holder) + " for " +
                      std::to_string(std::chrono::seconds(lock_wait).count()) +
                      " s (a holder that never unlocks)");
            return 0;
        }
        ::sched_yield();
    }
}

uint64_t spin_unlock(uint64_t lock, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    if (held_lock == nullptr || reinterpret_cast<uint64_t>(held_lock) != lock) {
        ctx->fail("spin_unlock: the program does not hold the lock at " + hex(lock));
        return 0;
    }
    __atomic_store_n(held_lock, 0, __ATOMIC_RELEASE);
    held_lock = nullptr;
    return 0;
}

// --- tail calls ---

std::mutex program_resolver_mu;
std::shared_ptr<const program_resolver> program_resolver_fn;

// long bpf_tail_call(void *ctx, struct bpf_map *prog_array_map, u32 index): on success the
// program does not go on; on failure the caller goes on with a negative errno: -E2BIG index past
// the array, -ENOENT empty slot, -EINVAL a program this host cannot run, -ELOOP more than
// max_tail_calls in the run, -EOPNOTSUPP called from a subprogram or a callback.
uint64_t tail_call(uint64_t, uint64_t map, uint64_t index, uint64_t, uint64_t, run_context *ctx) {
    maps::map_view m;
    if (!decode_map_handle(map, ctx, "tail_call", m)) {
        return 0;
    }
    if (m.spec().type != maps::map_type::prog_array) {
        ctx->fail(std::string("tail_call: the map is a ") + maps::map_type_name(m.spec().type) +
                  " map, not a prog_array");
        return 0;
    }
    if (ctx->tail_calls() >= vm::max_tail_calls) {
        return u64(-ELOOP);
    }
    long id = m.prog_array_id(static_cast<uint32_t>(index));
    if (id < 0) {
        return u64(id);
    }
    std::shared_ptr<const program_resolver> resolve;
    {
        std::lock_guard lock(program_resolver_mu);
        resolve = program_resolver_fn;
    }
    if (!resolve || ctx->running_program() == nullptr) {
        return u64(-EINVAL);
    }
    auto target = (*resolve)(static_cast<uint32_t>(id), &ctx->running_program()->helpers());
    if (!target || target->engine == nullptr) {
        return u64(-EINVAL);
    }
    return ctx->tail_call(*target->engine, std::move(target->keep)) ? 0 : u64(-EOPNOTSUPP);
}

} // namespace

const std::vector<helper_entry> &vmcall_helpers() {
    static const std::vector<helper_entry> rows{
        {12, "tail_call", tail_call},
        {93, "spin_lock", spin_lock},
        {94, "spin_unlock", spin_unlock},
        {164, "for_each_map_elem", for_each_map_elem},
        {181, "loop", loop},
    };
    return rows;
}

bool release_held_lock(std::string &problem) {
    if (held_lock == nullptr) {
        return true;
    }
    problem = "the program ended holding the spin lock at " +
              hex(reinterpret_cast<uint64_t>(held_lock)) +
              " (released; Linux's verifier refuses such a program)";
    __atomic_store_n(held_lock, 0, __ATOMIC_RELEASE);
    held_lock = nullptr;
    return false;
}

void set_program_resolver(program_resolver fn) {
    auto next = fn ? std::make_shared<const program_resolver>(std::move(fn)) : nullptr;
    std::lock_guard lock(program_resolver_mu);
    program_resolver_fn = std::move(next);
}

} // namespace bpftime::helpers
