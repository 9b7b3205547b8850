// SPDX-License-Identifier: MIT
// libbpftime_agent.so: brings bpftime into a process through LD_PRELOAD (`bpftime start`).
// At load it opens the segment ($BPFTIME_SHM or "bpftime"), hosts the uprobe, uretprobe,
// system call tracepoint and raw tracepoint attach types and instantiates; a thread then
// follows the segment: new links attach, disabled and destroyed ones detach, while the process
// runs. Messages go to standard error, each distinct one once. The agent's threads, and its
// work in the process's main thread at start-up, are its own: probes skip their calls (a
// malloc counter counts the program's) and system call tracepoints do not see theirs.
//
// System call interception registers the threads that get Syscall User Dispatch when code
// that was not rewritten needs it (the setting is per thread, and each thread turns its own
// on and off at its next intercepted call): the main thread at start-up, threads made with
// pthread_create (wrapped here), the thread of a fork child. Threads made with a raw clone
// are seen at the rewritten system call sites only.
#include <bpftime/hook/pause.hpp>
#include <bpftime/hook/syscall_intercept.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/syscall/syscall_tracepoint.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include <dlfcn.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace bpftime {
namespace {

// The follower sleeps on the segment's generation (a futex writers wake): a change is followed
// as soon as the writer unlocks, and an idle agent takes no CPU. It wakes this often anyway to
// see whether the segment's name still names its mapping, and to look again for a missing
// segment.
constexpr auto check_interval = std::chrono::milliseconds(500);
// After a resync that could not finish (a controller held the lock), the next try comes after
// this, doubling up to check_interval while it keeps failing.
constexpr auto first_retry = std::chrono::milliseconds(5);
// At start-up, how many times the agent tries again (first_retry apart) while the lock is busy.
constexpr int startup_tries = 200;
// However fast the generation moves (a writer bumping it in a loop, or bytes written over it),
// the follower resyncs at most once per this.
constexpr auto min_sync_interval = std::chrono::milliseconds(1);

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
    /// name: the segment; empty for $BPFTIME_SHM or the default.
    explicit agent(std::string name) {
        // The constructor runs in the thread that loads the agent (the process's main thread
        // under LD_PRELOAD, the stopped thread under `bpftime inject`): this is the agent's work.
        probes_internal_scope own;
        syscalls_internal_scope own_syscalls;
        vm::set_engine_thread_start(mark_internal_thread);
        name_ = name.empty() ? store::segment_name() : std::move(name);
        quiet_ = std::getenv("BPFTIME_AGENT_QUIET") != nullptr;
        if (const char *poll = std::getenv("BPFTIME_AGENT_POLL_MS"); poll != nullptr) {
            poll_ = std::chrono::milliseconds(std::strtol(poll, nullptr, 10));
        }
        // Now, in this thread, so that it is covered when syscall links come.
        if (auto r = start_syscall_tracepoints(); !r) {
            say("system call tracepoints are not available: " + r.err().message);
        } else {
            // A second start (inject after eject) does nothing: cover this thread again.
            enable_syscall_tracepoints_thread();
        }
        {
            std::lock_guard lock(mu_);
            bool synced = connect();
            // A program started under the agent is probed from its first call: when a
            // controller (or another host) holds the lock at this moment, try again for a
            // little while before the program's own code runs. Only here: later resyncs never
            // wait (the follower holds mu_, which a fork in the program takes).
            for (int i = 0; i < startup_tries && !synced && manager_ != nullptr; i++) {
                bpftime::pause_for(first_retry);
                synced = sync();
            }
        }
        start_follower();
    }

    /// At process exit: the follower stops, the hooks stay.
    ~agent() {
        probes_internal_scope own;
        syscalls_internal_scope own_syscalls;
        stop_follower();
        // The hooks stay: other threads of an exiting process may still call probed
        // functions, and the programs and hooks must outlive them.
        (void)manager_.release();
    }

    agent(const agent &) = delete;
    agent &operator=(const agent &) = delete;

    /// `bpftime eject`: the follower stops, every link detaches in this process (hooks
    /// removed, rewritten system call sites restored) and the calling thread leaves system
    /// call interception. The process runs on as before.
    void eject() {
        probes_internal_scope own;
        syscalls_internal_scope own_syscalls;
        stop_follower();
        std::lock_guard lock(mu_);
        if (manager_ != nullptr) {
            manager_->deinstantiate();
        }
        manager_.reset();
        segment_.reset();
        disable_syscall_tracepoints_thread();
    }

    const std::string &name() const { return name_; }

    // fork(): the child gets a copy of this object but none of its threads. prepare() keeps
    // the follower out of the attach manager across the fork, so the copy is consistent.
    void before_fork() {
        mu_.lock();
        waiting_mu_.lock();
    }
    void after_fork_parent() {
        waiting_mu_.unlock();
        mu_.unlock();
    }
    void after_fork_child() {
        waiting_mu_.unlock();
        mu_.unlock();
        // The follower object describes the parent's thread: forget it without joining.
        (void)follower_.release();
        stop_ = false;
        // The copied hooks and programs count into the parent's host records: the child's
        // follower detaches them and attaches afresh as this process.
        forked_ = true;
        last_message_.clear(); // the child says what it follows, as itself
        syscalls_internal_scope own_syscalls;
        start_follower();
    }

private:
    void start_follower() {
        follower_done_ = false;
        follower_ = std::make_unique<std::thread>([this] {
            mark_internal_thread();
            follow();
            set_waiting_on(nullptr);
            follower_done_ = true;
        });
    }

    void stop_follower() {
        stop_ = true;
        if (follower_ != nullptr && follower_->joinable()) {
            // The follower may be asleep on the generation or on idle_: wake it until it is
            // gone (a wake can come between its look at stop_ and its sleep).
            while (!follower_done_) {
                wake_idle();
                if (auto seg = waiting_on(); seg != nullptr) {
                    seg->wake_generation_waiters();
                }
                bpftime::pause_for(std::chrono::microseconds(200));
            }
            follower_->join();
        }
        follower_.reset();
    }

    std::shared_ptr<store::segment> waiting_on() {
        std::lock_guard lock(waiting_mu_);
        return waiting_;
    }

    void set_waiting_on(std::shared_ptr<store::segment> seg) {
        std::lock_guard lock(waiting_mu_);
        waiting_ = std::move(seg);
    }

    // Sleeps for d unless stop_follower wakes it. A bare futex, not a condition variable: a
    // fork child inherits no waiter state that could block its own wake.
    void idle_for(std::chrono::milliseconds d) {
        const uint32_t seen = idle_word_.load();
        if (stop_) {
            return;
        }
        timespec ts{};
        ts.tv_sec = static_cast<time_t>(d.count() / 1000);
        ts.tv_nsec = static_cast<long>(d.count() % 1000) * 1000000;
        syscall(SYS_futex, &idle_word_, FUTEX_WAIT_PRIVATE, seen, &ts, nullptr, 0);
    }

    void wake_idle() {
        idle_word_++;
        syscall(SYS_futex, &idle_word_, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
    }

    void say(const std::string &message) {
        if (message == last_message_ || quiet_) {
            return;
        }
        last_message_ = message;
        std::fprintf(stderr, "bpftime-agent[%d]: %s\n", static_cast<int>(::getpid()),
                     message.c_str());
    }

    // Called with mu_ held.
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
        return sync();
    }

    // Called with mu_ held. Whether the segment's links are instantiated now.
    bool sync() {
        if (segment_->damaged()) {
            // Truncated under this process: the store gave the mapping zero pages instead of
            // SIGBUS. Detach its programs and wait for a usable segment again.
            say("segment " + name_ + " was truncated under this process; detaching its programs");
            manager_->deinstantiate();
            manager_.reset();
            segment_.reset();
            return false;
        }
        if (auto r = manager_->instantiate(); !r) {
            // A busy lock (EBUSY) leaves the generation unread: the follower tries again.
            say(r.err().message);
            return false;
        }
        say("following segment " + name_);
        return true;
    }

    // Called with mu_ held: drops the segment when its name no longer names the mapping (it
    // was removed, or replaced by a new one), as nginx's server does; a replaced one is
    // followed at once.
    void check_named() {
        auto named = segment_->check_named();
        if (named) {
            return;
        }
        say(named.err().message + "; detaching its programs");
        manager_->deinstantiate();
        manager_.reset();
        segment_.reset();
        if (named.err().code == ESTALE) {
            connect();
        }
    }

    void follow() {
        using clock = std::chrono::steady_clock;
        auto last_try = clock::now();
        auto last_named = clock::now();
        auto last_sync = clock::time_point{};
        auto retry = std::chrono::milliseconds(0);
        while (!stop_) {
            std::shared_ptr<store::segment> seg;
            uint64_t seen = 0;
            {
                std::lock_guard lock(mu_);
                const auto now = clock::now();
                if (forked_) {
                    forked_ = false;
                    if (manager_ != nullptr) {
                        manager_->deinstantiate();
                        sync();
                    }
                } else if (manager_ == nullptr) {
                    // (The sleep below lasts check_interval; a wake a little early counts.)
                    if (now - last_try >= check_interval - std::chrono::milliseconds(20)) {
                        last_try = now;
                        connect();
                    }
                } else if (now - last_named >= check_interval) {
                    last_named = now;
                    check_named();
                }
                if (manager_ != nullptr && manager_->stale()) {
                    if (now - last_sync < min_sync_interval) {
                        retry = min_sync_interval;
                    } else {
                        last_sync = now;
                        sync();
                        if (manager_ != nullptr && manager_->stale()) {
                            // The lock was busy (or the store changed again meanwhile).
                            retry = std::clamp(retry * 2, first_retry,
                                               std::chrono::milliseconds(check_interval));
                        } else {
                            retry = std::chrono::milliseconds(0);
                        }
                    }
                }
                if (manager_ != nullptr) {
                    seg = segment_;
                    // Read before the sleep: a change after this read wakes it or is seen
                    // by the futex at once.
                    seen = seg->generation();
                }
            }
            set_waiting_on(seg);
            if (stop_) {
                break;
            }
            if (seg == nullptr) {
                idle_for(check_interval);
            } else if (retry.count() > 0) {
                idle_for(retry);
            } else if (poll_.count() > 0) {
                idle_for(poll_);
            } else {
                seg->wait_generation(seen, check_interval);
            }
        }
    }

    std::string name_;
    bool quiet_ = false;
    // BPFTIME_AGENT_POLL_MS: look every so often instead of sleeping on the generation, as
    // the agent once did; kept to measure the two against each other (bench/follow_bench).
    std::chrono::milliseconds poll_{0};
    std::string last_message_;
    // Held by the follower around its work with the manager, and across fork().
    std::mutex mu_;
    std::unique_ptr<attach_manager> manager_;
    std::shared_ptr<store::segment> segment_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> follower_done_{true};
    // What the follower sleeps on, for stop_follower to wake it.
    std::mutex waiting_mu_;
    std::atomic<uint32_t> idle_word_{0};
    std::shared_ptr<store::segment> waiting_;
    bool forked_ = false;
    std::unique_ptr<std::thread> follower_;
};

// The running agent (nullptr before it starts and after `bpftime eject`), and what starts and
// ejects it.
agent *the_agent = nullptr;
std::mutex control;

void fork_prepare() {
    control.lock();
    if (the_agent != nullptr) {
        the_agent->before_fork();
    }
}

void fork_parent() {
    if (the_agent != nullptr) {
        the_agent->after_fork_parent();
    }
    control.unlock();
}

void fork_child() {
    if (the_agent != nullptr) {
        syscall_tracepoints_forked_child();
        the_agent->after_fork_child();
    }
    control.unlock();
}

// Called with control held.
void start_locked(const std::string &name) {
    static bool fork_handlers = false;
    if (!fork_handlers) {
        fork_handlers = true;
        pthread_atfork(fork_prepare, fork_parent, fork_child);
    }
    the_agent = new agent(name);
}

bool same_file(const struct stat &a, const std::string &path) {
    struct stat b = {};
    return ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Whether list (LD_PRELOAD's or /etc/ld.so.preload's form: paths or bare names, separated by
// colons or white space) names this library.
bool names_self(const std::string &list, const struct stat &self, const std::string &self_base) {
    for (size_t at = 0; at <= list.size();) {
        size_t end = list.find_first_of(": \t\n", at);
        end = end == std::string::npos ? list.size() : end;
        std::string entry = list.substr(at, end - at);
        at = end + 1;
        if (entry.empty()) {
            continue;
        }
        // A bare name is looked up in the library folders by the loader.
        if (entry.find('/') == std::string::npos ? entry == self_base : same_file(self, entry)) {
            return true;
        }
    }
    return false;
}

// Whether the loader preloaded this library (LD_PRELOAD or /etc/ld.so.preload names it), as
// opposed to a dlopen by `bpftime inject`, which passes the segment name through
// bpftime_agent_inject instead.
bool preloaded() {
    Dl_info info = {};
    struct stat self = {};
    if (dladdr(reinterpret_cast<void *>(&preloaded), &info) == 0 || info.dli_fname == nullptr ||
        ::stat(info.dli_fname, &self) != 0) {
        return true;
    }
    std::string self_base = info.dli_fname;
    self_base = self_base.substr(self_base.rfind('/') + 1);
    if (const char *env = std::getenv("LD_PRELOAD"); env != nullptr) {
        if (names_self(env, self, self_base)) {
            return true;
        }
    }
    if (FILE *f = std::fopen("/etc/ld.so.preload", "re"); f != nullptr) {
        std::string list;
        char buf[512];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
            list.append(buf, n);
        }
        std::fclose(f);
        return names_self(list, self, self_base);
    }
    return false;
}

__attribute__((constructor)) void start_agent() {
    if (!preloaded()) {
        return;
    }
    std::lock_guard lock(control);
    start_locked("");
}

__attribute__((destructor)) void stop_agent() {
    std::lock_guard lock(control);
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

/// `bpftime inject` calls this in a thread of the process it stopped, after dlopen: starts the
/// agent on segment shm (empty: $BPFTIME_SHM or the default), as LD_PRELOAD would have.
/// Returns 0, or -EEXIST when the agent already runs here (then the name of the segment it
/// follows is copied into hosting, size bytes with the terminating zero).
extern "C" __attribute__((visibility("default"))) int
bpftime_agent_inject(const char *shm, char *hosting, size_t size) {
    std::lock_guard lock(bpftime::control);
    if (bpftime::the_agent != nullptr) {
        if (hosting != nullptr && size > 0) {
            std::snprintf(hosting, size, "%s", bpftime::the_agent->name().c_str());
        }
        return -EEXIST;
    }
    bpftime::start_locked(shm == nullptr ? "" : shm);
    return 0;
}

/// `bpftime eject` calls this in a thread of the process it stopped: every link detaches here,
/// the agent's threads end and the process runs on without it (the library stays mapped: a
/// thread may still be returning through one of its stubs). Returns 0, or -ENOENT when the
/// agent does not run here.
extern "C" __attribute__((visibility("default"))) int bpftime_agent_eject() {
    std::lock_guard lock(bpftime::control);
    if (bpftime::the_agent == nullptr) {
        return -ENOENT;
    }
    bpftime::the_agent->eject();
    delete bpftime::the_agent;
    bpftime::the_agent = nullptr;
    return 0;
}
