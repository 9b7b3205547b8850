// SPDX-License-Identifier: MIT
// Several processes on one map. Children are real processes (fork) that map the shared memory
// object again, at another address, and attach; they report failures by exit code.
#include "test_util.hpp"

#include "layout.hpp" // detail::hash_insert_hook

#include <array>
#include <set>

namespace bpftime::maps::test {
namespace {

using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

constexpr int processes = 2;
constexpr int threads_per_process = 2;

// Runs fn on n threads; 0 when every call returned 0.
int on_threads(int n, const std::function<int(int)> &fn) {
    std::atomic<int> failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < n; t++) {
        threads.emplace_back([&, t] {
            if (int rc = fn(t); rc != 0) {
                failed = rc;
            }
        });
    }
    for (auto &t : threads) {
        t.join();
    }
    return failed;
}

// Starts `processes` children together, each running fn(process index, its own view).
void run_children(const shm_map &m, const std::function<int(int, const map_view &)> &fn) {
    start_gate gate;
    std::vector<pid_t> children;
    for (int p = 0; p < processes; p++) {
        children.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            return fn(p, mine.second);
        }));
    }
    gate.open();
    for (pid_t pid : children) {
        expect_success(pid);
    }
}

// (a) Increments from every thread of every process on one value land exactly once.
void count_from_everywhere(const shm_map &m, uint32_t key, bool create) {
    constexpr uint64_t increments = 100000;
    run_children(m, [&](int, const map_view &v) {
        return on_threads(threads_per_process, [&](int) {
            uint64_t zero = 0;
            // Whichever thread of whichever process comes first creates the element.
            long rc = create ? v.update(&key, &zero, update_noexist) : 0;
            if (rc != 0 && rc != -EEXIST) {
                return 2;
            }
            for (uint64_t i = 0; i < increments; i++) {
                auto *value = static_cast<uint64_t *>(v.lookup(&key));
                if (value == nullptr) {
                    return 3;
                }
                __atomic_fetch_add(value, 1, __ATOMIC_RELAXED);
            }
            return 0;
        });
    });
    EXPECT_EQ(from_bytes<uint64_t>(must(m->read(bytes(key)))),
              processes * threads_per_process * increments);
}

TEST(MultiProcess, AtomicIncrementsOnAnArrayElement) {
    shm_map m(map_spec{map_type::array, 4, 8, 4, 0});
    count_from_everywhere(m, 2, false);
}

TEST(MultiProcess, AtomicIncrementsOnAHashElement) {
    shm_map m(map_spec{map_type::hash, 4, 8, 16, 0});
    count_from_everywhere(m, 42, true);
    EXPECT_EQ(m->count(), 1u);
}

// (b) Disjoint key ranges inserted (and half deleted again) from every thread of two processes.
TEST(MultiProcess, DisjointInsertsIntoOneHash) {
    constexpr uint32_t per_thread = 4000;
    shm_map m(map_spec{map_type::hash, 4, 8, processes * threads_per_process * per_thread, 0});
    auto key_of = [](int p, int t, uint32_t i) { return (p * 16 + t) * 1000000u + i; };
    run_children(m, [&](int p, const map_view &v) {
        return on_threads(threads_per_process, [&](int t) {
            for (uint32_t i = 0; i < per_thread; i++) {
                uint32_t key = key_of(p, t, i);
                uint64_t value = uint64_t{key} * 3;
                if (v.update(&key, &value, update_noexist) != 0) {
                    return 2;
                }
                auto *got = static_cast<uint64_t *>(v.lookup(&key));
                if (got == nullptr || *got != value) {
                    return 3;
                }
            }
            for (uint32_t i = 1; i < per_thread; i += 2) {
                uint32_t key = key_of(p, t, i);
                if (v.remove(&key) != 0) {
                    return 4;
                }
            }
            return 0;
        });
    });
    uint32_t kept = processes * threads_per_process * per_thread / 2;
    EXPECT_EQ(m->count(), kept);
    for (int p = 0; p < processes; p++) {
        for (int t = 0; t < threads_per_process; t++) {
            for (uint32_t i = 0; i < per_thread; i++) {
                uint32_t key = key_of(p, t, i);
                auto *got = static_cast<uint64_t *>(m->lookup(&key));
                if (i % 2 == 0) {
                    ASSERT_NE(got, nullptr) << key;
                    ASSERT_EQ(*got, uint64_t{key} * 3);
                } else {
                    ASSERT_EQ(got, nullptr) << key;
                }
            }
        }
    }
    std::set<std::vector<uint8_t>> keys;
    std::vector<uint8_t> key;
    for (uint32_t steps = 0; steps <= kept; steps++) {
        auto next = must(m->next_key(key));
        if (!next) {
            break;
        }
        key = *next;
        keys.insert(key);
    }
    EXPECT_EQ(keys.size(), kept);
}

// (c) Two producer processes, one consumer; the ring wraps many times.
struct record_head {
    uint32_t producer;
    uint32_t seq;
};

uint64_t record_size(uint32_t seq) {
    return sizeof(record_head) + seq % 13 * 8 + seq % 7;
}

uint8_t payload_byte(uint32_t producer, uint32_t seq, uint64_t i) {
    return static_cast<uint8_t>(producer * 31 + seq + i);
}

TEST(MultiProcess, RingBufferTwoProducersOneConsumer) {
    constexpr uint32_t per_producer = 20000;
    shm_map m(map_spec{map_type::ringbuf, 0, 0, 16384, 0});
    start_gate gate;
    std::vector<pid_t> producers;
    for (uint32_t p = 0; p < 2; p++) {
        producers.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            const map_view &v = mine.second;
            auto deadline = steady::now() + std::chrono::seconds(10);
            for (uint32_t seq = 0; seq < per_producer; seq++) {
                uint64_t size = record_size(seq);
                void *rec;
                while ((rec = v.ringbuf_reserve(size)) == nullptr) {
                    if (steady::now() > deadline) {
                        return 2;
                    }
                    sched_yield();
                }
                auto *bytes = static_cast<uint8_t *>(rec);
                record_head head{p, seq};
                std::memcpy(bytes, &head, sizeof head);
                for (uint64_t i = sizeof head; i < size; i++) {
                    bytes[i] = payload_byte(p, seq, i);
                }
                v.ringbuf_submit(rec, 0);
            }
            return 0;
        }));
    }
    gate.open();
    uint32_t next_seq[2] = {0, 0};
    uint64_t received = 0, bad = 0;
    auto check = [&](std::span<const uint8_t> r) {
        received++;
        record_head head{};
        if (r.size() < sizeof head) {
            bad++;
            return;
        }
        std::memcpy(&head, r.data(), sizeof head);
        if (head.producer > 1 || head.seq != next_seq[head.producer] ||
            r.size() != record_size(head.seq)) {
            bad++;
            return;
        }
        next_seq[head.producer]++;
        for (uint64_t i = sizeof head; i < r.size(); i++) {
            if (r[i] != payload_byte(head.producer, head.seq, i)) {
                bad++;
                return;
            }
        }
    };
    auto deadline = steady::now() + std::chrono::seconds(15);
    while (received < 2 * per_producer && steady::now() < deadline) {
        m->ringbuf_wait(100);
        auto n = m->ringbuf_consume(check);
        ASSERT_TRUE(n) << n.err().message;
    }
    for (pid_t pid : producers) {
        expect_success(pid);
    }
    EXPECT_EQ(received, 2 * per_producer);
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(next_seq[0], per_producer);
    EXPECT_EQ(next_seq[1], per_producer);
    std::printf("ring buffer: %llu reservations found the ring full\n",
                static_cast<unsigned long long>(m->ringbuf_dropped()));
}

// (d) What a writer killed while holding the lock leaves must still work. The check runs in
// a child so that a lock left held would fail the test by timeout instead of hanging it.
int check_still_works(const map_view &v) {
    uint32_t max = v.spec().max_entries;
    const std::vector<uint8_t> bytes_of_value(v.spec().value_size, 7);
    const void *value = bytes_of_value.data();
    uint32_t probe = 0xfffffff0;
    if (v.update(&probe, value, update_any) != 0 || v.remove(&probe) != 0) {
        return 10;
    }
    uint64_t listed = 0;
    std::vector<uint8_t> key;
    for (; listed <= max; listed++) {
        auto next = v.next_key(key);
        if (!next || !*next) {
            break;
        }
        key = **next;
        if (v.read(key).ok() == false) {
            return 11;
        }
    }
    if (listed != v.count()) {
        return 12;
    }
    // Every entry can be used again: a leaked one would make the map full too early.
    for (uint32_t k = 0x10000000; v.count() < max; k++) {
        if (v.update(&k, value, update_noexist) != 0) {
            return 13;
        }
    }
    uint32_t extra = 0x20000000;
    long want = v.spec().type == map_type::lru_hash ? 0 : -E2BIG; // lru_hash evicts
    return v.update(&extra, value, update_noexist) == want ? 0 : 14;
}

// Keys 0 to n - 1 of a map of 8-byte values, each holding itself.
void fill_with_keys(const shm_map &m, uint32_t n) {
    for (uint32_t k = 0; k < n; k++) {
        uint64_t v = k;
        ASSERT_EQ(m->update(&k, &v, update_any), 0) << k;
    }
}

TEST(MultiProcess, WriterKilledInsideAnInsert) {
    shm_map m(map_spec{map_type::hash, 4, 8, 32, 0});
    fill_with_keys(m, 10);
    pid_t victim = spawn([&] {
        auto mine = m.reopen();
        // Dies holding the lock, with an entry taken from the free stack but not linked.
        detail::hash_insert_hook = [] { raise(SIGKILL); };
        uint32_t key = 100;
        uint64_t v = 1;
        mine.second.update(&key, &v, update_any);
        return 0;
    });
    int status = wait_child(victim);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    uint32_t key = 100;
    EXPECT_EQ(m->lookup(&key), nullptr);
    expect_success(spawn([&] { return check_still_works(m.reopen().second); }));
    EXPECT_EQ(m->count(), 32u);
}

TEST(MultiProcess, WritersKilledInATightLoop) {
    for (auto type : {map_type::hash, map_type::lru_hash}) {
        shm_map m(map_spec{type, 4, 8, 64, 0});
        for (int round = 0; round < 6; round++) {
            pid_t writer = spawn([&] {
                auto mine = m.reopen();
                const map_view &v = mine.second;
                for (uint32_t i = 0;; i++) {
                    uint32_t key = i % 100, gone = (i + 50) % 100;
                    uint64_t value = i;
                    v.update(&key, &value, update_any);
                    v.remove(&gone);
                }
                return 0;
            });
            std::this_thread::sleep_for(milliseconds(2 + round * 3));
            kill(writer, SIGKILL);
            int status = wait_child(writer);
            EXPECT_TRUE(WIFSIGNALED(status)) << status;
        }
        expect_success(spawn([&] { return check_still_works(m.reopen().second); }));
    }
}

// (e) Updates of present keys take only the entry's lock: from every thread of two processes,
// each owning its keys and counting them up one update at a time, while other threads insert and
// delete keys (reusing the entries deletes free), nothing is lost and no update lands in an
// entry that was freed and reused for another key.
TEST(MultiProcess, UpdatesOfPresentKeysLoseNothingBesideInsertsAndDeletes) {
    constexpr uint32_t owned = 32, rounds = 3000, churn_keys = 64;
    constexpr int owners = processes * threads_per_process;
    shm_map m(map_spec{map_type::hash, 4, 8, owners * owned + 2 * churn_keys, 0});
    auto owned_key = [](int p, int t, uint32_t i) { return (p * 16 + t) * 1000u + i; };
    for (int p = 0; p < processes; p++) {
        for (int t = 0; t < threads_per_process; t++) {
            for (uint32_t i = 0; i < owned; i++) {
                uint32_t key = owned_key(p, t, i);
                uint64_t zero = 0;
                ASSERT_EQ(m->update(&key, &zero, update_noexist), 0);
            }
        }
    }
    run_children(m, [&](int p, const map_view &v) {
        std::atomic<bool> counting{true};
        // A churn thread per process: inserts, checks and deletes its own keys again and again.
        std::thread churn([&] {
            uint64_t bad = 0;
            for (uint32_t round = 0; counting; round++) {
                for (uint32_t i = 0; i < churn_keys; i++) {
                    uint32_t key = 0x70000000u + p * 0x1000000u + i;
                    uint64_t value = uint64_t{key} << 8 | (round & 0xff);
                    if (v.update(&key, &value, update_noexist) != 0) {
                        bad++;
                    }
                }
                for (uint32_t i = 0; i < churn_keys; i++) {
                    uint32_t key = 0x70000000u + p * 0x1000000u + i;
                    // A lock-free lookup racing the other process's delete and reuse may miss
                    // the key; what it finds must be this value, never an owner's count.
                    auto *got = static_cast<uint64_t *>(v.lookup(&key));
                    if ((got != nullptr && *got != (uint64_t{key} << 8 | (round & 0xff))) ||
                        v.remove(&key) != 0) {
                        bad++;
                    }
                }
            }
            if (bad != 0) {
                std::fprintf(stderr, "churn in process %d: %llu bad\n", p,
                             static_cast<unsigned long long>(bad));
                counting = false;
                _exit(5);
            }
        });
        int rc = on_threads(threads_per_process, [&](int t) {
            for (uint32_t r = 1; r <= rounds; r++) {
                for (uint32_t i = 0; i < owned; i++) {
                    uint32_t key = owned_key(p, t, i);
                    uint64_t value = r;
                    if (v.update(&key, &value, i % 2 ? update_exist : update_any) != 0) {
                        return 2;
                    }
                }
            }
            return 0;
        });
        counting = false;
        churn.join();
        return rc;
    });
    for (int p = 0; p < processes; p++) {
        for (int t = 0; t < threads_per_process; t++) {
            for (uint32_t i = 0; i < owned; i++) {
                uint32_t key = owned_key(p, t, i);
                EXPECT_EQ(from_bytes<uint64_t>(must(m->read(bytes(key)))), rounds) << key;
            }
        }
    }
    EXPECT_EQ(m->count(), owners * owned);
}

// Writers inside an entry's critical section (the hook runs there), counted in memory every
// process shares: more than one at a time is an overlap.
struct turn_counters {
    std::atomic<uint32_t> inside{0};
    std::atomic<uint32_t> overlaps{0};
    std::atomic<uint32_t> entered{0};
};
turn_counters *turns = nullptr;

void count_turn() {
    if (turns->inside.fetch_add(1) != 0) {
        turns->overlaps.fetch_add(1);
    }
    turns->entered.fetch_add(1);
    for (int i = 0; i < 100; i++) {
        __builtin_ia32_pause();
    }
    turns->inside.fetch_sub(1);
}

// Every thread of two processes writing whole values into one key: never two writers inside
// the entry at once, and the value read afterwards is one writer's, never a mix.
TEST(MultiProcess, WritersOfOneKeyTakeTurns) {
    constexpr uint32_t words = 32, rounds = 5000;
    void *shared = mmap(nullptr, sizeof(turn_counters), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(shared, MAP_FAILED);
    turns = new (shared) turn_counters;
    shm_map m(map_spec{map_type::hash, 4, words * 8, 4, 0});
    uint32_t key = 1;
    std::vector<uint64_t> zero(words, 0);
    ASSERT_EQ(m->update(&key, zero.data(), update_noexist), 0);
    run_children(m, [&](int p, const map_view &v) {
        detail::hash_entry_locked_hook = count_turn;
        return on_threads(threads_per_process, [&](int t) {
            std::vector<uint64_t> value(words);
            for (uint32_t r = 0; r < rounds; r++) {
                std::fill(value.begin(), value.end(),
                          static_cast<uint64_t>(p * 16 + t + 1) << 32 | r);
                if (v.update(&key, value.data(), r % 2 ? update_exist : update_any) != 0) {
                    return 2;
                }
            }
            return 0;
        });
    });
    EXPECT_EQ(turns->entered.load(), processes * threads_per_process * rounds);
    EXPECT_EQ(turns->overlaps.load(), 0u);
    auto value = must(m->read(bytes(key)));
    uint64_t first = from_bytes<uint64_t>(value);
    EXPECT_NE(first, 0u);
    for (uint32_t w = 1; w < words; w++) {
        ASSERT_EQ(from_bytes<uint64_t>(value, w * 8), first) << "word " << w;
    }
    munmap(shared, sizeof(turn_counters));
    turns = nullptr;
}

// (f) A writer killed while it holds an entry's lock: the next writer of that key takes the lock
// over and proceeds; what is lost is the dead writer's own update. Values of 16 bytes: smaller
// ones are written without the lock (see (h)).
using pair_value = std::array<uint64_t, 2>;

TEST(MultiProcess, WriterKilledHoldingAnEntryLock) {
    shm_map m(map_spec{map_type::hash, 4, 16, 16, 0});
    for (uint32_t k = 0; k < 8; k++) {
        pair_value v{k, k};
        ASSERT_EQ(m->update(&k, v.data(), update_any), 0);
    }
    pid_t victim = spawn([&] {
        auto mine = m.reopen();
        detail::hash_entry_locked_hook = [] { raise(SIGKILL); };
        uint32_t key = 5;
        pair_value v{555, 555};
        mine.second.update(&key, v.data(), update_exist);
        return 0;
    });
    int status = wait_child(victim);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    expect_success(spawn([&] {
        auto mine = m.reopen();
        const map_view &v = mine.second;
        uint32_t key = 5;
        pair_value value{50, 50};
        auto start = steady::now();
        if (v.update(&key, value.data(), update_exist) != 0) {
            return 2;
        }
        if (steady::now() - start > std::chrono::milliseconds(500)) {
            return 3; // taken over at once, not after the bound for live holders
        }
        if (v.remove(&key) != 0 || v.update(&key, value.data(), update_noexist) != 0) {
            return 4;
        }
        return check_still_works(v);
    }));
    for (uint32_t k = 0; k < 8; k++) {
        auto *got = static_cast<pair_value *>(m->lookup(&k));
        ASSERT_NE(got, nullptr) << k;
        EXPECT_EQ((*got)[0], k == 5 ? 50u : k) << k;
    }
}

// The writer's hook for a test that stops it inside an entry (once).
void stop_here() {
    detail::hash_entry_locked_hook = nullptr;
    raise(SIGSTOP);
}

// A child that runs write on its own view of m, once it has stopped itself inside an entry (with
// stop_here); -1 when it did not stop.
pid_t stopped_writer(const shm_map &m, const std::function<int(const map_view &)> &write) {
    pid_t pid = spawn([&] { return write(m.reopen().second); });
    int status = 0;
    if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
        ADD_FAILURE() << "the writer did not stop: status " << status;
        kill(pid, SIGKILL);
        return -1;
    }
    return pid;
}

// (g) A writer stopped (SIGSTOP) while it holds an entry's lock: lookups, updates of other keys,
// inserts and deletes of other keys in another process go on at once; writers of that key wait
// at most the bound and get -EBUSY (the controller's write() says why); once the writer resumes,
// its update lands and the key is writable again. Values of 16 bytes, as in (f).
TEST(MultiProcess, StoppedWriterBlocksNobodyForLongerThanTheBound) {
    shm_map m(map_spec{map_type::hash, 4, 16, 16, 0});
    for (uint32_t k = 0; k < 8; k++) {
        pair_value v{k, k};
        ASSERT_EQ(m->update(&k, v.data(), update_any), 0);
    }
    pid_t stopped = stopped_writer(m, [](const map_view &v) {
        detail::hash_entry_locked_hook = stop_here;
        uint32_t key = 5;
        pair_value value{555, 555};
        return v.update(&key, value.data(), update_exist) == 0 ? 0 : 2;
    });
    ASSERT_GT(stopped, 0);
    expect_success(spawn([&] {
        auto mine = m.reopen();
        const map_view &v = mine.second;
        const auto quick = std::chrono::milliseconds(300);
        uint32_t key = 5, other = 6, fresh = 100;
        pair_value value{1, 1};
        auto start = steady::now();
        auto *seen = static_cast<pair_value *>(v.lookup(&key));
        if (seen == nullptr || (*seen)[0] != 5 || v.update(&other, value.data(), update_any) != 0 ||
            v.update(&fresh, value.data(), update_noexist) != 0 || v.remove(&fresh) != 0) {
            return 2;
        }
        if (steady::now() - start > quick) {
            return 3;
        }
        start = steady::now();
        if (v.update(&key, value.data(), update_any) != -EBUSY) {
            return 4;
        }
        auto waited = steady::now() - start;
        if (waited < detail::entry_lock_wait / 2 ||
            waited > detail::entry_lock_wait + std::chrono::milliseconds(1500)) {
            return 5;
        }
        if (v.remove(&key) != -EBUSY) {
            return 6;
        }
        auto err = v.write(bytes(key), bytes(value), update_any);
        if (err.ok() || err.err().code != EBUSY ||
            err.err().message.find("held") == std::string::npos) {
            return 7;
        }
        return 0;
    }));
    kill(stopped, SIGCONT);
    expect_success(stopped);
    uint32_t key = 5;
    EXPECT_EQ((*static_cast<pair_value *>(m->lookup(&key)))[0], 555u);
    pair_value value{9, 9};
    EXPECT_EQ(m->update(&key, value.data(), update_exist), 0);
    EXPECT_EQ(m->remove(&key), 0);
}

// (h) Values of 4 and 8 bytes are written without a lock: the writer names the entry in its
// hazard slot, and a deleted entry waits in limbo until no writer names it (hash.cpp). A thread's
// first update in a map takes the entry lock (and claims its slot); its next ones do not.

detail::map_header &header_of(const shm_map &m) {
    return *reinterpret_cast<detail::map_header *>(m.region().data());
}

// Inserts and deletes fresh keys until the free stack is empty, then inserts one more, which
// frees the deleted entries that no writer names: how many stay in limbo (UINT32_MAX on an error).
uint32_t entries_still_held(const shm_map &m) {
    auto &h = header_of(m);
    uint64_t value = 0;
    for (uint32_t k = 0x40000000; k < 0x40000000 + 2 * m->spec().max_entries + 2048; k++) {
        const bool empty = detail::atomic(h.free_top).load() == 0;
        if (m->update(&k, &value, update_noexist) != 0) {
            return UINT32_MAX;
        }
        const uint32_t held = detail::atomic(h.limbo).load();
        if (m->remove(&k) != 0) {
            return UINT32_MAX;
        }
        if (empty) {
            return held;
        }
    }
    return UINT32_MAX;
}

TEST(MultiProcess, StoppedLockFreeWriterBlocksNobody) {
    shm_map m(map_spec{map_type::hash, 4, 8, 16, 0});
    fill_with_keys(m, 8);
    EXPECT_EQ(entries_still_held(m), 0u);
    pid_t stopped = stopped_writer(m, [](const map_view &v) {
        uint32_t key = 5;
        uint64_t value = 5;
        if (v.update(&key, &value, update_exist) != 0) {
            return 2;
        }
        detail::hash_entry_locked_hook = stop_here;
        value = 555;
        return v.update(&key, &value, update_exist) == 0 ? 0 : 3;
    });
    ASSERT_GT(stopped, 0);
    // Another process updates that key, deletes it and inserts it again at once: the stopped
    // writer holds no lock.
    expect_success(spawn([&] {
        auto mine = m.reopen();
        const map_view &v = mine.second;
        uint32_t key = 5;
        uint64_t value = 50, again = 51;
        auto start = steady::now();
        if (v.update(&key, &value, update_exist) != 0 || v.remove(&key) != 0 ||
            v.update(&key, &again, update_noexist) != 0) {
            return 2;
        }
        return steady::now() - start > std::chrono::milliseconds(300) ? 3 : 0;
    }));
    // The deleted entry the writer is about to write is not used again while it is stopped.
    EXPECT_EQ(entries_still_held(m), 1u);
    for (uint32_t k = 100; m->count() < 16; k++) {
        uint64_t v = k;
        ASSERT_EQ(m->update(&k, &v, update_noexist), 0) << k;
    }
    kill(stopped, SIGCONT);
    expect_success(stopped);
    // Its store landed in the deleted entry, which no key holds.
    std::vector<uint8_t> key;
    for (uint32_t listed = 0; listed < 16; listed++) {
        auto next = must(m->next_key(key));
        ASSERT_TRUE(next);
        key = *next;
        uint32_t k = from_bytes<uint32_t>(key);
        EXPECT_EQ(from_bytes<uint64_t>(must(m->read(key))), k == 5 ? 51u : k) << k;
    }
    for (uint32_t k = 100; k < 108; k++) {
        ASSERT_EQ(m->remove(&k), 0) << k;
    }
    // Once the writer is done, the entry is free again.
    EXPECT_EQ(entries_still_held(m), 0u);
}

TEST(MultiProcess, KilledLockFreeWriterHoldsNoEntry) {
    shm_map m(map_spec{map_type::hash, 4, 8, 16, 0});
    fill_with_keys(m, 8);
    pid_t victim = spawn([&] {
        auto mine = m.reopen();
        const map_view &v = mine.second;
        uint32_t key = 5;
        uint64_t value = 5;
        if (v.update(&key, &value, update_exist) != 0) {
            return 2;
        }
        detail::hash_entry_locked_hook = [] { raise(SIGKILL); };
        value = 555;
        v.update(&key, &value, update_exist);
        return 3;
    });
    int status = wait_child(victim);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    uint32_t key = 5;
    EXPECT_EQ(*static_cast<uint64_t *>(m->lookup(&key)), 5u);
    ASSERT_EQ(m->remove(&key), 0);
    // A dead writer writes no more: its hazard holds nothing back.
    EXPECT_EQ(entries_still_held(m), 0u);
    expect_success(spawn([&] { return check_still_works(m.reopen().second); }));
}

// Another process writes one key without a lock as fast as it can, lingering between naming the
// entry and writing it, while this one deletes that key and inserts and deletes others, whose
// entries come from the deleted ones: no other key ever holds the writer's value.
TEST(MultiProcess, LockFreeWritesNeverLandInAnotherKeysEntry) {
    constexpr uint32_t fixed = 1, others = 3;
    constexpr uint64_t writer_mark = 0xdead000000000000ull;
    shm_map m(map_spec{map_type::hash, 4, 8, others + 1, 0});
    uint64_t zero = 0;
    ASSERT_EQ(m->update(&fixed, &zero, update_noexist), 0);
    void *shared = mmap(nullptr, sizeof(std::atomic<uint64_t>) * 2, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(shared, MAP_FAILED);
    auto *writes = new (shared) std::atomic<uint64_t>(0);
    auto *done = new (writes + 1) std::atomic<uint64_t>(0);
    pid_t writer = spawn([&] {
        auto mine = m.reopen();
        const map_view &v = mine.second;
        detail::hash_entry_locked_hook = [] {
            for (int i = 0; i < 1000; i++) {
                __builtin_ia32_pause();
            }
        };
        const auto give_up = steady::now() + std::chrono::seconds(10);
        for (uint64_t i = 0; done->load() == 0 && steady::now() < give_up; i++) {
            uint64_t value = writer_mark | i;
            long rc = v.update(&fixed, &value, update_exist);
            if (rc == 0) {
                writes->fetch_add(1);
            } else if (rc != -ENOENT) {
                return 2;
            }
        }
        return 0;
    });
    uint64_t wrong = 0, failed = 0, rounds = 0;
    const auto give_up = steady::now() + std::chrono::seconds(5);
    while ((rounds < 20000 || writes->load() < 20000) && steady::now() < give_up) {
        failed += m->remove(&fixed) != 0;
        for (uint32_t k = 100; k < 100 + others; k++) {
            uint64_t value = uint64_t{k} << 32 | rounds;
            failed += m->update(&k, &value, update_noexist) != 0;
        }
        for (uint32_t k = 100; k < 100 + others; k++) {
            auto *got = static_cast<uint64_t *>(m->lookup(&k));
            wrong += got == nullptr || *got != (uint64_t{k} << 32 | rounds);
            failed += m->remove(&k) != 0;
        }
        failed += m->update(&fixed, &zero, update_noexist) != 0;
        rounds++;
    }
    done->store(1);
    expect_success(writer);
    EXPECT_EQ(wrong, 0u);
    EXPECT_EQ(failed, 0u);
    EXPECT_GT(writes->load(), 0u);
    EXPECT_EQ(m->count(), 1u);
    munmap(shared, sizeof(std::atomic<uint64_t>) * 2);
}

} // namespace
} // namespace bpftime::maps::test
