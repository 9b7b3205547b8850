// SPDX-License-Identifier: MIT
// The cost of a uprobe: a trivial function of this binary, bpftime_bench_probed, called once
// per iteration with nothing attached, then with the programs of bench/probes/uprobe_counter.bpf.c
// attached to it through the kernel provider and through user-space uprobes (inline hooks in
// this process, the programs on the JIT's optimised tier), each as entry, return and both, in
// one run. Each run of a variant attaches its probes before its loop and destroys them after
// it, then checks that the probes saw every call (the totals map grew by exactly the calls
// made, and the return probe summed exactly what the calls returned). Prints Google
// Benchmark's table, then ns per call, the overhead over the unprobed call and the ratio to it
// for each variant, and the user-space probes' cost beside the kernel's. The *_short variants
// probe a 4-byte function, which user space takes with a trap probe (an int3) instead of a
// jump.
#include "bench_util.hpp"

#include <bpftime/attach/attach.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/provider/kernel_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

/// The probed function. noinline and used, so every iteration is a real call to a symbol the
/// probe target resolves; the empty asm keeps the compiler from treating it as pure.
extern "C" __attribute__((noinline, used)) long bpftime_bench_probed(long a, long b) {
    asm volatile("" ::: "memory");
    return a + b;
}

/// The same sum in 4 bytes (lea; ret): too short for a 5-byte jump, so user-space probes on it
/// are trap probes (an int3 and a SIGTRAP per call).
extern "C" long bpftime_bench_probed_short(long a, long b);
asm(R"(
        .text
        .globl bpftime_bench_probed_short
        .type bpftime_bench_probed_short, @function
        .p2align 4
bpftime_bench_probed_short:
        leal (%rdi,%rsi), %eax
        ret
        .size bpftime_bench_probed_short, . - bpftime_bench_probed_short
        .fill 12, 1, 0xcc
)");

namespace {

using namespace bpftime;

/// Where the probes go: this binary (the resolver follows the link to the real path).
constexpr const char *probe_target = "/proc/self/exe:bpftime_bench_probed";
constexpr const char *short_probe_target = "/proc/self/exe:bpftime_bench_probed_short";

/// The segment (the bpffs folder /sys/fs/bpf/NAME for the kernel) this run owns.
const std::string segment_name = "bpftime-uprobe-bench-" + std::to_string(getpid());
std::atomic<bool> folder_created = false;

/// The shared-memory segment of the user-space probes this run owns.
const std::string user_segment_name = "bpftime-uprobe-bench-user-" + std::to_string(getpid());
std::atomic<bool> user_segment_created = false;

/// Releases the kernel objects of this run: nothing stays pinned in bpffs.
void remove_folder() {
    if (folder_created.exchange(false)) {
        if (auto r = kernel_event_provider::remove(segment_name); !r) {
            std::fprintf(stderr, "uprobe_bench: %s\n", r.err().message.c_str());
        }
    }
}

/// Removes the user-space segment's name (this process's mapping stays until it ends).
void remove_user_segment() {
    if (user_segment_created.exchange(false)) {
        if (auto r = store::segment::remove(user_segment_name); !r) {
            std::fprintf(stderr, "uprobe_bench: %s\n", r.err().message.c_str());
        }
    }
}

void remove_all() {
    remove_folder();
    remove_user_segment();
}

[[noreturn]] void die(const std::string &what) {
    std::fprintf(stderr, "uprobe_bench: %s\n", what.c_str());
    remove_all();
    std::exit(1);
}

/// SIGINT, SIGTERM and SIGHUP go to a thread of their own, which removes the folder and the
/// segment before the process ends, so an interrupted run leaves nothing attached or named
/// either.
void handle_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
        sigaddset(&set, sig);
    }
    // Blocked here, in every thread started later too; only the waiting thread takes them.
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
        int sig = 0;
        if (sigwait(&set, &sig) == 0) {
            std::fprintf(stderr, "uprobe_bench: %s, removing %s and %s\n", strsignal(sig),
                         segment_name.c_str(), user_segment_name.c_str());
            remove_all();
            std::_Exit(128 + sig);
        }
    }).detach();
}

/// The counters of uprobe_counter.bpf.o's totals map.
struct totals {
    uint64_t entries = 0;    // [0]: calls seen on entry
    uint64_t returns = 0;    // [1]: returns seen
    uint64_t return_sum = 0; // [2]: the sum of the returned values

    bool operator==(const totals &) const = default;
};

/// A program of the probe object attached at the probed function.
struct probe {
    const char *program;
    int32_t attach_type;
};

/// A provider holding the probe object's programs and maps: where a variant's probes run.
struct backend {
    std::string name;
    std::unique_ptr<base_event_provider> provider;
    std::map<std::string, uint32_t> programs; // program name -> id
    std::unique_ptr<map_access> totals_map;
    std::string unavailable;      // why its variants do not run
    double longest_detach_ms = 0; // the longest a probe kept firing after its link was destroyed

    result<totals> read_totals() const {
        totals t;
        uint64_t *fields[] = {&t.entries, &t.returns, &t.return_sum};
        for (uint32_t i = 0; i < 3; i++) {
            auto v = totals_map->read({reinterpret_cast<const uint8_t *>(&i), sizeof i});
            if (!v) {
                return v.err();
            }
            if (v->size() != sizeof(uint64_t)) {
                return make_error(EPROTO, "totals holds values of " + std::to_string(v->size()) +
                                              " bytes, not 8");
            }
            std::memcpy(fields[i], v->data(), sizeof(uint64_t));
        }
        return t;
    }
};

/// Loads the counting programs (probes/uprobe_counter.bpf.c) through a provider. The backend
/// keeps the provider.
void load_probes(backend &b) {
    std::string path = std::string(BPFTIME_PROBE_BENCH_DIR) + "/uprobe_counter.bpf.o";
    auto obj = loader::open_elf(path);
    if (!obj) {
        die(path + ": " + obj.err().message);
    }
    auto loaded = load_object(*b.provider, *obj);
    if (!loaded) {
        die(b.name + ": " + path + ": " + loaded.err().message);
    }
    for (const auto &[id, name] : loaded->programs) {
        b.programs[name] = id;
    }
    for (const auto &[id, name] : loaded->maps) {
        if (name == "totals") {
            auto m = b.provider->open_map(id);
            if (!m) {
                die(b.name + ": map totals: " + m.err().message);
            }
            b.totals_map = std::move(*m);
        }
    }
    if (!b.totals_map) {
        die(path + " has no map totals");
    }
}

/// One row of the summary: the probed function with some probes attached through a backend,
/// or with nothing attached (no backend).
struct variant {
    const char *name;
    backend *where; // nullptr: nothing attached
    std::vector<probe> probes;
    bool short_fn = false; // probes and calls bpftime_bench_probed_short

    uint64_t calls = 0; // calls made and seen by the probes, over every run of the variant
    std::string error;  // why a run failed; the variant then has no figure

    bool has(int32_t attach_type) const {
        for (const probe &p : probes) {
            if (p.attach_type == attach_type) {
                return true;
            }
        }
        return false;
    }
};

/// Waits until a call of the probed function no longer reaches a probe: the kernel provider
/// destroys a link by removing its pin, and the kernel detaches the probe a little later (it
/// releases the link from a work queue), so without this wait a probe of one run could still
/// fire in the next.
result<void> wait_detached(backend &b) {
    using clock = std::chrono::steady_clock;
    auto start = clock::now();
    while (true) {
        auto t0 = b.read_totals();
        benchmark::DoNotOptimize(bpftime_bench_probed(0, 0));
        auto t1 = b.read_totals();
        if (!t0 || !t1) {
            return !t0 ? t0.err() : t1.err();
        }
        double ms = std::chrono::duration<double, std::milli>(clock::now() - start).count();
        if (*t0 == *t1) {
            b.longest_detach_ms = std::max(b.longest_detach_ms, ms);
            return {};
        }
        if (ms > 5000) {
            return make_error(EBUSY, "the probes still fire 5 s after their links were destroyed");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

/// The objects a run created, destroyed newest first (links before their targets).
struct attached {
    backend *where = nullptr;
    std::vector<uint32_t> ids;

    attached() = default;
    attached(const attached &) = delete;
    attached &operator=(const attached &) = delete;
    ~attached() { (void)release(); }

    /// Destroys the objects and waits until the probes no longer fire.
    result<void> release() {
        result<void> first;
        if (ids.empty()) {
            return first;
        }
        while (!ids.empty()) {
            if (auto r = where->provider->destroy_object(ids.back()); !r && first) {
                first = std::move(r);
            }
            ids.pop_back();
        }
        if (where != nullptr) {
            // The user-space provider detaches in this process here; the kernel already has.
            if (auto r = where->provider->instantiate(); !r && first) {
                first = std::move(r);
            }
            if (auto r = wait_detached(*where); !r && first) {
                first = std::move(r);
            }
        }
        return first;
    }
};

/// Attaches a variant's probes; the run's own objects go into out.
result<void> attach(const variant &v, attached &out) {
    backend &b = *v.where;
    out.where = &b;
    for (const probe &p : v.probes) {
        auto prog = b.programs.find(p.program);
        if (prog == b.programs.end()) {
            return make_error(ENOENT, std::string("no program ") + p.program);
        }
        auto target = b.provider->create_attach_target(
            p.attach_type, v.short_fn ? short_probe_target : probe_target);
        if (!target) {
            return target.err();
        }
        out.ids.push_back(*target);
        auto link = b.provider->attach_program(prog->second, *target);
        if (!link) {
            return link.err();
        }
        out.ids.push_back(*link);
    }
    // The user-space provider attaches in this process here; the kernel already has.
    return b.provider->instantiate();
}

/// Attaches an entry and a return probe once and detaches them again, so that a hook that
/// cannot be installed here skips the user-space variants with the reason instead of failing
/// each of them.
result<void> try_probes(backend &b) {
    variant v{
        "try", &b, {{"count_entry", attach_type_uprobe}, {"count_return", attach_type_uretprobe}}};
    attached probes;
    auto r = attach(v, probes);
    auto released = probes.release();
    if (!r) {
        return r;
    }
    return released;
}

/// The user-space provider over a private segment, with the uprobe and uretprobe attach types
/// of this process registered. Programs are compiled on the JIT's optimised tier when attached,
/// so the measured calls run optimised code from the first one (the tiered default would run
/// baseline code until a background compile finished). Any failure leaves the backend
/// unavailable with the reason.
void open_user(backend &b) {
    // A segment left by an earlier process of the same pid goes first.
    (void)store::segment::remove(user_segment_name);
    auto seg = store::segment::open(user_segment_name, {.create = true});
    if (!seg) {
        b.unavailable = "segment " + user_segment_name + ": " + seg.err().message;
        return;
    }
    user_segment_created = true;
    manager_options opts;
    opts.engine_options.tier = vm::jit_tier::optimised;
    auto p = std::make_unique<event_provider_impl>(*seg, opts);
    if (auto r = p->manager().register_attach_impls(make_uprobe_attach_impls()); !r) {
        b.unavailable = "cannot register the uprobe attach types: " + r.err().message;
        return;
    }
    b.provider = std::move(p);
    load_probes(b);
    if (auto r = try_probes(b); !r) {
        b.unavailable =
            "cannot install the hook at " + std::string(probe_target) + ": " + r.err().message;
    }
}

void fail(benchmark::State &state, variant &v, const std::string &why) {
    v.error = why;
    state.SkipWithError(v.error.c_str());
}

std::string counter_text(const char *what, uint64_t got, uint64_t want) {
    return std::string(what) + " grew by " + std::to_string(got) + ", expected " +
           std::to_string(want);
}

void bm_call(benchmark::State &state, variant *v) {
    if (!v->error.empty()) {
        state.SkipWithError(v->error.c_str());
        return;
    }
    totals before;
    attached probes;
    if (v->where != nullptr) {
        auto t = v->where->read_totals();
        if (!t) {
            fail(state, *v, "cannot read totals: " + t.err().message);
            return;
        }
        before = *t;
        if (auto r = attach(*v, probes); !r) {
            fail(state, *v, "cannot attach: " + r.err().message);
            return;
        }
    }
    long i = 0;
    uint64_t sum = 0;
    if (v->short_fn) {
        for (auto _ : state) {
            sum += static_cast<uint64_t>(bpftime_bench_probed_short(i & 7, i & 0xFFFF));
            i++;
        }
    } else {
        for (auto _ : state) {
            sum += static_cast<uint64_t>(bpftime_bench_probed(i & 7, i));
            i++;
        }
    }
    benchmark::DoNotOptimize(sum);
    auto n = static_cast<uint64_t>(i);
    if (n != static_cast<uint64_t>(state.iterations())) {
        fail(state, *v,
             "made " + std::to_string(n) + " calls in " + std::to_string(state.iterations()) +
                 " iterations");
        return;
    }
    if (v->where == nullptr) {
        v->calls += n;
        return;
    }
    // Every call's probes ran in this thread before the call returned.
    auto after = v->where->read_totals();
    if (!after) {
        fail(state, *v, "cannot read totals: " + after.err().message);
        return;
    }
    if (auto r = probes.release(); !r) {
        fail(state, *v, "cannot detach: " + r.err().message);
        return;
    }
    bool entry = v->has(attach_type_uprobe), ret = v->has(attach_type_uretprobe);
    std::string wrong;
    auto check = [&](const char *what, uint64_t got, uint64_t want) {
        if (got != want) {
            wrong += (wrong.empty() ? "" : "; ") + counter_text(what, got, want);
        }
    };
    check("totals[0] (entries)", after->entries - before.entries, entry ? n : 0);
    check("totals[1] (returns)", after->returns - before.returns, ret ? n : 0);
    check("totals[2] (sum of returns)", after->return_sum - before.return_sum, ret ? sum : 0);
    if (!wrong.empty()) {
        fail(state, *v, "the probes did not see the " + std::to_string(n) + " calls: " + wrong);
        return;
    }
    v->calls += n;
}

/// A variant's ns per call: the median of its repetitions when there are several.
std::optional<double> figure(const bench::recording_reporter &r, const variant &v) {
    if (!v.error.empty()) {
        return std::nullopt;
    }
    auto median = r.cpu_time(std::string(v.name) + "_median");
    return median ? median : r.cpu_time(v.name);
}

void print_summary(const bench::recording_reporter &r, const std::vector<variant> &variants) {
    std::printf("\nns per call (CPU time of the thread, which includes the kernel's work for the "
                "probes), the overhead over %s and the ratio to it; calls: made over every run of "
                "the variant, each seen by its probes\n",
                variants.front().name);
    std::printf("%-26s %12s %12s %10s %14s\n", "variant", "ns/call", "overhead", "ratio", "calls");
    // The baseline's ns per call; 0 when it has no figure.
    double base = figure(r, variants.front()).value_or(0);
    std::map<std::string, double> overhead;
    for (const variant &v : variants) {
        auto t = figure(r, v);
        if (!t) {
            std::printf("%-26s %12s %12s %10s %14s\n", v.name, "-", "-", "-", "-");
            continue;
        }
        if (base > 0) {
            overhead[v.name] = *t - base;
            std::printf("%-26s %12.1f %12.1f %9.1fx %14llu\n", v.name, *t, *t - base, *t / base,
                        static_cast<unsigned long long>(v.calls));
        } else {
            std::printf("%-26s %12.1f %12s %10s %14llu\n", v.name, *t, "-", "-",
                        static_cast<unsigned long long>(v.calls));
        }
    }
    std::map<std::string, std::string> skipped; // backend -> why
    for (const variant &v : variants) {
        if (v.where != nullptr && !v.where->unavailable.empty()) {
            skipped[v.where->name] = v.where->unavailable;
        }
    }
    for (const auto &[name, why] : skipped) {
        std::printf("%s variants: skipped: %s\n", name.c_str(), why.c_str());
    }
    std::map<std::string, const backend *> used;
    for (const variant &v : variants) {
        if (v.where != nullptr && v.where->unavailable.empty()) {
            used[v.where->name] = v.where;
        }
    }
    for (const auto &[name, b] : used) {
        std::printf("%s: probes kept firing up to %.1f ms after their links were destroyed (each "
                    "run waits for that before the next)\n",
                    name.c_str(), b->longest_detach_ms);
    }
    for (const variant &v : variants) {
        if (!v.error.empty()) {
            std::printf("%s: FAILED: %s\n", v.name, v.error.c_str());
        }
    }
    // The figure user-space probes are compared against.
    auto k = overhead.find("kernel_uprobe");
    if (k != overhead.end()) {
        std::printf("\nkernel uprobe: %.1f ns per probed call (kernel_uprobe over no_probe)\n",
                    k->second);
    } else {
        std::printf("\nkernel uprobe: not measured\n");
    }

    // The user-space probes beside the kernel's: overheads over no_probe, and the fraction of
    // the kernel's they cost.
    auto fraction = [&](const char *user_row, const char *kernel_row) -> std::optional<double> {
        auto u = overhead.find(user_row), kr = overhead.find(kernel_row);
        if (u == overhead.end() || kr == overhead.end() || u->second <= 0 || kr->second <= 0) {
            return std::nullopt;
        }
        return kr->second / u->second;
    };
    struct pair {
        const char *what, *user_row, *kernel_row;
    };
    for (const pair &p :
         {pair{"uprobe", "user_uprobe", "kernel_uprobe"},
          pair{"uretprobe", "user_uretprobe", "kernel_uretprobe"},
          pair{"uprobe + uretprobe", "user_uprobe_uretprobe", "kernel_uprobe_uretprobe"}}) {
        auto u = overhead.find(p.user_row);
        if (u == overhead.end()) {
            std::printf("user-space %s: not measured\n", p.what);
            continue;
        }
        if (auto n = fraction(p.user_row, p.kernel_row)) {
            std::printf("user-space %s: %.1f ns per probed call, 1/%.0f of the kernel's (%s and "
                        "%s over no_probe)\n",
                        p.what, u->second, *n, p.user_row, p.kernel_row);
        } else {
            std::printf("user-space %s: %.1f ns per probed call, the kernel's not measured\n",
                        p.what, u->second);
        }
    }

    // The targets: a user-space uprobe at most 1/50 of the kernel's, and ideally under 20 ns.
    auto u = overhead.find("user_uprobe");
    std::printf("\ntarget: user-space uprobe <= 1/50 of the kernel uprobe's: ");
    if (auto n = fraction("user_uprobe", "kernel_uprobe")) {
        std::printf("%s (1/%.0f)\n", *n >= 50 ? "holds" : "MISSED", *n);
    } else {
        std::printf("not judged (%s not measured)\n",
                    u == overhead.end() ? "user_uprobe" : "kernel_uprobe");
    }
    std::printf("target (ideal): user-space uprobe < 20 ns: ");
    if (u != overhead.end()) {
        std::printf("%s (%.1f ns)\n", u->second < 20 ? "holds" : "MISSED", u->second);
    } else {
        std::printf("not judged (user_uprobe not measured)\n");
    }
}

} // namespace

int main(int argc, char **argv) {
    // A bounded default: the whole run takes a few seconds. A --benchmark_min_time given on the
    // command line comes later and wins.
    std::vector<char *> args(argv, argv + argc);
    std::string min_time = "--benchmark_min_time=0.5";
    args.insert(args.begin() + 1, min_time.data());
    int nargs = static_cast<int>(args.size());
    benchmark::Initialize(&nargs, args.data());
    handle_signals();

    backend kernel{.name = "kernel"};
    if (auto ok = kernel_event_provider::available(); !ok) {
        kernel.unavailable = ok.err().message;
    } else {
        // A folder left by an earlier process of the same pid goes first.
        (void)kernel_event_provider::remove(segment_name);
        auto p = kernel_event_provider::open(segment_name, true);
        if (!p) {
            die("kernel provider: " + p.err().message);
        }
        folder_created = true;
        kernel.provider = std::move(*p);
        load_probes(kernel);
    }
    backend user{.name = "user"};
    open_user(user);

    // One row per variant; the first is the baseline of the summary. Further rows need a
    // backend (a provider with uprobe_counter.bpf.o loaded; a user-space one attaches in this
    // process through instantiate()) and the probes to attach.
    std::vector<variant> variants = {
        {"no_probe", nullptr, {}},
        {"kernel_uprobe", &kernel, {{"count_entry", attach_type_uprobe}}},
        {"kernel_uretprobe", &kernel, {{"count_return", attach_type_uretprobe}}},
        {"kernel_uprobe_uretprobe",
         &kernel,
         {{"count_entry", attach_type_uprobe}, {"count_return", attach_type_uretprobe}}},
        {"user_uprobe", &user, {{"count_entry", attach_type_uprobe}}},
        {"user_uretprobe", &user, {{"count_return", attach_type_uretprobe}}},
        {"user_uprobe_uretprobe",
         &user,
         {{"count_entry", attach_type_uprobe}, {"count_return", attach_type_uretprobe}}},
        // Trap probes: the 4-byte function, with its own unprobed baseline and the kernel's
        // uprobe on it.
        {"no_probe_short", nullptr, {}, true},
        {"kernel_uprobe_short", &kernel, {{"count_entry", attach_type_uprobe}}, true},
        {"user_trap_uprobe", &user, {{"count_entry", attach_type_uprobe}}, true},
        {"user_trap_uprobe_uretprobe",
         &user,
         {{"count_entry", attach_type_uprobe}, {"count_return", attach_type_uretprobe}},
         true},
    };
    for (variant &v : variants) {
        if (v.where != nullptr && !v.where->unavailable.empty()) {
            continue;
        }
        benchmark::RegisterBenchmark(v.name, bm_call, &v);
    }
    for (const backend *b : {&kernel, &user}) {
        if (!b->unavailable.empty()) {
            std::printf("%s variants skipped: %s\n", b->name.c_str(), b->unavailable.c_str());
        }
    }
    if (user.unavailable.empty()) {
        vm::engine_kind engine = vm::available_engines().front();
        std::printf("user variants: the %s engine%s, compiled when attached (before the first "
                    "probed call)\n",
                    vm::engine_name(engine),
                    engine == vm::engine_kind::jit ? ", optimised tier" : "");
    }

    bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    print_summary(reporter, variants);
    benchmark::Shutdown();

    kernel.totals_map.reset();
    kernel.provider.reset();
    remove_folder();
    user.totals_map.reset();
    user.provider.reset(); // removes the hooks
    remove_user_segment();
    for (const variant &v : variants) {
        if (!v.error.empty()) {
            std::fprintf(stderr, "uprobe_bench: %s: %s\n", v.name, v.error.c_str());
            return 1;
        }
    }
    return 0;
}
