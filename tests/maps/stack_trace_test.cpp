// SPDX-License-Identifier: MIT
// stack_trace: ids as bpf_get_stackid gives them, collisions, reads and deletes from the
// controller, damaged storage, and two processes storing stacks at once.
#include "test_util.hpp"

#include "layout.hpp" // the header, to scribble over it

#include <random>
#include <set>

namespace bpftime::maps::test {
namespace {

constexpr uint32_t depth = 8;
constexpr map_spec spec{map_type::stack_trace, 4, depth * 8, 64, 0};

std::vector<uint64_t> frames(const map_view &v, uint32_t id) {
    auto raw = must(v.read(bytes(id)));
    std::vector<uint64_t> out(raw.size() / 8);
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
}

std::vector<uint64_t> padded(std::vector<uint64_t> ips) {
    ips.resize(depth, 0);
    return ips;
}

TEST(StackTraceMap, SpecRules) {
    EXPECT_STREQ(map_type_name(map_type::stack_trace), "stack_trace");
    EXPECT_EQ(parse_map_type("stack_trace"), map_type::stack_trace);
    EXPECT_TRUE(validate_spec({map_type::stack_trace, 4, 127 * 8, 1, 0}));
    const std::pair<map_spec, const char *> bad[] = {
        {{map_type::stack_trace, 8, 64, 16, 0}, "key_size 8"},
        {{map_type::stack_trace, 4, 12, 16, 0}, "value_size 12"},
        {{map_type::stack_trace, 4, 128 * 8, 16, 0}, "value_size 1024"},
        {{map_type::stack_trace, 4, 64, 0, 0}, "max_entries 0"},
        {{map_type::stack_trace, 4, 64, 16, 0x20}, "BPF_F_STACK_BUILD_ID"},
    };
    for (const auto &[s, why] : bad) {
        auto r = validate_spec(s);
        ASSERT_FALSE(r) << why;
        EXPECT_EQ(r.err().code, EINVAL);
        EXPECT_NE(r.err().message.find(why), std::string::npos) << r.err().message;
    }
}

TEST(StackTraceMap, TheSameStackGetsTheSameIdAndReadsBackZeroPadded) {
    shm_map m(spec);
    std::vector<uint64_t> a{0x401000, 0x401100, 0x401200}, b{0x401000, 0x402200};
    long id_a = m->stack_put(a, 0);
    ASSERT_GE(id_a, 0);
    EXPECT_LT(id_a, 64);
    EXPECT_EQ(m->stack_put(a, 0), id_a);
    EXPECT_EQ(m->stack_put(a, stack_fast_cmp), id_a);
    long id_b = m->stack_put(b, 0); // the hash is not seeded: these two never share a bucket
    ASSERT_GE(id_b, 0);
    EXPECT_NE(id_a, id_b);
    EXPECT_EQ(frames(m.view(), static_cast<uint32_t>(id_a)), padded(a));
    EXPECT_EQ(frames(m.view(), static_cast<uint32_t>(id_b)), padded(b));
    EXPECT_EQ(m->count(), 2u);
    // Programs cannot look the map up, nor update it, as in Linux.
    uint32_t key = static_cast<uint32_t>(id_a);
    EXPECT_EQ(m->lookup(&key), nullptr);
    EXPECT_TRUE(m->value_area().empty());
    uint64_t value[depth] = {};
    EXPECT_EQ(m->update(&key, value, update_any), -EINVAL);
}

TEST(StackTraceMap, DeeperStacksAreCutAtTheMapsDepth) {
    shm_map m(spec);
    std::vector<uint64_t> deep;
    for (uint64_t i = 0; i < 20; i++) {
        deep.push_back(0x500000 + i);
    }
    long id = m->stack_put(deep, 0);
    ASSERT_GE(id, 0);
    EXPECT_EQ(frames(m.view(), static_cast<uint32_t>(id)),
              std::vector<uint64_t>(deep.begin(), deep.begin() + depth));
}

// Two stacks that hash to one bucket: `first` stays in the map while others are tried (each
// that lands elsewhere is removed again) until one is refused.
std::pair<std::vector<uint64_t>, std::vector<uint64_t>> colliding(const map_view &v) {
    std::vector<uint64_t> first{0x1000};
    if (v.stack_put(first, 0) < 0) {
        return {};
    }
    for (uint64_t i = 1; i < 100000; i++) {
        std::vector<uint64_t> other{0x1000 + i * 16};
        long rc = v.stack_put(other, 0);
        if (rc == -EEXIST) {
            return {first, other};
        }
        if (rc >= 0) {
            (void)v.erase(bytes(static_cast<uint32_t>(rc)));
        }
    }
    return {};
}

TEST(StackTraceMap, ACollisionIsEexistUnlessReuseIsAsked) {
    shm_map m(map_spec{map_type::stack_trace, 4, depth * 8, 2, 0});
    auto [held, other] = colliding(m.view());
    ASSERT_FALSE(held.empty());
    long id = m->stack_put(held, 0);
    ASSERT_GE(id, 0);
    EXPECT_EQ(m->stack_put(other, 0), -EEXIST);
    EXPECT_EQ(frames(m.view(), static_cast<uint32_t>(id)), padded(held)) << "the old stack stays";
    EXPECT_EQ(m->stack_put(other, stack_reuse_id), id);
    EXPECT_EQ(frames(m.view(), static_cast<uint32_t>(id)), padded(other)) << "replaced";
}

TEST(StackTraceMap, ControllerReadsIteratesAndDeletes) {
    shm_map m(spec);
    std::set<uint32_t> ids;
    for (uint64_t i = 0; i < 20; i++) {
        long id = m->stack_put(std::vector<uint64_t>{0x400000 + i, 0x400800}, 0);
        if (id >= 0) {
            ids.insert(static_cast<uint32_t>(id));
        }
    }
    ASSERT_FALSE(ids.empty());
    std::set<uint32_t> seen;
    std::vector<uint8_t> key;
    for (;;) {
        auto next = must(m->next_key(key));
        if (!next) {
            break;
        }
        key = *next;
        seen.insert(from_bytes<uint32_t>(key));
    }
    EXPECT_EQ(seen, ids);
    uint32_t one = *ids.begin();
    EXPECT_TRUE(m->erase(bytes(one)));
    auto gone = m->read(bytes(one));
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.err().code, ENOENT);
    auto again = m->erase(bytes(one));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.err().code, ENOENT);
    auto far = m->read(bytes(uint32_t{64}));
    ASSERT_FALSE(far);
    EXPECT_EQ(far.err().code, ENOENT);
    auto write = m->write(bytes(one), std::vector<uint8_t>(depth * 8));
    ASSERT_FALSE(write);
    EXPECT_EQ(write.err().code, EINVAL);
    EXPECT_NE(write.err().message.find("bpf_get_stackid"), std::string::npos);
    EXPECT_EQ(m->stack_put({}, 0), -EFAULT);
    EXPECT_EQ(m->stack_put(std::vector<uint64_t>{1}, 0x1), -EINVAL);
}

TEST(StackTraceMap, DamagedStorageStaysInsideTheMap) {
    shm_map m(spec);
    std::mt19937_64 rng(11);
    uint8_t *base = m.region().data();
    size_t from = offsetof(detail::map_header, lock) + sizeof(pthread_mutex_t);
    for (size_t i = from; i < m.region().size(); i++) {
        base[i] = static_cast<uint8_t>(rng());
    }
    // Depths of up to 2^32 in the buckets: reads copy at most the map's depth.
    for (uint32_t k = 0; k < 70; k++) {
        auto r = m->read(bytes(k));
        if (r) {
            EXPECT_EQ(r->size(), depth * 8u);
        }
    }
    EXPECT_LE(m->count(), 64u);
    long id = m->stack_put(std::vector<uint64_t>{0x1234}, stack_reuse_id);
    ASSERT_GE(id, 0);
    EXPECT_EQ(frames(m.view(), static_cast<uint32_t>(id)), padded({0x1234}));
}

TEST(StackTraceMap, TwoProcessesStoreStacksAtOnce) {
    shm_map m(map_spec{map_type::stack_trace, 4, depth * 8, 4096, 0});
    start_gate gate;
    std::vector<pid_t> children;
    for (uint64_t p = 0; p < 2; p++) {
        children.push_back(spawn([&, p] {
            gate.wait();
            auto mine = m.reopen();
            for (uint64_t round = 0; round < 200; round++) {
                for (uint64_t s = 0; s < 16; s++) {
                    // Both processes store the same 16 stacks; each must get one id each time.
                    std::vector<uint64_t> ips{0x7000 + s, 0x8000 + s, 0x9000};
                    long id = mine.second.stack_put(ips, 0);
                    if (id < 0 && id != -EEXIST && id != -EBUSY) {
                        return 2;
                    }
                }
            }
            (void)p;
            return 0;
        }));
    }
    gate.open();
    for (pid_t pid : children) {
        expect_success(pid);
    }
    // Every stored stack is whole: three frames of one of the stacks above.
    std::vector<uint8_t> key;
    size_t seen = 0;
    for (;;) {
        auto next = must(m->next_key(key));
        if (!next) {
            break;
        }
        key = *next;
        auto f = frames(m.view(), from_bytes<uint32_t>(key));
        uint64_t s = f[0] - 0x7000;
        EXPECT_LT(s, 16u);
        EXPECT_EQ(f[1], 0x8000 + s);
        EXPECT_EQ(f[2], 0x9000u);
        EXPECT_EQ(f[3], 0u);
        seen++;
    }
    EXPECT_GE(seen, 1u);
    EXPECT_LE(seen, 16u);
}

} // namespace
} // namespace bpftime::maps::test
