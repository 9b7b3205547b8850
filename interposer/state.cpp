// SPDX-License-Identifier: MIT
// The fd table, object lifetime, pins and messages of the interposer.
#include "interposer.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bpftime::interposer {

namespace {

thread_local bool inside_flag = false;

} // namespace

bool inside() {
    return inside_flag;
}

inside_guard::inside_guard() : was_(inside_flag) {
    inside_flag = true;
}

inside_guard::~inside_guard() {
    inside_flag = was_;
}

bool debug() {
    static const bool on = [] {
        const char *v = std::getenv("BPFTIME_INTERPOSER_DEBUG");
        return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
    }();
    return on;
}

void say_once(const std::string &text) {
    static std::mutex mu;
    static std::set<std::string> said;
    std::lock_guard lock(mu);
    if (said.insert(text).second) {
        std::fprintf(stderr, "bpftime: %s\n", text.c_str());
    }
}

long unsupported(const std::string &what, int err) {
    say_once(what + " is not supported in user space");
    return fail(err);
}

long fail(int err) {
    errno = err;
    return -1;
}

const char *kind_name(kind k) {
    switch (k) {
    case kind::map:
        return "map";
    case kind::prog:
        return "prog";
    case kind::link:
        return "link";
    case kind::btf:
        return "btf";
    case kind::perf_event:
        return "perf-event";
    }
    return "object";
}

state &state::get() {
    // Never destroyed: the loader's own destructors may still close our fds after ours ran.
    static state *s = [] {
        auto *st = new state();
        st->owner_pid_ = ::getpid();
        pthread_atfork(nullptr, nullptr, [] { state::get().become_child(); });
        return st;
    }();
    return *s;
}

bool state::owner_process() const {
    return owner_pid_ == ::getpid();
}

void state::become_child() {
    // A forked child shares the parent's objects as the kernel's fds would, but only the
    // parent destroys them: the child's closes and its exit leave them alone.
    owner_pid_ = ::getpid();
    for (auto &[fd, obj] : fds) {
        obj->owned = false;
        for (auto &h : obj->holds) {
            h->owned = false;
        }
    }
    pending.clear();
}

event_provider_impl *state::provider() {
    if (provider_ == nullptr && !open_failed_) {
        // Created when missing (BPFTIME_SHM_SIZE bytes), with the store's trust checks (owner,
        // mode), as `bpftime load` does.
        store::open_options opts;
        if (const char *size = std::getenv("BPFTIME_SHM_SIZE"); size != nullptr && *size != '\0') {
            opts.size = std::strtoull(size, nullptr, 0);
        }
        auto seg = store::segment::open(store::segment_name(), opts);
        if (!seg) {
            open_failed_ = true;
            say_once(seg.err().message);
            return nullptr;
        }
        seg_ = *seg;
        provider_ = std::make_unique<event_provider_impl>(seg_);
    }
    return provider_.get();
}

store::segment *state::segment() {
    return provider() ? seg_.get() : nullptr;
}

std::shared_ptr<object> state::find(int fd, std::optional<kind> k) const {
    auto it = fds.find(fd);
    if (it == fds.end() || (k && it->second->k != *k)) {
        return nullptr;
    }
    return it->second;
}

int state::add(std::shared_ptr<object> obj) {
    std::string name = std::string("bpftime-") + kind_name(obj->k) + ":" + std::to_string(obj->id);
    int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    fds[fd] = std::move(obj);
    return fd;
}

void state::release(uint32_t id) {
    if (id == 0 || seg_ == nullptr || is_pinned(id)) {
        return;
    }
    auto r = seg_->destroy(id);
    if (!r && r.err().code == EBUSY) {
        // Something outside this process's objects still uses it (a link another controller
        // made on this program): destroyed when that goes, or at exit.
        pending.insert(id);
        return;
    }
    if (!r && r.err().code != ENOENT) {
        say_once("could not destroy object " + std::to_string(id) + ": " + r.err().message);
    }
    retry_pending();
}

void state::retry_pending() {
    bool progress = true;
    while (progress && !pending.empty() && seg_ != nullptr) {
        progress = false;
        for (auto it = pending.begin(); it != pending.end();) {
            auto r = is_pinned(*it) ? result<void>() : seg_->destroy(*it);
            if (r || r.err().code != EBUSY) {
                it = pending.erase(it);
                progress = true;
            } else {
                ++it;
            }
        }
    }
}

void state::shutdown() {
    // Links first, then programs, then maps: each object's holders go before it.
    std::vector<std::shared_ptr<object>> order;
    for (kind k : {kind::link, kind::perf_event, kind::prog, kind::map, kind::btf}) {
        for (auto &[fd, obj] : fds) {
            if (obj->k == k) {
                order.push_back(obj);
            }
        }
    }
    fds.clear();
    epolls.clear();
    for (auto &obj : order) {
        obj.reset();
    }
    retry_pending();
}

object::~object() {
    state &s = state::get();
    if (!owned || !s.owner_process()) {
        return;
    }
    switch (k) {
    case kind::link:
        if (!detached) {
            s.release(id);
        }
        s.release(target_id); // a raw tracepoint link's own target (0: none)
        break;
    case kind::perf_event:
        if (ioctl_link_id != 0) {
            s.release(ioctl_link_id);
        }
        s.release(target_id);
        s.release(ring_id);
        break;
    case kind::prog:
    case kind::map:
        s.release(id);
        break;
    case kind::btf:
        break;
    }
    // What this object held goes after it (holds is destroyed after this body).
}

// --- pins ---------------------------------------------------------------------------------
//
// Pins live in a text file beside the segment, /dev/shm/<segment>.pins, one "ID PATH" line
// each, read and rewritten under flock. The file is trusted like the segment: owned by root or
// this user and writable by nobody else.

std::string state::pin_file() const {
    return "/dev/shm/" + store::segment_name() + ".pins";
}

namespace {

struct pin_table {
    int fd = -1;
    std::map<std::string, uint32_t> pins;

    ~pin_table() {
        if (fd >= 0) {
            flock(fd, LOCK_UN);
            real().close(fd);
        }
    }
};

result<void> open_pins(pin_table &t, bool create) {
    std::string path = state::get().pin_file();
    t.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (t.fd < 0) {
        return make_error(errno, "pin table " + path + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (fstat(t.fd, &st) != 0 || (st.st_uid != 0 && st.st_uid != geteuid()) ||
        (st.st_mode & 0022) != 0) {
        return make_error(EACCES, "pin table " + path +
                                      " is owned by another user or writable by others; "
                                      "remove it (pins of this segment are lost)");
    }
    if (flock(t.fd, LOCK_EX) != 0) {
        return make_error(errno, "pin table " + path + ": flock: " + std::strerror(errno));
    }
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = pread(t.fd, buf, sizeof buf, static_cast<off_t>(text.size()));
        if (n <= 0) {
            break;
        }
        text.append(buf, static_cast<size_t>(n));
    }
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto space = line.find(' ');
        if (space == std::string::npos) {
            continue;
        }
        char *end = nullptr;
        unsigned long id = std::strtoul(line.c_str(), &end, 10);
        if (end == line.c_str() + space && id != 0 && id <= UINT32_MAX) {
            t.pins[line.substr(space + 1)] = static_cast<uint32_t>(id);
        }
    }
    return {};
}

result<void> write_pins(const pin_table &t) {
    std::string text;
    for (const auto &[path, id] : t.pins) {
        text += std::to_string(id) + " " + path + "\n";
    }
    if (ftruncate(t.fd, 0) != 0 ||
        pwrite(t.fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
        return make_error(errno, "pin table: write: " + std::string(std::strerror(errno)));
    }
    return {};
}

} // namespace

result<void> pin_add(const std::string &path, uint32_t id) {
    pin_table t;
    if (auto r = open_pins(t, true); !r) {
        return r;
    }
    if (t.pins.count(path) != 0) {
        return make_error(EEXIST, "pin path " + path + " is taken");
    }
    t.pins[path] = id;
    return write_pins(t);
}

result<uint32_t> pin_find(const std::string &path) {
    pin_table t;
    if (auto r = open_pins(t, false); !r) {
        return r.err().code == ENOENT ? make_error(ENOENT, "nothing is pinned at " + path)
                                      : r.err();
    }
    auto it = t.pins.find(path);
    if (it == t.pins.end()) {
        return make_error(ENOENT, "nothing is pinned at " + path);
    }
    return it->second;
}

bool pin_remove(const std::string &path) {
    pin_table t;
    if (!open_pins(t, false) || t.pins.erase(path) == 0) {
        return false;
    }
    return static_cast<bool>(write_pins(t));
}

bool is_pinned(uint32_t id) {
    pin_table t;
    if (!open_pins(t, false)) {
        return false;
    }
    for (const auto &[path, pinned] : t.pins) {
        if (pinned == id) {
            return true;
        }
    }
    return false;
}

} // namespace bpftime::interposer
