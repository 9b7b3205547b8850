// SPDX-License-Identifier: MIT
// A child process a store test talks to through two pipes (a host that synchronises when told).
#pragma once

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>

namespace bpftime::store::test {

/// A child process: its pid, the write end of its command pipe and the read end of its reply
/// pipe. A test that stopped early (a failed assertion) takes the child down with it.
struct piped_child {
    pid_t pid = -1;
    int to_child = -1, from_child = -1;

    /// Forks; the child runs run(command_fd, reply_fd) and leaves with _exit of its result.
    /// pid is -1 when the pipes could not be made.
    template <class Run>
    static piped_child start(Run run) {
        int down[2], up[2];
        if (pipe(down) != 0 || pipe(up) != 0) {
            return {};
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(down[1]);
            close(up[0]);
            _exit(run(down[0], up[1]));
        }
        close(down[0]);
        close(up[1]);
        return piped_child(pid, down[1], up[0]);
    }

    piped_child() = default;
    piped_child(pid_t p, int to, int from) : pid(p), to_child(to), from_child(from) {}
    piped_child(piped_child &&o) noexcept
        : pid(std::exchange(o.pid, -1)), to_child(o.to_child), from_child(o.from_child) {}
    piped_child &operator=(piped_child &&) = delete;

    /// Sends 'q' (the children's command to end), waits for the child and returns its exit
    /// status (128 + the signal when a signal ended it).
    int stop() {
        (void)!write(to_child, "q", 1);
        int st = 0;
        waitpid(pid, &st, 0);
        close(to_child);
        close(from_child);
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }

    ~piped_child() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
            close(to_child);
            close(from_child);
        }
    }
};

} // namespace bpftime::store::test
