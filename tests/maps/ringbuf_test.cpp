// SPDX-License-Identifier: MIT
// ringbuf in one process: records, padding at the end, full ring, waiting.
#include "test_util.hpp"

#include "layout.hpp" // the header, to scribble over the positions

#include <random>

#include <sys/syscall.h>

namespace bpftime::maps::test {
namespace {

using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

constexpr map_spec ring_spec{map_type::ringbuf, 0, 0, 4096, 0};

std::vector<std::string> drain(const shm_map &m) {
    std::vector<std::string> out;
    auto n = m->ringbuf_consume(
        [&](std::span<const uint8_t> r) { out.emplace_back(r.begin(), r.end()); });
    EXPECT_TRUE(n);
    EXPECT_EQ(n ? *n : 0, out.size());
    return out;
}

long output(const shm_map &m, const std::string &s, uint64_t flags = 0) {
    return m->ringbuf_output(s.data(), s.size(), flags);
}

TEST(RingBuffer, RecordsComeOutInOrderDiscardedOnesSkipped) {
    shm_map m(ring_spec);
    EXPECT_TRUE(m->value_area().empty());
    EXPECT_EQ(output(m, "first"), 0);
    auto *a = static_cast<char *>(m->ringbuf_reserve(3));
    auto *b = static_cast<char *>(m->ringbuf_reserve(0));
    auto *c = static_cast<char *>(m->ringbuf_reserve(6));
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 8, 0u);
    std::memcpy(a, "abc", 3);
    std::memcpy(c, "second", 6);
    m->ringbuf_submit(c, 0);
    EXPECT_EQ(drain(m), (std::vector<std::string>{"first"})) << "stops at a busy record";
    m->ringbuf_discard(a, 0);
    m->ringbuf_submit(b, 0);
    m->ringbuf_submit(b, 0); // twice: ignored
    EXPECT_EQ(drain(m), (std::vector<std::string>{"", "second"}));
    EXPECT_TRUE(drain(m).empty());
    EXPECT_EQ(m->ringbuf_dropped(), 0u);
}

TEST(RingBuffer, ConsumeStopsAtItsLimitAndKeepsTheRest) {
    shm_map m(ring_spec);
    for (const char *rec : {"a", "b", "c"}) {
        ASSERT_EQ(output(m, rec), 0);
    }
    std::vector<std::string> got;
    auto n = m->ringbuf_consume(
        [&](std::span<const uint8_t> r) { got.emplace_back(r.begin(), r.end()); }, 2);
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 2u);
    EXPECT_EQ(got, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(drain(m), (std::vector<std::string>{"c"}));
}

TEST(RingBuffer, RecordsNeverWrapAndTheRingIsReused) {
    shm_map m(ring_spec);
    // 1000-byte records: four fit, the fifth needs a filler up to the end.
    for (int i = 0; i < 200; i++) {
        std::string rec(1000 + i % 5, static_cast<char>('a' + i % 26));
        ASSERT_EQ(output(m, rec), 0) << i;
        auto got = drain(m);
        ASSERT_EQ(got, std::vector<std::string>{rec}) << i;
    }
}

TEST(RingBuffer, FullRingDropsAndCounts) {
    shm_map m(ring_spec);
    int placed = 0;
    while (m->ringbuf_reserve(100) != nullptr && placed < 1000) {
        placed++;
    }
    EXPECT_EQ(placed, 4096 / 112);
    EXPECT_EQ(m->ringbuf_dropped(), 1u);
    EXPECT_EQ(output(m, std::string(100, 'x')), -EAGAIN);
    EXPECT_EQ(output(m, "x"), 0) << "a small record still fits before the end";
    EXPECT_EQ(m->ringbuf_dropped(), 2u);
    EXPECT_EQ(m->ringbuf_reserve(4096), nullptr) << "larger than the ring";
    EXPECT_EQ(m->ringbuf_reserve(1ull << 40), nullptr);
    EXPECT_EQ(output(m, "x", 4), -EINVAL) << "unknown flag";
}

TEST(RingBuffer, ConsumingMakesRoom) {
    shm_map m(ring_spec);
    void *all = m->ringbuf_reserve(4096 - 8);
    ASSERT_NE(all, nullptr) << "one record may fill the ring";
    EXPECT_EQ(m->ringbuf_reserve(0), nullptr);
    EXPECT_TRUE(drain(m).empty()) << "still busy";
    m->ringbuf_submit(all, 0);
    EXPECT_EQ(drain(m).size(), 1u);
    EXPECT_NE(m->ringbuf_reserve(4096 - 8), nullptr);
}

TEST(RingBuffer, SubmitIgnoresPointersThatAreNotRecords) {
    shm_map m(ring_spec);
    auto *rec = static_cast<uint8_t *>(m->ringbuf_reserve(16));
    ASSERT_NE(rec, nullptr);
    m->ringbuf_submit(nullptr, 0);
    m->ringbuf_submit(rec + 1, 0);
    m->ringbuf_discard(rec + 4096, 0);
    uint64_t outside = 0;
    m->ringbuf_submit(&outside, 0);
    EXPECT_TRUE(drain(m).empty());
    m->ringbuf_submit(rec, 0);
    EXPECT_EQ(drain(m).size(), 1u);
}

TEST(RingBuffer, WaitTimesOutWhenEmpty) {
    shm_map m(ring_spec);
    auto start = steady::now();
    EXPECT_FALSE(m->ringbuf_wait(50));
    auto took = steady::now() - start;
    EXPECT_GE(took, milliseconds(45));
    EXPECT_LT(took, milliseconds(2000));
    EXPECT_FALSE(m->ringbuf_wait(0));
}

TEST(RingBuffer, WaitReturnsAtOnceWhenDataIsThere) {
    shm_map m(ring_spec);
    ASSERT_EQ(output(m, "ready", ringbuf_no_wakeup), 0);
    auto start = steady::now();
    EXPECT_TRUE(m->ringbuf_wait(5000));
    EXPECT_LT(steady::now() - start, milliseconds(1000));
}

TEST(RingBuffer, SubmitWakesAWaiter) {
    shm_map m(ring_spec);
    std::thread producer([&] {
        std::this_thread::sleep_for(milliseconds(50));
        output(m, "wake");
    });
    auto start = steady::now();
    EXPECT_TRUE(m->ringbuf_wait(5000));
    EXPECT_LT(steady::now() - start, milliseconds(2500));
    producer.join();
    EXPECT_EQ(drain(m), std::vector<std::string>{"wake"});
}

TEST(RingBuffer, NoWakeupLeavesTheWaiterToItsTimeout) {
    shm_map m(ring_spec);
    std::thread producer([&] {
        std::this_thread::sleep_for(milliseconds(20));
        output(m, "quiet", ringbuf_no_wakeup);
    });
    auto start = steady::now();
    EXPECT_TRUE(m->ringbuf_wait(300)) << "the data is there when the timeout ends";
    EXPECT_GE(steady::now() - start, milliseconds(250));
    producer.join();
}

TEST(RingBuffer, KeyedCallsOnARingBufferAreRefused) {
    shm_map m(ring_spec);
    uint32_t key = 0;
    EXPECT_EQ(m->lookup(&key), nullptr);
    EXPECT_EQ(m->update(&key, &key, 0), -EINVAL);
    EXPECT_EQ(m->remove(&key), -EINVAL);
    EXPECT_FALSE(m->read({}));
    EXPECT_FALSE(m->write({}, {}));
    EXPECT_FALSE(m->erase({}));
    EXPECT_FALSE(m->next_key({}));
    EXPECT_EQ(m->count(), 0u);
}

// A consumer as libbpf's: it maps the region (consumer page, producer page, data), reads the
// records at the positions it finds there and publishes its consumer position there.
TEST(RingBuffer, LibbpfConsumerLayout) {
    shm_map m(map_spec{map_type::ringbuf, 0, 0, 8192, 0});
    auto region = mmapable_region(m->spec(), 1);
    ASSERT_TRUE(region);
    EXPECT_EQ(region->offset % mmap_page_size, 0u);
    EXPECT_EQ(region->length, 2 * mmap_page_size + 8192);
    EXPECT_EQ(region->offset + region->length, m.region().size());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.region().data()) % mmap_page_size, 0u);
    uint8_t *base = m.region().data() + region->offset;
    auto *consumer_pos = reinterpret_cast<uint64_t *>(base);
    auto *producer_pos = reinterpret_cast<uint64_t *>(base + mmap_page_size);
    uint8_t *data = base + 2 * mmap_page_size;
    std::vector<std::string> seen;
    for (int round = 0; round < 100; round++) {
        std::string text = "record " + std::to_string(round);
        ASSERT_EQ(output(m, text), 0) << round; // fails when the consumer never frees space
        uint64_t cons = __atomic_load_n(consumer_pos, __ATOMIC_ACQUIRE);
        uint64_t prod = __atomic_load_n(producer_pos, __ATOMIC_ACQUIRE);
        while (cons < prod) {
            uint32_t len = __atomic_load_n(reinterpret_cast<uint32_t *>(data + (cons & 8191)),
                                           __ATOMIC_ACQUIRE);
            ASSERT_EQ(len & (1u << 31), 0u);
            if (!(len & (1u << 30))) {
                seen.emplace_back(reinterpret_cast<char *>(data + (cons & 8191) + 8), len);
            }
            cons += ((len & ~(3u << 30)) + 8 + 7) / 8 * 8;
            __atomic_store_n(consumer_pos, cons, __ATOMIC_RELEASE);
        }
    }
    ASSERT_EQ(seen.size(), 100u);
    EXPECT_EQ(seen[0], "record 0");
    EXPECT_EQ(seen[99], "record 99");
    // Nothing left for the map's own consumer: the positions are the same ones.
    EXPECT_TRUE(drain(m).empty());
}

TEST(RingBuffer, GarbageNeverLeadsOutside) {
    shm_map m(map_spec{map_type::ringbuf, 0, 0, 8192, 0});
    std::mt19937_64 rng(7);
    // The positions' pages come first in the mmapable region, the data last.
    auto region = mmapable_region(m->spec(), 1);
    ASSERT_TRUE(region);
    auto *consumer_pos = reinterpret_cast<uint64_t *>(m.region().data() + region->offset);
    auto *producer_pos = consumer_pos + mmap_page_size / 8;
    uint8_t *data = m.region().data() + m.region().size() - 8192;
    for (int round = 0; round < 300; round++) {
        for (int i = 0; i < 64; i++) {
            data[rng() % 8192] = static_cast<uint8_t>(rng());
        }
        if (round % 3 == 0) {
            uint64_t cons = rng() % 20000;
            *consumer_pos = round % 2 ? cons : cons & ~7ull;
            *producer_pos = cons + (round % 6 == 0 ? rng() : rng() % 9000);
        }
        uint64_t bytes_seen = 0;
        (void)m->ringbuf_consume([&](std::span<const uint8_t> r) { bytes_seen += r.size(); });
        EXPECT_LE(bytes_seen, 2 * 8192u);
        if (void *rec = m->ringbuf_reserve(rng() % 3000)) {
            m->ringbuf_submit(rec, ringbuf_no_wakeup);
        }
        (void)m->ringbuf_wait(0);
    }
}

// Waits (at most 5 s) until pid is a zombie, unreaped.
bool became_zombie(pid_t pid) {
    for (int i = 0; i < 500; i++) {
        char path[40], state = 0;
        std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
        if (FILE *f = std::fopen(path, "r")) {
            // "pid (comm) S ...": the state follows the last ')'.
            char buf[512] = {};
            size_t n = std::fread(buf, 1, sizeof buf - 1, f);
            std::fclose(f);
            const char *close = std::strrchr(buf, ')');
            if (n > 0 && close != nullptr && close[1] == ' ') {
                state = close[2];
            }
        }
        if (state == 'Z') {
            return true;
        }
        usleep(10000);
    }
    return false;
}

// A producer process that reserves a record and is killed before it submits it: returns the
// dead producer's pid once it is gone (its record stays busy in the ring). With reap false the
// process is left a zombie (its parent, this test, has not waited for it); the caller reaps it.
pid_t producer_killed_after_reserve(const shm_map &m, uint64_t size, bool reap = true) {
    int ready[2];
    if (pipe(ready) != 0) {
        return -1;
    }
    pid_t pid = spawn([&] {
        auto mine = m.reopen();
        void *rec = mine.second.ringbuf_reserve(size);
        char c = rec != nullptr ? 'r' : 'x';
        if (rec != nullptr) {
            std::memset(rec, 'z', size);
        }
        (void)!write(ready[1], &c, 1);
        pause(); // never submits
        return 0;
    });
    char c = 0;
    bool reserved = read(ready[0], &c, 1) == 1 && c == 'r';
    close(ready[0]);
    close(ready[1]);
    kill(pid, SIGKILL);
    if (!reap) {
        return reserved && became_zombie(pid) ? pid : -1;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return reserved && WIFSIGNALED(status) ? pid : -1;
}

// Another live process submits records after the dead one's.
void later_records(const shm_map &m, const std::vector<std::string> &records) {
    expect_success(spawn([&] {
        auto mine = m.reopen();
        for (const std::string &r : records) {
            if (mine.second.ringbuf_output(r.data(), r.size(), 0) != 0) {
                return 1;
            }
        }
        return 0;
    }));
}

TEST(RingBuffer, ADeadProducersRecordIsSkippedAndCountedLost) {
    shm_map m(ring_spec);
    ASSERT_EQ(output(m, "before"), 0);
    ASSERT_GT(producer_killed_after_reserve(m, 16), 0);
    later_records(m, {"after 1", "after 2"});
    // The consumer is not held at the dead producer's record.
    EXPECT_TRUE(m->ringbuf_wait(0));
    EXPECT_EQ(drain(m), (std::vector<std::string>{"before", "after 1", "after 2"}));
    EXPECT_EQ(m->ringbuf_lost(), 1u);
    EXPECT_EQ(m->ringbuf_dropped(), 0u);
    // The ring goes on.
    ASSERT_EQ(output(m, "next"), 0);
    EXPECT_EQ(drain(m), (std::vector<std::string>{"next"}));
    EXPECT_EQ(m->ringbuf_lost(), 1u);
}

// A killed producer its parent has not reaped yet (a zombie) submits nothing more either: the
// consumer does not wait for the parent to reap it.
TEST(RingBuffer, AZombieProducersRecordIsSkippedAndCountedLost) {
    shm_map m(ring_spec);
    const pid_t zombie = producer_killed_after_reserve(m, 16, false);
    ASSERT_GT(zombie, 0);
    later_records(m, {"after"});
    EXPECT_TRUE(m->ringbuf_wait(0));
    EXPECT_EQ(drain(m), (std::vector<std::string>{"after"}));
    EXPECT_EQ(m->ringbuf_lost(), 1u);
    int status = 0;
    EXPECT_EQ(waitpid(zombie, &status, 0), zombie);
}

// A producer whose first thread exited while another of its threads holds a reservation is a
// zombie to /proc but alive: its record is waited for, then read.
TEST(RingBuffer, AProducerWhoseFirstThreadExitedIsAlive) {
    shm_map m(ring_spec);
    int ready[2], go[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    const pid_t pid = spawn([&] {
        auto mine = m.reopen();
        std::thread holder([&] {
            void *rec = mine.second.ringbuf_reserve(8);
            char c = rec != nullptr ? 'r' : 'x';
            (void)!write(ready[1], &c, 1);
            (void)!read(go[0], &c, 1); // submits when told to
            if (rec != nullptr) {
                std::memcpy(rec, "threaded", 8);
                mine.second.ringbuf_submit(rec, 0);
            }
            _exit(0);
        });
        holder.detach();
        // The first thread goes (the exit system call ends only the calling thread, with no
        // unwinding through the test's frames); the holder runs on.
        syscall(SYS_exit, 0);
        return 0;
    });
    char c = 0;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    ASSERT_EQ(c, 'r');
    ASSERT_TRUE(became_zombie(pid)) << "the first thread's exit shows the process as a zombie";
    later_records(m, {"later"});
    EXPECT_TRUE(drain(m).empty()) << "the live thread's record holds the consumer";
    EXPECT_EQ(m->ringbuf_lost(), 0u);
    ASSERT_EQ(write(go[1], "g", 1), 1);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_EQ(drain(m), (std::vector<std::string>{"threaded", "later"}));
    EXPECT_EQ(m->ringbuf_lost(), 0u);
    for (int fd : {ready[0], ready[1], go[0], go[1]}) {
        close(fd);
    }
}

TEST(RingBuffer, ALiveProducersReservationIsWaitedFor) {
    shm_map m(ring_spec);
    void *mine = m->ringbuf_reserve(8);
    ASSERT_NE(mine, nullptr);
    later_records(m, {"later"});
    // This process is alive: its record holds the consumer until it submits.
    EXPECT_TRUE(drain(m).empty());
    EXPECT_EQ(m->ringbuf_lost(), 0u);
    std::memcpy(mine, "reserved", 8);
    m->ringbuf_submit(mine, 0);
    EXPECT_EQ(drain(m), (std::vector<std::string>{"reserved", "later"}));
}

// A consumer reading the mapped ring as libbpf's does (it skips discarded records, stops at a
// busy one) is served by whoever waits for records for it (the interposer's epoll): the wait
// turns the dead producer's record into a discarded one.
TEST(RingBuffer, ALibbpfStyleConsumerGetsPastADeadProducer) {
    shm_map m(map_spec{map_type::ringbuf, 0, 0, 8192, 0});
    auto region = mmapable_region(m->spec(), 1);
    ASSERT_TRUE(region);
    uint8_t *base = m.region().data() + region->offset;
    auto *consumer_pos = reinterpret_cast<uint64_t *>(base);
    auto *producer_pos = reinterpret_cast<uint64_t *>(base + mmap_page_size);
    uint8_t *data = base + 2 * mmap_page_size;
    pid_t dead = producer_killed_after_reserve(m, 24);
    ASSERT_GT(dead, 0);
    later_records(m, {"one", "two"});
    auto libbpf_consume = [&] {
        std::vector<std::string> seen;
        uint64_t cons = __atomic_load_n(consumer_pos, __ATOMIC_ACQUIRE);
        uint64_t prod = __atomic_load_n(producer_pos, __ATOMIC_ACQUIRE);
        while (cons < prod) {
            uint32_t len = __atomic_load_n(reinterpret_cast<uint32_t *>(data + (cons & 8191)),
                                           __ATOMIC_ACQUIRE);
            if (len & (1u << 31)) {
                break;
            }
            if (!(len & (1u << 30))) {
                seen.emplace_back(reinterpret_cast<char *>(data + (cons & 8191) + 8), len);
            }
            cons += ((len & ~(3u << 30)) + 8 + 7) / 8 * 8;
            __atomic_store_n(consumer_pos, cons, __ATOMIC_RELEASE);
        }
        return seen;
    };
    // The record header names its producer where Linux keeps the page offset.
    uint32_t owner = 0;
    std::memcpy(&owner, data + 4, sizeof owner);
    EXPECT_EQ(owner, static_cast<uint32_t>(dead));
    EXPECT_TRUE(libbpf_consume().empty()) << "held at the busy record";
    EXPECT_TRUE(m->ringbuf_wait(0));
    EXPECT_EQ(libbpf_consume(), (std::vector<std::string>{"one", "two"}));
    EXPECT_EQ(m->ringbuf_lost(), 1u);
}

// With nobody consuming through this library, a full ring behind a dead producer's record is
// freed by the next producer that finds no room.
TEST(RingBuffer, AFullRingBehindADeadProducerIsFreedByTheNextProducer) {
    shm_map m(ring_spec);
    ASSERT_GT(producer_killed_after_reserve(m, 1000), 0);
    int placed = 0;
    while (output(m, std::string(500, 'x')) == 0) {
        placed++;
    }
    EXPECT_GT(placed, 0);
    EXPECT_EQ(m->ringbuf_lost(), 1u) << "the refused reservation skipped the dead record";
    auto records = drain(m);
    EXPECT_EQ(records.size(), static_cast<size_t>(placed));
    EXPECT_EQ(output(m, "fits again"), 0);
}

} // namespace
} // namespace bpftime::maps::test
