// SPDX-License-Identifier: MIT
// An object compiled with clang -target bpf with an array of maps and a hash of maps declared
// as libbpf declares them (`__array(values, struct inner)`, initial inner maps from .maps
// relocations): loaded through the store, its programs count into the inner map an outer entry
// names and follow the entry when the controller switches it; the same object through the
// kernel provider (BPF_PROG_TEST_RUN of its raw tracepoint programs) gives the same answers.
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/provider/kernel_provider.hpp>

#include "../provider_fixture.hpp"

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <unistd.h>

namespace bpftime {
namespace {

const std::string objects = BPFTIME_MAPINMAP_TEST_OBJECTS_DIR;

/// struct choice in mapinmap.bpf.c.
struct choice {
    uint32_t key, slot, found, pad;
};

std::span<const uint8_t> bytes(const uint32_t &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

// What a test does the same way through either provider; run_program runs one program once.
class driver {
public:
    driver(base_event_provider &p, loaded_object obj) : p_(p), obj_(std::move(obj)) {}
    virtual ~driver() = default;
    virtual void run_program(const std::string &name) = 0;

    uint32_t map_id(const std::string &name) const { return test::id_of(obj_.maps, name); }

    // Runs prog with the choice (key, slot); returns what it reported in found.
    uint32_t count(const std::string &prog, uint32_t key, uint32_t slot = 0) {
        auto m = p_.open_map(map_id("choice"));
        EXPECT_TRUE(m) << m.err().message;
        if (!m) {
            return 99;
        }
        choice c{key, slot, 7, 0};
        uint32_t zero = 0;
        auto w = (*m)->write(bytes(zero), {reinterpret_cast<const uint8_t *>(&c), sizeof c}, 0);
        EXPECT_TRUE(w) << w.err().message;
        run_program(prog);
        auto v = (*m)->read(bytes(zero));
        EXPECT_TRUE(v && v->size() == sizeof c);
        if (v && v->size() == sizeof c) {
            std::memcpy(&c, v->data(), sizeof c);
        }
        return c.found;
    }
    uint64_t counter(const std::string &map, uint32_t slot = 0) {
        auto m = p_.open_map(map_id(map));
        EXPECT_TRUE(m) << m.err().message;
        auto v = m ? (*m)->read(bytes(slot)) : result<std::vector<uint8_t>>(m.err());
        EXPECT_TRUE(v) << (v ? "" : v.err().message);
        uint64_t n = 0;
        if (v && v->size() >= sizeof n) {
            std::memcpy(&n, v->data(), sizeof n);
        }
        return n;
    }
    // The inner map (bpftime id) at key of an outer map, 0 when none.
    uint32_t inner_at(const std::string &outer, uint32_t key) {
        auto m = p_.open_map(map_id(outer));
        EXPECT_TRUE(m) << m.err().message;
        auto v = m ? (*m)->read(bytes(key)) : result<std::vector<uint8_t>>(m.err());
        if (!v || v->size() != sizeof(uint32_t)) {
            return 0;
        }
        uint32_t id = 0;
        std::memcpy(&id, v->data(), sizeof id);
        return id;
    }
    result<void> put(const std::string &outer, uint32_t key, uint32_t inner_id,
                     uint64_t flags = maps::update_any) {
        auto m = p_.open_map(map_id(outer));
        if (!m) {
            return m.err();
        }
        return (*m)->write(bytes(key), bytes(inner_id), flags);
    }
    result<void> remove(const std::string &outer, uint32_t key) {
        auto m = p_.open_map(map_id(outer));
        if (!m) {
            return m.err();
        }
        return (*m)->erase(bytes(key));
    }

protected:
    base_event_provider &p_;
    loaded_object obj_;
};

// What every provider must answer for the object.
void expect_same_answers(driver &d) {
    // The initialisers' inner maps.
    EXPECT_EQ(d.inner_at("outer_array", 0), d.map_id("counts_a"));
    EXPECT_EQ(d.inner_at("outer_array", 1), d.map_id("counts_b"));
    EXPECT_EQ(d.inner_at("outer_array", 2), 0u);
    EXPECT_EQ(d.inner_at("outer_hash", 2), d.map_id("counts_c"));

    EXPECT_EQ(d.count("count_array", 0), 2u);
    EXPECT_EQ(d.count("count_array", 0), 2u);
    EXPECT_EQ(d.count("count_array", 1, 3), 2u);
    EXPECT_EQ(d.count("count_array", 2), 0u) << "an empty slot looks up as null";
    EXPECT_EQ(d.count("count_array", 9), 0u) << "past max_entries: null";
    EXPECT_EQ(d.count("count_hash", 2, 1), 2u);
    EXPECT_EQ(d.count("count_hash", 5), 0u) << "an absent key: null";
    EXPECT_EQ(d.counter("counts_a"), 2u);
    EXPECT_EQ(d.counter("counts_b", 3), 1u);
    EXPECT_EQ(d.counter("counts_c", 1), 1u);

    // Switched by the controller: the next run counts into the new inner map.
    ASSERT_TRUE(d.put("outer_array", 0, d.map_id("counts_c")));
    EXPECT_EQ(d.inner_at("outer_array", 0), d.map_id("counts_c"));
    EXPECT_EQ(d.count("count_array", 0), 2u);
    EXPECT_EQ(d.counter("counts_c"), 1u);
    EXPECT_EQ(d.counter("counts_a"), 2u);
    ASSERT_TRUE(d.put("outer_hash", 5, d.map_id("counts_a"), maps::update_noexist));
    EXPECT_EQ(d.count("count_hash", 5), 2u);
    EXPECT_EQ(d.counter("counts_a"), 3u);
    // Deleted: null again.
    ASSERT_TRUE(d.remove("outer_hash", 5));
    EXPECT_EQ(d.count("count_hash", 5), 0u);
    ASSERT_TRUE(d.remove("outer_array", 1));
    EXPECT_EQ(d.count("count_array", 1), 0u);
    auto again = d.remove("outer_array", 1);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.err().code, ENOENT);
}

// A map of another value size cannot go in, whichever provider holds the maps.
void expect_refusals(driver &d, base_event_provider &p) {
    auto other = p.create_map({"other", {maps::map_type::array, 4, 16, 4, 0}});
    ASSERT_TRUE(other) << other.err().message;
    auto r = d.put("outer_array", 3, *other);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL) << r.err().message;
    auto nested = d.put("outer_array", 3, d.map_id("outer_hash"));
    ASSERT_FALSE(nested);
    EXPECT_EQ(nested.err().code, EINVAL) << nested.err().message;
    EXPECT_EQ(d.inner_at("outer_array", 3), 0u) << "a refused update changes nothing";
}

class store_driver final : public driver {
public:
    store_driver(event_provider_impl &p, loaded_object obj) : driver(p, std::move(obj)), impl_(p) {}
    void run_program(const std::string &name) override {
        auto compiled = impl_.manager().compile(test::id_of(obj_.programs, name));
        ASSERT_TRUE(compiled) << compiled.err().message;
        auto rc = (*compiled)->run(nullptr, 0);
        EXPECT_TRUE(rc) << rc.err().message;
    }

private:
    event_provider_impl &impl_;
};

struct MapInMapObject : test::provider_fixture {
    MapInMapObject() : provider_fixture("bpftime-mapinmap-test") {}
};

TEST_F(MapInMapObject, OuterMapsFromTheObject) {
    auto obj = loader::open_elf(objects + "/mapinmap.bpf.o");
    ASSERT_TRUE(obj) << obj.err().message;
    const loader::elf_map *outer = nullptr;
    for (const loader::elf_map &m : obj->maps) {
        if (m.name == "outer_array") {
            outer = &m;
        }
    }
    ASSERT_NE(outer, nullptr);
    EXPECT_EQ(outer->spec.type, maps::map_type::array_of_maps);
    EXPECT_EQ(outer->spec.value_size, 4u);
    EXPECT_EQ(outer->spec.inner.type, maps::map_type::array);
    EXPECT_EQ(outer->spec.inner.key_size, 4u);
    EXPECT_EQ(outer->spec.inner.value_size, 8u);
    EXPECT_EQ(outer->spec.inner.max_entries, 4u);
    ASSERT_EQ(outer->inner_maps.size(), 2u);
    EXPECT_EQ(obj->maps[outer->inner_maps[0].second].name, "counts_a");
    EXPECT_EQ(outer->inner_maps[1].first, 1u);
    EXPECT_EQ(obj->maps[outer->inner_maps[1].second].name, "counts_b");
}

TEST_F(MapInMapObject, SameAnswersThroughTheStore) {
    store_driver d(*provider, test::load_elf(*provider, objects + "/mapinmap.bpf.o"));
    expect_same_answers(d);
    expect_refusals(d, *provider);
    // A held inner map stays until its entries go.
    auto held = provider->destroy_object(d.map_id("counts_c"));
    ASSERT_FALSE(held);
    EXPECT_NE(held.err().message.find("is an inner map of map"), std::string::npos)
        << held.err().message;
}

// The same object in the kernel: each program through BPF_PROG_TEST_RUN.
class KernelMapInMap : public ::testing::Test {
protected:
    void SetUp() override {
        if (auto ok = kernel_event_provider::available(); !ok) {
            GTEST_SKIP() << "the kernel comparison needs the kernel's eBPF: " << ok.err().message;
        }
        name_ = "bpftime-kmapinmap-" + std::to_string(getpid());
        (void)kernel_event_provider::remove(name_);
        auto p = kernel_event_provider::open(name_, true);
        ASSERT_TRUE(p) << p.err().message;
        provider_ = std::move(*p);
    }
    void TearDown() override {
        provider_.reset();
        if (!name_.empty()) {
            (void)kernel_event_provider::remove(name_);
        }
    }

    class kernel_driver final : public driver {
    public:
        kernel_driver(kernel_event_provider &p, loaded_object obj, std::string name)
            : driver(p, std::move(obj)), name_(std::move(name)) {}
        void run_program(const std::string &prog) override {
            uint32_t id = test::id_of(obj_.programs, prog);
            std::string pin = std::string(bpffs_root) + "/" + name_ + "/prog_" + std::to_string(id);
            int fd = bpf_obj_get(pin.c_str());
            ASSERT_GE(fd, 0) << pin << ": " << std::strerror(errno);
            LIBBPF_OPTS(bpf_test_run_opts, opts);
            EXPECT_EQ(bpf_prog_test_run_opts(fd, &opts), 0) << std::strerror(errno);
            close(fd);
        }

    private:
        std::string name_;
    };

    std::string name_;
    std::unique_ptr<kernel_event_provider> provider_;
};

TEST_F(KernelMapInMap, SameAnswersAsTheStore) {
    kernel_driver d(*provider_, test::load_elf(*provider_, objects + "/mapinmap.bpf.o"), name_);
    expect_same_answers(d);
    expect_refusals(d, *provider_);
}

} // namespace
} // namespace bpftime
