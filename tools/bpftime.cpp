// SPDX-License-Identifier: MIT
// The bpftime command line.
#include "cli.hpp"

#include <bpftime/vm/vm.hpp>

int main(int argc, char **argv) {
    CLI::App app{"bpftime: eBPF programs in user-space processes"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "bpftime 0.1.0");
    bpftime::cli::global_options g;
    app.add_option("--shm", g.shm,
                   "shared-memory segment name (default: $BPFTIME_SHM or \"bpftime\")");
    app.add_flag("--json", g.json, "machine-readable output");
    app.add_option("--provider", g.provider,
                   "where objects live: user (shared memory, run by bpftime hosts) or kernel "
                   "(the kernel's eBPF, pinned in bpffs); default $BPFTIME_PROVIDER or user")
        ->check(CLI::IsMember({"user", "kernel"}));
    app.add_option("--shm-group", g.shm_group,
                   "a group whose processes may use the segment (name or number; default "
                   "$BPFTIME_SHM_GROUP): a segment this command creates is that group's with "
                   "mode 0660, and one that group can write is accepted; nginx workers running "
                   "as www-data need --shm-group www-data");
    // Global options may also follow the command: `bpftime load --provider kernel x.o`.
    app.fallthrough();
    int status = 0;
    bpftime::cli::add_vm_commands(app, g, status);
    bpftime::cli::add_store_commands(app, g, status);
    bpftime::cli::add_start_command(app, g, status);
    bpftime::cli::add_segment_commands(app, g, status);
    bpftime::cli::add_stats_commands(app, g, status);
    bpftime::cli::add_inject_commands(app, g, status);
    bpftime::cli::add_check_command(app, g, status);
    CLI11_PARSE(app, argc, argv);
    return status;
}
