// SPDX-License-Identifier: MIT
// Running another program with one of bpftime's libraries preloaded: `bpftime start` (the
// agent, replacing bpftime) and `bpftime load PROGRAM` (the bpf() interposer, as a child whose
// signals and status bpftime passes on).
#include "cli.hpp"

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace bpftime::cli {

namespace {

bool readable(const std::string &path) {
    return ::access(path.c_str(), R_OK) == 0;
}

std::vector<char *> c_argv(const std::vector<std::string> &command) {
    std::vector<char *> argv;
    for (const std::string &a : command) {
        argv.push_back(const_cast<char *>(a.c_str()));
    }
    argv.push_back(nullptr);
    return argv;
}

// The child that forwarded signals go to (0: none yet).
std::atomic<pid_t> forward_to{0};

// A signal sent to bpftime alone (kill, a test, a supervisor) goes on to the program. One the
// terminal sent (Ctrl-C) reached the whole foreground process group, the program included, so
// it is not sent a second time.
void forward_signal(int sig, siginfo_t *info, void *) {
    pid_t child = forward_to.load();
    if (child > 0 && (info == nullptr || info->si_code != SI_KERNEL)) {
        ::kill(child, sig);
    }
}

constexpr int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// A bare name's executable in $PATH, as execvp finds it (empty: none).
std::string find_in_path(const std::string &name) {
    const char *search = std::getenv("PATH");
    if (name.find('/') != std::string::npos || search == nullptr) {
        return {};
    }
    std::string dirs = search;
    for (size_t at = 0; at <= dirs.size();) {
        size_t end = dirs.find(':', at);
        end = end == std::string::npos ? dirs.size() : end;
        std::string dir = dirs.substr(at, end - at);
        std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
        struct stat st = {};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            ::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
        at = end + 1;
    }
    return {};
}

} // namespace

std::optional<bool> elf_has_interpreter(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::nullopt;
    }
    Elf64_Ehdr eh = {};
    std::vector<Elf64_Phdr> ph;
    if (::pread(fd, &eh, sizeof eh, 0) == static_cast<ssize_t>(sizeof eh) &&
        std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
        eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum != 0 && eh.e_phnum <= 1024) {
        ph.resize(eh.e_phnum);
        const auto size = static_cast<ssize_t>(ph.size() * sizeof(Elf64_Phdr));
        if (::pread(fd, ph.data(), static_cast<size_t>(size), static_cast<off_t>(eh.e_phoff)) !=
            size) {
            ph.clear();
        }
    }
    ::close(fd);
    if (ph.empty()) {
        return std::nullopt;
    }
    return std::any_of(ph.begin(), ph.end(),
                       [](const Elf64_Phdr &h) { return h.p_type == PT_INTERP; });
}

result<void> check_preload_applies(const std::string &program, const std::string &library,
                                   const std::string &without_it) {
    std::string path = program.find('/') == std::string::npos ? find_in_path(program) : program;
    if (path.empty()) {
        return {}; // exec reports a missing program
    }
    struct stat st = {};
    if (::stat(path.c_str(), &st) != 0) {
        return {}; // exec reports what it finds
    }
    if (auto interp = elf_has_interpreter(path); interp && !*interp) {
        return make_error(ENOEXEC, path +
                                       " is statically linked: the dynamic loader cannot preload " +
                                       library + " into it, so " + without_it);
    }
    // The loader ignores LD_PRELOAD (outside its secure folders) for a program that changes
    // its user or group or gains capabilities when it starts (secure execution).
    struct statvfs vfs = {};
    const bool nosuid = ::statvfs(path.c_str(), &vfs) == 0 && (vfs.f_flag & ST_NOSUID) != 0;
    if (!nosuid) {
        const bool setuid = (st.st_mode & S_ISUID) != 0 && st.st_uid != ::geteuid();
        const bool setgid =
            (st.st_mode & S_ISGID) != 0 && (st.st_mode & S_IXGRP) != 0 && st.st_gid != ::getegid();
        const bool caps = ::getxattr(path.c_str(), "security.capability", nullptr, 0) > 0;
        if (setuid || setgid || caps) {
            return make_error(EPERM, path + " is " +
                                         (setuid   ? "set-user-ID"
                                          : setgid ? "set-group-ID"
                                                   : "given file capabilities") +
                                         ": the dynamic loader ignores LD_PRELOAD for it (secure "
                                         "execution), so " +
                                         without_it);
        }
    }
    return {};
}

result<std::string> find_preload_library(const char *env_name, const std::string &build_path,
                                         const std::string &file_name) {
    if (const char *env = std::getenv(env_name); env != nullptr && *env != '\0') {
        if (!readable(env)) {
            return make_error(ENOENT,
                              std::string(env_name) + " is " + env + ": " + std::strerror(errno));
        }
        return std::string(env);
    }
    // The installed one first (the install layout's folder for preloaded libraries, relative
    // to this binary's folder): an installed bpftime must not pick up a build tree that happens
    // to still exist on the machine that built it.
    char self[PATH_MAX] = {};
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    std::string installed;
    if (n > 0) {
        std::string dir(self, static_cast<size_t>(n));
        dir = dir.substr(0, dir.rfind('/'));
        installed = dir + "/" BPFTIME_PKGLIBDIR_FROM_BINDIR "/" + file_name;
        if (readable(installed)) {
            return installed;
        }
    }
    if (!build_path.empty() && readable(build_path)) {
        return build_path;
    }
    return make_error(ENOENT, "cannot find " + file_name + " (looked for " + installed +
                                  (build_path.empty() ? "" : " and " + build_path) + "; set " +
                                  env_name + " to its path)");
}

void prepare_environment(const global_options &g, const std::string &preload) {
    if (!g.shm.empty()) {
        ::setenv("BPFTIME_SHM", g.shm.c_str(), 1);
    }
    if (preload.empty()) {
        return;
    }
    std::string value = preload;
    if (const char *old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
        value += std::string(":") + old;
    }
    ::setenv("LD_PRELOAD", value.c_str(), 1);
}

int exec_program(const std::vector<std::string> &command) {
    std::vector<char *> argv = c_argv(command);
    ::execvp(argv[0], argv.data());
    int e = errno;
    report(make_error(e, command[0] + ": " + std::strerror(e)));
    return e == ENOENT ? 127 : 126;
}

int run_program(const std::vector<std::string> &command) {
    // Handlers go in before the fork, so a signal between the fork and the wait is forwarded.
    struct sigaction sa = {};
    sa.sa_sigaction = forward_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    struct sigaction old[std::size(forwarded_signals)] = {};
    for (size_t i = 0; i < std::size(forwarded_signals); i++) {
        ::sigaction(forwarded_signals[i], &sa, &old[i]);
    }
    // The child reports a failed exec through this pipe (closed unread on success).
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        int e = errno;
        return report(make_error(e, std::string("pipe: ") + std::strerror(e)));
    }
    std::vector<char *> argv = c_argv(command);
    pid_t child = ::fork();
    if (child < 0) {
        int e = errno;
        return report(make_error(e, std::string("fork: ") + std::strerror(e)));
    }
    if (child == 0) {
        ::close(fds[0]);
        for (size_t i = 0; i < std::size(forwarded_signals); i++) {
            ::sigaction(forwarded_signals[i], &old[i], nullptr);
        }
        ::execvp(argv[0], argv.data());
        int e = errno;
        (void)!::write(fds[1], &e, sizeof e);
        ::_exit(e == ENOENT ? 127 : 126);
    }
    forward_to = child;
    ::close(fds[1]);
    int exec_errno = 0;
    ssize_t got;
    do {
        got = ::read(fds[0], &exec_errno, sizeof exec_errno);
    } while (got < 0 && errno == EINTR);
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    forward_to = 0;
    for (size_t i = 0; i < std::size(forwarded_signals); i++) {
        ::sigaction(forwarded_signals[i], &old[i], nullptr);
    }
    if (got == static_cast<ssize_t>(sizeof exec_errno)) {
        report(make_error(exec_errno, command[0] + ": " + std::strerror(exec_errno)));
        return exec_errno == ENOENT ? 127 : 126;
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

result<load_input> classify_load_input(const std::string &path) {
    std::string found = path;
    struct stat st = {};
    if (::stat(path.c_str(), &st) != 0) {
        int e = errno;
        // A bare name that is not here may be a program in $PATH, as for a shell.
        if (e == ENOENT) {
            if (std::string found_in_path = find_in_path(path); !found_in_path.empty()) {
                return load_input{load_input::program, found_in_path};
            }
        }
        return make_error(e, path + ": " + std::strerror(e) +
                                 " (bpftime load takes an eBPF object built with clang -target "
                                 "bpf, or a loader program to run)");
    }
    if (!S_ISREG(st.st_mode)) {
        return make_error(EINVAL, path + " is not a regular file (bpftime load takes an eBPF "
                                         "object or a loader program)");
    }
    // An ELF relocatable file is an object to load; anything else runnable is a loader.
    unsigned char head[18] = {};
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return make_error(e, path + ": " + std::strerror(e));
    }
    ssize_t n = ::read(fd, head, sizeof head);
    ::close(fd);
    bool elf = n == static_cast<ssize_t>(sizeof head) && std::memcmp(head, "\177ELF", 4) == 0;
    uint16_t type = 0;
    if (elf) {
        // e_type, in the file's byte order (EI_DATA: 1 little-endian, 2 big-endian).
        type = head[5] == 2 ? static_cast<uint16_t>(head[16] << 8 | head[17])
                            : static_cast<uint16_t>(head[17] << 8 | head[16]);
    }
    if (elf && type == 1 /* ET_REL */) {
        return load_input{load_input::object, found};
    }
    if (::access(path.c_str(), X_OK) != 0) {
        return make_error(EACCES,
                          path +
                              " is neither an eBPF object (an ELF relocatable file from clang "
                              "-target bpf) nor an executable program (chmod +x " +
                              path + " to run it as a loader)");
    }
    return load_input{load_input::program, found};
}

int run_loader(const global_options &g, const std::vector<std::string> &command) {
    std::string interposer;
    if (!g.kernel()) {
        auto found =
            find_preload_library("BPFTIME_SYSCALL_SERVER", BPFTIME_SYSCALL_SERVER_BUILD_PATH,
                                 "libbpftime_syscall_server.so");
        if (!found) {
            return report(found.err());
        }
        interposer = *found;
        if (auto ok = check_preload_applies(command.front(), "the bpf() interposer",
                                            "its bpf() calls would go to the kernel (use "
                                            "--provider kernel to run it there on purpose)");
            !ok) {
            return report(ok.err());
        }
    }
    prepare_environment(g, interposer);
    return run_program(command);
}

} // namespace bpftime::cli
