// SPDX-License-Identifier: MIT
// Queue and stack maps: order, full and empty, flags, sizes, the controller's view, several
// processes pushing and popping at once, and damaged state.
#include "test_util.hpp"

#include "layout.hpp"

#include <algorithm>
#include <random>
#include <set>

namespace bpftime::maps::test {
namespace {

map_spec queue_spec(uint32_t n, map_type type = map_type::queue) {
    return map_spec{type, 0, 8, n, 0};
}

long push(const shm_map &m, uint64_t v, uint64_t flags = update_any) {
    return m->push_elem(&v, flags);
}

// The popped value, or -errno as a negative number.
int64_t pop(const shm_map &m) {
    uint64_t v = 0;
    long rc = m->pop_elem(&v);
    return rc < 0 ? rc : static_cast<int64_t>(v);
}

int64_t peek(const shm_map &m) {
    uint64_t v = 0;
    long rc = m->peek_elem(&v);
    return rc < 0 ? rc : static_cast<int64_t>(v);
}

TEST(QueueMap, FirstInFirstOut) {
    shm_map m(queue_spec(4));
    for (uint64_t v : {10, 20, 30}) {
        ASSERT_EQ(push(m, v), 0);
    }
    EXPECT_EQ(m->count(), 3u);
    EXPECT_EQ(peek(m), 10);
    EXPECT_EQ(pop(m), 10);
    EXPECT_EQ(pop(m), 20);
    ASSERT_EQ(push(m, 40), 0);
    EXPECT_EQ(pop(m), 30);
    EXPECT_EQ(pop(m), 40);
    EXPECT_EQ(pop(m), -ENOENT);
    EXPECT_EQ(peek(m), -ENOENT);
    EXPECT_EQ(m->count(), 0u);
}

TEST(StackMap, LastInFirstOut) {
    shm_map m(queue_spec(4, map_type::stack));
    for (uint64_t v : {10, 20, 30}) {
        ASSERT_EQ(push(m, v), 0);
    }
    EXPECT_EQ(peek(m), 30);
    EXPECT_EQ(pop(m), 30);
    ASSERT_EQ(push(m, 40), 0);
    EXPECT_EQ(pop(m), 40);
    EXPECT_EQ(pop(m), 20);
    EXPECT_EQ(pop(m), 10);
    EXPECT_EQ(pop(m), -ENOENT);
}

TEST(QueueMap, FullRefusesUnlessBpfExistDropsTheOldest) {
    for (auto type : {map_type::queue, map_type::stack}) {
        shm_map m(queue_spec(3, type));
        for (uint64_t v : {1, 2, 3}) {
            ASSERT_EQ(push(m, v), 0);
        }
        EXPECT_EQ(push(m, 4), -E2BIG) << map_type_name(type);
        // As Linux: the oldest value (1) goes, for a stack too.
        EXPECT_EQ(push(m, 4, update_exist), 0);
        std::vector<int64_t> got;
        for (int i = 0; i < 3; i++) {
            got.push_back(pop(m));
        }
        if (type == map_type::queue) {
            EXPECT_EQ(got, (std::vector<int64_t>{2, 3, 4}));
        } else {
            EXPECT_EQ(got, (std::vector<int64_t>{4, 3, 2}));
        }
    }
}

TEST(QueueMap, BadFlagsAreRefused) {
    shm_map m(queue_spec(3));
    EXPECT_EQ(push(m, 1, update_noexist), -EINVAL);
    EXPECT_EQ(push(m, 1, 4), -EINVAL);
    auto r = m->push(bytes(uint64_t{1}), update_noexist);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(r.err().message.find("BPF_ANY (0) or BPF_EXIST (2)"), std::string::npos)
        << r.err().message;
    EXPECT_EQ(m->count(), 0u);
}

TEST(QueueMap, BadSpecsAreRefusedWithTheirReason) {
    struct bad {
        map_spec spec;
        const char *message;
    };
    for (const bad &b : {
             bad{map_spec{map_type::queue, 4, 8, 4, 0}, "key_size 4: queue maps have no keys"},
             bad{map_spec{map_type::stack, 0, 0, 4, 0}, "value_size 0: stack maps take 1 to"},
             bad{map_spec{map_type::queue, 0, 8, 0, 0}, "max_entries 0"},
             bad{map_spec{map_type::queue, 0, 8, 4, 1}, "flags 0x1: queue maps accept no flags"},
             bad{map_spec{map_type::queue, 0, 8, 4, 0, 5}, "map_extra 0x5: queue maps take no"},
         }) {
        auto r = validate_spec(b.spec);
        ASSERT_FALSE(r) << b.message;
        EXPECT_EQ(r.err().code, EINVAL);
        EXPECT_NE(r.err().message.find(b.message), std::string::npos) << r.err().message;
    }
}

TEST(QueueMap, ControllerPushPopPeekAndKeysRefused) {
    shm_map m(queue_spec(2));
    must(m->push(bytes(uint64_t{7})));
    must(m->push(bytes(uint64_t{8})));
    auto full = m->push(bytes(uint64_t{9}));
    ASSERT_FALSE(full);
    EXPECT_EQ(full.err().code, E2BIG);
    EXPECT_NE(full.err().message.find("the queue is full (2 values"), std::string::npos)
        << full.err().message;
    auto short_value = m->push(std::vector<uint8_t>(4));
    ASSERT_FALSE(short_value);
    EXPECT_NE(short_value.err().message.find("the value has 4 bytes, the map takes 8"),
              std::string::npos);
    auto all = must(m->values());
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(from_bytes<uint64_t>(all[0]), 7u);
    EXPECT_EQ(from_bytes<uint64_t>(m->peek().value()), 7u);
    EXPECT_EQ(from_bytes<uint64_t>(m->pop().value()), 7u);
    EXPECT_EQ(from_bytes<uint64_t>(m->pop().value()), 8u);
    auto empty = m->pop();
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.err().code, ENOENT);
    EXPECT_EQ(empty.err().message, "the queue is empty");
    // Keyed operations name what to use instead.
    auto read = m->read({});
    ASSERT_FALSE(read);
    EXPECT_NE(read.err().message.find("queue maps have no keys: push, pop and peek"),
              std::string::npos)
        << read.err().message;
    EXPECT_FALSE(m->next_key({}));
    // Programs cannot look a queue up or update it (as Linux), and it offers them no memory.
    uint64_t v = 1;
    EXPECT_EQ(m->lookup(nullptr), nullptr);
    EXPECT_EQ(m->update(nullptr, &v, 0), -EINVAL);
    EXPECT_TRUE(m->value_area().empty());
    EXPECT_FALSE(m->lookup_plan());
}

TEST(QueueMap, OtherMapsRefusePushPop) {
    shm_map h(map_spec{map_type::hash, 4, 8, 4, 0});
    uint64_t v = 0;
    EXPECT_EQ(h->push_elem(&v, 0), -EINVAL);
    EXPECT_EQ(h->pop_elem(&v), -EINVAL);
    EXPECT_EQ(h->peek_elem(&v), -EINVAL);
    auto r = h->pop();
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("a hash map has no values to push, pop or peek"),
              std::string::npos);
}

TEST(QueueMap, StorageOfAnotherSpecIsRefused) {
    shm_map m(queue_spec(4));
    auto other =
        map_view::open(m.region().data(), m.region().size(), queue_spec(4, map_type::stack));
    ASSERT_FALSE(other);
    EXPECT_NE(other.err().message.find("holds a queue map, expected stack"), std::string::npos);
    auto bigger = map_view::open(m.region().data(), m.region().size(), queue_spec(5));
    ASSERT_FALSE(bigger);
}

// Two processes with two threads each push and pop at once: every value pushed is popped
// exactly once, by someone, and nothing else comes out.
TEST(QueueMap, ProcessesPushingAndPoppingLoseAndDuplicateNothing) {
    for (auto type : {map_type::queue, map_type::stack}) {
        constexpr uint32_t per_thread = 20000;
        constexpr int procs = 2, threads = 2;
        shm_map m(queue_spec(64, type));
        // Popped values go into a shared array, one slot per value, counted atomically.
        shm_map seen(map_spec{map_type::array, 4, 8, procs * threads * per_thread, 0}, 1);
        start_gate gate;
        std::vector<pid_t> children;
        for (int p = 0; p < procs; p++) {
            children.push_back(spawn([&, p] {
                gate.wait();
                auto q = m.reopen();
                auto s = seen.reopen();
                std::vector<std::thread> ts;
                std::atomic<int> bad{0};
                for (int t = 0; t < threads; t++) {
                    ts.emplace_back([&, t] {
                        uint64_t base = (uint64_t(p) * threads + t) * per_thread;
                        uint32_t pushed = 0, popped = 0;
                        while (pushed < per_thread || popped < per_thread) {
                            if (pushed < per_thread) {
                                uint64_t v = base + pushed;
                                if (q.second.push_elem(&v, 0) == 0) {
                                    pushed++;
                                }
                            }
                            uint64_t out = 0;
                            if (q.second.pop_elem(&out) == 0) {
                                uint32_t idx = static_cast<uint32_t>(out);
                                auto *slot = static_cast<uint64_t *>(s.second.lookup(&idx));
                                if (slot == nullptr) {
                                    bad = 1;
                                } else {
                                    std::atomic_ref<uint64_t>(*slot).fetch_add(1);
                                }
                                popped++;
                            }
                        }
                    });
                }
                for (auto &t : ts) {
                    t.join();
                }
                return bad.load();
            }));
        }
        gate.open();
        for (pid_t pid : children) {
            expect_success(pid);
        }
        EXPECT_EQ(m->count(), 0u);
        uint64_t total = 0, once = 0;
        for (uint32_t i = 0; i < procs * threads * per_thread; i++) {
            uint64_t n = *static_cast<uint64_t *>(seen->lookup(&i));
            total += n;
            once += n == 1;
        }
        EXPECT_EQ(total, uint64_t{procs} * threads * per_thread) << map_type_name(type);
        EXPECT_EQ(once, uint64_t{procs} * threads * per_thread) << map_type_name(type);
    }
}

TEST(QueueMap, DamagedStateStaysInsideTheRing) {
    std::mt19937_64 rng(7);
    for (auto type : {map_type::queue, map_type::stack}) {
        shm_map m(queue_spec(5, type));
        for (uint64_t v = 0; v < 3; v++) {
            ASSERT_EQ(push(m, v), 0);
        }
        for (int round = 0; round < 200; round++) {
            uint64_t &word =
                *reinterpret_cast<uint64_t *>(m.region().data() + sizeof(detail::map_header));
            word = rng();
            EXPECT_LE(m->count(), 5u);
            (void)pop(m);
            (void)push(m, 9, round % 2 ? update_exist : update_any);
            (void)peek(m);
            EXPECT_LE(must(m->values()).size(), 5u);
        }
    }
}

} // namespace
} // namespace bpftime::maps::test
