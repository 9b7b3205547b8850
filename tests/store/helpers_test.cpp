// SPDX-License-Identifier: MIT
// Helpers as programs call them: results, and bad arguments stopping the program.
#include <bpftime/attach/attach.hpp>
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/vm/assembler.hpp>

#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bpftime {
namespace {

struct HelpersTest : test::provider_fixture {
    HelpersTest() : provider_fixture("bpftime-helpers-test") {}

    uint32_t map(maps::map_spec spec) {
        auto id = provider->create_map({"m", spec});
        EXPECT_TRUE(id.ok()) << id.err().message;
        return id.ok() ? *id : 0;
    }

    // Assembles, stores, compiles and runs a program on ctx.
    result<uint64_t> run(const std::string &text, std::vector<uint32_t> maps_used = {},
                         void *ctx = nullptr, uint64_t len = 0, const vm::run_options &opts = {}) {
        auto insns = vm::assemble(text);
        if (!insns) {
            return insns.err();
        }
        auto id = provider->create_program({"p", 0, "", *insns, maps_used});
        if (!id) {
            return id.err();
        }
        auto compiled = provider->manager().compile(*id);
        if (!compiled) {
            return compiled.err();
        }
        return (*compiled)->run(ctx, len, opts);
    }
};

std::string ref(uint32_t map) {
    return "lddw %r1, map_fd(" + std::to_string(map) + ")\n";
}

void expect_fault(const result<uint64_t> &r, const std::string &text) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, vm::fault_helper) << r.err().message;
    EXPECT_NE(r.err().message.find(text), std::string::npos) << r.err().message;
}

TEST_F(HelpersTest, MapLookupUpdateDelete) {
    uint32_t h = map({maps::map_type::hash, 4, 8, 16, 0});
    // key 3 = 40, then read it back through lookup.
    auto r = run("stw [%r10-4], 3\nstdw [%r10-16], 40\n" + ref(h) +
                     "mov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\nmov %r4, 0\n"
                     "call 2\njne %r0, 0, out\n" +
                     ref(h) +
                     "mov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, out\nldxdw %r0, [%r0]\n"
                     "out:\nexit\n",
                 {h});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 40u);
    // Delete, then a second delete says ENOENT.
    r = run("stw [%r10-4], 3\n" + ref(h) + "mov %r2, %r10\nadd %r2, -4\ncall 3\n" + ref(h) +
                "mov %r2, %r10\nadd %r2, -4\ncall 3\nexit\n",
            {h});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(static_cast<int64_t>(*r), -ENOENT);
}

TEST_F(HelpersTest, MapValuesAreTheOnlyMemoryBesideThem) {
    uint32_t a = map({maps::map_type::array, 4, 8, 4, 0});
    // Writing one past the last value of the array is outside the map's value area.
    auto r = run("stw [%r10-4], 3\n" + ref(a) +
                     "mov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, out\nstdw [%r0+8], 1\n"
                     "out:\nmov %r0, 0\nexit\n",
                 {a});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, vm::fault_out_of_bounds) << r.err().message;
}

TEST_F(HelpersTest, BadArgumentsStopTheProgram) {
    uint32_t a = map({maps::map_type::array, 4, 8, 4, 0});
    // r1 is not a map.
    expect_fault(run("mov %r1, 12345\nmov %r2, %r10\nadd %r2, -4\ncall 1\nexit\n"),
                 "map_lookup_elem: r1 is not a map");
    // The key pointer is outside the program's memory.
    expect_fault(run(ref(a) + "mov %r2, 64\ncall 1\nexit\n", {a}),
                 "map_lookup_elem: the key is outside");
    // A record pointer ringbuf_reserve never returned.
    expect_fault(run("mov %r1, %r10\nadd %r1, -8\nmov %r2, 0\ncall 132\nexit\n"),
                 "ringbuf_submit: the pointer is not a record");
    // get_current_comm into memory the program may not write.
    expect_fault(run("mov %r1, 4096\nmov %r2, 16\ncall 16\nexit\n"),
                 "get_current_comm: the buffer is not writable");
}

TEST_F(HelpersTest, RingBufferReserveSubmitDiscard) {
    uint32_t rb = map({maps::map_type::ringbuf, 0, 0, 4096, 0});
    auto r = run(ref(rb) +
                     "mov %r2, 16\nmov %r3, 0\ncall 131\njeq %r0, 0, out\nstdw [%r0], 7\n"
                     "stdw [%r0+8], 8\nmov %r1, %r0\nmov %r2, 0\ncall 132\n" +
                     ref(rb) +
                     "mov %r2, 8\nmov %r3, 0\ncall 131\njeq %r0, 0, out\nmov %r1, %r0\nmov %r2, 0\n"
                     "call 133\nmov %r0, 1\nout:\nexit\n",
                 {rb});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 1u);
    auto view = seg->map_view(rb);
    std::vector<std::vector<uint8_t>> got;
    ASSERT_TRUE(view->ringbuf_consume([&](std::span<const uint8_t> rec) {
                        got.emplace_back(rec.begin(), rec.end());
                    })
                    .ok());
    ASSERT_EQ(got.size(), 1u) << "the discarded record is not delivered";
    ASSERT_EQ(got[0].size(), 16u);
    EXPECT_EQ(got[0][0], 7);
    EXPECT_EQ(got[0][8], 8);
}

TEST_F(HelpersTest, UnsubmittedReservationsAreDiscardedAfterTheRun) {
    uint32_t rb = map({maps::map_type::ringbuf, 0, 0, 4096, 0});
    // Reserves and exits without submitting.
    auto r = run(ref(rb) + "mov %r2, 16\nmov %r3, 0\ncall 131\nmov %r0, 0\nexit\n", {rb});
    ASSERT_TRUE(r.ok()) << r.err().message;
    r = run(ref(rb) + "mov %r2, %r10\nadd %r2, -8\nstdw [%r10-8], 5\nmov %r3, 8\nmov %r4, 0\n"
                      "call 130\nexit\n",
            {rb});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 0u);
    auto view = seg->map_view(rb);
    uint64_t n = 0;
    ASSERT_TRUE(view->ringbuf_consume([&](std::span<const uint8_t> rec) {
                        n++;
                        EXPECT_EQ(rec[0], 5);
                    })
                    .ok());
    EXPECT_EQ(n, 1u) << "the consumer is not stalled by the abandoned reservation";
}

TEST_F(HelpersTest, IdentityAndTime) {
    prctl(PR_SET_NAME, "helpertest");
    auto pid = run("call 14\nexit\n");
    ASSERT_TRUE(pid.ok());
    EXPECT_EQ(*pid >> 32, static_cast<uint64_t>(getpid()));
    EXPECT_EQ(*pid & 0xffffffff, static_cast<uint64_t>(gettid()));
    auto ids = run("call 15\nexit\n");
    EXPECT_EQ(*ids, static_cast<uint64_t>(getgid()) << 32 | getuid());
    // get_current_comm into the stack, then return the first 8 bytes.
    auto comm = run("mov %r1, %r10\nadd %r1, -16\nmov %r2, 16\ncall 16\nldxdw %r0, [%r10-16]\n"
                    "exit\n");
    ASSERT_TRUE(comm.ok()) << comm.err().message;
    char text[9] = {};
    std::memcpy(text, &*comm, 8);
    EXPECT_STREQ(text, "helperte");
    auto t1 = run("call 5\nexit\n");
    auto t2 = run("call 5\nexit\n");
    EXPECT_GT(*t2, *t1);
    auto cpu = run("call 8\nexit\n");
    EXPECT_LT(*cpu, 4096u);
    // Two random numbers in a row differ (a 1 in 2^32 chance of a false failure).
    auto rnd = run("call 7\nmov %r6, %r0\ncall 7\nsub %r0, %r6\nexit\n");
    EXPECT_NE(*rnd, 0u);
}

// get_current_pid_tgid (14) is read once per thread: another thread, and the thread of a
// forked child, get their own ids, not the ones read before.
TEST_F(HelpersTest, PidTgidIsEachThreadsAndAForkedChilds) {
    // Compiled once, here: the child of a fork only runs it (a compiler thread of the parent's
    // may hold a lock the child would wait for).
    auto insns = vm::assemble("call 14\nexit\n");
    ASSERT_TRUE(insns.ok());
    auto id = provider->create_program({"p", 0, "", *insns, {}});
    ASSERT_TRUE(id.ok()) << id.err().message;
    auto compiled = provider->manager().compile(*id);
    ASSERT_TRUE(compiled.ok()) << compiled.err().message;
    auto pid_tgid = [&]() -> uint64_t {
        auto r = (*compiled)->run(nullptr, 0, {});
        return r.ok() ? *r : 0;
    };
    const uint64_t here = pid_tgid();
    EXPECT_EQ(here, static_cast<uint64_t>(getpid()) << 32 | static_cast<uint32_t>(gettid()));
    uint64_t other = 0, other_want = 0;
    std::thread([&] {
        other_want = static_cast<uint64_t>(getpid()) << 32 | static_cast<uint32_t>(gettid());
        other = pid_tgid();
    }).join();
    EXPECT_EQ(other, other_want);
    EXPECT_NE(other, here);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t child = fork();
    if (child == 0) {
        uint64_t v = pid_tgid();
        (void)!write(fds[1], &v, sizeof v);
        _exit(0);
    }
    uint64_t from_child = 0;
    EXPECT_EQ(read(fds[0], &from_child, sizeof from_child),
              static_cast<ssize_t>(sizeof from_child));
    waitpid(child, nullptr, 0);
    close(fds[0]);
    close(fds[1]);
    EXPECT_EQ(from_child, static_cast<uint64_t>(child) << 32 | static_cast<uint32_t>(child));
    EXPECT_EQ(pid_tgid(), here) << "the parent's own value is unchanged";
}

uint64_t clock_now(clockid_t clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// ktime_get_ns (5), ktime_get_boot_ns (125) and ktime_get_coarse_ns (160) read the kernel's
// clocks: each lies between two clock_gettime() readings of its clock taken around the run
// (the coarse clock is itself read coarsely, so it is compared with CLOCK_MONOTONIC_COARSE)
// and never goes backwards.
TEST_F(HelpersTest, TimeHelpersReadTheKernelsClocks) {
    struct clock_helper {
        int id;
        clockid_t clock;
    };
    for (auto [id, clock] : {clock_helper{5, CLOCK_MONOTONIC}, clock_helper{125, CLOCK_BOOTTIME},
                             clock_helper{160, CLOCK_MONOTONIC_COARSE}}) {
        SCOPED_TRACE("helper " + std::to_string(id));
        const std::string text = "call " + std::to_string(id) + "\nexit\n";
        uint64_t last = 0;
        for (int i = 0; i < 20; i++) {
            uint64_t before = clock_now(clock);
            auto t = run(text);
            uint64_t after = clock_now(clock);
            ASSERT_TRUE(t.ok()) << t.err().message;
            EXPECT_GE(*t, before);
            EXPECT_LE(*t, after);
            EXPECT_GE(*t, last);
            last = *t;
        }
    }
}

// get_func_ip and get_attach_cookie report what the host said about the run, and 0 when it
// said nothing.
TEST_F(HelpersTest, FuncIpAndCookieComeFromTheHost) {
    vm::run_options opts;
    opts.info.func_ip = 0x401234;
    opts.info.attach_cookie = 77;
    auto ip = run("call 173\nexit\n", {}, nullptr, 0, opts);
    ASSERT_TRUE(ip.ok()) << ip.err().message;
    EXPECT_EQ(*ip, 0x401234u);
    auto cookie = run("call 174\nexit\n", {}, nullptr, 0, opts);
    ASSERT_TRUE(cookie.ok()) << cookie.err().message;
    EXPECT_EQ(*cookie, 77u);
    EXPECT_EQ(*run("call 173\nexit\n"), 0u);
    EXPECT_EQ(*run("call 174\nexit\n"), 0u);
}

TEST_F(HelpersTest, ProbeReadCopiesAndFaultsSafely) {
    static const uint64_t secret = 0x1122334455667788;
    std::string addr = std::to_string(reinterpret_cast<uint64_t>(&secret));
    auto r = run("lddw %r3, " + addr +
                 "\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 4\nldxdw %r0, [%r10-8]\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, secret);
    // An unmapped address gives -EFAULT, not a crash.
    r = run("mov %r3, 16\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 112\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(static_cast<int64_t>(*r), -EFAULT);
    // probe_read_str returns the length with the NUL.
    static const char text[] = "hello";
    r = run("lddw %r3, " + std::to_string(reinterpret_cast<uint64_t>(text)) +
            "\nmov %r1, %r10\nadd %r1, -16\nmov %r2, 16\ncall 45\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 6u);
}

// probe_read_kernel (113) and probe_read_kernel_str (115) read this process's memory as the
// user variants do (BPF_CORE_READ emits them); a bad address gives -EFAULT and a zeroed buffer.
TEST_F(HelpersTest, ProbeReadKernelReadsThisProcess) {
    static const uint64_t secret = 0x0102030405060708;
    auto r = run("lddw %r3, " + std::to_string(reinterpret_cast<uint64_t>(&secret)) +
                 "\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 113\nldxdw %r0, [%r10-8]\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, secret);
    // The destination is filled first, then a read of a kernel address: -EFAULT, zeroed.
    r = run("stdw [%r10-8], -1\nmov %r3, -2130706432\nmov %r1, %r10\nadd %r1, -8\n"
            "mov %r2, 8\ncall 113\nldxdw %r6, [%r10-8]\nlsh %r0, 32\nor %r0, %r6\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, static_cast<uint64_t>(static_cast<uint32_t>(-EFAULT)) << 32);
    static const char text[] = "kernel";
    r = run("lddw %r3, " + std::to_string(reinterpret_cast<uint64_t>(text)) +
            "\nmov %r1, %r10\nadd %r1, -16\nmov %r2, 16\ncall 115\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 7u);
    r = run("stdw [%r10-8], -1\nmov %r3, 16\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 115\n"
            "ldxdw %r6, [%r10-8]\nlsh %r0, 32\nor %r0, %r6\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, static_cast<uint64_t>(static_cast<uint32_t>(-EFAULT)) << 32);
    // A destination outside the program's memory stops it, naming the helper it called.
    expect_fault(run("mov %r1, 16\nmov %r2, 8\nmov %r3, 16\ncall 113\nexit\n"),
                 "probe_read_kernel: the destination");
    expect_fault(run("mov %r1, 16\nmov %r2, 8\nmov %r3, 16\ncall 115\nexit\n"),
                 "probe_read_kernel_str: the destination");
}

// There is no task_struct in user space: get_current_task (35) and get_current_task_btf (158)
// give 0, which programs check before use.
TEST_F(HelpersTest, CurrentTaskIsNull) {
    EXPECT_EQ(*run("call 35\nexit\n"), 0u);
    EXPECT_EQ(*run("call 158\nexit\n"), 0u);
}

// current_task_under_cgroup (37) on a cgroup array: -EAGAIN for an empty slot, -E2BIG past
// max_entries, 1 for a cgroup this process is in (the hierarchy's root), 0 for one it is not
// in; a map of another type stops the program.
TEST_F(HelpersTest, CurrentTaskUnderCgroup) {
    uint32_t cg = map({maps::map_type::cgroup_array, 4, 4, 2, 0});
    const std::string call = ref(cg) + "mov %r2, ";
    auto under = [&](int index) {
        auto r = run(call + std::to_string(index) + "\ncall 37\nexit\n", {cg});
        EXPECT_TRUE(r.ok()) << r.err().message;
        return r.ok() ? static_cast<int64_t>(*r) : INT64_MIN;
    };
    EXPECT_EQ(under(0), -EAGAIN);
    EXPECT_EQ(under(2), -E2BIG);
    auto ancestry = maps::current_cgroup_ancestry();
    ASSERT_TRUE(ancestry.ok()) << ancestry.err().message;
    std::string mount;
    {
        std::ifstream in("/proc/self/mountinfo");
        std::string line;
        while (mount.empty() && std::getline(in, line)) {
            if (line.find(" - cgroup2 ") != std::string::npos) {
                std::istringstream f(line);
                std::string id, parent, dev, root;
                f >> id >> parent >> dev >> root >> mount;
            }
        }
    }
    if (mount.empty()) {
        GTEST_SKIP() << "no cgroup2 file system is mounted";
    }
    std::string other = mount + "/bpftime-helpers-test-" + std::to_string(getpid());
    if (mkdir(other.c_str(), 0755) != 0) {
        GTEST_SKIP() << "cannot create a cgroup under " << mount << ": " << strerror(errno);
    }
    auto opened = provider->open_map(cg);
    ASSERT_TRUE(opened.ok()) << opened.err().message;
    int root_fd = ::open(mount.c_str(), O_RDONLY | O_DIRECTORY);
    int other_fd = ::open(other.c_str(), O_RDONLY | O_DIRECTORY);
    uint32_t k0 = 0, k1 = 1;
    auto key = [](const uint32_t &k) {
        return std::span(reinterpret_cast<const uint8_t *>(&k), 4);
    };
    auto val = [](const int &fd) { return std::span(reinterpret_cast<const uint8_t *>(&fd), 4); };
    EXPECT_TRUE((*opened)->write(key(k0), val(root_fd), maps::update_any).ok());
    EXPECT_TRUE((*opened)->write(key(k1), val(other_fd), maps::update_any).ok());
    ::close(root_fd);
    ::close(other_fd);
    rmdir(other.c_str());
    EXPECT_EQ(under(0), 1);
    EXPECT_EQ(under(1), 0);
    uint32_t h = map({maps::map_type::hash, 4, 4, 2, 0});
    expect_fault(run(ref(h) + "mov %r2, 0\ncall 37\nexit\n", {h}),
                 "current_task_under_cgroup: r1 is a hash map, not a cgroup_array");
}

// The kernel-read, task and cgroup helpers go where probe_read goes: probes keep them, the nginx
// URL filter (which may not read its host's memory or name its process) does not get them.
TEST(HelperSets, KernelReadsFollowProbeRead) {
    helpers::register_all();
    auto uprobe = find_attach_type(attach_type_uprobe);
    auto uretprobe = find_attach_type(attach_type_uretprobe);
    auto nginx = find_attach_type(attach_type_nginx_url);
    ASSERT_TRUE(uprobe && uretprobe && nginx);
    for (uint32_t id : {4u, 113u, 115u, 35u, 37u, 158u}) {
        SCOPED_TRACE("helper " + std::to_string(id));
        EXPECT_TRUE(allows_helper(*uprobe, id));
        EXPECT_TRUE(allows_helper(*uretprobe, id));
        EXPECT_FALSE(allows_helper(*nginx, id));
        EXPECT_NE(vm::helper_registry::global().find(id), nullptr) << "registered";
    }
}

// Request filters may push, pop and peek (they touch only the map); signals and snprintf (whose
// %us reads the host's memory) stay with the probes.
TEST(HelperSets, QueueHelpersForFiltersSignalsForProbes) {
    helpers::register_all();
    auto uprobe = find_attach_type(attach_type_uprobe);
    auto nginx = find_attach_type(attach_type_nginx_url);
    ASSERT_TRUE(uprobe && nginx);
    for (uint32_t id : {87u, 88u, 89u, 109u, 117u, 165u}) {
        SCOPED_TRACE("helper " + std::to_string(id));
        EXPECT_TRUE(allows_helper(*uprobe, id));
        EXPECT_EQ(allows_helper(*nginx, id), id >= 87 && id <= 89);
        EXPECT_NE(vm::helper_registry::global().find(id), nullptr) << "registered";
    }
}

// Every pointer push, pop, peek and snprintf take is checked: one outside the program's memory
// stops the program naming the helper and the argument.
TEST_F(HelpersTest, QueueHelpersAndSnprintfCheckEveryPointer) {
    uint32_t q = map({maps::map_type::queue, 0, 8, 4, 0});
    expect_fault(run(ref(q) + "mov %r2, 16\nmov %r3, 0\ncall 87\nexit\n", {q}),
                 "map_push_elem: the value is outside the program's memory");
    expect_fault(run(ref(q) + "mov %r2, 16\ncall 88\nexit\n", {q}),
                 "map_pop_elem: the value is not writable program memory");
    expect_fault(run(ref(q) + "mov %r2, 16\ncall 89\nexit\n", {q}),
                 "map_peek_elem: the value is not writable program memory");
    uint32_t b = map({maps::map_type::bloom_filter, 0, 8, 4, 0});
    expect_fault(run(ref(b) + "mov %r2, 16\ncall 89\nexit\n", {b}),
                 "map_peek_elem: the value is outside the program's memory");
    // "[%s]" and its NUL at fp-8; the argument array at fp-16; the output at fp-32.
    const std::string fmt = "stw [%r10-8], 0x5d73255b\nstw [%r10-4], 0\n";
    expect_fault(run(fmt + "mov %r1, 16\nmov %r2, 8\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\n"
                           "mov %r5, 0\ncall 165\nexit\n"),
                 "snprintf: the output buffer is not writable program memory");
    expect_fault(run("stw [%r10-4], 0x41414141\nstdw [%r10-16], 0\nmov %r1, %r10\nadd %r1, -16\n"
                     "mov %r2, 8\nmov %r3, %r10\nadd %r3, -4\nmov %r4, 0\nmov %r5, 0\n"
                     "call 165\nexit\n"),
                 "snprintf: the format is not a NUL-terminated string in the program's memory");
    expect_fault(run(fmt + "stdw [%r10-32], 0\nstdw [%r10-24], 0\nmov %r1, %r10\nadd %r1, -32\n"
                           "mov %r2, 16\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 16\nmov %r5, 8\n"
                           "call 165\nexit\n"),
                 "snprintf: the argument array is outside the program's memory");
    // A %s pointing outside the program's memory prints nothing, as the kernel's on a fault.
    auto r = run(fmt + "stdw [%r10-16], 16\nstdw [%r10-32], 0\nstdw [%r10-24], 0\n"
                       "mov %r1, %r10\nadd %r1, -32\nmov %r2, 16\nmov %r3, %r10\nadd %r3, -8\n"
                       "mov %r4, %r10\nadd %r4, -16\nmov %r5, 8\ncall 165\nmov %r6, %r0\n"
                       "lsh %r6, 32\nldxw %r0, [%r10-32]\nor %r0, %r6\nexit\n");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r >> 32, 3u) << "\"[]\" and the NUL";
    EXPECT_EQ(*r & 0xffffffff, 0x5d5bu) << "[]";
}

// A program's lookup in a cgroup array finds nothing: its slots are not values.
TEST_F(HelpersTest, CgroupArrayLookupFindsNothing) {
    uint32_t cg = map({maps::map_type::cgroup_array, 4, 4, 2, 0});
    auto r =
        run("stw [%r10-4], 0\n" + ref(cg) + "mov %r2, %r10\nadd %r2, -4\ncall 1\nexit\n", {cg});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 0u);
}

TEST_F(HelpersTest, StrncmpAndTracePrintk) {
    // "abc\0" on the stack against itself and against "abd\0".
    std::string setup = "stw [%r10-8], 0x00636261\nstw [%r10-16], 0x00646261\n";
    auto same = run(setup + "mov %r1, %r10\nadd %r1, -8\nmov %r2, 4\nmov %r3, %r10\n"
                            "add %r3, -8\ncall 182\nexit\n");
    ASSERT_TRUE(same.ok()) << same.err().message;
    EXPECT_EQ(*same, 0u);
    auto less = run(setup + "mov %r1, %r10\nadd %r1, -8\nmov %r2, 4\nmov %r3, %r10\n"
                            "add %r3, -16\ncall 182\nexit\n");
    EXPECT_LT(static_cast<int64_t>(*less), 0);
    // trace_printk("%d\n", 42) writes "42\n" (3 characters) to stderr.
    testing::internal::CaptureStderr();
    auto printed = run("stw [%r10-4], 0x000a6425\nmov %r1, %r10\nadd %r1, -4\nmov %r2, 4\n"
                       "mov %r3, 42\ncall 6\nexit\n");
    std::string err = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(printed.ok()) << printed.err().message;
    EXPECT_EQ(*printed, 3u);
    EXPECT_NE(err.find("trace: 42"), std::string::npos) << err;
}

// trace_printk's %s prints a string from memory the program may read, and "(fault)" for an
// address outside it (never a fault of the run).
TEST_F(HelpersTest, TracePrintkPrintsStrings) {
    // "%s\n" at r10-4, "hi\0" at r10-8.
    const std::string setup = "stw [%r10-4], 0x000a7325\nstw [%r10-8], 0x00006968\n"
                              "mov %r1, %r10\nadd %r1, -4\nmov %r2, 4\n";
    testing::internal::CaptureStderr();
    auto printed = run(setup + "mov %r3, %r10\nadd %r3, -8\ncall 6\nexit\n");
    std::string err = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(printed.ok()) << printed.err().message;
    EXPECT_NE(err.find("trace: hi\n"), std::string::npos) << err;
    EXPECT_EQ(*printed, 3u);
    testing::internal::CaptureStderr();
    auto outside = run(setup + "mov %r3, 16\ncall 6\nexit\n");
    err = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(outside.ok()) << outside.err().message;
    EXPECT_NE(err.find("trace: (fault)"), std::string::npos) << err;
}

// get_stackid and get_stack walk the user stack from the registers the probe gives (rip, the
// return address at the stack top at a function's first instruction, then the rbp chain, as the
// kernel walks user stacks), here a stack built in memory.
struct fake_stack {
    // pt_regs as 21 words: rbp at 4, rip at 16, rsp at 19.
    uint64_t regs[21] = {};
    uint64_t top[1] = {0x401111};       // the return address at the stack top
    uint64_t frame2[2] = {0, 0x403333}; // the outermost frame: saved rbp 0, return address
    uint64_t frame1[2] = {0, 0x402222}; // saved rbp -> frame2
    fake_stack() {
        frame1[0] = reinterpret_cast<uint64_t>(frame2);
        regs[4] = reinterpret_cast<uint64_t>(frame1);
        regs[16] = 0x400000;
        regs[19] = reinterpret_cast<uint64_t>(top);
    }
    vm::run_options options() const {
        vm::run_options o;
        o.info.func_ip = 0x400000; // at the function's first instruction
        o.info.user_regs = regs;
        return o;
    }
};

std::string stackid_call(uint32_t map, uint64_t flags) {
    return "mov %r6, %r1\nlddw %r2, map_fd(" + std::to_string(map) + ")\nmov %r1, %r6\nlddw %r3, " +
           std::to_string(flags) + "\ncall 27\nexit\n";
}

TEST_F(HelpersTest, GetStackidStoresTheWalkedUserStack) {
    uint32_t st = map({maps::map_type::stack_trace, 4, 8 * 8, 16, 0});
    fake_stack fs;
    auto opts = fs.options();
    auto id = run(stackid_call(st, maps::stack_user), {st}, fs.regs, sizeof fs.regs, opts);
    ASSERT_TRUE(id.ok()) << id.err().message;
    ASSERT_LT(static_cast<int64_t>(*id), 16) << static_cast<int64_t>(*id);
    auto opened = provider->open_map(st);
    ASSERT_TRUE(opened.ok()) << opened.err().message;
    uint32_t key = static_cast<uint32_t>(*id);
    auto value = (*opened)->read(std::span(reinterpret_cast<const uint8_t *>(&key), 4));
    ASSERT_TRUE(value.ok()) << value.err().message;
    std::vector<uint64_t> frames(8);
    std::memcpy(frames.data(), value->data(), 64);
    EXPECT_EQ(frames, (std::vector<uint64_t>{0x400000, 0x401111, 0x402222, 0x403333, 0, 0, 0, 0}));
    // The same stack, the same id; skipping two frames is another stack.
    EXPECT_EQ(*run(stackid_call(st, maps::stack_user), {st}, fs.regs, sizeof fs.regs, opts), *id);
    auto skipped = run(stackid_call(st, maps::stack_user | 2), {st}, fs.regs, sizeof fs.regs, opts);
    ASSERT_TRUE(skipped.ok());
    key = static_cast<uint32_t>(*skipped);
    value = (*opened)->read(std::span(reinterpret_cast<const uint8_t *>(&key), 4));
    ASSERT_TRUE(value.ok()) << value.err().message;
    std::memcpy(frames.data(), value->data(), 64);
    EXPECT_EQ(frames, (std::vector<uint64_t>{0x402222, 0x403333, 0, 0, 0, 0, 0, 0}));
    // Skipping every frame, a kernel stack, no registers, unknown flags.
    auto rc = [&](uint64_t flags, const vm::run_options &o) {
        auto r = run(stackid_call(st, flags), {st}, fs.regs, sizeof fs.regs, o);
        return r.ok() ? static_cast<int64_t>(*r) : 1;
    };
    EXPECT_EQ(rc(maps::stack_user | 4, opts), -EFAULT);
    EXPECT_EQ(rc(0, opts), -EFAULT) << "no kernel stack in user space";
    EXPECT_EQ(rc(maps::stack_user, vm::run_options{}), -EFAULT) << "no probed thread";
    EXPECT_EQ(rc(maps::stack_user | maps::stack_user_build_id, opts), -EINVAL);
    // The stack's memory going away mid-walk ends the walk, never the process.
    fake_stack broken;
    broken.frame1[0] = 16; // an unmapped address
    auto o = broken.options();
    auto r = run(stackid_call(st, maps::stack_user), {st}, broken.regs, sizeof broken.regs, o);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_GE(static_cast<int64_t>(*r), 0);
    // r2 must be a stack trace map.
    uint32_t h = map({maps::map_type::hash, 4, 8, 4, 0});
    expect_fault(run(stackid_call(h, maps::stack_user), {h}, fs.regs, sizeof fs.regs, opts),
                 "get_stackid: r2 is a hash map, not a stack_trace map");
}

TEST_F(HelpersTest, GetStackCopiesFramesAndZeroesTheRest) {
    fake_stack fs;
    auto opts = fs.options();
    // get_stack(ctx, r10-48, 48, flags); r0 = the result, the buffer checked after the run.
    auto call = [&](uint64_t flags, uint64_t size, std::vector<uint64_t> &out) {
        std::string text = "mov %r6, %r1\n";
        for (int i = 8; i <= 48; i += 8) {
            text += "stdw [%r10-" + std::to_string(i) + "], -1\n";
        }
        text += "mov %r1, %r6\nmov %r2, %r10\nadd %r2, -48\nmov %r3, " + std::to_string(size) +
                "\nlddw %r4, " + std::to_string(flags) +
                "\ncall 67\nmov %r7, %r0\n"
                // Copy the buffer out through the context: r6 points at the registers.
                "ldxdw %r1, [%r10-48]\nldxdw %r2, [%r10-40]\nldxdw %r3, [%r10-32]\n"
                "ldxdw %r4, [%r10-24]\nldxdw %r5, [%r10-16]\nldxdw %r8, [%r10-8]\n"
                "stxdw [%r6], %r1\nstxdw [%r6+8], %r2\nstxdw [%r6+16], %r3\n"
                "stxdw [%r6+24], %r4\nstxdw [%r6+40], %r5\nstxdw [%r6+48], %r8\n"
                "mov %r0, %r7\nexit\n";
        uint64_t copy[21];
        std::memcpy(copy, fs.regs, sizeof copy);
        auto r = run(text, {}, copy, sizeof copy, opts);
        // What the program saw: words 0..3 and 5..6 of the context hold the buffer.
        out = {copy[0], copy[1], copy[2], copy[3], copy[5], copy[6]};
        return r.ok() ? static_cast<int64_t>(*r) : 1;
    };
    std::vector<uint64_t> buf;
    EXPECT_EQ(call(maps::stack_user, 48, buf), 32);
    EXPECT_EQ(buf, (std::vector<uint64_t>{0x400000, 0x401111, 0x402222, 0x403333, 0, 0}));
    EXPECT_EQ(call(maps::stack_user | 1, 16, buf), 16);
    EXPECT_EQ(buf, (std::vector<uint64_t>{0x401111, 0x402222, uint64_t(-1), uint64_t(-1),
                                          uint64_t(-1), uint64_t(-1)}));
    EXPECT_EQ(call(0, 48, buf), -EFAULT);
    EXPECT_EQ(buf, std::vector<uint64_t>(6, 0)) << "the buffer is zeroed on an error";
    EXPECT_EQ(call(maps::stack_user | maps::stack_user_build_id, 48, buf), -EINVAL);
    EXPECT_EQ(call(maps::stack_user, 44, buf), -EINVAL) << "size must be a multiple of 8";
}

} // namespace
} // namespace bpftime
