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

    std::string last_error;
    std::set<std::string> logged; // causes already reported

    // A link of the URL filter this worker cannot run (see attach_manager::failures): while
    // one exists no request is decided by the programs; each gets the fail policy.
    int broken_code = 0;
    std::string broken_cause, broken_message;

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
    }

    // The inode behind the segment's name, or 0 when the name is gone.
    ino_t current_inode() const {
        int fd = shm_open(("/" + shm_name).c_str(), O_RDONLY, 0);
        if (fd < 0) {
            return 0;
        }
        struct stat st {};
        ino_t ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
        close(fd);
        return ino;
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
            return -ENOENT;
        }
        next_check_ms = now + 1000;
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
            return fail("missing", ENOENT,
                        "segment " + shm_name + " does not exist; requests get the fail policy");
        }
        auto s = store::segment::open(shm_name, {.create = false});
        if (!s) {
            return fail("open:" + s.err().message, s.err().code, s.err().message);
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

    int sync() {
        if (int rc = ensure_segment(); rc != 0) {
            return rc;
        }
        if (!mgr->stale()) {
            return 0;
        }
        auto r = mgr->instantiate();
        broken_code = 0;
        for (const link_failure &f : mgr->failures()) {
            if (f.attach_type == attach_type_nginx_url) {
                broken_code = f.err.code != 0 ? f.err.code : EINVAL;
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
        (void)s->sync();
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
        return server->sync();
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
        if (int rc = server->sync(); rc != 0) {
            return rc;
        }
        if (server->broken_code != 0) {
            return server->fail(server->broken_cause, server->broken_code, server->broken_message);
        }
        nginx_verdict verdict;
        nginx_failure failure;
        if (!server->nginx->filter(*request, verdict, failure)) {
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

BPFTIME_API const char *bpftime_server__last_error(const bpftime_server *server) {
    return server == nullptr ? "" : server->last_error.c_str();
}

BPFTIME_API int bpftime_server__attached(const bpftime_server *server) {
    return server == nullptr || server->nginx == nullptr
               ? 0
               : static_cast<int>(server->nginx->attached());
}
