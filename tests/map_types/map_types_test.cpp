// SPDX-License-Identifier: MIT
// Programs compiled with clang -target bpf using queue, stack, bloom filter and LPM trie maps,
// push / pop / peek, snprintf and send_signal, run through the store; the same object through
// the kernel provider (BPF_PROG_TEST_RUN of its raw tracepoint programs) gives the same answers.
// The programs leave what they saw in the array `out`, which the test sets and reads through
// the provider, whichever it is.
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/provider/kernel_provider.hpp>
#include <bpftime/vm/assembler.hpp>

#include "../provider_fixture.hpp"

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <regex>
#include <thread>

namespace bpftime {
namespace {

const std::string objects = BPFTIME_MAP_TYPES_TEST_OBJECTS_DIR;

/// The value of the array `out` (struct results in map_types.bpf.c).
struct results {
    int64_t rc[16];
    uint64_t val[16];
    uint32_t addrs[4];
    char text[96];
};

results lpm_context() {
    results r{};
    const char *addrs[] = {"10.1.2.3", "10.1.9.9", "10.200.0.1", "192.168.0.1"};
    for (int i = 0; i < 4; i++) {
        inet_pton(AF_INET, addrs[i], &r.addrs[i]);
    }
    return r;
}

// What each program must give, whichever runs it.
void expect_queue_stack(const results &r) {
    for (int i = 0; i < 4; i++) {
        EXPECT_EQ(r.rc[i], 0) << "push " << i + 1;
    }
    EXPECT_EQ(r.rc[4], -E2BIG) << "a fifth push into four slots";
    EXPECT_EQ(r.rc[5], 0) << "BPF_EXIST drops the oldest";
    EXPECT_EQ(r.rc[6], -EINVAL) << "BPF_NOEXIST is no push flag";
    EXPECT_EQ(r.rc[7], 0);
    EXPECT_EQ(r.val[0], 2u) << "peek: the oldest left";
    EXPECT_EQ(std::vector<uint64_t>(r.val + 1, r.val + 5), (std::vector<uint64_t>{2, 3, 4, 6}));
    EXPECT_EQ(r.rc[8], -ENOENT) << "pop of an empty queue";
    EXPECT_EQ(r.rc[9], -ENOENT) << "peek of an empty queue";
    EXPECT_EQ(r.rc[10], 0);
    EXPECT_EQ(r.val[5], 11u) << "a stack's peek: the newest";
    EXPECT_EQ(r.val[6], 11u);
    EXPECT_EQ(r.val[7], 10u);
    EXPECT_EQ(r.rc[11], -ENOENT);
}

void expect_bloom(const results &r) {
    for (int i = 0; i < 10; i++) {
        EXPECT_EQ(r.rc[i], 0) << "value " << 100 + i << " was pushed";
    }
    EXPECT_EQ(r.rc[10], -ENOENT) << "a value never pushed";
    EXPECT_EQ(r.rc[11], -EINVAL) << "bloom filters take no push flags";
}

void expect_lpm(const results &r) {
    EXPECT_EQ(r.rc[0], 0);
    EXPECT_EQ(r.rc[1], 0);
    EXPECT_EQ(r.rc[2], 0);
    EXPECT_EQ(r.rc[3], -EINVAL) << "a /33 in a map of 32-bit prefixes";
    EXPECT_EQ(r.rc[4], -EEXIST) << "10.1.2.0/16 is 10.1.0.0/16";
    EXPECT_EQ(std::vector<uint64_t>(r.val, r.val + 4), (std::vector<uint64_t>{24, 16, 8, 0}));
    EXPECT_EQ(r.rc[5], 0);
    EXPECT_EQ(r.rc[6], -ENOENT);
}

const char numbers_text[] = "-5 4294967291 beef BEEF -7 7 abcdef012345 -9 9|1234|00042|-3   |";
const char words_text[] = "bpftime, ok 192.168.1.20 192.168.001.020 %    bpftime|ab  .";

void expect_format(const results &r) {
    EXPECT_STREQ(r.text, numbers_text);
    EXPECT_EQ(r.rc[0], static_cast<int64_t>(sizeof numbers_text)) << "bytes with the NUL";
    EXPECT_STREQ(reinterpret_cast<const char *>(&r.val[0]), words_text);
    EXPECT_EQ(r.rc[2], static_cast<int64_t>(sizeof words_text));
    EXPECT_STREQ(reinterpret_cast<const char *>(&r.val[8]), "-5 4294") << "cut to 7 and a NUL";
    EXPECT_EQ(r.rc[3], static_cast<int64_t>(sizeof numbers_text)) << "what the whole text needs";
}

// Sets the array `out` to r before a run; reads it back after.
void set_results(base_event_provider &p, const loaded_object &obj, const results &r) {
    auto m = p.open_map(test::id_of(obj.maps, "out"));
    ASSERT_TRUE(m) << m.err().message;
    uint32_t zero = 0;
    auto w = (*m)->write({reinterpret_cast<const uint8_t *>(&zero), 4},
                         {reinterpret_cast<const uint8_t *>(&r), sizeof r}, 0);
    ASSERT_TRUE(w) << w.err().message;
}

results get_results(base_event_provider &p, const loaded_object &obj) {
    results r{};
    auto m = p.open_map(test::id_of(obj.maps, "out"));
    EXPECT_TRUE(m) << m.err().message;
    if (!m) {
        return r;
    }
    uint32_t zero = 0;
    auto v = (*m)->read({reinterpret_cast<const uint8_t *>(&zero), 4});
    EXPECT_TRUE(v && v->size() == sizeof r);
    if (v && v->size() == sizeof r) {
        std::memcpy(&r, v->data(), sizeof r);
    }
    return r;
}

struct MapTypes : test::provider_fixture {
    MapTypes() : provider_fixture("bpftime-map-types-test") {}

    results run(const loaded_object &obj, const std::string &prog, const results &in = {}) {
        set_results(*provider, obj, in);
        auto compiled = provider->manager().compile(test::id_of(obj.programs, prog));
        EXPECT_TRUE(compiled) << compiled.err().message;
        if (compiled) {
            auto rc = (*compiled)->run(nullptr, 0);
            EXPECT_TRUE(rc) << rc.err().message;
        }
        return get_results(*provider, obj);
    }
};

TEST_F(MapTypes, QueueAndStackThroughTheStore) {
    auto obj = test::load_elf(*provider, objects + "/map_types.bpf.o");
    expect_queue_stack(run(obj, "queue_stack"));
    // The controller sees the maps the program left empty, and pushes for the next run.
    auto q = provider->open_map(test::id_of(obj.maps, "queue"));
    ASSERT_TRUE(q);
    EXPECT_EQ((*q)->info().spec.key_size, 0u);
    EXPECT_EQ((*q)->count(), 0u);
    uint64_t v = 77;
    ASSERT_TRUE((*q)->push({reinterpret_cast<uint8_t *>(&v), 8}, 0));
    results r = run(obj, "queue_stack");
    EXPECT_EQ(r.rc[3], -E2BIG) << "the controller's 77 holds a slot: the fourth push is refused";
    EXPECT_EQ(r.val[0], 1u) << "BPF_EXIST dropped 77, the oldest";
}

TEST_F(MapTypes, BloomFilterThroughTheStore) {
    auto obj = test::load_elf(*provider, objects + "/map_types.bpf.o");
    auto m = provider->open_map(test::id_of(obj.maps, "bloom"));
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)->info().spec.map_extra, 3u) << "map_extra from the object's BTF";
    expect_bloom(run(obj, "bloom_ops"));
    uint64_t v = 105;
    EXPECT_TRUE((*m)->peek({reinterpret_cast<uint8_t *>(&v), 8})) << "the program's pushes";
}

TEST_F(MapTypes, LpmTrieThroughTheStore) {
    auto obj = test::load_elf(*provider, objects + "/map_types.bpf.o");
    expect_lpm(run(obj, "lpm_match", lpm_context()));
    auto m = provider->open_map(test::id_of(obj.maps, "routes"));
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)->info().spec.flags, 1u) << "BPF_F_NO_PREALLOC from the object";
    EXPECT_EQ((*m)->count(), 2u);
}

TEST_F(MapTypes, SnprintfThroughTheStore) {
    auto obj = test::load_elf(*provider, objects + "/map_types.bpf.o");
    expect_format(run(obj, "format"));
}

// A format in read-only data is known at load: one the kernel refuses is refused there, as
// Linux's verifier does, naming the conversion and the instruction.
TEST_F(MapTypes, SnprintfRefusesBadFormatsAtLoad) {
    auto obj = loader::open_elf(objects + "/snprintf_bad.bpf.o");
    ASSERT_TRUE(obj) << obj.err().message;
    auto loaded = load_object(*provider, *obj);
    ASSERT_FALSE(loaded) << "a %q format in .rodata must not load";
    EXPECT_EQ(loaded.err().code, EINVAL);
    EXPECT_TRUE(std::regex_search(
        loaded.err().message, std::regex("program format_bad: instruction [0-9]+ calls snprintf "
                                         "\\(165\\) with the format at offset [0-9]+ of "
                                         "read-only map [0-9]+ \\(.*rodata\\), \"%q\": the "
                                         "conversion \"%q\" at offset 0 is not one bpf_snprintf "
                                         "takes")))
        << loaded.err().message;
    auto listing = provider->list();
    ASSERT_TRUE(listing);
    EXPECT_TRUE(listing->objects.programs.empty()) << "nothing of the object stays";
}

// A format only known when the program runs (built on the stack) gives -EINVAL then.
TEST_F(MapTypes, SnprintfRefusesBadFormatsWhenItRuns) {
    auto obj = test::load_elf(*provider, objects + "/snprintf_runtime.bpf.o");
    auto compiled = provider->manager().compile(test::id_of(obj.programs, "format_at_run"));
    ASSERT_TRUE(compiled) << compiled.err().message;
    ASSERT_TRUE((*compiled)->run(nullptr, 0));
    auto m = provider->open_map(test::id_of(obj.maps, "out"));
    ASSERT_TRUE(m);
    uint32_t zero = 0;
    auto v = (*m)->read({reinterpret_cast<const uint8_t *>(&zero), 4});
    ASSERT_TRUE(v);
    int64_t rc[5];
    std::memcpy(rc, v->data(), sizeof rc);
    EXPECT_EQ(rc[0], -EINVAL) << "%q";
    EXPECT_EQ(rc[1], -EINVAL) << "two conversions, one argument";
    EXPECT_EQ(rc[2], -EINVAL) << "an argument array of 7 bytes";
    EXPECT_EQ(rc[3], -EINVAL) << "13 arguments (12 at most)";
    EXPECT_EQ(rc[4], 2) << "%d of 1: \"1\" and its NUL";
}

// What the load-time check says of each format Linux refuses, and what it takes.
TEST(SnprintfFormat, ProblemsNameTheConversion) {
    using helpers::snprintf_format_problem;
    EXPECT_EQ(snprintf_format_problem("%d %s, %c %pI4 %pks %llx %% %-5u|%05lld", 8), "");
    EXPECT_EQ(snprintf_format_problem("a %n", 1).rfind("the conversion \"%n\" at offset 2 is "
                                                       "not one bpf_snprintf takes",
                                                       0),
              0u)
        << snprintf_format_problem("a %n", 1);
    EXPECT_EQ(snprintf_format_problem("%q", 1).rfind("the conversion \"%q\" at offset 0", 0), 0u);
    EXPECT_EQ(snprintf_format_problem("%.3d", 1).rfind("the conversion \"%.\" at offset 0", 0), 0u)
        << snprintf_format_problem("%.3d", 1);
    EXPECT_EQ(snprintf_format_problem("%d %d", 1),
              "the conversion \"%d\" at offset 3 has no argument: the data array holds 1 "
              "(data_len / 8)");
    EXPECT_EQ(snprintf_format_problem("%sx", 1),
              "the conversion \"%sx\" at offset 0 must be followed by a space, punctuation or "
              "the end");
    EXPECT_EQ(snprintf_format_problem("%d", 13), "13 arguments: bpf_snprintf takes at most 12");
    EXPECT_EQ(snprintf_format_problem("tab\x01", 0),
              "the byte 0x01 at offset 3 is not printable ASCII");
}

std::atomic<int> usr1_count{0}, usr2_thread{0};
thread_local int usr2_here = 0;

TEST_F(MapTypes, SendSignalReachesThisProcessAndThread) {
    struct sigaction sa {};
    sa.sa_handler = [](int) { usr1_count++; };
    sigaction(SIGUSR1, &sa, nullptr);
    sa.sa_handler = [](int) {
        usr2_here++;
        usr2_thread++;
    };
    sigaction(SIGUSR2, &sa, nullptr);
    auto obj = test::load_elf(*provider, objects + "/signals.bpf.o");
    auto process = provider->manager().compile(test::id_of(obj.programs, "send_to_process"));
    auto thread = provider->manager().compile(test::id_of(obj.programs, "send_to_thread"));
    ASSERT_TRUE(process && thread);
    struct args {
        uint32_t sig, pad;
        int64_t rc;
    };
    auto send = [](const auto &p, uint32_t sig) {
        args a{sig, 0, 1};
        auto rc = p->run(&a, sizeof a);
        EXPECT_TRUE(rc) << rc.err().message;
        return a.rc;
    };
    EXPECT_EQ(send(*process, SIGUSR1), 0);
    EXPECT_EQ(usr1_count.load(), 1) << "delivered before kill() returned to this thread";
    // From another thread, bpf_send_signal_thread signals that thread only.
    int seen_there = -1;
    std::thread t([&] {
        EXPECT_EQ(send(*thread, SIGUSR2), 0);
        seen_there = usr2_here;
    });
    t.join();
    EXPECT_EQ(seen_there, 1);
    EXPECT_EQ(usr2_here, 0) << "not this thread";
    EXPECT_EQ(usr2_thread.load(), 1);
    // Signal 0 sends nothing; numbers past 64 and glibc's own 32 and 33 are refused.
    EXPECT_EQ(send(*process, 0), 0);
    for (uint32_t bad : {65u, 32u, 33u, 1000u}) {
        EXPECT_EQ(send(*process, bad), -EINVAL) << bad;
        EXPECT_EQ(send(*thread, bad), -EINVAL) << bad;
    }
    EXPECT_EQ(usr1_count.load(), 1);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGUSR2, SIG_DFL);
}

TEST_F(MapTypes, PushPopOnOtherMapsStopsTheProgram) {
    auto h = provider->create_map({"h", {maps::map_type::hash, 4, 8, 4, 0}});
    ASSERT_TRUE(h);
    auto insns = vm::assemble("lddw %r1, map_fd(" + std::to_string(*h) +
                              ")\nmov %r2, %r10\nadd %r2, -8\nstdw [%r10-8], 0\nmov %r3, 0\n"
                              "call 87\nexit\n");
    ASSERT_TRUE(insns);
    auto id = provider->create_program({"p", 0, "", *insns, {*h}});
    ASSERT_TRUE(id);
    auto compiled = provider->manager().compile(*id);
    ASSERT_TRUE(compiled);
    auto rc = (*compiled)->run(nullptr, 0);
    ASSERT_FALSE(rc);
    EXPECT_NE(rc.err().message.find("map_push_elem: r1 is a hash map, not a queue, stack or "
                                    "bloom_filter"),
              std::string::npos)
        << rc.err().message;
}

// The same object in the kernel: each syscall program through BPF_PROG_TEST_RUN.
class KernelMapTypes : public ::testing::Test {
protected:
    void SetUp() override {
        if (auto ok = kernel_event_provider::available(); !ok) {
            GTEST_SKIP() << "the kernel comparison needs the kernel's eBPF: " << ok.err().message;
        }
        name_ = "bpftime-kmaptypes-" + std::to_string(getpid());
        (void)kernel_event_provider::remove(name_);
        auto p = kernel_event_provider::open(name_, true);
        ASSERT_TRUE(p) << p.err().message;
        provider_ = std::move(*p);
        obj_ = test::load_elf(*provider_, objects + "/map_types.bpf.o");
    }
    void TearDown() override {
        provider_.reset();
        if (!name_.empty()) {
            (void)kernel_event_provider::remove(name_);
        }
    }

    results run(const std::string &prog, const results &in = {}) {
        set_results(*provider_, obj_, in);
        uint32_t id = test::id_of(obj_.programs, prog);
        std::string pin = std::string(bpffs_root) + "/" + name_ + "/prog_" + std::to_string(id);
        int fd = bpf_obj_get(pin.c_str());
        EXPECT_GE(fd, 0) << pin << ": " << std::strerror(errno);
        if (fd < 0) {
            return {};
        }
        LIBBPF_OPTS(bpf_test_run_opts, opts);
        EXPECT_EQ(bpf_prog_test_run_opts(fd, &opts), 0) << std::strerror(errno);
        close(fd);
        return get_results(*provider_, obj_);
    }

    std::string name_;
    std::unique_ptr<kernel_event_provider> provider_;
    loaded_object obj_;
};

TEST_F(KernelMapTypes, RefusesBadFormatsAtLoad) {
    auto obj = loader::open_elf(objects + "/snprintf_bad.bpf.o");
    ASSERT_TRUE(obj);
    auto loaded = load_object(*provider_, *obj);
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.err().message.find("format_bad: the kernel verifier refused it"),
              std::string::npos)
        << loaded.err().message;
}

TEST_F(KernelMapTypes, SameAnswersAsTheStore) {
    expect_queue_stack(run("queue_stack"));
    expect_bloom(run("bloom_ops"));
    expect_lpm(run("lpm_match", lpm_context()));
    expect_format(run("format"));
    // The maps as the controller reads them from the kernel.
    auto routes = provider_->open_map(test::id_of(obj_.maps, "routes"));
    ASSERT_TRUE(routes);
    EXPECT_EQ((*routes)->count(), 2u);
    auto bloom = provider_->open_map(test::id_of(obj_.maps, "bloom"));
    ASSERT_TRUE(bloom);
    EXPECT_EQ((*bloom)->info().spec.map_extra, 3u);
    uint64_t v = 104;
    EXPECT_TRUE((*bloom)->peek({reinterpret_cast<uint8_t *>(&v), 8}));
    v = 99;
    auto absent = (*bloom)->peek({reinterpret_cast<uint8_t *>(&v), 8});
    ASSERT_FALSE(absent);
    EXPECT_EQ(absent.err().message, "the value is not in the bloom filter");
    auto queue = provider_->open_map(test::id_of(obj_.maps, "queue"));
    ASSERT_TRUE(queue);
    v = 5;
    ASSERT_TRUE((*queue)->push({reinterpret_cast<uint8_t *>(&v), 8}, 0));
    auto peeked = (*queue)->peek({});
    ASSERT_TRUE(peeked) << peeked.err().message;
    auto popped = (*queue)->pop();
    ASSERT_TRUE(popped);
    EXPECT_EQ(*peeked, *popped);
    auto empty = (*queue)->pop();
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.err().message, "the queue is empty");
}

} // namespace
} // namespace bpftime
