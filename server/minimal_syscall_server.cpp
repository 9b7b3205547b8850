// SPDX-License-Identifier: MIT
// minimal_syscall_server: the C API hosts link. Nothing thrown crosses it; every problem is a
// negative errno, and each distinct problem is logged once through the host's logger.
#include <bpftime/minimal_syscall_server.h>

#include <bpftime/attach/nginx.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/store/store.hpp>

#include <cerrno>
#include <ctime>
#include <fcntl.h>
#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BPFTIME_API extern "C" __attribute__((visibility("default")))

using namespace bpftime;

struct bpftime_server {
    std::string shm_name;
    bpftime_log_fn log = nullptr;
    void *log_user = nullptr;

    std::shared_ptr<store::segment> seg;
    std::unique_ptr<attach_manager> mgr;
    nginx_module_attach_impl *nginx = nullptr;
    ino_t inode = 0;
    uint64_t next_check_ms = 0;
    int open_code = ENOENT; // why the segment is not mapped (when it is not)

    std::string last_error;
    std::set<std::string> logged; // causes already reported

    // A link of the URL filter this worker cannot run (see attach_manager::failures): while
    // one exists no request is decided by the programs; each gets the fail policy.
    int broken_code = 0;
    std::string broken_cause, broken_message;
    store::link_counters broken_counters; // this host's record of the broken link, if any
    // The link that made the last request undecided: its id, broken_link for a broken one, 0
    // for none (bpftime_server__count_fail_policy).
    static constexpr uint32_t broken_link = UINT32_MAX;
    uint32_t undecided_by = 0;
    // A controller holding the segment's lock (stopped, say) never makes a request wait: the
    // last instantiated links keep running and the next requests try again, at most once a
    // millisecond; past busy_bound_ms, requests get the fail policy until the lock is free.
    static constexpr uint64_t busy_bound_ms = 2000;
    uint64_t busy_since_ms = 0; // 0: the last try took the lock
    uint64_t next_try_ms = 0;
    std::string busy_message;
    bool instantiated = false; // read the segment's objects at least once
    // A worker's first instantiation waits up to this long for a writer lock another process
    // holds: workers started together register at the same moment, each holding the lock
    // briefly, and a worker that never instantiated has nothing to serve its requests with.
    static constexpr uint64_t first_wait_ms = 500;
    bool waiting_first = false; // in that wait: a busy lock is not reported yet

    // Reports a problem once per cause; returns the negative errno for the caller.
    int fail(const std::string &cause, int code, const std::string &message) {
        last_error = message;
        if (log != nullptr && logged.size() < 4096 && logged.insert(cause).second) {
            log(log_user, BPFTIME_LOG_ERROR, ("bpftime: " + message).c_str());
        }
        return -code;
    }

    void info(const std::string &message) const {
        if (log != nullptr) {
            log(log_user, BPFTIME_LOG_INFO, ("bpftime: " + message).c_str());
        }
    }

    void drop_segment() {
        broken_code = 0;
        mgr.reset(); // detaches everything
        nginx = nullptr;
        seg.reset();
        inode = 0;
        instantiated = false;
    }

    // The inode behind the segment's name, or 0 when the name is gone. A stat of the name, not
    // an open: a segment this process may not open still exists, and says so when opened.
    ino_t current_inode() const {
        struct stat st {};
        return stat(("/dev/shm/" + shm_name).c_str(), &st) == 0 ? st.st_ino : 0;
    }

    // What an operator does about a segment this process may not open.
    std::string access_fix() const {
        std::string group = store::group_name(getegid());
        if (group == "?") {
            group = std::to_string(getegid());
        }
        return "; as root, create it for this group with `bpftime --shm " + shm_name +
               " --shm-group " + group + " load ...` or give the existing one to it with " +
               "`bpftime --shm " + shm_name + " segment chgrp " + group +
               "`; requests get the fail policy until then";
    }

    static uint64_t now_ms() {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return static_cast<uint64_t>(ts.tv_sec) * 1000 +
               static_cast<uint64_t>(ts.tv_nsec) / 1000000;
    }

    // Makes sure a segment is mapped, noticing (about once a second) a segment that was
    // removed or replaced. Returns 0 or a negative errno.
    int ensure_segment() {
        uint64_t now = now_ms();
        if (seg && now < next_check_ms) {
            return 0;
        }
        if (!seg && now < next_check_ms) {
            return -open_code;
        }
        next_check_ms = now + 1000;
        if (seg && seg->damaged()) {
            return drop_damaged();
        }
        ino_t ino = current_inode();
        if (seg && ino == inode) {
            return 0;
        }
        if (seg) {
            info("segment " + shm_name + (ino == 0 ? " was removed" : " was replaced") +
                 "; detaching its programs");
            drop_segment();
        }
        if (ino == 0) {
            open_code = ENOENT;
            return fail("missing", ENOENT,
                        "segment " + shm_name + " does not exist; requests get the fail policy");
        }
        // wait_ms 0: a lock held by a controller fails at once instead of blocking a request.
        // member_groups: a segment given to this worker's group (nginx's `user`) is for it.
        auto s =
            store::segment::open(shm_name, {.create = false, .wait_ms = 0, .member_groups = true});
        if (!s) {
            open_code = s.err().code;
            std::string message = s.err().message;
            if (open_code == EACCES) {
                message += access_fix();
            }
            return fail("open:" + message, open_code, message);
        }
        seg = *s;
        inode = ino;
        mgr = std::make_unique<attach_manager>(seg);
        auto impl = std::make_unique<nginx_module_attach_impl>();
        nginx = impl.get();
        (void)mgr->register_attach_impl(attach_type_nginx_url, std::move(impl));
        logged.erase("missing");
        info("using segment " + shm_name);
        return 0;
    }

    // The segment was truncated under this process (the store gave its mapping zero pages
    // instead of SIGBUS): its programs stop, requests get the fail policy.
    int drop_damaged() {
        std::string message = "segment " + shm_name +
                              " was truncated under this process; its programs are detached and "
                              "requests get the fail policy";
        drop_segment();
        next_check_ms = now_ms() + 1000;
        return fail("damaged", EIO, message);
    }

    int sync() {
        if (int rc = ensure_segment(); rc != 0) {
            return rc;
        }
        if (!mgr->stale()) {
            return 0;
        }
        if (seg->damaged()) {
            return drop_damaged();
        }
        uint64_t now = now_ms();
        if (busy_since_ms != 0 && now < next_try_ms) {
            return busy(now);
        }
        auto r = mgr->instantiate();
        if (!r && r.err().code == EBUSY) {
            busy_since_ms = busy_since_ms != 0 ? busy_since_ms : now;
            next_try_ms = now + 1;
            busy_message = r.err().message;
            return busy(now);
        }
        busy_since_ms = 0;
        instantiated = true;
        logged.erase("busy");
        broken_code = 0;
        for (const link_failure &f : mgr->failures()) {
            // 0: a damaged record that may have been a link of the filter.
            if (f.attach_type == attach_type_nginx_url || f.attach_type == 0) {
                broken_code = f.err.code != 0 ? f.err.code : EINVAL;
                auto c = seg->host_counters(f.link_id, static_cast<int32_t>(getpid()));
                broken_counters = c ? *c : store::link_counters{};
                break;
            }
        }
        if (!r) {
            // Reported once; while a link of the URL filter cannot run, every request fails
            // with the same message (and is not logged again).
            broken_cause = "instantiate:" + r.err().message;
            broken_message = r.err().message + (broken_code != 0 ? "; requests get the fail "
                                                                   "policy while it exists"
                                                                 : "");
            fail(broken_cause, r.err().code, broken_message);
        }
        return 0;
    }

    // The lock was busy at the last try: the last instantiated state serves until the bound.
    // A server that never instantiated has no state to keep (a worker started while the
    // lock is held): after first_sync's wait, its requests get the fail policy at once.
    int busy(uint64_t now) {
        if (instantiated && now - busy_since_ms < busy_bound_ms) {
            return 0;
        }
        if (waiting_first) {
            return -EBUSY;
        }
        if (!instantiated) {
            return fail("busy", EBUSY,
                        busy_message + " since this process started to host the segment (" +
                            std::to_string(first_wait_ms) +
                            " ms waited); requests get the fail policy until it is released");
        }
        return fail("busy", EBUSY,
                    busy_message + " for more than " + std::to_string(busy_bound_ms) +
                        " ms; requests get the fail policy until it is released");
    }

    // sync() for a process that has not instantiated yet: a lock held by another process is
    // waited for (bounded by first_wait_ms) before it counts as busy.
    int first_sync() {
        const uint64_t deadline = now_ms() + first_wait_ms;
        waiting_first = true;
        int rc = sync();
        while (rc == -EBUSY && !instantiated && now_ms() < deadline) {
            timespec pause{0, 1000000};
            nanosleep(&pause, nullptr);
            next_try_ms = 0;
            rc = sync();
        }
        waiting_first = false;
        return rc == -EBUSY && !instantiated ? sync() : rc;
    }
};

BPFTIME_API int bpftime_server__create(const char *shm_name, bpftime_log_fn log, void *log_user,
                                       bpftime_server **out) {
    if (out == nullptr) {
        return -EINVAL;
    }
    try {
        auto *s = new bpftime_server();
        s->shm_name = store::segment_name(shm_name != nullptr ? shm_name : "");
        s->log = log;
        s->log_user = log_user;
        (void)s->first_sync();
        *out = s;
        return 0;
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    } catch (...) {
        return -EFAULT;
    }
}

BPFTIME_API void bpftime_server__destroy(bpftime_server *server) {
    try {
        delete server;
    } catch (...) {
    }
}

BPFTIME_API int bpftime_server__instantiate(bpftime_server *server) {
    if (server == nullptr) {
        return -EINVAL;
    }
    try {
        server->next_check_ms = 0;
        return server->instantiated ? server->sync() : server->first_sync();
    } catch (...) {
        return server->fail("exception", EFAULT, "unexpected failure while instantiating");
    }
}

BPFTIME_API int bpftime_server__filter_request(bpftime_server *server,
                                               const struct bpftime_nginx_request *request) {
    if (server == nullptr || request == nullptr) {
        return -EINVAL;
    }
    try {
        server->undecided_by = 0;
        if (int rc = server->sync(); rc != 0) {
            return rc;
        }
        if (server->broken_code != 0) {
            server->undecided_by = bpftime_server::broken_link;
            return server->fail(server->broken_cause, server->broken_code, server->broken_message);
        }
        nginx_verdict verdict;
        nginx_failure failure;
        if (!server->nginx->filter(*request, verdict, failure)) {
            server->undecided_by = failure.link_id;
            return server->fail("link " + std::to_string(failure.link_id) + " errno " +
                                    std::to_string(failure.err.code),
                                failure.err.code,
                                "link " + std::to_string(failure.link_id) + ": " +
                                    failure.err.message);
        }
        return verdict.status;
    } catch (...) {
        return server->fail("exception", EFAULT, "unexpected failure while filtering");
    }
}

BPFTIME_API int bpftime_server__count_fail_policy(bpftime_server *server, int open) {
    if (server == nullptr) {
        return -EINVAL;
    }
    auto d = open != 0 ? store::link_counters::decision::fail_open
                       : store::link_counters::decision::fail_closed;
    if (server->undecided_by == bpftime_server::broken_link) {
        if (server->broken_code != 0) {
            server->broken_counters.count_decision(d);
        }
    } else if (server->undecided_by != 0 && server->nginx != nullptr) {
        server->nginx->count_fail_policy(server->undecided_by, open != 0);
    }
    return 0;
}

BPFTIME_API const char *bpftime_server__last_error(const bpftime_server *server) {
    return server == nullptr ? "" : server->last_error.c_str();
}

BPFTIME_API int bpftime_server__attached(const bpftime_server *server) {
    return server == nullptr || server->nginx == nullptr
               ? 0
               : static_cast<int>(server->nginx->attached());
}
