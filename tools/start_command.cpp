// SPDX-License-Identifier: MIT
// bpftime start PROGRAM [ARGS...]: runs a program with the agent preloaded, so the uprobes of
// the segment run inside it (with --provider kernel the kernel probes it; it runs as it is).
#include "cli.hpp"

#include <cerrno>
#include <string>
#include <vector>

namespace bpftime::cli {

namespace {

int cmd_start(const global_options &g, const std::vector<std::string> &command) {
    std::string agent;
    if (!g.kernel()) {
        auto found =
            find_preload_library("BPFTIME_AGENT", BPFTIME_AGENT_BUILD_PATH, "libbpftime_agent.so");
        if (!found) {
            return report(found.err());
        }
        agent = *found;
        if (auto ok = check_preload_applies(command.front(), "the agent",
                                            "the segment's probes would not run in it");
            !ok) {
            return report(ok.err());
        }
    }
    prepare_environment(g, agent);
    return exec_program(command);
}

} // namespace

void add_start_command(CLI::App &app, const global_options &g, int &status) {
    auto *start = app.add_subcommand(
        "start", "run a program with the agent, which hosts the segment's uprobes inside it");
    // PROGRAM and everything after it belong to the program, options included.
    start->prefix_command();
    start->allow_extras();
    start->fallthrough(false);
    start->footer("Usage: bpftime start PROGRAM [ARGS...]");
    start->callback([&g, &status, start] {
        std::vector<std::string> command = start->remaining();
        if (command.empty()) {
            status = report(make_error(EINVAL, "bpftime start needs a PROGRAM to run"));
            return;
        }
        status = cmd_start(g, command);
    });
}

} // namespace bpftime::cli
