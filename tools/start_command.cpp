// SPDX-License-Identifier: MIT
// bpftime start PROGRAM [ARGS...]: runs a program with the agent preloaded, so the uprobes of
// the segment run inside it (with --provider kernel the kernel probes it; it runs as it is).
#include "cli.hpp"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bpftime::cli {

namespace {

bool readable(const std::string &path) {
    return ::access(path.c_str(), R_OK) == 0;
}

// $BPFTIME_AGENT, the agent installed with this binary (the install layout's folder for
// preloaded libraries, relative to this binary's folder), or the agent of this build. The
// installed one comes first: an installed bpftime must not pick up a build tree that happens to
// still exist on the machine that built it.
result<std::string> find_agent() {
    if (const char *env = std::getenv("BPFTIME_AGENT"); env != nullptr && *env != '\0') {
        if (!readable(env)) {
            return make_error(ENOENT,
                              std::string("BPFTIME_AGENT is ") + env + ": " + std::strerror(errno));
        }
        return std::string(env);
    }
    char self[PATH_MAX] = {};
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    std::string installed;
    if (n > 0) {
        std::string dir(self, static_cast<size_t>(n));
        dir = dir.substr(0, dir.rfind('/'));
        installed = dir + "/" BPFTIME_PKGLIBDIR_FROM_BINDIR "/libbpftime_agent.so";
        if (readable(installed)) {
            return installed;
        }
    }
    if (readable(BPFTIME_AGENT_BUILD_PATH)) {
        return std::string(BPFTIME_AGENT_BUILD_PATH);
    }
    return make_error(ENOENT, "cannot find libbpftime_agent.so (looked for " + installed +
                                  " and " BPFTIME_AGENT_BUILD_PATH
                                  "; set BPFTIME_AGENT to its path)");
}

int cmd_start(const global_options &g, const std::vector<std::string> &command) {
    if (!g.shm.empty()) {
        ::setenv("BPFTIME_SHM", g.shm.c_str(), 1);
    }
    if (!g.kernel()) {
        auto agent = find_agent();
        if (!agent) {
            return report(agent.err());
        }
        std::string preload = *agent;
        if (const char *old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
            preload += std::string(":") + old;
        }
        ::setenv("LD_PRELOAD", preload.c_str(), 1);
    }
    std::vector<char *> argv;
    for (const std::string &a : command) {
        argv.push_back(const_cast<char *>(a.c_str()));
    }
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    int e = errno;
    report(make_error(e, command[0] + ": " + std::strerror(e)));
    return e == ENOENT ? 127 : 126;
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
