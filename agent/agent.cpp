// SPDX-License-Identifier: MIT
// libbpftime_agent.so: brings bpftime into a process through LD_PRELOAD (`bpftime start`).
// At load it opens the segment ($BPFTIME_SHM or "bpftime"), hosts the uprobe, uretprobe,
// system call tracepoint and raw tracepoint attach types and instantiates; a thread then
// follows the segment: new links attach, disabled and destroyed ones detach, while the process
// runs. Messages go to standard error, each distinct one once. The agent's threads, and its
// work in the process's main thread at start-up, are its own: probes skip their calls (a
// malloc counter counts the program's) and system call tracepoints do not see theirs.
//
// System call interception covers a thread once it asks the kernel (Syscall User Dispatch is
// per thread and not inherited): the main thread at start-up, threads made with
// pthread_create (wrapped here), the thread of a fork child. Threads made with a raw clone
// are seen at the rewritten system call sites only.
#include <bpftime/hook/syscall_intercept.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/syscall/syscall_tracepoint.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

namespace bpftime {
namespace {

// How often the agent looks for changes (one atomic load of the segment's generation).
constexpr auto poll_interval = std::chrono::milliseconds(5);
// How often it looks for a segment that is missing.
constexpr auto reopen_interval = std::chrono::milliseconds(500);

// The agent's own threads: probes and system call tracepoints skip them.
void mark_internal_thread() {
    mark_probes_internal_thread();
    syscall_intercept::set_thread_internal(true);
}

// While one lives, the calling thread's system calls are the agent's own.
class syscalls_internal_scope {
public:
    syscalls_internal_scope() : was_(syscall_intercept::thread_internal()) {
        syscall_intercept::set_thread_internal(true);
    }
    ~syscalls_internal_scope() { syscall_intercept::set_thread_internal(was_); }
    syscalls_internal_scope(const syscalls_internal_scope &) = delete;
    syscalls_internal_scope &operator=(const syscalls_internal_scope &) = delete;

private:
    bool was_;
};

class agent {
public:
    agent() {
        // The constructor runs in the process's main thread: this is the agent's work.
        probes_internal_scope own;
        syscalls_internal_scope own_syscalls;
        vm::set_engine_thread_start(mark_internal_thread);
        name_ = store::segment_name();
        quiet_ = std::getenv("BPFTIME_AGENT_QUIET") != nullptr;
        // Now, in the main thread, so that it is covered when syscall links come.
        if (auto r = start_syscall_tracepoints(); !r) {
            say("system call tracepoints are not available: " + r.err().message);
        } else {
            pthread_atfork(nullptr, nullptr, syscall_tracepoints_forked_child);
        }
        connect();
        follower_ = std::thread([this] {
            mark_internal_thread();
            follow();
        });
    }

    ~agent() {
        probes_internal_scope own;
        syscalls_internal_scope own_syscalls;
        stop_ = true;
        if (follower_.joinable()) {
            follower_.join();
        }
        // The hooks stay: other threads of an exiting process may still call probed
        // functions, and the programs and hooks must outlive them.
        (void)manager_.release();
    }

    agent(const agent &) = delete;
    agent &operator=(const agent &) = delete;

private:
    void say(const std::string &message) {
        if (message == last_message_ || quiet_) {
            return;
        }
        last_message_ = message;
        std::fprintf(stderr, "bpftime-agent[%d]: %s\n", static_cast<int>(::getpid()),
                     message.c_str());
    }

    bool connect() {
        store::open_options opts;
        opts.create = false;
        // Never wait on a controller: a busy lock fails at once and the follower tries again.
        opts.wait_ms = 0;
        // A segment given to a group of this process (`--shm-group`) is for it to use.
        opts.member_groups = true;
        auto seg = store::segment::open(name_, opts);
        if (!seg) {
            say(seg.err().message + "; waiting for it");
            return false;
        }
        auto mgr = std::make_unique<attach_manager>(*seg);
        if (auto r = mgr->register_attach_impls(make_uprobe_attach_impls()); !r) {
            say(r.err().message);
            return false;
        }
        if (auto r = mgr->register_attach_impls(make_syscall_attach_impls()); !r) {
            say(r.err().message);
            return false;
        }
        manager_ = std::move(mgr);
        segment_ = *seg;
        sync();
        return true;
    }

    void sync() {
        if (segment_->damaged()) {
            // Truncated under this process: the store gave the mapping zero pages instead of
            // SIGBUS. Detach its programs and wait for a usable segment again.
            say("segment " + name_ + " was truncated under this process; detaching its programs");
            manager_->deinstantiate();
            manager_.reset();
            segment_.reset();
            return;
        }
        if (auto r = manager_->instantiate(); !r) {
            // A busy lock (EBUSY) leaves the generation unread: the next poll tries again.
            say(r.err().message);
        } else {
            say("following segment " + name_);
        }
    }

    void follow() {
        auto last_try = std::chrono::steady_clock::now();
        while (!stop_) {
            std::this_thread::sleep_for(poll_interval);
            if (manager_ == nullptr) {
                if (std::chrono::steady_clock::now() - last_try >= reopen_interval) {
                    last_try = std::chrono::steady_clock::now();
                    connect();
                }
                continue;
            }
            if (manager_->stale()) {
                sync();
            }
        }
    }

    std::string name_;
    bool quiet_ = false;
    std::string last_message_;
    std::unique_ptr<attach_manager> manager_;
    std::shared_ptr<store::segment> segment_;
    std::atomic<bool> stop_{false};
    std::thread follower_;
};

agent *the_agent = nullptr;

__attribute__((constructor)) void start_agent() {
    the_agent = new agent();
}

__attribute__((destructor)) void stop_agent() {
    delete the_agent;
    the_agent = nullptr;
}

struct thread_start {
    void *(*fn)(void *);
    void *arg;
};

// Leaves the thread uncovered on its way out, however it leaves (return or pthread_exit's
// unwinding): glibc blocks every signal while a thread ends.
struct thread_coverage {
    thread_coverage() { enable_syscall_tracepoints_thread(); }
    ~thread_coverage() { disable_syscall_tracepoints_thread(); }
    thread_coverage(const thread_coverage &) = delete;
    thread_coverage &operator=(const thread_coverage &) = delete;
};

void *covered_thread(void *p) {
    thread_start start = *static_cast<thread_start *>(p);
    std::free(p);
    thread_coverage coverage;
    return start.fn(start.arg);
}

using pthread_create_fn = int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

} // namespace
} // namespace bpftime

// Threads the process makes are covered by system call interception from their first own
// instruction; the agent's own threads (and the JIT's) are not.
extern "C" __attribute__((visibility("default"))) int
pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
    static auto real =
        reinterpret_cast<bpftime::pthread_create_fn>(dlsym(RTLD_NEXT, "pthread_create"));
    if (real == nullptr) {
        return EAGAIN;
    }
    if (bpftime::syscall_intercept::thread_internal()) {
        return real(thread, attr, fn, arg);
    }
    auto *start = static_cast<bpftime::thread_start *>(std::malloc(sizeof(bpftime::thread_start)));
    if (start == nullptr) {
        return EAGAIN;
    }
    *start = {fn, arg};
    const int r = real(thread, attr, bpftime::covered_thread, start);
    if (r != 0) {
        std::free(start);
    }
    return r;
}
