// SPDX-License-Identifier: MIT
// The cost of counting one program run: link_counters::count(false) on a link in a real
// segment (an add without a lock prefix inside a restartable sequence, where glibc registered
// rseq), beside the baseline in the same run: sched_getcpu() and a locked add on that CPU's
// stripe of the same shape in shared memory. Prints Google Benchmark's table, then a summary.
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include "bench_util.hpp"

#include <benchmark/benchmark.h>

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using bpftime::store::segment;

void die(const std::string &what) {
    std::fprintf(stderr, "counters_bench: %s\n", what.c_str());
    std::exit(1);
}

constexpr size_t stripes = 8;
struct alignas(64) stripe {
    uint64_t runs;
    uint64_t faults;
};

std::shared_ptr<segment> seg;
bpftime::store::link_counters counters;
stripe *old_stripes = nullptr;

void setup(const std::string &name) {
    (void)segment::remove(name);
    auto s = segment::open(name, {.size = 1 << 20, .max_objects = 16});
    if (!s) {
        die(s.err().message);
    }
    seg = *s;
    auto insns = bpftime::vm::assemble("mov %r0, 0\nexit\n");
    if (!insns) {
        die(insns.err().message);
    }
    auto prog = seg->create_program("p", 0, "", *insns, {});
    auto target = prog ? seg->create_target("t", 1, "h") : prog;
    auto link = target ? seg->create_link("l", *prog, *target, true) : target;
    if (!link) {
        die(link.err().message);
    }
    auto c = seg->counters(*link);
    if (!c) {
        die(c.err().message);
    }
    counters = *c;
    void *m = mmap(nullptr, sizeof(stripe) * stripes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        die("mmap failed");
    }
    old_stripes = static_cast<stripe *>(m);
}

void bm_count(benchmark::State &state) {
    for (auto _ : state) {
        counters.count(false);
    }
}

void bm_locked_add(benchmark::State &state) {
    for (auto _ : state) {
        int cpu = sched_getcpu();
        stripe &s = old_stripes[static_cast<size_t>(cpu < 0 ? 0 : cpu) % stripes];
        __atomic_fetch_add(&s.runs, 1, __ATOMIC_RELAXED);
    }
}

} // namespace

int main(int argc, char **argv) {
    std::string name = "bpftime-counters-bench-" + std::to_string(getpid());
    setup(name);
    for (int threads : {1, 2}) {
        benchmark::RegisterBenchmark("BM_count_run/link_counters", bm_count)->Threads(threads);
        benchmark::RegisterBenchmark("BM_count_run/locked_add", bm_locked_add)->Threads(threads);
    }
    benchmark::Initialize(&argc, argv);
    bpftime::bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    std::printf("\nlink_counters::count uses rseq in this process: %s\n",
                bpftime::store::link_counters_use_rseq() ? "yes" : "no");
    std::printf("%-8s %16s %16s %8s\n", "threads", "locked add ns", "count() ns", "ratio");
    for (int threads : {1, 2}) {
        std::string suffix = "/threads:" + std::to_string(threads);
        auto old_ns = reporter.cpu_time("BM_count_run/locked_add" + suffix);
        auto new_ns = reporter.cpu_time("BM_count_run/link_counters" + suffix);
        if (old_ns && new_ns) {
            std::printf("%-8d %16.2f %16.2f %7.2fx\n", threads, *old_ns, *new_ns,
                        *new_ns / *old_ns);
        }
    }
    benchmark::Shutdown();
    seg.reset();
    (void)segment::remove(name);
    munmap(old_stripes, sizeof(stripe) * stripes);
    return 0;
}
