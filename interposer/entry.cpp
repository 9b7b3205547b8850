// SPDX-License-Identifier: MIT
// libbpftime_syscall_server.so: the libc entry points it replaces in a loader.
//
// Preloaded (LD_PRELOAD) into an unmodified libbpf loader, it answers bpf() and the uprobe
// perf_event_open from the user-space store, and close/dup/fcntl/ioctl/mmap/epoll on the fds
// it handed out. Every other call, and every call on another fd, goes to libc unchanged. The
// library's own calls (the segment's fd, futexes, ...) pass straight through: a thread inside
// the library is marked, and the entry points check the mark before anything else.
#include "interposer.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace bpftime::interposer {

namespace {

template <class F>
void resolve(F &slot, const char *name) {
    slot = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
    if (slot == nullptr) {
        std::fprintf(stderr, "bpftime: libc has no %s: %s\n", name, dlerror());
        std::abort();
    }
}

real_functions resolve_all() {
    real_functions r{};
    resolve(r.syscall, "syscall");
    resolve(r.close, "close");
    resolve(r.dup, "dup");
    resolve(r.dup2, "dup2");
    resolve(r.dup3, "dup3");
    resolve(r.fcntl, "fcntl");
    resolve(r.ioctl, "ioctl");
    resolve(r.mmap, "mmap");
    resolve(r.munmap, "munmap");
    resolve(r.epoll_ctl, "epoll_ctl");
    resolve(r.epoll_wait, "epoll_wait");
    resolve(r.epoll_pwait, "epoll_pwait");
    resolve(r.unlink, "unlink");
    return r;
}

// Closes fd's entry in the table (the object goes with its last fd).
void forget(int fd) {
    state &s = state::get();
    std::lock_guard lock(s.mu);
    inside_guard g;
    auto it = s.fds.find(fd);
    if (it == s.fds.end()) {
        return;
    }
    auto obj = std::move(it->second);
    s.fds.erase(it);
    for (auto &[epfd, entries] : s.epolls) {
        std::erase_if(entries, [&](const epoll_entry &e) { return e.fd == fd; });
    }
    if (debug()) {
        std::fprintf(stderr, "bpftime: close(%d) %s %u%s\n", fd, kind_name(obj->k), obj->id,
                     obj.use_count() == 1 ? " (last reference)" : "");
    }
    obj.reset();
}

// After a dup of fd to newfd: newfd names the same object.
void duplicated(int fd, int newfd) {
    state &s = state::get();
    std::lock_guard lock(s.mu);
    inside_guard g;
    if (auto obj = s.find(fd); obj && newfd >= 0) {
        s.fds[newfd] = obj;
    }
}

bool ours(int fd) {
    if (inside()) {
        return false;
    }
    state &s = state::get();
    std::lock_guard lock(s.mu);
    return s.fds.count(fd) != 0;
}

} // namespace

const real_functions &real() {
    static const real_functions r = resolve_all();
    return r;
}

namespace {
// Resolved before main, so that no entry point resolves them while a lock is held.
__attribute__((constructor)) void init() {
    (void)real();
}

__attribute__((destructor)) void fini() {
    state &s = state::get();
    std::lock_guard lock(s.mu);
    inside_guard g;
    if (s.owner_process()) {
        s.shutdown();
    }
}
} // namespace

} // namespace bpftime::interposer

using namespace bpftime::interposer;

#define EXPORT extern "C" __attribute__((visibility("default")))

EXPORT long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (long &v : a) {
        v = va_arg(ap, long);
    }
    va_end(ap);
    if (!inside()) {
        if (number == SYS_bpf) {
            return do_bpf(static_cast<int>(a[0]), reinterpret_cast<void *>(a[1]),
                          static_cast<unsigned>(a[2]));
        }
        if (number == SYS_perf_event_open) {
            return do_perf_event_open(reinterpret_cast<void *>(a[0]), a[1], a[2], a[3], a[4]);
        }
    }
    return real().syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

EXPORT int close(int fd) {
    if (!inside()) {
        state &s = state::get();
        std::lock_guard lock(s.mu);
        s.epolls.erase(fd); // an epoll fd: its ring buffers go with it
    }
    if (ours(fd)) {
        forget(fd);
    }
    return real().close(fd);
}

EXPORT int dup(int fd) {
    int newfd = real().dup(fd);
    if (newfd >= 0 && ours(fd)) {
        duplicated(fd, newfd);
    }
    return newfd;
}

EXPORT int dup2(int fd, int newfd) {
    if (fd != newfd && ours(newfd)) {
        forget(newfd);
    }
    int r = real().dup2(fd, newfd);
    if (r >= 0 && fd != newfd && ours(fd)) {
        duplicated(fd, r);
    }
    return r;
}

EXPORT int dup3(int fd, int newfd, int flags) {
    if (fd != newfd && ours(newfd)) {
        forget(newfd);
    }
    int r = real().dup3(fd, newfd, flags);
    if (r >= 0 && ours(fd)) {
        duplicated(fd, r);
    }
    return r;
}

EXPORT int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = real().fcntl(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && ours(fd)) {
        duplicated(fd, r);
    }
    return r;
}

EXPORT int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = real().fcntl(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && ours(fd)) {
        duplicated(fd, r);
    }
    return r;
}

EXPORT int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (ours(fd)) {
        state &s = state::get();
        std::lock_guard lock(s.mu);
        inside_guard g;
        auto obj = s.find(fd);
        if (obj && obj->k == kind::perf_event) {
            return perf_ioctl(obj, request, arg);
        }
        if (obj) {
            return static_cast<int>(fail(ENOTTY));
        }
    }
    if (request == PERF_EVENT_IOC_SET_BPF && !inside() &&
        ours(static_cast<int>(reinterpret_cast<intptr_t>(arg)))) {
        // One of our programs on a kernel perf event (a kprobe, a tracepoint): the kernel
        // cannot run it.
        return static_cast<int>(unsupported("attaching a user-space program to a kernel perf "
                                            "event (only uprobes and uretprobes run here)",
                                            EOPNOTSUPP));
    }
    return real().ioctl(fd, request, arg);
}

EXPORT int unlink(const char *path) {
    // BPF_OBJ_PIN paths are not files: unlinking one unpins it, as on bpffs.
    if (!inside()) {
        state &s = state::get();
        std::lock_guard lock(s.mu);
        inside_guard g;
        if (pin_remove(path)) {
            if (debug()) {
                std::fprintf(stderr, "bpftime: unlink(%s) unpinned\n", path);
            }
            return 0;
        }
    }
    return real().unlink(path);
}
