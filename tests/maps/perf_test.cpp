// SPDX-License-Identifier: MIT
// perf_event_array slots and perf rings: records in Linux's format, wrap-around, lost records,
// a busy ring, two producer processes and a waiting consumer.
#include "test_util.hpp"

#include "layout.hpp" // the header's lock, to hold it as a stuck producer would

#include <linux/perf_event.h>

namespace bpftime::maps::test {
namespace {

using steady = std::chrono::steady_clock;

constexpr map_spec array_spec{map_type::perf_event_array, 4, 4, 4, 0};
constexpr map_spec ring_spec{map_type::perf_ring, 0, 0, 4096, 0};

struct consumed {
    std::vector<std::string> samples;
    std::vector<uint64_t> lost;
};

consumed drain(const map_view &v) {
    consumed out;
    auto n = v.perf_consume(
        [&](std::span<const uint8_t> r) { out.samples.emplace_back(r.begin(), r.end()); },
        [&](uint64_t lost) { out.lost.push_back(lost); });
    EXPECT_TRUE(n) << (n ? "" : n.err().message);
    EXPECT_EQ(n ? *n : 0, out.samples.size() + out.lost.size());
    return out;
}

long output(const map_view &v, const std::string &s) {
    return v.perf_output(s.data(), s.size());
}

// What the kernel (and libbpf's callback) gives for raw data of this size: padded so that the
// record is a multiple of 8 bytes.
std::string padded(const std::string &s) {
    size_t raw = (s.size() + 12 + 7) / 8 * 8 - 12;
    return s + std::string(raw - s.size(), '\0');
}

TEST(PerfEventArray, SpecsAndSlots) {
    EXPECT_TRUE(validate_spec(array_spec));
    EXPECT_EQ(std::string(map_type_name(map_type::perf_event_array)), "perf_event_array");
    EXPECT_EQ(parse_map_type("perf_event_array"), map_type::perf_event_array);
    auto bad = validate_spec(map_spec{map_type::perf_event_array, 4, 8, 4, 0});
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.err().message.find("value_size 8"), std::string::npos) << bad.err().message;
    EXPECT_FALSE(validate_spec(map_spec{map_type::perf_event_array, 8, 4, 4, 0}));
    EXPECT_FALSE(validate_spec(map_spec{map_type::perf_event_array, 4, 4, 0, 0}));

    shm_map m(array_spec);
    EXPECT_TRUE(m->value_area().empty()) << "programs cannot read the slots";
    EXPECT_FALSE(m->lookup_plan());
    uint32_t key = 1, id = 77;
    EXPECT_EQ(m->lookup(&key), nullptr);
    EXPECT_EQ(m->update(&key, &id, update_any), -EINVAL) << "programs cannot add perf events";
    EXPECT_EQ(m->perf_ring_id(1), -ENOENT);
    EXPECT_EQ(m->perf_ring_id(4), -E2BIG);
    EXPECT_EQ(m->perf_ring_id(perf_current_cpu + 1), -EINVAL);
    ASSERT_TRUE(
        m->write({reinterpret_cast<uint8_t *>(&key), 4}, {reinterpret_cast<uint8_t *>(&id), 4}));
    EXPECT_EQ(m->perf_ring_id(1), 77);
    auto read = m->read({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_TRUE(read);
    EXPECT_EQ(read->size(), 4u);
    ASSERT_TRUE(m->erase({reinterpret_cast<uint8_t *>(&key), 4}));
    EXPECT_EQ(m->perf_ring_id(1), -ENOENT);
    auto again = m->erase({reinterpret_cast<uint8_t *>(&key), 4});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.err().code, ENOENT);
}

TEST(PerfEventArray, CurrentCpuPicksThisCpusSlot) {
    pin_cpu pin;
    shm_map m(array_spec);
    for (uint32_t slot = 0; slot < 4; slot++) {
        uint32_t id = 100 + slot;
        ASSERT_TRUE(m->write({reinterpret_cast<uint8_t *>(&slot), 4},
                             {reinterpret_cast<uint8_t *>(&id), 4}));
    }
    EXPECT_EQ(m->perf_ring_id(perf_current_cpu), 100 + pin.slot(4));
}

TEST(PerfRing, SpecAndMappedLayout) {
    EXPECT_FALSE(validate_spec(map_spec{map_type::perf_ring, 0, 0, 12288, 0}));
    EXPECT_FALSE(validate_spec(map_spec{map_type::perf_ring, 0, 0, 2048, 0}));
    EXPECT_FALSE(validate_spec(map_spec{map_type::perf_ring, 4, 0, 4096, 0}));
    auto region = mmapable_region(map_spec{map_type::perf_ring, 0, 0, 16384, 0}, 1);
    ASSERT_TRUE(region);
    EXPECT_EQ(region->offset % mmap_page_size, 0u);
    EXPECT_EQ(region->length, mmap_page_size + 16384);
}

TEST(PerfRing, RecordsAreLinuxPerfRecords) {
    shm_map m(ring_spec);
    auto region = mmapable_region(ring_spec, 1);
    ASSERT_TRUE(region);
    // What a consumer that mmaps the perf event fd reads.
    auto *page = reinterpret_cast<perf_event_mmap_page *>(m.region().data() + region->offset);
    const uint8_t *data = m.region().data() + region->offset + mmap_page_size;
    EXPECT_EQ(page->data_offset, mmap_page_size);
    EXPECT_EQ(page->data_size, 4096u);
    ASSERT_EQ(output(m.view(), "abc"), 0);
    EXPECT_EQ(page->data_head, 16u);
    EXPECT_EQ(page->data_tail, 0u);
    perf_event_header h{};
    std::memcpy(&h, data, sizeof h);
    EXPECT_EQ(h.type, PERF_RECORD_SAMPLE);
    EXPECT_EQ(h.size, 16);
    uint32_t raw = 0;
    std::memcpy(&raw, data + 8, 4);
    EXPECT_EQ(raw, 4u);
    EXPECT_EQ(std::memcmp(data + 12, "abc\0", 4), 0);

    auto got = drain(m.view());
    EXPECT_EQ(got.samples, std::vector<std::string>{padded("abc")});
    EXPECT_TRUE(got.lost.empty());
    EXPECT_EQ(page->data_tail, 16u) << "the consumer publishes its position";
    EXPECT_TRUE(drain(m.view()).samples.empty());
}

TEST(PerfRing, RecordsWrapAroundTheEnd) {
    shm_map m(ring_spec);
    uint64_t written = 0;
    for (int i = 0; i < 300; i++) {
        std::string rec(100 + i % 37, static_cast<char>('a' + i % 26));
        ASSERT_EQ(output(m.view(), rec), 0) << i;
        written += (rec.size() + 12 + 7) / 8 * 8;
        if (i % 3 == 2) {
            continue; // several records per read, some of them across the end
        }
        auto got = drain(m.view());
        ASSERT_FALSE(got.samples.empty());
        EXPECT_EQ(got.samples.back(), padded(rec)) << i;
    }
    EXPECT_GT(written, 5 * 4096u) << "the ring went round several times";
    EXPECT_EQ(m->perf_lost(), 0u);
}

TEST(PerfRing, FullRingLosesRecordsAndReportsThemOnceThereIsRoom) {
    shm_map m(ring_spec);
    std::string rec(500, 'x');
    int placed = 0;
    while (output(m.view(), rec) == 0) {
        placed++;
        ASSERT_LT(placed, 100);
    }
    EXPECT_EQ(placed, 4096 / 512);
    EXPECT_EQ(output(m.view(), rec), -ENOSPC);
    EXPECT_EQ(m->perf_lost(), 2u);
    auto first = drain(m.view());
    EXPECT_EQ(first.samples.size(), static_cast<size_t>(placed));
    EXPECT_TRUE(first.lost.empty());
    ASSERT_EQ(output(m.view(), "after"), 0);
    auto second = drain(m.view());
    EXPECT_EQ(second.lost, std::vector<uint64_t>{2});
    EXPECT_EQ(second.samples, std::vector<std::string>{padded("after")});
    ASSERT_EQ(output(m.view(), "next"), 0);
    EXPECT_TRUE(drain(m.view()).lost.empty()) << "each loss is reported once";
}

TEST(PerfRing, TooLargeAndDisabled) {
    shm_map m(map_spec{map_type::perf_ring, 0, 0, 1 << 17, 0});
    std::string big(70000, 'x');
    EXPECT_EQ(output(m.view(), big), -E2BIG);
    m->perf_configure(1, false);
    EXPECT_EQ(output(m.view(), "off"), -EOPNOTSUPP);
    m->perf_configure(1, true);
    EXPECT_EQ(output(m.view(), "on"), 0);
    EXPECT_EQ(drain(m.view()).samples, std::vector<std::string>{padded("on")});
    shm_map array(array_spec);
    EXPECT_EQ(array->perf_output("x", 1), -EINVAL);
    EXPECT_FALSE(array->perf_consume(nullptr, nullptr));
}

TEST(PerfRing, ABusyRingLosesTheRecordWithoutWaiting) {
    shm_map m(ring_spec);
    auto &h = *reinterpret_cast<detail::map_header *>(m.region().data());
    // Held by another process (a producer stopped inside its critical section).
    start_gate held, release;
    pid_t holder = spawn([&] {
        pthread_mutex_lock(&h.lock);
        held.open();
        release.wait();
        pthread_mutex_unlock(&h.lock);
        return 0;
    });
    held.wait();
    auto start = steady::now();
    EXPECT_EQ(output(m.view(), "late"), -EBUSY);
    EXPECT_LT(steady::now() - start, std::chrono::milliseconds(500));
    EXPECT_EQ(m->perf_lost(), 1u);
    release.open();
    expect_success(holder);
    ASSERT_EQ(output(m.view(), "now"), 0);
    auto got = drain(m.view());
    EXPECT_EQ(got.lost, std::vector<uint64_t>{1});
    EXPECT_EQ(got.samples, std::vector<std::string>{padded("now")});
}

TEST(PerfRing, ConsumerWaitsForAProducerInAnotherProcess) {
    shm_map m(ring_spec);
    EXPECT_FALSE(m->perf_wait(20));
    pid_t child = spawn([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        auto mine = m.reopen();
        return output(mine.second, "wake") == 0 ? 0 : 1;
    });
    auto start = steady::now();
    EXPECT_TRUE(m->perf_wait(5000));
    EXPECT_LT(steady::now() - start, std::chrono::milliseconds(4000));
    expect_success(child);
    EXPECT_EQ(drain(m.view()).samples, std::vector<std::string>{padded("wake")});
}

TEST(PerfRing, TwoProducerProcessesOneConsumer) {
    constexpr uint32_t per_producer = 20000;
    shm_map m(map_spec{map_type::perf_ring, 0, 0, 16384, 0});
    start_gate gate;
    std::vector<pid_t> producers;
    for (uint32_t p = 0; p < 2; p++) {
        producers.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            for (uint32_t seq = 0; seq < per_producer; seq++) {
                uint32_t rec[4] = {p, seq, p * 7 + seq, ~seq};
                (void)mine.second.perf_output(rec, sizeof rec - (seq % 3) * 4);
            }
            return 0;
        }));
    }
    gate.open();
    int64_t last[2] = {-1, -1};
    uint64_t received = 0, lost = 0, bad = 0;
    auto sample = [&](std::span<const uint8_t> r) {
        received++;
        uint32_t rec[4] = {};
        if (r.size() < 12 || r.size() > 20) {
            bad++;
            return;
        }
        std::memcpy(rec, r.data(), std::min<size_t>(r.size(), sizeof rec));
        uint32_t p = rec[0], seq = rec[1];
        // 16, 12 or 8 bytes written, padded to 20, 12 and 12.
        if (p > 1 || static_cast<int64_t>(seq) <= last[p] ||
            r.size() != (seq % 3 == 0 ? 20u : 12u) || (seq % 3 != 2 && rec[2] != p * 7 + seq) ||
            (seq % 3 == 0 && rec[3] != ~seq)) {
            bad++;
            return;
        }
        last[p] = seq;
    };
    auto deadline = steady::now() + std::chrono::seconds(20);
    // Every record is received or counted lost (the last losses are reported only with a
    // later record, so the count comes from the ring).
    while (received + m->perf_lost() < 2 * per_producer && steady::now() < deadline) {
        m->perf_wait(50);
        auto n = m->perf_consume(sample, [&](uint64_t l) { lost += l; });
        ASSERT_TRUE(n) << n.err().message;
    }
    for (pid_t pid : producers) {
        expect_success(pid);
    }
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(received + m->perf_lost(), 2 * per_producer);
    EXPECT_LE(lost, m->perf_lost());
    EXPECT_GT(received, 0u);
}

} // namespace
} // namespace bpftime::maps::test
