// SPDX-License-Identifier: MIT
// How fast a hosted program follows a change of the segment, and what an idle agent costs:
// the agent sleeping on the generation (a futex writers wake) beside the agent looking every
// 5 ms (BPFTIME_AGENT_POLL_MS=5, how it followed before), interleaved in one run.
//
// Detach latency: a target calls a probed function in a loop under the agent; this process
// disables the link (the segment write a `bpftime disable` makes) and watches the link's
// count until it stops moving: the time from the write to the last count. Idle cost: a target
// that sleeps, under the agent; CPU ticks (utime + stime of /proc/PID/stat) and voluntary
// context switches of all its threads over 3 s.
// Usage: bpftime_follow_bench BPFTIME AGENT_SO PROBE_TARGET UPROBE_COUNT_OBJECT [REPETITIONS]
#include <bpftime/store/store.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

std::string cli, agent, target, object;

pid_t spawn(const std::vector<std::string> &args, int poll_ms) {
    pid_t pid = fork();
    if (pid == 0) {
        setenv("LD_PRELOAD", agent.c_str(), 1);
        setenv("BPFTIME_AGENT_QUIET", "1", 1);
        if (poll_ms > 0) {
            setenv("BPFTIME_AGENT_POLL_MS", std::to_string(poll_ms).c_str(), 1);
        }
        std::vector<char *> argv;
        for (const auto &a : args) {
            argv.push_back(const_cast<char *>(a.c_str()));
        }
        argv.push_back(nullptr);
        execv(argv[0], argv.data());
        _exit(127);
    }
    return pid;
}

void stop(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
}

uint64_t count(const bpftime::store::segment &seg) {
    auto view = seg.map_view(2);
    if (!view) {
        return 0;
    }
    uint32_t key = 0;
    auto v = view->read(std::span(reinterpret_cast<const uint8_t *>(&key), sizeof key));
    uint64_t n = 0;
    if (v && v->size() >= sizeof n) {
        std::memcpy(&n, v->data(), sizeof n);
    }
    return n;
}

bool wait_counting(const bpftime::store::segment &seg) {
    const uint64_t start = count(seg);
    for (int i = 0; i < 2000; i++) {
        if (count(seg) > start + 10) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
}

// Microseconds from disabling the link to the last call it counted.
std::vector<double> detach_latencies(bpftime::store::segment &seg, int samples) {
    std::vector<double> out;
    for (int i = 0; i < samples; i++) {
        if (!wait_counting(seg)) {
            std::fprintf(stderr, "the target does not count\n");
            std::exit(1);
        }
        uint64_t last = count(seg);
        const auto t0 = clock_type::now();
        if (!seg.set_link_enabled(6, false)) {
            std::exit(1);
        }
        auto last_change = t0;
        while (clock_type::now() - last_change < std::chrono::milliseconds(50)) {
            uint64_t now = count(seg);
            if (now != last) {
                last = now;
                last_change = clock_type::now();
            }
        }
        out.push_back(std::chrono::duration<double, std::micro>(last_change - t0).count());
        if (!seg.set_link_enabled(6, true)) {
            std::exit(1);
        }
    }
    return out;
}

std::pair<long, long> idle_cost(pid_t pid) {
    auto ticks = [&] {
        std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
        std::string s((std::istreambuf_iterator<char>(f)), {});
        std::istringstream rest(s.substr(s.rfind(')') + 2));
        std::string field;
        long utime = 0, stime = 0;
        for (int i = 3; i <= 15 && rest >> field; i++) {
            if (i == 14) {
                utime = std::stol(field);
            } else if (i == 15) {
                stime = std::stol(field);
            }
        }
        return utime + stime;
    };
    auto switches = [&] {
        long n = 0;
        std::string dir = "/proc/" + std::to_string(pid) + "/task";
        FILE *p = popen(("cat " + dir + "/*/status 2>/dev/null").c_str(), "r");
        char line[256];
        while (p != nullptr && std::fgets(line, sizeof line, p) != nullptr) {
            if (std::strncmp(line, "voluntary_ctxt_switches:", 24) == 0) {
                n += std::strtol(line + 24, nullptr, 10);
            }
        }
        if (p != nullptr) {
            pclose(p);
        }
        return n;
    };
    std::this_thread::sleep_for(std::chrono::seconds(1));
    long t0 = ticks(), s0 = switches();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    return {ticks() - t0, switches() - s0};
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 5) {
        std::fprintf(stderr,
                     "usage: %s BPFTIME AGENT_SO PROBE_TARGET UPROBE_COUNT_OBJECT [REPETITIONS]\n",
                     argv[0]);
        return 2;
    }
    cli = argv[1], agent = argv[2], target = argv[3], object = argv[4];
    const int reps = argc > 5 ? std::atoi(argv[5]) : 5;
    const std::string shm = "bpftime-follow-bench-" + std::to_string(getpid());
    setenv("BPFTIME_SHM", shm.c_str(), 1);
    (void)bpftime::store::segment::remove(shm);
    const std::string setup = cli + " load " + object + " >/dev/null && " + cli +
                              " attach uprobe 3 " + target + ":bpftime_target_add >/dev/null";
    if (std::system(setup.c_str()) != 0) {
        std::fprintf(stderr, "setup failed: %s\n", setup.c_str());
        return 1;
    }
    auto seg = bpftime::store::segment::open(shm, {.create = false});
    if (!seg) {
        std::fprintf(stderr, "%s\n", seg.err().message.c_str());
        return 1;
    }
    const std::map<int, const char *> modes = {{0, "futex"}, {5, "poll 5 ms"}};
    std::map<int, std::vector<double>> latency, ticks, wakes;
    for (int rep = 0; rep < reps; rep++) {
        for (auto [poll, name] : modes) {
            pid_t busy = spawn({target, "1000000000", "1", "20"}, poll);
            auto l = detach_latencies(**seg, 10);
            stop(busy);
            latency[poll].push_back(median(l));
            pid_t idle = spawn({target, "1", "1", "30000000"}, poll);
            auto [t, w] = idle_cost(idle);
            stop(idle);
            ticks[poll].push_back(static_cast<double>(t));
            wakes[poll].push_back(static_cast<double>(w));
            std::printf("rep %d %-9s detach %8.0f us  idle: %ld ticks, %ld wakeups in 3 s\n", rep,
                        name, median(l), t, w);
        }
    }
    std::printf("\nmedians of %d repetitions (each detach figure the median of 10 detaches):\n",
                reps);
    for (auto [poll, name] : modes) {
        std::printf("  %-9s detach %8.0f us  idle: %.0f ticks, %.0f wakeups in 3 s\n", name,
                    median(latency[poll]), median(ticks[poll]), median(wakes[poll]));
    }
    std::printf("detach latency, futex / poll: %.3f\n", median(latency[0]) / median(latency[5]));
    (void)bpftime::store::segment::remove(shm);
    return 0;
}
