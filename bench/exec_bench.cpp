// SPDX-License-Identifier: MIT
// The execution suite: each program of bench/suite/ (eBPF C, built with clang -O2 -target bpf
// and, from the same source, with clang -O2 for the host) run in one run as native code, on
// bpftime's JIT with and without memory checks, on bpftime's interpreter, and on the kernel's
// JIT through BPF_PROG_TEST_RUN. Every variant must return what native code returns. Prints
// Google Benchmark's table, then ratios to native, JIT compile times (suite and nginx
// examples) and whether the performance targets hold.
#include "bench_util.hpp"

#include <bpftime/loader/elf.hpp>
#include <bpftime/maps/maps.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/vm/vm.hpp>

#include <benchmark/benchmark.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

extern "C" {
#include "suite/suite.h"
}

namespace {

using namespace bpftime;

// Natively, map_lookups looks its keys up in the same bpftime hash map the engines use,
// through map_view::lookup: the work the program's helper calls do, minus the engine (the
// helper call, the handle check and the region hint). A std::unordered_map
// would measure a different hash table rather than the cost of running the program.
const maps::map_view *native_table = nullptr;

} // namespace

extern "C" void *suite_host_table_lookup(const __u32 *key) {
    return native_table->lookup(key);
}

namespace {

struct suite_program {
    const char *name;   // the program's function name
    const char *object; // its object file, without .bpf.o
    __u64 (*native)(suite_mem *);
};

#define SUITE_ROW(program, object) {#program, #object, suite_native_##program},
const suite_program programs[] = {SUITE_PROGRAMS(SUITE_ROW)};
#undef SUITE_ROW

enum variant { native, jit, jit_unchecked, interp, kernel, variant_count };
const char *const variant_names[variant_count] = {"native", "jit", "jit-unchecked", "interp",
                                                  "kernel"};

/// Compile times of one program on the JIT, in milliseconds: wall-clock time, and the CPU
/// time of the process (every thread LLVM uses), which a busy machine leaves nearly unchanged.
struct compile_times {
    double first = 0, first_cpu = 0;   // the program's first compile (the process's first, for
                                       // the first program: with LLVM's one-time set-up)
    double median = 0, median_cpu = 0; // of five later compiles
    double optimised = 0, optimised_cpu = 0; // median of five compiles of the optimised tier
    std::string error;                       // set when the JIT could not compile it
};

/// A program loaded into the kernel (through libbpf) for BPF_PROG_TEST_RUN.
struct kernel_program {
    bpf_object *obj = nullptr;
    int fd = -1;
    std::string skipped; // why the kernel does not run it
    int repeat = 1;      // runs per BPF_PROG_TEST_RUN call in the benchmark

    kernel_program() = default;
    kernel_program(const kernel_program &) = delete;
    kernel_program &operator=(const kernel_program &) = delete;
    ~kernel_program() { bpf_object__close(obj); }
};

/// Everything one program of the suite needs in the benchmarks.
struct program_state {
    const suite_program *prog = nullptr;
    std::shared_ptr<const compiled_program> compiled; // the loaded program, lddw resolved
    std::unique_ptr<vm::engine> engines[variant_count];
    std::string unavailable[variant_count]; // why a variant does not run
    std::string mismatch[variant_count];    // a variant that returned another value
    kernel_program kern;
    compile_times compile;
    maps::map_view *memory = nullptr; // suite_memory of the program's object, in bpftime
};

std::unique_ptr<suite_mem> image;                   // the bytes every variant's memory starts with
std::unique_ptr<suite_mem> native_mem;              // the native variant's copy
std::vector<std::pair<__u32, __u64>> table_entries; // what suite_table holds
std::vector<std::pair<std::string, compile_times>> example_compiles; // nginx examples
uint8_t ctx[256]; // r1 / data_in: the programs never read it

void die(const std::string &what) {
    std::fprintf(stderr, "exec_bench: %s\n", what.c_str());
    std::exit(1);
}

// splitmix64: a fixed-seed generator whose output does not depend on the standard library.
struct splitmix {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

void fill_image() {
    splitmix rng{42};
    image = std::make_unique<suite_mem>();
    auto *bytes = reinterpret_cast<uint8_t *>(image.get());
    for (size_t i = 0; i + 8 <= sizeof(suite_mem); i += 8) {
        uint64_t v = rng.next();
        std::memcpy(bytes + i, &v, 8);
    }
    for (size_t i = 0; i + 1 < SUITE_STRING_LEN; i++) {
        image->str_a[i] = image->str_b[i] = image->str_c[i] =
            static_cast<uint8_t>('a' + rng.next() % 26);
    }
    image->str_a[SUITE_STRING_LEN - 1] = image->str_b[SUITE_STRING_LEN - 1] =
        image->str_c[SUITE_STRING_LEN - 1] = 0;
    image->str_c[SUITE_STRING_MISMATCH] =
        static_cast<uint8_t>(image->str_a[SUITE_STRING_MISMATCH] == 'z' ? 'a' : 'z');
    std::set<__u32> present;
    while (table_entries.size() < SUITE_TABLE_FILLED) {
        auto key = static_cast<__u32>(rng.next());
        if (present.insert(key).second) {
            table_entries.emplace_back(key, rng.next());
        }
    }
    // Seven of eight lookups find their key.
    for (size_t i = 0; i < SUITE_LOOKUPS; i++) {
        __u32 key;
        if (i % 8 == 7) {
            do {
                key = static_cast<__u32>(rng.next());
            } while (present.count(key) != 0);
        } else {
            key = table_entries[rng.next() % table_entries.size()].first;
        }
        image->keys[i] = key;
    }
    image->prime_limit = SUITE_PRIME_LIMIT;
    native_mem = std::make_unique<suite_mem>(*image);
}

std::string object_path(const char *dir, const std::string &name) {
    return std::string(dir) + "/" + name + ".bpf.o";
}

// --- bpftime ---

struct bpftime_setup {
    std::string name = "bpftime-exec-bench-" + std::to_string(getpid());
    std::shared_ptr<store::segment> seg;
    std::unique_ptr<event_provider_impl> provider;

    bpftime_setup() {
        (void)store::segment::remove(name);
        auto s = store::segment::open(name);
        if (!s) {
            die("segment " + name + ": " + s.err().message);
        }
        seg = *s;
        // The mapping outlives the name, and nothing is left behind when the benchmark exits.
        (void)store::segment::remove(name);
        // The manager compiles for the interpreter: the JIT compiles are the benchmark's own,
        // so the first one of the process is measured.
        provider = std::make_unique<event_provider_impl>(
            seg, manager_options{.engine = vm::engine_kind::interpreter});
    }
    /// Loads an object and returns its programs, compiled, by name.
    std::vector<std::pair<std::string, std::shared_ptr<const compiled_program>>>
    load(const std::string &path, bool fill) {
        auto obj = loader::open_elf(path);
        if (!obj) {
            die(obj.err().message);
        }
        auto loaded = load_object(*provider, *obj);
        if (!loaded) {
            die(path + ": " + loaded.err().message);
        }
        for (const auto &[id, map_name] : loaded->maps) {
            auto view = seg->map_view(id);
            if (!view) {
                die(path + ": map " + map_name + ": " + view.err().message);
            }
            if (fill && map_name == "suite_memory") {
                memories[path] = std::make_unique<maps::map_view>(*view);
                restore(*memories[path]);
            } else if (fill && map_name == "suite_table") {
                for (auto [key, value] : table_entries) {
                    auto r = view->write({reinterpret_cast<uint8_t *>(&key), 4},
                                         {reinterpret_cast<uint8_t *>(&value), 8});
                    if (!r) {
                        die(path + ": " + r.err().message);
                    }
                }
                tables.push_back(std::make_unique<maps::map_view>(*view));
                native_table = tables.back().get();
            }
        }
        std::vector<std::pair<std::string, std::shared_ptr<const compiled_program>>> out;
        for (const auto &[id, prog_name] : loaded->programs) {
            auto compiled = provider->manager().compile(id);
            if (!compiled) {
                die(path + ": " + prog_name + ": " + compiled.err().message);
            }
            out.emplace_back(prog_name, *compiled);
        }
        return out;
    }

    /// Puts the image back into a suite_memory map.
    static void restore(maps::map_view &memory) {
        __u32 zero = 0;
        auto r = memory.write({reinterpret_cast<uint8_t *>(&zero), 4},
                              {reinterpret_cast<uint8_t *>(image.get()), sizeof(suite_mem)});
        if (!r) {
            die("suite_memory: " + r.err().message);
        }
    }

    std::map<std::string, std::unique_ptr<maps::map_view>> memories; // by object path
    std::vector<std::unique_ptr<maps::map_view>> tables;
};

/// A point in time on the wall clock and in the process's CPU time.
struct stamp {
    std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
    timespec cpu = [] {
        timespec ts{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts;
    }();

    /// Milliseconds since this stamp: wall-clock and CPU.
    std::pair<double, double> ms() const {
        stamp now;
        double wall_ms = std::chrono::duration<double, std::milli>(now.wall - wall).count();
        double cpu_ms = static_cast<double>(now.cpu.tv_sec - cpu.tv_sec) * 1e3 +
                        static_cast<double>(now.cpu.tv_nsec - cpu.tv_nsec) * 1e-6;
        return {wall_ms, cpu_ms};
    }
};

double median(std::vector<double> xs) {
    std::sort(xs.begin(), xs.end());
    return xs[xs.size() / 2];
}

/// The first compile of the program's baseline tier, the code a tiered engine runs at once (for
/// the first program of the process it includes LLVM's one-time set-up), the median of five
/// more, and the median of five compiles of the optimised tier.
compile_times time_compiles(const vm::program &prog) {
    const vm::engine_options baseline{.tier = vm::jit_tier::baseline};
    compile_times t;
    stamp start;
    auto first = vm::make_engine(vm::engine_kind::jit, prog, baseline);
    std::tie(t.first, t.first_cpu) = start.ms();
    if (!first) {
        t.error = first.err().message;
        return t;
    }
    auto medians = [&](const vm::engine_options &opts) {
        std::vector<double> wall, cpu;
        for (int i = 0; i < 5; i++) {
            stamp s;
            auto e = vm::make_engine(vm::engine_kind::jit, prog, opts);
            auto [w, c] = s.ms();
            wall.push_back(w);
            cpu.push_back(c);
        }
        return std::pair{median(wall), median(cpu)};
    };
    std::tie(t.median, t.median_cpu) = medians(baseline);
    std::tie(t.optimised, t.optimised_cpu) = medians({.tier = vm::jit_tier::optimised});
    return t;
}

// --- the kernel ---

// libbpf prints the verifier's log through its print callback only.
std::string *libbpf_log = nullptr;

int capture_libbpf(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_WARN && libbpf_log != nullptr) {
        va_list copy;
        va_copy(copy, args);
        int n = std::vsnprintf(nullptr, 0, format, copy);
        va_end(copy);
        if (n > 0) {
            std::string line(static_cast<size_t>(n) + 1, '\0');
            std::vsnprintf(line.data(), line.size(), format, args);
            line.resize(static_cast<size_t>(n));
            *libbpf_log += line;
        }
    }
    return 0;
}

/// The line of a verifier log that says why: the last one before the statistics.
std::string refusal_reason(const std::string &log, int err) {
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < log.size()) {
        size_t end = log.find('\n', pos);
        end = end == std::string::npos ? log.size() : end;
        std::string line = log.substr(pos, end - pos);
        pos = end + 1;
        if (line.empty() || line.find("-- END PROG LOAD LOG --") != std::string::npos ||
            line.rfind("processed ", 0) == 0 || line.rfind("verification time", 0) == 0 ||
            line.rfind("stack depth", 0) == 0 || line.rfind("libbpf: ", 0) == 0) {
            continue;
        }
        lines.push_back(line);
    }
    std::string why =
        lines.empty() ? std::string("bpf(BPF_PROG_LOAD): ") + std::strerror(-err) : lines.back();
    size_t processed = log.find("\nprocessed ");
    if (processed != std::string::npos) {
        why +=
            " (" + log.substr(processed + 1, log.find('\n', processed + 1) - processed - 1) + ")";
    }
    return why;
}

/// Loads one program of the object (its maps with it) into the kernel and fills its maps.
void load_kernel(program_state &st) {
    kernel_program &k = st.kern;
    std::string path = object_path(BPFTIME_SUITE_DIR, st.prog->object);
    k.obj = bpf_object__open_file(path.c_str(), nullptr);
    if (k.obj == nullptr) {
        k.skipped = "libbpf cannot open " + path + ": " + std::strerror(errno);
        return;
    }
    bpf_program *prog = nullptr;
    bpf_program *mine = nullptr;
    bpf_object__for_each_program(prog, k.obj) {
        bool is_mine = std::strcmp(bpf_program__name(prog), st.prog->name) == 0;
        (void)bpf_program__set_autoload(prog, is_mine);
        mine = is_mine ? prog : mine;
    }
    if (mine == nullptr) {
        k.skipped = "no program " + std::string(st.prog->name) + " in " + path;
        return;
    }
    std::string log;
    libbpf_log = &log;
    libbpf_print_fn_t previous = libbpf_set_print(capture_libbpf);
    int err = bpf_object__load(k.obj);
    libbpf_set_print(previous);
    libbpf_log = nullptr;
    if (err != 0) {
        k.skipped = refusal_reason(log, err);
        return;
    }
    __u32 zero = 0;
    bpf_map *mem = bpf_object__find_map_by_name(k.obj, "suite_memory");
    if (mem == nullptr ||
        bpf_map__update_elem(mem, &zero, 4, image.get(), sizeof(suite_mem), BPF_ANY) != 0) {
        k.skipped = std::string("cannot fill suite_memory: ") + std::strerror(errno);
        return;
    }
    if (bpf_map *table = bpf_object__find_map_by_name(k.obj, "suite_table")) {
        for (auto [key, value] : table_entries) {
            if (bpf_map__update_elem(table, &key, 4, &value, 8, BPF_ANY) != 0) {
                k.skipped = std::string("cannot fill suite_table: ") + std::strerror(errno);
                return;
            }
        }
    }
    k.fd = bpf_program__fd(mine);
}

/// One BPF_PROG_TEST_RUN: the program's return value and the average ns per run.
result<std::pair<uint32_t, uint32_t>> kernel_run(int fd, int repeat) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = ctx, .data_size_in = sizeof ctx,
                .repeat = repeat);
    if (bpf_prog_test_run_opts(fd, &opts) != 0) {
        return make_error(errno, std::string("BPF_PROG_TEST_RUN: ") + std::strerror(errno));
    }
    return std::make_pair(opts.retval, opts.duration);
}

// --- checks and benchmarks ---

/// Puts every variant's memory back to the image, so that each check starts from the same
/// bytes (big_switch moves on to another window of its input at each run).
void start_over(const program_state &st) {
    *native_mem = *image;
    if (st.memory != nullptr) {
        bpftime_setup::restore(*st.memory);
    }
    if (st.kern.fd >= 0) {
        __u32 zero = 0;
        bpf_map *mem = bpf_object__find_map_by_name(st.kern.obj, "suite_memory");
        if (mem == nullptr ||
            bpf_map__update_elem(mem, &zero, 4, image.get(), sizeof(suite_mem), BPF_ANY) != 0) {
            die(std::string("cannot refill the kernel's suite_memory: ") + std::strerror(errno));
        }
    }
}

/// Runs every variant once and records those whose low 32 bits differ from native code's.
bool check_results(program_state &st) {
    start_over(st);
    uint64_t want = st.prog->native(native_mem.get());
    bool ok = true;
    auto compare = [&](variant v, result<uint64_t> got) {
        if (!got) {
            st.mismatch[v] = "failed: " + got.err().message;
        } else if (static_cast<uint32_t>(*got) != static_cast<uint32_t>(want)) {
            char text[128];
            std::snprintf(text, sizeof text, "returned 0x%08x, native code 0x%08x",
                          static_cast<uint32_t>(*got), static_cast<uint32_t>(want));
            st.mismatch[v] = text;
        } else {
            return;
        }
        ok = false;
        std::fprintf(stderr, "exec_bench: %s on %s %s\n", st.prog->name, variant_names[v],
                     st.mismatch[v].c_str());
    };
    for (variant v : {jit, jit_unchecked, interp}) {
        if (st.engines[v]) {
            start_over(st);
            compare(v, st.engines[v]->run(ctx, sizeof ctx));
            // The direct entry, which the benchmark times, must agree as well.
            start_over(st);
            const vm::run_status direct = st.engines[v]->run_direct(ctx, sizeof ctx);
            if (st.mismatch[v].empty()) {
                compare(v, direct.ok() ? result<uint64_t>(direct.r0)
                                       : result<uint64_t>(*direct.fault));
            }
        }
    }
    if (st.kern.fd >= 0) {
        start_over(st);
        auto r = kernel_run(st.kern.fd, 1);
        compare(kernel, r ? result<uint64_t>(r->first) : result<uint64_t>(r.err()));
    }
    return ok;
}

void bm_native(benchmark::State &state, program_state *st) {
    for (auto _ : state) {
        benchmark::DoNotOptimize(st->prog->native(native_mem.get()));
        benchmark::ClobberMemory();
    }
}

void bm_engine(benchmark::State &state, program_state *st, variant v) {
    if (!st->mismatch[v].empty()) {
        state.SkipWithError(st->mismatch[v].c_str());
        return;
    }
    // The fastest call (what attach points use): the direct entry, no result built.
    vm::engine &e = *st->engines[v];
    for (auto _ : state) {
        const vm::run_status r = e.run_direct(ctx, sizeof ctx);
        benchmark::DoNotOptimize(r.r0);
        benchmark::DoNotOptimize(r.fault);
    }
}

// Each iteration is one BPF_PROG_TEST_RUN of `repeat` runs; its time is the kernel's average
// per run, so the table shows ns per run like the other variants.
void bm_kernel(benchmark::State &state, program_state *st) {
    if (!st->mismatch[kernel].empty()) {
        state.SkipWithError(st->mismatch[kernel].c_str());
        return;
    }
    for (auto _ : state) {
        auto r = kernel_run(st->kern.fd, st->kern.repeat);
        if (!r) {
            state.SkipWithError(r.err().message.c_str());
            return;
        }
        state.SetIterationTime(r->second * 1e-9);
    }
}

/// BPF_PROG_TEST_RUN calls per kernel benchmark.
constexpr int kernel_iterations = 20;

/// Runs per BPF_PROG_TEST_RUN so that one call takes about 10 ms.
int kernel_repeat(int fd) {
    auto r = kernel_run(fd, 100);
    double per_run = r ? std::max<double>(r->second, 1) : 1;
    return static_cast<int>(std::clamp(10e6 / per_run, 1.0, 1e6));
}

// --- the summary ---

// User-space variants by the CPU time of the benchmark's thread, the kernel by its own average
// per run: the kernel's test-run timer stops while the kernel reschedules, so on a busy machine
// the real time of the user-space variants would count other processes' time the kernel's
// figure leaves out.
std::optional<double> figure(const bench::recording_reporter &r, const program_state &st,
                             variant v) {
    if (!st.mismatch[v].empty()) {
        return std::nullopt; // skipped, with no figure
    }
    std::string name = std::string("exec/") + st.prog->name + "/" + variant_names[v];
    if (v == kernel) {
        // Google Benchmark names the kernel's benchmarks after their settings too.
        return r.time(name + "/iterations:" + std::to_string(kernel_iterations) + "/manual_time");
    }
    return r.cpu_time(name);
}

double geomean(const std::vector<double> &xs) {
    double log_sum = 0;
    for (double x : xs) {
        log_sum += std::log(x);
    }
    return std::exp(log_sum / static_cast<double>(xs.size()));
}

void print_compile(const std::string &name, const compile_times &t) {
    if (t.error.empty()) {
        std::printf("  %-28s %8.2f %8.2f %14.2f %8.2f %14.2f %8.2f\n", name.c_str(), t.first,
                    t.first_cpu, t.median, t.median_cpu, t.optimised, t.optimised_cpu);
    } else {
        std::printf("  %-28s jit: not available: %s\n", name.c_str(), t.error.c_str());
    }
}

/// Prints "<what><reason>" once per distinct reason, naming the programs unless it is all of
/// them.
void print_reasons(const std::string &what, std::span<const program_state> states,
                   const std::function<std::string(const program_state &)> &reason_of) {
    std::map<std::string, std::string> programs_of;
    size_t with_reason = 0;
    for (const program_state &st : states) {
        std::string reason = reason_of(st);
        if (!reason.empty()) {
            programs_of[reason] +=
                std::string(programs_of[reason].empty() ? "" : " ") + st.prog->name;
            with_reason++;
        }
    }
    for (const auto &[reason, names] : programs_of) {
        if (programs_of.size() == 1 && with_reason == states.size()) {
            std::printf("%s%s\n", what.c_str(), reason.c_str());
        } else {
            std::printf("%s%s (%s)\n", what.c_str(), reason.c_str(), names.c_str());
        }
    }
}

void print_summary(const bench::recording_reporter &r, std::span<const program_state> states) {
    std::printf("\nns per run (user space: CPU time of the thread; kernel: its own average) and "
                "the ratio to native code (- when the variant did not run)\n");
    std::printf("%-16s %10s %10s %7s %10s %7s %10s %7s %10s %7s\n", "program", "native", "jit", "x",
                "jit-unchk", "x", "interp", "x", "kernel", "x");
    std::vector<double> jit_ratios, checked_ratios;
    std::vector<std::string> slower_than_kernel, far_from_native;
    size_t kernel_compared = 0;
    for (const program_state &st : states) {
        auto base = figure(r, st, native);
        if (base) {
            std::printf("%-16s %10.1f", st.prog->name, *base);
        } else {
            std::printf("%-16s %10s", st.prog->name, "-");
        }
        for (variant v : {jit, jit_unchecked, interp, kernel}) {
            auto t = figure(r, st, v);
            if (t && base) {
                std::printf(" %10.1f %6.2fx", *t, *t / *base);
            } else {
                std::printf(" %10s %7s", "-", "-");
            }
        }
        std::printf("\n");
        auto j = figure(r, st, jit), ju = figure(r, st, jit_unchecked), k = figure(r, st, kernel);
        if (j && base) {
            jit_ratios.push_back(*j / *base);
            if (*j > 1.5 * *base) {
                far_from_native.push_back(st.prog->name);
            }
        }
        if (j && ju) {
            checked_ratios.push_back(*j / *ju);
        }
        if (j && k) {
            kernel_compared++;
            if (*j > *k) {
                slower_than_kernel.push_back(st.prog->name);
            }
        }
    }
    // One line per reason a variant did not run, naming the programs when not all of them.
    for (variant v : {jit, jit_unchecked, interp}) {
        print_reasons(std::string(variant_names[v]) + ": not available: ", states,
                      [v](const program_state &st) { return st.unavailable[v]; });
    }
    print_reasons("kernel: skipped: ", states,
                  [](const program_state &st) { return st.kern.skipped; });
    for (variant v : {jit, jit_unchecked, interp, kernel}) {
        print_reasons(std::string(variant_names[v]) + ": WRONG RESULT: ", states,
                      [v](const program_state &st) { return st.mismatch[v]; });
    }

    std::printf("\nJIT compile time in ms, wall-clock and process CPU time: the baseline tier "
                "(what a tiered engine runs at once; the first compile of the process includes "
                "LLVM's set-up) and the optimised tier (compiled in the background, measured "
                "above)\n");
    std::printf("  %-28s %8s %8s %14s %8s %14s %8s\n", "program", "first", "cpu", "median of 5",
                "cpu", "optimised", "cpu");
    print_reasons("  jit: not available: ", states,
                  [](const program_state &st) { return st.compile.error; });
    for (const program_state &st : states) {
        if (st.compile.error.empty()) {
            print_compile(st.prog->name, st.compile);
        }
    }
    std::printf("nginx examples:\n");
    std::vector<std::string> slow_examples;
    size_t examples_compiled = 0;
    for (const auto &[name, t] : example_compiles) {
        print_compile(name, t);
        if (t.error.empty()) {
            examples_compiled++;
            if (t.median_cpu >= 20) {
                slow_examples.push_back(name);
            }
        }
    }

    std::printf("\ntargets\n");
    if (jit_ratios.empty()) {
        std::printf("  jit/native geomean <= 1.3x: not measured (no JIT figures)\n");
    } else {
        double g = geomean(jit_ratios);
        std::printf("  jit/native geomean %.2fx (%zu programs) <= 1.3x: %s\n", g, jit_ratios.size(),
                    g <= 1.3 ? "holds" : "MISSED");
    }
    if (!jit_ratios.empty()) {
        std::string names;
        for (const std::string &n : far_from_native) {
            names += " " + n;
        }
        std::printf("  every program on the JIT within 1.5x of native (%zu programs): %s%s\n",
                    jit_ratios.size(),
                    far_from_native.empty() ? "holds" : "MISSED:", names.c_str());
    }
    if (kernel_compared == 0) {
        std::printf("  no program slower on the JIT than on the kernel: not measured\n");
    } else {
        std::string names;
        for (const std::string &n : slower_than_kernel) {
            names += " " + n;
        }
        std::printf("  no program slower on the JIT than on the kernel (%zu compared): %s%s\n",
                    kernel_compared,
                    slower_than_kernel.empty() ? "holds" : "MISSED:", names.c_str());
    }
    if (checked_ratios.empty()) {
        std::printf("  jit/jit-unchecked geomean <= 1.1x: not measured\n");
    } else {
        double g = geomean(checked_ratios);
        std::printf("  jit/jit-unchecked geomean %.2fx <= 1.1x: %s\n", g,
                    g <= 1.1 ? "holds" : "MISSED");
    }
    if (examples_compiled == 0) {
        std::printf("  nginx example programs compiled in < 20 ms each: not measured\n");
    } else {
        std::string names;
        for (const std::string &n : slow_examples) {
            names += " " + n;
        }
        std::printf("  nginx example programs ready to run in < 20 ms (baseline tier, CPU, "
                    "median) each (%zu compiled): %s%s\n",
                    examples_compiled, slow_examples.empty() ? "holds" : "MISSED:", names.c_str());
    }
}

} // namespace

int main(int argc, char **argv) {
    // A bounded default: the whole run takes well under two minutes on two cores. A
    // --benchmark_min_time given on the command line comes later and wins.
    std::vector<char *> args(argv, argv + argc);
    std::string min_time = "--benchmark_min_time=0.2";
    args.insert(args.begin() + 1, min_time.data());
    int nargs = static_cast<int>(args.size());
    benchmark::Initialize(&nargs, args.data());

    fill_image();
    bpftime_setup bt;
    // Local, so the engines go before LLVM's and libbpf's static state at exit.
    std::array<program_state, std::size(programs)> states;
    std::set<std::string> loaded_objects;
    for (size_t i = 0; i < std::size(programs); i++) {
        states[i].prog = &programs[i];
    }
    for (const suite_program &p : programs) {
        if (!loaded_objects.insert(p.object).second) {
            continue;
        }
        for (auto &[name, compiled] : bt.load(object_path(BPFTIME_SUITE_DIR, p.object), true)) {
            for (program_state &st : states) {
                if (st.prog->name == name && std::strcmp(st.prog->object, p.object) == 0) {
                    st.compiled = compiled;
                    st.memory = bt.memories.at(object_path(BPFTIME_SUITE_DIR, p.object)).get();
                }
            }
        }
    }
    for (program_state &st : states) {
        if (!st.compiled) {
            die(std::string("no program ") + st.prog->name + " in " + st.prog->object + ".bpf.o");
        }
    }

    // Compile times first, so the first JIT compile of the process is among them.
    for (program_state &st : states) {
        st.compile = time_compiles(st.compiled->program());
    }
    for (const char *example : {"url_allowlist", "refusal_log", "rate_limit"}) {
        for (auto &[name, compiled] : bt.load(object_path(BPFTIME_EXAMPLES_DIR, example), false)) {
            example_compiles.emplace_back(std::string(example) + "/" + name,
                                          time_compiles(compiled->program()));
        }
    }

    bool all_agree = true;
    for (program_state &st : states) {
        const vm::program &prog = st.compiled->program();
        auto make = [&](variant v, vm::engine_kind kind, vm::engine_options opts) {
            auto e = vm::make_engine(kind, prog, opts);
            if (e) {
                st.engines[v] = std::move(*e);
            } else {
                st.unavailable[v] = e.err().message;
            }
        };
        // The optimised tier: what a tiered engine runs once its background compile is done.
        make(jit, vm::engine_kind::jit, {.tier = vm::jit_tier::optimised});
        make(jit_unchecked, vm::engine_kind::jit,
             {.unchecked = true, .tier = vm::jit_tier::optimised});
        make(interp, vm::engine_kind::interpreter, {});
        load_kernel(st);
        all_agree = check_results(st) && all_agree;
        if (st.kern.fd >= 0 && st.mismatch[kernel].empty()) {
            st.kern.repeat = kernel_repeat(st.kern.fd);
        }
    }
    for (program_state &st : states) {
        std::string prefix = std::string("exec/") + st.prog->name + "/";
        benchmark::RegisterBenchmark((prefix + "native").c_str(), bm_native, &st);
        for (variant v : {jit, jit_unchecked, interp}) {
            if (st.engines[v]) {
                benchmark::RegisterBenchmark((prefix + variant_names[v]).c_str(), bm_engine, &st,
                                             v);
            }
        }
        if (st.kern.fd >= 0) {
            benchmark::RegisterBenchmark((prefix + "kernel").c_str(), bm_kernel, &st)
                ->UseManualTime()
                ->Iterations(kernel_iterations);
        }
    }
    bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    print_summary(reporter, states);
    benchmark::Shutdown();
    if (!all_agree) {
        std::fprintf(stderr, "exec_bench: some variants returned other values than native code\n");
        return 1;
    }
    return 0;
}
