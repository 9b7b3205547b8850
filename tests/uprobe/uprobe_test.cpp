// SPDX-License-Identifier: MIT
// User-space uprobes and uretprobes in this process, as users see them: exact counts across
// threads, arguments and return values as programs read them, recursion, a libc function,
// links enabled and disabled under load, refusals, faulting programs, and the original bytes
// back after detaching.
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/hook/inline_hook.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/uprobe/uprobe.hpp>
#include <bpftime/vm/assembler.hpp>

#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <thread>
#include <unistd.h>
#include <vector>

// clang's -fsanitize=function puts a jump over type data at the start of C++ functions, which
// is then all a hook could relocate: keep the probed functions plain.
#if defined(__clang__)
#define UT_PROBED __attribute__((noinline, used, no_sanitize("function")))
#else
#define UT_PROBED __attribute__((noinline, used))
#endif

extern "C" {
// uprobe_targets.S
long ut_tiny();
long ut_short();
long ut_lea4(long x);
long ut_lea4_tight(long x);
long ut_after_tight(long x);

// A USDT-style semaphore: hosts count the uprobes attached with it.
__attribute__((section(".probes"), used)) unsigned short ut_semaphore;

// Read by the probed functions so that their results depend on memory (0 throughout).
volatile long ut_bias = 0;

UT_PROBED long ut_add(long key, long value) {
    asm volatile("" ::: "memory");
    return key + value + ut_bias;
}

UT_PROBED long ut_load(long key, long value) {
    asm volatile("" ::: "memory");
    return key + 2 * value + ut_bias;
}

UT_PROBED long ut_square(long x) {
    asm volatile("" ::: "memory");
    return x * x + ut_bias;
}

UT_PROBED long ut_restore(long a, long b) {
    asm volatile("" ::: "memory");
    return a * 3 - b + ut_bias;
}

UT_PROBED unsigned long ut_args6(unsigned long a, unsigned long b, unsigned long c, unsigned long d,
                                 unsigned long e, unsigned long f) {
    asm volatile("" ::: "memory");
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + static_cast<unsigned long>(ut_bias);
}

UT_PROBED long ut_text(const char *text, long tag) {
    asm volatile("" ::: "memory");
    return static_cast<long>(std::strlen(text)) + tag + ut_bias;
}

UT_PROBED long ut_links(long a, long b) {
    asm volatile("" ::: "memory");
    return 3 * a + b + ut_bias;
}

UT_PROBED long ut_cookie(long a, long b) {
    asm volatile("" ::: "memory");
    return 5 * a + b + ut_bias;
}

UT_PROBED long ut_fault_alone(long x) {
    asm volatile("" ::: "memory");
    return x + 11 + ut_bias;
}

UT_PROBED long ut_returns(long a, long b) {
    asm volatile("" ::: "memory");
    return 7 * a + b + ut_bias;
}

UT_PROBED long ut_many(long t) {
    asm volatile("" ::: "memory");
    return t + 1 + ut_bias;
}

// n + (n - 1) + ... + 1, one real call per level.
UT_PROBED long ut_rec(long n) {
    asm volatile("" ::: "memory");
    if (n <= 0) {
        return ut_bias;
    }
    long below = ut_rec(n - 1);
    asm volatile("" : "+r"(below)); // keeps the call a call (no accumulator loop)
    return n + below;
}
}

namespace bpftime {
namespace {

using test::id_of;

const std::string examples = BPFTIME_EXAMPLES_DIR;
const std::string objects = BPFTIME_UPROBE_TEST_OBJECTS_DIR;

// Calls through a pointer the compiler cannot see through.
template <class F>
F *opaque(F *f) {
    F *volatile p = f;
    return p;
}

// Calls fn(t, i) per_thread times from each of threads threads (t the thread's number); each
// call must give factor * t + i. The sum of what the calls gave.
uint64_t sum_of_calls(long (*fn)(long, long), long factor, int threads, long per_thread) {
    std::vector<uint64_t> sums(static_cast<size_t>(threads), 0);
    std::atomic<long> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            auto *call = opaque(fn);
            for (long i = 0; i < per_thread; ++i) {
                const long got = call(t, i);
                if (got != factor * t + i) {
                    wrong.fetch_add(1);
                }
                sums[static_cast<size_t>(t)] += static_cast<uint64_t>(got);
            }
        });
    }
    for (auto &t : pool) {
        t.join();
    }
    EXPECT_EQ(wrong.load(), 0);
    uint64_t total = 0;
    for (uint64_t v : sums) {
        total += v;
    }
    return total;
}

template <class F>
uintptr_t address_of(F *f) {
    return reinterpret_cast<uintptr_t>(f);
}

template <class T>
std::vector<uint8_t> bytes_of(const T &v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
}

std::array<uint8_t, 16> code_at(uintptr_t address) {
    std::array<uint8_t, 16> out{};
    std::memcpy(out.data(), reinterpret_cast<const void *>(address), out.size());
    return out;
}

uint64_t pid_tgid_here() {
    return static_cast<uint64_t>(::getpid()) << 32 | static_cast<uint32_t>(::gettid());
}

// The example's totals: [0] entries, [1] returns, [2] the sum of returned values.
struct totals {
    uint64_t entries = 0, returns = 0, sum = 0;
};

struct Uprobe : test::provider_fixture {
    Uprobe() : provider_fixture("bpftime-uprobe-test") {}

    loaded_object load(const std::string &path) { return test::load_elf(*provider, path); }

    uint32_t attach(uint32_t prog, int32_t type, const std::string &args) {
        return test::attach(*provider, prog, type, args);
    }

    // The host: a manager of this process over the same segment, offering uprobes.
    std::unique_ptr<attach_manager> host() {
        auto m = std::make_unique<attach_manager>(seg);
        auto r = m->register_attach_impls(make_uprobe_attach_impls());
        EXPECT_TRUE(r) << r.err().message;
        return m;
    }

    std::vector<uint8_t> read(uint32_t map, const std::vector<uint8_t> &key) {
        auto m = provider->open_map(map);
        EXPECT_TRUE(m) << m.err().message;
        if (!m) {
            return {};
        }
        auto v = (*m)->read(key);
        EXPECT_TRUE(v) << v.err().message;
        return v ? *v : std::vector<uint8_t>{};
    }

    uint64_t read_u64(uint32_t map, const std::vector<uint8_t> &key) {
        auto v = read(map, key);
        uint64_t out = 0;
        std::memcpy(&out, v.data(), std::min<size_t>(v.size(), sizeof out));
        return out;
    }

    totals read_totals(uint32_t map) {
        return {read_u64(map, bytes_of<uint32_t>(0)), read_u64(map, bytes_of<uint32_t>(1)),
                read_u64(map, bytes_of<uint32_t>(2))};
    }

    store::link_info link(uint32_t id) {
        auto snap = provider->list();
        EXPECT_TRUE(snap) << snap.err().message;
        if (snap) {
            for (const store::link_info &l : snap->objects.links) {
                if (l.id == id) {
                    return l;
                }
            }
        }
        ADD_FAILURE() << "no link " << id;
        return {};
    }

    // uprobe_count.bpf.o: count_entry as a uprobe and count_return as a uretprobe at args.
    struct counting {
        uint32_t totals = 0, calls = 0, entry_link = 0, return_link = 0;
    };
    counting count_at(const std::string &args, bool with_return = true) {
        loaded_object obj = load(examples + "/uprobe_count.bpf.o");
        counting c;
        c.totals = id_of(obj.maps, "totals");
        c.calls = id_of(obj.maps, "calls");
        c.entry_link = attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, args);
        if (with_return) {
            c.return_link =
                attach(id_of(obj.programs, "count_return"), attach_type_uretprobe, args);
        }
        return c;
    }
};

// 4 threads x 50,000 calls: every entry and every return counted once, every returned value
// summed, per first argument too.
TEST_F(Uprobe, ExactCountsOnSeveralThreads) {
    counting c = count_at("/proc/self/exe:ut_add");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(h->attached_count(), 2u);

    constexpr int threads = 4;
    constexpr long per_thread = 50000;
    std::vector<uint64_t> sums(threads, 0);
    std::atomic<long> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            auto *fn = opaque(ut_add);
            uint64_t sum = 0;
            for (long i = 0; i < per_thread; ++i) {
                long v = (i * 7) % 1000;
                long got = fn(t, v);
                if (got != t + v) {
                    wrong.fetch_add(1);
                }
                sum += static_cast<uint64_t>(got);
            }
            sums[t] = sum;
        });
    }
    for (auto &t : pool) {
        t.join();
    }
    EXPECT_EQ(wrong.load(), 0);
    uint64_t expected_sum = 0;
    for (uint64_t s : sums) {
        expected_sum += s;
    }
    totals got = read_totals(c.totals);
    EXPECT_EQ(got.entries, threads * per_thread);
    EXPECT_EQ(got.returns, threads * per_thread);
    EXPECT_EQ(got.sum, expected_sum);
    for (int t = 0; t < threads; ++t) {
        EXPECT_EQ(read_u64(c.calls, bytes_of<uint64_t>(t)), static_cast<uint64_t>(per_thread))
            << "calls with first argument " << t;
    }
    EXPECT_EQ(link(c.entry_link).runs, threads * per_thread);
    EXPECT_EQ(link(c.entry_link).faults, 0u);
}

// The test object uprobe_seen.bpf.o: what the program records on entry and on return.
struct seen {
    uint64_t parm[6];
    uint64_t entry_ip;
    uint64_t entry_pid_tgid;
    uint64_t ret;
    uint64_t return_ip;
    uint64_t return_pid_tgid;
    uint64_t entries;
    uint64_t returns;
};

struct text_event {
    uint64_t pid_tgid;
    uint64_t func_ip;
    uint64_t tag;
    int64_t read_result;
    char text[32];
};

// Six arguments and the return value through bpf_tracing.h, get_func_ip, the calling thread's
// pid and tid, memory the caller points at, and a ring buffer record the test consumes.
TEST_F(Uprobe, ProgramsSeeArgumentsReturnValuesAndTheCaller) {
    loaded_object obj = load(objects + "/uprobe_seen.bpf.o");
    uint32_t seen_map = id_of(obj.maps, "seen");
    uint32_t events = id_of(obj.maps, "events");
    attach(id_of(obj.programs, "args_entry"), attach_type_uprobe, "/proc/self/exe:ut_args6");
    attach(id_of(obj.programs, "args_return"), attach_type_uretprobe, "/proc/self/exe:ut_args6");
    attach(id_of(obj.programs, "text_entry"), attach_type_uprobe, "/proc/self/exe:ut_text");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(h->attached_count(), 3u);

    const unsigned long args[6] = {0x0123456789abcdefUL, ~0UL, 0x8000000000000000UL, 3,
                                   0xfedcba9876543210UL, 42};
    const unsigned long expected_ret =
        args[0] + 2 * args[1] + 3 * args[2] + 4 * args[3] + 5 * args[4] + 6 * args[5];
    char text[32] = "read by the program";
    uint64_t caller = 0;
    unsigned long ret = 0;
    long text_ret = 0;
    // A thread of its own, so its tid differs from the main thread's.
    std::thread([&] {
        caller = pid_tgid_here();
        ret = opaque(ut_args6)(args[0], args[1], args[2], args[3], args[4], args[5]);
        text_ret = opaque(ut_text)(text, 77);
    }).join();
    ASSERT_NE(caller, pid_tgid_here());
    EXPECT_EQ(ret, expected_ret);
    EXPECT_EQ(text_ret, static_cast<long>(std::strlen(text)) + 77);

    std::vector<uint8_t> value = read(seen_map, bytes_of<uint32_t>(0));
    ASSERT_EQ(value.size(), sizeof(seen));
    seen s{};
    std::memcpy(&s, value.data(), sizeof s);
    for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(s.parm[i], args[i]) << "PT_REGS_PARM" << i + 1;
    }
    EXPECT_EQ(s.ret, expected_ret);
    EXPECT_EQ(s.entry_ip, address_of(ut_args6));
    EXPECT_EQ(s.return_ip, address_of(ut_args6));
    EXPECT_EQ(s.entry_pid_tgid, caller);
    EXPECT_EQ(s.return_pid_tgid, caller);
    EXPECT_EQ(s.entries, 1u);
    EXPECT_EQ(s.returns, 1u);

    auto ring = provider->open_map(events);
    ASSERT_TRUE(ring) << ring.err().message;
    std::vector<text_event> got;
    auto n = (*ring)->consume(
        [&](std::span<const uint8_t> record) {
            ASSERT_EQ(record.size(), sizeof(text_event));
            text_event ev{};
            std::memcpy(&ev, record.data(), sizeof ev);
            got.push_back(ev);
        },
        16);
    ASSERT_TRUE(n) << n.err().message;
    ASSERT_EQ(*n, 1u);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].pid_tgid, caller);
    EXPECT_EQ(got[0].func_ip, address_of(ut_text));
    EXPECT_EQ(got[0].tag, 77u);
    EXPECT_EQ(got[0].read_result, 0);
    EXPECT_EQ(std::memcmp(got[0].text, text, sizeof text), 0)
        << "the program read \"" << std::string(got[0].text, strnlen(got[0].text, 32)) << "\"";
}

// A recursive function with a uretprobe: every level's entry and return, on several threads
// at once.
TEST_F(Uprobe, RecursionSeesEveryLevel) {
    counting c = count_at("/proc/self/exe:ut_rec");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    const uint64_t missed_before = inline_hook::missed_returns();

    constexpr int threads = 4;
    constexpr long calls = 200;
    constexpr long depth = 60;
    std::atomic<long> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            for (long i = 0; i < calls; ++i) {
                if (opaque(ut_rec)(depth) != depth * (depth + 1) / 2) {
                    wrong.fetch_add(1);
                }
            }
        });
    }
    for (auto &t : pool) {
        t.join();
    }
    EXPECT_EQ(wrong.load(), 0);
    // One top call returns at every level n = depth..0, each returning n(n+1)/2.
    uint64_t per_call_sum = 0;
    for (long n = 0; n <= depth; ++n) {
        per_call_sum += static_cast<uint64_t>(n * (n + 1) / 2);
    }
    const uint64_t top_calls = threads * calls;
    totals got = read_totals(c.totals);
    EXPECT_EQ(got.entries, top_calls * (depth + 1));
    EXPECT_EQ(got.returns, top_calls * (depth + 1));
    EXPECT_EQ(got.sum, top_calls * per_call_sum);
    for (long n = 0; n <= depth; ++n) {
        EXPECT_EQ(read_u64(c.calls, bytes_of<uint64_t>(n)), top_calls) << "level " << n;
    }
    EXPECT_EQ(inline_hook::missed_returns(), missed_before);
}

// libc's getpid, called through the pointer dlsym gives: exact counts, the return values, and
// nothing counted (and libc's bytes back) once the links are disabled.
TEST_F(Uprobe, SharedLibraryFunction) {
    void *libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(libc, nullptr) << ::dlerror();
    auto *libc_getpid = reinterpret_cast<pid_t (*)()>(::dlsym(libc, "getpid"));
    ::dlclose(libc);
    ASSERT_NE(libc_getpid, nullptr);
    auto loc = resolve_uprobe_target("libc.so.6:getpid");
    ASSERT_TRUE(loc) << loc.err().message;
    auto where = runtime_address(*loc);
    ASSERT_TRUE(where) << where.err().message;
    ASSERT_EQ(*where, address_of(libc_getpid)) << "the probe must be where dlsym points";
    const auto original = code_at(*where);

    counting c = count_at("libc.so.6:getpid");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_NE(code_at(*where), original);

    constexpr uint64_t n = 20000;
    const auto pid = static_cast<uint64_t>(::getpid()); // getpid is hooked: counted in base
    auto *fn = opaque(libc_getpid);
    totals base = read_totals(c.totals);
    for (uint64_t i = 0; i < n; ++i) {
        if (static_cast<uint64_t>(fn()) != pid) {
            ADD_FAILURE() << "getpid returned something else";
            break;
        }
    }
    totals after = read_totals(c.totals);
    EXPECT_EQ(after.entries - base.entries, n);
    EXPECT_EQ(after.returns - base.returns, n);
    EXPECT_EQ(after.sum - base.sum, n * pid);

    ASSERT_TRUE(provider->disable_link(c.entry_link));
    ASSERT_TRUE(provider->disable_link(c.return_link));
    r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(h->attached_count(), 0u);
    EXPECT_EQ(code_at(*where), original);
    base = read_totals(c.totals);
    for (uint64_t i = 0; i < n; ++i) {
        (void)fn();
    }
    after = read_totals(c.totals);
    EXPECT_EQ(after.entries, base.entries);
    EXPECT_EQ(after.returns, base.returns);
}

// Two threads call a function in a tight loop while its links are enabled and disabled 50
// times: results stay right, and every call that started after instantiate() returned and
// ended before the next disable is counted.
TEST_F(Uprobe, AttachAndDetachUnderLoad) {
    counting c = count_at("/proc/self/exe:ut_load");
    ASSERT_TRUE(provider->disable_link(c.entry_link));
    ASSERT_TRUE(provider->disable_link(c.return_link));
    auto h = host();
    ASSERT_TRUE(h->instantiate());

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> started{0}, done{0}, wrong{0};
    std::vector<std::thread> pool;
    for (long t = 0; t < 2; ++t) {
        pool.emplace_back([&, t] {
            auto *fn = opaque(ut_load);
            long i = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                started.fetch_add(1);
                if (fn(t, i) != t + 2 * i) {
                    wrong.fetch_add(1);
                }
                done.fetch_add(1);
                i = (i + 1) & 0xffff;
            }
        });
    }

    uint64_t must_count_total = 0;
    for (int round = 0; round < 50; ++round) {
        totals before = read_totals(c.totals); // nothing attached: stable
        uint64_t done_before_enable = done.load();
        ASSERT_TRUE(provider->enable_link(c.entry_link));
        ASSERT_TRUE(provider->enable_link(c.return_link));
        auto r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        ASSERT_EQ(h->attached_count(), 2u);
        uint64_t started_after_attach = started.load();
        // Let the threads make calls with the probes in place.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (done.load() < started_after_attach + 200 &&
               std::chrono::steady_clock::now() < deadline) {
            std::this_thread::yield();
        }
        uint64_t done_before_disable = done.load();
        ASSERT_TRUE(provider->disable_link(c.entry_link));
        ASSERT_TRUE(provider->disable_link(c.return_link));
        r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        ASSERT_EQ(h->attached_count(), 0u);
        uint64_t started_after_detach = started.load();
        totals after = read_totals(c.totals);

        // The two links attach and detach one after the other, so entries and returns are
        // bounded separately: a call may have its return counted and not its entry.
        uint64_t entries = after.entries - before.entries;
        uint64_t returns = after.returns - before.returns;
        uint64_t must = done_before_disable > started_after_attach
                            ? done_before_disable - started_after_attach
                            : 0;
        uint64_t made = started_after_detach - done_before_enable;
        must_count_total += must;
        EXPECT_GE(entries, must) << "round " << round << ": entries missed";
        EXPECT_GE(returns, must) << "round " << round << ": returns missed";
        EXPECT_LE(entries, made) << "round " << round << ": more entries than calls";
        EXPECT_LE(returns, made) << "round " << round << ": more returns than calls";
    }
    stop = true;
    for (auto &t : pool) {
        t.join();
    }
    EXPECT_EQ(wrong.load(), 0u);
    EXPECT_GT(must_count_total, 0u) << "no call was made with the probes attached";
}

// One instantiate with a binary that is not mapped here, a function the hook cannot patch and
// a good target: the error names both refusals and why; the good link attaches and counts.
TEST_F(Uprobe, RefusalsAndTheOtherLinksStillAttach) {
    loaded_object obj = load(examples + "/uprobe_count.bpf.o");
    uint32_t totals_map = id_of(obj.maps, "totals");
    uint32_t entry = id_of(obj.programs, "count_entry");
    // The int3 padding after ut_tiny, by its address in the file: neither a jump nor a trap
    // can go there.
    Dl_info info{};
    ASSERT_NE(dladdr(reinterpret_cast<void *>(address_of(ut_tiny)), &info), 0);
    const uintptr_t padding = address_of(ut_tiny) + 2;
    const auto padding_before = code_at(padding);
    char padding_args[64];
    std::snprintf(
        padding_args, sizeof padding_args, "/proc/self/exe:0x%lx",
        static_cast<unsigned long>(padding - reinterpret_cast<uintptr_t>(info.dli_fbase)));
    // Resolves in the file, but /usr/bin/true is not mapped in this process.
    attach(entry, attach_type_uprobe, "/usr/bin/true:0x2000");
    attach(entry, attach_type_uprobe, padding_args);
    uint32_t good = attach(entry, attach_type_uprobe, "/proc/self/exe:ut_add");

    auto h = host();
    for (int pass = 1; pass <= 2; ++pass) {
        auto r = h->instantiate();
        ASSERT_FALSE(r) << "pass " << pass;
        const std::string &msg = r.err().message;
        EXPECT_NE(msg.find("/usr/bin/true:0x2000"), std::string::npos) << msg;
        EXPECT_NE(msg.find("not mapped"), std::string::npos) << msg;
        EXPECT_NE(msg.find(padding_args), std::string::npos) << msg;
        EXPECT_NE(msg.find("as a trap probe"), std::string::npos) << msg;
        EXPECT_NE(msg.find("int3"), std::string::npos) << msg;
        EXPECT_EQ(h->attached_count(), 1u);
        EXPECT_TRUE(h->attach_id_of(good).has_value());

        for (long i = 0; i < 1000; ++i) {
            ASSERT_EQ(opaque(ut_add)(i, 1), i + 1);
        }
        // Trying again attaches nothing twice.
        EXPECT_EQ(read_totals(totals_map).entries, 1000u * pass) << "pass " << pass;
    }
    EXPECT_EQ(code_at(padding), padding_before);
}

// Functions a 5-byte jump cannot take (4 bytes up to the ret with another function right
// behind) get an int3 instead: every entry and return counted, the results unchanged, the
// bytes back on detach. The neighbour is untouched.
TEST_F(Uprobe, TrapProbesWhereAJumpCannotGo) {
    auto loc = resolve_uprobe_target("/proc/self/exe:ut_lea4_tight");
    ASSERT_TRUE(loc) << loc.err().message;
    EXPECT_EQ(loc->padding_after, 0u) << "ut_after_tight starts right behind the ret";
    const auto lea4_before = code_at(address_of(ut_lea4_tight));
    const auto next_before = code_at(address_of(ut_after_tight));
    counting lea4 = count_at("/proc/self/exe:ut_lea4_tight");
    {
        auto h = host();
        auto r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        EXPECT_EQ(h->attached_count(), 2u);
        EXPECT_EQ(code_at(address_of(ut_lea4_tight))[0], 0xCC) << "a trap probe";
        EXPECT_EQ(code_at(address_of(ut_after_tight)), next_before);
        uint64_t sum = 0;
        for (long i = 0; i < 1000; ++i) {
            ASSERT_EQ(opaque(ut_lea4_tight)(i), i + 1);
            ASSERT_EQ(opaque(ut_after_tight)(i), i + 2);
            sum += static_cast<uint64_t>(i + 1);
        }
        totals t = read_totals(lea4.totals);
        EXPECT_EQ(t.entries, 1000u);
        EXPECT_EQ(t.returns, 1000u);
        EXPECT_EQ(t.sum, sum);
        EXPECT_EQ(link(lea4.entry_link).runs, 1000u);
    }
    EXPECT_EQ(code_at(address_of(ut_lea4_tight)), lea4_before);
    EXPECT_EQ(opaque(ut_lea4_tight)(41), 42);
}

// decide_hook_site (what bpftime_hookable_share counts) decides as the host installs.
TEST(HookSite, DecidesAsTheHostInstalls) {
    auto decide = [](const char *fn, uintptr_t address) {
        auto loc = resolve_uprobe_target(std::string("/proc/self/exe:") + fn);
        EXPECT_TRUE(loc) << loc.err().message;
        return loc ? decide_hook_site(reinterpret_cast<const uint8_t *>(address),
                                      loc->bytes_to_end + loc->padding_after, loc->bytes_to_end,
                                      loc->padding_after)
                   : hook_site_decision{};
    };
    EXPECT_EQ(decide("ut_add", address_of(ut_add)).kind, hook_site_kind::jump);
    EXPECT_EQ(decide("ut_lea4", address_of(ut_lea4)).kind, hook_site_kind::padding_jump);
    auto tight = decide("ut_lea4_tight", address_of(ut_lea4_tight));
    EXPECT_EQ(tight.kind, hook_site_kind::trap);
    EXPECT_NE(tight.why.find("a 5-byte jump would overwrite what follows"), std::string::npos)
        << tight.why;
    const uint8_t int3s[4] = {0xcc, 0xcc, 0xcc, 0xcc};
    auto none = decide_hook_site(int3s, sizeof int3s, 0, 0);
    EXPECT_EQ(none.kind, hook_site_kind::refused);
    EXPECT_NE(none.why.find("as a trap probe"), std::string::npos) << none.why;
}

// Functions too short for a 5-byte jump (4 bytes up to the ret; a 2-byte tail jump) followed by
// int3 fill that no symbol, unwind entry or relocation names: the jump runs into the fill, so
// no trap is taken; every entry and return counted, the results unchanged, the bytes (fill
// included) back on detach.
TEST_F(Uprobe, ShortFunctionsTakeAJumpThroughTheFillAfterThem) {
    for (const char *fn : {"ut_lea4", "ut_tiny"}) {
        auto loc = resolve_uprobe_target(std::string("/proc/self/exe:") + fn);
        ASSERT_TRUE(loc) << loc.err().message;
        EXPECT_GE(loc->padding_after, 5u - loc->bytes_to_end) << fn;
    }
    const auto lea4_before = code_at(address_of(ut_lea4));
    const auto tiny_before = code_at(address_of(ut_tiny));
    counting lea4 = count_at("/proc/self/exe:ut_lea4");
    counting tiny = count_at("/proc/self/exe:ut_tiny");
    {
        auto h = host();
        auto r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        EXPECT_EQ(h->attached_count(), 4u);
        EXPECT_EQ(code_at(address_of(ut_lea4))[0], 0xE9) << "a jump, not a trap";
        EXPECT_EQ(code_at(address_of(ut_tiny))[0], 0xE9) << "a jump, not a trap";
        uint64_t sum = 0;
        for (long i = 0; i < 1000; ++i) {
            ASSERT_EQ(opaque(ut_lea4)(i), i + 1);
            sum += static_cast<uint64_t>(i + 1);
            ASSERT_EQ(opaque(ut_tiny)(), 0);
        }
        totals t = read_totals(lea4.totals);
        EXPECT_EQ(t.entries, 1000u);
        EXPECT_EQ(t.returns, 1000u);
        EXPECT_EQ(t.sum, sum);
        totals u = read_totals(tiny.totals);
        EXPECT_EQ(u.entries, 1000u);
        EXPECT_EQ(u.returns, 1000u);
        EXPECT_EQ(u.sum, 0u);
        EXPECT_EQ(link(lea4.entry_link).runs, 1000u);
    }
    EXPECT_EQ(code_at(address_of(ut_lea4)), lea4_before);
    EXPECT_EQ(code_at(address_of(ut_tiny)), tiny_before);
    EXPECT_EQ(opaque(ut_lea4)(41), 42);
}

// A program reading far outside its context faults on every run: counted as a fault, the
// probed function unaffected, the next program at the same place still runs.
TEST_F(Uprobe, FaultingProgramsDoNotHurtTheHost) {
    auto insns = vm::assemble("ldxdw %r0, [%r1+4096]\nexit\n");
    ASSERT_TRUE(insns) << insns.err().message;
    auto prog = provider->create_program({"out_of_bounds", 2, "uprobe", *insns, {}});
    ASSERT_TRUE(prog) << prog.err().message;
    uint32_t bad = attach(*prog, attach_type_uprobe, "/proc/self/exe:ut_square");
    uint32_t bad_return = attach(*prog, attach_type_uretprobe, "/proc/self/exe:ut_square");
    counting c = count_at("/proc/self/exe:ut_square", false);
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(h->attached_count(), 3u);

    constexpr long n = 1000;
    for (long i = 0; i < n; ++i) {
        ASSERT_EQ(opaque(ut_square)(i), i * i);
    }
    for (uint32_t id : {bad, bad_return}) {
        store::link_info l = link(id);
        EXPECT_EQ(l.runs, static_cast<uint64_t>(n)) << "link " << id;
        EXPECT_EQ(l.faults, static_cast<uint64_t>(n)) << "link " << id;
    }
    EXPECT_EQ(link(c.entry_link).faults, 0u);
    EXPECT_EQ(read_totals(c.totals).entries, static_cast<uint64_t>(n));
}

// The bytes of a function are patched while attached and exactly the original ones after
// deinstantiate(); then nothing is counted.
TEST_F(Uprobe, DetachRestoresTheOriginalBytes) {
    const uintptr_t at = address_of(ut_restore);
    const auto original = code_at(at);
    counting c = count_at("/proc/self/exe:ut_restore");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_NE(code_at(at), original);
    EXPECT_EQ(code_at(at)[0], 0xe9) << "a jmp rel32 at the function's start";
    EXPECT_EQ(opaque(ut_restore)(5, 1), 14);
    EXPECT_EQ(read_totals(c.totals).entries, 1u);
    EXPECT_EQ(read_totals(c.totals).returns, 1u);

    h->deinstantiate();
    EXPECT_EQ(h->attached_count(), 0u);
    EXPECT_EQ(code_at(at), original);
    EXPECT_EQ(opaque(ut_restore)(5, 1), 14);
    EXPECT_EQ(read_totals(c.totals).entries, 1u);
    EXPECT_EQ(read_totals(c.totals).returns, 1u);
}

unsigned short semaphore_now() {
    return __atomic_load_n(&ut_semaphore, __ATOMIC_SEQ_CST);
}

// Each attach with a semaphore counts itself in while attached; disabling a link and
// deinstantiating count back down to 0.
TEST_F(Uprobe, SemaphoreCountsTheAttachedProbes) {
    auto loc = resolve_uprobe_target("/proc/self/exe:ut_load");
    ASSERT_TRUE(loc) << loc.err().message;
    auto runtime = runtime_address(*loc);
    ASSERT_TRUE(runtime) << runtime.err().message;
    const uintptr_t base = *runtime - loc->address;
    char target[128];
    std::snprintf(target, sizeof target, "/proc/self/exe:ut_load(0x%lx)",
                  static_cast<unsigned long>(reinterpret_cast<uintptr_t>(&ut_semaphore) - base));
    counting c = count_at(target);
    EXPECT_EQ(semaphore_now(), 0);
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(semaphore_now(), 2) << "a uprobe and a uretprobe";
    EXPECT_EQ(opaque(ut_load)(1, 2), 5);
    EXPECT_EQ(read_totals(c.totals).entries, 1u);
    ASSERT_TRUE(provider->disable_link(c.return_link));
    r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(semaphore_now(), 1);
    h->deinstantiate();
    EXPECT_EQ(semaphore_now(), 0);
}

// A site runs its one uprobe straight away and goes back to running a list when a second link
// joins it: one link, then two, then the second alone, each phase with two threads calling,
// every run counted exactly once per link (in the map and in each link's counters), and the
// uretprobe beside them seeing every return throughout.
TEST_F(Uprobe, OneLinkThenTwoThenTheSecondAloneCountExactly) {
    loaded_object obj = load(examples + "/uprobe_count.bpf.o");
    const uint32_t totals_map = id_of(obj.maps, "totals");
    const std::string args = "/proc/self/exe:ut_links";
    const uint32_t first = attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, args);
    const uint32_t second = attach(id_of(obj.programs, "count_entry"), attach_type_uprobe, args);
    const uint32_t returns =
        attach(id_of(obj.programs, "count_return"), attach_type_uretprobe, args);
    ASSERT_TRUE(provider->disable_link(second));
    auto h = host();

    constexpr int threads = 2;
    constexpr long per_thread = 20000;
    constexpr uint64_t calls = threads * per_thread;
    uint64_t expected_sum = 0;
    auto call_from_threads = [&] {
        expected_sum += sum_of_calls(ut_links, 3, threads, per_thread);
    };
    struct phase {
        const char *what;
        bool first_on, second_on;
    };
    uint64_t entries = 0, returned = 0, first_runs = 0, second_runs = 0;
    for (const phase &p :
         {phase{"the first link alone", true, false}, phase{"both links", true, true},
          phase{"the second link alone", false, true}}) {
        SCOPED_TRACE(p.what);
        ASSERT_TRUE(p.first_on ? provider->enable_link(first) : provider->disable_link(first));
        ASSERT_TRUE(p.second_on ? provider->enable_link(second) : provider->disable_link(second));
        auto r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        ASSERT_EQ(h->attached_count(), 1u + p.first_on + p.second_on);
        call_from_threads();
        entries += calls * (p.first_on + p.second_on);
        first_runs += p.first_on ? calls : 0;
        second_runs += p.second_on ? calls : 0;
        totals got = read_totals(totals_map);
        EXPECT_EQ(got.entries, entries);
        returned += calls;
        EXPECT_EQ(got.returns, returned);
        EXPECT_EQ(got.sum, expected_sum);
        EXPECT_EQ(link(first).runs, first_runs);
        EXPECT_EQ(link(second).runs, second_runs);
        EXPECT_EQ(link(returns).runs, returned);
    }
}

// bpf_override_return: the probed function returns the program's value without running, on
// every thread, while the calls it leaves alone return what they compute.
TEST_F(Uprobe, OverrideReturnOnSeveralThreads) {
    loaded_object obj = load(objects + "/override_square.bpf.o");
    attach(id_of(obj.programs, "override_square"), attach_type_uprobe, "/proc/self/exe:ut_square");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(opaque(ut_square)(3), 9);
    EXPECT_EQ(opaque(ut_square)(4), 16);
    EXPECT_EQ(opaque(ut_square)(7), 1234);
    EXPECT_EQ(opaque(ut_square)(3), 9);
    std::atomic<long> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t) {
        pool.emplace_back([&] {
            auto *fn = opaque(ut_square);
            for (int i = 0; i < 20000; ++i) {
                if (fn(7) != 1234 || fn(3) != 9) {
                    wrong.fetch_add(1);
                }
            }
        });
    }
    for (auto &t : pool) {
        t.join();
    }
    EXPECT_EQ(wrong.load(), 0);
    h->deinstantiate();
    EXPECT_EQ(opaque(ut_square)(7), 49) << "detached: the function runs again";
}

// A program that checks what a probe gives it: get_attach_cookie must be cookie and
// get_func_ip the probed address, else it faults (reads past the registers), which its link
// counts. Assembled, so the test says exactly what runs.
std::vector<vm::ebpf_inst> checking_program(uint64_t cookie, uintptr_t func_ip) {
    auto insns =
        vm::assemble("mov %r6, %r1\ncall 174\nlddw %r1, " + std::to_string(cookie) +
                     "\njne %r0, %r1, bad\ncall 173\nlddw %r1, " + std::to_string(func_ip) +
                     "\njne %r0, %r1, bad\nmov %r0, 0\nexit\nbad:\n"
                     "ldxdw %r0, [%r6+4096]\nexit\n");
    EXPECT_TRUE(insns) << insns.err().message;
    return insns ? *insns : std::vector<vm::ebpf_inst>{};
}

// One link at a site (its program run straight from the site's prepared options), then a
// second link joins it (the list path), then the first goes and the second runs alone: each
// phase from three threads, every run counted exactly once per link, each link's program
// seeing its own cookie and the probed address (a program expecting another cookie faults on
// every run, and those runs are counted as failed).
TEST_F(Uprobe, CookiesAndCountsExactAsASiteGoesFromOneLinkToTwoAndBack) {
    const uintptr_t at = address_of(ut_cookie);
    auto make = [&](const char *prog_name, uint64_t expects) {
        auto p =
            provider->create_program({prog_name, 2, "uprobe", checking_program(expects, at), {}});
        EXPECT_TRUE(p) << p.err().message;
        return p ? *p : 0;
    };
    const uint32_t expects_7 = make("expects_7", 7);
    const uint32_t expects_9 = make("expects_9", 9);
    auto target = provider->create_attach_target(attach_type_uprobe, "/proc/self/exe:ut_cookie");
    ASSERT_TRUE(target) << target.err().message;
    auto first = provider->attach_program(expects_7, *target, 7);
    ASSERT_TRUE(first) << first.err().message;
    // Its cookie is 9 and its program expects 7: every run faults.
    auto second = provider->attach_program(expects_7, *target, 9);
    ASSERT_TRUE(second) << second.err().message;
    auto third = provider->attach_program(expects_9, *target, 9);
    ASSERT_TRUE(third) << third.err().message;
    ASSERT_TRUE(provider->disable_link(*second));
    ASSERT_TRUE(provider->disable_link(*third));
    auto h = host();

    constexpr int threads = 3;
    constexpr long per_thread = 20000;
    constexpr uint64_t calls = threads * per_thread;
    auto call_from_threads = [&] {
        std::atomic<long> wrong{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                auto *fn = opaque(ut_cookie);
                for (long i = 0; i < per_thread; ++i) {
                    if (fn(t, i) != t * 5 + i) {
                        wrong.fetch_add(1);
                    }
                }
            });
        }
        for (auto &t : pool) {
            t.join();
        }
        EXPECT_EQ(wrong.load(), 0);
    };
    struct phase {
        const char *what;
        bool first_on, second_on, third_on;
    };
    uint64_t runs[3] = {0, 0, 0};
    uint64_t second_faults = 0;
    const uint32_t links[3] = {*first, *second, *third};
    for (const phase &p :
         {phase{"the first link alone", true, false, false},
          phase{"the first and a faulting second", true, true, false},
          phase{"all three", true, true, true}, phase{"the third alone", false, false, true},
          phase{"the faulting second alone", false, true, false}}) {
        SCOPED_TRACE(p.what);
        const bool on[3] = {p.first_on, p.second_on, p.third_on};
        for (int i = 0; i < 3; ++i) {
            ASSERT_TRUE(on[i] ? provider->enable_link(links[i]) : provider->disable_link(links[i]));
        }
        auto r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        ASSERT_EQ(h->attached_count(), 0u + on[0] + on[1] + on[2]);
        call_from_threads();
        for (int i = 0; i < 3; ++i) {
            runs[i] += on[i] ? calls : 0;
        }
        second_faults += p.second_on ? calls : 0;
        for (int i = 0; i < 3; ++i) {
            EXPECT_EQ(link(links[i]).runs, runs[i]) << "link " << links[i];
        }
        EXPECT_EQ(link(*first).faults, 0u);
        EXPECT_EQ(link(*second).faults, second_faults);
        EXPECT_EQ(link(*third).faults, 0u);
    }
}

// A site whose only uprobe and only uretprobe fault on every run (each runs alone, straight
// from the site's prepared options): every run counted, every one as failed, the function's
// results untouched; a counting uprobe elsewhere still counts.
TEST_F(Uprobe, FaultsOfASiteSingleProgramsAreCountedAsFailed) {
    auto insns = vm::assemble("ldxdw %r0, [%r1+4096]\nexit\n");
    ASSERT_TRUE(insns) << insns.err().message;
    auto prog = provider->create_program({"out_of_bounds", 2, "uprobe", *insns, {}});
    ASSERT_TRUE(prog) << prog.err().message;
    const uint32_t bad = attach(*prog, attach_type_uprobe, "/proc/self/exe:ut_fault_alone");
    const uint32_t bad_return =
        attach(*prog, attach_type_uretprobe, "/proc/self/exe:ut_fault_alone");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(h->attached_count(), 2u);

    constexpr long n = 3000;
    for (long i = 0; i < n; ++i) {
        ASSERT_EQ(opaque(ut_fault_alone)(i), i + 11);
    }
    for (uint32_t id : {bad, bad_return}) {
        store::link_info l = link(id);
        EXPECT_EQ(l.runs, static_cast<uint64_t>(n)) << "link " << id;
        EXPECT_EQ(l.faults, static_cast<uint64_t>(n)) << "link " << id;
    }
}

// More threads than a process's record has stripes of its own (six): a uprobe's and a
// uretprobe's link counters and the program's map still count every call exactly once.
TEST_F(Uprobe, LinkCountersExactFromManyThreads) {
    counting c = count_at("/proc/self/exe:ut_many");
    auto h = host();
    auto r = h->instantiate();
    ASSERT_TRUE(r) << r.err().message;
    constexpr int threads = 10;
    constexpr long per_thread = 10000;
    std::atomic<long> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            auto *fn = opaque(ut_many);
            for (long i = 0; i < per_thread; ++i) {
                if (fn(t) != t + 1) {
                    wrong.fetch_add(1);
                }
            }
        });
    }
    for (auto &t : pool) {
        t.join();
    }
    EXPECT_EQ(wrong.load(), 0);
    constexpr uint64_t calls = threads * per_thread;
    totals got = read_totals(c.totals);
    EXPECT_EQ(got.entries, calls);
    EXPECT_EQ(got.returns, calls);
    EXPECT_EQ(link(c.entry_link).runs, calls);
    EXPECT_EQ(link(c.return_link).runs, calls);
    EXPECT_EQ(link(c.entry_link).faults, 0u);
    EXPECT_EQ(link(c.return_link).faults, 0u);
}

// A uretprobe alone at a function's entry (its hook return-only: no entry handler, no vector
// state saved on entry), then a uprobe beside it, then the uretprobe alone again: from three
// threads, every return counted and its value summed, every entry counted while the uprobe is
// attached and none otherwise.
TEST_F(Uprobe, AUretprobeAloneThenWithAUprobeThenAloneAgainCountsExactly) {
    counting c = count_at("/proc/self/exe:ut_returns");
    auto h = host();
    constexpr int threads = 3;
    constexpr long per_thread = 20000;
    constexpr uint64_t calls = threads * per_thread;
    uint64_t expected_sum = 0;
    uint64_t entries = 0, returned = 0;
    for (bool with_uprobe : {false, true, false}) {
        SCOPED_TRACE(with_uprobe ? "with the uprobe" : "the uretprobe alone");
        ASSERT_TRUE(with_uprobe ? provider->enable_link(c.entry_link)
                                : provider->disable_link(c.entry_link));
        auto r = h->instantiate();
        ASSERT_TRUE(r) << r.err().message;
        ASSERT_EQ(h->attached_count(), with_uprobe ? 2u : 1u);
        expected_sum += sum_of_calls(ut_returns, 7, threads, per_thread);
        entries += with_uprobe ? calls : 0;
        returned += calls;
        totals got = read_totals(c.totals);
        EXPECT_EQ(got.entries, entries);
        EXPECT_EQ(got.returns, returned);
        EXPECT_EQ(got.sum, expected_sum);
        EXPECT_EQ(link(c.return_link).runs, returned);
        EXPECT_EQ(link(c.entry_link).runs, entries);
    }
}

} // namespace
} // namespace bpftime
