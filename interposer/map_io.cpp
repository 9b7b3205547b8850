// SPDX-License-Identifier: MIT
// mmap and epoll on map fds, as libbpf uses them.
//
// mmap: global-data arrays (BPF_F_MMAPABLE) and ring buffers map the segment's pages of the
// map's storage (store::segment::map_region), so the loader and the programs in targets share
// them. A ring buffer is mapped as the kernel's: offset 0 is the consumer position's page
// (writable), offset one page the producer position's page and the data, mapped twice in a
// row (read-only), so a record that wraps reads on.
// epoll: a ring buffer fd, or a BPF output perf event fd with its ring mapped (perf_buffer), is
// not added to the kernel's epoll set (its memfd would always be ready); epoll_wait on a set
// holding one returns it, with the loader's epoll data, when a record is waiting (a perf ring:
// data_head != data_tail), waiting on the ring's futex, and polls the set's real fds between
// waits.
#include "interposer.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>

namespace bpftime::interposer {

namespace {

constexpr uint64_t page = maps::mmap_page_size;

void *map_failed(int err) {
    errno = err;
    return MAP_FAILED;
}

void *map_ringbuf(const store::map_region &r, uint64_t data_size, void *addr, size_t len, int prot,
                  int flags, off_t off, int fd) {
    const real_functions &rf = real();
    if (off == 0) {
        if (len > page) {
            return map_failed(EINVAL);
        }
        return rf.mmap(addr, len, prot, flags, fd, static_cast<off_t>(r.offset));
    }
    if (static_cast<uint64_t>(off) != page || len > page + 2 * data_size) {
        return map_failed(EINVAL);
    }
    if (prot & PROT_WRITE) {
        return map_failed(EPERM); // producers' pages are read-only, as in the kernel
    }
    uint64_t once = page + data_size;
    if (len <= once) {
        return rf.mmap(addr, len, prot, flags, fd, static_cast<off_t>(r.offset + page));
    }
    // Reserve the whole range, then the producer page and data, then the data again.
    void *base =
        rf.mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | (flags & MAP_FIXED), -1, 0);
    if (base == MAP_FAILED) {
        return base;
    }
    auto *b = static_cast<uint8_t *>(base);
    if (rf.mmap(b, once, prot, (flags & ~MAP_FIXED_NOREPLACE) | MAP_FIXED, fd,
                static_cast<off_t>(r.offset + page)) == MAP_FAILED ||
        rf.mmap(b + once, len - once, prot, (flags & ~MAP_FIXED_NOREPLACE) | MAP_FIXED, fd,
                static_cast<off_t>(r.offset + 2 * page)) == MAP_FAILED) {
        int e = errno;
        rf.munmap(base, len);
        return map_failed(e);
    }
    return base;
}

void *map_mmap(const std::shared_ptr<object> &m, void *addr, size_t len, int prot, int flags,
               off_t off) {
    state &s = state::get();
    auto region = s.segment()->map_mmap_region(m->id);
    if (!region) {
        say_once("mmap of map " + std::to_string(m->id) + ": " + region.err().message);
        return map_failed(region.err().code == ENODEV ? ENODEV : EINVAL);
    }
    if (!(flags & MAP_SHARED)) {
        return map_failed(EINVAL);
    }
    if (m->map.spec.type == maps::map_type::ringbuf) {
        return map_ringbuf(*region, m->map.spec.max_entries, addr, len, prot, flags, off,
                           s.segment()->fd());
    }
    if (off != 0 || len > region->length) {
        return map_failed(EINVAL);
    }
    if ((prot & PROT_WRITE) && s.frozen.count(m->id) != 0) {
        return map_failed(EPERM);
    }
    return real().mmap(addr, len, prot, flags, s.segment()->fd(),
                       static_cast<off_t>(region->offset));
}

// Waits at most timeout_ms for a record in a ring buffer or perf ring.
bool ring_wait(const maps::map_view &v, int timeout_ms) {
    return v.spec().type == maps::map_type::perf_ring ? v.perf_wait(timeout_ms)
                                                      : v.ringbuf_wait(timeout_ms);
}

// Ring buffers in the set with a record waiting: their events, at most max.
int ready_rings(const std::vector<epoll_entry> &entries, epoll_event *out, int max) {
    int n = 0;
    for (const epoll_entry &e : entries) {
        if (n < max && (e.events & EPOLLIN) && e.obj->view && ring_wait(*e.obj->view, 0)) {
            out[n].events = EPOLLIN;
            out[n].data.u64 = e.data;
            n++;
        }
    }
    return n;
}

int wait_mixed(int epfd, std::vector<epoll_entry> entries, epoll_event *events, int max,
               int timeout) {
    using clock = std::chrono::steady_clock;
    auto deadline = clock::now() + std::chrono::milliseconds(std::max(timeout, 0));
    for (;;) {
        int n = ready_rings(entries, events, max);
        // The set's real fds, without waiting.
        if (n < max) {
            int k = real().epoll_wait(epfd, events + n, max - n, 0);
            if (k < 0 && n == 0) {
                return k;
            }
            n += std::max(k, 0);
        }
        if (n > 0) {
            return n;
        }
        int left = 100;
        if (timeout >= 0) {
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now())
                          .count();
            if (ms <= 0) {
                return 0;
            }
            left = static_cast<int>(std::min<long>(ms, 100));
        }
        // The first ring's futex wakes us at once for its records; others and real fds are
        // looked at every few milliseconds.
        bool only_one_ring = entries.size() == 1;
        ring_wait(*entries.front().obj->view, only_one_ring ? left : std::min(left, 5));
    }
}

} // namespace

} // namespace bpftime::interposer

using namespace bpftime::interposer;

#define EXPORT extern "C" __attribute__((visibility("default")))

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (!inside() && fd >= 0) {
        state &s = state::get();
        std::lock_guard lock(s.mu);
        if (auto m = s.find(fd)) {
            inside_guard g;
            void *p = m->k == kind::map          ? map_mmap(m, addr, len, prot, flags, off)
                      : m->k == kind::perf_event ? perf_mmap(m, addr, len, prot, flags, off)
                                                 : map_failed(ENODEV);
            if (debug()) {
                int e = errno;
                std::fprintf(stderr, "bpftime: mmap(%s %u, len %zu, off %lld) = %p\n",
                             kind_name(m->k), m->id, len, static_cast<long long>(off), p);
                errno = e;
            }
            return p;
        }
    }
    return real().mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    return mmap(addr, len, prot, flags, fd, off);
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    if (!inside()) {
        state &s = state::get();
        std::lock_guard lock(s.mu);
        if (auto m = s.find(fd)) {
            inside_guard g;
            bool ring = m->k == kind::map && m->map.spec.type == bpftime::maps::map_type::ringbuf;
            bool perf = m->k == kind::perf_event && m->bpf_output;
            if (!ring && !perf) {
                return static_cast<int>(fail(EPERM)); // not pollable, as in the kernel
            }
            if (perf && !m->view) {
                // Nothing can be read from an event whose ring is not mapped.
                say_once("epoll_ctl on a BPF output perf event that is not mmap'ed: map it first");
                return static_cast<int>(fail(EINVAL));
            }
            auto &entries = s.epolls[epfd];
            auto it = std::find_if(entries.begin(), entries.end(),
                                   [&](const epoll_entry &e) { return e.fd == fd; });
            switch (op) {
            case EPOLL_CTL_ADD:
                if (it != entries.end()) {
                    return static_cast<int>(fail(EEXIST));
                }
                entries.push_back({fd, event ? event->events : 0u, event ? event->data.u64 : 0, m});
                return 0;
            case EPOLL_CTL_MOD:
                if (it == entries.end()) {
                    return static_cast<int>(fail(ENOENT));
                }
                it->events = event ? event->events : 0u;
                it->data = event ? event->data.u64 : 0;
                return 0;
            case EPOLL_CTL_DEL:
                if (it == entries.end()) {
                    return static_cast<int>(fail(ENOENT));
                }
                entries.erase(it);
                return 0;
            default:
                return static_cast<int>(fail(EINVAL));
            }
        }
    }
    return real().epoll_ctl(epfd, op, fd, event);
}

EXPORT int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout) {
    if (!inside() && max > 0) {
        std::vector<epoll_entry> entries;
        {
            state &s = state::get();
            std::lock_guard lock(s.mu);
            if (auto it = s.epolls.find(epfd); it != s.epolls.end()) {
                entries = it->second;
            }
        }
        if (!entries.empty()) {
            return wait_mixed(epfd, std::move(entries), events, max, timeout);
        }
    }
    return real().epoll_wait(epfd, events, max, timeout);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int max, int timeout,
                       const sigset_t *sigmask) {
    if (!inside() && max > 0) {
        std::vector<epoll_entry> entries;
        {
            state &s = state::get();
            std::lock_guard lock(s.mu);
            if (auto it = s.epolls.find(epfd); it != s.epolls.end()) {
                entries = it->second;
            }
        }
        if (!entries.empty()) {
            // The signal mask is not applied while waiting on a ring buffer.
            return wait_mixed(epfd, std::move(entries), events, max, timeout);
        }
    }
    return real().epoll_pwait(epfd, events, max, timeout, sigmask);
}
