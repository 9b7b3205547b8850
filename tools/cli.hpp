// SPDX-License-Identifier: MIT
// Shared pieces of the bpftime command line.
#pragma once

#include <bpftime/provider/event_provider.hpp>
#include <bpftime/result.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/isa.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bpftime::cli {

/// Options every command sees.
struct global_options {
    std::string shm; ///< segment name (--shm), empty for $BPFTIME_SHM or the default
    bool json = false;
    std::string provider; ///< "user" or "kernel" (--provider), empty for $BPFTIME_PROVIDER or user
    /// Whether the kernel provider is chosen.
    bool kernel() const;
};

/// Prints "bpftime: message" to stderr and returns exit status 1.
int report(const error &e);
/// The error with what the command line offers against it: "message (hint)". Library errors
/// state the fault; the flags that help are the command line's to name.
error with_hint(const error &e, const std::string &hint);
/// The whole content of a file.
result<std::string> read_file(const std::string &path);

/// Opens the store segment (creating it when create is set).
result<std::shared_ptr<store::segment>> open_store(const global_options &g, bool create);

/// The chosen provider over the segment (user space) or its bpffs folder (kernel); create makes
/// them when missing.
result<std::unique_ptr<base_event_provider>> open_provider(const global_options &g, bool create);
/// What works on user-space programs only (running them here) refuses the kernel provider
/// with this error.
error user_space_only(const std::string &what);

/// Parses a key or value: "01 00 00 00" or "hex:01000000" are bytes, anything else is an
/// integer (decimal or 0x hex, may be negative) stored little-endian in size bytes.
result<std::vector<uint8_t>> parse_bytes(const std::string &text, size_t size);
/// Bytes as "01 00 00 00".
std::string hex_bytes(const uint8_t *data, size_t len);

/// Appends a link's counters to a `list` row: text to details, fields to j (run_cnt,
/// run_time_ns, faults, budget_stops; with the kernel provider and its statistics off, zeros and
/// "stats": why). stats_commands.cpp.
void add_link_counts(std::string &details, nlohmann::ordered_json &j, const listing &listed,
                     const store::link_info &l);
/// Progress of a long operation on stderr, only when stderr is a terminal: "what: done/total",
/// redrawn at most ten times a second and erased when it ends.
class progress {
public:
    progress(std::string what, uint64_t total);
    ~progress();
    progress(const progress &) = delete;
    progress &operator=(const progress &) = delete;
    /// done items so far; cheap enough to call per item.
    void step(uint64_t done);

private:
    std::string what_;
    uint64_t total_;
    bool tty_;
    bool shown_ = false;
    uint64_t next_ms_ = 0;
};

/// A host's nginx URL filter decisions for `list --json`, null when it made none.
nlohmann::ordered_json host_decisions_json(const store::link_host_state &h);
/// After `list`'s table: why links show no counts (kernel provider, statistics off).
void print_list_footer(const listing &listed);
/// "runs N, faults N, budget stops N, run time N ns" of one host process's share.
std::string host_counts_text(const store::link_host_state &h);

void add_vm_commands(CLI::App &app, const global_options &g, int &status);
void add_store_commands(CLI::App &app, const global_options &g, int &status);
void add_start_command(CLI::App &app, const global_options &g, int &status);
/// stats, metrics (stats_commands.cpp).
void add_stats_commands(CLI::App &app, const global_options &g, int &status);

} // namespace bpftime::cli
