// SPDX-License-Identifier: MIT
// bpftime inject PID / bpftime eject PID: brings the agent into a process that is already
// running, and takes it out again, with ptrace.
//
// One thread (the main thread, whose id is the process id) is seized and interrupted; its
// registers, extended state and the bytes written below its stack's red zone are saved. Calls
// into the process's libc (dlopen, dlsym, dlerror) and into the agent
// (bpftime_agent_inject / bpftime_agent_eject) are made by pointing the thread at the function
// with a return address of 0: the return faults and the fault stops the thread for us. Then
// everything saved is put back and the thread is let go. A system call the thread was blocked
// in is restarted as the kernel restarts it after a signal a debugger swallowed: the call runs
// with orig_rax -1 (so the kernel does not restart the interrupted call in the middle of ours)
// and the saved registers, orig_rax included, bring the restart back at the end.
//
// The calls run in the stopped thread where it stopped: a thread stopped inside the dynamic
// loader or holding malloc's lock would wait for itself. A thread blocked in a system call (a
// read, a sleep, a poll) is the usual and safe case.
#include "cli.hpp"

#include <bpftime/attach/probe_target.hpp>

#include <elf.h> // NT_X86_XSTATE
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace bpftime::cli {

namespace {

// glibc's dlopen flags (dlfcn.h), for the target's dlopen.
constexpr uint64_t rtld_now = 0x2, rtld_noload = 0x4, rtld_nodelete = 0x1000;
// How long a call in the target may take (the agent compiles and attaches the segment's
// programs in it) before bpftime gives up waiting.
constexpr unsigned call_timeout_s = 60;
const char *const agent_file = "libbpftime_agent.so";
const char *const yama_scope = "/proc/sys/kernel/yama/ptrace_scope";

struct mapping {
    uint64_t start = 0, end = 0, offset = 0;
    std::string perms, path;
};

std::string base_name(const std::string &path) {
    return path.substr(path.rfind('/') + 1);
}

std::string proc_file(pid_t pid, const char *what) {
    return "/proc/" + std::to_string(pid) + "/" + what;
}

std::string first_line(const std::string &path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

// "process 123 (name)".
std::string describe(pid_t pid) {
    std::string comm = first_line(proc_file(pid, "comm"));
    return "process " + std::to_string(pid) + (comm.empty() ? "" : " (" + comm + ")");
}

// Says why ptrace refused (EPERM): another user, Yama's ptrace_scope, another tracer.
error ptrace_refused(pid_t pid, int e) {
    std::string who = describe(pid);
    uid_t euid = ::geteuid();
    std::ifstream status(proc_file(pid, "status"));
    std::string line;
    long uid = -1, tracer = 0;
    while (std::getline(status, line)) {
        if (line.rfind("Uid:", 0) == 0) {
            std::istringstream(line.substr(4)) >> uid; // the real user
        } else if (line.rfind("TracerPid:", 0) == 0) {
            std::istringstream(line.substr(10)) >> tracer;
        }
    }
    if (tracer != 0) {
        return make_error(EBUSY, who + " is already traced by process " + std::to_string(tracer) +
                                     " (a debugger?); detach it first");
    }
    if (e == EPERM && uid >= 0 && static_cast<uid_t>(uid) != euid && euid != 0) {
        return make_error(EPERM, who + " belongs to user " + std::to_string(uid) +
                                     " and bpftime runs as user " + std::to_string(euid) +
                                     ": only its own user or root may inject into it");
    }
    std::string scope = first_line(yama_scope);
    if (e == EPERM && !scope.empty() && scope != "0") {
        std::string meaning = scope == "1"   ? "only a parent may trace its descendants"
                              : scope == "2" ? "only root (CAP_SYS_PTRACE) may trace"
                                             : "no process may trace another";
        return make_error(EPERM, "ptrace of " + who + " refused: " + yama_scope + " is " + scope +
                                     " (" + meaning +
                                     "); run bpftime inject as root, or set it to 0");
    }
    return make_error(e, "ptrace of " + who + " refused: " + std::strerror(e) +
                             (e == EPERM ? " (a process that is not dumpable, such as a setuid "
                                           "program, needs root)"
                                         : ""));
}

result<std::vector<mapping>> read_maps(pid_t pid) {
    std::ifstream in;
    // Another user's process keeps its maps (and ptrace) from this one.
    int fd = ::open(proc_file(pid, "maps").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == EACCES || e == EPERM) {
            return ptrace_refused(pid, EPERM);
        }
        return make_error(e, "cannot read " + proc_file(pid, "maps") + ": " + std::strerror(e));
    }
    ::close(fd);
    in.open(proc_file(pid, "maps"));
    if (!in) {
        int e = errno;
        if (e == EACCES || e == EPERM) {
            return ptrace_refused(pid, EPERM);
        }
        return make_error(e, "cannot read " + proc_file(pid, "maps") + ": " + std::strerror(e));
    }
    std::vector<mapping> maps;
    std::string line;
    while (std::getline(in, line)) {
        mapping m;
        char perms[8] = {};
        int path_at = 0;
        unsigned long long start = 0, end = 0, offset = 0;
        if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &offset,
                        &path_at) < 4) {
            continue;
        }
        m.start = start;
        m.end = end;
        m.offset = offset;
        m.perms = perms;
        if (path_at > 0 && static_cast<size_t>(path_at) < line.size()) {
            m.path = line.substr(static_cast<size_t>(path_at));
        }
        maps.push_back(std::move(m));
    }
    return maps;
}

// A library the process has mapped, by its path.
struct loaded_library {
    std::string path;
};

std::optional<loaded_library> find_library(const std::vector<mapping> &maps,
                                           bool (*match)(const std::string &)) {
    for (const mapping &m : maps) {
        if (m.offset == 0 && !m.path.empty() && m.path[0] == '/' && match(base_name(m.path))) {
            return loaded_library{m.path};
        }
    }
    return std::nullopt;
}

bool is_libc(const std::string &name) {
    return name.rfind("libc.so", 0) == 0 ||
           (name.rfind("libc-", 0) == 0 && name.find(".so") != std::string::npos);
}

bool is_libdl(const std::string &name) {
    return name.rfind("libdl.so", 0) == 0 || name.rfind("libdl-", 0) == 0;
}

bool is_agent(const std::string &name) {
    return name.rfind("libbpftime_agent", 0) == 0 && name.find(".so") != std::string::npos;
}

// The address of function name of lib in the process: its file offset, found as a uprobe
// target is (libelf, the default symbol version), within the process's mapping of that file.
result<uint64_t> remote_symbol(const std::vector<mapping> &maps, const loaded_library &lib,
                               const std::string &name) {
    auto loc = resolve_uprobe_target(lib.path + ":" + name);
    if (!loc) {
        return loc.err();
    }
    for (const mapping &m : maps) {
        if (m.path == lib.path && loc->file_offset >= m.offset &&
            loc->file_offset - m.offset < m.end - m.start) {
            return m.start + (loc->file_offset - m.offset);
        }
    }
    return make_error(ENOENT, lib.path + "'s " + name + " is in no mapping of the process");
}

volatile sig_atomic_t timed_out = 0;
void on_alarm(int) {
    timed_out = 1;
}

// One thread of the process, stopped under ptrace, and what must be put back.
class tracee {
public:
    explicit tracee(pid_t pid) : pid_(pid) {}
    ~tracee() {
        if (seized_) {
            (void)restore();
            ::ptrace(PTRACE_DETACH, pid_, nullptr, reinterpret_cast<void *>(long{pending_}));
        }
        if (mem_ >= 0) {
            ::close(mem_);
        }
    }
    tracee(const tracee &) = delete;
    tracee &operator=(const tracee &) = delete;

    result<void> stop() {
        if (::ptrace(PTRACE_SEIZE, pid_, nullptr, nullptr) != 0) {
            int e = errno;
            if (e == ESRCH) {
                return make_error(ESRCH, "no process " + std::to_string(pid_));
            }
            return ptrace_refused(pid_, e);
        }
        seized_ = true;
        if (::ptrace(PTRACE_INTERRUPT, pid_, nullptr, nullptr) != 0) {
            int e = errno;
            return make_error(e, "cannot stop " + describe(pid_) + ": " + std::strerror(e));
        }
        int status = 0;
        if (auto r = wait(status); !r) {
            return r;
        }
        // A signal that arrived first is given back when the thread is let go.
        if (status >> 16 != PTRACE_EVENT_STOP) {
            pending_ = WSTOPSIG(status);
        }
        if (::ptrace(PTRACE_GETREGS, pid_, nullptr, &saved_) != 0) {
            int e = errno;
            return make_error(e, "cannot read the registers of " + describe(pid_) + ": " +
                                     std::strerror(e));
        }
        xstate_.resize(16384);
        iovec iov{xstate_.data(), xstate_.size()};
        if (::ptrace(PTRACE_GETREGSET, pid_, reinterpret_cast<void *>(NT_X86_XSTATE), &iov) == 0) {
            xstate_.resize(iov.iov_len);
            xstate_kind_ = NT_X86_XSTATE;
        } else {
            xstate_.resize(sizeof(user_fpregs_struct));
            if (::ptrace(PTRACE_GETFPREGS, pid_, nullptr, xstate_.data()) != 0) {
                int e = errno;
                return make_error(e, "cannot read the FPU registers of " + describe(pid_) + ": " +
                                         std::strerror(e));
            }
            xstate_kind_ = 0;
        }
        mem_ = ::open(proc_file(pid_, "mem").c_str(), O_RDWR | O_CLOEXEC);
        if (mem_ < 0) {
            int e = errno;
            return make_error(e, "cannot open " + proc_file(pid_, "mem") + ": " + std::strerror(e));
        }
        // Scratch memory: below the interrupted code's red zone (128 bytes), 16-byte aligned.
        scratch_end_ = (saved_.rsp - 128) & ~uint64_t{15};
        scratch_ = scratch_end_ - scratch_size;
        saved_scratch_.resize(scratch_size);
        if (auto r = read(scratch_, saved_scratch_.data(), scratch_size); !r) {
            return r;
        }
        return {};
    }

    /// Copies a string into the scratch area; returns its address in the process.
    result<uint64_t> push_string(const std::string &s) {
        if (used_ + s.size() + 1 > scratch_size - 64) {
            return make_error(ENAMETOOLONG, "'" + s + "' is too long to pass to the process");
        }
        uint64_t at = scratch_ + used_;
        if (auto r = write(at, s.c_str(), s.size() + 1); !r) {
            return r.err();
        }
        used_ += (s.size() + 1 + 15) & ~size_t{15};
        return at;
    }

    /// Zeroed space of size bytes in the scratch area.
    result<uint64_t> push_space(size_t size) { return push_string(std::string(size - 1, '\0')); }

    /// Calls fn(a, b, c) in the stopped thread and returns its rax.
    result<uint64_t> call(uint64_t fn, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0) {
        user_regs_struct r = saved_;
        r.rip = fn;
        r.rdi = a;
        r.rsi = b;
        r.rdx = c;
        r.rax = 0;
        // Not in a system call while ours runs: nothing to restart at its first instruction.
        r.orig_rax = ~0ull;
        r.eflags &= ~uint64_t{0x400}; // DF clear, as the ABI wants at a call
        // The return address 0 sits where a call would have pushed it: at the call rsp+8 is
        // 16-byte aligned.
        r.rsp = scratch_ - 8;
        const uint64_t zero = 0;
        if (auto w = write(r.rsp, &zero, sizeof zero); !w) {
            return w.err();
        }
        if (::ptrace(PTRACE_SETREGS, pid_, nullptr, &r) != 0) {
            int e = errno;
            return make_error(e, "cannot set the registers of " + describe(pid_) + ": " +
                                     std::strerror(e));
        }
        int deliver = 0;
        for (;;) {
            if (::ptrace(PTRACE_CONT, pid_, nullptr, reinterpret_cast<void *>(long{deliver})) !=
                0) {
                int e = errno;
                return make_error(e, "cannot run " + describe(pid_) + ": " + std::strerror(e));
            }
            deliver = 0;
            int status = 0;
            if (auto w = wait(status); !w) {
                return w.err();
            }
            if (status >> 16 == PTRACE_EVENT_STOP) {
                continue; // our interrupt, or a group stop: go on
            }
            const int sig = WSTOPSIG(status);
            user_regs_struct now = {};
            if (sig == SIGSEGV && ::ptrace(PTRACE_GETREGS, pid_, nullptr, &now) == 0 &&
                now.rip == 0) {
                return now.rax;
            }
            if (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) {
                // A fault in the call itself: put the thread back where it was rather than let
                // the process die; what the call had done stays as far as it got.
                return make_error(EFAULT, describe(pid_) + " faulted (signal " +
                                              std::to_string(sig) + " at 0x" + to_hex(now.rip) +
                                              ") during the call");
            }
            deliver = sig; // the process's own signal: it gets it
        }
    }

    /// Reads a zero-terminated string of the process.
    std::string read_string(uint64_t at) {
        char buf[512] = {};
        if (at == 0 || ::pread(mem_, buf, sizeof buf - 1, static_cast<off_t>(at)) <= 0) {
            return {};
        }
        return buf;
    }

    /// Puts back registers and memory.
    result<void> restore() {
        if (restored_ || !seized_) {
            return {};
        }
        restored_ = true;
        if (mem_ >= 0 && !saved_scratch_.empty()) {
            (void)write(scratch_, saved_scratch_.data(), saved_scratch_.size());
        }
        if (xstate_kind_ == NT_X86_XSTATE) {
            iovec iov{xstate_.data(), xstate_.size()};
            ::ptrace(PTRACE_SETREGSET, pid_, reinterpret_cast<void *>(NT_X86_XSTATE), &iov);
        } else if (!xstate_.empty()) {
            ::ptrace(PTRACE_SETFPREGS, pid_, nullptr, xstate_.data());
        }
        // orig_rax and rax as they were: a system call interrupted by the stop restarts.
        if (::ptrace(PTRACE_SETREGS, pid_, nullptr, &saved_) != 0) {
            int e = errno;
            return make_error(e, "cannot restore the registers of " + describe(pid_) + ": " +
                                     std::strerror(e));
        }
        return {};
    }

    static std::string to_hex(uint64_t v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
        return buf;
    }

private:
    static constexpr size_t scratch_size = 1024;

    result<void> wait(int &status) {
        struct sigaction sa = {}, old = {};
        sa.sa_handler = on_alarm; // no SA_RESTART: waitpid returns EINTR
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGALRM, &sa, &old);
        timed_out = 0;
        ::alarm(call_timeout_s);
        pid_t got;
        do {
            got = ::waitpid(pid_, &status, __WALL);
        } while (got < 0 && errno == EINTR && timed_out == 0);
        int e = errno;
        ::alarm(0);
        ::sigaction(SIGALRM, &old, nullptr);
        if (got < 0 && timed_out != 0) {
            // The thread may be inside the call still: it is left to finish on its own.
            seized_ = false;
            ::ptrace(PTRACE_DETACH, pid_, nullptr, nullptr);
            return make_error(ETIMEDOUT,
                              describe(pid_) + " did not come back from bpftime's call within " +
                                  std::to_string(call_timeout_s) +
                                  " s (was it stopped holding a lock the call needs?); it was "
                                  "let go as it is");
        }
        if (got < 0) {
            return make_error(e, "waitpid for " + describe(pid_) + ": " + std::strerror(e));
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            seized_ = false;
            return make_error(ESRCH, "process " + std::to_string(pid_) + " ended (" +
                                         (WIFEXITED(status)
                                              ? "exit status " + std::to_string(WEXITSTATUS(status))
                                              : "signal " + std::to_string(WTERMSIG(status))) +
                                         ")");
        }
        return {};
    }

    result<void> read(uint64_t at, void *buf, size_t size) {
        if (::pread(mem_, buf, size, static_cast<off_t>(at)) != static_cast<ssize_t>(size)) {
            int e = errno;
            return make_error(e, "cannot read the memory of " + describe(pid_) + " at 0x" +
                                     to_hex(at) + ": " + std::strerror(e));
        }
        return {};
    }

    result<void> write(uint64_t at, const void *buf, size_t size) {
        if (::pwrite(mem_, buf, size, static_cast<off_t>(at)) != static_cast<ssize_t>(size)) {
            int e = errno;
            return make_error(e, "cannot write the memory of " + describe(pid_) + " at 0x" +
                                     to_hex(at) + ": " + std::strerror(e));
        }
        return {};
    }

    pid_t pid_;
    bool seized_ = false, restored_ = false;
    int pending_ = 0;
    int mem_ = -1;
    user_regs_struct saved_ = {};
    std::vector<uint8_t> xstate_;
    int xstate_kind_ = 0;
    uint64_t scratch_ = 0, scratch_end_ = 0;
    size_t used_ = 0;
    std::vector<uint8_t> saved_scratch_;
};

// libc's dlopen, dlsym and dlerror in the process.
struct dl_functions {
    uint64_t dlopen = 0, dlsym = 0, dlerror = 0;
};

result<dl_functions> find_dl_functions(pid_t pid, const std::vector<mapping> &maps) {
    auto libc = find_library(maps, is_libc);
    if (!libc) {
        if (auto interp = elf_has_interpreter(proc_file(pid, "exe")); interp && !*interp) {
            return make_error(ENOEXEC, describe(pid) +
                                           " is statically linked: bpftime inject loads the "
                                           "agent with the process's own dlopen, so it needs a "
                                           "dynamically linked program (run it with bpftime "
                                           "start instead, or link it dynamically)");
        }
        return make_error(ENOEXEC, describe(pid) + " has no libc.so mapped: bpftime inject needs "
                                                   "glibc's dlopen in the process");
    }
    for (const auto &lib : {std::optional<loaded_library>(libc), find_library(maps, is_libdl)}) {
        if (!lib) {
            continue;
        }
        auto open = remote_symbol(maps, *lib, "dlopen");
        auto sym = remote_symbol(maps, *lib, "dlsym");
        auto err = remote_symbol(maps, *lib, "dlerror");
        if (open && sym && err) {
            return dl_functions{*open, *sym, *err};
        }
    }
    return make_error(ENOENT, libc->path +
                                  " has no dlopen (glibc before 2.34 keeps it in "
                                  "libdl.so.2, which " +
                                  describe(pid) + " has not loaded)");
}

result<pid_t> check_target(int pid) {
    if (pid <= 0) {
        return make_error(EINVAL, "PID must be a positive process id, not " + std::to_string(pid));
    }
    if (pid == ::getpid()) {
        return make_error(EINVAL, "bpftime cannot inject into itself");
    }
    struct stat st = {};
    if (::stat(proc_file(pid, "").c_str(), &st) != 0) {
        return make_error(ESRCH, "no process " + std::to_string(pid));
    }
    return static_cast<pid_t>(pid);
}

// dlopen(path, flags) in the process; 0 with the reason in error when it fails.
result<uint64_t> remote_dlopen(tracee &t, const dl_functions &dl, const std::string &path,
                               uint64_t flags, pid_t pid) {
    auto at = t.push_string(path);
    if (!at) {
        return at.err();
    }
    auto handle = t.call(dl.dlopen, *at, flags);
    if (!handle) {
        return handle.err();
    }
    if (*handle == 0) {
        std::string why;
        if (auto msg = t.call(dl.dlerror); msg) {
            why = t.read_string(*msg);
        }
        return make_error(ENOENT, describe(pid) + " could not load " + path + ": " +
                                      (why.empty() ? "dlopen failed" : why));
    }
    return *handle;
}

// The address of an agent entry point, through dlsym in the process.
result<uint64_t> remote_dlsym(tracee &t, const dl_functions &dl, uint64_t handle,
                              const std::string &name, const std::string &path) {
    auto at = t.push_string(name);
    if (!at) {
        return at.err();
    }
    auto fn = t.call(dl.dlsym, handle, *at);
    if (!fn) {
        return fn.err();
    }
    if (*fn == 0) {
        return make_error(ENOENT,
                          path + " has no " + name + " (an agent older than this bpftime?)");
    }
    return *fn;
}

// The process a command names, with its mappings.
struct target_process {
    pid_t pid = 0;
    std::vector<mapping> maps;
};

result<target_process> open_target(const global_options &g, int pid_arg, const char *command) {
    if (g.kernel()) {
        return user_space_only(command);
    }
    auto pid = check_target(pid_arg);
    if (!pid) {
        return pid.err();
    }
    auto maps = read_maps(*pid);
    if (!maps) {
        return maps.err();
    }
    return target_process{*pid, std::move(*maps)};
}

int cmd_inject(const global_options &g, int pid_arg) {
    auto target = open_target(g, pid_arg, "bpftime inject");
    if (!target) {
        return report(target.err());
    }
    const pid_t pid = target->pid;
    const std::vector<mapping> &maps = target->maps;
    auto dl = find_dl_functions(pid, maps);
    if (!dl) {
        return report(dl.err());
    }
    // An agent already there (preloaded by `bpftime start`, or injected and ejected) is the
    // one to start: dlopen of its path gives it back.
    std::string agent;
    if (auto mapped = find_library(maps, is_agent); mapped) {
        agent = mapped->path;
    } else {
        auto found = find_preload_library("BPFTIME_AGENT", BPFTIME_AGENT_BUILD_PATH, agent_file);
        if (!found) {
            return report(found.err());
        }
        agent = *found;
    }
    const std::string name = store::segment_name(g.shm);
    tracee t(pid);
    if (auto r = t.stop(); !r) {
        return report(r.err());
    }
    auto handle = remote_dlopen(t, *dl, agent, rtld_now | rtld_nodelete, pid);
    if (!handle) {
        return report(handle.err());
    }
    auto entry = remote_dlsym(t, *dl, *handle, "bpftime_agent_inject", agent);
    if (!entry) {
        return report(entry.err());
    }
    auto shm = t.push_string(name);
    auto hosting = t.push_space(256);
    if (!shm || !hosting) {
        return report(!shm ? shm.err() : hosting.err());
    }
    auto r = t.call(*entry, *shm, *hosting, 256);
    if (!r) {
        return report(r.err());
    }
    const int rc = static_cast<int>(static_cast<int32_t>(*r));
    std::string following = rc == -EEXIST ? t.read_string(*hosting) : "";
    if (auto restored = t.restore(); !restored) {
        return report(restored.err());
    }
    if (rc == -EEXIST) {
        return report(make_error(
            EEXIST, describe(pid) + " already hosts the bpftime agent (segment " + following +
                        "); bpftime eject " + std::to_string(pid) + " first"));
    }
    if (rc != 0) {
        return report(make_error(-rc, "the agent in " + describe(pid) +
                                          " did not start: " + std::strerror(-rc)));
    }
    std::printf("injected %s into %s, following segment %s\n", agent.c_str(), describe(pid).c_str(),
                name.c_str());
    return 0;
}

int cmd_eject(const global_options &g, int pid_arg) {
    auto target = open_target(g, pid_arg, "bpftime eject");
    if (!target) {
        return report(target.err());
    }
    const pid_t pid = target->pid;
    const std::vector<mapping> &maps = target->maps;
    auto mapped = find_library(maps, is_agent);
    if (!mapped) {
        return report(make_error(ENOENT, describe(pid) + " does not host the bpftime agent "
                                                         "(nothing to eject)"));
    }
    auto dl = find_dl_functions(pid, maps);
    if (!dl) {
        return report(dl.err());
    }
    tracee t(pid);
    if (auto r = t.stop(); !r) {
        return report(r.err());
    }
    auto handle = remote_dlopen(t, *dl, mapped->path, rtld_now | rtld_noload, pid);
    if (!handle) {
        return report(handle.err());
    }
    auto entry = remote_dlsym(t, *dl, *handle, "bpftime_agent_eject", mapped->path);
    if (!entry) {
        return report(entry.err());
    }
    auto r = t.call(*entry);
    if (!r) {
        return report(r.err());
    }
    const int rc = static_cast<int>(static_cast<int32_t>(*r));
    if (auto restored = t.restore(); !restored) {
        return report(restored.err());
    }
    if (rc == -ENOENT) {
        return report(make_error(ENOENT, "the bpftime agent in " + describe(pid) +
                                             " is not running (already ejected)"));
    }
    if (rc != 0) {
        return report(make_error(-rc, "the agent in " + describe(pid) +
                                          " did not stop: " + std::strerror(-rc)));
    }
    std::printf("ejected the agent from %s: its links are detached (%s stays mapped)\n",
                describe(pid).c_str(), base_name(mapped->path).c_str());
    return 0;
}

} // namespace

void add_inject_commands(CLI::App &app, const global_options &g, int &status) {
    static int inject_pid = 0, eject_pid = 0;
    auto *inject = app.add_subcommand(
        "inject", "load the agent into a running process, which then hosts the segment's "
                  "uprobes as under bpftime start (ptrace; needs the right to trace it)");
    inject->add_option("PID", inject_pid, "the process")->required();
    inject->callback([&g, &status] { status = cmd_inject(g, inject_pid); });
    auto *eject = app.add_subcommand(
        "eject", "detach every link in a process hosting the agent and stop the agent there; "
                 "the process runs on");
    eject->add_option("PID", eject_pid, "the process")->required();
    eject->callback([&g, &status] { status = cmd_eject(g, eject_pid); });
}

} // namespace bpftime::cli
