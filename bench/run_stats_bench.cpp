// SPDX-License-Identifier: MIT
// What counting a run costs where hosts count it, attached_program::run: a program that
// returns at once (JIT), run without counters (the baseline), with the host's record of the link
// (what hosts count in) and run timing off (one compare of the record's key with this process's
// id, then the run's add on this thread's own stripe), with timing on (two reads of the run clock
// around the run besides), and with the link's own stripes (what a host without a record counts in:
// the rseq add on this CPU's stripe), and the compiled program run alone, the floor under all of
// them. Google Benchmark's random interleaving mixes the repetitions in one run; the summary gives
// the median differences.
#include <bpftime/attach/attach.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/vm.hpp>

#include "bench_util.hpp"

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

using bpftime::attached_program;
using bpftime::compiled_program;
using bpftime::store::segment;

void die(const std::string &what) {
    std::fprintf(stderr, "run_stats_bench: %s\n", what.c_str());
    std::exit(1);
}

std::shared_ptr<segment> seg;
std::shared_ptr<const attached_program> uncounted, counted, link_counted;
std::shared_ptr<const compiled_program> bare;

void setup(const std::string &name) {
    (void)segment::remove(name);
    auto s = segment::open(name, {.size = 1 << 20, .max_objects = 16});
    if (!s) {
        die(s.err().message);
    }
    seg = *s;
    auto insns = bpftime::vm::assemble("mov %r0, 0\nexit\n");
    auto prog = insns ? seg->create_program("p", 0, "", *insns, {}) : insns.err();
    auto target = prog ? seg->create_target("t", 1, "h") : prog;
    auto link = target ? seg->create_link("l", *prog, *target, true) : target;
    if (!link) {
        die(link.err().message);
    }
    auto loaded = bpftime::vm::program::load(*insns);
    if (!loaded) {
        die(loaded.err().message);
    }
    auto compiled = compiled_program::create(*prog, 0, "p", std::move(*loaded),
                                             bpftime::vm::available_engines().front());
    auto counters = seg->host_counters(*link, static_cast<int32_t>(getpid()));
    auto own = seg->counters(*link);
    if (!compiled || !counters || !own) {
        die(!compiled ? compiled.err().message
                      : (!counters ? counters.err().message : own.err().message));
    }
    bare = *compiled;
    uncounted =
        std::make_shared<attached_program>(*link, *compiled, bpftime::store::link_counters{});
    counted = std::make_shared<attached_program>(*link, *compiled, *counters);
    link_counted = std::make_shared<attached_program>(*link, *compiled, *own);
}

void run_loop(benchmark::State &state, const attached_program &p, bool timing) {
    if (!seg->set_run_timing(timing)) {
        die("cannot set run timing");
    }
    uint64_t ctx = 0;
    bpftime::vm::run_options opts;
    for (auto _ : state) {
        auto r = p.run(&ctx, sizeof ctx, opts);
        benchmark::DoNotOptimize(r);
    }
}

void bm_bare(benchmark::State &state) {
    uint64_t ctx = 0;
    bpftime::vm::run_options opts;
    for (auto _ : state) {
        auto r = bare->run(&ctx, sizeof ctx, opts);
        benchmark::DoNotOptimize(r);
    }
}
void bm_uncounted(benchmark::State &state) {
    run_loop(state, *uncounted, false);
}
void bm_counted(benchmark::State &state) {
    run_loop(state, *counted, false);
}
void bm_timed(benchmark::State &state) {
    run_loop(state, *counted, true);
}
void bm_link_counted(benchmark::State &state) {
    run_loop(state, *link_counted, false);
}

} // namespace

int main(int argc, char **argv) {
    std::string name = "bpftime-run-stats-bench-" + std::to_string(getpid());
    setup(name);
    benchmark::RegisterBenchmark("BM_run/compiled_program", bm_bare);
    benchmark::RegisterBenchmark("BM_run/no_counting", bm_uncounted);
    benchmark::RegisterBenchmark("BM_run/counted_timing_off", bm_counted);
    benchmark::RegisterBenchmark("BM_run/counted_timing_on", bm_timed);
    benchmark::RegisterBenchmark("BM_run/counted_link_stripes", bm_link_counted);
    // Interleaved repetitions unless the command line says otherwise.
    std::vector<char *> args(argv, argv + argc);
    std::string reps = "--benchmark_repetitions=9",
                mix = "--benchmark_enable_random_interleaving=true",
                only = "--benchmark_report_aggregates_only=true";
    bool has_reps = false;
    for (char *a : args) {
        has_reps = has_reps || std::string(a).rfind("--benchmark_repetitions", 0) == 0;
    }
    if (!has_reps) {
        args.push_back(reps.data());
        args.push_back(mix.data());
        args.push_back(only.data());
    }
    int n = static_cast<int>(args.size());
    benchmark::Initialize(&n, args.data());
    bpftime::bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    auto median = [&](const std::string &b) {
        auto v = reporter.cpu_time(b + "_median");
        return v ? v : reporter.cpu_time(b);
    };
    auto base = median("BM_run/no_counting");
    auto off = median("BM_run/counted_timing_off");
    auto on = median("BM_run/counted_timing_on");
    auto link = median("BM_run/counted_link_stripes");
    auto floor = median("BM_run/compiled_program");
    if (floor && base) {
        std::printf("\nrun ns (median): the compiled program alone %.2f; attached_program::run "
                    "without counters adds %.2f ns to it\n",
                    *floor, *base - *floor);
    }
    if (base && off && on && link) {
        std::printf("run ns (median): no counting %.2f, counted %.2f, counted and timed %.2f, "
                    "counted on the link's stripes %.2f\n",
                    *base, *off, *on, *link);
        std::printf("cost per run: counting %.2f ns, counting and timing %.2f ns, counting on the "
                    "link's stripes %.2f ns\n",
                    *off - *base, *on - *base, *link - *base);
    }
    std::printf("link_counters::count uses rseq in this process: %s\n",
                bpftime::store::link_counters_use_rseq() ? "yes" : "no");
    benchmark::Shutdown();
    bare.reset();
    counted.reset();
    link_counted.reset();
    uncounted.reset();
    seg.reset();
    (void)segment::remove(name);
    return 0;
}
