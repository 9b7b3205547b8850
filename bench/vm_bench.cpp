// SPDX-License-Identifier: MIT
// Interpreter cost per executed eBPF instruction, beside the same algorithm in native C++,
// measured in one run. Prints Google Benchmark's table, then a summary with ratios.
#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/vm.hpp>

#include "bench_util.hpp"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace bpftime::vm;

// The four workloads: a program in bench/programs/ and the same algorithm in C++.
struct workload {
    const char *name;
    size_t mem_size;
    void (*fill)(std::vector<uint8_t> &mem);
    uint64_t (*native)(uint8_t *mem, uint64_t len);
};

void fill_pattern(std::vector<uint8_t> &mem) {
    for (size_t i = 0; i < mem.size(); i++) {
        mem[i] = static_cast<uint8_t>(i * 31 + 7);
    }
}

void fill_strings(std::vector<uint8_t> &mem) {
    // Two equal 1023-character strings, each NUL-terminated, at the start and the middle.
    size_t half = mem.size() / 2;
    for (size_t i = 0; i + 1 < half; i++) {
        mem[i] = mem[half + i] = static_cast<uint8_t>('a' + i % 26);
    }
    mem[half - 1] = mem[mem.size() - 1] = 0;
}

void fill_zero(std::vector<uint8_t> &mem) {
    std::fill(mem.begin(), mem.end(), 0);
}

// The native versions keep the programs' shape (byte loops, 8-byte copies) and are kept
// from being folded away by benchmark::DoNotOptimize on their inputs.
uint64_t native_fnv(uint8_t *mem, uint64_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < len; i++) {
        h ^= mem[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t native_sieve(uint8_t *mem, uint64_t len) {
    std::memset(mem, 0, len);
    uint64_t primes = 0;
    for (uint64_t i = 2; i < len; i++) {
        if (mem[i] == 0) {
            primes++;
            for (uint64_t j = i * i; j < len; j += i) {
                mem[j] = 1;
            }
        }
    }
    return primes;
}

uint64_t native_memcpy(uint8_t *mem, uint64_t len) {
    uint64_t half = len / 2;
    for (uint64_t i = 0; i < half; i += 8) {
        uint64_t v;
        std::memcpy(&v, mem + i, 8);
        std::memcpy(mem + half + i, &v, 8);
    }
    return half;
}

uint64_t native_strcmp(uint8_t *mem, uint64_t len) {
    const uint8_t *a = mem, *b = mem + len / 2;
    while (*a == *b && *a != 0) {
        a++;
        b++;
    }
    return static_cast<uint64_t>(*a) - *b;
}

const workload workloads[] = {
    {"fnv_hash", 4096, fill_pattern, native_fnv},
    {"prime_sieve", 4096, fill_zero, native_sieve},
    {"memcpy", 16384, fill_pattern, native_memcpy},
    {"strcmp", 2048, fill_strings, native_strcmp},
};

std::vector<ebpf_inst> load_program(const std::string &name) {
    std::string path = std::string(BPFTIME_BENCH_PROGRAMS) + "/" + name + ".s";
    std::ifstream f(path);
    std::stringstream text;
    text << f.rdbuf();
    auto insns = assemble(text.str());
    if (!insns) {
        std::fprintf(stderr, "%s: %s\n", path.c_str(), insns.err().message.c_str());
        std::exit(1);
    }
    return std::move(*insns);
}

void bm_native(benchmark::State &state, const workload *w) {
    std::vector<uint8_t> mem(w->mem_size);
    w->fill(mem);
    for (auto _ : state) {
        benchmark::DoNotOptimize(mem.data());
        benchmark::DoNotOptimize(w->native(mem.data(), mem.size()));
        benchmark::ClobberMemory();
    }
}

void bm_interp(benchmark::State &state, const workload *w) {
    auto prog = program::load(load_program(w->name));
    if (!prog) {
        state.SkipWithError(prog.err().message.c_str());
        return;
    }
    auto eng = make_engine(engine_kind::interpreter, *prog);
    std::vector<uint8_t> mem(w->mem_size);
    w->fill(mem);
    uint64_t executed = 0;
    run_options ro;
    ro.executed = &executed;
    // The program must compute what the native code computes.
    std::vector<uint8_t> check = mem;
    uint64_t want = w->native(check.data(), check.size());
    auto first = (*eng)->run(mem.data(), mem.size(), ro);
    if (!first || *first != want) {
        state.SkipWithError(first ? "program result differs from native"
                                  : first.err().message.c_str());
        return;
    }
    for (auto _ : state) {
        benchmark::DoNotOptimize((*eng)->run(mem.data(), mem.size(), ro));
    }
    state.counters["insns"] = static_cast<double>(executed);
    state.counters["ns_per_insn"] =
        benchmark::Counter(static_cast<double>(executed) * static_cast<double>(state.iterations()),
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void print_summary(const bpftime::bench::recording_reporter &r) {
    std::printf("\n%-12s %12s %12s %9s %12s\n", "program", "native ns", "interp ns", "ratio",
                "ns/insn");
    for (const workload &w : workloads) {
        auto native = r.time(std::string("native/") + w.name);
        auto interp = r.time(std::string("interp/") + w.name);
        if (!native || !interp) {
            continue;
        }
        double per_insn = r.counter(std::string("interp/") + w.name, "ns_per_insn").value_or(0);
        std::printf("%-12s %12.1f %12.1f %8.1fx %12.2f\n", w.name, *native, *interp,
                    *interp / *native, per_insn * 1e9);
    }
}

} // namespace

int main(int argc, char **argv) {
    for (const workload &w : workloads) {
        benchmark::RegisterBenchmark((std::string("native/") + w.name).c_str(), bm_native, &w);
        benchmark::RegisterBenchmark((std::string("interp/") + w.name).c_str(), bm_interp, &w);
    }
    benchmark::Initialize(&argc, argv);
    bpftime::bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    print_summary(reporter);
    benchmark::Shutdown();
    return 0;
}
