// SPDX-License-Identifier: MIT
// The cost per call of a user-space uprobe whose link an unmodified libbpf loader made through
// the bpf() interposer (`bpftime load attach_loader ...`) beside one made with the command line
// (`bpftime attach uprobe`): the same program (bench/probes/uprobe_counter.bpf.c's count_entry)
// on the same function of this binary, hosted by this process, the two variants interleaved in
// one run (six repetitions each, in random order). Programs are compiled on the JIT's optimised
// tier when attached, so both variants run optimised code from the first measured call (the
// tiered default would run baseline code until a background compile finished, and the
// interposer's program is a new one each repetition). Prints Google Benchmark's table, then ns
// per call of each and their ratio. A variant
// whose link cannot be made (no interposer in the build) is skipped with the reason.
#include <bpftime/loader/elf.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

extern "C" __attribute__((noinline, used)) long bpftime_bench_probed(long a, long b) {
    asm volatile("" ::: "memory");
    return a + b;
}

namespace {

using namespace bpftime;

const std::string segment_name = "bpftime-interposer-bench-" + std::to_string(getpid());
std::unique_ptr<event_provider_impl> host;
std::string self_path;
uint32_t cli_program = 0;

struct timing {
    double ns = 0;
    double calls = 0;
};
std::map<std::string, timing> timings;

// Runs a command with BPFTIME_SHM set; its standard output, or nothing when it failed.
std::string run(const std::string &command, bool &ok) {
    std::string out;
    FILE *p = ::popen(command.c_str(), "r");
    if (p == nullptr) {
        ok = false;
        return out;
    }
    char buf[512];
    while (std::fgets(buf, sizeof buf, p) != nullptr) {
        out += buf;
    }
    ok = ::pclose(p) == 0;
    return out;
}

// The calls of one measured loop, after the variant's link is attached here.
void measure(benchmark::State &state, const std::string &variant) {
    if (auto r = host->instantiate(); !r) {
        state.SkipWithError(("instantiate: " + r.err().message).c_str());
        return;
    }
    if (host->manager().attached_count() == 0) {
        state.SkipWithError("the link did not attach in this process");
        return;
    }
    long sum = 0;
    auto start = std::chrono::steady_clock::now();
    for (auto _ : state) {
        sum += bpftime_bench_probed(sum & 7, 1);
    }
    auto ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start);
    benchmark::DoNotOptimize(sum);
    timings[variant].ns += ns.count();
    timings[variant].calls += static_cast<double>(state.iterations());
}

void BM_cli_link(benchmark::State &state) {
    bool ok = false;
    std::string out =
        run(std::string(BPFTIME_CLI) + " attach uprobe " + std::to_string(cli_program) + " " +
                self_path + ":bpftime_bench_probed",
            ok);
    unsigned link = 0, target = 0;
    if (!ok || std::sscanf(out.c_str(), "link %u (target %u)", &link, &target) != 2) {
        state.SkipWithError(("bpftime attach failed: " + out).c_str());
        return;
    }
    measure(state, "cli");
    (void)host->destroy_object(link);
    (void)host->destroy_object(target);
    (void)host->instantiate();
}

void BM_interposer_link(benchmark::State &state) {
    int in[2], outp[2];
    if (::pipe(in) != 0 || ::pipe(outp) != 0) {
        state.SkipWithError("pipe failed");
        return;
    }
    pid_t child = ::fork();
    if (child == 0) {
        ::dup2(in[0], 0);
        ::dup2(outp[1], 1);
        ::close(in[1]);
        ::close(outp[0]);
        std::string pid = std::to_string(::getppid());
        ::execl(BPFTIME_CLI, BPFTIME_CLI, "load", BPFTIME_ATTACH_LOADER,
                BPFTIME_PROBE_BENCH_DIR "/uprobe_counter.bpf.o", "count_entry", self_path.c_str(),
                "bpftime_bench_probed", pid.c_str(), static_cast<char *>(nullptr));
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(outp[1]);
    char line[64] = {};
    ssize_t n = ::read(outp[0], line, sizeof line - 1);
    bool attached = n > 0 && std::strncmp(line, "attached", 8) == 0;
    if (attached) {
        measure(state, "interposer");
    } else {
        state.SkipWithError("the loader under bpftime load made no link (is the interposer "
                            "built?)");
    }
    ::close(in[1]); // the loader drops its link and exits
    ::close(outp[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    (void)host->instantiate();
}

} // namespace

// Interleaved: main() asks for random interleaving of the repetitions.
BENCHMARK(BM_cli_link)->Repetitions(6)->MinTime(0.2);
BENCHMARK(BM_interposer_link)->Repetitions(6)->MinTime(0.2);

int main(int argc, char **argv) {
    char resolved[PATH_MAX];
    if (::realpath("/proc/self/exe", resolved) == nullptr) {
        std::perror("realpath");
        return 1;
    }
    self_path = resolved;
    ::setenv("BPFTIME_SHM", segment_name.c_str(), 1);
    store::open_options opts;
    auto seg = store::segment::open(segment_name, opts);
    if (!seg) {
        std::fprintf(stderr, "interposer_bench: %s\n", seg.err().message.c_str());
        return 1;
    }
    manager_options mopts;
    mopts.engine_options.tier = vm::jit_tier::optimised;
    host = std::make_unique<event_provider_impl>(*seg, mopts);
    if (auto r = host->manager().register_attach_impls(make_uprobe_attach_impls()); !r) {
        std::fprintf(stderr, "interposer_bench: %s\n", r.err().message.c_str());
        return 1;
    }
    bool ok = false;
    std::string out = run(
        std::string(BPFTIME_CLI) + " load " BPFTIME_PROBE_BENCH_DIR "/uprobe_counter.bpf.o", ok);
    const char *at = std::strstr(out.c_str(), "program ");
    unsigned id = 0;
    while (at != nullptr && std::sscanf(at, "program %u count_entry", &id) != 1) {
        at = std::strstr(at + 1, "program ");
    }
    if (!ok || id == 0) {
        std::fprintf(stderr, "interposer_bench: bpftime load failed: %s\n", out.c_str());
        (void)store::segment::remove(segment_name);
        return 1;
    }
    cli_program = id;
    std::vector<char *> args(argv, argv + argc);
    char interleave[] = "--benchmark_enable_random_interleaving=true";
    args.insert(args.begin() + 1, interleave);
    int nargs = static_cast<int>(args.size());
    benchmark::Initialize(&nargs, args.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    auto per_call = [](const timing &t) { return t.calls > 0 ? t.ns / t.calls : 0.0; };
    double cli = per_call(timings["cli"]);
    double interposed = per_call(timings["interposer"]);
    std::printf("uprobe linked with the CLI: %.2f ns/call\n", cli);
    if (interposed > 0 && cli > 0) {
        std::printf("uprobe linked through the interposer: %.2f ns/call (%.2fx the CLI's)\n",
                    interposed, interposed / cli);
    } else {
        std::printf("uprobe linked through the interposer: not measured (no link was made)\n");
    }
    host.reset();
    (void)store::segment::remove(segment_name);
    return 0;
}
