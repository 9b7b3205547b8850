// SPDX-License-Identifier: MIT
// What the benchmark programs share: a console reporter that also keeps every run's figures,
// so a summary with ratios to a baseline can follow Google Benchmark's table.
#pragma once

#include <benchmark/benchmark.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bpftime::bench {

class recording_reporter : public benchmark::ConsoleReporter {
public:
    recording_reporter() : ConsoleReporter(OO_Tabular) {}

    void ReportRuns(const std::vector<Run> &runs) override {
        for (const Run &r : runs) {
            times_[r.benchmark_name()] = r.GetAdjustedRealTime();
            cpu_times_[r.benchmark_name()] = r.GetAdjustedCPUTime();
            for (const auto &[name, counter] : r.counters) {
                counters_[r.benchmark_name() + ":" + name] = counter.value;
            }
        }
        ConsoleReporter::ReportRuns(runs);
    }

    /// The real time per iteration of a benchmark, in its time unit.
    std::optional<double> time(const std::string &name) const {
        auto it = times_.find(name);
        return it == times_.end() ? std::nullopt : std::optional<double>(it->second);
    }
    /// The CPU time of the benchmark's thread per iteration, in its time unit: unlike the real
    /// time, it leaves out the time other processes of a busy machine held the CPU.
    std::optional<double> cpu_time(const std::string &name) const {
        auto it = cpu_times_.find(name);
        return it == cpu_times_.end() ? std::nullopt : std::optional<double>(it->second);
    }
    /// A counter of a benchmark.
    std::optional<double> counter(const std::string &name, const std::string &counter) const {
        auto it = counters_.find(name + ":" + counter);
        return it == counters_.end() ? std::nullopt : std::optional<double>(it->second);
    }

private:
    std::map<std::string, double> times_;
    std::map<std::string, double> cpu_times_;
    std::map<std::string, double> counters_;
};

} // namespace bpftime::bench
