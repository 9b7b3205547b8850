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
#include <string_view>
#include <vector>

namespace bpftime::cli {

/// Options every command sees.
struct global_options {
    std::string shm; ///< segment name (--shm), empty for $BPFTIME_SHM or the default
    bool json = false;
    std::string provider; ///< "user" or "kernel" (--provider), empty for $BPFTIME_PROVIDER or user
    /// The group whose processes (hosts) may open the segment (--shm-group), empty for
    /// $BPFTIME_SHM_GROUP or none: a segment created is then that group's with mode 0660, and a
    /// segment that group can write is accepted.
    std::string shm_group;
    /// Whether the kernel provider is chosen.
    bool kernel() const;
};

/// What an ELF section names to attach to, as libbpf's auto-attach reads it: the attach type
/// ("uprobe", "uretprobe", "tracepoint", "raw_tracepoint", "usdt", "kprobe", "kretprobe",
/// "fentry", "fexit", "tp_btf") and the target text.
struct section_target {
    std::string type;
    std::string args;
};
/// The target of a section (uprobe/BINARY:FUNC[+OFF], uretprobe/..., tracepoint/CAT/NAME,
/// tp/..., raw_tracepoint/NAME, raw_tp/..., usdt/BINARY:PROVIDER:NAME, kprobe/FUNC[+OFF],
/// kretprobe/FUNC, fentry/FUNC, fexit/FUNC, tp_btf/NAME); ENOENT with the reason
/// for a section that names none (a bare "uprobe", "test", /proc/self/exe, ...).
result<section_target> section_target_of(std::string_view section);
/// One link auto-attach made.
struct auto_link {
    uint32_t link = 0, target = 0;
    std::string type, args;
};
/// Attaches a program where its section says (a usdt section: a link per site). Nothing is left
/// behind on failure.
result<std::vector<auto_link>> attach_by_section(base_event_provider &provider, uint32_t prog_id,
                                                 std::string_view section);

/// Prints "bpftime: message" to stderr and returns exit status 1.
int report(const error &e);
/// The error with what the command line offers against it: "message (hint)". Library errors
/// state the fault; the flags that help are the command line's to name.
error with_hint(const error &e, const std::string &hint);
/// The whole content of a file.
result<std::string> read_file(const std::string &path);

/// The group of --shm-group or $BPFTIME_SHM_GROUP (a name or a number), or none.
result<std::optional<gid_t>> shm_group(const global_options &g);
/// The options to open the store segment with: a configured group, and mode 0660 for a new
/// segment when there is one.
result<store::open_options> store_options(const global_options &g, bool create);

/// An error opening the segment with what helps against it: for a permission problem,
/// --shm-group and `bpftime segment chgrp`.
error with_access_hint(const global_options &g, const error &e);
/// With a configured group, says on stderr when the segment's group or mode keeps that
/// group's processes out (a segment made before the group was configured).
void note_group_mismatch(const global_options &g, const store::open_options &opts);

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

/// A library to preload into another program: $ENV_NAME when set (it must be readable), the
/// one installed with this bpftime (the install layout's folder for preloaded libraries), or the
/// one this build made (build_path).
result<std::string> find_preload_library(const char *env_name, const std::string &build_path,
                                         const std::string &file_name);
/// Whether the 64-bit ELF executable at path names a program interpreter (the dynamic
/// loader): false for a statically linked one; nullopt when it cannot tell (not readable, a
/// script, another class).
std::optional<bool> elf_has_interpreter(const std::string &path);
/// Refuses a program the dynamic loader would run without library preloaded: a statically
/// linked one, or one that starts with another user, group or file capabilities (secure
/// execution; not on a nosuid mount). without_it says what would go wrong.
result<void> check_preload_applies(const std::string &program, const std::string &library,
                                   const std::string &without_it);
/// Sets what a program run by bpftime inherits: BPFTIME_SHM from --shm, and LD_PRELOAD with
/// preload first (an existing LD_PRELOAD stays after it; an empty preload changes nothing).
void prepare_environment(const global_options &g, const std::string &preload);
/// Replaces bpftime with the program (looked up in $PATH as a shell would); returns only when
/// it cannot start, with the shell's status for that (127 not found, 126 not runnable).
int exec_program(const std::vector<std::string> &command);
/// Runs the program as a child and returns its exit status (128 + the signal when a signal
/// ended it; 127/126 when it cannot start). SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
/// SIGUSR2 sent to bpftime go on to it (a terminal's Ctrl-C reaches both already).
int run_program(const std::vector<std::string> &command);

/// What `bpftime load FILE` was given.
struct load_input {
    enum kind_t { object, program } kind;
    std::string path; ///< the file (a bare program name found in $PATH is given its path)
};
/// An ELF relocatable file is an eBPF object; another executable file is a loader program.
/// A missing file, a folder or a file that is neither is refused with what to do.
result<load_input> classify_load_input(const std::string &path);
/// `bpftime load PROGRAM [ARGS...]`: runs an unmodified libbpf loader with the bpf() interposer
/// preloaded ($BPFTIME_SYSCALL_SERVER, this build's, or the installed one), so what it loads
/// goes to the segment; with the kernel provider it runs as it is. Returns its status.
int run_loader(const global_options &g, const std::vector<std::string> &command);
/// Appends a link's counters to a `list` row: text to details, fields to j (run_cnt,
/// run_time_ns, faults, budget_stops; with the kernel provider and its statistics off, zeros and
/// "stats": why). stats_commands.cpp.
void add_link_counts(std::string &details, nlohmann::ordered_json &j, const listing &listed,
                     const store::link_info &l);
/// Progress of a long operation on stderr, only when stderr is a terminal: "what: done/total",
/// redrawn at most ten times a second and erased when it ends.
class progress {
public:
    /// every: draw at most at every such item (items that take long: 1).
    progress(std::string what, uint64_t total, uint64_t every = 1024);
    ~progress();
    progress(const progress &) = delete;
    progress &operator=(const progress &) = delete;
    /// done items so far; cheap enough to call per item.
    void step(uint64_t done);

private:
    std::string what_;
    uint64_t total_;
    uint64_t every_;
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
void add_segment_commands(CLI::App &app, const global_options &g, int &status);
/// stats, metrics (stats_commands.cpp).
void add_stats_commands(CLI::App &app, const global_options &g, int &status);
/// inject, eject (inject_command.cpp).
void add_inject_commands(CLI::App &app, const global_options &g, int &status);
/// check (check_command.cpp).
void add_check_command(CLI::App &app, const global_options &g, int &status);

} // namespace bpftime::cli
