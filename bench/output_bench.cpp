// SPDX-License-Identifier: MIT
// A program's output, per record: one 16-byte record ({seq, seq ^ 0x5a5a...}, seq the u64 the
// context points at) per run through a perf event array (bpf_perf_event_output into the running
// CPU's perf ring, as libbpf's perf_buffer reads them) and through a ring buffer
// (bpf_ringbuf_output), beside the same program outputting nothing, in one run. The programs
// (assembled here: bpftime's ELF loader leaves perf event arrays to loaders that bring a
// consumer) run on a callable hook of this process (private segment, JIT); each iteration
// outputs a batch of records, timed with the thread's CPU clock, then the consumer drains the
// rings (timed apart: the consumer's cost per record is a counter). Every record must arrive
// intact, none lost. Prints Google Benchmark's table, then ns per record over the empty program
// and the ratio of the two outputs.
#include "bench_util.hpp"

#include <bpftime/attach/attach.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/assembler.hpp>

#include <benchmark/benchmark.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

using namespace bpftime;

// Records between two drains: a perf ring holds them with room to spare (32 bytes each there),
// the ring buffer too (24 bytes each).
constexpr int batch = 512;
constexpr uint32_t perf_ring_bytes = 16 * 4096;

const std::string seg_name = "bpftime-output-bench-" + std::to_string(getpid());

struct host {
    std::unique_ptr<event_provider_impl> provider;
    callable_attach_impl *hooks = nullptr;
    std::vector<maps::map_view> perf_rings; // one per perf event array slot
    std::optional<maps::map_view> ring;
    std::string error;
};

host h;

double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string setup() {
    (void)store::segment::remove(seg_name);
    auto seg = store::segment::open(seg_name, {.create = true});
    if (!seg) {
        return seg.err().message;
    }
    manager_options opts;
    opts.engine_options.tier = vm::jit_tier::optimised;
    h.provider = std::make_unique<event_provider_impl>(*seg, opts);
    auto hooks = std::make_unique<callable_attach_impl>();
    h.hooks = hooks.get();
    if (auto r = h.provider->manager().register_attach_impl(attach_type_test, std::move(hooks));
        !r) {
        return r.err().message;
    }
    std::map<std::string, uint32_t> ids;
    for (const auto &[name, spec] :
         {std::pair<std::string, maps::map_spec>{"perf_events",
                                                 {maps::map_type::perf_event_array, 4, 4, 8, 0}},
          {"ring_events", {maps::map_type::ringbuf, 0, 0, 1u << 20, 0}}}) {
        map_create_spec m;
        m.name = name;
        m.spec = spec;
        auto id = h.provider->create_map(m);
        if (!id) {
            return name + ": " + id.err().message;
        }
        ids[name] = *id;
    }
    // r6 = ctx; the record {seq, seq ^ 0x5a5a...} at [r10-16]; then the output call.
    const std::string record = "mov %r6, %r1\n"
                               "ldxdw %r2, [%r1+0]\n"
                               "stxdw [%r10-16], %r2\n"
                               "lddw %r3, 0x5a5a5a5a5a5a5a5a\n"
                               "xor %r3, %r2\n"
                               "stxdw [%r10-8], %r3\n";
    const std::string perf = "mov %r1, %r6\n"
                             "lddw %r2, map_fd(" +
                             std::to_string(ids["perf_events"]) +
                             ")\n"
                             "lddw %r3, 0xffffffff\n" // BPF_F_CURRENT_CPU
                             "mov %r4, %r10\n"
                             "add %r4, -16\n"
                             "mov %r5, 16\n"
                             "call 25\n" // bpf_perf_event_output
                             "exit\n";
    const std::string to_ring = "lddw %r1, map_fd(" + std::to_string(ids["ring_events"]) +
                                ")\n"
                                "mov %r2, %r10\n"
                                "add %r2, -16\n"
                                "mov %r3, 16\n"
                                "mov %r4, 0\n"
                                "call 130\n" // bpf_ringbuf_output
                                "exit\n";
    const std::string nothing = "mov %r0, 0\nexit\n";
    for (const auto &[name, text, map] : {std::tuple<std::string, std::string, uint32_t>{
                                              "to_perf", record + perf, ids["perf_events"]},
                                          {"to_ringbuf", record + to_ring, ids["ring_events"]},
                                          {"to_nothing", record + nothing, 0}}) {
        auto insns = vm::assemble(text);
        if (!insns) {
            return name + ": " + insns.err().message;
        }
        program_spec spec;
        spec.name = name;
        spec.type = 2; // kprobe: the helpers of tracing programs
        spec.insns = *insns;
        if (map != 0) {
            spec.map_ids = {map};
        }
        auto id = h.provider->create_program(spec);
        if (!id) {
            return name + ": " + id.err().message;
        }
        ids[name] = *id;
    }
    store::segment &s = h.provider->segment();
    auto ring = s.map_view(ids["ring_events"]);
    auto array = h.provider->open_map(ids["perf_events"]);
    if (!ring || !array) {
        return !ring ? ring.err().message : array.err().message;
    }
    h.ring = *ring;
    // Each slot its own perf ring, as a perf_buffer gives every CPU one.
    for (uint32_t slot = 0; slot < (*array)->info().spec.max_entries; slot++) {
        map_create_spec spec;
        spec.name = "perf_cpu" + std::to_string(slot);
        spec.spec = {maps::map_type::perf_ring, 0, 0, perf_ring_bytes, 0};
        auto id = h.provider->create_map(spec);
        auto view = id ? s.map_view(*id) : result<maps::map_view>(id.err());
        if (!view) {
            return view.err().message;
        }
        h.perf_rings.push_back(*view);
        auto bytes = [](const uint32_t &v) {
            return std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(&v), sizeof v);
        };
        if (auto w = (*array)->write(bytes(slot), bytes(*id), maps::update_any); !w) {
            return w.err().message;
        }
    }
    for (const char *prog : {"to_perf", "to_ringbuf", "to_nothing"}) {
        auto target = h.provider->create_attach_target(attach_type_test, prog);
        auto link = target ? h.provider->attach_program(ids[prog], *target, 0) : target;
        if (!link) {
            return std::string(prog) + ": " + link.err().message;
        }
    }
    if (auto r = h.provider->instantiate(); !r) {
        return r.err().message;
    }
    return {};
}

enum class sink { perf, ringbuf, nothing };

// Takes every record out; returns how many, or nothing when a record is not what was sent.
std::optional<uint64_t> drain(sink where, uint64_t &lost) {
    uint64_t n = 0;
    bool bad = false;
    auto sample = [&](std::span<const uint8_t> rec) {
        uint64_t v[2] = {};
        if (rec.size() < sizeof v) {
            bad = true;
            return;
        }
        std::memcpy(v, rec.data(), sizeof v);
        bad = bad || (v[0] ^ 0x5a5a5a5a5a5a5a5aull) != v[1];
        n++;
    };
    if (where == sink::perf) {
        for (const maps::map_view &r : h.perf_rings) {
            if (!r.perf_consume(sample, [&](uint64_t l) { lost += l; })) {
                return std::nullopt;
            }
        }
    } else if (where == sink::ringbuf) {
        if (!h.ring->ringbuf_consume(sample)) {
            return std::nullopt;
        }
    }
    return bad ? std::nullopt : std::optional<uint64_t>(n);
}

struct variant {
    const char *name;
    const char *hook;
    sink where;
    std::string error;
};

void bm_output(benchmark::State &state, variant *v) {
    if (!h.error.empty()) {
        state.SkipWithError(h.error.c_str());
        return;
    }
    uint64_t seq = 0, seen = 0, lost = 0, failed_runs = 0;
    double consume = 0;
    for (auto _ : state) {
        const double t0 = thread_cpu_seconds();
        for (int i = 0; i < batch; i++) {
            ++seq;
            auto r = h.hooks->trigger(v->hook, &seq, sizeof seq);
            failed_runs += r.size() == 1 && r[0] && *r[0] == 0 ? 0 : 1;
        }
        const double t1 = thread_cpu_seconds();
        state.SetIterationTime(t1 - t0);
        auto got = drain(v->where, lost);
        consume += thread_cpu_seconds() - t1;
        if (!got) {
            v->error = "a record came back corrupt";
            state.SkipWithError(v->error.c_str());
            return;
        }
        seen += *got;
    }
    const uint64_t want = v->where == sink::nothing ? 0 : seq;
    if (failed_runs != 0 || lost != 0 || seen != want) {
        v->error = std::to_string(failed_runs) + " runs failed, " + std::to_string(lost) +
                   " records lost, " + std::to_string(seen) + " of " + std::to_string(want) +
                   " records read";
        state.SkipWithError(v->error.c_str());
        return;
    }
    state.counters["consume_ns_per_record"] =
        seq == 0 || want == 0 ? 0 : consume * 1e9 / static_cast<double>(seq);
}

} // namespace

int main(int argc, char **argv) {
    std::vector<char *> args(argv, argv + argc);
    std::string reps = "--benchmark_repetitions=5";
    std::string agg = "--benchmark_report_aggregates_only=true";
    args.push_back(reps.data());
    args.push_back(agg.data());
    int nargs = static_cast<int>(args.size());
    benchmark::Initialize(&nargs, args.data());
    h.error = setup();

    std::vector<variant> variants = {{"output/nothing", "to_nothing", sink::nothing, {}},
                                     {"output/perf_event_array", "to_perf", sink::perf, {}},
                                     {"output/ringbuf", "to_ringbuf", sink::ringbuf, {}}};
    for (variant &v : variants) {
        benchmark::RegisterBenchmark(v.name, bm_output, &v)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
    }
    bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);

    std::printf("\nns per record (thread CPU time of a batch of %d runs / %d), the output's "
                "cost over the empty program, and the consumer's ns per record\n",
                batch, batch);
    std::printf("%-26s %10s %10s %12s\n", "variant", "ns/record", "output", "consume");
    std::map<std::string, double> per;
    for (const variant &v : variants) {
        auto t = reporter.time(std::string(v.name) + "/manual_time_median");
        if (!h.error.empty() || !v.error.empty() || !t) {
            std::printf("%-26s %10s %10s %12s  %s\n", v.name, "-", "-", "-",
                        !h.error.empty() ? h.error.c_str() : v.error.c_str());
            continue;
        }
        per[v.name] = *t * 1000.0 / batch; // µs per batch to ns per record
    }
    const double base = per.count("output/nothing") != 0 ? per["output/nothing"] : 0;
    for (const variant &v : variants) {
        if (per.count(v.name) == 0) {
            continue;
        }
        auto c =
            reporter.counter(std::string(v.name) + "/manual_time_median", "consume_ns_per_record");
        std::printf("%-26s %10.1f %10.1f %12.1f\n", v.name, per[v.name], per[v.name] - base,
                    c.value_or(0));
    }
    auto p = per.find("output/perf_event_array"), r = per.find("output/ringbuf");
    if (p != per.end() && r != per.end() && r->second - base > 0) {
        std::printf("\nperf event array output / ring buffer output, per record: %.2fx\n",
                    (p->second - base) / (r->second - base));
    }
    if (h.provider) {
        h.provider->deinstantiate();
    }
    (void)store::segment::remove(seg_name);
    return 0;
}
